//! The media relay (issue 14), end to end: two test phones register, call
//! through sipd and send RTP from their own sockets; what arrives, from
//! where, the SDP each side sees, the counters of `sipctl calls` and the
//! CDR, and that every relay port is free again when the call is over.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sipd_tests::ua::{unique, Dialog};
use sipd_tests::{text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);

/// Each test's sipd gets its own relay ports (tests run side by side).
fn conf(general: &str, ports: u16) -> String {
    format!(
        "[general]\nrtp_ports={ports}-{}\n{general}\n\
         [alice]\naccountcode=office\nsecret=alice-pw\nexten=1001\n\n[bob]\naccountcode=office\nsecret=bob-pw\nexten=1002\n",
        ports + 99
    )
}

fn phone(s: &Sipd, user: &str) -> Ua {
    let mut ua = Ua::udp(s.addr, user);
    let r = ua.register(&format!("{user}-pw"), 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

/// An RTP endpoint of a phone.
fn rtp_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s
}

fn sdp(addr: &str, port: u16, extra: &str) -> String {
    format!(
        "v=0\r\no=- 7 7 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{extra}"
    )
}

/// The `m=audio` port and the `c=` address of an SDP body.
fn media_of(body: &[u8]) -> (String, u16) {
    let t = String::from_utf8_lossy(body);
    let c = t
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c= in {t}"))
        .trim()
        .to_string();
    let port = t
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {t}"));
    (c, port)
}

/// A 200 with an SDP body.
fn ok_with_sdp(ua: &Ua, req: &sipd::sip::Message, tag: &str, body: &str) -> Vec<u8> {
    use sipd::sip::{HeaderName, ResponseBuilder};
    let mut b = ResponseBuilder::new(req, 200, "OK").to_tag(tag);
    for rr in req.headers(&HeaderName::RecordRoute) {
        b = b.header(HeaderName::RecordRoute, rr);
    }
    b.header(
        HeaderName::Contact,
        &format!("<sip:{}@{}>", ua.user, ua.host()),
    )
    .body("application/sdp", body.as_bytes())
    .build()
}

struct Call {
    uac: Dialog,
    uas: Dialog,
    /// The SDP bob got in the INVITE and alice got in the 200.
    offer_seen: Vec<u8>,
    answer_seen: Vec<u8>,
}

/// alice calls bob with `offer`; bob answers with `answer`; alice ACKs.
fn call(alice: &mut Ua, bob: &mut Ua, s: &Sipd, offer: &str, answer: &str) -> Call {
    let inv = alice.invite_with(&format!("sip:1002@{}", s.addr), "alice-pw", |r| {
        r.body("application/sdp", offer.as_bytes())
    });
    let got = bob.expect_request("INVITE", S);
    let tag = unique("bob");
    bob.respond(&got, 180, "Ringing", &tag);
    alice.expect_status(180, S);
    let ok = ok_with_sdp(bob, &got, &tag, answer);
    bob.send_raw(&ok);
    let ok = alice.expect_status(200, S);
    let mut uac = Dialog::uac(&inv, &ok);
    let ack = alice.in_dialog(&mut uac, "ACK");
    alice.send(&ack);
    bob.expect_request("ACK", S);
    Call {
        uac,
        uas: Dialog::uas(&got, &tag),
        offer_seen: got.body().to_vec(),
        answer_seen: ok.body().to_vec(),
    }
}

/// `n` RTP-sized packets from `from` to `to`, each received at `at`
/// (from the relay's address `via`).
fn flow(from: &UdpSocket, to: SocketAddr, at: &UdpSocket, via: SocketAddr, n: usize) {
    let mut buf = [0u8; 512];
    for i in 0..n {
        let mut pkt = vec![0x80u8, 0, 0, i as u8];
        pkt.resize(172, i as u8);
        from.send_to(&pkt, to).unwrap();
        let (len, src) = at
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("packet {i} to {to} did not arrive: {e}"));
        assert_eq!((len, src), (172, via), "packet {i}");
        assert_eq!(&buf[..len], &pkt[..]);
    }
}

fn calls(s: &Sipd) -> Vec<proto::CallInfo> {
    match s.ctl(proto::Command::Calls).into_result().unwrap() {
        proto::Reply::Calls(c) => c.calls,
        other => panic!("{other:?}"),
    }
}

fn counter(s: &Sipd, name: &str) -> u64 {
    s.status()
        .counters
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.value)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn last_cdr(s: &Sipd) -> proto::Cdr {
    wait_for(S, || {
        match s.ctl(proto::Command::Cdr { last: Some(1) }).into_result() {
            Ok(proto::Reply::Cdr(c)) => c.records.into_iter().next(),
            _ => None,
        }
    })
    .expect("a CDR")
}

/// Every port of the relay's `ports` can be bound again (the relay closed them).
fn ports_free(ports: &[u16]) {
    for &p in ports {
        for port in [p, p + 1] {
            wait_for(S, || UdpSocket::bind(("127.0.0.1", port)).ok())
                .unwrap_or_else(|| panic!("relay port {port} still open"));
        }
    }
}

fn hang_up(alice: &mut Ua, bob: &mut Ua, c: &mut Call) {
    let bye = alice.in_dialog(&mut c.uac, "BYE");
    alice.send(&bye);
    let got = bob.expect_request("BYE", S);
    bob.respond(&got, 200, "OK", "x");
    alice.expect_status(200, S);
}

#[test]
fn a_relayed_call_carries_rtp_both_ways_and_frees_its_ports() {
    let s = Sipd::start(&conf("media=relay", 21000));
    let (mut alice, mut bob) = (phone(&s, "alice"), phone(&s, "bob"));
    let (ra, rb) = (rtp_socket(), rtp_socket());
    let (pa, pb) = (
        ra.local_addr().unwrap().port(),
        rb.local_addr().unwrap().port(),
    );
    let offer = sdp("127.0.0.1", pa, "a=sendrecv\r\n");
    let answer = sdp("127.0.0.1", pb, "a=sendrecv\r\n");
    let mut c = call(&mut alice, &mut bob, &s, &offer, &answer);

    // Only c= and m= changed, every other line byte for byte.
    let (c_b, relay_b) = media_of(&c.offer_seen);
    let (c_a, relay_a) = media_of(&c.answer_seen);
    assert_eq!((c_a.as_str(), c_b.as_str()), ("127.0.0.1", "127.0.0.1"));
    assert!((21000..21100).contains(&relay_a) && (21000..21100).contains(&relay_b));
    assert_ne!(relay_a, relay_b);
    assert_eq!(
        text(&c.offer_seen),
        offer.replace(&format!("m=audio {pa} "), &format!("m=audio {relay_b} "))
    );
    assert_eq!(
        text(&c.answer_seen),
        answer.replace(&format!("m=audio {pb} "), &format!("m=audio {relay_a} "))
    );

    let to_a: SocketAddr = ([127, 0, 0, 1], relay_a).into();
    let to_b: SocketAddr = ([127, 0, 0, 1], relay_b).into();
    flow(&ra, to_a, &rb, to_b, 10);
    flow(&rb, to_b, &ra, to_a, 12);
    // RTCP on the port above, both ways.
    let (ca, cb) = (
        UdpSocket::bind(("127.0.0.1", pa + 1)),
        UdpSocket::bind(("127.0.0.1", pb + 1)),
    );
    if let (Ok(ca), Ok(cb)) = (ca, cb) {
        ca.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        cb.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let (ta, tb): (SocketAddr, SocketAddr) = (
            ([127, 0, 0, 1], relay_a + 1).into(),
            ([127, 0, 0, 1], relay_b + 1).into(),
        );
        flow(&ca, ta, &cb, tb, 2);
        flow(&cb, tb, &ca, ta, 2);
    }

    let list = calls(&s);
    let m = list[0].media.as_ref().expect("media in sipctl calls");
    assert!(
        m.packets_from_caller >= 10 && m.packets_from_callee >= 12,
        "{m:?}"
    );
    assert_eq!(m.bytes_from_caller % 172, 0, "{m:?}");
    assert_eq!(
        m.caller_addr.as_deref(),
        Some(ra.local_addr().unwrap().to_string().as_str())
    );
    assert_eq!(
        m.callee_addr.as_deref(),
        Some(rb.local_addr().unwrap().to_string().as_str())
    );
    assert_eq!((m.caller_port, m.callee_port), (relay_a, relay_b));
    let json = text(&s.sipctl(&["calls", "--json"]).stdout);
    assert!(json.contains("\"packets_from_caller\""), "{json}");
    let table = text(&s.sipctl(&["calls"]).stdout);
    assert!(table.contains(" pkts ("), "{table}");
    assert_eq!(counter(&s, "relayed calls"), 1);

    hang_up(&mut alice, &mut bob, &mut c);
    let cdr = last_cdr(&s);
    assert_eq!(cdr.disposition, "ANSWERED");
    assert!(
        cdr.packets_caller >= 10 && cdr.packets_callee >= 12,
        "{cdr:?}"
    );
    ports_free(&[relay_a, relay_b]);
    assert_eq!(counter(&s, "relayed calls"), 0);
    assert_eq!(counter(&s, "relay ports in use"), 0);
}

#[test]
fn a_phone_behind_nat_gets_audio_both_ways_with_the_default_media_auto() {
    let s = Sipd::start(&conf("", 21100));
    let (mut alice, mut bob) = (phone(&s, "alice"), phone(&s, "bob"));
    let (ra, rb) = (rtp_socket(), rtp_socket());
    let (pa, pb) = (
        ra.local_addr().unwrap().port(),
        rb.local_addr().unwrap().port(),
    );
    // alice's SDP names her private address; she sends from 127.0.0.1.
    let offer = sdp("10.0.0.5", pa, "");
    let answer = sdp("127.0.0.1", pb, "");
    let mut c = call(&mut alice, &mut bob, &s, &offer, &answer);
    let (c_b, relay_b) = media_of(&c.offer_seen);
    let (_, relay_a) = media_of(&c.answer_seen);
    assert_eq!(c_b, "127.0.0.1", "bob must not be sent to 10.0.0.5");
    assert!(text(&c.offer_seen).contains("o=- 7 7 IN IP4 10.0.0.5"));
    // bob talks first: it reaches alice at her signalling IP and the
    // port her SDP names, before she has sent anything.
    let to_a: SocketAddr = ([127, 0, 0, 1], relay_a).into();
    let to_b: SocketAddr = ([127, 0, 0, 1], relay_b).into();
    flow(&rb, to_b, &ra, to_a, 5);
    flow(&ra, to_a, &rb, to_b, 5);

    // A third party cannot inject into the latched call.
    let evil = UdpSocket::bind("127.0.0.2:0").unwrap();
    evil.send_to(b"\x80\x00spoofed", to_a).unwrap();
    rb.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(rb.recv_from(&mut buf).is_err(), "injected packet relayed");
    let dropped = wait_for(S, || {
        calls(&s)[0]
            .media
            .as_ref()
            .map(|m| m.dropped)
            .filter(|&d| d >= 1)
    });
    assert!(
        dropped.is_some(),
        "the spoofed packet is counted as dropped"
    );
    hang_up(&mut alice, &mut bob, &mut c);
    ports_free(&[relay_a, relay_b]);

    // Without NAT, media=auto leaves the SDP alone.
    let offer = sdp("127.0.0.1", pa, "");
    let mut c = call(&mut alice, &mut bob, &s, &offer, &answer);
    assert_eq!(text(&c.offer_seen), offer);
    assert_eq!(text(&c.answer_seen), answer);
    assert!(calls(&s)[0].media.is_none());
    hang_up(&mut alice, &mut bob, &mut c);
}

#[test]
fn hold_by_re_invite_keeps_the_ports_and_a_cancel_frees_them() {
    let s = Sipd::start(&conf("media=relay", 21200));
    let (mut alice, mut bob) = (phone(&s, "alice"), phone(&s, "bob"));
    let (ra, rb) = (rtp_socket(), rtp_socket());
    let (pa, pb) = (
        ra.local_addr().unwrap().port(),
        rb.local_addr().unwrap().port(),
    );
    let answer = sdp("127.0.0.1", pb, "");
    let mut c = call(&mut alice, &mut bob, &s, &sdp("127.0.0.1", pa, ""), &answer);
    let (_, relay_b) = media_of(&c.offer_seen);
    let (_, relay_a) = media_of(&c.answer_seen);

    // alice puts bob on hold (sendonly), then takes him back.
    for dir in ["a=sendonly\r\n", "a=sendrecv\r\n"] {
        let reinv = alice
            .in_dialog(&mut c.uac, "INVITE")
            .body("application/sdp", sdp("127.0.0.1", pa, dir).as_bytes());
        alice.send(&reinv);
        let got = bob.expect_request("INVITE", S);
        assert_eq!(media_of(got.body()).1, relay_b, "{}", text(got.body()));
        assert!(text(got.body()).ends_with(dir));
        bob.send_raw(&ok_with_sdp(&bob, &got, "x", &answer));
        let ok = alice.expect_status(200, S);
        assert_eq!(media_of(ok.body()).1, relay_a);
        let ack = alice.in_dialog(&mut c.uac, "ACK");
        alice.send(&ack);
        bob.expect_request("ACK", S);
    }
    let to_a: SocketAddr = ([127, 0, 0, 1], relay_a).into();
    let to_b: SocketAddr = ([127, 0, 0, 1], relay_b).into();
    flow(&ra, to_a, &rb, to_b, 3);
    flow(&rb, to_b, &ra, to_a, 3);
    // bob hangs up this time.
    let bye = bob.in_dialog(&mut c.uas, "BYE");
    bob.send(&bye);
    let got = alice.expect_request("BYE", S);
    alice.respond(&got, 200, "OK", "x");
    bob.expect_status(200, S);
    ports_free(&[relay_a, relay_b]);

    // A call cancelled while ringing frees its ports too.
    let inv = alice.invite_with(&format!("sip:1002@{}", s.addr), "alice-pw", |r| {
        r.body("application/sdp", sdp("127.0.0.1", pa, "").as_bytes())
    });
    let got = bob.expect_request("INVITE", S);
    let (_, relay_b) = media_of(got.body());
    bob.respond(&got, 180, "Ringing", "r");
    alice.expect_status(180, S);
    assert_eq!(counter(&s, "relayed calls"), 1);
    alice.cancel(&inv);
    alice.expect_status(200, S);
    let got_cancel = bob.expect_request("CANCEL", S);
    bob.respond(&got_cancel, 200, "OK", "r");
    bob.respond(&got, 487, "Request Terminated", "r");
    let fin = alice.expect_status(487, S);
    alice.ack_failure(&inv, &fin);
    ports_free(&[relay_b]);
    wait_for(S, || (counter(&s, "relayed calls") == 0).then_some(()))
        .expect("the cancelled call's relay closed");
    assert_eq!(counter(&s, "relay ports in use"), 0);
}

#[test]
fn a_silent_answered_call_is_hung_up_after_media_timeout() {
    let s = Sipd::start(&conf("media=relay\nmedia_timeout=2", 21300));
    let (mut alice, mut bob) = (phone(&s, "alice"), phone(&s, "bob"));
    let (ra, rb) = (rtp_socket(), rtp_socket());
    let (pa, pb) = (
        ra.local_addr().unwrap().port(),
        rb.local_addr().unwrap().port(),
    );
    let c = call(
        &mut alice,
        &mut bob,
        &s,
        &sdp("127.0.0.1", pa, ""),
        &sdp("127.0.0.1", pb, ""),
    );
    let (_, relay_b) = media_of(&c.offer_seen);
    let (_, relay_a) = media_of(&c.answer_seen);
    let t0 = Instant::now();
    // Both ends get a BYE in the name of the other, inside their dialog.
    let to_bob = bob.expect_request("BYE", Duration::from_secs(6));
    let to_alice = alice.expect_request("BYE", Duration::from_secs(2));
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(to_bob.call_id(), c.uac.call_id);
    assert_eq!(to_bob.from().tag(), c.uac.local.split("tag=").nth(1));
    assert_eq!(to_alice.from().tag(), c.uas.local.split("tag=").nth(1));
    assert!(to_bob.cseq().seq > c.uac.cseq, "{}", text(to_bob.raw()));
    bob.respond(&to_bob, 200, "OK", "x");
    alice.respond(&to_alice, 200, "OK", "x");
    let cdr = last_cdr(&s);
    assert_eq!(cdr.disposition, "MEDIA TIMEOUT");
    assert_eq!((cdr.packets_caller, cdr.packets_callee), (0, 0));
    assert!(calls(&s).is_empty());
    ports_free(&[relay_a, relay_b]);
    assert_eq!(counter(&s, "calls ended by media_timeout"), 1);
}

/// The `c=` address and `m=audio` port of a body, any family.
fn conn_and_port(body: &[u8]) -> (String, u16) {
    let t = String::from_utf8_lossy(body);
    let c = t
        .lines()
        .find_map(|l| l.strip_prefix("c=IN "))
        .unwrap_or_else(|| panic!("no c= in {t}"))
        .to_string();
    let port = t
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {t}"));
    (c, port)
}

#[test]
fn an_ipv4_phone_and_an_ipv6_phone_talk_through_the_relay() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("NOTICE: no IPv6 loopback here; test skipped");
        return;
    }
    let v6: SocketAddr = format!("[::1]:{}", sipd_tests::free_port_on("::1"))
        .parse()
        .unwrap();
    let s = Sipd::start_with(sipd_tests::Start {
        conf: Some(conf("", 21400)),
        args: vec!["-b".into(), v6.to_string()],
        ..Default::default()
    });
    let mut alice = phone(&s, "alice");
    let mut bob = Ua::udp(v6, "bob");
    let r = bob.register("bob-pw", 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    let ra = rtp_socket();
    let rb = UdpSocket::bind("[::1]:0").unwrap();
    rb.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let (pa, pb) = (
        ra.local_addr().unwrap().port(),
        rb.local_addr().unwrap().port(),
    );
    let offer = sdp("127.0.0.1", pa, "");
    let answer = format!(
        "v=0\r\no=- 7 7 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio {pb} RTP/AVP 0\r\n"
    );
    // media=auto: the ends are on different address families.
    let mut c = call(&mut alice, &mut bob, &s, &offer, &answer);
    let (c_b, relay_b) = conn_and_port(&c.offer_seen);
    let (c_a, relay_a) = conn_and_port(&c.answer_seen);
    assert_eq!(c_b, "IP6 ::1", "{}", text(&c.offer_seen));
    assert_eq!(c_a, "IP4 127.0.0.1", "{}", text(&c.answer_seen));
    let to_a: SocketAddr = ([127, 0, 0, 1], relay_a).into();
    let to_b: SocketAddr = format!("[::1]:{relay_b}").parse().unwrap();
    flow(&ra, to_a, &rb, to_b, 4);
    flow(&rb, to_b, &ra, to_a, 4);
    hang_up(&mut alice, &mut bob, &mut c);
    ports_free(&[relay_a]);
}

#[test]
fn early_media_and_rtp_ahead_of_the_answer_are_relayed_not_dropped() {
    let s = Sipd::start(&conf("media=relay", 21500));
    let (mut alice, mut bob) = (phone(&s, "alice"), phone(&s, "bob"));
    let (ra, rb) = (rtp_socket(), rtp_socket());
    let (pa, pb) = (
        ra.local_addr().unwrap().port(),
        rb.local_addr().unwrap().port(),
    );
    let inv = alice.invite_with(&format!("sip:1002@{}", s.addr), "alice-pw", |r| {
        r.body("application/sdp", sdp("127.0.0.1", pa, "").as_bytes())
    });
    let got = bob.expect_request("INVITE", S);
    let (_, relay_b) = media_of(got.body());
    let to_b: SocketAddr = ([127, 0, 0, 1], relay_b).into();
    // RTP from bob before any SDP of his reached sipd (it overtook his
    // answer): accepted from the address the INVITE went to.
    let mut buf = [0u8; 512];
    rb.send_to(&[0x80, 0, 0, 1, 9, 9], to_b).unwrap();
    let (n, from) = ra
        .recv_from(&mut buf)
        .expect("bob's first packet reaches alice");
    assert_eq!((n, from.ip()), (6, to_b.ip()));
    let relay_a = from.port();
    // 183 with SDP: early media both ways.
    let tag = unique("bob");
    let answer = sdp("127.0.0.1", pb, "");
    let p183 = ok_with_sdp(&bob, &got, &tag, &answer);
    let p183 = String::from_utf8(p183).unwrap().replacen(
        "SIP/2.0 200 OK",
        "SIP/2.0 183 Session Progress",
        1,
    );
    bob.send_raw(p183.as_bytes());
    let early = alice.expect_status(183, S);
    assert_eq!(media_of(early.body()).1, relay_a);
    let to_a: SocketAddr = ([127, 0, 0, 1], relay_a).into();
    flow(&ra, to_a, &rb, to_b, 3);
    flow(&rb, to_b, &ra, to_a, 3);
    bob.send_raw(&ok_with_sdp(&bob, &got, &tag, &answer));
    let ok = alice.expect_status(200, S);
    assert_eq!(media_of(ok.body()).1, relay_a);
    let mut uac = Dialog::uac(&inv, &ok);
    let ack = alice.in_dialog(&mut uac, "ACK");
    alice.send(&ack);
    bob.expect_request("ACK", S);
    flow(&ra, to_a, &rb, to_b, 2);
    let m = calls(&s)[0].media.clone().unwrap();
    assert_eq!(m.dropped, 0, "{m:?}");
    assert_eq!(
        (m.packets_from_caller, m.packets_from_callee),
        (5, 4),
        "{m:?}"
    );
    let mut c = Call {
        uac,
        uas: Dialog::uas(&got, &tag),
        offer_seen: Vec::new(),
        answer_seen: Vec::new(),
    };
    hang_up(&mut alice, &mut bob, &mut c);
    ports_free(&[relay_a, relay_b]);
}
