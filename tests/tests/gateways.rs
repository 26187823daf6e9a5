//! Gateway health end to end (issue 13 point 5): sipd checks each gateway
//! with OPTIONS every `qualify` seconds; `sipctl gateways` shows up/down
//! with the round trip; a gateway that stops answering is down within
//! 4 x qualify (logged, counted) and calls skip it at once; one answer
//! (a 404 too) brings it back; with every gateway down calls still try
//! them. A TCP gateway is checked over TCP. The metrics endpoint shows
//! each gateway's state and round trip.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sipd::sip::Message;
use sipd_tests::metrics::{promtool_check, scrape, value};
use sipd_tests::ua::{unique, Dialog};
use sipd_tests::{free_port, text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        486 => "Busy Here",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// A gateway on its own thread: answers OPTIONS with `options` (0:
/// silent) and INVITEs with `invite` (BYE and CANCEL with 200), and
/// hands each new INVITE to the test.
struct Gw {
    options: Arc<AtomicU16>,
    invite: Arc<AtomicU16>,
    checks: Arc<AtomicU64>,
    invites: mpsc::Receiver<Message>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Gw {
    fn start(addr: SocketAddr, server: SocketAddr, options: u16) -> Gw {
        let mut ua = Ua::udp_at(addr, server, "gw");
        let options = Arc::new(AtomicU16::new(options));
        let invite = Arc::new(AtomicU16::new(486));
        let checks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, invites) = mpsc::channel();
        let (o, i, c, s) = (
            options.clone(),
            invite.clone(),
            checks.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let tag = unique("gw");
            let mut seen = HashSet::new();
            while !s.load(SeqCst) {
                let Some(m) = ua.recv(Duration::from_millis(20)) else {
                    continue;
                };
                match m.method().map(|x| x.as_str().to_string()).as_deref() {
                    Some("OPTIONS") => {
                        c.fetch_add(1, SeqCst);
                        let code = o.load(SeqCst);
                        if code != 0 {
                            ua.respond(&m, code, reason(code), &tag);
                        }
                    }
                    Some("INVITE") => {
                        let code = i.load(SeqCst);
                        ua.respond(&m, code, reason(code), &tag);
                        let branch = m.top_via().branch().unwrap_or("").to_string();
                        if seen.insert(branch) {
                            let _ = tx.send(m);
                        }
                    }
                    Some("BYE") | Some("CANCEL") => ua.respond(&m, 200, "OK", &tag),
                    _ => {}
                }
            }
        });
        Gw {
            options,
            invite,
            checks,
            invites,
            stop,
            thread: Some(thread),
        }
    }

    fn answer_options(&self, code: u16) {
        self.options.store(code, SeqCst);
    }

    /// The INVITEs that arrived by now, waiting up to `wait` for the first.
    fn invites_within(&self, wait: Duration) -> Vec<Message> {
        let mut v = Vec::new();
        if let Ok(m) = self.invites.recv_timeout(wait) {
            v.push(m);
        }
        while let Ok(m) = self.invites.try_recv() {
            v.push(m);
        }
        v
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn conf(gw1: SocketAddr, gw2: &str) -> String {
    format!(
        "[general]\nmin_expires=2\nqualify=0\n\n\
         [alice]\naccountcode=office\nsecret=alice-pw\nexten=4951110001#1001\n\n\
         [GW1]\naccountcode=gateways\nhost={gw1}\nexten=9\nqualify=1\n\n\
         [GW2]\naccountcode=gateways\n{gw2}exten=8\nqualify=1\n"
    )
}

fn gateways(sipd: &Sipd) -> Vec<proto::GatewayInfo> {
    match sipd.ctl(proto::Command::Gateways).into_result().unwrap() {
        proto::Reply::Gateways(g) => g.gateways,
        other => panic!("{other:?}"),
    }
}

fn gateway(sipd: &Sipd, name: &str) -> proto::GatewayInfo {
    gateways(sipd)
        .into_iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no gateway {name}"))
}

fn counter(sipd: &Sipd, name: &str) -> u64 {
    match sipd.ctl(proto::Command::Status).into_result().unwrap() {
        proto::Reply::Status(s) => {
            s.counters
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no counter {name}"))
                .value
        }
        other => panic!("{other:?}"),
    }
}

/// Wait until every named gateway has its state; how long that took.
#[track_caller]
fn wait_states(sipd: &Sipd, want: &[(&str, &str)], timeout: Duration) -> Duration {
    let start = Instant::now();
    let ok = wait_for(timeout, || {
        let g = gateways(sipd);
        want.iter()
            .all(|(n, st)| g.iter().any(|g| g.name == *n && g.state == *st))
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "want {want:?} within {timeout:?}, have {:?}",
        gateways(sipd)
    );
    start.elapsed()
}

/// alice calls an external number; the call's INVITE goes to gateways.
fn call_out(alice: &mut Ua, sipd: &Sipd) -> sipd_tests::ua::Req {
    alice.invite(&format!("sip:84991234567@{}", sipd.addr), "alice-pw")
}

#[test]
fn gateways_go_down_and_up_and_calls_skip_the_down_one() {
    let a1: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let a2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let sipd = Sipd::start(&conf(a1, &format!("host={a2}\n")).replacen(
        "[general]\n",
        &format!("[general]\nmetrics={metrics}\n"),
        1,
    ));
    let gw1 = Gw::start(a1, sipd.addr, 200);
    // Many trunks answer OPTIONS with 405 or 404: alive all the same.
    let gw2 = Gw::start(a2, sipd.addr, 405);
    let mut alice = Ua::udp(sipd.addr, "alice");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));

    // Both answer: up, with a round trip.
    wait_states(&sipd, &[("GW1", "up"), ("GW2", "up")], S);
    let g1 = gateway(&sipd, "GW1");
    assert_eq!(g1.host, format!("udp:{a1}"));
    assert_eq!((g1.role.as_str(), g1.qualify, g1.calls), ("gateway", 1, 0));
    assert!(g1.rtt_ms.is_some() && g1.since.is_some(), "{g1:?}");
    let out = sipd.sipctl(&["gateways"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for want in ["GW1", "GW2", "up", " ms", &a1.to_string(), "2 gateways"] {
        assert!(table.contains(want), "{want} not in\n{table}");
    }
    let out = sipd.sipctl(&["gateways", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["type"], "gateways");
    assert_eq!(json["gateways"][0]["name"], "GW1");
    assert_eq!(json["gateways"][0]["state"], "up");
    assert!(json["gateways"][1]["rtt_ms"].is_u64(), "{json}");
    let changes = counter(&sipd, "gateway state changes");
    assert_eq!(changes, 2, "unknown -> up, twice");
    // The same in the metrics: state, round trip, changes.
    let m = scrape(metrics);
    let gw = |name: &str, family: &str, extra: &str| {
        format!("{family}{{gateway=\"{name}\",role=\"gateway\"{extra}}}")
    };
    for name in ["GW1", "GW2"] {
        assert_eq!(
            value(&m, &gw(name, "sipd_gateway_up", "")),
            Some(1.0),
            "{m}"
        );
        let up = gw(name, "sipd_gateway_state", ",state=\"up\"");
        assert_eq!(value(&m, &up), Some(1.0), "{m}");
        let rtt = value(&m, &gw(name, "sipd_gateway_options_rtt_seconds", ""));
        assert!(rtt.is_some_and(|s| (0.0..1.0).contains(&s)), "{m}");
    }
    assert_eq!(value(&m, "sipd_gateway_state_changes_total"), Some(2.0));
    promtool_check(&m);

    // GW1 stops answering: down within 4 x qualify, logged and counted.
    gw1.answer_options(0);
    let took = wait_states(&sipd, &[("GW1", "down")], Duration::from_secs(8));
    assert!(took <= Duration::from_millis(4500), "down after {took:?}");
    assert_eq!(gateway(&sipd, "GW2").state, "up");
    let log = sipd.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("GW1") && l.contains("down")),
        "{log}"
    );
    assert_eq!(counter(&sipd, "gateway state changes"), changes + 1);
    assert_eq!(counter(&sipd, "gateways down"), 1);
    let m = scrape(metrics);
    assert_eq!(
        value(&m, &gw("GW1", "sipd_gateway_up", "")),
        Some(0.0),
        "{m}"
    );
    let down = gw("GW1", "sipd_gateway_state", ",state=\"down\"");
    assert_eq!(value(&m, &down), Some(1.0), "{m}");
    assert_eq!(
        value(&m, &gw("GW2", "sipd_gateway_up", "")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(value(&m, "sipd_gateway_state_changes_total"), Some(3.0));

    // Calls go straight to GW2 (whatever the random start), none to GW1.
    for _ in 0..4 {
        let started = Instant::now();
        let inv = call_out(&mut alice, &sipd);
        let got = gw2.invites_within(S);
        assert_eq!(got.len(), 1, "one INVITE to GW2");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "GW2 got the call only after {:?}",
            started.elapsed()
        );
        assert!(got[0]
            .request_uri()
            .unwrap()
            .starts_with("sip:874991234567@"));
        let r = alice.final_response(S).unwrap();
        assert_eq!(r.status(), Some(486), "{}", text(r.raw()));
        alice.ack_failure(&inv, &r);
    }
    assert!(gw1.invites_within(Duration::from_millis(300)).is_empty());

    // A call in progress through GW2 is counted there.
    gw2.invite.store(200, SeqCst);
    let inv = call_out(&mut alice, &sipd);
    let ok = alice.expect_status(200, S);
    let mut d = Dialog::uac(&inv, &ok);
    alice.send(&alice.in_dialog(&mut d, "ACK"));
    assert_eq!(gateway(&sipd, "GW2").calls, 1);
    assert_eq!(gateway(&sipd, "GW1").calls, 0);
    let t = text(&sipd.sipctl(&["gateways"]).stdout);
    assert!(
        t.lines()
            .any(|l| l.contains("GW2") && l.trim_end().ends_with('1')),
        "{t}"
    );
    alice.send(&alice.in_dialog(&mut d, "BYE"));
    alice.expect_status(200, S);
    wait_for(S, || (gateway(&sipd, "GW2").calls == 0).then_some(()))
        .expect("the call through GW2 ended");
    gw2.invites_within(Duration::ZERO);
    gw2.invite.store(486, SeqCst);

    // GW1 answers again, with 404: up again after one answer.
    gw1.answer_options(404);
    let took = wait_states(&sipd, &[("GW1", "up")], S);
    assert!(took <= Duration::from_millis(1500), "up after {took:?}");
    assert!(sipd
        .stderr()
        .lines()
        .any(|l| l.contains("GW1") && l.contains("up")));
    assert_eq!(counter(&sipd, "gateways down"), 0);

    // Both down: a call still tries both (each answers 503: failover).
    gw1.answer_options(0);
    gw2.answer_options(503);
    wait_states(
        &sipd,
        &[("GW1", "down"), ("GW2", "down")],
        Duration::from_secs(8),
    );
    gw1.invite.store(503, SeqCst);
    gw2.invite.store(503, SeqCst);
    call_out(&mut alice, &sipd);
    let r = alice.final_response(S).unwrap();
    assert_eq!(r.status(), Some(503), "{}", text(r.raw()));
    let n1 = gw1.invites_within(Duration::from_millis(200)).len();
    let n2 = gw2.invites_within(Duration::from_millis(200)).len();
    assert_eq!((n1, n2), (1, 1), "both gateways tried");
    assert!(gw1.checks.load(SeqCst) >= 8, "checked every second");
    assert!(sipd.stderr().lines().all(|l| !l.contains("panicked")));
}

#[test]
fn a_tcp_gateway_is_checked_over_tcp() {
    let a1: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listener = TcpListener::bind(format!("127.0.0.1:{}", free_port())).unwrap();
    let a2 = listener.local_addr().unwrap();
    let sipd = Sipd::start(&conf(a1, &format!("host={a2}\ntransport=tcp\n")));
    let _gw1 = Gw::start(a1, sipd.addr, 200);
    // sipd connects to the TCP gateway to check it.
    listener.set_nonblocking(true).unwrap();
    let (stream, _) =
        wait_for(S, || listener.accept().ok()).expect("sipd did not connect to the TCP gateway");
    stream.set_nonblocking(false).unwrap();
    let mut gw2 = Ua::from_accepted(stream, sipd.addr, "gw2");
    let opt = gw2.expect_request("OPTIONS", S);
    assert_eq!(
        opt.request_uri(),
        Some(format!("sip:{a2};transport=tcp").as_str())
    );
    assert!(opt.top_via().branch().unwrap().starts_with("z9hG4bKsdg"));
    gw2.respond(&opt, 200, "OK", "t");
    wait_states(&sipd, &[("GW2", "up"), ("GW1", "up")], S);
    assert_eq!(gateway(&sipd, "GW2").host, format!("tcp:{a2}"));
    // The connection goes and nobody listens any more: down.
    drop(gw2);
    drop(listener);
    wait_states(&sipd, &[("GW2", "down")], Duration::from_secs(8));
    assert_eq!(gateway(&sipd, "GW1").state, "up");
}
