//! Hand-built digest answers and helpers for the authentication tests
//! (`permit.rs`, `digest.rs`): credentials with any algorithm, qop, uri or
//! user name, REGISTER round trips, and the shape of an answer.

use super::harness::{register_uri, Bench, Phone, CONF, REALM};
use crate::auth::{client_response, Algorithm};
use crate::sip::auth::AuthParams;
use crate::sip::{HeaderName, Message};

/// CONF plus a client whose `permit` excludes loopback.
pub(super) fn conf() -> String {
    format!("{CONF}\n[fenced]\nsecret=f1\npermit=10.0.0.0/8\n")
}

/// Credentials (a header line) answering `ch` built by hand.
pub(super) struct Creds {
    pub user: String,
    pub secret: String,
    pub method: String,
    pub uri: String,
    pub alg: Option<Algorithm>,
    pub qop: bool,
    pub nc: u32,
}

impl Creds {
    pub fn line(&self, ch: &Message) -> String {
        let (name, header) = if ch.status() == Some(401) {
            (HeaderName::WwwAuthenticate, "Authorization")
        } else {
            (HeaderName::ProxyAuthenticate, "Proxy-Authorization")
        };
        let p = ch.headers(&name).find_map(AuthParams::parse).unwrap();
        let nonce = p.get("nonce").unwrap();
        let response = client_response(
            self.alg.unwrap_or(Algorithm::Md5),
            &self.user,
            REALM,
            &self.secret,
            &self.method,
            &self.uri,
            nonce,
            self.nc,
            "cn1",
            self.qop.then_some("auth"),
        );
        let mut v = format!(
            "{header}: Digest username=\"{}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{}\", response=\"{response}\"",
            self.user, self.uri
        );
        if let Some(a) = self.alg {
            v.push_str(&format!(", algorithm={a}"));
        }
        if self.qop {
            v.push_str(&format!(", qop=auth, nc={:08x}, cnonce=\"cn1\"", self.nc));
        }
        v.push_str("\r\n");
        v
    }
}

/// MD5 with qop for a REGISTER (the fields can be changed).
pub(super) fn md5(user: &str, secret: &str) -> Creds {
    Creds {
        user: user.into(),
        secret: secret.into(),
        method: "REGISTER".into(),
        uri: register_uri(),
        alg: Some(Algorithm::Md5),
        qop: true,
        nc: 1,
    }
}

/// REGISTER without credentials: the 401.
pub(super) fn challenge(b: &mut Bench, p: &mut Phone) -> Message {
    let r = p.register_request(600, "");
    b.deliver(p.peer, &r);
    b.expect_status(p.addr(), 401)
}

/// REGISTER with this Authorization line: the final answer.
pub(super) fn answer(b: &mut Bench, p: &mut Phone, auth: &str) -> Message {
    let r = p.register_request(600, auth);
    b.deliver(p.peer, &r);
    b.take_to(p.addr())
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.status().is_some_and(|s| s >= 200))
        .expect("a final response")
}

pub(super) fn stale(m: &Message) -> bool {
    let name = if m.status() == Some(401) {
        HeaderName::WwwAuthenticate
    } else {
        HeaderName::ProxyAuthenticate
    };
    m.headers(&name).all(|v| v.contains("stale=true")) && m.header(&name).is_some()
}

/// Status line and header names (what differs between two answers).
pub(super) fn shape(m: &Message) -> (Option<u16>, Option<String>, Vec<String>) {
    let raw = String::from_utf8_lossy(m.raw()).into_owned();
    let names = raw
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
        .collect();
    (m.status(), m.reason().map(str::to_string), names)
}
