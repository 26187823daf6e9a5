use std::time::{Duration, Instant};

use super::*;
use crate::config::{Config, Options};
use crate::sip::{Limits, Message};
use crate::transport::{Peer, Transport};

fn general() -> General {
    General::defaults(&Options {
        country: "7".into(),
        city: "495".into(),
        default_realm: "pbx".into(),
        file_name: "sip.conf".into(),
    })
}

fn peer() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:40000".parse().unwrap(),
        flow: None,
        local: None,
    }
}

fn register(extra: &str) -> Message {
    let text = format!(
        "REGISTER sip:pbx SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\n\
         From: <sip:alice@pbx>;tag=1\r\n\
         To: <sip:alice@pbx>\r\n\
         Call-ID: reg-1\r\n\
         CSeq: 5 REGISTER\r\n\
         User-Agent: Phone 1.0\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes(), &Limits::default()).unwrap()
}

fn peer_at(port: u16) -> Peer {
    Peer {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        ..peer()
    }
}

fn run_from(extra: &str, from: Peer, current: &[Binding]) -> Outcome {
    process(
        &general(),
        3,
        &register(extra),
        "alice",
        from,
        current,
        Instant::now(),
        1_000,
    )
}

fn run(extra: &str, current: Option<&Binding>) -> Outcome {
    let current: Vec<Binding> = current.into_iter().cloned().collect();
    run_from(extra, peer(), &current)
}

/// A REGISTER of a device of its own (a Call-ID of its own).
fn run_new(extra: &str, from: Peer, current: &[Binding]) -> Outcome {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let msg = register(extra);
    let text =
        String::from_utf8_lossy(msg.raw()).replace("Call-ID: reg-1", &format!("Call-ID: dev-{n}"));
    let msg = Message::parse(text.as_bytes(), &Limits::default()).unwrap();
    process(
        &general(),
        3,
        &msg,
        "alice",
        from,
        current,
        Instant::now(),
        1_000,
    )
}

/// The client's bindings after a REGISTER from `from`.
fn set_from(extra: &str, from: Peer, current: &[Binding]) -> Vec<Binding> {
    match run_new(extra, from, current) {
        Outcome::Update(u) => u.bindings,
        other => panic!("{other:?}"),
    }
}

fn bound(extra: &str) -> Binding {
    let mut set = match run_from(extra, peer(), &[]) {
        Outcome::Update(u) => u.bindings,
        other => panic!("{other:?}"),
    };
    assert_eq!(set.len(), 1, "{set:?}");
    set.remove(0)
}

fn unbinds(o: Outcome) -> bool {
    matches!(o, Outcome::Update(u) if u.bindings.is_empty())
}

#[test]
fn binding_records_source_contact_and_user_agent() {
    let b = bound("Contact: <sip:alice@10.0.0.5:5060;transport=udp>\r\nExpires: 120\r\n");
    assert_eq!(b.contact, "sip:alice@10.0.0.5:5060;transport=udp");
    assert_eq!(b.source, peer());
    assert_eq!(b.expires_unix, 1_120);
    assert_eq!(b.user_agent, "Phone 1.0");
    assert_eq!((b.call_id.as_str(), b.cseq), ("reg-1", 5));
}

#[test]
fn expires_from_contact_param_header_or_default_and_capped() {
    assert_eq!(
        bound("Contact: <sip:a@h>;expires=90\r\nExpires: 500\r\n").expires_unix,
        1_090
    );
    assert_eq!(
        bound("Contact: <sip:a@h>\r\nExpires: 500\r\n").expires_unix,
        1_500
    );
    assert_eq!(bound("Contact: <sip:a@h>\r\n").expires_unix, 1_000 + 3600);
    assert_eq!(
        bound("Contact: <sip:a@h>\r\nExpires: 99999\r\n").expires_unix,
        1_000 + 3600
    );
}

#[test]
fn too_brief_and_removal() {
    assert_eq!(
        run("Contact: <sip:a@h>\r\nExpires: 59\r\n", None),
        Outcome::TooBrief(60)
    );
    let mut b = bound("Contact: <sip:a@h>\r\n");
    b.call_id = "an earlier one".into();
    assert!(unbinds(run(
        "Contact: <sip:a@h>;expires=0\r\nExpires: 60\r\n",
        Some(&b)
    )));
    assert!(unbinds(run(
        "Contact: <sip:a@h>\r\nExpires: 0\r\n",
        Some(&b)
    )));
    assert!(unbinds(run("Contact: *\r\nExpires: 0\r\n", Some(&b))));
    assert_eq!(
        run("Contact: *\r\nExpires: 60\r\n", None),
        Outcome::Bad("Contact * Needs Expires 0")
    );
    assert_eq!(
        run("Contact: *\r\n", None),
        Outcome::Bad("Contact * Needs Expires 0")
    );
    assert_eq!(
        run("Contact: *, <sip:a@h>\r\nExpires: 0\r\n", None),
        Outcome::Bad("Contact * Needs Expires 0")
    );
    assert_eq!(
        run("Contact: <sip:a@h>;expires=soon\r\n", None),
        Outcome::Bad("Bad Contact Expires")
    );
}

#[test]
fn query_without_contact_and_every_contact_of_one_register_binds() {
    assert_eq!(run("", None), Outcome::Query);
    let set = set_from(
        "Contact: <sip:first@h1>, <sip:second@h2>\r\nExpires: 60\r\n",
        peer(),
        &[],
    );
    let contacts: Vec<&str> = set.iter().map(|b| b.contact.as_str()).collect();
    assert_eq!(contacts, ["sip:first@h1", "sip:second@h2"]);
}

#[test]
fn older_cseq_on_same_call_id_is_refused() {
    let b = bound("Contact: <sip:a@h>\r\n");
    let mut later = b.clone();
    later.cseq += 1;
    assert_eq!(
        run("Contact: <sip:a@h>\r\n", Some(&later)),
        Outcome::OutOfOrder
    );
    // The same CSeq from another address is no retransmission.
    let mut elsewhere = b.clone();
    elsewhere.source.addr = "127.0.0.1:40001".parse().unwrap();
    assert_eq!(
        run("Contact: <sip:a@h>\r\n", Some(&elsewhere)),
        Outcome::OutOfOrder
    );
    // From the binding's own source it is the accepted request again.
    assert_eq!(run("Contact: <sip:a@h>\r\n", Some(&b)), Outcome::Query);
    let mut newer = b.clone();
    newer.call_id = "other".into();
    assert!(matches!(
        run("Contact: <sip:a@h>\r\n", Some(&newer)),
        Outcome::Update(_)
    ));
}

fn config(text: &str) -> Config {
    Config::parse(
        text,
        &Options {
            country: "7".into(),
            city: "495".into(),
            default_realm: "pbx".into(),
            file_name: "sip.conf".into(),
        },
    )
    .unwrap()
}

#[test]
fn sweep_retain_restore() {
    let now = Instant::now();
    let mut r = Registrar::new();
    let mut b = bound("Contact: <sip:a@h>\r\n");
    b.expires_at = now + Duration::from_secs(5);
    r.set("alice", vec![b.clone()], 0, now);
    let mut gone = b.clone();
    gone.name = "bob".into();
    gone.expires_at = now;
    r.set("bob", vec![gone], 0, now);
    assert_eq!(r.sweep(now), vec!["bob".to_string()]);
    assert_eq!(r.len(), 1);
    // alice without a secret any more (host only) cannot stay registered.
    assert_eq!(
        r.retain_clients(&config("[alice]\nhost=10.0.0.1\n")),
        vec!["alice".to_string()]
    );
    assert!(r.is_empty());
    let rows = vec![
        b.to_row(),
        {
            let mut x = b.to_row();
            x.name = "ghost".into();
            x
        },
        {
            let mut x = b.to_row();
            x.name = "old".into();
            x.expires_at = 10;
            x
        },
    ];
    let conf = config("[alice]\nsecret=a\n[old]\nsecret=o\n");
    assert_eq!(r.restore(&rows, &conf, now, 1_000), 1);
    let a = r.get("alice").unwrap();
    assert_eq!(a.remaining(now), 3600);
    assert_eq!(a.source, peer());
    assert_eq!(
        r.by_contact("sip:a@h", None).map(|b| b.name.as_str()),
        Some("alice")
    );
}

#[test]
fn refreshes_are_stored_only_when_the_stored_expiry_lags() {
    let first = bound("Contact: <sip:a@h>\r\nExpires: 600\r\n");
    assert!(first.worth_storing(None, 600));
    let mut again = first.clone();
    again.expires_unix += 100;
    assert!(
        !again.worth_storing(Some(&first), 600),
        "a refresh 100 s later"
    );
    again.expires_unix = first.stored_expires + 151;
    assert!(
        again.worth_storing(Some(&first), 600),
        "more than a quarter of 600 s behind"
    );
    let mut moved = first.clone();
    moved.source.addr = "127.0.0.1:40001".parse().unwrap();
    assert!(moved.worth_storing(Some(&first), 600), "new source address");
    let mut other = first.clone();
    other.contact = "sip:a@elsewhere".into();
    assert!(other.worth_storing(Some(&first), 600), "new contact");
}

#[test]
fn a_second_device_adds_a_binding_and_each_refresh_replaces_its_own() {
    let desk = set_from("Contact: <sip:alice@10.0.0.5:5060>\r\n", peer_at(1), &[]);
    let both = set_from("Contact: <sip:alice@10.0.0.6:5062>\r\n", peer_at(2), &desk);
    assert_eq!(both.len(), 2);
    // The same Contact from a new port (NAT rebinding): replaced.
    let moved = set_from("Contact: <sip:alice@10.0.0.5:5060>\r\n", peer_at(3), &both);
    assert_eq!(moved.len(), 2);
    assert_eq!(moved[0].source, peer_at(3));
    // A new Contact from the same transport address: the same device.
    let renamed = set_from(
        "Contact: <sip:alice-2@10.0.0.6:5062>\r\n",
        peer_at(2),
        &moved,
    );
    assert_eq!(renamed.len(), 2);
    assert_eq!(renamed[1].contact, "sip:alice-2@10.0.0.6:5062");
    // Over TCP from the same address and port is another place.
    let tcp = Peer {
        transport: Transport::Tcp,
        ..peer_at(2)
    };
    assert_eq!(
        set_from("Contact: <sip:alice-3@h>\r\n", tcp, &renamed).len(),
        3
    );
}

#[test]
fn the_same_instance_from_a_new_port_and_contact_replaces() {
    let inst = ";+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\"";
    let one = set_from(
        &format!("Contact: <sip:a@10.0.0.5:1111>{inst}\r\n"),
        peer_at(1),
        &[],
    );
    assert_eq!(
        one[0].instance,
        "<urn:uuid:00000000-0000-0000-0000-000000000001>"
    );
    let again = set_from(
        &format!("Contact: <sip:a@10.0.0.5:2222>{inst}\r\n"),
        peer_at(9),
        &one,
    );
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].contact, "sip:a@10.0.0.5:2222");
    // Another instance from the same address is another device.
    let other = ";+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000002>\"";
    let two = set_from(
        &format!("Contact: <sip:a@10.0.0.5:3333>{other}\r\n"),
        peer_at(9),
        &again,
    );
    assert_eq!(two.len(), 2);
}

#[test]
fn over_max_contacts_the_oldest_is_dropped_and_said_so() {
    let mut set = Vec::new();
    for port in 1..=3u16 {
        set = set_from(
            &format!("Contact: <sip:a@h{port}>\r\n"),
            peer_at(port),
            &set,
        );
    }
    match run_new("Contact: <sip:a@h4>\r\n", peer_at(4), &set) {
        Outcome::Update(u) => {
            let left: Vec<&str> = u.bindings.iter().map(|b| b.contact.as_str()).collect();
            assert_eq!(left, ["sip:a@h2", "sip:a@h3", "sip:a@h4"]);
            assert_eq!(u.dropped.len(), 1);
            assert_eq!(u.dropped[0].contact, "sip:a@h1");
            assert_eq!(u.dropped[0].contact_value(0), "<sip:a@h1>;expires=0");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unregister_removes_only_the_binding_it_names() {
    let inst = ";+sip.instance=\"<urn:uuid:1>\"";
    let a = set_from(&format!("Contact: <sip:a@h1>{inst}\r\n"), peer_at(1), &[]);
    let both = set_from("Contact: <sip:a@h2>\r\n", peer_at(2), &a);
    // From the second device's address, naming neither: nothing removed.
    match run_new("Contact: <sip:a@h9>;expires=0\r\n", peer_at(2), &both) {
        Outcome::Update(u) => assert_eq!((u.bindings.len(), u.removed.len()), (2, 0)),
        other => panic!("{other:?}"),
    }
    // By Contact.
    let left = set_from("Contact: <sip:a@h2>;expires=0\r\n", peer_at(2), &both);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].contact, "sip:a@h1");
    // By instance, with another Contact URI.
    let left = set_from(
        &format!("Contact: <sip:a@h7>{inst};expires=0\r\n"),
        peer_at(5),
        &both,
    );
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].contact, "sip:a@h2");
    // `*` removes all.
    match run_new("Contact: *\r\nExpires: 0\r\n", peer_at(7), &both) {
        Outcome::Update(u) => assert_eq!((u.bindings.len(), u.removed.len()), (0, 2)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn outbound_needs_supported_instance_and_reg_id() {
    let contact = "Contact: <sip:a@h;transport=tcp>;reg-id=1;+sip.instance=\"<urn:uuid:1>\"\r\n";
    match run_new(
        &format!("{contact}Supported: path, outbound\r\n"),
        peer(),
        &[],
    ) {
        Outcome::Update(u) => {
            assert!(u.outbound);
            assert!(u.bindings[0].outbound);
            assert_eq!(u.bindings[0].reg_id, Some(1));
            assert_eq!(
                u.bindings[0].contact_value(60),
                "<sip:a@h;transport=tcp>;expires=60;+sip.instance=\"<urn:uuid:1>\";reg-id=1"
            );
        }
        other => panic!("{other:?}"),
    }
    // Without Supported: outbound, an ordinary binding.
    match run_new(contact, peer(), &[]) {
        Outcome::Update(u) => {
            assert!(!u.outbound);
            assert!(!u.bindings[0].outbound);
            assert_eq!(u.bindings[0].reg_id, None);
        }
        other => panic!("{other:?}"),
    }
    // Without an instance: no outbound either.
    match run_new(
        "Contact: <sip:a@h>;reg-id=1\r\nSupported: outbound\r\n",
        peer(),
        &[],
    ) {
        Outcome::Update(u) => assert!(!u.outbound),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        run_new("Contact: <sip:a@h>;reg-id=x\r\n", peer(), &[]),
        Outcome::Bad("Bad reg-id")
    );
}

#[test]
fn keepalive_misses_make_a_binding_unreachable_and_an_answer_brings_it_back() {
    let now = Instant::now();
    let mut r = Registrar::new();
    let b = bound("Contact: <sip:a@h>\r\n");
    r.set("alice", vec![b], 10, now);
    let q = |_: &str| 10u32;
    let mut n = 0u32;
    let mut tok = || {
        n += 1;
        n
    };
    let mut t = now;
    let mut sent = Vec::new();
    for _ in 0..40 {
        sent.extend(r.due_pings(t, 100, &q, &mut tok));
        t += Duration::from_secs(1);
    }
    // First within the interval, then every 10 s: 4 in 40 s.
    assert_eq!(sent.len(), 4, "{sent:?}");
    let b = &r.of("alice")[0];
    assert_eq!(b.keepalive.reach, Reach::Unreachable);
    assert!(
        r.locate("alice").is_none(),
        "an unreachable device is not rung"
    );
    let last = sent.last().unwrap();
    // An answer from elsewhere, or with another token, does not count.
    let from = peer().addr;
    assert!(!r.on_pong(last.id, last.token + 1, from, t));
    assert!(!r.on_pong(last.id, last.token, "127.0.0.9:1".parse().unwrap(), t));
    assert!(r.on_pong(last.id, last.token, from, t));
    let b = &r.of("alice")[0];
    assert_eq!(b.keepalive.reach, Reach::Reachable);
    assert_eq!(b.keepalive.misses, 0);
    assert!(b.keepalive.rtt_ms.is_some());
    assert!(r.locate("alice").is_some());
}

#[test]
fn keepalive_work_per_call_is_bounded_and_spread() {
    let now = Instant::now();
    let mut r = Registrar::new();
    for i in 0..1000u16 {
        let mut b = bound("Contact: <sip:a@h>\r\n");
        b.name = format!("u{i}");
        b.source = peer_at(10_000 + i);
        r.set(&b.name.clone(), vec![b], 25, now);
    }
    let q = |_: &str| 25u32;
    let mut tok = || 7u32;
    // All are due within 25 s, but no call sends more than its budget.
    let burst = r.due_pings(now + Duration::from_secs(25), 50, &q, &mut tok);
    assert_eq!(burst.len(), 50);
    // Spread: in the first second about 1/25 of them are due.
    let mut r2 = Registrar::new();
    for i in 0..1000u16 {
        let mut b = bound("Contact: <sip:a@h>\r\n");
        b.name = format!("u{i}");
        r2.set(&b.name.clone(), vec![b], 25, now);
    }
    let first = r2.due_pings(now + Duration::from_secs(1), 10_000, &q, &mut tok);
    assert!((20..=80).contains(&first.len()), "{}", first.len());
    // TCP bindings are not pinged (their flows keep themselves alive).
    let mut r3 = Registrar::new();
    let mut b = bound("Contact: <sip:a@h>\r\n");
    b.source.transport = Transport::Tcp;
    r3.set("alice", vec![b], 1, now);
    assert!(r3
        .due_pings(now + Duration::from_secs(5), 10, &q, &mut tok)
        .is_empty());
}

#[test]
fn restore_keeps_every_device_of_a_client() {
    let now = Instant::now();
    let one = set_from("Contact: <sip:a@h1>\r\n", peer_at(1), &[]);
    let both = set_from("Contact: <sip:a@h2>\r\n", peer_at(2), &one);
    let rows: Vec<_> = both.iter().map(Binding::to_row).collect();
    let mut r = Registrar::new();
    let conf = config("[alice]\nsecret=a\n");
    assert_eq!(r.restore(&rows, &conf, now, 1_000), 2);
    assert_eq!(r.of("alice").len(), 2);
    assert_eq!(r.len(), 2);
    assert_eq!(r.clients(), 1);
}

/// A row of `name`'s device `contact` as node `node` stored it (`""`: this
/// node).
fn node_row(name: &str, contact: &str, node: &str, port: u16) -> BindingRow {
    BindingRow {
        name: name.into(),
        contact: contact.into(),
        transport: "udp".into(),
        source: format!("127.0.0.1:{port}").parse().unwrap(),
        local: None,
        expires_at: 10_000,
        user_agent: String::new(),
        call_id: format!("c-{contact}"),
        cseq: 1,
        instance: String::new(),
        reg_id: None,
        outbound: false,
        node: node.into(),
        node_addr: (!node.is_empty()).then(|| "127.0.0.2:5060".parse().unwrap()),
    }
}

const TWO: &str = "[general]\nmax_contacts=3\n[alice]\nsecret=x\n";

#[test]
fn a_device_another_node_holds_is_rung_through_that_node_with_a_route() {
    let cfg = config(TWO);
    let now = Instant::now();
    let mut r = Registrar::new();
    let rows = [node_row("alice", "sip:alice@127.0.0.1:4000", "b", 4000)];
    assert!(r
        .sync_remote("alice", &rows, &cfg, &|_| false, now, 1_000)
        .is_empty());
    let b = r.get("alice").unwrap().clone();
    assert_eq!(b.dest().addr, "127.0.0.2:5060".parse().unwrap());
    assert_eq!(b.dest().transport, Transport::Udp);
    // Its own source stays what the device registered from.
    assert_eq!(b.source.addr, "127.0.0.1:4000".parse().unwrap());
    assert_eq!(
        b.node_route().unwrap(),
        "<sip:127.0.0.2:5060;lr;sipd-aor=alice>"
    );
    assert_eq!(r.locate("alice").unwrap().dest.addr, b.dest().addr);
    // Not indexed as a source of ours, never pinged.
    assert!(r.by_source("127.0.0.1:4000".parse().unwrap()).is_none());
    assert!(!r.has_ip("127.0.0.1".parse().unwrap()));
    let due = r.due_pings(now + Duration::from_secs(3600), 10, &|_| 30, &mut || 1);
    assert!(due.is_empty(), "{due:?}");
    // Its row names the node; a local binding's row does not.
    assert_eq!(b.to_row().node, "b");
    // The node goes silent: not rung; back: rung again.
    assert_eq!(r.set_nodes_down(&|n| n == "b"), 1);
    assert!(r.locate("alice").is_none());
    assert_eq!(r.set_nodes_down(&|_| false), 1);
    assert!(r.locate("alice").is_some());
}

#[test]
fn another_node_taking_a_device_over_drops_it_here_and_keeps_the_others() {
    let cfg = config(TWO);
    let now = Instant::now();
    let mut r = Registrar::new();
    // Two devices here (desk phone, softphone), restored from the store.
    r.restore(
        &[
            node_row("alice", "sip:desk@127.0.0.1:4000", "", 4000),
            node_row("alice", "sip:soft@127.0.0.1:4001", "", 4001),
        ],
        &cfg,
        now,
        1_000,
    );
    assert_eq!(r.of("alice").len(), 2);
    // The desk phone registered through node b (same Contact).
    let rows = [
        node_row("alice", "sip:desk@127.0.0.1:4000", "b", 4000),
        node_row("alice", "sip:soft@127.0.0.1:4001", "", 4001),
    ];
    let taken = r.sync_remote("alice", &rows, &cfg, &|_| false, now, 1_000);
    assert_eq!(taken, vec!["sip:desk@127.0.0.1:4000".to_string()]);
    let set = r.of("alice");
    assert_eq!(set.len(), 2);
    let soft = set.iter().find(|b| b.contact.contains("soft")).unwrap();
    assert!(soft.held_by.is_none(), "this node's own device stays");
    let desk = set.iter().find(|b| b.contact.contains("desk")).unwrap();
    assert_eq!(desk.held_by.as_ref().unwrap().node, "b");
    // Node b then removed the softphone (a REGISTER there replaced it).
    assert!(r.forget("alice", "sip:soft@127.0.0.1:4001", &cfg, now));
    assert_eq!(r.of("alice").len(), 1);
    assert!(!r.forget("alice", "sip:nothing@x", &cfg, now));
    // A resync without any row of b's: b's device goes too.
    r.sync_remote("alice", &[], &cfg, &|_| false, now, 1_000);
    assert!(r.of("alice").is_empty());
    // Clients sip.conf does not know are not synced.
    let rows = [node_row("mallory", "sip:m@127.0.0.1:4002", "b", 4002)];
    r.sync_remote("mallory", &rows, &cfg, &|_| false, now, 1_000);
    assert!(r.of("mallory").is_empty());
}

#[test]
fn a_register_here_takes_over_a_device_another_node_held() {
    let cfg = config(TWO);
    let now = Instant::now();
    let mut r = Registrar::new();
    let rows = [node_row("alice", "sip:alice@10.0.0.5:5060", "b", 40000)];
    r.sync_remote("alice", &rows, &cfg, &|_| true, now, 1_000);
    // The same device (its Contact) registers here from its own address.
    let set = set_from(
        "Contact: <sip:alice@10.0.0.5:5060>\r\n",
        peer(),
        r.of("alice"),
    );
    assert_eq!(set.len(), 1);
    assert!(set[0].held_by.is_none(), "{:?}", set[0]);
    assert_eq!(set[0].dest(), peer());
}
