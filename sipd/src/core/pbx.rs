//! PBX features (spec §5): forwarding star codes with voice guidance, and
//! call pickup `*11` (spec §5.1). Forwarding set by phone is written to the
//! store before it is confirmed: the answer waits ([`Deferred`]) for the
//! server to report the commit through [`Core::resume`]; the packet path
//! does not wait.

use std::sync::Arc;

use super::proxy::Hop;
use super::{Core, Effects};
use crate::calls::State;
use crate::routing::features::{self, Announce, Feature, Outcome};
use crate::sip::{HeaderName, Message};
use crate::time::Now;
use crate::transaction::TxId;
use crate::transport::Peer;

/// A feature answer waiting for the store to commit.
pub(super) struct Deferred {
    id: TxId,
    msg: Arc<Message>,
    peer: Peer,
    outcome: Outcome,
}

impl Core {
    pub(super) fn feature(
        &mut self,
        id: TxId,
        msg: Arc<Message>,
        peer: Peer,
        caller: &str,
        f: Feature,
        now: Now,
        fx: &mut Effects,
    ) {
        if f == Feature::Pickup {
            self.pickup(id, msg, peer, caller, now, fx);
            return;
        }
        let config = self.config.clone();
        let Some(client) = config.client(caller) else {
            return;
        };
        let (current, _) = self.forwards.effective(client);
        let Some((change, outcome)) = features::decide(&config, client, &f, &current) else {
            return;
        };
        if let Some(ov) = change {
            let token = self.change_forwarding(caller, ov, now, fx);
            self.deferred.insert(
                token,
                Deferred {
                    id,
                    msg,
                    peer,
                    outcome,
                },
            );
            return;
        }
        self.announce(id, msg, peer, outcome, now, fx);
    }

    /// The store committed (or failed) the write of `token`: forwarding
    /// bookkeeping, then the answer that waited for it, if any.
    pub fn resume(&mut self, token: u64, result: Result<(), String>, now: Now, fx: &mut Effects) {
        self.forwarding_settled(token, result.is_ok());
        let Some(d) = self.deferred.remove(&token) else {
            return;
        };
        if self.txns.server(d.id).is_none_or(|tx| tx.is_final()) {
            // Cancelled (or gone) while the store was writing.
            self.calls.remove(d.msg.call_id());
            return;
        }
        match result {
            Ok(()) => self.announce(d.id, d.msg, d.peer, d.outcome, now, fx),
            Err(e) => {
                tracing::error!("forwarding not saved: {e}");
                self.calls.remove(d.msg.call_id());
                self.txns
                    .reply(d.id, 500, "Forwarding Not Saved", &[], now.at, &mut fx.out);
            }
        }
    }

    /// Voice guidance: the INVITE goes on to a mediagate with the outcome's
    /// Request-URI user; without one, `480` with the outcome as reason.
    fn announce(
        &mut self,
        id: TxId,
        msg: Arc<Message>,
        peer: Peer,
        outcome: Outcome,
        now: Now,
        fx: &mut Effects,
    ) {
        let registrar = &self.registrar;
        let locate = |name: &str| registrar.locate(name);
        match features::announce(&self.config, &locate, self.gateways.down(), &outcome) {
            Announce::Reply { code, reason } => {
                // Answered by sipd itself: not a call.
                self.calls.remove(msg.call_id());
                self.txns.reply(id, code, &reason, &[], now.at, &mut fx.out)
            }
            Announce::Mediagate { target, dest, ruri } => {
                let hop = Hop::to(target, dest, ruri);
                self.proxy_hops(id, msg, peer, vec![hop], true, now, fx);
            }
        }
    }

    /// `*11`: the oldest call ringing at another member of the picker's group.
    fn pickup(
        &mut self,
        id: TxId,
        msg: Arc<Message>,
        peer: Peer,
        picker: &str,
        now: Now,
        fx: &mut Effects,
    ) {
        let config = self.config.clone();
        let group = config.client(picker).and_then(|c| c.accountcode.clone());
        let ringing = group.and_then(|g| {
            self.calls
                .iter()
                .filter(|c| c.state == State::Ringing && c.ctx.is_some() && c.target != picker)
                .filter(|c| {
                    config
                        .client(&c.target)
                        .is_some_and(|t| t.accountcode.as_deref() == Some(g.as_str()))
                })
                .min_by_key(|c| c.started)
                .map(|c| c.call_id.clone())
        });
        let Some(call) = ringing.and_then(|c| self.calls.get(&c)).cloned() else {
            self.txns
                .reply(id, 404, "Nothing To Pick Up", &[], now.at, &mut fx.out);
            return;
        };
        if call.caller_replaces {
            // RFC 3891 / RFC 5359 §2.16: the caller replaces its early
            // dialog with B by a dialog with the picker.
            let Some(ctx) = call.ctx.and_then(|c| self.ctx_request(c)) else {
                self.txns
                    .reply(id, 404, "Nothing To Pick Up", &[], now.at, &mut fx.out);
                return;
            };
            let contact = ctx.contact_uri().map(|u| u.to_string());
            let Some(contact) = contact else {
                self.txns
                    .reply(id, 404, "Nothing To Pick Up", &[], now.at, &mut fx.out);
                return;
            };
            // RFC 3891 §3: the recipient (the caller) compares to-tag with
            // its local tag (its own From tag) and from-tag with the remote
            // one (B's early To tag), as PJSIP's pjsip_ua_find_dialog does.
            let replaces = format!(
                "{};to-tag={};from-tag={};early-only",
                call.call_id,
                call.caller_tag,
                call.callee_tag
                    .clone()
                    .or_else(|| call.ctx.and_then(|c| self.ringing_tag(c)))
                    .unwrap_or_default()
            );
            let mut hop = Hop::to(call.caller.clone(), call.caller_peer, contact);
            hop.req_add.push((HeaderName::Replaces, replaces));
            // The picker's INVITE is the call from now on.
            if let Some(c) = self.calls.get_mut(msg.call_id()) {
                c.target = call.caller.clone();
            }
            self.proxy_hops(id, msg, peer, vec![hop], true, now, fx);
        } else {
            // The caller cannot replace: move its ringing call to the picker
            // ourselves, with auto-answer hints, to the device that dialed.
            let registrar = &self.registrar;
            let locate = |name: &str| registrar.locate_from(name, peer.addr);
            let reach = config
                .client(picker)
                .and_then(|c| crate::routing::reach::reach(c, picker, &locate));
            // The picked call goes on under its own record.
            self.calls.remove(msg.call_id());
            let Some(loc) = reach else {
                self.txns
                    .reply(id, 480, "Temporarily Unavailable", &[], now.at, &mut fx.out);
                return;
            };
            let local = self.local.addr_for(&loc.dest);
            let mut hop = Hop::to(picker.to_string(), loc.dest, loc.uri);
            hop.req_add.push((HeaderName::AnswerMode, "Auto".into()));
            hop.req_add.push((
                HeaderName::CallInfo,
                format!("<sip:{local}>;answer-after=0"),
            ));
            if let Some(cid) = call.ctx {
                self.redirect_ctx(cid, hop, now, fx);
            }
            self.txns
                .reply(id, 480, "Picked Up", &[], now.at, &mut fx.out);
        }
    }
}
