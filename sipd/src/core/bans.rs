//! The core's side of flood defence, the ban table and the security log
//! (see `defence.rs` for the rules and bounds): requests from banned
//! sources are dropped unanswered, out-of-dialog requests are counted per
//! source, the brute-force guard's locks are listed, and every security
//! event goes out as an effect for the security log.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::defence::{Ban, Reason, REGISTERED_FACTOR};
use super::effects::SecurityEvent;
use super::{Core, Effects};
use crate::auth::guard::Locks;
use crate::sip::Message;
use crate::time::Now;
use crate::transport::{Peer, Transport};

impl Core {
    /// Drop this request? True for a source banned for flooding (checked
    /// again here: the server's own drop list may lag by one batch), and
    /// for the out-of-dialog request that takes a source over its limit.
    pub(super) fn flood_drop(
        &mut self,
        msg: &Message,
        peer: Peer,
        now: Now,
        fx: &mut Effects,
    ) -> bool {
        let ip = peer.addr.ip().to_canonical();
        if self.defence.is_dropped(ip, now.at) {
            self.counters.banned_dropped += 1;
            return true;
        }
        if msg.to().tag().is_some() {
            return false;
        }
        let (limit, secs) = self.config.general.flood;
        if limit == 0 || self.config.is_host_ip(ip) {
            return false;
        }
        let limit = if self.registrar.has_ip(ip) {
            limit.saturating_mul(REGISTERED_FACTOR)
        } else {
            limit
        };
        if !self
            .defence
            .count(ip, limit, Duration::from_secs(u64::from(secs)), now.at)
        {
            return false;
        }
        let ban = u64::from(self.config.general.ban);
        let until = now.at + Duration::from_secs(ban);
        let b = Ban {
            ip,
            reason: Reason::Flood,
            until,
            since_unix: now.unix(),
            until_unix: now.unix() + ban,
        };
        self.counters.bans += 1;
        let detail = format!("requests={limit}/{secs}s until={}", b.until_unix);
        self.security_event(fx, "flood", None, peer, Some(detail));
        self.put_ban(b, peer, fx);
        self.counters.banned_dropped += 1;
        true
    }

    fn put_ban(&mut self, b: Ban, peer: Peer, fx: &mut Effects) {
        let detail = format!("reason=\"{}\" until={}", b.reason.describe(), b.until_unix);
        let user = match &b.reason {
            Reason::AuthUser(u) => Some(u.clone()),
            _ => None,
        };
        if b.reason.drops() {
            fx.drops.push((b.ip, Some(b.until)));
        }
        self.security_event(fx, "ban", user, peer, Some(detail));
        if let Some(gone) = self.defence.ban(b) {
            if gone.reason.drops() {
                fx.drops.push((gone.ip, None));
            }
        }
    }

    /// The brute-force guard started `locks` for `user` at `peer`: list
    /// them in the ban table.
    pub(super) fn auth_locked(
        &mut self,
        locks: Locks,
        user: &str,
        peer: Peer,
        now: Now,
        fx: &mut Effects,
    ) {
        let ip = peer.addr.ip().to_canonical();
        let limits = self.guard.limits().clone();
        let mut put = |core: &mut Core, reason: Reason, block: Duration| {
            core.counters.bans += 1;
            let b = Ban {
                ip,
                reason,
                until: now.at + block,
                since_unix: now.unix(),
                until_unix: now.unix() + block.as_secs(),
            };
            core.put_ban(b, peer, fx);
        };
        if locks.pair {
            put(self, Reason::AuthUser(user.to_string()), limits.pair.block);
        }
        if locks.source {
            put(self, Reason::AuthSource, limits.source.block);
        }
    }

    /// Bans that ended: lifted (logged), their drops undone.
    pub(super) fn expire_bans(&mut self, now: Now, fx: &mut Effects) {
        let window = Duration::from_secs(u64::from(self.config.general.flood.1.max(1)));
        for b in self.defence.expire(now.at, window) {
            self.ban_lifted(&b, "expired", fx);
        }
    }

    fn ban_lifted(&mut self, b: &Ban, how: &str, fx: &mut Effects) {
        if b.reason.drops() {
            fx.drops.push((b.ip, None));
        }
        let user = match &b.reason {
            Reason::AuthUser(u) => Some(u.clone()),
            _ => None,
        };
        let peer = Peer::to(Transport::Udp, SocketAddr::new(b.ip, 0));
        let detail = format!("reason=\"{}\" how={how}", b.reason.describe());
        self.security_event(fx, "ban-lifted", user, peer, Some(detail));
    }

    /// `sipctl bans clear ADDR`: lift every ban of `ip`, the guard's locks
    /// included; how many were lifted.
    pub fn lift_bans(&mut self, ip: IpAddr, fx: &mut Effects) -> usize {
        let ip = ip.to_canonical();
        let lifted = self.defence.lift(ip);
        let users: Vec<&str> = lifted
            .iter()
            .filter_map(|b| match &b.reason {
                Reason::AuthUser(u) => Some(u.as_str()),
                _ => None,
            })
            .collect();
        self.guard.clear(ip, &users);
        for b in &lifted {
            self.ban_lifted(b, "cleared", fx);
        }
        fx.drops.push((ip, None));
        lifted.len()
    }

    /// Bans in the table, and sources being counted.
    pub fn ban_table_sizes(&self) -> (usize, usize) {
        (self.defence.len(), self.defence.counted())
    }

    /// The ban table, the next to end first.
    pub fn bans(&self) -> impl Iterator<Item = &Ban> {
        self.defence.list()
    }

    /// One security event (the server writes it to the security log and
    /// the normal log).
    pub(super) fn security_event(
        &mut self,
        fx: &mut Effects,
        event: &'static str,
        user: Option<String>,
        peer: Peer,
        detail: Option<String>,
    ) {
        fx.security(SecurityEvent {
            event,
            user,
            transport: peer.transport,
            addr: peer.addr,
            detail,
        });
    }
}
