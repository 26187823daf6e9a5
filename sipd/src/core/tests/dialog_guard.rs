//! In-dialog requests of a tracked call (toll fraud through an
//! established dialog): relayed only from one of the call's two ends, only
//! to the other end's remote target, with exactly the dialog's route set.
//! A CANCEL only from the source of its INVITE.

use super::harness::{first_line, hop_request, Bench, Phone, CONF};
use crate::sip::{HeaderName, Limits, Message};

/// alice calls bob (1002), bob answers; returns (alice's route set, bob's
/// Contact, From as alice sends it, To as alice sends it, bob's INVITE).
struct Answered {
    routes: Vec<String>,
    bob_target: String,
    from: String,
    to: String,
    call_id: String,
}

fn answered(b: &mut Bench, alice: &mut Phone, bob: &Phone, call_id: &str) -> Answered {
    alice.invite(b, "1002", call_id);
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    b.deliver(bob.peer, &bob.respond(&inv, 200, "OK"));
    let ok = b.expect_status(alice.addr(), 200);
    let routes: Vec<String> = ok
        .headers(&HeaderName::RecordRoute)
        .map(|r| r.to_string())
        .collect();
    Answered {
        routes: routes.into_iter().rev().collect(),
        bob_target: format!("sip:bob@{}", bob.addr()),
        from: ok.header(&HeaderName::From).unwrap().to_string(),
        to: ok.header(&HeaderName::To).unwrap().to_string(),
        call_id: call_id.to_string(),
    }
}

fn setup() -> (Bench, Phone, Phone) {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    assert_eq!(alice.register(&mut b, 600).status(), Some(200));
    b.take_to(alice.addr());
    (b, alice, bob)
}

fn gw() -> std::net::SocketAddr {
    "127.0.0.1:7000".parse().unwrap()
}

#[test]
fn the_callers_own_in_dialog_requests_reach_the_callee() {
    let (mut b, mut alice, bob) = setup();
    let d = answered(&mut b, &mut alice, &bob, "c-dg-ok");
    let info = alice.dialog_request(
        "INFO",
        &d.bob_target,
        &d.routes,
        &d.from,
        &d.to,
        &d.call_id,
        "info1",
        None,
    );
    b.deliver(alice.peer, &info);
    b.expect_request(bob.addr(), "INFO");
}

#[test]
fn a_reinvite_retargeted_to_a_gateway_number_with_a_forged_route_is_refused() {
    let (mut b, mut alice, bob) = setup();
    let d = answered(&mut b, &mut alice, &bob, "c-dg-fraud");
    let mut routes = d.routes.clone();
    routes.push("<sip:127.0.0.1:7000;lr>".to_string());
    let inv = alice.dialog_request(
        "INVITE",
        "sip:9810441234567890@127.0.0.1:7000",
        &routes,
        &d.from,
        &d.to,
        &d.call_id,
        "fraud1",
        None,
    );
    b.deliver(alice.peer, &inv);
    b.expect_status(alice.addr(), 403);
    assert!(b.take_to(gw()).is_empty(), "nothing reaches the gateway");
    assert!(b.take_to(bob.addr()).is_empty(), "nor bob");
    // A Request-URI other than bob's Contact, with the right route set.
    let inv = alice.dialog_request(
        "INVITE",
        "sip:9810441234567890@127.0.0.1:7000",
        &d.routes,
        &d.from,
        &d.to,
        &d.call_id,
        "fraud2",
        None,
    );
    b.deliver(alice.peer, &inv);
    b.expect_status(alice.addr(), 403);
    assert!(b.take_to(gw()).is_empty());
    assert!(b.take_to(bob.addr()).is_empty());
    assert_eq!(b.core.counters.dialog_refused, 2);
}

#[test]
fn a_bye_from_a_third_address_is_refused_and_the_real_one_works() {
    let (mut b, mut alice, bob) = setup();
    let d = answered(&mut b, &mut alice, &bob, "c-dg-bye");
    let mut mallory = Phone::udp("alice", "", 6666);
    mallory.tag = alice.tag.clone();
    let bye = mallory.dialog_request(
        "BYE",
        &d.bob_target,
        &d.routes,
        &d.from,
        &d.to,
        &d.call_id,
        "bye-m",
        None,
    );
    b.deliver(mallory.peer, &bye);
    b.expect_status(mallory.addr(), 403);
    assert!(b.take_to(bob.addr()).is_empty(), "bob got nothing");
    assert_eq!(b.core.calls().len(), 1, "the call goes on");
    let bye = alice.dialog_request(
        "BYE",
        &d.bob_target,
        &d.routes,
        &d.from,
        &d.to,
        &d.call_id,
        "bye-a",
        None,
    );
    b.deliver(alice.peer, &bye);
    b.expect_request(bob.addr(), "BYE");
    assert_eq!(b.core.calls().len(), 0, "ended with a CDR");
}

#[test]
fn the_callee_reaches_the_caller_but_not_another_target() {
    let (mut b, mut alice, mut bob) = setup();
    let d = answered(&mut b, &mut alice, &bob, "c-dg-back");
    // bob's side of the dialog: From/To swapped, route set as received.
    let bob_routes: Vec<String> = d.routes.iter().rev().cloned().collect();
    let alice_target = format!("sip:alice@{};transport=udp", alice.addr());
    let bye = bob.dialog_request(
        "INFO",
        "sip:1234@127.0.0.1:7000",
        &bob_routes,
        &d.to,
        &d.from,
        &d.call_id,
        "binfo1",
        None,
    );
    b.deliver(bob.peer, &bye);
    b.expect_status(bob.addr(), 403);
    assert!(b.take_to(gw()).is_empty());
    let info = bob.dialog_request(
        "INFO",
        &alice_target,
        &bob_routes,
        &d.to,
        &d.from,
        &d.call_id,
        "binfo2",
        None,
    );
    b.deliver(bob.peer, &info);
    b.expect_request(alice.addr(), "INFO");
}

#[test]
fn a_cancel_from_another_source_is_not_relayed() {
    let (mut b, mut alice, bob) = setup();
    alice.invite(&mut b, "1002", "c-dg-cancel");
    let sent = Message::parse(alice.last.as_bytes(), &Limits::default()).unwrap();
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    b.deliver(bob.peer, &bob.respond(&inv, 180, "Ringing"));
    b.expect_status(alice.addr(), 180);
    let mallory = Phone::udp("mallory", "", 6666);
    b.deliver(mallory.peer, &hop_request(&sent, "CANCEL", None));
    let r = b
        .expect(mallory.addr(), "a final", |m| m.status() >= Some(200))
        .1;
    assert_eq!(
        first_line(&r),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );
    assert!(b.take_to(bob.addr()).is_empty(), "no CANCEL for bob");
    b.deliver(alice.peer, &hop_request(&sent, "CANCEL", None));
    b.expect_status(alice.addr(), 200);
    b.expect_request(bob.addr(), "CANCEL");
}

#[test]
fn a_client_at_its_call_limit_gets_503_and_every_call_is_accounted() {
    let conf = CONF.replace("noanswer=5\n", "noanswer=5\ncall_limit=2\n");
    let mut b = Bench::new(&conf);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    for i in 0..2 {
        alice.invite(&mut b, "1002", &format!("c-lim-{i}"));
        b.expect_request(bob.addr(), "INVITE");
    }
    alice.invite(&mut b, "1002", "c-lim-2");
    let r = b
        .expect(alice.addr(), "a final", |m| m.status() >= Some(200))
        .1;
    assert_eq!(first_line(&r), "SIP/2.0 503 Call Limit Reached");
    assert!(r.header(&HeaderName::RetryAfter).is_some());
    assert!(
        b.take_to(bob.addr()).is_empty(),
        "the third call is not proxied"
    );
    assert_eq!(b.core.calls().len(), 2);
    assert_eq!(b.core.counters.call_limit, 1);
}

#[test]
fn a_full_calls_table_refuses_a_new_call_instead_of_proxying_it_untracked() {
    let opts = crate::core::CoreOptions {
        max_calls: 1,
        ..Default::default()
    };
    let mut b = Bench::with(CONF, opts, vec![super::harness::sipd_addr()]);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    let mut carol = Phone::udp("carol", "c3", 6003);
    alice.invite(&mut b, "1002", "c-full-0");
    b.expect_request(bob.addr(), "INVITE");
    carol.invite(&mut b, "1002", "c-full-1");
    let r = b
        .expect(carol.addr(), "a final", |m| m.status() >= Some(200))
        .1;
    assert_eq!(first_line(&r), "SIP/2.0 503 Service Unavailable");
    assert!(r.header(&HeaderName::RetryAfter).is_some());
    assert!(b.take_to(bob.addr()).is_empty());
}

#[test]
fn calls_that_end_free_their_place_under_the_limit() {
    let conf = CONF.replace("noanswer=5\n", "noanswer=5\ncall_limit=1\n");
    let mut b = Bench::new(&conf);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    assert_eq!(alice.register(&mut b, 600).status(), Some(200));
    b.take_to(alice.addr());
    let d = answered(&mut b, &mut alice, &bob, "c-free-1");
    let bye = alice.dialog_request(
        "BYE",
        &d.bob_target,
        &d.routes,
        &d.from,
        &d.to,
        &d.call_id,
        "bye-free",
        None,
    );
    b.deliver(alice.peer, &bye);
    b.expect_request(bob.addr(), "BYE");
    assert_eq!(b.core.calls().len(), 0);
    assert_eq!(b.core.calls().of_caller("alice"), 0);
    answered(&mut b, &mut alice, &bob, "c-free-2");
}
