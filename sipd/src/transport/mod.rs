//! Transports: bytes in and out over UDP and TCP. A received message comes
//! with the [`Peer`] it came from; the core answers with [`Out`]s naming a
//! [`Dest`]. TCP connections are "flows" with an id so that requests to a
//! client registered over TCP reuse its connection (NAT).

pub mod tcp;
pub mod tls;
pub mod udp;
mod ws;

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

pub use tcp::Tcp;
pub use udp::Udp;

/// Transport protocol of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    /// SIP over WebSocket (RFC 7118), and over secure WebSocket.
    Ws,
    Wss,
}

impl Transport {
    /// Upper-case name as written in Via (`UDP`, `TCP`, `TLS`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }
    /// Lower-case name as written in URIs and `sipctl regs` (`udp`, `tcp`, `tls`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
    pub fn parse(s: &str) -> Option<Transport> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|t| s.eq_ignore_ascii_case(t.name()))
    }
    /// A connection-oriented transport: messages framed in a byte stream,
    /// sent over the peer's connection (flow), no retransmissions.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    /// Confidential on the wire (a `sips:` target needs it).
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }
    /// Messages come framed by the transport (UDP datagrams, WebSocket
    /// frames), not by Content-Length in a byte stream.
    pub fn is_framed(self) -> bool {
        matches!(self, Transport::Udp | Transport::Ws | Transport::Wss)
    }
    /// sipd can open a connection of this transport to a peer (WebSocket
    /// clients connect to us; a closed one cannot be reached again).
    pub fn can_connect(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
    /// The port a URI of this transport means when it names none.
    pub fn default_port(self) -> u16 {
        if self.is_secure() {
            5061
        } else {
            5060
        }
    }
}

/// Receiver of every message the transports read: the server parses it
/// and hands it to the core. Called from any thread (UDP reader threads,
/// tokio workers).
pub trait Sink: Send + Sync + 'static {
    /// One datagram (UDP) or one message framed by Content-Length (TCP).
    /// `oversized`: a datagram larger than the SIP message limit.
    fn on_message(&self, data: &[u8], peer: Peer, oversized: bool);

    /// Several datagrams read at once (UDP).
    fn on_datagrams(&self, batch: &[udp::Datagram<'_>]) {
        for d in batch {
            self.on_message(d.data, d.peer, d.oversized);
        }
    }

    /// A UDP reader thread has had nothing to read for a while (after
    /// traffic, or every few seconds): a chance to do per-thread
    /// housekeeping such as returning freed memory. Called on that thread.
    fn on_idle(&self) {}

    /// A request sent with [`IfClosed::ConnectOrFail`] could not be
    /// delivered: its flow was gone and a new connection failed. Never
    /// called with the sender's locks held.
    fn on_send_failed(&self, report: u64);
}

/// Id of one TCP connection.
pub type FlowId = u64;

/// Where a message came from (or goes to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The TCP connection it arrived on.
    pub flow: Option<FlowId>,
    /// Our listen address it arrived on (responses leave from it, Via and
    /// Record-Route name it); `None` for a destination we have not heard
    /// from: the first listen address of its address family.
    pub local: Option<SocketAddr>,
}

impl Peer {
    /// A destination with no flow and no local address chosen yet.
    pub fn to(transport: Transport, addr: SocketAddr) -> Peer {
        Peer {
            transport,
            addr,
            flow: None,
            local: None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.name(), self.addr)
    }
}

/// Where to send a message: over `flow` when it is still open, else to
/// `addr` (opening a TCP connection if needed).
pub type Dest = Peer;

/// What to do with a message whose TCP flow has closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfClosed {
    /// A response: dropped (with a debug log); its client is gone.
    Drop,
    /// A request: a new connection to the destination address.
    Connect,
    /// A request of a client transaction: a new connection, and when that
    /// fails the sink hears [`Sink::on_send_failed`] with this id, so the
    /// branch fails at once (RFC 3261 §16.9: as a 503).
    ConnectOrFail(u64),
}

/// One message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Out {
    pub dest: Dest,
    pub data: Vec<u8>,
    pub if_closed: IfClosed,
}

impl Out {
    /// A response (dropped when its flow is gone).
    pub fn response(dest: Dest, data: Vec<u8>) -> Out {
        Out {
            dest,
            data,
            if_closed: IfClosed::Drop,
        }
    }

    /// A request sent without a transaction (ACK, our own BYE's ACK).
    pub fn request(dest: Dest, data: Vec<u8>) -> Out {
        Out {
            dest,
            data,
            if_closed: IfClosed::Connect,
        }
    }

    /// A request of client transaction `tx`.
    pub fn tx_request(dest: Dest, data: Vec<u8>, tx: u64) -> Out {
        Out {
            dest,
            data,
            if_closed: IfClosed::ConnectOrFail(tx),
        }
    }
}

/// The open sockets, used by the core's output path.
#[derive(Clone)]
pub struct Transports {
    pub udp: Arc<Udp>,
    pub tcp: Arc<Tcp>,
    /// TLS listeners and outgoing TLS (present even without a `tls:`
    /// listener, for static clients with `transport=tls`).
    pub tls: Option<Arc<Tcp>>,
    /// WebSocket and secure WebSocket listeners (`-b ws:`, `-b wss:`).
    pub ws: Option<Arc<Tcp>>,
    pub wss: Option<Arc<Tcp>>,
    pub debug: Option<Arc<DebugLog>>,
}

impl Transports {
    /// The stream transports: TCP, then TLS, WS and WSS where present.
    pub fn streams(&self) -> impl Iterator<Item = &Arc<Tcp>> {
        std::iter::once(&self.tcp).chain([&self.tls, &self.ws, &self.wss].into_iter().flatten())
    }

    /// Flow `id` carried an authenticated request (flow ids are unique
    /// across the stream transports: the one that has it takes it).
    pub fn trust(&self, id: FlowId) {
        for t in self.streams() {
            t.trust(id);
        }
    }

    /// Send everything the core produced. Never blocks the caller for long:
    /// UDP sends are non-blocking, TCP sends are queued to the connection's writer.
    pub fn send_all(&self, outs: Vec<Out>) {
        if let Some(d) = &self.debug {
            for out in &outs {
                d.log(false, &out.dest, &out.data);
            }
        }
        let udp: Vec<&Out> = outs
            .iter()
            .filter(|o| o.dest.transport == Transport::Udp)
            .collect();
        if !udp.is_empty() {
            self.udp.send_many(&udp);
        }
        for out in outs {
            match out.dest.transport {
                Transport::Udp => {}
                Transport::Tcp => self.tcp.send(out),
                Transport::Tls => match &self.tls {
                    Some(tls) => tls.send(out),
                    None => self.tcp.fail_out(&out),
                },
                Transport::Ws => match &self.ws {
                    Some(ws) => ws.send(out),
                    None => self.tcp.fail_out(&out),
                },
                Transport::Wss => match &self.wss {
                    Some(ws) => ws.send(out),
                    None => self.tcp.fail_out(&out),
                },
            }
        }
    }
}

/// `-d`: every SIP message in and out printed to stdout with time,
/// direction (`<<` in, `>>` out), transport and peer address.
pub struct DebugLog {
    out: std::sync::Mutex<std::io::Stdout>,
}

impl DebugLog {
    pub fn new() -> DebugLog {
        DebugLog {
            out: std::sync::Mutex::new(std::io::stdout()),
        }
    }

    pub fn log(&self, incoming: bool, peer: &Peer, data: &[u8]) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut text = String::from_utf8_lossy(data).replace("\r\n", "\n");
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let head = format!(
            "{}.{:03} {} {} {}\n",
            proto::format_unix_ms(now),
            now % 1000,
            if incoming { "<<" } else { ">>" },
            peer.transport.via_name(),
            peer.addr
        );
        let mut out = crate::lock(&self.out);
        // stdout closed or full: debugging output is best effort.
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(text.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

impl Default for DebugLog {
    fn default() -> Self {
        Self::new()
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}
