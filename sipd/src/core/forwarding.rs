//! Changing a client's forwarding override (by phone or by `sipctl fwd`):
//! in force in memory at once, written to the store, confirmed when the
//! store commits. The store applies writes in the order they were asked
//! for, each a whole value, so what it holds is the last write that
//! committed; while writes are pending, memory holds the last one asked
//! for. When the last pending write fails, memory goes back to the last
//! one that committed: nothing is half applied, also when several changes
//! overlap and some of them fail.

use std::collections::VecDeque;

use super::{Core, Effects};
use crate::routing::forwards::Override;
use crate::store::Write;
use crate::time::Now;

/// Changes of one client waiting for the store.
pub(super) struct PendingFwd {
    /// The override as the store holds it (as of the last commit).
    committed: Option<Override>,
    /// Writes asked for and not yet confirmed, oldest first.
    queue: VecDeque<(u64, Override)>,
}

impl Core {
    /// Put `ov` in force for client `name` and ask the store to keep it;
    /// the store's answer comes back through `resume` with the token.
    pub fn change_forwarding(
        &mut self,
        name: &str,
        ov: Override,
        now: Now,
        fx: &mut Effects,
    ) -> u64 {
        let token = self.token();
        let row = ov.to_row(name, now.unix());
        let committed = self.forwards.get(name).cloned();
        self.fwd_pending
            .entry(name.to_string())
            .or_insert_with(|| PendingFwd {
                committed,
                queue: VecDeque::new(),
            })
            .queue
            .push_back((token, ov.clone()));
        self.forwards.set(name, ov);
        fx.confirm.push((token, Write::PutForward(row)));
        token
    }

    /// The store committed (or failed) the forwarding write `token`, if it
    /// was one.
    pub(super) fn forwarding_settled(&mut self, token: u64, ok: bool) {
        let Some(name) = self
            .fwd_pending
            .iter()
            .find(|(_, p)| p.queue.iter().any(|(t, _)| *t == token))
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        let Some(p) = self.fwd_pending.get_mut(&name) else {
            return;
        };
        let Some(i) = p.queue.iter().position(|(t, _)| *t == token) else {
            return;
        };
        let Some((_, ov)) = p.queue.remove(i) else {
            return;
        };
        if ok {
            p.committed = Some(ov);
        }
        if p.queue.is_empty() {
            // Nothing pending any more: memory is what the store holds.
            let committed = p.committed.take();
            self.fwd_pending.remove(&name);
            match committed {
                Some(ov) => self.forwards.set(&name, ov),
                None => {
                    self.forwards.remove(&name);
                }
            }
        }
    }

    /// Clients with forwarding writes pending.
    pub fn forwarding_pending(&self) -> usize {
        self.fwd_pending.len()
    }
}
