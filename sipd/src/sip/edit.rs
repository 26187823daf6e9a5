//! Forwarding edits applied to the raw bytes of a received message. Only the
//! edited lines change: every other byte is copied exactly as received.
//!
//! Every edit is described relative to the message as received, and
//! `finish` applies them all in one pass, so the order in which they are
//! given does not matter. Where two edits touch the same bytes the stronger
//! one wins: `set_header`/`remove_header` (whole lines) over
//! `pop_via`/`pop_route` over `set_top_via`/Max-Forwards. Repeated calls of
//! one kind: `push_via`/`push_record_route` stack (the last pushed ends up on
//! top), `pop_via`/`pop_route` pop one more value each, and for
//! `set_top_via`, `set_request_uri`, the Max-Forwards edits and
//! `set_header`/`remove_header` of one name the last call wins.
//! New lines end in CRLF even when the received message used bare LF.

use std::fmt::Write as _;
use std::ops::Range;

use super::message::{HeaderLine, Message, StartLine};
use super::name::HeaderName;
use super::parse::list_ranges;

#[derive(Debug, Clone, Copy)]
enum MaxForwards {
    Set(u32),
    Decrement,
}

/// A set of edits to one message; `finish` produces the new bytes.
/// Edits are independent of the order they are given in.
#[derive(Debug)]
pub struct Edit<'a> {
    msg: &'a Message,
    push_vias: Vec<String>,
    pop_vias: usize,
    top_via: Option<String>,
    push_rrs: Vec<String>,
    pop_routes: usize,
    request_uri: Option<String>,
    max_forwards: Option<MaxForwards>,
    /// set_header (`Some`) / remove_header (`None`), one entry per name.
    line_ops: Vec<(HeaderName, Option<String>)>,
    /// Single header lines removed by `remove_header_if`.
    drop_lines: Vec<Range<usize>>,
    adds: Vec<(HeaderName, String)>,
    /// A new body (`set_body`).
    body: Option<Vec<u8>>,
}

impl Message {
    pub fn edit(&self) -> Edit<'_> {
        Edit {
            msg: self,
            push_vias: Vec::new(),
            pop_vias: 0,
            top_via: None,
            push_rrs: Vec::new(),
            pop_routes: 0,
            request_uri: None,
            max_forwards: None,
            line_ops: Vec::new(),
            drop_lines: Vec::new(),
            adds: Vec::new(),
            body: None,
        }
    }
}

/// One replacement of `range` of the original bytes by `text`; an empty
/// range is an insertion.
struct Splice {
    range: Range<usize>,
    text: String,
}

/// Append `Name: value\r\n`; CR and LF in the value become SP so that a
/// value can never inject header lines.
pub(crate) fn push_header_line(out: &mut String, name: &HeaderName, value: &str) {
    out.push_str(name.as_str());
    out.push_str(": ");
    push_sanitized(out, value);
    out.push_str("\r\n");
}

pub(crate) fn push_sanitized(out: &mut String, value: &str) {
    if !value.bytes().any(|b| b == b'\r' || b == b'\n') {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        out.push(if c == '\r' || c == '\n' { ' ' } else { c });
    }
}

fn header_line(name: &HeaderName, value: &str) -> String {
    let mut s = String::with_capacity(name.as_str().len() + value.len() + 4);
    push_header_line(&mut s, name, value);
    s
}

fn sanitized(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    push_sanitized(&mut s, value);
    s
}

impl<'a> Edit<'a> {
    /// Insert `Via: value` above the current top Via.
    pub fn push_via(mut self, value: &str) -> Self {
        self.push_vias.push(value.to_string());
        self
    }
    /// Remove the top Via value (only the first element if the line holds several).
    pub fn pop_via(mut self) -> Self {
        self.pop_vias = self.pop_vias.saturating_add(1);
        self
    }
    /// Replace the top Via value (e.g. to add `received`/`rport`).
    pub fn set_top_via(mut self, value: &str) -> Self {
        self.top_via = Some(value.to_string());
        self
    }
    /// Insert `Record-Route: value` above any existing Record-Route (else after the Vias).
    pub fn push_record_route(mut self, value: &str) -> Self {
        self.push_rrs.push(value.to_string());
        self
    }
    /// Remove the first Route value (only the first element of a multi-value line).
    pub fn pop_route(mut self) -> Self {
        self.pop_routes = self.pop_routes.saturating_add(1);
        self
    }
    /// Replace the Request-URI (requests only).
    pub fn set_request_uri(mut self, uri: &str) -> Self {
        self.request_uri = Some(uri.to_string());
        self
    }
    /// Set Max-Forwards to `n` (replacing the existing value or adding the header).
    pub fn set_max_forwards(mut self, n: u32) -> Self {
        self.max_forwards = Some(MaxForwards::Set(n));
        self
    }
    /// Decrement Max-Forwards; add `Max-Forwards: 70` when absent.
    /// (Callers check for 0 before forwarding.) A value of 0 stays 0; a
    /// value that is not a number is replaced by 70.
    pub fn decrement_max_forwards(mut self) -> Self {
        self.max_forwards = Some(MaxForwards::Decrement);
        self
    }
    /// Replace every line of `name` by one `Name: value` line (at the first
    /// line's place), or append it when absent.
    pub fn set_header(mut self, name: HeaderName, value: &str) -> Self {
        self.line_ops.retain(|(n, _)| n != &name);
        self.line_ops.push((name, Some(value.to_string())));
        self
    }
    /// Append a new header line at the end of the header section.
    pub fn add_header(mut self, name: HeaderName, value: &str) -> Self {
        self.adds.push((name, value.to_string()));
        self
    }
    /// Replace the body (Content-Length follows it; Content-Type stays).
    pub fn set_body(mut self, body: Vec<u8>) -> Self {
        self.line_ops
            .retain(|(n, _)| n != &HeaderName::ContentLength);
        self.line_ops
            .push((HeaderName::ContentLength, Some(body.len().to_string())));
        self.body = Some(body);
        self
    }
    /// Remove every line of `name`.
    pub fn remove_header(mut self, name: HeaderName) -> Self {
        self.line_ops.retain(|(n, _)| n != &name);
        self.line_ops.push((name, None));
        self
    }

    /// Remove the lines of `name` whose value `pred` accepts (others stay).
    pub fn remove_header_if(mut self, name: HeaderName, pred: impl Fn(&str) -> bool) -> Self {
        for h in self.msg.headers.iter().filter(|h| h.name == name) {
            if pred(self.msg.text(h.value.clone())) {
                self.drop_lines.push(h.line.clone());
            }
        }
        self
    }

    fn lines(&self, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderLine> + 'a {
        self.msg.headers.iter().filter(move |h| &h.name == name)
    }

    /// Element ranges (absolute offsets) of one list header line.
    fn elements(&self, h: &HeaderLine) -> Vec<Range<usize>> {
        let base = h.value.start;
        list_ranges(self.msg.text(h.value.clone()))
            .map(|r| base + r.start..base + r.end)
            .collect()
    }

    /// Ranges to delete to pop the first `k` values of `name`.
    fn pop_ranges(&self, name: &'a HeaderName, k: usize, out: &mut Vec<Splice>) {
        let mut remaining = k;
        for h in self.lines(name) {
            if remaining == 0 {
                break;
            }
            let elems = self.elements(h);
            if remaining >= elems.len() {
                remaining -= elems.len();
                add(out, h.line.clone(), String::new());
            } else if let (Some(first), Some(keep)) = (elems.first(), elems.get(remaining)) {
                add(out, first.start..keep.start, String::new());
                remaining = 0;
            }
        }
    }

    /// The edited message. A `Content-Length` matching the body is added when
    /// the original had none (needed when a UDP message is sent over TCP).
    pub fn finish(self) -> Vec<u8> {
        let msg = self.msg;
        let raw = msg.raw();
        let mut sp: Vec<Splice> = Vec::new();
        let mut appends = String::new();

        // Whole-line edits first: they win over edits inside those lines.
        for (name, op) in &self.line_ops {
            let mut lines = self.lines(name);
            match (op, lines.next()) {
                (Some(v), Some(first)) => {
                    add(&mut sp, first.line.clone(), header_line(name, v));
                    for h in lines {
                        add(&mut sp, h.line.clone(), String::new());
                    }
                }
                (Some(v), None) => push_header_line(&mut appends, name, v),
                (None, first) => {
                    for h in first.into_iter().chain(lines) {
                        add(&mut sp, h.line.clone(), String::new());
                    }
                }
            }
        }

        for r in &self.drop_lines {
            add(&mut sp, r.clone(), String::new());
        }

        self.pop_ranges(&HeaderName::Via, self.pop_vias, &mut sp);
        self.pop_ranges(&HeaderName::Route, self.pop_routes, &mut sp);

        let top_via_line = self.lines(&HeaderName::Via).next();
        if let (Some(v), Some(h)) = (&self.top_via, top_via_line) {
            if let Some(r) = self.elements(h).into_iter().next() {
                add(&mut sp, r, sanitized(v));
            }
        }
        if let (Some(u), StartLine::Request { uri, .. }) = (&self.request_uri, &msg.start) {
            add(&mut sp, uri.clone(), sanitized(u));
        }
        if let Some(mf) = self.max_forwards {
            let current = self.lines(&HeaderName::MaxForwards).next();
            let n = match (mf, current) {
                (MaxForwards::Set(n), _) => n,
                (MaxForwards::Decrement, Some(_)) => {
                    msg.max_forwards().map_or(70, |n| n.saturating_sub(1))
                }
                (MaxForwards::Decrement, None) => 70,
            };
            match current {
                Some(h) => add(&mut sp, h.value.clone(), n.to_string()),
                None => {
                    let _ = write!(appends, "Max-Forwards: {n}\r\n");
                }
            }
        }

        // Insertions.
        if let (false, Some(h)) = (self.push_vias.is_empty(), top_via_line) {
            let mut text = String::new();
            for v in self.push_vias.iter().rev() {
                push_header_line(&mut text, &HeaderName::Via, v);
            }
            insert(&mut sp, h.line.start, text);
        }
        if !self.push_rrs.is_empty() {
            let at = match self.lines(&HeaderName::RecordRoute).next() {
                Some(h) => h.line.start,
                None => self
                    .lines(&HeaderName::Via)
                    .last()
                    .map_or(msg.header_end, |h| h.line.end),
            };
            let mut text = String::new();
            for v in self.push_rrs.iter().rev() {
                push_header_line(&mut text, &HeaderName::RecordRoute, v);
            }
            insert(&mut sp, at, text);
        }
        for (name, v) in &self.adds {
            push_header_line(&mut appends, name, v);
        }
        let cl = HeaderName::ContentLength;
        let cl_op = self
            .line_ops
            .iter()
            .find(|(n, _)| n == &cl)
            .map(|(_, op)| op.is_some());
        let has_cl = match cl_op {
            Some(set) => set,
            None => msg.has_header(&cl),
        } || self.adds.iter().any(|(n, _)| n == &cl);
        if !has_cl {
            let _ = write!(appends, "Content-Length: {}\r\n", msg.body().len());
        }
        if !appends.is_empty() {
            insert(&mut sp, msg.header_end, appends);
        }

        // Insertions before replacements at the same offset; otherwise
        // the order in which they were generated.
        sp.sort_by_key(|s| (s.range.start, s.range.end > s.range.start));
        let extra: usize = sp.iter().map(|s| s.text.len()).sum();
        let mut out = Vec::with_capacity(raw.len().saturating_add(extra));
        let mut cursor = 0;
        for s in &sp {
            if s.range.start < cursor {
                continue;
            }
            out.extend_from_slice(raw.get(cursor..s.range.start).unwrap_or(&[]));
            out.extend_from_slice(s.text.as_bytes());
            cursor = s.range.end;
        }
        out.extend_from_slice(raw.get(cursor..).unwrap_or(&[]));
        if let Some(body) = self.body {
            // Splices only touch the head: the original body (and anything
            // after it) is the tail of `out`.
            out.truncate(
                out.len()
                    .saturating_sub(raw.len().saturating_sub(msg.body.start)),
            );
            out.extend_from_slice(&body);
        }
        out
    }
}

/// Add a replacement unless it overlaps one added before (which wins).
fn add(sp: &mut Vec<Splice>, range: Range<usize>, text: String) {
    let overlaps = sp.iter().any(|s| {
        (s.range.start < range.end && range.start < s.range.end)
            || (range.is_empty() && s.range.start < range.start && range.start < s.range.end)
    });
    if !overlaps {
        sp.push(Splice { range, text });
    }
}

fn insert(sp: &mut Vec<Splice>, at: usize, text: String) {
    sp.push(Splice {
        range: at..at,
        text,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::limits::Limits;

    const MSG: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n\
        Via: SIP/2.0/TCP c.example.com;branch=z9hG4bK3\r\n\
        Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
        Max-Forwards: 10\r\n\
        From: <sip:alice@example.com>;tag=1\r\n\
        To: <sip:bob@example.com>\r\n\
        Call-ID: abc@host\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 4\r\n\
        \r\n\
        body";

    fn msg() -> Message {
        Message::parse(MSG.as_bytes(), &Limits::default()).unwrap()
    }

    fn reparse(b: &[u8]) -> Message {
        Message::parse(b, &Limits::default()).unwrap()
    }

    #[test]
    fn no_edit_is_identity() {
        assert_eq!(msg().edit().finish(), MSG.as_bytes());
    }

    #[test]
    fn pop_first_of_multi_value_line() {
        let out = msg().edit().pop_via().finish();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("\r\nVia: SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\nVia: SIP/2.0/TCP")
        );
        assert_eq!(
            s.replace(
                "Via: SIP/2.0/UDP b",
                "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b"
            ),
            MSG
        );
        let m = reparse(s.as_bytes());
        assert_eq!(m.top_via().branch(), Some("z9hG4bK2"));
    }

    #[test]
    fn pop_three_removes_lines() {
        let out = msg().edit().pop_via().pop_via().finish();
        let m = reparse(&out);
        assert_eq!(m.vias().unwrap().len(), 1);
        assert_eq!(m.top_via().branch(), Some("z9hG4bK3"));
        let out = msg()
            .edit()
            .pop_via()
            .pop_via()
            .pop_via()
            .push_via("SIP/2.0/UDP x;branch=z9hG4bKx")
            .finish();
        let m = reparse(&out);
        assert_eq!(m.vias().unwrap().len(), 1);
        assert_eq!(m.top_via().branch(), Some("z9hG4bKx"));
    }

    #[test]
    fn push_then_pop_restores() {
        let out = msg()
            .edit()
            .push_via("SIP/2.0/UDP proxy;branch=z9hG4bKp")
            .finish();
        let m = reparse(&out);
        assert_eq!(m.top_via().branch(), Some("z9hG4bKp"));
        assert_eq!(m.edit().pop_via().finish(), MSG.as_bytes());
    }

    #[test]
    fn order_independent() {
        let a = msg()
            .edit()
            .push_via("SIP/2.0/UDP p;branch=z9hG4bKp")
            .set_top_via("SIP/2.0/UDP a.example.com;branch=z9hG4bK1;received=1.2.3.4")
            .pop_route()
            .decrement_max_forwards()
            .push_record_route("<sip:p;lr>")
            .set_request_uri("sip:bob@10.0.0.1")
            .finish();
        let b = msg()
            .edit()
            .set_request_uri("sip:bob@10.0.0.1")
            .push_record_route("<sip:p;lr>")
            .decrement_max_forwards()
            .pop_route()
            .set_top_via("SIP/2.0/UDP a.example.com;branch=z9hG4bK1;received=1.2.3.4")
            .push_via("SIP/2.0/UDP p;branch=z9hG4bKp")
            .finish();
        assert_eq!(a, b);
        let m = reparse(&a);
        let vias = m.vias().unwrap();
        assert_eq!(vias.len(), 4);
        assert_eq!(vias[0].branch(), Some("z9hG4bKp"));
        assert_eq!(vias[1].received(), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(m.max_forwards(), Some(9));
        assert_eq!(m.request_uri(), Some("sip:bob@10.0.0.1"));
        assert_eq!(m.routes().unwrap().len(), 1);
        assert_eq!(m.record_routes().unwrap().len(), 1);
        assert_eq!(m.body(), b"body");
    }

    #[test]
    fn header_ops() {
        let out = msg()
            .edit()
            .set_header(HeaderName::Other("x-a".into()), "1")
            .add_header(HeaderName::UserAgent, "sipd")
            .remove_header(HeaderName::Route)
            .set_header(HeaderName::Via, "SIP/2.0/UDP only;branch=z9hG4bKo")
            .pop_via()
            .finish();
        let m = reparse(&out);
        assert_eq!(m.vias().unwrap().len(), 1);
        assert_eq!(m.header(&HeaderName::parse("X-A")), Some("1"));
        assert_eq!(m.header(&HeaderName::UserAgent), Some("sipd"));
        assert!(m.routes().unwrap().is_empty());
        // last of set/remove wins
        let out = msg()
            .edit()
            .set_header(HeaderName::Route, "<sip:x>")
            .remove_header(HeaderName::Route)
            .finish();
        assert!(reparse(&out).routes().unwrap().is_empty());
    }

    #[test]
    fn remove_header_if_keeps_the_others() {
        let m = reparse(
            b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
              Proxy-Authorization: Digest realm=\"us\", username=\"a\"\r\n\
              Proxy-Authorization: Digest realm=\"them\", username=\"a\"\r\n\
              From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
              Content-Length: 0\r\n\r\n",
        );
        let out = m
            .edit()
            .remove_header_if(HeaderName::ProxyAuthorization, |v| v.contains("\"us\""))
            .finish();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("realm=\"us\""), "{text}");
        assert!(text.contains("realm=\"them\""), "{text}");
        reparse(text.as_bytes());
    }

    #[test]
    fn injection_is_neutralised() {
        let out = msg()
            .edit()
            .add_header(HeaderName::Subject, "a\r\nVia: evil")
            .finish();
        let m = reparse(&out);
        assert_eq!(m.vias().unwrap().len(), 3);
        assert_eq!(m.header(&HeaderName::Subject), Some("a  Via: evil"));
    }
}
