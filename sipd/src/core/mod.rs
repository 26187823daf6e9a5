//! The core: all SIP state (configuration, registrations, transactions,
//! proxy contexts, calls, forwarding) behind one owner. It is sans-IO: the
//! server hands it a parsed message with the peer it came from, and it
//! appends the messages to send to an output list. Time comes in as an
//! argument, so every rule is testable without sockets.
//!
//! Request flow: transaction matching (retransmissions absorbed) → ACK and
//! CANCEL special cases → server transaction (100 Trying for INVITE) →
//! in-dialog routing, REGISTER, or identification + routing + proxying.

mod identify;
mod local;
mod pbx;
mod proxy;
mod register;
mod reply;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::auth::DigestAuth;
use crate::calls::Calls;
use crate::config::Config;
use crate::forwards::Forwards;
use crate::registrar::Registrar;
use crate::sip::{HeaderName, Message, Method, Uri};
use crate::store::{Loaded, Store};
use crate::transaction::{RequestMatch, Transactions, TxId, TxLimits};
use crate::transport::{Out, Peer};

pub use local::Local;
pub use pbx::{Deferred, Pending};
pub use reply::{response_dest, via_with_received};

/// Methods sipd knows (sent in `Allow`).
pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, REFER, NOTIFY, SUBSCRIBE, MESSAGE";
/// Extensions sipd supports (sent in `Supported`).
pub const SUPPORTED: &str = "replaces";
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
    forwards: Forwards,
    calls: Calls,
    ctxs: HashMap<u64, proxy::Ctx>,
    next_ctx: u64,
    ctx_timers: BinaryHeap<Reverse<(Instant, u64, usize, CtxTimer)>>,
    store: Option<Arc<Store>>,
    next_sweep: Instant,
    pending: Vec<Pending>,
    guard: identify::Guard,
}

/// Tunables of the core.
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// Lifetime of digest nonces.
    pub nonce_lifetime: Duration,
}

impl Default for CoreOptions {
    fn default() -> Self {
        CoreOptions {
            nonce_lifetime: crate::auth::DEFAULT_NONCE_LIFETIME,
        }
    }
}

impl Core {
    /// A core with this configuration; `store` (with what it loaded) when
    /// persistence is wanted.
    pub fn new(
        config: Arc<Config>,
        local: Local,
        store: Option<(Arc<Store>, Loaded)>,
        opts: CoreOptions,
    ) -> Core {
        let now = Instant::now();
        let mut registrar = Registrar::new();
        let mut forwards = Forwards::default();
        let store = store.map(|(s, loaded)| {
            let n = registrar.restore(&loaded.bindings, &config, now, crate::registrar::unix_now());
            if n > 0 {
                tracing::info!("restored {n} registrations from the store");
            }
            forwards = Forwards::from_rows(&loaded.forwards);
            s
        });
        Core {
            config,
            local,
            rng: Rng::new(),
            counters: Counters::default(),
            txns: Transactions::new(TxLimits::default()),
            auth: DigestAuth::with_random_key(opts.nonce_lifetime, crate::auth::DEFAULT_CAPACITY),
            registrar,
            forwards,
            calls: Calls::new(100_000),
            ctxs: HashMap::new(),
            next_ctx: 1,
            ctx_timers: BinaryHeap::new(),
            store,
            next_sweep: now,
            pending: Vec::new(),
            guard: identify::Guard::new(),
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

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    pub fn transaction_count(&self) -> usize {
        self.txns.server_count() + self.txns.client_count()
    }

    /// Install a new configuration (after a successful reload): bindings and
    /// forwarding overrides of removed clients go; calls keep going.
    pub fn set_config(&mut self, config: Arc<Config>) {
        for name in self.registrar.retain_clients(&config) {
            if let Some(s) = &self.store {
                s.delete_binding(&name);
            }
        }
        self.forwards.retain_clients(&config);
        self.local
            .set_names(vec![config.general.realm.clone(), crate::cli::hostname()]);
        self.config = config;
    }

    /// Handle one parsed message from `peer`.
    pub fn on_message(&mut self, msg: Message, peer: Peer, now: Instant, out: &mut Vec<Out>) {
        if msg.is_request() {
            self.on_request(msg, peer, now, out);
        } else {
            self.counters.responses_in += 1;
            if let Some(ev) = self.txns.on_response(msg, now, out) {
                self.on_tx_event(ev, now, out);
            }
        }
    }

    fn on_request(&mut self, msg: Message, peer: Peer, now: Instant, out: &mut Vec<Out>) {
        self.counters.requests_in += 1;
        match self.txns.match_request(&msg, now, out) {
            RequestMatch::New => {}
            RequestMatch::Retransmission | RequestMatch::AckAbsorbed => {
                self.counters.retransmissions += 1;
                return;
            }
        }
        let method = msg.method().cloned().unwrap_or(Method::Other("".into()));
        if method == Method::Ack {
            self.forward_ack(msg, peer, now, out);
            return;
        }
        if msg.max_forwards() == Some(0) && !(method == Method::Options && self.is_for_me(&msg)) {
            self.reply_stateless(&msg, peer, 483, "Too Many Hops", &[], out);
            return;
        }
        if method == Method::Cancel {
            self.on_cancel(msg, peer, now, out);
            return;
        }
        let msg = Arc::new(msg);
        if msg.to().tag().is_some() {
            let Some(id) = self.new_server_tx(&msg, peer, now, out) else {
                return;
            };
            self.in_dialog(id, msg, peer, now, out);
            return;
        }
        match method {
            Method::Options if self.is_for_me(&msg) => {
                let Some(id) = self.new_server_tx(&msg, peer, now, out) else {
                    return;
                };
                let headers = [
                    (HeaderName::Allow, ALLOW),
                    (HeaderName::Supported, SUPPORTED),
                    (HeaderName::Accept, "application/sdp"),
                ];
                self.txns.reply(id, 200, "OK", &headers, now, out);
            }
            // Identification comes first: rejected requests (challenges,
            // 403) are answered statelessly and leave no transaction.
            Method::Register => self.on_register(msg, peer, now, out),
            Method::Other(_) => {
                self.reply_stateless(
                    &msg,
                    peer,
                    501,
                    "Not Implemented",
                    &[(HeaderName::Allow, ALLOW)],
                    out,
                );
            }
            _ => self.out_of_dialog(msg, peer, now, out),
        }
    }

    /// A server transaction for a request we will handle (100 Trying at
    /// once for INVITE); `None` after answering 503 when the table is full.
    pub(super) fn new_server_tx(
        &mut self,
        msg: &Arc<Message>,
        peer: Peer,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Option<TxId> {
        let resp_via = via_with_received(msg.top_via(), &peer);
        let resp_dest = response_dest(msg.top_via(), &peer);
        let tag = self.rng.token();
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
                out,
            );
            return None;
        };
        if msg.method() == Some(&Method::Invite) {
            self.txns.reply(id, 100, "Trying", &[], now, out);
        }
        Some(id)
    }

    /// Timers: transactions, proxy contexts, registration expiry, old calls.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Out>) {
        for ev in self.txns.on_tick(now, out) {
            self.on_tx_event(ev, now, out);
        }
        while let Some(Reverse((at, ctx, branch, kind))) = self.ctx_timers.peek().copied() {
            if at > now {
                break;
            }
            self.ctx_timers.pop();
            self.on_ctx_timer(ctx, branch, kind, now, out);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + Duration::from_secs(1);
            for name in self.registrar.sweep(now) {
                tracing::debug!("registration of {name} expired");
                if let Some(s) = &self.store {
                    s.delete_binding(&name);
                }
            }
            self.auth.purge(SystemTime::now());
            self.guard.sweep(now);
            for call_id in self.calls.overdue(now) {
                let answered = self
                    .calls
                    .get(&call_id)
                    .is_some_and(|c| c.state == crate::calls::State::Answered);
                let (disp, code) = if answered {
                    (crate::calls::Disposition::Answered, 200)
                } else {
                    (crate::calls::Disposition::Failed, 408)
                };
                self.end_call(&call_id, disp, code, out, now);
            }
        }
    }

    /// OPTIONS addressed to sipd itself: a Request-URI without user naming one
    /// of our addresses or names, or any OPTIONS with Max-Forwards 0.
    fn is_for_me(&self, msg: &Message) -> bool {
        if msg.to().tag().is_some() {
            return false;
        }
        if msg.max_forwards() == Some(0) {
            return true;
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
        out: &mut Vec<Out>,
    ) {
        let tag = self.rng.token();
        out.push(reply::build(req, peer, code, reason, &tag, headers));
        self.counters.replies_sent += 1;
    }
}

/// Small fast PRNG (xorshift64*) seeded from the OS, for tags and branches.
/// Not for secrets: nonces use a keyed hash (auth.rs).
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            let t = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
            seed = (t ^ u64::from(std::process::id())).to_le_bytes();
        }
        Rng(u64::from_le_bytes(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 16 hex digits.
    pub fn token(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
