//! Heap bytes per transaction and per proxy context, measured on the core
//! itself (no sockets): a counting allocator around the system allocator
//! tracks the bytes the program has asked for and not freed yet. Used to
//! size the transaction limits (issue 10, point 8; figures in
//! bench/README.md). Allocator overhead (size classes, page slack) comes on
//! top; `bench/txflood` measures the whole process.
//!
//!     cargo run --release -p sipd --example txmem [N]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sipd::config::{Config, Options};
use sipd::core::{Core, CoreOptions, Effects, Local};
use sipd::sip::{Limits, Message};
use sipd::time::Now;
use sipd::transaction::TxLimits;
use sipd::transport::{Peer, Transport};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (isize, isize) {
    (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed))
}

const SERVER: &str = "127.0.0.1:5060";

fn invite(n: usize, to: &str, local: SocketAddr) -> Vec<u8> {
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n\
                t=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n\
                a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    format!(
        "INVITE sip:{to}@{SERVER} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKm{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:74957770000@{local}>;tag=f{n}\r\n\
         To: <sip:{to}@{SERVER}>\r\n\
         Call-ID: mem-{n}@txmem\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:74957770000@{local}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn options(n: usize, local: SocketAddr) -> Vec<u8> {
    format!(
        "OPTIONS sip:{SERVER} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKo{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag=o{n}\r\n\
         To: <sip:{SERVER}>\r\n\
         Call-ID: opt-{n}@txmem\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn core(n: usize, now: Now) -> Core {
    let opts = Options {
        country: "7".into(),
        city: "495".into(),
        default_realm: "mem.test".into(),
        file_name: "sip.conf".into(),
    };
    let conf = "[GW]\naccountcode=gateways\nhost=127.0.0.2\nexten=9\n\n\
                [pbx]\nhost=127.0.0.1:9\nexten=4951110001\n";
    let config = Config::parse(conf, &opts).expect("config");
    let server: SocketAddr = SERVER.parse().unwrap();
    Core::new(
        Arc::new(config),
        Local::new(vec![server], vec!["mem.test".into()]),
        None,
        CoreOptions {
            tx_limits: TxLimits {
                max_server: 10 * n,
                max_client: 10 * n,
                max_open_per_source: 10 * n,
                max_open: 10 * n,
                // Tables sized up front, so that growth is not counted.
                initial: 2 * n,
            },
            max_calls: 10 * n,
            ..CoreOptions::default()
        },
        now,
    )
}

/// Feed `n` messages made by `make` from the gateway's address; returns
/// the live heap after each stage: all sent, +6 s (no-response timer:
/// finals sent), +40 s (all gone).
fn run(label: &str, n: usize, make: impl Fn(usize, SocketAddr) -> Vec<u8>) {
    let mut now = Now::read();
    let mut core = core(n, now);
    let from: SocketAddr = "127.0.0.2:5060".parse().unwrap();
    let peer = Peer {
        transport: Transport::Udp,
        addr: from,
        flow: None,
        local: Some(SERVER.parse().unwrap()),
    };
    let limits = Limits::default();
    let (base, base_blocks) = live();
    for i in 0..n {
        let data = make(i, from);
        let msg = Message::parse(&data, &limits).expect("parse");
        let mut fx = Effects::new();
        core.on_message(msg, peer, now, &mut fx);
    }
    let (open, open_blocks) = live();
    let txs = core.transaction_count();
    let ctxs = core.context_count();
    let calls = core.calls().len();
    let mut step = |secs: u64, core: &mut Core| {
        for _ in 0..secs * 50 {
            now = now + Duration::from_millis(20);
            let mut fx = Effects::new();
            core.on_tick(now, &mut fx);
        }
    };
    step(6, &mut core);
    let (finals, _) = live();
    let txs6 = core.transaction_count();
    step(40, &mut core);
    // (Not shrunk: the tables were sized before `base`.)
    let (gone, _) = live();
    let per = |bytes: isize| (bytes - base) as f64 / n as f64;
    println!("{label}: {n} requests");
    println!(
        "  open:   {:>7.0} bytes/request, {:.1} blocks ({txs} transactions, {ctxs} contexts, {calls} calls)",
        per(open),
        (open_blocks - base_blocks) as f64 / n as f64
    );
    println!(
        "  +6 s:   {:>7.0} bytes/request ({txs6} transactions)",
        per(finals)
    );
    println!("  +46 s:  {:>7.0} bytes/request left", per(gone));
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    run("OPTIONS to sipd (server transaction, answered)", n, options);
    run(
        "INVITE to an unknown number (server transaction, 404)",
        n,
        |i, l| invite(i, "4959990000", l),
    );
    run(
        "INVITE to a callee that never answers (server + client transaction, context, call)",
        n,
        |i, l| invite(i, "4951110001", l),
    );
}
