//! OPTIONS (RFC 3261 §11, §16.3): sipd answers one itself only when the
//! Request-URI names sipd (no user part; one of its addresses or names);
//! for anything else it is a proxy: Max-Forwards 0 gets 483, and a request
//! it routes is challenged and routed like any other.

use super::harness::{Bench, Phone, CONF};

fn options(ruri: &str, max_forwards: u32) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6100;branch=z9hG4bKo{max_forwards}{}\r\n\
         Max-Forwards: {max_forwards}\r\nFrom: <sip:probe@127.0.0.1:6100>;tag=p\r\nTo: <{ruri}>\r\n\
         Call-ID: opt-{ruri}-{max_forwards}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        ruri.len()
    )
}

fn answer(ruri: &str, mf: u32) -> u16 {
    let mut b = Bench::new(CONF);
    let probe = Phone::udp("probe", "", 6100);
    b.deliver(probe.peer, &options(ruri, mf));
    let got = b.take_to(probe.addr());
    assert_eq!(got.len(), 1, "one answer to {ruri}");
    got[0].1.status().unwrap()
}

#[test]
fn answered_when_it_names_us() {
    assert_eq!(answer("sip:127.0.0.1:5060", 70), 200);
    assert_eq!(answer("sip:127.0.0.1", 70), 200);
    assert_eq!(answer("sip:pbx", 70), 200, "the realm without a port");
    assert_eq!(answer("sip:127.0.0.1:5060", 0), 200, "Max-Forwards 0 to us");
}

#[test]
fn not_answered_as_if_we_were_someone_else() {
    assert_eq!(answer("sip:other.example.com", 0), 483);
    assert_eq!(answer("sip:127.0.0.1:5999", 0), 483);
    assert_eq!(answer("sip:bob@pbx", 0), 483);
    // Routed like any request: the unknown sender is challenged first.
    assert_eq!(answer("sip:bob@pbx", 70), 407);
    assert_eq!(answer("sip:other.example.com", 70), 407);
}

#[test]
fn routed_options_reach_the_client() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    let ruri = "sip:bob@pbx";
    let r = alice.request("OPTIONS", ruri, "<sip:bob@pbx>", "o-1", "o1", "", "");
    b.deliver(alice.peer, &r);
    let ch = b.expect_status(alice.addr(), 407);
    let auth = alice.authorization(&ch, "OPTIONS", ruri);
    let r = alice.request("OPTIONS", ruri, "<sip:bob@pbx>", "o-1", "o2", &auth, "");
    b.deliver(alice.peer, &r);
    let (_, opt) = b.expect_request(bob.addr(), "OPTIONS");
    b.deliver(bob.peer, &bob.respond(&opt, 200, "OK"));
    let ok = b.expect_status(alice.addr(), 200);
    assert!(
        ok.to().tag().is_some_and(|t| t == bob.tag),
        "bob's answer, not sipd's"
    );
}
