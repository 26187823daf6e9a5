//! Requests sipd sends as a user agent itself: when a branch it gave up on
//! answers 2xx anyway, that dialog is ended with an ACK and a BYE.

use super::{hostport, Ctx, Hop, BRANCH_PREFIX, NO_BRANCH};
use crate::core::{Core, Effects};
use crate::sip::{HeaderName, Message, Method, RequestBuilder};
use crate::time::Now;
use crate::transaction::Owner;
use crate::transport::Out;

impl Core {
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
