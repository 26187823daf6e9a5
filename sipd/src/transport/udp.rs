//! UDP: one socket per listen address; several receive tasks per socket so
//! that both cores take packets; sends are non-blocking.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::{canonical, Peer, Sink, Transport};

/// Largest datagram we accept (also the SIP parser's message limit).
pub const MAX_DATAGRAM: usize = 65_535;

pub struct Udp {
    sockets: Vec<Arc<UdpSocket>>,
    /// Datagrams we could not send (socket buffer full, unreachable…).
    pub send_errors: AtomicU64,
}

impl Udp {
    /// Bind one socket per address. IPv6 sockets are v6-only so that an IPv4
    /// and an IPv6 address on the same port can both be bound.
    pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Udp> {
        let mut sockets = Vec::new();
        for &addr in addrs {
            let sock = socket2_bind(addr)?;
            sockets.push(Arc::new(UdpSocket::from_std(sock)?));
        }
        Ok(Udp {
            sockets,
            send_errors: AtomicU64::new(0),
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Start `per_socket` receive loops on each socket.
    pub fn spawn_receivers(&self, sink: Arc<dyn Sink>, per_socket: usize) {
        for sock in &self.sockets {
            for _ in 0..per_socket.max(1) {
                let sock = sock.clone();
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
                    loop {
                        match sock.recv_from(&mut buf).await {
                            Ok((n, from)) => {
                                let peer = Peer {
                                    transport: Transport::Udp,
                                    addr: canonical(from),
                                    flow: None,
                                };
                                sink.on_message(
                                    &buf[..n.min(MAX_DATAGRAM)],
                                    peer,
                                    n > MAX_DATAGRAM,
                                );
                            }
                            // ICMP port unreachable from an earlier send shows
                            // up here on Linux: not an error of this socket.
                            Err(e) => tracing::debug!("udp recv: {e}"),
                        }
                    }
                });
            }
        }
    }

    /// Send one datagram from the socket of the destination's address family.
    pub fn send(&self, to: SocketAddr, data: &[u8]) {
        let sock = self
            .sockets
            .iter()
            .find(|s| {
                s.local_addr()
                    .map(|l| l.is_ipv4() == to.is_ipv4())
                    .unwrap_or(false)
            })
            .or_else(|| self.sockets.first());
        let Some(sock) = sock else { return };
        let to = match (sock.local_addr(), to) {
            // An IPv6 socket reaching an IPv4 peer needs the mapped form.
            (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => to,
        };
        if let Err(e) = sock.try_send_to(data, to) {
            self.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("udp send to {to}: {e}");
        }
    }
}

fn socket2_bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Bigger buffers absorb bursts (REGISTER floods, benchmark load); the
    // kernel caps them at net.core.{r,w}mem_max, which is fine.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&addr.into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Udp>();
}
