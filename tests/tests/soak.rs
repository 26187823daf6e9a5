//! Soak: a seeded random mix of SIP event sequences, from several UDP and TCP
//! sockets at once, against the real sipd binary for a bounded time; then
//! sipd must still be running, answer OPTIONS, and drain its tables (calls,
//! transactions, TCP connections) back to zero.
//!
//! Four worker threads each own four phones (two of group `alpha`, two of
//! group `beta`, at least one over UDP and one over TCP) and run one short
//! scenario after another between their own phones, driving both ends; a
//! fifth thread is the gateway (a UDP socket at the gateway's `host=`). Each
//! scenario checks what sipd must do (who gets the INVITE, which final the
//! caller sees, when sipd CANCELs, what the gateway receives); every socket
//! read has a timeout and every phone answers what it is sent (retransmitted
//! requests get the last response again; BYE, CANCEL, OPTIONS get 200; non-2xx
//! finals are ACKed), so that every transaction can finish.
//!
//! - `SIPD_SOAK_SEED=<n>` replays a run's choices (printed at the start and
//!   in every failure); without it the seed comes from the clock. The seed
//!   fixes every choice each worker makes; how the workers interleave (and
//!   so what sipd sees at once) still depends on timing.
//! - `SIPD_SOAK_SECS` (default 60, what CI runs): how long the mix runs.
//! - `SIPD_SOAK_KINDS=a,b` / `SIPD_SOAK_SKIP=a,b`: run only / leave out some
//!   sequence kinds (names as in the summary), e.g. to look past a known
//!   failure.
//! - `SIPD_SOAK_TRACE=1`: run sipd with `-d`; when the test fails, its
//!   message trace is saved as `$TMPDIR/sipd-soak-<seed>-trace.log`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sipd::sip::{frame_stream, Contact, HeaderName, Limits, Message, ResponseBuilder, StreamFrame};
use sipd_tests::ua::{credentials, unique, Dialog, Req};
use sipd_tests::{free_port, Sipd, Ua};

/// Usual wait for something sipd relays at once.
const T: Duration = Duration::from_secs(5);
/// `[general] noanswer=` of the test configuration.
const NOANSWER: u64 = 3;
const WORKERS: usize = 4;
/// Phones per worker (WORKERS * PHONES = 16 clients).
const PHONES: usize = 4;
const GW_PREFIX: &str = "99";
/// How long the tables may take to drain after the mix: finished
/// transactions linger 5 s, timer B/F and an unanswered CANCEL 32 s, and
/// the longest chain is a CANCEL the callee ignores near the end of the
/// mix (sipd answers the caller 487 after 64*T1) that the caller, its
/// sequence over, does not ACK (timer H: another 64*T1), so 64 s + linger.
const DRAIN: Duration = Duration::from_secs(90);
const SDP: &[u8] =
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

// ------------------------------------------------------------------ PRNG

/// SplitMix64: small, fast, good enough to pick scenarios.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

// ----------------------------------------------------------------- kinds

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Register,
    Options,
    Malformed,
    CallAnswer,
    CallBusy,
    CallNoAnswer,
    CallSilent,
    CallerCancel,
    CancelIgnored,
    TcpCallerCloses,
    ClosedTcpCallee,
    TcpReconnect,
    Gateway,
}

/// Every kind with its weight in the mix.
const KINDS: &[(Kind, usize)] = &[
    (Kind::Register, 8),
    (Kind::Options, 5),
    (Kind::Malformed, 4),
    (Kind::CallAnswer, 14),
    (Kind::CallBusy, 6),
    (Kind::CallNoAnswer, 5),
    (Kind::CallSilent, 3),
    (Kind::CallerCancel, 8),
    (Kind::CancelIgnored, 2),
    (Kind::TcpCallerCloses, 5),
    (Kind::ClosedTcpCallee, 4),
    (Kind::TcpReconnect, 3),
    (Kind::Gateway, 10),
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Options => "options",
            Kind::Malformed => "malformed",
            Kind::CallAnswer => "call-answer",
            Kind::CallBusy => "call-busy",
            Kind::CallNoAnswer => "call-noanswer",
            Kind::CallSilent => "call-silent",
            Kind::CallerCancel => "caller-cancel",
            Kind::CancelIgnored => "cancel-ignored",
            Kind::TcpCallerCloses => "tcp-caller-closes",
            Kind::ClosedTcpCallee => "closed-tcp-callee",
            Kind::TcpReconnect => "tcp-reconnect",
            Kind::Gateway => "gateway",
        }
    }
}

/// The mix after SIPD_SOAK_KINDS / SIPD_SOAK_SKIP.
fn chosen_kinds() -> Vec<(Kind, usize)> {
    let list = |var: &str| -> Option<Vec<String>> {
        std::env::var(var).ok().map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
    };
    let only = list("SIPD_SOAK_KINDS");
    let skip = list("SIPD_SOAK_SKIP").unwrap_or_default();
    for name in only.iter().flatten().chain(skip.iter()) {
        assert!(
            KINDS.iter().any(|(k, _)| k.name() == name),
            "unknown sequence kind {name:?}; kinds: {:?}",
            KINDS.iter().map(|(k, _)| k.name()).collect::<Vec<_>>()
        );
    }
    let kinds: Vec<(Kind, usize)> = KINDS
        .iter()
        .copied()
        .filter(|(k, _)| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|n| n == k.name()))
        })
        .filter(|(k, _)| !skip.iter().any(|n| n == k.name()))
        .collect();
    assert!(
        !kinds.is_empty(),
        "SIPD_SOAK_KINDS/SKIP leave no sequence kind"
    );
    kinds
}

// ----------------------------------------------------------------- stats

#[derive(Default)]
struct Stats {
    /// Per kind: sequences run, of them failed, steps.
    seqs: BTreeMap<&'static str, (u64, u64, u64)>,
    /// Observations worth printing (codes seen, timings).
    notes: BTreeMap<String, u64>,
    background: u64,
    retransmissions_in: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        for (k, (a, b, c)) in o.seqs {
            let e = self.seqs.entry(k).or_default();
            e.0 += a;
            e.1 += b;
            e.2 += c;
        }
        for (k, v) in o.notes {
            *self.notes.entry(k).or_default() += v;
        }
        self.background += o.background;
        self.retransmissions_in += o.retransmissions_in;
    }
}

/// What the threads share.
struct Shared {
    seed: u64,
    server: SocketAddr,
    start: Instant,
    mix_end: Instant,
    /// sipd died (or a thread of it panicked): give up quickly.
    stop: AtomicBool,
    /// The checks after the mix are over: exit.
    done: AtomicBool,
    /// Workers still running sequences.
    mixing: AtomicUsize,
    anomalies: Mutex<Vec<String>>,
    kinds: Vec<(Kind, usize)>,
    /// What each worker did last (printed when sipd breaks).
    running: Mutex<Vec<VecDeque<String>>>,
}

impl Shared {
    fn anomaly(&self, what: String) {
        let t = self.start.elapsed().as_secs_f64();
        let mut a = self.anomalies.lock().unwrap();
        if a.len() < 500 {
            a.push(format!("[t={t:.1}s] {what}"));
        }
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

// -------------------------------------------------------- message helpers

fn first_line(m: &Message) -> String {
    let raw = String::from_utf8_lossy(m.raw());
    raw.lines().next().unwrap_or("").to_string()
}

fn method_of(m: &Message) -> &str {
    m.method().map(|x| x.as_str()).unwrap_or("")
}

fn cseq_of(req: &Req) -> (u32, String) {
    let v = req.get("CSeq").unwrap_or("1 X");
    let mut it = v.split_whitespace();
    let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    (n, it.next().unwrap_or("").to_string())
}

fn contact_of(m: &Message) -> Result<String, String> {
    match m.contacts().ok().and_then(|c| c.into_iter().next()) {
        Some(Contact::Addr(a)) => Ok(a.uri.to_string()),
        _ => Err(format!("no Contact in {}", first_line(m))),
    }
}

/// The caller's dialog from its INVITE and the 2xx.
fn uac_dialog(inv: &Req, ok: &Message) -> Result<Dialog, String> {
    let mut routes: Vec<String> = ok
        .header_values(&HeaderName::RecordRoute)
        .into_iter()
        .map(str::to_string)
        .collect();
    routes.reverse();
    let n = cseq_of(inv).0;
    Ok(Dialog {
        call_id: inv.get("Call-ID").unwrap_or("").to_string(),
        local: inv.get("From").unwrap_or("").to_string(),
        remote: ok.header(&HeaderName::To).unwrap_or("").to_string(),
        target: contact_of(ok)?,
        routes,
        cseq: n,
        invite_cseq: n,
    })
}

/// The callee's dialog from the INVITE it got and its To tag.
fn uas_dialog(inv: &Message, tag: &str) -> Result<Dialog, String> {
    Ok(Dialog {
        call_id: inv.call_id().to_string(),
        local: format!("{};tag={tag}", inv.header(&HeaderName::To).unwrap_or("")),
        remote: inv.header(&HeaderName::From).unwrap_or("").to_string(),
        target: contact_of(inv)?,
        routes: inv
            .header_values(&HeaderName::RecordRoute)
            .into_iter()
            .map(str::to_string)
            .collect(),
        cseq: 100,
        invite_cseq: inv.cseq().seq,
    })
}

/// ACK for a non-2xx final (hop by hop: the INVITE's Via, the response's To).
fn ack_non2xx(req: &Req, resp: &Message) -> Vec<u8> {
    hop_request(req, "ACK", resp.header(&HeaderName::To))
}

/// CANCEL for an INVITE we sent.
fn cancel_of(req: &Req) -> Vec<u8> {
    hop_request(req, "CANCEL", None)
}

fn hop_request(req: &Req, method: &str, to: Option<&str>) -> Vec<u8> {
    let mut headers = vec![
        ("Via".to_string(), req.get("Via").unwrap_or("").to_string()),
        ("Max-Forwards".into(), "70".into()),
    ];
    for (n, v) in &req.headers {
        if n.eq_ignore_ascii_case("Route") {
            headers.push((n.clone(), v.clone()));
        }
    }
    headers.extend([
        (
            "From".to_string(),
            req.get("From").unwrap_or("").to_string(),
        ),
        ("To".into(), to.or(req.get("To")).unwrap_or("").to_string()),
        (
            "Call-ID".into(),
            req.get("Call-ID").unwrap_or("").to_string(),
        ),
        ("CSeq".into(), format!("{} {method}", cseq_of(req).0)),
    ]);
    Req {
        method: method.into(),
        uri: req.uri.clone(),
        headers,
        body: Vec::new(),
    }
    .to_bytes()
}

// ----------------------------------------------------------------- phone

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
}

/// What a phone remembers of a request it received (to answer its
/// retransmissions, and to end a ringing INVITE when a CANCEL comes).
struct Uas {
    at: Instant,
    req: Option<Message>,
    last: Option<Vec<u8>>,
    tag: String,
    final_code: u16,
}

struct Phone {
    user: String,
    secret: String,
    group: usize,
    short: String,
    long: String,
    tcp: bool,
    conn: Option<Conn>,
    local: SocketAddr,
    server: SocketAddr,
    reg_call_id: String,
    reg_cseq: u32,
    /// sipd holds a binding to our current socket (since then).
    registered: Option<Instant>,
    /// sipd holds a binding to a TCP connection we have closed.
    stale: bool,
    /// Requests received, by (branch, method).
    uas: HashMap<(String, String), Uas>,
    /// INVITEs sent, by branch (for ACKs of non-2xx and stray 2xx).
    uac: HashMap<String, (Instant, Req)>,
    /// ACKs sent for 2xx, by "call-id cseq" (re-sent on 2xx retransmissions).
    acks: HashMap<String, (Instant, Vec<u8>)>,
    /// Call-IDs whose messages this phone ignores (it plays dead).
    ignore: HashMap<String, Instant>,
    inbox: VecDeque<Message>,
    buf: Vec<u8>,
}

impl Phone {
    fn new(n: usize, tcp: bool, server: SocketAddr) -> Phone {
        Phone {
            user: format!("u{n:02}"),
            secret: format!("pw-{n:02}-soak"),
            group: if n <= 8 { 0 } else { 1 },
            short: format!("1{:02}", (n - 1) % 8 + 1),
            long: format!("4951000{n:03}"),
            tcp,
            conn: None,
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            server,
            reg_call_id: unique("reg-"),
            reg_cseq: 0,
            registered: None,
            stale: false,
            uas: HashMap::new(),
            uac: HashMap::new(),
            acks: HashMap::new(),
            ignore: HashMap::new(),
            inbox: VecDeque::new(),
            buf: vec![0u8; 65_536],
        }
    }

    fn transport(&self) -> &'static str {
        if self.tcp {
            "TCP"
        } else {
            "UDP"
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        if self.tcp {
            let s = TcpStream::connect_timeout(&self.server, T)
                .map_err(|e| format!("{}: tcp connect: {e}", self.user))?;
            let _ = s.set_nodelay(true);
            s.set_nonblocking(true).unwrap();
            self.local = s.local_addr().unwrap();
            self.conn = Some(Conn::Tcp(s, Vec::new()));
        } else {
            let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp bind: {e}"))?;
            s.set_nonblocking(true).unwrap();
            self.local = s.local_addr().unwrap();
            self.conn = Some(Conn::Udp(s));
        }
        self.registered = None;
        Ok(())
    }

    /// Drop the connection (TCP: sipd keeps the binding to the dead flow).
    fn close(&mut self) {
        if self.conn.take().is_some() && self.registered.is_some() {
            self.stale = true;
        }
        self.registered = None;
        self.inbox.clear();
    }

    fn fd(&self) -> Option<i32> {
        match &self.conn {
            Some(Conn::Udp(s)) => Some(s.as_raw_fd()),
            Some(Conn::Tcp(s, _)) => Some(s.as_raw_fd()),
            None => None,
        }
    }

    fn contact(&self) -> String {
        format!(
            "<sip:{}@{};transport={}>",
            self.user,
            self.local,
            self.transport().to_lowercase()
        )
    }

    fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            self.transport(),
            self.local,
            unique("z9hG4bK")
        )
    }

    /// A new out-of-dialog request (fresh Call-ID, tag and branch).
    fn request(&self, method: &str, uri: &str) -> Req {
        let server = self.server;
        let to = if method == "REGISTER" {
            format!("<sip:{}@{server}>", self.user)
        } else {
            format!("<{uri}>")
        };
        Req {
            method: method.into(),
            uri: uri.into(),
            headers: vec![
                ("Via".into(), self.via()),
                ("Max-Forwards".into(), "70".into()),
                (
                    "From".into(),
                    format!("<sip:{}@{server}>;tag={}", self.user, unique("f")),
                ),
                ("To".into(), to),
                ("Call-ID".into(), unique("soak-")),
                ("CSeq".into(), format!("1 {method}")),
                ("Contact".into(), self.contact()),
                ("User-Agent".into(), "sipd-soak".into()),
            ],
            body: Vec::new(),
        }
    }

    /// `req` as a new transaction: fresh branch, CSeq + 1.
    fn renew(&self, req: &Req) -> Req {
        let (n, m) = cseq_of(req);
        req.clone()
            .set("CSeq", &format!("{} {m}", n + 1))
            .set("Via", &self.via())
    }

    fn authorized(&self, req: &Req, challenge: &Message, nc: u32) -> Req {
        let (h, v) = credentials(challenge, req, &self.user, &self.secret, "MD5", nc);
        self.renew(req).set(&h, &v)
    }

    /// An in-dialog request (ACK with the CSeq of the INVITE it acknowledges).
    fn in_dialog(&self, d: &mut Dialog, method: &str) -> Req {
        let seq = if method == "ACK" {
            d.invite_cseq
        } else {
            d.cseq += 1;
            d.cseq
        };
        let mut headers = vec![
            ("Via".to_string(), self.via()),
            ("Max-Forwards".into(), "70".into()),
        ];
        for r in &d.routes {
            headers.push(("Route".into(), r.clone()));
        }
        headers.extend([
            ("From".to_string(), d.local.clone()),
            ("To".into(), d.remote.clone()),
            ("Call-ID".into(), d.call_id.clone()),
            ("CSeq".into(), format!("{seq} {method}")),
            ("Contact".into(), self.contact()),
        ]);
        if method == "INVITE" {
            d.invite_cseq = seq;
        }
        let req = Req {
            method: method.into(),
            uri: d.target.clone(),
            headers,
            body: Vec::new(),
        };
        if method == "INVITE" {
            req.body("application/sdp", SDP)
        } else {
            req
        }
    }

    fn send(&mut self, data: &[u8]) -> Result<(), String> {
        let user = &self.user;
        match &mut self.conn {
            None => Err(format!("{user}: not connected")),
            Some(Conn::Udp(s)) => s
                .send_to(data, self.server)
                .map(|_| ())
                .map_err(|e| format!("{user}: udp send: {e}")),
            Some(Conn::Tcp(s, _)) => {
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut off = 0;
                while off < data.len() {
                    match s.write(&data[off..]) {
                        Ok(0) => return Err(format!("{user}: tcp send: closed")),
                        Ok(n) => off += n,
                        Err(e)
                            if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => return Err(format!("{user}: tcp send: {e}")),
                    }
                }
                Ok(())
            }
        }
    }

    /// A response to a received request, remembered for its retransmissions.
    fn respond(&mut self, req: &Message, code: u16, reason: &str, tag: &str) -> Result<(), String> {
        let mut b = ResponseBuilder::new(req, code, reason);
        if code > 100 && !tag.is_empty() {
            b = b.to_tag(tag);
        }
        for rr in req.headers(&HeaderName::RecordRoute) {
            b = b.header(HeaderName::RecordRoute, rr);
        }
        let data = b.header(HeaderName::Contact, &self.contact()).build();
        let key = (
            req.top_via().branch().unwrap_or("").to_string(),
            method_of(req).to_string(),
        );
        if let Some(u) = self.uas.get_mut(&key) {
            u.last = Some(data.clone());
            if !tag.is_empty() {
                u.tag = tag.to_string();
            }
            if code >= 200 {
                u.final_code = code;
            }
        }
        self.send(&data)
    }

    /// Read whatever is there (non-blocking) into the inbox. Retransmitted
    /// requests are answered with the last response and not delivered.
    fn pump(&mut self, problems: &mut Vec<String>, stats: &mut Stats) {
        let limits = Limits::default();
        let mut got = Vec::new();
        let mut closed = None;
        match &mut self.conn {
            None => return,
            Some(Conn::Udp(s)) => loop {
                match s.recv_from(&mut self.buf) {
                    Ok((n, from)) => {
                        if from != self.server {
                            problems.push(format!("{}: datagram from {from}, not sipd", self.user));
                            continue;
                        }
                        match Message::parse(&self.buf[..n], &limits) {
                            Ok(m) => got.push(m),
                            Err(e) => problems.push(format!(
                                "{}: unparseable datagram from sipd ({e}): {:?}",
                                self.user,
                                String::from_utf8_lossy(&self.buf[..n.min(300)])
                            )),
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            },
            Some(Conn::Tcp(s, pending)) => {
                loop {
                    match s.read(&mut self.buf) {
                        Ok(0) => {
                            closed = Some("sipd closed our TCP connection".to_string());
                            break;
                        }
                        Ok(n) => pending.extend_from_slice(&self.buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            closed = Some(format!("TCP connection failed: {e}"));
                            break;
                        }
                    }
                }
                loop {
                    match frame_stream(pending, &limits) {
                        Ok(StreamFrame::Message(len)) => {
                            match Message::parse_stream(&pending[..len], &limits) {
                                Ok(m) => got.push(m),
                                Err(e) => problems.push(format!(
                                    "{}: unparseable message from sipd over TCP ({e})",
                                    self.user
                                )),
                            }
                            pending.drain(..len);
                        }
                        Ok(StreamFrame::KeepAlive(k)) => {
                            pending.drain(..k);
                        }
                        Ok(StreamFrame::Incomplete) => break,
                        Err(e) => {
                            closed = Some(format!("TCP framing error from sipd: {e}"));
                            break;
                        }
                    }
                }
            }
        }
        for m in got {
            self.deliver(m, stats);
        }
        if let Some(why) = closed {
            problems.push(format!("{}: {why}", self.user));
            self.close();
        }
    }

    fn deliver(&mut self, m: Message, stats: &mut Stats) {
        if self.ignore.contains_key(m.call_id()) {
            return;
        }
        if m.is_request() {
            let key = (
                m.top_via().branch().unwrap_or("").to_string(),
                method_of(&m).to_string(),
            );
            if let Some(u) = self.uas.get(&key) {
                stats.retransmissions_in += 1;
                if let Some(last) = u.last.clone() {
                    let _ = self.send(&last);
                }
                return;
            }
            let req = (method_of(&m) == "INVITE").then(|| m.clone());
            self.uas.insert(
                key,
                Uas {
                    at: Instant::now(),
                    req,
                    last: None,
                    tag: String::new(),
                    final_code: 0,
                },
            );
        }
        self.inbox.push_back(m);
    }

    /// Forget old transaction state.
    fn prune(&mut self) {
        let old = |at: &Instant| at.elapsed() > Duration::from_secs(90);
        self.uas.retain(|_, u| !old(&u.at));
        self.uac.retain(|_, (at, _)| !old(at));
        self.acks.retain(|_, (at, _)| !old(at));
        self.ignore.retain(|_, at| !old(at));
    }
}

// ---------------------------------------------------------------- worker

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tp {
    Any,
    Udp,
    Tcp,
}

struct Worker {
    id: usize,
    rng: Rng,
    phones: Vec<Phone>,
    sh: Arc<Shared>,
    stats: Stats,
    kind: Kind,
    seq: u64,
    /// Dialogs established in the current sequence (BYE on failure).
    cleanup: Vec<(usize, Dialog)>,
    /// Call-IDs of the running sequence: their messages stay in the inbox
    /// until a step takes them or the sequence ends.
    current: Vec<String>,
    problems: Vec<String>,
}

type Res<T = ()> = Result<T, String>;

impl Worker {
    fn new(id: usize, sh: Arc<Shared>) -> Worker {
        let mut rng = Rng::new(sh.seed ^ (id as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
        let mut phones = Vec::new();
        // Two alpha phones (one UDP, one TCP), two beta phones (random).
        for (j, n) in [id * 2 + 1, id * 2 + 2, id * 2 + 9, id * 2 + 10]
            .into_iter()
            .enumerate()
        {
            let tcp = match j {
                0 => false,
                1 => true,
                _ => rng.chance(50),
            };
            phones.push(Phone::new(n, tcp, sh.server));
        }
        Worker {
            id,
            rng,
            phones,
            sh,
            stats: Stats::default(),
            kind: Kind::Options,
            seq: 0,
            cleanup: Vec::new(),
            current: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn ctx(&self) -> String {
        format!("w{} #{} {}", self.id, self.seq, self.kind.name())
    }

    fn anomaly(&mut self, what: String) {
        self.sh.anomaly(format!("{}: {what}", self.ctx()));
    }

    /// Record what the running sequence does (for the report when sipd
    /// breaks): the last few sequences of each worker are kept.
    fn describe(&mut self, what: String) {
        let line = format!(
            "{} at t={:.1}s {what}",
            self.ctx(),
            self.sh.start.elapsed().as_secs_f64()
        );
        let mut r = self.sh.running.lock().unwrap();
        let h = &mut r[self.id];
        if what.is_empty() || h.is_empty() {
            h.push_back(line);
        } else {
            *h.back_mut().expect("not empty") = line;
        }
        if h.len() > 4 {
            h.pop_front();
        }
    }

    fn note(&mut self, what: String) {
        *self.stats.notes.entry(what).or_default() += 1;
    }

    fn step(&mut self) {
        self.stats.seqs.entry(self.kind.name()).or_default().2 += 1;
    }

    fn user(&self, i: usize) -> String {
        self.phones[i].user.clone()
    }

    fn poll(&self, d: Duration) {
        let mut fds: Vec<libc::pollfd> = self
            .phones
            .iter()
            .filter_map(Phone::fd)
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if fds.is_empty() {
            std::thread::sleep(d);
            return;
        }
        let ms = d.as_millis().clamp(1, 1000) as i32;
        // SAFETY: `fds` is a valid array of pollfd for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    }

    /// The first message some phone receives that `want` accepts, handling
    /// everything else in the background; None after `timeout` (or at once
    /// when sipd is gone).
    fn wait(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(usize, &Message) -> bool,
    ) -> Option<(usize, Message)> {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 0..self.phones.len() {
                let mut j = 0;
                while j < self.phones[i].inbox.len() {
                    if want(i, &self.phones[i].inbox[j]) {
                        let m = self.phones[i].inbox.remove(j).expect("in range");
                        self.step();
                        return Some((i, m));
                    }
                    // Messages of the running sequence wait for its steps.
                    let cid = self.phones[i].inbox[j].call_id();
                    if self.current.iter().any(|c| c == cid) {
                        j += 1;
                        continue;
                    }
                    let m = self.phones[i].inbox.remove(j).expect("in range");
                    self.background(i, m);
                }
            }
            for p in std::mem::take(&mut self.problems) {
                self.anomaly(p);
            }
            let now = Instant::now();
            if now >= deadline || self.sh.stopped() {
                return None;
            }
            self.poll((deadline - now).min(Duration::from_millis(100)));
            for p in &mut self.phones {
                p.pump(&mut self.problems, &mut self.stats);
            }
        }
    }

    /// Serve the phones for a while.
    fn idle(&mut self, d: Duration) {
        if self.sh.stopped() {
            std::thread::sleep(d.min(Duration::from_millis(100)));
            return;
        }
        self.wait(d, |_, _| false);
    }

    /// What a phone does with a message no scenario step waits for.
    fn background(&mut self, i: usize, m: Message) {
        self.stats.background += 1;
        let ctx = self.ctx();
        let p = &mut self.phones[i];
        let r = if m.is_request() {
            match method_of(&m) {
                "ACK" => Ok(()),
                "INVITE" if m.to().tag().is_none() => {
                    let what = format!(
                        "{ctx}: {} got an INVITE no step expected: call-id {} from {}",
                        p.user,
                        m.call_id(),
                        m.header(&HeaderName::From).unwrap_or("")
                    );
                    self.sh.anomaly(what);
                    p.respond(&m, 486, "Busy Here", &unique("bg"))
                }
                "CANCEL" => {
                    let r = p.respond(&m, 200, "OK", "");
                    let key = (
                        m.top_via().branch().unwrap_or("").to_string(),
                        "INVITE".to_string(),
                    );
                    let ringing = p
                        .uas
                        .get(&key)
                        .filter(|u| u.final_code == 0)
                        .and_then(|u| u.req.clone().map(|r| (r, u.tag.clone())));
                    if let Some((inv, tag)) = ringing {
                        let tag = if tag.is_empty() { unique("bg") } else { tag };
                        let _ = p.respond(&inv, 487, "Request Terminated", &tag);
                    }
                    r
                }
                _ => p.respond(&m, 200, "OK", &unique("bg")),
            }
        } else {
            let code = m.status().unwrap_or(0);
            if m.cseq().method.as_str() != "INVITE" || code < 200 {
                return;
            }
            let branch = m.top_via().branch().unwrap_or("").to_string();
            let Some((_, inv)) = p.uac.get(&branch).cloned() else {
                return;
            };
            if code >= 300 {
                p.send(&ack_non2xx(&inv, &m))
            } else {
                let key = format!("{} {}", m.call_id(), m.cseq().seq);
                if let Some((_, ack)) = p.acks.get(&key).cloned() {
                    p.send(&ack)
                } else {
                    // A 2xx for a call this phone did not expect to be
                    // answered: ACK it and hang up.
                    let what = format!(
                        "{ctx}: {} got a 2xx no step expected: call-id {}",
                        p.user,
                        m.call_id()
                    );
                    self.sh.anomaly(what);
                    match uac_dialog(&inv, &m) {
                        Ok(mut d) => {
                            let ack = p.in_dialog(&mut d, "ACK").to_bytes();
                            p.acks.insert(key, (Instant::now(), ack.clone()));
                            let _ = p.send(&ack);
                            let bye = p.in_dialog(&mut d, "BYE").to_bytes();
                            p.send(&bye)
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        };
        if let Err(e) = r {
            if !self.sh.stopped() {
                self.note(format!("background send failed: {e}"));
            }
        }
    }

    // ---------------------------------------------------------- steps

    fn send_req(&mut self, i: usize, req: &Req) -> Res {
        if let Some(cid) = req.get("Call-ID") {
            if !self.current.iter().any(|c| c == cid) {
                self.current.push(cid.to_string());
            }
        }
        if req.method == "INVITE" {
            let branch = req
                .get("Via")
                .and_then(|v| v.split("branch=").nth(1))
                .map(|b| b.split(';').next().unwrap_or("").to_string())
                .unwrap_or_default();
            self.phones[i]
                .uac
                .insert(branch, (Instant::now(), req.clone()));
        }
        self.step();
        self.phones[i].send(&req.to_bytes())
    }

    /// Send, and sometimes the same bytes again (a retransmission).
    fn send_req_dup(&mut self, i: usize, req: &Req) -> Res {
        self.send_req(i, req)?;
        if self.rng.chance(15) {
            let d = self.rng.ms(0, 40);
            self.idle(d);
            self.note(format!("duplicate {} sent", req.method));
            self.send_req(i, req)?;
        }
        Ok(())
    }

    fn send_raw(&mut self, i: usize, data: &[u8]) -> Res {
        self.step();
        self.phones[i].send(data)
    }

    fn respond(&mut self, i: usize, req: &Message, code: u16, reason: &str, tag: &str) -> Res {
        self.step();
        self.phones[i].respond(req, code, reason, tag)?;
        if self.rng.chance(10) {
            self.note(format!("duplicate {code} sent"));
            let last = self.phones[i]
                .uas
                .get(&(
                    req.top_via().branch().unwrap_or("").to_string(),
                    method_of(req).to_string(),
                ))
                .and_then(|u| u.last.clone());
            if let Some(last) = last {
                self.send_raw(i, &last)?;
            }
        }
        Ok(())
    }

    fn expect_request(
        &mut self,
        who: usize,
        method: &str,
        call_id: &str,
        timeout: Duration,
    ) -> Res<Message> {
        let (m, c) = (method.to_string(), call_id.to_string());
        self.wait(timeout, |i, msg| {
            i == who && method_of(msg) == m && msg.call_id() == c
        })
        .map(|(_, msg)| msg)
        .ok_or_else(|| {
            format!(
                "{}: no {method} for {call_id} within {timeout:?}",
                self.phones[who].user
            )
        })
    }

    /// A response to `req` at phone `who` whose status `accept` takes.
    fn expect_resp(
        &mut self,
        who: usize,
        req: &Req,
        timeout: Duration,
        accept: impl Fn(u16) -> bool,
    ) -> Res<Message> {
        let cid = req.get("Call-ID").unwrap_or("").to_string();
        let (n, method) = cseq_of(req);
        self.wait(timeout, |i, m| {
            i == who
                && !m.is_request()
                && m.call_id() == cid
                && m.cseq().seq == n
                && m.cseq().method.as_str() == method
                && accept(m.status().unwrap_or(0))
        })
        .map(|(_, m)| m)
        .ok_or_else(|| {
            format!(
                "{}: no expected response to {method} {cid} within {timeout:?}",
                self.phones[who].user
            )
        })
    }

    /// The final response to `req` (a non-2xx final to an INVITE is ACKed).
    fn final_of(&mut self, who: usize, req: &Req, timeout: Duration) -> Res<Message> {
        let m = self.expect_resp(who, req, timeout, |s| s >= 200)?;
        if req.method == "INVITE" && m.status().unwrap_or(0) >= 300 {
            let ack = ack_non2xx(req, &m);
            self.send_raw(who, &ack)?;
        }
        Ok(m)
    }

    fn expect_code(&mut self, who: usize, req: &Req, timeout: Duration, code: u16) -> Res<Message> {
        let m = self.final_of(who, req, timeout)?;
        if m.status() != Some(code) {
            return Err(format!(
                "{}: {} {} got {:?}, expected {code}",
                self.phones[who].user,
                req.method,
                req.uri,
                first_line(&m)
            ));
        }
        Ok(m)
    }

    /// ACK a 2xx (remembered for its retransmissions).
    fn ack_2xx(&mut self, i: usize, d: &mut Dialog, ok: &Message) -> Res {
        let ack = self.phones[i].in_dialog(d, "ACK");
        let key = format!("{} {}", ok.call_id(), ok.cseq().seq);
        self.phones[i]
            .acks
            .insert(key, (Instant::now(), ack.to_bytes()));
        self.send_req_dup(i, &ack)
    }

    // ------------------------------------------------------ set-up

    /// Connected and registered (reconnecting a closed TCP phone).
    fn ensure_ready(&mut self, i: usize) -> Res {
        if self.phones[i].conn.is_none() {
            self.phones[i].connect()?;
            self.step();
            self.note(format!("{} connect", self.phones[i].transport()));
        }
        let fresh = self.phones[i]
            .registered
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1200));
        if !fresh {
            self.register(i, 3600)?;
        }
        Ok(())
    }

    /// REGISTER with digest; returns the 200 OK.
    fn register(&mut self, i: usize, expires: u32) -> Res<Message> {
        let (ch, req) = self.register_challenge(i, expires, &[])?;
        let authed = self.phones[i].authorized(&req, &ch, 1);
        self.phones[i].reg_cseq = cseq_of(&authed).0;
        self.send_req_dup(i, &authed)?;
        let ok = self.final_of(i, &authed, T)?;
        self.check_register_ok(i, &ok, expires)?;
        Ok(ok)
    }

    /// The first REGISTER of a registration and its 401.
    fn register_challenge(
        &mut self,
        i: usize,
        expires: u32,
        extra: &[(&str, &str)],
    ) -> Res<(Message, Req)> {
        let p = &mut self.phones[i];
        p.reg_cseq += 1;
        let server = p.server;
        let mut req = p
            .request("REGISTER", &format!("sip:{server}"))
            .set("Call-ID", &p.reg_call_id.clone())
            .set("CSeq", &format!("{} REGISTER", p.reg_cseq))
            .set("Expires", &expires.to_string());
        for (n, v) in extra {
            req = if v.is_empty() {
                req.remove(n)
            } else {
                req.set(n, v)
            };
        }
        self.send_req(i, &req)?;
        let ch = self.final_of(i, &req, T)?;
        if ch.status() != Some(401) || ch.header(&HeaderName::WwwAuthenticate).is_none() {
            return Err(format!(
                "{}: REGISTER got {:?}, expected 401 with a challenge",
                self.user(i),
                first_line(&ch)
            ));
        }
        Ok((ch, req))
    }

    fn check_register_ok(&mut self, i: usize, ok: &Message, expires: u32) -> Res {
        let p = &mut self.phones[i];
        let contact = ok.header(&HeaderName::Contact).unwrap_or("");
        if ok.status() != Some(200) || !contact.contains(&p.local.to_string()) {
            return Err(format!(
                "{}: REGISTER (Expires {expires}) got {:?} with Contact {contact:?}, expected 200 with {}",
                p.user,
                first_line(ok),
                p.local
            ));
        }
        p.registered = Some(Instant::now());
        p.stale = false;
        Ok(())
    }

    /// Two different phones of this worker meeting the transport wishes;
    /// the callee connected unless `callee_closed`.
    fn pick_pair(&mut self, caller: Tp, callee: Tp) -> Res<(usize, usize)> {
        let ok = |p: &Phone, tp: Tp| match tp {
            Tp::Any => true,
            Tp::Udp => !p.tcp,
            Tp::Tcp => p.tcp,
        };
        let a_list: Vec<usize> = (0..self.phones.len())
            .filter(|&i| ok(&self.phones[i], caller))
            .collect();
        for _ in 0..20 {
            let a = a_list[self.rng.below(a_list.len())];
            let b_list: Vec<usize> = (0..self.phones.len())
                .filter(|&i| i != a && ok(&self.phones[i], callee))
                .collect();
            if b_list.is_empty() {
                continue;
            }
            let b = b_list[self.rng.below(b_list.len())];
            let (pa, pb) = (&self.phones[a], &self.phones[b]);
            let what = format!(
                "{}/{} -> {}/{}",
                pa.user,
                pa.transport(),
                pb.user,
                pb.transport()
            );
            self.describe(what);
            return Ok((a, b));
        }
        Err("no pair of phones for this sequence".into())
    }

    /// A Request-URI with which `a` reaches `b`: name, short number (same
    /// group), long number with or without national / international prefix.
    fn dial_uri(&mut self, a: usize, b: usize) -> String {
        let (pa, pb) = (&self.phones[a], &self.phones[b]);
        let same = pa.group == pb.group;
        let choices = if same { 5 } else { 4 };
        let user = match self.rng.below(choices) {
            0 => pb.user.clone(),
            1 => pb.long.clone(),
            2 => format!("8{}", pb.long),
            3 => format!("+7{}", pb.long),
            _ => pb.short.clone(),
        };
        format!("sip:{user}@{}", self.sh.server)
    }

    /// INVITE → 407 → ACK → INVITE with credentials; the request sent last.
    fn invite(&mut self, a: usize, uri: &str) -> Res<Req> {
        let req = self.phones[a]
            .request("INVITE", uri)
            .body("application/sdp", SDP);
        self.send_req(a, &req)?;
        let ch = self.final_of(a, &req, T)?;
        if ch.status() != Some(407) {
            return Err(format!(
                "{}: INVITE {uri} without credentials got {:?}, expected 407",
                self.user(a),
                first_line(&ch)
            ));
        }
        let authed = self.phones[a].authorized(&req, &ch, 1);
        self.send_req_dup(a, &authed)?;
        Ok(authed)
    }

    /// The callee's INVITE, checked: it came to the right phone, for its
    /// registered Contact.
    fn callee_gets_invite(&mut self, b: usize, inv: &Req) -> Res<Message> {
        let cid = inv.get("Call-ID").unwrap_or("").to_string();
        let got = self.expect_request(b, "INVITE", &cid, T)?;
        let want = format!("sip:{}@{}", self.phones[b].user, self.phones[b].local);
        let ruri = got.request_uri().unwrap_or("");
        if !ruri.starts_with(&want) {
            return Err(format!(
                "{}: INVITE for {} came with Request-URI {ruri}, expected its Contact {want}",
                self.user(b),
                inv.uri
            ));
        }
        Ok(got)
    }

    /// BYE from `x` (dialog `dx`) to `y`, answered 200.
    fn bye(&mut self, x: usize, dx: &mut Dialog, y: usize) -> Res {
        let bye = self.phones[x].in_dialog(dx, "BYE");
        self.send_req_dup(x, &bye)?;
        let got = self.expect_request(y, "BYE", &dx.call_id, T)?;
        self.respond(y, &got, 200, "OK", "")?;
        self.expect_code(x, &bye, T, 200)?;
        self.cleanup.retain(|(_, d)| d.call_id != dx.call_id);
        Ok(())
    }

    /// Re-INVITE from `x` to `y`, answered 200 and ACKed.
    fn reinvite(&mut self, x: usize, dx: &mut Dialog, y: usize) -> Res {
        let re = self.phones[x].in_dialog(dx, "INVITE");
        self.send_req(x, &re)?;
        let got = self.expect_request(y, "INVITE", &dx.call_id, T)?;
        if got.to().tag().is_none() {
            return Err(format!(
                "{}: re-INVITE arrived without To tag",
                self.user(y)
            ));
        }
        self.respond(y, &got, 200, "OK", "")?;
        let ok = self.expect_code(x, &re, T, 200)?;
        self.ack_2xx(x, dx, &ok)?;
        self.expect_request(y, "ACK", &dx.call_id, T)?;
        Ok(())
    }

    /// The caller sees its own From in responses (sipd may present another).
    fn check_from(&self, inv: &Req, m: &Message) -> Res {
        if m.header(&HeaderName::From) != inv.get("From") {
            return Err(format!(
                "response {:?} has From {:?}, the caller sent {:?}",
                first_line(m),
                m.header(&HeaderName::From),
                inv.get("From")
            ));
        }
        Ok(())
    }

    // ---------------------------------------------------- sequences

    fn run_kind(&mut self, kind: Kind) -> Res {
        match kind {
            Kind::Register => self.seq_register(),
            Kind::Options => self.seq_options(),
            Kind::Malformed => self.seq_malformed(),
            Kind::CallAnswer => self.seq_call_answer(),
            Kind::CallBusy => self.seq_call_busy(),
            Kind::CallNoAnswer => self.seq_call_noanswer(),
            Kind::CallSilent => self.seq_call_silent(),
            Kind::CallerCancel => self.seq_caller_cancel(),
            Kind::CancelIgnored => self.seq_cancel_ignored(),
            Kind::TcpCallerCloses => self.seq_tcp_caller_closes(),
            Kind::ClosedTcpCallee => self.seq_closed_tcp_callee(),
            Kind::TcpReconnect => self.seq_tcp_reconnect(),
            Kind::Gateway => self.seq_gateway(),
        }
    }

    /// Register with digest, then one of: refresh with the same nonce and
    /// nc=2, replayed credentials (fresh 401), unregister and register
    /// again, `Contact: *` removal, a too brief Expires (423), a query.
    fn seq_register(&mut self) -> Res {
        let i = self.rng.below(self.phones.len());
        let what = format!("{}/{}", self.user(i), self.phones[i].transport());
        self.describe(what);
        if self.phones[i].conn.is_none() {
            self.phones[i].connect()?;
            self.step();
        }
        let expires = [3600, 1800, 600][self.rng.below(3)];
        let (ch, req) = self.register_challenge(i, expires, &[])?;
        let authed = self.phones[i].authorized(&req, &ch, 1);
        self.phones[i].reg_cseq = cseq_of(&authed).0;
        self.send_req_dup(i, &authed)?;
        let ok = self.final_of(i, &authed, T)?;
        self.check_register_ok(i, &ok, expires)?;
        match self.rng.below(6) {
            0 => {
                // Refresh: the same nonce with the next nonce count.
                let again =
                    self.phones[i].authorized(&authed.clone().remove("Authorization"), &ch, 2);
                self.phones[i].reg_cseq = cseq_of(&again).0;
                self.send_req(i, &again)?;
                let ok = self.final_of(i, &again, T)?;
                self.check_register_ok(i, &ok, expires)?;
            }
            1 => {
                // The same credentials (nonce, nc=1) in a new transaction: a
                // fresh challenge, not a 200.
                let replay = self.phones[i].renew(&authed);
                self.phones[i].reg_cseq = cseq_of(&replay).0;
                self.send_req(i, &replay)?;
                let r = self.final_of(i, &replay, T)?;
                if r.status() != Some(401) {
                    return Err(format!(
                        "{}: replayed REGISTER credentials got {:?}, expected 401",
                        self.user(i),
                        first_line(&r)
                    ));
                }
                self.note("register replay: 401".into());
            }
            2 | 3 => {
                // Unregister (Expires: 0 or Contact: *), then register again.
                let star = self.rng.chance(50);
                let extra: &[(&str, &str)] = if star { &[("Contact", "*")] } else { &[] };
                let (ch, req) = self.register_challenge(i, 0, extra)?;
                let authed = self.phones[i].authorized(&req, &ch, 1);
                self.phones[i].reg_cseq = cseq_of(&authed).0;
                self.send_req(i, &authed)?;
                self.expect_code(i, &authed, T, 200)?;
                self.phones[i].registered = None;
                self.phones[i].stale = false;
                self.idle(Duration::from_millis(20));
                self.register(i, 3600)?;
            }
            4 => {
                // Below min_expires (60): 423 with Min-Expires.
                let (ch, req) = self.register_challenge(i, 30, &[])?;
                let authed = self.phones[i].authorized(&req, &ch, 1);
                self.phones[i].reg_cseq = cseq_of(&authed).0;
                self.send_req(i, &authed)?;
                let r = self.expect_code(i, &authed, T, 423)?;
                if r.header(&HeaderName::MinExpires) != Some("60") {
                    return Err(format!(
                        "423 without Min-Expires: 60: {:?}",
                        r.header(&HeaderName::MinExpires)
                    ));
                }
            }
            _ => {
                // A query (no Contact): 200 listing the binding.
                let (ch, req) = self.register_challenge(i, 3600, &[("Contact", "")])?;
                let authed = self.phones[i].authorized(&req, &ch, 1);
                self.phones[i].reg_cseq = cseq_of(&authed).0;
                self.send_req(i, &authed)?;
                let ok = self.final_of(i, &authed, T)?;
                self.check_register_ok(i, &ok, 3600)?;
            }
        }
        Ok(())
    }

    /// OPTIONS to sipd itself (maybe with Max-Forwards: 0), or through sipd
    /// to another phone (digest, then the phone answers).
    fn seq_options(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Any, Tp::Any)?;
        self.ensure_ready(a)?;
        let server = self.sh.server;
        match self.rng.below(3) {
            0 | 1 => {
                let mut req = self.phones[a].request("OPTIONS", &format!("sip:{server}"));
                if self.rng.chance(30) {
                    req = req.set("Max-Forwards", "0");
                }
                self.send_req_dup(a, &req)?;
                let ok = self.expect_code(a, &req, T, 200)?;
                if ok.header(&HeaderName::Allow).is_none() {
                    return Err("OPTIONS 200 without Allow".into());
                }
            }
            _ => {
                self.ensure_ready(b)?;
                let uri = self.dial_uri(a, b);
                let req = self.phones[a].request("OPTIONS", &uri);
                self.send_req(a, &req)?;
                let ch = self.expect_code(a, &req, T, 407)?;
                let authed = self.phones[a].authorized(&req, &ch, 1);
                self.send_req_dup(a, &authed)?;
                let cid = authed.get("Call-ID").unwrap().to_string();
                let got = self.expect_request(b, "OPTIONS", &cid, T)?;
                self.respond(b, &got, 200, "OK", &unique("o"))?;
                self.expect_code(a, &authed, T, 200)?;
            }
        }
        Ok(())
    }

    /// A malformed datagram (or TCP message) from a throwaway socket: the
    /// answer sipd must give (400, 483, 501 or nothing), then OPTIONS from
    /// the same socket still gets 200.
    fn seq_malformed(&mut self) -> Res {
        if self.rng.chance(20) {
            return self.malformed_tcp();
        }
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = sock.local_addr().unwrap().port();
        let (name, data, expect) = malformed_payload(&mut self.rng, port, self.sh.server);
        self.note(format!("malformed: {name}"));
        self.describe(name.to_string());
        sock.send_to(&data, self.sh.server)
            .map_err(|e| e.to_string())?;
        self.step();
        let wait = match expect {
            Expect::Code(_) => T,
            _ => Duration::from_millis(400),
        };
        let got = recv_datagram(&sock, wait);
        // sipd's 400 copies what it could read of the request, so it may not
        // parse itself (a bad CSeq echoed, no To): take its status line.
        let code = match &got {
            Some(d) => match Message::parse(d, &Limits::default()) {
                Ok(m) => m.status(),
                Err(_) if d.starts_with(b"SIP/2.0 400 ") => {
                    self.note(format!("malformed {name}: sipd's 400 does not parse"));
                    Some(400)
                }
                Err(e) => {
                    return Err(format!(
                        "malformed {name}: unparseable answer ({e}): {:?}",
                        String::from_utf8_lossy(d)
                    ))
                }
            },
            None => None,
        };
        match (expect, code) {
            (Expect::Code(c), Some(got)) if got == c => {}
            (Expect::Silence, None) | (Expect::Any, _) => {}
            (e, got) => {
                return Err(format!(
                    "malformed {name}: sipd answered {got:?}, expected {e:?}"
                ))
            }
        }
        self.step();
        // sipd still answers this socket.
        let opt = format!(
            "OPTIONS sip:{0} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={1};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1:{port}>;tag={2}\r\nTo: <sip:{0}>\r\n\
             Call-ID: {3}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            self.sh.server,
            unique("z9hG4bKp"),
            unique("p"),
            unique("probe-")
        );
        sock.send_to(opt.as_bytes(), self.sh.server)
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(d) = recv_datagram(&sock, left) else {
                return Err(format!("no answer to OPTIONS after malformed {name}"));
            };
            if let Ok(m) = Message::parse(&d, &Limits::default()) {
                if m.cseq().method.as_str() == "OPTIONS" {
                    if m.status() != Some(200) {
                        return Err(format!(
                            "OPTIONS after malformed {name}: {:?}",
                            first_line(&m)
                        ));
                    }
                    self.step();
                    return Ok(());
                }
            }
        }
    }

    /// A TCP message that cannot be framed: 400 and the connection closed.
    fn malformed_tcp(&mut self) -> Res {
        self.note("malformed: tcp bad content-length".into());
        let mut s =
            TcpStream::connect_timeout(&self.sh.server, T).map_err(|e| format!("connect: {e}"))?;
        let local = s.local_addr().unwrap();
        let msg = format!(
            "INVITE sip:u01@{0} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch={1}\r\n\
             From: <sip:x@{local}>;tag=1\r\nTo: <sip:u01@{0}>\r\nCall-ID: {2}\r\n\
             CSeq: 1 INVITE\r\nContent-Length: nope\r\n\r\n",
            self.sh.server,
            unique("z9hG4bKt"),
            unique("mal-")
        );
        s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
        self.step();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + T;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() > deadline {
                        return Err("sipd kept a TCP connection open after a framing error".into());
                    }
                }
                Err(_) => break,
            }
        }
        self.step();
        if !got.is_empty() && !got.starts_with(b"SIP/2.0 400 ") {
            return Err(format!(
                "framing error over TCP answered {:?}",
                String::from_utf8_lossy(&got[..got.len().min(80)])
            ));
        }
        Ok(())
    }

    /// A→B answered: maybe ringing first, duplicates, a re-INVITE from
    /// either side, then BYE from either side.
    fn seq_call_answer(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Any, Tp::Any)?;
        self.ensure_ready(a)?;
        self.ensure_ready(b)?;
        let uri = self.dial_uri(a, b);
        let inv = self.invite(a, &uri)?;
        let got = self.callee_gets_invite(b, &inv)?;
        let tag = unique("b");
        if self.rng.chance(60) {
            self.respond(b, &got, 180, "Ringing", &tag)?;
            let r = self.expect_resp(a, &inv, T, |s| s == 180 || s >= 200)?;
            if r.status() != Some(180) {
                return Err(format!("caller got {:?} instead of 180", first_line(&r)));
            }
            self.check_from(&inv, &r)?;
            let d = self.rng.ms(0, 800);
            self.idle(d);
        }
        self.respond(b, &got, 200, "OK", &tag)?;
        let ok = self.expect_code(a, &inv, T, 200)?;
        self.check_from(&inv, &ok)?;
        let mut da = uac_dialog(&inv, &ok)?;
        self.cleanup.push((a, da.clone()));
        self.ack_2xx(a, &mut da, &ok)?;
        self.expect_request(b, "ACK", &da.call_id, T)?;
        let mut db = uas_dialog(&got, &tag)?;
        if self.rng.chance(25) {
            if self.rng.chance(50) {
                self.reinvite(a, &mut da, b)?;
            } else {
                self.reinvite(b, &mut db, a)?;
            }
        }
        let d = self.rng.ms(0, 400);
        self.idle(d);
        if self.rng.chance(50) {
            self.bye(a, &mut da, b)
        } else {
            self.bye(b, &mut db, a)
        }
    }

    /// B answers 486 (maybe after ringing): the caller gets 486, B the ACK.
    fn seq_call_busy(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Any, Tp::Any)?;
        self.ensure_ready(a)?;
        self.ensure_ready(b)?;
        let uri = self.dial_uri(a, b);
        let inv = self.invite(a, &uri)?;
        let got = self.callee_gets_invite(b, &inv)?;
        let tag = unique("b");
        if self.rng.chance(50) {
            self.respond(b, &got, 180, "Ringing", &tag)?;
        }
        self.respond(b, &got, 486, "Busy Here", &tag)?;
        self.expect_request(b, "ACK", got.call_id(), T)?;
        let r = self.expect_code(a, &inv, T, 486)?;
        self.check_from(&inv, &r)
    }

    /// B rings and never answers: sipd CANCELs it after noanswer and the
    /// caller gets 480. B answers the CANCEL with 200 + 487, or answers the
    /// INVITE 200 anyway (sipd must ACK and BYE it).
    fn seq_call_noanswer(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Any, Tp::Any)?;
        self.ensure_ready(a)?;
        self.ensure_ready(b)?;
        let uri = self.dial_uri(a, b);
        let inv = self.invite(a, &uri)?;
        let got = self.callee_gets_invite(b, &inv)?;
        let t0 = Instant::now();
        let tag = unique("b");
        self.respond(b, &got, 180, "Ringing", &tag)?;
        let cid = got.call_id().to_string();
        let cancel = self.expect_request(b, "CANCEL", &cid, Duration::from_secs(NOANSWER + 6))?;
        let after = t0.elapsed();
        if after < Duration::from_millis(NOANSWER * 1000 - 500) {
            return Err(format!(
                "sipd CANCELed the ringing callee after {after:?}, before noanswer={NOANSWER}"
            ));
        }
        self.note(format!("noanswer CANCEL after {}", secs(after)));
        match self.rng.below(4) {
            0 => {
                // The answer crossed the CANCEL: sipd ACKs and BYEs it.
                self.respond(b, &cancel, 200, "OK", "")?;
                self.respond(b, &got, 200, "OK", &tag)?;
                self.expect_request(b, "ACK", &cid, T)?;
                let bye = self.expect_request(b, "BYE", &cid, T)?;
                self.respond(b, &bye, 200, "OK", "")?;
            }
            _ => {
                self.respond(b, &cancel, 200, "OK", "")?;
                self.respond(b, &got, 487, "Request Terminated", &tag)?;
                if self.rng.chance(20) {
                    // A provisional after the final: dropped by sipd.
                    let late = self.phones[b].response_bytes(&got, 180, "Ringing", &tag);
                    self.send_raw(b, &late)?;
                }
                self.expect_request(b, "ACK", &cid, T)?;
            }
        }
        let r = self.expect_code(a, &inv, T, 480)?;
        self.check_from(&inv, &r)
    }

    /// B never answers at all (not even 180): the caller gets 480 after
    /// noanswer; sipd cannot CANCEL a branch without a provisional.
    fn seq_call_silent(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Any, Tp::Any)?;
        self.ensure_ready(a)?;
        self.ensure_ready(b)?;
        let uri = self.dial_uri(a, b);
        let inv = self.invite(a, &uri)?;
        let got = self.callee_gets_invite(b, &inv)?;
        let t0 = Instant::now();
        let r = self.expect_code(a, &inv, Duration::from_secs(NOANSWER + 6), 480)?;
        let after = t0.elapsed();
        if after < Duration::from_millis(NOANSWER * 1000 - 500) {
            return Err(format!("480 after {after:?}, before noanswer={NOANSWER}"));
        }
        self.note(format!("silent callee: 480 after {}", secs(after)));
        // The callee stays silent for good.
        self.phones[b]
            .ignore
            .insert(got.call_id().to_string(), Instant::now());
        self.check_from(&inv, &r)
    }

    /// The caller CANCELs (after ringing, or before any provisional). B
    /// answers 200 + 487, or its 200 OK crosses the CANCEL (the caller then
    /// ACKs and BYEs).
    fn seq_caller_cancel(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Any, Tp::Any)?;
        self.ensure_ready(a)?;
        self.ensure_ready(b)?;
        let uri = self.dial_uri(a, b);
        let inv = self.invite(a, &uri)?;
        let got = self.callee_gets_invite(b, &inv)?;
        let cid = got.call_id().to_string();
        let tag = unique("b");
        let early = self.rng.chance(25);
        if !early {
            self.respond(b, &got, 180, "Ringing", &tag)?;
            self.expect_resp(a, &inv, T, |s| s == 180)?;
            let d = self.rng.ms(0, 500);
            self.idle(d);
        }
        let cancel = cancel_of(&inv);
        self.send_raw(a, &cancel)?;
        if self.rng.chance(15) {
            self.send_raw(a, &cancel)?;
        }
        let mut creq = inv.clone();
        creq.method = "CANCEL".into();
        let creq = creq.set("CSeq", &format!("{} CANCEL", cseq_of(&inv).0));
        self.expect_code(a, &creq, T, 200)?;
        if early {
            // sipd holds the CANCEL until B's first provisional.
            self.respond(b, &got, 180, "Ringing", &tag)?;
        }
        let c = self.expect_request(b, "CANCEL", &cid, T)?;
        match self.rng.below(5) {
            0 => {
                // B's 200 OK crossed the CANCEL: the call is up.
                self.respond(b, &got, 200, "OK", &tag)?;
                self.respond(b, &c, 200, "OK", "")?;
                let ok = self.expect_code(a, &inv, T, 200)?;
                let mut da = uac_dialog(&inv, &ok)?;
                self.cleanup.push((a, da.clone()));
                self.ack_2xx(a, &mut da, &ok)?;
                self.expect_request(b, "ACK", &cid, T)?;
                self.bye(a, &mut da, b)?;
            }
            _ => {
                self.respond(b, &c, 200, "OK", "")?;
                self.respond(b, &got, 487, "Request Terminated", &tag)?;
                if self.rng.chance(20) {
                    let late = self.phones[b].response_bytes(&got, 200, "OK", &tag);
                    self.note("200 after 487 sent".into());
                    self.send_raw(b, &late)?;
                }
                self.expect_request(b, "ACK", &cid, T)?;
                let r = self.expect_code(a, &inv, T, 487)?;
                self.check_from(&inv, &r)?;
            }
        }
        Ok(())
    }

    /// B rings, then plays dead: it answers neither the CANCEL (sipd's after
    /// noanswer, or the caller's) nor the INVITE. The caller gets 480 at
    /// once (noanswer) or sipd's own 487 after 64*T1 (ACKed in the
    /// background); the branch toward B must still end within 64*T1 of
    /// the CANCEL (RFC 3261 §9.1) for the tables to drain.
    fn seq_cancel_ignored(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Any, Tp::Any)?;
        self.ensure_ready(a)?;
        self.ensure_ready(b)?;
        let uri = self.dial_uri(a, b);
        let inv = self.invite(a, &uri)?;
        let got = self.callee_gets_invite(b, &inv)?;
        let cid = got.call_id().to_string();
        let tag = unique("b");
        self.respond(b, &got, 180, "Ringing", &tag)?;
        self.expect_resp(a, &inv, T, |s| s == 180)?;
        if self.rng.chance(50) {
            self.expect_request(b, "CANCEL", &cid, Duration::from_secs(NOANSWER + 6))?;
            self.phones[b].ignore.insert(cid, Instant::now());
            self.expect_code(a, &inv, T, 480)?;
        } else {
            self.send_raw(a, &cancel_of(&inv))?;
            self.expect_request(b, "CANCEL", &cid, T)?;
            self.phones[b].ignore.insert(cid, Instant::now());
        }
        Ok(())
    }

    /// A TCP caller closes its connection while the (UDP) callee rings;
    /// the callee's 180/200/486 then arrive at sipd over UDP with nowhere
    /// to go. The caller reconnects (now or later) and registers again.
    fn seq_tcp_caller_closes(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Tcp, Tp::Udp)?;
        self.ensure_ready(a)?;
        self.ensure_ready(b)?;
        let uri = self.dial_uri(a, b);
        let inv = self.invite(a, &uri)?;
        let got = self.callee_gets_invite(b, &inv)?;
        let cid = got.call_id().to_string();
        let tag = unique("b");
        if self.rng.chance(50) {
            self.respond(b, &got, 180, "Ringing", &tag)?;
            self.expect_resp(a, &inv, T, |s| s == 180)?;
        }
        self.phones[a].close();
        self.step();
        // Let sipd see the connection go.
        let d = self.rng.ms(100, 400);
        self.idle(d);
        self.respond(b, &got, 180, "Ringing", &tag)?;
        match self.rng.below(3) {
            0 => {
                let d = self.rng.ms(0, 300);
                self.idle(d);
                self.respond(b, &got, 200, "OK", &tag)?;
                // No ACK can come; the callee hangs up.
                let _ = self.wait(Duration::from_millis(500), |i, m| {
                    i == b && method_of(m) == "ACK" && m.call_id() == cid
                });
                let mut db = uas_dialog(&got, &tag)?;
                let bye = self.phones[b].in_dialog(&mut db, "BYE");
                self.send_req(b, &bye)?;
                let r = self.expect_resp(b, &bye, Duration::from_secs(2), |s| s >= 200);
                self.note(match r {
                    Ok(m) => format!(
                        "BYE toward a closed TCP caller: {}",
                        m.status().unwrap_or(0)
                    ),
                    Err(_) => "BYE toward a closed TCP caller: no answer within 2 s".into(),
                });
            }
            1 => {
                self.respond(b, &got, 486, "Busy Here", &tag)?;
                self.expect_request(b, "ACK", &cid, T)?;
            }
            _ => {
                let c =
                    self.expect_request(b, "CANCEL", &cid, Duration::from_secs(NOANSWER + 6))?;
                self.respond(b, &c, 200, "OK", "")?;
                self.respond(b, &got, 487, "Request Terminated", &tag)?;
                self.expect_request(b, "ACK", &cid, T)?;
            }
        }
        if self.rng.chance(50) {
            self.ensure_ready(a)?;
        }
        Ok(())
    }

    /// A call to a phone registered over TCP whose connection has since
    /// closed: the caller gets 480 (unavailable).
    fn seq_closed_tcp_callee(&mut self) -> Res {
        let (a, b) = self.pick_pair(Tp::Any, Tp::Tcp)?;
        self.ensure_ready(a)?;
        if !self.phones[b].stale {
            self.ensure_ready(b)?;
            self.phones[b].close();
            self.step();
            let d = self.rng.ms(100, 400);
            self.idle(d);
        }
        let uri = self.dial_uri(a, b);
        let inv = self.invite(a, &uri)?;
        let t0 = Instant::now();
        let r = self.final_of(a, &inv, Duration::from_secs(12))?;
        let after = t0.elapsed();
        self.note(format!(
            "closed TCP callee: {} after {}",
            r.status().unwrap_or(0),
            secs(after)
        ));
        if r.status() != Some(480) {
            return Err(format!(
                "call to {} (TCP connection closed) got {:?}, expected 480",
                self.user(b),
                first_line(&r)
            ));
        }
        if self.rng.chance(50) {
            self.ensure_ready(b)?;
        }
        Ok(())
    }

    /// A TCP phone closes its connection; it reconnects and registers again
    /// now or when a later sequence needs it.
    fn seq_tcp_reconnect(&mut self) -> Res {
        let tcp: Vec<usize> = (0..self.phones.len())
            .filter(|&i| self.phones[i].tcp)
            .collect();
        let i = tcp[self.rng.below(tcp.len())];
        let what = self.user(i);
        self.describe(what);
        self.ensure_ready(i)?;
        self.phones[i].close();
        self.step();
        if self.rng.chance(60) {
            let d = self.rng.ms(0, 300);
            self.idle(d);
            self.ensure_ready(i)?;
        }
        Ok(())
    }

    /// A call to an external number: through the gateway socket, which
    /// answers (and the caller or the gateway hangs up), rejects with 503,
    /// stays silent (sipd gives up: 503), or rings until the caller CANCELs.
    /// The gateway's behaviour is the digit after `8499` of the number.
    fn seq_gateway(&mut self) -> Res {
        let a = self.rng.below(self.phones.len());
        self.ensure_ready(a)?;
        let mode = ['1', '3', '5', '0', '2'][self.rng.below(5)];
        let rest = self.rng.digits(6);
        let number = match self.rng.below(3) {
            0 => format!("8499{mode}{rest}"),
            1 => format!("+7499{mode}{rest}"),
            _ => format!("7499{mode}{rest}"),
        };
        let uri = format!("sip:{number}@{}", self.sh.server);
        let what = format!(
            "{}/{} -> {number}",
            self.user(a),
            self.phones[a].transport()
        );
        self.describe(what);
        let inv = self.invite(a, &uri)?;
        let t0 = Instant::now();
        match mode {
            '1' | '3' => {
                let ok = self.expect_code(a, &inv, T, 200)?;
                self.check_from(&inv, &ok)?;
                let mut da = uac_dialog(&inv, &ok)?;
                self.cleanup.push((a, da.clone()));
                self.ack_2xx(a, &mut da, &ok)?;
                if mode == '3' {
                    let bye = self.expect_request(a, "BYE", &da.call_id, T)?;
                    if bye.header(&HeaderName::To) != inv.get("From") {
                        return Err(format!(
                            "BYE from the gateway has To {:?}, the caller's From is {:?}",
                            bye.header(&HeaderName::To),
                            inv.get("From")
                        ));
                    }
                    self.respond(a, &bye, 200, "OK", "")?;
                    self.cleanup.clear();
                } else {
                    let bye = self.phones[a].in_dialog(&mut da, "BYE");
                    self.send_req_dup(a, &bye)?;
                    self.expect_code(a, &bye, T, 200)?;
                    self.cleanup.clear();
                }
            }
            '5' => {
                let r = self.expect_code(a, &inv, T, 503)?;
                self.check_from(&inv, &r)?;
            }
            '0' => {
                self.expect_code(a, &inv, Duration::from_secs(12), 503)?;
                let after = t0.elapsed();
                if after < Duration::from_millis(4500) {
                    return Err(format!("503 for a silent gateway after {after:?}"));
                }
                self.note(format!("silent gateway: 503 after {}", secs(after)));
            }
            _ => {
                self.expect_resp(a, &inv, T, |s| s == 183)?;
                let d = self.rng.ms(0, 400);
                self.idle(d);
                self.send_raw(a, &cancel_of(&inv))?;
                let r = self.expect_code(a, &inv, T, 487)?;
                self.check_from(&inv, &r)?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ loop

    fn pick_kind(&mut self) -> Kind {
        let total: usize = self.sh.kinds.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.below(total);
        for &(k, w) in &self.sh.kinds {
            if x < w {
                return k;
            }
            x -= w;
        }
        self.sh.kinds[0].0
    }

    fn run(mut self) -> Stats {
        self.kind = Kind::Register;
        for i in 0..self.phones.len() {
            if let Err(e) = self.ensure_ready(i) {
                self.anomaly(format!("initial registration: {e}"));
            }
        }
        while Instant::now() < self.sh.mix_end && !self.sh.stopped() {
            for p in &mut self.phones {
                p.prune();
            }
            self.kind = self.pick_kind();
            self.seq += 1;
            self.stats.seqs.entry(self.kind.name()).or_default().0 += 1;
            self.cleanup.clear();
            self.describe(String::new());
            if let Err(e) = self.run_kind(self.kind) {
                self.stats.seqs.entry(self.kind.name()).or_default().1 += 1;
                if !self.sh.stopped() {
                    self.anomaly(e);
                }
                for (i, mut d) in std::mem::take(&mut self.cleanup) {
                    let bye = self.phones[i].in_dialog(&mut d, "BYE");
                    let _ = self.phones[i].send(&bye.to_bytes());
                }
            }
            // What the sequence left unclaimed is handled in the background.
            self.current.clear();
            let d = self.rng.ms(0, 50);
            self.idle(d);
        }
        // The mix is over: close every TCP connection, keep serving the UDP
        // phones while the main thread watches sipd drain.
        for p in &mut self.phones {
            if p.tcp {
                p.close();
            }
        }
        self.sh.mixing.fetch_sub(1, Ordering::SeqCst);
        while !self.sh.done.load(Ordering::Relaxed) {
            self.idle(Duration::from_millis(200));
        }
        self.stats
    }
}

impl Phone {
    fn response_bytes(&self, req: &Message, code: u16, reason: &str, tag: &str) -> Vec<u8> {
        ResponseBuilder::new(req, code, reason)
            .to_tag(tag)
            .header(HeaderName::Contact, &self.contact())
            .build()
    }
}

// ------------------------------------------------------------- malformed

#[derive(Clone, Copy, Debug)]
enum Expect {
    Code(u16),
    Silence,
    Any,
}

fn malformed_payload(
    rng: &mut Rng,
    port: u16,
    server: SocketAddr,
) -> (&'static str, Vec<u8>, Expect) {
    let via = format!(
        "Via: SIP/2.0/UDP 127.0.0.1:{port};branch={}",
        unique("z9hG4bKm")
    );
    let from = format!("From: <sip:m@127.0.0.1:{port}>;tag={}", unique("m"));
    let to = format!("To: <sip:u01@{server}>");
    let cid = format!("Call-ID: {}", unique("mal-"));
    let valid = |method: &str, extra: &str| {
        format!(
            "{method} sip:u01@{server} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n{from}\r\n{to}\r\n\
             {cid}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    match rng.below(13) {
        0 => {
            let n = 1 + rng.below(200);
            let mut v: Vec<u8> = (0..n).map(|_| b' ' + rng.below(95) as u8).collect();
            v[0] = b'Q';
            ("printable garbage", v, Expect::Any)
        }
        1 => (
            "binary (STUN-like)",
            vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42],
            Expect::Silence,
        ),
        2 => ("keep-alive", b"\r\n\r\n".to_vec(), Expect::Silence),
        3 => (
            "no Call-ID",
            format!(
                "INVITE sip:u01@{server} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n{from}\r\n{to}\r\n\
                 CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
            Expect::Code(400),
        ),
        4 => (
            "bad CSeq",
            format!(
                "OPTIONS sip:u01@{server} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n{from}\r\n{to}\r\n\
                 {cid}\r\nCSeq: x OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
            Expect::Code(400),
        ),
        5 => (
            "Content-Length beyond the datagram",
            valid("OPTIONS", "")
                .replace("Content-Length: 0", "Content-Length: 500")
                .into_bytes(),
            Expect::Code(400),
        ),
        6 => (
            "truncated",
            {
                let v = valid("INVITE", "Contact: <sip:m@127.0.0.1>\r\n").into_bytes();
                let cut = 10 + rng.below(v.len() - 30);
                v[..cut].to_vec()
            },
            Expect::Any,
        ),
        7 => (
            "response garbage",
            format!("SIP/2.0 abc\r\n{via}\r\n\r\n").into_bytes(),
            Expect::Silence,
        ),
        8 => (
            "Max-Forwards 0",
            valid("INVITE", "").replace("Max-Forwards: 70", "Max-Forwards: 0").into_bytes(),
            Expect::Code(483),
        ),
        9 => ("unknown method", valid("FROBNICATE", "").into_bytes(), Expect::Code(501)),
        10 => (
            "bad Request-URI",
            valid("OPTIONS", "")
                .replacen(&format!("sip:u01@{server}"), "sip:@@@", 1)
                .into_bytes(),
            Expect::Code(400),
        ),
        11 => (
            "huge header",
            valid("OPTIONS", &format!("X-Long: {}\r\n", "a".repeat(9000))).into_bytes(),
            Expect::Any,
        ),
        _ => (
            "header without colon",
            valid("OPTIONS", "this is no header\r\n").into_bytes(),
            Expect::Any,
        ),
    }
}

/// A duration for the notes, to half a second.
fn secs(d: Duration) -> String {
    format!("{:.1}s", (d.as_secs_f64() * 2.0).round() / 2.0)
}

fn recv_datagram(sock: &UdpSocket, timeout: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

// --------------------------------------------------------------- gateway

/// The gateway: answers by the mode digit of the number (see `seq_gateway`),
/// checks the prefix and normalisation, answers CANCEL, BYE, retransmissions.
type Seen = HashMap<(String, String), (Instant, Option<Vec<u8>>)>;

/// Answer a request at the gateway, remembered for its retransmissions.
fn gw_answer(ua: &mut Ua, seen: &mut Seen, req: &Message, code: u16, reason: &str, tag: &str) {
    let data = ua.response(req, code, reason, tag);
    ua.send_raw(&data);
    let k = (
        req.top_via().branch().unwrap_or("").to_string(),
        method_of(req).to_string(),
    );
    seen.insert(k, (Instant::now(), Some(data)));
}

fn gateway(sh: Arc<Shared>, mut ua: Ua) -> BTreeMap<String, u64> {
    let mut notes: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen: Seen = HashMap::new();
    let mut ringing: HashMap<String, (Message, String)> = HashMap::new();
    let mut hang_up: HashMap<String, Dialog> = HashMap::new();
    let mut last_prune = Instant::now();
    while !sh.done.load(Ordering::Relaxed) {
        if last_prune.elapsed() > Duration::from_secs(10) {
            last_prune = Instant::now();
            seen.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(90));
        }
        let Some((m, from)) = ua.recv_from(Duration::from_millis(100)) else {
            continue;
        };
        if from != sh.server {
            sh.anomaly(format!("gateway: message from {from}, not sipd"));
            continue;
        }
        if !m.is_request() {
            continue;
        }
        let method = method_of(&m).to_string();
        let key = (
            m.top_via().branch().unwrap_or("").to_string(),
            method.clone(),
        );
        if let Some((_, last)) = seen.get(&key) {
            *notes.entry("gateway: retransmission".into()).or_default() += 1;
            if let Some(last) = last.clone() {
                ua.send_raw(&last);
            }
            continue;
        }
        match method.as_str() {
            "INVITE" if m.to().tag().is_none() => {
                let user = m
                    .parsed_request_uri()
                    .and_then(Result::ok)
                    .and_then(|u| u.user)
                    .unwrap_or_default();
                let want = format!("{GW_PREFIX}7499");
                let from_user = m.from().uri.user.clone().unwrap_or_default();
                if !user.starts_with(&want) || user.len() != GW_PREFIX.len() + 11 {
                    sh.anomaly(format!(
                        "gateway: INVITE for {user:?}, expected {want}<digit><6 digits>"
                    ));
                    gw_answer(&mut ua, &mut seen, &m, 404, "Not Found", &unique("g"));
                    continue;
                }
                if from_user.is_empty() || !from_user.bytes().all(|b| b.is_ascii_digit()) {
                    sh.anomaly(format!(
                        "gateway: caller presented as {from_user:?}, not a number"
                    ));
                }
                let mode = user.as_bytes()[GW_PREFIX.len() + 4];
                *notes
                    .entry(format!("gateway: INVITE mode {}", mode as char))
                    .or_default() += 1;
                let tag = unique("g");
                match mode {
                    b'1' | b'3' => {
                        gw_answer(&mut ua, &mut seen, &m, 183, "Session Progress", &tag);
                        gw_answer(&mut ua, &mut seen, &m, 200, "OK", &tag);
                        if mode == b'3' {
                            match uas_dialog(&m, &tag) {
                                Ok(d) => {
                                    hang_up.insert(m.call_id().to_string(), d);
                                }
                                Err(e) => sh.anomaly(format!("gateway: {e}")),
                            }
                        }
                    }
                    b'5' => gw_answer(&mut ua, &mut seen, &m, 503, "Service Unavailable", &tag),
                    b'2' => {
                        gw_answer(&mut ua, &mut seen, &m, 183, "Session Progress", &tag);
                        ringing.insert(key.0.clone(), (m.clone(), tag));
                    }
                    _ => {
                        seen.insert(key, (Instant::now(), None));
                    }
                }
            }
            "CANCEL" => {
                gw_answer(&mut ua, &mut seen, &m, 200, "OK", "");
                if let Some((inv, tag)) = ringing.remove(&key.0) {
                    gw_answer(&mut ua, &mut seen, &inv, 487, "Request Terminated", &tag);
                }
            }
            "ACK" => {
                seen.insert(key, (Instant::now(), None));
                if let Some(mut d) = hang_up.remove(m.call_id()) {
                    let bye = ua.in_dialog(&mut d, "BYE");
                    ua.send(&bye);
                }
            }
            _ => gw_answer(&mut ua, &mut seen, &m, 200, "OK", &unique("g")),
        }
    }
    notes
}

// ------------------------------------------------------------------ main

fn status(sipd: &Sipd) -> Option<proto::Status> {
    let mut c = proto::Client::connect(&sipd.socket()).ok()?;
    match c.call(proto::Command::Status).ok()?.into_result().ok()? {
        proto::Reply::Status(s) => Some(s),
        _ => None,
    }
}

fn tcp_connections(s: &proto::Status) -> u64 {
    s.counters
        .iter()
        .find(|c| c.name == "tcp connections")
        .map(|c| c.value)
        .unwrap_or(u64::MAX)
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// OPTIONS to sipd from a fresh socket of this transport: the status code.
fn options_probe(server: SocketAddr, tcp: bool) -> Result<u16, String> {
    let mut ua = if tcp {
        Ua::tcp(server, "probe")
    } else {
        Ua::udp(server, "probe")
    };
    let req = ua.request("OPTIONS", &format!("sip:{server}"));
    ua.transact(&req)
        .and_then(|m| m.status())
        .ok_or_else(|| "no answer within 5 s".to_string())
}

fn conf(gw: SocketAddr) -> String {
    let mut c = String::from("[general]\nnoanswer=3\n\n");
    for n in 1..=WORKERS * PHONES {
        let p = Phone::new(n, false, gw);
        c.push_str(&format!(
            "[{}]\naccountcode={}\nsecret={}\nexten={}#{}\n\n",
            p.user,
            ["alpha", "beta"][p.group],
            p.secret,
            p.long,
            p.short
        ));
    }
    c.push_str(&format!(
        "[gw]\naccountcode=gateways\nhost={gw}\nexten={GW_PREFIX}\n"
    ));
    c
}

#[test]
fn soak_random_mix_then_drain() {
    let seed = std::env::var("SIPD_SOAK_SEED")
        .ok()
        .map(|s| s.trim().parse::<u64>().expect("SIPD_SOAK_SEED: a number"))
        .unwrap_or_else(|| {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            (t.as_nanos() as u64 ^ u64::from(std::process::id())) % 1_000_000_000
        });
    let secs: u64 = std::env::var("SIPD_SOAK_SECS")
        .ok()
        .map(|s| s.trim().parse().expect("SIPD_SOAK_SECS: a number"))
        .unwrap_or(60);
    let kinds = chosen_kinds();
    println!(
        "soak: seed {seed} (replay with SIPD_SOAK_SEED={seed}), {secs} s, {WORKERS} workers x {PHONES} phones, kinds {:?}",
        kinds.iter().map(|(k, _)| k.name()).collect::<Vec<_>>()
    );
    let gw: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let trace = std::env::var_os("SIPD_SOAK_TRACE").is_some();
    let mut sipd = Sipd::start_with(sipd_tests::Start {
        conf: Some(conf(gw)),
        args: if trace { vec!["-d".into()] } else { Vec::new() },
        ..Default::default()
    });
    let start = Instant::now();
    let sh = Arc::new(Shared {
        seed,
        server: sipd.addr,
        start,
        mix_end: start + Duration::from_secs(secs),
        stop: AtomicBool::new(false),
        done: AtomicBool::new(false),
        mixing: AtomicUsize::new(WORKERS),
        anomalies: Mutex::new(Vec::new()),
        kinds,
        running: Mutex::new(vec![VecDeque::new(); WORKERS]),
    });
    let gw_ua = Ua::udp_at(gw, sipd.addr, "gw");
    let gw_thread = {
        let sh = sh.clone();
        std::thread::spawn(move || gateway(sh, gw_ua))
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let w = Worker::new(id, sh.clone());
            std::thread::Builder::new()
                .name(format!("soak-w{id}"))
                .spawn(move || w.run())
                .unwrap()
        })
        .collect();

    // Watch sipd while the mix runs.
    let mut failures: Vec<String> = Vec::new();
    let mut died: Option<f64> = None;
    let limit = Duration::from_secs(secs) + Duration::from_secs(90);
    while sh.mixing.load(Ordering::SeqCst) > 0 {
        if died.is_none() {
            let running = sipd.is_running();
            let panicked = sipd.stderr().contains("panicked");
            if !running || panicked {
                let t = start.elapsed().as_secs_f64();
                died = Some(t);
                sh.stop.store(true, Ordering::SeqCst);
                println!(
                    "soak: sipd {} at t={t:.1}s, while the workers ran:\n  {}",
                    if running { "panicked" } else { "died" },
                    sh.running
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|h| h.iter().cloned().collect::<Vec<_>>().join("\n    then "))
                        .collect::<Vec<_>>()
                        .join("\n  ")
                );
            }
        }
        if start.elapsed() > limit {
            failures.push("workers did not finish their sequences in time".into());
            sh.stop.store(true, Ordering::SeqCst);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let mix_secs = start.elapsed().as_secs_f64();

    // After the mix: alive, answering, drained.
    let running = sipd.is_running();
    let stderr = sipd.stderr();
    if !running {
        failures.push(format!(
            "sipd is not running after {:.1}s (first noticed at t={:.1}s); its stderr ends:\n{}",
            mix_secs,
            died.unwrap_or(mix_secs),
            tail(&stderr, 30)
        ));
    } else if stderr.contains("panicked") {
        failures.push(format!(
            "a sipd thread panicked (first noticed at t={:.1}s); its stderr ends:\n{}",
            died.unwrap_or(mix_secs),
            tail(&stderr, 30)
        ));
    }
    let broken = !running || stderr.contains("panicked");
    let mut drained_after = None;
    if running {
        for tcp in [false, true] {
            match options_probe(sipd.addr, tcp) {
                Ok(200) => {}
                Ok(code) => failures.push(format!(
                    "OPTIONS over {} after the mix got {code}",
                    if tcp { "TCP" } else { "UDP" }
                )),
                Err(e) => failures.push(format!(
                    "OPTIONS over {} after the mix: {e}",
                    if tcp { "TCP" } else { "UDP" }
                )),
            }
        }
        let t0 = Instant::now();
        let mut last = None;
        // A broken sipd is not waited for.
        while t0.elapsed() < DRAIN && !broken {
            let s = status(&sipd);
            if let Some(s) = &s {
                if s.calls == 0 && s.transactions == 0 && tcp_connections(s) == 0 {
                    drained_after = Some(t0.elapsed().as_secs_f64());
                    break;
                }
            }
            last = s;
            std::thread::sleep(Duration::from_millis(500));
        }
        if drained_after.is_none() && !broken {
            let calls = match proto::Client::connect(&sipd.socket())
                .ok()
                .and_then(|mut c| c.call(proto::Command::Calls).ok())
                .and_then(|r| r.into_result().ok())
            {
                Some(proto::Reply::Calls(c)) => format!("{:?}", c.calls),
                _ => "?".into(),
            };
            failures.push(format!(
                "sipd's tables did not drain within {DRAIN:?} after the mix: {}; calls: {calls}",
                match &last {
                    Some(s) => format!(
                        "calls {}, transactions {}, tcp connections {}",
                        s.calls,
                        s.transactions,
                        tcp_connections(s)
                    ),
                    None => "no status".into(),
                }
            ));
        }
        if !sipd.is_running() {
            failures.push(format!(
                "sipd died during the drain; its stderr ends:\n{}",
                tail(&sipd.stderr(), 30)
            ));
        }
    }
    sh.done.store(true, Ordering::SeqCst);

    let mut stats = Stats::default();
    for (id, w) in workers.into_iter().enumerate() {
        match w.join() {
            Ok(s) => stats.merge(s),
            Err(e) => failures.push(format!(
                "worker {id} panicked: {}",
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
    match gw_thread.join() {
        Ok(n) => {
            for (k, v) in n {
                *stats.notes.entry(k).or_default() += v;
            }
        }
        Err(_) => failures.push("the gateway thread panicked".into()),
    }

    // Summary.
    let (mut seqs, mut steps) = (0, 0);
    println!(
        "soak: {:<20} {:>6} {:>7} {:>8}",
        "kind", "seqs", "failed", "steps"
    );
    for (k, (n, f, s)) in &stats.seqs {
        println!("soak: {k:<20} {n:>6} {f:>7} {s:>8}");
        seqs += n;
        steps += s;
    }
    println!(
        "soak: {seqs} sequences, {steps} steps in {mix_secs:.1}s; {} messages handled in the background, {} retransmissions absorbed by the phones; drained {}",
        stats.background,
        stats.retransmissions_in,
        match drained_after {
            Some(t) => format!("{t:.1}s after the mix"),
            None => "never".into(),
        }
    );
    for (k, v) in &stats.notes {
        println!("soak:   {k}: {v}");
    }
    let anomalies = sh.anomalies.lock().unwrap().clone();
    if !anomalies.is_empty() {
        let shown: Vec<&String> = anomalies.iter().take(40).collect();
        failures.push(format!(
            "{} wrong or missing answers during the mix (first {}):\n  {}",
            anomalies.len(),
            shown.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    if seqs == 0 {
        failures.push("no sequence ran".into());
    }
    if trace && !failures.is_empty() {
        let path = std::env::temp_dir().join(format!("sipd-soak-{seed}-trace.log"));
        match std::fs::write(&path, sipd.stdout()) {
            Ok(()) => failures.push(format!("sipd's message trace: {}", path.display())),
            Err(e) => failures.push(format!("could not save sipd's trace: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "soak failed (replay with SIPD_SOAK_SEED={seed}):\n{}",
        failures.join("\n")
    );
}
