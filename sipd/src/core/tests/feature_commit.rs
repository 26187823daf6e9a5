//! A forwarding set by phone is confirmed only after the store committed
//! it: the core asks for a confirmed write and answers when resumed. It is
//! put in force only then, never when the commit fails: at every moment,
//! also while changes overlap and some of them fail, what is in force is
//! what the store holds.

use super::harness::{Bench, Phone, CONF};
use crate::store::Write;
use proto::Forwarding;

#[test]
fn answer_waits_for_the_commit() {
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "*721002", "c-fwd");
    b.expect_status(alice.addr(), 100);
    assert!(
        b.take_to(alice.addr()).is_empty(),
        "no answer before the commit"
    );
    assert_eq!(b.confirms.len(), 1);
    assert!(matches!(&b.confirms[0].1, Write::PutForward(r) if r.name == "alice"));
    assert_eq!(b.core.deferred_count(), 1);
    b.commit(Ok(()));
    let r = b.expect_status(alice.addr(), 480);
    assert_eq!(
        String::from_utf8_lossy(r.raw()).lines().next(),
        Some("SIP/2.0 480 Forwarding To 1002")
    );
    assert_eq!(b.core.deferred_count(), 0);
    let client = b.core.config().client("alice").unwrap().clone();
    assert_eq!(
        b.core.forwards().effective(&client).0,
        Forwarding::always("1002")
    );
}

#[test]
fn a_failed_commit_is_reported() {
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "*721002", "c-fwd-fail");
    b.commit(Err("disk full".into()));
    b.expect_status(alice.addr(), 500);
    assert_eq!(b.core.calls().len(), 0);
    // Not half applied: the forwarding in force is still sip.conf's.
    let client = b.core.config().client("alice").unwrap().clone();
    assert_eq!(b.core.forwards().effective(&client).0, Forwarding::None);
    assert!(b.core.forwards().get("alice").is_none());
}

fn in_force(b: &Bench) -> (Forwarding, bool) {
    let client = b.core.config().client("alice").unwrap().clone();
    (
        b.core.forwards().effective(&client).0,
        b.core.forwards().get("alice").is_some(),
    )
}

fn two_changes(b: &mut Bench) -> Phone {
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(b, "*721002", "c-fwd-1");
    alice.invite(b, "*73", "c-fwd-2");
    assert_eq!(b.confirms.len(), 2, "both wait for the store");
    // While both are pending, what the store holds (nothing) is in force.
    assert_eq!(in_force(b), (Forwarding::None, false));
    alice
}

#[test]
fn overlapping_changes_that_both_fail_leave_the_stored_value() {
    let mut b = Bench::new(CONF);
    two_changes(&mut b);
    b.commit_one(Err("disk full".into()));
    b.commit_one(Err("disk full".into()));
    // Nothing was stored: sip.conf's value (none) is in force, no override.
    assert_eq!(in_force(&b), (Forwarding::None, false));
    assert_eq!(b.core.forwarding_pending(), 0);
}

#[test]
fn a_later_change_that_commits_wins_over_an_earlier_failure() {
    let mut b = Bench::new(CONF);
    two_changes(&mut b);
    b.commit_one(Err("disk full".into()));
    b.commit_one(Ok(()));
    assert_eq!(
        in_force(&b),
        (Forwarding::None, true),
        "*73 is stored as 'off'"
    );
}

#[test]
fn an_earlier_change_that_commits_stays_when_a_later_one_fails() {
    let mut b = Bench::new(CONF);
    two_changes(&mut b);
    b.commit_one(Ok(()));
    b.commit_one(Err("disk full".into()));
    assert_eq!(in_force(&b), (Forwarding::always("1002"), true));
}

#[test]
fn a_reload_that_removes_the_client_wins_over_a_pending_change() {
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "*721002", "c-fwd-r");
    let without = CONF.replace("[alice]\nsecret=a1\naccountcode=HOME\nexten=1001\n", "");
    let mut fx = crate::core::Effects::new();
    b.core.set_config(super::harness::config(&without), &mut fx);
    b.absorb(fx);
    let mut fx = crate::core::Effects::new();
    b.core.set_config(super::harness::config(CONF), &mut fx);
    b.absorb(fx);
    b.commit(Ok(()));
    // The store got the write, then the reload's delete: nothing.
    assert_eq!(in_force(&b), (Forwarding::None, false));
}

#[test]
fn a_pending_change_is_not_in_force() {
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    let mut bob = Phone::udp("bob", "b2", 6002);
    alice.register(&mut b, 300);
    bob.register(&mut b, 300);
    b.take_to(alice.addr());
    alice.invite(&mut b, "*721003", "c-fwd-p");
    assert_eq!(in_force(&b), (Forwarding::None, false));
    // bob's call to alice while the store writes: alice rings, not carol.
    bob.invite(&mut b, "1001", "c-call-p");
    let (_, got) = b.expect_request(alice.addr(), "INVITE");
    assert!(got.header(&crate::sip::HeaderName::Diversion).is_none());
    // The commit puts it in force.
    b.commit(Ok(()));
    assert_eq!(in_force(&b), (Forwarding::always("1003"), true));
}

#[test]
fn a_commit_confirmed_late_does_not_undo_a_later_one() {
    let mut b = Bench::new(CONF);
    two_changes(&mut b);
    // The store committed both in order; the core hears of the second first.
    let first = b.confirms.remove(0);
    b.commit_one(Ok(()));
    assert_eq!(
        in_force(&b),
        (Forwarding::None, true),
        "*73 stored as 'off'"
    );
    let mut fx = crate::core::Effects::new();
    b.core.resume(first.0, Ok(()), b.now, &mut fx);
    b.absorb(fx);
    assert_eq!(in_force(&b), (Forwarding::None, true));
    assert_eq!(b.core.forwarding_pending(), 0);
    assert_eq!(b.core.deferred_count(), 0, "both answers went out");
}
