//! Flows that close mid-call: a response to a caller whose connection is
//! gone is dropped and changes nothing else; a request to a callee whose
//! connection is gone (or whose binding came from the store) fails that
//! branch at once, and the call goes on to the next target.

use std::time::Duration;

use super::harness::{Bench, Phone, CONF};
use crate::store::{BindingRow, Loaded};
use crate::transport::{IfClosed, Transport};

#[test]
fn response_to_a_closed_caller_flow_is_dropped() {
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    assert_eq!(alice.register(&mut b, 600).status(), Some(200));
    let mut bob = Phone::tcp("bob", "b2", 6002, 17);
    bob.invite(&mut b, "1001", "c-closed-caller");
    b.expect_status(bob.addr(), 100);
    let (_, inv) = b.expect_request(alice.addr(), "INVITE");
    // Bob's connection closes while alice rings.
    b.closed.push(17);
    b.deliver(alice.peer, &alice.respond(&inv, 180, "Ringing"));
    b.deliver(alice.peer, &alice.respond(&inv, 200, "OK"));
    assert!(
        b.take_to(bob.addr()).is_empty(),
        "nothing reaches a closed flow"
    );
    // The call is answered (alice will get the BYE when bob's phone
    // reconnects or the call times out), and sipd goes on.
    assert_eq!(b.core.calls().len(), 1);
    let mut carol = Phone::udp("carol", "c3", 6003);
    assert_eq!(carol.register(&mut b, 600).status(), Some(200));
}

#[test]
fn request_to_a_closed_callee_flow_fails_at_once() {
    // bob hunts to carol (position 3 of group HOME) when unavailable.
    let conf = CONF.replace("exten=1002\n", "exten=74950001002#1002(3)\n");
    let mut b = Bench::new(&conf);
    let mut bob = Phone::tcp("bob", "b2", 6002, 5);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut carol = Phone::udp("carol", "c3", 6003);
    assert_eq!(carol.register(&mut b, 600).status(), Some(200));
    b.closed.push(5);
    b.unreachable.push(bob.addr());
    // The gateway (static host, UDP) calls bob's number.
    let gw = Phone::udp("gw", "", 7000);
    let invite = "INVITE sip:74950001002@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKgw1\r\n\
                  Max-Forwards: 70\r\nFrom: <sip:74951112233@127.0.0.1:7000>;tag=g1\r\n\
                  To: <sip:74950001002@pbx>\r\nCall-ID: c-gw-closed\r\nCSeq: 1 INVITE\r\n\
                  Contact: <sip:74951112233@127.0.0.1:7000>\r\nContent-Length: 0\r\n\r\n";
    b.deliver(gw.peer, invite);
    // No time passes: bob's branch failed at once, carol rings.
    let (_, inv) = b.expect_request(carol.addr(), "INVITE");
    assert_eq!(b.core.counters.send_failures, 1);
    b.deliver(carol.peer, &carol.respond(&inv, 200, "OK"));
    b.expect_status(gw.addr(), 200);
    assert_eq!(b.core.calls().get("c-gw-closed").unwrap().target, "carol");
}

#[test]
fn last_target_unreachable_answers_at_once() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::tcp("bob", "b2", 6002, 5);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    b.closed.push(5);
    b.unreachable.push(bob.addr());
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-unreachable");
    let resp = b.expect_status(alice.addr(), 480);
    assert_eq!(resp.call_id(), "c-unreachable");
    assert_eq!(b.core.calls().len(), 0, "the call ended with a CDR");
}

#[test]
fn request_to_a_binding_restored_from_the_store_connects_again() {
    let row = |name: &str, port: u16| BindingRow {
        name: name.into(),
        contact: format!("sip:{name}@127.0.0.1:{port};transport=tcp"),
        transport: "tcp".into(),
        source: ([127, 0, 0, 1], port).into(),
        expires_at: 1_800_000_000 + 600,
        user_agent: String::new(),
        call_id: "r".into(),
        cseq: 1,
        local: None,
        instance: String::new(),
        reg_id: None,
        outbound: false,
        node: String::new(),
        node_addr: None,
    };
    let loaded = Loaded {
        bindings: vec![row("bob", 6002), row("carol", 6003)],
        ..Loaded::default()
    };
    let mut b = Bench::new(CONF);
    b.core = crate::core::Core::new(
        b.core.config().clone(),
        b.core.local().clone(),
        Some(&loaded),
        crate::core::CoreOptions::default(),
        b.now,
    );
    // Nothing listens at bob's old address; carol's phone does.
    b.unreachable.push(([127, 0, 0, 1], 6002).into());
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-restored-bob");
    b.expect_status(alice.addr(), 480);
    alice.invite(&mut b, "1003", "c-restored-carol");
    let (out, inv) = b.expect_request(([127, 0, 0, 1], 6003).into(), "INVITE");
    assert_eq!(out.dest.transport, Transport::Tcp);
    assert_eq!(
        out.dest.flow, None,
        "a new connection to the stored address"
    );
    assert!(matches!(out.if_closed, IfClosed::ConnectOrFail(_)));
    assert_eq!(
        inv.request_uri(),
        Some("sip:carol@127.0.0.1:6003;transport=tcp")
    );
}

#[test]
fn timeout_still_applies_when_the_connect_hangs() {
    // A connect that never completes is no failure report: the branch ends
    // by the no-response timer, as over UDP.
    let mut b = Bench::new(CONF);
    let mut bob = Phone::tcp("bob", "b2", 6002, 5);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    b.closed.push(5);
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-hang");
    b.take_to(bob.addr());
    b.advance(Duration::from_secs(6));
    b.expect_status(alice.addr(), 480);
}
