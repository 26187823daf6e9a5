//! SIPp as independent peers: a UAS registers with digest, then a UAC
//! places 1,000 calls to it through sipd with proxy authentication
//! (INVITE/407/ACK, INVITE/100/180/200/ACK, 1 s hold, BYE/200). Every call
//! succeeds and leaves an ANSWERED CDR with the right durations.

use std::time::Duration;

use sipd_tests::sipp::{self, args};
use sipd_tests::{text, wait_for, Sipd};

#[test]
fn sipp_1000_calls_through_the_proxy() {
    if !sipp::available("sipp_1000_calls_through_the_proxy") {
        return;
    }
    thousand_calls("");
}

/// UDP ports in `range` any socket on this machine holds (IPv4 and IPv6).
fn udp_ports_open(range: std::ops::Range<u16>) -> Vec<u16> {
    let mut open = Vec::new();
    for f in ["/proc/net/udp", "/proc/net/udp6"] {
        let t = std::fs::read_to_string(f).unwrap_or_default();
        for line in t.lines().skip(1) {
            let local = line.split_whitespace().nth(1).unwrap_or("");
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let Some(p) = port.filter(|p| range.contains(p)) {
                open.push(p);
            }
        }
    }
    open
}

/// The same 1,000 calls with their media relayed by sipd: every relay
/// session is closed and every relay port free once the calls are over.
#[test]
fn sipp_1000_relayed_calls_leave_no_relay_port_open() {
    if !sipp::available("sipp_1000_relayed_calls_leave_no_relay_port_open") {
        return;
    }
    let sipd = thousand_calls("[general]\nmedia=relay\nrtp_ports=23000-25999\n");
    let status = sipd.status();
    let counter = |name: &str| {
        status
            .counters
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
            .unwrap_or_else(|| panic!("no counter {name}"))
    };
    assert_eq!(counter("relayed calls"), 0);
    assert_eq!(counter("relay ports in use"), 0);
    assert_eq!(counter("media streams without a free port"), 0);
    let open = wait_for(Duration::from_secs(5), || {
        let open = udp_ports_open(23000..26000);
        open.is_empty().then_some(())
    });
    assert!(
        open.is_some(),
        "relay ports still open: {:?}",
        udp_ports_open(23000..26000)
    );
    // The relay was used: every call's media went through it.
    assert_eq!(counter("calls relayed since start"), 1000);
}

/// 1,000 calls from a SIPp UAC to a registered SIPp UAS through sipd with
/// `general` in sip.conf; every call answered and accounted.
fn thousand_calls(general: &str) -> Sipd {
    // One account makes ~100 concurrent calls here: a load generator, not
    // a phone, so it gets call_limit=0 (a phone's default is 20).
    let sipd = Sipd::start(&format!(
        "{general}[caller]\nsecret=caller-pw\ncall_limit=0\n\n[uas]\nsecret=uas-pw\n"
    ));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let server = sipd.addr.to_string();
    let _uas = sipp::registered_uas(dir, &server);
    // sipd checks that the digest uri names the Request-URI; SIPp puts
    // sip:host:port there unless told the URI (every call goes to uas).
    let auth_uri = format!("uas@{server}");
    let uac = sipp::run(
        dir,
        &args(&[
            &server,
            "-auth_uri",
            &auth_uri,
            "-sf",
            sipp::scenario("uac_auth.xml").to_str().unwrap(),
            "-inf",
            "uac.csv",
            "-m",
            "1000",
            "-r",
            "100",
            "-l",
            "300",
            "-d",
            "1000",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-timeout",
            "120",
        ]),
        Duration::from_secs(150),
    );
    assert_eq!(
        uac.failed, 0,
        "failed calls:\n{}\n{}",
        uac.stdout, uac.errors
    );
    assert_eq!(uac.success, 1000, "{}\n{}", uac.stdout, uac.stderr);
    // Every call leaves an ANSWERED CDR with about 1 s of talk.
    let records = wait_for(Duration::from_secs(10), || {
        let out = sipd.sipctl(&["cdr", "--json", "--last", "5000"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let r = v["records"].as_array()?.clone();
        (r.len() >= 1000).then_some(r)
    })
    .expect("1,000 CDRs");
    assert_eq!(records.len(), 1000);
    for r in &records {
        assert_eq!(r["disposition"], "ANSWERED", "{r}");
        assert_eq!(r["caller"], "caller");
        assert_eq!(r["target"], "uas");
        let (billsec, duration) = (
            r["billsec"].as_u64().unwrap(),
            r["duration"].as_u64().unwrap(),
        );
        let (start, answer, end) = (
            r["start"].as_u64().unwrap(),
            r["answer"].as_u64().unwrap(),
            r["end"].as_u64().unwrap(),
        );
        assert!(start <= answer && answer <= end, "{r}");
        assert!(
            (950..3000).contains(&(end - answer)),
            "talk time {} ms: {r}",
            end - answer
        );
        assert!(billsec <= duration && (0..=3).contains(&billsec), "{r}");
    }
    let out = sipd.sipctl(&["calls", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["calls"].as_array().unwrap().len(),
        0,
        "{}",
        text(&out.stdout)
    );
    sipd
}
