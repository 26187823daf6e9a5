//! The core: all SIP state (configuration, and later registrations,
//! transactions, calls) behind one owner. It is sans-IO: the server hands it
//! a parsed message with the peer it came from, and it appends the messages
//! to send to an output list. Time comes in as an argument, so every rule is
//! testable without sockets.

mod local;
mod reply;

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::sip::{HeaderName, Message, Method};
use crate::transport::{Out, Peer};

pub use local::Local;
pub use reply::{response_dest, via_with_received};

/// Methods sipd knows (sent in `Allow`).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, REFER, NOTIFY, SUBSCRIBE, MESSAGE";
/// Extensions sipd supports (sent in `Supported`).
pub const SUPPORTED: &str = "path, replaces";

/// Message counters shown by `sipctl status`.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub requests_in: u64,
    pub responses_in: u64,
    pub malformed: u64,
    pub replies_sent: u64,
}

pub struct Core {
    config: Arc<Config>,
    local: Local,
    rng: Rng,
    pub counters: Counters,
}

impl Core {
    pub fn new(config: Arc<Config>, local: Local) -> Core {
        Core {
            config,
            local,
            rng: Rng::new(),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Install a new configuration (after a successful reload).
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.config = config;
    }

    pub fn local(&self) -> &Local {
        &self.local
    }

    /// Handle one parsed message from `peer`.
    pub fn on_message(&mut self, msg: Message, peer: Peer, now: Instant, out: &mut Vec<Out>) {
        let _ = now;
        if !msg.is_request() {
            // No client transactions yet: a response is stray; drop it.
            self.counters.responses_in += 1;
            return;
        }
        self.counters.requests_in += 1;
        let Some(method) = msg.method().cloned() else {
            return;
        };
        match method {
            // ACK is never answered.
            Method::Ack => {}
            Method::Options if self.is_for_me(&msg) => {
                self.reply(
                    &msg,
                    peer,
                    200,
                    "OK",
                    &[
                        (HeaderName::Allow, ALLOW),
                        (HeaderName::Supported, SUPPORTED),
                        (HeaderName::Accept, "application/sdp"),
                    ],
                    out,
                );
            }
            _ if msg.max_forwards() == Some(0) => {
                self.reply(&msg, peer, 483, "Too Many Hops", &[], out);
            }
            Method::Cancel => {
                self.reply(&msg, peer, 481, "Call/Transaction Does Not Exist", &[], out);
            }
            Method::Other(_) => {
                self.reply(
                    &msg,
                    peer,
                    501,
                    "Not Implemented",
                    &[(HeaderName::Allow, ALLOW)],
                    out,
                );
            }
            _ => {
                self.reply(&msg, peer, 404, "Not Found", &[], out);
            }
        }
    }

    /// Timers (none yet).
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Out>) {
        let _ = (now, out);
    }

    /// OPTIONS addressed to sipd itself: a Request-URI without user naming one
    /// of our addresses or names, or any OPTIONS with Max-Forwards 0.
    fn is_for_me(&self, msg: &Message) -> bool {
        if msg.max_forwards() == Some(0) {
            return true;
        }
        let Some(uri) = msg
            .request_uri()
            .and_then(|u| crate::sip::Uri::parse(u).ok())
        else {
            return false;
        };
        uri.user.is_none() && self.local.is_me(&uri.host, uri.port)
    }

    /// Answer a request statelessly.
    fn reply(
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
            let t = std::time::SystemTime::now()
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
