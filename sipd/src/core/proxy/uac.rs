//! Requests sipd sends as a user agent itself: when a branch it gave up on
//! answers 2xx anyway, that dialog is ended with an ACK and a BYE; a call
//! sipd ends itself (no media for `media_timeout`) gets a BYE at each end,
//! in the name of the other, with the next CSeq of that end.

use super::{hostport, Ctx, Hop, BRANCH_PREFIX, NO_BRANCH};
use crate::core::{Core, Effects};
use crate::sip::{HeaderName, Message, Method, RequestBuilder, Uri};
use crate::time::Now;
use crate::transaction::Owner;
use crate::transport::Out;
use crate::transport::Peer;

/// One request sipd sends in a dialog as a user agent.
struct UacRequest<'a> {
    method: Method,
    target: &'a str,
    dest: Peer,
    routes: &'a [Uri],
    from: &'a str,
    to: &'a str,
    call_id: &'a str,
    cseq: u32,
    extra: &'a [(HeaderName, &'a str)],
}

impl Core {
    /// Send `r`: an ACK as it is, anything else in a client transaction
    /// of its own whose answers go nowhere.
    fn send_uac(&mut self, r: UacRequest<'_>, now: Now, fx: &mut Effects) {
        let local = hostport(self.local.addr_for(&r.dest));
        let branch = format!("{BRANCH_PREFIX}{}", self.rng.token());
        let mut b = RequestBuilder::new(&r.method, r.target)
            .header(
                HeaderName::Via,
                &format!(
                    "SIP/2.0/{} {local};branch={branch}",
                    r.dest.transport.via_name()
                ),
            )
            .header(HeaderName::MaxForwards, "70");
        if !r.routes.is_empty() {
            let routes: Vec<String> = r.routes.iter().map(|u| format!("<{u}>")).collect();
            b = b.header(HeaderName::Route, &routes.join(", "));
        }
        b = b
            .header(HeaderName::From, r.from)
            .header(HeaderName::To, r.to)
            .header(HeaderName::CallId, r.call_id)
            .header(HeaderName::CSeq, &format!("{} {}", r.cseq, r.method));
        for (n, v) in r.extra {
            b = b.header(n.clone(), v);
        }
        let data = b.build();
        if r.method == Method::Ack {
            fx.out.push(Out::request(r.dest, data));
        } else {
            let owner = Owner {
                ctx: 0,
                branch: NO_BRANCH,
            };
            self.txns
                .create_client(owner, branch, &r.method, data, r.dest, now.at, &mut fx.out);
        }
    }

    /// End an answered call from the middle: a BYE to the callee as if
    /// from the caller, and one to the caller as if from the callee, each
    /// to that end's remote target along the dialog's route set.
    pub(in crate::core) fn hang_up_call(&mut self, call_id: &str, now: Now, fx: &mut Effects) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let Some(callee_peer) = call.callee_peer else {
            return;
        };
        let call = call.clone();
        let caller_from = call
            .from_presented
            .as_deref()
            .unwrap_or(&call.from_original);
        let ends = [
            // To the callee, from the caller.
            (
                callee_peer,
                &call.callee_contact,
                &call.callee_routes,
                caller_from,
                call.callee_to.as_str(),
                call.caller_cseq.saturating_add(1),
            ),
            // To the caller, from the callee.
            (
                call.caller_peer,
                &call.caller_contact,
                &call.caller_routes,
                call.callee_to.as_str(),
                call.from_original.as_str(),
                call.callee_cseq.saturating_add(1),
            ),
        ];
        let reason = [(HeaderName::Reason, "SIP;cause=408;text=\"no media\"")];
        for (dest, contact, routes, from, to, cseq) in ends {
            let Some(contact) = contact else {
                continue;
            };
            let target = contact.to_string();
            let r = UacRequest {
                method: Method::Bye,
                target: &target,
                dest,
                routes,
                from,
                to,
                call_id: &call.call_id,
                cseq,
                extra: &reason,
            };
            self.send_uac(r, now, fx);
        }
    }

    /// A 2xx from a branch we no longer want: ACK it and send BYE.
    pub(super) fn hang_up_stray(
        &mut self,
        ctx: &Ctx,
        hop: &Hop,
        resp: &Message,
        now: Now,
        fx: &mut Effects,
    ) {
        let contact = resp
            .contact_uri()
            .map(|u| u.to_string())
            .unwrap_or_else(|| hop.ruri.clone().unwrap_or_default());
        let from = hop
            .presented_from
            .clone()
            .unwrap_or_else(|| ctx.req.header(&HeaderName::From).unwrap_or("").to_string());
        let to = resp.header(&HeaderName::To).unwrap_or("").to_string();
        let seq = ctx.req.cseq().seq;
        for (method, cseq) in [(Method::Ack, seq), (Method::Bye, seq.saturating_add(1))] {
            let r = UacRequest {
                method,
                target: &contact,
                dest: hop.dest,
                routes: &[],
                from: &from,
                to: &to,
                call_id: ctx.req.call_id(),
                cseq,
                extra: &[],
            };
            self.send_uac(r, now, fx);
        }
    }
}
