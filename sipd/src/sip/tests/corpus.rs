//! Corpus of tricky valid and invalid SIP messages, each with its verdict.
//! Several cases follow the ideas of RFC 4475 ("SIP Torture Test
//! Messages"); the messages themselves are written for this test.

use std::net::IpAddr;

use crate::sip::{Contact, HeaderName, Host, Limits, Message, Method, ParseError, Scheme};

enum Expect {
    Ok(fn(&Message)),
    Err(ParseError),
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    limits: Limits,
    expect: Expect,
}

/// Write messages with `\n`; this turns every `\n` into CRLF.
fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

const BASE: &str = "INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9
Max-Forwards: 70
From: Alice <sip:alice@example.com>;tag=9fxced76sl
To: Bob <sip:bob@example.com>
Call-ID: 3848276298220188511@example.com
CSeq: 1 INVITE
Content-Length: 0

";

const RESP: &str = "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9;received=192.0.2.1
From: Alice <sip:alice@example.com>;tag=9fxced76sl
To: Bob <sip:bob@example.com>;tag=8321234356
Call-ID: 3848276298220188511@example.com
CSeq: 1 INVITE
Content-Length: 0

";

/// BASE with one substring replaced (must be present).
fn base_with(from: &str, to: &str) -> Vec<u8> {
    assert!(BASE.contains(from), "{from}");
    crlf(&BASE.replacen(from, to, 1))
}

fn ok(name: &'static str, input: Vec<u8>, check: fn(&Message)) -> Case {
    Case {
        name,
        input,
        limits: Limits::default(),
        expect: Expect::Ok(check),
    }
}

fn err(name: &'static str, input: Vec<u8>, e: ParseError) -> Case {
    Case {
        name,
        input,
        limits: Limits::default(),
        expect: Expect::Err(e),
    }
}

fn bad_header() -> ParseError {
    ParseError::BadHeader(String::new())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        // ---------------------------------------------------------------- valid
        ok("basic INVITE", crlf(BASE), |m| {
            assert_eq!(m.method(), Some(&Method::Invite));
            assert_eq!(m.request_uri(), Some("sip:bob@example.com"));
            assert_eq!(m.from().tag(), Some("9fxced76sl"));
            assert_eq!(m.to().tag(), None);
            assert_eq!(m.call_id(), "3848276298220188511@example.com");
            assert_eq!(m.cseq().seq, 1);
            assert_eq!(m.top_via().port, Some(5060));
            assert_eq!(m.max_forwards(), Some(70));
            assert_eq!(m.body(), b"");
        }),
        ok("basic response", crlf(RESP), |m| {
            assert_eq!(m.status(), Some(200));
            assert_eq!(m.reason(), Some("OK"));
            assert_eq!(m.to().tag(), Some("8321234356"));
            assert_eq!(m.top_via().received(), Some(ip("192.0.2.1")));
        }),
        ok(
            "odd case header names",
            crlf(
                "OPTIONS sip:bob@example.com SIP/2.0
vIA: SIP/2.0/UDP h;branch=z9hG4bK1
FROM: <sip:a@example.com>;TAG=x
tO: <sip:bob@example.com>
cAlL-iD: abc
cseq: 2 OPTIONS
MAX-FORWARDS: 5
content-LENGTH: 0

",
            ),
            |m| {
                assert_eq!(m.from().tag(), Some("x"));
                assert_eq!(m.call_id(), "abc");
                assert_eq!(m.max_forwards(), Some(5));
                assert_eq!(m.header(&HeaderName::CallId), Some("abc"));
            },
        ),
        ok(
            "all compact forms",
            crlf(
                "SUBSCRIBE sip:bob@example.com SIP/2.0
v: SIP/2.0/TCP h;branch=z9hG4bK2
f: <sip:a@example.com>;tag=1
t: <sip:bob@example.com>
i: cid-1
CSeq: 3 SUBSCRIBE
m: <sip:a@192.0.2.3>
c: text/plain
k: timer
s: hello
e: gzip
o: presence
u: dialog
r: <sip:c@example.com>
b: <sip:d@example.com>
x: 1800
l: 2

hi",
            ),
            |m| {
                assert_eq!(m.header(&HeaderName::ContentType), Some("text/plain"));
                assert_eq!(m.header(&HeaderName::Supported), Some("timer"));
                assert_eq!(m.header(&HeaderName::Subject), Some("hello"));
                assert_eq!(m.header(&HeaderName::ContentEncoding), Some("gzip"));
                assert_eq!(m.header(&HeaderName::Event), Some("presence"));
                assert_eq!(m.header(&HeaderName::AllowEvents), Some("dialog"));
                assert_eq!(m.header(&HeaderName::ReferTo), Some("<sip:c@example.com>"));
                assert_eq!(m.header(&HeaderName::ReferredBy), Some("<sip:d@example.com>"));
                assert_eq!(m.header(&HeaderName::SessionExpires), Some("1800"));
                assert_eq!(m.contacts().unwrap().len(), 1);
                assert_eq!(m.body(), b"hi");
            },
        ),
        ok(
            "LWS everywhere",
            crlf(
                "INVITE sip:bob@example.com SIP/2.0
Via  :   SIP  /  2.0  /  UDP   192.0.2.1 : 5060 ;  branch = z9hG4bK9  ;rport
Max-Forwards :	70
From:	  \"Alice\"   <sip:alice@example.com>  ;  tag  =  t1
To :<sip:bob@example.com>
Call-ID	:	c1@h
CSeq  :   1     INVITE
Content-Length  :   0  

",
            ),
            |m| {
                assert_eq!(m.top_via().port, Some(5060));
                assert_eq!(m.top_via().branch(), Some("z9hG4bK9"));
                assert_eq!(m.top_via().rport(), Some(None));
                assert_eq!(m.from().tag(), Some("t1"));
                assert_eq!(m.from().display.as_deref(), Some("Alice"));
                assert_eq!(m.call_id(), "c1@h");
                assert_eq!(m.max_forwards(), Some(70));
            },
        ),
        ok(
            "folded lines",
            crlf(
                "INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa,
 SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKb
Subject: I know you're there,
         pick up the phone
\t and talk to me!
From: <sip:alice@example.com>
  ;tag=f1
To: <sip:bob@example.com>
Call-ID:
 folded-cid
CSeq: 1
 INVITE
Content-Length: 0

",
            ),
            |m| {
                assert_eq!(
                    m.header(&HeaderName::Subject),
                    Some("I know you're there, pick up the phone and talk to me!")
                );
                let vias = m.vias().unwrap();
                assert_eq!(vias.len(), 2);
                assert_eq!(vias[1].branch(), Some("z9hG4bKb"));
                assert_eq!(m.from().tag(), Some("f1"));
                assert_eq!(m.call_id(), "folded-cid");
                assert_eq!(m.cseq().method, Method::Invite);
            },
        ),
        ok(
            "multiple Vias in one line and across lines",
            base_with(
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9\n",
                "Via: SIP/2.0/UDP a;branch=z9hG4bK1 ,SIP/2.0/TCP b:5070;branch=z9hG4bK2\nv: SIP/2.0/TLS c;branch=z9hG4bK3\nVia: SIP/2.0/SCTP d;branch=z9hG4bK4, SIP/2.0/WS e;branch=z9hG4bK5\n",
            ),
            |m| {
                let vias = m.vias().unwrap();
                let t: Vec<&str> = vias.iter().map(|v| v.transport.as_str()).collect();
                assert_eq!(t, ["UDP", "TCP", "TLS", "SCTP", "WS"]);
                assert_eq!(m.top_via().branch(), Some("z9hG4bK1"));
                assert_eq!(m.headers(&HeaderName::Via).count(), 3);
            },
        ),
        ok(
            "escaped display name",
            base_with(
                "From: Alice <sip:alice@example.com>;tag=9fxced76sl",
                r#"From: "\"Al\\ice\" <x>, \q" <sip:alice@example.com>;tag=9fxced76sl"#,
            ),
            |m| assert_eq!(m.from().display.as_deref(), Some(r#""Al\ice" <x>, q"#)),
        ),
        ok(
            "quoted commas in display names of a Contact list",
            base_with(
                "Content-Length: 0",
                "Contact: \"Doe, John\" <sip:j@192.0.2.5>;q=0.5, \"Roe, <Jane>\" <sip:r@192.0.2.6>;expires=60, sip:x@192.0.2.7;q=0.1\nContent-Length: 0",
            ),
            |m| {
                let c = m.contacts().unwrap();
                assert_eq!(c.len(), 3);
                match &c[1] {
                    Contact::Addr(a) => {
                        assert_eq!(a.display.as_deref(), Some("Roe, <Jane>"));
                        assert_eq!(a.params.value("expires"), Some("60"));
                    }
                    Contact::Star => panic!("star"),
                }
                match &c[2] {
                    Contact::Addr(a) => assert_eq!(a.params.value("q"), Some("0.1")),
                    Contact::Star => panic!("star"),
                }
            },
        ),
        ok(
            "unknown method and unknown headers",
            crlf(
                "NEWMETHOD sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:a@example.com>;tag=1
To: <sip:bob@example.com>
Call-ID: c
CSeq: 9 NEWMETHOD
X-Weird-Header: some , value ; with = stuff
NewFangledHeader:   newfangled value
 continued newfangled value
Content-Length: 0

",
            ),
            |m| {
                assert_eq!(m.method(), Some(&Method::Other("NEWMETHOD".into())));
                assert_eq!(
                    m.header(&HeaderName::parse("newfangledheader")),
                    Some("newfangled value continued newfangled value")
                );
                assert_eq!(m.header(&HeaderName::parse("X-WEIRD-HEADER")), Some("some , value ; with = stuff"));
            },
        ),
        ok(
            "repeated equal Content-Length",
            base_with("Content-Length: 0\n\n", "Content-Length: 3\nl: 3\n\nabc"),
            |m| assert_eq!(m.body(), b"abc"),
        ),
        ok(
            "IPv6 in Request-URI, Via and Contact",
            crlf(
                "REGISTER sip:[2001:db8::10] SIP/2.0
Via: SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;received=2001:db8::9:255
From: <sip:user@[2001:db8::10]>;tag=81x2
To: <sip:user@[2001:db8::10]>
Call-ID: SSG9559905523997077@hlau_4100
CSeq: 1 REGISTER
Contact: \"U\" <sip:user@[2001:db8::9:1]:5070>;expires=3600
Content-Length: 0

",
            ),
            |m| {
                let u = m.parsed_request_uri().unwrap().unwrap();
                assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
                assert_eq!(m.top_via().host, Host::V6("2001:db8::9:1".parse().unwrap()));
                assert_eq!(m.top_via().port, Some(5070));
                assert_eq!(m.top_via().received(), Some(ip("2001:db8::9:255")));
                match &m.contacts().unwrap()[0] {
                    Contact::Addr(a) => {
                        assert_eq!(a.uri.host, Host::V6("2001:db8::9:1".parse().unwrap()));
                        assert_eq!(a.uri.port, Some(5070));
                    }
                    Contact::Star => panic!(),
                }
            },
        ),
        ok("bare LF line endings", BASE.replace("Content-Length: 0", "Content-Length: 2").into_bytes().into_iter().chain(*b"x\n").collect(), |m| {
            assert_eq!(m.call_id(), "3848276298220188511@example.com");
            assert_eq!(m.body(), b"x\n");
            assert!(!m.raw().contains(&b'\r'));
        }),
        ok(
            "mixed CRLF and LF",
            b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\nTo: <sip:a@b>\r\nCall-ID: c\nCSeq: 1 OPTIONS\r\n\nbody!"
                .to_vec(),
            |m| {
                assert_eq!(m.body(), b"body!");
                assert_eq!(m.header(&HeaderName::To), Some("<sip:a@b>"));
            },
        ),
        ok("leading CRLFs are skipped", [b"\r\n\r\n".as_slice(), &crlf(BASE)].concat(), |m| {
            assert!(m.raw().starts_with(b"INVITE "));
            assert_eq!(m.raw(), crlf(BASE).as_slice());
        }),
        ok(
            "extra datagram bytes after the body are discarded (dblreq)",
            [crlf(BASE), crlf(BASE)].concat(),
            |m| assert_eq!(m.raw(), crlf(BASE).as_slice()),
        ),
        ok(
            "no Content-Length on UDP: body is the rest",
            [base_with("Content-Length: 0\n", ""), b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n".to_vec()].concat(),
            |m| assert_eq!(m.body(), b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"),
        ),
        ok("response with empty reason after SP (noreason)", crlf(&RESP.replace("200 OK", "100 ")), |m| {
            assert_eq!(m.status(), Some(100));
            assert_eq!(m.reason(), Some(""));
        }),
        ok("response without reason or SP", crlf(&RESP.replace("200 OK", "180")), |m| {
            assert_eq!(m.reason(), Some(""))
        }),
        ok(
            "UTF-8 reason phrase (unreason)",
            crlf(&RESP.replace("200 OK", "200 = 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}")),
            |m| assert!(m.reason().unwrap().ends_with("\u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}")),
        ),
        ok("status 100 and 699 are in range", crlf(&RESP.replace("200 OK", "699 Whatever")), |m| {
            assert_eq!(m.status(), Some(699))
        }),
        ok(
            "short tortuous INVITE (wsinv style)",
            crlf(
                "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 5
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

v=0\n",
            ),
            |m| {
                assert_eq!(m.to().tag(), Some("1918181833n"));
                assert_eq!(m.from().tag(), Some("98asjd8"));
                assert_eq!(m.from().display.as_deref(), Some("J Rosenberg \\\""));
                assert_eq!(m.max_forwards(), Some(68));
                assert_eq!(m.cseq().seq, 9);
                assert_eq!(m.top_via().branch(), Some("390skdjuw"));
                let vias = m.vias().unwrap();
                assert_eq!(vias.len(), 3);
                assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
                assert_eq!(m.header(&HeaderName::Subject), Some(""));
                match &m.contacts().unwrap()[0] {
                    Contact::Addr(a) => {
                        assert_eq!(a.display.as_deref(), Some("Quoted string \"\""));
                        assert_eq!(a.params.value("newparam"), Some("newvalue"));
                        assert_eq!(a.params.value("q"), Some("0.33"));
                        assert_eq!(a.params.get("secondparam"), Some(None));
                    }
                    Contact::Star => panic!(),
                }
                assert_eq!(m.routes().unwrap().len(), 1);
                assert_eq!(m.body(), b"v=0\r\n");
            },
        ),
        ok(
            "wide range of valid characters (intmeth style)",
            crlf(
                "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{feff}\u{5927}\u{505c}\u{96fb}
Content-Length: 0

",
            ),
            |m| {
                assert_eq!(m.method().unwrap().as_str(), "!interesting-Method0123456789_*+`.%indeed'~");
                let u = m.parsed_request_uri().unwrap().unwrap();
                assert_eq!(u.password.as_deref(), Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
                assert_eq!(m.to().display.as_deref(), Some("BEL:\x07 NUL:\0 DEL:\x7f"));
                assert_eq!(m.from().display.as_deref(), Some("token1~` token2'+_ token3*%!.-"));
                assert_eq!(m.from().tag(), Some("_token~1'+`*%!-."));
                assert_eq!(m.from().params.value("fromParam''~+*_!.-%"), Some("\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}"));
                assert_eq!(m.call_id(), "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
                assert_eq!(m.top_via().branch(), Some("z9hG4bK-.!%66*_+`'~"));
                assert_eq!(m.header(&HeaderName::parse("EXTENSIONheader-!.%*+_`'~")), Some("\u{feff}\u{5927}\u{505c}\u{96fb}"));
            },
        ),
        ok(
            "escaped URIs (esc01 style)",
            crlf(
                "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%61lice@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 0

",
            ),
            |m| {
                let u = m.parsed_request_uri().unwrap().unwrap();
                assert_eq!(u.user.as_deref(), Some("sips:user@example.com"));
                assert_eq!(u.host, Host::Name("example.net".into()));
                assert_eq!(m.to().uri.user.as_deref(), Some("alice"));
                assert_eq!(m.from().uri.user.as_deref(), Some("I have spaces"));
                assert_eq!(m.contacts().unwrap().len(), 1);
            },
        ),
        ok(
            "escaped nulls in URIs (escnull style)",
            crlf(
                "REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
            ),
            |m| {
                assert_eq!(m.to().uri.user.as_deref(), Some("null-\0-null"));
                assert_eq!(m.from().tag(), Some("839923423"));
                assert_eq!(m.contacts().unwrap().len(), 2);
            },
        ),
        ok(
            "escaped method token (esc02 style)",
            crlf(
                "RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209793
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
CSeq: 29344 RE%47IST%45R
l: 0

",
            ),
            |m| {
                assert_eq!(m.method(), Some(&Method::Other("RE%47IST%45R".into())));
                assert_eq!(m.to().display.as_deref(), Some("%Z%45"));
            },
        ),
        ok(
            "no LWS between display name and < (lwsdisp)",
            base_with("From: Alice <sip:alice@example.com>;tag=9fxced76sl", "From: caller<sip:caller@example.com>;tag=323"),
            |m| {
                assert_eq!(m.from().display.as_deref(), Some("caller"));
                assert_eq!(m.from().tag(), Some("323"));
            },
        ),
        ok(
            "semicolon in user part (semiuri)",
            crlf(
                "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

",
            ),
            |m| {
                let u = m.parsed_request_uri().unwrap().unwrap();
                assert_eq!(u.user.as_deref(), Some("user;par=u@example.net"));
                assert_eq!(m.from().tag(), Some("33242"));
                assert_eq!(m.header_values(&HeaderName::Accept).len(), 6);
            },
        ),
        ok(
            "unknown scheme Request-URI is kept raw (unksm)",
            base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE unknownscheme:unknownscheme-is-fine SIP/2.0"),
            |m| {
                assert_eq!(m.request_uri(), Some("unknownscheme:unknownscheme-is-fine"));
                assert!(m.parsed_request_uri().unwrap().is_err());
            },
        ),
        ok(
            "novel scheme with punctuation (novelsc)",
            base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE soap.beep://192.0.2.103:3002 SIP/2.0"),
            |m| assert_eq!(m.request_uri(), Some("soap.beep://192.0.2.103:3002")),
        ),
        ok(
            "tel Request-URI",
            base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE tel:+74951234567;phone-context=example.com SIP/2.0"),
            |m| {
                let u = m.parsed_request_uri().unwrap().unwrap();
                assert_eq!(u.scheme, Scheme::Tel);
                assert_eq!(u.user.as_deref(), Some("+74951234567"));
            },
        ),
        ok(
            "sips Request-URI with params and headers",
            base_with(
                "INVITE sip:bob@example.com SIP/2.0",
                "INVITE SIPS:bob@example.com:5061;transport=tcp?Subject=hi SIP/2.0",
            ),
            |m| {
                let u = m.parsed_request_uri().unwrap().unwrap();
                assert_eq!(u.scheme, Scheme::Sips);
                assert_eq!(u.port, Some(5061));
                assert_eq!(u.headers.len(), 1);
            },
        ),
        ok("version compared case-insensitively", base_with("SIP/2.0\n", "sip/2.0\n"), |m| {
            assert_eq!(m.method(), Some(&Method::Invite))
        }),
        ok(
            "binary body",
            [
                base_with("Content-Length: 0\n", "Content-Type: application/octet-stream\nContent-Length: 6\n"),
                vec![0, 0xff, 0xfe, b'\r', b'\n', 0x80],
            ]
            .concat(),
            |m| assert_eq!(m.body().len(), 6),
        ),
        ok("empty header value", base_with("Content-Length: 0", "Subject:\nX-Empty:   \nContent-Length: 0"), |m| {
            assert_eq!(m.header(&HeaderName::Subject), Some(""));
            assert_eq!(m.header(&HeaderName::parse("x-empty")), Some(""));
        }),
        ok(
            "addr-spec From: params after the URI are header params",
            base_with(
                "From: Alice <sip:alice@example.com>;tag=9fxced76sl",
                "From: sip:alice@example.com;user=phone;tag=abc",
            ),
            |m| {
                assert_eq!(m.from().tag(), Some("abc"));
                assert!(m.from().params.has("user"));
                assert!(m.from().uri.params.0.is_empty());
            },
        ),
        ok("Max-Forwards 0 and Contact *", base_with("Max-Forwards: 70", "Max-Forwards: 0\nContact: *\nExpires: 0"), |m| {
            assert_eq!(m.max_forwards(), Some(0));
            assert_eq!(m.contacts().unwrap(), vec![Contact::Star]);
            assert_eq!(m.expires(), Some(0));
        }),
        ok(
            "Request-URI with escaped headers is accepted at parse (escruri)",
            base_with(
                "INVITE sip:bob@example.com SIP/2.0",
                "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0",
            ),
            |m| {
                let u = m.parsed_request_uri().unwrap().unwrap();
                assert_eq!(u.headers[0], ("Route".to_string(), "<sip:example.com>".to_string()));
            },
        ),
        ok(
            "Contact addr-spec with ? parses but contacts() refuses it (regbadct)",
            base_with("Content-Length: 0", "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\nContent-Length: 0"),
            |m| assert!(m.contacts().is_err()),
        ),
        ok(
            "multipart body with Content-Length",
            {
                let body = "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n";
                let mut b = base_with(
                    "Content-Length: 0\n\n",
                    &format!("Content-Type: multipart/mixed;boundary=b\nContent-Length: {}\n\n", body.len()),
                );
                b.extend_from_slice(body.as_bytes());
                b
            },
            |m| assert!(m.body().ends_with(b"--b--\r\n")),
        ),
        ok("long line within the limit", base_with("Content-Length: 0", &format!("X-Long: {}\nContent-Length: 0", "a".repeat(8000))), |m| {
            assert_eq!(m.header(&HeaderName::parse("x-long")).unwrap().len(), 8000)
        }),
        ok(
            "many Route values across lines",
            base_with(
                "Content-Length: 0",
                "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>\nRoute: <sip:p3.example.com;lr>\nRecord-Route: <sip:rr1;lr>, <sip:rr2;lr>\nContent-Length: 0",
            ),
            |m| {
                let r = m.routes().unwrap();
                assert_eq!(r.len(), 3);
                assert_eq!(r[2].uri.host, Host::Name("p3.example.com".into()));
                assert_eq!(m.record_routes().unwrap().len(), 2);
            },
        ),
        ok("IPv4 Via with rport and received", crlf(&RESP.replace(";received=192.0.2.1", ";rport=5061;received=198.51.100.7")), |m| {
            assert_eq!(m.top_via().rport(), Some(Some(5061)));
            assert_eq!(m.top_via().received(), Some(ip("198.51.100.7")));
        }),
        // -------------------------------------------------------------- invalid
        err("empty input", Vec::new(), ParseError::BadStartLine),
        err("only CRLFs", b"\r\n\r\n\r\n".to_vec(), ParseError::BadStartLine),
        err("binary garbage with no line", vec![0x00, 0xff, 0x13, 0x37, 0xfe], ParseError::BadStartLine),
        err("binary garbage line", b"\xff\xfe\x00\x01 \x80\n\n".to_vec(), ParseError::NotUtf8),
        err("ASCII garbage", crlf("hello world\n\n"), ParseError::BadStartLine),
        err("HTTP request line", crlf("GET / HTTP/1.1\nHost: x\n\n"), ParseError::BadVersion),
        err("HTTP response line", crlf("HTTP/1.1 200 OK\n\n"), ParseError::BadStartLine),
        err("SIP/3.0 request", base_with("SIP/2.0\n", "SIP/3.0\n"), ParseError::BadVersion),
        err("SIP/2.0x request", base_with("SIP/2.0\n", "SIP/2.0x\n"), ParseError::BadVersion),
        err("SIP/7.0 request (badvers)", base_with("SIP/2.0\n", "SIP/7.0\n"), ParseError::BadVersion),
        err("SIP/3.0 response", crlf(&RESP.replace("SIP/2.0 200", "SIP/3.0 200")), ParseError::BadVersion),
        err("status 99", crlf(&RESP.replace("200 OK", "099 Low")), ParseError::BadStartLine),
        err("status 700", crlf(&RESP.replace("200 OK", "700 High")), ParseError::BadStartLine),
        err("status with 4 digits", crlf(&RESP.replace("200 OK", "2000 OK")), ParseError::BadStartLine),
        err(
            "huge status code (bigcode)",
            crlf(&RESP.replace("200 OK", "4294967301 better not break the receiver")),
            ParseError::BadStartLine,
        ),
        err("non-numeric status", crlf(&RESP.replace("200 OK", "2x0 OK")), ParseError::BadStartLine),
        err("missing Via", base_with("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9\n", ""), ParseError::MissingHeader("Via")),
        err("missing From", base_with("From: Alice <sip:alice@example.com>;tag=9fxced76sl\n", ""), ParseError::MissingHeader("From")),
        err("missing To", base_with("To: Bob <sip:bob@example.com>\n", ""), ParseError::MissingHeader("To")),
        err("missing Call-ID", base_with("Call-ID: 3848276298220188511@example.com\n", ""), ParseError::MissingHeader("Call-ID")),
        err("missing CSeq", base_with("CSeq: 1 INVITE\n", ""), ParseError::MissingHeader("CSeq")),
        err(
            "missing everything but the start line (insuf)",
            crlf("INVITE sip:bob@example.com SIP/2.0\n\n"),
            ParseError::MissingHeader("Via"),
        ),
        err("CSeq method mismatch (mismatch01)", base_with("CSeq: 1 INVITE", "CSeq: 1 OPTIONS"), bad_header()),
        err(
            "unknown method with CSeq mismatch (mismatch02)",
            base_with("INVITE sip:bob@example.com SIP/2.0", "NEWMETHOD sip:bob@example.com SIP/2.0"),
            bad_header(),
        ),
        err("CSeq method case differs", base_with("CSeq: 1 INVITE", "CSeq: 1 invite"), bad_header()),
        err("different Content-Length values (mcl01)", base_with("Content-Length: 0", "Content-Length: 0\nl: 193"), ParseError::BadContentLength),
        err("negative Content-Length", base_with("Content-Length: 0", "Content-Length: -999"), ParseError::BadContentLength),
        err("non-numeric Content-Length", base_with("Content-Length: 0", "Content-Length: zero"), ParseError::BadContentLength),
        err("empty Content-Length", base_with("Content-Length: 0", "Content-Length:"), ParseError::BadContentLength),
        err("Content-Length larger than the datagram (clerr)", base_with("Content-Length: 0", "Content-Length: 9999"), ParseError::BodyTruncated),
        err("Content-Length overflow", base_with("Content-Length: 0", "Content-Length: 99999999999999999999999"), ParseError::BadContentLength),
        err("header without colon", base_with("Max-Forwards: 70", "Max-Forwards 70"), bad_header()),
        err("header name with a space", base_with("Max-Forwards: 70", "Max Forwards: 70"), bad_header()),
        err("empty header name", base_with("Max-Forwards: 70", ": 70"), bad_header()),
        err("continuation line right after the start line", base_with("SIP/2.0\n", "SIP/2.0\n  folded: x\n"), bad_header()),
        err("header section not terminated", crlf(BASE.trim_end()), bad_header()),
        err("non-UTF-8 in a header value", {
            let mut b = base_with("Content-Length: 0", "Subject: caf\u{1}\nContent-Length: 0");
            let i = b.iter().position(|&c| c == 1).unwrap();
            b[i] = 0xe9;
            b
        }, ParseError::NotUtf8),
        err("Request-URI in <> (ltgtruri)", base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE <sip:user@example.com> SIP/2.0"), ParseError::BadStartLine),
        err("LWS in Request-URI (lwsruri)", base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE sip:user@example.com; lr SIP/2.0"), ParseError::BadStartLine),
        err("multiple SP in request line (lwsstart)", base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE  sip:user@example.com  SIP/2.0"), ParseError::BadStartLine),
        err("trailing SP in request line (trws)", base_with("SIP/2.0\n", "SIP/2.0 \n"), ParseError::BadStartLine),
        err("bad sip Request-URI", base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE sip:bob@ SIP/2.0"), ParseError::BadStartLine),
        err("Request-URI without scheme", base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE bob SIP/2.0"), ParseError::BadStartLine),
        err("method is not a token", base_with("INVITE sip:bob@example.com SIP/2.0", "INV:ITE sip:bob@example.com SIP/2.0"), ParseError::BadStartLine),
        err("request line with two parts", base_with("INVITE sip:bob@example.com SIP/2.0", "INVITE sip:bob@example.com"), ParseError::BadStartLine),
        err(
            "extraneous separators in From (badinv01)",
            base_with("From: Alice <sip:alice@example.com>;tag=9fxced76sl", "From: sip:caller@example.net;;tag=134161461246"),
            bad_header(),
        ),
        err("unterminated quoted display name (quotbal)", base_with("To: Bob <sip:bob@example.com>", "To: \"Mr. J. User <sip:j.user@example.com>"), bad_header()),
        err("unquoted display name with a comma (baddn)", base_with("From: Alice <sip:alice@example.com>", "From: Bell, Alexander <sip:a.g.bell@example.com>"), bad_header()),
        err("spaces inside <> (badaspec)", base_with("To: Bob <sip:bob@example.com>", "To: \"Watson, Thomas\" < sip:t.watson@example.org >"), bad_header()),
        err("CSeq number overflow (scalarlg)", base_with("CSeq: 1 INVITE", "CSeq: 36893488147419103232 INVITE"), bad_header()),
        err("two CSeq lines (multi01)", base_with("CSeq: 1 INVITE", "CSeq: 1 INVITE\nCSeq: 2 INVITE"), bad_header()),
        err("two Call-ID lines", base_with("Call-ID: 3848276298220188511@example.com", "Call-ID: a\ni: b"), bad_header()),
        err("two From lines", base_with("From: Alice <sip:alice@example.com>;tag=9fxced76sl", "From: <sip:a@b>;tag=1\nf: <sip:c@d>;tag=2"), bad_header()),
        err("To with two values", base_with("To: Bob <sip:bob@example.com>", "To: <sip:a@b>, <sip:c@d>"), bad_header()),
        err("Via without host", base_with("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9", "Via: SIP/2.0/UDP"), bad_header()),
        err("Via with bad port", base_with("192.0.2.1:5060", "192.0.2.1:65536"), bad_header()),
        err("Call-ID with a space", base_with("Call-ID: 3848276298220188511@example.com", "Call-ID: a b"), bad_header()),
        err("empty Call-ID", base_with("Call-ID: 3848276298220188511@example.com", "Call-ID:   "), bad_header()),
        err("unknown scheme in To (unksm2)", base_with("To: Bob <sip:bob@example.com>", "To: isbn:2983792873"), bad_header()),
        err("very long line", base_with("Content-Length: 0", &format!("X-Long: {}\nContent-Length: 0", "a".repeat(9000))), ParseError::LineTooLong),
        err("very long start line", crlf(&format!("INVITE sip:{}@example.com SIP/2.0\n\n", "a".repeat(9000))), ParseError::LineTooLong),
        err(
            "too many headers",
            base_with("Content-Length: 0", &"X-A: 1\n".repeat(130)),
            ParseError::TooManyHeaders,
        ),
    ];
    v.push(Case {
        name: "message over the size limit",
        input: crlf(BASE),
        limits: Limits {
            max_message: 200,
            ..Limits::default()
        },
        expect: Expect::Err(ParseError::TooLarge),
    });
    v.push(Case {
        name: "body pushes message over the size limit",
        input: base_with(
            "Content-Length: 0\n\n",
            &format!("Content-Length: 300\n\n{}", "b".repeat(300)),
        ),
        limits: Limits {
            max_message: 400,
            ..Limits::default()
        },
        expect: Expect::Err(ParseError::TooLarge),
    });
    v.push(Case {
        name: "exactly max_headers is fine",
        input: crlf(BASE),
        limits: Limits {
            max_headers: 7,
            ..Limits::default()
        },
        expect: Expect::Ok(|m| assert_eq!(m.all_headers().count(), 7)),
    });
    v.push(Case {
        name: "one over max_headers",
        input: crlf(BASE),
        limits: Limits {
            max_headers: 6,
            ..Limits::default()
        },
        expect: Expect::Err(ParseError::TooManyHeaders),
    });
    v.push(Case {
        name: "folded line counts toward max_line",
        input: base_with(
            "Content-Length: 0",
            &format!(
                "X-F: {}\n {}\nContent-Length: 0",
                "a".repeat(60),
                "b".repeat(60)
            ),
        ),
        limits: Limits {
            max_line: 100,
            ..Limits::default()
        },
        expect: Expect::Err(ParseError::LineTooLong),
    });
    v
}

fn same_variant(a: &ParseError, b: &ParseError) -> bool {
    match (a, b) {
        (ParseError::BadHeader(_), ParseError::BadHeader(_)) => true,
        _ => a == b,
    }
}

#[test]
fn corpus() {
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let got = std::panic::catch_unwind(|| Message::parse(&case.input, &case.limits));
        let got = match got {
            Ok(g) => g,
            Err(_) => {
                failures.push(format!("{}: parser panicked", case.name));
                continue;
            }
        };
        match (&case.expect, got) {
            (Expect::Ok(check), Ok(m)) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&m))).is_err() {
                    failures.push(format!("{}: check failed", case.name));
                }
                // Every valid message also frames and parses as a stream
                // message the same way when it has a Content-Length.
                if m.has_header(&HeaderName::ContentLength) {
                    let s = Message::parse_stream(m.raw(), &case.limits).map(|s| s.raw().to_vec());
                    if s.as_deref() != Ok(m.raw()) {
                        failures.push(format!("{}: parse_stream differs: {s:?}", case.name));
                    }
                }
            }
            (Expect::Err(e), Err(g)) if same_variant(e, &g) => {}
            (Expect::Ok(_), Err(g)) => {
                failures.push(format!("{}: expected Ok, got {g:?}", case.name))
            }
            (Expect::Err(e), Ok(_)) => {
                failures.push(format!("{}: expected {e:?}, got Ok", case.name))
            }
            (Expect::Err(e), Err(g)) => {
                failures.push(format!("{}: expected {e:?}, got {g:?}", case.name))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
