//! A real phone: two baresip instances (see `sipd_tests::baresip` for how
//! they are set up and driven) register to sipd with its default digest
//! offer (MD5 alone; no `digest` key anywhere) and call each other through
//! it. Each call rings, is answered with an explicit `accept`, shows in
//! `sipctl calls` as answered on the callee's device, is hung up (once by
//! the caller, once by the callee) and leaves an ANSWERED CDR.
//!
//! Skipped with a notice when baresip is absent, a failure under `CI=true`.
//! Bounded: every wait has a timeout, the phones are killed on drop and
//! quit by themselves after a minute anyway.

use std::time::{Duration, Instant};

use serde_json::Value;
use sipd_tests::baresip::{self, Baresip};
use sipd_tests::{wait_for, Sipd};

/// Any single wait: a SIP exchange on loopback takes milliseconds.
const T: Duration = Duration::from_secs(10);
/// The phones quit by themselves after this.
const LIFE: Duration = Duration::from_secs(60);
/// How long each call stays up.
const TALK: Duration = Duration::from_millis(1200);

/// Wait until `sipctl calls` shows exactly one call, in `state`.
fn one_call_in(sipd: &Sipd, state: &str) -> Value {
    wait_for(T, || {
        let c = sipd.calls_json();
        (c.len() == 1 && c[0]["state"] == state).then(|| c[0].clone())
    })
    .unwrap_or_else(|| panic!("no single {state} call: {:?}", sipd.calls_json()))
}

/// Who hangs up a call.
#[derive(Clone, Copy, Debug)]
enum Hangup {
    Caller,
    Callee,
}

/// `caller` dials `callee` by name through sipd, `callee` accepts, the call
/// is up for [`TALK`], then `by` hangs up. Checks both phones' events and
/// sipd's calls table along the way, and the CDR at the end.
fn call(sipd: &Sipd, caller: &mut Baresip, callee: &mut Baresip, device: &str, by: Hangup) {
    let aor = |name: &str| format!("sip:{name}@{}", sipd.addr);
    caller.command("dial", &aor(&callee.name));

    // The callee's phone rings with the caller's identity, the caller hears
    // the ringing; both name the same dialog.
    let incoming = callee.event("CALL_INCOMING", T);
    assert_eq!(
        incoming["peeruri"],
        aor(&caller.name).as_str(),
        "{incoming}"
    );
    let id = incoming["id"].as_str().expect("call id").to_string();
    let ringing = caller.event("CALL_RINGING", T);
    assert_eq!(ringing["id"], id.as_str(), "{ringing}");
    let c = one_call_in(sipd, "ringing");
    assert_eq!(c["call_id"], id.as_str(), "{c}");
    assert_eq!(c["caller"], caller.name.as_str(), "{c}");
    assert_eq!(c["dialed"], callee.name.as_str(), "{c}");
    assert_eq!(c["target"], callee.name.as_str(), "{c}");

    // Answered: established at both ends and in sipd, on the callee's device.
    let reply = callee.command("accept", "");
    assert!(reply.contains("Answering"), "{reply}");
    let up = callee.event("CALL_ESTABLISHED", T);
    assert_eq!(up["id"], id.as_str(), "{up}");
    let up = caller.event("CALL_ESTABLISHED", T);
    assert_eq!(up["id"], id.as_str(), "{up}");
    let c = one_call_in(sipd, "answered");
    assert_eq!(c["call_id"], id.as_str(), "{c}");
    assert_eq!(c["device"], device, "{c}");
    std::thread::sleep(TALK);
    assert_eq!(sipd.calls_json().len(), 1, "the call is still up");

    // Hung up: the BYE crosses sipd and closes the other end too.
    let (hanger, other) = match by {
        Hangup::Caller => (&mut *caller, &mut *callee),
        Hangup::Callee => (&mut *callee, &mut *caller),
    };
    hanger.command("hangup", "");
    let closed = hanger.event("CALL_CLOSED", T);
    assert_eq!(closed["id"], id.as_str(), "{closed}");
    let closed = other.event("CALL_CLOSED", T);
    assert_eq!(closed["id"], id.as_str(), "{closed}");
    assert!(
        wait_for(T, || sipd.calls_json().is_empty().then_some(())).is_some(),
        "call left in the table: {:?}",
        sipd.calls_json()
    );

    // One ANSWERED CDR for this call, with the talk time in it.
    let cdr = wait_for(T, || {
        let v = sipd.sipctl_json(&["cdr", "--json"]);
        v["records"]
            .as_array()?
            .iter()
            .find(|r| r["call_id"] == id.as_str())
            .cloned()
    })
    .unwrap_or_else(|| panic!("no CDR for {id}"));
    assert_eq!(cdr["disposition"], "ANSWERED", "{cdr}");
    assert_eq!(cdr["code"], 200, "{cdr}");
    assert_eq!(cdr["caller"], caller.name.as_str(), "{cdr}");
    assert_eq!(cdr["dialed"], callee.name.as_str(), "{cdr}");
    assert_eq!(cdr["target"], callee.name.as_str(), "{cdr}");
    assert_eq!(cdr["device"], device, "{cdr}");
    let ms = |k: &str| cdr[k].as_u64().unwrap_or_else(|| panic!("{k}: {cdr}"));
    let (start, answer, end) = (ms("start"), ms("answer"), ms("end"));
    assert!(start <= answer && answer <= end, "{cdr}");
    let talk = end - answer;
    assert!(
        (TALK.as_millis() as u64..TALK.as_millis() as u64 + 5000).contains(&talk),
        "talk time {talk} ms: {cdr}"
    );
    assert!(ms("billsec") <= ms("duration"), "{cdr}");
}

#[test]
fn baresip_phones_register_and_call_each_other() {
    if !baresip::available("baresip_phones_register_and_call_each_other") {
        return;
    }
    let began = Instant::now();
    // No `digest` key: the default offer (MD5 alone) is what baresip 1.0
    // can answer.
    let sipd = Sipd::start("[alice]\nsecret=alice-pw\n\n[bob]\nsecret=bob-pw\n");
    let mut alice = Baresip::start("alice", "alice-pw", sipd.addr, LIFE);
    let mut bob = Baresip::start("bob", "bob-pw", sipd.addr, LIFE);

    // Both register: two bindings, one each, from the phones' own sockets.
    let bindings = wait_for(T, || {
        let v = sipd.sipctl_json(&["regs", "--json"]);
        let b = v["bindings"].as_array()?.clone();
        (b.len() == 2).then_some(b)
    })
    .unwrap_or_else(|| {
        panic!(
            "two registrations: {}",
            sipd.sipctl_json(&["regs", "--json"])
        )
    });
    let mut names: Vec<&str> = bindings
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"]);
    let contact = |name: &str| -> String {
        let b = bindings.iter().find(|b| b["name"] == name).unwrap();
        let contact = b["contact"].as_str().unwrap().to_string();
        // baresip's Contact user is NAME-0x..., its host our loopback and
        // its port the UDP socket the REGISTER came from.
        assert!(contact.starts_with(&format!("sip:{name}-0x")), "{b}");
        let source = b["source"].as_str().unwrap();
        let port = source
            .strip_prefix("udp:127.0.0.1:")
            .unwrap_or_else(|| panic!("{b}"));
        assert!(contact.ends_with(&format!("@127.0.0.1:{port}")), "{b}");
        assert!(
            b["user_agent"].as_str().unwrap().starts_with("baresip v1."),
            "{b}"
        );
        assert!(b["expires"].as_u64().unwrap() <= 60, "{b}");
        contact
    };
    let (alice_dev, bob_dev) = (contact("alice"), contact("bob"));

    call(&sipd, &mut alice, &mut bob, &bob_dev, Hangup::Caller);
    call(&sipd, &mut bob, &mut alice, &alice_dev, Hangup::Callee);

    let cdrs = sipd.sipctl_json(&["cdr", "--json"]);
    assert_eq!(cdrs["records"].as_array().unwrap().len(), 2, "{cdrs}");
    // Still registered after both calls, and still running.
    assert_eq!(
        sipd.sipctl_json(&["regs", "--json"])["bindings"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(alice.is_running() && bob.is_running());
    // Nothing in the exchange with a well-behaved phone is worth a warning.
    let log = sipd.stderr();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(bad.is_empty(), "sipd warned:\n{}", bad.join("\n"));
    let took = began.elapsed();
    eprintln!("baresip test took {took:?}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
