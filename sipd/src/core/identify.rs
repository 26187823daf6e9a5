//! Who sent a request (spec §3): a static `host=` client by its source
//! address, otherwise the digest-authenticated user. Never by Via, From or
//! Contact. Unknown user, wrong password and a source outside `permit` all
//! get the same `403 Forbidden`.

use std::time::{Instant, SystemTime};

use super::Core;
use crate::auth::Verdict;
use crate::sip::auth::AuthParams;
use crate::sip::{HeaderName, Message};
use crate::transaction::TxId;
use crate::transport::{Out, Peer};

/// Which challenge a request gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Challenge {
    /// 401 + WWW-Authenticate (REGISTER).
    Www,
    /// 407 + Proxy-Authenticate (everything else).
    Proxy,
}

impl Core {
    /// The client a request comes from, or `None` after answering it
    /// (challenge, 403, 400). `allow_static`: a `host=` client may be
    /// identified by its address (not for REGISTER).
    pub(super) fn identify(
        &mut self,
        id: TxId,
        msg: &Message,
        peer: Peer,
        challenge: Challenge,
        allow_static: bool,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Option<String> {
        if allow_static {
            if let Some(c) = self.config.by_source(peer.addr) {
                if c.permits(peer.addr.ip()) {
                    return Some(c.name.clone());
                }
                self.forbidden(id, now, out);
                return None;
            }
        }
        let header = match challenge {
            Challenge::Www => HeaderName::Authorization,
            Challenge::Proxy => HeaderName::ProxyAuthorization,
        };
        let realm = self.config.general.realm.clone();
        // Use the credentials meant for our realm (a request may carry several).
        let creds = msg
            .headers(&header)
            .filter_map(AuthParams::parse)
            .find(|c| {
                c.scheme.eq_ignore_ascii_case("digest") && c.get("realm") == Some(realm.as_str())
            })
            .or_else(|| msg.headers(&header).filter_map(AuthParams::parse).next());
        let Some(creds) = creds else {
            self.challenge(id, challenge, false, now, out);
            return None;
        };
        let method = msg
            .method()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let config = self.config.clone();
        let verdict = self.auth.verify(
            &creds,
            &method,
            &realm,
            |user| config.client(user).and_then(|c| c.secret.as_deref()),
            SystemTime::now(),
        );
        match verdict {
            Verdict::Ok(user) => match config.client(&user) {
                Some(c) if c.permits(peer.addr.ip()) => Some(user),
                _ => {
                    self.forbidden(id, now, out);
                    None
                }
            },
            Verdict::Stale => {
                self.challenge(id, challenge, true, now, out);
                None
            }
            Verdict::Challenge => {
                self.challenge(id, challenge, false, now, out);
                None
            }
            Verdict::Forbidden => {
                self.forbidden(id, now, out);
                None
            }
            Verdict::Malformed => {
                self.counters.auth_failures += 1;
                self.txns
                    .reply(id, 400, "Bad Authorization Header", &[], now, out);
                None
            }
        }
    }

    pub(super) fn forbidden(&mut self, id: TxId, now: Instant, out: &mut Vec<Out>) {
        self.counters.auth_failures += 1;
        self.txns.reply(id, 403, "Forbidden", &[], now, out);
    }

    fn challenge(
        &mut self,
        id: TxId,
        kind: Challenge,
        stale: bool,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let realm = self.config.general.realm.clone();
        let algs = self.config.general.digest.clone();
        let values = self
            .auth
            .challenges_for(&algs, &realm, stale, SystemTime::now());
        let (code, reason, name) = match kind {
            Challenge::Www => (401, "Unauthorized", HeaderName::WwwAuthenticate),
            Challenge::Proxy => (
                407,
                "Proxy Authentication Required",
                HeaderName::ProxyAuthenticate,
            ),
        };
        let headers: Vec<(HeaderName, &str)> =
            values.iter().map(|v| (name.clone(), v.as_str())).collect();
        self.txns.reply(id, code, reason, &headers, now, out);
    }
}
