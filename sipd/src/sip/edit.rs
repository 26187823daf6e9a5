//! Forwarding edits applied to the raw bytes of a received message. Only the
//! edited lines change: every other byte is copied exactly as received.

use super::header::HeaderName;
use super::message::Message;

/// A set of edits to one message; `finish` produces the new bytes.
/// Edits are independent of the order they are given in.
#[derive(Debug)]
pub struct Edit<'a> {
    msg: &'a Message,
}

impl Message {
    pub fn edit(&self) -> Edit<'_> {
        Edit { msg: self }
    }
}

impl<'a> Edit<'a> {
    /// Insert `Via: value` above the current top Via.
    pub fn push_via(self, value: &str) -> Self {
        todo!("{value}")
    }
    /// Remove the top Via value (only the first element if the line holds several).
    pub fn pop_via(self) -> Self {
        todo!()
    }
    /// Replace the top Via value (e.g. to add `received`/`rport`).
    pub fn set_top_via(self, value: &str) -> Self {
        todo!("{value}")
    }
    /// Insert `Record-Route: value` above any existing Record-Route (else after the Vias).
    pub fn push_record_route(self, value: &str) -> Self {
        todo!("{value}")
    }
    /// Remove the first Route value (only the first element of a multi-value line).
    pub fn pop_route(self) -> Self {
        todo!()
    }
    /// Replace the Request-URI (requests only).
    pub fn set_request_uri(self, uri: &str) -> Self {
        todo!("{uri}")
    }
    /// Set Max-Forwards to `n` (replacing the existing value or adding the header).
    pub fn set_max_forwards(self, n: u32) -> Self {
        todo!("{n}")
    }
    /// Decrement Max-Forwards; add `Max-Forwards: 70` when absent.
    /// (Callers check for 0 before forwarding.)
    pub fn decrement_max_forwards(self) -> Self {
        todo!()
    }
    /// Replace every line of `name` by one `Name: value` line (at the first
    /// line's place), or append it when absent.
    pub fn set_header(self, name: HeaderName, value: &str) -> Self {
        todo!("{name:?} {value}")
    }
    /// Append a new header line at the end of the header section.
    pub fn add_header(self, name: HeaderName, value: &str) -> Self {
        todo!("{name:?} {value}")
    }
    /// Remove every line of `name`.
    pub fn remove_header(self, name: HeaderName) -> Self {
        todo!("{name:?}")
    }
    /// The edited message. A `Content-Length` matching the body is added when
    /// the original had none (needed when a UDP message is sent over TCP).
    pub fn finish(self) -> Vec<u8> {
        todo!("{:?}", self.msg.raw().len())
    }
}
