//! A request another node sends for a device whose flow this node holds
//! (`core/cluster.rs` tells which): relayed over the device's own flow,
//! record-routed, tracked as a dialog so that in-dialog requests pass the
//! same checks as any call's (a *node leg*: no CDR and no media decision
//! here; the node where the call entered does both).

use std::sync::Arc;

use super::{Ctx, Hop};
use crate::calls::{Call, State};
use crate::core::{Core, Effects};
use crate::sip::{Message, Method};
use crate::time::Now;
use crate::transport::Peer;

impl Core {
    /// A request from another node for client `aor`'s device named by the
    /// Request-URI: relayed over that device's flow.
    pub(in crate::core) fn relay_for_node(
        &mut self,
        msg: Arc<Message>,
        peer: Peer,
        aor: String,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some(id) = self.new_server_tx(&msg, peer, now, fx) else {
            return;
        };
        let out = &mut fx.out;
        let ruri = msg.request_uri().unwrap_or("");
        let device = self
            .registrar
            .of(&aor)
            .iter()
            .filter(|b| b.held_by.is_none() && b.reachable())
            .find(|b| b.contact == ruri)
            .map(|b| (b.source, b.contact.clone()));
        let Some((dest, contact)) = device else {
            // Gone meanwhile (expired, unregistered, taken over).
            self.txns
                .reply(id, 480, "Temporarily Unavailable", &[], now.at, out);
            return;
        };
        let invite = msg.method() == Some(&Method::Invite);
        if invite {
            if self.calls.get(msg.call_id()).is_some() {
                self.txns.reply(id, 482, "Loop Detected", &[], now.at, out);
                return;
            }
            if self.refuse_when_calls_full(id, now, out) {
                return;
            }
            let node = self
                .nodes
                .values()
                .find(|n| n.addr == Some(peer.addr))
                .map(|n| n.name.clone())
                .unwrap_or_default();
            let mut call = Call::new(&msg, peer, now.at, now.unix_ms);
            call.caller = format!("node:{node}");
            call.target = aor.clone();
            call.dialed = aor.clone();
            call.state = State::Trying;
            call.node_leg = true;
            self.calls.insert(call);
        }
        let mut hop = Hop::to(aor, dest, contact.clone());
        hop.device = Some(contact);
        let mut ctx = Ctx::new(id, msg.clone(), peer, vec![hop]);
        ctx.record_route = invite || msg.method() == Some(&Method::Subscribe);
        ctx.pop_routes = self.routes_to_me(&msg);
        ctx.strip_identity = false;
        if invite {
            ctx.call_id = Some(msg.call_id().to_string());
        }
        self.start_ctx(ctx, now, fx);
    }
}
