//! RFC 3261 §17 transactions (with RFC 6026's Accepted state), sans-IO.
//!
//! [`Transactions`] owns every server and client transaction, matches
//! incoming requests and responses to them, retransmits over UDP and runs
//! timers A–M. It never decides routing: it tells its caller (the proxy)
//! what happened through return values and [`TxEvent`]s, and appends the
//! messages to send to an output list. Tables are bounded.

mod client;
mod server;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

/// Hash maps keyed by what peers send (branches): foldhash with a random
/// per-process seed, several times faster than SipHash on these short keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sip::{Message, Method};
use crate::transport::{Out, Peer, Transport};

pub use client::{ClientState, ClientTx};
pub use server::{ServerState, ServerTx};

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
pub const T4: Duration = Duration::from_secs(5);
/// 64*T1: timers B, F, H, J, L, M.
pub const T64: Duration = Duration::from_secs(32);
/// How long a finished transaction stays over UDP to absorb or pass on
/// retransmissions: timer J of a non-INVITE server transaction, timers L
/// and M of an INVITE after a 2xx (RFC 6026) and timer D after ACKing a
/// non-2xx. RFC 3261 says 64*T1 (32 s); like Kamailio's tm we wait 5 s: at
/// thousands of transactions per second the difference is hundreds of
/// megabytes. Later retransmissions of a non-INVITE request are processed
/// again; 2xx retransmissions later than this (the caller's ACK lost for
/// 5 s) are not forwarded.
pub const LINGER: Duration = T4;
/// Proxy INVITE timer C (RFC 3261 §16.6 item 11: more than 3 minutes).
pub const TIMER_C: Duration = Duration::from_secs(181);

pub type TxId = u64;

/// Who a client transaction works for: a proxy context and its branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub ctx: u64,
    pub branch: usize,
}

/// Bounds on what the network can make us hold.
#[derive(Clone, Debug)]
pub struct TxLimits {
    pub max_server: usize,
    pub max_client: usize,
    /// Open server transactions (see [`ServerTx::is_open`]) one source IP
    /// address may hold; beyond them its new requests get `503`. A static
    /// host is identified by its address alone (spoofable over UDP): this
    /// keeps one source from taking the whole table, and bounds the memory
    /// it can make us hold. CANCEL is not refused (it ends transactions).
    pub max_open_per_source: usize,
    /// Open server transactions from all sources together. An open INVITE
    /// proxied to a callee that does not answer holds about 9 KiB resident
    /// (its server and client transaction, proxy context and call: 7.1 KiB
    /// asked of the allocator, see `examples/txmem.rs`; 8.8 KiB of RSS per
    /// open INVITE in `bench/txflood`), so this bounds that state to about
    /// 210 MiB, and `max_open_per_source` one source to about 70 MiB.
    /// Finished transactions lingering for retransmissions hold about
    /// 1 KiB each and are bounded by `max_server`/`max_client` only.
    pub max_open: usize,
    /// Entries the tables hold before they first grow: a fresh server
    /// under load would otherwise rehash them (under the core lock)
    /// several times in its first seconds. The tables hold pointers, so
    /// this costs well under a megabyte per table.
    pub initial: usize,
}

impl TxLimits {
    pub const DEFAULT: TxLimits = TxLimits {
        max_server: 200_000,
        max_client: 200_000,
        max_open_per_source: 8_192,
        max_open: 24_576,
        initial: 16_384,
    };
}

impl Default for TxLimits {
    fn default() -> Self {
        TxLimits::DEFAULT
    }
}

/// What a client transaction reports to its owner.
#[derive(Debug)]
pub enum TxEvent {
    /// A 1xx (100 included) arrived.
    Provisional {
        owner: Owner,
        tx: TxId,
        msg: Message,
    },
    /// A final response to pass upstream: the first one, or a 2xx retransmission.
    Final {
        owner: Owner,
        tx: TxId,
        msg: Message,
    },
    /// Timer B/F (no final response at all) or a transport failure.
    Timeout {
        owner: Owner,
        tx: TxId,
        provisional: bool,
    },
    /// Timer C fired: the INVITE has been ringing too long.
    TimerC { owner: Owner, tx: TxId },
    /// The request could not be sent (a connection to the destination
    /// failed): RFC 3261 §16.9, as if it had answered 503.
    TransportError { owner: Owner, tx: TxId },
}

/// Server transaction key (RFC 3261 §17.2.3): branch + sent-by + method,
/// ACK mapped to INVITE. For requests without the RFC 3261 magic cookie a
/// key made from the RFC 2543 fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerKey {
    branch: Box<str>,
    /// Sent-by host and port of the top Via.
    host: crate::sip::Host,
    port: Option<u16>,
    /// The method, ACK counted as INVITE (no allocation for known methods).
    method: Method,
}

impl ServerKey {
    pub fn of(msg: &Message) -> ServerKey {
        let method = match msg.method() {
            Some(Method::Ack) => Method::Invite,
            Some(m) => m.clone(),
            None => Method::Other("".into()),
        };
        Self::with_method(msg, method)
    }

    /// The key of the INVITE transaction a CANCEL or ACK refers to.
    pub fn invite_of(msg: &Message) -> ServerKey {
        Self::with_method(msg, Method::Invite)
    }

    fn with_method(msg: &Message, method: Method) -> ServerKey {
        let via = msg.top_via();
        let (host, port) = (via.host.clone(), via.port);
        match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => ServerKey {
                branch: b.into(),
                host,
                port,
                method,
            },
            other => {
                // RFC 2543: Request-URI, From tag, Call-ID, CSeq number, top Via.
                // An ACK's Request-URI may differ from its INVITE's: INVITE
                // keys leave it out so that the two match.
                let ruri = if method == Method::Invite {
                    String::new()
                } else {
                    msg.request_uri().unwrap_or("").to_string()
                };
                let branch = format!(
                    "2543|{}|{}|{}|{}|{}",
                    ruri,
                    msg.from().tag().unwrap_or(""),
                    msg.call_id(),
                    msg.cseq().seq,
                    other.unwrap_or("")
                );
                ServerKey {
                    branch: branch.into(),
                    host,
                    port,
                    method,
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Server,
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A / E / G: retransmit.
    Retransmit,
    /// B / F: no final response.
    Timeout,
    /// C: proxy INVITE timer.
    C,
    /// D / H / I / J / K / L / M: leave the table.
    Terminate,
    /// 64*T1 after a CANCEL of this INVITE: give up waiting for its final
    /// response (RFC 3261 §9.1), instead of holding it until timer C.
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TimerEntry {
    at: Instant,
    side: Side,
    id: TxId,
    kind: TimerKind,
    /// Must equal the transaction's generation for that kind (else stale).
    gen: u32,
}

/// Where a response to a request from `peer` goes is decided by the caller;
/// this is only how long a transport needs timers.
pub(crate) fn reliable(t: Transport) -> bool {
    t.is_stream()
}

/// All transactions.
pub struct Transactions {
    next_id: TxId,
    /// Boxed: a table entry is then a pointer, so growing the table (a
    /// rehash, under the core lock) moves 16 bytes per transaction, not
    /// hundreds, and a reserved but empty table costs little memory.
    servers: HashMap<TxId, Box<ServerTx>>,
    server_keys: HashMap<ServerKey, TxId>,
    clients: HashMap<TxId, Box<ClientTx>>,
    /// (branch, is CANCEL) → id
    client_keys: HashMap<(Box<str>, bool), TxId>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    /// Open server transactions by source IP (entries with 0 removed),
    /// and in all.
    open_by_source: HashMap<IpAddr, u32>,
    open: usize,
    /// Requests refused because their source held too many open transactions.
    pub refused_per_source: u64,
    pub limits: TxLimits,
}

/// What an incoming request is, as far as transactions go.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestMatch {
    /// Not part of any transaction: create one (or, for ACK, forward it).
    New,
    /// A retransmission: the last response (if any) was sent again.
    Retransmission,
    /// The ACK for a non-2xx final response of an INVITE transaction: absorbed.
    AckAbsorbed,
}

impl Transactions {
    pub fn new(limits: TxLimits) -> Transactions {
        let s = limits.initial.min(limits.max_server);
        let c = limits.initial.min(limits.max_client);
        Transactions {
            next_id: 1,
            servers: HashMap::with_capacity_and_hasher(s, Default::default()),
            server_keys: HashMap::with_capacity_and_hasher(s, Default::default()),
            clients: HashMap::with_capacity_and_hasher(c, Default::default()),
            client_keys: HashMap::with_capacity_and_hasher(c, Default::default()),
            timers: BinaryHeap::with_capacity(4 * (s + c)),
            open_by_source: HashMap::default(),
            open: 0,
            refused_per_source: 0,
            limits,
        }
    }

    /// Open server transactions in all.
    pub fn open_count(&self) -> usize {
        self.open
    }

    /// Open server transactions of source `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open_by_source.get(&ip).map_or(0, |&n| n as usize)
    }

    /// Stop counting transaction `id` for its source once it is no longer
    /// open (after a final response or an ACK), or when it goes.
    fn settle(&mut self, id: TxId, gone: bool) {
        let Some(tx) = self.servers.get_mut(&id) else {
            return;
        };
        if tx.counted && (gone || !tx.is_open()) {
            tx.counted = false;
            self.open = self.open.saturating_sub(1);
            let ip = tx.peer.addr.ip();
            if let Some(n) = self.open_by_source.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.open_by_source.remove(&ip);
                }
            }
        }
    }

    fn id(&mut self) -> TxId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// How many transactions were ever created (a counter that only grows).
    pub fn created(&self) -> u64 {
        self.next_id - 1
    }

    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    fn schedule(&mut self, at: Instant, side: Side, id: TxId, kind: TimerKind, gen: u32) {
        self.timers.push(Reverse(TimerEntry {
            at,
            side,
            id,
            kind,
            gen,
        }));
    }

    /// Match a received request against the server transactions. For a
    /// retransmission the last response is sent again.
    pub fn match_request(
        &mut self,
        msg: &Message,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> RequestMatch {
        let key = ServerKey::of(msg);
        if msg.method() == Some(&Method::Ack) {
            if let Some(&id) = self.server_keys.get(&key) {
                if let Some(tx) = self.servers.get_mut(&id) {
                    if let Some((at, gen)) = tx.on_ack(now) {
                        self.schedule(at, Side::Server, id, TimerKind::Terminate, gen);
                        self.settle(id, false);
                        return RequestMatch::AckAbsorbed;
                    }
                    if tx.state() == ServerState::Confirmed {
                        return RequestMatch::AckAbsorbed;
                    }
                }
            }
            return RequestMatch::New;
        }
        match self
            .server_keys
            .get(&key)
            .and_then(|id| self.servers.get(id))
        {
            Some(tx) => {
                tx.retransmit_last(out);
                RequestMatch::Retransmission
            }
            None => RequestMatch::New,
        }
    }

    /// The INVITE server transaction a CANCEL refers to.
    pub fn invite_for_cancel(&self, cancel: &Message) -> Option<TxId> {
        let key = ServerKey::invite_of(cancel);
        self.server_keys.get(&key).copied()
    }

    /// Create a server transaction for a new request. `resp_dest` and
    /// `resp_via` say where responses go and the top Via they carry.
    /// `None` when the table is full (the caller answers 503 statelessly).
    pub fn create_server(
        &mut self,
        msg: Arc<Message>,
        peer: Peer,
        resp_dest: Peer,
        resp_via: String,
        to_tag: u64,
    ) -> Option<TxId> {
        let cancel = msg.method() == Some(&Method::Cancel);
        if self.servers.len() >= self.limits.max_server
            || (!cancel && self.open >= self.limits.max_open)
        {
            return None;
        }
        let ip = peer.addr.ip();
        // A CANCEL ends open transactions (and is answered at once): a
        // source at its limit may still send one.
        if !cancel && self.open_from(ip) >= self.limits.max_open_per_source {
            self.refused_per_source += 1;
            return None;
        }
        let id = self.id();
        let key = ServerKey::of(&msg);
        let mut tx = ServerTx::new(id, key.clone(), msg, peer, resp_dest, resp_via, to_tag);
        tx.counted = true;
        self.open += 1;
        *self.open_by_source.entry(ip).or_insert(0) += 1;
        self.server_keys.insert(key, id);
        self.servers.insert(id, Box::new(tx));
        Some(id)
    }

    pub fn server(&self, id: TxId) -> Option<&ServerTx> {
        self.servers.get(&id).map(|t| &**t)
    }

    pub fn server_mut(&mut self, id: TxId) -> Option<&mut ServerTx> {
        self.servers.get_mut(&id).map(|t| &mut **t)
    }

    /// Send a response (already built) through server transaction `id`.
    pub fn respond(
        &mut self,
        id: TxId,
        code: u16,
        data: Vec<u8>,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let Some(tx) = self.servers.get_mut(&id) else {
            return;
        };
        let timers = tx.send_response(code, data, now, out);
        for (at, kind, gen) in timers {
            self.schedule(at, Side::Server, id, kind, gen);
        }
        self.settle(id, false);
    }

    /// Build and send a response of our own through transaction `id`.
    pub fn reply(
        &mut self,
        id: TxId,
        code: u16,
        reason: &str,
        headers: &[(crate::sip::HeaderName, &str)],
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let Some(tx) = self.servers.get(&id) else {
            return;
        };
        let data = tx.build_response(code, reason, headers, None);
        self.respond(id, code, data, now, out);
    }

    /// Start a client transaction: send `data` (a request whose top Via
    /// carries `branch`) to `dest`. `None` when the table is full.
    #[allow(clippy::too_many_arguments)]
    pub fn create_client(
        &mut self,
        owner: Owner,
        branch: String,
        method: &Method,
        data: Vec<u8>,
        dest: Peer,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Option<TxId> {
        if self.clients.len() >= self.limits.max_client {
            return None;
        }
        let id = self.id();
        let cancel = *method == Method::Cancel;
        let (tx, timers) = ClientTx::start(id, owner, branch.clone(), method, data, dest, now, out);
        for (at, kind, gen) in timers {
            self.schedule(at, Side::Client, id, kind, gen);
        }
        self.client_keys.insert((branch.into(), cancel), id);
        self.clients.insert(id, Box::new(tx));
        Some(id)
    }

    pub fn client(&self, id: TxId) -> Option<&ClientTx> {
        self.clients.get(&id).map(|t| &**t)
    }

    /// Match a response to its client transaction and run the state machine.
    /// `None` for a stray or absorbed response.
    pub fn on_response(
        &mut self,
        msg: Message,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Option<TxEvent> {
        let branch = msg.top_via().branch()?;
        let cancel = msg.cseq().method == Method::Cancel;
        let id = *self.client_keys.get(&(Box::from(branch), cancel))?;
        let tx = self.clients.get_mut(&id)?;
        let (ev, timers) = tx.on_response(msg, now, out);
        for (at, kind, gen) in timers {
            self.schedule(at, Side::Client, id, kind, gen);
        }
        ev
    }

    /// The transport could not send the request of client transaction
    /// `id`: it ends now, and its owner hears why.
    pub fn on_transport_error(&mut self, id: TxId) -> Option<TxEvent> {
        let ev = self.clients.get_mut(&id)?.on_transport_error();
        if ev.is_some() {
            self.drop_client(id);
        }
        ev
    }

    /// A CANCEL was sent for INVITE client transaction `id`: if no final
    /// response comes within 64*T1, the transaction ends.
    pub fn cancelled(&mut self, id: TxId, now: Instant) {
        if self.clients.contains_key(&id) {
            self.schedule(now + T64, Side::Client, id, TimerKind::Cancelled, 0);
        }
    }

    /// When the earliest timer is due (stale entries included).
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(t)| t.at)
    }

    /// Stop retransmitting a client transaction and forget it (owner gone).
    pub fn drop_client(&mut self, id: TxId) {
        if let Some(tx) = self.clients.remove(&id) {
            self.client_keys
                .remove(&(tx.branch.as_str().into(), tx.is_cancel()));
        }
    }

    /// Forget a server transaction now (e.g. after a stateless-style answer over TCP).
    pub fn drop_server(&mut self, id: TxId) {
        self.settle(id, true);
        if let Some(tx) = self.servers.remove(&id) {
            self.server_keys.remove(&tx.key);
        }
    }

    /// Run due timers: retransmissions go to `out`, events are returned.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Out>) -> Vec<TxEvent> {
        let mut events = Vec::new();
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.at > now {
                break;
            }
            self.timers.pop();
            match t.side {
                Side::Server => {
                    let Some(tx) = self.servers.get_mut(&t.id) else {
                        continue;
                    };
                    match tx.on_timer(t.kind, t.gen, now, out) {
                        server::TimerOutcome::Nothing => {}
                        server::TimerOutcome::Again(at, gen) => {
                            self.schedule(at, Side::Server, t.id, t.kind, gen)
                        }
                        server::TimerOutcome::Terminate => self.drop_server(t.id),
                    }
                }
                Side::Client => {
                    let Some(tx) = self.clients.get_mut(&t.id) else {
                        continue;
                    };
                    let (outcome, ev) = tx.on_timer(t.kind, t.gen, now, out);
                    if let Some(ev) = ev {
                        events.push(ev);
                    }
                    match outcome {
                        client::TimerOutcome::Nothing => {}
                        client::TimerOutcome::Again(at, gen) => {
                            self.schedule(at, Side::Client, t.id, t.kind, gen)
                        }
                        client::TimerOutcome::Terminate => self.drop_client(t.id),
                    }
                }
            }
        }
        events
    }

    /// Give table memory back after a burst (a flood, a benchmark): a
    /// table holding less than a quarter of its capacity is rebuilt at
    /// twice its length (at least [`SHRINK_FLOOR`]). The tables start
    /// larger ([`TxLimits::initial`]) so that a fresh server does not
    /// rehash in its first seconds under load; after a burst a table that
    /// grew and emptied is all touched memory, which only a rebuild gives
    /// back. O(entries), so it is for a periodic sweep.
    pub fn shrink(&mut self) {
        shrink_map(&mut self.servers, SHRINK_FLOOR);
        shrink_map(&mut self.server_keys, SHRINK_FLOOR);
        shrink_map(&mut self.clients, SHRINK_FLOOR);
        shrink_map(&mut self.client_keys, SHRINK_FLOOR);
        shrink_map(&mut self.open_by_source, 0);
        shrink_heap(&mut self.timers, 4 * SHRINK_FLOOR);
    }

    /// Number of pending timer entries (for tests and status).
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }
}

/// Fewest entries a table is shrunk to.
pub const SHRINK_FLOOR: usize = 1024;

/// Rebuild `m` at twice its length (at least `floor`) when it holds less
/// than a quarter of its capacity: a fresh allocation, so that the memory
/// the emptied table had touched goes back to the allocator.
pub fn shrink_map<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher + Clone>(
    m: &mut std::collections::HashMap<K, V, S>,
    floor: usize,
) {
    let want = (2 * m.len()).max(floor);
    if m.capacity() > 2 * want {
        let mut fresh =
            std::collections::HashMap::with_capacity_and_hasher(want, m.hasher().clone());
        fresh.extend(m.drain());
        *m = fresh;
    }
}

/// [`shrink_map`] for a timer heap (not `shrink_to`: a `realloc` copies
/// the whole new capacity, touching memory a mostly empty heap never needs).
pub fn shrink_heap<T: Ord>(h: &mut BinaryHeap<T>, floor: usize) {
    let want = (2 * h.len()).max(floor);
    if h.capacity() > 2 * want {
        let old = std::mem::take(h).into_vec();
        let mut fresh = Vec::with_capacity(want);
        fresh.extend(old);
        // Still in heap order: `from` re-heapifies in O(n) anyway.
        *h = BinaryHeap::from(fresh);
    }
}

#[cfg(test)]
mod tests;
