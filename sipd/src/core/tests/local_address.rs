//! Several listen addresses of one family: every peer is answered from the
//! address it used, and Via / Record-Route name the address each hop uses.

use std::net::SocketAddr;

use super::harness::{Bench, Phone, CONF};
use crate::core::CoreOptions;
use crate::sip::HeaderName;

fn two() -> (SocketAddr, SocketAddr) {
    (
        "127.0.0.1:5060".parse().unwrap(),
        "127.0.0.2:5060".parse().unwrap(),
    )
}

#[test]
fn answered_from_the_address_used() {
    let (one, other) = two();
    let mut b = Bench::with(CONF, CoreOptions::default(), vec![one, other]);
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.peer.local = Some(other);
    let resp = {
        let ruri = "sip:127.0.0.2:5060";
        let r = alice.request("REGISTER", ruri, "<sip:alice@pbx>", "r-la", "la1", "", "");
        b.deliver(alice.peer, &r);
        b.take_to(alice.addr())
    };
    assert_eq!(resp.len(), 1);
    assert_eq!(
        resp[0].0.dest.local,
        Some(other),
        "the 401 leaves from 127.0.0.2"
    );
}

#[test]
fn via_and_record_route_name_each_side() {
    let (one, other) = two();
    let mut b = Bench::with(CONF, CoreOptions::default(), vec![one, other]);
    let mut bob = Phone::udp("bob", "b2", 6002);
    bob.peer.local = Some(one);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.peer.local = Some(other);
    alice.invite(&mut b, "1002", "c-two-addr");
    let (out, inv) = b.expect_request(bob.addr(), "INVITE");
    assert_eq!(
        out.dest.local,
        Some(one),
        "toward bob from the address he used"
    );
    assert!(inv.top_via().to_string().contains("127.0.0.1:5060"));
    let rr: Vec<&str> = inv.header_values(&HeaderName::RecordRoute);
    assert_eq!(
        rr,
        vec!["<sip:127.0.0.1:5060;lr>", "<sip:127.0.0.2:5060;lr>"],
        "RFC 5658: one entry per side"
    );
    b.deliver(bob.peer, &bob.respond(&inv, 200, "OK"));
    let ok = b.take_to(alice.addr());
    let (out, _) = ok.iter().find(|(_, m)| m.status() == Some(200)).unwrap();
    assert_eq!(out.dest.local, Some(other));
}
