//! Parallel forking to the devices of one client (RFC 3261 §16.7), as
//! orders of events: both ring and the caller cancels; two answer at
//! once; one is busy and the other never answers; one fails at the
//! transport and the other answers; a 6xx while another rings; pickup of
//! a call ringing on two devices; a device that stops answering
//! keep-alives is not rung.

use std::time::Duration;

use super::harness::{hop_request, Bench, Phone, CONF};
use crate::sip::{Limits, Message};

/// bob on two devices (ports 6002 and 6012), alice calling 1002; returns
/// alice's INVITE as sent and the INVITE each device got.
fn two_ringing(b: &mut Bench, conf_ring: bool) -> (Phone, Phone, Phone, Message, [Message; 2]) {
    let mut desk = Phone::udp("bob", "b2", 6002);
    let mut soft = Phone::udp("bob", "b2", 6012);
    assert_eq!(desk.register(b, 600).status(), Some(200));
    let ok = soft.register(b, 600);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.contacts().unwrap().len(),
        2,
        "the 200 lists both devices"
    );
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(b, "1002", "c-fork");
    let sent = Message::parse(alice.last.as_bytes(), &Limits::default()).unwrap();
    let (_, at_desk) = b.expect_request(desk.addr(), "INVITE");
    let (_, at_soft) = b.expect_request(soft.addr(), "INVITE");
    if conf_ring {
        b.deliver(desk.peer, &desk.respond(&at_desk, 180, "Ringing"));
        b.deliver(soft.peer, &soft.respond(&at_soft, 180, "Ringing"));
        let rings = b
            .take_to(alice.addr())
            .iter()
            .filter(|(_, m)| m.status() == Some(180))
            .count();
        assert_eq!(rings, 2, "each device's 180 reaches the caller");
    }
    (alice, desk, soft, sent, [at_desk, at_soft])
}

/// Final statuses sent to `phone` since the last take.
fn finals(b: &mut Bench, phone: &Phone) -> Vec<u16> {
    b.take_to(phone.addr())
        .iter()
        .filter_map(|(_, m)| m.status())
        .filter(|s| *s >= 200)
        .collect()
}

fn methods(b: &mut Bench, phone: &Phone) -> Vec<String> {
    b.take_to(phone.addr())
        .iter()
        .filter_map(|(_, m)| m.method().map(|x| x.as_str().to_string()))
        .collect()
}

#[test]
fn a_cancel_reaches_every_ringing_device_and_the_caller_gets_one_487() {
    let mut b = Bench::new(CONF);
    let (alice, desk, soft, sent, [at_desk, at_soft]) = two_ringing(&mut b, true);
    b.deliver(alice.peer, &hop_request(&sent, "CANCEL", None));
    b.expect_status(alice.addr(), 200);
    let (_, c1) = b.expect_request(desk.addr(), "CANCEL");
    let (_, c2) = b.expect_request(soft.addr(), "CANCEL");
    b.deliver(desk.peer, &desk.respond(&c1, 200, "OK"));
    b.deliver(
        desk.peer,
        &desk.respond(&at_desk, 487, "Request Terminated"),
    );
    b.deliver(soft.peer, &soft.respond(&c2, 200, "OK"));
    b.deliver(
        soft.peer,
        &soft.respond(&at_soft, 487, "Request Terminated"),
    );
    b.advance(Duration::from_secs(40));
    let got = finals(&mut b, &alice);
    assert!(!got.is_empty() && got.iter().all(|c| *c == 487), "{got:?}");
    assert!(b.core.calls().is_empty());
}

#[test]
fn the_first_answer_wins_and_a_second_is_acked_and_hung_up() {
    let mut b = Bench::new(CONF);
    let (alice, desk, soft, _, [at_desk, at_soft]) = two_ringing(&mut b, true);
    b.deliver(soft.peer, &soft.respond(&at_soft, 200, "OK"));
    // The desk phone answers too before it sees the CANCEL.
    b.deliver(desk.peer, &desk.respond(&at_desk, 200, "OK"));
    let oks = finals(&mut b, &alice);
    assert_eq!(oks, vec![200], "the caller gets one answer");
    let got = methods(&mut b, &desk);
    for m in ["CANCEL", "ACK", "BYE"] {
        assert!(got.iter().any(|x| x == m), "desk got {got:?}");
    }
    let call = b.core.calls().iter().next().expect("the call goes on");
    assert!(call.device.contains(":6012"), "{:?}", call.device);
}

#[test]
fn busy_on_one_and_no_answer_on_the_other_is_unavailable_only_at_the_end() {
    let mut b = Bench::new(CONF);
    let (alice, desk, soft, _, [at_desk, _]) = two_ringing(&mut b, true);
    b.deliver(desk.peer, &desk.respond(&at_desk, 486, "Busy Here"));
    assert!(
        finals(&mut b, &alice).is_empty(),
        "the soft phone still rings"
    );
    // noanswer=5: the step gives up, the caller gets the busy.
    b.advance(Duration::from_secs(6));
    let (_, c) = b.expect_request(soft.addr(), "CANCEL");
    drop(c);
    b.advance(Duration::from_secs(40));
    let got = finals(&mut b, &alice);
    assert_eq!(got.first(), Some(&486), "{got:?}");
}

#[test]
fn a_six_hundred_ends_the_fork() {
    let mut b = Bench::new(CONF);
    let (alice, desk, soft, _, [at_desk, at_soft]) = two_ringing(&mut b, true);
    b.deliver(desk.peer, &desk.respond(&at_desk, 603, "Decline"));
    let (_, c) = b.expect_request(soft.addr(), "CANCEL");
    b.deliver(soft.peer, &soft.respond(&c, 200, "OK"));
    b.deliver(
        soft.peer,
        &soft.respond(&at_soft, 487, "Request Terminated"),
    );
    assert_eq!(finals(&mut b, &alice), vec![603]);
}

#[test]
fn a_device_whose_flow_failed_does_not_stop_the_other_answering() {
    let mut b = Bench::new(CONF);
    let mut desk = Phone::tcp("bob", "b2", 6002, 5);
    let mut soft = Phone::udp("bob", "b2", 6012);
    assert_eq!(desk.register(&mut b, 600).status(), Some(200));
    assert_eq!(soft.register(&mut b, 600).status(), Some(200));
    // The desk phone's connection is gone and nothing listens there now.
    b.closed.push(5);
    b.unreachable.push(desk.addr());
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-fork-closed");
    assert_eq!(b.core.counters.send_failures, 1);
    let (_, at_soft) = b.expect_request(soft.addr(), "INVITE");
    assert!(
        finals(&mut b, &alice).is_empty(),
        "the soft phone still rings"
    );
    b.deliver(soft.peer, &soft.respond(&at_soft, 200, "OK"));
    assert_eq!(finals(&mut b, &alice), vec![200]);
}

#[test]
fn pickup_takes_a_call_ringing_on_two_devices() {
    let mut b = Bench::new(CONF);
    let (alice, desk, soft, _, _) = two_ringing(&mut b, true);
    let mut carol = Phone::udp("carol", "c3", 6003);
    assert_eq!(carol.register(&mut b, 600).status(), Some(200));
    carol.invite(&mut b, "*11", "c-pick-two");
    b.expect_request(desk.addr(), "CANCEL");
    b.expect_request(soft.addr(), "CANCEL");
    let got = b.take_to(carol.addr());
    assert!(
        got.iter()
            .any(|(_, m)| m.method().map(|x| x.as_str()) == Some("INVITE")),
        "carol's phone rings with the picked call: {:?}",
        got.iter()
            .map(|(_, m)| super::harness::first_line(m))
            .collect::<Vec<_>>()
    );
    drop(alice);
}

#[test]
fn a_device_that_stops_answering_keepalives_is_not_rung() {
    let conf = CONF.replace("noanswer=5\n", "noanswer=5\nqualify=2\n");
    let mut b = Bench::new(&conf);
    let mut desk = Phone::udp("bob", "b2", 6002);
    let mut soft = Phone::udp("bob", "b2", 6012);
    assert_eq!(desk.register(&mut b, 600).status(), Some(200));
    assert_eq!(soft.register(&mut b, 600).status(), Some(200));
    // Over 10 s the desk phone answers its OPTIONS, the soft phone not.
    for _ in 0..20 {
        b.advance(Duration::from_millis(500));
        for (_, m) in b.take_to(desk.addr()) {
            if m.method().map(|x| x.as_str()) == Some("OPTIONS") {
                b.deliver(desk.peer, &desk.respond(&m, 200, "OK"));
            }
        }
        b.take_to(soft.addr());
    }
    let reach: Vec<_> = b
        .core
        .registrar()
        .of("bob")
        .iter()
        .map(|x| x.keepalive.reach)
        .collect();
    use crate::registrar::Reach;
    assert_eq!(reach, vec![Reach::Reachable, Reach::Unreachable]);
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-stale");
    b.expect_request(desk.addr(), "INVITE");
    let at_soft = b.take_to(soft.addr());
    assert!(
        at_soft
            .iter()
            .all(|(_, m)| m.method().map(|x| x.as_str()) != Some("INVITE")),
        "the unreachable device is not rung"
    );
}
