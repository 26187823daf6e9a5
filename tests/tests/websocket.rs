//! SIP over WebSocket and secure WebSocket end to end (RFC 7118, issue 12):
//! the upgrade (the `sip` subprotocol, `ws_origins`), a browser-like client
//! with an `.invalid` Contact registering and calling a UDP phone and being
//! called back over its connection, keep-alive frames, garbage on the port,
//! and a client whose connection is gone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipd::sip::HeaderName;
use sipd_tests::tls::{self, Cert, GENERAL_TLS};
use sipd_tests::ua::{establish, WS_HOST};
use sipd_tests::{free_port, text, Sipd, Start, Ua};

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

struct Ws {
    sipd: Sipd,
    ws: SocketAddr,
    wss: SocketAddr,
    cert: Cert,
}

fn start(extra_general: &str) -> Ws {
    let cert = tls::self_signed(0x7118);
    let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let wss: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let sipd = Sipd::start_with(Start {
        conf: Some(format!(
            "[general]\n{GENERAL_TLS}{extra_general}noanswer=10\n\n{USERS}"
        )),
        args: vec![
            "-b".into(),
            format!("ws:{ws}"),
            "-b".into(),
            format!("wss:{wss}"),
        ],
        files: vec![
            ("cert.pem".into(), cert.cert.clone()),
            ("key.pem".into(), cert.key.clone()),
        ],
        ..Start::default()
    });
    Ws {
        sipd,
        ws,
        wss,
        cert,
    }
}

fn registered(mut ua: Ua, secret: &str) -> Ua {
    let r = ua.register(secret, 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

#[test]
fn ws_and_wss_clients_register_with_invalid_contacts() {
    let w = start("");
    let _a = registered(Ua::ws(w.ws, "alice", None), "alice-pw");
    let _b = registered(Ua::ws(w.wss, "bob", Some(&w.cert.cert)), "bob-pw");
    let mut b = w.sipd.regs();
    b.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(b.len(), 2);
    assert!(b[0].source.starts_with("ws:127.0.0.1:"), "{:?}", b[0]);
    assert!(b[0].contact.contains(WS_HOST), "{:?}", b[0]);
    assert!(b[1].source.starts_with("wss:127.0.0.1:"), "{:?}", b[1]);
    let status = w.sipd.sipctl(&["status"]);
    let out = text(&status.stdout);
    assert!(out.contains(&format!("ws:{}", w.ws)), "{out}");
    assert!(out.contains(&format!("wss:{}", w.wss)), "{out}");
}

#[test]
fn wss_client_and_udp_phone_call_each_other() {
    let w = start("");
    let mut alice = registered(Ua::ws(w.wss, "alice", Some(&w.cert.cert)), "alice-pw");
    let mut bob = registered(Ua::udp(w.sipd.addr, "bob"), "bob-pw");
    // WSS -> UDP; SDP passes unchanged.
    let (_a, mut b, got) = establish(
        &mut alice,
        &mut bob,
        &format!("sip:1002@{}", w.wss),
        "alice-pw",
    );
    let rr: Vec<&str> = got.headers(&HeaderName::RecordRoute).collect();
    let rr = rr.join(", ");
    assert!(
        rr.starts_with(&format!("<sip:{};lr>", w.sipd.addr))
            && rr.ends_with(&format!("<sip:{};transport=wss;lr>", w.wss)),
        "{rr}"
    );
    // bob's BYE goes to alice over her WebSocket, not to the .invalid host.
    let bye = bob.in_dialog(&mut b, "BYE");
    bob.send(&bye);
    let got = alice.expect_request("BYE", S);
    assert!(got.request_uri().unwrap().contains(WS_HOST));
    let tag = alice.tag.clone();
    alice.respond(&got, 200, "OK", &tag);
    bob.expect_status(200, S);
    // UDP -> WSS: bob calls alice, who answers and hangs up.
    let (_b2, mut a2, got) = establish(
        &mut bob,
        &mut alice,
        &format!("sip:1001@{}", w.sipd.addr),
        "bob-pw",
    );
    assert!(got.request_uri().unwrap().contains(WS_HOST));
    let top = got.header(&HeaderName::Via).unwrap();
    assert!(top.starts_with("SIP/2.0/WSS"), "{top}");
    let bye = alice.in_dialog(&mut a2, "BYE");
    alice.send(&bye);
    let got = bob.expect_request("BYE", S);
    let tag = bob.tag.clone();
    bob.respond(&got, 200, "OK", &tag);
    alice.expect_status(200, S);
}

#[test]
fn the_upgrade_needs_the_sip_subprotocol_and_a_listed_origin() {
    let w = start("ws_origins=https://phone.example, http://127.0.0.1:8000\n");
    let sip = ("Sec-WebSocket-Protocol", "sip");
    assert_eq!(Ua::ws_with(w.ws, "alice", None, &[]).err(), Some(400));
    assert_eq!(
        Ua::ws_with(w.ws, "alice", None, &[("Sec-WebSocket-Protocol", "chat")]).err(),
        Some(400)
    );
    assert_eq!(
        Ua::ws_with(
            w.ws,
            "alice",
            None,
            &[sip, ("Origin", "https://evil.example")]
        )
        .err(),
        Some(403)
    );
    assert_eq!(Ua::ws_with(w.ws, "alice", None, &[sip]).err(), Some(403));
    let ua = Ua::ws_with(
        w.ws,
        "alice",
        None,
        &[sip, ("Origin", "https://phone.example")],
    )
    .expect("listed origin");
    registered(ua, "alice-pw");
    let ua = Ua::ws_with(
        w.wss,
        "bob",
        Some(&w.cert.cert),
        &[sip, ("Origin", "http://127.0.0.1:8000")],
    )
    .expect("listed origin over wss");
    registered(ua, "bob-pw");
}

#[test]
fn keepalive_frames_and_garbage_do_no_harm() {
    use std::io::{Read, Write};
    let w = start("");
    let mut alice = registered(Ua::ws(w.ws, "alice", None), "alice-pw");
    // A CRLFCRLF frame (SIP.js keep-alive) is answered with CRLF.
    alice.send_raw(b"\r\n\r\n");
    assert_eq!(alice.recv_bytes(S).as_deref(), Some(&b"\r\n"[..]));
    // Garbage instead of an HTTP upgrade, on both ports: closed.
    for port in [w.ws, w.wss] {
        let mut s = std::net::TcpStream::connect(port).unwrap();
        s.set_read_timeout(Some(S)).unwrap();
        let _ = s.write_all(b"INVITE sip:x SIP/2.0\r\n\r\n\x00\x01\x02");
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(!got.starts_with(b"SIP/2.0"), "{}", text(&got));
    }
    // A frame that is not SIP: no crash, the client stays usable.
    alice.send_raw(&[0xff, 0xfe, 0x00]);
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
}

#[test]
fn a_call_to_a_ws_client_whose_connection_is_gone_fails_at_once() {
    let w = start("");
    let alice = registered(Ua::ws(w.ws, "alice", None), "alice-pw");
    let mut bob = registered(Ua::udp(w.sipd.addr, "bob"), "bob-pw");
    drop(alice);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let inv = bob.invite(&format!("sip:1001@{}", w.sipd.addr), "bob-pw");
    let r = bob.final_response(S).expect("a final answer");
    // Well before noanswer (10 s): the branch failed when it could not be sent.
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        matches!(r.status(), Some(480) | Some(503) | Some(408) | Some(404)),
        "{}",
        text(r.raw())
    );
    bob.ack_failure(&inv, &r);
}
