//! Property tests: no input makes the parsers panic, and stream framing
//! recovers the same messages however the byte stream is split.

use proptest::prelude::*;

use crate::sip::auth::AuthParams;
use crate::sip::{
    frame_stream, split_list, CSeq, Contact, HeaderName, Host, Limits, Message, NameAddr,
    ResponseBuilder, StreamFrame, Uri, Via,
};

const SEEDS: &[&str] = &[
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
     Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2;received=2001:db8::2\r\n\
     Max-Forwards: 70\r\n\
     To: \"Bob, \\\"B\\\"\" <sip:bob@biloxi.example.com>\r\n\
     From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
     Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
     CSeq: 314159 INVITE\r\n\
     Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
     Contact: <sip:alice@pc33.atlanta.example.com>;expires=60, sip:a2@192.0.2.1;q=0.5\r\n\
     Proxy-Authorization: Digest username=\"alice\", realm=\"atlanta.example.com\", nonce=\"abc\", uri=\"sip:bob@biloxi.example.com\", response=\"0123\", qop=auth, nc=00000001, cnonce=\"x\"\r\n\
     Content-Type: application/sdp\r\n\
     Content-Length: 10\r\n\
     \r\n\
     v=0\r\no=-\r\n",
    "SIP/2.0 200 OK\r\n\
     v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9;received=192.0.2.1;rport=5060\r\n\
     f: <sip:alice@example.com>;tag=9fxced76sl\r\n\
     t: sip:bob@example.com;tag=8321234356\r\n\
     i: 3848276298220188511@example.com\r\n\
     CSeq: 1 INVITE\r\n\
     Record-Route: <sip:rr.example.com;lr>\r\n\
     l: 0\r\n\
     \r\n",
    "REGISTER sip:[2001:db8::10] SIP/2.0\n\
     Via  : SIP / 2.0 / UDP [2001:db8::9:1]:5070 ; branch = z9hG4bKas3\n\
     From: <sip:user@[2001:db8::10]>;tag=81x2\n\
     To: <sip:user@[2001:db8::10]>\n\
     Call-ID: SSG9559905523997077@hlau_4100\n\
     CSeq: 1\n REGISTER\n\
     Subject: folded\n\t value\n\
     Contact: *\n\
     Expires: 0\n\
     Content-Length: 0\n\
     \n",
    "OPTIONS tel:+74951234567;phone-context=example.com SIP/2.0\r\n\
     Via: SIP/2.0/TLS host.example.com;branch=z9hG4bK1\r\n\
     From: sip:user;par=u%40example.net@example.com;tag=2\r\n\
     To: <sip:%61lice@example.com?Subject=hi%20there>\r\n\
     Call-ID: c\r\n\
     CSeq: 2 OPTIONS\r\n\
     WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=MD5, qop=\"auth,auth-int\"\r\n\
     Content-Length: 3\r\n\
     \r\n\
     \x00\x01\x02",
];

fn limits() -> Limits {
    Limits::default()
}

/// Run every parser on `data`; when the message parses, exercise the
/// on-demand accessors, the edits and the response builder too.
fn exercise(data: &[u8]) {
    let l = limits();
    let _ = frame_stream(data, &l);
    let _ = Message::parse_stream(data, &l);
    let _ = Message::parse_owned(data.to_vec(), &l);
    if let Ok(m) = Message::parse(data, &l) {
        let _ = m.vias();
        let _ = m.contacts();
        let _ = m.routes();
        let _ = m.record_routes();
        let _ = m.max_forwards();
        let _ = m.expires();
        let _ = m.reason();
        let _ = m.request_uri();
        let _ = m.parsed_request_uri();
        for (name, v) in m.all_headers() {
            let _ = m.header_values(name);
            let _ = AuthParams::parse(v);
        }
        let out = m
            .edit()
            .push_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
            .pop_via()
            .set_top_via("SIP/2.0/UDP x;branch=z9hG4bKx")
            .pop_route()
            .push_record_route("<sip:proxy.example.com;lr>")
            .decrement_max_forwards()
            .set_request_uri("sip:new@example.com")
            .finish();
        let _ = Message::parse(&out, &l);
        let _ = ResponseBuilder::new(&m, 200, "OK").to_tag("t").build();
    }
    let s = String::from_utf8_lossy(data);
    let _ = Uri::parse(&s);
    let _ = NameAddr::parse(&s);
    let _ = Via::parse(&s);
    let _ = CSeq::parse(&s);
    let _ = Contact::parse(&s);
    let _ = Host::parse(&s);
    let _ = AuthParams::parse(&s);
    let _ = split_list(&s);
    let _ = HeaderName::parse(&s);
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b"\r\n".to_vec(),
        b"\n".to_vec(),
        b"\r\n\r\n".to_vec(),
        b" ".to_vec(),
        b"\t".to_vec(),
        b":".to_vec(),
        b";".to_vec(),
        b",".to_vec(),
        b"\"".to_vec(),
        b"\\".to_vec(),
        b"<".to_vec(),
        b">".to_vec(),
        b"[".to_vec(),
        b"]".to_vec(),
        b"%".to_vec(),
        b"@".to_vec(),
        b"=".to_vec(),
        b"?".to_vec(),
        b"\xff".to_vec(),
        b"\xc3".to_vec(),
        b"\0".to_vec(),
        b"99999999999999999999".to_vec(),
        b"-1".to_vec(),
        b"Content-Length: 5\r\n".to_vec(),
        b"l: 100000\r\n".to_vec(),
        b"Via: SIP/2.0/UDP h;branch=1, ,\r\n".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), interesting).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len();
    match m {
        Mutation::Flip(i, b) if len > 0 => data[i % len] = *b,
        Mutation::Flip(..) => {}
        Mutation::Truncate(i) => data.truncate(i % (len + 1)),
        Mutation::Insert(i, v) => {
            let at = i % (len + 1);
            data.splice(at..at, v.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let at = i % (len + 1);
            let end = (at + n).min(len);
            data.drain(at..end);
        }
    }
}

/// A valid message for stream framing: a seed's header section without
/// its Content-Length, then a Content-Length line (full or compact name)
/// matching a random body (which may contain CRLFCRLF).
fn stream_message() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..SEEDS.len(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(|(seed, body, compact)| {
            let seed = SEEDS[seed];
            let head_end = seed
                .find("\r\n\r\n")
                .map(|p| p + 2)
                .or_else(|| seed.find("\n\n").map(|p| p + 1));
            let head = &seed[..head_end.expect("seed has a header section")];
            let mut out: Vec<u8> = head
                .split_inclusive('\n')
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    !l.starts_with("content-length:") && !l.starts_with("l:")
                })
                .flat_map(|l| l.bytes())
                .collect();
            let name = if compact { "l" } else { "Content-Length" };
            out.extend_from_slice(format!("{name}: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&data);
    }

    #[test]
    fn sip_alphabet_never_panics(s in "[a-zA-Z0-9:;=,<>\"\\\\@\\[\\]. \t\r\n%?&/*+_~-]{0,80}") {
        exercise(s.as_bytes());
        let with_start = format!("INVITE sip:a@b SIP/2.0\r\nVia: {s}\r\nFrom: {s}\r\nTo: {s}\r\nCall-ID: {s}\r\nCSeq: {s}\r\n\r\n");
        exercise(with_start.as_bytes());
    }

    #[test]
    fn mutated_messages_never_panic(
        seed in 0usize..SEEDS.len(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut data = SEEDS[seed].as_bytes().to_vec();
        for m in &muts {
            apply(&mut data, m);
        }
        exercise(&data);
    }

    #[test]
    fn stream_framing_is_split_independent(
        msgs in prop::collection::vec(stream_message(), 1..5),
        keepalives in prop::collection::vec(0usize..3, 5),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            stream.extend(std::iter::repeat_n(b"\r\n".as_slice(), keepalives[i]).flatten());
            stream.extend_from_slice(m);
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();

        let l = limits();
        let mut buf: Vec<u8> = Vec::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut prev = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[prev..cut]);
            prev = cut;
            loop {
                match frame_stream(&buf, &l).expect("valid stream frames") {
                    StreamFrame::Incomplete => break,
                    StreamFrame::KeepAlive(n) => {
                        prop_assert!(n > 0);
                        buf.drain(..n);
                    }
                    StreamFrame::Message(n) => {
                        let m = Message::parse_stream(&buf[..n], &l).expect("framed message parses");
                        prop_assert_eq!(m.raw(), &buf[..n]);
                        got.push(buf[..n].to_vec());
                        buf.drain(..n);
                    }
                }
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn valid_messages_parse_to_their_own_bytes(m in stream_message()) {
        let a = Message::parse(&m, &limits()).expect("parses as datagram");
        prop_assert_eq!(a.raw(), m.as_slice());
        let b = Message::parse_stream(&m, &limits()).expect("parses as stream");
        prop_assert_eq!(b.raw(), m.as_slice());
        prop_assert_eq!(a.edit().finish(), m);
    }
}

#[test]
fn seeds_are_valid() {
    for s in SEEDS {
        let m = Message::parse(s.as_bytes(), &limits()).unwrap_or_else(|e| panic!("{e}: {s}"));
        assert_eq!(m.raw(), s.as_bytes());
        m.vias().unwrap();
        m.contacts().unwrap();
        m.routes().unwrap();
    }
}
