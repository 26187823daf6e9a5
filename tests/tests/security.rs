//! End-to-end: what an unauthenticated or hostile peer can and cannot make
//! sipd do. No open relay for requests that merely carry a To tag, no
//! retransmitted rejections (amplification), no caller-asserted identity,
//! no call records ended or overwritten by forged requests, Max-Forwards 0
//! honoured, and the proxy's no-answer rules.

use std::net::UdpSocket;
use std::time::Duration;

use sipd_tests::ua::{unique, Dialog};
use sipd_tests::{text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);
const CONF: &str = "[general]\nnoanswer=2\nmin_expires=2\n\n\
                    [alice]\naccountcode=o\nsecret=alice-pw\nexten=201\n\n\
                    [bob]\naccountcode=o\nsecret=bob-pw\nexten=202\n";

fn phone(sipd: &Sipd, user: &str) -> Ua {
    let mut ua = Ua::udp(sipd.addr, user);
    assert_eq!(ua.register(&format!("{user}-pw"), 300).status(), Some(200));
    ua
}

fn calls(sipd: &Sipd) -> Vec<proto::CallInfo> {
    match sipd.ctl(proto::Command::Calls).into_result().unwrap() {
        proto::Reply::Calls(c) => c.calls,
        other => panic!("{other:?}"),
    }
}

/// Nothing arrives at a socket within `t`.
fn silent(sock: &UdpSocket, t: Duration) -> bool {
    sock.set_read_timeout(Some(t)).unwrap();
    let mut buf = [0u8; 4096];
    sock.recv_from(&mut buf).is_err()
}

#[test]
fn requests_with_a_to_tag_are_not_relayed_to_arbitrary_addresses() {
    let sipd = Sipd::start(CONF);
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = victim.local_addr().unwrap();
    let mut attacker = Ua::udp(sipd.addr, "mallory");
    for method in ["INVITE", "MESSAGE", "BYE"] {
        let req = attacker
            .request(method, &format!("sip:victim@{target}"))
            .set("To", &format!("<sip:victim@{target}>;tag=forged"))
            .body("text/plain", &[b'x'; 1000]);
        let r = attacker.transact(&req).unwrap();
        assert_eq!(r.status(), Some(404), "{method}: {}", text(r.raw()));
        // With a Route naming sipd (a record-routed dialog) it is still refused:
        // the target is nobody sipd knows.
        let req = req
            .clone()
            .set("Route", &format!("<sip:{};lr>", sipd.addr))
            .set(
                "Via",
                &format!(
                    "SIP/2.0/UDP {};branch={};rport",
                    attacker.local,
                    unique("z9hG4bK")
                ),
            );
        let r = attacker.transact(&req).unwrap();
        assert_eq!(
            r.status(),
            Some(404),
            "{method} with Route: {}",
            text(r.raw())
        );
    }
    let mut ack = attacker
        .request("ACK", &format!("sip:victim@{target}"))
        .set("To", "<sip:v@x>;tag=forged");
    ack = ack.set("Route", &format!("<sip:{};lr>", sipd.addr));
    attacker.send(&ack);
    assert!(
        silent(&victim, Duration::from_millis(1500)),
        "something was relayed to the victim"
    );
    // The 404s were not retransmitted either.
    attacker.expect_silence(Duration::from_millis(700));
}

#[test]
fn rejections_before_authentication_are_not_retransmitted() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    let req = ua.request("INVITE", &format!("sip:bob@{}", sipd.addr));
    ua.send(&req);
    assert_eq!(ua.final_response(S).unwrap().status(), Some(407));
    // No ACK sent: a spoofed source never ACKs; sipd must not repeat the 407.
    ua.expect_silence(Duration::from_millis(1800));
    let bad = ua.request("INVITE", &format!("sip:bob@{}", sipd.addr)).set(
        "Proxy-Authorization",
        &format!(
            "Digest username=\"alice\", realm=\"{}\", nonce=\"00\", uri=\"sip:x\", response=\"00\"",
            sipd_tests::ua::unique("r")
        ),
    );
    let r = ua.transact(&bad).unwrap();
    assert!(
        matches!(r.status(), Some(407) | Some(403)),
        "{}",
        text(r.raw())
    );
    ua.expect_silence(Duration::from_millis(1800));
}

#[test]
fn phones_cannot_assert_identity_headers() {
    let sipd = Sipd::start(CONF);
    let mut alice = phone(&sipd, "alice");
    let mut bob = phone(&sipd, "bob");
    alice.invite_with(&format!("sip:bob@{}", sipd.addr), "alice-pw", |r| {
        r.set("P-Asserted-Identity", "\"CEO\" <sip:ceo@example.com>")
            .set("P-Preferred-Identity", "<sip:ceo@example.com>")
            .set(
                "Remote-Party-ID",
                "\"CEO\" <sip:ceo@example.com>;party=calling",
            )
            .set("Diversion", "<sip:ceo@example.com>;reason=unconditional")
    });
    let got = bob.expect_request("INVITE", S);
    for h in [
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Remote-Party-ID",
        "Diversion",
    ] {
        assert!(
            got.all_headers()
                .all(|(n, _)| !n.as_str().eq_ignore_ascii_case(h)),
            "{h} passed through:\n{}",
            text(got.raw())
        );
    }
}

/// alice and bob registered, alice's call to bob answered and ACKed: both
/// phones and alice's dialog.
fn answered_call(sipd: &Sipd) -> (Ua, Ua, Dialog) {
    let mut alice = phone(sipd, "alice");
    let mut bob = phone(sipd, "bob");
    let inv = alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = bob.expect_request("INVITE", S);
    bob.respond(&got, 200, "OK", "callee-tag");
    let ok = alice.expect_status(200, S);
    let mut d = Dialog::uac(&inv, &ok);
    alice.send(&alice.in_dialog(&mut d, "ACK"));
    bob.expect_request("ACK", S);
    (alice, bob, d)
}

#[test]
fn forged_bye_and_reused_call_id_leave_the_call_alone() {
    let sipd = Sipd::start(CONF);
    let (mut alice, _bob, d) = answered_call(&sipd);
    // A BYE with the right Call-ID but a wrong To tag.
    let mut forged = d.clone();
    forged.remote = forged.remote.replace("callee-tag", "WRONG");
    alice.send(&alice.in_dialog(&mut forged, "BYE"));
    let _ = alice.final_response(S);
    assert_eq!(
        calls(&sipd).first().map(|c| c.state.clone()),
        Some("answered".to_string())
    );
    // A new INVITE reusing the Call-ID of the call in progress.
    let again = alice
        .request("INVITE", &format!("sip:*99@{}", sipd.addr))
        .set("Call-ID", &d.call_id);
    alice.send(&again);
    let ch = alice.final_response(S).unwrap();
    let r = alice
        .transact(&alice.authorized(&again, &ch, "alice-pw", "MD5", 1))
        .unwrap();
    assert_eq!(r.status(), Some(482), "{}", text(r.raw()));
    let c = calls(&sipd);
    assert_eq!((c.len(), c[0].state.as_str()), (1, "answered"));
}

#[test]
fn max_forwards_zero_in_dialog() {
    let sipd = Sipd::start(CONF);
    let (mut alice, mut bob, mut d) = answered_call(&sipd);
    let info = alice.in_dialog(&mut d, "INFO").set("Max-Forwards", "0");
    assert_eq!(alice.transact(&info).unwrap().status(), Some(483));
    let opt = alice.in_dialog(&mut d, "OPTIONS").set("Max-Forwards", "0");
    assert_eq!(alice.transact(&opt).unwrap().status(), Some(483));
    alice.send(&alice.in_dialog(&mut d, "ACK").set("Max-Forwards", "0"));
    bob.expect_silence(Duration::from_millis(500));
}

#[test]
fn slow_reinvite_does_not_end_the_call() {
    let sipd = Sipd::start(CONF);
    let (mut alice, mut bob, mut d) = answered_call(&sipd);
    alice.send(&alice.in_dialog(&mut d, "INVITE"));
    let re = bob.expect_request("INVITE", S);
    // bob thinks for longer than the no-response time of initial INVITEs.
    std::thread::sleep(Duration::from_millis(6000));
    while bob.recv(Duration::from_millis(10)).is_some() {}
    bob.respond(&re, 200, "OK", "callee-tag");
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.cseq().method.as_str(), "INVITE");
    alice.send(&alice.in_dialog(&mut d, "ACK"));
    bob.expect_request("ACK", S);
    // No BYE was sent to bob on alice's behalf.
    bob.expect_silence(Duration::from_millis(500));
    assert_eq!(calls(&sipd)[0].state, "answered");
}

#[test]
fn noanswer_also_applies_to_the_last_target() {
    let sipd = Sipd::start(CONF);
    let mut alice = phone(&sipd, "alice");
    let mut bob = phone(&sipd, "bob");
    let inv = alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = bob.expect_request("INVITE", S);
    bob.respond(&got, 180, "Ringing", "b");
    let c = bob.expect_request("CANCEL", S);
    bob.respond(&c, 200, "OK", "b");
    bob.respond(&got, 487, "Request Terminated", "b");
    let r = alice.final_response(S).unwrap();
    assert_eq!(r.status(), Some(480), "{}", text(r.raw()));
    let cdr = wait_for(S, || {
        match sipd
            .ctl(proto::Command::Cdr { last: Some(5) })
            .into_result()
            .unwrap()
        {
            proto::Reply::Cdr(c) => c
                .records
                .into_iter()
                .find(|r| Some(r.call_id.as_str()) == inv.get("Call-ID")),
            _ => None,
        }
    })
    .unwrap();
    assert_eq!(cdr.disposition, "NO ANSWER");
}
