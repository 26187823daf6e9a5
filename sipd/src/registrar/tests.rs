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

fn run(extra: &str, current: Option<&Binding>) -> Outcome {
    process(
        &general(),
        &register(extra),
        "alice",
        peer(),
        current,
        Instant::now(),
        1_000,
    )
}

fn bound(extra: &str) -> Binding {
    match run(extra, None) {
        Outcome::Bind(b) => b,
        other => panic!("{other:?}"),
    }
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
    assert_eq!(
        run("Contact: <sip:a@h>;expires=0\r\nExpires: 60\r\n", None),
        Outcome::Unbind
    );
    assert_eq!(
        run("Contact: <sip:a@h>\r\nExpires: 0\r\n", None),
        Outcome::Unbind
    );
    assert_eq!(run("Contact: *\r\nExpires: 0\r\n", None), Outcome::Unbind);
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
fn query_without_contact_and_first_contact_wins() {
    assert_eq!(run("", None), Outcome::Query);
    let b = bound("Contact: <sip:first@h1>, <sip:second@h2>\r\nExpires: 60\r\n");
    assert_eq!(b.contact, "sip:first@h1");
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
        Outcome::Bind(_)
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
    r.insert(b.clone());
    let mut gone = b.clone();
    gone.name = "bob".into();
    gone.expires_at = now;
    r.insert(gone);
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
