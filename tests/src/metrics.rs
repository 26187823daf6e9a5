//! Reading sipd's Prometheus endpoint (`[general] metrics=`) in tests:
//! scrape it, read a series, and run Debian's `promtool check metrics` on
//! the text (without promtool that check prints a NOTICE and is skipped,
//! except under `CI=true`, where that is a failure).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{run_timeout, text};

const SECOND: Duration = Duration::from_secs(1);

/// One HTTP exchange; the whole answer, head and body.
pub fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, 5 * SECOND)
        .unwrap_or_else(|e| panic!("connect to metrics at {addr}: {e}"));
    s.set_read_timeout(Some(10 * SECOND)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// GET /metrics: the body of a 200.
pub fn scrape(addr: SocketAddr) -> String {
    let answer = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: sipd\r\nAccept: text/plain\r\n\r\n",
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// The value of one series (`name` or `name{labels}`), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[track_caller]
pub fn at_least(text: &str, series: &str, min: f64) {
    let v = value(text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"));
    assert!(v >= min, "{series} is {v}, expected at least {min}\n{text}");
}

/// `promtool check metrics` on the scraped text.
pub fn promtool_check(metrics: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("promtool").is_file()))
        .unwrap_or(false);
    if !found {
        let why = "promtool is not installed (apt-get install prometheus)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}, and CI=true");
        }
        eprintln!("NOTICE: promtool check skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, metrics).unwrap();
    let out = run_timeout(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("promtool check metrics < \"$1\"")
            .arg("sh")
            .arg(&file),
        30 * SECOND,
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- text ---\n{metrics}",
        out.status
    );
}
