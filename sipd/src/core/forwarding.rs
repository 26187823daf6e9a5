//! Changing a client's forwarding override (by phone or by `sipctl fwd`):
//! asked of the store first, put in force in memory only once the store has
//! committed it, and never when the commit fails. So a call routed while a
//! change is being written follows the forwarding the store holds, a phone
//! or sipctl told "not saved" finds the old forwarding still in force, and
//! a restart loads what was in force.
//!
//! The store applies writes in the order they were asked for, each a whole
//! value, so what it holds is the last write that committed; the
//! confirmations may reach the core in another order (each comes back on a
//! task of its own). A commit therefore puts its value in force only if no
//! later change of the same client has committed already: older pending
//! changes are then forgotten (their answers still go out, from `pbx` and
//! `sipctl fwd`, by token).

use std::collections::VecDeque;

use super::{Core, Effects};
use crate::config::{Config, Role};
use crate::routing::forwards::Override;
use crate::store::Write;
use crate::time::Now;

/// Changes of one client waiting for the store, oldest first.
#[derive(Default)]
pub(super) struct PendingFwd {
    queue: VecDeque<(u64, Override)>,
}

impl Core {
    /// Ask the store to keep `ov` for client `name`; it is put in force when
    /// the store's answer comes back through `resume` with the token, if
    /// the write committed.
    pub fn change_forwarding(
        &mut self,
        name: &str,
        ov: Override,
        now: Now,
        fx: &mut Effects,
    ) -> u64 {
        let token = self.token();
        let row = ov.to_row(name, now.unix());
        self.fwd_pending
            .entry(name.to_string())
            .or_default()
            .queue
            .push_back((token, ov));
        fx.confirm.push((token, Write::PutForward(row)));
        token
    }

    /// The store committed (or failed) the forwarding write `token`, if it
    /// was one.
    pub(super) fn forwarding_settled(&mut self, token: u64, ok: bool) {
        let Some((name, i)) = self.fwd_pending.iter().find_map(|(n, p)| {
            p.queue
                .iter()
                .position(|(t, _)| *t == token)
                .map(|i| (n.clone(), i))
        }) else {
            // Not ours, or superseded by a later change that committed
            // first, or the client went in a reload.
            return;
        };
        let Some(p) = self.fwd_pending.get_mut(&name) else {
            return;
        };
        if ok {
            // In force now; what was asked before it is older than what
            // the store holds.
            let Some((_, ov)) = p.queue.drain(..=i).next_back() else {
                return;
            };
            self.forwards.set(&name, ov);
        } else {
            p.queue.remove(i);
        }
        if p.queue.is_empty() {
            self.fwd_pending.remove(&name);
        }
    }

    /// A reload installs `config`: the overrides of clients it removed go,
    /// from the store too (the delete goes after any write still pending for
    /// the client, so it is what the store ends up holding), and their
    /// pending changes will not be put in force when they commit.
    pub(super) fn forwarding_retain_clients(&mut self, config: &Config, fx: &mut Effects) {
        let mut gone = self.forwards.retain_clients(config);
        let keeps = |name: &str| config.client(name).is_some_and(|c| c.role == Role::User);
        self.fwd_pending.retain(|name, _| {
            if !keeps(name) && !gone.contains(name) {
                gone.push(name.clone());
            }
            keeps(name)
        });
        gone.sort();
        for name in gone {
            fx.write(Write::DeleteForward(name));
        }
    }

    /// Clients with forwarding writes pending.
    pub fn forwarding_pending(&self) -> usize {
        self.fwd_pending.len()
    }
}
