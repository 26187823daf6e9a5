//! End-to-end: the limits of issue 10 (security), points 6, 8 and 9.
//!
//! - TCP slots: a connection that has not carried an authenticated request
//!   (and is not a static host's) is closed soon after its last message, a
//!   message that has started must complete in time (one byte a second does
//!   not keep a connection), and untrusted connections cannot take the slots
//!   a new phone needs.
//! - Transactions: one source holding too many open transactions gets 503
//!   while other sources are served, and is served again once its
//!   transactions end.
//! - Control input: numbers are 1 to 32 digits wherever they enter (sipctl,
//!   the control socket, star codes, sip.conf), and a control request line
//!   is at most 64 KiB.
//!
//! Timeouts are short flags (1 s) so that the tests are fast; nothing here
//! asserts how long something took.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use sipd_tests::ua::unique;
use sipd_tests::{free_port, text, wait_for, Sipd, Start, Ua};

const S: Duration = Duration::from_secs(5);

fn start(conf: &str, args: &[&str]) -> Sipd {
    Sipd::start_with(Start {
        conf: Some(conf.to_string()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Start::default()
    })
}

// ------------------------------------------------------------ control input

/// One raw request line on the control socket; the response line.
fn raw_ctl(s: &Sipd, line: &[u8]) -> serde_json::Value {
    let mut c = UnixStream::connect(s.socket()).unwrap();
    c.set_read_timeout(Some(S)).unwrap();
    let mut w = c.try_clone().unwrap();
    let data = line.to_vec();
    // Written from a thread: sipd may answer (and close) before reading all.
    let t = std::thread::spawn(move || {
        let _ = w.write_all(&data);
        let _ = w.write_all(b"\n");
    });
    let mut resp = String::new();
    BufReader::new(&mut c).read_line(&mut resp).unwrap();
    let _ = t.join();
    serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{e}: {resp:?}"))
}

fn fwd_request(number: &str) -> Vec<u8> {
    format!(
        r#"{{"v":1,"cmd":"fwd","who":"alice","action":{{"kind":"always","number":"{number}"}}}}"#
    )
    .into_bytes()
}

fn forwarding_of(s: &Sipd, who: &str) -> proto::Forwarding {
    let out = s.sipctl(&["fwd", who, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(v["clients"][0].clone()).unwrap()
}

#[test]
fn numbers_are_validated_where_they_enter() {
    let conf = "[alice]\naccountcode=o\nsecret=alice-pw\nexten=1001\n\n\
                [bob]\naccountcode=o\nsecret=bob-pw\nexten=1002\n";
    let s = start(conf, &[]);
    let too_long = "4".repeat(33);

    // sipctl: a clear one-line error, non-zero exit, nothing stored. (A
    // command-line argument is at most 128 KiB on Linux.)
    for number in ["4".repeat(100_000), too_long.clone(), "alice".to_string()] {
        let out = s.sipctl(&["fwd", "alice", "always", &number]);
        assert!(!out.status.success(), "accepted {}", number.len());
        let err = text(&out.stderr);
        assert!(err.contains("is not a number"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.len() < 300, "{}", err.len());
    }
    assert_eq!(forwarding_of(&s, "alice"), proto::Forwarding::None);
    // 32 digits are a number.
    let longest = "4".repeat(32);
    let out = s.sipctl(&["fwd", "alice", "always", &longest]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        forwarding_of(&s, "alice"),
        proto::Forwarding::always(&longest)
    );
    assert!(s.sipctl(&["fwd", "alice", "clear"]).status.success());

    // The control socket: an error object, nothing stored.
    let r = raw_ctl(&s, &fwd_request(&too_long));
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("not a number"), "{r}");
    // A line over 64 KiB: an error object (then the connection closes).
    let r = raw_ctl(&s, &fwd_request(&"4".repeat(1_000_000)));
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("too long"), "{r}");
    assert_eq!(forwarding_of(&s, "alice"), proto::Forwarding::None);
    // A long line under the limit is served, and so is the next request on
    // the same connection.
    let mut c = UnixStream::connect(s.socket()).unwrap();
    c.set_read_timeout(Some(S)).unwrap();
    let big = format!(r#"{{"v":1,"cmd":"fwd","who":"{}"}}"#, "x".repeat(60 * 1024));
    c.write_all(format!("{big}\n{{\"v\":1,\"cmd\":\"status\"}}\n").as_bytes())
        .unwrap();
    let mut lines = BufReader::new(c).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["ok"], false);
    assert!(first["error"].as_str().unwrap().len() < 300, "{first}");
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["ok"], true, "{second}");

    // A star code with a number of 33 digits: a bad forwarding number.
    let mut alice = Ua::udp(s.addr, "alice");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    alice.invite(&format!("sip:*72{too_long}@{}", s.addr), "alice-pw");
    let r = alice.final_response(S).expect("an answer");
    assert_eq!(
        (r.status(), r.reason()),
        (Some(480), Some("Bad Forwarding Number")),
        "{}",
        text(r.raw())
    );
    assert_eq!(forwarding_of(&s, "alice"), proto::Forwarding::None);

    // sip.conf: a reload with such a number is refused.
    s.write_conf(&conf.replace("exten=1001", &format!("exten=1001={too_long}")));
    let out = s.sipd_cmd(&["-r"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("is not a number"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(forwarding_of(&s, "alice"), proto::Forwarding::None);
    // Calls to alice still work.
    let mut bob = Ua::udp(s.addr, "bob");
    assert_eq!(bob.register("bob-pw", 300).status(), Some(200));
    bob.invite(&format!("sip:1001@{}", s.addr), "bob-pw");
    alice.expect_request("INVITE", S);
}

// ------------------------------------------------------------ TCP slots

fn status(s: &Sipd) -> proto::Status {
    match s.ctl(proto::Command::Status).into_result().unwrap() {
        proto::Reply::Status(st) => st,
        other => panic!("{other:?}"),
    }
}

fn counter(s: &Sipd, name: &str) -> u64 {
    status(s)
        .counters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .value
}

/// A TCP connection to `to` from the loopback address `ip` (so that tests
/// can be several sources: all of 127/8 is loopback on Linux).
fn tcp_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own, with valid
    // sockaddr_in structures of `len` bytes; the descriptor is handed to
    // TcpStream (which closes it) only once it is connected.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let local = sin(ip, 0);
        let rc = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "bind {ip:?}: {}", std::io::Error::last_os_error());
        let remote = sin(to.ip().octets(), to.port());
        let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

fn options_bytes(server: SocketAddr, local: SocketAddr) -> Vec<u8> {
    format!(
        "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch={}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p\r\nTo: <sip:{server}>\r\n\
         Call-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        unique("z9hG4bK"),
        unique("c")
    )
    .into_bytes()
}

/// A raw connection that sends one OPTIONS (a complete message) and reads
/// its 200 (or sees the connection go).
fn talker(server: SocketAddr) -> TcpStream {
    let mut t = TcpStream::connect(server).unwrap();
    let local = t.local_addr().unwrap();
    t.write_all(&options_bytes(server, local)).unwrap();
    t.set_read_timeout(Some(S)).unwrap();
    let mut buf = [0u8; 4096];
    let _ = t.read(&mut buf);
    t
}

/// The peer closed `stream` within `within` (EOF or reset).
fn read_closed(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn options_ok(ua: &mut Ua, server: SocketAddr) -> bool {
    let req = ua.request("OPTIONS", &format!("sip:{server}"));
    ua.transact(&req).and_then(|r| r.status()) == Some(200)
}

#[test]
fn untrusted_tcp_connections_are_closed_when_idle_and_trusted_ones_stay() {
    let conf = "[alice]\naccountcode=o\nsecret=alice-pw\nexten=1001\n\n\
                [GW]\naccountcode=gateways\nhost=127.0.0.3\nexten=9\n";
    let s = start(
        conf,
        &["--tcp-untrusted-idle", "1", "--tcp-first-message", "30"],
    );
    // alice registers over TCP: her connection carried an authenticated request.
    let mut alice = Ua::tcp(s.addr, "alice");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    // The gateway (a static host) talks over TCP from its address.
    let mut gw = Ua::from_accepted(tcp_from([127, 0, 0, 3], s.addr), s.addr, "gw");
    assert!(options_ok(&mut gw, s.addr));
    // Three anonymous connections send one message each and go quiet.
    let mut idle: Vec<TcpStream> = (0..3).map(|_| talker(s.addr)).collect();
    assert_eq!(counter(&s, "tcp connections"), 5);
    for t in &mut idle {
        assert!(read_closed(t, S), "an idle untrusted connection is closed");
    }
    assert!(
        wait_for(S, || (counter(&s, "tcp connections") == 2).then_some(())).is_some(),
        "{} connections open",
        counter(&s, "tcp connections")
    );
    // Longer than the untrusted idle time: alice's and the gateway's stay.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(counter(&s, "tcp connections"), 2);
    assert_eq!(counter(&s, "tcp connections untrusted"), 0);
    assert!(options_ok(&mut alice, s.addr));
    assert!(options_ok(&mut gw, s.addr));
    // A wrong password does not make a connection trusted.
    let mut mallory = Ua::tcp(s.addr, "alice");
    assert_eq!(mallory.register("wrong", 300).status(), Some(403));
    assert!(
        wait_for(S, || (counter(&s, "tcp connections") == 2).then_some(())).is_some(),
        "the connection with the failed REGISTER is closed"
    );
}

#[test]
fn a_started_message_must_complete_in_time() {
    let conf = "[alice]\naccountcode=o\nsecret=alice-pw\nexten=1001\n";
    let s = start(
        conf,
        &["--tcp-message-timeout", "1", "--tcp-first-message", "30"],
    );
    let mut alice = Ua::tcp(s.addr, "alice");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    let slow = TcpStream::connect(s.addr).unwrap();
    // One byte every 200 ms of a message that never ends, on an anonymous
    // connection and on alice's trusted one.
    let dribble = |mut w: TcpStream| {
        std::thread::spawn(move || {
            let _ = w.write_all(b"OPTIONS sip:x SIP/2.0\r\nX-Slow: ");
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(200));
                if w.write_all(b"a").is_err() {
                    return;
                }
            }
        })
    };
    let mut slow_r = slow.try_clone().unwrap();
    let t1 = dribble(slow);
    assert!(
        read_closed(&mut slow_r, S),
        "a dribbled message keeps its connection"
    );
    let alice_stream = tcp_from([127, 0, 0, 1], s.addr);
    let mut alice2 = Ua::from_accepted(alice_stream.try_clone().unwrap(), s.addr, "alice");
    assert_eq!(alice2.register("alice-pw", 300).status(), Some(200));
    let mut alice2_r = alice_stream.try_clone().unwrap();
    let t2 = dribble(alice_stream);
    assert!(
        read_closed(&mut alice2_r, S),
        "trusted or not, a message must complete in time"
    );
    let _ = t1.join();
    let _ = t2.join();
    assert!(options_ok(&mut alice, s.addr));
}

#[test]
fn untrusted_connections_leave_room_for_a_new_phone() {
    let conf = "[bob]\naccountcode=o\nsecret=bob-pw\nexten=1002\n";
    let s = start(
        conf,
        &[
            "--tcp-max-connections",
            "6",
            "--tcp-max-per-ip",
            "6",
            "--tcp-max-untrusted",
            "3",
            "--tcp-max-untrusted-per-ip",
            "6",
            "--tcp-untrusted-idle",
            "60",
        ],
    );
    // Six anonymous connections that have each sent a message: before, they
    // took every slot for two hours.
    let mut held: Vec<TcpStream> = (0..6).map(|_| talker(s.addr)).collect();
    // A new phone from another address still gets in and registers.
    let mut bob = Ua::from_accepted(tcp_from([127, 0, 0, 2], s.addr), s.addr, "bob");
    assert_eq!(bob.register("bob-pw", 300).status(), Some(200));
    assert!(counter(&s, "tcp connections evicted") >= 4);
    assert!(counter(&s, "tcp connections untrusted") <= 3);
    // More anonymous connections evict each other, never bob's.
    held.extend((0..6).map(|_| talker(s.addr)));
    assert!(options_ok(&mut bob, s.addr));
    let st = status(&s);
    let get = |n: &str| st.counters.iter().find(|c| c.name == n).unwrap().value;
    assert!(get("tcp connections") <= 6, "{:?}", st.counters);
    assert!(get("tcp connections untrusted") <= 3, "{:?}", st.counters);
    // The connections that were evicted are closed.
    let closed = held
        .iter_mut()
        .take(6)
        .map(|t| read_closed(t, Duration::from_millis(300)))
        .filter(|&c| c)
        .count();
    assert!(closed >= 3, "{closed} of the first six closed");
}

// ------------------------------------------------------------ transactions

#[test]
fn a_source_holding_too_many_open_transactions_gets_503_while_others_are_served() {
    let pbx_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let conf = format!(
        "[GW]\naccountcode=gateways\nhost=127.0.0.2\nexten=9\n\n\
         [pbx]\nhost={pbx_addr}\nexten=4951110001\n\n\
         [alice]\naccountcode=o\nsecret=alice-pw\nexten=1001\n"
    );
    let s = start(&conf, &["--max-transactions-per-source", "3"]);
    let mut pbx = Ua::udp_at(pbx_addr, s.addr, "pbx");
    let mut gw = Ua::udp_on("127.0.0.2", s.addr, "74957770000");
    let uri = format!("sip:4951110001@{}", s.addr);
    let mut invites = Vec::new();
    for _ in 0..3 {
        let inv = gw.request("INVITE", &uri);
        gw.send(&inv);
        let r = gw.recv_response(S).expect("an answer");
        assert_eq!(r.status(), Some(100), "{}", text(r.raw()));
        invites.push(inv);
    }
    let mut at_pbx = Vec::new();
    for _ in 0..3 {
        at_pbx.push(pbx.expect_request("INVITE", S));
    }
    // The fourth open INVITE from that address: 503.
    let r = gw.transact(&gw.request("INVITE", &uri)).expect("an answer");
    assert_eq!(r.status(), Some(503), "{}", text(r.raw()));
    assert!(counter(&s, "per-source rejections") >= 1);
    // Another source is served: registers, asks sipd, calls the pbx.
    let mut alice = Ua::udp(s.addr, "alice");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    assert!(options_ok(&mut alice, s.addr));
    alice.invite(&uri, "alice-pw");
    let got = pbx.expect_request("INVITE", S);
    assert!(text(got.raw()).contains("alice"), "{}", text(got.raw()));
    // The pbx turns the gateway's first call down; once the gateway has
    // ACKed, that transaction is over and the gateway is served again.
    pbx.respond(&at_pbx[0], 486, "Busy Here", &unique("pbx"));
    let busy = gw.expect_status(486, S);
    let mut ack = invites[0].clone();
    ack.method = "ACK".into();
    let seq = ack
        .get("CSeq")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    ack = ack
        .set("CSeq", &format!("{seq} ACK"))
        .set("To", busy.header(&sipd::sip::HeaderName::To).unwrap());
    gw.send(&ack);
    let again = gw.request("INVITE", &uri);
    gw.send(&again);
    let r = gw.recv_response(S).expect("an answer");
    assert_eq!(r.status(), Some(100), "{}", text(r.raw()));
}
