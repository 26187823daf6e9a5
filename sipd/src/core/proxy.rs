//! The proxy (RFC 3261 §16): routing a new request, serial forking over the
//! router's plan (hunting, forwarding, gateway failover), in-dialog loose
//! routing, CANCEL, ACK for 2xx, and call tracking for `sipctl calls` / CDRs.
//!
//! A proxy context ties one server transaction (the caller's request) to
//! the client transactions of its branches, tried one after another.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::identify::Challenge;
use super::{via_with_received, Core, CtxTimer};
use crate::calls::{self, Call, Disposition, State};
use crate::router::{self, Decision, Location, NextOn};
use crate::sip::{HeaderName, Message, Method, Uri};
use crate::transaction::{Owner, TxEvent, TxId, T64};
use crate::transport::{Out, Peer, Transport};

/// An INVITE branch that has not answered at all (not even `100 Trying`)
/// within this time is given up (the next gateway or hunting member is
/// tried; the caller gets `408` when none is left), instead of waiting for
/// timer B (32 s).
pub const NO_RESPONSE: Duration = Duration::from_secs(5);

/// Branch number used for CANCELs and our own ACK/BYE: their responses are ignored.
const NO_BRANCH: usize = usize::MAX;

/// One hop to try: where, with which Request-URI and header rewrites.
#[derive(Clone, Debug)]
pub(super) struct Hop {
    pub target: String,
    pub dest: Peer,
    pub ruri: Option<String>,
    /// `None`: any final response is passed on (in-dialog, non-INVITE).
    pub next_on: Option<NextOn>,
    pub noanswer: Option<u32>,
    /// Headers replaced in the forwarded request (`None`: removed).
    pub req_set: Vec<(HeaderName, Option<String>)>,
    /// Headers added to the forwarded request.
    pub req_add: Vec<(HeaderName, String)>,
    /// Headers replaced in responses passed back upstream.
    pub resp_set: Vec<(HeaderName, String)>,
    /// The From value presented to the target (calls through gateways).
    pub presented_from: Option<String>,
}

impl Hop {
    /// A plain hop: any final response is passed on, no rewrites.
    pub(super) fn to(target: String, dest: Peer, ruri: String) -> Hop {
        Hop {
            target,
            dest,
            ruri: Some(ruri),
            next_on: None,
            noanswer: None,
            req_set: Vec::new(),
            req_add: Vec::new(),
            resp_set: Vec::new(),
            presented_from: None,
        }
    }
}

pub(super) struct Branch {
    tx: TxId,
    hop: Hop,
    provisional: bool,
    cancel_pending: bool,
    /// Given up (noanswer, timer C, caller's CANCEL): its finals are ignored.
    detached: bool,
}

pub(super) struct Ctx {
    server: TxId,
    req: Arc<Message>,
    peer: Peer,
    invite: bool,
    hops: VecDeque<Hop>,
    branches: Vec<Branch>,
    current: Option<usize>,
    /// The last final response of a branch that moved on, and that branch.
    last_final: Option<(Message, usize)>,
    no_attempt: (u16, String),
    cancelled: bool,
    finished: bool,
    /// Key into the calls table (initial INVITEs).
    call_id: Option<String>,
    record_route: bool,
    pop_routes: usize,
    /// Remove Proxy-Authorization (credentials we consumed).
    strip_credentials: bool,
    /// Remove identity headers (the caller is a user client).
    strip_identity: bool,
    /// An in-dialog request: no noanswer/no-response timers, no hanging up
    /// of late answers.
    in_dialog: bool,
}

impl Ctx {
    fn new(server: TxId, req: Arc<Message>, peer: Peer, hops: Vec<Hop>) -> Ctx {
        let invite = req.method() == Some(&Method::Invite);
        Ctx {
            server,
            req,
            peer,
            invite,
            hops: hops.into(),
            branches: Vec::new(),
            current: None,
            last_final: None,
            no_attempt: (480, "Temporarily Unavailable".into()),
            cancelled: false,
            finished: false,
            call_id: None,
            record_route: false,
            pop_routes: 0,
            strip_credentials: false,
            strip_identity: false,
            in_dialog: false,
        }
    }
}

/// FNV-1a, for the loop-detection part of our branch parameter.
fn fnv(parts: &[&str]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// RFC 3261 §16.6 item 8: a branch whose first part depends only on what
/// identifies the request, so that a request looping back is recognised.
fn loop_tag(msg: &Message) -> String {
    let seq = msg.cseq().seq.to_string();
    format!(
        "{:08x}",
        fnv(&[
            msg.request_uri().unwrap_or(""),
            msg.from().tag().unwrap_or(""),
            msg.to().tag().unwrap_or(""),
            msg.call_id(),
            &seq,
            msg.cseq().method.as_str(),
        ])
    )
}

const BRANCH_PREFIX: &str = "z9hG4bKsd";

/// `host:port` for Via and Record-Route (IPv6 in brackets).
fn hostport(a: SocketAddr) -> String {
    match a.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", a.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", a.port()),
    }
}

/// Where a URI points when its host is an IP address (no DNS on the packet path).
pub(super) fn uri_dest(uri: &Uri) -> Option<Peer> {
    let ip = uri.host.ip()?;
    let transport = match uri.params.value("transport") {
        Some(t) => Transport::parse(t)?,
        None => Transport::Udp,
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, uri.port.unwrap_or(5060)),
        flow: None,
    })
}

impl Core {
    /// A new request outside a dialog (not REGISTER): identify the caller,
    /// route, proxy.
    pub(super) fn out_of_dialog(
        &mut self,
        msg: Arc<Message>,
        peer: Peer,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let Some(caller) = self.identify(&msg, peer, Challenge::Proxy, true, now, out) else {
            return;
        };
        let Some(id) = self.new_server_tx(&msg, peer, now, out) else {
            return;
        };
        // A request that comes back to us with our own loop tag is a loop.
        let tag = format!("{BRANCH_PREFIX}{}", loop_tag(&msg));
        if let Ok(vias) = msg.vias() {
            if vias.iter().any(|v| {
                v.branch().is_some_and(|b| b.starts_with(&tag)) && self.local.is_me(&v.host, v.port)
            }) {
                self.txns.reply(id, 482, "Loop Detected", &[], now, out);
                return;
            }
        }
        // A preloaded Route naming us (outbound proxy) is ours to remove.
        let pop_routes = self.routes_to_me(&msg);
        let Some(uri) = msg.request_uri().and_then(|u| Uri::parse(u).ok()) else {
            self.txns
                .reply(id, 416, "Unsupported URI Scheme", &[], now, out);
            return;
        };
        let Some(dialed) = uri.user.clone() else {
            self.txns.reply(id, 404, "Not Found", &[], now, out);
            return;
        };
        let config = self.config.clone();
        let Some(client) = config.client(&caller) else {
            self.txns.reply(id, 403, "Forbidden", &[], now, out);
            return;
        };
        let registrar = &self.registrar;
        let locate = |name: &str| {
            registrar.get(name).map(|b| Location {
                dest: b.source,
                uri: b.contact.clone(),
            })
        };
        let decision = router::route(&router::Call {
            config: &config,
            caller: client,
            dialed: &dialed,
            locate: &locate,
            forwards: &self.forwards,
            gateway_start: self.rng.next_u64() as usize,
        });
        let invite = msg.method() == Some(&Method::Invite);
        if invite && self.calls.get(msg.call_id()).is_some() {
            // A new INVITE (no To tag) reusing the Call-ID of a call in
            // progress: a loop, or an attempt to overwrite its record.
            self.txns.reply(id, 482, "Loop Detected", &[], now, out);
            return;
        }
        if invite {
            self.counters.calls_started += 1;
            self.new_call(&msg, peer, client, &dialed, now);
        }
        match decision {
            Decision::Reply { code, reason } => {
                self.txns.reply(id, code, &reason, &[], now, out);
                if invite {
                    self.end_call(
                        msg.call_id(),
                        Disposition::of_failure(code, false),
                        code,
                        out,
                        now,
                    );
                }
            }
            Decision::Feature(f) => {
                if invite {
                    self.feature(id, msg, peer, &caller, f, now, out);
                } else {
                    self.txns.reply(id, 404, "Not Found", &[], now, out);
                }
            }
            Decision::Proxy(plan) => {
                let local_host = |dest: &Peer| hostport(self.local.addr_for(&dest.addr));
                let from_original = msg.header(&HeaderName::From).unwrap_or("").to_string();
                let mut hops: Vec<Hop> = plan
                    .attempts
                    .iter()
                    .map(|a| {
                        let mut hop = Hop {
                            target: a.target.clone(),
                            dest: a.dest,
                            ruri: Some(a.ruri.clone()),
                            next_on: Some(a.next_on),
                            noanswer: a.noanswer,
                            req_set: Vec::new(),
                            req_add: a
                                .diversion
                                .iter()
                                .map(|d| (HeaderName::Diversion, d.clone()))
                                .collect(),
                            resp_set: Vec::new(),
                            presented_from: None,
                        };
                        if let Some(p) = &a.present {
                            let host = local_host(&a.dest);
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
                            hop.resp_set.push((HeaderName::From, from_original.clone()));
                            hop.presented_from = Some(from);
                        }
                        hop
                    })
                    .collect();
                if !invite {
                    // Only INVITEs hunt and fork; other requests go to the first target.
                    hops.truncate(1);
                }
                let mut ctx = Ctx::new(id, msg.clone(), peer, hops);
                ctx.no_attempt = plan.no_attempt.clone();
                ctx.record_route = invite || msg.method() == Some(&Method::Subscribe);
                ctx.pop_routes = pop_routes;
                ctx.strip_credentials = true;
                ctx.strip_identity = client.role == crate::config::Role::User;
                if invite {
                    ctx.call_id = Some(msg.call_id().to_string());
                }
                self.start_ctx(ctx, now, out);
            }
        }
    }

    /// Proxy a request (ours to answer: server transaction `id`) along
    /// these hops, as a call when there is a call record for it.
    pub(super) fn proxy_hops(
        &mut self,
        id: TxId,
        msg: Arc<Message>,
        peer: Peer,
        hops: Vec<Hop>,
        track: bool,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let pop_routes = self.routes_to_me(&msg);
        let invite = msg.method() == Some(&Method::Invite);
        let call_id = msg.call_id().to_string();
        let mut ctx = Ctx::new(id, msg, peer, hops);
        ctx.record_route = invite;
        ctx.pop_routes = pop_routes;
        ctx.strip_credentials = true;
        ctx.strip_identity = true;
        if track && self.calls.get(&call_id).is_some() {
            ctx.call_id = Some(call_id);
        }
        self.start_ctx(ctx, now, out);
    }

    /// The request a proxy context is working on.
    pub(super) fn ctx_request(&self, cid: u64) -> Option<Arc<Message>> {
        self.ctxs.get(&cid).map(|c| c.req.clone())
    }

    /// Send a ringing call elsewhere (pickup): the live branch is
    /// cancelled and `hop` becomes the only one left.
    pub(super) fn redirect_ctx(&mut self, cid: u64, hop: Hop, now: Instant, out: &mut Vec<Out>) {
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        if ctx.finished {
            self.ctxs.insert(cid, ctx);
            return;
        }
        if let Some(bno) = ctx.current {
            self.abandon_branch(&mut ctx, cid, bno, now, out);
        }
        ctx.hops.clear();
        ctx.hops.push_back(hop);
        self.ctxs.insert(cid, ctx);
        self.try_next(cid, now, out);
    }

    /// Leading Route entries that name this server.
    pub(super) fn routes_to_me(&self, msg: &Message) -> usize {
        match msg.routes() {
            Ok(routes) => routes
                .iter()
                .take_while(|r| self.local.is_me(&r.uri.host, r.uri.port))
                .count(),
            Err(_) => 0,
        }
    }

    fn new_call(
        &mut self,
        msg: &Message,
        peer: Peer,
        caller: &crate::config::Client,
        dialed: &str,
        now: Instant,
    ) {
        if self.calls.is_full() {
            return;
        }
        let callerid = router::caller_id(caller).number;
        let replaces = msg
            .header_values(&HeaderName::Supported)
            .iter()
            .any(|v| v.eq_ignore_ascii_case("replaces"));
        self.calls.insert(Call {
            call_id: msg.call_id().to_string(),
            caller_tag: msg.from().tag().unwrap_or("").to_string(),
            callee_tag: None,
            caller: caller.name.clone(),
            callerid,
            accountcode: caller.accountcode.clone().unwrap_or_default(),
            dialed: dialed.to_string(),
            target: String::new(),
            state: State::Trying,
            caller_peer: peer,
            callee_peer: None,
            from_original: msg.header(&HeaderName::From).unwrap_or("").to_string(),
            from_presented: None,
            caller_replaces: replaces,
            ctx: None,
            started: now,
            start_ms: calls::unix_ms(),
            answer_ms: None,
        });
    }

    /// End a call: write its CDR and forget it.
    pub(super) fn end_call(
        &mut self,
        call_id: &str,
        disp: Disposition,
        code: u16,
        _out: &mut [Out],
        _now: Instant,
    ) {
        if let Some(call) = self.calls.remove(call_id) {
            let cdr = call.cdr(disp, code, calls::unix_ms());
            if let Some(s) = &self.store {
                s.add_cdr(cdr);
            }
        }
    }

    fn start_ctx(&mut self, ctx: Ctx, now: Instant, out: &mut Vec<Out>) {
        let cid = self.next_ctx;
        self.next_ctx += 1;
        if let Some(tx) = self.txns.server_mut(ctx.server) {
            tx.ctx = Some(cid);
        }
        if let Some(call_id) = &ctx.call_id {
            if let Some(call) = self.calls.get_mut(call_id) {
                call.ctx = Some(cid);
            }
        }
        self.ctxs.insert(cid, ctx);
        self.try_next(cid, now, out);
    }

    /// Start the next hop of a context, or answer the caller when none is left.
    fn try_next(&mut self, cid: u64, now: Instant, out: &mut Vec<Out>) {
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        loop {
            let Some(hop) = ctx.hops.pop_front() else {
                // Nothing left: the last final response, else the plan's answer.
                match ctx.last_final.take() {
                    Some((resp, bno)) => self.pass_final(&mut ctx, cid, Some(bno), &resp, now, out),
                    None => {
                        let (code, reason) = ctx.no_attempt.clone();
                        self.finish_with(&mut ctx, cid, code, &reason, now, out);
                    }
                }
                break;
            };
            let (branch_id, data) = self.build_forward(&ctx, &hop);
            let bno = ctx.branches.len();
            let method = ctx.req.method().cloned().unwrap_or(Method::Invite);
            let owner = Owner {
                ctx: cid,
                branch: bno,
            };
            let Some(tx) = self
                .txns
                .create_client(owner, branch_id, &method, data, hop.dest, now, out)
            else {
                self.counters.overload += 1;
                continue;
            };
            if ctx.invite && !ctx.in_dialog {
                self.ctx_timers.push(std::cmp::Reverse((
                    now + NO_RESPONSE,
                    cid,
                    bno,
                    CtxTimer::NoResponse,
                )));
                // Spec §4.5: a client that does not answer within noanswer
                // is unavailable, also when it is the last one to try.
                if let Some(secs) = hop.noanswer {
                    self.ctx_timers.push(std::cmp::Reverse((
                        now + Duration::from_secs(u64::from(secs)),
                        cid,
                        bno,
                        CtxTimer::NoAnswer,
                    )));
                }
                if let Some(call) = ctx.call_id.as_ref().and_then(|c| self.calls.get_mut(c)) {
                    call.target = hop.target.clone();
                }
            }
            ctx.branches.push(Branch {
                tx,
                hop,
                provisional: false,
                cancel_pending: false,
                detached: false,
            });
            ctx.current = Some(bno);
            break;
        }
        self.ctxs.insert(cid, ctx);
    }

    /// The forwarded request for one hop (RFC 3261 §16.6), as edits on the
    /// received bytes.
    fn build_forward(&mut self, ctx: &Ctx, hop: &Hop) -> (String, Vec<u8>) {
        let req = &ctx.req;
        let local = self.local.addr_for(&hop.dest.addr);
        let branch = format!("{BRANCH_PREFIX}{}{}", loop_tag(req), self.rng.token());
        let via = format!(
            "SIP/2.0/{} {};branch={branch}",
            hop.dest.transport.via_name(),
            hostport(local)
        );
        let mut e = req
            .edit()
            .set_top_via(&via_with_received(req.top_via(), &ctx.peer))
            .push_via(&via)
            .decrement_max_forwards();
        if let Some(u) = &hop.ruri {
            e = e.set_request_uri(u);
        }
        for _ in 0..ctx.pop_routes {
            e = e.pop_route();
        }
        if ctx.record_route {
            let rr = self.record_route(ctx.peer, hop.dest);
            e = e.push_record_route(&rr);
        }
        if ctx.strip_credentials {
            e = e.remove_header(HeaderName::ProxyAuthorization);
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
        (branch, e.finish())
    }

    /// Record-Route value: one entry, or two when the request changes
    /// transport or address family on its way through (the top one faces
    /// the callee, the bottom one the caller).
    fn record_route(&self, from: Peer, to: Peer) -> String {
        let entry = |p: &Peer| {
            let a = self.local.addr_for(&p.addr);
            match p.transport {
                Transport::Tcp => format!("<sip:{};transport=tcp;lr>", hostport(a)),
                Transport::Udp => format!("<sip:{};lr>", hostport(a)),
            }
        };
        let (out_e, in_e) = (entry(&to), entry(&from));
        if out_e == in_e {
            out_e
        } else {
            format!("{out_e}, {in_e}")
        }
    }

    /// A response from a branch passed upstream: our Via off, rewrites applied.
    fn upstream_bytes(&self, resp: &Message, hop: Option<&Hop>) -> Vec<u8> {
        let mut e = resp.edit().pop_via();
        if let Some(h) = hop {
            for (n, v) in &h.resp_set {
                e = e.set_header(n.clone(), v);
            }
        }
        e.finish()
    }

    /// Send a final response from a branch upstream and finish the context.
    fn pass_final(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        bno: Option<usize>,
        resp: &Message,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let code = resp.status().unwrap_or(500);
        let hop = bno.and_then(|b| ctx.branches.get(b)).map(|b| b.hop.clone());
        let data = self.upstream_bytes(resp, hop.as_ref());
        self.txns.respond(ctx.server, code, data, now, out);
        self.finished(ctx, cid, code, now, out);
    }

    /// Answer the caller ourselves and finish the context.
    fn finish_with(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        code: u16,
        reason: &str,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        self.txns.reply(ctx.server, code, reason, &[], now, out);
        self.finished(ctx, cid, code, now, out);
    }

    fn finished(&mut self, ctx: &mut Ctx, cid: u64, code: u16, now: Instant, out: &mut [Out]) {
        if ctx.finished {
            return;
        }
        ctx.finished = true;
        // An INVITE context stays to pass on 2xx retransmissions and to hang
        // up late answers; any other one is done with its final response.
        let linger = if ctx.invite {
            crate::transaction::LINGER + Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        self.ctx_timers
            .push(std::cmp::Reverse((now + linger, cid, 0, CtxTimer::Cleanup)));
        if code >= 300 {
            if let Some(call_id) = ctx.call_id.clone() {
                self.end_call(
                    &call_id,
                    Disposition::of_failure(code, ctx.cancelled),
                    code,
                    out,
                    now,
                );
            }
        }
    }

    /// A client transaction reported something.
    pub(super) fn on_tx_event(&mut self, ev: TxEvent, now: Instant, out: &mut Vec<Out>) {
        let (owner, kind) = match &ev {
            TxEvent::Provisional { owner, .. } => (*owner, 0),
            TxEvent::Final { owner, .. } => (*owner, 1),
            TxEvent::Timeout { owner, .. } => (*owner, 2),
            TxEvent::TimerC { owner, .. } => (*owner, 3),
        };
        if owner.branch == NO_BRANCH {
            return;
        }
        let cid = owner.ctx;
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        let bno = owner.branch;
        let live = !ctx.finished
            && ctx.current == Some(bno)
            && ctx.branches.get(bno).is_some_and(|b| !b.detached);
        match (ev, kind) {
            (TxEvent::Provisional { msg, .. }, _) => {
                let code = msg.status().unwrap_or(100);
                if let Some(b) = ctx.branches.get_mut(bno) {
                    b.provisional = true;
                    if b.cancel_pending {
                        b.cancel_pending = false;
                        let tx = b.tx;
                        self.send_cancel(cid, tx, now, out);
                    }
                }
                if live && code > 100 {
                    let hop = ctx.branches[bno].hop.clone();
                    let data = self.upstream_bytes(&msg, Some(&hop));
                    self.txns.respond(ctx.server, code, data, now, out);
                    if let Some(call) = ctx.call_id.as_ref().and_then(|c| self.calls.get_mut(c)) {
                        if call.state == State::Trying {
                            call.state = State::Ringing;
                        }
                        call.callee_peer = Some(hop.dest);
                        if let Some(t) = msg.to().tag() {
                            call.callee_tag = Some(t.to_string());
                        }
                    }
                }
            }
            (TxEvent::Final { msg, .. }, _) => {
                let code = msg.status().unwrap_or(500);
                if (200..300).contains(&code) {
                    let stray = ctx.branches.get(bno).is_some_and(|b| b.detached)
                        || (ctx.finished && ctx.current != Some(bno));
                    if stray && (ctx.call_id.is_none() || ctx.in_dialog) {
                        // Not a call of ours to end (a re-INVITE, an announcement):
                        // pass the answer on if the caller can still take it.
                        let hop = ctx.branches.get(bno).map(|b| b.hop.clone());
                        let data = self.upstream_bytes(&msg, hop.as_ref());
                        self.txns.respond(ctx.server, code, data, now, out);
                    } else if stray {
                        // A branch we gave up on answered anyway: end that dialog.
                        let hop = ctx.branches[bno].hop.clone();
                        self.hang_up_stray(&ctx, &hop, &msg, now, out);
                    } else {
                        // Pass every 2xx up (retransmissions too).
                        let hop = ctx.branches.get(bno).map(|b| b.hop.clone());
                        let data = self.upstream_bytes(&msg, hop.as_ref());
                        self.txns.respond(ctx.server, code, data, now, out);
                        if !ctx.finished {
                            self.answered(&ctx, bno, &msg);
                            self.finished(&mut ctx, cid, code, now, out);
                        }
                    }
                } else if live {
                    let next_on = ctx.branches[bno].hop.next_on;
                    if !ctx.cancelled && next_on.is_some_and(|n| moves_on(n, code)) {
                        ctx.last_final = Some((msg, bno));
                        self.ctxs.insert(cid, ctx);
                        self.try_next(cid, now, out);
                        return;
                    }
                    self.pass_final(&mut ctx, cid, Some(bno), &msg, now, out);
                }
            }
            (TxEvent::Timeout { .. }, _) => {
                if live {
                    if ctx.cancelled {
                        self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, out);
                    } else if ctx.branches[bno].hop.next_on.is_some() {
                        self.ctxs.insert(cid, ctx);
                        self.try_next(cid, now, out);
                        return;
                    } else {
                        self.finish_with(&mut ctx, cid, 408, "Request Timeout", now, out);
                    }
                }
            }
            (TxEvent::TimerC { .. }, _) => {
                if live {
                    self.abandon_branch(&mut ctx, cid, bno, now, out);
                    if ctx.hops.is_empty() {
                        self.finish_with(&mut ctx, cid, 408, "Request Timeout", now, out);
                    } else {
                        self.ctxs.insert(cid, ctx);
                        self.try_next(cid, now, out);
                        return;
                    }
                }
            }
        }
        self.ctxs.insert(cid, ctx);
    }

    /// The call is answered on branch `bno`.
    fn answered(&mut self, ctx: &Ctx, bno: usize, msg: &Message) {
        let Some(call) = ctx.call_id.as_ref().and_then(|c| self.calls.get_mut(c)) else {
            return;
        };
        let hop = &ctx.branches[bno].hop;
        call.state = State::Answered;
        call.answer_ms = Some(calls::unix_ms());
        call.target = hop.target.clone();
        call.callee_peer = Some(hop.dest);
        call.callee_tag = msg.to().tag().map(str::to_string);
        call.from_presented = hop.presented_from.clone();
        call.ctx = None;
    }

    /// Stop ringing a branch: CANCEL it (now, or when it first answers
    /// provisionally) and ignore its final response.
    fn abandon_branch(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        bno: usize,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let Some(b) = ctx.branches.get_mut(bno) else {
            return;
        };
        if b.detached {
            return;
        }
        b.detached = true;
        if b.provisional {
            let tx = b.tx;
            self.send_cancel(cid, tx, now, out);
        } else {
            b.cancel_pending = true;
        }
        if ctx.current == Some(bno) {
            ctx.current = None;
        }
    }

    fn send_cancel(&mut self, cid: u64, tx: TxId, now: Instant, out: &mut Vec<Out>) {
        let Some(c) = self.txns.client(tx) else {
            return;
        };
        let (Some(data), branch, dest) = (c.build_cancel(), c.branch.clone(), c.dest) else {
            return;
        };
        let owner = Owner {
            ctx: cid,
            branch: NO_BRANCH,
        };
        self.txns
            .create_client(owner, branch, &Method::Cancel, data, dest, now, out);
    }

    /// A 2xx from a branch we no longer want: ACK it and send BYE.
    fn hang_up_stray(
        &mut self,
        ctx: &Ctx,
        hop: &Hop,
        resp: &Message,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let contact = resp
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
            .and_then(|c| match c {
                crate::sip::Contact::Addr(a) => Some(a.uri.to_string()),
                crate::sip::Contact::Star => None,
            })
            .unwrap_or_else(|| hop.ruri.clone().unwrap_or_default());
        let from = hop
            .presented_from
            .clone()
            .unwrap_or_else(|| ctx.req.header(&HeaderName::From).unwrap_or("").to_string());
        let to = resp.header(&HeaderName::To).unwrap_or("").to_string();
        let local = hostport(self.local.addr_for(&hop.dest.addr));
        let seq = ctx.req.cseq().seq;
        for (method, cseq) in [(Method::Ack, seq), (Method::Bye, seq.saturating_add(1))] {
            let branch = format!("{BRANCH_PREFIX}{}", self.rng.token());
            let data = crate::sip::RequestBuilder::new(&method, &contact)
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
                out.push(Out {
                    dest: hop.dest,
                    data,
                });
            } else {
                let owner = Owner {
                    ctx: 0,
                    branch: NO_BRANCH,
                };
                self.txns
                    .create_client(owner, branch, &method, data, hop.dest, now, out);
            }
        }
    }

    /// Proxy-context timers.
    pub(super) fn on_ctx_timer(
        &mut self,
        cid: u64,
        bno: usize,
        kind: CtxTimer,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        if kind == CtxTimer::Cleanup {
            // Keep the context while a branch can still answer (an INVITE
            // branch lives up to timer C + 64*T1), so that a late 2xx is
            // hung up instead of lost.
            let busy = self.ctxs.get(&cid).is_some_and(|c| {
                c.invite && c.branches.iter().any(|b| self.txns.client(b.tx).is_some())
            });
            if busy {
                self.ctx_timers.push(std::cmp::Reverse((
                    now + crate::transaction::LINGER,
                    cid,
                    0,
                    CtxTimer::Cleanup,
                )));
            } else {
                self.ctxs.remove(&cid);
            }
            return;
        }
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        match kind {
            CtxTimer::NoAnswer => {
                if !ctx.finished && ctx.current == Some(bno) {
                    self.abandon_branch(&mut ctx, cid, bno, now, out);
                    self.ctxs.insert(cid, ctx);
                    self.try_next(cid, now, out);
                    return;
                }
            }
            CtxTimer::NoResponse => {
                let silent = ctx.branches.get(bno).is_some_and(|b| !b.provisional);
                if !ctx.finished && ctx.current == Some(bno) && silent {
                    self.abandon_branch(&mut ctx, cid, bno, now, out);
                    if ctx.cancelled {
                        self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, out);
                    } else {
                        self.ctxs.insert(cid, ctx);
                        self.try_next(cid, now, out);
                        return;
                    }
                }
            }
            CtxTimer::CancelGuard => {
                if !ctx.finished {
                    if let Some(b) = ctx.current {
                        // A 2xx that still comes is then hung up, not lost.
                        self.abandon_branch(&mut ctx, cid, b, now, out);
                    }
                    self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, out);
                }
            }
            CtxTimer::Cleanup => {}
        }
        self.ctxs.insert(cid, ctx);
    }

    /// CANCEL (RFC 3261 §16.10): 200 to the CANCEL, CANCEL down the live
    /// branch, the caller gets the branch's 487 (or ours if none comes).
    pub(super) fn on_cancel(&mut self, msg: Message, peer: Peer, now: Instant, out: &mut Vec<Out>) {
        let invite = self.txns.invite_for_cancel(&msg);
        let resp_via = via_with_received(msg.top_via(), &peer);
        let resp_dest = super::response_dest(msg.top_via(), &peer);
        let msg = Arc::new(msg);
        let tag = self.rng.token();
        let Some(id) = self
            .txns
            .create_server(msg.clone(), peer, resp_dest, resp_via, tag)
        else {
            self.reply_stateless(&msg, peer, 503, "Service Unavailable", &[], out);
            return;
        };
        let Some(inv) = invite.and_then(|i| self.txns.server(i)) else {
            self.txns
                .reply(id, 481, "Call/Transaction Does Not Exist", &[], now, out);
            return;
        };
        let (inv_id, is_final, cid) = (inv.id, inv.is_final(), inv.ctx);
        self.txns.reply(id, 200, "OK", &[], now, out);
        if is_final {
            return;
        }
        let Some(cid) = cid else {
            // Not proxied (e.g. a feature code in progress): answer it ourselves.
            self.txns
                .reply(inv_id, 487, "Request Terminated", &[], now, out);
            self.end_call(msg.call_id(), Disposition::Cancelled, 487, out, now);
            return;
        };
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        ctx.cancelled = true;
        ctx.hops.clear();
        match ctx.current {
            Some(bno) => {
                let b = &mut ctx.branches[bno];
                if b.provisional {
                    let tx = b.tx;
                    self.send_cancel(cid, tx, now, out);
                } else {
                    b.cancel_pending = true;
                }
                self.ctx_timers.push(std::cmp::Reverse((
                    now + T64,
                    cid,
                    bno,
                    CtxTimer::CancelGuard,
                )));
            }
            None => self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, out),
        }
        self.ctxs.insert(cid, ctx);
    }

    /// Where an in-dialog request goes and which headers change on the way,
    /// or `None` when sipd will not relay it.
    ///
    /// A request of a call sipd tracks (Call-ID and both tags match) goes to
    /// the other party's real transport address (NAT-safe), or to the next
    /// Route after ours. Anything else must carry a Route naming us (it is
    /// in a dialog we record-routed, e.g. before a restart) and may only go
    /// to a known client (a registration or a static host); an INVITE of an
    /// unknown dialog only from a known client and never to a gateway. So
    /// sipd is no open relay for requests that merely carry a To tag.
    /// Also says whether the request belongs to a call sipd tracks.
    fn dialog_hop(&self, msg: &Message, peer: &Peer) -> Option<(usize, Hop, bool)> {
        let pops = self.routes_to_me(msg);
        let mut routes = msg.routes().ok().unwrap_or_default();
        let mut hop = Hop {
            target: String::new(),
            dest: *peer,
            ruri: None,
            next_on: None,
            noanswer: None,
            req_set: Vec::new(),
            req_add: Vec::new(),
            resp_set: Vec::new(),
            presented_from: None,
        };
        // RFC 3261 §16.4: a strict router put our Record-Route URI into the
        // Request-URI; the real target is the last Route.
        let ruri_is_me = msg
            .request_uri()
            .and_then(|u| Uri::parse(u).ok())
            .is_some_and(|u| u.user.is_none() && self.local.is_me(&u.host, u.port));
        if ruri_is_me && pops == 0 && !routes.is_empty() {
            let last = routes.pop().expect("not empty");
            hop.ruri = Some(last.uri.to_string());
            let rest: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
            let rest = (!rest.is_empty()).then(|| rest.join(", "));
            hop.req_set.push((HeaderName::Route, rest));
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
    pub(super) fn in_dialog(
        &mut self,
        id: TxId,
        msg: Arc<Message>,
        peer: Peer,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let Some((pops, hop, tracked)) = self.dialog_hop(&msg, &peer) else {
            // Not ours to relay: answered once, without retransmissions.
            self.txns.reply(id, 404, "Not Found", &[], now, out);
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
                self.end_call(&call_id, Disposition::Answered, 200, out, now);
            }
        }
        let mut ctx = Ctx::new(id, msg, peer, vec![hop]);
        ctx.pop_routes = pops;
        ctx.in_dialog = true;
        self.start_ctx(ctx, now, out);
    }

    /// ACK for a 2xx: forwarded statelessly along the dialog's route.
    pub(super) fn forward_ack(
        &mut self,
        msg: Message,
        peer: Peer,
        _now: Instant,
        out: &mut Vec<Out>,
    ) {
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
        out.push(Out {
            dest: hop.dest,
            data,
        });
    }
}

/// Does a final response send the call on to the next hop?
fn moves_on(next_on: NextOn, code: u16) -> bool {
    match next_on {
        NextOn::Unavailable => matches!(code, 486 | 480 | 408 | 603),
        NextOn::GatewayFailure => code == 408 || (500..600).contains(&code),
    }
}
