//! End-to-end: several devices per client (issue 11). Bindings per device
//! (replaced by the same `+sip.instance`, Contact URI or source, up to
//! `max_contacts`, removed one by one or all with `*`), parallel forking to
//! every reachable device (first 2xx wins, the others are CANCELed, a 6xx
//! ends the fork, the fork is unavailable only when every branch failed),
//! keep-alive OPTIONS (`qualify`) and reachability, CRLF pings and RFC 5626
//! outbound over TCP, and both bindings over a restart.
//!
//! Wire conventions these tests rely on:
//! - a device's Contact is its own socket address
//!   (`sip:USER@127.0.0.1:PORT;transport=udp|tcp`, as [`Ua::request`] writes
//!   it) unless a test says otherwise; the INVITE a device gets has that
//!   Contact as Request-URI;
//! - sipd's keep-alive is an OPTIONS from its listen address to the
//!   binding's source address, Request-URI = the binding's Contact; a live
//!   device answers 200, a stale one says nothing;
//! - sipd CANCELs a losing branch with the branch of that device's INVITE;
//!   the device answers 200 to the CANCEL and 487 to the INVITE, and sipd
//!   ACKs the 487 hop by hop (same branch).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipd::sip::{Contact, HeaderName, Message};
use sipd_tests::ua::{unique, Dialog, Req};
use sipd_tests::{text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);

/// sip.conf of a small office: alice calls, bob has devices and no
/// forwarding or hunting, erin has devices and `~203` (carol) on unavailable.
/// `general` and `bob` are extra lines for those sections.
fn conf(general: &str, bob: &str) -> String {
    format!(
        "[general]\nmin_expires=2\n{general}\n\n\
         [alice]\naccountcode=o\nsecret=alice-pw\nexten=201\n\n\
         [bob]\naccountcode=o\nsecret=bob-pw\nexten=202\n{bob}\n\n\
         [carol]\naccountcode=o\nsecret=carol-pw\nexten=203\n\n\
         [erin]\naccountcode=o\nsecret=erin-pw\nexten=204~203\n"
    )
}

/// No keep-alive: nothing but the test's own traffic reaches the UAs.
fn quiet() -> Sipd {
    Sipd::start(&conf("qualify=0", ""))
}

fn secret(user: &str) -> String {
    format!("{user}-pw")
}

fn regs(sipd: &Sipd) -> Vec<proto::Binding> {
    match sipd
        .ctl(proto::Command::Regs { name: None })
        .into_result()
        .unwrap()
    {
        proto::Reply::Regs(r) => r.bindings,
        other => panic!("{other:?}"),
    }
}

/// The bindings of one client.
fn regs_of(sipd: &Sipd, name: &str) -> Vec<proto::Binding> {
    regs(sipd).into_iter().filter(|b| b.name == name).collect()
}

fn contacts_of(bindings: &[proto::Binding]) -> HashSet<String> {
    bindings.iter().map(|b| b.contact.clone()).collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn calls(sipd: &Sipd) -> Vec<proto::CallInfo> {
    match sipd.ctl(proto::Command::Calls).into_result().unwrap() {
        proto::Reply::Calls(c) => c.calls,
        other => panic!("{other:?}"),
    }
}

fn cdrs(sipd: &Sipd) -> Vec<proto::Cdr> {
    match sipd
        .ctl(proto::Command::Cdr { last: Some(100) })
        .into_result()
        .unwrap()
    {
        proto::Reply::Cdr(c) => c.records,
        other => panic!("{other:?}"),
    }
}

fn cdr_of(sipd: &Sipd, call_id: &str) -> proto::Cdr {
    wait_for(S, || cdrs(sipd).into_iter().find(|c| c.call_id == call_id))
        .unwrap_or_else(|| panic!("no CDR for {call_id}: {:?}", cdrs(sipd)))
}

/// The Contact URI a UA writes (and registers by default).
fn contact_of(ua: &Ua) -> String {
    format!(
        "sip:{}@{};transport={}",
        ua.user,
        ua.local,
        ua.transport().to_lowercase()
    )
}

/// The Contacts of a REGISTER's 200: URI and `expires` parameter of each.
fn listed(ok: &Message) -> Vec<(String, u64)> {
    ok.contacts()
        .unwrap_or_else(|e| panic!("bad Contact ({e}) in\n{}", text(ok.raw())))
        .into_iter()
        .map(|c| match c {
            Contact::Addr(a) => {
                let exp = a
                    .params
                    .get("expires")
                    .flatten()
                    .unwrap_or_else(|| panic!("Contact without expires in\n{}", text(ok.raw())))
                    .parse()
                    .unwrap();
                (a.uri.to_string(), exp)
            }
            Contact::Star => panic!("Contact * in a 200:\n{}", text(ok.raw())),
        })
        .collect()
}

/// A REGISTER from `ua` with this Contact value (as written in the header,
/// `SELF` standing for the UA's own Contact URI) and Expires header, plus
/// extra headers.
fn register_req(ua: &Ua, contact: &str, expires: u32, extra: &[(&str, &str)]) -> Req {
    let contact = contact.replace("SELF", &contact_of(ua));
    let mut req = ua
        .request("REGISTER", &format!("sip:{}", ua.server))
        .set("Contact", &contact)
        .set("Expires", &expires.to_string());
    for (n, v) in extra {
        req = req.set(n, v);
    }
    req
}

/// REGISTER with digest; the final response, asserted 200.
fn register_ok(ua: &mut Ua, contact: &str, expires: u32, extra: &[(&str, &str)]) -> Message {
    let req = register_req(ua, contact, expires, extra);
    let user = ua.user.clone();
    let r = ua
        .transact_auth(&req, &secret(&user))
        .expect("no answer to REGISTER");
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    r
}

/// A UDP phone of `user`, registered for 300 s with its own Contact.
fn phone(sipd: &Sipd, user: &str) -> Ua {
    let mut ua = Ua::udp(sipd.addr, user);
    let r = ua.register(&secret(user), 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

fn method_of(m: &Message) -> &str {
    m.method().map(|x| x.as_str()).unwrap_or("")
}

/// One device of a client, served by the test: it answers sipd's
/// keep-alive OPTIONS when `live` (and counts them either way), drops
/// retransmitted requests it already has, and keeps everything else in
/// `inbox`, in order.
struct Dev {
    ua: Ua,
    live: bool,
    inbox: VecDeque<Message>,
    /// Keep-alive OPTIONS received: Request-URI and source.
    pings: Vec<(String, SocketAddr)>,
    seen: HashSet<(String, String, u32)>,
}

impl Dev {
    fn new(ua: Ua) -> Dev {
        Dev {
            ua,
            live: true,
            inbox: VecDeque::new(),
            pings: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// A registered UDP device of `user`.
    fn udp(sipd: &Sipd, user: &str) -> Dev {
        Dev::new(phone(sipd, user))
    }

    fn contact(&self) -> String {
        contact_of(&self.ua)
    }

    fn source(&self) -> String {
        format!("{}:{}", self.ua.transport().to_lowercase(), self.ua.local)
    }

    /// Take in what arrives within `wait` (then whatever follows at once).
    fn poll(&mut self, wait: Duration) {
        let mut wait = wait;
        while let Some((m, from)) = self.ua.recv_from(wait) {
            wait = Duration::from_millis(1);
            if m.is_request() {
                let key = (
                    method_of(&m).to_string(),
                    m.top_via().branch().unwrap_or("").to_string(),
                    m.cseq().seq,
                );
                if method_of(&m) == "OPTIONS" {
                    if !self.seen.contains(&key) {
                        self.pings
                            .push((m.request_uri().unwrap_or("").to_string(), from));
                    }
                    self.seen.insert(key);
                    if self.live {
                        self.ua.respond(&m, 200, "OK", &unique("ka"));
                    }
                    continue;
                }
                if !self.seen.insert(key) {
                    continue;
                }
            }
            self.inbox.push_back(m);
        }
    }

    /// The requests with this method that arrived so far (kept in the inbox).
    fn got(&self, method: &str) -> usize {
        self.inbox.iter().filter(|m| method_of(m) == method).count()
    }

    fn answer(&mut self, req: &Message, code: u16, reason: &str, tag: &str) {
        self.ua.respond(req, code, reason, tag);
    }
}

/// Serve every device for `d`.
fn pump(devs: &mut [&mut Dev], d: Duration) {
    let end = Instant::now() + d;
    loop {
        for dev in devs.iter_mut() {
            dev.poll(Duration::from_millis(3));
        }
        if Instant::now() >= end {
            return;
        }
    }
}

/// Serve every device until `devs[i]` has a request with this method;
/// take it out of its inbox.
fn expect_req(devs: &mut [&mut Dev], i: usize, method: &str, timeout: Duration) -> Message {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pos) = devs[i].inbox.iter().position(|m| method_of(m) == method) {
            return devs[i].inbox.remove(pos).unwrap();
        }
        if Instant::now() > deadline {
            let got: Vec<String> = devs[i]
                .inbox
                .iter()
                .map(|m| text(m.raw()).lines().next().unwrap_or_default().to_string())
                .collect();
            panic!(
                "device {i} ({}): no {method} within {timeout:?}; got {got:?}",
                devs[i].ua.local
            );
        }
        for dev in devs.iter_mut() {
            dev.poll(Duration::from_millis(3));
        }
    }
}

/// The caller's CANCEL for its INVITE `inv`.
fn cancel_of(inv: &Req) -> Req {
    let mut cancel = inv.clone();
    cancel.method = "CANCEL".into();
    cancel.body.clear();
    cancel
        .remove("Content-Type")
        .set(
            "CSeq",
            &format!(
                "{} CANCEL",
                inv.get("CSeq").unwrap().split_whitespace().next().unwrap()
            ),
        )
        .remove("Proxy-Authorization")
}

/// Device `i` got sipd's CANCEL for its INVITE `inv`: it answers 200 and
/// 487, and sipd ACKs the 487 on the same branch.
fn cancelled(devs: &mut [&mut Dev], i: usize, inv: &Message, tag: &str) {
    let c = expect_req(devs, i, "CANCEL", S);
    assert_eq!(
        c.top_via().branch(),
        inv.top_via().branch(),
        "CANCEL on another branch than the INVITE:\n{}",
        text(c.raw())
    );
    assert_eq!(c.request_uri(), inv.request_uri());
    devs[i].answer(&c, 200, "OK", tag);
    devs[i].answer(inv, 487, "Request Terminated", tag);
    let ack = expect_req(devs, i, "ACK", S);
    assert_eq!(ack.top_via().branch(), inv.top_via().branch());
    assert_eq!(ack.to().tag(), Some(tag));
}

/// Wait for the INVITE on every device (in order) and check its Request-URI.
fn invites(devs: &mut [&mut Dev]) -> Vec<Message> {
    (0..devs.len())
        .map(|i| {
            let inv = expect_req(devs, i, "INVITE", S);
            assert_eq!(
                inv.request_uri(),
                Some(devs[i].contact().as_str()),
                "{}",
                text(inv.raw())
            );
            inv
        })
        .collect()
}

fn to_tag(m: &Message) -> String {
    m.to().tag().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------- forking

#[test]
fn two_devices_ring_together_first_answer_wins_other_gets_cancel() {
    let sipd = quiet();
    let mut alice = phone(&sipd, "alice");
    let mut a = Dev::udp(&sipd, "bob");
    let mut b = Dev::udp(&sipd, "bob");
    let bs = regs_of(&sipd, "bob");
    assert_eq!(
        contacts_of(&bs),
        set(&[&a.contact(), &b.contact()]),
        "{bs:?}"
    );
    let sources: HashSet<String> = bs.iter().map(|x| x.source.clone()).collect();
    assert_eq!(sources, set(&[&a.source(), &b.source()]));

    let inv = alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = invites(&mut [&mut a, &mut b]);
    assert_eq!(got[0].call_id(), inv.get("Call-ID").unwrap());
    assert_eq!(got[1].call_id(), inv.get("Call-ID").unwrap());
    assert_ne!(got[0].top_via().branch(), got[1].top_via().branch());
    assert!(got[0].header(&HeaderName::ProxyAuthorization).is_none());
    a.answer(&got[0], 180, "Ringing", "ta");
    b.answer(&got[1], 180, "Ringing", "tb");
    alice.expect_status(180, S);

    // b answers: alice gets b's 200, a is CANCELed.
    b.answer(&got[1], 200, "OK", "tb");
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("tb"), "{}", text(ok.raw()));
    let mut d = Dialog::uac(&inv, &ok);
    alice.send(&alice.in_dialog(&mut d, "ACK"));
    let ack = expect_req(&mut [&mut a, &mut b], 1, "ACK", S);
    assert_eq!(ack.to().tag(), Some("tb"));
    cancelled(&mut [&mut a, &mut b], 0, &got[0], "ta");
    // a's 487 is not passed on: the call is b's.
    alice.expect_silence(Duration::from_millis(300));
    assert_eq!(a.got("ACK") + a.got("BYE"), 0, "{:?}", a.inbox);

    // sipctl calls and the CDR name b's Contact.
    let c = wait_for(S, || {
        calls(&sipd)
            .into_iter()
            .find(|c| c.state == "answered" && c.call_id == d.call_id)
    })
    .expect("answered call");
    assert_eq!(c.device, b.contact(), "{c:?}");
    let out = sipd.sipctl(&["calls"]);
    assert!(
        text(&out.stdout).contains(&b.contact()),
        "{}",
        text(&out.stdout)
    );
    alice.send(&alice.in_dialog(&mut d, "BYE"));
    let bye = expect_req(&mut [&mut a, &mut b], 1, "BYE", S);
    b.answer(&bye, 200, "OK", "tb");
    alice.expect_status(200, S);
    let cdr = cdr_of(&sipd, &d.call_id);
    assert_eq!(
        (cdr.disposition.as_str(), cdr.target.as_str()),
        ("ANSWERED", "bob")
    );
    assert_eq!(cdr.device, b.contact(), "{cdr:?}");
    assert_eq!(a.got("BYE"), 0);
}

#[test]
fn both_180_reach_the_caller_and_a_cancel_reaches_both() {
    let sipd = quiet();
    let mut alice = phone(&sipd, "alice");
    let mut a = Dev::udp(&sipd, "bob");
    let mut b = Dev::udp(&sipd, "bob");
    let inv = alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = invites(&mut [&mut a, &mut b]);
    a.answer(&got[0], 180, "Ringing", "ta");
    b.answer(&got[1], 180, "Ringing", "tb");
    let mut tags = HashSet::new();
    let deadline = Instant::now() + S;
    while tags.len() < 2 && Instant::now() < deadline {
        let r = alice.recv_response(S).expect("no response");
        match r.status() {
            Some(180) => {
                assert_eq!(r.header(&HeaderName::From), inv.get("From"));
                tags.insert(to_tag(&r));
            }
            Some(100) => {}
            other => panic!("{other:?}: {}", text(r.raw())),
        }
    }
    assert_eq!(tags, set(&["ta", "tb"]));
    // The caller gives up: both devices get a CANCEL.
    alice.send(&cancel_of(&inv));
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.cseq().method.as_str(), "CANCEL");
    cancelled(&mut [&mut a, &mut b], 0, &got[0], "ta");
    cancelled(&mut [&mut a, &mut b], 1, &got[1], "tb");
    let r = alice.final_response(S).expect("no final");
    assert_eq!(r.status(), Some(487), "{}", text(r.raw()));
    assert_eq!(r.cseq().method.as_str(), "INVITE");
    let cdr = cdr_of(&sipd, inv.get("Call-ID").unwrap());
    assert_eq!(cdr.disposition, "CANCELLED");
    assert_eq!(cdr.device, "");
}

#[test]
fn six_xx_ends_the_fork() {
    // bob has neither hunting nor forwarding: a 603 goes back to the caller.
    let sipd = quiet();
    let mut alice = phone(&sipd, "alice");
    let mut a = Dev::udp(&sipd, "bob");
    let mut b = Dev::udp(&sipd, "bob");
    alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = invites(&mut [&mut a, &mut b]);
    a.answer(&got[0], 180, "Ringing", "ta");
    b.answer(&got[1], 180, "Ringing", "tb");
    a.answer(&got[0], 603, "Decline", "ta");
    let ack = expect_req(&mut [&mut a, &mut b], 0, "ACK", S);
    assert_eq!(ack.top_via().branch(), got[0].top_via().branch());
    cancelled(&mut [&mut a, &mut b], 1, &got[1], "tb");
    let r = alice.final_response(S).expect("no final");
    assert_eq!(r.status(), Some(603), "{}", text(r.raw()));
    assert_eq!(r.to().tag(), Some("ta"));
}

#[test]
fn busy_on_one_device_while_the_other_answers() {
    let sipd = quiet();
    let mut alice = phone(&sipd, "alice");
    let mut a = Dev::udp(&sipd, "bob");
    let mut b = Dev::udp(&sipd, "bob");
    alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = invites(&mut [&mut a, &mut b]);
    a.answer(&got[0], 486, "Busy Here", "ta");
    expect_req(&mut [&mut a, &mut b], 0, "ACK", S);
    b.answer(&got[1], 180, "Ringing", "tb");
    alice.expect_status(180, S);
    b.answer(&got[1], 200, "OK", "tb");
    // expect_status fails on any other final: the 486 was not passed on.
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("tb"));
}

#[test]
fn busy_on_one_and_no_answer_on_other_goes_to_unavailable_forward() {
    // erin has ~203 (carol); noanswer 2 s.
    let sipd = Sipd::start(&conf("qualify=0\nnoanswer=2", ""));
    let mut alice = phone(&sipd, "alice");
    let mut carol = Dev::udp(&sipd, "carol");
    let mut a = Dev::udp(&sipd, "erin");
    let mut b = Dev::udp(&sipd, "erin");
    let started = Instant::now();
    let inv = alice.invite(&format!("sip:erin@{}", sipd.addr), "alice-pw");
    let got = invites(&mut [&mut a, &mut b]);
    a.answer(&got[0], 486, "Busy Here", "ta");
    expect_req(&mut [&mut a, &mut b], 0, "ACK", S);
    b.answer(&got[1], 180, "Ringing", "tb");
    alice.expect_status(180, S);
    // b rings past noanswer: sipd CANCELs it, then forwards to carol.
    let c = expect_req(&mut [&mut a, &mut b], 1, "CANCEL", S);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "CANCEL after {:?}, before noanswer",
        started.elapsed()
    );
    b.answer(&c, 200, "OK", "tb");
    b.answer(&got[1], 487, "Request Terminated", "tb");
    expect_req(&mut [&mut a, &mut b], 1, "ACK", S);
    let fwd = expect_req(&mut [&mut carol], 0, "INVITE", S);
    assert_eq!(fwd.call_id(), inv.get("Call-ID").unwrap());
    assert!(
        fwd.header_values(&HeaderName::Diversion)
            .iter()
            .any(|d| d.contains("sip:erin@")),
        "{}",
        text(fwd.raw())
    );
    carol.answer(&fwd, 200, "OK", "tc");
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("tc"));
    let c = wait_for(S, || {
        calls(&sipd)
            .into_iter()
            .find(|c| c.state == "answered" && c.call_id == inv.get("Call-ID").unwrap())
    })
    .expect("answered call");
    assert_eq!(c.device, carol.contact(), "{c:?}");
}

#[test]
fn late_second_2xx_is_acked_and_byed() {
    let sipd = quiet();
    let mut alice = phone(&sipd, "alice");
    let mut a = Dev::udp(&sipd, "bob");
    let mut b = Dev::udp(&sipd, "bob");
    let inv = alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = invites(&mut [&mut a, &mut b]);
    a.answer(&got[0], 180, "Ringing", "ta");
    b.answer(&got[1], 180, "Ringing", "tb");
    b.answer(&got[1], 200, "OK", "tb");
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("tb"));
    // a answers too, crossing sipd's CANCEL.
    a.answer(&got[0], 200, "OK", "ta");
    let mut d = Dialog::uac(&inv, &ok);
    alice.send(&alice.in_dialog(&mut d, "ACK"));
    expect_req(&mut [&mut a, &mut b], 1, "ACK", S);
    // sipd ACKs a's 2xx and hangs up on it; a CANCEL that crossed is answered.
    let deadline = Instant::now() + S;
    let (mut acked, mut byed) = (false, false);
    while !(acked && byed) {
        assert!(
            Instant::now() < deadline,
            "a: ACK {acked}, BYE {byed}; inbox {:?}",
            a.inbox
        );
        pump(&mut [&mut a, &mut b], Duration::from_millis(20));
        while let Some(m) = a.inbox.pop_front() {
            match method_of(&m) {
                "CANCEL" => a.answer(&m, 200, "OK", "ta"),
                "ACK" => {
                    assert_eq!(m.to().tag(), Some("ta"), "{}", text(m.raw()));
                    assert_eq!(m.request_uri(), Some(a.contact().as_str()));
                    acked = true;
                }
                "BYE" => {
                    assert_eq!(m.to().tag(), Some("ta"), "{}", text(m.raw()));
                    assert_eq!(m.call_id(), inv.get("Call-ID").unwrap());
                    a.answer(&m, 200, "OK", "ta");
                    byed = true;
                }
                _ => panic!("a got\n{}", text(m.raw())),
            }
        }
    }
    // The caller never sees a's 2xx; b's call goes on.
    alice.expect_silence(Duration::from_millis(300));
    assert_eq!(b.got("BYE"), 0);
    let c = calls(&sipd);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].device, b.contact());
}

// ------------------------------------------------------------ registration

#[test]
fn register_200_lists_all_bindings() {
    let sipd = quiet();
    let mut a = Ua::udp(sipd.addr, "bob");
    let first = register_ok(&mut a, "<SELF>", 120, &[]);
    assert_eq!(
        listed(&first).into_iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![contact_of(&a)]
    );
    let mut b = Ua::udp(sipd.addr, "bob");
    let second = register_ok(&mut b, "<SELF>", 300, &[]);
    let l = listed(&second);
    assert_eq!(l.len(), 2, "{}", text(second.raw()));
    for (uri, exp) in &l {
        let want = if *uri == contact_of(&a) { 120 } else { 300 };
        assert!(
            (want - 2..=want).contains(exp),
            "{uri} expires={exp}, want about {want}"
        );
    }
    let uris: HashSet<String> = l.into_iter().map(|c| c.0).collect();
    assert_eq!(uris, set(&[&contact_of(&a), &contact_of(&b)]));
    // A query (no Contact) lists both as well.
    let q = a
        .request("REGISTER", &format!("sip:{}", sipd.addr))
        .remove("Contact");
    let r = a.transact_auth(&q, "bob-pw").unwrap();
    assert_eq!(r.status(), Some(200));
    assert_eq!(listed(&r).len(), 2, "{}", text(r.raw()));
    // One row each in sipctl regs, table and JSON.
    assert_eq!(regs_of(&sipd, "bob").len(), 2);
    let out = sipd.sipctl(&["regs", "bob"]);
    let t = text(&out.stdout);
    assert!(
        t.contains(&contact_of(&a)) && t.contains(&contact_of(&b)) && t.contains("2 registrations"),
        "{t}"
    );
    let out = sipd.sipctl(&["regs", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["bindings"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert!(rows
        .iter()
        .all(|r| r["name"] == "bob" && r["status"].is_string() && r["outbound"] == false));
}

#[test]
fn unregister_of_one_device_keeps_the_other() {
    let sipd = quiet();
    let mut a = phone(&sipd, "bob");
    let b = phone(&sipd, "bob");
    assert_eq!(regs_of(&sipd, "bob").len(), 2);
    let r = register_ok(&mut a, "<SELF>", 0, &[]);
    assert_eq!(
        listed(&r).into_iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![contact_of(&b)],
        "{}",
        text(r.raw())
    );
    let left = regs_of(&sipd, "bob");
    assert_eq!(contacts_of(&left), set(&[&contact_of(&b)]), "{left:?}");
    // An INVITE now reaches b only.
    let mut alice = phone(&sipd, "alice");
    let mut da = Dev::new(a);
    let mut db = Dev::new(b);
    alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let inv = expect_req(&mut [&mut da, &mut db], 1, "INVITE", S);
    pump(&mut [&mut da, &mut db], Duration::from_millis(300));
    assert_eq!(da.got("INVITE"), 0);
    db.answer(&inv, 486, "Busy Here", "tb");
    assert_eq!(alice.final_response(S).unwrap().status(), Some(486));
}

#[test]
fn unregister_by_instance_removes_that_device_only() {
    let sipd = quiet();
    let inst = "\"<urn:uuid:6f1a2b3c-0000-4000-8000-000000000001>\"";
    let mut a = Ua::udp(sipd.addr, "bob");
    register_ok(&mut a, &format!("<SELF>;+sip.instance={inst}"), 300, &[]);
    let b = phone(&sipd, "bob");
    assert_eq!(regs_of(&sipd, "bob").len(), 2);
    // The same device, from elsewhere and with another Contact URI, says
    // goodbye by its instance.
    let mut again = Ua::udp(sipd.addr, "bob");
    let r = register_ok(
        &mut again,
        &format!("<SELF>;+sip.instance={inst};expires=0"),
        300,
        &[],
    );
    assert_eq!(
        listed(&r).into_iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![contact_of(&b)]
    );
    assert_eq!(contacts_of(&regs_of(&sipd, "bob")), set(&[&contact_of(&b)]));
}

#[test]
fn star_unregister_removes_all() {
    let sipd = quiet();
    let mut a = phone(&sipd, "bob");
    let _b = phone(&sipd, "bob");
    let _alice = phone(&sipd, "alice");
    assert_eq!(regs_of(&sipd, "bob").len(), 2);
    let r = register_ok(&mut a, "*", 0, &[]);
    assert!(
        r.header(&HeaderName::Contact).is_none(),
        "{}",
        text(r.raw())
    );
    assert!(regs_of(&sipd, "bob").is_empty());
    // Other clients keep theirs.
    assert_eq!(regs_of(&sipd, "alice").len(), 1);
}

#[test]
fn same_instance_from_new_port_replaces() {
    let sipd = quiet();
    let other = phone(&sipd, "bob");
    let inst = "\"<urn:uuid:6f1a2b3c-0000-4000-8000-0000000000aa>\"";
    let mut a1 = Ua::udp(sipd.addr, "bob");
    register_ok(&mut a1, &format!("<SELF>;+sip.instance={inst}"), 300, &[]);
    assert_eq!(regs_of(&sipd, "bob").len(), 2);
    // The device restarts on a new port (new Contact), same instance.
    let mut a2 = Ua::udp(sipd.addr, "bob");
    register_ok(&mut a2, &format!("<SELF>;+sip.instance={inst}"), 300, &[]);
    let bs = regs_of(&sipd, "bob");
    assert_eq!(
        contacts_of(&bs),
        set(&[&contact_of(&other), &contact_of(&a2)]),
        "{bs:?}"
    );
    let dev = bs.iter().find(|b| b.contact == contact_of(&a2)).unwrap();
    assert_eq!(dev.source, format!("udp:{}", a2.local));
    assert!(
        dev.instance
            .contains("urn:uuid:6f1a2b3c-0000-4000-8000-0000000000aa"),
        "{dev:?}"
    );
    let plain = bs.iter().find(|b| b.contact == contact_of(&other)).unwrap();
    assert_eq!(plain.instance, "");
}

#[test]
fn same_contact_from_new_port_replaces() {
    let sipd = quiet();
    let other = phone(&sipd, "bob");
    // A device behind NAT whose mapping changed: same Contact, new source.
    let contact = "sip:bob@10.0.0.7:5060";
    let mut a1 = Ua::udp(sipd.addr, "bob");
    register_ok(&mut a1, &format!("<{contact}>"), 300, &[]);
    let mut a2 = Ua::udp(sipd.addr, "bob");
    register_ok(&mut a2, &format!("<{contact}>"), 300, &[]);
    let bs = regs_of(&sipd, "bob");
    assert_eq!(
        contacts_of(&bs),
        set(&[&contact_of(&other), contact]),
        "{bs:?}"
    );
    let dev = bs.iter().find(|b| b.contact == contact).unwrap();
    assert_eq!(dev.source, format!("udp:{}", a2.local));
}

#[test]
fn same_source_replaces() {
    let sipd = quiet();
    let other = phone(&sipd, "bob");
    // One device (one socket) changes its Contact: still one binding.
    let mut a = Ua::udp(sipd.addr, "bob");
    register_ok(&mut a, "<sip:bob@10.0.0.8:5060>", 300, &[]);
    register_ok(&mut a, "<sip:bob@10.0.0.9:5060>", 300, &[]);
    let bs = regs_of(&sipd, "bob");
    assert_eq!(
        contacts_of(&bs),
        set(&[&contact_of(&other), "sip:bob@10.0.0.9:5060"]),
        "{bs:?}"
    );
    // And a refresh from the same place changes nothing but the expiry.
    register_ok(&mut a, "<sip:bob@10.0.0.9:5060>", 300, &[]);
    assert_eq!(regs_of(&sipd, "bob").len(), 2);
}

#[test]
fn max_contacts_drops_oldest() {
    let sipd = Sipd::start(&conf("qualify=0", "max_contacts=2"));
    let _d1 = phone(&sipd, "bob");
    let mut d2 = phone(&sipd, "bob");
    assert_eq!(regs_of(&sipd, "bob").len(), 2);
    let d3 = phone(&sipd, "bob");
    assert_eq!(
        contacts_of(&regs_of(&sipd, "bob")),
        set(&[&contact_of(&d2), &contact_of(&d3)])
    );
    // A refresh of a device at the limit drops nothing.
    register_ok(&mut d2, "<SELF>", 300, &[]);
    assert_eq!(
        contacts_of(&regs_of(&sipd, "bob")),
        set(&[&contact_of(&d2), &contact_of(&d3)])
    );
}

#[test]
fn max_contacts_default_is_five_and_general_key_applies() {
    // No key at all: 5.
    let sipd = Sipd::start(&conf("", ""));
    let devs: Vec<Ua> = (0..6).map(|_| phone(&sipd, "bob")).collect();
    let want: HashSet<String> = devs[1..].iter().map(contact_of).collect();
    assert_eq!(contacts_of(&regs_of(&sipd, "bob")), want);
    // [general] max_contacts=3.
    let sipd = Sipd::start(&conf("qualify=0\nmax_contacts=3", ""));
    let devs: Vec<Ua> = (0..4).map(|_| phone(&sipd, "bob")).collect();
    let want: HashSet<String> = devs[1..].iter().map(contact_of).collect();
    assert_eq!(contacts_of(&regs_of(&sipd, "bob")), want);
}

// --------------------------------------------------------------- keep-alive

/// Serve the devices until bob's binding for each is in the wanted status.
fn wait_status(sipd: &Sipd, devs: &mut [&mut Dev], want: &[&str], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let bs = regs_of(sipd, "bob");
        let now: Vec<String> = devs
            .iter()
            .map(|d| {
                bs.iter()
                    .find(|b| b.contact == d.contact())
                    .map(|b| b.status.clone())
                    .unwrap_or_else(|| "missing".into())
            })
            .collect();
        if now.iter().zip(want).all(|(a, b)| a == b) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "statuses {now:?}, want {want:?}: {bs:?}"
        );
        pump(devs, Duration::from_millis(100));
    }
}

#[test]
fn keepalive_options_reach_each_udp_binding_and_rtt_is_shown() {
    let sipd = Sipd::start(&conf("qualify=1", ""));
    let mut a = Dev::udp(&sipd, "bob");
    let mut b = Dev::udp(&sipd, "bob");
    wait_status(
        &sipd,
        &mut [&mut a, &mut b],
        &["reachable", "reachable"],
        Duration::from_secs(6),
    );
    for d in [&a, &b] {
        let (ruri, from) = d.pings.first().expect("no keep-alive");
        assert_eq!(ruri, &d.contact());
        assert_eq!(*from, sipd.addr);
    }
    let bs = regs_of(&sipd, "bob");
    assert!(bs.iter().all(|b| b.rtt_ms.is_some()), "{bs:?}");
    let out = sipd.sipctl(&["regs", "bob"]);
    let t = text(&out.stdout);
    assert!(t.contains("reachable") && t.contains(" ms"), "{t}");
    // Every second, not once.
    let before = a.pings.len();
    pump(&mut [&mut a, &mut b], Duration::from_millis(2200));
    assert!(a.pings.len() >= before + 2, "{:?}", a.pings);
}

/// bob with two devices and keep-alive every second; `b` stops answering
/// and is unreachable when this returns, `a` is reachable.
fn one_stale(sipd: &Sipd) -> (Dev, Dev) {
    let mut a = Dev::udp(sipd, "bob");
    let mut b = Dev::udp(sipd, "bob");
    b.live = false;
    wait_status(
        sipd,
        &mut [&mut a, &mut b],
        &["reachable", "unreachable"],
        Duration::from_secs(10),
    );
    assert!(b.pings.len() >= 3, "unreachable after {:?}", b.pings);
    (a, b)
}

#[test]
fn stale_binding_is_not_rung() {
    // Keep-alive for bob only (per-client qualify).
    let sipd = Sipd::start(&conf("qualify=0", "qualify=1"));
    let mut alice = phone(&sipd, "alice");
    let (mut a, mut b) = one_stale(&sipd);
    let bs = regs_of(&sipd, "bob");
    let live = bs.iter().find(|x| x.contact == a.contact()).unwrap();
    assert!(live.rtt_ms.is_some(), "{live:?}");
    let out = sipd.sipctl(&["regs", "bob"]);
    assert!(
        text(&out.stdout).contains("unreachable"),
        "{}",
        text(&out.stdout)
    );
    // alice's binding gets no keep-alive (qualify=0 in general).
    assert!(alice.recv(Duration::from_millis(50)).is_none());

    alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let inv = expect_req(&mut [&mut a, &mut b], 0, "INVITE", S);
    pump(&mut [&mut a, &mut b], Duration::from_millis(500));
    assert_eq!(b.got("INVITE"), 0, "the stale device was rung");
    a.answer(&inv, 200, "OK", "ta");
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("ta"));
}

#[test]
fn unreachable_device_answering_again_is_rung_again() {
    let sipd = Sipd::start(&conf("qualify=0", "qualify=1"));
    let mut alice = phone(&sipd, "alice");
    let (mut a, mut b) = one_stale(&sipd);
    b.live = true;
    wait_status(
        &sipd,
        &mut [&mut a, &mut b],
        &["reachable", "reachable"],
        Duration::from_secs(5),
    );
    alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = invites(&mut [&mut a, &mut b]);
    // A CANCEL waits for a provisional response (RFC 3261 §9.1): ring first.
    a.answer(&got[0], 180, "Ringing", "ta");
    b.answer(&got[1], 200, "OK", "tb");
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("tb"));
    cancelled(&mut [&mut a, &mut b], 0, &got[0], "ta");
}

#[test]
fn all_devices_unreachable_makes_the_client_unavailable() {
    let sipd = Sipd::start(&conf("qualify=1", ""));
    // alice is a plain UA: it skips the keep-alives it gets.
    let mut alice = phone(&sipd, "alice");
    let mut carol = Dev::udp(&sipd, "carol");
    let mut bob = Dev::udp(&sipd, "bob");
    let mut erin = Dev::udp(&sipd, "erin");
    bob.live = false;
    erin.live = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = regs(&sipd);
        let st = |n: &str| r.iter().find(|b| b.name == n).map(|b| b.status.clone());
        if st("bob").as_deref() == Some("unreachable")
            && st("erin").as_deref() == Some("unreachable")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        pump(
            &mut [&mut carol, &mut bob, &mut erin],
            Duration::from_millis(100),
        );
    }
    // bob (no forwarding): 480 at once, his device not rung.
    alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let r = alice.final_response(S).expect("no final");
    assert_eq!(r.status(), Some(480), "{}", text(r.raw()));
    // erin (~203): the call goes to carol.
    let inv = alice.invite(&format!("sip:erin@{}", sipd.addr), "alice-pw");
    let fwd = expect_req(&mut [&mut carol, &mut bob, &mut erin], 0, "INVITE", S);
    assert_eq!(fwd.call_id(), inv.get("Call-ID").unwrap());
    carol.answer(&fwd, 486, "Busy Here", "tc");
    let r = alice.final_response(S).expect("no final");
    assert_eq!(r.status(), Some(486), "{}", text(r.raw()));
    pump(&mut [&mut bob, &mut erin], Duration::from_millis(100));
    assert_eq!(bob.got("INVITE") + erin.got("INVITE"), 0);
}

// ------------------------------------------------------- TCP and outbound

#[test]
fn crlf_ping_on_tcp_gets_crlf() {
    let sipd = Sipd::start(&conf("", ""));
    let mut ua = Ua::tcp(sipd.addr, "bob");
    assert_eq!(ua.register("bob-pw", 300).status(), Some(200));
    for _ in 0..2 {
        ua.send_raw(b"\r\n\r\n");
        let pong = ua.recv_bytes(S).expect("no pong");
        assert_eq!(pong, b"\r\n", "{:?}", text(&pong));
    }
    // The flow still carries SIP afterwards.
    assert_eq!(ua.register("bob-pw", 300).status(), Some(200));
}

const INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-00A0C91E6BF6";

#[test]
fn outbound_register_gets_require_outbound_and_calls_use_the_flow() {
    let sipd = quiet();
    let mut alice = phone(&sipd, "alice");
    let mut bob = Ua::tcp(sipd.addr, "bob");
    let ok = register_ok(
        &mut bob,
        &format!("<SELF>;reg-id=1;+sip.instance=\"<{INSTANCE}>\""),
        300,
        &[("Supported", "outbound, path")],
    );
    let require: Vec<&str> = ok.headers(&HeaderName::Require).collect();
    assert!(
        require.iter().any(|r| r
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("outbound"))),
        "no Require: outbound in\n{}",
        text(ok.raw())
    );
    let bs = regs_of(&sipd, "bob");
    assert_eq!(bs.len(), 1, "{bs:?}");
    assert!(bs[0].outbound, "{bs:?}");
    assert!(bs[0].instance.contains(INSTANCE), "{bs:?}");
    assert_eq!(bs[0].source, format!("tcp:{}", bob.local));
    // An INVITE to bob comes over that connection.
    alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let mut dev = Dev::new(bob);
    let inv = expect_req(&mut [&mut dev], 0, "INVITE", S);
    assert_eq!(inv.top_via().transport, "TCP");
    assert_eq!(inv.request_uri(), Some(dev.contact().as_str()));
    dev.answer(&inv, 200, "OK", "tb");
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("tb"));
}

#[test]
fn plain_tcp_register_has_no_require_outbound() {
    let sipd = Sipd::start(&conf("", ""));
    let mut bob = Ua::tcp(sipd.addr, "bob");
    // Supported: outbound alone (no reg-id / instance) is not outbound.
    let ok = register_ok(&mut bob, "<SELF>", 300, &[("Supported", "outbound")]);
    assert!(
        ok.headers(&HeaderName::Require)
            .all(|r| !r.to_ascii_lowercase().contains("outbound")),
        "{}",
        text(ok.raw())
    );
    // Nor are reg-id and instance without Supported: outbound.
    let mut carol = Ua::tcp(sipd.addr, "carol");
    let ok = register_ok(
        &mut carol,
        &format!("<SELF>;reg-id=1;+sip.instance=\"<{INSTANCE}>\""),
        300,
        &[],
    );
    assert!(
        ok.headers(&HeaderName::Require)
            .all(|r| !r.to_ascii_lowercase().contains("outbound")),
        "{}",
        text(ok.raw())
    );
    for b in regs(&sipd) {
        assert!(!b.outbound, "{b:?}");
    }
}

// ------------------------------------------------------------------ restart

#[test]
fn restart_restores_both_bindings() {
    let mut sipd = Sipd::start(&conf("", ""));
    let mut alice = phone(&sipd, "alice");
    let mut a = Dev::udp(&sipd, "bob");
    let mut b = Dev::udp(&sipd, "bob");
    let want = set(&[&a.contact(), &b.contact()]);
    assert_eq!(contacts_of(&regs_of(&sipd, "bob")), want);
    sipd.stop();
    sipd.restart(&[]);
    let bs = regs_of(&sipd, "bob");
    assert_eq!(bs.len(), 2, "{bs:?}");
    assert_eq!(contacts_of(&bs), want);
    let sources: HashSet<String> = bs.iter().map(|x| x.source.clone()).collect();
    assert_eq!(sources, set(&[&a.source(), &b.source()]));
    alice.invite(&format!("sip:bob@{}", sipd.addr), "alice-pw");
    let got = invites(&mut [&mut a, &mut b]);
    // A CANCEL waits for a provisional response (RFC 3261 §9.1): ring first.
    b.answer(&got[1], 180, "Ringing", "tb");
    a.answer(&got[0], 200, "OK", "ta");
    let ok = alice.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("ta"));
    cancelled(&mut [&mut a, &mut b], 1, &got[1], "tb");
}
