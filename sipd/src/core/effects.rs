//! What the core asks the server to do after an event: messages to send,
//! store writes, and store writes whose commit a deferred answer waits for
//! (the server reports the outcome back with `Core::resume`).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::store::Write;
use crate::transport::{FlowId, Out, Transport};

/// A security event for the security log (and the normal log at warn).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityEvent {
    /// `auth-failure`, `unknown-user`, `acl-refused`, `flood`, `ban`,
    /// `ban-lifted`.
    pub event: &'static str,
    pub user: Option<String>,
    pub transport: Transport,
    pub addr: SocketAddr,
    /// More about it (`reason=... until=...` for bans), already formatted.
    pub detail: Option<String>,
}

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
    /// Security events, in order.
    pub security: Vec<SecurityEvent>,
    /// Addresses whose packets are dropped from now until the instant
    /// (`Some`), or no longer (`None`): the server drops them unparsed.
    pub drops: Vec<(IpAddr, Option<Instant>)>,
    /// Media relay sessions to open, update and close, in order.
    pub media: Vec<crate::media::MediaOp>,
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

    pub fn security(&mut self, e: SecurityEvent) {
        self.security.push(e);
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
            && self.writes.is_empty()
            && self.confirm.is_empty()
            && self.trusted.is_empty()
            && self.security.is_empty()
            && self.drops.is_empty()
            && self.media.is_empty()
    }
}
