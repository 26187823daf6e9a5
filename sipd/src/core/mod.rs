//! The core: all SIP state (configuration, registrations, transactions,
//! proxy contexts, calls, forwarding) behind one owner. It is sans-IO: the
//! server hands it a parsed message with the peer it came from and the time
//! ([`Now`]), and it returns what to do as [`Effects`]: messages to send,
//! store writes, and writes whose commit an answer waits for. It reads no
//! clock, touches no socket, store or runtime, so every rule is testable
//! without sockets (`core/tests/`).
//!
//! Request flow: transaction matching (retransmissions absorbed) → ACK and
//! CANCEL special cases → in-dialog routing, REGISTER, OPTIONS for us, or
//! identification + routing + proxying (`proxy/`).

mod bans;
mod cluster;
mod counts;
mod defence;
mod effects;
mod forwarding;
pub mod gateways;
mod identify;
mod keepalive;
mod local;
mod media;
mod pbx;
mod proxy;
mod register;
mod reply;
mod retention;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::DigestAuth;
use crate::calls::Calls;
use crate::config::Config;
use crate::registrar::Registrar;
use crate::routing::forwards::Forwards;
use crate::sip::{HeaderName, Message, Method, Uri};
use crate::store::{Loaded, Write};
use crate::time::Now;
use crate::transaction::{RequestMatch, Transactions, TxId, TxLimits};
use crate::transport::Peer;

pub use crate::rng::Rng;
pub use counts::MessageCounts;
pub use defence::{Ban, Reason as BanReason};
pub use effects::{Effects, SecurityEvent};
pub use local::Local;
pub use reply::{response_dest, via_with_received};

/// Methods sipd knows (sent in `Allow`).
pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, REFER, NOTIFY, SUBSCRIBE, MESSAGE";
/// Extensions sipd supports (sent in `Supported`).
pub const SUPPORTED: &str = "replaces, outbound";
/// Server header value.
pub const SERVER: &str = concat!("sipd/", env!("CARGO_PKG_VERSION"));

/// Message counters shown by `sipctl status`.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub requests_in: u64,
    pub responses_in: u64,
    pub malformed: u64,
    pub retransmissions: u64,
    pub replies_sent: u64,
    pub auth_failures: u64,
    pub registrations: u64,
    pub calls_started: u64,
    pub overload: u64,
    /// Requests whose TCP connection could not be (re)opened.
    pub send_failures: u64,
    /// Calls refused because their caller had `call_limit` calls already.
    pub call_limit: u64,
    /// In-dialog requests refused: not from the dialog's ends, or naming
    /// another target or route than the dialog's.
    pub dialog_refused: u64,
    /// Keep-alive OPTIONS sent to UDP bindings, and answers counted.
    pub keepalives_sent: u64,
    pub keepalives_answered: u64,
    /// Bans put in the table (floods and brute-force locks).
    pub bans: u64,
    /// Requests dropped unanswered because their source is banned.
    pub banned_dropped: u64,
    /// Received requests by method, responses by class (for metrics).
    pub received: MessageCounts,
    /// Health-check OPTIONS sent to gateways and mediagates, and answers
    /// counted (`503` is not one).
    pub gateway_checks_sent: u64,
    pub gateway_checks_answered: u64,
    /// Calls whose media was relayed (sessions opened), since start.
    pub media_sessions: u64,
    /// Relayed streams that went direct because no relay port was free.
    pub media_no_ports: u64,
    /// Relay ports that could not be bound (taken out of service).
    pub media_bind_failures: u64,
    /// Answered calls hung up for `media_timeout` without packets.
    pub media_timeouts: u64,
}

/// Timer of a proxy context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum CtxTimer {
    /// The ringing branch did not answer within `noanswer`.
    NoAnswer,
    /// An INVITE branch got no response at all (not even 100) in time.
    NoResponse,
    /// A CANCEL got no final response from downstream: answer 487 ourselves.
    CancelGuard,
    /// Forget the context.
    Cleanup,
}

pub struct Core {
    config: Arc<Config>,
    local: Local,
    rng: Rng,
    pub counters: Counters,
    txns: Transactions,
    auth: DigestAuth,
    registrar: Registrar,
    /// Gateway and mediagate health checks.
    gateways: gateways::Health,
    /// The configuration changed since `gateways` last followed it.
    gateways_stale: bool,
    forwards: Forwards,
    calls: Calls,
    /// Boxed, like the transactions: cheap to move in and out and to rehash.
    ctxs: HashMap<u64, Box<proxy::Ctx>>,
    next_ctx: u64,
    ctx_timers: BinaryHeap<Reverse<(Instant, u64, usize, CtxTimer)>>,
    next_sweep: Instant,
    /// Feature answers waiting for a store commit, by token.
    deferred: HashMap<u64, pbx::Deferred>,
    /// Forwarding writes waiting for the store, by client.
    fwd_pending: HashMap<String, forwarding::PendingFwd>,
    next_token: u64,
    guard: identify::Guard,
    /// Flood counters and the ban table.
    defence: defence::Defence,
    /// When to ask the store to prune old CDRs next; `None`: at the next tick.
    next_prune: Option<Instant>,
    /// Relay ports (`rtp_ports=`), the next relay session id, and the call
    /// of each session.
    ports: crate::media::ports::Ports,
    next_media: u64,
    media_calls: HashMap<u64, String>,
    /// The other nodes on the PostgreSQL store, by name, as their last
    /// heartbeats show them (empty with SQLite).
    nodes: HashMap<String, crate::store::postgres::NodeInfo>,
}

/// Tunables of the core.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// Lifetime of digest nonces.
    pub nonce_lifetime: Duration,
    /// Key of the nonce MACs (random per process).
    pub auth_key: [u8; 32],
    /// Seed of the tag/branch generator.
    pub seed: u64,
    /// Bounds of the transaction tables.
    pub tx_limits: TxLimits,
    /// Most calls tracked at once.
    pub max_calls: usize,
}

impl Default for CoreOptions {
    /// Production defaults with a fresh random key and seed.
    fn default() -> Self {
        let mut key = [0u8; 32];
        crate::rng::fill_random(&mut key);
        let mut seed = [0u8; 8];
        crate::rng::fill_random(&mut seed);
        CoreOptions {
            nonce_lifetime: crate::auth::DEFAULT_NONCE_LIFETIME,
            auth_key: key,
            seed: u64::from_le_bytes(seed),
            tx_limits: TxLimits::default(),
            max_calls: 100_000,
        }
    }
}

impl Core {
    /// A core with this configuration and what the store loaded (bindings
    /// restored with their remaining lifetime, forwarding overrides).
    pub fn new(
        config: Arc<Config>,
        mut local: Local,
        loaded: Option<&Loaded>,
        opts: CoreOptions,
        now: Now,
    ) -> Core {
        local.set_realm(&config.general.realm);
        let mut registrar = Registrar::new();
        let mut forwards = Forwards::default();
        if let Some(loaded) = loaded {
            let n = registrar.restore(&loaded.bindings, &config, now.at, now.unix());
            if n > 0 {
                tracing::info!("restored {n} registrations from the store");
            }
            forwards = Forwards::from_rows(&loaded.forwards);
        }
        let gateways = gateways::Health::new(&config, now);
        let ports = crate::media::ports::Ports::new(config.general.rtp_ports);
        Core {
            config,
            local,
            rng: Rng::seeded(opts.seed),
            counters: Counters::default(),
            txns: Transactions::new(opts.tx_limits.clone()),
            auth: DigestAuth::new(
                opts.auth_key,
                opts.nonce_lifetime,
                crate::auth::DEFAULT_CAPACITY,
            ),
            registrar,
            gateways,
            gateways_stale: false,
            forwards,
            calls: Calls::new(opts.max_calls),
            // Sized like the transaction tables (see TxLimits::initial).
            ctxs: HashMap::with_capacity(opts.tx_limits.initial.min(opts.tx_limits.max_server)),
            next_ctx: 1,
            ctx_timers: BinaryHeap::with_capacity(
                2 * opts.tx_limits.initial.min(opts.tx_limits.max_server),
            ),
            next_sweep: now.at,
            deferred: HashMap::new(),
            fwd_pending: HashMap::new(),
            next_token: 1,
            guard: identify::Guard::new(),
            defence: defence::Defence::new(),
            next_prune: None,
            ports,
            next_media: 1,
            media_calls: HashMap::new(),
            nodes: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn local(&self) -> &Local {
        &self.local
    }

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    pub fn forwards(&self) -> &Forwards {
        &self.forwards
    }

    pub fn forwards_mut(&mut self) -> &mut Forwards {
        &mut self.forwards
    }

    pub fn transaction_count(&self) -> usize {
        self.txns.server_count() + self.txns.client_count()
    }

    /// Proxy contexts alive (including finished ones lingering).
    pub fn context_count(&self) -> usize {
        self.ctxs.len()
    }

    /// Give table memory back after a burst (periodic, from the server):
    /// transaction tables, proxy contexts and their timers, and calls
    /// shrink when far below their capacity.
    pub fn shrink_tables(&mut self) {
        use crate::transaction::{shrink_heap, shrink_map, SHRINK_FLOOR};
        self.txns.shrink();
        shrink_map(&mut self.ctxs, SHRINK_FLOOR);
        shrink_heap(&mut self.ctx_timers, 2 * SHRINK_FLOOR);
        self.calls.shrink();
    }

    /// Requests refused with 503 because their source held too many open
    /// transactions.
    pub fn refused_per_source(&self) -> u64 {
        self.txns.refused_per_source
    }

    /// Feature answers waiting for the store.
    pub fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    /// The earliest pending timer, if any (tests jump time to it).
    pub fn next_timer(&self) -> Option<Instant> {
        let check = self.gateways.next_check();
        [self.next_timer_but_checks(), check]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest pending timer other than the gateway health checks
    /// (those go on for as long as a gateway has a host and a qualify).
    pub fn next_timer_but_checks(&self) -> Option<Instant> {
        let ctx = self.ctx_timers.peek().map(|Reverse((at, ..))| *at);
        let tx = self.txns.next_timer();
        let ping = self.registrar.next_ping();
        [ctx, tx, ping].into_iter().flatten().min()
    }

    /// Install a new configuration (after a successful reload): bindings and
    /// forwarding overrides of removed clients go, from the store too (else
    /// a restart would bring back what the reload dropped); calls keep going;
    /// the gateway health table follows the new gateways at the next tick
    /// (`gateways.rs`; it needs the time).
    pub fn set_config(&mut self, config: Arc<Config>, fx: &mut Effects) {
        self.gateways_stale = true;
        for name in self.registrar.retain_clients(&config) {
            fx.write(Write::DeleteBinding(name));
        }
        self.forwarding_retain_clients(&config, fx);
        if config.general.cdr_keep_days != self.config.general.cdr_keep_days {
            self.next_prune = None;
        }
        self.local.set_realm(&config.general.realm);
        self.ports.set_range(config.general.rtp_ports);
        self.config = config;
    }

    /// Handle one parsed message from `peer`.
    pub fn on_message(&mut self, msg: Message, peer: Peer, now: Now, fx: &mut Effects) {
        if let Some(flow) = peer.flow {
            // A TCP flow from a static host is trusted (kept open).
            let from_host = self
                .config
                .by_source(peer.addr)
                .is_some_and(|c| c.permits(peer.addr.ip()));
            if from_host {
                fx.trust(flow);
            }
        }
        if msg.is_request() {
            self.on_request(msg, peer, now, fx);
        } else {
            self.counters.responses_in += 1;
            self.counters.received.response(msg.status());
            if self.on_keepalive_response(&msg, peer.addr, now) {
                return;
            }
            if self.on_gateway_response(&msg, &peer, now) {
                return;
            }
            if let Some(ev) = self.txns.on_response(msg, now.at, &mut fx.out) {
                self.on_tx_event(ev, now, fx);
            }
        }
    }

    /// A request of client transaction `tx` could not be sent (its TCP
    /// flow was gone and a new connection failed): the branch fails now.
    pub fn on_send_failed(&mut self, tx: u64, now: Now, fx: &mut Effects) {
        self.counters.send_failures += 1;
        if let Some(ev) = self.txns.on_transport_error(tx) {
            self.on_tx_event(ev, now, fx);
        }
    }

    fn on_request(&mut self, msg: Message, peer: Peer, now: Now, fx: &mut Effects) {
        self.counters.requests_in += 1;
        self.counters.received.request(msg.method());
        if self.flood_drop(&msg, peer, now, fx) {
            return;
        }
        match self.txns.match_request(&msg, now.at, &mut fx.out) {
            RequestMatch::New => {}
            RequestMatch::Retransmission | RequestMatch::AckAbsorbed => {
                self.counters.retransmissions += 1;
                return;
            }
        }
        let method = msg.method().cloned().unwrap_or(Method::Other("".into()));
        if method == Method::Ack {
            self.forward_ack(msg, peer, fx);
            return;
        }
        let for_me = method == Method::Options && self.is_for_me(&msg);
        if msg.max_forwards() == Some(0) && !for_me {
            self.reply_stateless(&msg, peer, 483, "Too Many Hops", &[], fx);
            return;
        }
        if method == Method::Cancel {
            self.on_cancel(msg, peer, now, fx);
            return;
        }
        let msg = Arc::new(msg);
        if msg.to().tag().is_some() {
            let Some(id) = self.new_server_tx(&msg, peer, now, fx) else {
                return;
            };
            self.in_dialog(id, msg, peer, now, fx);
            return;
        }
        match method {
            Method::Options if for_me => {
                let Some(id) = self.new_server_tx(&msg, peer, now, fx) else {
                    return;
                };
                let headers = [
                    (HeaderName::Allow, ALLOW),
                    (HeaderName::Supported, SUPPORTED),
                    (HeaderName::Accept, "application/sdp"),
                ];
                self.txns
                    .reply(id, 200, "OK", &headers, now.at, &mut fx.out);
            }
            // Identification comes first: rejected requests (challenges,
            // 403) are answered statelessly and leave no transaction.
            Method::Register => {
                let before = self.txns.created();
                self.on_register(msg, peer, now, fx);
                self.trust_if_identified(peer, before, fx);
            }
            Method::Other(_) => {
                self.reply_stateless(
                    &msg,
                    peer,
                    501,
                    "Not Implemented",
                    &[(HeaderName::Allow, ALLOW)],
                    fx,
                );
            }
            _ => {
                let before = self.txns.created();
                self.out_of_dialog(msg, peer, now, fx);
                self.trust_if_identified(peer, before, fx);
            }
        }
    }

    /// A REGISTER or out-of-dialog request that made a transaction passed
    /// identification (rejected ones leave none, see above): its TCP flow
    /// carried an authenticated request and is trusted.
    fn trust_if_identified(&self, peer: Peer, created_before: u64, fx: &mut Effects) {
        if let Some(flow) = peer.flow {
            if self.txns.created() != created_before {
                fx.trust(flow);
            }
        }
    }

    /// A server transaction for a request we will handle (100 Trying at
    /// once for INVITE); `None` after answering 503 when the table is full.
    pub(super) fn new_server_tx(
        &mut self,
        msg: &Arc<Message>,
        peer: Peer,
        now: Now,
        fx: &mut Effects,
    ) -> Option<TxId> {
        let resp_via = via_with_received(msg.top_via(), &peer);
        let resp_dest = response_dest(msg.top_via(), &peer);
        let tag = self.rng.next_u64();
        let Some(id) = self
            .txns
            .create_server(msg.clone(), peer, resp_dest, resp_via, tag)
        else {
            self.counters.overload += 1;
            self.reply_stateless(
                msg,
                peer,
                503,
                "Service Unavailable",
                &[(HeaderName::RetryAfter, "5")],
                fx,
            );
            return None;
        };
        if msg.method() == Some(&Method::Invite) {
            self.txns.reply(id, 100, "Trying", &[], now.at, &mut fx.out);
        }
        Some(id)
    }

    /// Timers: transactions, proxy contexts, registration expiry, old
    /// calls, CDR retention.
    pub fn on_tick(&mut self, now: Now, fx: &mut Effects) {
        for ev in self.txns.on_tick(now.at, &mut fx.out) {
            self.on_tx_event(ev, now, fx);
        }
        while let Some(Reverse((at, ctx, branch, kind))) = self.ctx_timers.peek().copied() {
            if at > now.at {
                break;
            }
            self.ctx_timers.pop();
            self.on_ctx_timer(ctx, branch, kind, now, fx);
        }
        if now.at >= self.next_sweep {
            self.next_sweep = now.at + Duration::from_secs(1);
            for name in self.registrar.sweep(now.at) {
                tracing::debug!("a registration of {name} expired");
                let left = self.registrar.of(&name);
                if left.is_empty() {
                    fx.write(Write::DeleteBinding(name));
                } else {
                    let rows = left.iter().map(|b| b.to_row()).collect();
                    fx.write(Write::PutBindings(name, rows));
                }
            }
            self.auth.purge(now.system());
            self.guard.sweep(now.at);
            self.expire_bans(now, fx);
            for call_id in self.calls.overdue(now.at) {
                self.end_overdue_call(&call_id, now, fx);
            }
        }
        self.send_keepalives(now, fx);
        if std::mem::take(&mut self.gateways_stale) {
            self.gateways.sync(&self.config, now);
        }
        self.send_gateway_checks(now, fx);
        self.prune_cdrs_when_due(now, fx);
    }

    /// OPTIONS addressed to sipd itself: a Request-URI without a user part
    /// naming one of our addresses or names.
    fn is_for_me(&self, msg: &Message) -> bool {
        if msg.to().tag().is_some() {
            return false;
        }
        let Some(uri) = msg.request_uri().and_then(|u| Uri::parse(u).ok()) else {
            return false;
        };
        uri.user.is_none() && self.local.is_me(&uri.host, uri.port)
    }

    /// Answer a request without a transaction (ACK-less errors, overload).
    fn reply_stateless(
        &mut self,
        req: &Message,
        peer: Peer,
        code: u16,
        reason: &str,
        headers: &[(HeaderName, &str)],
        fx: &mut Effects,
    ) {
        let tag = self.rng.token();
        fx.out
            .push(reply::build(req, peer, code, reason, &tag, headers));
        self.counters.replies_sent += 1;
    }

    /// A fresh token for a deferred answer.
    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }
}

#[cfg(test)]
mod tests;
