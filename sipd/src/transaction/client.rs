//! Client transactions (RFC 3261 §17.1, RFC 6026 §7.2): retransmit over UDP
//! (timers A/E), give up (B/F), ACK non-2xx finals hop by hop, pass 2xx
//! retransmissions up while Accepted (M), and the proxy's timer C.

use std::time::{Duration, Instant};

use super::{reliable, Owner, TimerKind, TxEvent, TxId, T1, T2, T4, T64, TIMER_C};
use crate::sip::{HeaderName, Limits, Message, Method, RequestBuilder};
use crate::transport::{Out, Peer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing back yet.
    Calling,
    /// Non-INVITE sent, nothing back yet.
    Trying,
    Proceeding,
    Completed,
    Accepted,
}

pub(crate) enum TimerOutcome {
    Nothing,
    Again(Instant, u32),
    Terminate,
}

type Timers = Vec<(Instant, TimerKind, u32)>;

pub struct ClientTx {
    pub id: TxId,
    pub owner: Owner,
    pub branch: String,
    method: Method,
    pub dest: Peer,
    /// The request as sent (for retransmissions, ACK and CANCEL).
    data: Vec<u8>,
    state: ClientState,
    interval: Duration,
    gen: u32,
    c_gen: u32,
    /// A provisional response has arrived (a CANCEL may be sent).
    pub provisional: bool,
    ack: Option<Vec<u8>>,
    c_fired: bool,
}

impl ClientTx {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        id: TxId,
        owner: Owner,
        branch: String,
        method: &Method,
        data: Vec<u8>,
        dest: Peer,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> (ClientTx, Timers) {
        out.push(Out::tx_request(dest, data.clone(), id));
        let invite = *method == Method::Invite;
        let mut timers = Vec::new();
        if !reliable(dest.transport) {
            timers.push((now + T1, TimerKind::Retransmit, 0));
        }
        timers.push((now + T64, TimerKind::Timeout, 0));
        // Timer C starts with the first provisional response: before it,
        // timer B (and the proxy's no-response timer) apply.
        let tx = ClientTx {
            id,
            owner,
            branch,
            method: method.clone(),
            dest,
            data,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            interval: T1,
            gen: 0,
            c_gen: 0,
            provisional: false,
            ack: None,
            c_fired: false,
        };
        (tx, timers)
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub(crate) fn is_cancel(&self) -> bool {
        self.method == Method::Cancel
    }

    fn invite(&self) -> bool {
        self.method == Method::Invite
    }

    /// The request as sent.
    pub fn request(&self) -> &[u8] {
        &self.data
    }

    /// A CANCEL for this INVITE (RFC 3261 §9.1): same Request-URI, top Via,
    /// Call-ID, From, To, Route and CSeq number.
    pub fn build_cancel(&self) -> Option<Vec<u8>> {
        self.hop_request(Method::Cancel, None)
    }

    /// ACK for a non-2xx final response (RFC 3261 §17.1.1.3): as the
    /// CANCEL, with the response's To (its tag).
    fn build_ack(&self, resp: &Message) -> Option<Vec<u8>> {
        self.hop_request(Method::Ack, Some(resp.header(&HeaderName::To)?))
    }

    /// A request of this transaction's hop (CANCEL, ACK for non-2xx) built
    /// from the INVITE as sent; `to` replaces its To.
    fn hop_request(&self, method: Method, to: Option<&str>) -> Option<Vec<u8>> {
        let req = Message::parse(&self.data, &Limits::default()).ok()?;
        let top_via = req
            .headers(&HeaderName::Via)
            .next()?
            .split(',')
            .next()?
            .trim();
        let mut b =
            RequestBuilder::new(&method, req.request_uri()?).header(HeaderName::Via, top_via);
        for r in req.headers(&HeaderName::Route) {
            b = b.header(HeaderName::Route, r);
        }
        let cseq = format!("{} {method}", req.cseq().seq);
        b = b
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, req.header(&HeaderName::From)?)
            .header(HeaderName::To, to.or(req.header(&HeaderName::To))?)
            .header(HeaderName::CallId, req.call_id())
            .header(HeaderName::CSeq, &cseq);
        Some(b.build())
    }

    pub(crate) fn on_response(
        &mut self,
        msg: Message,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> (Option<TxEvent>, Timers) {
        let code = msg.status().unwrap_or(0);
        let mut timers = Vec::new();
        let (owner, tx) = (self.owner, self.id);
        if code < 200 {
            match self.state {
                ClientState::Calling => {
                    self.state = ClientState::Proceeding;
                    // Timers A and B stop; timer C restarts on every provisional.
                    self.gen += 1;
                }
                ClientState::Trying => {
                    self.state = ClientState::Proceeding;
                    self.interval = T2;
                }
                ClientState::Proceeding => {}
                _ => return (None, timers),
            }
            if self.invite() {
                self.c_gen += 1;
                timers.push((now + TIMER_C, TimerKind::C, self.c_gen));
            }
            self.provisional = true;
            return (Some(TxEvent::Provisional { owner, tx, msg }), timers);
        }
        let reliable = reliable(self.dest.transport);
        if self.invite() {
            match self.state {
                ClientState::Calling | ClientState::Proceeding => {
                    self.gen += 1;
                    self.c_gen += 1;
                    if code < 300 {
                        self.state = ClientState::Accepted;
                        // Timer M (RFC 6026; see LINGER).
                        timers.push((now + super::LINGER, TimerKind::Terminate, self.gen));
                    } else {
                        self.state = ClientState::Completed;
                        self.ack = self.build_ack(&msg);
                        if let Some(ack) = &self.ack {
                            out.push(Out::request(self.dest, ack.clone()));
                        }
                        // Timer D (see LINGER).
                        let d = if reliable { now } else { now + super::LINGER };
                        timers.push((d, TimerKind::Terminate, self.gen));
                    }
                    (Some(TxEvent::Final { owner, tx, msg }), timers)
                }
                ClientState::Accepted if code < 300 => {
                    (Some(TxEvent::Final { owner, tx, msg }), timers)
                }
                ClientState::Completed if code >= 300 => {
                    if let Some(ack) = &self.ack {
                        out.push(Out::request(self.dest, ack.clone()));
                    }
                    (None, timers)
                }
                _ => (None, timers),
            }
        } else {
            match self.state {
                ClientState::Trying | ClientState::Proceeding => {
                    self.state = ClientState::Completed;
                    self.gen += 1;
                    let k = if reliable { now } else { now + T4 };
                    timers.push((k, TimerKind::Terminate, self.gen));
                    (Some(TxEvent::Final { owner, tx, msg }), timers)
                }
                _ => (None, timers),
            }
        }
    }

    /// The request could not be sent at all (its connection failed):
    /// the transaction ends; `None` once something came back.
    pub(crate) fn on_transport_error(&mut self) -> Option<TxEvent> {
        match self.state {
            ClientState::Calling | ClientState::Trying => Some(TxEvent::TransportError {
                owner: self.owner,
                tx: self.id,
            }),
            _ => None,
        }
    }

    pub(crate) fn on_timer(
        &mut self,
        kind: TimerKind,
        gen: u32,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> (TimerOutcome, Option<TxEvent>) {
        let (owner, tx) = (self.owner, self.id);
        if kind == TimerKind::C {
            if gen == self.c_gen && self.state == ClientState::Proceeding {
                if self.c_fired {
                    // The CANCEL sent on timer C got no final either: give up.
                    return (
                        TimerOutcome::Terminate,
                        Some(TxEvent::Timeout {
                            owner,
                            tx,
                            provisional: true,
                        }),
                    );
                }
                self.c_fired = true;
                return (
                    TimerOutcome::Again(now + T64, gen),
                    Some(TxEvent::TimerC { owner, tx }),
                );
            }
            if gen == self.c_gen && self.state == ClientState::Calling {
                // Cannot happen before timer B, but be safe.
                return (
                    TimerOutcome::Terminate,
                    Some(TxEvent::Timeout {
                        owner,
                        tx,
                        provisional: false,
                    }),
                );
            }
            return (TimerOutcome::Nothing, None);
        }
        if kind == TimerKind::Cancelled {
            if matches!(self.state, ClientState::Calling | ClientState::Proceeding) {
                let provisional = self.provisional;
                return (
                    TimerOutcome::Terminate,
                    Some(TxEvent::Timeout {
                        owner,
                        tx,
                        provisional,
                    }),
                );
            }
            return (TimerOutcome::Nothing, None);
        }
        if gen != self.gen {
            return (TimerOutcome::Nothing, None);
        }
        match (kind, self.state) {
            (TimerKind::Retransmit, ClientState::Calling) => {
                out.push(Out::tx_request(self.dest, self.data.clone(), self.id));
                self.interval *= 2;
                (TimerOutcome::Again(now + self.interval, gen), None)
            }
            (TimerKind::Retransmit, ClientState::Trying | ClientState::Proceeding)
                if !self.invite() =>
            {
                out.push(Out::tx_request(self.dest, self.data.clone(), self.id));
                self.interval = (self.interval * 2).min(T2);
                (TimerOutcome::Again(now + self.interval, gen), None)
            }
            (
                TimerKind::Timeout,
                ClientState::Calling | ClientState::Trying | ClientState::Proceeding,
            ) => {
                let provisional = self.provisional;
                (
                    TimerOutcome::Terminate,
                    Some(TxEvent::Timeout {
                        owner,
                        tx,
                        provisional,
                    }),
                )
            }
            (TimerKind::Terminate, _) => (TimerOutcome::Terminate, None),
            _ => (TimerOutcome::Nothing, None),
        }
    }
}
