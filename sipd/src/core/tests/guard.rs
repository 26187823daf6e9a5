//! The brute-force guard: an address with too many failed
//! authentications is refused for a while, and the table stays bounded.

use std::time::Instant;

use crate::core::identify::Guard;

#[test]
fn guard_blocks_after_the_limit_and_forgets() {
    let mut g = Guard::new();
    let ip: std::net::IpAddr = [10, 0, 0, 1].into();
    let other: std::net::IpAddr = [10, 0, 0, 2].into();
    let t0 = Instant::now();
    for _ in 0..Guard::LIMIT - 1 {
        g.failed(ip, t0);
    }
    assert!(!g.blocked(ip, t0));
    g.failed(ip, t0);
    assert!(g.blocked(ip, t0));
    assert!(!g.blocked(other, t0));
    let later = t0 + Guard::WINDOW;
    assert!(!g.blocked(ip, later));
    g.sweep(later);
    assert_eq!(g.tracked(), 0);
    // Bounded.
    for i in 0..(Guard::MAX_TRACKED as u32 + 10) {
        g.failed(std::net::IpAddr::from(i.to_be_bytes()), t0);
    }
    assert_eq!(g.tracked(), Guard::MAX_TRACKED);
}
