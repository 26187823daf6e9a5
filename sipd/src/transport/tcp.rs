//! TCP and TLS: a listener per address; per connection a reader task
//! (framing by Content-Length) and a writer task (queue bounded in bytes,
//! writes with a timeout). One `Tcp` serves one transport: plain TCP, or
//! TLS over TCP (then every accepted connection first completes a
//! handshake within `handshake_timeout`, and handshakes in progress are
//! bounded overall and per IP like untrusted connections). Connections ("flows") are kept in a table by id and by remote
//! address so that requests to a client registered over TCP go back over its
//! own connection.
//!
//! Trust: an accepted connection is *untrusted* until the core reports
//! ([`Tcp::trust`]) that it carried a successfully authenticated request or
//! that its source is a static host; connections we open ourselves are
//! trusted. An untrusted connection must deliver a first message within
//! `first_message_timeout` of being opened and is closed
//! `untrusted_idle` after its last complete message (keep-alives do not
//! count); a trusted one lives until nothing at all was read for
//! `idle_timeout`. On every connection a message that has started must
//! arrive complete within `message_timeout` (one byte a second does not
//! keep a connection). See [`deadline`].
//!
//! Bounds: `max_connections` overall and `max_per_ip` accepted from one IP;
//! untrusted connections may hold only `max_untrusted` of the first and
//! `max_untrusted_per_ip` of the second, so trusted flows always fit. An IP
//! over its own limits is refused: it only hurts itself. When the
//! untrusted share overall (or the whole table) is full, a new connection
//! is still taken in and the oldest untrusted connection of the IP holding
//! the most untrusted connections is closed for it ([`Tcp::evicted`]): a
//! phone connecting while flooders hold every untrusted slot gets in, and
//! the flooders evict each other. Only when everything is trusted is a
//! connection refused for want of room.
//!
//! Sends work from any thread (UDP reader threads, tokio workers, the
//! tick): tasks are spawned on the runtime handle taken at bind time. A
//! request whose flow has closed opens a new connection to the
//! destination (one connect per address at a time; what is sent meanwhile
//! waits for it); when the connect fails, requests that asked for it are
//! reported to the sink. A response whose flow has closed is dropped.
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::tls::Tls;
use super::{canonical, FlowId, IfClosed, Out, Peer, Sink, Transport};
use crate::sip::{frame_stream, Limits, StreamFrame};

/// Bounds on what TCP peers can make us hold.
#[derive(Clone, Debug)]
pub struct TcpLimits {
    pub max_connections: usize,
    /// Accepted connections from one IP address.
    pub max_per_ip: usize,
    /// Of `max_connections`, how many may be untrusted (accepted, not yet
    /// carrying an authenticated request): the rest is room for trusted flows.
    pub max_untrusted: usize,
    /// Of `max_per_ip`, how many may be untrusted.
    pub max_untrusted_per_ip: usize,
    /// An untrusted connection that has not sent a complete message this
    /// long after it was opened is closed (keep-alives do not count).
    pub first_message_timeout: Duration,
    /// An untrusted connection is closed this long after its last complete
    /// message (keep-alives do not count).
    pub untrusted_idle: Duration,
    /// A trusted connection from which nothing was read for this long is closed.
    pub idle_timeout: Duration,
    /// A message that has started (bytes read, not complete yet) must be
    /// complete within this time, on any connection.
    pub message_timeout: Duration,
    /// Bytes queued for a peer that does not read; beyond them the
    /// connection is closed.
    pub max_queued_bytes: usize,
    /// One write may take this long; then the connection is closed.
    pub write_timeout: Duration,
    pub connect_timeout: Duration,
    /// A TLS handshake (accepted or ours) must complete within this time.
    pub handshake_timeout: Duration,
}

/// Spare room kept in a connection's read buffer for the next read.
const READ_RESERVE: usize = 4096;

/// Flow ids are unique across every stream transport (TCP, TLS, WebSocket).
static NEXT_FLOW: AtomicU64 = AtomicU64::new(1);

/// A new flow id.
pub fn next_flow_id() -> FlowId {
    NEXT_FLOW.fetch_add(1, Ordering::Relaxed)
}

/// A byte stream a flow runs on: a TCP socket or a TLS session over one.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for S {}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            max_per_ip: 128,
            max_untrusted: 2048,
            max_untrusted_per_ip: 96,
            first_message_timeout: Duration::from_secs(30),
            untrusted_idle: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(2 * 3600 + 300),
            message_timeout: Duration::from_secs(10),
            max_queued_bytes: 256 * 1024,
            write_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection's reader gives up at [`deadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Untrusted, no complete message since it was opened.
    FirstMessage,
    /// Untrusted, no complete message for `untrusted_idle`.
    UntrustedIdle,
    /// Trusted, nothing read for `idle_timeout`.
    Idle,
    /// A started message did not complete within `message_timeout`.
    PartialMessage,
}

/// What a connection's reader knows when it waits for bytes.
#[derive(Clone, Copy, Debug)]
pub struct ReadState {
    pub opened: Instant,
    /// The last time anything was read (keep-alives included).
    pub last_read: Instant,
    /// The end of the last complete message, if any.
    pub last_message: Option<Instant>,
    /// When the bytes of the incomplete message now buffered started.
    pub partial_since: Option<Instant>,
    pub trusted: bool,
}

/// When a connection in state `st` is closed unless more arrives, and why
/// (the earliest rule that applies; see the module docs).
pub fn deadline(limits: &TcpLimits, st: &ReadState) -> (Instant, Expiry) {
    let base = match (st.trusted, st.last_message) {
        (true, _) => (st.last_read + limits.idle_timeout, Expiry::Idle),
        (false, None) => (
            st.opened + limits.first_message_timeout,
            Expiry::FirstMessage,
        ),
        (false, Some(at)) => (at + limits.untrusted_idle, Expiry::UntrustedIdle),
    };
    match st.partial_since {
        Some(since) if since + limits.message_timeout < base.0 => {
            (since + limits.message_timeout, Expiry::PartialMessage)
        }
        _ => base,
    }
}

/// A flow just entered into the table: what its reader and writer need.
pub(super) struct Registered {
    pub id: FlowId,
    /// Bytes queued for the peer.
    pub rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pub queued: Arc<AtomicUsize>,
    /// Notified when the flow must close.
    pub close: Arc<Notify>,
    pub trusted: Arc<AtomicBool>,
}

struct Flow {
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    close: Arc<Notify>,
    inbound: bool,
    /// Read by the connection's reader for its deadline; changed under
    /// the table lock only (with the untrusted counts).
    trusted: Arc<AtomicBool>,
}

impl Flow {
    fn untrusted(&self) -> bool {
        self.inbound && !self.trusted.load(Ordering::Relaxed)
    }
}

/// Messages waiting for a connection being opened to one address.
struct Connecting {
    queue: Vec<(Vec<u8>, IfClosed)>,
    bytes: usize,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<FlowId, Flow>,
    by_addr: HashMap<SocketAddr, FlowId>,
    /// Accepted connections by remote IP (trusted or not).
    per_ip: HashMap<IpAddr, usize>,
    /// Accepted connections not trusted yet, by remote IP and in all.
    untrusted_per_ip: HashMap<IpAddr, usize>,
    untrusted: usize,
    connecting: HashMap<SocketAddr, Connecting>,
}

/// What to do with a new connection, decided from the table's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    Yes,
    /// Close the oldest untrusted connection of the IP holding the most first.
    EvictHeaviest,
    No,
}

impl Table {
    fn count(map: &HashMap<IpAddr, usize>, ip: &IpAddr) -> usize {
        map.get(ip).copied().unwrap_or(0)
    }

    fn bump(map: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
        *map.entry(ip).or_insert(0) += 1;
    }

    fn drop_one(map: &mut HashMap<IpAddr, usize>, ip: &IpAddr) {
        if let Some(n) = map.get_mut(ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(ip);
            }
        }
    }

    /// May a new connection (accepted from `ip`, or opened by us when
    /// `inbound` is false) come in, and what must go for it? An IP over
    /// its own limits is refused (it only hurts itself); a full table
    /// makes room by closing an untrusted connection of the IP holding
    /// the most.
    fn admit(&self, limits: &TcpLimits, ip: IpAddr, inbound: bool) -> Admit {
        if inbound {
            if Self::count(&self.per_ip, &ip) >= limits.max_per_ip
                || Self::count(&self.untrusted_per_ip, &ip) >= limits.max_untrusted_per_ip
            {
                return Admit::No;
            }
            if self.untrusted >= limits.max_untrusted {
                return Admit::EvictHeaviest;
            }
        }
        if self.by_id.len() >= limits.max_connections {
            return if self.untrusted > 0 {
                Admit::EvictHeaviest
            } else {
                Admit::No
            };
        }
        Admit::Yes
    }

    /// The oldest untrusted connection of the IP holding the most
    /// untrusted connections.
    fn victim(&self) -> Option<FlowId> {
        let ip = *self.untrusted_per_ip.iter().max_by_key(|(_, &n)| n)?.0;
        self.by_id
            .iter()
            .filter(|(_, f)| f.untrusted() && f.addr.ip() == ip)
            .map(|(&id, _)| id)
            .min()
    }

    /// Take flow `id` out of the table and its counts.
    fn remove(&mut self, id: FlowId) -> Option<Flow> {
        let flow = self.by_id.remove(&id)?;
        let ip = flow.addr.ip();
        if flow.inbound {
            Self::drop_one(&mut self.per_ip, &ip);
        }
        if flow.untrusted() {
            Self::drop_one(&mut self.untrusted_per_ip, &ip);
            self.untrusted = self.untrusted.saturating_sub(1);
        }
        if self.by_addr.get(&flow.addr) == Some(&id) {
            self.by_addr.remove(&flow.addr);
        }
        Some(flow)
    }
}

pub struct Tcp {
    /// `Tcp`, `Tls`, `Ws` or `Wss`.
    pub(super) kind: Transport,
    /// For `Tls` and `Wss`: the certificates in force (swapped on reload).
    tls: Option<Arc<Tls>>,
    /// For `Ws` and `Wss`: the Origin values a handshake may carry (empty: any).
    pub(super) origins: arc_swap::ArcSwap<Vec<String>>,
    /// TLS handshakes in progress on accepted connections, by IP and in all.
    handshaking: Mutex<(usize, HashMap<IpAddr, usize>)>,
    listeners: Mutex<Vec<TcpListener>>,
    local: Vec<SocketAddr>,
    /// Where every task of this transport runs, whichever thread sends.
    pub(super) runtime: tokio::runtime::Handle,
    table: Mutex<Table>,
    pub(super) sink: OnceLock<Arc<dyn Sink>>,
    pub(super) limits: TcpLimits,
    /// Connections refused because a table limit was reached.
    pub refused: AtomicU64,
    /// Untrusted connections closed to make room for a new one.
    pub evicted: AtomicU64,
}

impl Tcp {
    /// Plain TCP listeners on `addrs`.
    pub async fn bind(addrs: &[SocketAddr], limits: TcpLimits) -> io::Result<Tcp> {
        Self::bind_kind(addrs, limits, Transport::Tcp, None).await
    }

    /// TLS listeners on `addrs` (and TLS for the connections we open).
    pub async fn bind_tls(
        addrs: &[SocketAddr],
        limits: TcpLimits,
        tls: Arc<Tls>,
    ) -> io::Result<Tcp> {
        Self::bind_kind(addrs, limits, Transport::Tls, Some(tls)).await
    }

    /// WebSocket listeners on `addrs`; secure WebSocket with `tls`.
    pub async fn bind_ws(
        addrs: &[SocketAddr],
        mut limits: TcpLimits,
        tls: Option<Arc<Tls>>,
    ) -> io::Result<Tcp> {
        // sipd pings every WS_PING; a browser that answers nothing for
        // three of them is gone.
        limits.idle_timeout = limits.idle_timeout.min(super::ws::WS_PING * 3);
        let kind = if tls.is_some() {
            Transport::Wss
        } else {
            Transport::Ws
        };
        Self::bind_kind(addrs, limits, kind, tls).await
    }

    /// The Origin values WebSocket handshakes may carry (empty: any).
    pub fn set_origins(&self, origins: Vec<String>) {
        self.origins.store(Arc::new(origins));
    }

    async fn bind_kind(
        addrs: &[SocketAddr],
        limits: TcpLimits,
        kind: Transport,
        tls: Option<Arc<Tls>>,
    ) -> io::Result<Tcp> {
        use socket2::{Domain, Protocol, Socket, Type};
        let mut listeners = Vec::new();
        let mut local = Vec::new();
        for &addr in addrs {
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            if addr.is_ipv6() {
                sock.set_only_v6(true)?;
            }
            sock.set_reuse_address(true)?;
            sock.bind(&addr.into())?;
            sock.listen(1024)?;
            sock.set_nonblocking(true)?;
            let l = TcpListener::from_std(sock.into())?;
            local.push(l.local_addr()?);
            listeners.push(l);
        }
        Ok(Tcp {
            kind,
            tls,
            origins: arc_swap::ArcSwap::from_pointee(Vec::new()),
            handshaking: Mutex::new((0, HashMap::new())),
            listeners: Mutex::new(listeners),
            local,
            runtime: tokio::runtime::Handle::current(),
            table: Mutex::new(Table::default()),
            sink: OnceLock::new(),
            limits,
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// The transport this serves.
    pub fn kind(&self) -> Transport {
        self.kind
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local.clone()
    }

    pub fn connections(&self) -> usize {
        crate::lock(&self.table).by_id.len()
    }

    /// Accepted connections not trusted yet.
    pub fn untrusted(&self) -> usize {
        crate::lock(&self.table).untrusted
    }

    /// Flow `id` carried an authenticated request, or comes from a static
    /// host: it gets the long idle timeout and leaves the untrusted share.
    pub fn trust(&self, id: FlowId) {
        let mut t = crate::lock(&self.table);
        let Some(flow) = t.by_id.get(&id) else { return };
        if flow.trusted.load(Ordering::Relaxed) {
            return;
        }
        flow.trusted.store(true, Ordering::Relaxed);
        if flow.inbound {
            let ip = flow.addr.ip();
            Table::drop_one(&mut t.untrusted_per_ip, &ip);
            t.untrusted = t.untrusted.saturating_sub(1);
        }
    }

    /// Start accepting; received messages go to `sink`.
    pub fn start(self: &Arc<Self>, sink: Arc<dyn Sink>) {
        let _ = self.sink.set(sink);
        let listeners = std::mem::take(&mut *crate::lock(&self.listeners));
        for l in listeners {
            let me = self.clone();
            let listen = l.local_addr().ok();
            self.runtime.spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, from)) => {
                            // The accepted socket's own address is concrete
                            // even on a wildcard listener.
                            let local = stream
                                .local_addr()
                                .ok()
                                .map(canonical)
                                .or(listen)
                                .unwrap_or(from);
                            let from = canonical(from);
                            let _ = stream.set_nodelay(true);
                            if me.kind == Transport::Tcp {
                                me.clone().adopt(stream, from, local, true);
                            } else {
                                me.clone().handshake(stream, from, local);
                            }
                        }
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!("tcp accept: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
    }

    /// Handshakes on an accepted connection (TLS, WebSocket upgrade, or
    /// both for WSS), bounded in time and in number (overall like the
    /// untrusted share, per IP like an IP's untrusted share), then the
    /// flow as any other.
    fn handshake(self: Arc<Self>, stream: TcpStream, from: SocketAddr, local: SocketAddr) {
        let acceptor = match &self.tls {
            None => None,
            Some(tls) => match tls.acceptor() {
                Some(a) => Some(a),
                None => {
                    tracing::warn!(
                        "{} {from}: no certificate configured, closing",
                        self.kind.name()
                    );
                    return;
                }
            },
        };
        let ip = from.ip();
        {
            let mut h = crate::lock(&self.handshaking);
            let per_ip = h.1.get(&ip).copied().unwrap_or(0);
            if h.0 >= self.limits.max_untrusted || per_ip >= self.limits.max_untrusted_per_ip {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "{}: refusing {from}: {} handshakes in progress, {per_ip} from its address",
                    self.kind.name(),
                    h.0
                );
                return;
            }
            h.0 += 1;
            *h.1.entry(ip).or_insert(0) += 1;
        }
        let me = self.clone();
        self.runtime.spawn(async move {
            let kind = me.kind;
            let deadline = tokio::time::Instant::now() + me.limits.handshake_timeout;
            let done = tokio::time::timeout_at(deadline, async {
                match (kind, acceptor) {
                    (Transport::Tls, Some(a)) => match a.accept(stream).await {
                        Ok(s) => {
                            me.clone().adopt(s, from, local, true);
                        }
                        Err(e) => tracing::debug!("tls {from}: handshake failed: {e}"),
                    },
                    (Transport::Wss, Some(a)) => match a.accept(stream).await {
                        Ok(s) => me.clone().upgrade(s, from, local).await,
                        Err(e) => tracing::debug!("wss {from}: TLS handshake failed: {e}"),
                    },
                    (Transport::Ws, _) => me.clone().upgrade(stream, from, local).await,
                    _ => tracing::debug!("{} {from}: no handshake for this transport", kind.name()),
                }
            })
            .await;
            {
                let mut h = crate::lock(&me.handshaking);
                h.0 = h.0.saturating_sub(1);
                if let Some(n) = h.1.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        h.1.remove(&ip);
                    }
                }
            }
            if done.is_err() {
                tracing::debug!("{} {from}: handshake timed out", kind.name());
            }
        });
    }

    /// Register a connected stream and start its reader and writer.
    fn adopt<S: Stream>(
        self: Arc<Self>,
        stream: S,
        addr: SocketAddr,
        local: SocketAddr,
        inbound: bool,
    ) -> Option<FlowId> {
        let r = self.register(addr, inbound)?;
        let id = r.id;
        let (reader, writer) = tokio::io::split(stream);
        let me = self.clone();
        let write_timeout = self.limits.write_timeout;
        let Registered {
            rx,
            queued,
            close,
            trusted,
            ..
        } = r;
        self.run_flow(
            id,
            addr,
            close,
            write_loop(writer, rx, queued, write_timeout),
            async move { me.read_loop(id, addr, local, reader, trusted).await },
        );
        Some(id)
    }

    /// Run a flow's writer and reader: the reader's end (or a close:
    /// write failed, queue full, evicted) ends the writer too, which drops
    /// its half and so closes the socket; the flow leaves the table.
    pub(super) fn run_flow<W, R>(
        self: &Arc<Self>,
        id: FlowId,
        addr: SocketAddr,
        close: Arc<Notify>,
        writer: W,
        reader: R,
    ) where
        W: std::future::Future<Output = ()> + Send + 'static,
        R: std::future::Future<Output = ()> + Send + 'static,
    {
        let me = self.clone();
        let writer_close = close.clone();
        let stop = Arc::new(Notify::new());
        let writer_stop = stop.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = writer => {}
                _ = writer_stop.notified() => {}
            }
            // A failed or stuck write ends the connection.
            writer_close.notify_one();
        });
        let kind = self.kind.name();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = reader => {}
                _ = close.notified() => tracing::debug!("{kind} {addr}: closed (write failed, queue full or evicted)"),
            }
            me.forget(id);
            stop.notify_one();
        });
    }

    /// Admit a new connection into the table (evicting an untrusted one
    /// if that is what makes room); `None` when refused.
    pub(super) fn register(&self, addr: SocketAddr, inbound: bool) -> Option<Registered> {
        let id = next_flow_id();
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(Notify::new());
        // Connections we open are to addresses the core chose: trusted.
        let trusted = Arc::new(AtomicBool::new(!inbound));
        {
            let mut t = crate::lock(&self.table);
            let ip = addr.ip();
            let victim = match t.admit(&self.limits, ip, inbound) {
                Admit::Yes => None,
                Admit::EvictHeaviest => t.victim(),
                Admit::No => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "{}: refusing {addr}: {} connections open ({} untrusted), {} from its address ({} untrusted)",
                        self.kind.name(),
                        t.by_id.len(),
                        t.untrusted,
                        Table::count(&t.per_ip, &ip),
                        Table::count(&t.untrusted_per_ip, &ip)
                    );
                    return None;
                }
            };
            if let Some(v) = victim.and_then(|v| t.remove(v)) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "{}: closing untrusted {} to make room for {addr} ({} untrusted open)",
                    self.kind.name(),
                    v.addr,
                    t.untrusted
                );
                v.close.notify_one();
            }
            t.by_id.insert(
                id,
                Flow {
                    addr,
                    tx,
                    queued: queued.clone(),
                    close: close.clone(),
                    inbound,
                    trusted: trusted.clone(),
                },
            );
            t.by_addr.insert(addr, id);
            if inbound {
                Table::bump(&mut t.per_ip, ip);
                Table::bump(&mut t.untrusted_per_ip, ip);
                t.untrusted += 1;
            }
        }
        Some(Registered {
            id,
            rx,
            queued,
            close,
            trusted,
        })
    }

    pub(super) fn forget(&self, id: FlowId) {
        crate::lock(&self.table).remove(id);
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        id: FlowId,
        addr: SocketAddr,
        local: SocketAddr,
        mut reader: R,
        trusted: Arc<AtomicBool>,
    ) {
        let limits = Limits::default();
        let peer = Peer {
            transport: self.kind,
            addr,
            flow: Some(id),
            local: Some(local),
        };
        // Read straight into the framing buffer: an idle connection holds
        // one small buffer (READ_RESERVE), not a read chunk besides it.
        let mut buf: Vec<u8> = Vec::with_capacity(READ_RESERVE);
        let opened = Instant::now();
        let mut st = ReadState {
            opened,
            last_read: opened,
            last_message: None,
            partial_since: None,
            trusted: trusted.load(Ordering::Relaxed),
        };
        loop {
            st.trusted = trusted.load(Ordering::Relaxed);
            let (at, _) = deadline(&self.limits, &st);
            if buf.capacity() - buf.len() < READ_RESERVE / 2 {
                buf.reserve(READ_RESERVE);
            }
            match tokio::time::timeout_at(at, reader.read_buf(&mut buf)).await {
                Err(_) => {
                    // Trust may have come while we waited: it only extends.
                    st.trusted = trusted.load(Ordering::Relaxed);
                    let (at, why) = deadline(&self.limits, &st);
                    if at > Instant::now() {
                        continue;
                    }
                    tracing::debug!("tcp {addr}: {why:?} timeout, closing");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!("tcp {addr}: {e}");
                    return;
                }
                Ok(Ok(0)) => return,
                Ok(Ok(_)) => {}
            }
            let now = Instant::now();
            st.last_read = now;
            let mut completed = false;
            loop {
                match frame_stream(&buf, &limits) {
                    Ok(StreamFrame::Incomplete) => break,
                    Ok(StreamFrame::KeepAlive(k)) => {
                        // RFC 5626 §4.4.1: answer a double-CRLF ping with a CRLF pong.
                        let ping = buf[..k].windows(4).any(|w| w == b"\r\n\r\n");
                        buf.drain(..k);
                        if ping {
                            self.queue(id, b"\r\n".to_vec());
                        }
                    }
                    Ok(StreamFrame::Message(len)) => {
                        completed = true;
                        st.last_message = Some(now);
                        if let Some(sink) = self.sink.get() {
                            sink.on_message(&buf[..len], peer, false);
                        }
                        buf.drain(..len);
                    }
                    Err(e) => {
                        // The stream cannot be resynchronised: hand what we
                        // have to the sink (it answers 400 if it can), close
                        // once the answer is written.
                        tracing::debug!("tcp {addr}: framing error {e}, closing");
                        if let Some(sink) = self.sink.get() {
                            let end = buf.len().min(limits.max_message);
                            sink.on_message(&buf[..end], peer, true);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    }
                }
            }
            // What is left is the start of the next message: its clock
            // starts now (or kept running when nothing completed).
            st.partial_since = match (buf.is_empty(), completed) {
                (true, _) => None,
                (false, true) => Some(now),
                (false, false) => st.partial_since.or(Some(now)),
            };
            if buf.capacity() > 4 * READ_RESERVE && buf.len() < READ_RESERVE {
                // A large message or a burst came and went: do not keep
                // its buffer.
                buf.shrink_to(READ_RESERVE);
            }
        }
    }

    /// Queue bytes on a flow; a peer that does not read loses its connection.
    pub(super) fn queue(&self, id: FlowId, data: Vec<u8>) -> bool {
        let t = crate::lock(&self.table);
        let Some(flow) = t.by_id.get(&id) else {
            return false;
        };
        let len = data.len();
        if flow.queued.load(Ordering::Relaxed) + len > self.limits.max_queued_bytes {
            tracing::warn!(
                "tcp {}: {} bytes queued, peer not reading: closing",
                flow.addr,
                flow.queued.load(Ordering::Relaxed)
            );
            flow.close.notify_one();
            return false;
        }
        flow.queued.fetch_add(len, Ordering::Relaxed);
        if flow.tx.send(data).is_err() {
            flow.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Send `out`: over its flow if still open; a request also over any
    /// connection to its address, else over a new connection. A response
    /// whose flow has closed is dropped.
    pub fn send(self: &Arc<Self>, out: Out) {
        let Out {
            dest,
            data,
            if_closed,
        } = out;
        let request = if_closed != IfClosed::Drop;
        let id = {
            let mut t = crate::lock(&self.table);
            let open = dest.flow.filter(|id| t.by_id.contains_key(id));
            let id = match open {
                Some(id) => Some(id),
                None if request => t.by_addr.get(&dest.addr).copied(),
                None => None,
            };
            if id.is_none() && request && !self.kind.can_connect() {
                // A WebSocket client that went away cannot be called back.
                drop(t);
                tracing::debug!(
                    "{} {}: connection closed, request not sent",
                    self.kind.name(),
                    dest.addr
                );
                if let IfClosed::ConnectOrFail(r) = if_closed {
                    self.fail(r);
                }
                return;
            }
            if id.is_none() && request {
                // Wait for the connection being opened, or open one.
                if let Some(c) = t.connecting.get_mut(&dest.addr) {
                    if c.bytes + data.len() <= self.limits.max_queued_bytes {
                        c.bytes += data.len();
                        c.queue.push((data, if_closed));
                    } else if let IfClosed::ConnectOrFail(r) = if_closed {
                        drop(t);
                        self.fail(r);
                    }
                    return;
                }
                if t.connecting.len() >= self.limits.max_connections {
                    drop(t);
                    tracing::debug!("tcp connect {}: too many connects pending", dest.addr);
                    if let IfClosed::ConnectOrFail(r) = if_closed {
                        self.fail(r);
                    }
                    return;
                }
                t.connecting.insert(
                    dest.addr,
                    Connecting {
                        bytes: data.len(),
                        queue: vec![(data, if_closed)],
                    },
                );
                drop(t);
                let me = self.clone();
                self.runtime.spawn(async move { me.connect(dest).await });
                return;
            }
            id
        };
        match id {
            Some(id) => {
                if !self.queue(id, data) {
                    if let IfClosed::ConnectOrFail(r) = if_closed {
                        self.fail(r);
                    }
                }
            }
            None => tracing::debug!("tcp {}: connection closed, response dropped", dest.addr),
        }
    }

    /// Open a connection to `dest` (from the local address it names, when
    /// specific) and send what waits for it; report failures.
    async fn connect(self: Arc<Self>, dest: Peer) {
        let local = dest.local.or_else(|| self.listen_for(&dest.addr));
        let result =
            tokio::time::timeout(self.limits.connect_timeout, connect_from(dest.addr, local)).await;
        let stream = match result {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Some(s)
            }
            Ok(Err(e)) => {
                tracing::debug!("tcp connect {}: {e}", dest.addr);
                None
            }
            Err(_) => {
                tracing::debug!("tcp connect {}: timeout", dest.addr);
                None
            }
        };
        let local = local.unwrap_or(dest.addr);
        let id = match (stream, self.tls.clone()) {
            (None, _) => None,
            (Some(s), None) => self.clone().adopt(s, dest.addr, local, false),
            (Some(s), Some(tls)) => {
                // The server's certificate must name its address (sipd's
                // static hosts are addresses, not names).
                let name = rustls_pki_types::ServerName::IpAddress(dest.addr.ip().into());
                let r = tokio::time::timeout(
                    self.limits.handshake_timeout,
                    tls.connector().connect(name, s),
                )
                .await;
                match r {
                    Ok(Ok(s)) => self.clone().adopt(s, dest.addr, local, false),
                    Ok(Err(e)) => {
                        tracing::warn!("tls connect {}: handshake failed: {e}", dest.addr);
                        None
                    }
                    Err(_) => {
                        tracing::warn!("tls connect {}: handshake timed out", dest.addr);
                        None
                    }
                }
            }
        };
        let waiting = crate::lock(&self.table).connecting.remove(&dest.addr);
        let Some(waiting) = waiting else { return };
        for (data, if_closed) in waiting.queue {
            let sent = id.is_some_and(|id| self.queue(id, data));
            if !sent {
                if let IfClosed::ConnectOrFail(r) = if_closed {
                    self.fail(r);
                }
            }
        }
    }

    /// A message this transport cannot carry (no TLS configured): a
    /// request of a transaction fails at once, the rest is dropped.
    pub fn fail_out(&self, out: &Out) {
        tracing::debug!(
            "{}: no transport for {}, dropped",
            out.dest.addr,
            out.dest.transport.name()
        );
        if let IfClosed::ConnectOrFail(r) = out.if_closed {
            self.fail(r);
        }
    }

    /// Tell the sink that the request with this report id was not sent;
    /// from a task of its own, so that no caller's lock is held then.
    fn fail(&self, report: u64) {
        if let Some(sink) = self.sink.get().cloned() {
            self.runtime
                .spawn(async move { sink.on_send_failed(report) });
        }
    }

    /// Our listen address of the family of `to` (the first one).
    fn listen_for(&self, to: &SocketAddr) -> Option<SocketAddr> {
        self.local
            .iter()
            .find(|a| a.is_ipv4() == to.is_ipv4())
            .or_else(|| self.local.first())
            .copied()
    }

    /// Is this flow still open?
    pub fn is_open(&self, id: FlowId) -> bool {
        crate::lock(&self.table).by_id.contains_key(&id)
    }

    /// The remote address of a flow.
    pub fn flow_addr(&self, id: FlowId) -> Option<SocketAddr> {
        crate::lock(&self.table).by_id.get(&id).map(|f| f.addr)
    }
}

/// Connect to `to`, from `local`'s IP when it is a specific address of the
/// same family (so that the source matches our Via and Record-Route).
async fn connect_from(to: SocketAddr, local: Option<SocketAddr>) -> io::Result<TcpStream> {
    let sock = if to.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(l) = local {
        if !l.ip().is_unspecified() && l.is_ipv4() == to.is_ipv4() {
            sock.bind(SocketAddr::new(l.ip(), 0))?;
        }
    }
    sock.connect(to).await
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    timeout: Duration,
) {
    while let Some(data) = rx.recv().await {
        let len = data.len();
        let r = tokio::time::timeout(timeout, writer.write_all(&data)).await;
        queued.fetch_sub(len, Ordering::Relaxed);
        match r {
            Ok(Ok(())) => {
                // TLS buffers inside the session: push the record out.
                if writer.flush().await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::debug!("tcp write: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("tcp write: timed out");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TcpLimits {
        TcpLimits {
            max_connections: 6,
            max_per_ip: 4,
            max_untrusted: 3,
            max_untrusted_per_ip: 2,
            first_message_timeout: Duration::from_secs(30),
            untrusted_idle: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(7500),
            message_timeout: Duration::from_secs(10),
            ..TcpLimits::default()
        }
    }

    fn secs(t0: Instant, at: Instant) -> u64 {
        at.duration_since(t0).as_secs()
    }

    #[test]
    fn deadlines() {
        let l = limits();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut st = ReadState {
            opened: t0,
            last_read: t0,
            last_message: None,
            partial_since: None,
            trusted: false,
        };
        // Untrusted, nothing yet: the first-message deadline, whatever is
        // read (keep-alives).
        assert_eq!(deadline(&l, &st), (s(30), Expiry::FirstMessage));
        st.last_read = s(25);
        assert_eq!(deadline(&l, &st), (s(30), Expiry::FirstMessage));
        // A message: untrusted idle from its end; keep-alives do not count.
        st.last_message = Some(s(5));
        assert_eq!(deadline(&l, &st), (s(25), Expiry::UntrustedIdle));
        // Trusted: idle from the last read of anything.
        st.trusted = true;
        assert_eq!(
            (secs(t0, deadline(&l, &st).0), deadline(&l, &st).1),
            (7525, Expiry::Idle)
        );
        // A started message must complete in time, trusted or not.
        st.partial_since = Some(s(24));
        assert_eq!(deadline(&l, &st), (s(34), Expiry::PartialMessage));
        st.trusted = false;
        // ... unless an earlier rule closes the connection first.
        assert_eq!(deadline(&l, &st), (s(25), Expiry::UntrustedIdle));
        st.last_message = Some(s(24));
        assert_eq!(deadline(&l, &st), (s(34), Expiry::PartialMessage));
    }

    fn flow(t: &mut Table, id: FlowId, ip: [u8; 4], inbound: bool, trusted: bool) {
        let (tx, _rx) = mpsc::unbounded_channel();
        let addr = SocketAddr::from((ip, 5000 + id as u16));
        t.by_id.insert(
            id,
            Flow {
                addr,
                tx,
                queued: Arc::new(AtomicUsize::new(0)),
                close: Arc::new(Notify::new()),
                inbound,
                trusted: Arc::new(AtomicBool::new(trusted)),
            },
        );
        t.by_addr.insert(addr, id);
        let ip = addr.ip();
        if inbound {
            Table::bump(&mut t.per_ip, ip);
            if !trusted {
                Table::bump(&mut t.untrusted_per_ip, ip);
                t.untrusted += 1;
            }
        }
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const C: [u8; 4] = [10, 0, 0, 3];

    #[test]
    fn untrusted_shares_keep_room_for_trusted_flows() {
        let l = limits();
        let mut t = Table::default();
        let ip = |a: [u8; 4]| IpAddr::from(a);
        assert_eq!(t.admit(&l, ip(A), true), Admit::Yes);
        flow(&mut t, 1, A, true, false);
        flow(&mut t, 2, A, true, false);
        // A's untrusted share (2) is full: A is refused, it only hurts itself.
        assert_eq!(t.admit(&l, ip(A), true), Admit::No);
        // B is still welcome; then the overall untrusted share (3) is full:
        // the oldest of the IP holding the most (A) goes for C, not B's.
        assert_eq!(t.admit(&l, ip(B), true), Admit::Yes);
        flow(&mut t, 3, B, true, false);
        assert_eq!(t.admit(&l, ip(C), true), Admit::EvictHeaviest);
        assert_eq!(t.victim(), Some(1));
        let removed = t.remove(1).unwrap();
        assert!(removed.untrusted());
        assert_eq!(t.untrusted, 2);
        // Trusted flows are never victims and leave the untrusted share:
        // A's trusted ones fit beside its untrusted share, up to its cap.
        flow(&mut t, 4, A, true, true);
        flow(&mut t, 5, A, true, true);
        assert_eq!(t.admit(&l, ip(A), true), Admit::Yes);
        flow(&mut t, 6, A, true, false);
        assert_eq!(t.admit(&l, ip(A), true), Admit::No, "A at its cap of 4");
        // The victim is the oldest untrusted of the heaviest IP (A: 2, 6).
        assert_eq!(t.victim(), Some(2));
        t.remove(2);
        t.remove(6);
        // Our own connections are trusted and only bounded overall:
        // 3 open (B untrusted, 2 trusted of A) + 3 fit, then B's goes.
        for id in [7, 8, 9] {
            assert_eq!(t.admit(&l, ip(C), false), Admit::Yes);
            flow(&mut t, id, C, false, true);
        }
        assert_eq!(t.admit(&l, ip(C), false), Admit::EvictHeaviest);
        assert_eq!(t.victim(), Some(3));
        t.remove(3);
        flow(&mut t, 10, C, false, true);
        // Everything trusted and the table full: refused.
        assert_eq!(t.untrusted, 0);
        assert_eq!(t.victim(), None);
        assert_eq!(t.admit(&l, ip(B), true), Admit::No);
        assert_eq!(t.admit(&l, ip(C), false), Admit::No);
        // Counts stay consistent through removals.
        for id in [4, 5, 7, 8, 9, 10] {
            assert!(t.remove(id).is_some());
        }
        assert!(t.by_id.is_empty() && t.by_addr.is_empty());
        assert!(t.per_ip.is_empty() && t.untrusted_per_ip.is_empty());
        assert_eq!(t.untrusted, 0);
    }
}
