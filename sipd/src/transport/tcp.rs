//! TCP: a listener per address, one reader and one writer task per
//! connection, messages framed by Content-Length. Connections ("flows") are
//! kept in a table by id and by remote address so that requests to a client
//! registered over TCP go back over its own connection. The table is bounded
//! and idle connections are closed.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{canonical, FlowId, Peer, Sink, Transport};
use crate::sip::{frame_stream, Limits, StreamFrame};

/// Bounds on what TCP peers can make us hold.
#[derive(Clone, Debug)]
pub struct TcpLimits {
    pub max_connections: usize,
    /// A connection that has not sent a complete message within this time is closed.
    pub first_message_timeout: Duration,
    /// A connection idle (nothing read or written) for this long is closed.
    pub idle_timeout: Duration,
    /// Messages queued for a peer that does not read; beyond it the connection is closed.
    pub max_queued: usize,
    pub connect_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            first_message_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(2 * 3600 + 300),
            max_queued: 1024,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

struct Flow {
    addr: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<FlowId, Flow>,
    by_addr: HashMap<SocketAddr, FlowId>,
}

pub struct Tcp {
    listeners: Mutex<Vec<TcpListener>>,
    local: Vec<SocketAddr>,
    table: Mutex<Table>,
    next_id: AtomicU64,
    sink: OnceLock<Arc<dyn Sink>>,
    limits: TcpLimits,
    /// Connections refused because the table was full.
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
        self.table.lock().unwrap().by_id.len()
    }

    /// Start accepting; received messages go to `sink`.
    pub fn start(self: &Arc<Self>, sink: Arc<dyn Sink>) {
        let _ = self.sink.set(sink);
        let listeners = std::mem::take(&mut *self.listeners.lock().unwrap());
        for l in listeners {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, from)) => {
                            me.clone().adopt(stream, canonical(from));
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
    ) -> Option<(FlowId, mpsc::Sender<Vec<u8>>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(self.limits.max_queued);
        {
            let mut t = self.table.lock().unwrap();
            if t.by_id.len() >= self.limits.max_connections {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("tcp: refusing {addr}: {} connections open", t.by_id.len());
                return None;
            }
            t.by_id.insert(
                id,
                Flow {
                    addr,
                    tx: tx.clone(),
                },
            );
            t.by_addr.insert(addr, id);
        }
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let me = self.clone();
        tokio::spawn(async move {
            me.run(id, addr, reader, writer, rx).await;
            me.forget(id, addr);
        });
        Some((id, tx))
    }

    fn forget(&self, id: FlowId, addr: SocketAddr) {
        let mut t = self.table.lock().unwrap();
        t.by_id.remove(&id);
        if t.by_addr.get(&addr) == Some(&id) {
            t.by_addr.remove(&addr);
        }
    }

    async fn run(
        &self,
        id: FlowId,
        addr: SocketAddr,
        mut reader: tokio::net::tcp::OwnedReadHalf,
        mut writer: tokio::net::tcp::OwnedWriteHalf,
        mut rx: mpsc::Receiver<Vec<u8>>,
    ) {
        let limits = Limits::default();
        let peer = Peer {
            transport: Transport::Tcp,
            addr,
            flow: Some(id),
        };
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 16 * 1024];
        let mut seen_message = false;
        loop {
            let timeout = if seen_message {
                self.limits.idle_timeout
            } else {
                self.limits.first_message_timeout
            };
            tokio::select! {
                r = tokio::time::timeout(timeout, reader.read(&mut chunk)) => {
                    let n = match r {
                        Err(_) => { tracing::debug!("tcp {addr}: idle, closing"); return; }
                        Ok(Err(e)) => { tracing::debug!("tcp {addr}: {e}"); return; }
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
                                if ping && writer.write_all(b"\r\n").await.is_err() {
                                    return;
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
                                // have to the sink (it answers 400 if it can), close.
                                tracing::debug!("tcp {addr}: framing error {e}, closing");
                                if let Some(sink) = self.sink.get() {
                                    let end = buf.len().min(limits.max_message);
                                    sink.on_message(&buf[..end], peer, true);
                                }
                                // Let the writer flush the 400 before closing.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                while let Ok(data) = rx.try_recv() {
                                    let _ = writer.write_all(&data).await;
                                }
                                return;
                            }
                        }
                    }
                }
                msg = rx.recv() => {
                    match msg {
                        Some(data) => {
                            if let Err(e) = writer.write_all(&data).await {
                                tracing::debug!("tcp {addr}: write: {e}");
                                return;
                            }
                        }
                        None => return,
                    }
                }
            }
        }
    }

    /// Queue a message for `dest`: over its flow if still open, else over
    /// any connection to its address, else over a new connection.
    pub fn send(self: &Arc<Self>, dest: Peer, data: Vec<u8>) {
        let tx = {
            let t = self.table.lock().unwrap();
            dest.flow
                .and_then(|id| t.by_id.get(&id))
                .or_else(|| t.by_addr.get(&dest.addr).and_then(|id| t.by_id.get(id)))
                .map(|f| f.tx.clone())
        };
        match tx {
            Some(tx) => {
                if let Err(e) = tx.try_send(data) {
                    // Full queue: the peer does not read. Dropping the
                    // message is what UDP would do; the transaction layer
                    // times out.
                    tracing::debug!("tcp {}: {e}", dest.addr);
                }
            }
            None => {
                let me = self.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        me.limits.connect_timeout,
                        TcpStream::connect(dest.addr),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("tcp connect {}: {e}", dest.addr);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("tcp connect {}: timeout", dest.addr);
                            return;
                        }
                    };
                    if let Some((_, tx)) = me.clone().adopt(stream, dest.addr) {
                        let _ = tx.try_send(data);
                    }
                });
            }
        }
    }

    /// Is this flow still open?
    pub fn is_open(&self, id: FlowId) -> bool {
        self.table.lock().unwrap().by_id.contains_key(&id)
    }

    /// The remote address of a flow.
    pub fn flow_addr(&self, id: FlowId) -> Option<SocketAddr> {
        self.table.lock().unwrap().by_id.get(&id).map(|f| f.addr)
    }
}
