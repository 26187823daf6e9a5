//! End-to-end: the Prometheus endpoint (`[general] metrics=IP:port`, issue
//! 13 point 4). A scrape over plain TCP shows what sipd did (bindings,
//! requests by method, responses by class, auth failures, keep-alives,
//! connections), other paths get 404, and Debian's `promtool check metrics`
//! accepts the text (without promtool that check prints a NOTICE and is
//! skipped, except under `CI=true`, where that is a failure). Without the
//! key sipd listens on no port but SIP's; a reload moves, refuses or
//! closes the listener.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sipd_tests::metrics::{at_least, http, promtool_check, scrape, value};
use sipd_tests::{free_port, free_port_on, run_timeout, text, Sipd, Ua};

const SECOND: Duration = Duration::from_secs(1);

const CLIENTS: &str = "\
[alice]
accountcode=office
secret=wonderland
exten=1001
qualify=1

[bob]
accountcode=office
secret=builder
exten=1002
";

fn conf(metrics: Option<&str>) -> String {
    match metrics {
        Some(m) => format!("[general]\nmetrics={m}\n\n{CLIENTS}"),
        None => CLIENTS.to_string(),
    }
}

/// TCP ports process `pid` listens on (its sockets in LISTEN state).
fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            let link = link.to_string_lossy().into_owned();
            if let Some(n) = link
                .strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'))
            {
                inodes.push(n.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(t) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in t.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort();
    ports.dedup();
    ports
}

fn reload(sipd: &Sipd) -> Result<proto::Reply, String> {
    sipd.ctl(proto::Command::Reload).into_result()
}

#[test]
fn scrape_shows_what_sipd_did_and_passes_promtool() {
    let port = free_port();
    let maddr = SocketAddr::from(([127, 0, 0, 1], port));
    let sipd = Sipd::start(&conf(Some(&maddr.to_string())));
    assert!(
        sipd.stderr()
            .contains(&format!("metrics on http://{maddr}/metrics")),
        "{}",
        sipd.stderr()
    );

    // alice over UDP (challenge + REGISTER), answering a keep-alive;
    // bob over TCP; one wrong password; OPTIONS to sipd itself.
    let mut alice = Ua::udp(sipd.addr, "alice");
    assert_eq!(alice.register("wonderland", 300).status(), Some(200));
    let ping = alice.expect_request("OPTIONS", 5 * SECOND);
    alice.respond(&ping, 200, "OK", "ka");
    let mut bob = Ua::tcp(sipd.addr, "bob");
    assert_eq!(bob.register("builder", 300).status(), Some(200));
    let mut eve = Ua::udp(sipd.addr, "bob");
    assert_eq!(eve.register("guess", 300).status(), Some(403));
    let req = alice.request("OPTIONS", &format!("sip:{}", sipd.addr));
    assert_eq!(alice.transact(&req).unwrap().status(), Some(200));

    let m = scrape(maddr);
    assert_eq!(value(&m, "sipd_bindings"), Some(2.0), "{m}");
    assert_eq!(value(&m, "sipd_registered_clients"), Some(2.0), "{m}");
    assert_eq!(value(&m, "sipd_configured_clients"), Some(2.0), "{m}");
    // alice and bob: challenge + REGISTER each; eve: challenge + a wrong one.
    at_least(&m, "sipd_requests_total{method=\"REGISTER\"}", 6.0);
    at_least(&m, "sipd_requests_total{method=\"OPTIONS\"}", 1.0);
    assert_eq!(
        value(&m, "sipd_requests_total{method=\"INVITE\"}"),
        Some(0.0)
    );
    at_least(&m, "sipd_responses_total{class=\"2xx\"}", 1.0);
    at_least(&m, "sipd_auth_failures_total", 1.0);
    at_least(&m, "sipd_registrations_total", 2.0);
    at_least(&m, "sipd_keepalives_sent_total", 1.0);
    at_least(&m, "sipd_keepalives_answered_total", 1.0);
    assert_eq!(value(&m, "sipd_connections{transport=\"tcp\"}"), Some(1.0));
    assert!(value(&m, "sipd_connections{transport=\"tls\"}").is_some());
    at_least(&m, "sipd_uptime_seconds", 0.0);
    let info = format!(
        "sipd_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&m, &info), Some(1.0), "{m}");
    for state in ["trying", "ringing", "answered"] {
        let series = format!("sipd_calls_in_progress{{state=\"{state}\"}}");
        assert_eq!(value(&m, &series), Some(0.0), "{m}");
    }
    for name in [
        "sipd_transactions",
        "sipd_store_queue_depth",
        "sipd_store_write_errors_total",
        "sipd_store_degraded",
    ] {
        assert!(value(&m, name).is_some(), "{name} missing in\n{m}");
    }
    // Every family has HELP and TYPE; counters end in _total.
    for l in m.lines().filter(|l| l.starts_with("# TYPE ")) {
        let f: Vec<&str> = l.split(' ').collect();
        assert!(m.contains(&format!("# HELP {} ", f[2])), "{l}");
        if f[3] == "counter" {
            assert!(f[2].ends_with("_total"), "{l}");
        }
    }
    promtool_check(&m);

    // Counters move between scrapes.
    let before = value(&m, "sipd_requests_total{method=\"OPTIONS\"}").unwrap();
    let req = alice.request("OPTIONS", &format!("sip:{}", sipd.addr));
    assert_eq!(alice.transact(&req).unwrap().status(), Some(200));
    let after = value(&scrape(maddr), "sipd_requests_total{method=\"OPTIONS\"}").unwrap();
    assert!(after > before, "{before} -> {after}");

    // Only GET/HEAD /metrics.
    for (req, want) in [
        ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("GET /metrics/x HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (
            "POST /metrics HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        ("HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
        ("hello\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    ] {
        let answer = http(maddr, req);
        assert!(answer.starts_with(want), "{req:?}: {answer}");
    }
    let head = http(maddr, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    // An endless head is cut off, and sipd goes on.
    let mut long = "GET /metrics HTTP/1.1\r\nX: ".to_string();
    long.push_str(&"a".repeat(16 * 1024));
    assert!(http(maddr, &long).starts_with("HTTP/1.1 431"));
    // Idle connections (fewer than the responder serves at once) do not
    // hold up a scrape.
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(maddr).unwrap()).collect();
    assert!(value(&scrape(maddr), "sipd_bindings").is_some());
    drop(idle);
}

#[test]
fn off_by_default_and_moved_by_reload() {
    let sipd = Sipd::start(&conf(None));
    let sip_only = vec![sipd.addr.port()];
    assert_eq!(
        listening_ports(sipd.pid()),
        sip_only,
        "nothing but SIP listens"
    );

    // Turned on by a reload.
    let p1 = SocketAddr::from(([127, 0, 0, 1], free_port()));
    sipd.write_conf(&conf(Some(&p1.to_string())));
    reload(&sipd).unwrap();
    assert!(value(&scrape(p1), "sipd_bindings").is_some());

    // Moved to another port: the old one is closed.
    let p2 = SocketAddr::from(([127, 0, 0, 1], free_port()));
    sipd.write_conf(&conf(Some(&p2.to_string())));
    reload(&sipd).unwrap();
    assert!(TcpStream::connect(p1).is_err(), "{p1} still open");
    assert!(value(&scrape(p2), "sipd_bindings").is_some());

    // A port that cannot be bound refuses the whole reload; the listener
    // stays where it was, and so does sip.conf.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let t = taken.local_addr().unwrap();
    sipd.write_conf(&format!(
        "{}\n[carol]\nsecret=c\n",
        conf(Some(&t.to_string()))
    ));
    let e = reload(&sipd).unwrap_err();
    assert!(
        e.contains(&format!("metrics={t}: cannot listen")) && e.contains("keeping the current"),
        "{e}"
    );
    drop(taken);
    let m = scrape(p2);
    assert_eq!(value(&m, "sipd_configured_clients"), Some(2.0), "{m}");

    // The same port on the wildcard address overlaps the old listener:
    // it is closed first, then the new one bound.
    let wild = SocketAddr::from(([0, 0, 0, 0], p2.port()));
    sipd.write_conf(&conf(Some(&wild.to_string())));
    reload(&sipd).unwrap();
    assert!(value(&scrape(p2), "sipd_bindings").is_some());

    // IPv6 loopback, where the machine has it.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, free_port_on("::1")));
        sipd.write_conf(&conf(Some(&v6.to_string())));
        reload(&sipd).unwrap();
        assert!(value(&scrape(v6), "sipd_bindings").is_some());
    }

    // Removed: nothing but SIP listens again.
    sipd.write_conf(&conf(None));
    reload(&sipd).unwrap();
    assert_eq!(listening_ports(sipd.pid()), sip_only);
}

#[test]
fn a_bad_or_busy_address_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let run = |conf: &str| {
        std::fs::write(dir.path().join("sip.conf"), conf).unwrap();
        let out = run_timeout(
            std::process::Command::new(sipd_tests::sipd_bin())
                .args(["-b", &format!("127.0.0.1:{}", free_port()), "-s"])
                .arg(dir.path()),
            20 * SECOND,
        );
        assert!(!out.status.success());
        text(&out.stderr)
    };
    let err = run(&conf(Some("localhost:9100")));
    assert!(
        err.contains("sip.conf:2: bad metrics 'localhost:9100': expected IP:port"),
        "{err}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let t = taken.local_addr().unwrap();
    let err = run(&conf(Some(&t.to_string())));
    assert!(
        err.contains(&format!("cannot listen on metrics={t}")),
        "{err}"
    );
}
