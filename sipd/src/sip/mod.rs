//! SIP message layer (RFC 3261): parsing with limits, URIs, header values,
//! forwarding edits on the raw bytes, and building new requests/responses.
//!
//! A parsed [`Message`] keeps the exact bytes received plus the byte range of
//! every header; the mandatory headers (Via, From, To, Call-ID, CSeq) are
//! parsed and validated once, everything else on demand.

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
