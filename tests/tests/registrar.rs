//! End-to-end: digest authentication and the registrar (spec §3).

use std::time::Duration;

use sipd::sip::HeaderName;
use sipd_tests::ua::{unique, Req};
use sipd_tests::{text, wait_for, Sipd, Ua};

const CONF: &str = "\
[general]
min_expires=2
max_expires=300

[alice]
accountcode=office
secret=wonderland
exten=1001

[bob]
accountcode=office
secret=builder
exten=1002

[fenced]
secret=fence
permit=10.0.0.0/8

[static]
host=127.0.0.1:5999
";

const SECOND: Duration = Duration::from_secs(1);

fn regs(sipd: &Sipd) -> Vec<proto::Binding> {
    match sipd
        .ctl(proto::Command::Regs { name: None })
        .into_result()
        .unwrap()
    {
        proto::Reply::Regs(r) => r.bindings,
        other => panic!("{other:?}"),
    }
}

#[test]
fn challenge_then_success_with_md5_and_sha256() {
    // The default offer is MD5 alone; SHA-256 first when sip.conf asks.
    for (conf, offer) in [
        (CONF.to_string(), &["MD5"][..]),
        (
            CONF.replace("[general]\n", "[general]\ndigest=sha-256,md5\n"),
            &["SHA-256", "MD5"][..],
        ),
    ] {
        let sipd = Sipd::start(&conf);
        let mut ua = Ua::udp(sipd.addr, "alice");
        let req = ua
            .request("REGISTER", &format!("sip:{}", sipd.addr))
            .set("Expires", "60");
        let ch = ua.transact(&req).unwrap();
        assert_eq!(ch.status(), Some(401));
        let www: Vec<&str> = ch.headers(&HeaderName::WwwAuthenticate).collect();
        assert_eq!(www.len(), offer.len(), "{www:?}");
        for (w, alg) in www.iter().zip(offer) {
            assert!(w.contains(&format!("algorithm={alg}")), "{www:?}");
        }
        assert!(www.iter().all(|w| w.contains("qop=\"auth\"")));
        let mut cur = req.clone();
        for (nc, alg) in offer.iter().enumerate() {
            let again = ua.authorized(&cur, &ch, "wonderland", alg, nc as u32 + 1);
            cur = again.clone();
            let ok = ua.transact(&again).unwrap();
            assert_eq!(ok.status(), Some(200), "{alg}: {}", text(ok.raw()));
            let contact = ok.header(&HeaderName::Contact).unwrap();
            assert!(
                contact.contains(&format!("sip:alice@{}", ua.local)),
                "{contact}"
            );
            let exp: u64 = contact.rsplit("expires=").next().unwrap().parse().unwrap();
            assert!((58..=60).contains(&exp), "{contact}");
        }
        let b = regs(&sipd);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].name, "alice");
        assert_eq!(b[0].source, format!("udp:{}", ua.local));
    }
}

#[test]
fn wrong_password_unknown_user_and_outside_permit_get_the_same_403() {
    let sipd = Sipd::start(CONF);
    let mut answers = Vec::new();
    for (user, secret) in [
        ("alice", "nope"),
        ("mallory", "x"),
        ("fenced", "fence"),
        ("static", ""),
    ] {
        let mut ua = Ua::udp(sipd.addr, user);
        let r = ua.register(secret, 60);
        answers.push((r.status(), r.reason().map(str::to_string)));
    }
    for a in &answers {
        assert_eq!(
            a,
            &(Some(403), Some("Forbidden".to_string())),
            "{answers:?}"
        );
    }
    assert!(regs(&sipd).is_empty());
}

/// alice registers (REGISTER, 401, REGISTER with nc=1, 200): her UA and
/// the accepted request.
fn register_alice(sipd: &Sipd) -> (Ua, Req) {
    let mut ua = Ua::udp(sipd.addr, "alice");
    let req = ua
        .request("REGISTER", &format!("sip:{}", sipd.addr))
        .set("Expires", "60");
    let ch = ua.transact(&req).unwrap();
    let authed = ua.authorized(&req, &ch, "wonderland", "MD5", 1);
    assert_eq!(ua.transact(&authed).unwrap().status(), Some(200));
    (ua, authed)
}

#[test]
fn replayed_register_is_not_accepted() {
    let sipd = Sipd::start(CONF);
    let (ua, authed) = register_alice(&sipd);
    // Byte-for-byte replay from another socket (an attacker), new branch not even needed:
    // same bytes, but the first transaction is long gone from the attacker's view.
    let mut attacker = Ua::udp(sipd.addr, "alice");
    let bytes = String::from_utf8(authed.to_bytes()).unwrap();
    let bytes = bytes.replace(&ua.local.to_string(), &attacker.local.to_string());
    attacker.send_raw(bytes.as_bytes());
    let r = attacker.final_response(5 * SECOND).unwrap();
    assert_ne!(r.status(), Some(200), "replay accepted:\n{}", text(r.raw()));
    assert!(
        matches!(r.status(), Some(401) | Some(403)),
        "{}",
        text(r.raw())
    );
    // The binding still points at the real client.
    assert_eq!(regs(&sipd)[0].source, format!("udp:{}", ua.local));
}

#[test]
fn late_retransmission_of_the_accepted_register_still_gets_200() {
    // The client's 200 OK was lost and it retransmits (RFC 3261 timer E,
    // up to 32 s) after sipd's server transaction ended (5 s): the same
    // request from the same place is processed again, not challenged.
    let sipd = Sipd::start(CONF);
    let (mut ua, authed) = register_alice(&sipd);
    std::thread::sleep(Duration::from_millis(5_600));
    ua.send(&authed);
    let r = ua.final_response(5 * SECOND).unwrap();
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    assert_eq!(regs(&sipd).len(), 1);
    // A new request (next CSeq) with the used nonce count is still a replay.
    let again = ua.renew(&authed);
    ua.send(&again);
    let r = ua.final_response(5 * SECOND).unwrap();
    assert_eq!(r.status(), Some(401), "{}", text(r.raw()));
}

#[test]
fn interval_too_brief_cap_and_unregister() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    let r = ua.register("wonderland", 1);
    assert_eq!(r.status(), Some(423));
    assert_eq!(r.header(&HeaderName::MinExpires), Some("2"));
    let r = ua.register("wonderland", 100_000);
    assert_eq!(r.status(), Some(200));
    let b = regs(&sipd);
    assert!(b[0].expires <= 300 && b[0].expires >= 298, "{b:?}");
    let r = ua.register("wonderland", 0);
    assert_eq!(r.status(), Some(200));
    assert!(r.header(&HeaderName::Contact).is_none());
    assert!(regs(&sipd).is_empty());
}

#[test]
fn contact_star_removes_and_needs_expires_zero() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    assert_eq!(ua.register("wonderland", 60).status(), Some(200));
    let server = sipd.addr;
    let star = ua
        .request("REGISTER", &format!("sip:{server}"))
        .set("Contact", "*")
        .set("Expires", "60");
    assert_eq!(
        ua.transact_auth(&star, "wonderland").unwrap().status(),
        Some(400)
    );
    assert_eq!(regs(&sipd).len(), 1);
    let star = ua
        .request("REGISTER", &format!("sip:{server}"))
        .set("Contact", "*")
        .set("Expires", "0");
    assert_eq!(
        ua.transact_auth(&star, "wonderland").unwrap().status(),
        Some(200)
    );
    assert!(regs(&sipd).is_empty());
}

#[test]
fn registrations_expire_on_time() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    assert_eq!(ua.register("wonderland", 2).status(), Some(200));
    assert_eq!(regs(&sipd).len(), 1);
    let gone = wait_for(5 * SECOND, || regs(&sipd).is_empty().then_some(()));
    assert!(gone.is_some(), "binding did not expire");
}

#[test]
fn tcp_binding_records_the_connection() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::tcp(sipd.addr, "bob");
    assert_eq!(ua.register("builder", 60).status(), Some(200));
    let b = regs(&sipd);
    assert_eq!(b[0].source, format!("tcp:{}", ua.local));
    // sipctl regs NAME, table and JSON.
    let out = sipd.sipctl(&["regs", "bob"]);
    let t = text(&out.stdout);
    assert!(
        t.contains("bob")
            && t.contains(&format!("tcp:{}", ua.local))
            && t.contains("1 registration"),
        "{t}"
    );
    let out = sipd.sipctl(&["regs", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bindings"][0]["name"], "bob");
}

#[test]
fn nat_binding_uses_the_real_source_and_requests_go_there() {
    let sipd = Sipd::start(CONF);
    let mut alice = Ua::udp(sipd.addr, "alice");
    let server = sipd.addr;
    // Behind NAT: the Contact says 10.0.0.5:5060, packets come from 127.0.0.1:port.
    let req = alice
        .request("REGISTER", &format!("sip:{server}"))
        .set("Expires", "60")
        .set("Contact", "<sip:alice@10.0.0.5:5060>")
        .set(
            "Via",
            &format!(
                "SIP/2.0/UDP 10.0.0.5:5060;branch={};rport",
                unique("z9hG4bK")
            ),
        );
    let ok = alice.transact_auth(&req, "wonderland").unwrap();
    assert_eq!(ok.status(), Some(200), "{}", text(ok.raw()));
    // RFC 3581: the response says where it really came from.
    assert_eq!(
        ok.top_via().received().map(|ip| ip.to_string()),
        Some("127.0.0.1".to_string())
    );
    assert_eq!(ok.top_via().rport(), Some(Some(alice.local.port())));
    let b = regs(&sipd);
    assert_eq!(b[0].contact, "sip:alice@10.0.0.5:5060");
    assert_eq!(b[0].source, format!("udp:{}", alice.local));
    let out = sipd.sipctl(&["regs"]);
    assert!(text(&out.stdout).contains(&format!("udp:{}", alice.local)));
    // An OPTIONS for alice from bob reaches alice's real address.
    let mut bob = Ua::udp(sipd.addr, "bob");
    assert_eq!(bob.register("builder", 60).status(), Some(200));
    let opt = bob.request("OPTIONS", &format!("sip:alice@{server}"));
    bob.send(&opt);
    let ch = bob.final_response(5 * SECOND).unwrap();
    assert_eq!(ch.status(), Some(407));
    bob.send(&bob.authorized(&opt, &ch, "builder", "MD5", 1));
    let (got, from) = alice
        .recv_from(5 * SECOND)
        .expect("OPTIONS did not reach alice's NAT address");
    assert_eq!(got.method().map(|m| m.as_str()), Some("OPTIONS"));
    assert_eq!(got.request_uri(), Some("sip:alice@10.0.0.5:5060"));
    assert_eq!(from, sipd.addr);
}

#[test]
fn restart_restores_bindings_with_lower_expires() {
    let mut sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    assert_eq!(ua.register("wonderland", 300).status(), Some(200));
    let before = regs(&sipd)[0].expires;
    std::thread::sleep(Duration::from_millis(1500));
    sipd.kill9();
    std::thread::sleep(Duration::from_millis(1100));
    sipd.restart(&[]);
    let after = regs(&sipd);
    assert_eq!(after.len(), 1, "binding lost over kill -9");
    assert!(
        after[0].expires < before,
        "{} !< {before}",
        after[0].expires
    );
    assert_eq!(after[0].source, format!("udp:{}", ua.local));
}

#[test]
fn reload_keeps_bindings_of_existing_clients() {
    let sipd = Sipd::start(CONF);
    let mut alice = Ua::udp(sipd.addr, "alice");
    let mut bob = Ua::udp(sipd.addr, "bob");
    assert_eq!(alice.register("wonderland", 60).status(), Some(200));
    assert_eq!(bob.register("builder", 60).status(), Some(200));
    // bob removed, alice's secret changed: alice keeps her binding until it expires.
    sipd.write_conf(
        &CONF
            .replace("secret=wonderland", "secret=looking-glass")
            .replace(
                "[bob]\naccountcode=office\nsecret=builder\nexten=1002\n",
                "",
            ),
    );
    let out = sipd.sipctl(&["reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = regs(&sipd).into_iter().map(|b| b.name).collect();
    assert_eq!(names, vec!["alice".to_string()]);
    // And the new secret is the one that works now.
    assert_eq!(alice.register("wonderland", 60).status(), Some(403));
    assert_eq!(alice.register("looking-glass", 60).status(), Some(200));
}

#[test]
fn nonce_from_another_process_is_challenged_again() {
    // A nonce from a previous sipd process is not ours: fresh challenge, not 403.
    let mut sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    let req = ua
        .request("REGISTER", &format!("sip:{}", sipd.addr))
        .set("Expires", "60");
    let ch = ua.transact(&req).unwrap();
    sipd.stop();
    sipd.restart(&[]);
    let r = ua
        .transact(&ua.authorized(&req, &ch, "wonderland", "MD5", 1))
        .unwrap();
    assert_eq!(r.status(), Some(401), "{}", text(r.raw()));
    assert!(!r
        .header(&HeaderName::WwwAuthenticate)
        .unwrap()
        .contains("stale"));
}

#[test]
fn expired_nonce_gets_stale_true() {
    let sipd = sipd_tests::Sipd::start_with(sipd_tests::Start {
        conf: Some(CONF.into()),
        args: vec!["--nonce-expire".into(), "1".into()],
        ..Default::default()
    });
    let mut ua = Ua::udp(sipd.addr, "alice");
    let req = ua
        .request("REGISTER", &format!("sip:{}", sipd.addr))
        .set("Expires", "60");
    let ch = ua.transact(&req).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let r = ua
        .transact(&ua.authorized(&req, &ch, "wonderland", "MD5", 1))
        .unwrap();
    assert_eq!(r.status(), Some(401), "{}", text(r.raw()));
    assert!(
        r.headers(&HeaderName::WwwAuthenticate)
            .all(|w| w.contains("stale=true")),
        "{}",
        text(r.raw())
    );
    // With the wrong password an expired nonce is just 403.
    let r = ua
        .transact(&ua.authorized(&req, &ch, "wrong", "MD5", 2))
        .unwrap();
    assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
}

#[test]
fn password_guessing_is_cut_off_per_address() {
    let sipd = Sipd::start(CONF);
    let mut mallory = Ua::udp(sipd.addr, "alice");
    for i in 0..20 {
        assert_eq!(
            mallory.register(&format!("guess{i}"), 60).status(),
            Some(403)
        );
    }
    // The right password no longer helps from this address for a while...
    assert_eq!(mallory.register("wonderland", 60).status(), Some(403));
    assert!(regs(&sipd).is_empty());
    // ... while the same client elsewhere is not affected (another loopback address).
    let elsewhere: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    let mut alice = Ua::udp_at(elsewhere, sipd.addr, "alice");
    assert_eq!(alice.register("wonderland", 60).status(), Some(200));
}
