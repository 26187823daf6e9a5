//! CANCEL from the caller (RFC 3261 §16.10): answered 200 at once, sent
//! down the ringing branch, and the caller gets that branch's 487, or
//! sipd's own 487 when none comes. Timers that give up on a branch
//! (noanswer, timer C) do not turn a cancelled call into a 480 or 408.

use std::time::Duration;

use super::harness::{hop_request, Bench, Phone, CONF};
use crate::sip::{Limits, Message};

/// alice calls `dialed` and `callee` rings; returns alice's INVITE (as
/// she sent it, authenticated) and the one the callee got.
fn ringing(b: &mut Bench, alice: &mut Phone, dialed: &str, callee: &Phone) -> (Message, Message) {
    alice.invite(b, dialed, &format!("c-cancel-{dialed}"));
    let sent = Message::parse(alice.last.as_bytes(), &Limits::default()).unwrap();
    let (_, inv) = b.expect_request(callee.addr(), "INVITE");
    b.deliver(callee.peer, &callee.respond(&inv, 180, "Ringing"));
    b.expect_status(alice.addr(), 180);
    (sent, inv)
}

/// The final statuses sent to `phone` since the last take (retransmissions once).
fn finals(b: &mut Bench, phone: &Phone) -> Vec<u16> {
    let mut got: Vec<u16> = b
        .take_to(phone.addr())
        .iter()
        .filter_map(|(_, m)| m.status())
        .filter(|s| *s >= 200)
        .collect();
    got.dedup();
    got
}

#[test]
fn noanswer_does_not_answer_a_cancelled_call_itself() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    let (invite, at_bob) = ringing(&mut b, &mut alice, "1002", &bob);
    b.deliver(alice.peer, &hop_request(&invite, "CANCEL", None));
    b.expect_status(alice.addr(), 200);
    let (_, cancel) = b.expect_request(bob.addr(), "CANCEL");
    // bob is slow to answer the CANCEL; noanswer (5 s) goes by meanwhile.
    b.advance(Duration::from_secs(6));
    let early = finals(&mut b, &alice);
    assert!(early.is_empty(), "nothing for alice yet, got {early:?}");
    b.deliver(bob.peer, &bob.respond(&cancel, 200, "OK"));
    b.deliver(bob.peer, &bob.respond(&at_bob, 487, "Request Terminated"));
    b.expect_status(alice.addr(), 487);
}

#[test]
fn timer_c_does_not_answer_a_cancelled_call_with_408() {
    let mut b = Bench::new(CONF);
    let gw = Phone::udp("gw", "", 7000);
    let mut alice = Phone::udp("alice", "a1", 6001);
    // Out through the gateway: no noanswer, the branch rings until timer C.
    let (invite, _) = ringing(&mut b, &mut alice, "84991234567", &gw);
    b.advance(Duration::from_secs(170));
    b.deliver(alice.peer, &hop_request(&invite, "CANCEL", None));
    b.expect_status(alice.addr(), 200);
    // The gateway never answers; timer C (181 s) comes before the
    // CANCEL guard (32 s after the CANCEL).
    b.advance(Duration::from_secs(40));
    assert_eq!(finals(&mut b, &alice), vec![487]);
}

#[test]
fn a_cancelled_call_cannot_be_picked_up() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut carol = Phone::udp("carol", "c3", 6003);
    assert_eq!(carol.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    let (invite, _) = ringing(&mut b, &mut alice, "1002", &bob);
    b.deliver(alice.peer, &hop_request(&invite, "CANCEL", None));
    b.expect_status(alice.addr(), 200);
    // bob has not answered the CANCEL yet when carol dials *11.
    carol.invite(&mut b, "*11", "c-pick-cancelled");
    let (_, r) = b.expect(carol.addr(), "a final", |m| m.status() >= Some(200));
    assert_eq!(
        super::harness::first_line(&r),
        "SIP/2.0 404 Nothing To Pick Up"
    );
    assert!(b.take_to(carol.addr()).is_empty(), "no INVITE for carol");
}
