//! The RTP/RTCP relay: UDP sockets per call leg and stream, forwarded on a
//! few threads of their own (never under the SIP core lock), each with an
//! epoll set, `recvmmsg` taking whatever one socket has and `sendmmsg`
//! sending it on from the other leg's socket in one call.
//!
//! Safety rules (no open relay, no injection): a packet is accepted on a
//! leg only from the IP address that leg's signalling came from; the first
//! accepted packet latches the leg (symmetric RTP, comedia: the address it
//! came from is where that leg's media goes from then on) and after that
//! only packets from the latched address pass. Until a leg has latched its
//! media goes to the port its SDP names, at its signalling IP. Everything
//! else is dropped and counted.
//!
//! A session's sockets all live on one thread, so the per-packet state
//! needs no lock; counters shared with `sipctl calls` are atomics.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::MediaOp;
use crate::transport::udp::{from_sockaddr, sockaddr};

/// Packets taken per `recvmmsg` (and sent per `sendmmsg`).
const BATCH: usize = 32;
/// Largest packet relayed; longer ones (truncated) are dropped.
const MAX_PACKET: usize = 2048;
/// epoll token of a worker's wake-up eventfd.
const WAKE: u64 = u64::MAX;
const RTP: usize = 0;
const RTCP: usize = 1;

/// What `sipctl calls` shows of a relayed call (its first stream's
/// latched addresses; counters over every stream).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets and bytes received from each leg (index [`super::CALLER`],
    /// [`super::CALLEE`]) and sent on to the other.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Packets dropped: from a foreign address, before the sender's SDP
    /// was known, or with nowhere to go.
    pub dropped: u64,
    /// Where each leg's RTP comes from (once latched).
    pub latched: [Option<SocketAddr>; 2],
}

/// Counters of one session, shared between its worker and the readers.
#[derive(Default)]
struct Shared {
    /// Milliseconds since the relay started at the last forwarded packet
    /// (or the open, or the answer).
    last_ms: AtomicU64,
    packets: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    dropped: AtomicU64,
    latched: Mutex<[Option<SocketAddr>; 2]>,
}

enum Cmd {
    Add {
        id: u64,
        stream: usize,
        socks: [[UdpSocket; 2]; 2],
        shared: Arc<Shared>,
    },
    Peer {
        id: u64,
        stream: usize,
        leg: usize,
        dest: [SocketAddr; 2],
        allow: IpAddr,
    },
    Remove {
        id: u64,
    },
    Stop,
}

struct Worker {
    queue: Mutex<Vec<Cmd>>,
    wake: OwnedFd,
}

impl Worker {
    fn send(&self, cmd: Cmd) {
        crate::lock(&self.queue).push(cmd);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

/// Relay sessions, each the streams of one call.
pub struct Relay {
    workers: Vec<Arc<Worker>>,
    sessions: Mutex<HashMap<u64, (usize, Arc<Shared>)>>,
    start: Instant,
    /// Packets dropped by every session, closed ones included.
    dropped_total: Arc<AtomicU64>,
    forwarded_total: Arc<AtomicU64>,
    stopped: AtomicBool,
}

/// A port the relay could not bind (someone else holds it).
#[derive(Debug, PartialEq, Eq)]
pub struct BindFailed {
    pub port: u16,
    pub error: String,
}

impl Relay {
    /// Start `threads` forwarding threads (at least one).
    pub fn start(threads: usize) -> io::Result<Arc<Relay>> {
        let start = Instant::now();
        let dropped_total = Arc::new(AtomicU64::new(0));
        let forwarded_total = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for n in 0..threads.max(1) {
            // SAFETY: plain syscalls; the fds are owned right away.
            let (ep, wake) = unsafe {
                let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                if ep < 0 {
                    return Err(io::Error::last_os_error());
                }
                let ep = OwnedFd::from_raw_fd(ep);
                let wake = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
                if wake < 0 {
                    return Err(io::Error::last_os_error());
                }
                (ep, OwnedFd::from_raw_fd(wake))
            };
            add_fd(&ep, wake.as_raw_fd(), WAKE)?;
            let worker = Arc::new(Worker {
                queue: Mutex::new(Vec::new()),
                wake,
            });
            let w = worker.clone();
            let (dropped, forwarded) = (dropped_total.clone(), forwarded_total.clone());
            std::thread::Builder::new()
                .name(format!("sipd-rtp-{n}"))
                .spawn(move || {
                    Loop {
                        ep,
                        worker: w,
                        start,
                        socks: Vec::new(),
                        free: Vec::new(),
                        sessions: HashMap::new(),
                        dropped,
                        forwarded,
                    }
                    .run()
                })?;
            workers.push(worker);
        }
        Ok(Arc::new(Relay {
            workers,
            sessions: Mutex::new(HashMap::new()),
            start,
            dropped_total,
            forwarded_total,
            stopped: AtomicBool::new(false),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Carry out one of the core's media operations.
    pub fn apply(&self, op: &MediaOp) -> Result<(), BindFailed> {
        match *op {
            MediaOp::Open { id, stream, local } => {
                let socks = bind_stream(local)?;
                let (worker, shared) = {
                    let mut s = crate::lock(&self.sessions);
                    let n = self.workers.len();
                    let (worker, shared) = s.entry(id).or_insert_with(|| {
                        let shared = Arc::new(Shared::default());
                        shared.last_ms.store(self.now_ms(), Relaxed);
                        ((id as usize) % n, shared)
                    });
                    (*worker, shared.clone())
                };
                self.workers[worker].send(Cmd::Add {
                    id,
                    stream,
                    socks,
                    shared,
                });
            }
            MediaOp::Peer {
                id,
                stream,
                leg,
                rtp,
                rtcp,
                allow,
            } => {
                if let Some((worker, _)) = crate::lock(&self.sessions).get(&id) {
                    self.workers[*worker].send(Cmd::Peer {
                        id,
                        stream,
                        leg: leg.min(1),
                        dest: [rtp, rtcp],
                        allow,
                    });
                }
            }
            MediaOp::Touch { id } => {
                if let Some((_, shared)) = crate::lock(&self.sessions).get(&id) {
                    shared.last_ms.store(self.now_ms(), Relaxed);
                }
            }
            MediaOp::Close { id } => {
                if let Some((worker, _)) = crate::lock(&self.sessions).remove(&id) {
                    self.workers[worker].send(Cmd::Remove { id });
                }
            }
        }
        Ok(())
    }

    /// The counters of session `id`.
    pub fn stats(&self, id: u64) -> Option<Stats> {
        let sh = crate::lock(&self.sessions).get(&id)?.1.clone();
        let latched = *crate::lock(&sh.latched);
        Some(Stats {
            packets: [sh.packets[0].load(Relaxed), sh.packets[1].load(Relaxed)],
            bytes: [sh.bytes[0].load(Relaxed), sh.bytes[1].load(Relaxed)],
            dropped: sh.dropped.load(Relaxed),
            latched,
        })
    }

    /// Sessions with no packet forwarded for `timeout` (counted from their
    /// open or last [`MediaOp::Touch`] when none came since).
    pub fn idle(&self, timeout: Duration) -> Vec<u64> {
        let now = self.now_ms();
        let limit = timeout.as_millis() as u64;
        crate::lock(&self.sessions)
            .iter()
            .filter(|(_, (_, sh))| now.saturating_sub(sh.last_ms.load(Relaxed)) >= limit)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        crate::lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packets forwarded and dropped since start, every session.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.forwarded_total.load(Relaxed),
            self.dropped_total.load(Relaxed),
        )
    }

    /// Stop the threads (their sockets close).
    pub fn stop(&self) {
        if !self.stopped.swap(true, Relaxed) {
            for w in &self.workers {
                w.send(Cmd::Stop);
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn add_fd(ep: &OwnedFd, fd: i32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: valid epoll fd and event struct.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bind_one(addr: SocketAddr) -> Result<UdpSocket, BindFailed> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |e: io::Error| BindFailed {
        port: addr.port() & !1,
        error: format!("{addr}: {e}"),
    };
    let sock =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true).map_err(fail)?;
    }
    sock.set_nonblocking(true).map_err(fail)?;
    sock.bind(&addr.into()).map_err(fail)?;
    Ok(sock.into())
}

/// Both legs' RTP and RTCP sockets of one stream.
fn bind_stream(local: [SocketAddr; 2]) -> Result<[[UdpSocket; 2]; 2], BindFailed> {
    let pair = |a: SocketAddr| -> Result<[UdpSocket; 2], BindFailed> {
        let rtcp = SocketAddr::new(a.ip(), a.port().wrapping_add(1));
        Ok([
            bind_one(a)?,
            bind_one(rtcp).map_err(|mut e| {
                e.port = a.port();
                e
            })?,
        ])
    };
    Ok([pair(local[0])?, pair(local[1])?])
}

/// A socket a worker polls: which session, stream, leg and kind it is.
struct Sock {
    sock: UdpSocket,
    id: u64,
    stream: usize,
    leg: usize,
    kind: usize,
}

/// One stream of a session, on its worker.
struct StreamRt {
    /// Indexes into the worker's sockets, by leg and kind.
    socks: [[usize; 2]; 2],
    /// Where each leg's RTP and RTCP go.
    dest: [[Option<SocketAddr>; 2]; 2],
    /// The IP each leg's packets must come from (`None`: nothing known of
    /// that end yet: nothing accepted).
    allow: [Option<IpAddr>; 2],
    latched: [[bool; 2]; 2],
}

struct SessRt {
    shared: Arc<Shared>,
    streams: Vec<Option<StreamRt>>,
}

/// One forwarding thread.
struct Loop {
    ep: OwnedFd,
    worker: Arc<Worker>,
    start: Instant,
    socks: Vec<Option<Sock>>,
    free: Vec<usize>,
    sessions: HashMap<u64, SessRt>,
    dropped: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
}

/// Buffers of one `recvmmsg` / `sendmmsg` round.
struct Io {
    bufs: Vec<[u8; MAX_PACKET]>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    out_iovs: Vec<libc::iovec>,
    out_msgs: Vec<libc::mmsghdr>,
}

impl Io {
    fn new() -> Io {
        // SAFETY: these C structs are plain old data; zeroed is valid.
        let zero_name = || unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        let zero_msg = || unsafe { std::mem::zeroed::<libc::mmsghdr>() };
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Io {
            bufs: vec![[0u8; MAX_PACKET]; BATCH],
            names: (0..BATCH).map(|_| zero_name()).collect(),
            iovs: vec![empty; BATCH],
            msgs: (0..BATCH).map(|_| zero_msg()).collect(),
            out_iovs: vec![empty; BATCH],
            out_msgs: (0..BATCH).map(|_| zero_msg()).collect(),
        }
    }
}

impl Loop {
    fn run(mut self) {
        const EVENTS: usize = 128;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut io = Io::new();
        loop {
            // SAFETY: the buffer holds EVENTS events.
            let n = unsafe {
                libc::epoll_wait(
                    self.ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    1000,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("rtp relay: epoll_wait: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = self.start.elapsed().as_millis() as u64;
            for ev in &events[..n as usize] {
                let token = ev.u64;
                if token == WAKE {
                    if !self.commands() {
                        return;
                    }
                } else {
                    self.readable(token as usize, now, &mut io);
                }
            }
        }
    }

    /// Apply queued commands; false on `Stop`.
    fn commands(&mut self) -> bool {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into a live buffer from our eventfd.
        unsafe {
            libc::read(self.worker.wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8);
        }
        let cmds = std::mem::take(&mut *crate::lock(&self.worker.queue));
        for cmd in cmds {
            match cmd {
                Cmd::Add {
                    id,
                    stream,
                    socks,
                    shared,
                } => self.add(id, stream, socks, shared),
                Cmd::Peer {
                    id,
                    stream,
                    leg,
                    dest,
                    allow,
                } => {
                    let st = self
                        .sessions
                        .get_mut(&id)
                        .and_then(|s| s.streams.get_mut(stream))
                        .and_then(Option::as_mut);
                    if let Some(st) = st {
                        st.dest[leg] = [Some(dest[RTP]), Some(dest[RTCP])];
                        st.allow[leg] = Some(allow);
                        st.latched[leg] = [false, false];
                    }
                }
                Cmd::Remove { id } => {
                    if let Some(s) = self.sessions.remove(&id) {
                        for st in s.streams.into_iter().flatten() {
                            for idx in st.socks.iter().flatten() {
                                // Closing the socket takes it out of the epoll set.
                                self.socks[*idx] = None;
                                self.free.push(*idx);
                            }
                        }
                    }
                }
                Cmd::Stop => return false,
            }
        }
        true
    }

    fn add(&mut self, id: u64, stream: usize, socks: [[UdpSocket; 2]; 2], shared: Arc<Shared>) {
        let sess = self.sessions.entry(id).or_insert_with(|| SessRt {
            shared,
            streams: Vec::new(),
        });
        if sess.streams.len() <= stream {
            sess.streams.resize_with(stream + 1, || None);
        }
        if sess.streams[stream].is_some() {
            return;
        }
        let mut idx = [[0usize; 2]; 2];
        for (leg, pair) in socks.into_iter().enumerate() {
            for (kind, sock) in pair.into_iter().enumerate() {
                let i = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.socks.push(None);
                        self.socks.len() - 1
                    }
                };
                if let Err(e) = add_fd(&self.ep, sock.as_raw_fd(), i as u64) {
                    tracing::error!("rtp relay: epoll add: {e}");
                }
                self.socks[i] = Some(Sock {
                    sock,
                    id,
                    stream,
                    leg,
                    kind,
                });
                idx[leg][kind] = i;
            }
        }
        sess.streams[stream] = Some(StreamRt {
            socks: idx,
            dest: [[None; 2]; 2],
            allow: [None; 2],
            latched: [[false; 2]; 2],
        });
    }

    /// Socket `idx` has packets: take them all and send them on.
    fn readable(&mut self, idx: usize, now: u64, io: &mut Io) {
        let Some(Some(s)) = self.socks.get(idx) else {
            return;
        };
        let (fd, id, stream, leg, kind) = (s.sock.as_raw_fd(), s.id, s.stream, s.leg, s.kind);
        loop {
            let n = recv(fd, io);
            if n == 0 {
                return;
            }
            let Some(sess) = self.sessions.get_mut(&id) else {
                return;
            };
            let Some(Some(st)) = sess.streams.get_mut(stream) else {
                return;
            };
            let other = 1 - leg;
            let out_fd = self.socks[st.socks[other][kind]]
                .as_ref()
                .map(|s| s.sock.as_raw_fd());
            let mut dropped = 0u64;
            let mut out = 0usize;
            let mut bytes = 0u64;
            let dest = st.dest[other][kind];
            for i in 0..n {
                let len = io.msgs[i].msg_len as usize;
                let truncated = io.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let src = from_sockaddr(&io.names[i]);
                let ok = match (src, st.allow[leg]) {
                    (Some(src), Some(ip)) if !truncated && src.ip() == ip => {
                        if st.latched[leg][kind] {
                            st.dest[leg][kind] == Some(src)
                        } else {
                            st.latched[leg][kind] = true;
                            st.dest[leg][kind] = Some(src);
                            if kind == RTP && stream == 0 {
                                crate::lock(&sess.shared.latched)[leg] = Some(src);
                            }
                            true
                        }
                    }
                    _ => false,
                };
                if !ok || dest.is_none() || out_fd.is_none() {
                    dropped += 1;
                    continue;
                }
                io.out_iovs[out] = libc::iovec {
                    iov_base: io.bufs[i].as_mut_ptr().cast(),
                    iov_len: len,
                };
                bytes += len as u64;
                out += 1;
            }
            if let (Some(dest), Some(out_fd)) = (dest, out_fd) {
                if out > 0 {
                    let sent = send(out_fd, dest, io, out);
                    dropped += (out - sent) as u64;
                    let sh = &sess.shared;
                    sh.packets[leg].fetch_add(sent as u64, Relaxed);
                    sh.bytes[leg].fetch_add(bytes, Relaxed);
                    sh.last_ms.store(now, Relaxed);
                    self.forwarded.fetch_add(sent as u64, Relaxed);
                }
            }
            if dropped > 0 {
                sess.shared.dropped.fetch_add(dropped, Relaxed);
                self.dropped.fetch_add(dropped, Relaxed);
            }
            if n < BATCH {
                return;
            }
        }
    }
}

/// `recvmmsg` without waiting: how many packets it took (0: none, or an
/// error such as an ICMP report of an earlier send).
fn recv(fd: i32, io: &mut Io) -> usize {
    for i in 0..BATCH {
        io.iovs[i] = libc::iovec {
            iov_base: io.bufs[i].as_mut_ptr().cast(),
            iov_len: MAX_PACKET,
        };
        let h = &mut io.msgs[i].msg_hdr;
        h.msg_name = (&mut io.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut io.iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
        io.msgs[i].msg_len = 0;
    }
    // SAFETY: every header points at a live buffer and address slot.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            io.msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    n.max(0) as usize
}

/// `sendmmsg` the first `count` prepared packets to `dest`: how many went.
fn send(fd: i32, dest: SocketAddr, io: &mut Io, count: usize) -> usize {
    let (mut name, len) = sockaddr(dest);
    for i in 0..count {
        let h = &mut io.out_msgs[i].msg_hdr;
        h.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = len;
        h.msg_iov = &mut io.out_iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }
    let mut sent = 0;
    // A partial send (socket buffer full) is tried once more, then the
    // rest is dropped: media is not worth waiting for.
    for _ in 0..2 {
        // SAFETY: headers point at live buffers and `name`.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                io.out_msgs[sent..].as_mut_ptr(),
                (count - sent) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
        sent += n as usize;
        if sent == count {
            break;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{CALLEE, CALLER};

    fn free_pair() -> u16 {
        // Even port with a free neighbour, from the kernel's choice.
        for _ in 0..100 {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = a.local_addr().unwrap().port() & !1;
            drop(a);
            if UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            {
                return p;
            }
        }
        panic!("no free pair");
    }

    fn wait<T>(mut f: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < until, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn forwards_latches_and_drops_strangers() {
        let relay = Relay::start(1).unwrap();
        let (pa, pb) = (free_pair(), free_pair());
        let la: SocketAddr = format!("127.0.0.1:{pa}").parse().unwrap();
        let lb: SocketAddr = format!("127.0.0.1:{pb}").parse().unwrap();
        relay
            .apply(&MediaOp::Open {
                id: 7,
                stream: 0,
                local: [la, lb],
            })
            .unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
        for s in [&a, &b, &stranger] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let sdp_port = |s: &UdpSocket| s.local_addr().unwrap();
        // The caller's SDP names another port than it sends from (NAT):
        // until it latches, media for it goes to the SDP port.
        for (leg, s) in [(CALLER, &a), (CALLEE, &b)] {
            let at = sdp_port(s);
            relay
                .apply(&MediaOp::Peer {
                    id: 7,
                    stream: 0,
                    leg,
                    rtp: at,
                    rtcp: SocketAddr::new(at.ip(), at.port() + 1),
                    allow: at.ip(),
                })
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut buf = [0u8; 64];
        // A stranger's packet goes nowhere.
        stranger.send_to(b"evil", la).unwrap();
        a.send_to(b"hello-b", la).unwrap();
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello-b"[..], lb));
        b.send_to(b"hello-a", lb).unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello-a"[..], la));
        // After latching, another port of the same IP cannot inject.
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        other.send_to(b"inject", la).unwrap();
        assert!(b.recv_from(&mut buf).is_err());
        let st = wait(|| relay.stats(7).filter(|s| s.dropped >= 2));
        assert_eq!(st.packets, [1, 1]);
        assert_eq!(st.bytes, [7, 7]);
        assert_eq!(st.latched, [Some(sdp_port(&a)), Some(sdp_port(&b))]);
        assert!(relay.idle(Duration::from_secs(60)).is_empty());
        assert_eq!(relay.idle(Duration::ZERO), vec![7]);
        relay.apply(&MediaOp::Close { id: 7 }).unwrap();
        assert!(relay.stats(7).is_none());
        // The ports are free again once the thread closed them.
        wait(|| UdpSocket::bind(la).ok());
        wait(|| UdpSocket::bind(lb).ok());
        relay.stop();
    }

    #[test]
    fn a_taken_port_is_reported() {
        let relay = Relay::start(1).unwrap();
        let p = free_pair();
        let _holder = UdpSocket::bind(("127.0.0.1", p + 1)).unwrap();
        let la: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
        let lb: SocketAddr = format!("127.0.0.1:{}", free_pair()).parse().unwrap();
        let e = relay
            .apply(&MediaOp::Open {
                id: 1,
                stream: 0,
                local: [la, lb],
            })
            .unwrap_err();
        assert_eq!(e.port, p);
        assert!(relay.is_empty());
    }
}
