//! Gateway health (issue 13 point 5, like Kamailio's dispatcher probing):
//! an OPTIONS to the `host` of every gateway and mediagate every
//! `qualify` seconds (default 30 for them, `Client::qualify`; 0: never),
//! over its `transport=`, spread over the interval, at most
//! [`PINGS_PER_TICK`] per tick.
//!
//! The design is the binding keep-alive's (`keepalive.rs`): the OPTIONS go
//! without a transaction (one message each, no retransmission: a check
//! that gets no answer before the next one is due is a failure), with an
//! unguessable branch `z9hG4bKsdg{id:x}.{token:x}`; only a final response
//! with that branch, from the gateway's own transport and address, is an
//! answer. Since nothing is sent through a transaction, no timeout or
//! transport error is ever made up locally: a locally generated `408` or
//! `503` cannot pass for the gateway's answer.
//!
//! - [`MISSES_DOWN`] failed checks in a row (no answer, or `503`) make a
//!   gateway down; one answer (any other final response: many trunks
//!   answer OPTIONS with `404` or `405`, which still shows they are alive)
//!   makes it up. Not checked yet, or `qualify=0`: unknown, usable.
//! - The router gets the names of the down gateways ([`Health::down`])
//!   and skips them unless all a call could use are down
//!   (`routing/router.rs`); voice guidance prefers a mediagate not down.
//! - A reload keeps the state of a gateway whose host and transport stay
//!   (a new `qualify` reschedules it); a changed host starts again
//!   unknown, under a new id (a late answer to the old host is not
//!   counted); removed ones go.
//! - Every state change is logged (down: warn, up: info) and counted
//!   ([`Health::changes`], `sipctl status`); `sipctl gateways` shows the
//!   table.
//!
//! The table ([`Health`]) is pure: time comes in, pings go out as data.
//! The `impl Core` part at the end builds and sends the OPTIONS and
//! catches their answers before the transaction layer sees them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::proxy::push_hostport;
use super::{Core, Effects};
use crate::config::{Config, Role};
use crate::routing::reach::host_peer;
use crate::sip::{HeaderName, Message, Method, RequestBuilder};
use crate::time::Now;
use crate::transport::{canonical, Out, Peer, Transport};

/// Branch prefix of health-check OPTIONS: our prefix and `g` (not a hex
/// digit: no proxied branch, nor a binding keep-alive's `k`, starts so).
const PING_PREFIX: &str = "z9hG4bKsdg";

/// Failed checks in a row (no answer, or `503`) that make a gateway down.
pub const MISSES_DOWN: u8 = 3;

/// Most health-check OPTIONS sent per tick (20 ms).
pub const PINGS_PER_TICK: usize = 64;

/// Is a gateway answering its health checks?
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    /// Not answered nor failed [`MISSES_DOWN`] checks yet, or not checked
    /// (`qualify=0`): usable.
    #[default]
    Unknown,
    Up,
    /// Failed [`MISSES_DOWN`] checks in a row: calls skip it.
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
        }
    }
}

/// One gateway or mediagate with a `host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub name: String,
    pub role: Role,
    /// Where checks go: the host over the client's transport (the port
    /// the router uses too).
    pub dest: Peer,
    /// Seconds between checks (0: none).
    pub qualify: u32,
    pub state: State,
    /// Round trip of the last answered check.
    pub rtt_ms: Option<u64>,
    /// Failed checks in a row.
    pub misses: u8,
    /// Wall-clock time (Unix ms) of the last state change, or of when the
    /// gateway came into the table (start, reload) while unknown.
    pub since_ms: u64,
    /// The check outstanding: when it was sent and its token.
    sent: Option<(Instant, u32)>,
    /// When the next check is due (the schedule entry that counts).
    due: Option<Instant>,
    id: u64,
}

/// A health-check OPTIONS to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    pub id: u64,
    pub token: u32,
    pub dest: Peer,
}

/// What an arriving response meant for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An answer from the gateway: it is alive (up).
    Alive,
    /// `503` from the gateway: a failed check.
    Unavailable,
    /// Not ours to count: unknown id, stale token, provisional, or from
    /// another address or transport than the gateway's.
    Ignored,
}

/// The health of every gateway and mediagate with a host.
#[derive(Debug, Default)]
pub struct Health {
    by_name: HashMap<String, Gateway>,
    /// Check id → gateway name.
    by_id: HashMap<u64, String>,
    /// Names of the gateways down now (the router's input).
    down: HashSet<String>,
    /// Schedule: (due, id); entries whose gateway is gone or was
    /// rescheduled are skipped when they come up.
    schedule: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
    changes: u64,
}

impl Health {
    /// A table for the gateways of `config`.
    pub fn new(config: &Config, now: Now) -> Health {
        let mut h = Health {
            next_id: 1,
            ..Health::default()
        };
        h.sync(config, now);
        h
    }

    /// Make the table follow `config` (at start and after a reload): new
    /// gateways come in unknown, removed ones go, a changed host or
    /// transport starts again, a changed `qualify` reschedules.
    pub fn sync(&mut self, config: &Config, now: Now) {
        // In sip.conf order: ids, and so the spread of first checks, do
        // not depend on hashing.
        let wanted: Vec<(&str, Role, Peer, u32)> = config
            .clients
            .iter()
            .filter(|c| c.role != Role::User)
            .filter_map(|c| {
                Some((
                    c.name.as_str(),
                    c.role,
                    host_peer(c)?,
                    c.qualify(&config.general),
                ))
            })
            .collect();
        let dest_of: HashMap<&str, Peer> = wanted.iter().map(|w| (w.0, w.2)).collect();
        let gone: Vec<String> = self
            .by_name
            .iter()
            .filter(|(n, g)| dest_of.get(n.as_str()) != Some(&g.dest))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.remove(&n);
        }
        for (name, role, dest, qualify) in wanted {
            if let Some(g) = self.by_name.get_mut(name) {
                g.role = role;
                if g.qualify != qualify {
                    g.qualify = qualify;
                    if qualify == 0 {
                        // Not checked any more: nothing to say about it.
                        if g.state != State::Unknown {
                            g.since_ms = now.unix_ms;
                        }
                        g.state = State::Unknown;
                        g.misses = 0;
                        g.sent = None;
                        g.due = None;
                        self.down.remove(name);
                    } else {
                        let due = now.at + first_check(g.id, qualify);
                        g.due = Some(due);
                        self.schedule.push(Reverse((due, g.id)));
                    }
                }
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let due = (qualify > 0).then(|| now.at + first_check(id, qualify));
            if let Some(due) = due {
                self.schedule.push(Reverse((due, id)));
            }
            self.by_id.insert(id, name.to_string());
            self.by_name.insert(
                name.to_string(),
                Gateway {
                    name: name.to_string(),
                    role,
                    dest,
                    qualify,
                    state: State::Unknown,
                    rtt_ms: None,
                    misses: 0,
                    since_ms: now.unix_ms,
                    sent: None,
                    due,
                    id,
                },
            );
        }
        if self.by_name.is_empty() {
            self.schedule.clear();
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(g) = self.by_name.remove(name) {
            self.by_id.remove(&g.id);
        }
        self.down.remove(name);
    }

    /// A gateway's health, by name.
    pub fn get(&self, name: &str) -> Option<&Gateway> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Names of the gateways and mediagates down now.
    pub fn down(&self) -> &HashSet<String> {
        &self.down
    }

    /// State changes since start (each gateway's first answer too).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// When the next check is due, if any.
    pub fn next_check(&self) -> Option<Instant> {
        self.schedule.peek().map(|Reverse((at, _))| *at)
    }

    /// Schedule entries (bounded by the gateways plus the entries replaced
    /// by reloads until they come up).
    pub fn scheduled(&self) -> usize {
        self.schedule.len()
    }

    /// Checks due by `now`, at most `budget`: a check still unanswered
    /// when the next is due is a failure, the [`MISSES_DOWN`]th in a row
    /// makes the gateway down. `token` makes each branch unguessable.
    pub fn due_pings(
        &mut self,
        now: Now,
        budget: usize,
        token: &mut dyn FnMut() -> u32,
    ) -> Vec<Ping> {
        let mut out = Vec::new();
        let mut looked = 0;
        while let Some(Reverse((due, id))) = self.schedule.peek().copied() {
            if due > now.at || out.len() >= budget || looked >= 4 * budget {
                break;
            }
            self.schedule.pop();
            looked += 1;
            let Some(name) = self.by_id.get(&id).cloned() else {
                continue;
            };
            let Some(g) = self.by_name.get_mut(&name) else {
                continue;
            };
            if g.due != Some(due) || g.qualify == 0 {
                continue;
            }
            if g.sent.take().is_some() {
                self.failed(&name, "no answer", now);
            }
            let Some(g) = self.by_name.get_mut(&name) else {
                continue;
            };
            let t = token();
            g.sent = Some((now.at, t));
            out.push(Ping {
                id,
                token: t,
                dest: g.dest,
            });
            let next = now.at + Duration::from_secs(u64::from(g.qualify));
            g.due = Some(next);
            self.schedule.push(Reverse((next, id)));
        }
        out
    }

    /// A response with status `code` to check `id`/`token` arrived from
    /// `from`.
    pub fn on_answer(&mut self, id: u64, token: u32, from: &Peer, code: u16, now: Now) -> Answer {
        let Some(name) = self.by_id.get(&id).cloned() else {
            return Answer::Ignored;
        };
        let Some(g) = self.by_name.get_mut(&name) else {
            return Answer::Ignored;
        };
        let Some((sent, t)) = g.sent else {
            return Answer::Ignored;
        };
        if t != token || !same_place(&g.dest, from) || code < 200 {
            return Answer::Ignored;
        }
        g.sent = None;
        if code == 503 {
            self.failed(&name, "503", now);
            return Answer::Unavailable;
        }
        g.misses = 0;
        g.rtt_ms = Some(now.at.saturating_duration_since(sent).as_millis() as u64);
        if g.state != State::Up {
            tracing::info!(
                gateway = %g.name,
                host = %g.dest,
                code,
                rtt_ms = g.rtt_ms,
                "gateway answers OPTIONS: up (was {})",
                g.state.as_str()
            );
            g.state = State::Up;
            g.since_ms = now.unix_ms;
            self.changes += 1;
            self.down.remove(&name);
        }
        Answer::Alive
    }

    /// One more failed check of `name`.
    fn failed(&mut self, name: &str, why: &str, now: Now) {
        let Some(g) = self.by_name.get_mut(name) else {
            return;
        };
        g.misses = g.misses.saturating_add(1);
        if g.misses >= MISSES_DOWN && g.state != State::Down {
            tracing::warn!(
                gateway = %g.name,
                host = %g.dest,
                last = why,
                "gateway failed {} OPTIONS checks in a row: down (was {}), calls skip it",
                g.misses,
                g.state.as_str()
            );
            g.state = State::Down;
            g.since_ms = now.unix_ms;
            self.changes += 1;
            self.down.insert(name.to_string());
        }
    }
}

/// Did a response come from where the check went: the same transport
/// and address (IPv4-mapped IPv6 sources as IPv4)?
fn same_place(dest: &Peer, from: &Peer) -> bool {
    dest.transport == from.transport && canonical(dest.addr) == canonical(from.addr)
}

/// Delay of a gateway's first check: spread over the interval by its id.
fn first_check(id: u64, qualify: u32) -> Duration {
    let span = u64::from(qualify.max(1)) * 1000;
    Duration::from_millis(id.wrapping_mul(2_654_435_761) % span)
}

/// The Request-URI of a check: the host, with its transport.
fn check_uri(dest: &Peer) -> String {
    let mut s = String::with_capacity(48);
    s.push_str("sip:");
    push_hostport(&mut s, dest.addr);
    match dest.transport {
        Transport::Udp => {}
        t => {
            s.push_str(";transport=");
            s.push_str(t.name());
        }
    }
    s
}

impl Core {
    /// The gateways' health table.
    pub fn gateways(&self) -> &Health {
        &self.gateways
    }

    /// Send the health-check OPTIONS that are due.
    pub(super) fn send_gateway_checks(&mut self, now: Now, fx: &mut Effects) {
        let rng = &mut self.rng;
        let mut token = || rng.next_u64() as u32;
        let pings = self.gateways.due_pings(now, PINGS_PER_TICK, &mut token);
        for p in pings {
            let mut local = String::with_capacity(48);
            push_hostport(&mut local, self.local.addr_for(&p.dest));
            let uri = check_uri(&p.dest);
            let branch = format!("{PING_PREFIX}{:x}.{:x}", p.id, p.token);
            let tag = self.rng.token();
            let call_id = format!("{}-gw", self.rng.token());
            let data = RequestBuilder::new(&Method::Options, &uri)
                .header(
                    HeaderName::Via,
                    &format!(
                        "SIP/2.0/{} {local};branch={branch};rport",
                        p.dest.transport.via_name()
                    ),
                )
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, &format!("<sip:sipd@{local}>;tag={tag}"))
                .header(HeaderName::To, &format!("<{uri}>"))
                .header(HeaderName::CallId, &call_id)
                .header(HeaderName::CSeq, "1 OPTIONS")
                .build();
            fx.out.push(Out::request(p.dest, data));
            self.counters.gateway_checks_sent += 1;
        }
    }

    /// Is this response the answer to one of our health checks? Then it
    /// is counted (and consumed) here.
    pub(super) fn on_gateway_response(&mut self, msg: &Message, from: &Peer, now: Now) -> bool {
        let Some(rest) = msg
            .top_via()
            .branch()
            .and_then(|b| b.strip_prefix(PING_PREFIX))
        else {
            return false;
        };
        if msg.cseq().method != Method::Options {
            return false;
        }
        let parsed = rest.split_once('.').and_then(|(id, token)| {
            Some((
                u64::from_str_radix(id, 16).ok()?,
                u32::from_str_radix(token, 16).ok()?,
            ))
        });
        if let (Some((id, token)), Some(code)) = (parsed, msg.status()) {
            if self.gateways.on_answer(id, token, from, code, now) == Answer::Alive {
                self.counters.gateway_checks_answered += 1;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
