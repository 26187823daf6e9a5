//! The brute-force guard in the core: failures counted per (user, source),
//! per source and per user; the tables cannot be flushed; a locked attempt
//! gets the same 403 as a wrong password; a user's own sources are not
//! locked out by guesses from elsewhere. (The tables themselves are tested
//! in `auth/guard.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use super::answers::shape;
use super::harness::{register_uri, Bench, Phone, CONF};
use crate::core::identify::Guard;
use crate::sip::Message;
use crate::transport::Transport;

fn at(ip: [u8; 4], user: &str, secret: &str) -> Phone {
    Phone::at(
        user,
        secret,
        Transport::Udp,
        SocketAddr::from((ip, 5060)),
        None,
    )
}

fn status(m: &Message) -> Option<u16> {
    m.status()
}

#[test]
fn one_source_guessing_one_user_is_locked_after_five() {
    let mut b = Bench::new(CONF);
    let mut mallory = at([10, 0, 0, 9], "alice", "wrong");
    let mut wrong = Vec::new();
    for _ in 0..5 {
        let r = mallory.register(&mut b, 600);
        assert_eq!(status(&r), Some(403));
        wrong.push(shape(&r));
    }
    // Locked: the right password gets the very same 403.
    mallory.secret = "a1".into();
    let locked = mallory.register(&mut b, 600);
    assert_eq!(shape(&locked), wrong[0]);
    assert!(b.core.registrar().get("alice").is_none());
    // alice from elsewhere, and bob from there, are not affected.
    let mut alice = at([10, 0, 0, 1], "alice", "a1");
    assert_eq!(status(&alice.register(&mut b, 600)), Some(200));
    let mut bob = at([10, 0, 0, 9], "bob", "b2");
    bob.peer.addr.set_port(5070);
    assert_eq!(status(&bob.register(&mut b, 600)), Some(200));
    // After 10 minutes the lock is over.
    b.advance(Duration::from_secs(600));
    assert_eq!(status(&mallory.register(&mut b, 600)), Some(200));
}

/// A wrong REGISTER for `p`'s user from `p`'s address, answering `ch` (a
/// challenge for that user): its answer.
fn wrong_answer(b: &mut Bench, p: &mut Phone, ch: &Message) -> Option<u16> {
    let auth = p.authorization(ch, "REGISTER", &register_uri());
    let r = p.register_request(600, &auth);
    b.deliver(p.peer, &r);
    b.take_to(p.addr()).first().and_then(|(_, m)| m.status())
}

#[test]
fn failures_from_17000_addresses_do_not_unlock_a_fresh_one() {
    // The guard alone: the flood limit (which would ban the collector's
    // address long before) is off.
    let mut b = Bench::new(&CONF.replace("[general]\n", "[general]\nflood=0/1\n"));
    // 17,000 failures from distinct addresses (more than the source table
    // holds) for 2,000 made-up users (a few each, below the per-user limit;
    // a wrong password does not use a nonce up, so one challenge each).
    let mut collector = at([9, 9, 9, 9], "x", "x");
    let challenges: Vec<(String, Message)> = (0..2_000)
        .map(|k| {
            collector.user = format!("junk{k}");
            let r = collector.register_request(600, "");
            b.deliver(collector.peer, &r);
            (
                collector.user.clone(),
                b.expect_status(collector.addr(), 401),
            )
        })
        .collect();
    for i in 0..17_000u32 {
        let [_, x, y, z] = i.to_be_bytes();
        let (user, ch) = &challenges[i as usize % 2_000];
        let mut p = at([10, x, y, z], user, "x");
        assert_eq!(wrong_answer(&mut b, &mut p, ch), Some(403));
    }
    assert!(b.core.guard.tracked() <= Guard::MAX_TRACKED);
    let full = b.core.guard.limits().source.capacity;
    assert_eq!(b.core.guard.sizes().1, full, "the source table is full");
    let mut mallory = at([172, 16, 0, 1], "alice", "wrong");
    for i in 0..30u32 {
        mallory.secret = format!("guess{i}");
        assert_eq!(status(&mallory.register(&mut b, 600)), Some(403));
        // Flushing again between guesses does not help.
        for j in 0..100u32 {
            let (user, ch) = &challenges[(i * 100 + j) as usize % 2_000];
            let mut p = at([11, i as u8, 0, j as u8], user, "x");
            wrong_answer(&mut b, &mut p, ch);
        }
    }
    mallory.secret = "a1".into();
    assert_eq!(status(&mallory.register(&mut b, 600)), Some(403));
}

#[test]
fn guesses_from_many_sources_lock_the_user_but_not_her_own_phone() {
    let mut b = Bench::new(CONF);
    let mut phone = at([10, 0, 0, 1], "alice", "a1");
    assert_eq!(status(&phone.register(&mut b, 600)), Some(200));
    for i in 0..10u8 {
        let mut m = at([10, 1, 0, i], "alice", "wrong");
        assert_eq!(status(&m.register(&mut b, 600)), Some(403));
    }
    let mut newcomer = at([10, 2, 0, 1], "alice", "a1");
    assert_eq!(status(&newcomer.register(&mut b, 600)), Some(403));
    assert_eq!(status(&phone.register(&mut b, 600)), Some(200));
    // Her phone's calls are not affected either (INVITEs authenticate too).
    let mut bob = at([10, 0, 0, 2], "bob", "b2");
    assert_eq!(status(&bob.register(&mut b, 600)), Some(200));
    phone.invite(&mut b, "1002", "c-trusted");
    b.expect_request(bob.addr(), "INVITE");
    // The lock ends after 15 minutes.
    b.advance(Duration::from_secs(900));
    assert_eq!(status(&newcomer.register(&mut b, 600)), Some(200));
}

#[test]
fn a_spraying_source_is_locked_for_users_that_never_logged_in_there() {
    let mut b = Bench::new(CONF);
    let office = [192, 168, 1, 1];
    let mut alice = at(office, "alice", "a1");
    assert_eq!(status(&alice.register(&mut b, 600)), Some(200));
    for k in 0..20 {
        let mut p = at(office, &format!("user{k}"), "123456");
        p.peer.addr.set_port(6000 + k);
        assert_eq!(status(&p.register(&mut b, 600)), Some(403));
    }
    let mut bob = at(office, "bob", "b2");
    bob.peer.addr.set_port(5999);
    assert_eq!(status(&bob.register(&mut b, 600)), Some(403));
    assert_eq!(status(&alice.register(&mut b, 600)), Some(200));
}

#[test]
fn an_ipv6_host_is_one_source_per_64() {
    let mut b = Bench::new(CONF);
    for i in 0..5u16 {
        let addr: SocketAddr = format!("[2001:db8:0:1::{i:x}]:5060").parse().unwrap();
        let mut m = Phone::at("alice", "wrong", Transport::Udp, addr, None);
        assert_eq!(status(&m.register(&mut b, 600)), Some(403));
    }
    let addr: SocketAddr = "[2001:db8:0:1:aaaa::1]:5060".parse().unwrap();
    let mut same64 = Phone::at("alice", "a1", Transport::Udp, addr, None);
    assert_eq!(status(&same64.register(&mut b, 600)), Some(403));
    let addr: SocketAddr = "[2001:db8:0:2::1]:5060".parse().unwrap();
    let mut other64 = Phone::at("alice", "a1", Transport::Udp, addr, None);
    assert_eq!(status(&other64.register(&mut b, 600)), Some(200));
}

#[test]
fn the_tables_stay_bounded() {
    let mut b = Bench::new(CONF);
    for i in 0..3_000u32 {
        let [_, x, y, z] = i.to_be_bytes();
        let mut p = at([10, x, y, z], &format!("u{i}"), "x");
        p.register(&mut b, 600);
    }
    let (pairs, sources, users, trusted) = b.core.guard.sizes();
    assert_eq!((pairs, sources, users, trusted), (3_000, 3_000, 3_000, 0));
    // All windows over: the timer's sweep forgets them.
    b.advance(Duration::from_secs(901));
    assert_eq!(b.core.guard.tracked(), 0);
}
