//! Building new messages: responses to a received request, and requests the
//! proxy originates (CANCEL, ACK for non-2xx, OPTIONS, NOTIFY…).
//!
//! Output uses CRLF and canonical header names; `Content-Length` is always
//! the last header. CR/LF inside given values become SP (no header
//! injection). A `Content-Length` passed to `header` is ignored (the
//! builders write the right one).

use std::fmt::Write as _;

use super::edit::{push_header_line, push_sanitized};
use super::message::Message;
use super::method::Method;
use super::name::HeaderName;
use super::parse::list_ranges;

/// Builds a response to `req`: copies every Via (in order), From, To, Call-ID
/// and CSeq; adds the To tag when given and To has none (not for 100);
/// writes `Content-Length`.
#[derive(Debug)]
pub struct ResponseBuilder<'a> {
    req: &'a Message,
    code: u16,
    reason: String,
    top_via: Option<String>,
    to_tag: Option<String>,
    headers: Vec<(HeaderName, String)>,
    body: Option<(String, Vec<u8>)>,
}

impl<'a> ResponseBuilder<'a> {
    pub fn new(req: &'a Message, code: u16, reason: &str) -> Self {
        ResponseBuilder {
            req,
            code,
            reason: reason.to_string(),
            top_via: None,
            to_tag: None,
            headers: Vec::new(),
            body: None,
        }
    }
    /// Use this value instead of the received top Via (e.g. with `received`/`rport`).
    pub fn top_via(mut self, value: &str) -> Self {
        self.top_via = Some(value.to_string());
        self
    }
    pub fn to_tag(mut self, tag: &str) -> Self {
        self.to_tag = Some(tag.to_string());
        self
    }
    /// Add a header line (in the order given, after CSeq).
    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    /// Body with its Content-Type.
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.body = Some((content_type.to_string(), body.to_vec()));
        self
    }
    pub fn build(self) -> Vec<u8> {
        let req = self.req;
        let mut out = String::with_capacity(req.raw().len().min(2048) + 128);
        let _ = write!(out, "SIP/2.0 {} ", self.code);
        push_sanitized(&mut out, &self.reason);
        out.push_str("\r\n");
        let mut first = true;
        for v in req.headers(&HeaderName::Via) {
            match (&self.top_via, first) {
                (Some(top), true) => {
                    // Replace only the first value of the first line.
                    let rest = list_ranges(v)
                        .next()
                        .and_then(|r| v.get(r.end..))
                        .unwrap_or("");
                    let mut line = String::with_capacity(top.len() + rest.len());
                    line.push_str(top);
                    line.push_str(rest);
                    push_header_line(&mut out, &HeaderName::Via, &line);
                }
                _ => push_header_line(&mut out, &HeaderName::Via, v),
            }
            first = false;
        }
        if let Some(from) = req.header(&HeaderName::From) {
            push_header_line(&mut out, &HeaderName::From, from);
        }
        if let Some(to) = req.header(&HeaderName::To) {
            match &self.to_tag {
                Some(tag) if self.code != 100 && req.to().tag().is_none() => {
                    push_header_line(&mut out, &HeaderName::To, &format!("{to};tag={tag}"));
                }
                _ => push_header_line(&mut out, &HeaderName::To, to),
            }
        }
        push_header_line(&mut out, &HeaderName::CallId, req.call_id());
        if let Some(cseq) = req.header(&HeaderName::CSeq) {
            push_header_line(&mut out, &HeaderName::CSeq, cseq);
        }
        finish(out, &self.headers, self.body)
    }
}

/// Extra headers, Content-Type, Content-Length, blank line, body.
fn finish(
    mut out: String,
    headers: &[(HeaderName, String)],
    body: Option<(String, Vec<u8>)>,
) -> Vec<u8> {
    for (name, value) in headers {
        if *name != HeaderName::ContentLength {
            push_header_line(&mut out, name, value);
        }
    }
    let len = body.as_ref().map_or(0, |(_, b)| b.len());
    if let Some((ct, _)) = &body {
        push_header_line(&mut out, &HeaderName::ContentType, ct);
    }
    let _ = write!(out, "Content-Length: {len}\r\n\r\n");
    let mut bytes = out.into_bytes();
    if let Some((_, b)) = body {
        bytes.extend_from_slice(&b);
    }
    bytes
}

/// Builds a request from scratch; header order as added; `Content-Length` last.
#[derive(Debug)]
pub struct RequestBuilder {
    buf: Vec<u8>,
    headers: Vec<(HeaderName, String)>,
    body: Option<(String, Vec<u8>)>,
}

impl RequestBuilder {
    pub fn new(method: &Method, uri: &str) -> Self {
        let mut s = String::with_capacity(64 + uri.len());
        let _ = write!(s, "{method} ");
        push_sanitized(&mut s, uri);
        s.push_str(" SIP/2.0\r\n");
        RequestBuilder {
            buf: s.into_bytes(),
            headers: Vec::new(),
            body: None,
        }
    }
    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self.body = Some((content_type.to_string(), body.to_vec()));
        self
    }
    pub fn build(self) -> Vec<u8> {
        let start = String::from_utf8(self.buf).unwrap_or_default();
        finish(start, &self.headers, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::limits::Limits;

    const REQ: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n\
        Via: SIP/2.0/TCP c.example.com;branch=z9hG4bK3\r\n\
        f: \"Alice\" <sip:alice@example.com>;tag=1\r\n\
        t: <sip:bob@example.com>\r\n\
        i: abc@host\r\n\
        CSeq:   7   INVITE\r\n\
        \r\n";

    fn req() -> Message {
        Message::parse(REQ.as_bytes(), &Limits::default()).unwrap()
    }

    #[test]
    fn response_copies_and_reparses() {
        let r = req();
        let out = ResponseBuilder::new(&r, 180, "Ringing")
            .to_tag("xyz")
            .header(HeaderName::Contact, "<sip:bob@10.0.0.2>")
            .header(HeaderName::ContentLength, "99")
            .build();
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.starts_with("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a.example.com"));
        assert!(s.ends_with("Content-Length: 0\r\n\r\n"));
        let m = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.reason(), Some("Ringing"));
        let vias = m.vias().unwrap();
        assert_eq!(vias, r.vias().unwrap());
        assert_eq!(m.from(), r.from());
        assert_eq!(m.to().tag(), Some("xyz"));
        assert_eq!(m.to().uri, r.to().uri);
        assert_eq!(m.call_id(), "abc@host");
        assert_eq!(m.cseq(), r.cseq());
        assert_eq!(m.header(&HeaderName::CSeq), Some("7   INVITE"));
        assert_eq!(m.headers(&HeaderName::ContentLength).count(), 1);
    }

    #[test]
    fn response_100_has_no_tag_and_top_via_replaced() {
        let r = req();
        let out = ResponseBuilder::new(&r, 100, "Trying")
            .to_tag("xyz")
            .top_via("SIP/2.0/UDP a.example.com;branch=z9hG4bK1;received=192.0.2.1;rport=5070")
            .build();
        let m = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!(m.to().tag(), None);
        let vias = m.vias().unwrap();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].received(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(vias[0].rport(), Some(Some(5070)));
        assert_eq!(vias[1].branch(), Some("z9hG4bK2"));
    }

    #[test]
    fn existing_to_tag_kept() {
        let raw = REQ.replace(
            "t: <sip:bob@example.com>",
            "t: <sip:bob@example.com>;tag=old",
        );
        let r = Message::parse(raw.as_bytes(), &Limits::default()).unwrap();
        let out = ResponseBuilder::new(&r, 200, "OK")
            .to_tag("new")
            .body("application/sdp", b"v=0\r\n")
            .build();
        let m = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!(m.to().tag(), Some("old"));
        assert_eq!(m.body(), b"v=0\r\n");
        assert_eq!(m.header(&HeaderName::ContentType), Some("application/sdp"));
    }

    #[test]
    fn request_builder() {
        let out = RequestBuilder::new(&Method::Options, "sip:host.example.com")
            .header(HeaderName::Via, "SIP/2.0/UDP p;branch=z9hG4bKx")
            .header(HeaderName::From, "<sip:sipd@p>;tag=a")
            .header(HeaderName::To, "<sip:host.example.com>")
            .header(HeaderName::CallId, "c1")
            .header(HeaderName::CSeq, "1 OPTIONS")
            .header(HeaderName::MaxForwards, "70")
            .body("text/plain", b"hi")
            .build();
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.starts_with("OPTIONS sip:host.example.com SIP/2.0\r\nVia: "));
        assert!(s.ends_with("Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"));
        let m = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!(m.method(), Some(&Method::Options));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.body(), b"hi");
    }
}
