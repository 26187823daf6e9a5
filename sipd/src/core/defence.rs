//! Flood defence and the ban table (like Kamailio's pike plus its ban
//! list), sans-IO: the time comes in, decisions go out.
//!
//! Out-of-dialog requests are counted per source IP in a sliding window
//! (two fixed buckets, the older one weighted by how much of it is still
//! inside the window). Over the limit (`[general] flood=REQUESTS/SECONDS`,
//! default 100/2: a phone sends a handful of requests per call and a
//! REGISTER every few minutes; an office of 50 phones behind one NAT
//! address starting calls at once stays under it, SIPVicious' default
//! rate does not) the source is banned for `ban=` seconds (default 300):
//! its packets are dropped before they are parsed, without any answer. A
//! source holding an authenticated registration gets fifty times the limit;
//! static hosts, gateways and mediagates are never counted.
//!
//! The ban table also lists the brute-force guard's locks (a user locked
//! from an address, an address locked for every user it has not
//! authenticated from): those do not drop packets (the guard refuses the
//! attempts itself), they are there to be seen and lifted.
//!
//! Bounds: [`WINDOWS`] sources counted (stale ones are swept every tick;
//! when full, a new source is not counted until room frees up: a
//! distributed flood with under the limit per source is not what this
//! stops) and [`BANS`] bans (when full, the ban that ends first goes).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use std::time::Instant;

/// Sources counted at once.
pub const WINDOWS: usize = 65_536;
/// Bans held at once.
pub const BANS: usize = 16_384;
/// How much more a source with an authenticated registration may send
/// (an office NAT address or a PBX trunk registering hundreds of users:
/// SIPp registering 1,000 users at 250/s sends 1,000 requests per 2 s).
pub const REGISTERED_FACTOR: u32 = 50;

/// Why an address is in the ban table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Over the flood limit: every packet dropped.
    Flood,
    /// This user locked from this address after failed authentications.
    AuthUser(String),
    /// This address locked for every user that has not authenticated from
    /// it lately (a password spray).
    AuthSource,
}

impl Reason {
    /// As shown by `sipctl bans`.
    pub fn describe(&self) -> String {
        match self {
            Reason::Flood => "flood".into(),
            Reason::AuthUser(u) => format!("auth failures for {u}"),
            Reason::AuthSource => "auth failures from this address".into(),
        }
    }

    /// Packets from the address are dropped.
    pub fn drops(&self) -> bool {
        matches!(self, Reason::Flood)
    }
}

/// One entry of the ban table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub ip: IpAddr,
    pub reason: Reason,
    pub until: Instant,
    /// The same moments in Unix seconds, for display.
    pub since_unix: u64,
    pub until_unix: u64,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    prev: u32,
    cur: u32,
}

#[derive(Default)]
pub struct Defence {
    windows: HashMap<IpAddr, Window>,
    bans: HashMap<(IpAddr, Reason), Ban>,
    /// Bans by end, the first is the next to expire (or to be evicted).
    by_end: BTreeSet<(Instant, IpAddr, Reason)>,
    /// Addresses whose packets are dropped, until when.
    dropped: HashMap<IpAddr, Instant>,
}

impl Defence {
    pub fn new() -> Defence {
        Defence::default()
    }

    /// Count one out-of-dialog request from `ip` against `limit` requests
    /// per `window`; true when this one is over the limit.
    pub fn count(&mut self, ip: IpAddr, limit: u32, window: Duration, now: Instant) -> bool {
        if limit == 0 || window.is_zero() {
            return false;
        }
        if !self.windows.contains_key(&ip) && self.windows.len() >= WINDOWS {
            return false;
        }
        let w = self.windows.entry(ip).or_insert(Window {
            start: now,
            prev: 0,
            cur: 0,
        });
        let age = now.saturating_duration_since(w.start);
        if age >= window * 2 {
            *w = Window {
                start: now,
                prev: 0,
                cur: 0,
            };
        } else if age >= window {
            w.prev = w.cur;
            w.cur = 0;
            w.start += window;
        }
        w.cur = w.cur.saturating_add(1);
        let into = now.saturating_duration_since(w.start).as_secs_f64() / window.as_secs_f64();
        let estimate = f64::from(w.prev) * (1.0 - into.min(1.0)) + f64::from(w.cur);
        estimate > f64::from(limit)
    }

    /// Put a ban in the table (replacing one for the same address and
    /// reason); the ban evicted to make room, if any.
    pub fn ban(&mut self, ban: Ban) -> Option<Ban> {
        let key = (ban.ip, ban.reason.clone());
        if let Some(old) = self.bans.remove(&key) {
            self.by_end.remove(&(old.until, old.ip, old.reason));
        }
        let evicted = if self.bans.len() >= BANS {
            self.by_end.pop_first().and_then(|(_, ip, r)| {
                let b = self.bans.remove(&(ip, r));
                if let Some(b) = &b {
                    self.undrop(b);
                }
                b
            })
        } else {
            None
        };
        if ban.reason.drops() {
            let until = self.dropped.entry(ban.ip).or_insert(ban.until);
            *until = (*until).max(ban.until);
            self.windows.remove(&ban.ip);
        }
        self.by_end.insert((ban.until, ban.ip, ban.reason.clone()));
        self.bans.insert(key, ban);
        evicted
    }

    fn undrop(&mut self, b: &Ban) {
        if b.reason.drops() {
            self.dropped.remove(&b.ip);
        }
    }

    /// Are packets from `ip` dropped at `now`?
    pub fn is_dropped(&self, ip: IpAddr, now: Instant) -> bool {
        self.dropped.get(&ip).is_some_and(|&until| now < until)
    }

    /// Bans that are over (removed), and stale windows forgotten.
    pub fn expire(&mut self, now: Instant, window: Duration) -> Vec<Ban> {
        let mut over = Vec::new();
        while let Some((until, _, _)) = self.by_end.first() {
            if *until > now {
                break;
            }
            let Some((_, ip, r)) = self.by_end.pop_first() else {
                break;
            };
            if let Some(b) = self.bans.remove(&(ip, r)) {
                self.undrop(&b);
                over.push(b);
            }
        }
        self.windows
            .retain(|_, w| now.saturating_duration_since(w.start) < window * 2);
        over
    }

    /// Lift every ban of `ip`; the bans lifted.
    pub fn lift(&mut self, ip: IpAddr) -> Vec<Ban> {
        let keys: Vec<(IpAddr, Reason)> = self
            .bans
            .keys()
            .filter(|(a, _)| *a == ip)
            .cloned()
            .collect();
        let mut lifted = Vec::new();
        for k in keys {
            if let Some(b) = self.bans.remove(&k) {
                self.by_end.remove(&(b.until, b.ip, b.reason.clone()));
                lifted.push(b);
            }
        }
        self.dropped.remove(&ip);
        self.windows.remove(&ip);
        lifted
    }

    /// Every ban, the next to end first.
    pub fn list(&self) -> impl Iterator<Item = &Ban> {
        self.by_end
            .iter()
            .filter_map(|(_, ip, r)| self.bans.get(&(*ip, r.clone())))
    }

    pub fn len(&self) -> usize {
        self.bans.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Sources being counted.
    pub fn counted(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    const W: Duration = Duration::from_secs(2);

    fn ban(d: &mut Defence, a: IpAddr, reason: Reason, until: Instant) -> Option<Ban> {
        d.ban(Ban {
            ip: a,
            reason,
            until,
            since_unix: 0,
            until_unix: 0,
        })
    }

    #[test]
    fn a_steady_rate_under_the_limit_is_never_over() {
        let mut d = Defence::new();
        let t0 = Instant::now();
        // 40 per second for a minute against 100 per 2 s.
        for i in 0..2400u64 {
            let now = t0 + Duration::from_millis(i * 25);
            assert!(!d.count(ip(1), 100, W, now), "request {i}");
        }
    }

    #[test]
    fn a_burst_over_the_limit_is_over_at_the_limit() {
        let mut d = Defence::new();
        let t0 = Instant::now();
        for i in 0..100 {
            assert!(!d.count(ip(1), 100, W, t0 + Duration::from_millis(i)));
        }
        assert!(d.count(ip(1), 100, W, t0 + Duration::from_millis(100)));
        // Another source is not affected.
        assert!(!d.count(ip(2), 100, W, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn the_previous_window_still_counts_while_it_slides_out() {
        let mut d = Defence::new();
        let t0 = Instant::now();
        for i in 0..90 {
            assert!(!d.count(ip(1), 100, W, t0 + Duration::from_millis(1900 + i)));
        }
        // Just into the next bucket, 90 of the last 2 s are still counted.
        let t1 = t0 + Duration::from_millis(2100);
        let over: Vec<bool> = (0..20)
            .map(|i| d.count(ip(1), 100, W, t1 + Duration::from_millis(i)))
            .collect();
        assert!(over.iter().any(|&o| o), "{over:?}");
        // Four seconds later the slate is clean.
        assert!(!d.count(ip(1), 100, W, t0 + Duration::from_secs(8)));
    }

    #[test]
    fn zero_limit_is_off() {
        let mut d = Defence::new();
        let t0 = Instant::now();
        assert!((0..1000).all(|_| !d.count(ip(1), 0, W, t0)));
    }

    #[test]
    fn bans_drop_only_for_floods_expire_and_lift() {
        let mut d = Defence::new();
        let t0 = Instant::now();
        ban(&mut d, ip(1), Reason::Flood, t0 + Duration::from_secs(300));
        ban(
            &mut d,
            ip(2),
            Reason::AuthUser("alice".into()),
            t0 + Duration::from_secs(600),
        );
        assert!(d.is_dropped(ip(1), t0));
        assert!(!d.is_dropped(ip(2), t0), "auth locks do not drop packets");
        assert_eq!(d.len(), 2);
        let order: Vec<IpAddr> = d.list().map(|b| b.ip).collect();
        assert_eq!(order, vec![ip(1), ip(2)]);
        // Expiry lifts in order of end.
        let over = d.expire(t0 + Duration::from_secs(301), W);
        assert_eq!(over.len(), 1);
        assert_eq!(over[0].ip, ip(1));
        assert!(!d.is_dropped(ip(1), t0 + Duration::from_secs(301)));
        // Lifting by hand.
        ban(&mut d, ip(2), Reason::Flood, t0 + Duration::from_secs(900));
        let lifted = d.lift(ip(2));
        assert_eq!(lifted.len(), 2);
        assert!(d.is_empty());
        assert!(!d.is_dropped(ip(2), t0));
        assert!(d.lift(ip(3)).is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_ban_ending_first() {
        let mut d = Defence::new();
        let t0 = Instant::now();
        for i in 0..BANS as u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let end = t0 + Duration::from_secs(100 + u64::from(i % 1000));
            assert!(ban(&mut d, a, Reason::Flood, end).is_none());
        }
        assert_eq!(d.len(), BANS);
        let newcomer = IpAddr::from([192, 0, 2, 1]);
        let evicted = ban(
            &mut d,
            newcomer,
            Reason::Flood,
            t0 + Duration::from_secs(5000),
        )
        .unwrap();
        assert_eq!(evicted.until, t0 + Duration::from_secs(100));
        assert!(!d.is_dropped(evicted.ip, t0));
        assert!(d.is_dropped(newcomer, t0));
        assert_eq!(d.len(), BANS);
    }

    #[test]
    fn counting_is_bounded_and_stale_sources_are_swept() {
        let mut d = Defence::new();
        let t0 = Instant::now();
        for i in 0..WINDOWS as u32 {
            d.count(IpAddr::from(std::net::Ipv4Addr::from(i)), 100, W, t0);
        }
        assert_eq!(d.counted(), WINDOWS);
        // Full: a newcomer is not counted (never over) ...
        let n = IpAddr::from([192, 0, 2, 9]);
        assert!((0..500).all(|_| !d.count(n, 100, W, t0)));
        // ... until the stale ones are swept.
        d.expire(t0 + Duration::from_secs(5), W);
        assert_eq!(d.counted(), 0);
        assert!((0..200).any(|_| d.count(n, 100, W, t0 + Duration::from_secs(5))));
    }

    #[test]
    fn a_ban_replaced_for_the_same_reason_keeps_one_entry() {
        let mut d = Defence::new();
        let t0 = Instant::now();
        ban(&mut d, ip(1), Reason::Flood, t0 + Duration::from_secs(10));
        ban(&mut d, ip(1), Reason::Flood, t0 + Duration::from_secs(20));
        assert_eq!(d.len(), 1);
        assert!(d.expire(t0 + Duration::from_secs(11), W).is_empty());
        assert!(d.is_dropped(ip(1), t0 + Duration::from_secs(11)));
        assert_eq!(d.expire(t0 + Duration::from_secs(21), W).len(), 1);
    }
}
