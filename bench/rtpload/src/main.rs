//! rtpload: the RTP load generator of `bench/media`.
//!
//! N calls, each with two UDP endpoints on loopback: A (the caller's side,
//! on `--a-ip`) and B (the callee's, on `--b-ip`). Each endpoint sends one
//! RTP stream (12-byte header, `--payload` bytes, `--pps` packets/s, its own
//! SSRC, sequence number and timestamp) to the address it is given (the
//! relay's port facing it, or the other endpoint itself for the direct
//! baseline) and receives the other side's stream. The calls' send phases
//! are spread over the packet interval, a call's B side half an interval
//! after its A side.
//!
//! Latency: the payload starts with the send time (CLOCK_REALTIME ns, read
//! just before sendto); the receiver takes the kernel's receive stamp
//! (SO_TIMESTAMPNS, CLOCK_REALTIME; on loopback it is stamped when the
//! relay's sendto hands the packet to `lo`), so the figure is the relay's
//! latency from our send to its send, not how soon this program gets
//! around to reading its sockets.
//!
//! Control, one line each way (the bench script drives it):
//!   stdout  {"event":"bound","a_ip":..,"b_ip":..,"a":[ports],"b":[ports]}
//!   stdin   `dst I A_DST B_DST` per call (A sends to A_DST, B to B_DST,
//!           each IP:PORT), or `direct` (A sends to B and B to A), then `go`
//!   stdout  {"event":"measure_start"}  after the warm-up
//!           {"event":"measure_end"}    when the last packet is sent
//!           {"event":"report",...}     after the drain; then exit 0
//!   The report's "timeline" has one entry per second of the measured
//!   phase (by send time): [packets, packets over 1 ms, max µs,
//!   [[bucket, count], ...]] (the buckets of `coarse_bucket`).
//!
//! Two threads: one sends (wakes every `--tick-us` at most, sends what is
//! due, one sendto per packet: each endpoint has its own socket), one
//! receives (every `--rx-poll-us` it takes what epoll says is ready, with
//! recvmmsg; 0: block in epoll). Only packets of the measured phase count
//! for loss and latency: the warm-up lets a latching relay learn both legs
//! first.

use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

const USAGE: &str =
    "usage: rtpload --calls N [--a-ip 127.0.1.1] [--b-ip 127.0.2.1] [--port-base P] \
[--pps 50] [--payload 160] [--warmup 1.0] [--secs 20] [--tick-us 200] [--rx-poll-us 1000] [--drain-ms 500]";

/// Bytes of our own data at the start of the payload: send time (8),
/// stream (4), packet index (4), phase (1).
const STAMP: usize = 17;
/// Latency histogram: 1 µs buckets up to this many µs, then one overflow.
const HIST_US: usize = 200_000;
const BATCH: usize = 16;
/// SO_TIMESTAMPNS (= SCM_TIMESTAMPNS) on x86-64 and arm64 Linux; the libc
/// crate does not export it for Linux.
const SO_TIMESTAMPNS: libc::c_int = 35;
const SCM_TIMESTAMPNS: libc::c_int = SO_TIMESTAMPNS;

struct Args {
    calls: usize,
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
    port_base: u16,
    pps: u32,
    payload: usize,
    warmup_s: f64,
    secs: f64,
    tick_us: u64,
    rx_poll_us: u64,
    drain_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        calls: 0,
        a_ip: Ipv4Addr::new(127, 0, 1, 1),
        b_ip: Ipv4Addr::new(127, 0, 2, 1),
        port_base: 0,
        pps: 50,
        payload: 160,
        warmup_s: 1.0,
        secs: 20.0,
        tick_us: 200,
        rx_poll_us: 1000,
        drain_ms: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "-h" || k == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it.next().ok_or_else(|| format!("{k}: value missing"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k.as_str() {
            "--calls" => a.calls = v.parse().map_err(|e| bad(&e))?,
            "--a-ip" => a.a_ip = v.parse().map_err(|e| bad(&e))?,
            "--b-ip" => a.b_ip = v.parse().map_err(|e| bad(&e))?,
            "--port-base" => a.port_base = v.parse().map_err(|e| bad(&e))?,
            "--pps" => a.pps = v.parse().map_err(|e| bad(&e))?,
            "--payload" => a.payload = v.parse().map_err(|e| bad(&e))?,
            "--warmup" => a.warmup_s = v.parse().map_err(|e| bad(&e))?,
            "--secs" => a.secs = v.parse().map_err(|e| bad(&e))?,
            "--tick-us" => a.tick_us = v.parse().map_err(|e| bad(&e))?,
            "--rx-poll-us" => a.rx_poll_us = v.parse().map_err(|e| bad(&e))?,
            "--drain-ms" => a.drain_ms = v.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {k}\n{USAGE}")),
        }
    }
    if a.calls == 0 {
        return Err(format!("--calls is required\n{USAGE}"));
    }
    if a.payload < STAMP || a.payload > 1400 {
        return Err(format!("--payload must be {STAMP}..1400"));
    }
    if a.pps == 0 || a.pps > 1000 {
        return Err("--pps must be 1..1000".into());
    }
    if a.secs <= 0.0 || a.secs.is_nan() || a.warmup_s < 0.0 {
        return Err("--secs must be > 0, --warmup >= 0".into());
    }
    Ok(a)
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_REALTIME, ns: the clock of the kernel's receive stamps.
fn wall_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: ts is a valid timespec; the remainder is not used with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            return;
        }
    }
}

/// This process's CPU time (all threads), seconds.
fn cpu_s() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage to write to.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

fn ssrc_of(stream: usize) -> u32 {
    0x5d00_0000 ^ (stream as u32).wrapping_mul(2_654_435_761)
}

struct Hist {
    buckets: Vec<u64>,
    n: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Hist {
    fn new() -> Self {
        Hist {
            buckets: vec![0; HIST_US + 1],
            n: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn add(&mut self, ns: u64) {
        let b = ((ns / 1000) as usize).min(HIST_US);
        self.buckets[b] += 1;
        self.n += 1;
        self.sum_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The p-th percentile, µs: the upper edge of its bucket, never above
    /// the largest sample.
    fn pct(&self, p: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return ((i + 1) as f64).min(self.max_ns as f64 / 1000.0);
            }
        }
        self.max_ns as f64 / 1000.0
    }

    fn merged(a: &Hist, b: &Hist) -> Hist {
        Hist {
            buckets: a
                .buckets
                .iter()
                .zip(&b.buckets)
                .map(|(x, y)| x + y)
                .collect(),
            n: a.n + b.n,
            sum_ns: a.sum_ns + b.sum_ns,
            max_ns: a.max_ns.max(b.max_ns),
        }
    }

    fn json(&self) -> String {
        let mean = if self.n > 0 {
            self.sum_ns as f64 / self.n as f64 / 1000.0
        } else {
            0.0
        };
        format!(
            "{{\"n\":{},\"mean\":{:.2},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{:.1}}}",
            self.n,
            mean,
            self.pct(50.0),
            self.pct(90.0),
            self.pct(99.0),
            self.pct(99.9),
            self.max_ns as f64 / 1000.0
        )
    }
}

#[derive(Default)]
struct Dir {
    sent: u64,
    received: u64,
    dup: u64,
    reorder: u64,
}

struct SendStats {
    dirs: [Dir; 2],
    warm_sent: u64,
    errors: u64,
    last_errno: i32,
    late: Hist,
    cpu_measure_start: f64,
    cpu_measure_end: f64,
    wall_measure_s: f64,
}

struct RecvStats {
    dirs: [Dir; 2],
    warm_received: u64,
    lat: [Hist; 2],
    misrouted: u64,
    asymmetric: u64,
    first_asym: Option<(usize, SocketAddrV4, SocketAddrV4)>,
    malformed: u64,
    no_kernel_ts: u64,
    polls: u64,
    /// Per second of the measured phase (by send time): packets, packets
    /// over 1 ms, the largest latency.
    timeline: Vec<Second>,
    measure_wall: u64,
}

#[derive(Clone)]
struct Second {
    n: u64,
    over_1ms: u64,
    max_ns: u64,
    /// Coarse histogram ([`coarse_bucket`]), so that the bench script can
    /// take percentiles over the seconds it chooses.
    hist: Vec<u32>,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            n: 0,
            over_1ms: 0,
            max_ns: 0,
            hist: vec![0; COARSE_BUCKETS],
        }
    }
}

/// Per-second histogram buckets: 2 µs wide below 1 ms, 50 µs wide up to
/// 50 ms, then one for everything above. Bucket b's upper edge, µs:
/// 2(b+1) below 500, 1000 + 50(b-499) up to 1479.
const COARSE_BUCKETS: usize = 1481;

fn coarse_bucket(ns: u64) -> usize {
    let us = ns / 1000;
    if us < 1000 {
        (us / 2) as usize
    } else if us < 50_000 {
        500 + ((us - 1000) / 50) as usize
    } else {
        COARSE_BUCKETS - 1
    }
}

struct Plan {
    /// Stream s = 2*call + d (d 0: A->B, 1: B->A) is sent from socket s
    /// and received on socket s ^ 1.
    fds: Vec<i32>,
    dst: Vec<SocketAddrV4>,
    offset_ns: Vec<u64>,
    period_ns: u64,
    per_stream: u64,
    warm_per_stream: u64,
    payload: usize,
    samples_per_packet: u32,
    tick_ns: u64,
    rx_poll_ns: u64,
    drain_ns: u64,
    measured_secs: usize,
}

fn emit(line: &str) {
    let out = io::stdout();
    let mut o = out.lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn sender(plan: &Plan, done_at: &AtomicU64, measure_wall: &AtomicU64) -> SendStats {
    let streams = plan.fds.len();
    let mut order: Vec<usize> = (0..streams).collect();
    order.sort_by_key(|&s| (plan.offset_ns[s], s));
    let addrs: Vec<libc::sockaddr_in> = plan.dst.iter().map(|d| sockaddr(*d)).collect();
    let seq0: Vec<u16> = (0..streams)
        .map(|s| (s as u32).wrapping_mul(40_503) as u16)
        .collect();
    let ts0: Vec<u32> = (0..streams)
        .map(|s| (s as u32).wrapping_mul(2_246_822_519))
        .collect();
    let len = 12 + plan.payload;
    let mut buf = vec![0xffu8; len];
    buf[0] = 0x80; // V=2, no padding, no extension, no CSRC
    let mut st = SendStats {
        dirs: [Dir::default(), Dir::default()],
        warm_sent: 0,
        errors: 0,
        last_errno: 0,
        late: Hist::new(),
        cpu_measure_start: 0.0,
        cpu_measure_end: 0.0,
        wall_measure_s: 0.0,
    };
    let mut t_measure = 0u64;
    let t0 = now_ns() + 20_000_000;
    if plan.warm_per_stream == 0 {
        st.cpu_measure_start = cpu_s();
        t_measure = t0;
        measure_wall.store(wall_ns() + 20_000_000, Ordering::SeqCst);
        emit("{\"event\":\"measure_start\"}");
    }
    let (mut k, mut j) = (0u64, 0usize);
    'outer: loop {
        let mut now = now_ns();
        loop {
            let s = order[j];
            let due = t0 + plan.offset_ns[s] + k * plan.period_ns;
            if due > now {
                // Not before the next tick: packets due within a tick go out together.
                sleep_until(due.max(now + plan.tick_ns));
                continue 'outer;
            }
            let measured = k >= plan.warm_per_stream;
            buf[1] = if k == 0 { 0x80 } else { 0 }; // marker on the first packet, PT 0 (PCMU)
            buf[2..4].copy_from_slice(&seq0[s].wrapping_add(k as u16).to_be_bytes());
            let ts = ts0[s].wrapping_add((k as u32).wrapping_mul(plan.samples_per_packet));
            buf[4..8].copy_from_slice(&ts.to_be_bytes());
            buf[8..12].copy_from_slice(&ssrc_of(s).to_be_bytes());
            buf[20..24].copy_from_slice(&(s as u32).to_be_bytes());
            buf[24..28].copy_from_slice(&(k as u32).to_be_bytes());
            buf[28] = measured as u8;
            buf[12..20].copy_from_slice(&wall_ns().to_be_bytes());
            now = now_ns();
            // SAFETY: buf and the address are valid for the call.
            let r = unsafe {
                libc::sendto(
                    plan.fds[s],
                    buf.as_ptr().cast(),
                    len,
                    0,
                    (&addrs[s] as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r == len as isize {
                if measured {
                    st.dirs[s & 1].sent += 1;
                    st.late.add(now - due);
                } else {
                    st.warm_sent += 1;
                }
            } else {
                st.errors += 1;
                st.last_errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            }
            j += 1;
            if j == streams {
                j = 0;
                k += 1;
                if k == plan.per_stream {
                    break 'outer;
                }
                if k == plan.warm_per_stream {
                    st.cpu_measure_start = cpu_s();
                    t_measure = now_ns();
                    measure_wall.store(wall_ns(), Ordering::SeqCst);
                    emit("{\"event\":\"measure_start\"}");
                }
            }
        }
    }
    let end = now_ns();
    st.cpu_measure_end = cpu_s();
    st.wall_measure_s = (end - t_measure) as f64 / 1e9;
    done_at.store(end, Ordering::SeqCst);
    emit("{\"event\":\"measure_end\"}");
    st
}

fn receiver(plan: &Plan, done_at: &AtomicU64, measure_wall: &AtomicU64) -> RecvStats {
    let streams = plan.fds.len();
    let words = plan.per_stream.div_ceil(64) as usize;
    let mut seen = vec![0u64; streams * words];
    let mut max_k: Vec<i64> = vec![-1; streams];
    let mut st = RecvStats {
        dirs: [Dir::default(), Dir::default()],
        warm_received: 0,
        lat: [Hist::new(), Hist::new()],
        misrouted: 0,
        asymmetric: 0,
        first_asym: None,
        malformed: 0,
        no_kernel_ts: 0,
        polls: 0,
        timeline: vec![Second::default(); plan.measured_secs],
        measure_wall: 0,
    };
    // SAFETY: plain epoll calls on descriptors we own.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
    for (r, &fd) in plan.fds.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: r as u64,
        };
        // SAFETY: ev is valid for the call.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert!(rc == 0, "epoll_ctl: {}", io::Error::last_os_error());
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut bufs = vec![[0u8; 2048]; BATCH];
    // Room for one SCM_TIMESTAMPNS (and a spare), 8-byte aligned.
    let mut ctls = vec![[0u64; 8]; BATCH];
    // SAFETY: all-zero sockaddr_in / iovec / mmsghdr are valid values; the
    // pointers are set below before use.
    let mut names: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    for i in 0..BATCH {
        iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
        iovs[i].iov_len = bufs[i].len();
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
        msgs[i].msg_hdr.msg_control = ctls[i].as_mut_ptr().cast();
    }
    let mut next_poll = now_ns();
    loop {
        let done = done_at.load(Ordering::SeqCst);
        if done != 0 && now_ns() > done + plan.drain_ns {
            break;
        }
        // Polling on a timer, not woken per packet: the latency comes from
        // the kernel's receive stamp, so the poll interval does not add to
        // it, and senders do not pay for waking this thread.
        let timeout = if plan.rx_poll_ns == 0 {
            20
        } else {
            next_poll += plan.rx_poll_ns;
            sleep_until(next_poll.max(now_ns()));
            0
        };
        st.polls += 1;
        if st.measure_wall == 0 {
            st.measure_wall = measure_wall.load(Ordering::SeqCst);
        }
        loop {
            // SAFETY: events has room for its length.
            let n =
                unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                panic!("epoll_wait: {e}");
            }
            for ev in &events[..n as usize] {
                recv_socket(
                    plan,
                    ev.u64 as usize,
                    &mut msgs,
                    &bufs,
                    &names,
                    words,
                    &mut seen,
                    &mut max_k,
                    &mut st,
                );
            }
            if (n as usize) < events.len() {
                break;
            }
        }
    }
    // SAFETY: ep is ours.
    unsafe { libc::close(ep) };
    st
}

/// Everything waiting on socket `r` (up to BATCH packets).
#[allow(clippy::too_many_arguments)]
fn recv_socket(
    plan: &Plan,
    r: usize,
    msgs: &mut [libc::mmsghdr],
    bufs: &[[u8; 2048]],
    names: &[libc::sockaddr_in],
    words: usize,
    seen: &mut [u64],
    max_k: &mut [i64],
    st: &mut RecvStats,
) {
    for m in msgs.iter_mut() {
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        m.msg_hdr.msg_controllen = 64;
        m.msg_len = 0;
    }
    // SAFETY: msgs point at live buffers, names and control buffers of the right sizes.
    let got = unsafe {
        libc::recvmmsg(
            plan.fds[r],
            msgs.as_mut_ptr(),
            msgs.len() as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got <= 0 {
        return;
    }
    let expect = r ^ 1;
    for i in 0..got as usize {
        let len = msgs[i].msg_len as usize;
        let p = &bufs[i][..len];
        if len < 12 + STAMP || p[0] >> 6 != 2 {
            st.malformed += 1;
            continue;
        }
        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        let s = u32::from_be_bytes([p[20], p[21], p[22], p[23]]) as usize;
        if s != expect || ssrc != ssrc_of(s) {
            st.misrouted += 1;
            continue;
        }
        let src = from_sockaddr(&names[i]);
        if src != plan.dst[r] {
            st.asymmetric += 1;
            if st.first_asym.is_none() {
                st.first_asym = Some((r, src, plan.dst[r]));
            }
        }
        let k = u32::from_be_bytes([p[24], p[25], p[26], p[27]]) as u64;
        if k >= plan.per_stream {
            st.malformed += 1;
            continue;
        }
        let sent_ns = u64::from_be_bytes(p[12..20].try_into().unwrap());
        let measured = p[28] == 1;
        let d = &mut st.dirs[s & 1];
        let (w, bit) = (s * words + (k / 64) as usize, 1u64 << (k % 64));
        if seen[w] & bit != 0 {
            d.dup += 1;
            continue;
        }
        seen[w] |= bit;
        if (k as i64) < max_k[s] {
            d.reorder += 1;
        }
        max_k[s] = max_k[s].max(k as i64);
        if measured {
            d.received += 1;
            let t = match kernel_stamp(&msgs[i].msg_hdr) {
                Some(t) => t,
                None => {
                    st.no_kernel_ts += 1;
                    wall_ns()
                }
            };
            let lat = t.saturating_sub(sent_ns);
            st.lat[s & 1].add(lat);
            if !st.timeline.is_empty() {
                let sec = (sent_ns.saturating_sub(st.measure_wall) / 1_000_000_000) as usize;
                let sec = &mut st.timeline[sec.min(plan.measured_secs - 1)];
                sec.n += 1;
                sec.over_1ms += (lat > 1_000_000) as u64;
                sec.max_ns = sec.max_ns.max(lat);
                sec.hist[coarse_bucket(lat)] += 1;
            }
        } else {
            st.warm_received += 1;
        }
    }
}

/// SO_TIMESTAMPNS: CLOCK_REALTIME when the packet reached this host's
/// receive path (on loopback: when its sender's sendto handed it to `lo`).
fn kernel_stamp(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: h's control buffer was filled by recvmmsg; the CMSG macros
    // stay within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

fn bind_all(a: &Args) -> io::Result<Vec<UdpSocket>> {
    let mut socks = Vec::with_capacity(2 * a.calls);
    for i in 0..a.calls {
        for ip in [a.a_ip, a.b_ip] {
            let port = if a.port_base == 0 {
                0
            } else {
                let p = a.port_base as usize + 2 * i;
                if p > 65534 {
                    return Err(io::Error::other("--port-base too high for --calls"));
                }
                p as u16
            };
            let s = UdpSocket::bind(SocketAddrV4::new(ip, port))
                .map_err(|e| io::Error::new(e.kind(), format!("bind {ip}:{port}: {e}")))?;
            s.set_nonblocking(true)?;
            let on: libc::c_int = 1;
            // SAFETY: a plain setsockopt with an int on our socket.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_TIMESTAMPNS,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            socks.push(s);
        }
    }
    Ok(socks)
}

fn local(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => unreachable!("bound to IPv4"),
    }
}

fn dir_json(s: &Dir, r: &Dir, lat: &Hist) -> String {
    format!(
        "{{\"sent\":{},\"received\":{},\"lost\":{},\"dup\":{},\"reorder\":{},\"latency_us\":{}}}",
        s.sent,
        r.received,
        s.sent.saturating_sub(r.received),
        r.dup,
        r.reorder,
        lat.json()
    )
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    raise_nofile();
    let socks = bind_all(&a).map_err(|e| e.to_string())?;
    let ports = |side: usize| -> String {
        let v: Vec<String> = socks
            .iter()
            .skip(side)
            .step_by(2)
            .map(|s| local(s).port().to_string())
            .collect();
        v.join(",")
    };
    emit(&format!(
        "{{\"event\":\"bound\",\"a_ip\":\"{}\",\"b_ip\":\"{}\",\"a\":[{}],\"b\":[{}]}}",
        a.a_ip,
        a.b_ip,
        ports(0),
        ports(1)
    ));
    let mut dst: Vec<Option<SocketAddrV4>> = vec![None; socks.len()];
    let stdin = io::stdin();
    let mut go = false;
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            [] => {}
            ["go"] => {
                go = true;
                break;
            }
            ["direct"] => {
                for (s, d) in dst.iter_mut().enumerate() {
                    *d = Some(local(&socks[s ^ 1]));
                }
            }
            ["dst", i, ad, bd] => {
                let i: usize = i
                    .parse()
                    .map_err(|_| format!("bad call index in: {line}"))?;
                if i >= a.calls {
                    return Err(format!("call index out of range: {line}"));
                }
                dst[2 * i] = Some(ad.parse().map_err(|_| format!("bad address in: {line}"))?);
                dst[2 * i + 1] = Some(bd.parse().map_err(|_| format!("bad address in: {line}"))?);
            }
            _ => return Err(format!("bad command: {line}")),
        }
    }
    if !go {
        return Err("stdin closed before go".into());
    }
    let dst: Vec<SocketAddrV4> = dst
        .iter()
        .enumerate()
        .map(|(s, d)| d.ok_or_else(|| format!("no destination for call {}", s / 2)))
        .collect::<Result<_, _>>()?;
    let period_ns = 1_000_000_000 / a.pps as u64;
    let n = a.calls as u64;
    // Calls spread over the period; a call's B side half a period after its A side.
    let offset_ns = (0..2 * a.calls)
        .map(|s| ((s as u64 / 2) * period_ns / n + (s as u64 & 1) * period_ns / 2) % period_ns)
        .collect();
    let warm = (a.warmup_s * a.pps as f64).round() as u64;
    let plan = Arc::new(Plan {
        fds: socks.iter().map(|s| s.as_raw_fd()).collect(),
        dst,
        offset_ns,
        period_ns,
        per_stream: warm + ((a.secs * a.pps as f64).round() as u64).max(1),
        warm_per_stream: warm,
        payload: a.payload,
        samples_per_packet: 8000 / a.pps,
        tick_ns: a.tick_us * 1000,
        rx_poll_ns: a.rx_poll_us * 1000,
        drain_ns: a.drain_ms * 1_000_000,
        measured_secs: a.secs.ceil().max(1.0) as usize,
    });
    let done_at = Arc::new(AtomicU64::new(0));
    let measure_wall = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_s();
    let rx = {
        let (plan, done_at, mw) = (plan.clone(), done_at.clone(), measure_wall.clone());
        thread::Builder::new()
            .name("rx".into())
            .spawn(move || receiver(&plan, &done_at, &mw))
            .map_err(|e| e.to_string())?
    };
    let tx = {
        let (plan, done_at, mw) = (plan.clone(), done_at.clone(), measure_wall.clone());
        thread::Builder::new()
            .name("tx".into())
            .spawn(move || sender(&plan, &done_at, &mw))
            .map_err(|e| e.to_string())?
    };
    let s = tx.join().map_err(|_| "sender thread panicked")?;
    let r = rx.join().map_err(|_| "receiver thread panicked")?;
    let cpu_total = cpu_s() - cpu0;
    let asym = match r.first_asym {
        Some((sock, got, want)) => format!(",\"first_asymmetric\":{{\"socket\":{sock},\"from\":\"{got}\",\"expected\":\"{want}\"}}"),
        None => String::new(),
    };
    let timeline: Vec<String> = r
        .timeline
        .iter()
        .map(|t| {
            let h: Vec<String> = t
                .hist
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(b, c)| format!("[{b},{c}]"))
                .collect();
            format!(
                "[{},{},{:.1},[{}]]",
                t.n,
                t.over_1ms,
                t.max_ns as f64 / 1000.0,
                h.join(",")
            )
        })
        .collect();
    let timeline = timeline.join(",");
    let sent = s.dirs[0].sent + s.dirs[1].sent;
    let received = r.dirs[0].received + r.dirs[1].received;
    emit(&format!(
        "{{\"event\":\"report\",\"calls\":{},\"pps\":{},\"payload\":{},\"secs\":{},\"warmup_s\":{},\
\"sent\":{},\"received\":{},\"lost\":{},\"latency_us\":{},\"a2b\":{},\"b2a\":{},\
\"warmup\":{{\"sent\":{},\"received\":{}}},\"misrouted\":{},\"asymmetric\":{}{},\"malformed\":{},\"no_kernel_ts\":{},\"rx_polls\":{},\
\"send_errors\":{},\"send_last_errno\":{},\"send_late_us\":{},\"measure_wall_s\":{:.3},\
\"cpu_measure_s\":{:.3},\"cpu_total_s\":{:.3},\"timeline\":[{}]}}",
        a.calls,
        a.pps,
        a.payload,
        a.secs,
        a.warmup_s,
        sent,
        received,
        sent.saturating_sub(received),
        Hist::merged(&r.lat[0], &r.lat[1]).json(),
        dir_json(&s.dirs[0], &r.dirs[0], &r.lat[0]),
        dir_json(&s.dirs[1], &r.dirs[1], &r.lat[1]),
        s.warm_sent,
        r.warm_received,
        r.misrouted,
        r.asymmetric,
        asym,
        r.malformed,
        r.no_kernel_ts,
        r.polls,
        s.errors,
        s.last_errno,
        s.late.json(),
        s.wall_measure_s,
        s.cpu_measure_end - s.cpu_measure_start,
        cpu_total,
        timeline
    ));
    drop(socks);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("rtpload: {e}");
        std::process::exit(2);
    }
}
