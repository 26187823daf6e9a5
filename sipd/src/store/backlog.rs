//! The writer's queue: every write accepted and not yet committed, oldest
//! first, in the order the core asked for them (so what the store ends up
//! holding is what the core decided, also after a retry).
//!
//! While the store works the queue holds one batch; while it fails (a full
//! disk) it holds what waits for the retry, bounded:
//! - a binding or forwarding write that is not waited for replaces the
//!   queued one of the same client (the later write decides the row
//!   entirely), so a refresh every minute for hours is one entry per client;
//!   a newer prune replaces an older one (keeping the later cutoff);
//! - CDRs are never merged: each is kept until written;
//! - at most [`MAX_QUEUED_CDRS`] CDRs and [`MAX_QUEUED_STATE`] other writes:
//!   past that the oldest of its kind is evicted and handed back to the
//!   writer, which logs it (a CDR in full) and counts it;
//! - writes someone waits for (a forwarding change) are never merged and
//!   do not count against the bounds: they leave after one attempt, with
//!   its outcome.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Done, Write};

/// Most CDRs queued while the store fails: about 50 MB of rows; at ten
/// calls a second, close to three hours of calls.
pub const MAX_QUEUED_CDRS: usize = 100_000;

/// Most other writes queued while the store fails. Binding writes merge
/// per client, so this is really "clients with a changed binding": the
/// 10,000-client benchmark fits ten times.
pub const MAX_QUEUED_STATE: usize = 100_000;

/// The bounds of a [`Backlog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub cdrs: usize,
    pub state: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            cdrs: MAX_QUEUED_CDRS,
            state: MAX_QUEUED_STATE,
        }
    }
}

/// A queued write and whoever waits for its commit.
pub(super) struct Entry {
    pub write: Write,
    pub done: Option<Done>,
}

/// What a later write of the same key replaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Binding(String),
    Forward(String),
    Prune,
}

fn key_of(w: &Write) -> Option<Key> {
    match w {
        Write::PutBindings(n, _) => Some(Key::Binding(n.clone())),
        Write::DeleteBinding(n) => Some(Key::Binding(n.clone())),
        Write::PutForward(f) => Some(Key::Forward(f.name.clone())),
        Write::DeleteForward(n) => Some(Key::Forward(n.clone())),
        Write::PruneCdrs { .. } => Some(Key::Prune),
        Write::DeleteBindingsExcept(_) | Write::ForgetBindings { .. } | Write::AddCdr(_) => None,
    }
}

/// What [`Backlog::push`] did besides queueing.
#[derive(Debug, Default)]
pub(super) struct Pushed {
    /// Older entries the new one replaced (they will never be written:
    /// nothing is lost, the new write decides the same row).
    pub merged: usize,
    /// The oldest entry of its kind, evicted because the bound was
    /// reached: lost.
    pub evicted: Option<Write>,
}

pub(super) struct Backlog {
    /// By sequence number: oldest first.
    entries: BTreeMap<u64, Entry>,
    next: u64,
    /// The queued write of each key nobody waits for.
    keys: HashMap<Key, u64>,
    /// Queued CDRs nobody waits for, oldest first.
    cdrs: BTreeSet<u64>,
    /// Queued other writes nobody waits for, oldest first.
    state: BTreeSet<u64>,
    limits: Limits,
}

impl Backlog {
    pub fn new(limits: Limits) -> Backlog {
        Backlog {
            entries: BTreeMap::new(),
            next: 0,
            keys: HashMap::new(),
            cdrs: BTreeSet::new(),
            state: BTreeSet::new(),
            limits,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues `write` behind everything queued.
    pub fn push(&mut self, mut write: Write, done: Option<Done>) -> Pushed {
        let mut pushed = Pushed::default();
        let seq = self.next;
        self.next += 1;
        if done.is_none() {
            if let Some(key) = key_of(&write) {
                if let Some(old) = self.keys.insert(key, seq) {
                    if let Some(e) = self.remove(old) {
                        pushed.merged += 1;
                        // A prune keeps the later of the two cutoffs.
                        if let (
                            Write::PruneCdrs {
                                ended_before_ms: old,
                            },
                            Write::PruneCdrs { ended_before_ms },
                        ) = (&e.write, &mut write)
                        {
                            *ended_before_ms = (*ended_before_ms).max(*old);
                        }
                    }
                }
            }
            let (set, bound) = if matches!(write, Write::AddCdr(_)) {
                (&mut self.cdrs, self.limits.cdrs)
            } else {
                (&mut self.state, self.limits.state)
            };
            set.insert(seq);
            let oldest = (set.len() > bound).then(|| set.first().copied()).flatten();
            self.entries.insert(seq, Entry { write, done });
            if let Some(old) = oldest {
                pushed.evicted = self.remove(old).map(|e| e.write);
            }
        } else {
            self.entries.insert(seq, Entry { write, done });
        }
        pushed
    }

    /// Sequence numbers of the (up to) `n` oldest entries.
    pub fn front(&self, n: usize) -> Vec<u64> {
        self.entries.keys().take(n).copied().collect()
    }

    pub fn get(&self, seq: u64) -> Option<&Entry> {
        self.entries.get(&seq)
    }

    /// Takes entry `seq` out (written, failed for good, or evicted).
    pub fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        if e.done.is_none() {
            if let Some(key) = key_of(&e.write) {
                if self.keys.get(&key) == Some(&seq) {
                    self.keys.remove(&key);
                }
            }
            self.cdrs.remove(&seq);
            self.state.remove(&seq);
        }
        Some(e)
    }

    /// Takes out every entry someone waits for (to answer them now).
    pub fn take_waited_for(&mut self) -> Vec<Entry> {
        let seqs: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.done.is_some())
            .map(|(s, _)| *s)
            .collect();
        seqs.into_iter().filter_map(|s| self.remove(s)).collect()
    }

    /// Takes out everything, oldest first.
    pub fn take_all(&mut self) -> Vec<Entry> {
        self.keys.clear();
        self.cdrs.clear();
        self.state.clear();
        std::mem::take(&mut self.entries).into_values().collect()
    }

    /// The writes queued, oldest first (tests).
    #[cfg(test)]
    pub fn writes(&self) -> Vec<&Write> {
        self.entries.values().map(|e| &e.write).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BindingRow, CdrRow, ForwardRow};

    fn binding(name: &str, cseq: u32) -> Write {
        Write::binding(BindingRow {
            name: name.into(),
            contact: format!("sip:{name}@192.0.2.1"),
            transport: "udp".into(),
            source: "192.0.2.1:5060".parse().unwrap(),
            expires_at: 1,
            user_agent: String::new(),
            call_id: "c".into(),
            cseq,
            local: None,
            instance: String::new(),
            reg_id: None,
            outbound: false,
            node: String::new(),
            node_addr: None,
        })
    }

    fn cdr(id: &str) -> Write {
        Write::AddCdr(CdrRow {
            call_id: id.into(),
            caller: "a".into(),
            callerid: "1".into(),
            accountcode: "o".into(),
            dialed: "2".into(),
            target: "b".into(),
            disposition: "ANSWERED".into(),
            code: 200,
            start: 1,
            answer: Some(2),
            end: 3,
            duration: 0,
            billsec: 0,
            device: String::new(),
            packets: [0, 0],
            relay: None,
            node: String::new(),
            uid: 0,
        })
    }

    fn forward(name: &str) -> Write {
        Write::PutForward(ForwardRow {
            name: name.into(),
            forwarding: proto::Forwarding::always("1"),
            source: "phone".into(),
            set_at: 1,
        })
    }

    fn small() -> Backlog {
        Backlog::new(Limits { cdrs: 3, state: 2 })
    }

    fn done() -> Option<Done> {
        Some(tokio::sync::oneshot::channel().0)
    }

    #[test]
    fn a_later_binding_write_replaces_the_queued_one_and_moves_behind() {
        let mut q = Backlog::new(Limits::default());
        assert_eq!(q.push(binding("a", 1), None).merged, 0);
        q.push(Write::DeleteBindingsExcept(vec![]), None);
        q.push(cdr("x"), None);
        let p = q.push(binding("a", 2), None);
        assert_eq!(p.merged, 1);
        assert!(p.evicted.is_none());
        // The put of "a" now comes after the delete-except: "a" stays.
        assert_eq!(
            q.writes(),
            [
                &Write::DeleteBindingsExcept(vec![]),
                &cdr("x"),
                &binding("a", 2)
            ]
        );
        // A delete replaces a put of the same client too.
        assert_eq!(q.push(Write::DeleteBinding("a".into()), None).merged, 1);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn cdrs_are_never_merged() {
        let mut q = Backlog::new(Limits::default());
        for _ in 0..5 {
            assert_eq!(q.push(cdr("same-call"), None).merged, 0);
        }
        assert_eq!(q.len(), 5);
    }

    #[test]
    fn the_oldest_cdr_is_evicted_at_the_bound() {
        let mut q = small();
        for id in ["c1", "c2", "c3"] {
            assert!(q.push(cdr(id), None).evicted.is_none());
        }
        // Bindings have their own bound: they do not push CDRs out.
        q.push(binding("a", 1), None);
        q.push(binding("b", 1), None);
        let p = q.push(cdr("c4"), None);
        assert_eq!(p.evicted, Some(cdr("c1")));
        assert_eq!(
            q.writes(),
            [
                &cdr("c2"),
                &cdr("c3"),
                &binding("a", 1),
                &binding("b", 1),
                &cdr("c4")
            ]
        );
    }

    #[test]
    fn the_oldest_state_write_is_evicted_at_the_bound() {
        let mut q = small();
        q.push(binding("a", 1), None);
        q.push(binding("b", 1), None);
        // Merging does not count against the bound.
        assert!(q.push(binding("a", 2), None).evicted.is_none());
        let p = q.push(binding("c", 1), None);
        assert_eq!(p.evicted, Some(binding("b", 1)));
        assert_eq!(q.writes(), [&binding("a", 2), &binding("c", 1)]);
        // The evicted key is free again.
        assert_eq!(q.push(binding("b", 2), None).merged, 0);
    }

    #[test]
    fn waited_for_writes_are_neither_merged_nor_bounded() {
        let mut q = small();
        q.push(forward("a"), done());
        q.push(forward("a"), done());
        q.push(forward("a"), None);
        q.push(forward("a"), None); // replaces only the one nobody waits for
        for n in ["b", "c", "d"] {
            q.push(forward(n), done());
        }
        assert_eq!(q.len(), 6);
        let waited = q.take_waited_for();
        assert_eq!(waited.len(), 5);
        assert_eq!(q.writes(), [&forward("a")]);
    }

    #[test]
    fn a_newer_prune_replaces_an_older_one_keeping_the_later_cutoff() {
        let mut q = Backlog::new(Limits::default());
        q.push(
            Write::PruneCdrs {
                ended_before_ms: 50,
            },
            None,
        );
        q.push(cdr("x"), None);
        assert_eq!(
            q.push(
                Write::PruneCdrs {
                    ended_before_ms: 20
                },
                None
            )
            .merged,
            1
        );
        assert_eq!(
            q.writes(),
            [
                &cdr("x"),
                &Write::PruneCdrs {
                    ended_before_ms: 50
                }
            ]
        );
    }

    #[test]
    fn front_remove_and_take_all_keep_the_order() {
        let mut q = Backlog::new(Limits::default());
        for i in 0..10 {
            q.push(cdr(&format!("c{i}")), None);
        }
        let front = q.front(3);
        assert_eq!(front.len(), 3);
        for s in &front {
            assert!(q.remove(*s).is_some());
        }
        assert!(q.remove(front[0]).is_none());
        let rest: Vec<Write> = q.take_all().into_iter().map(|e| e.write).collect();
        assert_eq!(rest.first(), Some(&cdr("c3")));
        assert_eq!(rest.len(), 7);
        assert!(q.is_empty());
        // The bounds start from empty again.
        assert!(q.push(cdr("y"), None).evicted.is_none());
    }
}
