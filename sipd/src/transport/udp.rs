//! UDP: one socket per listen address, read by dedicated threads (not the
//! async runtime) with `recvmmsg`, so that under load a whole batch of
//! datagrams costs one system call and one turn of the core's lock; sends
//! never block (`MSG_DONTWAIT`; batches go out with `sendmmsg`).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{canonical, Out, Peer, Sink, Transport};

/// Largest datagram we accept (also the SIP parser's message limit).
pub const MAX_DATAGRAM: usize = 65_535;
/// Datagrams taken per `recvmmsg` / sent per `sendmmsg`.
pub const BATCH: usize = 32;
/// A reader thread that read nothing for this long tells the sink
/// ([`Sink::on_idle`]) when it had traffic since it last did so, and at
/// least every [`IDLE_EVERY`] such periods.
pub const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
pub const IDLE_EVERY: u32 = 10;

pub struct Udp {
    /// Each socket with its bound address (asked once: `getsockname` per
    /// datagram sent cost 3 % of sipd's CPU under REGISTER load).
    sockets: Vec<(Arc<UdpSocket>, SocketAddr)>,
    /// Datagrams we could not send (socket buffer full, unreachable…).
    pub send_errors: AtomicU64,
}

/// One received datagram (or one framed TCP message) handed to the sink.
pub struct Datagram<'a> {
    pub data: &'a [u8],
    pub peer: Peer,
    /// Larger than [`MAX_DATAGRAM`] (truncated).
    pub oversized: bool,
}

impl Udp {
    /// Bind one socket per address. IPv6 sockets are v6-only so that an IPv4
    /// and an IPv6 address on the same port can both be bound.
    pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Udp> {
        let mut sockets = Vec::new();
        for &addr in addrs {
            let sock = bind(addr)?;
            let local = sock.local_addr()?;
            sockets.push((Arc::new(sock), local));
        }
        Ok(Udp {
            sockets,
            send_errors: AtomicU64::new(0),
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(_, local)| *local).collect()
    }

    /// Start `per_socket` receiving threads on each socket.
    pub fn spawn_receivers(&self, sink: Arc<dyn Sink>, per_socket: usize) -> io::Result<()> {
        for (sock, local) in &self.sockets {
            for i in 0..per_socket.max(1) {
                let sock = sock.clone();
                let sink = sink.clone();
                let local = *local;
                let name = format!("sipd-udp-{i}");
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || receive_loop(&sock, local, &*sink))?;
            }
        }
        Ok(())
    }

    /// The socket a message to `dest` leaves from: the one it names
    /// ([`Peer::local`], where its request came in), else the first of the
    /// destination's address family.
    fn socket_for(&self, dest: &Peer) -> Option<&(Arc<UdpSocket>, SocketAddr)> {
        if let Some(l) = dest.local {
            if let Some(s) = self.sockets.iter().find(|(_, local)| *local == l) {
                return Some(s);
            }
        }
        self.sockets
            .iter()
            .find(|(_, local)| local.is_ipv4() == dest.addr.is_ipv4())
            .or_else(|| self.sockets.first())
    }

    /// Send one datagram to `dest` (from the socket [`Udp::socket_for`] picks).
    pub fn send(&self, dest: &Peer, data: &[u8]) {
        let to = dest.addr;
        let Some((sock, local)) = self.socket_for(dest) else {
            return;
        };
        let to = mapped_for(local, to);
        let (addr, len) = sockaddr(to);
        // SAFETY: valid fd, buffer and sockaddr of `len` bytes.
        let rc = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                (&addr as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if rc < 0 {
            self.send_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("udp send to {to}: {}", io::Error::last_os_error());
        }
    }

    /// Send several datagrams; those to one socket go out in `sendmmsg` batches.
    pub fn send_many(&self, outs: &[&Out]) {
        if outs.len() == 1 {
            self.send(&outs[0].dest, &outs[0].data);
            return;
        }
        for (sock, local) in &self.sockets {
            let mine: Vec<&&Out> = outs
                .iter()
                .filter(|o| {
                    self.socket_for(&o.dest)
                        .is_some_and(|(s, _)| Arc::ptr_eq(s, sock))
                })
                .collect();
            for chunk in mine.chunks(BATCH) {
                let addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> = chunk
                    .iter()
                    .map(|o| sockaddr(mapped_for(local, o.dest.addr)))
                    .collect();
                let mut iovs: Vec<libc::iovec> = chunk
                    .iter()
                    .map(|o| libc::iovec {
                        iov_base: o.data.as_ptr() as *mut _,
                        iov_len: o.data.len(),
                    })
                    .collect();
                // SAFETY: mmsghdr is plain old data; zeroed is a valid start.
                let mut msgs: Vec<libc::mmsghdr> = (0..chunk.len())
                    .map(|_| unsafe { std::mem::zeroed() })
                    .collect();
                for (i, m) in msgs.iter_mut().enumerate() {
                    m.msg_hdr.msg_name = (&addrs[i].0 as *const libc::sockaddr_storage) as *mut _;
                    m.msg_hdr.msg_namelen = addrs[i].1;
                    m.msg_hdr.msg_iov = &mut iovs[i];
                    m.msg_hdr.msg_iovlen = 1;
                }
                let mut sent = 0usize;
                while sent < msgs.len() {
                    // SAFETY: the headers point into `addrs` and `iovs`, alive here.
                    let rc = unsafe {
                        libc::sendmmsg(
                            sock.as_raw_fd(),
                            msgs[sent..].as_mut_ptr(),
                            (msgs.len() - sent) as libc::c_uint,
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    };
                    if rc <= 0 {
                        // Skip the datagram that failed (unreachable, buffer full).
                        self.send_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("udp sendmmsg: {}", io::Error::last_os_error());
                        sent += 1;
                    } else {
                        sent += rc as usize;
                    }
                }
            }
        }
    }
}

/// An IPv6 socket (bound to `local`) reaching an IPv4 peer needs the mapped form.
fn mapped_for(local: &SocketAddr, to: SocketAddr) -> SocketAddr {
    match (local, to) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => to,
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
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
    Ok(sock.into())
}

/// Blocking receive loop of one thread: a batch per `recvmmsg`.
fn receive_loop(sock: &UdpSocket, local: SocketAddr, sink: &dyn Sink) {
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM + 1]).collect();
    // SAFETY: sockaddr_storage is plain old data.
    let mut names: Vec<libc::sockaddr_storage> =
        (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    // Wake up when idle (recvmmsg then fails with EAGAIN).
    if let Err(e) = sock.set_read_timeout(Some(IDLE_AFTER)) {
        tracing::debug!("udp: no read timeout: {e}");
    }
    let mut busy = false;
    let mut quiet = 0u32;
    loop {
        for i in 0..BATCH {
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            msgs[i].msg_len = 0;
        }
        // SAFETY: every header points at a live buffer and address slot.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                quiet += 1;
                if busy || quiet >= IDLE_EVERY {
                    busy = false;
                    quiet = 0;
                    sink.on_idle();
                }
            } else if e.kind() != io::ErrorKind::Interrupted {
                // ICMP errors from earlier sends show up here: not fatal.
                tracing::debug!("udp recv: {e}");
            }
            continue;
        }
        busy = true;
        let mut batch = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let Some(from) = from_sockaddr(&names[i]) else {
                continue;
            };
            let len = msgs[i].msg_len as usize;
            let oversized = len > MAX_DATAGRAM || msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            batch.push(Datagram {
                data: &bufs[i][..len.min(MAX_DATAGRAM)],
                peer: Peer {
                    transport: Transport::Udp,
                    addr: canonical(from),
                    flow: None,
                    local: Some(local),
                },
                oversized,
            });
        }
        sink.on_datagrams(&batch);
    }
}

/// A `SocketAddr` as a C sockaddr.
pub(crate) fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let s: socket2::SockAddr = addr.into();
    // SAFETY: SockAddr holds a valid sockaddr of `len` bytes, which fits
    // in sockaddr_storage.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        std::ptr::copy_nonoverlapping(
            s.as_ptr().cast::<u8>(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            s.len() as usize,
        );
        (storage, s.len())
    }
}

pub(crate) fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:5060", "[::1]:5070", "[fe80::1%2]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            let (s, _) = sockaddr(a);
            assert_eq!(from_sockaddr(&s), Some(a));
        }
    }
}
