//! A new request outside a dialog (not REGISTER): identify the caller,
//! check for loops, ask the router, and turn its plan into the hops of a
//! proxy context (with the callerid rewrites of calls through gateways).

use std::sync::Arc;

use super::{hostport, loop_tag, Ctx, Hop};
use crate::calls::Disposition;
use crate::core::identify::Challenge;
use crate::core::{Core, Effects};
use crate::registrar::Binding;
use crate::routing::router::{self, Attempt, Decision, Plan};
use crate::sip::{HeaderName, Message, Method, Uri};
use crate::time::Now;
use crate::transaction::TxId;
use crate::transport::{Out, Peer};

impl Core {
    /// The calls table is full: the INVITE is refused with `503` and
    /// `Retry-After` (every proxied call is tracked and accounted, so one
    /// that cannot be is never proxied untracked). `true` when refused.
    pub(super) fn refuse_when_calls_full(
        &mut self,
        id: TxId,
        now: Now,
        out: &mut Vec<Out>,
    ) -> bool {
        if !self.calls.is_full() {
            return false;
        }
        self.counters.overload += 1;
        let retry = [(HeaderName::RetryAfter, "30")];
        self.txns
            .reply(id, 503, "Service Unavailable", &retry, now.at, out);
        true
    }

    /// A new request outside a dialog (not REGISTER): identify the caller,
    /// route, proxy.
    pub(in crate::core) fn out_of_dialog(
        &mut self,
        msg: Arc<Message>,
        peer: Peer,
        now: Now,
        fx: &mut Effects,
    ) {
        if let Some(aor) = self.node_request(&msg, &peer) {
            self.relay_for_node(msg, peer, aor, now, fx);
            return;
        }
        let Some(caller) = self.identify(&msg, peer, Challenge::Proxy, true, now, fx) else {
            return;
        };
        let Some(id) = self.new_server_tx(&msg, peer, now, fx) else {
            return;
        };
        let out = &mut fx.out;
        // A request that comes back to us with our own loop tag is a loop.
        let tag = loop_tag(&msg);
        if let Ok(vias) = msg.vias() {
            if vias.iter().any(|v| {
                v.branch().is_some_and(|b| b.starts_with(&tag)) && self.local.is_me(&v.host, v.port)
            }) {
                self.txns.reply(id, 482, "Loop Detected", &[], now.at, out);
                return;
            }
        }
        // A preloaded Route naming us (outbound proxy) is ours to remove.
        let pop_routes = self.routes_to_me(&msg);
        let Some(uri) = msg.request_uri().and_then(|u| Uri::parse(u).ok()) else {
            self.txns
                .reply(id, 416, "Unsupported URI Scheme", &[], now.at, out);
            return;
        };
        let Some(dialed) = uri.user.clone() else {
            self.txns.reply(id, 404, "Not Found", &[], now.at, out);
            return;
        };
        let config = self.config.clone();
        let Some(client) = config.client(&caller) else {
            self.txns.reply(id, 403, "Forbidden", &[], now.at, out);
            return;
        };
        let invite = msg.method() == Some(&Method::Invite);
        if invite && self.calls.get(msg.call_id()).is_some() {
            // A new INVITE (no To tag) reusing the Call-ID of a call in
            // progress: a loop, or an attempt to overwrite its record.
            self.txns.reply(id, 482, "Loop Detected", &[], now.at, out);
            return;
        }
        if invite {
            // Every proxied call is tracked and accounted: a call that
            // cannot be is refused, never proxied untracked.
            let limit = client.call_limit(&config.general) as usize;
            if limit > 0 && self.calls.of_caller(&client.name) >= limit {
                self.counters.call_limit += 1;
                let retry = [(HeaderName::RetryAfter, "30")];
                self.txns
                    .reply(id, 503, "Call Limit Reached", &retry, now.at, out);
                return;
            }
            if self.refuse_when_calls_full(id, now, out) {
                return;
            }
        }
        let registrar = &self.registrar;
        let locate = |name: &str| registrar.locate(name);
        let decision = router::route(&router::Call {
            config: &config,
            caller: client,
            dialed: &dialed,
            locate: &locate,
            forwards: &self.forwards,
            gateway_start: self.rng.next_u64() as usize,
            down: self.gateways.down(),
        });
        if invite {
            self.counters.calls_started += 1;
            self.new_call(&msg, peer, client, &dialed, now);
        }
        match decision {
            Decision::Reply { code, reason } => {
                self.txns.reply(id, code, &reason, &[], now.at, &mut fx.out);
                if invite {
                    let disp = Disposition::of_failure(code, false);
                    self.end_call(msg.call_id(), disp, code, now, fx);
                }
            }
            Decision::Feature(f) => {
                if invite {
                    self.feature(id, msg, peer, &caller, f, now, fx);
                } else {
                    self.txns
                        .reply(id, 404, "Not Found", &[], now.at, &mut fx.out);
                }
            }
            Decision::Proxy(plan) => {
                let mut hops = self.hops_of(&plan, &msg);
                if !invite {
                    // Only INVITEs hunt: other requests go to the first
                    // target, to every device of it (RFC 3261 §16.7
                    // forks any request; the best answer is passed back).
                    let first = hops.first().map(|h| h.step);
                    hops.retain(|h| Some(h.step) == first);
                }
                let mut ctx = Ctx::new(id, msg.clone(), peer, hops);
                ctx.no_attempt = plan.no_attempt.clone();
                ctx.record_route = invite || msg.method() == Some(&Method::Subscribe);
                ctx.pop_routes = pop_routes;
                ctx.strip_identity = client.role == crate::config::Role::User;
                if invite {
                    ctx.call_id = Some(msg.call_id().to_string());
                }
                self.start_ctx(ctx, now, fx);
            }
        }
    }

    /// The router's attempts as hops: Request-URI, Diversion, and for calls
    /// out through a gateway the caller presented as its callerid (From and
    /// P-Asserted-Identity), while the caller keeps seeing its own From.
    /// An attempt that reaches a registered client rings all its reachable
    /// devices at once: one hop each, in one step.
    fn hops_of(&self, plan: &Plan, msg: &Message) -> Vec<Hop> {
        let from_original = msg.header(&HeaderName::From).unwrap_or("").to_string();
        let mut hops = Vec::with_capacity(plan.attempts.len());
        for (step, a) in plan.attempts.iter().enumerate() {
            let mut hop = self.hop_of(a, msg, &from_original);
            hop.step = step;
            let devices: Vec<&Binding> = self.registrar.reachable(&a.target).collect();
            let first = devices.first().copied();
            match first.filter(|b| b.dest() == a.dest && b.contact == a.ruri) {
                Some(first) => {
                    let base = hop.clone();
                    hop.device = Some(first.contact.clone());
                    via_node(&mut hop, first);
                    hops.push(hop);
                    for d in &devices[1..] {
                        let mut h = base.clone();
                        h.dest = d.dest();
                        h.ruri = Some(d.contact.clone());
                        h.device = Some(d.contact.clone());
                        via_node(&mut h, d);
                        hops.push(h);
                    }
                }
                None => hops.push(hop),
            }
        }
        hops
    }

    /// One attempt as a hop (its rewrites).
    fn hop_of(&self, a: &Attempt, msg: &Message, from_original: &str) -> Hop {
        let mut hop = Hop::to(a.target.clone(), a.dest, a.ruri.clone());
        hop.next_on = Some(a.next_on);
        hop.noanswer = a.noanswer;
        hop.req_add = a
            .diversion
            .iter()
            .map(|d| (HeaderName::Diversion, d.clone()))
            .collect();
        if let Some(p) = &a.present {
            let host = hostport(self.local.addr_for(&a.dest));
            let uri = format!("sip:{}@{host}", p.number);
            let addr = match &p.display {
                Some(d) => format!("\"{}\" <{uri}>", d.replace(['"', '\\'], "")),
                None => format!("<{uri}>"),
            };
            let from = match msg.from().tag() {
                Some(t) => format!("{addr};tag={t}"),
                None => addr.clone(),
            };
            hop.req_set.push((HeaderName::From, Some(from.clone())));
            hop.req_set
                .push((HeaderName::PAssertedIdentity, Some(addr)));
            hop.resp_set
                .push((HeaderName::From, from_original.to_string()));
            hop.presented_from = Some(from);
        }
        hop
    }

    /// Proxy a request (ours to answer: server transaction `id`) along
    /// these hops, as a call when there is a call record for it.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::core) fn proxy_hops(
        &mut self,
        id: TxId,
        msg: Arc<Message>,
        peer: Peer,
        hops: Vec<Hop>,
        track: bool,
        now: Now,
        fx: &mut Effects,
    ) {
        let pop_routes = self.routes_to_me(&msg);
        let invite = msg.method() == Some(&Method::Invite);
        let call_id = msg.call_id().to_string();
        let mut ctx = Ctx::new(id, msg, peer, hops);
        ctx.record_route = invite;
        ctx.pop_routes = pop_routes;
        ctx.strip_identity = true;
        if track && self.calls.get(&call_id).is_some() {
            ctx.call_id = Some(call_id);
        }
        self.start_ctx(ctx, now, fx);
    }

    /// Leading Route entries that name this server.
    pub(in crate::core) fn routes_to_me(&self, msg: &Message) -> usize {
        match msg.routes() {
            Ok(routes) => routes
                .iter()
                .take_while(|r| self.local.is_me(&r.uri.host, r.uri.port))
                .count(),
            Err(_) => 0,
        }
    }
}

/// A hop to a device whose flow another node holds goes to that node with
/// a Route naming the device's client; the media relay (if any) still
/// faces the device's own address.
fn via_node(hop: &mut Hop, b: &Binding) {
    if let Some(route) = b.node_route() {
        hop.req_set.push((HeaderName::Route, None));
        hop.req_add.push((HeaderName::Route, route));
        hop.media_peer = Some(b.source);
    }
}
