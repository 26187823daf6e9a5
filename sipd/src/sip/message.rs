//! The parsed message: raw bytes, start line, header index, body range.

use std::fmt;
use std::ops::Range;

use super::header::{CSeq, Contact, HeaderName, NameAddr, Via};

/// A SIP method. Methods are case-sensitive tokens (RFC 3261 §7.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Prack,
    Update,
    Refer,
    Subscribe,
    Notify,
    Message,
    Publish,
    Other(Box<str>),
}

impl Method {
    /// Parse a method token (case-sensitive; an unknown valid token is `Other`).
    pub fn from_token(token: &str) -> Method {
        todo!("{token}")
    }
    pub fn as_str(&self) -> &str {
        todo!()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Size limits applied while parsing; anything over them is a [`ParseError`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Whole message including body.
    pub max_message: usize,
    /// Number of header lines (after unfolding).
    pub max_headers: usize,
    /// One header line including continuation lines.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message: 65_535, max_headers: 128, max_line: 8_192 }
    }
}

/// Why a message was rejected. Never a panic: the transport answers a request
/// that fails here with `400 Bad Request` (when it can find enough headers to
/// build a response) and drops a malformed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    TooLarge,
    TooManyHeaders,
    LineTooLong,
    BadStartLine,
    BadVersion,
    BadHeader(String),
    MissingHeader(&'static str),
    BadContentLength,
    BodyTruncated,
    NotUtf8,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("{:?}", f.width())
    }
}

impl std::error::Error for ParseError {}

/// Result of looking for one message at the front of a stream (TCP) buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// More bytes are needed.
    Incomplete,
    /// The buffer starts with this many bytes of CRLF keep-alive (RFC 5626 §4.4.1).
    KeepAlive(usize),
    /// The first message is this many bytes long (headers + Content-Length body).
    Message(usize),
}

/// Find the first message in a stream buffer without copying it.
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<StreamFrame, ParseError> {
    todo!("{} {:?}", buf.len(), limits)
}

/// Start line of a message.
#[derive(Clone, Debug)]
pub enum StartLine {
    Request { method: Method, uri: Range<usize> },
    Response { code: u16, reason: Range<usize> },
}

/// One header line (after unfolding) as an index into the raw bytes.
#[derive(Clone, Debug)]
pub(crate) struct HeaderLine {
    pub(crate) name: HeaderName,
    /// The whole line including its terminating CRLF (and continuation lines).
    pub(crate) line: Range<usize>,
    /// The value, trimmed; for a folded header `unfolded` holds the value text.
    pub(crate) value: Range<usize>,
    pub(crate) unfolded: Option<Box<str>>,
}

/// A parsed SIP request or response.
#[derive(Clone, Debug)]
pub struct Message {
    pub(crate) raw: Vec<u8>,
    pub(crate) start: StartLine,
    pub(crate) headers: Vec<HeaderLine>,
    /// Range of the blank line ending the header section (where new headers may go before).
    pub(crate) header_end: usize,
    pub(crate) body: Range<usize>,
    pub(crate) call_id: Range<usize>,
    pub(crate) cseq: CSeq,
    pub(crate) from: NameAddr,
    pub(crate) to: NameAddr,
    pub(crate) top_via: Via,
}

impl Message {
    /// Parse one datagram (UDP): an absent Content-Length means the rest of the
    /// datagram is the body; a Content-Length larger than what is there is an
    /// error; bytes beyond Content-Length are discarded.
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<Message, ParseError> {
        todo!("{} {:?}", buf.len(), limits)
    }

    /// Parse one message already framed by [`frame_stream`] (TCP): the body is
    /// exactly Content-Length bytes (absent = 0).
    pub fn parse_stream(buf: &[u8], limits: &Limits) -> Result<Message, ParseError> {
        todo!("{} {:?}", buf.len(), limits)
    }

    /// The exact bytes of the message (body included, trailing garbage excluded).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// Request method; `None` for a response.
    pub fn method(&self) -> Option<&Method> {
        todo!()
    }
    /// Response status code; `None` for a request.
    pub fn status(&self) -> Option<u16> {
        todo!()
    }
    /// Response reason phrase; `None` for a request.
    pub fn reason(&self) -> Option<&str> {
        todo!()
    }
    /// The Request-URI exactly as received; `None` for a response.
    pub fn request_uri(&self) -> Option<&str> {
        todo!()
    }
    pub fn body(&self) -> &[u8] {
        &self.raw[self.body.clone()]
    }
    /// Value of the first line of header `name` (unfolded, trimmed).
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        todo!("{name:?}")
    }
    /// Values of every line of header `name`, in order.
    pub fn headers<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |h| &h.name == name).map(|h| self.line_value(h))
    }
    /// Every element of a comma-separated list header across all its lines
    /// (commas inside quotes and `<…>` do not split).
    pub fn header_values(&self, name: &HeaderName) -> Vec<&str> {
        todo!("{name:?}")
    }
    /// All header lines as (name, value), in order.
    pub fn all_headers(&self) -> impl Iterator<Item = (&HeaderName, &str)> + '_ {
        self.headers.iter().map(move |h| (&h.name, self.line_value(h)))
    }
    pub(crate) fn line_value<'a>(&'a self, h: &'a HeaderLine) -> &'a str {
        todo!("{h:?}")
    }
    pub fn call_id(&self) -> &str {
        todo!()
    }
    pub fn cseq(&self) -> &CSeq {
        &self.cseq
    }
    pub fn from(&self) -> &NameAddr {
        &self.from
    }
    pub fn to(&self) -> &NameAddr {
        &self.to
    }
    pub fn top_via(&self) -> &Via {
        &self.top_via
    }
    /// Every Via value, top first. Values that fail to parse are errors.
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        todo!()
    }
    /// Max-Forwards, if present and valid.
    pub fn max_forwards(&self) -> Option<u32> {
        todo!()
    }
    /// The Expires header as seconds, if present and valid.
    pub fn expires(&self) -> Option<u32> {
        todo!()
    }
    /// Contact values (`*` or name-addr/addr-spec with params).
    pub fn contacts(&self) -> Result<Vec<Contact>, ParseError> {
        todo!()
    }
    /// Route values, top first.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        todo!()
    }
    /// Record-Route values, top first.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        todo!()
    }
}
