//! End-to-end: the digest authentication of sipd against an attacker
//! (issue 10, points 3–5). The brute-force guard cannot be flushed by
//! failures from many (spoofable) addresses and locks per (user, source),
//! per source and per user without locking out a user's own devices; a
//! source outside `permit` learns nothing about the password or the nonce;
//! the digest `uri` must be the Request-URI, a nonce serves only the user
//! it was issued for, and only the algorithms and qop offered are accepted.
//!
//! Every test starts its own sipd on loopback; other loopback addresses
//! (127.x.y.z) stand for other sources.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipd::sip::auth::AuthParams;
use sipd::sip::{HeaderName, Message};
use sipd_tests::ua::{credentials, unique, Req};
use sipd_tests::{text, Sipd, Start, Ua};

const S: Duration = Duration::from_secs(5);

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
    // The guard alone: the flood limit would ban the sender long before.
    let sipd = Sipd::start(&CONF.replace("[general]\n", "[general]\nflood=0/1\n"));
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

// ---- point 5: digest checks ----------------------------------------------

/// The parameters of the first challenge in a 401/407.
fn challenge_params(ch: &Message) -> AuthParams {
    let name = if ch.status() == Some(401) {
        HeaderName::WwwAuthenticate
    } else {
        HeaderName::ProxyAuthenticate
    };
    let first = ch.headers(&name).filter_map(AuthParams::parse).next();
    first.unwrap_or_else(|| panic!("no challenge in\n{}", text(ch.raw())))
}

/// Digest credentials built by hand: any algorithm (`None`: no
/// `algorithm=` parameter, which means MD5), with or without qop, over
/// `uri` as written; the nonce and realm from `ch`.
#[allow(clippy::too_many_arguments)]
fn digest(
    ch: &Message,
    method: &str,
    uri: &str,
    user: &str,
    secret: &str,
    alg: Option<&str>,
    qop: bool,
    nc: u32,
) -> (String, String) {
    use sipd::auth::{client_response, Algorithm};
    let p = challenge_params(ch);
    let realm = p.get("realm").unwrap().to_string();
    let nonce = p.get("nonce").unwrap().to_string();
    let algorithm = Algorithm::parse(alg.unwrap_or("MD5")).unwrap();
    let cnonce = unique("cn");
    let response = client_response(
        algorithm,
        user,
        &realm,
        secret,
        method,
        uri,
        &nonce,
        nc,
        &cnonce,
        qop.then_some("auth"),
    );
    let mut v = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
    );
    if let Some(a) = alg {
        v.push_str(&format!(", algorithm={a}"));
    }
    if qop {
        v.push_str(&format!(", qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\""));
    }
    let header = if ch.status() == Some(401) {
        "Authorization"
    } else {
        "Proxy-Authorization"
    };
    (header.to_string(), v)
}

fn is_stale(ch: &Message) -> bool {
    let name = if ch.status() == Some(401) {
        HeaderName::WwwAuthenticate
    } else {
        HeaderName::ProxyAuthenticate
    };
    let all: Vec<&str> = ch.headers(&name).collect();
    !all.is_empty() && all.iter().all(|v| v.contains("stale=true"))
}

/// The ACK for a non-2xx final response to `req` (same branch).
fn ack_for(req: &Req, resp: &Message) -> Req {
    let mut ack = req.clone();
    ack.method = "ACK".into();
    ack.body.clear();
    let n = req.get("CSeq").unwrap().split_whitespace().next().unwrap();
    ack.set("CSeq", &format!("{n} ACK"))
        .set("To", resp.header(&HeaderName::To).unwrap())
        .remove("Content-Type")
}

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn invite_req(ua: &Ua, uri: &str) -> Req {
    ua.request("INVITE", uri).body("application/sdp", SDP)
}

/// Send an INVITE and return its first final response, ACKing it if it is
/// a failure.
fn invite_final(ua: &mut Ua, req: &Req) -> Message {
    ua.send(req);
    let r = ua.final_response(S).expect("no final response to INVITE");
    if r.status().is_some_and(|s| s >= 300) {
        ua.send(&ack_for(req, &r));
    }
    r
}

#[test]
fn credentials_for_one_request_uri_do_not_authorize_another() {
    let sipd = Sipd::start(CONF);
    let mut carol = Ua::udp(sipd.addr, "carol");
    assert_eq!(register(&mut carol, "carol-pw").status(), Some(200));
    // alice's phone answers a 407 for a call to 1002; an attacker captures
    // the credentials before they arrive.
    let mut alice = Ua::udp(sipd.addr, "alice");
    let to_bob = invite_req(&alice, &format!("sip:1002@{}", sipd.addr));
    let ch = invite_final(&mut alice, &to_bob);
    assert_eq!(ch.status(), Some(407));
    let (h, captured) = credentials(&ch, &to_bob, "alice", "wonderland", "MD5", 1);
    // The attacker calls 1003 from another address with them.
    let mut attacker = ua_on(&sipd, "127.180.0.1", "alice");
    let to_carol = invite_req(&attacker, &format!("sip:1003@{}", sipd.addr)).set(&h, &captured);
    let r = invite_final(&mut attacker, &to_carol);
    assert_eq!(r.status(), Some(400), "{}", text(r.raw()));
    assert!(
        carol.recv(Duration::from_millis(500)).is_none(),
        "the call with borrowed credentials reached carol"
    );
}

#[test]
fn the_digest_uri_is_compared_as_a_sip_uri() {
    let sipd = Sipd::start(CONF);
    let mut bob = Ua::udp(sipd.addr, "bob");
    assert_eq!(register(&mut bob, "builder").status(), Some(200));
    let mut alice = Ua::udp(sipd.addr, "alice");
    // Request-URI with a transport parameter (in one URI only: ignored,
    // RFC 3261 §19.1.4); digest uri with an escaped digit and the
    // parameter in upper case.
    let ruri = format!("sip:1002@{};transport=udp", sipd.addr);
    let req = invite_req(&alice, &ruri);
    let ch = invite_final(&mut alice, &req);
    assert_eq!(ch.status(), Some(407));
    let mut as_hashed = req.clone();
    as_hashed.uri = format!("sip:%31002@{};TRANSPORT=UDP", sipd.addr);
    let (h, v) = credentials(&ch, &as_hashed, "alice", "wonderland", "MD5", 1);
    alice.send(&alice.renew(&req).set(&h, &v));
    let inv = bob.expect_request("INVITE", S);
    assert!(inv.request_uri().unwrap().contains("bob@"));
}

#[test]
fn a_nonce_serves_only_the_user_it_was_issued_for() {
    let sipd = Sipd::start(CONF);
    // A challenge for bob...
    let mut bob = Ua::udp(sipd.addr, "bob");
    let bob_ch = bob.transact(&register_req(&bob)).unwrap();
    assert_eq!(bob_ch.status(), Some(401));
    // ... answered by alice with her own (correct) password.
    let mut alice = Ua::udp(sipd.addr, "alice");
    let req = register_req(&alice);
    let r = alice
        .transact(&alice.authorized(&req, &bob_ch, "wonderland", "MD5", 1))
        .unwrap();
    assert_eq!(
        r.status(),
        Some(401),
        "another user's nonce was accepted:\n{}",
        text(r.raw())
    );
    // A fresh challenge (stale: the password was not even looked at), and
    // with it alice registers: no loop.
    assert!(is_stale(&r), "{}", text(r.raw()));
    let ok = alice
        .transact(&alice.authorized(&req, &r, "wonderland", "MD5", 1))
        .unwrap();
    assert_eq!(ok.status(), Some(200), "{}", text(ok.raw()));
}

#[test]
fn a_caller_with_another_from_user_is_challenged_once_more() {
    // A phone hiding its identity (From: anonymous) authenticates as alice:
    // the first nonce was issued for "anonymous", so it gets a stale 407
    // with one for alice, then the call goes through.
    let sipd = Sipd::start(CONF);
    let mut bob = Ua::udp(sipd.addr, "bob");
    assert_eq!(register(&mut bob, "builder").status(), Some(200));
    let mut alice = Ua::udp(sipd.addr, "alice");
    let req = invite_req(&alice, &format!("sip:1002@{}", sipd.addr)).set(
        "From",
        &format!(
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={}",
            alice.tag
        ),
    );
    let ch = invite_final(&mut alice, &req);
    assert_eq!(ch.status(), Some(407));
    let again = alice.authorized(&req, &ch, "wonderland", "MD5", 1);
    let ch2 = invite_final(&mut alice, &again);
    assert_eq!(ch2.status(), Some(407), "{}", text(ch2.raw()));
    assert!(is_stale(&ch2), "{}", text(ch2.raw()));
    alice.send(&alice.authorized(&req, &ch2, "wonderland", "MD5", 1));
    bob.expect_request("INVITE", S);
}

#[test]
fn only_the_offered_algorithms_and_qop_are_accepted() {
    let sipd = Sipd::start(&CONF.replace("[general]\n", "[general]\ndigest=sha-256\n"));
    let mut alice = Ua::udp(sipd.addr, "alice");
    let uri = format!("sip:{}", sipd.addr);
    let fresh = |ua: &mut Ua| {
        let req = register_req(ua);
        let ch = ua.transact(&req).unwrap();
        assert_eq!(ch.status(), Some(401));
        let offered: Vec<&str> = ch.headers(&HeaderName::WwwAuthenticate).collect();
        assert_eq!(offered.len(), 1, "{offered:?}");
        assert!(offered[0].contains("algorithm=SHA-256"), "{offered:?}");
        (req, ch)
    };
    for (alg, qop) in [
        (Some("MD5"), true),
        (None, true),
        (Some("MD5-sess"), true),
        (Some("SHA-256-sess"), true),
        (Some("SHA-256"), false),
        (Some("MD5"), false),
    ] {
        let (req, ch) = fresh(&mut alice);
        let (h, v) = digest(&ch, "REGISTER", &uri, "alice", "wonderland", alg, qop, 1);
        let r = alice.transact(&alice.renew(&req).set(&h, &v)).unwrap();
        assert_eq!(
            r.status(),
            Some(401),
            "algorithm {alg:?}, qop {qop}: {}",
            text(r.raw())
        );
    }
    // What was offered works.
    let (req, ch) = fresh(&mut alice);
    let (h, v) = digest(
        &ch,
        "REGISTER",
        &uri,
        "alice",
        "wonderland",
        Some("SHA-256"),
        true,
        1,
    );
    let r = alice.transact(&alice.renew(&req).set(&h, &v)).unwrap();
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
}

#[test]
fn by_default_md5_with_and_without_the_algorithm_parameter_works() {
    // The default offer is MD5 alone with qop=auth: what every phone
    // answers; SHA-256 was not offered, so an answer with it is challenged.
    let sipd = Sipd::start(CONF);
    let mut alice = Ua::udp(sipd.addr, "alice");
    let uri = format!("sip:{}", sipd.addr);
    for (alg, want) in [(Some("MD5"), 200), (None, 200), (Some("SHA-256"), 401)] {
        let req = register_req(&alice);
        let ch = alice.transact(&req).unwrap();
        let offered: Vec<&str> = ch.headers(&HeaderName::WwwAuthenticate).collect();
        assert_eq!(offered.len(), 1, "{offered:?}");
        assert!(offered[0].contains("algorithm=MD5"), "{offered:?}");
        let (h, v) = digest(&ch, "REGISTER", &uri, "alice", "wonderland", alg, true, 1);
        let r = alice.transact(&alice.renew(&req).set(&h, &v)).unwrap();
        assert_eq!(r.status(), Some(want), "{alg:?}: {}", text(r.raw()));
    }
}

#[test]
fn a_client_with_digest_sha256_is_offered_only_sha256_and_registers_with_it() {
    // The general offer stays MD5; alice's own `digest=sha-256` is hers.
    let sipd = Sipd::start(&CONF.replace("exten=1001\n", "exten=1001\ndigest=sha-256\n"));
    let uri = format!("sip:{}", sipd.addr);
    let mut alice = Ua::udp(sipd.addr, "alice");
    let req = register_req(&alice);
    let ch = alice.transact(&req).unwrap();
    let offered: Vec<&str> = ch.headers(&HeaderName::WwwAuthenticate).collect();
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert!(offered[0].contains("algorithm=SHA-256"), "{offered:?}");
    let (h, v) = digest(
        &ch,
        "REGISTER",
        &uri,
        "alice",
        "wonderland",
        Some("MD5"),
        true,
        1,
    );
    let r = alice.transact(&alice.renew(&req).set(&h, &v)).unwrap();
    assert_eq!(r.status(), Some(401), "MD5 was not offered to alice");
    let ch = alice.transact(&req).unwrap();
    let (h, v) = digest(
        &ch,
        "REGISTER",
        &uri,
        "alice",
        "wonderland",
        Some("SHA-256"),
        true,
        1,
    );
    let r = alice.transact(&alice.renew(&req).set(&h, &v)).unwrap();
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    // bob, without the key, gets MD5 alone and registers with it.
    let mut bob = Ua::udp(sipd.addr, "bob");
    let req = register_req(&bob);
    let ch = bob.transact(&req).unwrap();
    let offered: Vec<&str> = ch.headers(&HeaderName::WwwAuthenticate).collect();
    assert_eq!(offered.len(), 1, "{offered:?}");
    assert!(offered[0].contains("algorithm=MD5"), "{offered:?}");
    let (h, v) = digest(
        &ch,
        "REGISTER",
        &uri,
        "bob",
        "builder",
        Some("MD5"),
        true,
        1,
    );
    let r = bob.transact(&bob.renew(&req).set(&h, &v)).unwrap();
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
}
