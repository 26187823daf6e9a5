//! Who sent a request (spec §3): a static `host=` client by its source
//! address, otherwise the digest-authenticated user. Never by Via, From or
//! Contact. Unknown user, wrong password, a source outside `permit` and a
//! locked attempt all get the same `403 Forbidden`.
//!
//! Order of the checks for credentials: the brute-force guard
//! ([`crate::auth::guard`]) first (a locked attempt is refused without
//! looking at its credentials), then the digest checks, for which a client
//! whose `permit` excludes the source is an unknown user: its password is
//! never evaluated there, so the answer (code, headers, work done) cannot
//! depend on it or on the nonce's state.

use super::{Core, Effects};
use crate::auth::{Challenge as Offered, Request, Verdict};
use crate::sip::auth::AuthParams;
use crate::sip::{HeaderName, Message, Method};
use crate::time::Now;
use crate::transport::Peer;

pub(super) use crate::auth::guard::Guard;

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
        msg: &Message,
        peer: Peer,
        challenge: Challenge,
        allow_static: bool,
        now: Now,
        fx: &mut Effects,
    ) -> Option<String> {
        if allow_static {
            if let Some(c) = self.config.by_source(peer.addr) {
                if c.permits(peer.addr.ip()) {
                    return Some(c.name.clone());
                }
                self.forbidden(msg, peer, fx);
                return None;
            }
        }
        let header = match challenge {
            Challenge::Www => HeaderName::Authorization,
            Challenge::Proxy => HeaderName::ProxyAuthorization,
        };
        let config = self.config.clone();
        let realm = config.general.realm.as_str();
        // Use the credentials meant for our realm (a request may carry several).
        let creds = msg
            .headers(&header)
            .filter_map(AuthParams::parse)
            .find(|c| c.scheme.eq_ignore_ascii_case("digest") && c.get("realm") == Some(realm))
            .or_else(|| msg.headers(&header).filter_map(AuthParams::parse).next());
        // A nonce serves one user: the user of the request (the To user of a
        // REGISTER, who must be the authenticated user; the From user
        // otherwise), or, answering credentials, their username.
        let request_user = match challenge {
            Challenge::Www => msg.to().uri.user.as_deref(),
            Challenge::Proxy => msg.from().uri.user.as_deref(),
        }
        .unwrap_or_default();
        let Some(creds) = creds else {
            self.challenge(msg, peer, challenge, request_user, false, now, fx);
            return None;
        };
        let username = creds.get("username").unwrap_or(request_user);
        let ip = peer.addr.ip();
        if self.guard.check(username, ip, now.at).any() {
            // Too many failures for this user and/or from this source lately:
            // refused without looking at the credentials.
            let user = Some(username.to_string());
            self.security_event(fx, "auth-failure", user, peer, Some("locked=yes".into()));
            self.forbidden(msg, peer, fx);
            return None;
        }
        let method = msg.method().map(|m| m.as_str()).unwrap_or_default();
        let request = Request {
            method,
            uri: msg
                .request_uri()
                .filter(|_| config.general.check_digest_uri),
            realm,
        };
        let verdict = self.auth.verify(
            &creds,
            &request,
            // Outside `permit` the client is, for the digest, unknown.
            |user| {
                config
                    .client(user)
                    .filter(|c| c.permits(ip))
                    .and_then(|c| c.secret.as_deref())
            },
            now.system(),
        );
        match verdict {
            Verdict::Ok(user) => match config.client(&user) {
                Some(c) if c.permits(ip) => {
                    self.guard.succeeded(&user, ip, now.at);
                    Some(user)
                }
                _ => {
                    self.security_event(fx, "acl-refused", Some(user), peer, None);
                    self.forbidden(msg, peer, fx);
                    None
                }
            },
            Verdict::Replayed(user) if self.is_accepted_register(msg, peer, &user) => {
                // A retransmission of the REGISTER we accepted, from where it
                // came, after its transaction ended (lost 200 OK, client still
                // retransmitting: RFC 3261 timer F runs 32 s, our timer J 5 s).
                // Processing it again changes nothing; a 401 would fail it.
                Some(user)
            }
            Verdict::Stale | Verdict::Replayed(_) | Verdict::OtherUser => {
                self.challenge(msg, peer, challenge, username, true, now, fx);
                None
            }
            Verdict::Challenge => {
                self.challenge(msg, peer, challenge, username, false, now, fx);
                None
            }
            Verdict::Forbidden => {
                // The log tells the administrator which it was; the answer
                // (403) is the same for all three.
                let event = match config.client(username) {
                    Some(c) if c.secret.is_some() && !c.permits(ip) => "acl-refused",
                    Some(c) if c.secret.is_some() => "auth-failure",
                    _ => "unknown-user",
                };
                self.security_event(fx, event, Some(username.to_string()), peer, None);
                let locks = self.guard.failed(username, ip, now.at);
                if locks.any() {
                    self.auth_locked(locks, username, peer, now, fx);
                }
                self.forbidden(msg, peer, fx);
                None
            }
            Verdict::UriMismatch => {
                self.counters.auth_failures += 1;
                self.reply_stateless(msg, peer, 400, "Digest URI Mismatch", &[], fx);
                None
            }
            Verdict::Malformed => {
                self.counters.auth_failures += 1;
                self.reply_stateless(msg, peer, 400, "Bad Authorization Header", &[], fx);
                None
            }
        }
    }

    /// Is `msg` the REGISTER that made `user`'s current binding?
    fn is_accepted_register(&self, msg: &Message, peer: Peer, user: &str) -> bool {
        msg.method() == Some(&Method::Register)
            && self.registrar.of(user).iter().any(|b| b.made_by(msg, peer))
    }

    /// 403, stateless: unauthenticated rejections are not retransmitted (a
    /// spoofed source would never ACK: that would be an amplifier).
    pub(super) fn forbidden(&mut self, msg: &Message, peer: Peer, fx: &mut Effects) {
        self.counters.auth_failures += 1;
        self.reply_stateless(msg, peer, 403, "Forbidden", &[], fx);
    }

    /// A challenge with a fresh nonce for `user`, offering that client's
    /// algorithms (its `digest=`, else `[general] digest=`) with `qop="auth"`.
    #[allow(clippy::too_many_arguments)]
    fn challenge(
        &mut self,
        msg: &Message,
        peer: Peer,
        kind: Challenge,
        user: &str,
        stale: bool,
        now: Now,
        fx: &mut Effects,
    ) {
        let config = self.config.clone();
        // The client's own `digest=` if it has one; an unknown user gets the
        // general offer (the same as any client without the key).
        let algorithms = config
            .client(user)
            .map_or(&config.general.digest[..], |c| c.digest(&config.general));
        let values = self.auth.challenge(
            &Offered {
                realm: &config.general.realm,
                user,
                algorithms,
                qop: true,
                stale,
            },
            now.system(),
        );
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
        // Challenges are stateless, as in Kamailio: a retransmission just
        // gets a fresh challenge, nothing is retransmitted toward a source
        // that may be spoofed, and no transaction is created for them.
        self.reply_stateless(msg, peer, code, reason, &headers, fx);
    }
}
