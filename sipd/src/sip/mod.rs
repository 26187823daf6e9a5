//! SIP message layer (RFC 3261): parsing with limits, URIs, header values,
//! forwarding edits on the raw bytes, and building new requests/responses.
//!
//! A parsed [`Message`] keeps the exact bytes received plus the byte range of
//! every header; the mandatory headers (Via, From, To, Call-ID, CSeq) are
//! parsed and validated once, everything else on demand.
//!
//! Leniency decisions (see the tests in `tests/`):
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
//!
//! # Layers
//!
//! The files form layers, lowest first: a file uses only files listed before
//! it here (`super::file::…` or `crate::sip::file::…`, never this module's
//! re-exports), so there are no import cycles. `tests/layers.rs` checks the
//! sources against this list.
//!
//! 1. `error`: [`ParseError`]
//! 2. `limits`: [`Limits`]
//! 3. `method`: [`Method`]
//! 4. `name`: [`HeaderName`] and the names that must appear exactly once
//! 5. `parse`: lexing helpers and the scan of the header section
//! 6. `params`: [`Params`] and their parsing
//! 7. `uri`: [`Uri`], [`Host`]
//! 8. `header`: [`NameAddr`], [`Contact`], [`Via`], [`CSeq`], [`split_list`]
//! 9. `message`: [`Message`], [`frame_stream`]
//! 10. `edit`: [`Edit`] (forwarding edits on the raw bytes)
//! 11. `build`: [`RequestBuilder`], [`ResponseBuilder`]
//! 12. `auth`: [`AuthParams`](auth::AuthParams)
//!
//! The unit tests under `tests/` sit above all of them.

pub mod auth;
pub mod build;
pub mod edit;
pub mod error;
pub mod header;
pub mod limits;
pub mod message;
pub mod method;
pub mod name;
pub mod params;
mod parse;
pub mod uri;

#[cfg(test)]
mod tests;

pub use build::{RequestBuilder, ResponseBuilder};
pub use edit::Edit;
pub use error::ParseError;
pub use header::{split_list, CSeq, Contact, NameAddr, Via};
pub use limits::Limits;
pub use message::{frame_stream, Message, StreamFrame};
pub use method::Method;
pub use name::HeaderName;
pub use params::Params;
pub use parse::{push_hex, push_u32};
pub use uri::{push_ip, Host, Scheme, Uri, UriError};
