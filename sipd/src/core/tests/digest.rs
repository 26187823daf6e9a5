//! Digest checks in the core: the digest `uri` against the Request-URI, a
//! nonce for one user only, and exactly the algorithms and qop offered.

use super::answers::{answer, challenge, md5, shape, stale, Creds};
use super::harness::{config, Bench, Phone, CONF, REALM};
use crate::auth::Algorithm;
use crate::core::Effects;
use crate::sip::{HeaderName, Message};

// ---- the digest uri ----------------------------------------------------------

/// alice's INVITE to `ruri` answered with credentials over `digest_uri`:
/// what alice gets back, and whether bob was rung.
fn invite_with_uri(b: &mut Bench, ruri: &str, digest_uri: &str) -> (Vec<u16>, bool) {
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    let to = format!("<sip:1002@{REALM}>");
    let r = alice.request("INVITE", ruri, &to, "c-uri", "u1", "", "");
    b.deliver(alice.peer, &r);
    let ch = b.expect_status(alice.addr(), 407);
    let auth = Creds {
        method: "INVITE".into(),
        uri: digest_uri.into(),
        ..md5("alice", "a1")
    }
    .line(&ch);
    let r = alice.request("INVITE", ruri, &to, "c-uri", "u2", &auth, "");
    b.deliver(alice.peer, &r);
    let got: Vec<u16> = b
        .take_to(alice.addr())
        .into_iter()
        .filter_map(|(_, m)| m.status())
        .collect();
    let rung = b
        .take_to(bob.addr())
        .iter()
        .any(|(_, m)| m.method().is_some_and(|x| x.as_str() == "INVITE"));
    (got, rung)
}

#[test]
fn credentials_for_another_request_uri_are_refused() {
    let mut b = Bench::new(CONF);
    let (got, rung) = invite_with_uri(
        &mut b,
        &format!("sip:1002@{REALM}"),
        &format!("sip:1003@{REALM}"),
    );
    assert_eq!(got, vec![400]);
    assert!(!rung);
    // What SIPp sends without -auth_uri (sip:host:port) is refused as well.
    let mut b = Bench::new(CONF);
    let (got, rung) = invite_with_uri(&mut b, &format!("sip:1002@{REALM}"), "sip:127.0.0.1:5060");
    assert_eq!(got, vec![400]);
    assert!(!rung);
}

#[test]
fn an_equal_sip_uri_written_differently_is_accepted() {
    let mut b = Bench::new(CONF);
    let (got, rung) = invite_with_uri(
        &mut b,
        &format!("sip:1002@{REALM};user=phone"),
        &format!("sip:%31002@{};USER=Phone;ob", REALM.to_uppercase()),
    );
    assert!(rung, "{got:?}");
    assert!(!got.contains(&400), "{got:?}");
}

#[test]
fn digest_uri_any_does_not_compare() {
    let mut b = Bench::new(&CONF.replace("[general]\n", "[general]\ndigest_uri=any\n"));
    let (_, rung) = invite_with_uri(&mut b, &format!("sip:1002@{REALM}"), "sip:127.0.0.1:5060");
    assert!(rung);
}

// ---- a nonce for one user ------------------------------------------------------

#[test]
fn another_users_nonce_gets_a_stale_challenge_then_works() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    let bobs = challenge(&mut b, &mut bob);
    let mut alice = Phone::udp("alice", "a1", 6001);
    let r = answer(&mut b, &mut alice, &md5("alice", "a1").line(&bobs));
    assert_eq!(r.status(), Some(401));
    assert!(stale(&r));
    // The same with a wrong password: the password is not looked at, so
    // the answer is the same (and nothing is counted as a failure).
    let r2 = answer(&mut b, &mut alice, &md5("alice", "nope").line(&bobs));
    assert_eq!(shape(&r2), shape(&r));
    assert_eq!(b.core.guard.tracked(), 0);
    // With the fresh nonce (issued for alice) she registers.
    let ok = answer(&mut b, &mut alice, &md5("alice", "a1").line(&r));
    assert_eq!(ok.status(), Some(200));
}

#[test]
fn a_caller_whose_from_is_not_her_user_name_gets_through_after_one_more_round() {
    let mut b = Bench::new(CONF);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    let mut alice = Phone::udp("alice", "a1", 6001);
    let ruri = format!("sip:1002@{REALM}");
    let to = format!("<{ruri}>");
    let anon = |r: String| {
        r.replace(
            &format!("<sip:alice@{REALM}>"),
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
        )
    };
    let r = anon(alice.request("INVITE", &ruri, &to, "c-anon", "a1", "", ""));
    assert!(r.contains("anonymous.invalid"));
    b.deliver(alice.peer, &r);
    let ch = b.expect_status(alice.addr(), 407);
    let creds = |ch: &Message, nc| {
        Creds {
            method: "INVITE".into(),
            uri: ruri.clone(),
            nc,
            ..md5("alice", "a1")
        }
        .line(ch)
    };
    let r = anon(alice.request("INVITE", &ruri, &to, "c-anon", "a2", &creds(&ch, 1), ""));
    b.deliver(alice.peer, &r);
    let ch2 = b.expect_status(alice.addr(), 407);
    assert!(stale(&ch2));
    let r = anon(alice.request("INVITE", &ruri, &to, "c-anon", "a3", &creds(&ch2, 1), ""));
    b.deliver(alice.peer, &r);
    b.expect_request(bob.addr(), "INVITE");
}

#[test]
fn a_request_without_a_from_user_is_challenged_once_more_too() {
    // From without a user part: the first nonce is for "", the answer's
    // username is alice: one more stale round, then the request goes on.
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    let ruri = format!("sip:1002@{REALM}");
    let to = format!("<{ruri}>");
    let no_user = |r: String| r.replace(&format!("<sip:alice@{REALM}>"), &format!("<sip:{REALM}>"));
    let r = no_user(alice.request("OPTIONS", &ruri, &to, "c-nouser", "o1", "", ""));
    b.deliver(alice.peer, &r);
    let ch = b.expect_status(alice.addr(), 407);
    assert!(!stale(&ch));
    let creds = |ch: &Message| {
        Creds {
            method: "OPTIONS".into(),
            uri: ruri.clone(),
            ..md5("alice", "a1")
        }
        .line(ch)
    };
    let r = no_user(alice.request("OPTIONS", &ruri, &to, "c-nouser", "o2", &creds(&ch), ""));
    b.deliver(alice.peer, &r);
    let ch2 = b.expect_status(alice.addr(), 407);
    assert!(stale(&ch2));
    let r = no_user(alice.request("OPTIONS", &ruri, &to, "c-nouser", "o3", &creds(&ch2), ""));
    b.deliver(alice.peer, &r);
    let got: Vec<u16> = b
        .take_to(alice.addr())
        .into_iter()
        .filter_map(|(_, m)| m.status())
        .collect();
    assert!(
        !got.is_empty() && got.iter().all(|s| ![401, 403, 407].contains(s)),
        "{got:?}"
    );
}

// ---- exactly the algorithms and qop offered --------------------------------------

#[test]
fn with_sha256_only_md5_and_no_qop_answers_are_challenged() {
    let sha_only = CONF.replace("[general]\n", "[general]\ndigest=sha-256\n");
    let mut b = Bench::new(&sha_only);
    let mut alice = Phone::udp("alice", "a1", 6001);
    for (alg, qop) in [
        (Some(Algorithm::Md5), true),
        (None, true),
        (Some(Algorithm::Md5Sess), true),
        (Some(Algorithm::Sha256Sess), true),
        (Some(Algorithm::Sha256), false),
    ] {
        let ch = challenge(&mut b, &mut alice);
        let offered: Vec<&str> = ch.headers(&HeaderName::WwwAuthenticate).collect();
        assert_eq!(offered.len(), 1);
        let auth = Creds {
            alg,
            qop,
            ..md5("alice", "a1")
        }
        .line(&ch);
        let r = answer(&mut b, &mut alice, &auth);
        assert_eq!(r.status(), Some(401), "{alg:?} qop {qop}");
        assert!(!stale(&r));
    }
    let ch = challenge(&mut b, &mut alice);
    let auth = Creds {
        alg: Some(Algorithm::Sha256),
        ..md5("alice", "a1")
    }
    .line(&ch);
    assert_eq!(answer(&mut b, &mut alice, &auth).status(), Some(200));
    // None of this counted as a failed password.
    assert_eq!(b.core.guard.tracked(), 0);
}

#[test]
fn the_offer_a_client_got_holds_across_a_reload() {
    // A nonce offering MD5 (before digest= changed) is answered with MD5
    // after the reload: the offer travels in the nonce.
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    let ch = challenge(&mut b, &mut alice);
    let mut fx = Effects::new();
    b.core.set_config(
        config(&CONF.replace("[general]\n", "[general]\ndigest=sha-256\n")),
        &mut fx,
    );
    b.absorb(fx);
    let r = answer(&mut b, &mut alice, &md5("alice", "a1").line(&ch));
    assert_eq!(r.status(), Some(200));
    // A new challenge offers only SHA-256, and MD5 is no longer accepted.
    let ch = challenge(&mut b, &mut alice);
    let r = answer(
        &mut b,
        &mut alice,
        &Creds {
            nc: 2,
            ..md5("alice", "a1")
        }
        .line(&ch),
    );
    assert_eq!(r.status(), Some(401));
}

/// The algorithms a challenge lists, in order.
fn offered(ch: &Message, name: &HeaderName) -> Vec<String> {
    ch.headers(name)
        .filter_map(crate::sip::auth::AuthParams::parse)
        .map(|p| p.get("algorithm").unwrap_or("MD5").to_string())
        .collect()
}

#[test]
fn by_default_md5_alone_is_offered_and_answered() {
    // With no digest key anywhere: clients that take the first challenge
    // and lack SHA-256 (baresip 1.0, SIPp, many desk phones) must find MD5.
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    let ch = challenge(&mut b, &mut alice);
    assert_eq!(offered(&ch, &HeaderName::WwwAuthenticate), vec!["MD5"]);
    // SHA-256 was not offered, so an answer with it gets a new challenge.
    let auth = Creds {
        alg: Some(Algorithm::Sha256),
        ..md5("alice", "a1")
    }
    .line(&ch);
    assert_eq!(answer(&mut b, &mut alice, &auth).status(), Some(401));
    let ch = challenge(&mut b, &mut alice);
    let r = answer(&mut b, &mut alice, &md5("alice", "a1").line(&ch));
    assert_eq!(r.status(), Some(200));
    // MD5 without the algorithm parameter (RFC 2617's default) works too.
    let ch = challenge(&mut b, &mut alice);
    let auth = Creds {
        alg: None,
        ..md5("alice", "a1")
    }
    .line(&ch);
    assert_eq!(answer(&mut b, &mut alice, &auth).status(), Some(200));
}

#[test]
fn a_clients_digest_key_is_its_offer_in_its_order() {
    let conf = CONF
        .replace("[general]\n", "[general]\ndigest=sha-256,md5\n")
        .replace("exten=1001\n", "exten=1001\ndigest=sha-256\n")
        .replace("exten=1003\n", "exten=1003\ndigest=md5,sha-256\n");
    let mut b = Bench::new(&conf);
    let www = HeaderName::WwwAuthenticate;
    // alice: SHA-256 alone; MD5 is refused, SHA-256 accepted.
    let mut alice = Phone::udp("alice", "a1", 6001);
    let ch = challenge(&mut b, &mut alice);
    assert_eq!(offered(&ch, &www), vec!["SHA-256"]);
    assert_eq!(
        answer(&mut b, &mut alice, &md5("alice", "a1").line(&ch)).status(),
        Some(401)
    );
    let ch = challenge(&mut b, &mut alice);
    let auth = Creds {
        alg: Some(Algorithm::Sha256),
        ..md5("alice", "a1")
    }
    .line(&ch);
    assert_eq!(answer(&mut b, &mut alice, &auth).status(), Some(200));
    // bob has no key: the general offer, and either algorithm of it works.
    let mut bob = Phone::udp("bob", "b2", 6002);
    let ch = challenge(&mut b, &mut bob);
    assert_eq!(offered(&ch, &www), vec!["SHA-256", "MD5"]);
    assert_eq!(
        answer(&mut b, &mut bob, &md5("bob", "b2").line(&ch)).status(),
        Some(200)
    );
    // carol: her own order.
    let mut carol = Phone::udp("carol", "c3", 6003);
    let ch = challenge(&mut b, &mut carol);
    assert_eq!(offered(&ch, &www), vec!["MD5", "SHA-256"]);
    // An INVITE's 407 is for the From user: alice's offer again.
    let to = format!("<sip:1002@{REALM}>");
    let r = alice.request(
        "INVITE",
        &format!("sip:1002@{REALM}"),
        &to,
        "c-d",
        "d1",
        "",
        "",
    );
    b.deliver(alice.peer, &r);
    let ch = b.expect_status(alice.addr(), 407);
    assert_eq!(
        offered(&ch, &HeaderName::ProxyAuthenticate),
        vec!["SHA-256"]
    );
}
