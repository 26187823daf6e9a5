//! What the core asks the server to do after an event: messages to send,
//! store writes, and store writes whose commit a deferred answer waits for
//! (the server reports the outcome back with `Core::resume`).

use crate::store::Write;
use crate::transport::Out;

#[derive(Debug, Default)]
pub struct Effects {
    /// Messages to send, in order.
    pub out: Vec<Out>,
    /// Store writes (fire and forget).
    pub writes: Vec<Write>,
    /// Store writes to confirm: `Core::resume(token, result)` once committed.
    pub confirm: Vec<(u64, Write)>,
}

impl Effects {
    pub fn new() -> Effects {
        Effects::default()
    }

    pub fn write(&mut self, w: Write) {
        self.writes.push(w);
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty() && self.writes.is_empty() && self.confirm.is_empty()
    }
}
