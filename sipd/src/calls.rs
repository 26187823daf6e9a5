//! Calls (spec §4.6): every INVITE dialog from the first INVITE to its end,
//! for `sipctl calls`, in-dialog routing (both ends' transport addresses)
//! and the callerid rewrites of calls through gateways; a CDR when a call ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::sip::{HeaderName, Message, Uri};
use crate::store::CdrRow;
use crate::transport::Peer;

/// Calls with no BYE are ended after this long.
pub const MAX_CALL: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Trying,
    Ringing,
    Answered,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Trying => "trying",
            State::Ringing => "ringing",
            State::Answered => "answered",
        }
    }
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Answered,
    Busy,
    NoAnswer,
    Failed,
    Cancelled,
    /// Answered, then ended by sipd: no media packet in either direction
    /// for `media_timeout` seconds.
    MediaTimeout,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "ANSWERED",
            Disposition::Busy => "BUSY",
            Disposition::NoAnswer => "NO ANSWER",
            Disposition::Failed => "FAILED",
            Disposition::Cancelled => "CANCELLED",
            Disposition::MediaTimeout => "MEDIA TIMEOUT",
        }
    }

    /// The disposition of an unanswered call from the final response the caller got.
    pub fn of_failure(code: u16, cancelled: bool) -> Disposition {
        match code {
            _ if cancelled => Disposition::Cancelled,
            486 | 600 => Disposition::Busy,
            408 | 480 | 487 => Disposition::NoAnswer,
            _ => Disposition::Failed,
        }
    }
}

/// The relay session of a call whose media goes through sipd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relayed {
    /// Relay session id.
    pub id: u64,
    /// The relay's address on each leg ([`crate::media::CALLER`],
    /// [`crate::media::CALLEE`]).
    pub local: [std::net::IpAddr; 2],
    /// Per SDP stream (by `m=` position): the RTP port on each leg, once
    /// opened (`None`: not relayed, or no port was free).
    pub streams: Vec<Option<[u16; 2]>>,
    /// The endpoint each leg was last told (RTP, RTCP, allowed IP), per
    /// stream: a repeated SDP (a 2xx retransmission) changes nothing.
    pub peers: Vec<[Option<(SocketAddr, SocketAddr)>; 2]>,
    /// The last SDP of either end put the call on hold (`a=inactive`,
    /// `c=0.0.0.0`): silence is expected, no media timeout.
    pub held: bool,
    /// The callee's own IP when its signalling comes through another node
    /// (PostgreSQL store): its SDP's media is latched to this, not to that
    /// node's address.
    pub callee_ip: Option<std::net::IpAddr>,
}

/// One call.
#[derive(Clone, Debug)]
pub struct Call {
    pub call_id: String,
    /// The caller's From tag.
    pub caller_tag: String,
    /// The answering side's To tag (once answered).
    pub callee_tag: Option<String>,
    pub caller: String,
    pub callerid: String,
    pub accountcode: String,
    pub dialed: String,
    /// Client (or gateway) being rung / that answered.
    pub target: String,
    pub state: State,
    /// Where the caller is reached (source of its INVITE).
    pub caller_peer: Peer,
    /// Where the callee is reached (destination of the answered branch).
    pub callee_peer: Option<Peer>,
    /// The caller's remote target (Contact of its INVITE or of its last
    /// accepted target refresh) and the route set beyond sipd towards it
    /// (the Record-Route entries its INVITE carried when it reached us).
    /// In-dialog requests from the callee must name exactly these.
    pub caller_contact: Option<Uri>,
    pub caller_routes: Vec<Uri>,
    /// The same for the callee, from the answering 2xx (Record-Route
    /// entries above ours, in the order the caller's route set has them).
    pub callee_contact: Option<Uri>,
    pub callee_routes: Vec<Uri>,
    /// The caller's From header value as it sent it, and as presented to
    /// the callee when sipd rewrote it (calls through gateways).
    pub from_original: String,
    pub from_presented: Option<String>,
    /// The caller's INVITE declared `Supported: replaces`.
    pub caller_replaces: bool,
    /// Proxy context handling the INVITE (while not answered).
    pub ctx: Option<u64>,
    pub started: Instant,
    pub start_ms: u64,
    pub answer_ms: Option<u64>,
    /// The device that answered: its registered Contact (empty before the
    /// answer, or for a target that is not a registered client).
    pub device: String,
    /// Media relayed through sipd (`media=`), once decided.
    pub media: Option<Relayed>,
    /// The highest CSeq each end has sent in the dialog (a BYE sipd sends
    /// in its name takes the next one).
    pub caller_cseq: u32,
    pub callee_cseq: u32,
    /// The To header (with the callee's tag) of the answer.
    pub callee_to: String,
    /// A call another node proxies to a device whose flow this node holds
    /// (PostgreSQL store): relayed and tracked as a dialog here, accounted
    /// (CDR) and media-handled by the node where it entered.
    pub node_leg: bool,
}

impl Call {
    /// The record of a call whose INVITE `msg` came from `peer` now; who
    /// calls and what was dialed are for the caller to fill in.
    pub fn new(msg: &Message, peer: Peer, started: Instant, start_ms: u64) -> Call {
        let replaces = msg
            .header_values(&HeaderName::Supported)
            .iter()
            .any(|v| v.eq_ignore_ascii_case("replaces"));
        Call {
            call_id: msg.call_id().to_string(),
            caller_tag: msg.from().tag().unwrap_or("").to_string(),
            callee_tag: None,
            caller: String::new(),
            callerid: String::new(),
            accountcode: String::new(),
            dialed: String::new(),
            target: String::new(),
            state: State::Trying,
            caller_peer: peer,
            callee_peer: None,
            caller_contact: msg.contact_uri(),
            caller_routes: msg
                .record_routes()
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.uri)
                .collect(),
            callee_contact: None,
            callee_routes: Vec::new(),
            from_original: msg.header(&HeaderName::From).unwrap_or("").to_string(),
            from_presented: None,
            caller_replaces: replaces,
            ctx: None,
            started,
            start_ms,
            answer_ms: None,
            device: String::new(),
            media: None,
            caller_cseq: msg.cseq().seq,
            callee_cseq: 0,
            callee_to: String::new(),
            node_leg: false,
        }
    }

    /// The CDR of this call ending now.
    pub fn cdr(&self, disposition: Disposition, code: u16, end_ms: u64) -> CdrRow {
        let duration = end_ms.saturating_sub(self.start_ms) / 1000;
        let billsec = self
            .answer_ms
            .map(|a| end_ms.saturating_sub(a) / 1000)
            .unwrap_or(0);
        CdrRow {
            call_id: self.call_id.clone(),
            caller: self.caller.clone(),
            callerid: self.callerid.clone(),
            accountcode: self.accountcode.clone(),
            dialed: self.dialed.clone(),
            target: self.target.clone(),
            disposition: disposition.as_str().to_string(),
            code,
            start: self.start_ms,
            answer: self.answer_ms,
            end: end_ms,
            duration,
            billsec,
            device: self.device.clone(),
            packets: [0, 0],
            relay: None,
            node: String::new(),
            uid: 0,
        }
    }
}

/// All calls in progress, by Call-ID. Bounded.
pub struct Calls {
    /// Boxed so that growing the table moves pointers, not calls.
    by_id: HashMap<String, Box<Call>>,
    /// Calls in progress per caller (the client that made them).
    by_caller: HashMap<String, usize>,
    pub max: usize,
}

impl Calls {
    pub fn new(max: usize) -> Calls {
        Calls {
            // A fresh server should not rehash its calls under load.
            by_id: HashMap::with_capacity(max.min(4096)),
            by_caller: HashMap::new(),
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.by_id.len() >= self.max
    }

    pub fn insert(&mut self, call: Call) {
        *self.by_caller.entry(call.caller.clone()).or_default() += 1;
        if let Some(old) = self.by_id.insert(call.call_id.clone(), Box::new(call)) {
            self.uncount(&old.caller);
        }
    }

    /// Calls in progress made by this client.
    pub fn of_caller(&self, caller: &str) -> usize {
        self.by_caller.get(caller).copied().unwrap_or(0)
    }

    fn uncount(&mut self, caller: &str) {
        if let Some(n) = self.by_caller.get_mut(caller) {
            *n -= 1;
            if *n == 0 {
                self.by_caller.remove(caller);
            }
        }
    }

    pub fn get(&self, call_id: &str) -> Option<&Call> {
        self.by_id.get(call_id).map(|c| &**c)
    }

    pub fn get_mut(&mut self, call_id: &str) -> Option<&mut Call> {
        self.by_id.get_mut(call_id).map(|c| &mut **c)
    }

    pub fn remove(&mut self, call_id: &str) -> Option<Call> {
        let call = *self.by_id.remove(call_id)?;
        self.uncount(&call.caller);
        Some(call)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Call> {
        self.by_id.values().map(|c| &**c)
    }

    /// Give table memory back after a burst (see `Core::shrink_tables`).
    pub fn shrink(&mut self) {
        crate::transaction::shrink_map(&mut self.by_id, crate::transaction::SHRINK_FLOOR);
    }

    /// Calls older than [`MAX_CALL`].
    pub fn overdue(&self, now: Instant) -> Vec<String> {
        self.by_id
            .values()
            .filter(|c| now.duration_since(c.started) >= MAX_CALL)
            .map(|c| c.call_id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call {
        Call {
            call_id: "c1".into(),
            caller_tag: "t".into(),
            callee_tag: None,
            caller: "alice".into(),
            callerid: "1001".into(),
            accountcode: "HOME".into(),
            dialed: "1002".into(),
            target: "bob".into(),
            state: State::Trying,
            caller_peer: Peer::to(
                crate::transport::Transport::Udp,
                "127.0.0.1:5000".parse().unwrap(),
            ),
            callee_peer: None,
            caller_contact: None,
            caller_routes: Vec::new(),
            callee_contact: None,
            callee_routes: Vec::new(),
            from_original: "<sip:alice@x>;tag=t".into(),
            from_presented: None,
            caller_replaces: false,
            ctx: None,
            started: Instant::now(),
            start_ms: 10_000,
            answer_ms: None,
            device: String::new(),
            media: None,
            caller_cseq: 1,
            callee_cseq: 0,
            callee_to: String::new(),
            node_leg: false,
        }
    }

    #[test]
    fn cdr_durations() {
        let mut c = call();
        let r = c.cdr(Disposition::Cancelled, 487, 15_500);
        assert_eq!((r.duration, r.billsec, r.answer), (5, 0, None));
        assert_eq!(r.disposition, "CANCELLED");
        c.answer_ms = Some(12_000);
        let r = c.cdr(Disposition::Answered, 200, 42_999);
        assert_eq!((r.duration, r.billsec), (32, 30));
        assert_eq!(r.disposition, "ANSWERED");
    }

    #[test]
    fn failure_dispositions() {
        assert_eq!(Disposition::of_failure(486, false), Disposition::Busy);
        assert_eq!(Disposition::of_failure(600, false), Disposition::Busy);
        assert_eq!(Disposition::of_failure(480, false), Disposition::NoAnswer);
        assert_eq!(Disposition::of_failure(408, false), Disposition::NoAnswer);
        assert_eq!(Disposition::of_failure(487, true), Disposition::Cancelled);
        assert_eq!(Disposition::of_failure(403, false), Disposition::Failed);
        assert_eq!(Disposition::of_failure(503, false), Disposition::Failed);
    }

    #[test]
    fn counts_per_caller() {
        let mut calls = Calls::new(10);
        calls.insert(call());
        let mut c2 = call();
        c2.call_id = "c2".into();
        calls.insert(c2);
        // Same Call-ID again replaces, it does not count twice.
        calls.insert(call());
        assert_eq!(calls.of_caller("alice"), 2);
        assert_eq!(calls.of_caller("bob"), 0);
        calls.remove("c1");
        assert_eq!(calls.of_caller("alice"), 1);
        calls.remove("c2");
        calls.remove("c2");
        assert_eq!(calls.of_caller("alice"), 0);
        assert!(calls.by_caller.is_empty());
    }

    #[test]
    fn overdue_calls() {
        let mut calls = Calls::new(10);
        let mut c = call();
        c.started = Instant::now() - MAX_CALL - Duration::from_secs(1);
        calls.insert(c);
        assert_eq!(calls.overdue(Instant::now()), vec!["c1".to_string()]);
    }
}
