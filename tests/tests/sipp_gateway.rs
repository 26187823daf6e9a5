//! SIPp as the gateway(s): the exact Request-URI a trunk receives (prefix +
//! normalised number), the callerid it is shown, and the seed example's
//! forwarding through a gateway with Diversion.

use std::path::Path;
use std::time::Duration;

use sipd_tests::{free_port, sipp, text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);

/// Start a busy SIPp gateway on `port` logging every message in `dir`.
fn gateway(dir: &Path, port: u16) -> sipp::Background {
    let g = sipp::Background::start(
        dir,
        &[
            "-sf",
            sipp::scenario("gateway.xml").to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-trace_msg",
        ]
        .map(String::from),
    );
    std::thread::sleep(Duration::from_millis(300));
    g
}

/// The INVITEs the SIPp gateways in `dir` received (their full text).
fn invites(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with("_messages.log") {
            let log = std::fs::read_to_string(e.path()).unwrap_or_default();
            for block in log.split("\n\n") {
                if let Some(i) = block.find("INVITE sip:") {
                    out.push(block[i..].to_string());
                }
            }
        }
    }
    out
}

fn call_busy(ua: &mut Ua, sipd: &Sipd, dialed: &str, secret: &str) {
    ua.invite(&format!("sip:{dialed}@{}", sipd.addr), secret);
    let r = ua.final_response(S).unwrap();
    assert_eq!(r.status(), Some(486), "{dialed}: {}", text(r.raw()));
}

#[test]
fn sipp_gateway_receives_prefix_plus_normalised_number_and_callerid() {
    if !sipp::available("sipp_gateway_receives_prefix_plus_normalised_number_and_callerid") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let sipd = Sipd::start(&format!(
        "[alice]\nsecret=alice-pw\ncallerid=\"Alice\" <4951110001>\n\n\
         [GATE1]\naccountcode=gateways\nhost=127.0.0.1:{port}\nexten=9995999\n"
    ));
    let _gw = gateway(work.path(), port);
    let mut alice = Ua::udp(sipd.addr, "alice");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    for dialed in ["1234567", "84991234567", "81044123456789"] {
        call_busy(&mut alice, &sipd, dialed, "alice-pw");
    }
    let got = wait_for(S, || {
        let v = invites(work.path());
        (v.len() >= 3).then_some(v)
    })
    .expect("SIPp gateway logged 3 INVITEs");
    let ruris: Vec<&str> = got.iter().map(|m| m.lines().next().unwrap()).collect();
    assert_eq!(
        ruris,
        [
            format!("INVITE sip:999599974951234567@127.0.0.1:{port} SIP/2.0"),
            format!("INVITE sip:999599974991234567@127.0.0.1:{port} SIP/2.0"),
            format!("INVITE sip:999599944123456789@127.0.0.1:{port} SIP/2.0"),
        ]
    );
    for m in &got {
        assert!(m.contains("From: \"Alice\" <sip:4951110001@"), "{m}");
        assert!(
            m.contains("P-Asserted-Identity: \"Alice\" <sip:4951110001@"),
            "{m}"
        );
    }
}

#[test]
fn sipp_gateways_seed_example_forwarding_with_diversion() {
    if !sipp::available("sipp_gateways_seed_example_forwarding_with_diversion") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let conf = include_str!("../../sip.conf.example")
        .replace("192.168/16,10/8", "127.0.0.0/8")
        .replace("192.168.1.129/32", "127.0.0.1/32")
        .replace("192.168.1.129:5060", &format!("127.0.0.1:{}", free_port()))
        .replace("192.168.1.200:5060", &format!("127.0.0.1:{p1}"))
        .replace("192.168.1.201:5060", &format!("127.0.0.1:{p2}"))
        .replace("192.168.1.100:5070", &format!("127.0.0.1:{}", free_port()));
    let sipd = Sipd::start(&conf);
    let _g1 = gateway(work.path(), p1);
    let _g2 = gateway(work.path(), p2);
    let mut siphone1 = Ua::udp(sipd.addr, "siphone1");
    assert_eq!(siphone1.register("12345", 300).status(), Some(200));
    // siphone2 (exten=4999876543#1002=4991234567) forwards everything.
    call_busy(&mut siphone1, &sipd, "1002", "12345");
    let got =
        wait_for(S, || invites(work.path()).into_iter().next()).expect("a gateway got the call");
    let first = got.lines().next().unwrap();
    let via_gate1 = format!("INVITE sip:999599974991234567@127.0.0.1:{p1} SIP/2.0");
    let via_gate2 = format!("INVITE sip:974991234567@127.0.0.1:{p2} SIP/2.0");
    assert!(first == via_gate1 || first == via_gate2, "{first}");
    assert!(got.contains("Diversion: <sip:siphone2@"), "{got}");
    assert!(got.contains("reason=unconditional"), "{got}");
    // siphone2's callerid (its long number) is presented.
    assert!(got.contains("From: <sip:4999876543@"), "{got}");
}
