//! SIP over TLS end to end (issue 12): `-b tls:ADDR` with a certificate
//! generated here (rcgen), a phone registering and calling over TLS, a UDP
//! phone calling it back over its TLS connection, Record-Route across the
//! transport change (RFC 5658), certificate reload that keeps the
//! connections in place and refuses broken files, and garbage on the TLS
//! port.

use std::net::SocketAddr;
use std::time::Duration;

use sipd::sip::HeaderName;
use sipd_tests::tls::{self, Cert, GENERAL_TLS};
use sipd_tests::ua::{establish, Dialog};
use sipd_tests::{free_port, text, wait_for, Sipd, Start, Ua};

const S: Duration = Duration::from_secs(5);

const USERS: &str = "\
[alice]
secret=alice-pw
accountcode=office
exten=1001

[bob]
secret=bob-pw
accountcode=office
exten=1002
";

struct Tls {
    sipd: Sipd,
    tls: SocketAddr,
    cert: Cert,
}

fn start(extra_general: &str) -> Tls {
    let cert = tls::self_signed(0x5101);
    let port = free_port();
    let tls_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sipd = Sipd::start_with(Start {
        conf: Some(format!(
            "[general]\n{GENERAL_TLS}{extra_general}min_expires=2\n\n{USERS}"
        )),
        args: vec!["-b".into(), format!("tls:{tls_addr}")],
        files: vec![
            ("cert.pem".into(), cert.cert.clone()),
            ("key.pem".into(), cert.key.clone()),
        ],
        ..Start::default()
    });
    Tls {
        sipd,
        tls: tls_addr,
        cert,
    }
}

fn tls_phone(t: &Tls, user: &str) -> Ua {
    let mut ua = Ua::tls(t.tls, user, &t.cert.cert, "127.0.0.1");
    let r = ua.register(&format!("{user}-pw"), 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

fn udp_phone(t: &Tls, user: &str) -> Ua {
    let mut ua = Ua::udp(t.sipd.addr, user);
    let r = ua.register(&format!("{user}-pw"), 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

#[test]
fn a_phone_registers_over_tls_and_status_lists_the_listener() {
    let t = start("");
    let _alice = tls_phone(&t, "alice");
    let b = t.sipd.regs();
    assert_eq!(b.len(), 1);
    assert!(b[0].source.starts_with("tls:127.0.0.1:"), "{:?}", b[0]);
    let s = t.sipd.status();
    assert!(
        s.listen.contains(&format!("tls:{}", t.tls)),
        "{:?}",
        s.listen
    );
    assert!(s.listen.contains(&format!("udp:{}", t.sipd.addr)));
    let out = t.sipd.sipctl(&["status"]);
    assert!(text(&out.stdout).contains(&format!("tls:{}", t.tls)));
}

#[test]
fn tls_phone_calls_udp_phone_and_back() {
    let t = start("");
    let mut alice = tls_phone(&t, "alice");
    let mut bob = udp_phone(&t, "bob");
    // TLS -> UDP: two Record-Route entries, the top one facing bob (UDP),
    // the bottom one facing alice (TLS).
    let (_a, mut b, got) = establish(
        &mut alice,
        &mut bob,
        &format!("sip:1002@{}", t.tls),
        "alice-pw",
    );
    let rr: Vec<&str> = got.headers(&HeaderName::RecordRoute).collect();
    let rr = rr.join(", ");
    let udp_entry = format!("<sip:{};lr>", t.sipd.addr);
    let tls_entry = format!("<sip:{};transport=tls;lr>", t.tls);
    assert!(
        rr.starts_with(&udp_entry) && rr.ends_with(&tls_entry),
        "Record-Route: {rr}"
    );
    let via = got.header(&HeaderName::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/UDP"), "{via}");
    // bob hangs up: the BYE reaches alice over her TLS connection.
    let bye = bob.in_dialog(&mut b, "BYE");
    bob.send(&bye);
    let got = alice.expect_request("BYE", S);
    let top = got.header(&HeaderName::Via).unwrap();
    assert!(top.starts_with("SIP/2.0/TLS"), "{top}");
    let tag = alice.tag.clone();
    alice.respond(&got, 200, "OK", &tag);
    bob.expect_status(200, S);
    // UDP -> TLS: bob calls alice, who answers over TLS; alice hangs up.
    let (_b2, mut a2, got) = establish(
        &mut bob,
        &mut alice,
        &format!("sip:1001@{}", t.sipd.addr),
        "bob-pw",
    );
    assert!(
        got.request_uri().unwrap().contains("transport=tls"),
        "{:?}",
        got.request_uri()
    );
    let bye = alice.in_dialog(&mut a2, "BYE");
    alice.send(&bye);
    let got = bob.expect_request("BYE", S);
    let tag = bob.tag.clone();
    bob.respond(&got, 200, "OK", &tag);
    alice.expect_status(200, S);
}

#[test]
fn reload_takes_a_new_certificate_refuses_a_broken_one_and_keeps_connections() {
    let t = start("");
    let mut alice = tls_phone(&t, "alice");
    assert_eq!(tls::peer_serial(t.tls, &t.cert.cert).unwrap(), "5101");
    // A broken key: refused, the old certificate still served.
    std::fs::write(
        t.sipd.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = t.sipd.sipctl(&["reload"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("key.pem"), "{err}");
    assert_eq!(tls::peer_serial(t.tls, &t.cert.cert).unwrap(), "5101");
    // A key of another certificate: refused as well.
    let other = tls::self_signed(0x5102);
    std::fs::write(t.sipd.path().join("key.pem"), &other.key).unwrap();
    let out = t.sipd.sipctl(&["reload"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not go with"),
        "{}",
        text(&out.stderr)
    );
    // The established connection still works.
    let r = alice.register("alice-pw", 300);
    assert_eq!(r.status(), Some(200));
    // The new pair: in force for new handshakes; the old connection stays.
    other.write(t.sipd.path());
    let out = t.sipd.sipctl(&["reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tls::peer_serial(t.tls, &other.cert).unwrap(), "5102");
    let r = alice.register("alice-pw", 300);
    assert_eq!(r.status(), Some(200), "old connection after reload");
    let mut bob = Ua::tls(t.tls, "bob", &other.cert, "127.0.0.1");
    assert_eq!(bob.register("bob-pw", 300).status(), Some(200));
}

#[test]
fn plain_sip_or_garbage_on_the_tls_port_is_closed_without_harm() {
    use std::io::{Read, Write};
    let t = start("");
    let mut alice = tls_phone(&t, "alice");
    for junk in [
        &b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..],
        &[0u8; 4096][..],
    ] {
        let mut s = std::net::TcpStream::connect(t.tls).unwrap();
        s.set_read_timeout(Some(S)).unwrap();
        let _ = s.write_all(junk);
        let mut buf = [0u8; 1024];
        // Closed (maybe after a TLS alert), never a SIP answer in clear.
        let mut got = Vec::new();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(!got.starts_with(b"SIP/2.0"), "{}", text(&got));
    }
    // sipd and the phone in place are fine.
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    assert_eq!(t.sipd.status().registrations, 1);
}

#[test]
fn a_tls_listener_without_a_certificate_is_a_start_up_error() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sip.conf"), USERS).unwrap();
    let out = std::process::Command::new(sipd_tests::sipd_bin())
        .args(["-b", &format!("127.0.0.1:{}", free_port())])
        .args(["-b", &format!("tls:127.0.0.1:{port}")])
        .arg("-s")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tls_cert"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn repeated_reloads_do_not_grow_memory() {
    let t = start("");
    let _alice = tls_phone(&t, "alice");
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", t.sipd.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    let reload = || {
        let r = t.sipd.ctl(proto::Command::Reload).into_result();
        assert!(r.is_ok(), "{r:?}");
    };
    for _ in 0..20 {
        reload();
    }
    let before = rss();
    for _ in 0..200 {
        reload();
    }
    let after = wait_for(Duration::from_secs(15), || {
        let now = rss();
        (now < before + 4096).then_some(now)
    });
    assert!(
        after.is_some(),
        "RSS grew from {before} kB to {} kB over 200 reloads",
        rss()
    );
}

/// sipd with a TLS gateway at `gw` whose certificate sipd trusts (`ca`).
fn with_tls_gateway(gw: SocketAddr, ca: &Cert) -> Tls {
    let cert = tls::self_signed(0x5103);
    let port = free_port();
    let tls_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sipd = Sipd::start_with(Start {
        conf: Some(format!(
            "[general]\n{GENERAL_TLS}tls_ca=ca.pem\nmin_expires=2\n\n{USERS}\n\
             [gw]\naccountcode=gateways\nhost={gw}\ntransport=tls\nexten=9\n"
        )),
        args: vec!["-b".into(), format!("tls:{tls_addr}")],
        files: vec![
            ("cert.pem".into(), cert.cert.clone()),
            ("key.pem".into(), cert.key.clone()),
            ("ca.pem".into(), ca.cert.clone()),
        ],
        ..Start::default()
    });
    Tls {
        sipd,
        tls: tls_addr,
        cert,
    }
}

#[test]
fn calls_to_a_gateway_with_transport_tls_go_over_verified_tls() {
    let gw_cert = tls::self_signed(0x6001);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw_addr = listener.local_addr().unwrap();
    let t = with_tls_gateway(gw_addr, &gw_cert);
    let mut alice = udp_phone(&t, "alice");
    let inv = alice.invite(&format!("sip:1234567@{}", t.sipd.addr), "alice-pw");
    let (stream, sock) = tls::accept(&listener, &gw_cert, S).expect("sipd connects over TLS");
    let mut gw = Ua::tls_accepted(stream, sock, t.tls, "gw");
    let got = gw.expect_request("INVITE", S);
    assert_eq!(
        got.request_uri(),
        Some(format!("sip:974951234567@{gw_addr};transport=tls").as_str())
    );
    let via = got.header(&HeaderName::Via).unwrap();
    assert!(via.starts_with(&format!("SIP/2.0/TLS {}", t.tls)), "{via}");
    gw.respond(&got, 200, "OK", "gw-tag");
    let ok = alice.expect_status(200, S);
    let mut d = Dialog::uac(&inv, &ok);
    let ack = alice.in_dialog(&mut d, "ACK");
    alice.send(&ack);
    gw.expect_request("ACK", S);
    let bye = alice.in_dialog(&mut d, "BYE");
    alice.send(&bye);
    let got = gw.expect_request("BYE", S);
    gw.respond(&got, 200, "OK", "gw-tag");
    alice.expect_status(200, S);
}

#[test]
fn a_gateway_whose_certificate_is_not_trusted_fails_the_call_at_once() {
    // sipd trusts another certificate than the one the gateway presents.
    let trusted = tls::self_signed(0x6002);
    let presented = tls::self_signed(0x6003);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw_addr = listener.local_addr().unwrap();
    let t = with_tls_gateway(gw_addr, &trusted);
    let mut alice = udp_phone(&t, "alice");
    let started = std::time::Instant::now();
    let inv = alice.invite(&format!("sip:1234567@{}", t.sipd.addr), "alice-pw");
    // The gateway side sees the handshake fail (sipd refuses the certificate).
    assert!(tls::accept(&listener, &presented, S).is_err());
    let r = alice.final_response(S).expect("a final answer");
    assert!(matches!(r.status(), Some(500..=599)), "{}", text(r.raw()));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    alice.ack_failure(&inv, &r);
}

#[test]
fn a_connection_that_never_handshakes_is_closed_after_the_handshake_timeout() {
    use std::io::Read;
    let cert = tls::self_signed(0x5104);
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let sipd = Sipd::start_with(Start {
        conf: Some(format!("[general]\n{GENERAL_TLS}\n{USERS}")),
        args: vec![
            "-b".into(),
            format!("tls:{tls_addr}"),
            "--handshake-timeout".into(),
            "1".into(),
        ],
        files: vec![
            ("cert.pem".into(), cert.cert.clone()),
            ("key.pem".into(), cert.key.clone()),
        ],
        ..Start::default()
    });
    let mut idle = std::net::TcpStream::connect(tls_addr).unwrap();
    idle.set_read_timeout(Some(S)).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Handshakes still work.
    let mut ua = Ua::tls(tls_addr, "alice", &cert.cert, "127.0.0.1");
    assert_eq!(ua.register("alice-pw", 300).status(), Some(200));
    drop(sipd);
}

#[test]
fn sips_uris_register_and_call() {
    let t = start("");
    let mut alice = Ua::tls(t.tls, "alice", &t.cert.cert, "127.0.0.1");
    let sips = |s: String| s.replacen("<sip:", "<sips:", 1);
    let req = alice
        .request("REGISTER", &format!("sips:{}", t.tls))
        .set("Expires", "300");
    let to = sips(req.get("To").unwrap().to_string());
    let from = sips(req.get("From").unwrap().to_string());
    let contact = format!("<sips:alice@{}>", alice.local);
    let req = req
        .set("To", &to)
        .set("From", &from)
        .set("Contact", &contact);
    let r = alice.transact_auth(&req, "alice-pw").unwrap();
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    assert!(
        r.header(&HeaderName::Contact)
            .unwrap()
            .contains("sips:alice@"),
        "{}",
        text(r.raw())
    );
    // A UDP phone calls her: the INVITE reaches her sips: Contact over TLS.
    let mut bob = udp_phone(&t, "bob");
    let (_b, _a, got) = establish(
        &mut bob,
        &mut alice,
        &format!("sip:1001@{}", t.sipd.addr),
        "bob-pw",
    );
    assert_eq!(
        got.request_uri(),
        Some(format!("sips:alice@{}", alice.local).as_str())
    );
    // She calls bob with a sips: Request-URI.
    let inv = alice.invite(&format!("sips:1002@{}", t.tls), "alice-pw");
    let got = bob.expect_request("INVITE", S);
    bob.respond(&got, 486, "Busy Here", "b");
    let r = alice.expect_status(486, S);
    alice.ack_failure(&inv, &r);
}

#[test]
fn tls_and_wss_listen_on_ipv6_too() {
    let cert = tls::self_signed(0x5106);
    let v4: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let v6 = format!("[::1]:{}", free_port())
        .parse::<SocketAddr>()
        .unwrap();
    let wss6 = format!("[::1]:{}", free_port())
        .parse::<SocketAddr>()
        .unwrap();
    let sipd = Sipd::start_with(Start {
        conf: Some(format!("[general]\n{GENERAL_TLS}\n{USERS}")),
        args: vec![
            "-b".into(),
            format!("tls:{v4}"),
            "-b".into(),
            format!("tls:{v6}"),
            "-b".into(),
            format!("wss:{wss6}"),
        ],
        files: vec![
            ("cert.pem".into(), cert.cert.clone()),
            ("key.pem".into(), cert.key.clone()),
        ],
        ..Start::default()
    });
    let mut alice = Ua::tls(v6, "alice", &cert.cert, "::1");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    let mut bob = Ua::ws(wss6, "bob", Some(&cert.cert));
    assert_eq!(bob.register("bob-pw", 300).status(), Some(200));
    let b = sipd.regs();
    let sources: Vec<&str> = b.iter().map(|b| b.source.as_str()).collect();
    assert!(
        sources.iter().any(|s| s.starts_with("tls:[::1]:")),
        "{sources:?}"
    );
    assert!(
        sources.iter().any(|s| s.starts_with("wss:[::1]:")),
        "{sources:?}"
    );
    // alice (TLS over IPv6) calls bob (WSS over IPv6); Record-Route names
    // the IPv6 listeners.
    let (_a, _b, got) = establish(&mut alice, &mut bob, &format!("sip:1002@{v6}"), "alice-pw");
    let rr: Vec<&str> = got.headers(&HeaderName::RecordRoute).collect();
    let rr = rr.join(", ");
    assert!(
        rr.contains(&format!("<sip:{wss6};transport=wss;lr>"))
            && rr.contains(&format!("<sip:{v6};transport=tls;lr>")),
        "{rr}"
    );
    let s = sipd.status();
    for l in [
        format!("tls:{v4}"),
        format!("tls:{v6}"),
        format!("wss:{wss6}"),
    ] {
        assert!(s.listen.contains(&l), "{l} in {:?}", s.listen);
    }
}

#[test]
fn authenticated_tls_and_ws_flows_are_trusted_and_outlive_the_untrusted_idle_time() {
    let cert = tls::self_signed(0x5107);
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ws_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let sipd = Sipd::start_with(Start {
        conf: Some(format!("[general]\n{GENERAL_TLS}\n{USERS}")),
        args: vec![
            "-b".into(),
            format!("tls:{tls_addr}"),
            "-b".into(),
            format!("ws:{ws_addr}"),
            "--tcp-untrusted-idle".into(),
            "1".into(),
        ],
        files: vec![
            ("cert.pem".into(), cert.cert.clone()),
            ("key.pem".into(), cert.key.clone()),
        ],
        ..Start::default()
    });
    let mut alice = Ua::tls(tls_addr, "alice", &cert.cert, "127.0.0.1");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    let mut bob = Ua::ws(ws_addr, "bob", None);
    assert_eq!(bob.register("bob-pw", 300).status(), Some(200));
    // Unauthenticated: one OPTIONS, then silence.
    let mut stranger = Ua::tls(tls_addr, "mallory", &cert.cert, "127.0.0.1");
    let req = stranger.request("OPTIONS", &format!("sip:{tls_addr}"));
    stranger.transact(&req);
    std::thread::sleep(Duration::from_millis(2500));
    let c = |name: &str| {
        sipd.status()
            .counters
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
    };
    assert_eq!(c("tls connections"), Some(1), "the stranger's is closed");
    assert_eq!(c("ws connections"), Some(1));
    assert_eq!(c("tls connections untrusted"), Some(0));
    // The trusted ones still carry requests.
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    assert_eq!(bob.register("bob-pw", 300).status(), Some(200));
}
