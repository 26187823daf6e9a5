//! TCP and TLS: a listener per address; per connection one task that
//! reads (framing by Content-Length) and writes (queue bounded in bytes,
//! writes with a timeout) on the whole stream, and between messages holds
//! no read buffer (an idle connection costs its socket, its TLS session
//! and that task). One `Tcp` serves one transport: plain TCP, or
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
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
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

/// Bytes read at a time, into a chunk on the stack (a TLS record's
/// plaintext at most).
const READ_CHUNK: usize = 16 * 1024;

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

/// A flow just entered into the table: what the task driving it needs.
pub(super) struct Registered {
    pub id: FlowId,
    pub shared: Arc<FlowShared>,
}

/// What a flow's entry in the table and the task driving it share: the
/// messages queued for the peer, the close signal and the trust. One small
/// allocation per flow (a channel would cost a block of 32 slots, about
/// 1.3 KiB per connection, idle or not).
pub(super) struct FlowShared {
    queue: Mutex<OutQueue>,
    /// Bytes queued for the peer and not written yet (the table's bound).
    queued: AtomicUsize,
    /// Notified when the flow must close (queue full, evicted); WebSocket
    /// readers wait for it. TCP/TLS flows see `OutQueue::closed`.
    close: Notify,
    /// Read by the flow's task for its deadline; changed under the table
    /// lock only (with the untrusted counts).
    trusted: AtomicBool,
}

#[derive(Default)]
struct OutQueue {
    msgs: std::collections::VecDeque<Vec<u8>>,
    closed: bool,
    /// The task to wake when a message comes or the flow must close.
    waker: Option<Waker>,
}

impl FlowShared {
    fn new(trusted: bool) -> FlowShared {
        FlowShared {
            queue: Mutex::new(OutQueue::default()),
            queued: AtomicUsize::new(0),
            close: Notify::new(),
            trusted: AtomicBool::new(trusted),
        }
    }

    pub(super) fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Relaxed)
    }

    /// Queue a message; false once the flow is closing.
    fn push(&self, data: Vec<u8>) -> bool {
        let len = data.len();
        let waker = {
            let mut q = crate::lock(&self.queue);
            if q.closed {
                return false;
            }
            q.msgs.push_back(data);
            q.waker.take()
        };
        self.queued.fetch_add(len, Ordering::Relaxed);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// The flow must close: its task ends, what is queued is dropped.
    pub(super) fn close(&self) {
        let waker = {
            let mut q = crate::lock(&self.queue);
            q.closed = true;
            q.msgs = Default::default();
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        self.close.notify_one();
    }

    /// The next message to write; `None` when the flow must close.
    pub(super) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        let mut q = crate::lock(&self.queue);
        if q.closed {
            return Poll::Ready(None);
        }
        match q.msgs.pop_front() {
            Some(data) => {
                if q.msgs.is_empty() {
                    // No slots kept while idle.
                    q.msgs = Default::default();
                }
                Poll::Ready(Some(data))
            }
            None => {
                if !q.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    q.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// The next message to write; `None` when the flow must close.
    pub(super) async fn next(&self) -> Option<Vec<u8>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// `len` bytes of the queue are written (or handed to the socket).
    pub(super) fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
    }
}

/// The task driving one TCP or TLS flow ([`Tcp::poll_flow`]). A future
/// written by hand so that its state is held once: an `async fn` keeps the
/// argument and the local it moves into side by side (3 KiB a connection
/// instead of 1.5 with a TLS session).
struct FlowTask<S> {
    tcp: Arc<Tcp>,
    io: FlowIo<S>,
    /// The earliest deadline of the flow (read, write, close).
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<S: Stream> Future for FlowTask<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        std::task::ready!(this.tcp.poll_flow(cx, &mut this.io, this.sleep.as_mut()));
        // The task ends: dropping it (and the stream) closes the socket.
        this.tcp.forget(this.io.id);
        Poll::Ready(())
    }
}

/// What a [`FlowTask`] holds besides its timer.
struct FlowIo<S> {
    id: FlowId,
    peer: Peer,
    stream: S,
    shared: Arc<FlowShared>,
    st: ReadState,
    /// The start of a message not complete yet; empty (no allocation)
    /// between messages.
    buf: Vec<u8>,
    /// The message being written and how much of it is written.
    out: Option<(Vec<u8>, usize)>,
    /// Written since the last flush.
    flush: bool,
    /// The write in progress must be done by then.
    write_by: Option<Instant>,
    /// After a framing error: reads stop, the flow closes then.
    closing: Option<Instant>,
}

struct Flow {
    addr: SocketAddr,
    shared: Arc<FlowShared>,
    inbound: bool,
}

impl Flow {
    fn untrusted(&self) -> bool {
        self.inbound && !self.shared.trusted()
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
        if flow.shared.trusted() {
            return;
        }
        flow.shared.trusted.store(true, Ordering::Relaxed);
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

    /// Register a connected stream and start the one task that drives it
    /// ([`FlowTask`]): reads, framing and writes on the whole stream, no
    /// split into halves (a second task and a lock between them).
    fn adopt<S: Stream>(
        self: Arc<Self>,
        stream: S,
        addr: SocketAddr,
        local: SocketAddr,
        inbound: bool,
    ) -> Option<FlowId> {
        let Registered { id, shared } = self.register(addr, inbound)?;
        let opened = Instant::now();
        let flow = FlowIo {
            id,
            peer: Peer {
                transport: self.kind,
                addr,
                flow: Some(id),
                local: Some(local),
            },
            stream,
            st: ReadState {
                opened,
                last_read: opened,
                last_message: None,
                partial_since: None,
                trusted: shared.trusted(),
            },
            shared,
            buf: Vec::new(),
            out: None,
            flush: false,
            write_by: None,
            closing: None,
        };
        let (at, _) = deadline(&self.limits, &flow.st);
        let task = FlowTask {
            tcp: self.clone(),
            io: flow,
            sleep: Box::pin(tokio::time::sleep_until(at)),
        };
        self.runtime.spawn(task);
        Some(id)
    }

    /// Run a WebSocket flow's writer and reader (two tasks: tungstenite's
    /// sink and stream halves): the reader's end (or a close: write failed,
    /// queue full, evicted) ends the writer too, which drops its half and
    /// so closes the socket; the flow leaves the table.
    pub(super) fn run_flow<W, R>(
        self: &Arc<Self>,
        id: FlowId,
        addr: SocketAddr,
        shared: Arc<FlowShared>,
        writer: W,
        reader: R,
    ) where
        W: Future<Output = ()> + Send + 'static,
        R: Future<Output = ()> + Send + 'static,
    {
        let me = self.clone();
        let writer_shared = shared.clone();
        let stop = Arc::new(Notify::new());
        let writer_stop = stop.clone();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = writer => {}
                _ = writer_stop.notified() => {}
            }
            // A failed or stuck write ends the connection.
            writer_shared.close();
        });
        let kind = self.kind.name();
        self.runtime.spawn(async move {
            tokio::select! {
                _ = reader => {}
                _ = shared.close.notified() => tracing::debug!("{kind} {addr}: closed (write failed, queue full or evicted)"),
            }
            me.forget(id);
            stop.notify_one();
        });
    }

    /// Admit a new connection into the table (evicting an untrusted one
    /// if that is what makes room); `None` when refused.
    pub(super) fn register(&self, addr: SocketAddr, inbound: bool) -> Option<Registered> {
        let id = next_flow_id();
        // Connections we open are to addresses the core chose: trusted.
        let shared = Arc::new(FlowShared::new(!inbound));
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
                v.shared.close();
            }
            t.by_id.insert(
                id,
                Flow {
                    addr,
                    shared: shared.clone(),
                    inbound,
                },
            );
            t.by_addr.insert(addr, id);
            if inbound {
                Table::bump(&mut t.per_ip, ip);
                Table::bump(&mut t.untrusted_per_ip, ip);
                t.untrusted += 1;
            }
        }
        Some(Registered { id, shared })
    }

    pub(super) fn forget(&self, id: FlowId) {
        crate::lock(&self.table).remove(id);
    }

    /// One turn of a [`FlowTask`]: read and frame what arrives, hand each
    /// message to the sink, write what is queued (each message within
    /// `write_timeout`), until neither the stream, the queue nor the timer
    /// can make progress; `Ready` when the flow ends (closed by the peer,
    /// an error, the [`deadline`] of its [`ReadState`], or a close).
    fn poll_flow<S: Stream>(
        &self,
        cx: &mut Context<'_>,
        f: &mut FlowIo<S>,
        mut sleep: Pin<&mut tokio::time::Sleep>,
    ) -> Poll<()> {
        let addr = f.peer.addr;
        loop {
            // Writes first: a queued answer goes out before more is read.
            loop {
                if let Some((data, done)) = &mut f.out {
                    match Pin::new(&mut f.stream).poll_write(cx, &data[*done..]) {
                        Poll::Ready(Ok(0)) => {
                            tracing::debug!("tcp write {addr}: connection closed");
                            return Poll::Ready(());
                        }
                        Poll::Ready(Ok(n)) => {
                            *done += n;
                            if *done == data.len() {
                                f.shared.written(data.len());
                                f.out = None;
                                f.flush = true;
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::debug!("tcp write {addr}: {e}");
                            return Poll::Ready(());
                        }
                        Poll::Pending => break,
                    }
                } else if let Poll::Ready(next) = f.shared.poll_next(cx) {
                    let Some(data) = next else {
                        tracing::debug!(
                            "{} {addr}: closed (queue full or evicted)",
                            self.kind.name()
                        );
                        return Poll::Ready(());
                    };
                    f.write_by = Some(Instant::now() + self.limits.write_timeout);
                    f.out = Some((data, 0));
                } else if f.flush {
                    // TLS buffers inside the session: push the records out.
                    match Pin::new(&mut f.stream).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {
                            f.flush = false;
                            f.write_by = None;
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::debug!("tcp write {addr}: {e}");
                            return Poll::Ready(());
                        }
                        Poll::Pending => break,
                    }
                } else {
                    break;
                }
            }
            let mut progress = false;
            if f.closing.is_none() {
                // Read into a chunk on the stack, not into a buffer the
                // flow keeps: an idle connection holds no read buffer.
                let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut rb = ReadBuf::uninit(&mut chunk);
                match Pin::new(&mut f.stream).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(()),
                    Poll::Ready(Ok(())) => {
                        self.received(f, rb.filled());
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!("tcp {addr}: {e}");
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            }
            // The earliest of the read deadline, the write in progress and
            // the close after a framing error.
            f.st.trusted = f.shared.trusted();
            let (read_at, why) = deadline(&self.limits, &f.st);
            let at = [Some(read_at), f.write_by, f.closing]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(read_at);
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                if f.closing.is_some_and(|c| c <= at) {
                    return Poll::Ready(());
                }
                if f.write_by.is_some_and(|w| w <= at) {
                    tracing::debug!("tcp write {addr}: timed out");
                    return Poll::Ready(());
                }
                tracing::debug!("tcp {addr}: {why:?} timeout, closing");
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Bytes read from flow `f`: frame them (straight from `data` when no
    /// partial message is buffered), hand complete messages to the sink,
    /// keep the rest. The buffer is freed once it is empty.
    fn received<S>(&self, f: &mut FlowIo<S>, data: &[u8]) {
        let now = Instant::now();
        f.st.last_read = now;
        let (used, framed) = if f.buf.is_empty() {
            let (used, framed) = self.frame(f, data, now);
            if framed.is_ok() {
                f.buf.extend_from_slice(&data[used..]);
            }
            (0, framed)
        } else {
            f.buf.extend_from_slice(data);
            let buf = std::mem::take(&mut f.buf);
            let (used, framed) = self.frame(f, &buf, now);
            f.buf = buf;
            (used, framed)
        };
        let completed = match framed {
            Ok(completed) => completed,
            Err(()) => {
                // The stream cannot be resynchronised: what we had went to
                // the sink (it answers 400 if it can); close once the
                // answer is written.
                f.closing = Some(now + Duration::from_millis(100));
                f.buf = Vec::new();
                return;
            }
        };
        f.buf.drain(..used);
        if f.buf.is_empty() {
            f.buf = Vec::new();
        } else if f.buf.capacity() > 4 * READ_CHUNK && f.buf.len() < READ_CHUNK {
            // A large message or a burst came and went: do not keep its
            // buffer for the start of the next one.
            f.buf.shrink_to_fit();
        }
        // What is left is the start of the next message: its clock starts
        // now (or kept running when nothing completed).
        f.st.partial_since = match (f.buf.is_empty(), completed) {
            (true, _) => None,
            (false, true) => Some(now),
            (false, false) => f.st.partial_since.or(Some(now)),
        };
    }

    /// Hand the complete messages at the start of `data` to the sink and
    /// answer keep-alives: how many bytes were used, and whether a message
    /// completed; `Err` after a framing error (what there was went to the
    /// sink as oversized).
    fn frame<S>(&self, f: &mut FlowIo<S>, data: &[u8], now: Instant) -> (usize, Result<bool, ()>) {
        let limits = Limits::default();
        let mut used = 0;
        let mut completed = false;
        loop {
            let rest = &data[used..];
            match frame_stream(rest, &limits) {
                Ok(StreamFrame::Incomplete) => return (used, Ok(completed)),
                Ok(StreamFrame::KeepAlive(k)) => {
                    // RFC 5626 §4.4.1: answer a double-CRLF ping with a CRLF pong.
                    if rest[..k].windows(4).any(|w| w == b"\r\n\r\n") {
                        self.queue(f.id, b"\r\n".to_vec());
                    }
                    used += k;
                }
                Ok(StreamFrame::Message(len)) => {
                    completed = true;
                    f.st.last_message = Some(now);
                    if let Some(sink) = self.sink.get() {
                        sink.on_message(&rest[..len], f.peer, false);
                    }
                    used += len;
                }
                Err(e) => {
                    tracing::debug!("tcp {}: framing error {e}, closing", f.peer.addr);
                    if let Some(sink) = self.sink.get() {
                        let end = rest.len().min(limits.max_message);
                        sink.on_message(&rest[..end], f.peer, true);
                    }
                    return (used, Err(()));
                }
            }
        }
    }

    /// Queue bytes on a flow; a peer that does not read loses its connection.
    pub(super) fn queue(&self, id: FlowId, data: Vec<u8>) -> bool {
        let t = crate::lock(&self.table);
        let Some(flow) = t.by_id.get(&id) else {
            return false;
        };
        let queued = flow.shared.queued.load(Ordering::Relaxed);
        if queued + data.len() > self.limits.max_queued_bytes {
            tracing::warn!(
                "tcp {}: {queued} bytes queued, peer not reading: closing",
                flow.addr
            );
            flow.shared.close();
            return false;
        }
        flow.shared.push(data)
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
        let addr = SocketAddr::from((ip, 5000 + id as u16));
        t.by_id.insert(
            id,
            Flow {
                addr,
                shared: Arc::new(FlowShared::new(trusted)),
                inbound,
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
