//! SIPp registering 500 users over TLS, with an independent TLS stack.
//!
//! Debian 12's SIPp 3.6.1 is built without OpenSSL (`-t l1` answers "To use
//! a TLS transport you must compile SIPp with OpenSSL"), so SIPp speaks TCP
//! to a local stunnel (Debian `stunnel4`, OpenSSL), which carries it over
//! TLS to sipd's `tls:` listener and verifies sipd's certificate. SIPp's
//! `-rsa` sends to stunnel while its messages name sipd's TLS address.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sipd_tests::tls::{self, GENERAL_TLS};
use sipd_tests::{free_port, sipp, text, wait_for, Sipd, Start};

/// stunnel in the foreground, killed on drop.
struct Stunnel(Child);

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stunnel_available(test: &str) -> bool {
    let ok = Command::new("stunnel")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: stunnel is not installed (apt-get install stunnel4) and CI=true");
        }
        eprintln!("NOTICE: {test} skipped: stunnel is not installed (apt-get install stunnel4)");
    }
    ok
}

#[test]
fn sipp_registers_500_users_over_tls() {
    let test = "sipp_registers_500_users_over_tls";
    if !sipp::available(test) || !stunnel_available(test) {
        return;
    }
    let cert = tls::self_signed(0x500);
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut conf = format!("[general]\n{GENERAL_TLS}max_expires=3600\n");
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 1..=500 {
        writeln!(conf, "[user{i}]\nsecret=pw{i}-secret").unwrap();
        writeln!(
            csv,
            "user{i};[authentication username=user{i} password=pw{i}-secret]"
        )
        .unwrap();
    }
    let sipd = Sipd::start_with(Start {
        conf: Some(conf),
        args: vec!["-b".into(), format!("tls:{tls_addr}")],
        files: vec![
            ("cert.pem".into(), cert.cert.clone()),
            ("key.pem".into(), cert.key.clone()),
        ],
        ..Start::default()
    });
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("users.csv"), csv).unwrap();
    std::fs::write(work.path().join("ca.pem"), &cert.cert).unwrap();
    let plain = free_port();
    let stunnel_conf = format!(
        "foreground = yes\npid =\nsyslog = no\noutput = {out}\ndebug = 4\n\n\
         [sip]\nclient = yes\naccept = 127.0.0.1:{plain}\nconnect = {tls_addr}\n\
         CAfile = {ca}\nverifyChain = yes\ncheckHost = localhost\nsslVersionMin = TLSv1.2\n",
        out = work.path().join("stunnel.log").display(),
        ca = work.path().join("ca.pem").display(),
    );
    std::fs::write(work.path().join("stunnel.conf"), stunnel_conf).unwrap();
    let _stunnel = Stunnel(
        Command::new("stunnel")
            .arg(work.path().join("stunnel.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stunnel"),
    );
    let up = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", plain)).ok()
    });
    assert!(up.is_some(), "stunnel did not listen");
    drop(up);
    let args: Vec<String> = [
        tls_addr.to_string().as_str(),
        "-rsa",
        &format!("127.0.0.1:{plain}"),
        "-t",
        "t1",
        "-sf",
        sipp::scenario("register.xml").to_str().unwrap(),
        "-inf",
        "users.csv",
        "-i",
        "127.0.0.1",
        "-p",
        "0",
        "-m",
        "500",
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
    let log = std::fs::read_to_string(work.path().join("stunnel.log")).unwrap_or_default();
    assert_eq!(
        (out.success, out.failed),
        (500, 0),
        "SIPp over TLS:\n{}\n{}\nstunnel:\n{log}\nsipd:\n{}",
        out.stdout,
        out.errors,
        sipd.stderr()
    );
    let ctl = sipd.sipctl(&["regs", "--json"]);
    assert!(ctl.status.success(), "{}", text(&ctl.stderr));
    let v: serde_json::Value = serde_json::from_slice(&ctl.stdout).unwrap();
    let bindings = v["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 500);
    assert!(
        bindings
            .iter()
            .all(|b| b["source"].as_str().unwrap().starts_with("tls:127.0.0.1:")),
        "every binding over TLS"
    );
}
