//! How long CDRs are kept: `cdr_keep_days` (`[general]`, default 90; 0
//! keeps them for ever). The core asks the store to prune the older ones
//! at its first tick after start, then once a day, and again at the next
//! tick after a reload changed the number of days. Time comes in as
//! [`Now`] (the wall clock decides which CDRs are old, the monotonic one
//! when the next prune is due), so the rule is tested without waiting.

use std::time::Duration;

use super::{Core, Effects};
use crate::store::Write;
use crate::time::Now;

/// Between two prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

const DAY_MS: u64 = 86_400_000;

/// The end time before which a CDR is pruned at `now`; `None` when CDRs
/// are kept for ever.
pub fn prune_cutoff(now: Now, keep_days: u32) -> Option<u64> {
    (keep_days > 0).then(|| now.unix_ms.saturating_sub(u64::from(keep_days) * DAY_MS))
}

impl Core {
    /// The prune, when due (from `on_tick`).
    pub(super) fn prune_cdrs_when_due(&mut self, now: Now, fx: &mut Effects) {
        if self.next_prune.is_some_and(|at| now.at < at) {
            return;
        }
        self.next_prune = Some(now.at + PRUNE_EVERY);
        if let Some(ended_before_ms) = prune_cutoff(now, self.config.general.cdr_keep_days) {
            fx.write(Write::PruneCdrs { ended_before_ms });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_cutoff_is_keep_days_before_now() {
        let now = Now::at(Instant::now(), 100 * DAY_MS + 5);
        assert_eq!(prune_cutoff(now, 90), Some(10 * DAY_MS + 5));
        assert_eq!(prune_cutoff(now, 1), Some(99 * DAY_MS + 5));
        assert_eq!(prune_cutoff(now, 0), None, "0 keeps them for ever");
        // A wall clock near the epoch prunes nothing rather than wrapping.
        assert_eq!(prune_cutoff(Now::at(Instant::now(), 5), 90), Some(0));
    }
}
