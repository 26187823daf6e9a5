//! The brute-force guard: failed authentications counted per (user,
//! source), per source and per user, in bounded tables that an attacker
//! cannot flush.
//!
//! Sans-IO, like the rest of `auth`: plain state, the time is passed into
//! every call, and what happened is returned ([`Locks`]), so a caller can
//! log it or feed a ban table.
//!
//! # Rules (defaults in [`Limits::default`])
//!
//! A *source* is an IPv4 address or an IPv6 /64 (one host usually holds a
//! whole /64). A *user* is the `username` of the credentials, known or not
//! (unknown users are counted the same way, so that locks say nothing
//! about which users exist).
//!
//! - (user, source): [`Rule`] `pair`, 5 failures within 10 minutes lock
//!   that user from that source for 10 minutes (fail2ban's defaults:
//!   maxretry 5, findtime and bantime 600 s). Always applies: it is what
//!   stops one source guessing one password.
//! - source: 20 failures within 10 minutes, whatever the users (a password
//!   spray), lock that source for 10 minutes for every user that has not
//!   authenticated from it within [`Limits::trust`].
//! - user: 10 failures within 15 minutes, whatever the sources (a guess
//!   spread over many addresses), lock that user for 15 minutes at every
//!   source it has not authenticated from within [`Limits::trust`]
//!   (Kamailio's security guide: 3 per 15 minutes per user; higher here
//!   because the lock is shared by all sources, and one of the user's own
//!   devices with an old password fails up to 5 times per 10 minutes
//!   before its pair lock stops its attempts from being counted).
//!
//! The exemption for sources a user recently authenticated from is what
//! keeps these shared locks from being a way to lock a real user (or an
//! office behind one NAT address) out: anyone can make failures for any
//! user, from any (spoofed) address, but not a success.
//!
//! A locked attempt is refused without looking at its credentials and is
//! not counted (so a locked device retrying does not push the shared
//! counters further).
//!
//! # Tables
//!
//! Each table holds at most [`Rule::capacity`] keys. An entry leaves when
//! its window ends (counted from its first failure) or its lock ends. When
//! a new key arrives at a full table, the entry with the fewest failures
//! (then the oldest window) is evicted; a locked entry is never evicted
//! before its lock ends. If every entry is locked, the new key cannot be
//! tracked, and the table counts as *full*: every key it does not hold is
//! then treated as locked, except where the user recently authenticated
//! (fail closed: flooding the tables locks out newcomers for a while, never
//! opens unlimited guessing). Filling a table with locks takes
//! capacity × limit failures within one window (286,720 for each table
//! with the defaults; the capacities are 7/8 of a power of two, which is
//! what a hash table of that power holds). Full, the three take about
//! 16 MB (measured RSS).
//! All operations are O(log n).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One table's rule: `limit` failures within `window` (counted from the
/// first) lock the key for `block`; at most `capacity` keys are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub limit: u32,
    pub window: Duration,
    pub block: Duration,
    pub capacity: usize,
}

/// The guard's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Per (user, source).
    pub pair: Rule,
    /// Per source, over all users.
    pub source: Rule,
    /// Per user, over all sources.
    pub user: Rule,
    /// How long a success from a source exempts that (user, source) from
    /// the source and user locks.
    pub trust: Duration,
    /// Sources remembered per user (the oldest success is forgotten first).
    pub trusted_per_user: usize,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pair: Rule {
                limit: 5,
                window: Duration::from_secs(600),
                block: Duration::from_secs(600),
                capacity: 57_344,
            },
            source: Rule {
                limit: 20,
                window: Duration::from_secs(600),
                block: Duration::from_secs(600),
                capacity: 14_336,
            },
            user: Rule {
                limit: 10,
                window: Duration::from_secs(900),
                block: Duration::from_secs(900),
                capacity: 28_672,
            },
            trust: 24 * 60 * MINUTE,
            trusted_per_user: 16,
        }
    }
}

/// Which locks apply to an attempt ([`Guard::check`]) or were started by a
/// failure ([`Guard::failed`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Locks {
    pub pair: bool,
    pub source: bool,
    pub user: bool,
}

impl Locks {
    pub fn any(self) -> bool {
        self.pair || self.source || self.user
    }
}

/// A source as a number: an IPv4 address as its IPv4-mapped IPv6 form, an
/// IPv6 address cut to its /64 (never equal to a mapped IPv4 address,
/// whose low 64 bits are not zero).
fn source_of(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

/// Seconds, the guard's unit of time (since its first call).
type Secs = u32;

fn secs(d: Duration) -> Secs {
    Secs::try_from(d.as_secs()).unwrap_or(Secs::MAX)
}

/// Failure counters and locks (see the module documentation).
pub struct Guard {
    limits: Limits,
    /// Users and (user, source) pairs are keyed by a keyed hash: bounded
    /// memory whatever names an attacker sends, and collisions nobody can
    /// aim at.
    hasher: RandomState,
    pairs: Table<u64>,
    sources: Table<u128>,
    users: Table<u64>,
    /// Per user who authenticated: the sources and when, newest last.
    trusted: HashMap<String, Vec<(u128, Instant)>>,
    next_trust_sweep: Option<Instant>,
    /// The guard's time 0 (its first call): tables count in whole seconds.
    base: Option<Instant>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new()
    }
}

impl Guard {
    /// Most entries the three failure tables hold with the default limits.
    pub const MAX_TRACKED: usize = 57_344 + 14_336 + 28_672;

    /// A guard with the default limits.
    pub fn new() -> Guard {
        Guard::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Guard {
        Guard {
            hasher: RandomState::new(),
            pairs: Table::new(limits.pair),
            sources: Table::new(limits.source),
            users: Table::new(limits.user),
            trusted: HashMap::new(),
            next_trust_sweep: None,
            base: None,
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn keys(&self, user: &str, ip: IpAddr) -> (u64, u128, u64) {
        let s = source_of(ip);
        let u = self.hasher.hash_one(user);
        (self.hasher.hash_one((u, s)), s, u)
    }

    /// `now` in the tables' seconds.
    fn secs(&mut self, now: Instant) -> Secs {
        let base = *self.base.get_or_insert(now);
        secs(now.saturating_duration_since(base))
    }

    /// Whether `user` authenticated from this source within the trust time.
    fn is_trusted(&self, user: &str, source: u128, now: Instant) -> bool {
        self.trusted.get(user).is_some_and(|v| {
            v.iter()
                .any(|&(s, t)| s == source && now.saturating_duration_since(t) < self.limits.trust)
        })
    }

    /// The locks that apply to an attempt as `user` from `ip` now (any:
    /// refuse it without looking at the credentials).
    pub fn check(&mut self, user: &str, ip: IpAddr, now: Instant) -> Locks {
        let (p, s, u) = self.keys(user, ip);
        let trusted = self.is_trusted(user, s, now);
        let t = self.secs(now);
        Locks {
            pair: match self.pairs.state(p, t) {
                State::Locked => true,
                State::Full => !trusted,
                State::Free => false,
            },
            source: !trusted && self.sources.state(s, t) != State::Free,
            user: !trusted && self.users.state(u, t) != State::Free,
        }
    }

    /// Count a failed authentication as `user` from `ip`; the locks this
    /// failure started.
    pub fn failed(&mut self, user: &str, ip: IpAddr, now: Instant) -> Locks {
        let (p, s, u) = self.keys(user, ip);
        let t = self.secs(now);
        Locks {
            pair: self.pairs.fail(p, t),
            source: self.sources.fail(s, t),
            user: self.users.fail(u, t),
        }
    }

    /// Lift the locks of `ip` (sipctl bans clear): its source lock and, for
    /// each of `users`, that user's lock from it. True if any was locked.
    pub fn clear(&mut self, ip: IpAddr, users: &[&str]) -> bool {
        let mut any = self.sources.remove(source_of(ip));
        for user in users {
            let (p, _, _) = self.keys(user, ip);
            any |= self.pairs.remove(p);
        }
        any
    }

    /// `user` authenticated from `ip`: that source is trusted for this user
    /// (exempt from the source and user locks) for [`Limits::trust`].
    pub fn succeeded(&mut self, user: &str, ip: IpAddr, now: Instant) {
        let s = source_of(ip);
        let cap = self.limits.trusted_per_user.max(1);
        // No allocation for a user seen before (every registration refresh).
        let Some(v) = self.trusted.get_mut(user) else {
            self.trusted.insert(user.to_string(), vec![(s, now)]);
            return;
        };
        if let Some(i) = v.iter().position(|&(x, _)| x == s) {
            v.remove(i);
        } else if v.len() >= cap {
            v.remove(0);
        }
        v.push((s, now));
    }

    /// Forget what is over (windows, locks; old trust at most once a
    /// minute, it is one entry per user who logged in).
    pub fn sweep(&mut self, now: Instant) {
        let t = self.secs(now);
        self.pairs.expire(t);
        self.sources.expire(t);
        self.users.expire(t);
        if self.next_trust_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_trust_sweep = Some(now + MINUTE);
        let trust = self.limits.trust;
        self.trusted.retain(|_, v| {
            v.retain(|&(_, t)| now.saturating_duration_since(t) < trust);
            !v.is_empty()
        });
    }

    /// Entries in the failure tables.
    pub fn tracked(&self) -> usize {
        self.pairs.len() + self.sources.len() + self.users.len()
    }

    /// Entries per table: (pairs, sources, users, trusted users).
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.pairs.len(),
            self.sources.len(),
            self.users.len(),
            self.trusted.len(),
        )
    }
}

/// What a table says about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not locked (counted or not).
    Free,
    /// Over its limit until its block ends.
    Locked,
    /// Not held, and the table is full of locked entries.
    Full,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    count: u32,
    /// Start of the window (first failure).
    since: Secs,
    /// End of the lock, once over the limit.
    until: Option<Secs>,
}

/// One bounded failure table. Every entry is either counting (in
/// `by_start` and `by_count`) or locked (in `locked`).
struct Table<K> {
    limit: u32,
    window: Secs,
    block: Secs,
    capacity: usize,
    entries: HashMap<K, Entry>,
    /// Counting entries by window start: the first is the next to expire.
    by_start: BTreeSet<(Secs, K)>,
    /// Counting entries by failures, then window start: the first is the
    /// next to evict.
    by_count: BTreeSet<(u32, Secs, K)>,
    /// Locked entries by lock end (ends come in order: `now` never goes
    /// back here and the block is fixed).
    locked: VecDeque<(Secs, K)>,
    /// Latest time seen: an earlier `now` is taken as this one.
    latest: Secs,
}

impl<K: Copy + Ord + Hash> Table<K> {
    fn new(rule: Rule) -> Table<K> {
        Table {
            limit: rule.limit.max(1),
            window: secs(rule.window),
            block: secs(rule.block),
            capacity: rule.capacity.max(1),
            entries: HashMap::new(),
            by_start: BTreeSet::new(),
            by_count: BTreeSet::new(),
            locked: VecDeque::new(),
            latest: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drop the entries whose window or lock is over; the time used
    /// (`now`, never before a time already seen).
    fn expire(&mut self, now: Secs) -> Secs {
        let now = self.latest.max(now);
        self.latest = now;
        while let Some(&(since, k)) = self.by_start.first() {
            if now - since < self.window {
                break;
            }
            self.by_start.pop_first();
            if let Some(e) = self.entries.remove(&k) {
                self.by_count.remove(&(e.count, e.since, k));
            }
        }
        while let Some(&(until, k)) = self.locked.front() {
            if now < until {
                break;
            }
            self.locked.pop_front();
            // Only the lock queued: a key lifted by hand and locked again
            // since has a later end.
            if self.entries.get(&k).is_some_and(|e| e.until == Some(until)) {
                self.entries.remove(&k);
            }
        }
        now
    }

    /// Forget `k` (a lock lifted by hand); true if it was locked.
    fn remove(&mut self, k: K) -> bool {
        let Some(e) = self.entries.remove(&k) else {
            return false;
        };
        match e.until {
            Some(_) => true,
            None => {
                self.by_start.remove(&(e.since, k));
                self.by_count.remove(&(e.count, e.since, k));
                false
            }
        }
    }

    fn full_of_locks(&self) -> bool {
        self.entries.len() >= self.capacity && self.by_count.is_empty()
    }

    fn state(&mut self, k: K, now: Secs) -> State {
        self.expire(now);
        match self.entries.get(&k) {
            Some(e) if e.until.is_some() => State::Locked,
            Some(_) => State::Free,
            None if self.full_of_locks() => State::Full,
            None => State::Free,
        }
    }

    /// Count a failure for `k`; true if this locked it. A locked key is not
    /// counted again; a key that cannot be tracked (full of locks) neither.
    fn fail(&mut self, k: K, now: Secs) -> bool {
        let now = self.expire(now);
        let until = now.saturating_add(self.block);
        if let Some(e) = self.entries.get_mut(&k) {
            if e.until.is_some() {
                return false;
            }
            self.by_count.remove(&(e.count, e.since, k));
            e.count = e.count.saturating_add(1);
            if e.count >= self.limit {
                self.by_start.remove(&(e.since, k));
                e.until = Some(until);
                self.locked.push_back((until, k));
                return true;
            }
            self.by_count.insert((e.count, e.since, k));
            return false;
        }
        if self.entries.len() >= self.capacity {
            // Evict the least-failed entry that is not locked.
            let Some((_, since, victim)) = self.by_count.pop_first() else {
                return false;
            };
            self.by_start.remove(&(since, victim));
            self.entries.remove(&victim);
        }
        let locked = self.limit <= 1;
        if locked {
            self.locked.push_back((until, k));
        } else {
            self.by_start.insert((now, k));
            self.by_count.insert((1, now, k));
        }
        self.entries.insert(
            k,
            Entry {
                count: 1,
                since: now,
                until: locked.then_some(until),
            },
        );
        locked
    }

    /// The failure count of `k` (0 if not held), for tests.
    #[cfg(test)]
    fn count(&self, k: K) -> u32 {
        self.entries.get(&k).map_or(0, |e| e.count)
    }

    /// Every entry is in exactly the index its state says (tests).
    #[cfg(test)]
    fn check_invariants(&self) {
        assert!(self.entries.len() <= self.capacity);
        let counting = self.entries.values().filter(|e| e.until.is_none()).count();
        assert_eq!(self.by_start.len(), counting);
        assert_eq!(self.by_count.len(), counting);
        assert_eq!(self.locked.len(), self.entries.len() - counting);
        for &(c, since, k) in &self.by_count {
            let e = self.entries[&k];
            assert_eq!((e.count, e.since, e.until), (c, since, None));
            assert!(self.by_start.contains(&(since, k)));
            assert!(c < self.limit);
        }
        for &(until, k) in &self.locked {
            assert_eq!(self.entries[&k].until, Some(until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn rule(limit: u32, capacity: usize) -> Rule {
        Rule {
            limit,
            window: 60 * SEC,
            block: 100 * SEC,
            capacity,
        }
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::from((0x0a00_0000 | i).to_be_bytes())
    }

    // ---- one table -----------------------------------------------------

    /// One second in the tables' unit.
    const S: Secs = 1;

    #[test]
    fn a_key_locks_at_its_limit_for_the_block() {
        let t0: Secs = 0;
        let mut t: Table<u32> = Table::new(rule(3, 10));
        assert!(!t.fail(1, t0));
        assert!(!t.fail(1, t0 + S));
        assert_eq!(t.state(1, t0 + S), State::Free);
        assert!(t.fail(1, t0 + 2 * S), "the third failure locks");
        assert_eq!(t.state(1, t0 + 2 * S), State::Locked);
        // Locked attempts are not counted, and the lock holds past the
        // window, until the block (from the locking failure) ends.
        assert!(!t.fail(1, t0 + 3 * S));
        assert_eq!(t.count(1), 3);
        assert_eq!(t.state(1, t0 + 101 * S), State::Locked);
        assert_eq!(t.state(1, t0 + 102 * S), State::Free);
        assert_eq!(t.len(), 0);
        assert_eq!(t.state(2, t0), State::Free);
        t.check_invariants();
    }

    #[test]
    fn the_window_counts_from_the_first_failure() {
        let t0: Secs = 0;
        let mut t: Table<u32> = Table::new(rule(3, 10));
        t.fail(1, t0);
        t.fail(1, t0 + 59 * S);
        // The window (60 s) of the first failure is over: counting restarts.
        assert!(!t.fail(1, t0 + 60 * S));
        assert_eq!(t.count(1), 1);
        assert!(!t.fail(1, t0 + 61 * S));
        assert!(t.fail(1, t0 + 62 * S));
        t.check_invariants();
    }

    #[test]
    fn limit_one_locks_at_once() {
        let t0: Secs = 0;
        let mut t: Table<u32> = Table::new(rule(1, 2));
        assert!(t.fail(7, t0));
        assert_eq!(t.state(7, t0), State::Locked);
        t.check_invariants();
    }

    #[test]
    fn eviction_takes_the_least_failed_first_then_the_oldest() {
        let t0: Secs = 0;
        let mut t: Table<u32> = Table::new(rule(5, 4));
        // 1: 3 failures, 2: 1 (oldest), 3: 2, 4: 1 (newer).
        for _ in 0..3 {
            t.fail(1, t0);
        }
        t.fail(2, t0 + S);
        t.fail(3, t0 + 2 * S);
        t.fail(3, t0 + 2 * S);
        t.fail(4, t0 + 3 * S);
        let at = t0 + 4 * S;
        t.fail(10, at);
        assert_eq!(t.count(2), 0, "least failed, oldest window: evicted");
        assert_eq!((t.count(1), t.count(3), t.count(4)), (3, 2, 1));
        t.fail(11, at);
        assert_eq!(t.count(4), 0);
        // Now 10 and 11 have one failure each: 10 (older... same time: by key
        // order) goes, never the entries with more failures.
        t.fail(12, at);
        assert_eq!((t.count(1), t.count(3)), (3, 2));
        assert_eq!(t.len(), 4);
        t.check_invariants();
    }

    #[test]
    fn locked_entries_are_never_evicted_before_their_block_ends() {
        let t0: Secs = 0;
        let mut t: Table<u32> = Table::new(rule(2, 3));
        for k in 0..3 {
            t.fail(k, t0);
            assert!(t.fail(k, t0));
        }
        // Full of locks: a new key is not tracked, and counts as locked.
        for k in 100..10_000 {
            assert!(!t.fail(k, t0 + S));
        }
        assert_eq!(t.state(100, t0 + S), State::Full);
        for k in 0..3 {
            assert_eq!(t.state(k, t0 + 99 * S), State::Locked);
        }
        // The locks end (block 100 s): the table is open again.
        assert_eq!(t.state(100, t0 + 100 * S), State::Free);
        assert!(!t.fail(100, t0 + 100 * S));
        assert_eq!(t.count(100), 1);
        t.check_invariants();
    }

    #[test]
    fn a_flood_of_new_keys_does_not_reset_a_key_in_progress() {
        // The attack: many single failures from fresh keys, then a
        // fresh key guesses: it is still counted up to its lock.
        let t0: Secs = 0;
        let mut t: Table<u32> = Table::new(rule(5, 1000));
        for k in 0..16_500 {
            t.fail(k, t0);
        }
        let me = 1_000_000;
        for i in 0..4 {
            assert!(!t.fail(me, t0 + S));
            // More junk between the guesses.
            for k in 0..2_000 {
                t.fail(100_000 + i * 2_000 + k, t0 + S);
            }
            assert_eq!(t.count(me), i + 1, "evicted after {i} failures");
        }
        assert!(t.fail(me, t0 + 2 * S));
        for k in 0..5_000 {
            t.fail(200_000 + k, t0 + 3 * S);
        }
        assert_eq!(t.state(me, t0 + 3 * S), State::Locked);
        assert_eq!(t.len(), 1000);
        t.check_invariants();
    }

    #[test]
    fn time_going_back_is_taken_as_the_latest() {
        let t0: Secs = 1000;
        let mut t: Table<u32> = Table::new(rule(2, 10));
        t.fail(1, t0);
        t.fail(1, t0);
        // An earlier instant: the lock end stays in order, nothing panics.
        assert_eq!(t.state(1, t0 - 500 * S), State::Locked);
        t.fail(2, t0 - 500 * S);
        assert!(t.fail(2, t0 - 400 * S));
        assert_eq!(t.state(1, t0 + 100 * S), State::Free);
        assert_eq!(t.state(2, t0 + 100 * S), State::Free);
        t.check_invariants();
    }

    /// Exhaustive over small histories: every sequence of 6 failures on
    /// keys 0..3, each 0 or 1 s after the previous one, with a capacity of
    /// 2, a limit of 2, a 3 s window and a 4 s block, against a model that
    /// states the rules directly (expiry, lock, least-failed-then-oldest
    /// eviction, never a locked entry, full of locks: not tracked).
    #[test]
    fn exhaustive_small_histories_match_a_model() {
        #[derive(Clone, Copy)]
        struct M {
            key: u32,
            count: u32,
            since: u32,
            until: Option<u32>,
        }
        let (keys, steps) = (3u32, 6u32);
        let r = Rule {
            limit: 2,
            window: 3 * SEC,
            block: 4 * SEC,
            capacity: 2,
        };
        let t0: Secs = 0;
        for code in 0..(keys * 2).pow(steps) {
            let mut t: Table<u32> = Table::new(r);
            let mut m: Vec<M> = Vec::new();
            let (mut now, mut c) = (0u32, code);
            for _ in 0..steps {
                let k = c % keys;
                now += (c / keys) % 2;
                c /= keys * 2;
                let at = t0 + now;
                m.retain(|e| match e.until {
                    Some(u) => now < u,
                    None => now - e.since < 3,
                });
                let want_lock = match m.iter().position(|e| e.key == k) {
                    Some(i) if m[i].until.is_some() => false,
                    Some(i) => {
                        m[i].count += 1;
                        if m[i].count >= 2 {
                            m[i].until = Some(now + 4);
                        }
                        m[i].until.is_some()
                    }
                    None => {
                        let victim = m
                            .iter()
                            .filter(|e| e.until.is_none())
                            .min_by_key(|e| (e.count, e.since, e.key))
                            .map(|e| e.key);
                        match (m.len() >= 2, victim) {
                            (true, None) => {}
                            (full, v) => {
                                if full {
                                    m.retain(|e| Some(e.key) != v);
                                }
                                m.push(M {
                                    key: k,
                                    count: 1,
                                    since: now,
                                    until: None,
                                });
                            }
                        }
                        false
                    }
                };
                assert_eq!(t.fail(k, at), want_lock, "code {code} key {k} at {now}");
                t.check_invariants();
                let full = m.len() >= 2 && m.iter().all(|e| e.until.is_some());
                for k in 0..keys {
                    let e = m.iter().find(|e| e.key == k);
                    let want = match e {
                        Some(e) if e.until.is_some() => State::Locked,
                        Some(_) => State::Free,
                        None if full => State::Full,
                        None => State::Free,
                    };
                    assert_eq!(t.state(k, at), want, "code {code} key {k} at {now}");
                    assert_eq!(t.count(k), e.map_or(0, |e| e.count), "code {code}");
                }
            }
        }
    }

    // ---- the guard -----------------------------------------------------

    fn small() -> Limits {
        Limits {
            pair: rule(3, 100),
            source: rule(6, 100),
            user: rule(5, 100),
            trust: 1000 * SEC,
            trusted_per_user: 2,
        }
    }

    #[test]
    fn pair_lock_applies_even_where_the_user_logged_in() {
        let t0 = Instant::now();
        let mut g = Guard::with_limits(small());
        g.succeeded("alice", ip(1), t0);
        for _ in 0..2 {
            assert_eq!(g.failed("alice", ip(1), t0), Locks::default());
        }
        assert!(!g.check("alice", ip(1), t0).any());
        let started = g.failed("alice", ip(1), t0);
        assert_eq!(
            started,
            Locks {
                pair: true,
                ..Locks::default()
            }
        );
        assert!(g.check("alice", ip(1), t0).pair);
        // Other users at that source, and alice elsewhere: free.
        assert!(!g.check("bob", ip(1), t0).any());
        assert!(!g.check("alice", ip(2), t0).any());
        // Until the block ends.
        assert!(!g.check("alice", ip(1), t0 + 100 * SEC).any());
    }

    #[test]
    fn source_lock_spares_users_who_logged_in_from_there() {
        let t0 = Instant::now();
        let mut g = Guard::with_limits(small());
        g.succeeded("alice", ip(1), t0);
        let mut started = Locks::default();
        for k in 0..6 {
            let l = g.failed(&format!("u{k}"), ip(1), t0);
            started.source |= l.source;
            assert!(!l.pair && !l.user);
        }
        assert!(started.source);
        assert!(g.check("bob", ip(1), t0).source);
        assert!(g.check("u0", ip(1), t0).source);
        assert!(!g.check("alice", ip(1), t0).any());
        assert!(!g.check("bob", ip(2), t0).any());
    }

    #[test]
    fn user_lock_spares_the_sources_she_logged_in_from() {
        let t0 = Instant::now();
        let mut g = Guard::with_limits(small());
        g.succeeded("alice", ip(1), t0);
        g.succeeded("alice", ip(2), t0);
        for i in 0..5 {
            g.failed("alice", ip(100 + i), t0);
        }
        assert!(g.check("alice", ip(3), t0).user);
        assert!(g.check("alice", ip(100), t0).user);
        assert!(!g.check("alice", ip(1), t0).any());
        assert!(!g.check("alice", ip(2), t0).any());
        assert!(!g.check("bob", ip(3), t0).any());
        // Trust ends: then she is locked there too (until the block ends).
        assert!(!g.check("alice", ip(1), t0 + 99 * SEC).any());
        let mut g2 = Guard::with_limits(Limits {
            trust: 10 * SEC,
            ..small()
        });
        g2.succeeded("alice", ip(1), t0);
        for i in 0..5 {
            g2.failed("alice", ip(100 + i), t0 + 20 * SEC);
        }
        assert!(g2.check("alice", ip(1), t0 + 20 * SEC).user);
    }

    #[test]
    fn trust_is_bounded_per_user() {
        let t0 = Instant::now();
        let mut g = Guard::with_limits(small());
        for i in 0..50 {
            g.succeeded("alice", ip(i), t0 + Duration::from_secs(u64::from(i)));
        }
        assert_eq!(g.sizes().3, 1);
        assert_eq!(g.trusted["alice"].len(), 2);
        // The newest two are kept.
        assert!(g.is_trusted("alice", source_of(ip(49)), t0 + 50 * SEC));
        assert!(g.is_trusted("alice", source_of(ip(48)), t0 + 50 * SEC));
        assert!(!g.is_trusted("alice", source_of(ip(0)), t0 + 50 * SEC));
        // Logging in again from a known source refreshes it, no duplicate.
        g.succeeded("alice", ip(48), t0 + 900 * SEC);
        assert_eq!(g.trusted["alice"].len(), 2);
        assert!(g.is_trusted("alice", source_of(ip(48)), t0 + 1800 * SEC));
        assert!(!g.is_trusted("alice", source_of(ip(49)), t0 + 1800 * SEC));
        g.sweep(t0 + 2000 * SEC);
        assert_eq!(g.sizes().3, 0);
    }

    #[test]
    fn ipv6_sources_are_their_64() {
        let t0 = Instant::now();
        let mut g = Guard::with_limits(small());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:eeee:dddd:cccc".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        g.failed("alice", a, t0);
        g.failed("alice", b, t0);
        g.failed("alice", a, t0);
        assert!(g.check("alice", b, t0).pair, "one /64, one source");
        assert!(!g.check("alice", c, t0).pair);
        // IPv4-mapped IPv6 is the IPv4 address.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        for _ in 0..3 {
            g.failed("bob", mapped, t0);
        }
        assert!(g.check("bob", v4, t0).pair);
    }

    #[test]
    fn full_tables_fail_closed_except_where_trusted() {
        let t0 = Instant::now();
        let mut g = Guard::with_limits(Limits {
            pair: rule(1, 4),
            source: rule(1000, 10_000),
            user: rule(1000, 10_000),
            trust: 1000 * SEC,
            trusted_per_user: 2,
        });
        g.succeeded("alice", ip(1), t0);
        // Four locked pairs fill the pair table.
        for i in 0..4 {
            assert!(g.failed(&format!("junk{i}"), ip(50), t0).pair);
        }
        // A pair it cannot track counts as locked...
        assert!(g.check("bob", ip(2), t0).pair);
        assert!(g.check("alice", ip(2), t0).pair);
        // ... except where the user recently authenticated.
        assert!(!g.check("alice", ip(1), t0).any());
        // Until the locks end.
        assert!(!g.check("bob", ip(2), t0 + 100 * SEC).any());
    }

    #[test]
    fn the_default_limits_are_the_documented_ones() {
        let l = Limits::default();
        assert_eq!(
            (l.pair.limit, l.pair.window, l.pair.block),
            (5, 10 * MINUTE, 10 * MINUTE)
        );
        assert_eq!(
            (l.source.limit, l.source.window, l.source.block),
            (20, 10 * MINUTE, 10 * MINUTE)
        );
        assert_eq!(
            (l.user.limit, l.user.window, l.user.block),
            (10, 15 * MINUTE, 15 * MINUTE)
        );
        assert!(l.pair.limit < l.user.limit && l.user.limit < l.source.limit);
        assert_eq!(
            Guard::MAX_TRACKED,
            l.pair.capacity + l.source.capacity + l.user.capacity
        );
        // Filling any table with locks takes about the same effort.
        for r in [l.pair, l.source, l.user] {
            let cost = r.capacity * r.limit as usize;
            assert!((280_000..=300_000).contains(&cost), "{r:?}: {cost}");
        }
    }

    #[test]
    fn sweep_empties_the_tables() {
        let t0 = Instant::now();
        let mut g = Guard::with_limits(small());
        for i in 0..50 {
            g.failed(&format!("u{i}"), ip(i), t0);
        }
        g.failed("alice", ip(1), t0);
        g.failed("alice", ip(1), t0);
        g.failed("alice", ip(1), t0);
        assert!(g.tracked() > 0);
        g.sweep(t0 + 60 * SEC);
        // Windows over, but alice's pair lock (100 s) holds.
        assert_eq!(g.sizes().0, 1);
        g.sweep(t0 + 101 * SEC);
        assert_eq!(g.tracked(), 0);
    }
}
