//! REGISTER (spec §3): digest with 401, the To user names the client, one
//! binding per client remembering the real source (NAT), persisted off the
//! packet path (a store write in the effects).

use super::identify::Challenge;
use super::{Core, Effects};
use crate::registrar::{self, Outcome};
use crate::sip::{HeaderName, Message};
use crate::store::Write;
use crate::time::Now;
use crate::transport::Peer;

impl Core {
    pub(super) fn on_register(
        &mut self,
        msg: std::sync::Arc<Message>,
        peer: Peer,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some(user) = self.identify(&msg, peer, Challenge::Www, false, now, fx) else {
            return;
        };
        // The authenticated user may only register itself.
        if msg.to().uri.user.as_deref() != Some(user.as_str()) {
            self.forbidden(&msg, peer, fx);
            return;
        }
        let Some(id) = self.new_server_tx(&msg, peer, now, fx) else {
            return;
        };
        let msg = &*msg;
        let now_unix = now.unix();
        let out = &mut fx.out;
        let current = self.registrar.get(&user);
        let outcome = registrar::process(
            &self.config.general,
            msg,
            &user,
            peer,
            current,
            now.at,
            now_unix,
        );
        match outcome {
            Outcome::Bind(mut b) => {
                self.counters.registrations += 1;
                let prev = self.registrar.get(&user);
                let lifetime = b.expires_unix.saturating_sub(now_unix);
                if b.worth_storing(prev, lifetime) {
                    fx.writes.push(Write::PutBinding(b.to_row()));
                } else if let Some(p) = prev {
                    b.stored_expires = p.stored_expires;
                }
                let contact = format!("<{}>;expires={}", b.contact, b.remaining(now.at));
                self.registrar.insert(b);
                self.txns.reply(
                    id,
                    200,
                    "OK",
                    &[(HeaderName::Contact, &contact)],
                    now.at,
                    out,
                );
            }
            Outcome::Unbind => {
                if self.registrar.remove(&user).is_some() {
                    fx.writes.push(Write::DeleteBinding(user.clone()));
                }
                self.txns.reply(id, 200, "OK", &[], now.at, out);
            }
            Outcome::Query => {
                let contact = self
                    .registrar
                    .get(&user)
                    .map(|b| format!("<{}>;expires={}", b.contact, b.remaining(now.at)));
                match contact {
                    Some(c) => {
                        self.txns
                            .reply(id, 200, "OK", &[(HeaderName::Contact, &c)], now.at, out)
                    }
                    None => self.txns.reply(id, 200, "OK", &[], now.at, out),
                }
            }
            Outcome::TooBrief(min) => {
                let min = min.to_string();
                self.txns.reply(
                    id,
                    423,
                    "Interval Too Brief",
                    &[(HeaderName::MinExpires, &min)],
                    now.at,
                    out,
                );
            }
            Outcome::Bad(reason) => self.txns.reply(id, 400, reason, &[], now.at, out),
            Outcome::OutOfOrder => self
                .txns
                .reply(id, 500, "Out Of Order CSeq", &[], now.at, out),
        }
    }
}
