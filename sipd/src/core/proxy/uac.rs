//! Requests sipd sends as a user agent itself: when a branch it gave up on
//! answers 2xx anyway, that dialog is ended with an ACK and a BYE; a call
//! sipd ends itself (no media for `media_timeout`) gets a BYE at each end,
//! in the name of the other, with the next CSeq of that end.

use super::{hostport, Ctx, Hop, BRANCH_PREFIX, NO_BRANCH};
use crate::core::{Core, Effects};
use crate::sip::{HeaderName, Message, Method, RequestBuilder};
use crate::time::Now;
use crate::transaction::Owner;
use crate::transport::Out;

impl Core {
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
        let caller_from = call
            .from_presented
            .clone()
            .unwrap_or_else(|| call.from_original.clone());
        let ends = [
            // To the callee, from the caller.
            (
                callee_peer,
                call.callee_contact.clone(),
                call.callee_routes.clone(),
                caller_from,
                call.callee_to.clone(),
                call.caller_cseq.saturating_add(1),
            ),
            // To the caller, from the callee.
            (
                call.caller_peer,
                call.caller_contact.clone(),
                call.caller_routes.clone(),
                call.callee_to.clone(),
                call.from_original.clone(),
                call.callee_cseq.saturating_add(1),
            ),
        ];
        let call_id = call.call_id.clone();
        for (dest, contact, routes, from, to, cseq) in ends {
            let Some(contact) = contact else {
                continue;
            };
            let local = hostport(self.local.addr_for(&dest));
            let branch = format!("{BRANCH_PREFIX}{}", self.rng.token());
            let mut b = RequestBuilder::new(&Method::Bye, &contact.to_string())
                .header(
                    HeaderName::Via,
                    &format!(
                        "SIP/2.0/{} {local};branch={branch}",
                        dest.transport.via_name()
                    ),
                )
                .header(HeaderName::MaxForwards, "70");
            if !routes.is_empty() {
                let r: Vec<String> = routes.iter().map(|u| format!("<{u}>")).collect();
                b = b.header(HeaderName::Route, &r.join(", "));
            }
            let data = b
                .header(HeaderName::From, &from)
                .header(HeaderName::To, &to)
                .header(HeaderName::CallId, &call_id)
                .header(HeaderName::CSeq, &format!("{cseq} BYE"))
                .header(HeaderName::Reason, "SIP;cause=408;text=\"no media\"")
                .build();
            let owner = Owner {
                ctx: 0,
                branch: NO_BRANCH,
            };
            self.txns
                .create_client(owner, branch, &Method::Bye, data, dest, now.at, &mut fx.out);
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
        let local = hostport(self.local.addr_for(&hop.dest));
        let seq = ctx.req.cseq().seq;
        for (method, cseq) in [(Method::Ack, seq), (Method::Bye, seq.saturating_add(1))] {
            let branch = format!("{BRANCH_PREFIX}{}", self.rng.token());
            let data = RequestBuilder::new(&method, &contact)
                .header(
                    HeaderName::Via,
                    &format!(
                        "SIP/2.0/{} {local};branch={branch}",
                        hop.dest.transport.via_name()
                    ),
                )
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, &from)
                .header(HeaderName::To, &to)
                .header(HeaderName::CallId, ctx.req.call_id())
                .header(HeaderName::CSeq, &format!("{cseq} {method}"))
                .build();
            if method == Method::Ack {
                fx.out.push(Out::request(hop.dest, data));
            } else {
                let owner = Owner {
                    ctx: 0,
                    branch: NO_BRANCH,
                };
                self.txns.create_client(
                    owner,
                    branch,
                    &method,
                    data,
                    hop.dest,
                    now.at,
                    &mut fx.out,
                );
            }
        }
    }
}
