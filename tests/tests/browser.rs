//! A real browser (issue 12): headless Chromium runs JsSIP (see
//! `sipd_tests::browser` for how it is set up and talked to). Two JsSIP user
//! agents on one page register to sipd over secure WebSocket with MD5
//! digest, alice calls bob, bob answers, both see the call confirmed, it
//! stays up a second, alice hangs up and bob sees it end. On sipd's side:
//! both bindings come from `wss:` sources while registered, the call is
//! answered while it is up and leaves an ANSWERED CDR.
//!
//! No media flows: Chromium gathers no ICE candidates (see
//! `Chromium::start`), JsSIP's SDP carries `c=IN IP4 0.0.0.0`, and sipd
//! passes SDP unchanged. Signalling is the point.
//!
//! Skipped with a notice when Chromium or JsSIP is absent, a failure under
//! `CI=true`. Bounded: every wait has a timeout, the page gives up by itself
//! and Chromium is killed with its children on drop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sipd_tests::browser::{self, Chromium, Event, PageServer};
use sipd_tests::tls::{self, GENERAL_TLS};
use sipd_tests::{free_port, wait_for, Sipd, Start};

/// The whole browser run, start to result.
const RUN: Duration = Duration::from_secs(60);
/// The page gives up by itself after this (and posts what it has).
const PAGE: Duration = Duration::from_secs(50);
/// Any single wait on sipd.
const T: Duration = Duration::from_secs(10);
/// How long the call stays up.
const TALK: Duration = Duration::from_millis(1000);
const DOMAIN: &str = "sipd.test";
const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];

/// Prints what the browser said when the test fails (sipd's stderr is
/// printed by `Sipd`'s own drop).
struct Report<'a> {
    page: &'a PageServer,
    chromium: &'a Chromium,
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- browser console ---\n{}", self.page.log());
            eprintln!("--- chromium output ---\n{}", self.chromium.output());
        }
    }
}

/// While both are registered: one binding each, over WSS.
fn check_registered(sipd: &Sipd) -> Result<(), String> {
    let v = sipd.sipctl_json(&["regs", "--json"]);
    let mut b = v["bindings"].as_array().cloned().unwrap_or_default();
    b.sort_by_key(|x| x["name"].as_str().unwrap_or("").to_string());
    let names: Vec<&str> = b.iter().filter_map(|x| x["name"].as_str()).collect();
    if names != ["alice", "bob"] {
        return Err(format!("bindings: {v}"));
    }
    for x in &b {
        let source = x["source"].as_str().unwrap_or("");
        if !source.starts_with("wss:127.0.0.1:") {
            return Err(format!("not a wss: source: {x}"));
        }
        if !x["user_agent"].as_str().unwrap_or("").contains("JsSIP") {
            return Err(format!("not JsSIP: {x}"));
        }
    }
    eprintln!("registered: {}", serde_json::to_string(&b).unwrap());
    Ok(())
}

/// While the call is up: one call, alice to bob, answered.
fn check_confirmed(sipd: &Sipd) -> Result<(), String> {
    let v = sipd.sipctl_json(&["calls", "--json"]);
    let c = v["calls"].as_array().cloned().unwrap_or_default();
    match c.as_slice() {
        [c] if c["state"] == "answered" && c["caller"] == "alice" && c["dialed"] == "bob" => {
            eprintln!("call: {c}");
            Ok(())
        }
        _ => Err(format!("calls: {v}")),
    }
}

#[test]
fn chromium_with_jssip_registers_and_calls_over_wss() {
    const NAME: &str = "chromium_with_jssip_registers_and_calls_over_wss";
    if !browser::available(NAME) {
        return;
    }
    let began = Instant::now();
    let cert = tls::self_signed(0xb0);
    let wss: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let users: String = USERS
        .iter()
        .map(|(n, s)| format!("[{n}]\nsecret={s}\n\n"))
        .collect();
    // No `digest` key: the default offer, MD5 alone.
    let sipd = Sipd::start_with(Start {
        conf: Some(format!("[general]\n{GENERAL_TLS}realm={DOMAIN}\n\n{users}")),
        args: vec!["-b".into(), format!("wss:{wss}")],
        files: vec![
            ("cert.pem".into(), cert.cert.clone()),
            ("key.pem".into(), cert.key.clone()),
        ],
        ..Start::default()
    });

    let config = json!({
        "wss": format!("wss://{wss}"),
        "domain": DOMAIN,
        "users": USERS.iter().map(|(n, s)| json!({"name": n, "secret": s})).collect::<Vec<_>>(),
        "timeout_ms": PAGE.as_millis() as u64,
        "talk_ms": TALK.as_millis() as u64,
    });
    let html = std::fs::read_to_string(browser::dir().join("index.html")).expect("index.html");
    assert!(html.contains("/*CONFIG*/null"));
    let page = PageServer::start(html.replace("/*CONFIG*/null", &config.to_string()));
    let chromium = Chromium::start(&page.url());
    let report = Report {
        page: &page,
        chromium: &chromium,
    };

    // The page's steps, checked on sipd's side as they come.
    let deadline = Instant::now() + RUN;
    let mut gates = Vec::new();
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match page.events.recv_timeout(left) {
            Ok(Event::Step { name, ack }) => {
                let checked = match name.as_str() {
                    "registered" => check_registered(&sipd),
                    "confirmed" => check_confirmed(&sipd),
                    other => Err(format!("unknown step {other}")),
                };
                let _ = ack.send(checked.clone());
                if let Err(e) = checked {
                    panic!("at step {name}: {e}");
                }
                gates.push(name);
            }
            Ok(Event::Result(body)) => {
                break serde_json::from_str::<Value>(&body)
                    .unwrap_or_else(|e| panic!("result {e}: {body}"))
            }
            Err(_) => panic!("no result from the page within {RUN:?} (gates passed: {gates:?})"),
        }
    };
    let took = began.elapsed();
    chromium.kill();

    eprintln!("result after {took:?}: {result}");
    assert_eq!(result["ok"], true, "{result}");
    let steps: Vec<(&str, &str)> = result["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or(""),
                s["detail"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let detail = |want: &str| {
        steps
            .iter()
            .find(|(s, _)| *s == want)
            .map(|(_, d)| *d)
            .unwrap_or_else(|| panic!("no step {want}: {result}"))
    };
    for want in [
        "alice registered",
        "bob registered",
        "alice confirmed",
        "bob confirmed",
        "alice hung up",
    ] {
        detail(want);
    }
    assert_eq!(detail("bob incoming"), "sip:alice@sipd.test", "{result}");
    assert_eq!(detail("alice progress"), "180", "{result}");
    // alice ended it herself, bob by her BYE.
    assert_eq!(detail("alice ended"), "local Terminated", "{result}");
    assert_eq!(detail("bob ended"), "remote Terminated", "{result}");
    assert_eq!(gates, ["registered", "confirmed"]);

    // One ANSWERED CDR, alice to bob.
    let cdr = wait_for(T, || {
        let v = sipd.sipctl_json(&["cdr", "--json"]);
        v["records"]
            .as_array()?
            .iter()
            .find(|r| r["caller"] == "alice" && r["dialed"] == "bob")
            .cloned()
    })
    .unwrap_or_else(|| panic!("no CDR: {}", sipd.sipctl_json(&["cdr", "--json"])));
    assert_eq!(cdr["disposition"], "ANSWERED", "{cdr}");
    assert_eq!(cdr["code"], 200, "{cdr}");
    assert_eq!(cdr["target"], "bob", "{cdr}");
    assert!(
        cdr["device"]
            .as_str()
            .is_some_and(|d| d.ends_with(".invalid;transport=ws")),
        "{cdr}"
    );
    let ms = |k: &str| cdr[k].as_u64().unwrap_or_else(|| panic!("{k}: {cdr}"));
    let talk = ms("end") - ms("answer");
    let at_least = TALK.as_millis() as u64;
    assert!(
        (at_least..at_least + 5000).contains(&talk),
        "talk time {talk} ms: {cdr}"
    );
    assert!(
        wait_for(T, || sipd.sipctl_json(&["calls", "--json"])["calls"]
            .as_array()
            .is_some_and(|c| c.is_empty())
            .then_some(()))
        .is_some(),
        "a call left over"
    );
    drop(report);
    if std::env::var_os("SIPD_BROWSER_LOG").is_some() {
        eprintln!("--- browser console ---\n{}", page.log());
    }
    eprintln!("{NAME}: {:?} in all", began.elapsed());
}
