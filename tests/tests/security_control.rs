//! Control input (issue: security, point 9): numbers are validated where
//! they enter (sipctl, the control socket, sip.conf), and the control
//! socket's request line is bounded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use sipd_tests::{text, Sipd};

const CONF: &str = "[alice]\naccountcode=office\nsecret=alice-pw\nexten=1001\n\n[bob]\naccountcode=office\nsecret=bob-pw\nexten=1002\n";

/// One request line over the control socket, one reply line back.
fn raw(s: &Sipd, line: &[u8]) -> String {
    let mut c = UnixStream::connect(s.socket()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(line).unwrap();
    let mut reply = String::new();
    BufReader::new(c).read_line(&mut reply).unwrap();
    reply
}

/// A `fwd alice always NUMBER` request line, as sipctl would send it.
fn fwd_line(number: &str) -> String {
    proto::to_line(&proto::Request::new(proto::Command::Fwd {
        who: "alice".into(),
        action: Some(proto::Forwarding::always(number)),
    }))
}

fn forwarding_of_alice(s: &Sipd) -> String {
    let out = s.sipctl(&["fwd", "alice", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn an_overlong_number_is_refused_by_sipctl_and_by_the_daemon() {
    let s = Sipd::start(CONF);
    let before = forwarding_of_alice(&s);
    // 100,000 digits: as long as one command-line argument may be.
    let long = "9".repeat(100_000);
    let out = s.sipctl(&["fwd", "alice", "always", &long]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is not a number") && err.len() < 500, "{err}");
    // 33 digits straight to the socket, past sipctl's own check.
    let n33 = "1".repeat(33);
    let reply = raw(&s, fwd_line(&n33).as_bytes());
    let head: String = reply.chars().take(300).collect();
    assert!(reply.contains("not a number"), "{head}");
    // 32 digits is a number (alice's dialplan takes any).
    let n32 = "1".repeat(32);
    let out = s.sipctl(&["fwd", "alice", "always", &n32]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(forwarding_of_alice(&s).contains(&n32));
    let out = s.sipctl(&["fwd", "alice", "clear"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!forwarding_of_alice(&s).contains("999"));
    assert!(before.contains("alice"), "{before}");
}

#[test]
fn a_request_line_over_64_kib_is_refused_and_the_daemon_goes_on() {
    let mut s = Sipd::start(CONF);
    let line = fwd_line(&"7".repeat(70 * 1024));
    let reply = raw(&s, line.as_bytes());
    let head: String = reply.chars().take(300).collect();
    assert!(reply.contains("request line too long"), "{head}");
    assert!(s.is_running());
    assert!(!forwarding_of_alice(&s).contains("777"));
    // A line just under the limit is read (and answered as bad JSON).
    let mut ok = vec![b'x'; 60 * 1024];
    ok.push(b'\n');
    let reply = raw(&s, &ok);
    let head: String = reply.chars().take(300).collect();
    assert!(!reply.contains("too long"), "{head}");
}

#[test]
fn sip_conf_refuses_an_overlong_forwarding_number() {
    let s = Sipd::start(CONF);
    let bad = format!(
        "[alice]\naccountcode=office\nsecret=alice-pw\nexten=1001={}\n",
        "5".repeat(33)
    );
    s.write_conf(&bad);
    let out = s.sipctl(&["reload"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(err.contains(":4:") || err.contains("line 4"), "{err}");
    // The old config stays in force.
    let out = s.sipctl(&["fwd", "alice", "--json"]);
    assert!(out.status.success());
}
