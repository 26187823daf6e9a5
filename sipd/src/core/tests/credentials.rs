//! Credentials stay here: the Proxy-Authorization / Authorization sipd
//! consumed (its own realm) never leaves it, in the first request of a
//! call or inside a dialog; credentials for other realms pass on.

use super::harness::{Bench, Phone, CONF, REALM};
use crate::sip::HeaderName;

fn answered_call(b: &mut Bench) -> (Phone, Phone, crate::sip::Message) {
    let mut alice = Phone::udp("alice", "a1", 6001);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(b, 600).status(), Some(200));
    alice.invite(b, "1002", "c-cred");
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    b.deliver(bob.peer, &bob.respond(&inv, 200, "OK"));
    b.expect_status(alice.addr(), 200);
    (alice, bob, inv)
}

#[test]
fn the_invite_loses_our_credentials_and_keeps_others() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    // A request carrying credentials for a proxy further on too.
    let ruri = format!("sip:1002@{REALM}");
    let r = alice.request(
        "INVITE",
        &ruri,
        &format!("<{ruri}>"),
        "c-two-realms",
        "x1",
        "Proxy-Authorization: Digest username=\"alice\", realm=\"far.example\", nonce=\"n\", uri=\"sip:1002@pbx\", response=\"00\"\r\n",
        "",
    );
    b.deliver(alice.peer, &r);
    let ch = b.expect_status(alice.addr(), 407);
    let ours = alice.authorization(&ch, "INVITE", &ruri);
    let r = alice.request(
        "INVITE",
        &ruri,
        &format!("<{ruri}>"),
        "c-two-realms",
        "x2",
        &format!("{ours}Proxy-Authorization: Digest username=\"alice\", realm=\"far.example\", nonce=\"n\", uri=\"sip:1002@pbx\", response=\"00\"\r\n"),
        "",
    );
    b.deliver(alice.peer, &r);
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    let creds: Vec<&str> = inv.headers(&HeaderName::ProxyAuthorization).collect();
    assert_eq!(creds.len(), 1, "{creds:?}");
    assert!(creds[0].contains("far.example"));
}

#[test]
fn in_dialog_requests_lose_our_credentials() {
    let mut b = Bench::new(CONF);
    let (mut alice, bob, inv) = answered_call(&mut b);
    // alice sends an in-dialog NOTIFY with (stale) credentials for our realm.
    let to = format!("<sip:1002@{REALM}>;tag={}", bob.tag);
    let route = inv.header(&HeaderName::RecordRoute).unwrap().to_string();
    let r = alice.request(
        "NOTIFY",
        bob.contact().trim_matches(|c| c == '<' || c == '>'),
        &to,
        "c-cred",
        "n1",
        &format!(
            "Route: {route}\r\nEvent: talk\r\nProxy-Authorization: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"n\", uri=\"x\", response=\"11\"\r\nAuthorization: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"n\", uri=\"x\", response=\"22\"\r\n"
        ),
        "",
    );
    b.deliver(alice.peer, &r);
    let (_, notify) = b.expect_request(bob.addr(), "NOTIFY");
    assert!(notify.header(&HeaderName::ProxyAuthorization).is_none());
    assert!(notify.header(&HeaderName::Authorization).is_none());
}
