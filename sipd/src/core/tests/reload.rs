//! Reload (spec §6): clients that stay keep their registrations and
//! phone-set forwarding; what belonged to a removed client goes from the
//! store as well as from memory, so that a restart does not bring it back.

use super::harness::{config, Bench, Phone, CONF};
use crate::core::Effects;
use crate::store::Write;
use proto::Forwarding;

fn reload(b: &mut Bench, text: &str) -> Vec<Write> {
    let mut fx = Effects::new();
    b.core.set_config(config(text), &mut fx);
    let writes = fx.writes.clone();
    b.absorb(fx);
    writes
}

#[test]
fn a_removed_client_loses_its_stored_forwarding() {
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    assert_eq!(alice.register(&mut b, 600).status(), Some(200));
    alice.invite(&mut b, "*721002", "c-fwd");
    b.commit(Ok(()));
    assert!(b.core.forwards().get("alice").is_some());
    let without = CONF.replace("[alice]\nsecret=a1\naccountcode=HOME\nexten=1001\n", "");
    assert_ne!(without, CONF);
    let writes = reload(&mut b, &without);
    assert!(writes.contains(&Write::DeleteBinding("alice".into())));
    assert!(writes.contains(&Write::DeleteForward("alice".into())));
    // Back again: sip.conf's forwarding applies, as after a restart.
    reload(&mut b, CONF);
    let alice_conf = b.core.config().client("alice").unwrap().clone();
    assert_eq!(b.core.forwards().effective(&alice_conf).0, Forwarding::None);
}

#[test]
fn a_client_that_stays_keeps_its_forwarding() {
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    alice.invite(&mut b, "*721002", "c-fwd-stays");
    b.commit(Ok(()));
    let writes = reload(&mut b, &CONF.replace("exten=1003", "exten=1004"));
    assert!(writes.is_empty(), "nothing to delete: {writes:?}");
    let alice_conf = b.core.config().client("alice").unwrap().clone();
    assert_eq!(
        b.core.forwards().effective(&alice_conf).0,
        Forwarding::always("1002")
    );
}
