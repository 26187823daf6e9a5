//! `permit` is checked before any credential is evaluated: outside it a
//! client is an unknown user, so the answer does not depend on the
//! password or on the state of the nonce (no password oracle).

use super::answers::{answer, challenge, conf, md5, shape, stale};
use super::harness::{Bench, Phone};

#[test]
fn outside_permit_the_password_makes_no_difference() {
    let mut b = Bench::new(&conf());
    let mut answers = Vec::new();
    for (user, secret) in [("fenced", "f1"), ("fenced", "nope"), ("nobody", "f1")] {
        let mut p = Phone::udp(user, secret, 6100);
        let ch = challenge(&mut b, &mut p);
        let auth = md5(user, secret).line(&ch);
        // Twice the same credentials (a resend): no stale challenge the
        // second time for the right password, nothing different at all.
        for _ in 0..2 {
            let r = answer(&mut b, &mut p, &auth);
            answers.push(shape(&r));
        }
    }
    assert_eq!(answers[0].0, Some(403));
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:#?}");
    assert!(b.core.registrar().get("fenced").is_none());
    // Nothing was recorded as used: the nonce state cannot differ either.
    assert_eq!(b.core.auth.tracked(), 0);
}

#[test]
fn outside_permit_an_expired_nonce_is_403_whatever_the_password() {
    let mut b = Bench::new(&conf());
    let mut p = Phone::udp("fenced", "f1", 6101);
    let ch = challenge(&mut b, &mut p);
    b.advance(crate::auth::DEFAULT_NONCE_LIFETIME);
    for secret in ["f1", "nope"] {
        let r = answer(&mut b, &mut p, &md5("fenced", secret).line(&ch));
        assert_eq!(r.status(), Some(403), "{secret}");
    }
    // Inside permit the right password with an expired nonce is stale.
    let mut alice = Phone::udp("alice", "a1", 6102);
    let ch = challenge(&mut b, &mut alice);
    b.advance(crate::auth::DEFAULT_NONCE_LIFETIME);
    let r = answer(&mut b, &mut alice, &md5("alice", "a1").line(&ch));
    assert_eq!(r.status(), Some(401));
    assert!(stale(&r));
}

#[test]
fn inside_permit_the_fenced_client_registers() {
    let mut b = Bench::new(&conf());
    let mut p = Phone::at(
        "fenced",
        "f1",
        crate::transport::Transport::Udp,
        ([10, 1, 2, 3], 5060).into(),
        None,
    );
    assert_eq!(p.register(&mut b, 600).status(), Some(200));
}
