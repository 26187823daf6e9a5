//! End-to-end: the digest authentication of sipd against an attacker
//! (issue 10): a source outside `permit` learns nothing about the password
//! or the nonce.
//!
//! Every test starts its own sipd on loopback; other loopback addresses
//! (127.x.y.z) stand for other sources.

use std::net::SocketAddr;
use std::time::Duration;

use sipd::sip::Message;
use sipd_tests::ua::Req;
use sipd_tests::{text, Sipd, Start, Ua};

const CONF: &str = "\
[general]
min_expires=2
max_expires=300

[alice]
secret=wonderland
accountcode=office
exten=1001

[bob]
secret=builder
accountcode=office
exten=1002

[carol]
secret=carol-pw
accountcode=office
exten=1003

[fenced]
secret=fence
permit=10.0.0.0/8
";

/// A UDP user agent for `user` on this loopback address.
fn ua_on(sipd: &Sipd, ip: &str, user: &str) -> Ua {
    let bind: SocketAddr = format!("{ip}:0").parse().unwrap();
    Ua::udp_at(bind, sipd.addr, user)
}

fn register_req(ua: &Ua) -> Req {
    ua.request("REGISTER", &format!("sip:{}", ua.server))
        .set("Expires", "60")
}

// ---- point 4: no password oracle outside `permit` -----------------------

/// status, reason and the header names of a response (what a peer can
/// compare between two answers).
fn shape(m: &Message) -> (Option<u16>, Option<String>, Vec<String>) {
    let raw = text(m.raw());
    let names = raw
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
        .collect();
    (m.status(), m.reason().map(str::to_string), names)
}

#[test]
fn outside_permit_the_answer_does_not_depend_on_the_password() {
    let sipd = Sipd::start(CONF);
    let mut answers = Vec::new();
    for (user, secret) in [
        ("fenced", "fence"),
        ("fenced", "wrong"),
        ("nobody", "fence"),
    ] {
        let mut ua = ua_on(&sipd, "127.170.0.1", user);
        let req = register_req(&ua);
        let ch = ua.transact(&req).unwrap();
        assert_eq!(ch.status(), Some(401), "{user}: {}", text(ch.raw()));
        let authed = ua.authorized(&req, &ch, secret, "MD5", 1);
        // The credentials, and then the very same credentials again.
        for attempt in 0..2 {
            let r = ua.transact(&ua.renew(&authed)).unwrap();
            assert_eq!(
                r.status(),
                Some(403),
                "{user}/{secret} attempt {attempt}: {}",
                text(r.raw())
            );
            answers.push(shape(&r));
        }
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "answers differ: {answers:#?}"
    );
}

#[test]
fn outside_permit_an_expired_nonce_gets_403_whatever_the_password() {
    let sipd = Sipd::start_with(Start {
        conf: Some(CONF.into()),
        args: vec!["--nonce-expire".into(), "1".into()],
        ..Default::default()
    });
    let mut ua = ua_on(&sipd, "127.171.0.1", "fenced");
    let req = register_req(&ua);
    let ch = ua.transact(&req).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    for (nc, secret) in [(1, "fence"), (2, "wrong")] {
        let r = ua
            .transact(&ua.authorized(&req, &ch, secret, "MD5", nc))
            .unwrap();
        assert_eq!(r.status(), Some(403), "{secret}: {}", text(r.raw()));
    }
}
