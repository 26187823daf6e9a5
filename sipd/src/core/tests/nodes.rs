//! Two nodes on one store, sans IO: node B rings a device whose flow node
//! A holds by sending the INVITE to A with a Route naming the client; A
//! relays it over the device's flow only when it comes from a known node,
//! tracks the dialog, and writes no CDR (B accounts the call).

use std::net::SocketAddr;
use std::time::Duration;

use super::harness::{sipd_addr, Bench, Phone, CONF};
use crate::sip::{HeaderName, Message};
use crate::store::postgres::{Event, NodeInfo};
use crate::store::{BindingRow, Write};
use crate::transport::{Peer, Transport};

/// Node B's SIP address (node A is the bench's own address).
fn b_addr() -> SocketAddr {
    "127.0.0.9:5060".parse().unwrap()
}

fn nodes(name: &str, addr: SocketAddr, silent: u64) -> Event {
    Event::Nodes(vec![NodeInfo {
        name: name.into(),
        addr: Some(addr),
        silent_for: Duration::from_secs(silent),
    }])
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

#[test]
fn a_call_through_another_node_reaches_the_device_over_its_own_flow() {
    // Node A: alice registered here; node B is alive.
    let mut a = Bench::new(CONF);
    let mut alice = Phone::udp("alice", "a1", 6001);
    assert_eq!(alice.register(&mut a, 600).status(), Some(200));
    let row: BindingRow = a.core.registrar().get("alice").unwrap().to_row();
    let mut fx = crate::core::Effects::new();
    a.core
        .on_store_event(nodes("b", b_addr(), 0), a.now, &mut fx);
    a.absorb(fx);

    // Node B (at its own address): alice's binding is held by node A.
    let mut b = Bench::with(CONF, crate::core::CoreOptions::default(), vec![b_addr()]);
    let mut remote = row.clone();
    remote.node = "a".into();
    remote.node_addr = Some(sipd_addr());
    let mut fx = crate::core::Effects::new();
    b.core
        .on_store_event(nodes("a", sipd_addr(), 1), b.now, &mut fx);
    b.core.on_store_event(
        Event::Bindings {
            name: "alice".into(),
            rows: vec![remote],
        },
        b.now,
        &mut fx,
    );
    b.absorb(fx);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    bob.invite(&mut b, "1001", "c-nodes");
    b.expect_status(bob.addr(), 100);
    // B sends the INVITE to node A, with the Route naming alice.
    let (out, inv) = b.expect_request(sipd_addr(), "INVITE");
    assert_eq!(out.dest.transport, Transport::Udp);
    let route = inv.header(&HeaderName::Route).unwrap_or("");
    assert!(route.contains("sipd-aor=alice"), "{route}");
    let contact = alice.contact();
    assert_eq!(inv.request_uri(), Some(contact.trim_matches(['<', '>'])));

    // The same INVITE from an address that is not a node is no relay:
    // it is challenged like any request from an unknown party.
    let stranger = Peer::to(Transport::Udp, "127.0.0.66:5060".parse().unwrap());
    a.deliver(stranger, &text(&out.data));
    assert!(a.take_to(alice.addr()).is_empty());
    let challenged = a.take_to(stranger.addr);
    assert!(
        challenged
            .iter()
            .any(|(_, m)| matches!(m.status(), Some(401 | 403 | 407))),
        "{:?}",
        challenged
            .iter()
            .map(|(_, m)| m.status())
            .collect::<Vec<_>>()
    );

    // From node B it goes to alice's flow, record-routed by A.
    let from_b = Peer {
        local: Some(sipd_addr()),
        ..Peer::to(Transport::Udp, b_addr())
    };
    a.deliver(from_b, &text(&out.data));
    let (_, got) = a.expect_request(alice.addr(), "INVITE");
    assert!(got.header(&HeaderName::Route).is_none(), "A pops its Route");
    let rr: Vec<&str> = got.headers(&HeaderName::RecordRoute).collect();
    assert_eq!(rr.len(), 2, "A's and B's Record-Route: {rr:?}");
    assert_eq!(a.core.calls().len(), 1, "A tracks the dialog");
    // alice answers; the 200 goes back to B.
    a.deliver(alice.peer, &alice.respond(&got, 200, "OK"));
    let ok = a.expect_status(b_addr(), 200);
    // ... and B passes it to bob.
    let from_a = Peer {
        local: Some(b_addr()),
        ..Peer::to(Transport::Udp, sipd_addr())
    };
    b.deliver(from_a, &text(ok.raw()));
    b.expect_status(bob.addr(), 200);
    // alice hangs up through A (its route set: A, then B).
    let routes: Vec<String> = rr.iter().map(|r| r.to_string()).collect();
    let target = got
        .header(&HeaderName::Contact)
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    let from = format!("{};tag={}", got.header(&HeaderName::To).unwrap(), alice.tag);
    let to = got.header(&HeaderName::From).unwrap().to_string();
    let call_id = got.call_id().to_string();
    let bye = alice.dialog_request("BYE", &target, &routes, &from, &to, &call_id, "bye1", None);
    a.deliver(alice.peer, &bye);
    let (bye_out, _) = a.expect_request(b_addr(), "BYE");
    a.deliver(
        from_b,
        &format!(
            "SIP/2.0 200 OK\r\n{}",
            text(&bye_out.data)
                .split_once("\r\n")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default()
        ),
    );
    a.tick();
    assert_eq!(a.core.calls().len(), 0);
    assert!(
        !a.writes.iter().any(|w| matches!(w, Write::AddCdr(_))),
        "the node that relays writes no CDR: {:?}",
        a.writes
    );
}

#[test]
fn a_silent_node_s_devices_are_not_rung() {
    let mut b = Bench::new(CONF);
    let row = BindingRow {
        name: "alice".into(),
        contact: "sip:alice@127.0.0.1:6001".into(),
        transport: "udp".into(),
        source: "127.0.0.1:6001".parse().unwrap(),
        local: None,
        expires_at: b.now.unix() + 600,
        user_agent: String::new(),
        call_id: "r".into(),
        cseq: 1,
        instance: String::new(),
        reg_id: None,
        outbound: false,
        node: "a".into(),
        node_addr: Some("127.0.0.8:5060".parse().unwrap()),
    };
    let mut fx = crate::core::Effects::new();
    b.core.on_store_event(
        Event::Resync {
            bindings: vec![row],
            forwards: vec![],
        },
        b.now,
        &mut fx,
    );
    b.core.on_store_event(
        nodes("a", "127.0.0.8:5060".parse().unwrap(), 11),
        b.now,
        &mut fx,
    );
    b.absorb(fx);
    let mut bob = Phone::udp("bob", "b2", 6002);
    assert_eq!(bob.register(&mut b, 600).status(), Some(200));
    bob.invite(&mut b, "1001", "c-silent");
    assert!(b.take_to("127.0.0.8:5060".parse().unwrap()).is_empty());
    let fin: Vec<Message> = b.take_to(bob.addr()).into_iter().map(|(_, m)| m).collect();
    assert!(
        fin.iter().any(|m| m.status().is_some_and(|s| s >= 400)),
        "unavailable: {:?}",
        fin.iter().map(|m| m.status()).collect::<Vec<_>>()
    );
}
