//! The forwarded request for one hop (RFC 3261 §16.6) and the responses
//! passed back upstream, as edits on the received bytes: Via, Request-URI,
//! Route, Record-Route, Max-Forwards, our credentials removed, identity
//! headers of user clients replaced by ours.

use super::{loop_tag, push_hostport, Ctx, Hop};
use crate::core::{via_with_received, Core, Effects};
use crate::sip::auth::AuthParams;
use crate::sip::{push_hex, HeaderName, Message};
use crate::transport::{Peer, Transport};

impl Core {
    /// The forwarded request for `hop` and the branch of its Via.
    pub(super) fn build_forward(&mut self, ctx: &Ctx, hop: &Hop) -> (String, Vec<u8>) {
        let req = &ctx.req;
        let local = self.local.addr_for(&hop.dest);
        let mut branch = loop_tag(req);
        push_hex(&mut branch, self.rng.next_u64(), 16);
        let mut via = String::with_capacity(branch.len() + 64);
        via.push_str("SIP/2.0/");
        via.push_str(hop.dest.transport.via_name());
        via.push(' ');
        push_hostport(&mut via, local);
        via.push_str(";branch=");
        via.push_str(&branch);
        // The caller's Via with received/rport: made once per context (the
        // server transaction has it), else here (a forwarded ACK).
        let top_via = if ctx.top_via.is_empty() {
            std::borrow::Cow::Owned(via_with_received(req.top_via(), &ctx.peer))
        } else {
            std::borrow::Cow::Borrowed(ctx.top_via.as_str())
        };
        let mut e = req
            .edit()
            .set_top_via(&top_via)
            .push_via(&via)
            .decrement_max_forwards();
        if let Some(u) = &hop.ruri {
            e = e.set_request_uri(u);
        }
        for _ in 0..ctx.pop_routes {
            e = e.pop_route();
        }
        if ctx.record_route {
            let rr = self.record_route(&ctx.peer, &hop.dest);
            e = e.push_record_route(&rr);
        }
        // Credentials for our realm stay here (they were for us); those for
        // other realms belong to the proxies downstream (RFC 3261 §22.3).
        let realm = self.config.general.realm.as_str();
        for name in [HeaderName::ProxyAuthorization, HeaderName::Authorization] {
            if req.headers(&name).next().is_some() {
                e = e.remove_header_if(name, |v| {
                    AuthParams::parse(v).is_none_or(|c| c.get("realm").is_none_or(|r| r == realm))
                });
            }
        }
        if ctx.strip_identity {
            // A phone may not assert who it is or where a call came from:
            // sipd adds its own P-Asserted-Identity and Diversion below.
            for name in [
                HeaderName::PAssertedIdentity,
                HeaderName::PPreferredIdentity,
                HeaderName::Diversion,
                HeaderName::Other("remote-party-id".into()),
            ] {
                e = e.remove_header(name);
            }
        }
        for (n, v) in &hop.req_set {
            e = match v {
                Some(v) => e.set_header(n.clone(), v),
                None => e.remove_header(n.clone()),
            };
        }
        for (n, v) in &hop.req_add {
            e = e.add_header(n.clone(), v);
        }
        if let Some(Some(body)) = &ctx.media_body {
            e = e.set_body(body.clone());
        }
        (branch, e.finish())
    }

    /// Record-Route value: one entry, or two when the request changes
    /// transport or local address on its way through (RFC 5658: the top
    /// one faces the callee, the bottom one the caller).
    pub(super) fn record_route(&self, from: &Peer, to: &Peer) -> String {
        let entry = |s: &mut String, p: &Peer| {
            s.push_str("<sip:");
            push_hostport(s, self.local.addr_for(p));
            s.push_str(match p.transport {
                Transport::Tcp => ";transport=tcp;lr>",
                Transport::Tls => ";transport=tls;lr>",
                Transport::Ws => ";transport=ws;lr>",
                Transport::Wss => ";transport=wss;lr>",
                Transport::Udp => ";lr>",
            });
        };
        let mut s = String::with_capacity(96);
        entry(&mut s, to);
        let one = s.len();
        s.push_str(", ");
        entry(&mut s, from);
        if s[one + 2..] == s[..one] {
            s.truncate(one);
        }
        s
    }

    /// A response from a branch passed upstream: our Via off, rewrites
    /// applied, its SDP rewritten when the call's media is relayed.
    pub(super) fn upstream_bytes(
        &mut self,
        ctx: &Ctx,
        resp: &Message,
        hop: Option<&Hop>,
        fx: &mut Effects,
    ) -> Vec<u8> {
        let body = match (ctx.media_from, hop) {
            // The answer comes from the other end, where the branch went.
            (Some(from), Some(h)) => {
                let callee = h.media_peer.as_ref().unwrap_or(&h.dest);
                if !ctx.in_dialog {
                    // A callee behind another node answers through it; its
                    // media (and that of its later requests) comes from
                    // its own address.
                    let m = self.calls.get_mut(ctx.req.call_id());
                    if let Some(m) = m.and_then(|c| c.media.as_mut()) {
                        m.callee_ip = h.media_peer.map(|p| p.addr.ip());
                    }
                }
                self.media_body(ctx.req.call_id(), 1 - from, callee.addr.ip(), resp, fx)
            }
            _ => None,
        };
        let mut e = resp.edit().pop_via();
        if let Some(h) = hop {
            for (n, v) in &h.resp_set {
                e = e.set_header(n.clone(), v);
            }
        }
        if let Some(b) = body {
            e = e.set_body(b);
        }
        e.finish()
    }

    /// The request's SDP rewritten for the relay (`None`: as received).
    pub(super) fn request_media(&mut self, ctx: &Ctx, fx: &mut Effects) -> Option<Vec<u8>> {
        let from = ctx.media_from?;
        self.media_body(ctx.req.call_id(), from, ctx.peer.addr.ip(), &ctx.req, fx)
    }
}
