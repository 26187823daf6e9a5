//! Why a message was rejected: [`ParseError`].

use std::fmt;

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
        match self {
            ParseError::TooLarge => f.write_str("message too large"),
            ParseError::TooManyHeaders => f.write_str("too many header lines"),
            ParseError::LineTooLong => f.write_str("line too long"),
            ParseError::BadStartLine => f.write_str("malformed start line"),
            ParseError::BadVersion => f.write_str("unsupported SIP version"),
            ParseError::BadHeader(what) => write!(f, "malformed header: {what}"),
            ParseError::MissingHeader(name) => write!(f, "missing {name} header"),
            ParseError::BadContentLength => f.write_str("bad Content-Length"),
            ParseError::BodyTruncated => f.write_str("body shorter than Content-Length"),
            ParseError::NotUtf8 => f.write_str("header section is not UTF-8"),
        }
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display() {
        assert_eq!(
            ParseError::MissingHeader("Via").to_string(),
            "missing Via header"
        );
        assert!(ParseError::BadHeader("x".into()).to_string().contains('x'));
    }
}
