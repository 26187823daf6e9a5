//! Requests inside a dialog (To tag present) and the ACK for a 2xx: which
//! dialog they belong to, which end sent them, and where the other end is
//! (its real transport address, NAT-safe). sipd relays only within dialogs
//! it knows or, for dialogs it record-routed before a restart, to clients
//! it knows: it is no open relay for requests that merely carry a To tag.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{uri_dest, Ctx, Hop};
use crate::calls::{Disposition, State};
use crate::core::{Core, Effects};
use crate::sip::{HeaderName, Message, Method, Uri};
use crate::time::Now;
use crate::transaction::TxId;
use crate::transport::{Out, Peer};

impl Core {
    /// Where an in-dialog request goes and which headers change on the way,
    /// or `None` when sipd will not relay it.
    ///
    /// A request of a call sipd tracks (Call-ID and both tags match) goes to
    /// the other party's real transport address (NAT-safe), or to the next
    /// Route after ours. Anything else must carry a Route naming us (it is
    /// in a dialog we record-routed, e.g. before a restart) and may only go
    /// to a known client (a registration or a static host); an INVITE of an
    /// unknown dialog only from a known client and never to a gateway.
    /// Also says whether the request belongs to a call sipd tracks.
    fn dialog_hop(&self, msg: &Message, peer: &Peer) -> Option<(usize, Hop, bool)> {
        let pops = self.routes_to_me(msg);
        let mut routes = msg.routes().ok().unwrap_or_default();
        let mut hop = Hop {
            ruri: None,
            ..Hop::to(String::new(), *peer, String::new())
        };
        // RFC 3261 §16.4: a strict router put our Record-Route URI into the
        // Request-URI; the real target is the last Route.
        let ruri_is_me = msg
            .request_uri()
            .and_then(|u| Uri::parse(u).ok())
            .is_some_and(|u| u.user.is_none() && self.local.is_me(&u.host, u.port));
        if ruri_is_me && pops == 0 {
            if let Some(last) = routes.pop() {
                hop.ruri = Some(last.uri.to_string());
                let rest: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
                let rest = (!rest.is_empty()).then(|| rest.join(", "));
                hop.req_set.push((HeaderName::Route, rest));
            }
        }
        let via_us = pops > 0 || hop.ruri.is_some();
        let from_tag = msg.from().tag().unwrap_or("");
        let to_tag = msg.to().tag().unwrap_or("");
        let call = self.calls.get(msg.call_id()).filter(|c| {
            let callee = c.callee_tag.as_deref();
            (from_tag == c.caller_tag && callee.is_none_or(|t| t == to_tag))
                || (to_tag == c.caller_tag && callee == Some(from_tag))
        });
        let next_route = routes.get(pops).and_then(|r| uri_dest(&r.uri));
        let dest = match call {
            Some(call) => {
                if from_tag == call.caller_tag {
                    if let Some(p) = &call.from_presented {
                        hop.req_set.push((HeaderName::From, Some(p.clone())));
                        hop.resp_set
                            .push((HeaderName::From, call.from_original.clone()));
                    }
                    hop.target = call.target.clone();
                    next_route.or(call.callee_peer)
                } else {
                    if let Some(p) = &call.from_presented {
                        hop.req_set
                            .push((HeaderName::To, Some(call.from_original.clone())));
                        hop.resp_set.push((HeaderName::To, p.clone()));
                    }
                    hop.target = call.caller.clone();
                    next_route.or(Some(call.caller_peer))
                }
            }
            None => {
                if !via_us {
                    return None;
                }
                let dest = next_route.or_else(|| {
                    let target = hop.ruri.as_deref().or(msg.request_uri());
                    let u = target.and_then(|u| Uri::parse(u).ok())?;
                    let addr = uri_dest(&u).map(|p| p.addr);
                    self.registrar
                        .by_contact(&u.to_string(), addr)
                        .map(|b| b.source)
                        .or_else(|| uri_dest(&u).filter(|_| !self.local.is_me(&u.host, u.port)))
                })?;
                let target = self.known_client(dest.addr)?;
                if msg.method() == Some(&Method::Invite) {
                    let from_known = self.known_client(peer.addr).is_some();
                    let to_gateway = self
                        .config
                        .client(&target)
                        .is_some_and(|c| c.role == crate::config::Role::Gateway);
                    if !from_known || to_gateway {
                        return None;
                    }
                }
                hop.target = target;
                Some(dest)
            }
        };
        hop.dest = dest?;
        Some((pops, hop, call.is_some()))
    }

    /// The client at this transport address: a static host or a registration.
    fn known_client(&self, addr: SocketAddr) -> Option<String> {
        self.config
            .by_source(addr)
            .map(|c| c.name.clone())
            .or_else(|| self.registrar.by_source(addr).map(|b| b.name.clone()))
    }

    /// A request inside a dialog (To tag present): loose routing.
    pub(in crate::core) fn in_dialog(
        &mut self,
        id: TxId,
        msg: Arc<Message>,
        peer: Peer,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some((pops, hop, tracked)) = self.dialog_hop(&msg, &peer) else {
            // Not ours to relay: answered once, without retransmissions.
            self.txns
                .reply(id, 404, "Not Found", &[], now.at, &mut fx.out);
            self.txns.drop_server(id);
            return;
        };
        if msg.method() == Some(&Method::Bye) {
            // Only a BYE of the call itself (Call-ID and both tags) ends it.
            let answered = tracked
                && self
                    .calls
                    .get(msg.call_id())
                    .is_some_and(|c| c.state == State::Answered && c.callee_tag.is_some());
            if answered {
                let call_id = msg.call_id().to_string();
                self.end_call(&call_id, Disposition::Answered, 200, now, fx);
            }
        }
        let mut ctx = Ctx::new(id, msg, peer, vec![hop]);
        ctx.pop_routes = pops;
        ctx.in_dialog = true;
        self.start_ctx(ctx, now, fx);
    }

    /// ACK for a 2xx: forwarded statelessly along the dialog's route.
    pub(in crate::core) fn forward_ack(&mut self, msg: Message, peer: Peer, fx: &mut Effects) {
        if msg.to().tag().is_none() || msg.max_forwards() == Some(0) {
            return;
        }
        let Some((pops, hop, _)) = self.dialog_hop(&msg, &peer) else {
            return;
        };
        let msg = Arc::new(msg);
        let mut ctx = Ctx::new(0, msg, peer, Vec::new());
        ctx.pop_routes = pops;
        let (_, data) = self.build_forward(&ctx, &hop);
        fx.out.push(Out::request(hop.dest, data));
    }
}
