//! CDR retention: the core asks the store to prune CDRs older than
//! `cdr_keep_days` at its first tick, then daily, and at the next tick after
//! a reload changed the number of days (the clock is the bench's).

use std::time::Duration;

use super::harness::{config, Bench, CONF};
use crate::core::Effects;
use crate::store::Write;

const DAY_MS: u64 = 86_400_000;

fn prunes(b: &Bench) -> Vec<u64> {
    b.writes
        .iter()
        .filter_map(|w| match w {
            Write::PruneCdrs { ended_before_ms } => Some(*ended_before_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn prunes_at_start_then_daily() {
    let mut b = Bench::new(CONF);
    let start = b.now.unix_ms;
    b.tick();
    assert_eq!(prunes(&b), [start - 90 * DAY_MS]);
    b.advance(Duration::from_secs(23 * 3600));
    assert_eq!(prunes(&b).len(), 1, "not before a day has passed");
    b.advance(Duration::from_secs(3600));
    let day = start + 24 * 3600 * 1000;
    assert_eq!(prunes(&b), [start - 90 * DAY_MS, day - 90 * DAY_MS]);
}

#[test]
fn keep_days_from_sip_conf_and_reload() {
    let conf = CONF.replace("[general]\n", "[general]\ncdr_keep_days=7\n");
    let mut b = Bench::new(&conf);
    let start = b.now.unix_ms;
    b.tick();
    assert_eq!(prunes(&b), [start - 7 * DAY_MS]);
    // Same number of days: nothing until the day is over.
    let mut fx = Effects::new();
    b.core.set_config(config(&conf), &mut fx);
    b.absorb(fx);
    b.advance(Duration::from_secs(60));
    assert_eq!(prunes(&b).len(), 1);
    // A reload that changes it prunes at the next tick.
    let mut fx = Effects::new();
    b.core
        .set_config(config(&conf.replace("=7", "=1")), &mut fx);
    b.absorb(fx);
    b.tick();
    assert_eq!(prunes(&b)[1], b.now.unix_ms - DAY_MS);
    // 0: never.
    let mut fx = Effects::new();
    b.core
        .set_config(config(&conf.replace("=7", "=0")), &mut fx);
    b.absorb(fx);
    b.advance(Duration::from_secs(3 * 24 * 3600));
    assert_eq!(prunes(&b).len(), 2);
}
