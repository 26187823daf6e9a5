//! Low-level parsing: the shared lexing helpers (tokens, LWS, quoted
//! strings, comma lists, decimal numbers) and the scan of the header section
//! for `message.rs` (lines with folding, Content-Length framing, limits).
//!
//! Everything here works on byte offsets with checked slicing (`get`), so no
//! input can make it panic. Line endings may be CRLF or a bare LF; raw bytes
//! are never rewritten.

use std::ops::Range;

use super::error::ParseError;
use super::limits::Limits;

/// RFC 3261 `token` character.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Non-empty RFC 3261 `token`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Linear white space, including the CR/LF of a folded line.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// Index of the first non-LWS byte at or after `i`.
pub(crate) fn skip_lws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !is_lws(c) {
            break;
        }
        i += 1;
    }
    i
}

/// Parse a quoted string starting at `s[start] == '"'`. Returns the
/// unescaped content and the index just after the closing quote.
pub(crate) fn parse_quoted(s: &str, start: usize) -> Option<(String, usize)> {
    let rest = s.get(start..)?;
    let mut chars = rest.char_indices();
    match chars.next() {
        Some((_, '"')) => {}
        _ => return None,
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, start + i + 1)),
            '\\' => match chars.next() {
                // quoted-pair excludes CR and LF
                Some((_, '\r')) | Some((_, '\n')) | None => return None,
                Some((_, e)) => out.push(e),
            },
            _ => out.push(c),
        }
    }
    None
}

/// Write `s` as a quoted string, escaping `"` and `\`.
/// Append `n` in decimal (no formatting machinery: this is on the
/// packet path).
pub fn push_u32(out: &mut String, mut n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// Append `n` as `width` lower-case hex digits (the low ones).
pub fn push_hex(out: &mut String, n: u64, width: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for k in (0..width.min(16)).rev() {
        out.push(char::from(HEX[((n >> (4 * k)) & 0xf) as usize]));
    }
}

pub(crate) fn write_quoted(f: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            // CR/LF cannot be escaped in a quoted-string; drop them.
            '\r' | '\n' => f.write_char(' ')?,
            _ => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Iterator over the elements of a comma-separated list (commas inside
/// quoted strings and `<…>` do not split), yielding trimmed, non-empty
/// byte ranges into the input.
pub(crate) struct ListRanges<'a> {
    b: &'a [u8],
    pos: usize,
}

pub(crate) fn list_ranges(s: &str) -> ListRanges<'_> {
    ListRanges {
        b: s.as_bytes(),
        pos: 0,
    }
}

impl Iterator for ListRanges<'_> {
    type Item = Range<usize>;
    fn next(&mut self) -> Option<Range<usize>> {
        loop {
            if self.pos >= self.b.len() {
                return None;
            }
            let start = self.pos;
            let mut i = start;
            let mut in_quote = false;
            let mut in_angle = false;
            while let Some(&c) = self.b.get(i) {
                if in_quote {
                    match c {
                        b'\\' => i += 1,
                        b'"' => in_quote = false,
                        _ => {}
                    }
                } else {
                    match c {
                        b'"' => in_quote = true,
                        b'<' => in_angle = true,
                        b'>' => in_angle = false,
                        b',' if !in_angle => break,
                        _ => {}
                    }
                }
                i += 1;
            }
            let end = i.min(self.b.len());
            self.pos = end.saturating_add(1);
            let mut s = start;
            let mut e = end;
            while s < e && self.b.get(s).is_some_and(|&c| is_lws(c)) {
                s += 1;
            }
            while e > s && self.b.get(e - 1).is_some_and(|&c| is_lws(c)) {
                e -= 1;
            }
            if s < e {
                return Some(s..e);
            }
        }
    }
}

/// One header line found by [`scan_head`], as offsets into the buffer.
#[derive(Clone, Debug)]
pub(crate) struct RawHeader {
    /// Whole line with continuation lines and the final line ending.
    pub(crate) line: Range<usize>,
    pub(crate) name: Range<usize>,
    /// Value trimmed of LWS (may span continuation lines).
    pub(crate) value: Range<usize>,
    /// The value contains a line break (continuation line inside it).
    pub(crate) folded: bool,
}

/// The header section of a message as found by [`scan_head`].
#[derive(Clone, Debug)]
pub(crate) struct Head {
    /// Offset of the empty line that ends the header section.
    pub(crate) header_end: usize,
    /// Offset just after the empty line: the body starts here.
    pub(crate) body_start: usize,
    /// Content-Length if present (several equal values allowed).
    pub(crate) content_length: Option<usize>,
}

/// Find the end of the line starting at `pos`: returns (content end, next
/// line start). `None` when no LF is within the buffer. A line longer than
/// `max_line` is an error as soon as that is known.
fn line_at(buf: &[u8], pos: usize, max_line: usize) -> Result<Option<(usize, usize)>, ParseError> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    let window = rest.get(..max_line.saturating_add(1)).unwrap_or(rest);
    match memchr::memchr(b'\n', window) {
        Some(off) => {
            let lf = pos + off;
            let end = if off > 0 && buf.get(lf - 1) == Some(&b'\r') {
                lf - 1
            } else {
                lf
            };
            Ok(Some((end, lf + 1)))
        }
        None if rest.len() > max_line => Err(ParseError::LineTooLong),
        None => Ok(None),
    }
}

/// Parse an unsigned decimal made of ASCII digits only (no sign, no
/// spaces); `None` on anything else or on overflow.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parse a Content-Length value: digits only (LWS trimmed), no overflow.
pub(crate) fn parse_content_length(v: &[u8]) -> Result<usize, ParseError> {
    let v = trim_bytes(v);
    if v.is_empty() {
        return Err(ParseError::BadContentLength);
    }
    let mut n: usize = 0;
    for &c in v {
        if !c.is_ascii_digit() {
            return Err(ParseError::BadContentLength);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(c - b'0')))
            .ok_or(ParseError::BadContentLength)?;
    }
    Ok(n)
}

fn trim_bytes(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if is_lws(*first) {
            v = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = v {
        if is_lws(*last) {
            v = rest;
        } else {
            break;
        }
    }
    v
}

/// Is the header name (raw bytes) Content-Length or its compact form `l`?
fn is_content_length(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")
}

/// Scan the start line and header lines of the message at the front of
/// `buf` (which must not start with CR/LF). Calls `on_header` for each header
/// line. Returns `Ok(None)` when the buffer ends before the empty line that
/// ends the header section. Enforces the line, header-count and message-size
/// limits, checks header names are tokens and that every line has a colon,
/// and checks Content-Length values (numeric, all equal).
pub(crate) fn scan_head(
    buf: &[u8],
    limits: &Limits,
    mut on_header: impl FnMut(RawHeader),
) -> Result<Option<Head>, ParseError> {
    let max_line = limits.max_line;
    // Never look further than the message size limit.
    let scan = buf.get(..limits.max_message).unwrap_or(buf);
    let incomplete = || {
        if buf.len() > limits.max_message {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        }
    };
    let Some((_, mut pos)) = line_at(scan, 0, max_line)? else {
        return incomplete();
    };
    let mut count = 0usize;
    let mut content_length: Option<usize> = None;
    loop {
        let Some((end, next)) = line_at(scan, pos, max_line)? else {
            return incomplete();
        };
        if end == pos {
            // Empty line: end of the header section.
            return Ok(Some(Head {
                header_end: pos,
                body_start: next,
                content_length,
            }));
        }
        let line = scan.get(pos..end).unwrap_or(&[]);
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(ParseError::BadHeader(
                "continuation line without a header".into(),
            ));
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(ParseError::BadHeader("header line without ':'".into()));
        };
        let mut name_end = colon;
        while name_end > 0 && matches!(line.get(name_end - 1), Some(b' ' | b'\t')) {
            name_end -= 1;
        }
        let name = line.get(..name_end).unwrap_or(&[]);
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(ParseError::BadHeader(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        // Continuation lines.
        let mut last_end = end;
        let mut line_end = next;
        let mut folded = false;
        while matches!(scan.get(line_end), Some(b' ' | b'\t')) {
            let Some((e, n)) = line_at(scan, line_end, max_line)? else {
                return incomplete();
            };
            // A whitespace-only continuation line adds nothing; still part
            // of the line.
            if trim_bytes(scan.get(line_end..e).unwrap_or(&[])).is_empty() {
                line_end = n;
                continue;
            }
            folded = true;
            last_end = e;
            line_end = n;
        }
        if line_end - pos > max_line {
            return Err(ParseError::LineTooLong);
        }
        count += 1;
        if count > limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        let mut vs = pos + colon + 1;
        while vs < last_end && scan.get(vs).is_some_and(|&c| is_lws(c)) {
            vs += 1;
        }
        let mut ve = last_end;
        while ve > vs && scan.get(ve - 1).is_some_and(|&c| is_lws(c)) {
            ve -= 1;
        }
        let folded = folded && scan.get(vs..ve).is_some_and(|v| v.contains(&b'\n'));
        if is_content_length(name) {
            let n = parse_content_length(scan.get(vs..ve).unwrap_or(&[]))?;
            match content_length {
                Some(old) if old != n => return Err(ParseError::BadContentLength),
                _ => content_length = Some(n),
            }
        }
        on_header(RawHeader {
            line: pos..line_end,
            name: pos..pos + name_end,
            value: vs..ve,
            folded,
        });
        pos = line_end;
    }
}

/// Unfold a header value: every line break with the white space that
/// follows it becomes one SP.
pub(crate) fn unfold(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                while matches!(chars.peek(), Some(' ' | '\t')) {
                    chars.next();
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token("INVITE"));
        assert!(is_token("!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token(""));
        assert!(!is_token("IN VITE"));
        assert!(!is_token("a:b"));
    }

    #[test]
    fn quoted() {
        assert_eq!(
            parse_quoted(r#""a\"b\\c" rest"#, 0),
            Some((r#"a"b\c"#.to_string(), 9))
        );
        assert_eq!(parse_quoted(r#""unterminated"#, 0), None);
        assert_eq!(parse_quoted(r#""bad\"#, 0), None);
        assert_eq!(parse_quoted("x", 0), None);
        assert_eq!(
            parse_quoted("\"\u{44f}\"", 0),
            Some(("\u{44f}".to_string(), 4))
        );
        let mut s = String::new();
        write_quoted(&mut s, r#"a"b\c"#).unwrap();
        assert_eq!(s, r#""a\"b\\c""#);
    }

    #[test]
    fn list_ranges_split() {
        let s = r#" <sip:a@b>;x="1,2" , "Doe, J" <sip:c@d,e>,, sip:f "#;
        let v: Vec<&str> = list_ranges(s).map(|r| &s[r]).collect();
        assert_eq!(
            v,
            vec![r#"<sip:a@b>;x="1,2""#, r#""Doe, J" <sip:c@d,e>"#, "sip:f"]
        );
        assert_eq!(list_ranges("").count(), 0);
        assert_eq!(list_ranges(" , ,").count(), 0);
        // escaped quote inside quotes
        let s = r#""a\",b", c"#;
        let v: Vec<&str> = list_ranges(s).map(|r| &s[r]).collect();
        assert_eq!(v, vec![r#""a\",b""#, "c"]);
        // unterminated quote / trailing backslash must not panic
        assert_eq!(list_ranges("\"abc\\").count(), 1);
    }

    #[test]
    fn u32_digits() {
        assert_eq!(parse_u32("70"), Some(70));
        assert_eq!(parse_u32("+70"), None);
        assert_eq!(parse_u32(""), None);
        assert_eq!(parse_u32("99999999999"), None);
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b" 12 "), Ok(12));
        assert_eq!(
            parse_content_length(b"-1"),
            Err(ParseError::BadContentLength)
        );
        assert_eq!(parse_content_length(b""), Err(ParseError::BadContentLength));
        assert_eq!(
            parse_content_length(b"1 2"),
            Err(ParseError::BadContentLength)
        );
        assert_eq!(
            parse_content_length(b"99999999999999999999999999"),
            Err(ParseError::BadContentLength)
        );
    }

    #[test]
    fn unfolding() {
        assert_eq!(unfold("a\r\n  b\n\tc"), "a b c");
        assert_eq!(unfold("a  \r\n b"), "a   b");
    }

    #[test]
    fn scan_basic() {
        let msg = b"OPTIONS sip:a SIP/2.0\r\nA: 1\r\nB : x,\r\n y\r\nl: 0\r\n\r\nbody";
        let mut hs = Vec::new();
        let head = scan_head(msg, &Limits::default(), |h| hs.push(h))
            .unwrap()
            .unwrap();
        assert_eq!(hs.len(), 3);
        assert_eq!(&msg[hs[1].name.clone()], b"B");
        assert_eq!(&msg[hs[1].value.clone()], b"x,\r\n y");
        assert!(hs[1].folded);
        assert_eq!(head.content_length, Some(0));
        assert_eq!(&msg[head.body_start..], b"body");
        // incomplete
        assert!(scan_head(
            b"OPTIONS sip:a SIP/2.0\r\nA: 1\r\n",
            &Limits::default(),
            |_| {}
        )
        .unwrap()
        .is_none());
    }
}
