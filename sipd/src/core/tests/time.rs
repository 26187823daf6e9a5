//! The core keeps time only through what it is given: registrations expire,
//! CDRs carry the bench's wall clock, and nothing happens while the clock
//! stands still.

use std::time::Duration;

use super::harness::{Bench, Phone, CONF};
use crate::store::Write;

#[test]
fn registrations_expire_on_the_given_clock() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 60).status(), Some(200));
    b.advance(Duration::from_secs(59));
    assert!(b.core.registrar().get("bob").is_some());
    b.writes.clear();
    b.advance(Duration::from_secs(2));
    assert!(b.core.registrar().get("bob").is_none());
    assert_eq!(b.writes, vec![Write::DeleteBinding("bob".into())]);
}

#[test]
fn cdr_times_come_from_the_clock_given() {
    let mut b = Bench::new(CONF);
    let start = b.now.unix_ms;
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-time");
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    b.advance(Duration::from_millis(1500));
    b.deliver(bob.peer, &bob.respond(&inv, 486, "Busy Here"));
    let cdr = b
        .writes
        .iter()
        .find_map(|w| match w {
            Write::AddCdr(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a CDR");
    assert_eq!(cdr.start, start);
    assert_eq!(cdr.end, start + 1500);
    assert_eq!(cdr.disposition, "BUSY");
}

#[test]
fn nothing_happens_while_the_clock_stands_still() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-still");
    b.take_to(bob.addr());
    for _ in 0..100 {
        b.tick();
    }
    assert!(
        b.sent.iter().all(|o| o.dest.addr != bob.addr()),
        "no retransmission"
    );
}
