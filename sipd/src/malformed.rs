//! Answering what the parser rejected. A message that looks like a request
//! gets `400 Bad Request` built from whatever Via/From/To/Call-ID/CSeq lines
//! it has, sent back to its source address only (never to an address taken
//! from its headers). Malformed responses, keep-alives and non-SIP noise
//! are dropped silently.

use crate::sip::{HeaderName, ParseError};

/// Bytes of one copied header value at most (a 400 must not amplify).
const MAX_COPY: usize = 1024;

/// A keep-alive or other noise that deserves no answer at all.
pub fn is_noise(data: &[u8]) -> bool {
    data.iter().all(|&b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        // STUN (RFC 5389) keep-alives start with 0b00 in the top bits.
        || data.first().is_some_and(|&b| b < 0x20 && b != b'\r' && b != b'\n')
}

/// The 400 response to a request that failed to parse, if it looks like a
/// SIP request with at least a Via.
pub fn bad_request(data: &[u8], err: &ParseError) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(&data[..data.len().min(64 * 1024)]);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.find(|l| !l.trim().is_empty())?;
    let parts: Vec<&str> = first.split_whitespace().collect();
    if parts.len() != 3 || !parts[2].to_ascii_uppercase().starts_with("SIP/") {
        return None;
    }
    if parts[0].to_ascii_uppercase().starts_with("SIP/") || parts[0] == "ACK" {
        // A response, or an ACK: never answered.
        return None;
    }
    let mut vias = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.len() > MAX_COPY || value.chars().any(|c| c.is_control() && c != '\t') {
            continue;
        }
        match HeaderName::parse(name.trim()) {
            HeaderName::Via if vias.len() < 16 => vias.push(value.to_string()),
            HeaderName::From => from = from.or(Some(value.to_string())),
            HeaderName::To => to = to.or(Some(value.to_string())),
            HeaderName::CallId => call_id = call_id.or(Some(value.to_string())),
            HeaderName::CSeq => cseq = cseq.or(Some(value.to_string())),
            _ => {}
        }
    }
    if vias.is_empty() {
        return None;
    }
    let mut out = String::from("SIP/2.0 400 Bad Request\r\n");
    for v in &vias {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for (name, value) in [
        ("From", from),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", cseq),
    ] {
        if let Some(v) = value {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let why = err.to_string().replace(['"', '\\'], "'");
    out.push_str(&format!("Warning: 399 sipd \"{why}\"\r\n"));
    out.push_str(concat!("Server: sipd/", env!("CARGO_PKG_VERSION"), "\r\n"));
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}
