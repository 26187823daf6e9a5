//! End-to-end PBX features (spec §4.5, §5): star codes with and without a
//! mediagate, forwarding (always / on unavailable) by phone and by sipctl,
//! hunting, loops, call pickup with and without Replaces, persistence over
//! reload and restart; and the seed's example sip.conf on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use sipd::sip::{HeaderName, Message, Uri};
use sipd_tests::ua::{unique, Dialog};
use sipd_tests::{free_port, text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn user_of(m: &Message) -> String {
    Uri::parse(m.request_uri().unwrap())
        .unwrap()
        .user
        .unwrap_or_default()
}

fn phone(sipd: &Sipd, user: &str, secret: &str) -> Ua {
    let mut ua = Ua::udp(sipd.addr, user);
    let r = ua.register(secret, 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

/// The seed's example sip.conf with host= and permit= moved to loopback.
struct Seed {
    sipd: Sipd,
    bar: SocketAddr,
    gate1: SocketAddr,
    gate2: SocketAddr,
    media: SocketAddr,
}

fn seed_conf(
    bar: SocketAddr,
    gate1: SocketAddr,
    gate2: SocketAddr,
    media: Option<SocketAddr>,
) -> String {
    let example = include_str!("../../sip.conf.example");
    let mut conf = example
        .replace("192.168/16,10/8", "127.0.0.0/8")
        .replace("192.168.1.129/32", "127.0.0.1/32")
        .replace("192.168.1.129:5060", &bar.to_string())
        .replace("192.168.1.200:5060", &gate1.to_string())
        .replace("192.168.1.201:5060", &gate2.to_string());
    conf = match media {
        Some(m) => conf.replace("192.168.1.100:5070", &m.to_string()),
        None => conf.replace("host=192.168.1.100:5070", "host=127.0.0.1:9"),
    };
    format!("[general]\nnoanswer=2\nmin_expires=2\n{conf}")
}

fn seed(with_media: bool) -> Seed {
    seed_args(with_media, &[])
}

fn seed_args(with_media: bool, args: &[&str]) -> Seed {
    let (bar, gate1, gate2, media) = (addr(), addr(), addr(), addr());
    let conf = seed_conf(bar, gate1, gate2, with_media.then_some(media));
    // Without a mediagate, the MEDIAGATE section is unreachable (port 9,
    // discard): a mediagate that never answers. Remove it instead.
    let conf = if with_media {
        conf
    } else {
        conf.replace(
            "[MEDIAGATE]\naccountcode=mediagates\nhost=127.0.0.1:9\n",
            "",
        )
    };
    let sipd = sipd_tests::Sipd::start_with(sipd_tests::Start {
        conf: Some(conf),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    Seed {
        sipd,
        bar,
        gate1,
        gate2,
        media,
    }
}

/// Both gateways: which one got the INVITE.
fn gateway_invite(gws: &mut [Ua; 2]) -> (usize, Message) {
    let deadline = std::time::Instant::now() + S;
    while std::time::Instant::now() < deadline {
        for (i, g) in gws.iter_mut().enumerate() {
            if let Some(m) = g.recv(Duration::from_millis(20)) {
                if m.method().map(|x| x.as_str()) == Some("INVITE") {
                    return (i, m);
                }
            }
        }
    }
    panic!("no gateway got the INVITE");
}

fn gateways(s: &Seed) -> [Ua; 2] {
    [
        Ua::udp_at(s.gate1, s.sipd.addr, "GATE1"),
        Ua::udp_at(s.gate2, s.sipd.addr, "GATE2"),
    ]
}

fn prefix_of(i: usize) -> &'static str {
    ["9995999", "9"][i]
}

#[test]
fn seed_forwarding_via_gateway_with_diversion() {
    let s = seed(true);
    let mut siphone1 = phone(&s.sipd, "siphone1", "12345");
    let _siphone2 = phone(&s.sipd, "siphone2", "4321");
    let mut gws = gateways(&s);
    // siphone2 has =4991234567: siphone1 dialing 1002 leaves through a gateway.
    let inv = siphone1.invite(&format!("sip:1002@{}", s.sipd.addr), "12345");
    let (i, got) = gateway_invite(&mut gws);
    assert_eq!(user_of(&got), format!("{}74991234567", prefix_of(i)));
    let div = got.header(&HeaderName::Diversion).expect("Diversion");
    assert!(div.contains("sip:siphone2@"), "{div}");
    // The forwarding client's callerid is presented (its long number).
    assert_eq!(got.from().uri.user.as_deref(), Some("4999876543"));
    gws[i].respond(&got, 200, "OK", "g");
    let ok = siphone1.expect_status(200, S);
    assert_eq!(ok.header(&HeaderName::From), inv.get("From"));
}

#[test]
fn seed_star73_then_1002_and_did_ring_siphone2() {
    let s = seed(true);
    let mut siphone1 = phone(&s.sipd, "siphone1", "12345");
    let mut siphone2 = phone(&s.sipd, "siphone2", "4321");
    let mut media = Ua::udp_at(s.media, s.sipd.addr, "MEDIAGATE");
    siphone2.invite(&format!("sip:*73@{}", s.sipd.addr), "4321");
    let ann = media.expect_request("INVITE", S);
    assert_eq!(user_of(&ann), "*73");
    media.respond(&ann, 200, "OK", "m");
    siphone2.expect_status(200, S);
    // Now 1002 rings siphone2 itself.
    siphone1.invite(&format!("sip:1002@{}", s.sipd.addr), "12345");
    let got = siphone2.expect_request("INVITE", S);
    siphone2.respond(&got, 486, "Busy Here", "x");
    assert_eq!(siphone1.final_response(S).unwrap().status(), Some(486));
    // And a gateway's call to siphone2's DID rings siphone2.
    let mut gw = Ua::udp_at(s.gate1, s.sipd.addr, "GATE1");
    let req = gw.request("INVITE", &format!("sip:4999876543@{}", s.sipd.addr));
    gw.send(&req);
    let got = siphone2.expect_request("INVITE", S);
    assert_eq!(got.call_id(), req.get("Call-ID").unwrap());
}

#[test]
fn seed_hunting_when_siphone1_is_not_registered() {
    let s = seed(true);
    let mut siphone2 = phone(&s.sipd, "siphone2", "4321");
    let mut foo = phone(&s.sipd, "foo", "abc");
    foo.invite(&format!("sip:siphone1@{}", s.sipd.addr), "abc");
    let got = siphone2.expect_request("INVITE", S);
    assert!(got
        .header(&HeaderName::Diversion)
        .unwrap_or("")
        .contains("siphone1"));
    siphone2.respond(&got, 200, "OK", "s2");
    foo.expect_status(200, S);
}

#[test]
fn seed_pickup_without_replaces_moves_the_call() {
    let s = seed(true);
    let mut siphone1 = phone(&s.sipd, "siphone1", "12345");
    let mut foo = phone(&s.sipd, "foo", "abc");
    let mut bar = Ua::udp_at(s.bar, s.sipd.addr, "bar");
    // siphone1 calls bar (a static host client); it rings.
    let inv = siphone1.invite(&format!("sip:bar@{}", s.sipd.addr), "12345");
    let ring = bar.expect_request("INVITE", S);
    bar.respond(&ring, 180, "Ringing", "bar1");
    siphone1.expect_status(180, S);
    // foo (same group as bar) picks it up.
    foo.invite(&format!("sip:*11@{}", s.sipd.addr), "abc");
    let cancel = bar.expect_request("CANCEL", S);
    bar.respond(&cancel, 200, "OK", "bar1");
    bar.respond(&ring, 487, "Request Terminated", "bar1");
    let mut picked = None;
    let mut picked_up = None;
    for _ in 0..4 {
        let Some(m) = foo.recv(S) else { break };
        if m.method().map(|x| x.as_str()) == Some("INVITE") {
            picked = Some(m);
        } else if m.status() == Some(480) {
            picked_up = Some(m);
        }
        if picked.is_some() && picked_up.is_some() {
            break;
        }
    }
    let picked = picked.expect("foo got no INVITE for the picked call");
    assert_eq!(picked.call_id(), inv.get("Call-ID").unwrap());
    assert_eq!(picked.header(&HeaderName::AnswerMode), Some("Auto"));
    assert!(picked
        .header(&HeaderName::CallInfo)
        .unwrap()
        .contains("answer-after=0"));
    assert_eq!(
        picked_up.expect("480 Picked Up").reason(),
        Some("Picked Up")
    );
    foo.respond(&picked, 200, "OK", "foo1");
    let ok = siphone1.expect_status(200, S);
    assert_eq!(ok.to().tag(), Some("foo1"));
    let c = wait_for(S, || {
        let proto::Reply::Calls(c) = s.sipd.ctl(proto::Command::Calls).into_result().unwrap()
        else {
            panic!()
        };
        c.calls.into_iter().find(|c| c.state == "answered")
    })
    .unwrap();
    assert_eq!(c.target, "foo");
}

#[test]
fn pickup_with_replaces_sends_replaces_to_the_caller() {
    let s = seed(true);
    let mut siphone1 = phone(&s.sipd, "siphone1", "12345");
    let mut foo = phone(&s.sipd, "foo", "abc");
    let mut bar = Ua::udp_at(s.bar, s.sipd.addr, "bar");
    let inv = siphone1.invite_with(&format!("sip:bar@{}", s.sipd.addr), "12345", |r| {
        r.set("Supported", "replaces, timer")
    });
    let ring = bar.expect_request("INVITE", S);
    bar.respond(&ring, 180, "Ringing", "bartag");
    siphone1.expect_status(180, S);
    let pick = foo.invite(&format!("sip:*11@{}", s.sipd.addr), "abc");
    let got = siphone1.expect_request("INVITE", S);
    assert_eq!(got.call_id(), pick.get("Call-ID").unwrap());
    // RFC 3891 §3: to-tag is the recipient's own (local) tag, from-tag the remote one.
    let want = format!(
        "{};to-tag={};from-tag=bartag;early-only",
        inv.get("Call-ID").unwrap(),
        siphone1.tag
    );
    assert_eq!(got.header(&HeaderName::Replaces), Some(want.as_str()));
    // The caller accepts: foo is connected to siphone1, and that is a call.
    siphone1.respond(&got, 200, "OK", "s1");
    foo.expect_status(200, S);
    let answered = wait_for(S, || {
        let proto::Reply::Calls(c) = s.sipd.ctl(proto::Command::Calls).into_result().unwrap()
        else {
            panic!()
        };
        c.calls
            .into_iter()
            .find(|c| c.call_id == pick.get("Call-ID").unwrap() && c.state == "answered")
    });
    assert_eq!(
        answered.map(|c| (c.caller, c.target)),
        Some(("foo".to_string(), "siphone1".to_string()))
    );
}

#[test]
fn nothing_to_pick_up() {
    let s = seed(true);
    let mut foo = phone(&s.sipd, "foo", "abc");
    foo.invite(&format!("sip:*11@{}", s.sipd.addr), "abc");
    let r = foo.final_response(S).unwrap();
    assert_eq!(
        (r.status(), r.reason()),
        (Some(404), Some("Nothing To Pick Up"))
    );
}

/// Every row of the spec §5 table, with a mediagate: the exact Request-URI user it receives.
#[test]
fn star_codes_with_mediagate() {
    let s = seed(true);
    let mut siphone1 = phone(&s.sipd, "siphone1", "12345");
    let mut media = Ua::udp_at(s.media, s.sipd.addr, "MEDIAGATE");
    for (dialed, announced) in [
        ("*72", "*73"),
        ("*724991234567", "*724991234567"),
        ("*72", "*724991234567"),
        ("*71", "*724991234567"),
        ("*711002", "*711002"),
        ("*71", "*711002"),
        ("*73", "*73"),
        ("*71", "*73"),
        ("*7", "*70"),
        ("*799", "*70"),
        ("*72abc", "*70"),
        ("*99", "*00"),
        ("*1", "*00"),
    ] {
        let inv = siphone1.invite(
            &format!("sip:{}@{}", dialed.replace('*', "%2A"), s.sipd.addr),
            "12345",
        );
        let got = media.expect_request("INVITE", S);
        assert_eq!(user_of(&got), announced, "dialed {dialed}");
        assert_eq!(got.call_id(), inv.get("Call-ID").unwrap());
        // The announcement is a normal call: answer, ACK, BYE.
        media.respond(&got, 200, "OK", "mg");
        let ok = siphone1.expect_status(200, S);
        let mut d = Dialog::uac(&inv, &ok);
        siphone1.send(&siphone1.in_dialog(&mut d, "ACK"));
        media.expect_request("ACK", S);
        siphone1.send(&siphone1.in_dialog(&mut d, "BYE"));
        let bye = media.expect_request("BYE", S);
        media.respond(&bye, 200, "OK", "mg");
        siphone1.expect_status(200, S);
    }
}

/// Without a mediagate, sipd answers 480 with the result as reason phrase.
#[test]
fn star_codes_without_mediagate() {
    let s = seed(false);
    let mut siphone1 = phone(&s.sipd, "siphone1", "12345");
    for (dialed, reason) in [
        ("*72", "No Forwarding"),
        ("*724991234567", "Forwarding To 4991234567"),
        ("*72", "Forwarding To 4991234567"),
        ("*711002", "Forwarding On Unavailable To 1002"),
        ("*73", "No Forwarding"),
        ("*70", "Bad Forwarding Number"),
        ("*42", "Unknown Feature Code"),
    ] {
        siphone1.invite(&format!("sip:{dialed}@{}", s.sipd.addr), "12345");
        let r = siphone1.final_response(S).unwrap();
        assert_eq!(
            (r.status(), r.reason()),
            (Some(480), Some(reason)),
            "dialed {dialed}"
        );
    }
}

#[test]
fn restricted_client_cannot_forward_abroad_and_gateways_cannot_use_codes() {
    let s = seed(false);
    // foo has context=domestic (^7\d+$): an international number is refused.
    let mut foo = phone(&s.sipd, "foo", "abc");
    foo.invite(&format!("sip:*7281044123456789@{}", s.sipd.addr), "abc");
    let r = foo.final_response(S).unwrap();
    assert_eq!(
        (r.status(), r.reason()),
        (Some(480), Some("Bad Forwarding Number"))
    );
    let out = s.sipd.sipctl(&["fwd", "foo", "always", "81044123456789"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("dialplan"),
        "{}",
        text(&out.stderr)
    );
    // A gateway dialing a star code gets 404.
    let mut gw = Ua::udp_at(s.gate1, s.sipd.addr, "GATE1");
    let req = gw.request("INVITE", &format!("sip:*724991234567@{}", s.sipd.addr));
    assert_eq!(gw.transact(&req).unwrap().status(), Some(404));
}

/// A small office of our own for forwarding and hunting rules.
fn office(extra: &str) -> (Sipd, SocketAddr) {
    let gw = addr();
    let conf = format!(
        "[general]\nnoanswer=2\nmin_expires=2\n\n\
         [a]\naccountcode=o\nsecret=a\nexten=4950000001#201(2,3){extra}\n\n\
         [b]\naccountcode=o\nsecret=b\nexten=202\n\n\
         [c]\naccountcode=o\nsecret=c\nexten=203\n\n\
         [GW]\naccountcode=gateways\nhost={gw}\nexten=0\n"
    );
    (Sipd::start(&conf), gw)
}

#[test]
fn forward_always_by_phone_to_internal_and_external() {
    let (sipd, gwaddr) = office("");
    let mut a = phone(&sipd, "a", "a");
    let mut b = phone(&sipd, "b", "b");
    let mut c = phone(&sipd, "c", "c");
    // a forwards to 203 (c): b's call to a lands on c with a Diversion naming a.
    a.invite(&format!("sip:*72203@{}", sipd.addr), "a");
    assert_eq!(a.final_response(S).unwrap().status(), Some(480));
    b.invite(&format!("sip:201@{}", sipd.addr), "b");
    let got = c.expect_request("INVITE", S);
    assert!(got
        .header(&HeaderName::Diversion)
        .unwrap()
        .contains("sip:a@"));
    c.respond(&got, 486, "Busy Here", "c");
    assert_eq!(b.final_response(S).unwrap().status(), Some(486));
    // External F: the gateway gets it.
    a.invite(&format!("sip:*7284991234567@{}", sipd.addr), "a");
    assert_eq!(a.final_response(S).unwrap().status(), Some(480));
    let mut gw = Ua::udp_at(gwaddr, sipd.addr, "GW");
    b.invite(&format!("sip:a@{}", sipd.addr), "b");
    let got = gw.expect_request("INVITE", S);
    assert_eq!(user_of(&got), "074991234567");
    assert_eq!(
        got.from().uri.user.as_deref(),
        Some("4950000001"),
        "a's callerid toward the gateway"
    );
    let out = sipd.sipctl(&["fwd", "a", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clients"][0]["kind"], "always");
    assert_eq!(v["clients"][0]["number"], "84991234567");
    assert_eq!(v["clients"][0]["source"], "phone");
}

#[test]
fn forward_on_unavailable_after_busy_and_hunting_order() {
    let (sipd, _) = office("");
    let mut a = phone(&sipd, "a", "a");
    let mut b = phone(&sipd, "b", "b");
    let mut c = phone(&sipd, "c", "c");
    // Hunting (2,3): a busy -> b (busy) -> c.
    let inv = c.invite(&format!("sip:201@{}", sipd.addr), "c");
    let got = a.expect_request("INVITE", S);
    a.respond(&got, 486, "Busy Here", "a");
    let got = b.expect_request("INVITE", S);
    b.respond(&got, 486, "Busy Here", "b");
    // c is the caller; hunting skips the caller: the last final goes back.
    let r = c.final_response(S).unwrap();
    assert_eq!(r.status(), Some(486));
    drop(inv);
    // a silent past noanswer (2 s): b rings, sipd CANCELs a.
    b.invite(&format!("sip:201@{}", sipd.addr), "b");
    let got = a.expect_request("INVITE", S);
    a.respond(&got, 180, "Ringing", "a");
    let started = std::time::Instant::now();
    let cancel = a.expect_request("CANCEL", S);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    a.respond(&cancel, 200, "OK", "a");
    a.respond(&got, 487, "Request Terminated", "a");
    let got = c.expect_request("INVITE", S);
    c.respond(&got, 200, "OK", "c");
    b.expect_status(200, S);
    // *71F: a busy -> F.
    a.invite(&format!("sip:*71203@{}", sipd.addr), "a");
    assert_eq!(a.final_response(S).unwrap().status(), Some(480));
    let _ = (&mut b, &mut c);
}

#[test]
fn hunting_then_unavailable_forward_and_loops() {
    let (sipd, gwaddr) = office("~84991112233");
    let mut b = phone(&sipd, "b", "b");
    let mut gw = Ua::udp_at(gwaddr, sipd.addr, "GW");
    // a and c unregistered: b is the only hunt member left; then ~F.
    let mut caller = Ua::udp(sipd.addr, "x");
    let _ = &mut caller;
    let mut c = phone(&sipd, "c", "c");
    c.invite(&format!("sip:a@{}", sipd.addr), "c");
    let got = b.expect_request("INVITE", S);
    b.respond(&got, 480, "Temporarily Unavailable", "b");
    let got = gw.expect_request("INVITE", S);
    assert_eq!(user_of(&got), "074991112233");
    assert!(got
        .header_values(&HeaderName::Diversion)
        .iter()
        .any(|d| d.contains("sip:a@")));
    gw.respond(&got, 603, "Decline", "g");
    assert_eq!(c.final_response(S).unwrap().status(), Some(603));
    // A forwarding loop b -> c -> b is stopped with 482.
    let out = sipd.sipctl(&["fwd", "b", "always", "203"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sipd.sipctl(&["fwd", "c", "always", "202"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut a = phone(&sipd, "a", "a");
    a.invite(&format!("sip:202@{}", sipd.addr), "a");
    assert_eq!(a.final_response(S).unwrap().status(), Some(482));
}

#[test]
fn forwarding_survives_reload_and_restart_and_sipctl_fwd() {
    let (mut sipd, _) = office("");
    let mut a = phone(&sipd, "a", "a");
    a.invite(&format!("sip:*72202@{}", sipd.addr), "a");
    assert_eq!(
        a.final_response(S).unwrap().reason(),
        Some("Forwarding To 202")
    );
    let show = |sipd: &Sipd| {
        let out = sipd.sipctl(&["fwd", "201", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["clients"][0]["kind"].as_str().unwrap().to_string(),
            v["clients"][0]["source"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(show(&sipd), ("always".to_string(), "phone".to_string()));
    assert!(sipd.sipctl(&["reload"]).status.success());
    assert_eq!(show(&sipd), ("always".to_string(), "phone".to_string()));
    sipd.stop();
    sipd.restart(&[]);
    assert_eq!(show(&sipd), ("always".to_string(), "phone".to_string()));
    // sipctl changes it, with the same validation as the star codes.
    let out = sipd.sipctl(&["fwd", "a", "unavail", "203"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("unavail") && text(&out.stdout).contains("sipctl"),
        "{}",
        text(&out.stdout)
    );
    let out = sipd.sipctl(&["fwd", "a", "always", "201"]);
    assert!(!out.status.success(), "forwarding to oneself accepted");
    let out = sipd.sipctl(&["fwd", "a", "clear"]);
    assert!(out.status.success());
    assert_eq!(show(&sipd), ("none".to_string(), "sipctl".to_string()));
    let out = sipd.sipctl(&["fwd", "nobody"]);
    assert!(!out.status.success());
}

#[test]
fn ambiguous_short_number_is_refused_for_changes() {
    let s = seed(false);
    // 1001 is foo (FOOBAR) and siphone1 (HOME).
    let out = s.sipd.sipctl(&["fwd", "1001"]);
    assert!(out.status.success());
    let t = text(&out.stdout);
    assert!(t.contains("foo") && t.contains("siphone1"), "{t}");
    let out = s.sipd.sipctl(&["fwd", "1001", "always", "1002"]);
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("foo") && e.contains("siphone1"), "{e}");
    // siphone2's sip.conf forwarding shows as such.
    let out = s.sipd.sipctl(&["fwd", "siphone2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clients"][0]["source"], "sip.conf");
    assert_eq!(v["clients"][0]["number"], "4991234567");
    let _ = unique("x");
}
