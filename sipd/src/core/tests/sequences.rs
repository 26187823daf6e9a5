//! Random sequences of events through the core alone, with invariants
//! checked after every step.
//!
//! Seven endpoints (four phones that register with digest, alice over UDP,
//! bob over TCP, carol over UDP with a second device over UDP, so calls to
//! carol fork; two gateways and a mediagate with static hosts) register, call each other, the outside world and feature codes,
//! cancel, answer in any order (or never, or twice), hang up, re-INVITE,
//! retransmit; flows close, connects are refused, the clock jumps, sip.conf
//! is reloaded and store commits succeed or fail. The core is built with
//! small table bounds so that overload happens too.
//!
//! After every step: no panic; every table within its bound; every proxy
//! context either finished (with its cleanup due) or tied to a live server
//! transaction and something that will finish it; and no INVITE an
//! endpoint sent ever gets two different final statuses. At the end the
//! clock runs until every timer has fired: nothing may be left (contexts,
//! transactions, deferred answers, calls, bindings, timers but the
//! gateways' health checks, which never end), and every
//! INVITE whose sender's flow stayed open got exactly one final status.
//!
//! Endpoints only do what a real one could: a request is retransmitted
//! only before its final response arrived and within 64*T1, a response
//! within 64*T1, and a TCP phone sends nothing on a closed flow (it
//! reconnects on a new flow id and registers again).
//!
//! `SIPD_CORE_SEQUENCES` (default 300) sequences of up to `SIPD_CORE_STEPS`
//! (60) events, seeds from `SIPD_CORE_SEED` (1) on. A failure prints the
//! seed, the step, the events, and a greedily shrunk shorter list.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::harness::{hop_request, register_uri, Bench, Phone, REALM};
use crate::config::Config;
use crate::core::{CoreOptions, CtxTimer, Effects};
use crate::routing::forwards::Override;
use crate::sip::{Contact, HeaderName, Limits, Message, Method};
use crate::store::{BindingRow, ForwardRow, Write};
use crate::transaction::TxLimits;
use crate::transport::{FlowId, Transport};

// ---------------------------------------------------------------- sip.conf

const GENERAL: &str = "[general]\nrealm=pbx\nnoanswer=5\ndigest=md5\n";
/// bob hunts to carol (position 2 of HOME) when unavailable.
const BOB: &str = "[bob]\nsecret=b2\naccountcode=HOME\nexten=74950001002#1002(2)\n";
const CAROL: &str = "[carol]\nsecret=c3\naccountcode=HOME\nexten=1003\ndialplan=^7495\n";
const CAROL_CHANGED: &str = "[carol]\nsecret=c3\naccountcode=HOME\nexten=1004\n";
const DAVE: &str = "[dave]\nsecret=d4\naccountcode=HOME\nexten=1005\n";
/// alice goes to bob when unavailable.
const ALICE: &str = "[alice]\nsecret=a1\naccountcode=HOME\nexten=74950001001#1001~1002\n";
// Health checks every 5 minutes: a few per sequence (the gateways answer
// 200 or 503, or nothing while offline, so they go down and up), while the
// final drain, which may cover hours of timers, does not step through
// thousands of them.
const GW: &str = "[gw]\naccountcode=gateways\nhost=127.0.0.1:7000\nexten=99\nqualify=300\n";
const GW2: &str = "[gw2]\naccountcode=gateways\nhost=127.0.0.1:7001\nexten=98\nqualify=300\n";
const MEDIA: &str = "[media]\naccountcode=mediagates\nhost=127.0.0.1:7100\nqualify=300\n";

/// The configurations a reload may install; the first is the start.
const VARIANTS: [&[&str]; 5] = [
    &[GENERAL, BOB, CAROL, ALICE, GW, GW2, MEDIA],
    // A gateway removed.
    &[GENERAL, BOB, CAROL, ALICE, GW, MEDIA],
    // No mediagate: announcements are answered by sipd.
    &[GENERAL, BOB, CAROL, ALICE, GW, GW2],
    // carol changed, dave added.
    &[GENERAL, BOB, CAROL_CHANGED, DAVE, ALICE, GW, GW2, MEDIA],
    // alice removed (her binding goes, her calls go on).
    &[GENERAL, BOB, CAROL, GW, GW2, MEDIA],
];

fn variant_text(v: usize) -> String {
    VARIANTS[v].join("\n")
}

fn configs() -> &'static [Arc<Config>] {
    static C: OnceLock<Vec<Arc<Config>>> = OnceLock::new();
    C.get_or_init(|| {
        (0..VARIANTS.len())
            .map(|v| super::harness::config(&variant_text(v)))
            .collect()
    })
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

/// Requests are retransmitted (and responses repeated) at most this long.
const RETRANSMIT_WINDOW: Duration = Duration::from_secs(32);

// ---------------------------------------------------------------- endpoints

#[derive(Clone, Copy, PartialEq, Eq)]
struct Ep(u8);

const NAMES: [&str; 7] = ["alice", "bob", "carol", "gw", "gw2", "media", "carol-2"];
const PHONES: [Ep; 4] = [Ep(0), Ep(1), Ep(2), Ep(6)];
/// Who sends new calls: the phones and the first gateway.
const CALLERS: [Ep; 5] = [Ep(0), Ep(1), Ep(2), Ep(3), Ep(6)];
const ALL: [Ep; 7] = [Ep(0), Ep(1), Ep(2), Ep(3), Ep(4), Ep(5), Ep(6)];

impl fmt::Debug for Ep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NAMES[usize::from(self.0)])
    }
}

/// What phones dial: numbers, names, external numbers, feature codes,
/// nonsense.
const PHONE_DIALS: [&str; 18] = [
    "1001",
    "1002",
    "1003",
    "alice",
    "bob",
    "carol",
    "84991234567",
    "+441234567890",
    "74950001002",
    "*721002",
    "*711003",
    "*72",
    "*73",
    "*11",
    "*99",
    "*7x",
    "nobody",
    "1005",
];
/// What the gateway brings in: the long numbers, and one nobody has.
const GW_DIALS: [&str; 4] = ["74950001001", "74950001002", "84950001001", "74959999999"];

const ANSWERS: [u16; 13] = [
    100, 180, 180, 180, 183, 200, 200, 200, 200, 486, 480, 503, 603,
];
const TICKS_MS: [u64; 16] = [
    10, 10, 10, 50, 100, 100, 200, 500, 500, 1_000, 2_000, 5_000, 6_000, 32_000, 65_000, 200_000,
];

// ---------------------------------------------------------------- events

/// One step. Events that refer to something (a call to cancel, an INVITE
/// to answer, a dialog, a message to send again) pick it by index among
/// what exists when they run, so that a shorter list still means something.
#[derive(Clone, Debug)]
enum Event {
    /// REGISTER with digest (0: unregister; below 60: too brief).
    Register {
        ep: Ep,
        expires: u32,
    },
    /// A TCP phone opens a new connection (new flow id) and registers.
    Reconnect {
        ep: Ep,
    },
    /// A TCP phone's flow closes; with `refuse` nothing listens there any more.
    CloseFlow {
        ep: Ep,
        refuse: bool,
    },
    /// A new call (digest for phones; gateways are known by address).
    Invite {
        ep: Ep,
        dial: &'static str,
        replaces: bool,
    },
    /// CANCEL an INVITE of ours (`late`: also one that has its final).
    Cancel {
        ep: Ep,
        pick: u8,
        late: bool,
    },
    /// Whoever got it answers an INVITE sipd sent (`any`: also one
    /// answered already, or cancelled).
    Answer {
        pick: u8,
        code: u16,
        any: bool,
    },
    /// Behave (one endpoint, or all): answer CANCEL (200 + 487), BYE and
    /// re-INVITE (200), other requests (200); ACK our INVITEs' finals.
    Behave {
        ep: Option<Ep>,
    },
    /// One end of a dialog (any endpoint's) hangs up.
    Bye {
        pick: u8,
    },
    /// One end of a dialog sends a re-INVITE.
    ReInvite {
        pick: u8,
    },
    /// Send again something already sent (a retransmission or duplicate).
    Redeliver {
        pick: u8,
    },
    Tick {
        ms: u64,
    },
    Reload {
        variant: u8,
    },
    Commit {
        ok: bool,
    },
}

/// splitmix64.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The bounds of one sequence: small ones half of the time.
#[derive(Clone, Debug)]
struct Params {
    max_server: usize,
    max_client: usize,
    max_calls: usize,
}

fn params(seed: u64) -> Params {
    let mut r = Prng(seed ^ 0x5eed_0fb0_u64);
    let mut bound = |small: std::ops::RangeInclusive<usize>, large: usize| {
        if r.chance(50) {
            small.start() + r.below(small.end() - small.start() + 1)
        } else {
            large
        }
    };
    Params {
        max_server: bound(2..=10, 256),
        max_client: bound(1..=8, 256),
        max_calls: bound(1..=4, 256),
    }
}

fn events(seed: u64, steps: usize) -> Vec<Event> {
    let mut r = Prng(seed);
    let mut evs: Vec<Event> = PHONES
        .iter()
        .map(|&ep| Event::Register { ep, expires: 600 })
        .collect();
    let len = steps.max(evs.len() + 1);
    let len = evs.len() + 1 + r.below(len - evs.len());
    const WEIGHTS: [u32; 13] = [5, 2, 3, 14, 5, 16, 12, 6, 4, 6, 10, 2, 3];
    let total: u32 = WEIGHTS.iter().sum();
    while evs.len() < len {
        let mut w = (r.next() % u64::from(total)) as u32;
        let kind = WEIGHTS
            .iter()
            .position(|&x| {
                if w < x {
                    true
                } else {
                    w -= x;
                    false
                }
            })
            .unwrap_or(0);
        let ev = match kind {
            0 => Event::Register {
                ep: r.pick(&PHONES),
                expires: r.pick(&[600, 600, 3600, 0, 30]),
            },
            1 => Event::Reconnect { ep: Ep(1) },
            2 => Event::CloseFlow {
                ep: Ep(1),
                refuse: r.chance(50),
            },
            3 => {
                let ep = r.pick(&CALLERS);
                let dial = if ep == Ep(3) {
                    r.pick(&GW_DIALS)
                } else {
                    r.pick(&PHONE_DIALS)
                };
                Event::Invite {
                    ep,
                    dial,
                    replaces: r.chance(30),
                }
            }
            4 => Event::Cancel {
                ep: r.pick(&CALLERS),
                pick: r.byte(),
                late: r.chance(20),
            },
            5 => Event::Answer {
                pick: r.byte(),
                code: r.pick(&ANSWERS),
                any: r.chance(15),
            },
            6 => Event::Behave {
                ep: r.chance(60).then(|| r.pick(&ALL)),
            },
            7 => Event::Bye { pick: r.byte() },
            8 => Event::ReInvite { pick: r.byte() },
            9 => Event::Redeliver { pick: r.byte() },
            10 => Event::Tick {
                ms: r.pick(&TICKS_MS),
            },
            11 => Event::Reload {
                variant: r.below(VARIANTS.len()) as u8,
            },
            _ => Event::Commit { ok: r.chance(75) },
        };
        evs.push(ev);
    }
    evs
}

// ---------------------------------------------------------------- the world

/// A dialog as one endpoint sees it.
#[derive(Clone, Debug)]
struct Dialog {
    call_id: String,
    /// Our side (From of our requests) and theirs (To), with tags.
    from: String,
    to: String,
    remote_tag: String,
    target: String,
    routes: Vec<String>,
}

struct Endpoint {
    phone: Phone,
    /// Registers and authenticates (else a `host=` client).
    user: bool,
    /// Nothing listens at its address (a TCP phone gone away).
    offline: bool,
    dialogs: Vec<Dialog>,
}

/// A request an endpoint sent to sipd.
struct SentReq {
    ep: usize,
    method: Method,
    branch: String,
    msg: Message,
    flow: Option<FlowId>,
    at: Instant,
    /// Distinct final statuses that reached the sender.
    finals: BTreeSet<u16>,
    last_final: Option<Message>,
    /// The final was dealt with (ACKed, or used for credentials).
    final_handled: bool,
    /// The flow it was sent on closed: responses may be lost.
    flow_lost: bool,
    /// The dialog of an in-dialog INVITE (its ACK needs it).
    dialog: Option<Dialog>,
    /// An INVITE whose CANCEL was accepted (200) before its final.
    cancelled: bool,
}

/// A request sipd sent to an endpoint.
struct Incoming {
    ep: usize,
    method: Method,
    branch: String,
    msg: Message,
    at: Instant,
    final_sent: Option<u16>,
    handled: bool,
}

#[derive(Clone, Copy)]
enum What {
    Request(usize),
    Ack,
    Response,
}

/// Something an endpoint delivered, for sending it again.
struct Delivery {
    ep: usize,
    text: String,
    flow: Option<FlowId>,
    at: Instant,
    what: What,
}

/// What a run saw, for the summary.
#[derive(Default, Clone, Debug)]
struct Stats {
    steps: usize,
    to_core: usize,
    from_core: usize,
    server_full: bool,
    client_full: bool,
    calls_full: bool,
    /// Calls whose caller got a 2xx.
    answered: usize,
    /// Requests sent by kind, to see that the steps do something.
    sent: BTreeMap<String, usize>,
    redelivered: usize,
    /// The core's own counters at the end.
    overload: u64,
    send_failures: u64,
    absorbed: u64,
    /// Final statuses of INVITEs, by code.
    finals: BTreeMap<u16, usize>,
    /// FNV-1a of everything exchanged (determinism).
    digest: u64,
}

struct World {
    b: Bench,
    p: Params,
    eps: Vec<Endpoint>,
    sent: Vec<SentReq>,
    incoming: Vec<Incoming>,
    log: Vec<Delivery>,
    next_flow: FlowId,
    counter: u64,
    stats: Stats,
    store: Store,
    /// Call-IDs whose INVITE was cancelled before its final: sipd may
    /// start no new branch for them.
    cancelled: BTreeSet<String>,
}

/// The store: writes in the order the core gave them (a confirmed one
/// takes its place in the queue when given, and counts once committed).
#[derive(Default)]
struct Store {
    queue: Vec<(Write, Commit)>,
    cdrs: BTreeSet<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    Done,
    Pending(u64),
    Failed,
}

/// What a restart would load.
#[derive(Default)]
struct Stored {
    bindings: BTreeMap<String, Vec<BindingRow>>,
    forwards: BTreeMap<String, ForwardRow>,
}

impl Store {
    fn push(&mut self, w: Write, c: Commit) -> Result<(), String> {
        if let Write::AddCdr(cdr) = &w {
            if !self.cdrs.insert(cdr.call_id.clone()) {
                return Err(format!("cdr: a second CDR for call {}", cdr.call_id));
            }
        }
        if !matches!(w, Write::AddCdr(_)) {
            self.queue.push((w, c));
        }
        Ok(())
    }

    fn resolve(&mut self, token: u64, ok: bool) {
        for (_, c) in &mut self.queue {
            if *c == Commit::Pending(token) {
                *c = if ok { Commit::Done } else { Commit::Failed };
            }
        }
    }

    fn state(&self) -> Stored {
        let mut s = Stored::default();
        for (w, c) in &self.queue {
            if *c != Commit::Done {
                continue;
            }
            match w.clone() {
                Write::PutBindings(n, rows) => {
                    s.bindings.insert(n, rows);
                }
                Write::DeleteBinding(n) => {
                    s.bindings.remove(&n);
                }
                Write::DeleteBindingsExcept(keep) => s.bindings.retain(|n, _| keep.contains(n)),
                Write::PutForward(r) => {
                    s.forwards.insert(r.name.clone(), r);
                }
                Write::DeleteForward(n) => {
                    s.forwards.remove(&n);
                }
                Write::AddCdr(_) | Write::PruneCdrs { .. } | Write::ForgetBindings { .. } => {}
            }
        }
        s
    }
}

fn parse(text: &str) -> Message {
    Message::parse(text.as_bytes(), &Limits::default())
        .unwrap_or_else(|e| panic!("test message does not parse ({e}):\n{text}"))
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Whatever",
    }
}

fn first_contact(m: &Message) -> Option<String> {
    m.contacts().ok()?.into_iter().find_map(|c| match c {
        Contact::Addr(a) => Some(a.uri.to_string()),
        Contact::Star => None,
    })
}

fn record_routes(m: &Message) -> Vec<String> {
    m.record_routes()
        .map(|v| v.iter().map(|r| r.to_string()).collect())
        .unwrap_or_default()
}

impl World {
    fn new(p: &Params) -> World {
        let opts = CoreOptions {
            tx_limits: TxLimits {
                max_server: p.max_server,
                max_client: p.max_client,
                ..TxLimits::default()
            },
            max_calls: p.max_calls,
            ..CoreOptions::default()
        };
        let b = Bench::with(&variant_text(0), opts, vec![super::harness::sipd_addr()]);
        let user = |phone: Phone| Endpoint {
            phone,
            user: true,
            offline: false,
            dialogs: Vec::new(),
        };
        let host = |phone: Phone| Endpoint {
            phone,
            user: false,
            offline: false,
            dialogs: Vec::new(),
        };
        World {
            b,
            p: p.clone(),
            eps: vec![
                user(Phone::udp("alice", "a1", 6001)),
                user(Phone::tcp("bob", "b2", 6002, 1)),
                user(Phone::udp("carol", "c3", 6003)),
                host(Phone::udp("74951112233", "", 7000)),
                host(Phone::udp("gw2", "", 7001)),
                host(Phone::udp("media", "", 7100)),
                user(Phone::udp("carol", "c3", 6013)),
            ],
            sent: Vec::new(),
            incoming: Vec::new(),
            log: Vec::new(),
            next_flow: 2,
            counter: 0,
            stats: Stats {
                digest: 0xcbf2_9ce4_8422_2325,
                ..Stats::default()
            },
            store: Store::default(),
            cancelled: BTreeSet::new(),
        }
    }

    fn hash(&mut self, data: &[u8]) {
        for &x in data {
            self.stats.digest ^= u64::from(x);
            self.stats.digest = self.stats.digest.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn fresh(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn flow_open(&self, flow: Option<FlowId>) -> bool {
        flow.is_none_or(|f| !self.b.closed.contains(&f))
    }

    /// Can `ep` start a request now (TCP: on an open flow)?
    fn can_request(&self, ep: usize) -> bool {
        let e = &self.eps[ep];
        !e.offline && self.flow_open(e.phone.peer.flow)
    }

    /// Is `flow` still `ep`'s current, open connection?
    fn same_flow(&self, ep: usize, flow: Option<FlowId>) -> bool {
        self.can_request(ep) && self.eps[ep].phone.peer.flow == flow
    }

    /// Deliver `text` from `ep` and file what the core sent.
    fn deliver(&mut self, ep: usize, text: &str) -> Result<(), String> {
        let peer = self.eps[ep].phone.peer;
        self.hash(text.as_bytes());
        self.stats.to_core += 1;
        self.b.deliver(peer, text);
        self.pump()
    }

    fn send(&mut self, ep: usize, text: String, what: What) -> Result<(), String> {
        self.deliver(ep, &text)?;
        self.log.push(Delivery {
            ep,
            text,
            flow: self.eps[ep].phone.peer.flow,
            at: self.b.now.at,
            what,
        });
        Ok(())
    }

    /// Send a request (not ACK); its index in `sent`.
    fn send_request(
        &mut self,
        ep: usize,
        text: String,
        dialog: Option<Dialog>,
    ) -> Result<usize, String> {
        let msg = parse(&text);
        let i = self.sent.len();
        self.sent.push(SentReq {
            ep,
            method: msg.method().cloned().unwrap_or(Method::Invite),
            branch: msg.top_via().branch().unwrap_or("").to_string(),
            msg,
            flow: self.eps[ep].phone.peer.flow,
            at: self.b.now.at,
            finals: BTreeSet::new(),
            last_final: None,
            final_handled: false,
            flow_lost: false,
            dialog,
            cancelled: false,
        });
        let kind = match (&self.sent[i].method, self.sent[i].dialog.is_some()) {
            (Method::Invite, true) => "re-INVITE".to_string(),
            (m, _) => m.as_str().to_string(),
        };
        *self.stats.sent.entry(kind).or_default() += 1;
        self.send(ep, text, What::Request(i))?;
        Ok(i)
    }

    /// File everything the core sent: responses against the requests they
    /// answer (checking the finals), requests into the endpoints' inboxes.
    fn pump(&mut self) -> Result<(), String> {
        for w in std::mem::take(&mut self.b.writes) {
            self.store.push(w, Commit::Done)?;
        }
        for (token, w) in &self.b.confirms {
            let queued = self
                .store
                .queue
                .iter()
                .any(|(_, c)| *c == Commit::Pending(*token));
            if !queued {
                self.store.push(w.clone(), Commit::Pending(*token))?;
            }
        }
        let mut checks = Vec::new();
        for o in std::mem::take(&mut self.b.sent) {
            self.hash(&o.data);
            self.stats.from_core += 1;
            let msg = Message::parse(&o.data, &Limits::default()).map_err(|e| {
                format!(
                    "unparseable: sipd sent ({e}):\n{}",
                    String::from_utf8_lossy(&o.data)
                )
            })?;
            let Some(ep) = self.eps.iter().position(|e| e.phone.addr() == o.dest.addr) else {
                continue;
            };
            let branch = msg.top_via().branch().unwrap_or("").to_string();
            if let Some(code) = msg.status() {
                let method = msg.cseq().method.clone();
                let Some(i) = self
                    .sent
                    .iter()
                    .rposition(|s| s.ep == ep && s.branch == branch && s.method == method)
                else {
                    return Err(format!(
                        "misrouted: {} got a {code} for a request it never sent (branch {branch}, {})",
                        NAMES[ep],
                        msg.cseq().method.as_str()
                    ));
                };
                if code < 200 {
                    continue;
                }
                if method == Method::Cancel && code == 200 {
                    let invite = self.sent.iter().rposition(|s| {
                        s.ep == ep && s.branch == branch && s.method == Method::Invite
                    });
                    if let Some(j) = invite.filter(|&j| self.sent[j].finals.is_empty()) {
                        self.sent[j].cancelled = true;
                        self.cancelled
                            .insert(self.sent[j].msg.call_id().to_string());
                    }
                }
                let ours = msg
                    .header(&HeaderName::Server)
                    .is_some_and(|v| v.starts_with("sipd/"));
                let s = &mut self.sent[i];
                if method == Method::Invite && s.cancelled && ours && code != 487 {
                    return Err(format!(
                        "cancel: {}'s cancelled INVITE {} got sipd's own {code} instead of 487",
                        NAMES[ep],
                        s.msg.call_id()
                    ));
                }
                if method == Method::Invite && !s.finals.contains(&code) {
                    *self.stats.finals.entry(code).or_default() += 1;
                    let initial = s.msg.to().tag().is_none();
                    self.stats.answered += usize::from(initial && (200..300).contains(&code));
                }
                s.finals.insert(code);
                s.last_final = Some(msg);
                if s.finals.len() > 1 {
                    return Err(format!(
                        "double final: {} got {:?} for its {} {} (branch {branch})",
                        NAMES[ep],
                        s.finals,
                        method.as_str(),
                        s.msg.call_id()
                    ));
                }
            } else {
                let method = msg.method().cloned().unwrap_or(Method::Invite);
                if method == Method::Ack {
                    continue;
                }
                if method == Method::Options && branch.starts_with("z9hG4bKsdg") {
                    // A gateway health check: the gateway answers at once
                    // (200, or 503 now and then, by the branch) or, offline,
                    // not at all. Kept out of `incoming`: the checks never
                    // stop, and they would grow it for ever.
                    if !self.eps[ep].offline {
                        let code = if self.hash_of(&branch).is_multiple_of(4) {
                            503
                        } else {
                            200
                        };
                        let text = self.eps[ep].phone.respond(&msg, code, reason(code));
                        checks.push((ep, text));
                    }
                    continue;
                }
                let dup = self
                    .incoming
                    .iter()
                    .any(|i| i.ep == ep && i.branch == branch && i.method == method);
                let initial = method == Method::Invite && msg.to().tag().is_none();
                if !dup && initial && self.cancelled.contains(msg.call_id()) {
                    return Err(format!(
                        "cancel: a new branch to {} for call {} after its CANCEL",
                        NAMES[ep],
                        msg.call_id()
                    ));
                }
                if !dup {
                    self.incoming.push(Incoming {
                        ep,
                        method,
                        branch,
                        msg,
                        at: self.b.now.at,
                        final_sent: None,
                        handled: false,
                    });
                }
            }
        }
        for (ep, text) in checks {
            self.send(ep, text, What::Response)?;
        }
        Ok(())
    }

    /// A stable small hash of a string (for choices that must replay).
    fn hash_of(&self, s: &str) -> u64 {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    // ------------------------------------------------------------ actions

    fn apply(&mut self, ev: &Event) -> Result<(), String> {
        // Every step takes a moment (and no two calls start at one instant).
        self.b.advance(Duration::from_millis(1));
        self.pump()?;
        match *ev {
            Event::Register { ep, expires } => self.register(usize::from(ep.0), expires),
            Event::Reconnect { ep } => self.reconnect(usize::from(ep.0)),
            Event::CloseFlow { ep, refuse } => {
                self.close_flow(usize::from(ep.0), refuse);
                Ok(())
            }
            Event::Invite { ep, dial, replaces } => self.invite(usize::from(ep.0), dial, replaces),
            Event::Cancel { ep, pick, late } => self.cancel(usize::from(ep.0), pick, late),
            Event::Answer { pick, code, any } => self.answer(pick, code, any),
            Event::Behave { ep: Some(ep) } => self.behave(usize::from(ep.0)),
            Event::Behave { ep: None } => {
                for ep in 0..self.eps.len() {
                    self.behave(ep)?;
                }
                Ok(())
            }
            Event::Bye { pick } => self.bye(pick),
            Event::ReInvite { pick } => self.reinvite(pick),
            Event::Redeliver { pick } => self.redeliver(pick),
            Event::Tick { ms } => {
                self.b.advance(Duration::from_millis(ms));
                self.pump()
            }
            Event::Reload { variant } => {
                let mut fx = Effects::new();
                let config = configs()[usize::from(variant)].clone();
                self.b.core.set_config(config, &mut fx);
                self.b.absorb(fx);
                self.pump()
            }
            Event::Commit { ok } => self.commit(ok),
        }
    }

    /// The store commits (or fails) every write waiting for confirmation.
    fn commit(&mut self, ok: bool) -> Result<(), String> {
        for (token, _) in std::mem::take(&mut self.b.confirms) {
            self.store.resolve(token, ok);
            let result = if ok { Ok(()) } else { Err("disk full".into()) };
            let mut fx = Effects::new();
            self.b.core.resume(token, result, self.b.now, &mut fx);
            self.b.absorb(fx);
        }
        self.pump()
    }

    fn register(&mut self, ep: usize, expires: u32) -> Result<(), String> {
        if !self.eps[ep].user || !self.can_request(ep) {
            return Ok(());
        }
        let text = self.eps[ep].phone.register_request(expires, "");
        let i = self.send_request(ep, text, None)?;
        let Some(ch) = self.sent[i].last_final.clone() else {
            return Ok(());
        };
        self.sent[i].final_handled = true;
        if ch.status() != Some(401) {
            return Ok(());
        }
        let auth = self.eps[ep]
            .phone
            .authorization(&ch, "REGISTER", &register_uri());
        let text = self.eps[ep].phone.register_request(expires, &auth);
        self.send_request(ep, text, None)?;
        Ok(())
    }

    fn reconnect(&mut self, ep: usize) -> Result<(), String> {
        if self.eps[ep].phone.peer.transport != Transport::Tcp {
            return Ok(());
        }
        let flow = self.next_flow;
        self.next_flow += 1;
        let addr = self.eps[ep].phone.addr();
        self.eps[ep].phone.peer.flow = Some(flow);
        self.eps[ep].offline = false;
        self.b.unreachable.retain(|a| *a != addr);
        self.register(ep, 600)
    }

    fn close_flow(&mut self, ep: usize, refuse: bool) {
        let e = &self.eps[ep];
        let Some(flow) = e.phone.peer.flow else {
            return;
        };
        if !self.b.closed.contains(&flow) {
            self.b.closed.push(flow);
        }
        for s in self.sent.iter_mut().filter(|s| s.flow == Some(flow)) {
            s.flow_lost = true;
        }
        if refuse {
            let addr = e.phone.addr();
            self.b.unreachable.push(addr);
            self.eps[ep].offline = true;
        }
    }

    fn invite(&mut self, ep: usize, dial: &str, replaces: bool) -> Result<(), String> {
        if !self.can_request(ep) {
            return Ok(());
        }
        let n = self.fresh();
        let call_id = format!("call{n}");
        let ruri = format!("sip:{dial}@{REALM}");
        let to = format!("<{ruri}>");
        let mut extra = "Content-Type: application/sdp\r\n".to_string();
        if replaces {
            extra.push_str("Supported: replaces\r\n");
        }
        let branch = format!("b{n}a");
        let text = self.eps[ep]
            .phone
            .request("INVITE", &ruri, &to, &call_id, &branch, &extra, SDP);
        let i = self.send_request(ep, text, None)?;
        if !self.eps[ep].user {
            return Ok(());
        }
        let Some(ch) = self.sent[i].last_final.clone() else {
            return Ok(());
        };
        if ch.status() != Some(407) {
            return Ok(());
        }
        self.sent[i].final_handled = true;
        let ack = hop_request(&self.sent[i].msg, "ACK", ch.header(&HeaderName::To));
        self.send(ep, ack, What::Ack)?;
        let auth = self.eps[ep].phone.authorization(&ch, "INVITE", &ruri);
        extra.push_str(&auth);
        let branch = format!("b{n}b");
        let text = self.eps[ep]
            .phone
            .request("INVITE", &ruri, &to, &call_id, &branch, &extra, SDP);
        self.send_request(ep, text, None)?;
        Ok(())
    }

    fn cancel(&mut self, ep: usize, pick: u8, late: bool) -> Result<(), String> {
        let now = self.b.now.at;
        let cands: Vec<usize> = (0..self.sent.len())
            .filter(|&i| {
                let s = &self.sent[i];
                s.ep == ep
                    && s.method == Method::Invite
                    && (late || s.finals.is_empty())
                    && now.duration_since(s.at) <= Duration::from_secs(300)
                    && self.same_flow(ep, s.flow)
            })
            .collect();
        if cands.is_empty() {
            return Ok(());
        }
        let i = cands[usize::from(pick) % cands.len()];
        let text = hop_request(&self.sent[i].msg, "CANCEL", None);
        self.send_request(ep, text, None)?;
        Ok(())
    }

    /// Answer `incoming[i]` with `code`.
    fn respond(&mut self, i: usize, code: u16) -> Result<(), String> {
        let ep = self.incoming[i].ep;
        if self.eps[ep].offline {
            return Ok(());
        }
        let text = self.eps[ep]
            .phone
            .respond(&self.incoming[i].msg, code, reason(code));
        let inc = &mut self.incoming[i];
        if code >= 200 && inc.final_sent.is_none() {
            inc.final_sent = Some(code);
        }
        let initial = inc.method == Method::Invite && inc.msg.to().tag().is_none();
        if (200..300).contains(&code) && initial {
            let m = &inc.msg;
            let remote_tag = m.from().tag().unwrap_or("").to_string();
            let d = Dialog {
                call_id: m.call_id().to_string(),
                from: format!(
                    "{};tag={}",
                    m.header(&HeaderName::To).unwrap_or(""),
                    self.eps[ep].phone.tag
                ),
                to: m.header(&HeaderName::From).unwrap_or("").to_string(),
                remote_tag,
                target: first_contact(m)
                    .unwrap_or_else(|| m.request_uri().unwrap_or("").to_string()),
                routes: record_routes(m),
            };
            let dialogs = &mut self.eps[ep].dialogs;
            if !dialogs
                .iter()
                .any(|x| x.call_id == d.call_id && x.remote_tag == d.remote_tag)
            {
                dialogs.push(d);
            }
        }
        self.send(ep, text, What::Response)
    }

    fn answer(&mut self, pick: u8, code: u16, any: bool) -> Result<(), String> {
        let now = self.b.now.at;
        let cands: Vec<usize> = (0..self.incoming.len())
            .filter(|&i| {
                let inc = &self.incoming[i];
                !self.eps[inc.ep].offline
                    && inc.method == Method::Invite
                    && (any || inc.final_sent.is_none())
                    && now.duration_since(inc.at) <= Duration::from_secs(300)
            })
            .collect();
        if cands.is_empty() {
            return Ok(());
        }
        let i = cands[usize::from(pick) % cands.len()];
        self.respond(i, code)
    }

    fn behave(&mut self, ep: usize) -> Result<(), String> {
        if self.eps[ep].offline {
            return Ok(());
        }
        for i in 0..self.incoming.len() {
            let inc = &self.incoming[i];
            if inc.ep != ep || inc.handled {
                continue;
            }
            let in_dialog = inc.msg.to().tag().is_some();
            match inc.method.clone() {
                Method::Invite if !in_dialog => continue,
                Method::Cancel => {
                    let branch = inc.branch.clone();
                    self.respond(i, 200)?;
                    let invite = (0..self.incoming.len()).find(|&j| {
                        let x = &self.incoming[j];
                        x.ep == ep
                            && x.method == Method::Invite
                            && x.branch == branch
                            && x.final_sent.is_none()
                    });
                    if let Some(j) = invite {
                        self.respond(j, 487)?;
                    }
                }
                Method::Bye => {
                    let (call_id, remote) = (
                        inc.msg.call_id().to_string(),
                        inc.msg.from().tag().unwrap_or("").to_string(),
                    );
                    self.eps[ep]
                        .dialogs
                        .retain(|d| !(d.call_id == call_id && d.remote_tag == remote));
                    if inc.final_sent.is_none() {
                        self.respond(i, 200)?;
                    }
                }
                _ => {
                    if inc.final_sent.is_none() {
                        self.respond(i, 200)?;
                    }
                }
            }
            self.incoming[i].handled = true;
        }
        if !self.can_request(ep) {
            return Ok(());
        }
        for i in 0..self.sent.len() {
            let s = &self.sent[i];
            if s.ep != ep || s.final_handled || s.method != Method::Invite {
                continue;
            }
            let Some(resp) = s.last_final.clone() else {
                continue;
            };
            if !self.same_flow(ep, s.flow) {
                continue;
            }
            self.sent[i].final_handled = true;
            let code = resp.status().unwrap_or(0);
            if code >= 300 {
                let ack = hop_request(&self.sent[i].msg, "ACK", resp.header(&HeaderName::To));
                self.send(ep, ack, What::Ack)?;
                continue;
            }
            let s = &self.sent[i];
            let d = match &s.dialog {
                Some(d) => d.clone(),
                None => {
                    let mut routes = record_routes(&resp);
                    routes.reverse();
                    let d = Dialog {
                        call_id: s.msg.call_id().to_string(),
                        from: s.msg.header(&HeaderName::From).unwrap_or("").to_string(),
                        to: resp.header(&HeaderName::To).unwrap_or("").to_string(),
                        remote_tag: resp.to().tag().unwrap_or("").to_string(),
                        target: first_contact(&resp)
                            .unwrap_or_else(|| s.msg.request_uri().unwrap_or("").to_string()),
                        routes,
                    };
                    let dialogs = &mut self.eps[ep].dialogs;
                    if !dialogs
                        .iter()
                        .any(|x| x.call_id == d.call_id && x.remote_tag == d.remote_tag)
                    {
                        dialogs.push(d.clone());
                    }
                    d
                }
            };
            let seq = s.msg.cseq().seq;
            let branch = format!("b{}k", self.fresh());
            let ack = self.eps[ep].phone.dialog_request(
                "ACK",
                &d.target,
                &d.routes,
                &d.from,
                &d.to,
                &d.call_id,
                &branch,
                Some(seq),
            );
            self.send(ep, ack, What::Ack)?;
        }
        Ok(())
    }

    /// A dialog of an endpoint that can send now, and that endpoint.
    fn pick_dialog(&self, pick: u8) -> Option<(usize, Dialog)> {
        let all: Vec<(usize, &Dialog)> = (0..self.eps.len())
            .filter(|&ep| self.can_request(ep))
            .flat_map(|ep| self.eps[ep].dialogs.iter().map(move |d| (ep, d)))
            .collect();
        (!all.is_empty()).then(|| {
            let (ep, d) = all[usize::from(pick) % all.len()];
            (ep, d.clone())
        })
    }

    fn bye(&mut self, pick: u8) -> Result<(), String> {
        let Some((ep, d)) = self.pick_dialog(pick) else {
            return Ok(());
        };
        self.eps[ep]
            .dialogs
            .retain(|x| !(x.call_id == d.call_id && x.remote_tag == d.remote_tag));
        let branch = format!("b{}y", self.fresh());
        let text = self.eps[ep].phone.dialog_request(
            "BYE", &d.target, &d.routes, &d.from, &d.to, &d.call_id, &branch, None,
        );
        self.send_request(ep, text, None)?;
        Ok(())
    }

    fn reinvite(&mut self, pick: u8) -> Result<(), String> {
        let Some((ep, d)) = self.pick_dialog(pick) else {
            return Ok(());
        };
        let branch = format!("b{}r", self.fresh());
        let text = self.eps[ep].phone.dialog_request(
            "INVITE", &d.target, &d.routes, &d.from, &d.to, &d.call_id, &branch, None,
        );
        self.send_request(ep, text, Some(d))?;
        Ok(())
    }

    fn redeliver(&mut self, pick: u8) -> Result<(), String> {
        let now = self.b.now.at;
        let cands: Vec<usize> = (0..self.log.len())
            .filter(|&k| {
                let d = &self.log[k];
                if now.duration_since(d.at) > RETRANSMIT_WINDOW {
                    return false;
                }
                match d.what {
                    What::Request(i) => {
                        self.sent[i].finals.is_empty() && self.same_flow(d.ep, d.flow)
                    }
                    What::Ack => self.same_flow(d.ep, d.flow),
                    What::Response => !self.eps[d.ep].offline,
                }
            })
            .collect();
        if cands.is_empty() {
            return Ok(());
        }
        let k = cands[usize::from(pick) % cands.len()];
        let (ep, text) = (self.log[k].ep, self.log[k].text.clone());
        self.stats.redelivered += 1;
        self.deliver(ep, &text)
    }

    // ------------------------------------------------------------ checks

    /// The invariants of every step.
    fn check_step(&mut self) -> Result<(), String> {
        let c = &self.b.core;
        let (servers, clients) = (c.txns.server_count(), c.txns.client_count());
        if servers > self.p.max_server {
            return Err(format!(
                "bound: {servers} server transactions, limit {}",
                self.p.max_server
            ));
        }
        if clients > self.p.max_client {
            return Err(format!(
                "bound: {clients} client transactions, limit {}",
                self.p.max_client
            ));
        }
        if c.calls().len() > self.p.max_calls {
            return Err(format!(
                "bound: {} calls, limit {}",
                c.calls().len(),
                self.p.max_calls
            ));
        }
        self.stats.server_full |= servers == self.p.max_server;
        self.stats.client_full |= clients == self.p.max_client;
        self.stats.calls_full |= c.calls().len() == self.p.max_calls;
        let can_register = c
            .config()
            .clients
            .iter()
            .filter(|x| x.secret.is_some())
            .count();
        if c.registrar().clients() > can_register {
            return Err(format!(
                "bound: {} clients with bindings, {can_register} can register",
                c.registrar().clients()
            ));
        }
        for name in c.config().clients.iter().map(|x| x.name.as_str()) {
            let max = c
                .config()
                .client(name)
                .map_or(0, |x| x.max_contacts(&c.config().general) as usize);
            if c.registrar().of(name).len() > max {
                return Err(format!("bound: {name} holds more than {max} bindings"));
            }
        }
        if c.deferred_count() > self.b.confirms.len() {
            return Err(format!(
                "bound: {} deferred answers but {} confirmations pending",
                c.deferred_count(),
                self.b.confirms.len()
            ));
        }
        if c.guard.tracked() > super::super::identify::Guard::MAX_TRACKED {
            return Err("bound: guard table over its limit".into());
        }
        // What a restart would load is what the core holds.
        let store = self.store.state();
        let mut stored: Vec<(&str, &str, std::net::SocketAddr)> = store
            .bindings
            .values()
            .flatten()
            .map(|r| (r.name.as_str(), r.contact.as_str(), r.source))
            .collect();
        let mut held: Vec<(&str, &str, std::net::SocketAddr)> = c
            .registrar()
            .iter()
            .map(|b| (b.name.as_str(), b.contact.as_str(), b.source.addr))
            .collect();
        stored.sort();
        held.sort();
        if stored != held {
            return Err(format!(
                "store: bindings held {held:?} but stored {stored:?}"
            ));
        }
        // Also while changes are pending: a change is in force only once
        // committed.
        for client in &c.config().clients {
            let held = c.forwards().get(&client.name);
            let stored = store
                .forwards
                .get(&client.name)
                .and_then(|r| Override::from_row(r).ok());
            if held != stored.as_ref() {
                return Err(format!(
                    "store: forwarding of {} held {held:?} but stored {stored:?}",
                    client.name
                ));
            }
        }
        let timers_of = |cid: u64| {
            c.ctx_timers
                .iter()
                .filter(move |std::cmp::Reverse((_, t, _, _))| *t == cid)
                .map(|std::cmp::Reverse((at, _, _, kind))| (*at, *kind))
        };
        let linger = crate::transaction::LINGER + Duration::from_secs(1);
        for a in c.ctx_audit() {
            if a.finished {
                let cleanup = timers_of(a.cid)
                    .any(|(at, k)| k == CtxTimer::Cleanup && at <= self.b.now.at + linger);
                if !cleanup {
                    return Err(format!(
                        "leak: finished context {} has no cleanup due",
                        a.cid
                    ));
                }
                continue;
            }
            if c.txns.server(a.server).is_none() {
                return Err(format!(
                    "orphan: context {} is unfinished but its server transaction is gone",
                    a.cid
                ));
            }
            let branch_alive = a.branch_txs.iter().any(|t| c.txns.client(*t).is_some());
            if !branch_alive && timers_of(a.cid).next().is_none() {
                return Err(format!(
                    "stuck: context {} is unfinished with no branch and no timer left",
                    a.cid
                ));
            }
        }
        Ok(())
    }

    /// Run every timer, commit what waits, then check that nothing is left.
    fn drain(&mut self) -> Result<(), String> {
        for _ in 0..4 {
            self.commit(true)?;
            self.b.advance(Duration::from_secs(100));
            self.pump()?;
            self.check_step()?;
        }
        // Calls without BYE end after 12 h, bindings expire.
        self.b.advance(Duration::from_secs(13 * 3600));
        self.pump()?;
        let mut rounds = 0;
        // Gateway health checks go on for ever: every other timer drains.
        while let Some(at) = self.b.core.next_timer_but_checks() {
            rounds += 1;
            if rounds > 10_000 {
                return Err("timers: they never drain".into());
            }
            let d = at.saturating_duration_since(self.b.now.at);
            self.b.advance(d);
            self.commit(true)?;
        }
        self.b.advance(Duration::from_secs(2));
        self.pump()?;
        self.check_step()?;
        let c = &self.b.core;
        let left = [
            ("proxy contexts", c.context_count()),
            ("server transactions", c.txns.server_count()),
            ("client transactions", c.txns.client_count()),
            ("deferred answers", c.deferred_count()),
            ("calls", c.calls().len()),
            ("bindings", c.registrar().len()),
            ("pending confirmations", self.b.confirms.len()),
        ];
        for (what, n) in left {
            if n > 0 {
                return Err(format!("leak: {n} {what} left at the end"));
            }
        }
        if let Some(t) = c.next_timer_but_checks() {
            return Err(format!(
                "leak: a timer is still pending {:?} ahead",
                t.saturating_duration_since(self.b.now.at)
            ));
        }
        for s in &self.sent {
            if !s.flow_lost && s.finals.len() != 1 {
                return Err(format!(
                    "finals: {}'s {} {} (branch {}) got {:?}",
                    NAMES[s.ep],
                    s.method.as_str(),
                    s.msg.call_id(),
                    s.branch,
                    s.finals
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- running

#[derive(Clone, Debug)]
struct Failure {
    /// Index of the failing event; the number of events for the final checks.
    step: usize,
    msg: String,
}

impl Failure {
    fn kind(&self) -> &str {
        self.msg.split(':').next().unwrap_or("")
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

fn run(p: &Params, evs: &[Event]) -> Result<Stats, Failure> {
    let mut w = World::new(p);
    for (step, ev) in evs.iter().enumerate() {
        let r = catch_unwind(AssertUnwindSafe(|| {
            w.apply(ev)?;
            w.check_step()
        }));
        match r {
            Ok(Ok(())) => w.stats.steps += 1,
            Ok(Err(msg)) => return Err(Failure { step, msg }),
            Err(p) => {
                let msg = format!("panic: {}", panic_text(p));
                return Err(Failure { step, msg });
            }
        }
    }
    let step = evs.len();
    match catch_unwind(AssertUnwindSafe(|| w.drain())) {
        Ok(Ok(())) => {
            let c = &w.b.core.counters;
            w.stats.overload = c.overload;
            w.stats.send_failures = c.send_failures;
            w.stats.absorbed = c.retransmissions;
            Ok(w.stats)
        }
        Ok(Err(msg)) => Err(Failure { step, msg }),
        Err(p) => Err(Failure {
            step,
            msg: format!("panic: {}", panic_text(p)),
        }),
    }
}

/// Drop events (halves, quarters, … single ones) while the run still
/// fails the same way.
fn shrink(p: &Params, evs: &[Event], f: &Failure) -> (Vec<Event>, Failure) {
    let mut best = evs[..(f.step + 1).min(evs.len())].to_vec();
    let mut fail = f.clone();
    let mut runs = 0;
    let mut chunk = best.len().div_ceil(2);
    while chunk >= 1 && runs < 600 {
        let mut i = 0;
        while i < best.len() && runs < 600 {
            let mut cand = best.clone();
            cand.drain(i..(i + chunk).min(best.len()));
            runs += 1;
            match run(p, &cand) {
                Err(f2) if f2.kind() == f.kind() => {
                    cand.truncate((f2.step + 1).min(cand.len()));
                    best = cand;
                    fail = f2;
                }
                _ => i += chunk,
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    (best, fail)
}

fn listing(evs: &[Event]) -> String {
    evs.iter()
        .enumerate()
        .map(|(i, e)| format!("  {i:3}: {e:?}\n"))
        .collect()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn at_step(f: &Failure, len: usize) -> String {
    if f.step >= len {
        "in the final checks".to_string()
    } else {
        format!("at step {}", f.step)
    }
}

#[test]
fn random_sequences_keep_the_invariants() {
    let sequences = env("SIPD_CORE_SEQUENCES", 300);
    let steps = env("SIPD_CORE_STEPS", 60) as usize;
    let first = env("SIPD_CORE_SEED", 1);
    let started = Instant::now();
    let mut total = Stats::default();
    let (mut server_full, mut client_full, mut calls_full) = (0, 0, 0);
    for seed in first..first + sequences {
        let p = params(seed);
        let evs = events(seed, steps);
        match run(&p, &evs) {
            Ok(st) => {
                total.overload += st.overload;
                total.send_failures += st.send_failures;
                total.absorbed += st.absorbed;
                total.steps += st.steps;
                total.to_core += st.to_core;
                total.from_core += st.from_core;
                total.answered += st.answered;
                total.redelivered += st.redelivered;
                for (k, n) in st.sent {
                    *total.sent.entry(k).or_default() += n;
                }
                server_full += usize::from(st.server_full);
                client_full += usize::from(st.client_full);
                calls_full += usize::from(st.calls_full);
                for (code, n) in st.finals {
                    *total.finals.entry(code).or_default() += n;
                }
            }
            Err(f) => {
                let (short, sf) = shrink(&p, &evs, &f);
                panic!(
                    "core sequence failed {}: {}\n\
                     seed {seed}, bounds {p:?}\n\
                     replay with SIPD_CORE_SEED={seed} SIPD_CORE_SEQUENCES=1 SIPD_CORE_STEPS={steps}\n\
                     events ({}):\n{}\
                     shortest failing list ({} events, fails {}: {}):\n{}",
                    at_step(&f, evs.len()),
                    f.msg,
                    evs.len(),
                    listing(&evs),
                    short.len(),
                    at_step(&sf, short.len()),
                    sf.msg,
                    listing(&short),
                );
            }
        }
    }
    eprintln!(
        "core sequences: {sequences} sequences (seeds {first}..{}), {} steps, {} messages to the \
         core and {} from it in {:.1?}; tables full in {server_full} (server), {client_full} \
         (client), {calls_full} (calls) sequences; {} calls answered; requests sent {:?}, {} sent \
         again ({} absorbed by the core); {} overloads, {} send failures; INVITE finals {:?}",
        first + sequences,
        total.steps,
        total.to_core,
        total.from_core,
        started.elapsed(),
        total.answered,
        total.sent,
        total.redelivered,
        total.absorbed,
        total.overload,
        total.send_failures,
        total.finals
    );
}

#[test]
fn a_seed_replays_the_same_sequence() {
    for seed in 1..=10 {
        let p = params(seed);
        let evs = events(seed, 40);
        let a = run(&p, &evs).map(|s| s.digest).map_err(|f| f.msg);
        let b = run(&p, &evs).map(|s| s.digest).map_err(|f| f.msg);
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
}
