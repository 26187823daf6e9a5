//! A small SIP user agent for tests: sends requests it builds as text (or
//! raw bytes), receives and parses messages with sipd's own parser, over UDP
//! TCP or TLS on loopback. Every receive has a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sipd::sip::{frame_stream, Limits, Message, StreamFrame};

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A unique token for branches, tags and Call-IDs.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A byte stream: a TCP socket, or a TLS session over one.
pub trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

enum Conn {
    Udp(UdpSocket),
    /// `sock` is the TCP socket under `io` (for timeouts and addresses).
    Tcp {
        stream: Box<dyn Io>,
        sock: TcpStream,
        buf: Vec<u8>,
        tls: bool,
    },
    /// SIP over WebSocket: one message per frame.
    Ws {
        ws: Box<tungstenite::WebSocket<Box<dyn Io>>>,
        sock: TcpStream,
        secure: bool,
    },
}

/// The `.invalid` host a WebSocket client puts in Via and Contact (RFC 7118 §5.2).
pub const WS_HOST: &str = "df7jal23ls0d.invalid";

pub struct Ua {
    conn: Conn,
    pub local: SocketAddr,
    pub server: SocketAddr,
    pub user: String,
    pub tag: String,
}

/// A request under construction; `Ua::request` fills the usual headers.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    /// Replace (or add) a header.
    pub fn set(mut self, name: &str, value: &str) -> Req {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// Add a header line (keeps existing ones).
    pub fn add(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn remove(mut self, name: &str) -> Req {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Req {
        self.body = body.to_vec();
        self.set("Content-Type", content_type)
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut b = s.into_bytes();
        b.extend_from_slice(&self.body);
        b
    }
}

impl Ua {
    /// A UDP user agent on 127.0.0.1 (or ::1 for an IPv6 server).
    pub fn udp(server: SocketAddr, user: &str) -> Ua {
        let bind = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let sock = UdpSocket::bind(bind).expect("bind ua");
        let local = sock.local_addr().unwrap();
        Ua {
            conn: Conn::Udp(sock),
            local,
            server,
            user: user.into(),
            tag: unique("t"),
        }
    }

    /// A UDP user agent bound to this exact address (e.g. a static `host=`).
    pub fn udp_at(bind: SocketAddr, server: SocketAddr, user: &str) -> Ua {
        let sock = UdpSocket::bind(bind).expect("bind ua");
        let local = sock.local_addr().unwrap();
        Ua {
            conn: Conn::Udp(sock),
            local,
            server,
            user: user.into(),
            tag: unique("t"),
        }
    }

    /// A TCP user agent connected to the server.
    pub fn tcp(server: SocketAddr, user: &str) -> Ua {
        let stream = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
        Ua::from_accepted(stream, server, user)
    }

    /// A TCP user agent on this connection: also one that was accepted
    /// (sipd connected to us), e.g. a phone that listens on the port it
    /// registered from.
    pub fn from_accepted(stream: TcpStream, server: SocketAddr, user: &str) -> Ua {
        stream.set_nodelay(true).unwrap();
        let sock = stream.try_clone().unwrap();
        Ua::on_stream(Box::new(stream), sock, false, server, user)
    }

    /// A TLS user agent connected to the server, trusting `ca` (PEM) and
    /// expecting the server's certificate to name `name` (an IP or a host).
    pub fn tls(server: SocketAddr, user: &str, ca: &str, name: &str) -> Ua {
        let (stream, sock) = crate::tls::connect(server, ca, name).expect("tls connect");
        Ua::on_stream(stream, sock, true, server, user)
    }

    /// A WebSocket user agent (`ws://`, or `wss://` trusting `ca`), offering
    /// the `sip` subprotocol.
    pub fn ws(server: SocketAddr, user: &str, tls: Option<&str>) -> Ua {
        Ua::ws_with(server, user, tls, &[("Sec-WebSocket-Protocol", "sip")])
            .expect("websocket handshake")
    }

    /// A WebSocket handshake with these headers: the UA, or the HTTP
    /// status the server answered.
    pub fn ws_with(
        server: SocketAddr,
        user: &str,
        tls: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Ua, u16> {
        use tungstenite::client::IntoClientRequest;
        let (stream, sock): (Box<dyn Io>, TcpStream) = match tls {
            Some(ca) => {
                crate::tls::connect(server, ca, &server.ip().to_string()).expect("tls connect")
            }
            None => {
                let s =
                    TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                (Box::new(s.try_clone().unwrap()), s)
            }
        };
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let mut req = format!("{scheme}://{server}/")
            .into_client_request()
            .unwrap();
        for (n, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tungstenite::client::client(req, stream) {
            Ok((ws, resp)) => {
                let proto = resp
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok());
                assert_eq!(proto, Some("sip"), "subprotocol in the 101");
                let local = sock.local_addr().unwrap();
                Ok(Ua {
                    conn: Conn::Ws {
                        ws: Box::new(ws),
                        sock,
                        secure: tls.is_some(),
                    },
                    local,
                    server,
                    user: user.into(),
                    tag: unique("t"),
                })
            }
            Err(tungstenite::handshake::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                Err(r.status().as_u16())
            }
            Err(e) => panic!("websocket handshake: {e}"),
        }
    }

    /// A TLS user agent on a connection it accepted ([`crate::tls::accept`]).
    pub fn tls_accepted(
        stream: Box<dyn Io>,
        sock: TcpStream,
        server: SocketAddr,
        user: &str,
    ) -> Ua {
        Ua::on_stream(stream, sock, true, server, user)
    }

    fn on_stream(
        stream: Box<dyn Io>,
        sock: TcpStream,
        tls: bool,
        server: SocketAddr,
        user: &str,
    ) -> Ua {
        let local = sock.local_addr().unwrap();
        Ua {
            conn: Conn::Tcp {
                stream,
                sock,
                buf: Vec::new(),
                tls,
            },
            local,
            server,
            user: user.into(),
            tag: unique("t"),
        }
    }

    /// A UDP user agent bound to `ip` (port chosen by the system), talking
    /// to `server`.
    pub fn udp_on(ip: &str, server: SocketAddr, user: &str) -> Ua {
        let bind: SocketAddr = if ip.contains(':') {
            format!("[{ip}]:0")
        } else {
            format!("{ip}:0")
        }
        .parse()
        .unwrap();
        Ua::udp_at(bind, server, user)
    }

    pub fn transport(&self) -> &'static str {
        match self.conn {
            Conn::Udp(_) => "UDP",
            Conn::Tcp { tls: false, .. } => "TCP",
            Conn::Tcp { tls: true, .. } => "TLS",
            Conn::Ws { secure: false, .. } => "WS",
            Conn::Ws { secure: true, .. } => "WSS",
        }
    }

    /// Our host in Via and Contact: the local address, or for a WebSocket
    /// client an `.invalid` name (RFC 7118 §5.2).
    pub fn host(&self) -> String {
        match self.conn {
            Conn::Ws { .. } => WS_HOST.to_string(),
            _ => self.local.to_string(),
        }
    }

    fn host_port(addr: SocketAddr) -> String {
        addr.to_string()
    }

    /// A request from this UA with Via (fresh branch, rport), Max-Forwards,
    /// From (with our tag), To, Call-ID, CSeq and Contact filled in.
    pub fn request(&self, method: &str, uri: &str) -> Req {
        let server = Self::host_port(self.server);
        let me = self.host();
        let to = if method == "REGISTER" {
            format!("<sip:{}@{server}>", self.user)
        } else {
            format!("<{uri}>")
        };
        Req {
            method: method.into(),
            uri: uri.into(),
            headers: vec![
                (
                    "Via".into(),
                    format!(
                        "SIP/2.0/{} {me};branch={};rport",
                        self.transport(),
                        unique("z9hG4bK")
                    ),
                ),
                ("Max-Forwards".into(), "70".into()),
                (
                    "From".into(),
                    format!("<sip:{}@{server}>;tag={}", self.user, self.tag),
                ),
                ("To".into(), to),
                ("Call-ID".into(), unique("call-")),
                ("CSeq".into(), format!("1 {method}")),
                (
                    "Contact".into(),
                    format!(
                        "<sip:{}@{me};transport={}>",
                        self.user,
                        self.transport().to_lowercase()
                    ),
                ),
            ],
            body: Vec::new(),
        }
    }

    pub fn send(&mut self, req: &Req) {
        self.send_raw(&req.to_bytes());
    }

    pub fn send_raw(&mut self, data: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s) => {
                s.send_to(data, self.server).expect("udp send");
            }
            Conn::Tcp { stream, .. } => {
                stream.write_all(data).expect("tcp send");
                stream.flush().expect("tcp flush");
            }
            Conn::Ws { ws, .. } => {
                let msg = match std::str::from_utf8(data) {
                    Ok(t) => tungstenite::Message::text(t),
                    Err(_) => tungstenite::Message::binary(data.to_vec()),
                };
                ws.send(msg).expect("ws send");
            }
        }
    }

    /// Send raw bytes to an arbitrary address (UDP only).
    pub fn send_to(&mut self, data: &[u8], to: SocketAddr) {
        match &mut self.conn {
            Conn::Udp(s) => {
                s.send_to(data, to).expect("udp send");
            }
            Conn::Tcp { .. } | Conn::Ws { .. } => panic!("send_to on a TCP ua"),
        }
    }

    /// The next message (with its source for UDP), or None after `timeout`.
    pub fn recv_from(&mut self, timeout: Duration) -> Option<(Message, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        let limits = Limits::default();
        match &mut self.conn {
            Conn::Ws { ws, sock, .. } => loop {
                let left = deadline.checked_duration_since(Instant::now())?;
                sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                let data = match ws.read() {
                    Ok(tungstenite::Message::Text(t)) => t.as_bytes().to_vec(),
                    Ok(tungstenite::Message::Binary(b)) => b.to_vec(),
                    Ok(_) => continue,
                    Err(_) => return None,
                };
                let m = Message::parse(&data, &limits).expect("ws parse");
                return Some((m, sock.peer_addr().unwrap()));
            },
            Conn::Udp(s) => {
                let mut buf = vec![0u8; 65_536];
                let left = deadline.checked_duration_since(Instant::now())?;
                s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                let (n, from) = s.recv_from(&mut buf).ok()?;
                match Message::parse(&buf[..n], &limits) {
                    Ok(m) => Some((m, from)),
                    Err(e) => panic!(
                        "ua got an unparseable message ({e}):\n{}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                }
            }
            Conn::Tcp {
                stream, sock, buf, ..
            } => loop {
                match frame_stream(buf, &limits).expect("tcp framing") {
                    StreamFrame::Message(len) => {
                        let m = Message::parse_stream(&buf[..len], &limits).expect("tcp parse");
                        buf.drain(..len);
                        let from = sock.peer_addr().unwrap();
                        return Some((m, from));
                    }
                    StreamFrame::KeepAlive(k) => {
                        buf.drain(..k);
                    }
                    StreamFrame::Incomplete => {
                        let left = deadline.checked_duration_since(Instant::now())?;
                        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                            .unwrap();
                        let mut chunk = [0u8; 16384];
                        match stream.read(&mut chunk) {
                            Ok(0) => return None,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(_) => return None,
                        }
                    }
                }
            },
        }
    }

    /// The next message's raw bytes (UDP: one datagram; TCP: whatever
    /// arrives), without parsing: for answers that may be malformed.
    pub fn recv_bytes(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        match &mut self.conn {
            Conn::Ws { ws, sock, .. } => {
                sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
                    .unwrap();
                match ws.read() {
                    Ok(tungstenite::Message::Text(t)) => Some(t.as_bytes().to_vec()),
                    Ok(tungstenite::Message::Binary(b)) => Some(b.to_vec()),
                    _ => None,
                }
            }
            Conn::Udp(s) => {
                s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
                    .unwrap();
                s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
            }
            Conn::Tcp {
                stream,
                sock,
                buf: pending,
                ..
            } => {
                if !pending.is_empty() {
                    return Some(std::mem::take(pending));
                }
                sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
                    .unwrap();
                match stream.read(&mut buf) {
                    Ok(n) if n > 0 => Some(buf[..n].to_vec()),
                    _ => None,
                }
            }
        }
    }

    pub fn recv(&mut self, timeout: Duration) -> Option<Message> {
        self.recv_from(timeout).map(|(m, _)| m)
    }

    /// The next response to the request with this CSeq method, skipping
    /// anything else; provisional responses are returned too.
    pub fn recv_response(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let m = self.recv(left)?;
            if !m.is_request() {
                return Some(m);
            }
        }
    }

    /// Send a request and return its final response (1xx skipped).
    /// Sends `req` and returns its final response. Responses to other
    /// requests (a stray answer to something sent earlier from this
    /// socket's address) are skipped: they carry another Call-ID or CSeq.
    pub fn transact(&mut self, req: &Req) -> Option<Message> {
        self.send(req);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let m = self.final_response(left)?;
            let cseq = format!("{} {}", m.cseq().seq, m.cseq().method);
            let ours = Some(m.call_id()) == req.get("Call-ID").map(str::trim)
                && Some(cseq.as_str()) == req.get("CSeq").map(str::trim);
            if ours {
                return Some(m);
            }
        }
    }

    pub fn final_response(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let m = self.recv_response(left)?;
            if m.status().unwrap_or(0) >= 200 {
                return Some(m);
            }
        }
    }

    /// Nothing arrives within `timeout`.
    pub fn expect_silence(&mut self, timeout: Duration) {
        if let Some(m) = self.recv(timeout) {
            panic!(
                "expected silence, got:\n{}",
                String::from_utf8_lossy(m.raw())
            );
        }
    }
}

/// Digest credentials answering a 401/407 challenge.
pub fn credentials(
    challenge: &Message,
    req: &Req,
    user: &str,
    secret: &str,
    algorithm: &str,
    nc: u32,
) -> (String, String) {
    use sipd::auth::{client_response, Algorithm};
    use sipd::sip::auth::AuthParams;
    use sipd::sip::HeaderName;
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
                .eq_ignore_ascii_case(algorithm)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {algorithm} challenge in\n{}",
                String::from_utf8_lossy(challenge.raw())
            )
        });
    let realm = ch.get("realm").unwrap().to_string();
    let nonce = ch.get("nonce").unwrap().to_string();
    let alg = Algorithm::parse(algorithm).unwrap();
    let cnonce = unique("cn");
    let response = client_response(
        alg,
        user,
        &realm,
        secret,
        &req.method,
        &req.uri,
        &nonce,
        nc,
        &cnonce,
        Some("auth"),
    );
    (
        header.to_string(),
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{}\", \
             response=\"{response}\", algorithm={algorithm}, qop=auth, nc={nc:08x}, cnonce=\"{cnonce}\"",
            req.uri
        ),
    )
}

impl Ua {
    /// `req` again as a new transaction: fresh Via branch, CSeq + 1.
    pub fn renew(&self, req: &Req) -> Req {
        let cseq = req.get("CSeq").unwrap();
        let n: u32 = cseq.split_whitespace().next().unwrap().parse().unwrap();
        req.clone()
            .set("CSeq", &format!("{} {}", n + 1, req.method))
            .set(
                "Via",
                &format!(
                    "SIP/2.0/{} {};branch={};rport",
                    self.transport(),
                    self.host(),
                    unique("z9hG4bK")
                ),
            )
    }

    /// `req` renewed with credentials answering `challenge`.
    pub fn authorized(
        &self,
        req: &Req,
        challenge: &Message,
        secret: &str,
        algorithm: &str,
        nc: u32,
    ) -> Req {
        let (h, v) = credentials(challenge, req, &self.user, secret, algorithm, nc);
        self.renew(req).set(&h, &v)
    }

    /// Send `req`; when challenged, answer with digest credentials (MD5)
    /// and return the final response to the authenticated request.
    pub fn transact_auth(&mut self, req: &Req, secret: &str) -> Option<Message> {
        let first = self.transact(req)?;
        if !matches!(first.status(), Some(401) | Some(407)) {
            return Some(first);
        }
        let again = self.authorized(req, &first, secret, "MD5", 1);
        self.transact(&again)
    }

    /// REGISTER with digest; returns the final response.
    pub fn register(&mut self, secret: &str, expires: u32) -> Message {
        let server = self.server;
        let req = self
            .request("REGISTER", &format!("sip:{server}"))
            .set("Expires", &expires.to_string());
        self.transact_auth(&req, secret)
            .expect("no answer to REGISTER")
    }
}

/// One side's view of a dialog, enough to send in-dialog requests.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    /// Our From value (with our tag) for requests we send.
    pub local: String,
    /// The peer's value (with its tag) for our To.
    pub remote: String,
    /// Request-URI of our requests (the peer's Contact).
    pub target: String,
    /// Route headers of our requests, in order.
    pub routes: Vec<String>,
    pub cseq: u32,
    /// CSeq of the INVITE (for the ACK).
    pub invite_cseq: u32,
}

fn first_contact(m: &Message) -> String {
    m.contact_uri()
        .unwrap_or_else(|| panic!("no Contact in\n{}", String::from_utf8_lossy(m.raw())))
        .to_string()
}

impl Dialog {
    /// The caller's dialog from its INVITE and the 2xx (route set = the
    /// Record-Route of the 2xx, reversed).
    pub fn uac(invite: &Req, ok: &Message) -> Dialog {
        let mut routes: Vec<String> = ok
            .header_values(&sipd::sip::HeaderName::RecordRoute)
            .into_iter()
            .map(str::to_string)
            .collect();
        routes.reverse();
        let n: u32 = invite
            .get("CSeq")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Dialog {
            call_id: invite.get("Call-ID").unwrap().to_string(),
            local: invite.get("From").unwrap().to_string(),
            remote: ok.header(&sipd::sip::HeaderName::To).unwrap().to_string(),
            target: first_contact(ok),
            routes,
            cseq: n,
            invite_cseq: n,
        }
    }

    /// The callee's dialog from the INVITE it received and its To tag.
    pub fn uas(invite: &Message, tag: &str) -> Dialog {
        use sipd::sip::HeaderName;
        let routes = invite
            .header_values(&HeaderName::RecordRoute)
            .into_iter()
            .map(str::to_string)
            .collect();
        Dialog {
            call_id: invite.call_id().to_string(),
            local: format!("{};tag={tag}", invite.header(&HeaderName::To).unwrap()),
            remote: invite.header(&HeaderName::From).unwrap().to_string(),
            target: first_contact(invite),
            routes,
            cseq: 100,
            invite_cseq: invite.cseq().seq,
        }
    }
}

impl Ua {
    /// An in-dialog request (ACK uses the INVITE's CSeq number).
    pub fn in_dialog(&self, d: &mut Dialog, method: &str) -> Req {
        let seq = if method == "ACK" {
            d.invite_cseq
        } else {
            d.cseq += 1;
            d.cseq
        };
        let me = self.host();
        let mut headers = vec![
            (
                "Via".to_string(),
                format!(
                    "SIP/2.0/{} {me};branch={};rport",
                    self.transport(),
                    unique("z9hG4bK")
                ),
            ),
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
            (
                "Contact".into(),
                format!(
                    "<sip:{}@{me};transport={}>",
                    self.user,
                    self.transport().to_lowercase()
                ),
            ),
        ]);
        Req {
            method: method.into(),
            uri: d.target.clone(),
            headers,
            body: Vec::new(),
        }
    }

    /// A response to a received request, with our To tag (not for 100) and Contact.
    pub fn response(&self, req: &Message, code: u16, reason: &str, tag: &str) -> Vec<u8> {
        use sipd::sip::{HeaderName, ResponseBuilder};
        let mut b = ResponseBuilder::new(req, code, reason);
        if code > 100 {
            b = b.to_tag(tag);
        }
        for rr in req.headers(&HeaderName::RecordRoute) {
            b = b.header(HeaderName::RecordRoute, rr);
        }
        let contact = format!(
            "<sip:{}@{};transport={}>",
            self.user,
            self.host(),
            self.transport().to_lowercase()
        );
        b.header(HeaderName::Contact, &contact).build()
    }

    /// Answer a received request.
    pub fn respond(&mut self, req: &Message, code: u16, reason: &str, tag: &str) {
        let data = self.response(req, code, reason, tag);
        self.send_raw(&data);
    }

    /// Wait for a request with this method (other messages are dropped).
    pub fn expect_request(&mut self, method: &str, timeout: Duration) -> Message {
        self.expect_request_from(method, timeout).0
    }

    /// [`Ua::expect_request`] with the address it came from.
    pub fn expect_request_from(
        &mut self,
        method: &str,
        timeout: Duration,
    ) -> (Message, SocketAddr) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_default();
            let (m, from) = self
                .recv_from(left)
                .unwrap_or_else(|| panic!("{}: no {method} within {timeout:?}", self.user));
            if m.method().map(|x| x.as_str()) == Some(method) {
                return (m, from);
            }
        }
    }

    /// Wait for a response with this status (others skipped).
    pub fn expect_status(&mut self, code: u16, timeout: Duration) -> Message {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_default();
            let m = self
                .recv(left)
                .unwrap_or_else(|| panic!("{}: no {code} within {timeout:?}", self.user));
            if m.status() == Some(code) {
                return m;
            }
            if m.status().is_some_and(|s| s >= 200) {
                panic!(
                    "{}: expected {code}, got\n{}",
                    self.user,
                    String::from_utf8_lossy(m.raw())
                );
            }
        }
    }

    /// Send an INVITE to `uri`, answering the 407 challenge; returns the
    /// request actually sent with credentials (for building the dialog).
    pub fn invite(&mut self, uri: &str, secret: &str) -> Req {
        self.invite_with(uri, secret, |r| r)
    }

    /// [`Ua::invite`] with the request adjusted by `f` first (extra headers).
    pub fn invite_with(&mut self, uri: &str, secret: &str, f: impl FnOnce(Req) -> Req) -> Req {
        let req = self.request("INVITE", uri).body("application/sdp", b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n");
        let req = f(req);
        self.send(&req);
        let ch = self
            .final_response(Duration::from_secs(5))
            .expect("no answer to INVITE");
        assert_eq!(
            ch.status(),
            Some(407),
            "{}",
            String::from_utf8_lossy(ch.raw())
        );
        self.ack_failure(&req, &ch);
        let authed = self.authorized(&req, &ch, secret, "MD5", 1);
        self.send(&authed);
        authed
    }

    /// CANCEL our INVITE `req` (same Request-URI, branch, From, To,
    /// Call-ID and CSeq number, RFC 3261 §9.1).
    pub fn cancel(&mut self, req: &Req) {
        let mut cancel = req.clone();
        cancel.method = "CANCEL".into();
        let seq = req.get("CSeq").unwrap().split_whitespace().next().unwrap();
        cancel = cancel.set("CSeq", &format!("{seq} CANCEL"));
        cancel.body.clear();
        let cancel = cancel.remove("Content-Type");
        self.send(&cancel);
    }

    /// ACK a non-2xx final response `resp` to our INVITE `req` (same
    /// branch, hop by hop, RFC 3261 §17.1.1.3).
    pub fn ack_failure(&mut self, req: &Req, resp: &Message) {
        let mut ack = req.clone();
        ack.method = "ACK".into();
        ack = ack
            .set(
                "CSeq",
                &format!(
                    "{} ACK",
                    req.get("CSeq").unwrap().split_whitespace().next().unwrap()
                ),
            )
            .set("To", resp.header(&sipd::sip::HeaderName::To).unwrap());
        ack.body.clear();
        let ack = ack.remove("Content-Type").remove("Proxy-Authorization");
        self.send(&ack);
    }
}

/// `caller` calls `uri` (digest with `secret`), `callee` rings (180) and
/// answers (200), the caller ACKs: both dialogs and the INVITE the callee got.
pub fn establish(
    caller: &mut Ua,
    callee: &mut Ua,
    uri: &str,
    secret: &str,
) -> (Dialog, Dialog, Message) {
    let (uac, uas, got, _) = establish_from(caller, callee, uri, secret);
    (uac, uas, got)
}

/// [`establish`], with the address the callee's INVITE came from.
pub fn establish_from(
    caller: &mut Ua,
    callee: &mut Ua,
    uri: &str,
    secret: &str,
) -> (Dialog, Dialog, Message, SocketAddr) {
    let s = Duration::from_secs(5);
    let inv = caller.invite(uri, secret);
    let (got, from) = callee.expect_request_from("INVITE", s);
    let tag = unique("callee");
    callee.respond(&got, 180, "Ringing", &tag);
    caller.expect_status(180, s);
    callee.respond(&got, 200, "OK", &tag);
    let ok = caller.expect_status(200, s);
    let mut uac = Dialog::uac(&inv, &ok);
    let ack = caller.in_dialog(&mut uac, "ACK");
    caller.send(&ack);
    callee.expect_request("ACK", s);
    (uac, Dialog::uas(&got, &tag), got, from)
}
