//! SIPp as an independent peer: 1,000 distinct users register with MD5
//! digest (SIPp's own `[authentication]`), every one gets 200 OK, and
//! `sipctl regs --json` then lists 1,000 bindings.

use std::fmt::Write as _;
use std::time::Duration;

use sipd_tests::{sipp, text, Sipd};

#[test]
fn sipp_registers_1000_users_with_md5_digest() {
    if !sipp::available("sipp_registers_1000_users_with_md5_digest") {
        return;
    }
    // SIPp 3.6 answers only the first challenge and knows only MD5: no
    // `digest` key anywhere, so this is what the default offer does.
    let mut conf = String::from("[general]\nmax_expires=3600\n");
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 1..=1000 {
        writeln!(conf, "[user{i}]\nsecret=pw{i}-secret").unwrap();
        writeln!(
            csv,
            "user{i};[authentication username=user{i} password=pw{i}-secret]"
        )
        .unwrap();
    }
    let sipd = Sipd::start(&conf);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("users.csv"), csv).unwrap();
    let args: Vec<String> = [
        sipd.addr.to_string().as_str(),
        "-sf",
        sipp::scenario("register.xml").to_str().unwrap(),
        "-inf",
        "users.csv",
        "-i",
        "127.0.0.1",
        "-p",
        "0",
        "-m",
        "1000",
        "-r",
        "250",
        "-l",
        "200",
        "-timeout",
        "60",
        "-max_recv_loops",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = sipp::run(work.path(), &args, Duration::from_secs(90));
    assert_eq!(
        out.failed, 0,
        "failed registrations:\n{}\n{}",
        out.stdout, out.errors
    );
    assert_eq!(out.success, 1000, "{}\n{}", out.stdout, out.stderr);
    let ctl = sipd.sipctl(&["regs", "--json"]);
    assert!(ctl.status.success(), "{}", text(&ctl.stderr));
    let v: serde_json::Value = serde_json::from_slice(&ctl.stdout).unwrap();
    let bindings = v["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 1000);
    let mut names: Vec<&str> = bindings
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1000, "distinct users");
    assert!(bindings.iter().all(|b| b["user_agent"] == "SIPp"));
}
