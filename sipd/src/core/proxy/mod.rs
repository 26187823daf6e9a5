//! The proxy (RFC 3261 §16), split the way Kamailio's tm splits it:
//!
//! - `plan`: a new request outside a dialog → identify, route, the hops to try
//! - `context`: the proxy-context state machine (serial forking over the
//!   hops: hunting, forwarding, gateway failover; timers; final responses)
//! - `forward`: the forwarded request and the responses passed upstream
//!   (edits on the received bytes)
//! - `cancel`: CANCEL from the caller, and abandoning a branch
//! - `dialog`: in-dialog requests and ACK for 2xx (which dialog, which end)
//! - `uac`: requests sipd sends itself (ACK + BYE for a late 2xx)
//! - `calls`: call bookkeeping for `sipctl calls` and the CDR
//! - `node`: requests another node (PostgreSQL store) relays to a device
//!   whose flow this node holds
//!
//! A proxy context ties one server transaction (the caller's request) to
//! the client transactions of its branches. Its hops come in steps tried
//! one after another (hunting, forwarding, gateway failover: serial
//! forking); the hops of one step, the devices of one client, ring at once
//! (parallel forking, RFC 3261 §16.7).

mod calls;
mod cancel;
mod context;
mod dialog;
mod forward;
mod node;
mod plan;
mod uac;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::routing::router::NextOn;
use crate::sip::{HeaderName, Message, Method, Uri};
use crate::transaction::TxId;
use crate::transport::{Peer, Transport};

/// An INVITE branch that has not answered at all (not even `100 Trying`)
/// within this time is given up (the next gateway or hunting member is
/// tried; the caller gets `408` when none is left), instead of waiting for
/// timer B (32 s).
pub const NO_RESPONSE: Duration = Duration::from_secs(5);

/// Branch number used for CANCELs and our own ACK/BYE: their responses are ignored.
const NO_BRANCH: usize = usize::MAX;

/// Our Via branches: the magic cookie, `sd`, then a loop tag and a token.
const BRANCH_PREFIX: &str = "z9hG4bKsd";

/// One hop to try: where, with which Request-URI and header rewrites.
#[derive(Clone, Debug)]
pub(super) struct Hop {
    /// Hops next to each other with the same step are started together.
    pub step: usize,
    /// The registered device this hop rings (its Contact), if it is one.
    pub device: Option<String>,
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
    /// The device's own address when the hop goes through another node
    /// (which holds its flow): what the media relay faces and latches to.
    pub media_peer: Option<Peer>,
}

impl Hop {
    /// A plain hop: any final response is passed on, no rewrites.
    pub(super) fn to(target: String, dest: Peer, ruri: String) -> Hop {
        Hop {
            step: 0,
            device: None,
            target,
            dest,
            ruri: Some(ruri),
            next_on: None,
            noanswer: None,
            req_set: Vec::new(),
            req_add: Vec::new(),
            resp_set: Vec::new(),
            presented_from: None,
            media_peer: None,
        }
    }
}

struct Branch {
    tx: TxId,
    hop: Hop,
    provisional: bool,
    cancel_pending: bool,
    /// Given up (noanswer, timer C, caller's CANCEL): its finals are ignored.
    detached: bool,
    /// The To tag of its provisional responses (which early dialog it is).
    to_tag: Option<String>,
}

pub(super) struct Ctx {
    server: TxId,
    req: Arc<Message>,
    peer: Peer,
    invite: bool,
    hops: VecDeque<Hop>,
    branches: Vec<Branch>,
    /// The branches of the current step still waiting for a final response.
    live: Vec<usize>,
    /// The best final response of the current step's failed branches.
    step_final: Option<(Message, usize)>,
    /// The current step's answer when its branches only failed without a
    /// response (timeout, transport error) and it cannot move on.
    step_error: Option<(u16, &'static str)>,
    /// The last final response of a branch that moved on, and that branch.
    last_final: Option<(Message, usize)>,
    no_attempt: (u16, String),
    cancelled: bool,
    finished: bool,
    /// Key into the calls table (initial INVITEs).
    call_id: Option<String>,
    record_route: bool,
    pop_routes: usize,
    /// Remove identity headers (the caller is a user client).
    strip_identity: bool,
    /// An in-dialog request: no noanswer/no-response timers, no hanging up
    /// of late answers.
    in_dialog: bool,
    /// The caller's top Via as forwarded (received/rport added), made once.
    top_via: String,
    /// The call end that sent the request ([`crate::media::CALLER`] or
    /// [`crate::media::CALLEE`]) when it belongs to a call (its SDP and
    /// that of the answers go through the media relay if the call does).
    media_from: Option<usize>,
    /// The request's body rewritten for the relay, made once for every
    /// branch (`Some(None)`: sent as received).
    media_body: Option<Option<Vec<u8>>>,
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
            live: Vec::new(),
            step_final: None,
            step_error: None,
            last_final: None,
            no_attempt: (480, "Temporarily Unavailable".into()),
            cancelled: false,
            finished: false,
            call_id: None,
            record_route: false,
            pop_routes: 0,
            strip_identity: false,
            in_dialog: false,
            top_via: String::new(),
            media_from: None,
            media_body: None,
        }
    }
}

/// A proxy context as the sequence tests see it (`core/tests/sequences.rs`).
#[cfg(test)]
pub(in crate::core) struct CtxAudit {
    pub cid: u64,
    pub server: TxId,
    pub finished: bool,
    /// The client transactions of its branches.
    pub branch_txs: Vec<TxId>,
}

#[cfg(test)]
impl crate::core::Core {
    /// Every proxy context, by id.
    pub(in crate::core) fn ctx_audit(&self) -> Vec<CtxAudit> {
        let mut v: Vec<CtxAudit> = self
            .ctxs
            .iter()
            .map(|(cid, c)| CtxAudit {
                cid: *cid,
                server: c.server,
                finished: c.finished,
                branch_txs: c.branches.iter().map(|b| b.tx).collect(),
            })
            .collect();
        v.sort_by_key(|a| a.cid);
        v
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
fn loop_hash(msg: &Message) -> u32 {
    let mut seq = String::with_capacity(10);
    crate::sip::push_u32(&mut seq, msg.cseq().seq);
    fnv(&[
        msg.request_uri().unwrap_or(""),
        msg.from().tag().unwrap_or(""),
        msg.to().tag().unwrap_or(""),
        msg.call_id(),
        &seq,
        msg.cseq().method.as_str(),
    ])
}

/// Our branch prefix and the loop tag of `msg` (`z9hG4bKsd` + 8 hex digits).
fn loop_tag(msg: &Message) -> String {
    let mut s = String::with_capacity(BRANCH_PREFIX.len() + 24);
    s.push_str(BRANCH_PREFIX);
    crate::sip::push_hex(&mut s, u64::from(loop_hash(msg)), 8);
    s
}

/// `host:port` for Via and Record-Route (IPv6 in brackets).
fn hostport(a: SocketAddr) -> String {
    let mut s = String::with_capacity(48);
    push_hostport(&mut s, a);
    s
}

pub(super) fn push_hostport(s: &mut String, a: SocketAddr) {
    match a.ip() {
        IpAddr::V6(_) => s.push('['),
        IpAddr::V4(_) => {}
    }
    crate::sip::push_ip(s, a.ip());
    if a.is_ipv6() {
        s.push(']');
    }
    s.push(':');
    crate::sip::push_u32(s, u32::from(a.port()));
}

/// Where a URI points when its host is an IP address (no DNS on the packet path).
pub(super) fn uri_dest(uri: &Uri) -> Option<Peer> {
    let ip = uri.host.ip()?;
    let sips = uri.scheme == crate::sip::Scheme::Sips;
    let transport = match (uri.params.value("transport").map(Transport::parse), sips) {
        (Some(None), _) => return None,
        (None, false) => Transport::Udp,
        (Some(Some(t)), false) => t,
        // sips: is secure whatever the parameter says (RFC 3261 §26.2.2).
        (Some(Some(Transport::Ws | Transport::Wss)), true) => Transport::Wss,
        (_, true) => Transport::Tls,
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    Some(Peer::to(
        transport,
        SocketAddr::new(ip, uri.port.unwrap_or(transport.default_port())),
    ))
}

/// Is final response `new` a better answer of a step than `old` (RFC 3261
/// §16.7 step 6): a 6xx first, else the lowest class, within a class
/// `486 Busy Here` (it tells the caller most), else the first.
fn better_final(new: u16, old: Option<u16>) -> bool {
    let Some(old) = old else {
        return true;
    };
    let (cn, co) = (new / 100, old / 100);
    if co == 6 {
        return false;
    }
    cn == 6 || cn < co || (cn == co && new == 486 && old != 486)
}

/// Does a final response send the call on to the next hop?
fn moves_on(next_on: NextOn, code: u16) -> bool {
    match next_on {
        NextOn::Unavailable => matches!(code, 486 | 480 | 408 | 603),
        NextOn::GatewayFailure => code == 408 || (500..600).contains(&code),
    }
}

#[cfg(test)]
mod uri_dest_tests {
    use super::*;

    fn dest(uri: &str) -> Option<(Transport, String)> {
        uri_dest(&Uri::parse(uri).unwrap()).map(|p| (p.transport, p.addr.to_string()))
    }

    #[test]
    fn transport_and_default_port_from_the_uri() {
        let d = |t, a: &str| Some((t, a.to_string()));
        assert_eq!(dest("sip:a@10.0.0.1"), d(Transport::Udp, "10.0.0.1:5060"));
        assert_eq!(
            dest("sip:a@10.0.0.1;transport=TCP"),
            d(Transport::Tcp, "10.0.0.1:5060")
        );
        assert_eq!(
            dest("sip:a@10.0.0.1;transport=tls"),
            d(Transport::Tls, "10.0.0.1:5061")
        );
        assert_eq!(dest("sips:a@10.0.0.1"), d(Transport::Tls, "10.0.0.1:5061"));
        assert_eq!(
            dest("sips:a@[::1]:6000;transport=tcp"),
            d(Transport::Tls, "[::1]:6000")
        );
        assert_eq!(
            dest("sips:a@10.0.0.1:443;transport=ws"),
            d(Transport::Wss, "10.0.0.1:443")
        );
        assert_eq!(
            dest("sip:a@10.0.0.1:80;transport=ws"),
            d(Transport::Ws, "10.0.0.1:80")
        );
        assert_eq!(dest("sip:a@10.0.0.1;transport=sctp"), None);
        assert_eq!(dest("sip:a@example.com"), None);
    }
}
