//! SIP message layer (RFC 3261): parsing with limits, URIs, header values,
//! forwarding edits on the raw bytes, and building new requests/responses.
//!
//! A parsed [`Message`] keeps the exact bytes received plus the byte range of
//! every header; the mandatory headers (Via, From, To, Call-ID, CSeq) are
//! parsed and validated once, everything else on demand.
//!
//! Leniency decisions (see the tests in `sipd/tests/sip_*.rs`):
//! - Lines may end in CRLF or a bare LF (mixed too); the raw bytes are kept
//!   as received and edits write their new lines with CRLF. CR/LF bytes
//!   before the start line are skipped and are not part of `raw`.
//! - The request line must be exactly `METHOD SP Request-URI SP SIP/2.0`
//!   (single spaces, version case-insensitive). A sip/sips/tel
//!   Request-URI must parse with [`Uri::parse`]; any other scheme is
//!   accepted as raw text when it looks like `scheme ":" 1*VCHAR`, so the
//!   core can answer 416 (use [`Message::parsed_request_uri`]).
//! - From, To, Call-ID and CSeq must appear exactly once; From/To must be
//!   sip/sips/tel name-addr or addr-spec (other schemes are `BadHeader`).
//!   Only the top Via value is validated at parse; `vias()` checks all.
//! - URI parameters are stored as written (not %-unescaped); user,
//!   password and URI headers are unescaped (and must be valid UTF-8).

pub mod auth;
pub mod build;
pub mod edit;
pub mod header;
pub mod message;
mod parse;
pub mod uri;

pub use build::{RequestBuilder, ResponseBuilder};
pub use edit::Edit;
pub use header::{split_list, CSeq, Contact, HeaderName, NameAddr, Params, Via};
pub use message::{frame_stream, Limits, Message, Method, ParseError, StreamFrame};
pub use uri::{Host, Scheme, Uri, UriError};
