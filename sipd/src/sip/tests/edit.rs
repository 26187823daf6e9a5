//! Round-trip tests for forwarding edits: each edit is applied, the output
//! re-parsed, the edited value checked, and every other byte compared with
//! the original.

use crate::sip::{HeaderName, Limits, Message};

const ORIG: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n\
    v: SIP/2.0/TCP c.example.com;branch=z9hG4bK3\r\n\
    Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
    Route: <sip:p3.example.com;lr>\r\n\
    Record-Route: <sip:rr.example.com;lr>\r\n\
    Max-Forwards: 70\r\n\
    From: \"A, B\" <sip:alice@example.com>;tag=1\r\n\
    To: <sip:bob@example.com>\r\n\
    Call-ID: abc@host\r\n\
    CSeq: 1 INVITE\r\n\
    Contact: <sip:alice@192.0.2.1>\r\n\
    m: <sip:alice2@192.0.2.1>\r\n\
    Content-Type: application/octet-stream\r\n\
    Content-Length: 6\r\n\
    \r\n";

/// Binary body (not UTF-8, contains CRLFCRLF) after the header section.
const BODY: &[u8] = b"\x00\r\n\r\n\xff";

/// A header section (text) followed by the binary body.
fn full(head: &str) -> Vec<u8> {
    [head.as_bytes(), BODY].concat()
}

fn orig() -> Vec<u8> {
    full(ORIG)
}

fn parse(b: &[u8]) -> Message {
    Message::parse(b, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

/// The original bytes with exactly one occurrence of `from` replaced.
fn orig_with(from: &str, to: &str) -> Vec<u8> {
    let s = ORIG;
    assert_eq!(s.matches(from).count(), 1, "{from:?} must occur once");
    full(&s.replacen(from, to, 1))
}

fn check(out: &[u8], expected: &[u8]) -> Message {
    assert_eq!(
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(expected)
    );
    let m = parse(out);
    assert_eq!(m.body(), BODY);
    m
}

#[test]
fn identity() {
    let m = parse(&orig());
    assert_eq!(m.edit().finish(), orig());
}

#[test]
fn push_via_then_pop_restores_original() {
    let m = parse(&orig());
    let out = m
        .edit()
        .push_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
        .finish();
    let p = check(
        &out,
        &orig_with(
            "\r\nVia: SIP/2.0/UDP a.",
            "\r\nVia: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\nVia: SIP/2.0/UDP a.",
        ),
    );
    assert_eq!(p.top_via().branch(), Some("z9hG4bKp"));
    assert_eq!(p.vias().unwrap().len(), 4);
    assert_eq!(p.edit().pop_via().finish(), orig());
}

#[test]
fn pop_via_from_multi_value_line() {
    let out = parse(&orig()).edit().pop_via().finish();
    let p = check(
        &out,
        &orig_with("SIP/2.0/UDP a.example.com;branch=z9hG4bK1, ", ""),
    );
    assert_eq!(p.top_via().branch(), Some("z9hG4bK2"));
    // a second pop removes the whole (now single-value) line, a third the compact one
    let out2 = p.edit().pop_via().finish();
    let p2 = parse(&out2);
    assert_eq!(p2.top_via().branch(), Some("z9hG4bK3"));
    assert!(!String::from_utf8_lossy(&out2).contains("\r\nVia:"));
    let out3 = parse(&orig()).edit().pop_via().pop_via().pop_via().finish();
    assert_eq!(
        Message::parse(&out3, &Limits::default()).unwrap_err(),
        crate::sip::ParseError::MissingHeader("Via")
    );
}

#[test]
fn set_top_via_changes_only_the_first_value() {
    let out = parse(&orig())
        .edit()
        .set_top_via("SIP/2.0/UDP a.example.com;branch=z9hG4bK1;received=192.0.2.9;rport=5070")
        .finish();
    let p = check(
        &out,
        &orig_with(
            "branch=z9hG4bK1,",
            "branch=z9hG4bK1;received=192.0.2.9;rport=5070,",
        ),
    );
    assert_eq!(p.top_via().rport(), Some(Some(5070)));
    assert_eq!(p.vias().unwrap()[1].branch(), Some("z9hG4bK2"));
}

#[test]
fn pop_route_leaves_the_rest_of_the_line() {
    let out = parse(&orig()).edit().pop_route().finish();
    let p = check(
        &out,
        &orig_with("Route: <sip:p1.example.com;lr>, <sip:p2", "Route: <sip:p2"),
    );
    let r = p.routes().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].uri.to_string(), "sip:p2.example.com;lr");
    // two more pops remove both lines
    let out = parse(&orig())
        .edit()
        .pop_route()
        .pop_route()
        .pop_route()
        .finish();
    let p = parse(&out);
    assert!(p.routes().unwrap().is_empty());
    let expected = ORIG
        .replace(
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n",
            "",
        )
        .replace("Route: <sip:p3.example.com;lr>\r\n", "");
    assert_eq!(out, full(&expected));
}

#[test]
fn set_request_uri_changes_only_the_start_line() {
    let out = parse(&orig())
        .edit()
        .set_request_uri("sip:bob@192.0.2.44:5080;transport=tcp")
        .finish();
    let p = check(
        &out,
        &orig_with(
            "INVITE sip:bob@example.com SIP",
            "INVITE sip:bob@192.0.2.44:5080;transport=tcp SIP",
        ),
    );
    assert_eq!(
        p.request_uri(),
        Some("sip:bob@192.0.2.44:5080;transport=tcp")
    );
}

#[test]
fn record_route_goes_above_existing_ones() {
    let out = parse(&orig())
        .edit()
        .push_record_route("<sip:proxy.example.com;lr>")
        .finish();
    let p = check(
        &out,
        &orig_with(
            "Record-Route:",
            "Record-Route: <sip:proxy.example.com;lr>\r\nRecord-Route:",
        ),
    );
    assert_eq!(p.record_routes().unwrap().len(), 2);
    assert_eq!(
        p.record_routes().unwrap()[0].uri.host.to_string(),
        "proxy.example.com"
    );
}

#[test]
fn record_route_without_existing_goes_after_the_vias() {
    let src = ORIG.replace("Record-Route: <sip:rr.example.com;lr>\r\n", "");
    let m = parse(&full(&src));
    let out = m
        .edit()
        .push_record_route("<sip:p;lr>")
        .push_record_route("<sip:q;lr>")
        .finish();
    let expected = src.replace(
        "branch=z9hG4bK3\r\n",
        "branch=z9hG4bK3\r\nRecord-Route: <sip:q;lr>\r\nRecord-Route: <sip:p;lr>\r\n",
    );
    assert_eq!(out, full(&expected));
}

#[test]
fn max_forwards_edits() {
    let out = parse(&orig()).edit().decrement_max_forwards().finish();
    assert_eq!(
        check(&out, &orig_with("Max-Forwards: 70", "Max-Forwards: 69")).max_forwards(),
        Some(69)
    );
    let out = parse(&orig()).edit().set_max_forwards(5).finish();
    assert_eq!(
        check(&out, &orig_with("Max-Forwards: 70", "Max-Forwards: 5")).max_forwards(),
        Some(5)
    );
    let zero = ORIG.replace("Max-Forwards: 70", "Max-Forwards: 0");
    let out = parse(&full(&zero)).edit().decrement_max_forwards().finish();
    assert_eq!(out, full(&zero));

    // absent: inserted at the end of the header section
    let src = ORIG.replace("Max-Forwards: 70\r\n", "");
    let out = parse(&full(&src)).edit().decrement_max_forwards().finish();
    let expected = src.replace(
        "Content-Length: 6\r\n",
        "Content-Length: 6\r\nMax-Forwards: 70\r\n",
    );
    assert_eq!(out, full(&expected));
    assert_eq!(parse(&out).max_forwards(), Some(70));
    let out = parse(&full(&src)).edit().set_max_forwards(10).finish();
    assert_eq!(parse(&out).max_forwards(), Some(10));
}

#[test]
fn set_header_replaces_all_lines_at_the_first_place() {
    let out = parse(&orig())
        .edit()
        .set_header(HeaderName::Contact, "<sip:new@192.0.2.2>")
        .finish();
    let expected = ORIG
        .replace(
            "Contact: <sip:alice@192.0.2.1>\r\n",
            "Contact: <sip:new@192.0.2.2>\r\n",
        )
        .replace("m: <sip:alice2@192.0.2.1>\r\n", "");
    let p = check(&out, &full(&expected));
    assert_eq!(p.contacts().unwrap().len(), 1);

    // absent: appended
    let out = parse(&orig())
        .edit()
        .set_header(HeaderName::UserAgent, "sipd/0.1")
        .finish();
    check(
        &out,
        &orig_with(
            "Content-Length: 6\r\n",
            "Content-Length: 6\r\nUser-Agent: sipd/0.1\r\n",
        ),
    );
}

#[test]
fn add_and_remove_header() {
    let out = parse(&orig())
        .edit()
        .add_header(HeaderName::parse("X-Trace"), "1")
        .add_header(HeaderName::parse("X-Trace"), "2")
        .finish();
    let p = check(
        &out,
        &orig_with(
            "Content-Length: 6\r\n",
            "Content-Length: 6\r\nx-trace: 1\r\nx-trace: 2\r\n",
        ),
    );
    assert_eq!(
        p.header_values(&HeaderName::parse("x-trace")),
        vec!["1", "2"]
    );

    let out = parse(&orig())
        .edit()
        .remove_header(HeaderName::Contact)
        .finish();
    let expected = ORIG
        .replace("Contact: <sip:alice@192.0.2.1>\r\n", "")
        .replace("m: <sip:alice2@192.0.2.1>\r\n", "");
    assert!(check(&out, &full(&expected)).contacts().unwrap().is_empty());
}

#[test]
fn finish_adds_content_length_when_missing() {
    let src = ORIG.replace("Content-Length: 6\r\n", "");
    let m = parse(&full(&src));
    let out = m.edit().finish();
    let expected = src.replace(
        "application/octet-stream\r\n",
        "application/octet-stream\r\nContent-Length: 6\r\n",
    );
    assert_eq!(out, full(&expected));
    // now framed correctly as a stream message too
    let s = Message::parse_stream(&out, &Limits::default()).unwrap();
    assert_eq!(s.body(), BODY);
    // removing it explicitly still leaves a correct one
    let out = parse(&orig())
        .edit()
        .remove_header(HeaderName::ContentLength)
        .finish();
    assert_eq!(out, orig());
}

#[test]
fn bare_lf_message_keeps_its_bytes() {
    let src = ORIG.replace("\r\n", "\n");
    let m = parse(&full(&src));
    assert_eq!(m.body(), BODY);
    let out = m.edit().pop_via().pop_route().finish();
    let expected = src
        .replace("SIP/2.0/UDP a.example.com;branch=z9hG4bK1, ", "")
        .replace("<sip:p1.example.com;lr>, ", "");
    assert_eq!(out, full(&expected));
}

#[test]
fn folded_multi_value_line_pop() {
    let src = ORIG.replace(
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP",
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,\r\n  SIP/2.0/UDP",
    );
    let out = parse(&full(&src)).edit().pop_via().finish();
    let expected = src.replace("SIP/2.0/UDP a.example.com;branch=z9hG4bK1,\r\n  ", "");
    assert_eq!(out, full(&expected));
    assert_eq!(parse(&out).top_via().branch(), Some("z9hG4bK2"));
}

#[test]
fn all_forwarding_edits_together() {
    let out = parse(&orig())
        .edit()
        .decrement_max_forwards()
        .pop_route()
        .set_request_uri("sip:p2.example.com;lr")
        .push_record_route("<sip:proxy;lr>")
        .push_via("SIP/2.0/UDP proxy;branch=z9hG4bKnew")
        .finish();
    let expected = ORIG
        .replace(
            "INVITE sip:bob@example.com SIP",
            "INVITE sip:p2.example.com;lr SIP",
        )
        .replace(
            "\r\nVia: SIP/2.0/UDP a.",
            "\r\nVia: SIP/2.0/UDP proxy;branch=z9hG4bKnew\r\nVia: SIP/2.0/UDP a.",
        )
        .replace("<sip:p1.example.com;lr>, ", "")
        .replace(
            "Record-Route:",
            "Record-Route: <sip:proxy;lr>\r\nRecord-Route:",
        )
        .replace("Max-Forwards: 70", "Max-Forwards: 69");
    let p = check(&out, &full(&expected));
    assert_eq!(p.vias().unwrap().len(), 4);
}

#[test]
fn set_body_replaces_the_body_and_its_content_length_only() {
    let m = parse(&orig());
    let new = b"v=0\r\nc=IN IP4 127.0.0.1\r\n".to_vec();
    let out = m.edit().pop_via().set_body(new.clone()).finish();
    let head = ORIG
        .replacen(
            "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, ",
            "Via: ",
            1,
        )
        .replacen(
            "Content-Length: 6\r\n",
            &format!("Content-Length: {}\r\n", new.len()),
            1,
        );
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&[head.as_bytes(), &new].concat())
    );
    assert_eq!(parse(&out).body(), &new[..]);
    // Without a Content-Length line one is added, with the new length.
    let bare = full(&ORIG.replacen("Content-Length: 6\r\n", "", 1));
    let out = parse(&bare).edit().set_body(b"abc".to_vec()).finish();
    let m = parse(&out);
    assert_eq!(m.body(), b"abc");
    assert_eq!(m.header(&HeaderName::ContentLength), Some("3"));
}
