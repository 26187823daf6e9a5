//! End-to-end: two sipd nodes on one PostgreSQL (issue 15), node A on
//! 127.0.0.1 and node B on 127.0.0.2 (same port), each with `--store
//! postgresql://…` on a private server the test starts (`postgres.rs`).
//!
//! - A phone registered on A is reached by a call entering B: B sends the
//!   INVITE to A with a Route naming the phone's client, A relays it over
//!   the phone's own flow (the INVITE reaches the phone from A's address),
//!   both record-route, BYE works from either side.
//! - A forwarding set with `sipctl fwd` on B is in force on A within 1 s;
//!   `sipctl cdr` on either node lists both nodes' calls (node column).
//! - `kill -9` of A: a call for a phone registered on A gets the
//!   unavailable handling from B within 10 s; the phone registers through
//!   B, which takes the binding over, and is reached again.
//! - PostgreSQL stopped for 10 s under SIPp load through A: no failed call,
//!   and afterwards as many CDRs in PostgreSQL as calls made.
//! - A forwarding change by phone while PostgreSQL is down is refused
//!   (`500 Forwarding Not Saved`) and in force nowhere: it is confirmed
//!   only once PostgreSQL has it.
//!
//! Skipped with a notice when PostgreSQL is not installed (failing under
//! `CI=true`), like the SIPp tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipd_tests::metrics::scrape;
use sipd_tests::postgres::Postgres;
use sipd_tests::sipp::{self, args};
use sipd_tests::ua::{establish_from, Dialog};
use sipd_tests::{free_port_on, wait_for, Sipd, Start, Ua};

const S: Duration = Duration::from_secs(5);

/// alice 1001, bob 1002, carol 1003; `alice` is extra lines for alice.
fn conf(alice: &str) -> String {
    format!(
        "[general]\nqualify=0\nmin_expires=2\n\n\
         [alice]\naccountcode=o\nsecret=alice-pw\nexten=1001{alice}\n\n\
         [bob]\naccountcode=o\nsecret=bob-pw\nexten=1002\n\n\
         [carol]\naccountcode=o\nsecret=carol-pw\nexten=1003\n\n\
         [caller]\nsecret=caller-pw\ncall_limit=0\n\n\
         [uas]\nsecret=uas-pw\n"
    )
}

fn node(pg: &Postgres, name: &str, addr: SocketAddr, conf: &str) -> Sipd {
    Sipd::start_with(Start {
        conf: Some(conf.to_string()),
        listen: Some(addr),
        args: vec!["--store".into(), pg.url(), "--node".into(), name.into()],
        ..Start::default()
    })
}

/// Nodes A (127.0.0.1) and B (127.0.0.2) on one port, each seeing the
/// other alive.
fn two_nodes(pg: &Postgres, conf: &str) -> (Sipd, Sipd) {
    two_nodes_with(pg, conf, conf)
}

fn two_nodes_with(pg: &Postgres, conf_a: &str, conf: &str) -> (Sipd, Sipd) {
    let port = free_port_on("127.0.0.2");
    let a = node(pg, "a", SocketAddr::from(([127, 0, 0, 1], port)), conf_a);
    let b = node(pg, "b", SocketAddr::from(([127, 0, 0, 2], port)), conf);
    for (n, other) in [(&a, "b"), (&b, "a")] {
        let alive = wait_for(S, || {
            let s = n.status();
            s.store
                .nodes
                .iter()
                .any(|x| x.name == other && x.state == "alive")
                .then_some(())
        });
        assert!(alive.is_some(), "{:?}\n{}", n.status().store, n.stderr());
    }
    (a, b)
}

/// Waits until `n` lists a binding of `name` held by `node` (`None`: by
/// itself).
fn wait_binding(n: &Sipd, name: &str, node: Option<&str>) {
    let seen = wait_for(S, || {
        n.regs()
            .iter()
            .any(|b| b.name == name && b.node.as_deref() == node)
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "no binding of {name} held by {node:?}: {:?}",
        n.regs()
    );
}

/// `caller` calls `number` through its server; `callee` gets the INVITE
/// from `via`, rings and answers; the caller ACKs.
fn call(caller: &mut Ua, callee: &mut Ua, number: &str, via: SocketAddr) -> (Dialog, Dialog) {
    let uri = format!("sip:{number}@{}", caller.server);
    let secret = format!("{}-pw", caller.user);
    let (uac, uas, got, from) = establish_from(caller, callee, &uri, &secret);
    assert_eq!(from, via, "the INVITE must come from {via}:\n{got:?}");
    (uac, uas)
}

/// `from` hangs up; `to` answers the BYE.
fn hang_up(from: &mut Ua, d: &mut Dialog, to: &mut Ua) {
    let bye = from.in_dialog(d, "BYE");
    from.send(&bye);
    let got = to.expect_request("BYE", S);
    to.respond(&got, 200, "OK", "");
    from.expect_status(200, S);
}

fn cdr_nodes(n: &Sipd) -> Vec<(String, String)> {
    let v = n.sipctl_json(&["cdr", "--json", "--last", "100"]);
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap_or("").to_string(),
                r["target"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_phone_on_node_a_is_called_through_node_b_and_state_is_shared() {
    let Some(pg) = Postgres::start() else { return };
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port_on("127.0.0.1")));
    let conf_a = conf("").replace("[general]\n", &format!("[general]\nmetrics={metrics}\n"));
    let (a, b) = two_nodes_with(&pg, &conf_a, &conf(""));
    let mut alice = Ua::udp(a.addr, "alice");
    alice.register("alice-pw", 3600);
    let mut bob = Ua::udp(b.addr, "bob");
    bob.register("bob-pw", 3600);
    wait_binding(&b, "alice", Some("a"));
    wait_binding(&a, "bob", Some("b"));
    // B shows where alice's flow is; A's metrics count the other node.
    let regs = sipd_tests::text(&b.sipctl(&["regs"]).stdout);
    assert!(regs.contains("via node a"), "{regs}");
    let text = scrape(metrics);
    for line in [
        "sipd_nodes{state=\"alive\"} 1",
        "sipd_nodes{state=\"down\"} 0",
        "sipd_store_feed_connected 1",
        "sipd_remote_bindings 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }

    // bob calls alice through B; the INVITE reaches alice from A; alice
    // hangs up.
    let (mut uac, mut uas) = call(&mut bob, &mut alice, "1001", a.addr);
    assert_eq!(a.calls_json().len(), 1, "A tracks the dialog it relays");
    assert_eq!(b.calls_json().len(), 1);
    hang_up(&mut alice, &mut uas, &mut bob);
    let _ = &mut uac;
    // Again, and bob hangs up.
    let (mut uac, mut uas) = call(&mut bob, &mut alice, "1001", a.addr);
    hang_up(&mut bob, &mut uac, &mut alice);
    let _ = &mut uas;
    assert!(wait_for(S, || (a.calls_json().is_empty()
        && b.calls_json().is_empty())
    .then_some(()))
    .is_some());

    // Forwarding set on B holds on A within a second.
    let set = b.sipctl(&["fwd", "alice", "always", "1003"]);
    assert!(set.status.success(), "{}", sipd_tests::text(&set.stderr));
    let t = Instant::now();
    let seen = wait_for(Duration::from_secs(3), || {
        let v = a.sipctl_json(&["fwd", "alice", "--json"]);
        (v.to_string().contains("1003")).then(|| t.elapsed())
    })
    .expect("forwarding on A");
    assert!(
        seen <= Duration::from_secs(1),
        "forwarding reached A after {seen:?}"
    );
    // A call through A follows it: carol (registered on B) rings.
    let mut carol = Ua::udp(b.addr, "carol");
    carol.register("carol-pw", 3600);
    wait_binding(&a, "carol", Some("b"));
    let mut bob_a = Ua::udp(a.addr, "bob");
    let (mut uac, mut uas) = call(&mut bob_a, &mut carol, "1001", b.addr);
    hang_up(&mut bob_a, &mut uac, &mut carol);
    let _ = &mut uas;

    // Both nodes list both nodes' calls.
    for n in [&a, &b] {
        let rows = wait_for(S, || {
            let rows = cdr_nodes(n);
            (rows.len() >= 3).then_some(rows)
        })
        .unwrap_or_else(|| panic!("CDRs: {:?}", cdr_nodes(n)));
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows.iter().filter(|(n, _)| n == "b").count(), 2, "{rows:?}");
        assert_eq!(rows.iter().filter(|(n, _)| n == "a").count(), 1, "{rows:?}");
        let table = n.sipctl(&["cdr"]);
        assert!(sipd_tests::text(&table.stdout).contains("node"));
    }
    assert_eq!(pg.query("SELECT count(*) FROM cdr"), "3");

    // A third node under A's name is refused at start-up.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sip.conf"), conf("")).unwrap();
    let port = free_port_on("127.0.0.3");
    let out = sipd_tests::run_timeout(
        std::process::Command::new(sipd_tests::sipd_bin())
            .arg("-s")
            .arg(dir.path())
            .arg("-b")
            .arg(format!("127.0.0.3:{port}"))
            .args(["--store", &pg.url(), "--node", "a"]),
        Duration::from_secs(20),
    );
    let err = sipd_tests::text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("in use by a live node at"), "{err}");
}

#[test]
fn a_dead_node_s_phones_get_unavailable_handling_until_they_register_again() {
    let Some(pg) = Postgres::start() else { return };
    // alice forwards to carol when unavailable.
    let (mut a, b) = two_nodes(&pg, &conf("~1003"));
    let mut alice = Ua::udp(a.addr, "alice");
    alice.register("alice-pw", 3600);
    let mut carol = Ua::udp(b.addr, "carol");
    carol.register("carol-pw", 3600);
    let mut bob = Ua::udp(b.addr, "bob");
    bob.register("bob-pw", 3600);
    wait_binding(&b, "alice", Some("a"));

    a.kill9();
    let killed = Instant::now();
    // A call for alice right away: the INVITE to the dead node goes
    // unanswered, then the unavailable handling (carol) takes over.
    let (mut uac, mut uas) = call(&mut bob, &mut carol, "1001", b.addr);
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(10),
        "unavailable handling after {took:?}"
    );
    hang_up(&mut bob, &mut uac, &mut carol);
    let _ = &mut uas;
    // Once A is silent for more than 10 s, B does not even try it.
    let down = wait_for(Duration::from_secs(15), || {
        b.status()
            .store
            .nodes
            .iter()
            .any(|n| n.name == "a" && n.state == "down")
            .then_some(())
    });
    assert!(down.is_some(), "{:?}", b.status().store);
    let t = Instant::now();
    let (mut uac, _) = call(&mut bob, &mut carol, "1001", b.addr);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    hang_up(&mut bob, &mut uac, &mut carol);

    // alice registers through B (same Contact): B takes the binding over.
    let at = alice.local;
    drop(alice);
    let mut alice_b = Ua::udp_at(at, b.addr, "alice");
    alice_b.register("alice-pw", 3600);
    wait_binding(&b, "alice", None);
    let owner = wait_for(S, || {
        let n = pg.query("SELECT node FROM bindings WHERE name = 'alice'");
        (n == "b").then_some(n)
    });
    assert!(
        owner.is_some(),
        "{}",
        pg.query("SELECT node FROM bindings WHERE name = 'alice'")
    );
    let (mut uac, _) = call(&mut bob, &mut alice_b, "1001", b.addr);
    hang_up(&mut bob, &mut uac, &mut alice_b);
}

#[test]
fn a_forwarding_change_by_phone_is_confirmed_only_once_postgresql_has_it() {
    let Some(pg) = Postgres::start() else { return };
    let (a, b) = two_nodes(&pg, &conf(""));
    let mut alice = Ua::udp(a.addr, "alice");
    alice.register("alice-pw", 3600);
    pg.stop();
    // *72 1003: forward always to carol. The store cannot take it: the
    // phone hears "not saved" and nothing is in force anywhere.
    let inv = alice.invite(&format!("sip:*721003@{}", alice.server), "alice-pw");
    let resp = alice
        .final_response(Duration::from_secs(10))
        .expect("an answer");
    assert_eq!(resp.status(), Some(500), "{resp:?}");
    alice.ack_failure(&inv, &resp);
    for n in [&a, &b] {
        let v = n.sipctl_json(&["fwd", "alice", "--json"]);
        assert!(!v.to_string().contains("1003"), "{v}");
    }
    pg.start_again();
    // The store works again (the writer retries with backoff; a waited-for
    // write is tried at once).
    let inv = alice.invite(&format!("sip:*721003@{}", alice.server), "alice-pw");
    let resp = alice
        .final_response(Duration::from_secs(10))
        .expect("an answer");
    assert_ne!(resp.status(), Some(500), "{resp:?}");
    alice.ack_failure(&inv, &resp);
    assert_eq!(
        pg.query("SELECT kind || ' ' || number FROM forwards WHERE name = 'alice'"),
        "always 1003"
    );
    let seen = wait_for(Duration::from_secs(3), || {
        b.sipctl_json(&["fwd", "alice", "--json"])
            .to_string()
            .contains("1003")
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "B: {}",
        b.sipctl_json(&["fwd", "alice", "--json"])
    );
}

#[test]
fn postgresql_down_for_10_s_under_sipp_load_loses_no_call_and_no_cdr() {
    let Some(pg) = Postgres::start() else { return };
    if !sipp::available("postgresql_down_for_10_s_under_sipp_load_loses_no_call_and_no_cdr") {
        return;
    }
    let (a, _b) = two_nodes(&pg, &conf(""));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let server = a.addr.to_string();
    let _uas = sipp::registered_uas(dir, &server);
    // 50 calls/s for 20 s (1,000 calls); PostgreSQL is down from 5 s to 15 s.
    let calls = 1000u64;
    let auth_uri = format!("uas@{server}");
    let uac = std::thread::spawn({
        let dir = dir.to_path_buf();
        let server = server.clone();
        move || {
            sipp::run(
                &dir,
                &args(&[
                    &server,
                    "-auth_uri",
                    &auth_uri,
                    "-sf",
                    sipp::scenario("uac_auth.xml").to_str().unwrap(),
                    "-inf",
                    "uac.csv",
                    "-m",
                    &calls.to_string(),
                    "-r",
                    "50",
                    "-l",
                    "200",
                    "-d",
                    "1000",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    "0",
                    "-timeout",
                    "90",
                ]),
                Duration::from_secs(120),
            )
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    pg.stop();
    let degraded = wait_for(Duration::from_secs(5), || {
        (!a.status().store.is_ok()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(10));
    pg.start_again();
    let uac = uac.join().unwrap();
    assert!(degraded.is_some(), "the store never said degraded");
    assert_eq!(
        uac.failed, 0,
        "failed calls:\n{}\n{}",
        uac.stdout, uac.errors
    );
    assert_eq!(uac.success, calls, "{}\n{}", uac.stdout, uac.stderr);
    let count = wait_for(Duration::from_secs(30), || {
        let n: u64 = pg.query("SELECT count(*) FROM cdr").parse().ok()?;
        (n >= calls).then_some(n)
    });
    assert_eq!(
        count,
        Some(calls),
        "CDRs in PostgreSQL: {}; status {:?}",
        pg.query("SELECT count(*) FROM cdr"),
        a.status().store
    );
    assert!(wait_for(S, || a.status().store.is_ok().then_some(())).is_some());
}

/// alice's desk phone on node A and softphone on node B ring together
/// for a call entering B; the desk phone answers (through A) and the
/// softphone is CANCELed. The softphone unregisters through B: A forgets
/// it. A new desk phone Contact with the same `+sip.instance` through B
/// replaces the one A held.
#[test]
fn devices_of_one_client_on_two_nodes_ring_together() {
    let Some(pg) = Postgres::start() else { return };
    let (a, b) = two_nodes(&pg, &conf(""));
    let mut desk = Ua::udp(a.addr, "alice");
    desk.register("alice-pw", 3600);
    let mut soft = Ua::udp(b.addr, "alice");
    soft.register("alice-pw", 3600);
    let both = wait_for(S, || {
        (a.regs().iter().filter(|r| r.name == "alice").count() == 2
            && b.regs().iter().filter(|r| r.name == "alice").count() == 2)
            .then_some(())
    });
    assert!(both.is_some(), "A {:?}\nB {:?}", a.regs(), b.regs());
    let mut bob = Ua::udp(b.addr, "bob");
    bob.register("bob-pw", 3600);

    let inv = bob.invite(&format!("sip:1001@{}", b.addr), "bob-pw");
    let (at_desk, from) = desk.expect_request_from("INVITE", S);
    assert_eq!(from, a.addr, "the desk phone is rung through A");
    let (at_soft, from) = soft.expect_request_from("INVITE", S);
    assert_eq!(from, b.addr);
    desk.respond(&at_desk, 180, "Ringing", "desk");
    soft.respond(&at_soft, 180, "Ringing", "soft");
    desk.respond(&at_desk, 200, "OK", "desk");
    let ok = bob.expect_status(200, S);
    // The softphone's branch is CANCELed.
    let cancel = soft.expect_request("CANCEL", S);
    soft.respond(&cancel, 200, "OK", "soft");
    soft.respond(&at_soft, 487, "Request Terminated", "soft");
    let mut uac = Dialog::uac(&inv, &ok);
    let ack = bob.in_dialog(&mut uac, "ACK");
    bob.send(&ack);
    desk.expect_request("ACK", S);
    hang_up(&mut bob, &mut uac, &mut desk);
    let cdr = wait_for(S, || {
        let v = a.sipctl_json(&["cdr", "--json"]);
        let r = v["records"].as_array()?.first()?.clone();
        Some(r)
    })
    .expect("a CDR on A too");
    assert_eq!(cdr["node"], "b");
    assert_eq!(
        cdr["device"].as_str().unwrap(),
        format!("sip:alice@{};transport=udp", desk.local)
    );

    // The softphone unregisters through B: A forgets it.
    soft.register("alice-pw", 0);
    let one = wait_for(S, || {
        let r: Vec<_> = a.regs().into_iter().filter(|r| r.name == "alice").collect();
        (r.len() == 1 && r[0].node.is_none()).then_some(())
    });
    assert!(one.is_some(), "{:?}", a.regs());

    // A new desk phone socket (another Contact) with the desk's instance,
    // through B: B's binding replaces the one A held, on both nodes and in
    // the database.
    let inst = "<urn:uuid:00000000-0000-0000-0000-00000000d35c>";
    let mut desk2 = Ua::udp(b.addr, "alice");
    let req = desk2
        .request("REGISTER", &format!("sip:{}", b.addr))
        .set("Expires", "3600")
        .set(
            "Contact",
            &format!(
                "<sip:alice@{};transport=udp>;+sip.instance=\"{inst}\"",
                desk2.local
            ),
        );
    // First give the old desk binding that instance (a refresh through A).
    let req_a = desk
        .request("REGISTER", &format!("sip:{}", a.addr))
        .set("Expires", "3600")
        .set(
            "Contact",
            &format!(
                "<sip:alice@{};transport=udp>;+sip.instance=\"{inst}\"",
                desk.local
            ),
        );
    let r = desk.transact_auth(&req_a, "alice-pw").unwrap();
    assert_eq!(r.status(), Some(200));
    wait_for(S, || {
        b.regs()
            .iter()
            .any(|r| r.name == "alice" && r.instance.contains("d35c"))
            .then_some(())
    })
    .expect("B knows the desk phone's instance");
    let r = desk2.transact_auth(&req, "alice-pw").unwrap();
    assert_eq!(r.status(), Some(200));
    let moved = wait_for(S, || {
        let ra: Vec<_> = a.regs().into_iter().filter(|r| r.name == "alice").collect();
        let db = pg.query("SELECT node || ' ' || contact FROM bindings WHERE name = 'alice'");
        (ra.len() == 1
            && ra[0].node.as_deref() == Some("b")
            && db == format!("b sip:alice@{};transport=udp", desk2.local))
        .then_some(())
    });
    assert!(
        moved.is_some(),
        "A {:?}\nDB {}",
        a.regs(),
        pg.query("SELECT node || ' ' || contact FROM bindings")
    );
}
