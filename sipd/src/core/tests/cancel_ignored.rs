//! A callee that ignores CANCEL: the caller gets 487 from sipd after 64*T1
//! and the INVITE branch is given up then too (RFC 3261 §9.1), not held
//! until timer C (3 minutes): the tables drain.

use std::time::Duration;

use super::harness::{Bench, Phone, CONF};

fn ringing(b: &mut Bench) -> (Phone, Phone) {
    let mut alice = Phone::udp("alice", "a1", 6001);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(b, 600).status(), Some(200));
    alice.invite(b, "1002", "c-ignore");
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    b.deliver(bob.peer, &bob.respond(&inv, 180, "Ringing"));
    b.expect_status(alice.addr(), 180);
    (alice, bob)
}

#[test]
fn caller_cancel_ignored_by_the_callee_drains() {
    let mut b = Bench::new(CONF);
    let (alice, bob) = ringing(&mut b);
    let cancel = alice.cancel_last("1002", "c-ignore");
    b.deliver(alice.peer, &cancel);
    b.expect_status(alice.addr(), 200);
    b.expect_request(bob.addr(), "CANCEL");
    // bob says nothing more.
    b.advance(Duration::from_secs(33));
    b.expect_status(alice.addr(), 487);
    assert!(
        b.take_to(alice.addr())
            .iter()
            .all(|(_, m)| m.status() == Some(487)),
        "the caller gets 487 and nothing else"
    );
    b.advance(Duration::from_secs(40));
    assert_eq!(
        b.core.transaction_count(),
        0,
        "no transaction held to timer C"
    );
    assert_eq!(b.core.context_count(), 0);
    assert_eq!(b.core.calls().len(), 0);
}

#[test]
fn noanswer_cancel_ignored_by_the_callee_drains() {
    let mut b = Bench::new(CONF);
    let (alice, bob) = ringing(&mut b);
    // noanswer=5: sipd cancels bob's branch itself; bob ignores it.
    b.advance(Duration::from_secs(6));
    b.expect_request(bob.addr(), "CANCEL");
    b.expect_status(alice.addr(), 480);
    b.advance(Duration::from_secs(80));
    assert_eq!(b.core.transaction_count(), 0);
    assert_eq!(b.core.context_count(), 0);
}
