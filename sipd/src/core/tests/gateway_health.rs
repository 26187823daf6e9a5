//! Gateway health checks through the whole core (`core/gateways.rs`):
//! the OPTIONS sipd sends, which answers count, and calls skipping a
//! gateway that stopped answering.

use std::time::Duration;

use super::harness::{config, Bench, Phone};
use crate::core::gateways::State;
use crate::core::Effects;
use crate::sip::Message;
use crate::transport::{IfClosed, Transport};

const CONF: &str = "\
[general]
realm=pbx

[alice]
secret=a1
accountcode=HOME
exten=1001

[gw]
accountcode=gateways
host=127.0.0.1:7000
exten=99
qualify=1

[gw2]
accountcode=gateways
host=127.0.0.1:7001
exten=98
qualify=1
";

fn bench() -> (Bench, Phone, Phone, Phone) {
    let mut b = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    assert_eq!(alice.register(&mut b, 600).status(), Some(200));
    let gw = Phone::udp("gw", "", 7000);
    let gw2 = Phone::udp("gw2", "", 7001);
    (b, alice, gw, gw2)
}

/// The health-check OPTIONS sent to `to` since the last take.
fn checks(b: &mut Bench, to: &Phone) -> Vec<Message> {
    b.take_to(to.addr())
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.method().map(|x| x.as_str()) == Some("OPTIONS"))
        .collect()
}

/// Move on one second and let `answering` answer their check with `code`.
fn second(b: &mut Bench, answering: &[(&Phone, u16)], silent: &[&Phone]) {
    b.advance(Duration::from_secs(1));
    for (p, code) in answering {
        let got = checks(b, p);
        assert_eq!(got.len(), 1, "one check of {} a second", p.user);
        b.deliver(p.peer, &p.respond(&got[0], *code, "Whatever"));
        assert!(b.take_to(p.addr()).is_empty(), "nothing back to an answer");
    }
    for p in silent {
        assert_eq!(checks(b, p).len(), 1, "one check of {} a second", p.user);
    }
}

fn state(b: &Bench, name: &str) -> State {
    b.core.gateways().get(name).unwrap().state
}

/// alice calls an external number: which gateway gets the INVITE (and
/// its Request-URI); it answers 486, which ends the call.
fn first_gateway(b: &mut Bench, alice: &mut Phone, n: usize, gws: &[&Phone]) -> String {
    let call_id = format!("out-{n}");
    alice.invite(b, "84991234567", &call_id);
    let to_alice: Vec<String> = b
        .take_to(alice.addr())
        .iter()
        .map(|(_, m)| super::harness::first_line(m))
        .collect();
    for g in gws {
        let got: Vec<Message> = b
            .take_to(g.addr())
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.method().map(|x| x.as_str()) == Some("INVITE"))
            .collect();
        if let Some(inv) = got.first() {
            b.deliver(g.peer, &g.respond(inv, 486, "Busy Here"));
            b.take_to(alice.addr());
            b.take_to(g.addr());
            return g.user.clone() + &format!(" {}", inv.request_uri().unwrap());
        }
    }
    panic!("no gateway got the INVITE; alice got {to_alice:?}");
}

#[test]
fn the_check_is_an_options_to_the_host() {
    let (mut b, _alice, gw, _gw2) = bench();
    b.advance(Duration::from_secs(1));
    let got = b.take_to(gw.addr());
    let (out, opt) = got
        .iter()
        .find(|(_, m)| m.method().map(|x| x.as_str()) == Some("OPTIONS"))
        .expect("an OPTIONS to gw");
    assert_eq!(opt.request_uri(), Some("sip:127.0.0.1:7000"));
    assert_eq!(opt.cseq().seq, 1);
    assert_eq!(opt.max_forwards(), Some(70));
    let via = opt.top_via();
    assert!(via.branch().unwrap().starts_with("z9hG4bKsdg"), "{via:?}");
    assert_eq!(out.dest.transport, Transport::Udp);
    assert_eq!(out.if_closed, IfClosed::Connect);
    let raw = String::from_utf8_lossy(opt.raw()).into_owned();
    assert!(
        raw.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;branch="),
        "{raw}"
    );
    assert!(raw.contains("To: <sip:127.0.0.1:7000>"), "{raw}");
    assert_eq!(b.core.counters.gateway_checks_sent, 2);
}

#[test]
fn checks_make_no_transactions() {
    let mut b = Bench::new(CONF);
    b.advance(Duration::from_secs(10));
    assert_eq!(b.core.counters.gateway_checks_sent, 20);
    assert_eq!(b.core.transaction_count(), 0);
}

#[test]
fn answers_make_it_up_silence_down_and_calls_skip_it() {
    let (mut b, mut alice, gw, gw2) = bench();
    second(&mut b, &[(&gw, 200), (&gw2, 405)], &[]);
    assert_eq!((state(&b, "gw"), state(&b, "gw2")), (State::Up, State::Up));
    assert_eq!(b.core.counters.gateway_checks_answered, 2);
    assert!(b.core.gateways().get("gw").unwrap().rtt_ms.is_some());
    // gw goes silent: down by the fourth check after.
    for s in 1..=4 {
        second(&mut b, &[(&gw2, 200)], &[&gw]);
        let want = if s < 4 { State::Up } else { State::Down };
        assert_eq!(state(&b, "gw"), want, "second {s}");
    }
    assert_eq!(b.core.gateways().changes(), 3);
    assert!(b.core.gateways().down().contains("gw"));
    // Calls go to gw2 only, whatever the random start.
    for n in 0..8 {
        let first = first_gateway(&mut b, &mut alice, n, &[&gw, &gw2]);
        assert_eq!(first, "gw2 sip:9874991234567@127.0.0.1:7001", "call {n}");
    }
    // gw answers (404) once: up again, and both are used again.
    b.advance(Duration::from_secs(1));
    let got = checks(&mut b, &gw);
    checks(&mut b, &gw2);
    b.deliver(gw.peer, &gw.respond(&got[0], 404, "Not Found"));
    assert_eq!(state(&b, "gw"), State::Up);
    assert!(b.core.gateways().down().is_empty());
    let firsts: std::collections::BTreeSet<String> = (10..30)
        .map(|n| first_gateway(&mut b, &mut alice, n, &[&gw, &gw2]))
        .map(|f| f.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(firsts.len(), 2, "{firsts:?}");
}

#[test]
fn all_down_are_tried_anyway() {
    let (mut b, mut alice, gw, gw2) = bench();
    for _ in 0..4 {
        second(&mut b, &[], &[&gw, &gw2]);
    }
    assert_eq!(
        (state(&b, "gw"), state(&b, "gw2")),
        (State::Down, State::Down)
    );
    let first = first_gateway(&mut b, &mut alice, 0, &[&gw, &gw2]);
    assert!(first.starts_with("gw"), "{first}");
}

#[test]
fn a_503_answer_counts_as_a_failure() {
    let (mut b, _alice, gw, gw2) = bench();
    for s in 1..=3 {
        second(&mut b, &[(&gw, 503), (&gw2, 200)], &[]);
        let want = if s < 3 { State::Unknown } else { State::Down };
        assert_eq!(state(&b, "gw"), want, "503 number {s}");
    }
    assert_eq!(b.core.counters.gateway_checks_answered, 3, "gw2's only");
}

#[test]
fn an_answer_from_another_address_is_not_the_gateways() {
    let (mut b, _alice, gw, _gw2) = bench();
    let other = Phone::udp("gw", "", 7009);
    for _ in 0..4 {
        b.advance(Duration::from_secs(1));
        let got = checks(&mut b, &gw);
        assert_eq!(got.len(), 1);
        // Someone else answers with the check's branch: consumed, not
        // counted, nothing sent back or proxied.
        b.deliver(other.peer, &other.respond(&got[0], 200, "OK"));
        assert!(b.sent.iter().all(|o| o.dest.addr != other.addr()));
    }
    assert_eq!(state(&b, "gw"), State::Down);
    // The same over TCP from the gateway's address is not it either.
    b.advance(Duration::from_secs(1));
    let got = checks(&mut b, &gw);
    let tcp = Phone::tcp("gw", "", 7000, 77);
    b.deliver(tcp.peer, &tcp.respond(&got[0], 200, "OK"));
    assert_eq!(state(&b, "gw"), State::Down);
    // From the gateway itself: up.
    b.deliver(gw.peer, &gw.respond(&got[0], 200, "OK"));
    assert_eq!(state(&b, "gw"), State::Up);
}

#[test]
fn tcp_gateways_are_checked_over_tcp() {
    let conf = CONF.replace(
        "host=127.0.0.1:7001\n",
        "host=127.0.0.1:7001\ntransport=tcp\n",
    );
    let mut b = Bench::new(&conf);
    b.advance(Duration::from_secs(1));
    let got = b.take_to("127.0.0.1:7001".parse().unwrap());
    let (out, opt) = got
        .iter()
        .find(|(_, m)| m.method().is_some())
        .expect("an OPTIONS to gw2");
    assert_eq!(out.dest.transport, Transport::Tcp);
    assert_eq!(out.dest.flow, None, "a connection is opened if need be");
    assert_eq!(opt.request_uri(), Some("sip:127.0.0.1:7001;transport=tcp"));
    let raw = String::from_utf8_lossy(opt.raw()).into_owned();
    assert!(raw.contains("Via: SIP/2.0/TCP "), "{raw}");
    // The answer comes back on the flow sipd opened.
    let gw2 = Phone::tcp("gw2", "", 7001, 5);
    b.deliver(gw2.peer, &gw2.respond(opt, 200, "OK"));
    assert_eq!(state(&b, "gw2"), State::Up);
}

#[test]
fn a_reload_takes_effect_at_the_next_tick() {
    let (mut b, _alice, gw, gw2) = bench();
    for _ in 0..4 {
        second(&mut b, &[(&gw2, 200)], &[&gw]);
    }
    assert_eq!(state(&b, "gw"), State::Down);
    // gw moves to another port: unknown again, checked there.
    let moved = CONF.replace("127.0.0.1:7000", "127.0.0.1:7002");
    let mut fx = Effects::new();
    b.core.set_config(config(&moved), &mut fx);
    b.absorb(fx);
    b.tick();
    assert_eq!(state(&b, "gw"), State::Unknown);
    assert!(b.core.gateways().down().is_empty());
    b.advance(Duration::from_secs(1));
    let new = Phone::udp("gw", "", 7002);
    assert_eq!(checks(&mut b, &new).len(), 1);
    assert!(checks(&mut b, &gw).is_empty());
    // gw removed: gone from the table, no more checks.
    let without: String = CONF.split("[gw]").next().unwrap().to_string()
        + "[gw2]"
        + CONF.split("[gw2]").nth(1).unwrap();
    let mut fx = Effects::new();
    b.core.set_config(config(&without), &mut fx);
    b.absorb(fx);
    b.advance(Duration::from_secs(3));
    assert!(b.core.gateways().get("gw").is_none());
    assert!(checks(&mut b, &new).is_empty());
    assert!(!checks(&mut b, &gw2).is_empty());
}
