//! Server transactions (RFC 3261 §17.2, RFC 6026 §7.1): remember the last
//! response to answer retransmissions, retransmit a non-2xx final response to
//! an INVITE over UDP until the ACK comes (timer G/H), and linger to absorb
//! late retransmissions (timers I, J, L).

use std::sync::Arc;
use std::time::Instant;

use super::{reliable, ServerKey, TimerKind, TxId, T1, T2, T4, T64};
use crate::sip::{HeaderName, Message, Method, ResponseBuilder};
use crate::transport::{Out, Peer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE: no response sent yet.
    Trying,
    /// A provisional response was sent.
    Proceeding,
    /// A final response was sent (non-2xx for INVITE).
    Completed,
    /// INVITE: the ACK for the non-2xx final arrived.
    Confirmed,
    /// INVITE: a 2xx was sent (RFC 6026).
    Accepted,
}

pub(crate) enum TimerOutcome {
    Nothing,
    Again(Instant, u32),
    Terminate,
}

pub struct ServerTx {
    pub id: TxId,
    pub(crate) key: ServerKey,
    /// The request as received; dropped once a final response is sent
    /// (only the response is needed then, for retransmissions).
    pub req: Option<Arc<Message>>,
    /// Where it came from.
    pub peer: Peer,
    /// Where responses go.
    pub resp_dest: Peer,
    /// Top Via for responses (received/rport added).
    pub resp_via: String,
    /// Our To tag for responses we build ourselves (written out as hex
    /// only when we do).
    pub to_tag: u64,
    invite: bool,
    state: ServerState,
    last: Option<Vec<u8>>,
    pub last_code: u16,
    g_interval: std::time::Duration,
    gen: u32,
    /// Free for the owner (e.g. the proxy context id).
    pub ctx: Option<u64>,
    /// Counted among its source's open transactions (see `Transactions`).
    pub(crate) counted: bool,
}

impl ServerTx {
    pub(crate) fn new(
        id: TxId,
        key: ServerKey,
        req: Arc<Message>,
        peer: Peer,
        resp_dest: Peer,
        resp_via: String,
        to_tag: u64,
    ) -> ServerTx {
        let invite = req.method() == Some(&Method::Invite);
        ServerTx {
            id,
            key,
            req: Some(req),
            peer,
            resp_dest,
            resp_via,
            to_tag,
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            last: None,
            last_code: 0,
            g_interval: T1,
            gen: 0,
            ctx: None,
            counted: false,
        }
    }

    /// Still open for its source: no final response yet, or an INVITE's
    /// non-2xx final not ACKed yet (retransmitted until timer H). A
    /// finished transaction that only lingers (timers I, J, L) is not.
    pub fn is_open(&self) -> bool {
        match self.state {
            ServerState::Trying | ServerState::Proceeding => true,
            ServerState::Completed => self.invite,
            ServerState::Confirmed | ServerState::Accepted => false,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn is_invite(&self) -> bool {
        self.invite
    }

    /// Has a final response been sent?
    pub fn is_final(&self) -> bool {
        self.last_code >= 200
    }

    /// A response of our own to this request.
    pub fn build_response(
        &self,
        code: u16,
        reason: &str,
        headers: &[(HeaderName, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let Some(req) = &self.req else {
            return Vec::new();
        };
        let mut b = ResponseBuilder::new(req, code, reason)
            .top_via(&self.resp_via)
            .header(
                HeaderName::Server,
                concat!("sipd/", env!("CARGO_PKG_VERSION")),
            );
        if code > 100 {
            let mut tag = String::with_capacity(16);
            crate::sip::push_hex(&mut tag, self.to_tag, 16);
            b = b.to_tag(&tag);
        }
        for (n, v) in headers {
            b = b.header(n.clone(), v);
        }
        if let Some((ct, body)) = body {
            b = b.body(ct, body);
        }
        b.build()
    }

    pub(crate) fn retransmit_last(&self, out: &mut Vec<Out>) {
        // RFC 6026: in Accepted, INVITE retransmissions are absorbed (the
        // UAS retransmits its 2xx itself).
        if self.state == ServerState::Accepted {
            return;
        }
        if let Some(last) = &self.last {
            out.push(Out::response(self.resp_dest, last.clone()));
        }
    }

    /// Send a response; returns the timers to start.
    pub(crate) fn send_response(
        &mut self,
        code: u16,
        data: Vec<u8>,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Vec<(Instant, TimerKind, u32)> {
        let mut timers = Vec::new();
        match self.state {
            ServerState::Trying | ServerState::Proceeding => {}
            // 2xx retransmissions from the UAS pass through (RFC 6026).
            ServerState::Accepted if (200..300).contains(&code) => {
                out.push(Out::response(self.resp_dest, data));
                return timers;
            }
            _ => return timers,
        }
        out.push(Out::response(self.resp_dest, data.clone()));
        self.last_code = code;
        if code >= 200 {
            // Keep only what answering retransmissions needs.
            self.req = None;
            self.resp_via = String::new();
        }
        let reliable = reliable(self.resp_dest.transport);
        self.gen += 1;
        if code < 200 {
            self.state = ServerState::Proceeding;
            self.last = Some(data);
        } else if self.invite && code < 300 {
            self.state = ServerState::Accepted;
            self.last = None;
            // Timer L (RFC 6026; see LINGER).
            timers.push((now + super::LINGER, TimerKind::Terminate, self.gen));
        } else if self.invite {
            self.state = ServerState::Completed;
            self.last = Some(data);
            if !reliable {
                self.g_interval = T1;
                timers.push((now + T1, TimerKind::Retransmit, self.gen));
            }
            // Timer H: give up waiting for the ACK.
            timers.push((now + T64, TimerKind::Terminate, self.gen));
        } else {
            self.state = ServerState::Completed;
            self.last = Some(data);
            // Timer J (see LINGER).
            let j = if reliable { now } else { now + super::LINGER };
            timers.push((j, TimerKind::Terminate, self.gen));
        }
        timers
    }

    /// ACK for our non-2xx final: Confirmed, timer I. Returns the timer.
    pub(crate) fn on_ack(&mut self, now: Instant) -> Option<(Instant, u32)> {
        if self.invite && self.state == ServerState::Completed {
            self.state = ServerState::Confirmed;
            self.gen += 1;
            let i = if reliable(self.resp_dest.transport) {
                now
            } else {
                now + T4
            };
            return Some((i, self.gen));
        }
        None
    }

    pub(crate) fn on_timer(
        &mut self,
        kind: TimerKind,
        gen: u32,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> TimerOutcome {
        if gen != self.gen {
            return TimerOutcome::Nothing;
        }
        match kind {
            TimerKind::Retransmit if self.state == ServerState::Completed => {
                if let Some(last) = &self.last {
                    out.push(Out::response(self.resp_dest, last.clone()));
                }
                self.g_interval = (self.g_interval * 2).min(T2);
                TimerOutcome::Again(now + self.g_interval, gen)
            }
            TimerKind::Terminate => TimerOutcome::Terminate,
            _ => TimerOutcome::Nothing,
        }
    }
}
