//! The media relay as the core drives it (`media=`), as orders of events:
//! an offer forked to two devices and answered by one (the loser's ports
//! are the same session, a 2xx retransmission changes nothing, the BYE
//! closes it); a call that fails closes its session; a silent answered
//! call is hung up only once `media_timeout` has passed since the answer.

use std::time::Duration;

use super::harness::{Bench, Phone, CONF};
use crate::media::MediaOp;
use crate::sip::{HeaderName, Message};
use crate::store::Write;

fn conf(general: &str) -> String {
    CONF.replace("[general]\n", &format!("[general]\n{general}\n"))
}

/// `resp` (no body) with an SDP answer naming `port` at 127.0.0.1.
fn with_sdp(resp: &str, port: u16) -> String {
    let body = format!(
        "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    );
    resp.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn m_port(m: &Message) -> u16 {
    let t = String::from_utf8_lossy(m.body()).to_string();
    t.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m= in {t}"))
}

fn opens(ops: &[MediaOp]) -> usize {
    ops.iter()
        .filter(|o| matches!(o, MediaOp::Open { .. }))
        .count()
}

fn closes(ops: &[MediaOp]) -> usize {
    ops.iter()
        .filter(|o| matches!(o, MediaOp::Close { .. }))
        .count()
}

#[test]
fn a_forked_relayed_call_opens_one_session_and_the_bye_closes_it() {
    let mut b = Bench::new(&conf("media=relay\nrtp_ports=40000-40099"));
    let mut desk = Phone::udp("bob", "b2", 6002);
    let mut soft = Phone::udp("bob", "b2", 6012);
    assert_eq!(desk.register(&mut b, 600).status(), Some(200));
    assert_eq!(soft.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-media");
    let (_, at_desk) = b.expect_request(desk.addr(), "INVITE");
    let (_, at_soft) = b.expect_request(soft.addr(), "INVITE");
    // One stream, two legs: two ports, one Open; both devices get the same
    // relay port, never alice's 4000.
    assert_eq!(opens(&b.media), 1, "{:?}", b.media);
    assert_eq!(b.core.media_ports_in_use(), 2);
    let callee_port = m_port(&at_desk);
    assert_eq!(m_port(&at_soft), callee_port);
    assert!((40000..40100).contains(&callee_port));
    assert!(b.media.iter().any(|o| matches!(o,
        MediaOp::Peer { leg: 0, rtp, .. } if rtp.port() == 4000)));

    let ok = with_sdp(&desk.respond(&at_desk, 200, "OK"), 5555);
    b.deliver(desk.peer, &ok);
    let at_alice = b.expect_status(alice.addr(), 200);
    let caller_port = m_port(&at_alice);
    assert!((40000..40100).contains(&caller_port) && caller_port != callee_port);
    // The callee leg learnt the answer's endpoint; media timeout restarts.
    assert!(b.media.iter().any(|o| matches!(o,
        MediaOp::Peer { leg: 1, rtp, .. } if rtp.port() == 5555)));
    assert!(b.media.iter().any(|o| matches!(o, MediaOp::Touch { .. })));
    // The soft phone is cancelled; a retransmitted 200 changes nothing.
    let before = b.media.len();
    b.deliver(desk.peer, &ok);
    let again = b.expect_status(alice.addr(), 200);
    assert_eq!(m_port(&again), caller_port);
    assert_eq!(b.media.len(), before, "{:?}", &b.media[before..]);

    // The callee hangs up: the session closes, the ports come back.
    let to = at_alice.header(&HeaderName::To).unwrap().to_string();
    let from = at_desk.header(&HeaderName::From).unwrap().to_string();
    let alice_contact = format!("sip:alice@{}", alice.addr());
    let bye = desk.dialog_request(
        "BYE",
        &alice_contact,
        &[],
        &to,
        &from,
        "c-media",
        "bye1",
        None,
    );
    b.deliver(desk.peer, &bye);
    assert_eq!(closes(&b.media), 1);
    assert_eq!(b.core.media_ports_in_use(), 0);
    let cdr = b.writes.iter().find_map(|w| match w {
        Write::AddCdr(r) => Some(r.clone()),
        _ => None,
    });
    assert!(cdr.is_some_and(|r| r.relay.is_some() && r.disposition == "ANSWERED"));
}

#[test]
fn a_failed_call_closes_its_session_and_direct_calls_open_none() {
    let mut b = Bench::new(&conf("media=relay\nrtp_ports=40000-40099"));
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-busy");
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    assert_eq!(opens(&b.media), 1);
    b.deliver(bob.peer, &bob.respond(&inv, 486, "Busy Here"));
    b.expect_status(alice.addr(), 486);
    assert_eq!(closes(&b.media), 1);
    assert_eq!(b.core.media_ports_in_use(), 0);

    // media=auto between two phones that are not behind NAT: untouched.
    let mut b = Bench::new(&conf(""));
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-direct");
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    assert_eq!(m_port(&inv), 4000);
    assert!(b.media.is_empty());
}

#[test]
fn a_silent_call_is_hung_up_only_after_media_timeout_from_the_answer() {
    let mut b = Bench::new(&conf("media=relay\nrtp_ports=40000-40099\nmedia_timeout=3"));
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "1002", "c-quiet");
    let (_, inv) = b.expect_request(bob.addr(), "INVITE");
    let id = b.core.media_session("c-quiet").expect("relayed");
    // Ringing for a long time without media is no media timeout.
    b.advance(Duration::from_secs(4));
    let mut fx = crate::core::Effects::new();
    b.core.on_media_idle(&[id], b.now, &mut fx);
    assert!(fx.out.is_empty());
    b.deliver(bob.peer, &with_sdp(&bob.respond(&inv, 200, "OK"), 5555));
    b.expect_status(alice.addr(), 200);
    b.advance(Duration::from_secs(2));
    let mut fx = crate::core::Effects::new();
    b.core.on_media_idle(&[id], b.now, &mut fx);
    assert!(fx.out.is_empty(), "2 s after the answer is not 3");
    b.advance(Duration::from_secs(1));
    let mut fx = crate::core::Effects::new();
    b.core.on_media_idle(&[id], b.now, &mut fx);
    b.absorb(fx);
    let (_, to_bob) = b.expect_request(bob.addr(), "BYE");
    let (_, to_alice) = b.expect_request(alice.addr(), "BYE");
    assert_eq!(to_bob.call_id(), "c-quiet");
    assert_eq!(to_alice.to().tag(), inv.from().tag());
    assert!(to_bob.to().tag().is_some());
    assert_eq!(closes(&b.media), 1);
    assert!(b.writes.iter().any(|w| matches!(w,
        Write::AddCdr(r) if r.disposition == "MEDIA TIMEOUT")));
    assert!(b.core.calls().is_empty());
}
