//! ResponseBuilder / RequestBuilder output re-parses and copies the
//! request's Via/From/To/Call-ID/CSeq as received.

use crate::sip::{HeaderName, Limits, Message, Method, RequestBuilder, ResponseBuilder};

/// Compact names, bare LF, folding, odd spacing: the response still uses
/// canonical names and CRLF and keeps the values as received.
const REQ: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1;rport, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2\n\
Max-Forwards: 70\n\
VIA: SIP/2.0/TLS c.example.com;branch=z9hG4bK3\n\
f: \"Al, \\\"ice\\\"\"  <sip:alice@example.com>;tag=abc\n\
t: sip:bob@example.com\n\
i: 9f8e7d@192.0.2.1\n\
CSeq:  42\n   INVITE\n\
Route: <sip:p;lr>\n\
Content-Length: 0\n\
\n";

fn parse(b: &[u8]) -> Message {
    Message::parse(b, &Limits::default()).unwrap()
}

#[test]
fn response_copies_dialog_headers_in_order() {
    let req = parse(REQ);
    let out = ResponseBuilder::new(&req, 486, "Busy Here")
        .to_tag("srv1")
        .build();
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        text,
        "SIP/2.0 486 Busy Here\r\n\
         Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1;rport, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2\r\n\
         Via: SIP/2.0/TLS c.example.com;branch=z9hG4bK3\r\n\
         From: \"Al, \\\"ice\\\"\"  <sip:alice@example.com>;tag=abc\r\n\
         To: sip:bob@example.com;tag=srv1\r\n\
         Call-ID: 9f8e7d@192.0.2.1\r\n\
         CSeq: 42 INVITE\r\n\
         Content-Length: 0\r\n\
         \r\n"
    );
    let resp = parse(&out);
    assert_eq!(resp.status(), Some(486));
    assert_eq!(resp.vias().unwrap(), req.vias().unwrap());
    assert_eq!(resp.from(), req.from());
    assert_eq!(resp.to().uri, req.to().uri);
    assert_eq!(resp.to().tag(), Some("srv1"));
    assert_eq!(resp.call_id(), req.call_id());
    assert_eq!(resp.cseq(), req.cseq());
    assert!(resp.routes().unwrap().is_empty());
    assert_eq!(resp.max_forwards(), None);
}

#[test]
fn response_top_via_headers_and_body() {
    let req = parse(REQ);
    let out = ResponseBuilder::new(&req, 200, "OK")
        .top_via("SIP/2.0/UDP a.example.com;branch=z9hG4bK1;rport=5062;received=198.51.100.1")
        .to_tag("t2")
        .header(HeaderName::Contact, "<sip:bob@192.0.2.9>")
        .header(HeaderName::parse("x-extra"), "1")
        .body("application/sdp", b"v=0\r\n")
        .build();
    let resp = parse(&out);
    let vias = resp.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].rport(), Some(Some(5062)));
    assert_eq!(vias[1].port, Some(5070));
    assert_eq!(resp.contacts().unwrap().len(), 1);
    assert_eq!(resp.header(&HeaderName::parse("X-Extra")), Some("1"));
    assert_eq!(resp.body(), b"v=0\r\n");
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.ends_with("Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"));
    // framed as a stream message too
    assert_eq!(
        crate::sip::frame_stream(&out, &Limits::default()),
        Ok(crate::sip::StreamFrame::Message(out.len()))
    );
}

#[test]
fn trying_never_gets_a_tag() {
    let req = parse(REQ);
    let resp = parse(
        &ResponseBuilder::new(&req, 100, "Trying")
            .to_tag("x")
            .build(),
    );
    assert_eq!(resp.to().tag(), None);
    assert_eq!(resp.header(&HeaderName::To), Some("sip:bob@example.com"));
}

#[test]
fn reason_with_crlf_cannot_inject() {
    let req = parse(REQ);
    let out = ResponseBuilder::new(&req, 500, "Oops\r\nVia: evil").build();
    let resp = parse(&out);
    assert_eq!(resp.reason(), Some("Oops  Via: evil"));
    assert_eq!(resp.vias().unwrap().len(), 3);
}

#[test]
fn cancel_built_from_invite() {
    let req = parse(REQ);
    let out = RequestBuilder::new(&Method::Cancel, req.request_uri().unwrap())
        .header(HeaderName::Via, req.header_values(&HeaderName::Via)[0])
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, req.header(&HeaderName::From).unwrap())
        .header(HeaderName::To, req.header(&HeaderName::To).unwrap())
        .header(HeaderName::CallId, req.call_id())
        .header(HeaderName::CSeq, &format!("{} CANCEL", req.cseq().seq))
        .header(HeaderName::ContentLength, "123")
        .build();
    let c = parse(&out);
    assert_eq!(c.method(), Some(&Method::Cancel));
    assert_eq!(c.top_via(), req.top_via());
    assert_eq!(c.cseq().seq, 42);
    assert_eq!(
        c.headers(&HeaderName::ContentLength).collect::<Vec<_>>(),
        vec!["0"]
    );
    assert!(std::str::from_utf8(&out)
        .unwrap()
        .ends_with("Content-Length: 0\r\n\r\n"));
}
