//! The parsed message: raw bytes, start line, header index, body range.

use std::ops::Range;

use super::error::ParseError;
use super::header::{CSeq, Contact, NameAddr, Via};
use super::limits::Limits;
use super::method::Method;
use super::name::{single_name, HeaderName};
use super::parse::{is_token, list_ranges, parse_u32, scan_head, unfold, RawHeader};
use super::uri::Uri;

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
///
/// CR and LF bytes at the front are reported as [`StreamFrame::KeepAlive`]
/// (the caller drops them and calls again). Otherwise the header section is
/// scanned (line, header-count and size limits and Content-Length syntax
/// are checked; nothing else is validated, [`Message::parse_stream`] does
/// that) and the message length is the header section plus Content-Length
/// (absent = 0) bytes.
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<StreamFrame, ParseError> {
    let crlf = leading_crlf(buf);
    if crlf > 0 {
        return Ok(StreamFrame::KeepAlive(crlf));
    }
    if buf.is_empty() {
        return Ok(StreamFrame::Incomplete);
    }
    let Some(head) = scan_head(buf, limits, |_| {})? else {
        return Ok(StreamFrame::Incomplete);
    };
    let total = head
        .body_start
        .checked_add(head.content_length.unwrap_or(0))
        .ok_or(ParseError::TooLarge)?;
    if total > limits.max_message {
        return Err(ParseError::TooLarge);
    }
    if buf.len() < total {
        Ok(StreamFrame::Incomplete)
    } else {
        Ok(StreamFrame::Message(total))
    }
}

fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Is `s` acceptable as a Request-URI? sip/sips/tel must parse with
/// [`Uri::parse`]; any other scheme is accepted as raw text when it is
/// `scheme ":" 1*VCHAR` (the core answers 416 to schemes it cannot use).
fn request_uri_ok(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    if ["sip", "sips", "tel"]
        .iter()
        .any(|k| scheme.eq_ignore_ascii_case(k))
    {
        return Uri::parse(s).is_ok();
    }
    let mut sb = scheme.bytes();
    sb.next().is_some_and(|b| b.is_ascii_alphabetic())
        && sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_graphic())
}

fn is_sip_version(v: &str) -> bool {
    v.eq_ignore_ascii_case("SIP/2.0")
}

/// Parse the start line (`line` is at offset 0 of the message).
fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let s = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let is_response = s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if is_response {
        let (version, rest) = s.split_once(' ').ok_or(ParseError::BadStartLine)?;
        if !is_sip_version(version) {
            return Err(ParseError::BadVersion);
        }
        let code_s = rest.get(..3).ok_or(ParseError::BadStartLine)?;
        let code = parse_u32(code_s)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..=699).contains(c))
            .ok_or(ParseError::BadStartLine)?;
        let reason_start = version.len() + 1 + 3;
        let reason = match s.as_bytes().get(reason_start) {
            None => reason_start..reason_start,
            Some(b' ') => reason_start + 1..s.len(),
            Some(_) => return Err(ParseError::BadStartLine),
        };
        return Ok(StartLine::Response { code, reason });
    }
    let mut parts = s.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadStartLine);
    };
    if !is_token(method) || uri.is_empty() || version.is_empty() {
        return Err(ParseError::BadStartLine);
    }
    if !is_sip_version(version) {
        return Err(ParseError::BadVersion);
    }
    if !request_uri_ok(uri) {
        return Err(ParseError::BadStartLine);
    }
    let uri_start = method.len() + 1;
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: uri_start..uri_start + uri.len(),
    })
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
    ///
    /// CR/LF bytes before the start line are skipped (not part of `raw`).
    /// Lines may end in CRLF or a bare LF.
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<Message, ParseError> {
        Message::parse_copy(buf, limits, false)
    }

    /// Parse one message already framed by [`frame_stream`] (TCP): the body is
    /// exactly Content-Length bytes (absent = 0).
    ///
    /// A body shorter than Content-Length is [`ParseError::BodyTruncated`];
    /// bytes after it are ignored.
    pub fn parse_stream(buf: &[u8], limits: &Limits) -> Result<Message, ParseError> {
        Message::parse_copy(buf, limits, true)
    }

    /// Like [`Message::parse`] but takes ownership of the datagram buffer,
    /// so the message bytes are not copied (the buffer is truncated to the
    /// message, and shifted only when CR/LF bytes precede the start line).
    pub fn parse_owned(mut buf: Vec<u8>, limits: &Limits) -> Result<Message, ParseError> {
        let skip = leading_crlf(&buf);
        let (mut msg, end) = Message::parse_impl(buf.get(skip..).unwrap_or(&[]), limits, false)?;
        buf.truncate(skip + end);
        if skip > 0 {
            buf.drain(..skip);
        }
        msg.raw = buf;
        Ok(msg)
    }

    fn parse_copy(buf: &[u8], limits: &Limits, stream: bool) -> Result<Message, ParseError> {
        let buf = buf.get(leading_crlf(buf)..).unwrap_or(&[]);
        let (mut msg, end) = Message::parse_impl(buf, limits, stream)?;
        msg.raw = buf.get(..end).unwrap_or(buf).to_vec();
        Ok(msg)
    }

    /// Parse the message at the front of `buf` (which starts after any
    /// leading CR/LF). Returns the message with an empty `raw` and the
    /// length of the message in `buf`; the caller fills in `raw`.
    fn parse_impl(
        buf: &[u8],
        limits: &Limits,
        stream: bool,
    ) -> Result<(Message, usize), ParseError> {
        if buf.is_empty() {
            return Err(ParseError::BadStartLine);
        }
        // Start line first, so that its errors win over header errors.
        let window = buf.get(..limits.max_line.saturating_add(1)).unwrap_or(buf);
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            return Err(if buf.len() > limits.max_line {
                ParseError::LineTooLong
            } else {
                ParseError::BadStartLine
            });
        };
        let sl_end = if lf > 0 && buf.get(lf - 1) == Some(&b'\r') {
            lf - 1
        } else {
            lf
        };
        let start = parse_start_line(buf.get(..sl_end).unwrap_or(&[]))?;

        let mut raws: Vec<RawHeader> = Vec::with_capacity(24);
        let head = scan_head(buf, limits, |h| raws.push(h))?.ok_or_else(|| {
            ParseError::BadHeader("header section not ended by an empty line".into())
        })?;
        let head_str = buf
            .get(..head.body_start)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or(ParseError::NotUtf8)?;

        let mut headers = Vec::with_capacity(raws.len());
        let mut first: [Option<usize>; 5] = [None; 5]; // Via From To Call-ID CSeq
        for (i, r) in raws.into_iter().enumerate() {
            let name = HeaderName::parse(head_str.get(r.name.clone()).unwrap_or(""));
            let slot = match name {
                HeaderName::Via => Some(0),
                HeaderName::From => Some(1),
                HeaderName::To => Some(2),
                HeaderName::CallId => Some(3),
                HeaderName::CSeq => Some(4),
                _ => None,
            };
            if let Some(k) = slot {
                match first.get_mut(k) {
                    Some(f @ None) => *f = Some(i),
                    Some(Some(_)) => {
                        if let Some(n) = single_name(&name) {
                            return Err(ParseError::BadHeader(format!("more than one {n}")));
                        }
                    }
                    None => {}
                }
            }
            let unfolded = if r.folded {
                Some(unfold(head_str.get(r.value.clone()).unwrap_or("")).into_boxed_str())
            } else {
                None
            };
            headers.push(HeaderLine {
                name,
                line: r.line,
                value: r.value,
                unfolded,
            });
        }

        let body_len = match (head.content_length, stream) {
            (Some(n), _) => n,
            (None, false) => buf.len().saturating_sub(head.body_start),
            (None, true) => 0,
        };
        let end = head
            .body_start
            .checked_add(body_len)
            .ok_or(ParseError::TooLarge)?;
        if end > limits.max_message {
            return Err(ParseError::TooLarge);
        }
        if end > buf.len() {
            return Err(ParseError::BodyTruncated);
        }

        let value_of = |k: usize, name: &'static str| -> Result<&HeaderLine, ParseError> {
            first
                .get(k)
                .copied()
                .flatten()
                .and_then(|i| headers.get(i))
                .ok_or(ParseError::MissingHeader(name))
        };
        fn text<'h>(head: &'h str, h: &'h HeaderLine) -> &'h str {
            match &h.unfolded {
                Some(u) => u,
                None => head.get(h.value.clone()).unwrap_or(""),
            }
        }
        let via_line = value_of(0, "Via")?;
        let from_line = value_of(1, "From")?;
        let to_line = value_of(2, "To")?;
        let call_id_line = value_of(3, "Call-ID")?;
        let cseq_line = value_of(4, "CSeq")?;

        let with = |what: &str, e: ParseError| match e {
            ParseError::BadHeader(m) => ParseError::BadHeader(format!("{what}: {m}")),
            e => e,
        };
        let via_text = text(head_str, via_line);
        let top = list_ranges(via_text)
            .next()
            .and_then(|r| via_text.get(r))
            .ok_or_else(|| ParseError::BadHeader("Via: empty".into()))?;
        let top_via = Via::parse(top).map_err(|e| with("Via", e))?;
        let from = NameAddr::parse(text(head_str, from_line)).map_err(|e| with("From", e))?;
        let to = NameAddr::parse(text(head_str, to_line)).map_err(|e| with("To", e))?;
        let cseq = CSeq::parse(text(head_str, cseq_line)).map_err(|e| with("CSeq", e))?;
        if let StartLine::Request { method, .. } = &start {
            if *method != cseq.method {
                return Err(ParseError::BadHeader(
                    "CSeq method does not match the request".into(),
                ));
            }
        }
        let call_id = call_id_line.value.clone();
        let cid = head_str.get(call_id.clone()).unwrap_or("");
        if cid.is_empty()
            || cid
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(ParseError::BadHeader("Call-ID".into()));
        }

        let msg = Message {
            raw: Vec::new(),
            start,
            headers,
            header_end: head.header_end,
            body: head.body_start..end,
            call_id,
            cseq,
            from,
            to,
            top_via,
        };
        Ok((msg, end))
    }

    /// Text of a range of the header section ("" if it is not valid).
    pub(crate) fn text(&self, r: Range<usize>) -> &str {
        self.raw
            .get(r)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
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
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    /// Response status code; `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }
    /// Response reason phrase; `None` for a request.
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(self.text(reason.clone())),
            StartLine::Request { .. } => None,
        }
    }
    /// The Request-URI exactly as received; `None` for a response.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(self.text(uri.clone())),
            StartLine::Response { .. } => None,
        }
    }
    /// The Request-URI parsed; `None` for a response, `Some(Err)` for a
    /// scheme other than sip/sips/tel (accepted at parse as raw text).
    pub fn parsed_request_uri(&self) -> Option<Result<Uri, super::uri::UriError>> {
        self.request_uri().map(Uri::parse)
    }
    pub fn body(&self) -> &[u8] {
        &self.raw[self.body.clone()]
    }
    /// Value of the first line of header `name` (unfolded, trimmed).
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| &h.name == name)
            .map(|h| self.line_value(h))
    }
    /// Is there at least one line of header `name`?
    pub fn has_header(&self, name: &HeaderName) -> bool {
        self.headers.iter().any(|h| &h.name == name)
    }
    /// Values of every line of header `name`, in order.
    pub fn headers<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| self.line_value(h))
    }
    /// Every element of a comma-separated list header across all its lines
    /// (commas inside quotes and `<…>` do not split).
    pub fn header_values(&self, name: &HeaderName) -> Vec<&str> {
        let mut out = Vec::new();
        for h in self.headers.iter().filter(|h| &h.name == name) {
            let v = self.line_value(h);
            out.extend(list_ranges(v).filter_map(|r| v.get(r)));
        }
        out
    }
    /// All header lines as (name, value), in order.
    pub fn all_headers(&self) -> impl Iterator<Item = (&HeaderName, &str)> + '_ {
        self.headers
            .iter()
            .map(move |h| (&h.name, self.line_value(h)))
    }
    pub(crate) fn line_value<'a>(&'a self, h: &'a HeaderLine) -> &'a str {
        match &h.unfolded {
            Some(u) => u,
            None => self.text(h.value.clone()),
        }
    }
    pub fn call_id(&self) -> &str {
        self.text(self.call_id.clone())
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
        self.header_values(&HeaderName::Via)
            .into_iter()
            .map(Via::parse)
            .collect()
    }
    /// Max-Forwards, if present and valid.
    pub fn max_forwards(&self) -> Option<u32> {
        self.header(&HeaderName::MaxForwards).and_then(parse_u32)
    }
    /// The Expires header as seconds, if present and valid.
    pub fn expires(&self) -> Option<u32> {
        self.header(&HeaderName::Expires).and_then(parse_u32)
    }
    /// Contact values (`*` or name-addr/addr-spec with params).
    pub fn contacts(&self) -> Result<Vec<Contact>, ParseError> {
        self.header_values(&HeaderName::Contact)
            .into_iter()
            .map(Contact::parse)
            .collect()
    }
    /// The URI of the first Contact (the remote target it names), if any.
    pub fn contact_uri(&self) -> Option<Uri> {
        match self.contacts().ok()?.into_iter().next()? {
            Contact::Addr(a) => Some(a.uri),
            Contact::Star => None,
        }
    }
    /// Route values, top first.
    pub fn routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.header_values(&HeaderName::Route)
            .into_iter()
            .map(NameAddr::parse)
            .collect()
    }
    /// Record-Route values, top first.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, ParseError> {
        self.header_values(&HeaderName::RecordRoute)
            .into_iter()
            .map(NameAddr::parse)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
        Expires: 300\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\
        \r\n\
        v=0\n";

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn parse_request() {
        let m = Message::parse(INVITE.as_bytes(), &lim()).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.request_uri(), Some("sip:bob@biloxi.example.com"));
        assert_eq!(m.status(), None);
        assert_eq!(m.reason(), None);
        assert_eq!(m.call_id(), "a84b4c76e66710@pc33.atlanta.example.com");
        assert_eq!(m.cseq().seq, 314159);
        assert_eq!(m.from().tag(), Some("1928301774"));
        assert_eq!(m.from().display.as_deref(), Some("Alice"));
        assert_eq!(m.to().tag(), None);
        assert_eq!(m.top_via().branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.expires(), Some(300));
        assert_eq!(m.contacts().unwrap().len(), 1);
        assert_eq!(m.body(), b"v=0\n");
        assert_eq!(m.raw(), INVITE.as_bytes());
        assert_eq!(m.header(&HeaderName::ContentType), Some("application/sdp"));
        assert_eq!(m.all_headers().count(), 10);
        assert!(m.parsed_request_uri().unwrap().is_ok());
    }

    #[test]
    fn parse_response_and_reason() {
        let r = INVITE
            .replace(
                "INVITE sip:bob@biloxi.example.com SIP/2.0",
                "SIP/2.0 180 Ringing here",
            )
            .replace("Content-Length: 4", "Content-Length: 0");
        let m = Message::parse(r.as_bytes(), &lim()).unwrap();
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.reason(), Some("Ringing here"));
        assert_eq!(m.method(), None);
        assert_eq!(m.request_uri(), None);
        assert_eq!(m.body(), b"");
        // bytes after Content-Length are not part of raw
        assert_eq!(m.raw().len(), r.len() - 4);
    }

    #[test]
    fn datagram_vs_stream_body() {
        let r = INVITE.replace("Content-Length: 4\r\n", "");
        let m = Message::parse(r.as_bytes(), &lim()).unwrap();
        assert_eq!(m.body(), b"v=0\n");
        let m = Message::parse_stream(r.as_bytes(), &lim()).unwrap();
        assert_eq!(m.body(), b"");
        let r = INVITE.replace("Content-Length: 4", "Content-Length: 5");
        assert_eq!(
            Message::parse(r.as_bytes(), &lim()).unwrap_err(),
            ParseError::BodyTruncated
        );
        assert_eq!(
            Message::parse_stream(r.as_bytes(), &lim()).unwrap_err(),
            ParseError::BodyTruncated
        );
    }

    #[test]
    fn framing() {
        let l = lim();
        assert_eq!(frame_stream(b"", &l), Ok(StreamFrame::Incomplete));
        assert_eq!(
            frame_stream(b"\r\n\r\nINVITE", &l),
            Ok(StreamFrame::KeepAlive(4))
        );
        let msg = INVITE.as_bytes();
        assert_eq!(frame_stream(msg, &l), Ok(StreamFrame::Message(msg.len())));
        assert_eq!(
            frame_stream(&msg[..msg.len() - 1], &l),
            Ok(StreamFrame::Incomplete)
        );
        assert_eq!(frame_stream(&msg[..20], &l), Ok(StreamFrame::Incomplete));
        let mut two = msg.to_vec();
        two.extend_from_slice(msg);
        assert_eq!(frame_stream(&two, &l), Ok(StreamFrame::Message(msg.len())));
        let bad = INVITE.replace("Content-Length: 4", "Content-Length: -4");
        assert_eq!(
            frame_stream(bad.as_bytes(), &l),
            Err(ParseError::BadContentLength)
        );
        let small = Limits {
            max_message: 100,
            ..Limits::default()
        };
        assert_eq!(frame_stream(msg, &small), Err(ParseError::TooLarge));
        let huge = INVITE.replace("Content-Length: 4", "Content-Length: 18446744073709551615");
        assert_eq!(frame_stream(huge.as_bytes(), &l), Err(ParseError::TooLarge));
    }

    #[test]
    fn header_access() {
        let r = INVITE.replace(
            "Expires: 300\r\n",
            "Route: <sip:p1;lr>, <sip:p2;lr>\r\nroute: \"a,b\" <sip:p3;lr>\r\nSubject: first\r\n line\r\nExpires: x\r\n",
        );
        let m = Message::parse(r.as_bytes(), &lim()).unwrap();
        assert_eq!(
            m.header_values(&HeaderName::Route),
            vec!["<sip:p1;lr>", "<sip:p2;lr>", "\"a,b\" <sip:p3;lr>"]
        );
        assert_eq!(m.headers(&HeaderName::Route).count(), 2);
        assert_eq!(m.routes().unwrap()[2].display.as_deref(), Some("a,b"));
        assert_eq!(m.header(&HeaderName::Subject), Some("first line"));
        assert_eq!(m.expires(), None);
        assert!(m.record_routes().unwrap().is_empty());
        assert!(m.has_header(&HeaderName::Route));
    }

    #[test]
    fn parse_owned_matches_parse() {
        let mut buf = b"\r\n".to_vec();
        buf.extend_from_slice(INVITE.as_bytes());
        buf.extend_from_slice(b"trailing garbage");
        let a = Message::parse(&buf, &lim()).unwrap();
        let b = Message::parse_owned(buf, &lim()).unwrap();
        assert_eq!(a.raw(), INVITE.as_bytes());
        assert_eq!(b.raw(), a.raw());
        assert_eq!(b.body(), a.body());
        assert_eq!(b.call_id(), a.call_id());
        assert_eq!(
            Message::parse_owned(b"\r\n".to_vec(), &lim()).unwrap_err(),
            ParseError::BadStartLine
        );
    }
}
