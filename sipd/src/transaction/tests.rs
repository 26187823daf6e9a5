use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::sip::{HeaderName, Limits, Message, Method, ResponseBuilder};
use crate::transport::{Out, Peer, Transport};

fn peer(t: Transport, port: u16) -> Peer {
    Peer {
        transport: t,
        addr: ([127, 0, 0, 1], port).into(),
        flow: None,
        local: None,
    }
}

fn req(method: &str, branch: &str) -> Message {
    let text = format!(
        "{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5000;branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@x>;tag=a1\r\n\
         To: <sip:bob@x>\r\n\
         Call-ID: c1@x\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes(), &Limits::default()).unwrap()
}

fn resp(to: &Message, code: u16) -> Message {
    let data = ResponseBuilder::new(to, code, "X").to_tag("b1").build();
    Message::parse(&data, &Limits::default()).unwrap()
}

fn server(t: &mut Transactions, m: Message, tp: Transport) -> TxId {
    let p = peer(tp, 5000);
    let via = m.top_via().to_string();
    t.create_server(Arc::new(m), p, p, via, 0x7a).unwrap()
}

fn codes(out: &[Out]) -> Vec<String> {
    out.iter()
        .map(|o| {
            String::from_utf8_lossy(&o.data)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn invite_server_retransmits_non_2xx_until_ack() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let inv = req("INVITE", "z9hG4bKinv1");
    let id = server(&mut t, inv.clone(), Transport::Udp);
    let mut out = Vec::new();
    t.reply(id, 100, "Trying", &[], now, &mut out);
    assert_eq!(codes(&out), ["SIP/2.0 100 Trying"]);
    // A retransmitted INVITE gets the last provisional again.
    out.clear();
    assert_eq!(
        t.match_request(&inv, now, &mut out),
        RequestMatch::Retransmission
    );
    assert_eq!(codes(&out), ["SIP/2.0 100 Trying"]);
    out.clear();
    t.reply(id, 486, "Busy Here", &[], now, &mut out);
    assert_eq!(codes(&out), ["SIP/2.0 486 Busy Here"]);
    // Timer G: T1, 2*T1, 4*T1 …
    out.clear();
    t.on_tick(now + Duration::from_millis(499), &mut out);
    assert!(out.is_empty());
    t.on_tick(now + Duration::from_millis(500), &mut out);
    assert_eq!(codes(&out), ["SIP/2.0 486 Busy Here"]);
    out.clear();
    t.on_tick(now + Duration::from_millis(1400), &mut out);
    assert!(out.is_empty());
    t.on_tick(now + Duration::from_millis(1500), &mut out);
    assert_eq!(out.len(), 1);
    // The ACK (same branch) is absorbed and stops retransmissions.
    let mut ack = req("ACK", "z9hG4bKinv1");
    ack = Message::parse(
        &ack.edit()
            .set_header(HeaderName::To, "<sip:bob@x>;tag=tag")
            .finish(),
        &Limits::default(),
    )
    .unwrap();
    out.clear();
    assert_eq!(
        t.match_request(&ack, now, &mut out),
        RequestMatch::AckAbsorbed
    );
    t.on_tick(now + Duration::from_secs(10), &mut out);
    assert!(out.is_empty(), "{:?}", codes(&out));
    // Timer I removes it.
    t.on_tick(now + Duration::from_secs(20), &mut out);
    assert_eq!(t.server_count(), 0);
}

#[test]
fn invite_server_gives_up_after_timer_h() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let id = server(&mut t, req("INVITE", "z9hG4bKh"), Transport::Udp);
    let mut out = Vec::new();
    t.reply(id, 404, "Not Found", &[], now, &mut out);
    out.clear();
    t.on_tick(now + T64 + Duration::from_millis(1), &mut out);
    assert_eq!(t.server_count(), 0);
    // Retransmissions were capped at T2 intervals: at most 1+1+1+1+ (32-7.5)/4 ≈ 11.
    assert!(out.len() <= 11, "{}", out.len());
}

#[test]
fn over_tcp_no_retransmissions() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let id = server(&mut t, req("INVITE", "z9hG4bKtcp"), Transport::Tcp);
    let mut out = Vec::new();
    t.reply(id, 486, "Busy Here", &[], now, &mut out);
    out.clear();
    t.on_tick(now + Duration::from_secs(5), &mut out);
    assert!(out.is_empty());
    let id = server(&mut t, req("OPTIONS", "z9hG4bKtcp2"), Transport::Tcp);
    t.reply(id, 200, "OK", &[], now, &mut out);
    t.on_tick(now, &mut out);
    // Timer J is zero over TCP.
    assert!(t.server(id).is_none());
}

#[test]
fn invite_2xx_is_accepted_and_retransmissions_absorbed() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let inv = req("INVITE", "z9hG4bKok");
    let id = server(&mut t, inv.clone(), Transport::Udp);
    let mut out = Vec::new();
    t.respond(id, 200, b"SIP/2.0 200 OK\r\n\r\n".to_vec(), now, &mut out);
    assert_eq!(t.server(id).unwrap().state(), ServerState::Accepted);
    out.clear();
    // RFC 6026: a retransmitted INVITE is absorbed, not answered.
    assert_eq!(
        t.match_request(&inv, now, &mut out),
        RequestMatch::Retransmission
    );
    assert!(out.is_empty());
    // 2xx retransmissions from downstream pass through.
    t.respond(id, 200, b"SIP/2.0 200 OK\r\n\r\n".to_vec(), now, &mut out);
    assert_eq!(out.len(), 1);
    // Non-2xx after 2xx is not sent.
    out.clear();
    t.respond(id, 500, b"SIP/2.0 500 X\r\n\r\n".to_vec(), now, &mut out);
    assert!(out.is_empty());
    t.on_tick(now + T64, &mut out);
    assert_eq!(t.server_count(), 0);
}

#[test]
fn non_invite_server_answers_retransmissions_from_completed() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let m = req("OPTIONS", "z9hG4bKo");
    let id = server(&mut t, m.clone(), Transport::Udp);
    let mut out = Vec::new();
    // Before any response a retransmission gets nothing.
    assert_eq!(
        t.match_request(&m, now, &mut out),
        RequestMatch::Retransmission
    );
    assert!(out.is_empty());
    t.reply(id, 200, "OK", &[], now, &mut out);
    out.clear();
    assert_eq!(
        t.match_request(&m, now, &mut out),
        RequestMatch::Retransmission
    );
    assert_eq!(codes(&out), ["SIP/2.0 200 OK"]);
    t.on_tick(now + T64, &mut out);
    assert_eq!(t.server_count(), 0);
    // Afterwards the same request is new again.
    assert_eq!(t.match_request(&m, now, &mut out), RequestMatch::New);
}

#[test]
fn cancel_finds_its_invite_and_keys_differ_by_method() {
    let mut t = Transactions::new(TxLimits::default());
    let inv_id = server(&mut t, req("INVITE", "z9hG4bKc"), Transport::Udp);
    let cancel = req("CANCEL", "z9hG4bKc");
    assert_eq!(t.invite_for_cancel(&cancel), Some(inv_id));
    let mut out = Vec::new();
    assert_eq!(
        t.match_request(&cancel, Instant::now(), &mut out),
        RequestMatch::New
    );
    assert_eq!(t.invite_for_cancel(&req("CANCEL", "z9hG4bKother")), None);
}

#[test]
fn rfc2543_requests_without_magic_cookie_match_too() {
    let mut t = Transactions::new(TxLimits::default());
    let m = req("OPTIONS", "old1");
    let id = server(&mut t, m.clone(), Transport::Udp);
    let mut out = Vec::new();
    t.reply(id, 200, "OK", &[], Instant::now(), &mut out);
    out.clear();
    assert_eq!(
        t.match_request(&m, Instant::now(), &mut out),
        RequestMatch::Retransmission
    );
    assert_eq!(out.len(), 1);
    // Another CSeq is another transaction.
    let text = String::from_utf8(m.raw().to_vec())
        .unwrap()
        .replace("CSeq: 1 OPTIONS", "CSeq: 2 OPTIONS");
    let m2 = Message::parse(text.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(
        t.match_request(&m2, Instant::now(), &mut out),
        RequestMatch::New
    );
}

fn owner() -> Owner {
    Owner { ctx: 7, branch: 0 }
}

#[test]
fn invite_client_retransmits_then_times_out() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let inv = req("INVITE", "z9hG4bKcl");
    let mut out = Vec::new();
    let id = t
        .create_client(
            owner(),
            "z9hG4bKcl".into(),
            &Method::Invite,
            inv.raw().to_vec(),
            peer(Transport::Udp, 6000),
            now,
            &mut out,
        )
        .unwrap();
    assert_eq!(out.len(), 1);
    out.clear();
    // Timer A doubles without cap: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
    let mut sent = Vec::new();
    let mut events = Vec::new();
    for ms in (0..=32_000).step_by(100) {
        events.extend(t.on_tick(now + Duration::from_millis(ms), &mut out));
        if !out.is_empty() {
            sent.push(ms);
            out.clear();
        }
    }
    assert_eq!(sent, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert!(
        matches!(events.as_slice(), [TxEvent::Timeout { tx, provisional: false, .. }] if *tx == id)
    );
    assert_eq!(t.client_count(), 0);
}

#[test]
fn invite_client_provisional_stops_a_and_b_final_is_acked() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let inv = req("INVITE", "z9hG4bKp");
    let mut out = Vec::new();
    t.create_client(
        owner(),
        "z9hG4bKp".into(),
        &Method::Invite,
        inv.raw().to_vec(),
        peer(Transport::Udp, 6000),
        now,
        &mut out,
    )
    .unwrap();
    out.clear();
    let ev = t.on_response(resp(&inv, 180), now, &mut out);
    assert!(matches!(ev, Some(TxEvent::Provisional { .. })));
    // No retransmission and no timer B after a provisional.
    let evs = t.on_tick(now + Duration::from_secs(40), &mut out);
    assert!(out.is_empty() && evs.is_empty());
    let ev = t.on_response(resp(&inv, 486), now, &mut out);
    assert!(matches!(ev, Some(TxEvent::Final { ref msg, .. }) if msg.status() == Some(486)));
    assert_eq!(out.len(), 1);
    let ack = Message::parse(&out[0].data, &Limits::default()).unwrap();
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.top_via().branch(), Some("z9hG4bKp"));
    assert_eq!(ack.to().tag(), Some("b1"));
    assert_eq!(ack.cseq().seq, 1);
    // A retransmitted final is ACKed again but not reported.
    out.clear();
    assert!(t.on_response(resp(&inv, 486), now, &mut out).is_none());
    assert_eq!(out.len(), 1);
}

#[test]
fn invite_client_2xx_retransmissions_pass_up_while_accepted() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let inv = req("INVITE", "z9hG4bK2x");
    let mut out = Vec::new();
    t.create_client(
        owner(),
        "z9hG4bK2x".into(),
        &Method::Invite,
        inv.raw().to_vec(),
        peer(Transport::Udp, 6000),
        now,
        &mut out,
    )
    .unwrap();
    out.clear();
    assert!(matches!(
        t.on_response(resp(&inv, 200), now, &mut out),
        Some(TxEvent::Final { .. })
    ));
    assert!(out.is_empty(), "no ACK for 2xx from the transaction");
    assert!(matches!(
        t.on_response(resp(&inv, 200), now, &mut out),
        Some(TxEvent::Final { .. })
    ));
    t.on_tick(now + T64, &mut out);
    assert_eq!(t.client_count(), 0);
}

#[test]
fn non_invite_client_retransmits_capped_at_t2() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let m = req("OPTIONS", "z9hG4bKn");
    let mut out = Vec::new();
    t.create_client(
        owner(),
        "z9hG4bKn".into(),
        &Method::Options,
        m.raw().to_vec(),
        peer(Transport::Udp, 6000),
        now,
        &mut out,
    )
    .unwrap();
    out.clear();
    let mut sent = Vec::new();
    for ms in (0..=12_000).step_by(100) {
        t.on_tick(now + Duration::from_millis(ms), &mut out);
        if !out.is_empty() {
            sent.push(ms);
            out.clear();
        }
    }
    assert_eq!(sent, vec![500, 1500, 3500, 7500, 11500]);
    let ev = t.on_response(resp(&m, 200), now + Duration::from_secs(12), &mut out);
    assert!(matches!(ev, Some(TxEvent::Final { .. })));
    // Absorbed afterwards.
    assert!(t.on_response(resp(&m, 200), now, &mut out).is_none());
}

#[test]
fn cancel_is_built_from_the_invite() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let inv = req("INVITE", "z9hG4bKcc");
    let mut out = Vec::new();
    let id = t
        .create_client(
            owner(),
            "z9hG4bKcc".into(),
            &Method::Invite,
            inv.raw().to_vec(),
            peer(Transport::Udp, 6000),
            now,
            &mut out,
        )
        .unwrap();
    let c = t.client(id).unwrap().build_cancel().unwrap();
    let c = Message::parse(&c, &Limits::default()).unwrap();
    assert_eq!(c.method(), Some(&Method::Cancel));
    assert_eq!(c.request_uri(), inv.request_uri());
    assert_eq!(c.top_via().branch(), Some("z9hG4bKcc"));
    assert_eq!(c.cseq().seq, 1);
    assert_eq!(c.cseq().method, Method::Cancel);
    assert_eq!(c.call_id(), inv.call_id());
    // Its responses go to the CANCEL transaction, not the INVITE one.
    let cid = t.create_client(
        owner(),
        "z9hG4bKcc".into(),
        &Method::Cancel,
        c.raw().to_vec(),
        peer(Transport::Udp, 6000),
        now,
        &mut out,
    );
    assert!(cid.is_some());
    let ok = resp(&c, 200);
    assert!(
        matches!(t.on_response(ok, now, &mut out), Some(TxEvent::Final { tx, .. }) if Some(tx) == cid)
    );
    assert!(t.client(id).is_some());
}

#[test]
fn timer_c_fires_for_long_ringing() {
    let mut t = Transactions::new(TxLimits::default());
    let now = Instant::now();
    let inv = req("INVITE", "z9hG4bKlong");
    let mut out = Vec::new();
    t.create_client(
        owner(),
        "z9hG4bKlong".into(),
        &Method::Invite,
        inv.raw().to_vec(),
        peer(Transport::Tcp, 6000),
        now,
        &mut out,
    )
    .unwrap();
    t.on_response(resp(&inv, 180), now, &mut out);
    let evs = t.on_tick(now + TIMER_C, &mut out);
    assert!(matches!(evs.as_slice(), [TxEvent::TimerC { .. }]));
    let evs = t.on_tick(now + TIMER_C + T64, &mut out);
    assert!(matches!(
        evs.as_slice(),
        [TxEvent::Timeout {
            provisional: true,
            ..
        }]
    ));
    assert_eq!(t.client_count(), 0);
}

#[test]
fn tables_are_bounded() {
    let mut t = Transactions::new(TxLimits {
        max_server: 2,
        max_client: 1,
        ..TxLimits::default()
    });
    server(&mut t, req("OPTIONS", "z9hG4bK1"), Transport::Udp);
    server(&mut t, req("OPTIONS", "z9hG4bK2"), Transport::Udp);
    let m = req("OPTIONS", "z9hG4bK3");
    let p = peer(Transport::Udp, 5000);
    assert!(t
        .create_server(Arc::new(m.clone()), p, p, String::new(), 0)
        .is_none());
    let mut out = Vec::new();
    let now = Instant::now();
    assert!(t
        .create_client(
            owner(),
            "b1".into(),
            &Method::Options,
            m.raw().to_vec(),
            p,
            now,
            &mut out
        )
        .is_some());
    assert!(t
        .create_client(
            owner(),
            "b2".into(),
            &Method::Options,
            m.raw().to_vec(),
            p,
            now,
            &mut out
        )
        .is_none());
}

fn server_from(t: &mut Transactions, m: Message, ip: [u8; 4]) -> Option<TxId> {
    let p = Peer {
        transport: Transport::Udp,
        addr: (ip, 5000).into(),
        flow: None,
        local: None,
    };
    let via = m.top_via().to_string();
    t.create_server(Arc::new(m), p, p, via, 0x7a)
}

#[test]
fn open_transactions_are_bounded_per_source() {
    let mut t = Transactions::new(TxLimits {
        max_open_per_source: 2,
        ..TxLimits::default()
    });
    let now = Instant::now();
    let a = [127, 0, 0, 2];
    let i1 = server_from(&mut t, req("INVITE", "z9hG4bKa1"), a).unwrap();
    let i2 = server_from(&mut t, req("INVITE", "z9hG4bKa2"), a).unwrap();
    assert_eq!(t.open_from(a.into()), 2);
    // The third from that source is refused; another source is served.
    assert!(server_from(&mut t, req("INVITE", "z9hG4bKa3"), a).is_none());
    assert_eq!(t.refused_per_source, 1);
    assert!(server_from(&mut t, req("INVITE", "z9hG4bKb1"), [127, 0, 0, 1]).is_some());
    // A CANCEL is never refused: it ends open transactions.
    let c = server_from(&mut t, req("CANCEL", "z9hG4bKa1"), a).unwrap();
    let mut out = Vec::new();
    t.reply(c, 200, "OK", &[], now, &mut out);
    // A provisional keeps an INVITE open; a non-2xx final too, until the ACK.
    t.reply(i1, 180, "Ringing", &[], now, &mut out);
    t.reply(i1, 486, "Busy Here", &[], now, &mut out);
    assert_eq!(t.open_from(a.into()), 2);
    let mut ack = req("ACK", "z9hG4bKa1");
    ack = Message::parse(
        &String::from_utf8_lossy(ack.raw())
            .replace("To: <sip:bob@x>", "To: <sip:bob@x>;tag=7a")
            .into_bytes(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        t.match_request(&ack, now, &mut out),
        RequestMatch::AckAbsorbed
    );
    assert_eq!(t.open_from(a.into()), 1);
    // A 2xx ends it being open (it lingers, not counted).
    t.reply(i2, 200, "OK", &[], now, &mut out);
    assert_eq!(t.open_from(a.into()), 0);
    assert!(server_from(&mut t, req("INVITE", "z9hG4bKa4"), a).is_some());
    // A non-INVITE is open until its final response.
    let o = server_from(&mut t, req("OPTIONS", "z9hG4bKa5"), a).unwrap();
    assert_eq!(t.open_from(a.into()), 2);
    t.reply(o, 200, "OK", &[], now, &mut out);
    assert_eq!(t.open_from(a.into()), 1);
    // Dropped (e.g. timer H) while open: no longer counted; the count
    // of a source with none open goes away.
    let i4 = t.invite_for_cancel(&req("CANCEL", "z9hG4bKa4")).unwrap();
    t.drop_server(i4);
    assert_eq!(t.open_from(a.into()), 0);
    assert!(!t.open_by_source.contains_key(&IpAddr::from(a)));
    assert_eq!(t.open_from([127, 0, 0, 1].into()), 1);
}

#[test]
fn tables_shrink_after_a_burst() {
    let mut t = Transactions::new(TxLimits {
        initial: 64,
        max_open: 100_000,
        max_open_per_source: 100_000,
        ..TxLimits::default()
    });
    let now = Instant::now();
    let mut ids = Vec::new();
    for i in 0..10_000 {
        ids.push(server(
            &mut t,
            req("OPTIONS", &format!("z9hG4bKs{i}")),
            Transport::Udp,
        ));
    }
    let grown = t.servers.capacity();
    assert!(grown >= 10_000);
    let mut out = Vec::new();
    for id in ids.drain(10..) {
        t.reply(id, 200, "OK", &[], now, &mut out);
        t.drop_server(id);
    }
    t.shrink();
    assert!(t.servers.capacity() < grown / 4, "{}", t.servers.capacity());
    assert!(t.servers.capacity() >= SHRINK_FLOOR);
    assert!(t.server_keys.capacity() >= SHRINK_FLOOR);
    assert_eq!(t.server_count(), 10);
    // The ones left are still found.
    for id in &ids {
        assert!(t.server(*id).is_some());
    }
    let again = t.servers.capacity();
    t.shrink();
    assert_eq!(t.servers.capacity(), again, "nothing to do the second time");
}

#[test]
fn open_transactions_are_bounded_in_all() {
    let mut t = Transactions::new(TxLimits {
        max_open: 2,
        ..TxLimits::default()
    });
    let now = Instant::now();
    let a = server_from(&mut t, req("INVITE", "z9hG4bKg1"), [127, 0, 0, 2]).unwrap();
    server_from(&mut t, req("INVITE", "z9hG4bKg2"), [127, 0, 0, 3]).unwrap();
    assert_eq!(t.open_count(), 2);
    assert!(server_from(&mut t, req("INVITE", "z9hG4bKg3"), [127, 0, 0, 4]).is_none());
    // Not counted as a per-source refusal; CANCEL still gets through.
    assert_eq!(t.refused_per_source, 0);
    let c = server_from(&mut t, req("CANCEL", "z9hG4bKg1"), [127, 0, 0, 2]).unwrap();
    let mut out = Vec::new();
    t.reply(c, 200, "OK", &[], now, &mut out);
    t.reply(a, 200, "OK", &[], now, &mut out);
    assert!(server_from(&mut t, req("INVITE", "z9hG4bKg4"), [127, 0, 0, 4]).is_some());
}
