//! A sans-IO test bench for the core: a clock the test moves, a fake
//! network that keeps what the core sends, and phones that build requests
//! and responses as text. No sockets, no threads, no wall clock beyond one
//! base instant.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{client_response, Algorithm};
use crate::config::{Config, Options};
use crate::core::{Core, CoreOptions, Effects, Local};
use crate::sip::auth::AuthParams;
use crate::sip::{HeaderName, Limits, Message};
use crate::store::Write;
use crate::time::Now;
use crate::transport::{FlowId, IfClosed, Out, Peer, Transport};

/// sipd's address in these tests.
pub const SIPD: &str = "127.0.0.1:5060";
pub const REALM: &str = "pbx";

pub fn opts() -> Options {
    Options {
        country: "7".into(),
        city: "495".into(),
        default_realm: REALM.into(),
        file_name: "sip.conf".into(),
    }
}

pub fn config(text: &str) -> Arc<Config> {
    Arc::new(Config::parse(text, &opts()).unwrap_or_else(|e| panic!("sip.conf: {e}")))
}

pub fn sipd_addr() -> SocketAddr {
    SIPD.parse().unwrap()
}

/// The core plus what it did.
pub struct Bench {
    pub core: Core,
    pub now: Now,
    /// Sent and not yet taken by the test.
    pub sent: Vec<Out>,
    /// Store writes, in order (confirmed ones once committed).
    pub writes: Vec<Write>,
    /// Confirmations the "store" has not given yet.
    pub confirms: Vec<(u64, Write)>,
    /// TCP flows that are closed: what is sent to them is not delivered.
    pub closed: Vec<FlowId>,
    /// Addresses where a new TCP connection fails (nothing listens).
    pub unreachable: Vec<SocketAddr>,
    /// Send failures to report (requests to closed flows).
    pub failed: Vec<u64>,
    /// Media relay operations, in order.
    pub media: Vec<crate::media::MediaOp>,
}

impl Bench {
    pub fn new(conf: &str) -> Bench {
        Bench::with(conf, CoreOptions::default(), vec![sipd_addr()])
    }

    pub fn with(conf: &str, mut opts: CoreOptions, listen: Vec<SocketAddr>) -> Bench {
        opts.seed = 42;
        opts.auth_key = [7; 32];
        let now = Now::at(Instant::now(), 1_800_000_000_000);
        let config = config(conf);
        let local = Local::new(listen, vec![]);
        Bench {
            core: Core::new(config, local, None, opts, now),
            now,
            sent: Vec::new(),
            writes: Vec::new(),
            confirms: Vec::new(),
            closed: Vec::new(),
            unreachable: Vec::new(),
            failed: Vec::new(),
            media: Vec::new(),
        }
    }

    /// File the core's effects as the transport would: what goes to a
    /// closed flow is dropped (a request connects again, which fails where
    /// nothing listens).
    pub fn absorb(&mut self, fx: Effects) {
        for o in fx.out {
            let tcp = o.dest.transport == Transport::Tcp;
            let open = o.dest.flow.is_some_and(|f| !self.closed.contains(&f));
            let gone = tcp
                && !open
                && (o.if_closed == IfClosed::Drop || self.unreachable.contains(&o.dest.addr));
            if gone {
                if let IfClosed::ConnectOrFail(r) = o.if_closed {
                    self.failed.push(r);
                }
                continue;
            }
            self.sent.push(o);
        }
        self.writes.extend(fx.writes);
        self.confirms.extend(fx.confirm);
        self.media.extend(fx.media);
    }

    /// Deliver `text` from `from`.
    pub fn deliver(&mut self, from: Peer, text: &str) {
        let limits = Limits::default();
        let msg = if from.transport.is_framed() {
            Message::parse(text.as_bytes(), &limits)
        } else {
            Message::parse_stream(text.as_bytes(), &limits)
        }
        .unwrap_or_else(|e| panic!("test message does not parse ({e}):\n{text}"));
        let mut fx = Effects::new();
        self.core.on_message(msg, from, self.now, &mut fx);
        self.absorb(fx);
        self.report_failures();
    }

    /// Tell the core about sends that failed (as the transport does).
    pub fn report_failures(&mut self) {
        while let Some(r) = self.failed.pop() {
            let mut fx = Effects::new();
            self.core.on_send_failed(r, self.now, &mut fx);
            self.absorb(fx);
        }
    }

    /// Move the clock by `d`, running every timer due on the way in order.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.core.next_timer().filter(|t| *t <= end.at);
            let Some(at) = next else { break };
            let step = at.saturating_duration_since(self.now.at);
            self.now = self.now + step;
            self.tick();
        }
        self.now = end;
        self.tick();
    }

    pub fn tick(&mut self) {
        let mut fx = Effects::new();
        self.core.on_tick(self.now, &mut fx);
        self.absorb(fx);
        self.report_failures();
    }

    /// The store commits (or fails) every write waiting for confirmation;
    /// `writes` gets the committed ones.
    pub fn commit(&mut self, result: Result<(), String>) {
        for (token, w) in std::mem::take(&mut self.confirms) {
            if result.is_ok() {
                self.writes.push(w);
            }
            let mut fx = Effects::new();
            self.core.resume(token, result.clone(), self.now, &mut fx);
            self.absorb(fx);
        }
    }

    /// The store commits (or fails) only the oldest write waiting.
    pub fn commit_one(&mut self, result: Result<(), String>) {
        if self.confirms.is_empty() {
            return;
        }
        let (token, w) = self.confirms.remove(0);
        if result.is_ok() {
            self.writes.push(w);
        }
        let mut fx = Effects::new();
        self.core.resume(token, result, self.now, &mut fx);
        self.absorb(fx);
    }

    /// Everything sent to `addr` since the last take, parsed.
    pub fn take_to(&mut self, addr: SocketAddr) -> Vec<(Out, Message)> {
        let (mine, rest): (Vec<Out>, Vec<Out>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|o| o.dest.addr == addr);
        self.sent = rest;
        mine.into_iter()
            .map(|o| {
                let m = Message::parse(&o.data, &Limits::default()).unwrap_or_else(|e| {
                    panic!(
                        "sipd sent unparseable ({e}):\n{}",
                        String::from_utf8_lossy(&o.data)
                    )
                });
                (o, m)
            })
            .collect()
    }

    /// The one message sent to `addr` that matches `pred` (others dropped).
    pub fn expect(
        &mut self,
        addr: SocketAddr,
        what: &str,
        pred: impl Fn(&Message) -> bool,
    ) -> (Out, Message) {
        let got = self.take_to(addr);
        let listing: Vec<String> = got.iter().map(|(_, m)| first_line(m)).collect();
        got.into_iter()
            .find(|(_, m)| pred(m))
            .unwrap_or_else(|| panic!("expected {what} to {addr}, got {listing:?}"))
    }

    /// A response with `code` sent to `addr`.
    pub fn expect_status(&mut self, addr: SocketAddr, code: u16) -> Message {
        self.expect(addr, &format!("{code}"), |m| m.status() == Some(code))
            .1
    }

    /// A request with `method` sent to `addr`.
    pub fn expect_request(&mut self, addr: SocketAddr, method: &str) -> (Out, Message) {
        self.expect(addr, method, |m| {
            m.method().map(|x| x.as_str()) == Some(method)
        })
    }
}

pub fn first_line(m: &Message) -> String {
    let raw = String::from_utf8_lossy(m.raw()).into_owned();
    raw.lines().next().unwrap_or("").to_string()
}

/// A user agent of the tests.
#[derive(Clone, Debug)]
pub struct Phone {
    pub user: String,
    pub secret: String,
    pub peer: Peer,
    pub tag: String,
    /// The last request built by [`Phone::request`].
    pub last: String,
    seq: u32,
    nc: u32,
}

impl Phone {
    pub fn udp(user: &str, secret: &str, port: u16) -> Phone {
        Phone::at(
            user,
            secret,
            Transport::Udp,
            ([127, 0, 0, 1], port).into(),
            None,
        )
    }

    pub fn tcp(user: &str, secret: &str, port: u16, flow: FlowId) -> Phone {
        Phone::at(
            user,
            secret,
            Transport::Tcp,
            ([127, 0, 0, 1], port).into(),
            Some(flow),
        )
    }

    pub fn at(
        user: &str,
        secret: &str,
        t: Transport,
        addr: SocketAddr,
        flow: Option<FlowId>,
    ) -> Phone {
        Phone {
            user: user.into(),
            secret: secret.into(),
            peer: Peer {
                transport: t,
                addr,
                flow,
                local: Some(sipd_addr()),
            },
            tag: format!("tag-{user}-{}", addr.port()),
            last: String::new(),
            seq: 1,
            nc: 0,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.peer.addr
    }

    /// Our Via with this branch (after the magic cookie).
    pub fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{branch};rport",
            self.peer.transport.via_name(),
            self.peer.addr
        )
    }

    pub fn contact(&self) -> String {
        format!(
            "<sip:{}@{};transport={}>",
            self.user,
            self.peer.addr,
            self.peer.transport.name()
        )
    }

    /// A request text; `extra` are header lines ending in CRLF.
    pub fn request(
        &mut self,
        method: &str,
        ruri: &str,
        to: &str,
        call_id: &str,
        branch: &str,
        extra: &str,
        body: &str,
    ) -> String {
        self.seq += 1;
        self.last = format!(
            "{method} {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:{}@{REALM}>;tag={}\r\n\
             To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {} {method}\r\nContact: {}\r\n{extra}\
             Content-Length: {}\r\n\r\n{body}",
            self.via(branch),
            self.user,
            self.tag,
            self.seq,
            self.contact(),
            body.len()
        );
        self.last.clone()
    }

    /// Credentials answering `challenge` for `method` `uri`.
    pub fn authorization(&mut self, challenge: &Message, method: &str, uri: &str) -> String {
        let (name, header) = if challenge.status() == Some(401) {
            (HeaderName::WwwAuthenticate, "Authorization")
        } else {
            (HeaderName::ProxyAuthenticate, "Proxy-Authorization")
        };
        let ch = challenge
            .headers(&name)
            .filter_map(AuthParams::parse)
            .find(|c| {
                c.get("algorithm")
                    .unwrap_or("MD5")
                    .eq_ignore_ascii_case("MD5")
            })
            .expect("an MD5 challenge");
        let realm = ch.get("realm").unwrap().to_string();
        let nonce = ch.get("nonce").unwrap().to_string();
        self.nc += 1;
        let response = client_response(
            Algorithm::Md5,
            &self.user,
            &realm,
            &self.secret,
            method,
            uri,
            &nonce,
            self.nc,
            "cn0",
            Some("auth"),
        );
        format!(
            "{header}: Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc={:08x}, cnonce=\"cn0\"\r\n",
            self.user, self.nc
        )
    }

    /// A REGISTER of our binding for `expires` seconds (one Call-ID per
    /// phone, so a later one is a refresh); `auth` is an Authorization
    /// line or empty.
    pub fn register_request(&mut self, expires: u32, auth: &str) -> String {
        let ruri = register_uri();
        let to = format!("<sip:{}@{REALM}>", self.user);
        let call_id = format!("reg-{}-{}", self.user, self.peer.addr.port());
        let extra = format!("Expires: {expires}\r\n{auth}");
        let branch = format!("r{}", self.seq);
        self.request("REGISTER", &ruri, &to, &call_id, &branch, &extra, "")
    }

    /// REGISTER with digest through `b`; the final response.
    pub fn register(&mut self, b: &mut Bench, expires: u32) -> Message {
        let r = self.register_request(expires, "");
        b.deliver(self.peer, &r);
        let ch = b.expect_status(self.addr(), 401);
        let auth = self.authorization(&ch, "REGISTER", &register_uri());
        let r = self.register_request(expires, &auth);
        b.deliver(self.peer, &r);
        let got = b.take_to(self.addr());
        got.into_iter()
            .map(|(_, m)| m)
            .find(|m| m.status().is_some_and(|s| s >= 200))
            .expect("a final response to REGISTER")
    }

    /// An authenticated INVITE to `dialed` (407 answered and ACKed); returns
    /// the INVITE's Call-ID and branch.
    pub fn invite(&mut self, b: &mut Bench, dialed: &str, call_id: &str) -> (String, String) {
        let ruri = format!("sip:{dialed}@{REALM}");
        let to = format!("<{ruri}>");
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let extra = "Content-Type: application/sdp\r\n";
        let branch = format!("i1{call_id}");
        let r = self.request("INVITE", &ruri, &to, call_id, &branch, extra, sdp);
        b.deliver(self.peer, &r);
        let ch = b.expect_status(self.addr(), 407);
        let ack = format!(
            "ACK {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:{}@{REALM}>;tag={}\r\n\
             To: {}\r\nCall-ID: {call_id}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            self.via(&branch),
            self.user,
            self.tag,
            ch.header(&HeaderName::To).unwrap(),
            self.seq
        );
        b.deliver(self.peer, &ack);
        let auth = self.authorization(&ch, "INVITE", &ruri);
        let branch = format!("i2{call_id}");
        let r = self.request(
            "INVITE",
            &ruri,
            &to,
            call_id,
            &branch,
            &format!("{extra}{auth}"),
            sdp,
        );
        b.deliver(self.peer, &r);
        (call_id.to_string(), branch)
    }

    /// A CANCEL of the authenticated INVITE `invite` sent (same branch and
    /// CSeq number as the INVITE, `Phone::invite`'s naming).
    pub fn cancel_last(&self, dialed: &str, call_id: &str) -> String {
        let ruri = format!("sip:{dialed}@{REALM}");
        format!(
            "CANCEL {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:{}@{REALM}>;tag={}\r\n\
             To: <{ruri}>\r\nCall-ID: {call_id}\r\nCSeq: {} CANCEL\r\nContent-Length: 0\r\n\r\n",
            self.via(&format!("i2{call_id}")),
            self.user,
            self.tag,
            self.seq
        )
    }

    /// A request inside a dialog: Request-URI `target`, the route set,
    /// From and To with their tags; CSeq `seq` (an ACK) or our next one.
    #[allow(clippy::too_many_arguments)]
    pub fn dialog_request(
        &mut self,
        method: &str,
        target: &str,
        routes: &[String],
        from: &str,
        to: &str,
        call_id: &str,
        branch: &str,
        seq: Option<u32>,
    ) -> String {
        let seq = seq.unwrap_or_else(|| {
            self.seq += 1;
            self.seq
        });
        let route = if routes.is_empty() {
            String::new()
        } else {
            format!("Route: {}\r\n", routes.join(", "))
        };
        format!(
            "{method} {target} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{route}From: {from}\r\n\
             To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nContact: {}\r\n\
             Content-Length: 0\r\n\r\n",
            self.via(branch),
            self.contact()
        )
    }

    /// A response of ours to `req` (a request sipd sent us).
    pub fn respond(&self, req: &Message, code: u16, reason: &str) -> String {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for v in req.headers(&HeaderName::Via) {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        for v in req.headers(&HeaderName::RecordRoute) {
            out.push_str(&format!("Record-Route: {v}\r\n"));
        }
        out.push_str(&format!(
            "From: {}\r\n",
            req.header(&HeaderName::From).unwrap()
        ));
        let to = req.header(&HeaderName::To).unwrap();
        if code > 100 && req.to().tag().is_none() {
            out.push_str(&format!("To: {to};tag={}\r\n", self.tag));
        } else {
            out.push_str(&format!("To: {to}\r\n"));
        }
        out.push_str(&format!(
            "Call-ID: {}\r\nCSeq: {}\r\nContact: {}\r\nContent-Length: 0\r\n\r\n",
            req.call_id(),
            req.header(&HeaderName::CSeq).unwrap(),
            self.contact()
        ));
        out
    }
}

/// The Request-URI (and digest uri) of our REGISTERs.
pub fn register_uri() -> String {
    format!("sip:{SIPD}")
}

/// CANCEL, or the ACK for a non-2xx final response (`to`: that response's
/// To), of the INVITE `invite` we sent (RFC 3261 §9.1, §17.1.1.3): the same
/// Request-URI, top Via, From, Call-ID, CSeq number and Route.
pub fn hop_request(invite: &Message, method: &str, to: Option<&str>) -> String {
    let mut out = format!(
        "{method} {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n",
        invite.request_uri().unwrap_or(""),
        invite.header(&HeaderName::Via).unwrap_or("")
    );
    for r in invite.headers(&HeaderName::Route) {
        out.push_str(&format!("Route: {r}\r\n"));
    }
    out.push_str(&format!(
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nContent-Length: 0\r\n\r\n",
        invite.header(&HeaderName::From).unwrap_or(""),
        to.or(invite.header(&HeaderName::To)).unwrap_or(""),
        invite.call_id(),
        invite.cseq().seq
    ));
    out
}

/// The seed's kind of sip.conf: two phones and a third in one group, a
/// gateway with a prefix, and noanswer short enough for tests.
pub const CONF: &str = "\
[general]
realm=pbx
noanswer=5

[alice]
secret=a1
accountcode=HOME
exten=1001

[bob]
secret=b2
accountcode=HOME
exten=1002

[carol]
secret=c3
accountcode=HOME
exten=1003

[gw]
accountcode=gateways
host=127.0.0.1:7000
exten=99
";
