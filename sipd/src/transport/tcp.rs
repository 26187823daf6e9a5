//! TCP: a listener per address; per connection a reader task (framing by
//! Content-Length) and a writer task (queue bounded in bytes, writes with a
//! timeout). Connections ("flows") are kept in a table by id and by remote
//! address so that requests to a client registered over TCP go back over its
//! own connection. The table is bounded overall and per remote IP; a
//! connection must deliver a first message within a fixed time after it is
//! opened, and idle ones are closed.
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{canonical, FlowId, IfClosed, Out, Peer, Sink, Transport};
use crate::sip::{frame_stream, Limits, StreamFrame};

/// Bounds on what TCP peers can make us hold.
#[derive(Clone, Debug)]
pub struct TcpLimits {
    pub max_connections: usize,
    /// Accepted connections from one IP address.
    pub max_per_ip: usize,
    /// A connection that has not sent a complete message this long after
    /// it was opened is closed (keep-alives do not count).
    pub first_message_timeout: Duration,
    /// A connection from which nothing was read for this long is closed.
    pub idle_timeout: Duration,
    /// Bytes queued for a peer that does not read; beyond them the
    /// connection is closed.
    pub max_queued_bytes: usize,
    /// One write may take this long; then the connection is closed.
    pub write_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            max_per_ip: 128,
            first_message_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(2 * 3600 + 300),
            max_queued_bytes: 256 * 1024,
            write_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

struct Flow {
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    close: Arc<Notify>,
    inbound: bool,
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
    per_ip: HashMap<IpAddr, usize>,
    connecting: HashMap<SocketAddr, Connecting>,
}

pub struct Tcp {
    listeners: Mutex<Vec<TcpListener>>,
    local: Vec<SocketAddr>,
    /// Where every task of this transport runs, whichever thread sends.
    runtime: tokio::runtime::Handle,
    table: Mutex<Table>,
    next_id: AtomicU64,
    sink: OnceLock<Arc<dyn Sink>>,
    limits: TcpLimits,
    /// Connections refused because a table limit was reached.
    pub refused: AtomicU64,
}

impl Tcp {
    pub async fn bind(addrs: &[SocketAddr], limits: TcpLimits) -> io::Result<Tcp> {
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
            listeners: Mutex::new(listeners),
            local,
            runtime: tokio::runtime::Handle::current(),
            table: Mutex::new(Table::default()),
            next_id: AtomicU64::new(1),
            sink: OnceLock::new(),
            limits,
            refused: AtomicU64::new(0),
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local.clone()
    }

    pub fn connections(&self) -> usize {
        crate::lock(&self.table).by_id.len()
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
                            me.clone().adopt(stream, canonical(from), local, true);
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

    /// Register a connected stream and start its reader and writer.
    fn adopt(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        local: SocketAddr,
        inbound: bool,
    ) -> Option<FlowId> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(Notify::new());
        {
            let mut t = crate::lock(&self.table);
            let from_ip = t.per_ip.get(&addr.ip()).copied().unwrap_or(0);
            if t.by_id.len() >= self.limits.max_connections
                || (inbound && from_ip >= self.limits.max_per_ip)
            {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "tcp: refusing {addr}: {} connections open, {from_ip} from its address",
                    t.by_id.len()
                );
                return None;
            }
            t.by_id.insert(
                id,
                Flow {
                    addr,
                    tx,
                    queued: queued.clone(),
                    close: close.clone(),
                    inbound,
                },
            );
            t.by_addr.insert(addr, id);
            if inbound {
                *t.per_ip.entry(addr.ip()).or_insert(0) += 1;
            }
        }
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let me = self.clone();
        let writer_close = close.clone();
        // The reader tells the writer to stop (and drop its half, which
        // closes the socket) when the connection ends for any reason.
        let stop = Arc::new(Notify::new());
        let writer_stop = stop.clone();
        let write_timeout = self.limits.write_timeout;
        self.runtime.spawn(async move {
            tokio::select! {
                _ = write_loop(writer, rx, queued, write_timeout) => {}
                _ = writer_stop.notified() => {}
            }
            // A failed or stuck write ends the connection.
            writer_close.notify_one();
        });
        self.runtime.spawn(async move {
            tokio::select! {
                _ = me.read_loop(id, addr, local, reader) => {}
                _ = close.notified() => tracing::debug!("tcp {addr}: closed (write failed or queue full)"),
            }
            me.forget(id, addr);
            stop.notify_one();
        });
        Some(id)
    }

    fn forget(&self, id: FlowId, addr: SocketAddr) {
        let mut t = crate::lock(&self.table);
        if let Some(flow) = t.by_id.remove(&id) {
            if flow.inbound {
                if let Some(n) = t.per_ip.get_mut(&addr.ip()) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        t.per_ip.remove(&addr.ip());
                    }
                }
            }
        }
        if t.by_addr.get(&addr) == Some(&id) {
            t.by_addr.remove(&addr);
        }
    }

    async fn read_loop(
        &self,
        id: FlowId,
        addr: SocketAddr,
        local: SocketAddr,
        mut reader: OwnedReadHalf,
    ) {
        let limits = Limits::default();
        let peer = Peer {
            transport: Transport::Tcp,
            addr,
            flow: Some(id),
            local: Some(local),
        };
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        let first_deadline = Instant::now() + self.limits.first_message_timeout;
        let mut seen_message = false;
        loop {
            let deadline = if seen_message {
                Instant::now() + self.limits.idle_timeout
            } else {
                first_deadline
            };
            let n = match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
                Err(_) => {
                    tracing::debug!("tcp {addr}: no message in time, closing");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!("tcp {addr}: {e}");
                    return;
                }
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
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
                        seen_message = true;
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
        }
    }

    /// Queue bytes on a flow; a peer that does not read loses its connection.
    fn queue(&self, id: FlowId, data: Vec<u8>) -> bool {
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
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!("tcp connect {}: {e}", dest.addr);
                None
            }
            Err(_) => {
                tracing::debug!("tcp connect {}: timeout", dest.addr);
                None
            }
        };
        let id = stream.and_then(|s| {
            let local = local.unwrap_or(dest.addr);
            self.clone().adopt(s, dest.addr, local, false)
        });
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

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    timeout: Duration,
) {
    while let Some(data) = rx.recv().await {
        let len = data.len();
        let r = tokio::time::timeout(timeout, writer.write_all(&data)).await;
        queued.fetch_sub(len, Ordering::Relaxed);
        match r {
            Ok(Ok(())) => {}
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
