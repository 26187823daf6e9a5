//! End-to-end: the daemon, its flags, OPTIONS over UDP/TCP/IPv6, malformed
//! input, the control socket, reload, sipctl and shutdown.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sipd::sip::HeaderName;
use sipd_tests::{
    free_port, free_port_on, run_timeout, sipctl_bin, sipd_bin, text, Sipd, Start, Ua,
};

const CONF: &str = "\
[alice]
accountcode=office
secret=a1
exten=1001

[bob]
accountcode=office
secret=b2
exten=1002
";

const SECOND: Duration = Duration::from_secs(1);

fn options_ok(ua: &mut Ua) -> sipd::sip::Message {
    let server = ua.server;
    let req = ua.request("OPTIONS", &format!("sip:{server}"));
    let resp = ua.transact(&req).expect("no answer to OPTIONS");
    assert_eq!(resp.status(), Some(200), "{}", text(resp.raw()));
    resp
}

#[test]
fn options_over_udp_echoes_dialog_headers() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    let req = ua.request("OPTIONS", &format!("sip:{}", sipd.addr));
    ua.send(&req);
    let resp = ua.recv(5 * SECOND).expect("answer");
    assert_eq!(resp.status(), Some(200));
    assert_eq!(resp.reason(), Some("OK"));
    // Via: same branch and sent-by; rport filled in with our port.
    let via = resp.top_via();
    let sent = sipd::sip::Via::parse(req.get("Via").unwrap()).unwrap();
    assert_eq!(via.branch(), sent.branch());
    assert_eq!(via.port, sent.port);
    assert_eq!(via.rport(), Some(Some(ua.local.port())));
    assert_eq!(resp.header(&HeaderName::CallId), req.get("Call-ID"));
    assert_eq!(resp.header(&HeaderName::CSeq), req.get("CSeq"));
    assert_eq!(resp.header(&HeaderName::From), req.get("From"));
    let to = resp.to();
    assert_eq!(to.uri.to_string(), format!("sip:{}", sipd.addr));
    assert!(to.tag().is_some(), "200 to OPTIONS carries a To tag");
    assert!(resp.header(&HeaderName::Allow).unwrap().contains("INVITE"));
    assert_eq!(resp.vias().unwrap().len(), 1);
}

#[test]
fn options_over_tcp_and_several_messages_in_one_segment() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::tcp(sipd.addr, "alice");
    options_ok(&mut ua);
    // Two requests in one write, then one request split across writes.
    let a = ua.request("OPTIONS", &format!("sip:{}", sipd.addr));
    let b = ua.request("OPTIONS", &format!("sip:{}", sipd.addr));
    let mut both = a.to_bytes();
    both.extend(b.to_bytes());
    ua.send_raw(&both);
    let r1 = ua.recv(5 * SECOND).unwrap();
    let r2 = ua.recv(5 * SECOND).unwrap();
    assert_eq!(r1.header(&HeaderName::CallId), a.get("Call-ID"));
    assert_eq!(r2.header(&HeaderName::CallId), b.get("Call-ID"));
    let c = ua
        .request("OPTIONS", &format!("sip:{}", sipd.addr))
        .to_bytes();
    ua.send_raw(&c[..40]);
    std::thread::sleep(Duration::from_millis(100));
    ua.send_raw(&c[40..]);
    let r3 = ua.recv(5 * SECOND).unwrap();
    assert_eq!(r3.status(), Some(200));
    // TCP responses need no rport routing but still say where the request came from.
    assert_eq!(r3.top_via().transport, "TCP");
}

#[test]
fn options_over_ipv6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let port = free_port_on("::1");
    let listen: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let sipd = Sipd::start_with(Start {
        conf: Some(CONF.into()),
        listen: Some(listen),
        ..Start::default()
    });
    let mut ua = Ua::udp(sipd.addr, "alice");
    options_ok(&mut ua);
    let mut ua = Ua::tcp(sipd.addr, "alice");
    options_ok(&mut ua);
}

#[test]
fn other_requests_get_error_responses_and_ack_gets_none() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    let r = ua
        .transact(&ua.request("FROBNICATE", &format!("sip:{}", sipd.addr)))
        .unwrap();
    assert_eq!(r.status(), Some(501));
    assert!(r.header(&HeaderName::Allow).is_some());
    let r = ua
        .transact(&ua.request("OPTIONS", &format!("sip:nobody@{}", sipd.addr)))
        .unwrap();
    assert!(r.status().unwrap() >= 400, "{}", text(r.raw()));
    let ack = ua.request("ACK", &format!("sip:{}", sipd.addr));
    ua.send(&ack);
    ua.expect_silence(Duration::from_millis(300));
    // Max-Forwards 0 on a request that would be forwarded → 483.
    let r = ua
        .transact(
            &ua.request("MESSAGE", &format!("sip:bob@{}", sipd.addr))
                .set("Max-Forwards", "0"),
        )
        .unwrap();
    assert_eq!(r.status(), Some(483));
}

#[test]
fn malformed_requests_get_400_and_service_continues() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    let good = ua.request("OPTIONS", &format!("sip:{}", sipd.addr));
    let cases: Vec<Vec<u8>> = vec![
        good.clone().remove("CSeq").to_bytes(),
        good.clone().remove("Call-ID").to_bytes(),
        good.clone().set("CSeq", "abc OPTIONS").to_bytes(),
        good.clone().set("Content-Length", "-5").to_bytes(),
        String::from_utf8(good.to_bytes())
            .unwrap()
            .replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1)
            .into_bytes(),
    ];
    for case in cases {
        ua.send_raw(&case);
        let r = ua
            .recv_bytes(5 * SECOND)
            .unwrap_or_else(|| panic!("no 400 for:\n{}", String::from_utf8_lossy(&case)));
        let r = text(&r);
        assert!(r.starts_with("SIP/2.0 400 Bad Request\r\n"), "{r}");
        assert!(r.contains("\r\nWarning: 399 sipd \""), "{r}");
        // The Via comes back so the client can match the answer.
        assert!(
            r.contains(&format!("Via: {}", good.get("Via").unwrap())),
            "{r}"
        );
    }
    // A malformed response and plain noise are dropped silently.
    ua.send_raw(b"SIP/2.0 200 OK\r\nVia: garbage\r\n\r\n");
    ua.send_raw(b"\r\n\r\n");
    ua.send_raw(b"hello world");
    ua.expect_silence(Duration::from_millis(300));
    options_ok(&mut ua);
}

/// xorshift for reproducible fuzzing without a dependency.
struct Xs(u64);
impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn a_thousand_random_and_mutated_datagrams_do_not_crash_sipd() {
    let mut sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seeds: Vec<Vec<u8>> = vec![
        ua.request("OPTIONS", &format!("sip:{}", sipd.addr)).to_bytes(),
        ua.request("INVITE", &format!("sip:bob@{}", sipd.addr)).body("application/sdp", b"v=0\r\n").to_bytes(),
        ua.request("REGISTER", &format!("sip:{}", sipd.addr)).set("Expires", "60").to_bytes(),
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ];
    let mut rng = Xs(0x5eed_1234_abcd_0042);
    for i in 0..1000 {
        let mut d = seeds[i % seeds.len()].clone();
        match rng.below(5) {
            0 => {
                let n = rng.below(1500);
                d = (0..n).map(|_| rng.next() as u8).collect();
            }
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let p = rng.below(d.len());
                    d[p] = rng.next() as u8;
                }
            }
            2 => {
                let p = rng.below(d.len());
                d.truncate(p);
            }
            3 => {
                let p = rng.below(d.len());
                let pool = b"<>;,:\"\\ \r\n@=%[]";
                let chunk: Vec<u8> = (0..rng.below(64))
                    .map(|_| pool[rng.below(pool.len())])
                    .collect();
                d.splice(p..p, chunk);
            }
            _ => {
                let p = rng.below(d.len());
                let q = rng.below(d.len());
                let (a, b) = (p.min(q), p.max(q));
                let dup = d[a..b].to_vec();
                d.splice(b..b, dup);
            }
        }
        let _ = sock.send_to(&d, sipd.addr);
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(sipd.is_running(), "sipd died: {}", sipd.stderr());
    options_ok(&mut ua);
    let mut tcp = Ua::tcp(sipd.addr, "alice");
    options_ok(&mut tcp);
}

#[test]
fn tcp_garbage_is_answered_or_closed_without_harm() {
    let mut sipd = Sipd::start(CONF);
    let mut ua = Ua::tcp(sipd.addr, "alice");
    ua.send_raw(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK1\r\nContent-Length: abc\r\n\r\n");
    // Either a 400 or a closed connection: never a crash.
    if let Some(r) = ua.recv_bytes(Duration::from_secs(2)) {
        assert!(text(&r).starts_with("SIP/2.0 400"), "{}", text(&r));
    }
    assert!(sipd.is_running());
    let mut ua = Ua::tcp(sipd.addr, "alice");
    options_ok(&mut ua);
}

#[test]
fn version_and_about() {
    let out = run_timeout(
        std::process::Command::new(sipd_bin()).arg("-v"),
        10 * SECOND,
    );
    assert!(out.status.success());
    let v = text(&out.stdout);
    assert!(
        v.starts_with(&format!("sipd {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains(&sipd::cli::hostname()), "{v}");
    let out = run_timeout(
        std::process::Command::new(sipd_bin()).arg("-a"),
        10 * SECOND,
    );
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Copyright"));
    let out = run_timeout(
        std::process::Command::new(sipd_bin()).arg("--help"),
        10 * SECOND,
    );
    let help = text(&out.stdout);
    for flag in [
        "-b", "-c", "--city", "-d", "-s", "-r", "-v", "-a", "--conf", "--ctl",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn seed_flags_are_visible_in_status() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let sipd = Sipd::start_with(Start {
        conf: Some(CONF.into()),
        args: vec!["-cc".into(), "812".into(), "-c".into(), "7".into()],
        listen: Some(listen.parse().unwrap()),
        ..Start::default()
    });
    let out = sipd.sipctl(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "status");
    assert_eq!(v["city"], "812");
    assert_eq!(v["country"], "7");
    assert_eq!(v["clients"], 2);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let listen_list: Vec<String> = v["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(
        listen_list.contains(&format!("udp:{listen}")),
        "{listen_list:?}"
    );
    assert!(
        listen_list.contains(&format!("tcp:{listen}")),
        "{listen_list:?}"
    );
    let out = sipd.sipctl(&["status"]);
    let table = text(&out.stdout);
    assert!(
        table.contains("812") && table.contains(&listen) && table.contains("uptime"),
        "{table}"
    );
}

#[test]
fn bad_config_is_fatal_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sip.conf"),
        "[alice]\nsecret=x\npermt=10/8\n",
    )
    .unwrap();
    let port = free_port();
    let out = run_timeout(
        std::process::Command::new(sipd_bin())
            .args(["-b", &format!("127.0.0.1:{port}"), "-s"])
            .arg(dir.path()),
        20 * SECOND,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("sip.conf:3: unknown key 'permt'"), "{err}");
    assert!(!dir.path().join("sipd.sock").exists());
}

#[test]
fn missing_config_starts_empty_with_a_warning() {
    let sipd = Sipd::start_with(Start::default());
    let v = sipd.ctl(proto::Command::Status).into_result().unwrap();
    let proto::Reply::Status(s) = v else { panic!() };
    assert_eq!(s.clients, 0);
    assert!(sipd.stderr().contains("not found"), "{}", sipd.stderr());
}

#[test]
fn reload_good_and_bad_config() {
    let sipd = Sipd::start(CONF);
    let mut ua = Ua::udp(sipd.addr, "alice");
    // Good: one client removed, one added, one changed.
    sipd.write_conf(
        "[alice]\naccountcode=office\nsecret=changed\nexten=1001\n\n[carol]\nsecret=c3\n",
    );
    let out = sipd.sipctl(&["reload"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.contains("added: carol") && t.contains("removed: bob") && t.contains("changed: alice"),
        "{t}"
    );
    // Bad: refused with the line, old config (alice, carol) still in force.
    sipd.write_conf("[alice]\nsecret=x\npermt=10/8\n");
    let out = sipd.sipctl(&["reload"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("sip.conf:3: unknown key 'permt'"),
        "{}",
        text(&out.stderr)
    );
    let out = sipd.sipd_cmd(&["-r"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("sip.conf:3: unknown key 'permt'"),
        "{}",
        text(&out.stderr)
    );
    let proto::Reply::Status(s) = sipd.ctl(proto::Command::Status).into_result().unwrap() else {
        panic!()
    };
    assert_eq!(s.clients, 2);
    options_ok(&mut ua);
    // sipd -r with a good file succeeds.
    sipd.write_conf(CONF);
    let out = sipd.sipd_cmd(&["-r"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("reloaded: 2 clients"),
        "{}",
        text(&out.stdout)
    );
    // A --json reload result for scripts.
    let out = sipd.sipctl(&["reload", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clients"], 2);
}

#[test]
fn sighup_reloads() {
    let sipd = Sipd::start(CONF);
    sipd.write_conf("[solo]\nsecret=s\n");
    sipd.signal(libc::SIGHUP);
    let ok = sipd_tests::wait_for(5 * SECOND, || {
        let proto::Reply::Status(s) = sipd.ctl(proto::Command::Status).into_result().unwrap()
        else {
            panic!()
        };
        (s.clients == 1).then_some(())
    });
    assert!(ok.is_some(), "SIGHUP did not reload");
}

#[test]
fn no_daemon_running_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_timeout(
        std::process::Command::new(sipctl_bin())
            .arg("-s")
            .arg(dir.path())
            .arg("status"),
        10 * SECOND,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no sipd is running"),
        "{}",
        text(&out.stderr)
    );
    let out = run_timeout(
        std::process::Command::new(sipd_bin())
            .arg("-s")
            .arg(dir.path())
            .arg("-r"),
        10 * SECOND,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no sipd is running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn control_socket_answers_bad_requests_and_keeps_the_connection() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    let sipd = Sipd::start(CONF);
    let mode = std::fs::metadata(sipd.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let stream = std::os::unix::net::UnixStream::connect(sipd.socket()).unwrap();
    stream.set_read_timeout(Some(5 * SECOND)).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    for (line, want) in [
        ("this is not json", "malformed request"),
        ("{\"v\":1,\"cmd\":\"explode\"}", "unknown command 'explode'"),
        (
            "{\"v\":9,\"cmd\":\"status\"}",
            "unsupported protocol version 9",
        ),
    ] {
        w.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut resp = String::new();
        r.read_line(&mut resp).unwrap();
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["ok"], false, "{resp}");
        assert_eq!(v["v"], 1);
        assert!(v["error"].as_str().unwrap().contains(want), "{resp}");
    }
    w.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").unwrap();
    let mut resp = String::new();
    r.read_line(&mut resp).unwrap();
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["ok"], true, "{resp}");
}

#[test]
fn sigterm_stops_cleanly_and_stale_socket_is_replaced() {
    let mut sipd = Sipd::start(CONF);
    let sock = sipd.socket();
    assert_eq!(sipd.stop(), Some(0));
    assert!(!sock.exists(), "socket file left behind");
    // A stale socket file (from a crash) does not stop the next start.
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(l);
    assert!(sock.exists());
    sipd.restart(&[]);
    let mut ua = Ua::udp(sipd.addr, "alice");
    options_ok(&mut ua);
    // kill -9 leaves the socket; the next start replaces it.
    sipd.kill9();
    assert!(sock.exists());
    sipd.restart(&[]);
    options_ok(&mut ua);
    // A second sipd in the same directory is refused.
    let out = sipd.sipd_cmd(&["-b", &format!("127.0.0.1:{}", free_port())]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("another sipd is running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn debug_flag_prints_messages_in_and_out() {
    let sipd = Sipd::start_with(Start {
        conf: Some(CONF.into()),
        args: vec!["-d".into()],
        ..Start::default()
    });
    let mut ua = Ua::udp(sipd.addr, "alice");
    let resp = options_ok(&mut ua);
    let out = sipd_tests::wait_for(5 * SECOND, || {
        let o = sipd.stdout();
        (o.contains(">> UDP") && o.contains("SIP/2.0 200 OK")).then_some(o)
    })
    .unwrap_or_else(|| panic!("debug output missing:\n{}", sipd.stdout()));
    assert!(out.contains(&format!("<< UDP {}", ua.local)), "{out}");
    assert!(out.contains(resp.call_id()), "{out}");
}
