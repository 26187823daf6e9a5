//! Security of established calls (issue: security, points 1 and 2): a
//! party to a call cannot re-target its dialog (toll fraud through a
//! gateway), nobody else can hang it up, cancel it or re-INVITE it, and one
//! client cannot fill the calls table.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sipd_tests::ua::{unique, Dialog};
use sipd_tests::{free_port, text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(700);

/// The gateway must see nothing but what a call sends it: its
/// health-check OPTIONS are off (`qualify=0`).
fn conf(gw: SocketAddr, general: &str) -> String {
    format!(
        "[general]\nnoanswer=30\n{general}\n\
         [alice]\naccountcode=office\nsecret=alice-pw\nexten=4951110001#1001\ndialplan=^1...$\n\n\
         [bob]\naccountcode=office\nsecret=bob-pw\nexten=4951110002#1002\n\n\
         [GW]\naccountcode=gateways\nhost={gw}\nexten=9\nqualify=0\n"
    )
}

fn phone(s: &Sipd, user: &str) -> Ua {
    let mut ua = Ua::udp(s.addr, user);
    let r = ua.register(&format!("{user}-pw"), 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

/// A gateway that records whatever reaches it.
fn gateway() -> UdpSocket {
    let gw = UdpSocket::bind(("127.0.0.1", free_port())).unwrap();
    gw.set_read_timeout(Some(QUIET)).unwrap();
    gw
}

fn nothing_reaches(gw: &UdpSocket) {
    let mut buf = [0u8; 4096];
    if let Ok((n, from)) = gw.recv_from(&mut buf) {
        panic!(
            "the gateway got a packet from {from}:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

fn counter(s: &Sipd, name: &str) -> u64 {
    match s.ctl(proto::Command::Status).into_result().unwrap() {
        proto::Reply::Status(st) => st
            .counters
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
            .unwrap_or_else(|| panic!("no counter {name}")),
        other => panic!("{other:?}"),
    }
}

fn calls(s: &Sipd) -> Vec<proto::CallInfo> {
    match s.ctl(proto::Command::Calls).into_result().unwrap() {
        proto::Reply::Calls(c) => c.calls,
        other => panic!("{other:?}"),
    }
}

fn cdrs(s: &Sipd) -> Vec<proto::Cdr> {
    match s
        .ctl(proto::Command::Cdr { last: Some(100) })
        .into_result()
        .unwrap()
    {
        proto::Reply::Cdr(c) => c.records,
        other => panic!("{other:?}"),
    }
}

/// alice calls bob (1002), bob answers, alice ACKs: both sides' dialogs.
fn establish(s: &Sipd, alice: &mut Ua, bob: &mut Ua) -> (Dialog, Dialog) {
    let inv = alice.invite(&format!("sip:1002@{}", s.addr), "alice-pw");
    let got = bob.expect_request("INVITE", S);
    let tag = unique("bob");
    bob.respond(&got, 200, "OK", &tag);
    let ok = alice.expect_status(200, S);
    let mut uac = Dialog::uac(&inv, &ok);
    let ack = alice.in_dialog(&mut uac, "ACK");
    alice.send(&ack);
    bob.expect_request("ACK", S);
    (uac, Dialog::uas(&got, &tag))
}

#[test]
fn an_in_dialog_invite_retargeted_to_a_gateway_number_is_refused() {
    let gw = gateway();
    let s = Sipd::start(&conf(gw.local_addr().unwrap(), ""));
    let mut alice = phone(&s, "alice");
    let mut bob = phone(&s, "bob");
    let (mut uac, _) = establish(&s, &mut alice, &mut bob);
    let gw_addr = gw.local_addr().unwrap();

    // The caller itself: a number outside its dialplan, at the gateway,
    // with a Route that names sipd and then the gateway.
    let mut d = uac.clone();
    d.target = format!("sip:9810441234567890@{gw_addr}");
    d.routes.push(format!("<sip:{gw_addr};lr>"));
    let reinvite = alice.in_dialog(&mut d, "INVITE").body(
        "application/sdp",
        b"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4002 RTP/AVP 0\r\n",
    );
    alice.send(&reinvite);
    let r = alice.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
    nothing_reaches(&gw);

    // The same from a third address, without any credentials.
    let mut mallory = Ua::udp(s.addr, "alice");
    let mut d2 = d.clone();
    mallory.send(&mallory.in_dialog(&mut d2, "INVITE"));
    let r = mallory.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
    nothing_reaches(&gw);

    // An INFO to an arbitrary address, with the right Route set.
    let mut d3 = uac.clone();
    d3.target = format!("sip:x@{gw_addr}");
    alice.send(&alice.in_dialog(&mut d3, "INFO"));
    let r = alice.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
    nothing_reaches(&gw);
    bob.expect_silence(QUIET);

    assert!(counter(&s, "in-dialog requests refused") >= 3);
    // The real call is intact: its own INFO still reaches bob.
    alice.send(&alice.in_dialog(&mut uac, "INFO"));
    let info = bob.expect_request("INFO", S);
    assert_eq!(info.call_id(), uac.call_id);
    assert_eq!(calls(&s).len(), 1);
}

#[test]
fn a_bye_from_a_third_address_is_refused_while_the_parties_bye_works() {
    let gw = gateway();
    let s = Sipd::start(&conf(gw.local_addr().unwrap(), ""));
    let mut alice = phone(&s, "alice");
    let mut bob = phone(&s, "bob");
    let (mut uac, mut uas) = establish(&s, &mut alice, &mut bob);

    // mallory knows the ids (Call-ID and both tags) of the call.
    let mut mallory = Ua::udp(s.addr, "mallory");
    let mut as_alice = uac.clone();
    mallory.send(&mallory.in_dialog(&mut as_alice, "BYE"));
    let r = mallory.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
    let mut as_bob = uas.clone();
    mallory.send(&mallory.in_dialog(&mut as_bob, "BYE"));
    let r = mallory.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
    // A re-INVITE with mallory's SDP, towards either party.
    mallory.send(&mallory.in_dialog(&mut as_alice, "INVITE"));
    let r = mallory.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
    bob.expect_silence(QUIET);
    alice.expect_silence(Duration::from_millis(100));
    assert_eq!(calls(&s).len(), 1, "the call goes on");

    // bob hangs up for real.
    bob.send(&bob.in_dialog(&mut uas, "BYE"));
    let bye = alice.expect_request("BYE", S);
    alice.respond(&bye, 200, "OK", "");
    bob.expect_status(200, S);
    assert!(wait_for(S, || calls(&s).is_empty().then_some(())).is_some());
    let _ = &mut uac;
    let cdr = wait_for(S, || {
        cdrs(&s).into_iter().find(|c| c.call_id == uac.call_id)
    })
    .expect("a CDR");
    assert_eq!(cdr.disposition, "ANSWERED");
}

#[test]
fn a_cancel_from_another_source_does_not_stop_the_call() {
    let gw = gateway();
    let s = Sipd::start(&conf(gw.local_addr().unwrap(), ""));
    let mut alice = phone(&s, "alice");
    let mut bob = phone(&s, "bob");
    let inv = alice.invite(&format!("sip:1002@{}", s.addr), "alice-pw");
    let got = bob.expect_request("INVITE", S);
    bob.respond(&got, 180, "Ringing", &unique("bob"));
    alice.expect_status(180, S);
    // CANCEL = the INVITE's Request-URI, top Via, From, To, Call-ID, CSeq.
    let mut cancel = inv.clone();
    cancel.method = "CANCEL".into();
    cancel.body.clear();
    let cseq = inv.get("CSeq").unwrap().replace("INVITE", "CANCEL");
    let cancel = cancel
        .set("CSeq", &cseq)
        .remove("Proxy-Authorization")
        .remove("Content-Type");
    let mut mallory = Ua::udp(s.addr, "mallory");
    mallory.send(&cancel);
    let r = mallory.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(481), "{}", text(r.raw()));
    bob.expect_silence(QUIET);
    assert_eq!(calls(&s)[0].state, "ringing");
    // alice's own CANCEL works.
    alice.send(&cancel);
    alice.expect_status(200, S);
    let c = bob.expect_request("CANCEL", S);
    assert_eq!(c.call_id(), got.call_id());
}

#[test]
fn a_client_at_its_call_limit_gets_503_and_its_calls_have_cdrs() {
    let gw = gateway();
    let s = Sipd::start(&conf(gw.local_addr().unwrap(), "call_limit=2\n"));
    let mut alice = phone(&s, "alice");
    let mut bob = phone(&s, "bob");
    let mut dialogs = Vec::new();
    for _ in 0..2 {
        dialogs.push(establish(&s, &mut alice, &mut bob));
    }
    let inv = alice.invite(&format!("sip:1002@{}", s.addr), "alice-pw");
    let r = alice.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(503), "{}", text(r.raw()));
    alice.ack_failure(&inv, &r);
    assert!(r.header(&sipd::sip::HeaderName::RetryAfter).is_some());
    bob.expect_silence(QUIET);
    assert_eq!(calls(&s).len(), 2);
    assert_eq!(counter(&s, "calls over call_limit"), 1);
    // Both calls end with a CDR; then alice may call again.
    for (mut uac, _) in dialogs.drain(..) {
        alice.send(&alice.in_dialog(&mut uac, "BYE"));
        let bye = bob.expect_request("BYE", S);
        bob.respond(&bye, 200, "OK", "");
        alice.expect_status(200, S);
        wait_for(S, || {
            cdrs(&s).into_iter().find(|c| c.call_id == uac.call_id)
        })
        .unwrap_or_else(|| panic!("no CDR for {}", uac.call_id));
    }
    assert!(calls(&s).is_empty(), "{:?}", calls(&s));
    let (mut uac, _) = establish(&s, &mut alice, &mut bob);
    alice.send(&alice.in_dialog(&mut uac, "BYE"));
    bob.expect_request("BYE", S);
}
