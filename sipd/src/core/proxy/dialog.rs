//! Requests inside a dialog (To tag present) and the ACK for a 2xx: which
//! dialog they belong to, which end sent them, and where the other end is
//! (its real transport address, NAT-safe). sipd relays only within dialogs
//! it knows or, for dialogs it record-routed before a restart, between
//! clients it knows: it is no open relay for requests that merely carry a
//! To tag, and a party to a call cannot re-target it (toll fraud through
//! an established dialog).

use std::net::SocketAddr;
use std::sync::Arc;

use super::{uri_dest, Ctx, Hop};
use crate::calls::{Call, Disposition, State};
use crate::core::{Core, Effects};
use crate::media::{CALLEE, CALLER};
use crate::sip::{HeaderName, Message, Method, NameAddr, Uri};
use crate::time::Now;
use crate::transaction::TxId;
use crate::transport::{Out, Peer};

/// Why sipd will not relay an in-dialog request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// No dialog of ours (answered 404, as any unknown dialog).
    Unknown,
    /// A dialog of ours, but the request does not come from one of its
    /// ends or names another target or route than the dialog's (403).
    Forbidden,
}

/// Where an accepted in-dialog request goes.
struct DialogHop {
    pops: usize,
    hop: Hop,
    /// `Some(true)` when it belongs to a call sipd tracks and comes from
    /// its caller, `Some(false)` from its callee.
    from_caller: Option<bool>,
}

/// Two URIs name the same target: scheme, user, host (any case) and port
/// (default 5060, 5061 for sips) equal; parameters do not route here.
fn same_target(a: &Uri, b: &Uri) -> bool {
    let port = |u: &Uri| {
        u.port
            .unwrap_or(if u.scheme_str() == "sips" { 5061 } else { 5060 })
    };
    a.scheme == b.scheme && a.user == b.user && a.host.eq_ignore_case(&b.host) && port(a) == port(b)
}

/// The Route entries beyond sipd are exactly the dialog's route set.
fn same_routes(rest: &[NameAddr], expected: &[Uri]) -> bool {
    rest.len() == expected.len()
        && rest
            .iter()
            .zip(expected)
            .all(|(r, e)| same_target(&r.uri, e))
}

impl Core {
    /// Where an in-dialog request goes and which headers change on the way,
    /// or why sipd will not relay it.
    ///
    /// A request of a call sipd tracks (Call-ID and both tags match) must
    /// come from that end's recorded address (or from the same client at a
    /// newer address), name the other end's remote target as Request-URI
    /// and exactly the dialog's route set beyond us; it goes to the other
    /// end's real transport address (NAT-safe), whatever else it says.
    /// Anything else must carry a Route naming us (it is in a dialog we
    /// record-routed, e.g. before a restart), come from a known client and
    /// may only go to a known client (a registration or a static host); an
    /// INVITE of an unknown dialog never to a gateway.
    fn dialog_hop(&self, msg: &Message, peer: &Peer) -> Result<DialogHop, Refusal> {
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
        if let Some(call) = call {
            let from_caller = from_tag == call.caller_tag;
            let target = hop.ruri.as_deref().or(msg.request_uri());
            let target = target.and_then(|u| Uri::parse(u).ok());
            let rest = routes.get(pops..).unwrap_or_default();
            let tag = (!to_tag.is_empty()).then_some(to_tag);
            let dest = self.tracked_hop(call, from_caller, peer, target.as_ref(), rest, tag)?;
            if from_caller {
                if let Some(p) = &call.from_presented {
                    hop.req_set.push((HeaderName::From, Some(p.clone())));
                    hop.resp_set
                        .push((HeaderName::From, call.from_original.clone()));
                }
                hop.target = call.target.clone();
            } else {
                if let Some(p) = &call.from_presented {
                    hop.req_set
                        .push((HeaderName::To, Some(call.from_original.clone())));
                    hop.resp_set.push((HeaderName::To, p.clone()));
                }
                hop.target = call.caller.clone();
            }
            hop.dest = dest;
            return Ok(DialogHop {
                pops,
                hop,
                from_caller: Some(from_caller),
            });
        }
        // Not a call we track: a dialog we record-routed (before a restart,
        // or a subscription), between clients we know.
        if !via_us || self.known_client(peer.addr).is_none() {
            return Err(Refusal::Unknown);
        }
        let next_route = routes.get(pops).and_then(|r| uri_dest(&r.uri));
        let dest = next_route
            .or_else(|| {
                let target = hop.ruri.as_deref().or(msg.request_uri());
                let u = target.and_then(|u| Uri::parse(u).ok())?;
                let addr = uri_dest(&u).map(|p| p.addr);
                self.registrar
                    .by_contact(&u.to_string(), addr)
                    .map(|b| b.source)
                    .or_else(|| uri_dest(&u).filter(|_| !self.local.is_me(&u.host, u.port)))
            })
            .ok_or(Refusal::Unknown)?;
        let target = self.known_client(dest.addr).ok_or(Refusal::Unknown)?;
        if msg.method() == Some(&Method::Invite) {
            let to_gateway = self
                .config
                .client(&target)
                .is_some_and(|c| c.role == crate::config::Role::Gateway);
            if to_gateway {
                return Err(Refusal::Unknown);
            }
        }
        hop.target = target;
        hop.dest = dest;
        Ok(DialogHop {
            pops,
            hop,
            from_caller: None,
        })
    }

    /// The other end of a tracked call, for a request from one end: the
    /// sender must be that end and name only the other end's target and
    /// the dialog's route set.
    fn tracked_hop(
        &self,
        call: &Call,
        from_caller: bool,
        peer: &Peer,
        target: Option<&Uri>,
        rest: &[NameAddr],
        to_tag: Option<&str>,
    ) -> Result<Peer, Refusal> {
        let (end, end_name, other, contact, routes) = if from_caller {
            // Before the answer, the other end is the branch ringing now:
            // the one of this early dialog (To tag) when several ring.
            let ringing = || {
                let ctx = self.ctxs.get(&call.ctx?)?;
                let tag = to_tag;
                let live = || ctx.live.iter().filter_map(|&b| ctx.branches.get(b));
                live()
                    .find(|b| tag.is_some() && b.to_tag.as_deref() == tag)
                    .or_else(|| live().next())
                    .map(|b| b.hop.dest)
            };
            let other = call.callee_peer.or_else(ringing);
            let contact = call.callee_contact.as_ref();
            (
                Some(call.caller_peer),
                &call.caller,
                other,
                contact,
                &call.callee_routes,
            )
        } else {
            let contact = call.caller_contact.as_ref();
            let other = Some(call.caller_peer);
            (
                call.callee_peer,
                &call.target,
                other,
                contact,
                &call.caller_routes,
            )
        };
        let from_end = end.is_some_and(|e| e.addr == peer.addr)
            || self.known_client(peer.addr).as_ref() == Some(end_name);
        if !from_end || !same_routes(rest, routes) {
            return Err(Refusal::Forbidden);
        }
        if let Some(contact) = contact {
            if !target.is_some_and(|t| same_target(t, contact)) {
                return Err(Refusal::Forbidden);
            }
        }
        other.ok_or(Refusal::Unknown)
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
        let DialogHop {
            pops,
            hop,
            from_caller,
        } = match self.dialog_hop(&msg, &peer) {
            Ok(h) => h,
            Err(why) => {
                let (code, reason) = match why {
                    Refusal::Unknown => (404, "Not Found"),
                    Refusal::Forbidden => {
                        self.counters.dialog_refused += 1;
                        tracing::debug!(
                            "refused {} in dialog {} from {}: not from its ends or not to its target",
                            msg.method().map(|m| m.as_str()).unwrap_or("?"),
                            msg.call_id(),
                            peer.addr
                        );
                        (403, "Forbidden")
                    }
                };
                // Not ours to relay: answered once, without retransmissions.
                self.txns.reply(id, code, reason, &[], now.at, &mut fx.out);
                self.txns.drop_server(id);
                return;
            }
        };
        let tracked = from_caller.is_some();
        if let Some(from_caller) = from_caller {
            self.target_refresh(&msg, peer, from_caller);
            if let Some(call) = self.calls.get_mut(msg.call_id()) {
                let seq = msg.cseq().seq;
                let cseq = if from_caller {
                    &mut call.caller_cseq
                } else {
                    &mut call.callee_cseq
                };
                *cseq = (*cseq).max(seq);
            }
        }
        let media_from = from_caller.map(|c| if c { CALLER } else { CALLEE });
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
        ctx.media_from = media_from;
        self.start_ctx(ctx, now, fx);
    }

    /// A re-INVITE or UPDATE from an end of a tracked call, accepted:
    /// that end's remote target and address are now the ones it gives.
    fn target_refresh(&mut self, msg: &Message, peer: Peer, from_caller: bool) {
        if !matches!(msg.method(), Some(Method::Invite | Method::Update)) {
            return;
        }
        let contact = msg.contact_uri();
        let Some(call) = self.calls.get_mut(msg.call_id()) else {
            return;
        };
        if from_caller {
            call.caller_peer = peer;
            if contact.is_some() {
                call.caller_contact = contact;
            }
        } else {
            call.callee_peer = Some(peer);
            if contact.is_some() {
                call.callee_contact = contact;
            }
        }
    }

    /// ACK for a 2xx: forwarded statelessly along the dialog's route.
    pub(in crate::core) fn forward_ack(&mut self, msg: Message, peer: Peer, fx: &mut Effects) {
        if msg.to().tag().is_none() || msg.max_forwards() == Some(0) {
            return;
        }
        let Ok(DialogHop {
            pops,
            hop,
            from_caller,
        }) = self.dialog_hop(&msg, &peer)
        else {
            return;
        };
        let msg = Arc::new(msg);
        let mut ctx = Ctx::new(0, msg, peer, Vec::new());
        ctx.pop_routes = pops;
        // An ACK may carry the answer to an offer in a 2xx (late offer).
        ctx.media_from = from_caller.map(|c| if c { CALLER } else { CALLEE });
        ctx.media_body = Some(self.request_media(&ctx, fx));
        let (_, data) = self.build_forward(&ctx, &hop);
        fx.out.push(Out::request(hop.dest, data));
    }
}
