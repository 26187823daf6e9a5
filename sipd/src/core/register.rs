//! REGISTER (spec §3, RFC 3261 §10, RFC 5626): digest with 401, the To user
//! names the client, up to `max_contacts` bindings per client (one per
//! device) remembering each device's real source (NAT) and flow; the 200
//! lists every binding; the whole set persisted off the packet path (a
//! store write in the effects).

use super::identify::Challenge;
use super::{Core, Effects};
use crate::registrar::{self, Binding, Outcome};
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
        let config = self.config.clone();
        let (max_contacts, qualify) = config.client(&user).map_or((1, 0), |c| {
            (c.max_contacts(&config.general), c.qualify(&config.general))
        });
        let outcome = registrar::process(
            &config.general,
            max_contacts as usize,
            msg,
            &user,
            peer,
            self.registrar.of(&user),
            now.at,
            now_unix,
        );
        let out = &mut fx.out;
        match outcome {
            Outcome::Update(up) => {
                let prev: Vec<Binding> = self.registrar.of(&user).to_vec();
                let mut bindings = up.bindings;
                let mut store =
                    up.dropped.len() + up.removed.len() > 0 || bindings.len() != prev.len();
                for b in &mut bindings {
                    let old = prev.iter().find(|p| p.id != 0 && p.id == b.id);
                    let lifetime = b.expires_unix.saturating_sub(now_unix);
                    if b.worth_storing(old, lifetime) {
                        store = true;
                    } else if let Some(p) = old {
                        b.stored_expires = p.stored_expires;
                    }
                }
                if !bindings.is_empty() {
                    self.counters.registrations += 1;
                }
                for d in &up.dropped {
                    tracing::info!(
                        client = %user,
                        contact = %d.contact,
                        "max_contacts ({max_contacts}) reached: the oldest binding is dropped"
                    );
                }
                // Devices another node held that this REGISTER replaced
                // (under another Contact) or removed: deleted from the
                // store here, the other node hears of it.
                let forget: Vec<String> = prev
                    .iter()
                    .filter(|p| p.held_by.is_some())
                    .filter(|p| !bindings.iter().any(|b| b.contact == p.contact))
                    .map(|p| p.contact.clone())
                    .collect();
                if store {
                    for b in &mut bindings {
                        b.stored_expires = b.expires_unix;
                    }
                    if bindings.is_empty() {
                        fx.writes.push(Write::DeleteBinding(user.clone()));
                    } else {
                        let rows = bindings.iter().map(Binding::to_row).collect();
                        fx.writes.push(Write::PutBindings(user.clone(), rows));
                    }
                }
                if !forget.is_empty() {
                    fx.writes.push(Write::ForgetBindings {
                        name: user.clone(),
                        contacts: forget,
                    });
                }
                // Every binding with its expiry; those this REGISTER pushed
                // out listed with expires=0 so that the device knows.
                let mut contacts: Vec<String> = bindings
                    .iter()
                    .map(|b| b.contact_value(b.remaining(now.at)))
                    .collect();
                contacts.extend(up.dropped.iter().map(|b| b.contact_value(0)));
                let contact = contacts.join(", ");
                let mut headers: Vec<(HeaderName, &str)> = Vec::with_capacity(2);
                if !contact.is_empty() {
                    headers.push((HeaderName::Contact, &contact));
                }
                if up.outbound {
                    headers.push((HeaderName::Require, "outbound"));
                }
                self.registrar.set(&user, bindings, qualify, now.at);
                self.txns.reply(id, 200, "OK", &headers, now.at, out);
            }
            Outcome::Query => {
                let contact: Vec<String> = self
                    .registrar
                    .of(&user)
                    .iter()
                    .map(|b| b.contact_value(b.remaining(now.at)))
                    .collect();
                let contact = contact.join(", ");
                let outbound = self
                    .registrar
                    .of(&user)
                    .iter()
                    .any(|b| b.outbound && b.source == peer);
                let mut headers: Vec<(HeaderName, &str)> = Vec::with_capacity(2);
                if !contact.is_empty() {
                    headers.push((HeaderName::Contact, &contact));
                }
                if outbound {
                    headers.push((HeaderName::Require, "outbound"));
                }
                self.txns.reply(id, 200, "OK", &headers, now.at, out);
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
