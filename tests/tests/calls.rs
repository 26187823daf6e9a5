//! End-to-end calls through the proxy (spec §4): routing by name, short and
//! long number, gateways (normalisation, callerid, failover), dialplans,
//! CANCEL, BYE from either side, re-INVITE, TCP↔UDP, calls list and CDRs.

use std::net::SocketAddr;
use std::time::Duration;

use sipd::sip::{HeaderName, Message};
use sipd_tests::ua::{unique, Dialog};
use sipd_tests::{free_port, text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);

struct Pbx {
    sipd: Sipd,
    gw1: SocketAddr,
    gw2: SocketAddr,
}

/// The gateways here read every request as part of a call: health-check
/// OPTIONS are off for them (tests/tests/gateways.rs tests those).
fn pbx() -> Pbx {
    let gw1: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let conf = format!(
        "[general]\nmin_expires=2\n\n\
         [alice]\naccountcode=office\nsecret=alice-pw\nexten=4951110001#1001\ncallerid=\"Alice\" <4951110001>\n\n\
         [bob]\naccountcode=office\nsecret=bob-pw\nexten=4951110002#1002\n\n\
         [carol]\naccountcode=home\nsecret=carol-pw\nexten=1003\ncontext=em\n\n\
         [GW1]\naccountcode=gateways\nhost={gw1}\nexten=9\nqualify=0\n\n\
         [GW2]\naccountcode=gateways\nhost={gw2}\nexten=8\nqualify=0\n"
    );
    Pbx {
        sipd: Sipd::start(&conf),
        gw1,
        gw2,
    }
}

fn phone(p: &Pbx, user: &str, tcp: bool) -> Ua {
    let mut ua = if tcp {
        Ua::tcp(p.sipd.addr, user)
    } else {
        Ua::udp(p.sipd.addr, user)
    };
    let r = ua.register(&format!("{user}-pw"), 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

fn calls(sipd: &Sipd) -> Vec<proto::CallInfo> {
    match sipd.ctl(proto::Command::Calls).into_result().unwrap() {
        proto::Reply::Calls(c) => c.calls,
        other => panic!("{other:?}"),
    }
}

fn cdrs(sipd: &Sipd) -> Vec<proto::Cdr> {
    match sipd
        .ctl(proto::Command::Cdr { last: Some(100) })
        .into_result()
        .unwrap()
    {
        proto::Reply::Cdr(c) => c.records,
        other => panic!("{other:?}"),
    }
}

/// The CDR of a call, once written.
fn cdr_of(sipd: &Sipd, call_id: &str) -> proto::Cdr {
    wait_for(S, || cdrs(sipd).into_iter().find(|c| c.call_id == call_id))
        .unwrap_or_else(|| panic!("no CDR for {call_id}: {:?}", cdrs(sipd)))
}

/// alice calls `uri`; `callee` rings and answers; both sides' dialogs.
fn establish(
    caller: &mut Ua,
    callee: &mut Ua,
    uri: &str,
    secret: &str,
) -> (Dialog, Dialog, Message) {
    let inv = caller.invite(uri, secret);
    let got = callee.expect_request("INVITE", S);
    let tag = unique("callee");
    callee.respond(&got, 180, "Ringing", &tag);
    let ringing = caller.expect_status(180, S);
    assert_eq!(ringing.header(&HeaderName::From), inv.get("From"));
    callee.respond(&got, 200, "OK", &tag);
    let ok = caller.expect_status(200, S);
    let mut uac = Dialog::uac(&inv, &ok);
    let ack = caller.in_dialog(&mut uac, "ACK");
    caller.send(&ack);
    callee.expect_request("ACK", S);
    (uac, Dialog::uas(&got, &tag), got)
}

#[test]
fn call_by_name_with_calls_list_and_bye_from_callee() {
    let p = pbx();
    let mut alice = phone(&p, "alice", false);
    let mut bob = phone(&p, "bob", false);
    let inv = alice.invite(&format!("sip:bob@{}", p.sipd.addr), "alice-pw");
    alice.expect_status(100, S);
    let got = bob.expect_request("INVITE", S);
    // Request-URI is bob's registered Contact; sipd record-routes and adds its Via.
    assert_eq!(
        got.request_uri(),
        Some(format!("sip:bob@{};transport=udp", bob.local).as_str())
    );
    assert_eq!(got.call_id(), inv.get("Call-ID").unwrap());
    assert_eq!(got.vias().unwrap().len(), 2);
    let rr = got.header(&HeaderName::RecordRoute).unwrap();
    assert!(
        rr.contains(&p.sipd.addr.to_string()) && rr.contains(";lr"),
        "{rr}"
    );
    assert!(
        got.header(&HeaderName::ProxyAuthorization).is_none(),
        "credentials leaked downstream"
    );
    assert_eq!(got.max_forwards(), Some(69));
    assert_eq!(got.body(), inv.body.as_slice());
    let tag = unique("b");
    bob.respond(&got, 180, "Ringing", &tag);
    alice.expect_status(180, S);
    let c = calls(&p.sipd);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (
            c[0].caller.as_str(),
            c[0].dialed.as_str(),
            c[0].target.as_str(),
            c[0].state.as_str()
        ),
        ("alice", "bob", "bob", "ringing")
    );
    let out = p.sipd.sipctl(&["calls"]);
    assert!(
        text(&out.stdout).contains("ringing"),
        "{}",
        text(&out.stdout)
    );
    bob.respond(&got, 200, "OK", &tag);
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.vias().unwrap().len(), 1);
    assert_eq!(calls(&p.sipd)[0].state, "answered");
    let mut uac = Dialog::uac(&inv, &ok);
    alice.send(&alice.in_dialog(&mut uac, "ACK"));
    let ack = bob.expect_request("ACK", S);
    assert_eq!(ack.request_uri(), got.request_uri());
    std::thread::sleep(Duration::from_millis(1100));
    // BYE from the callee goes back to alice's real address.
    let mut uas = Dialog::uas(&got, &tag);
    let bye = bob.in_dialog(&mut uas, "BYE");
    bob.send(&bye);
    let got_bye = alice.expect_request("BYE", S);
    alice.respond(&got_bye, 200, "OK", &uac.local);
    bob.expect_status(200, S);
    assert!(wait_for(S, || calls(&p.sipd).is_empty().then_some(())).is_some());
    let cdr = cdr_of(&p.sipd, &uac.call_id);
    assert_eq!(
        (
            cdr.disposition.as_str(),
            cdr.code,
            cdr.caller.as_str(),
            cdr.target.as_str()
        ),
        ("ANSWERED", 200, "alice", "bob")
    );
    assert!(cdr.billsec >= 1 && cdr.duration >= cdr.billsec, "{cdr:?}");
    assert_eq!(cdr.callerid, "4951110001");
    assert_eq!(cdr.accountcode, "office");
}

#[test]
fn short_number_within_group_long_number_anywhere() {
    let p = pbx();
    let mut alice = phone(&p, "alice", false);
    let mut bob = phone(&p, "bob", false);
    let mut carol = phone(&p, "carol", false);
    let a = p.sipd.addr;
    let (mut d, _, _) = establish(&mut alice, &mut bob, &format!("sip:1002@{a}"), "alice-pw");
    alice.send(&alice.in_dialog(&mut d, "BYE"));
    let bye = bob.expect_request("BYE", S);
    bob.respond(&bye, 200, "OK", "x");
    alice.expect_status(200, S);
    // carol is in another group: 1002 is not bob for her (and her em dialplan refuses it outside).
    carol.invite(&format!("sip:1002@{a}"), "carol-pw");
    let r = carol.final_response(S).unwrap();
    assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
    bob.expect_silence(Duration::from_millis(300));
    // The long number with a national prefix reaches bob from any group.
    let (_, _, got) = establish(
        &mut carol,
        &mut bob,
        &format!("sip:84951110002@{a}"),
        "carol-pw",
    );
    assert_eq!(got.from().uri.user.as_deref(), Some("carol"));
}

fn gateway(addr: SocketAddr, server: SocketAddr) -> Ua {
    Ua::udp_at(addr, server, "gw")
}

#[test]
fn gateway_gets_prefix_plus_normalised_number_and_callerid() {
    let p = pbx();
    let mut alice = phone(&p, "alice", false);
    let mut g1 = gateway(p.gw1, p.sipd.addr);
    let mut g2 = gateway(p.gw2, p.sipd.addr);
    for (dialed, normalised) in [
        ("1234567", "74951234567"),
        ("84991234567", "74991234567"),
        ("81044123456789", "44123456789"),
    ] {
        let inv = alice.invite(&format!("sip:{dialed}@{}", p.sipd.addr), "alice-pw");
        // Random start: whichever gateway gets it must see its own prefix.
        let (got, prefix, gw) = match g1.recv(S) {
            Some(m) if m.method().is_some() => (m, "9", &mut g1),
            _ => (g2.expect_request("INVITE", S), "8", &mut g2),
        };
        let ruri = sipd::sip::Uri::parse(got.request_uri().unwrap()).unwrap();
        assert_eq!(
            ruri.user.as_deref(),
            Some(format!("{prefix}{normalised}").as_str()),
            "{dialed}"
        );
        // The caller is presented as its callerid toward the gateway.
        assert_eq!(got.from().uri.user.as_deref(), Some("4951110001"));
        assert_eq!(got.from().display.as_deref(), Some("Alice"));
        assert_eq!(got.from().tag(), Some(alice.tag.as_str()));
        let pai = got
            .header(&HeaderName::PAssertedIdentity)
            .expect("P-Asserted-Identity");
        assert!(pai.contains("sip:4951110001@"), "{pai}");
        let tag = unique("gw");
        gw.respond(&got, 183, "Session Progress", &tag);
        let prog = alice.expect_status(183, S);
        // ... while alice keeps seeing her own From.
        assert_eq!(prog.header(&HeaderName::From), inv.get("From"));
        gw.respond(&got, 200, "OK", &tag);
        let ok = alice.expect_status(200, S);
        assert_eq!(ok.header(&HeaderName::From), inv.get("From"));
        let mut d = Dialog::uac(&inv, &ok);
        alice.send(&alice.in_dialog(&mut d, "ACK"));
        let ack = gw.expect_request("ACK", S);
        assert_eq!(ack.from().uri.user.as_deref(), Some("4951110001"));
        // BYE from the gateway: alice sees her own From in its To.
        let mut gd = Dialog::uas(&got, &tag);
        gw.send(&gw.in_dialog(&mut gd, "BYE"));
        let bye = alice.expect_request("BYE", S);
        assert_eq!(
            bye.header(&HeaderName::To),
            inv.get("From"),
            "{}",
            text(bye.raw())
        );
        alice.respond(&bye, 200, "OK", "");
        let ok = gw.expect_status(200, S);
        assert_eq!(ok.to().uri.user.as_deref(), Some("4951110001"));
    }
}

/// Which of the gateways got the INVITE (index) and the INVITE.
fn first_invite(gws: &mut [Ua; 2]) -> (usize, Message) {
    let deadline = std::time::Instant::now() + S;
    while std::time::Instant::now() < deadline {
        for (i, g) in gws.iter_mut().enumerate() {
            if let Some(m) = g.recv(Duration::from_millis(20)) {
                if m.method().map(|x| x.as_str()) == Some("INVITE") {
                    return (i, m);
                }
            }
        }
    }
    panic!("no gateway got the INVITE");
}

#[test]
fn gateway_failover_on_503_and_on_silence() {
    let p = pbx();
    let mut alice = phone(&p, "alice", false);
    let mut gws = [gateway(p.gw1, p.sipd.addr), gateway(p.gw2, p.sipd.addr)];
    for silent in [false, true] {
        alice.invite(&format!("sip:1234567@{}", p.sipd.addr), "alice-pw");
        let (i, first) = first_invite(&mut gws);
        if !silent {
            gws[i].respond(&first, 503, "Service Unavailable", "t");
        }
        let started = std::time::Instant::now();
        let other = &mut gws[1 - i];
        let next = other.expect_request("INVITE", Duration::from_secs(10));
        if silent {
            assert!(
                started.elapsed() >= Duration::from_secs(3),
                "failover before the no-response timeout"
            );
        }
        other.respond(&next, 486, "Busy Here", "t2");
        let r = alice.final_response(S).unwrap();
        assert_eq!(r.status(), Some(486));
        // Forget retransmissions to the silent gateway before the next round.
        std::thread::sleep(Duration::from_millis(200));
        for g in gws.iter_mut() {
            while g.recv(Duration::from_millis(50)).is_some() {}
        }
    }
}

#[test]
fn dialplan_forbids_and_gateways_cannot_transit() {
    let p = pbx();
    let mut carol = phone(&p, "carol", false);
    carol.invite(&format!("sip:81044123456789@{}", p.sipd.addr), "carol-pw");
    assert_eq!(carol.final_response(S).unwrap().status(), Some(403));
    // carol's em dialplan allows a local 7495 + 2-3 digits number.
    let mut gws = [gateway(p.gw1, p.sipd.addr), gateway(p.gw2, p.sipd.addr)];
    carol.invite(&format!("sip:123@{}", p.sipd.addr), "carol-pw");
    let (_, got) = first_invite(&mut gws);
    assert!(
        got.request_uri().unwrap().contains("7495123@"),
        "{}",
        got.request_uri().unwrap()
    );
    // A gateway calling an external number: no transit.
    let req = gws[0].request("INVITE", &format!("sip:74957777777@{}", p.sipd.addr));
    gws[0].send(&req);
    let r = gws[0].final_response(S).unwrap();
    assert_eq!(r.status(), Some(404), "{}", text(r.raw()));
}

#[test]
fn gateway_call_reaches_client_by_long_number_without_auth() {
    let p = pbx();
    let mut bob = phone(&p, "bob", false);
    let mut g1 = gateway(p.gw1, p.sipd.addr);
    let req = g1.request("INVITE", &format!("sip:74951110002@{}", p.sipd.addr));
    g1.send(&req);
    let got = bob.expect_request("INVITE", S);
    assert_eq!(got.call_id(), req.get("Call-ID").unwrap());
    bob.respond(&got, 200, "OK", "bt");
    let ok = g1.expect_status(200, S);
    assert_eq!(ok.call_id(), req.get("Call-ID").unwrap());
}

#[test]
fn cancel_before_answer() {
    let p = pbx();
    let mut alice = phone(&p, "alice", false);
    let mut bob = phone(&p, "bob", false);
    let inv = alice.invite(&format!("sip:bob@{}", p.sipd.addr), "alice-pw");
    let got = bob.expect_request("INVITE", S);
    bob.respond(&got, 180, "Ringing", "bt");
    alice.expect_status(180, S);
    let mut cancel = inv.clone();
    cancel.method = "CANCEL".into();
    cancel.body.clear();
    let cancel = cancel
        .remove("Content-Type")
        .set(
            "CSeq",
            &format!(
                "{} CANCEL",
                inv.get("CSeq").unwrap().split_whitespace().next().unwrap()
            ),
        )
        .remove("Proxy-Authorization");
    alice.send(&cancel);
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.cseq().method.as_str(), "CANCEL");
    let c = bob.expect_request("CANCEL", S);
    assert_eq!(c.top_via().branch(), got.top_via().branch());
    bob.respond(&c, 200, "OK", "bt");
    bob.respond(&got, 487, "Request Terminated", "bt");
    let r = alice.expect_status(487, S);
    assert_eq!(r.cseq().method.as_str(), "INVITE");
    let cdr = cdr_of(&p.sipd, inv.get("Call-ID").unwrap());
    assert_eq!((cdr.disposition.as_str(), cdr.code), ("CANCELLED", 487));
    assert!(calls(&p.sipd).is_empty());
}

#[test]
fn bye_from_caller_reinvite_and_cdr_dispositions() {
    let p = pbx();
    let mut alice = phone(&p, "alice", false);
    let mut bob = phone(&p, "bob", false);
    let a = p.sipd.addr;
    let (mut d, mut bd, _) = establish(&mut alice, &mut bob, &format!("sip:bob@{a}"), "alice-pw");
    // re-INVITE (hold) from alice: bob answers, alice ACKs.
    let re = alice.in_dialog(&mut d, "INVITE");
    alice.send(&re);
    let got = bob.expect_request("INVITE", S);
    assert_eq!(got.to().tag(), bd.local.rsplit("tag=").next());
    bob.respond(&got, 200, "OK", bd.local.rsplit("tag=").next().unwrap());
    alice.expect_status(200, S);
    alice.send(&alice.in_dialog(&mut d, "ACK"));
    bob.expect_request("ACK", S);
    // INFO from bob (callee side) reaches alice.
    bob.send(&bob.in_dialog(&mut bd, "INFO"));
    let info = alice.expect_request("INFO", S);
    alice.respond(&info, 200, "OK", "");
    bob.expect_status(200, S);
    alice.send(&alice.in_dialog(&mut d, "BYE"));
    let bye = bob.expect_request("BYE", S);
    bob.respond(&bye, 200, "OK", "");
    alice.expect_status(200, S);
    assert_eq!(cdr_of(&p.sipd, &d.call_id).disposition, "ANSWERED");
    // BUSY and NO ANSWER.
    for (code, reason, disposition) in [
        (486, "Busy Here", "BUSY"),
        (480, "Temporarily Unavailable", "NO ANSWER"),
    ] {
        let inv = alice.invite(&format!("sip:bob@{a}"), "alice-pw");
        let got = bob.expect_request("INVITE", S);
        bob.respond(&got, code, reason, "bt");
        assert_eq!(alice.final_response(S).unwrap().status(), Some(code));
        // bob's final is ACKed hop by hop by sipd.
        bob.expect_request("ACK", S);
        let cdr = cdr_of(&p.sipd, inv.get("Call-ID").unwrap());
        assert_eq!((cdr.disposition.as_str(), cdr.code), (disposition, code));
    }
    let out = p.sipd.sipctl(&["cdr", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["records"].as_array().unwrap().len() >= 3);
}

#[test]
fn tcp_caller_to_udp_callee_and_back() {
    let p = pbx();
    let mut alice = phone(&p, "alice", true);
    let mut bob = phone(&p, "bob", false);
    let a = p.sipd.addr;
    let (mut d, _, got) = establish(&mut alice, &mut bob, &format!("sip:bob@{a}"), "alice-pw");
    // Two Record-Routes: one per transport.
    let rr = got.header_values(&HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "{rr:?}");
    alice.send(&alice.in_dialog(&mut d, "BYE"));
    let bye = bob.expect_request("BYE", S);
    bob.respond(&bye, 200, "OK", "");
    alice.expect_status(200, S);
    // And back: bob (UDP) calls alice, who is reached over her TCP connection.
    let (mut d, _, got) = establish(&mut bob, &mut alice, &format!("sip:alice@{a}"), "bob-pw");
    assert_eq!(got.top_via().transport, "TCP");
    bob.send(&bob.in_dialog(&mut d, "BYE"));
    let bye = alice.expect_request("BYE", S);
    alice.respond(&bye, 200, "OK", "");
    bob.expect_status(200, S);
}

#[test]
fn unknown_and_unregistered_targets() {
    let p = pbx();
    let mut alice = phone(&p, "alice", false);
    alice.invite(&format!("sip:bob@{}", p.sipd.addr), "alice-pw");
    assert_eq!(alice.final_response(S).unwrap().status(), Some(480));
    // Without credentials nothing is routed.
    let req = alice.request("INVITE", &format!("sip:bob@{}", p.sipd.addr));
    assert_eq!(alice.transact(&req).unwrap().status(), Some(407));
}

#[test]
fn in_dialog_request_from_a_strict_router() {
    let p = pbx();
    let mut alice = phone(&p, "alice", false);
    let mut bob = phone(&p, "bob", false);
    let (d, _, _) = establish(
        &mut alice,
        &mut bob,
        &format!("sip:bob@{}", p.sipd.addr),
        "alice-pw",
    );
    // RFC 2543 strict routing: the first route (sipd's Record-Route URI)
    // becomes the Request-URI, the remote target the last Route.
    let mut strict = d.clone();
    let first = strict.routes.remove(0);
    let rr_uri = first
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    strict.routes.push(format!("<{}>", d.target));
    strict.target = rr_uri;
    let bye = alice.in_dialog(&mut strict, "BYE");
    alice.send(&bye);
    let got = bob.expect_request("BYE", S);
    assert_eq!(
        got.request_uri(),
        Some(d.target.as_str()),
        "{}",
        text(got.raw())
    );
    assert!(
        got.header(&HeaderName::Route).is_none(),
        "{}",
        text(got.raw())
    );
    bob.respond(&got, 200, "OK", "");
    alice.expect_status(200, S);
}

/// Blind transfer by REFER (RFC 3515), as phones do it: bob, in a call with
/// alice, sends REFER to 1004; it reaches alice over the dialog, her 202
/// and her NOTIFYs (sipfrag progress) reach bob; alice calls 1004 (dave)
/// as a new, authorized call; bob hangs up his call with alice. The dialog
/// guard lets all of this through: every request comes from one of the
/// dialog's ends. Both calls get their CDR; dave's call is listed.
#[test]
fn blind_transfer_by_refer() {
    let sipd = Sipd::start(
        "[alice]\naccountcode=office\nsecret=alice-pw\nexten=1001\n\n\
         [bob]\naccountcode=office\nsecret=bob-pw\nexten=1002\n\n\
         [dave]\naccountcode=office\nsecret=dave-pw\nexten=1004\n",
    );
    let a = sipd.addr;
    let ua = |user: &str| {
        let mut ua = Ua::udp(a, user);
        assert_eq!(ua.register(&format!("{user}-pw"), 300).status(), Some(200));
        ua
    };
    let (mut alice, mut bob, mut dave) = (ua("alice"), ua("bob"), ua("dave"));
    let (mut ad, mut bd, _) = establish(&mut alice, &mut bob, &format!("sip:1002@{a}"), "alice-pw");

    // REFER from bob (the callee side) reaches alice; her 202 reaches bob.
    let refer = bob
        .in_dialog(&mut bd, "REFER")
        .set("Refer-To", &format!("<sip:1004@{a}>"))
        .set("Referred-By", &format!("<sip:bob@{a}>"));
    bob.send(&refer);
    let got = alice.expect_request("REFER", S);
    let refer_to = format!("<sip:1004@{a}>");
    assert_eq!(got.header(&HeaderName::ReferTo), Some(refer_to.as_str()));
    alice.respond(&got, 202, "Accepted", "");
    bob.expect_status(202, S);

    // alice reports progress with NOTIFY in the same dialog.
    let notify = |alice: &mut Ua, ad: &mut Dialog, frag: &str, state: &str| {
        let n = alice
            .in_dialog(ad, "NOTIFY")
            .set("Event", "refer")
            .set("Subscription-State", state)
            .body("message/sipfrag;version=2.0", frag.as_bytes());
        alice.send(&n);
    };
    notify(
        &mut alice,
        &mut ad,
        "SIP/2.0 100 Trying",
        "active;expires=60",
    );
    let n = bob.expect_request("NOTIFY", S);
    assert_eq!(n.body(), b"SIP/2.0 100 Trying");
    bob.respond(&n, 200, "OK", "");
    alice.expect_status(200, S);

    // alice calls the Refer-To target: a new call of her own.
    let (mut ad2, mut dd, _) =
        establish(&mut alice, &mut dave, &format!("sip:1004@{a}"), "alice-pw");
    notify(
        &mut alice,
        &mut ad,
        "SIP/2.0 200 OK",
        "terminated;reason=noresource",
    );
    let n = bob.expect_request("NOTIFY", S);
    assert_eq!(n.body(), b"SIP/2.0 200 OK");
    bob.respond(&n, 200, "OK", "");
    alice.expect_status(200, S);

    // bob hangs up the first call; the transferred call goes on.
    bob.send(&bob.in_dialog(&mut bd, "BYE"));
    let bye = alice.expect_request("BYE", S);
    alice.respond(&bye, 200, "OK", "");
    bob.expect_status(200, S);
    let first = cdr_of(&sipd, &ad.call_id);
    assert_eq!(
        (first.disposition.as_str(), first.target.as_str()),
        ("ANSWERED", "bob")
    );
    let listed = calls(&sipd);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].caller.as_str(), listed[0].target.as_str()),
        ("alice", "dave")
    );

    dave.send(&dave.in_dialog(&mut dd, "BYE"));
    let bye = alice.expect_request("BYE", S);
    alice.respond(&bye, 200, "OK", "");
    dave.expect_status(200, S);
    let second = cdr_of(&sipd, &ad2.call_id);
    assert_eq!(
        (second.disposition.as_str(), second.target.as_str()),
        ("ANSWERED", "dave")
    );
    let _ = &mut ad2;
}
