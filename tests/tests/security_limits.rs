//! End-to-end: the limits of issue 10 (security).
//!
//! - Control input: numbers are 1 to 32 digits wherever they enter (sipctl,
//!   the control socket, star codes, sip.conf), and a control request line
//!   is at most 64 KiB.
//!
//! Timeouts are short flags (1 s) so that the tests are fast; nothing here
//! asserts how long something took.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use sipd_tests::{text, Sipd, Start, Ua};

const S: Duration = Duration::from_secs(5);

fn start(conf: &str, args: &[&str]) -> Sipd {
    Sipd::start_with(Start {
        conf: Some(conf.to_string()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Start::default()
    })
}

// ------------------------------------------------------------ control input

/// One raw request line on the control socket; the response line.
fn raw_ctl(s: &Sipd, line: &[u8]) -> serde_json::Value {
    let mut c = UnixStream::connect(s.socket()).unwrap();
    c.set_read_timeout(Some(S)).unwrap();
    let mut w = c.try_clone().unwrap();
    let data = line.to_vec();
    // Written from a thread: sipd may answer (and close) before reading all.
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&data);
        let _ = w.write_all(b"\n");
    });
    let mut resp = String::new();
    BufReader::new(&mut c).read_line(&mut resp).unwrap();
    let _ = t.join();
    serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{e}: {resp:?}"))
}

fn fwd_request(number: &str) -> Vec<u8> {
    format!(
        r#"{{"v":1,"cmd":"fwd","who":"alice","action":{{"kind":"always","number":"{number}"}}}}"#
    )
    .into_bytes()
}

fn forwarding_of(s: &Sipd, who: &str) -> proto::Forwarding {
    let out = s.sipctl(&["fwd", who, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(v["clients"][0].clone()).unwrap()
}

#[test]
fn numbers_are_validated_where_they_enter() {
    let conf = "[alice]\naccountcode=o\nsecret=alice-pw\nexten=1001\n\n\
                [bob]\naccountcode=o\nsecret=bob-pw\nexten=1002\n";
    let s = start(conf, &[]);
    let too_long = "4".repeat(33);

    // sipctl: a clear one-line error, non-zero exit, nothing stored. (A
    // command-line argument is at most 128 KiB on Linux.)
    for number in ["4".repeat(100_000), too_long.clone(), "alice".to_string()] {
        let out = s.sipctl(&["fwd", "alice", "always", &number]);
        assert!(!out.status.success(), "accepted {}", number.len());
        let err = text(&out.stderr);
        assert!(err.contains("is not a number"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.len() < 300, "{}", err.len());
    }
    assert_eq!(forwarding_of(&s, "alice"), proto::Forwarding::None);
    // 32 digits are a number.
    let longest = "4".repeat(32);
    let out = s.sipctl(&["fwd", "alice", "always", &longest]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        forwarding_of(&s, "alice"),
        proto::Forwarding::always(&longest)
    );
    assert!(s.sipctl(&["fwd", "alice", "clear"]).status.success());

    // The control socket: an error object, nothing stored.
    let r = raw_ctl(&s, &fwd_request(&too_long));
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("not a number"), "{r}");
    // A line over 64 KiB: an error object (then the connection closes).
    let r = raw_ctl(&s, &fwd_request(&"4".repeat(1_000_000)));
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("too long"), "{r}");
    assert_eq!(forwarding_of(&s, "alice"), proto::Forwarding::None);
    // A long line under the limit is served, and so is the next request on
    // the same connection.
    let mut c = UnixStream::connect(s.socket()).unwrap();
    c.set_read_timeout(Some(S)).unwrap();
    let big = format!(r#"{{"v":1,"cmd":"fwd","who":"{}"}}"#, "x".repeat(60 * 1024));
    c.write_all(format!("{big}\n{{\"v\":1,\"cmd\":\"status\"}}\n").as_bytes())
        .unwrap();
    let mut lines = BufReader::new(c).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["ok"], false);
    assert!(first["error"].as_str().unwrap().len() < 300, "{first}");
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["ok"], true, "{second}");

    // A star code with a number of 33 digits: a bad forwarding number.
    let mut alice = Ua::udp(s.addr, "alice");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    alice.invite(&format!("sip:*72{too_long}@{}", s.addr), "alice-pw");
    let r = alice.final_response(S).expect("an answer");
    assert_eq!(
        (r.status(), r.reason()),
        (Some(480), Some("Bad Forwarding Number")),
        "{}",
        text(r.raw())
    );
    assert_eq!(forwarding_of(&s, "alice"), proto::Forwarding::None);

    // sip.conf: a reload with such a number is refused.
    s.write_conf(&conf.replace("exten=1001", &format!("exten=1001={too_long}")));
    let out = s.sipd_cmd(&["-r"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("is not a number"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(forwarding_of(&s, "alice"), proto::Forwarding::None);
    // Calls to alice still work.
    let mut bob = Ua::udp(s.addr, "bob");
    assert_eq!(bob.register("bob-pw", 300).status(), Some(200));
    bob.invite(&format!("sip:1001@{}", s.addr), "bob-pw");
    alice.expect_request("INVITE", S);
}
