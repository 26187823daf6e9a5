//! End-to-end: the digest authentication of sipd against an attacker
//! (issue 10). The brute-force guard cannot be flushed by failures from
//! many (spoofable) addresses and locks per (user, source), per source and
//! per user without locking out a user's own devices; a source outside
//! `permit` learns nothing about the password or the nonce.
//!
//! Every test starts its own sipd on loopback; other loopback addresses
//! (127.x.y.z) stand for other sources.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// REGISTER → 401 → REGISTER with MD5 credentials for `secret`: the final
/// answer.
fn register(ua: &mut Ua, secret: &str) -> Message {
    ua.register(secret, 60)
}

// ---- point 3: the brute-force guard -------------------------------------

/// Loopback address number `i` of a block: 127.B.x.y, never 127.0.0.x.
fn addr(block: u8, i: usize) -> String {
    format!("127.{block}.{}.{}", i / 250, i % 250 + 1)
}

#[test]
fn flushing_the_failure_table_from_16500_addresses_does_not_unlock_a_new_one() {
    let sipd = Sipd::start(CONF);
    let started = Instant::now();
    // Nonces for 2,000 made-up users (nonces are bound to the user they were
    // issued for, so each user needs its own challenge; a wrong password
    // does not use a nonce up). No user gets as many failures as the
    // per-user limit, so every failure below is counted.
    const USERS: usize = 2_000;
    const ADDRESSES: usize = 16_500;
    let mut collector = Ua::udp(sipd.addr, "x");
    let challenges: Vec<(String, Message)> = (0..USERS)
        .map(|k| {
            collector.user = format!("junk{k}");
            let req = register_req(&collector);
            let ch = collector.transact(&req).expect("challenge");
            assert_eq!(ch.status(), Some(401), "{}", text(ch.raw()));
            (collector.user.clone(), ch)
        })
        .collect();
    // 16,500 wrong passwords, each from a distinct address.
    let threads = 4;
    let forbidden: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let challenges = &challenges;
                let sipd = &sipd;
                s.spawn(move || {
                    let mut n = 0;
                    for i in (t..ADDRESSES).step_by(threads) {
                        let (user, ch) = &challenges[i % USERS];
                        let mut ua = ua_on(sipd, &addr(100, i), user);
                        let req = register_req(&ua);
                        let bad = ua.authorized(&req, ch, "not-the-password", "MD5", 1);
                        let r = ua.transact(&bad);
                        if r.as_ref().and_then(Message::status) == Some(403) {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(forbidden, ADDRESSES, "every wrong password gets 403");
    eprintln!(
        "{ADDRESSES} failures from distinct addresses in {:?}",
        started.elapsed()
    );
    // A fresh address guessing alice's password is still cut off after its
    // limit: the right password no longer helps there.
    let mut mallory = ua_on(&sipd, "127.200.0.1", "alice");
    for i in 0..30 {
        let r = register(&mut mallory, &format!("guess{i}"));
        assert_eq!(r.status(), Some(403), "guess {i}: {}", text(r.raw()));
    }
    let r = register(&mut mallory, "wonderland");
    assert_eq!(
        r.status(),
        Some(403),
        "the right password after 30 wrong ones from a fresh address was accepted:\n{}",
        text(r.raw())
    );
    // alice herself, elsewhere, is not locked out.
    let mut alice = ua_on(&sipd, "127.200.0.2", "alice");
    assert_eq!(register(&mut alice, "wonderland").status(), Some(200));
}

#[test]
fn a_distributed_guess_locks_the_user_except_where_she_logged_in() {
    let sipd = Sipd::start(CONF);
    // alice's phone registers from 127.0.0.1.
    let mut phone = Ua::udp(sipd.addr, "alice");
    assert_eq!(register(&mut phone, "wonderland").status(), Some(200));
    // Guesses for alice from many addresses, two each: below every
    // per-address limit, but enough for the per-user one.
    for i in 0..10 {
        let mut m = ua_on(&sipd, &addr(150, i), "alice");
        for g in 0..2 {
            let r = register(&mut m, &format!("guess{i}-{g}"));
            assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
        }
    }
    // From an address alice never logged in from, even the right password
    // gets 403 now (and the same 403 as any failure)...
    let mut newcomer = ua_on(&sipd, "127.151.0.1", "alice");
    let r = register(&mut newcomer, "wonderland");
    assert_eq!(
        (r.status(), r.reason()),
        (Some(403), Some("Forbidden")),
        "{}",
        text(r.raw())
    );
    // ... while her phone keeps working: the attack cannot lock her out.
    assert_eq!(register(&mut phone, "wonderland").status(), Some(200));
    // Other users are not affected.
    let mut bob = ua_on(&sipd, "127.151.0.2", "bob");
    assert_eq!(register(&mut bob, "builder").status(), Some(200));
}

#[test]
fn a_source_guessing_many_users_is_locked_except_for_users_it_logged_in_as() {
    let sipd = Sipd::start(CONF);
    let ip = "127.160.0.1";
    // alice logs in from this address (an office behind one NAT address).
    let mut alice = ua_on(&sipd, ip, "alice");
    assert_eq!(register(&mut alice, "wonderland").status(), Some(200));
    // A password spray from the same address: one guess for each of many
    // users (below the per-user and per-(user, source) limits).
    let mut sprayer = ua_on(&sipd, ip, "x");
    for k in 0..40 {
        sprayer.user = format!("user{k}");
        let r = register(&mut sprayer, "123456");
        assert_eq!(r.status(), Some(403), "{}", text(r.raw()));
    }
    // bob has never logged in from there: locked, even with his password.
    let mut bob = ua_on(&sipd, ip, "bob");
    assert_eq!(register(&mut bob, "builder").status(), Some(403));
    // alice still registers from there.
    assert_eq!(register(&mut alice, "wonderland").status(), Some(200));
    // bob from elsewhere is fine.
    let mut bob = ua_on(&sipd, "127.160.0.2", "bob");
    assert_eq!(register(&mut bob, "builder").status(), Some(200));
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
