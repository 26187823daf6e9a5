//! Building new messages: responses to a received request, and requests the
//! proxy originates (CANCEL, ACK for non-2xx, OPTIONS, NOTIFY…).

use super::header::HeaderName;
use super::message::{Message, Method};

/// Builds a response to `req`: copies every Via (in order), From, To, Call-ID
/// and CSeq; adds the To tag when given and To has none (not for 100);
/// writes `Content-Length`.
#[derive(Debug)]
pub struct ResponseBuilder<'a> {
    req: &'a Message,
}

impl<'a> ResponseBuilder<'a> {
    pub fn new(req: &'a Message, code: u16, reason: &str) -> Self {
        todo!("{code} {reason} {}", req.raw().len())
    }
    /// Use this value instead of the received top Via (e.g. with `received`/`rport`).
    pub fn top_via(self, value: &str) -> Self {
        todo!("{value}")
    }
    pub fn to_tag(self, tag: &str) -> Self {
        todo!("{tag}")
    }
    pub fn header(self, name: HeaderName, value: &str) -> Self {
        todo!("{name:?} {value}")
    }
    pub fn body(self, content_type: &str, body: &[u8]) -> Self {
        todo!("{content_type} {}", body.len())
    }
    pub fn build(self) -> Vec<u8> {
        todo!()
    }
}

/// Builds a request from scratch; header order as added; `Content-Length` last.
#[derive(Debug)]
pub struct RequestBuilder {
    buf: Vec<u8>,
}

impl RequestBuilder {
    pub fn new(method: &Method, uri: &str) -> Self {
        todo!("{method} {uri}")
    }
    pub fn header(self, name: HeaderName, value: &str) -> Self {
        todo!("{name:?} {value}")
    }
    pub fn body(self, content_type: &str, body: &[u8]) -> Self {
        todo!("{content_type} {}", body.len())
    }
    pub fn build(self) -> Vec<u8> {
        todo!("{}", self.buf.len())
    }
}
