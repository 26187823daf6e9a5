//! What the core asks the server to do after an event: messages to send,
//! store writes, and store writes whose commit a deferred answer waits for
//! (the server reports the outcome back with `Core::resume`).

use crate::store::Write;
use crate::transport::{FlowId, Out};

#[derive(Debug, Default)]
pub struct Effects {
    /// Messages to send, in order.
    pub out: Vec<Out>,
    /// Store writes (fire and forget).
    pub writes: Vec<Write>,
    /// Store writes to confirm: `Core::resume(token, result)` once committed.
    pub confirm: Vec<(u64, Write)>,
    /// TCP flows that carried an authenticated request or come from a
    /// static host: the transport keeps them open longer (`Tcp::trust`).
    pub trusted: Vec<FlowId>,
}

impl Effects {
    pub fn new() -> Effects {
        Effects::default()
    }

    pub fn write(&mut self, w: Write) {
        self.writes.push(w);
    }

    /// Flow `flow` is trusted (see [`Effects::trusted`]).
    pub fn trust(&mut self, flow: FlowId) {
        if !self.trusted.contains(&flow) {
            self.trusted.push(flow);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
            && self.writes.is_empty()
            && self.confirm.is_empty()
            && self.trusted.is_empty()
    }
}
