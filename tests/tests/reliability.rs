//! Orders of events over two transports that once stopped sipd, and what
//! must happen instead (issue: reliability): a response for a caller whose
//! TCP connection closed, a request to a callee whose TCP connection closed
//! (or whose binding came back from the store after a restart), several
//! listen addresses of one family, and the TCP limits end to end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use sipd::sip::HeaderName;
use sipd_tests::ua::{unique, Dialog};
use sipd_tests::{free_port, text, wait_for, Sipd, Start, Ua};

const S: Duration = Duration::from_secs(5);

fn conf(gw: SocketAddr) -> String {
    format!(
        "[general]\nnoanswer=10\n\n\
         [alice]\naccountcode=office\nsecret=alice-pw\nexten=4951110001#1001\n\n\
         [bob]\naccountcode=office\nsecret=bob-pw\nexten=4951110002#1002~1003\n\n\
         [carol]\naccountcode=office\nsecret=carol-pw\nexten=4951110003#1003\n\n\
         [GW]\naccountcode=gateways\nhost={gw}\nexten=9\n"
    )
}

fn phone(s: &Sipd, user: &str, tcp: bool) -> Ua {
    let mut ua = if tcp {
        Ua::tcp(s.addr, user)
    } else {
        Ua::udp(s.addr, user)
    };
    let r = ua.register(&format!("{user}-pw"), 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

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

fn alive_and_answering(s: &mut Sipd) {
    assert!(s.is_running(), "sipd died:\n{}", s.stderr());
    let mut probe = Ua::udp(s.addr, "probe");
    let req = probe.request("OPTIONS", &format!("sip:{}", s.addr));
    let r = probe.transact(&req).expect("OPTIONS answered");
    assert_eq!(r.status(), Some(200));
}

#[test]
fn tcp_caller_hangs_up_while_ringing_then_the_udp_callee_answers() {
    let gw: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut s = Sipd::start(&conf(gw));
    let mut alice = phone(&s, "alice", false);
    let mut bob = phone(&s, "bob", true);
    bob.invite(&format!("sip:1001@{}", s.addr), "bob-pw");
    let got = alice.expect_request("INVITE", S);
    drop(bob);
    assert!(
        wait_for(S, || (counter(&s, "tcp connections") == 0).then_some(())).is_some(),
        "bob's connection is still open"
    );
    let tag = unique("alice");
    alice.respond(&got, 180, "Ringing", &tag);
    alice.respond(&got, 200, "OK", &tag);
    std::thread::sleep(Duration::from_millis(300));
    alive_and_answering(&mut s);
    // alice hangs up: the BYE toward bob's vanished connection fails at
    // once (a new connection to his port is refused), and the call ends.
    let mut d = Dialog::uas(&got, &tag);
    let bye = alice.in_dialog(&mut d, "BYE");
    alice.send(&bye);
    let r = alice.final_response(S).expect("an answer to the BYE");
    assert_eq!(r.status(), Some(500), "{}", text(r.raw()));
    assert_eq!(status(&s).calls, 0);
    alive_and_answering(&mut s);
}

#[test]
fn gateway_call_to_a_closed_tcp_client_moves_on_at_once() {
    let gw_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut s = Sipd::start(&conf(gw_addr));
    let mut carol = phone(&s, "carol", false);
    let bob = phone(&s, "bob", true);
    drop(bob);
    assert!(wait_for(S, || (counter(&s, "tcp connections") == 0).then_some(())).is_some());
    let mut gw = Ua::udp_at(gw_addr, s.addr, "74957770000");
    let inv = gw.request("INVITE", &format!("sip:4951110002@{}", s.addr));
    let sent = Instant::now();
    gw.send(&inv);
    // bob is unreachable: his "~1003" sends the call to carol at once,
    // not after noanswer (10 s) or the no-response timer (5 s).
    let got = carol.expect_request("INVITE", S);
    let waited = sent.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "carol rung after {waited:?}"
    );
    assert!(
        got.header(&HeaderName::Diversion)
            .is_some_and(|d| d.contains("bob")),
        "{}",
        text(got.raw())
    );
    assert_eq!(counter(&s, "send failures"), 1);
    let tag = unique("carol");
    carol.respond(&got, 200, "OK", &tag);
    assert_eq!(gw.expect_status(200, S).status(), Some(200));
    alive_and_answering(&mut s);
}

/// Accept one connection within `timeout`.
fn accept_within(l: &TcpListener, timeout: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return Some(s);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
}

#[test]
fn tcp_bindings_restored_after_a_restart_are_reached_by_a_new_connection() {
    let gw: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut s = Sipd::start(&conf(gw));
    let bob = phone(&s, "bob", true);
    let carol = phone(&s, "carol", true);
    let bob_addr = bob.local;
    assert_eq!(s.stop(), Some(0));
    drop(bob);
    drop(carol);
    // bob's phone listens on the port it registered from; carol's is gone.
    let listener = TcpListener::bind(bob_addr).expect("bob's port is free again");
    s.restart(&[]);
    let regs = match s
        .ctl(proto::Command::Regs { name: None })
        .into_result()
        .unwrap()
    {
        proto::Reply::Regs(r) => r.bindings,
        other => panic!("{other:?}"),
    };
    assert_eq!(regs.len(), 2, "both TCP bindings restored: {regs:?}");
    let mut alice = phone(&s, "alice", false);
    alice.invite(&format!("sip:1002@{}", s.addr), "alice-pw");
    let stream = accept_within(&listener, S).expect("sipd connects to bob's address");
    let mut bob = Ua::from_accepted(stream, s.addr, "bob");
    let got = bob.expect_request("INVITE", S);
    assert!(
        got.top_via().to_string().contains("TCP"),
        "{}",
        text(got.raw())
    );
    let tag = unique("bob");
    bob.respond(&got, 200, "OK", &tag);
    alice.expect_status(200, S);
    // carol's address refuses the connection: her branch fails at once.
    let sent = Instant::now();
    alice.invite(&format!("sip:1003@{}", s.addr), "alice-pw");
    let r = alice.final_response(S).expect("an answer");
    assert_eq!(r.status(), Some(480), "{}", text(r.raw()));
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
    alive_and_answering(&mut s);
}

/// A port free on 127.0.0.1, 127.0.0.2 and ::1, for UDP and TCP.
fn port_free_everywhere() -> u16 {
    for _ in 0..50 {
        let p = free_port();
        let ok = ["127.0.0.2", "[::1]"].iter().all(|ip| {
            let a: SocketAddr = format!("{ip}:{p}").parse().unwrap();
            UdpSocket::bind(a).is_ok() && TcpListener::bind(a).is_ok()
        });
        if ok {
            return p;
        }
    }
    panic!("no port free on all three addresses");
}

#[test]
fn each_client_is_answered_from_the_address_it_used() {
    let p = port_free_everywhere();
    let one: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
    let two: SocketAddr = format!("127.0.0.2:{p}").parse().unwrap();
    let six: SocketAddr = format!("[::1]:{p}").parse().unwrap();
    let gw: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let conf = conf(gw).replace("[carol]", "[dave]\nsecret=dave-pw\n\n[carol]");
    let mut s = Sipd::start_with(Start {
        conf: Some(conf),
        listen: Some(one),
        args: vec!["-b".into(), two.to_string(), "-b".into(), six.to_string()],
        ..Start::default()
    });
    let listen = status(&s).listen;
    for a in [one, two, six] {
        for t in ["udp", "tcp"] {
            assert!(listen.contains(&format!("{t}:{a}")), "{listen:?}");
        }
    }
    for (ip, server) in [("127.0.0.1", one), ("127.0.0.2", two), ("::1", six)] {
        let mut ua = Ua::udp_on(ip, server, "probe");
        let req = ua.request("OPTIONS", &format!("sip:{server}"));
        ua.send(&req);
        let (m, from) = ua.recv_from(S).expect("an answer");
        assert_eq!((m.status(), from), (Some(200), server), "asked {server}");
    }
    // bob registers through 127.0.0.2, alice through 127.0.0.1, dave over IPv6.
    let mut bob = Ua::udp_on("127.0.0.1", two, "bob");
    assert_eq!(bob.register("bob-pw", 300).status(), Some(200));
    let mut alice = Ua::udp_on("127.0.0.1", one, "alice");
    assert_eq!(alice.register("alice-pw", 300).status(), Some(200));
    let mut dave = Ua::udp_on("::1", six, "dave");
    assert_eq!(dave.register("dave-pw", 300).status(), Some(200));
    for (caller, secret, server) in [(&mut alice, "alice-pw", one), (&mut dave, "dave-pw", six)] {
        caller.invite(&format!("sip:bob@{server}"), secret);
        let (got, from) = loop {
            let (m, from) = bob.recv_from(S).expect("bob's INVITE");
            if m.method().map(|x| x.as_str()) == Some("INVITE") {
                break (m, from);
            }
        };
        assert_eq!(from, two, "bob hears sipd at the address he used");
        assert!(got.top_via().to_string().contains(&two.to_string()));
        let rr: Vec<&str> = got.header_values(&HeaderName::RecordRoute);
        assert_eq!(
            rr,
            vec![format!("<sip:{two};lr>"), format!("<sip:{server};lr>")],
            "one Record-Route per side"
        );
        let tag = unique("bob");
        bob.respond(&got, 200, "OK", &tag);
        let ok = loop {
            let (m, from) = caller.recv_from(S).expect("the 200");
            if m.status() == Some(200) {
                assert_eq!(from, server, "the caller hears sipd where it asked");
                break m;
            }
        };
        assert_eq!(ok.call_id(), got.call_id());
    }
    alive_and_answering(&mut s);
}

fn read_closed(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn options_bytes(server: SocketAddr, local: SocketAddr, n: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p\r\nTo: <sip:{server}>\r\n\
         Call-ID: {}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n",
        unique("b"),
        unique("c")
    )
    .into_bytes()
}

#[test]
fn a_tcp_connection_must_send_a_message_in_time() {
    let mut s = Sipd::start_with(Start {
        conf: Some(String::new()),
        args: vec!["--tcp-first-message".into(), "1".into()],
        ..Start::default()
    });
    let mut silent = TcpStream::connect(s.addr).unwrap();
    let mut pinging = TcpStream::connect(s.addr).unwrap();
    pinging.write_all(b"\r\n\r\n").unwrap();
    let mut talking = Ua::tcp(s.addr, "probe");
    let req = talking.request("OPTIONS", &format!("sip:{}", s.addr));
    assert_eq!(talking.transact(&req).unwrap().status(), Some(200));
    assert!(read_closed(&mut silent, S), "a silent connection is closed");
    assert!(
        read_closed(&mut pinging, S),
        "keep-alives alone do not count"
    );
    // The one that sent a message stays.
    std::thread::sleep(Duration::from_millis(500));
    let req = talking.request("OPTIONS", &format!("sip:{}", s.addr));
    assert_eq!(talking.transact(&req).unwrap().status(), Some(200));
    alive_and_answering(&mut s);
}

#[test]
fn connections_per_address_are_bounded() {
    let mut s = Sipd::start_with(Start {
        conf: Some(String::new()),
        args: vec!["--tcp-max-per-ip".into(), "3".into()],
        ..Start::default()
    });
    let mut uas: Vec<Ua> = (0..3).map(|_| Ua::tcp(s.addr, "probe")).collect();
    for ua in &mut uas {
        let req = ua.request("OPTIONS", &format!("sip:{}", s.addr));
        assert_eq!(ua.transact(&req).unwrap().status(), Some(200));
    }
    let mut fourth = TcpStream::connect(s.addr).unwrap();
    let local = fourth.local_addr().unwrap();
    let _ = fourth.write_all(&options_bytes(s.addr, local, 1));
    assert!(
        read_closed(&mut fourth, S),
        "the fourth connection is refused"
    );
    assert!(counter(&s, "tcp connections refused") >= 1);
    assert_eq!(counter(&s, "tcp connections"), 3);
    for ua in &mut uas {
        let req = ua.request("OPTIONS", &format!("sip:{}", s.addr));
        assert_eq!(ua.transact(&req).unwrap().status(), Some(200));
    }
    alive_and_answering(&mut s);
}

#[test]
fn a_peer_that_does_not_read_loses_its_connection() {
    // The TCP queue bound alone: the flood limit (which bans this sender,
    // and so the probe from the same address, long before) is off.
    let mut s = Sipd::start_with(Start {
        conf: Some("[general]\nflood=0/1\n".into()),
        args: vec!["--tcp-max-queued".into(), "16384".into()],
        ..Start::default()
    });
    let stream = TcpStream::connect(s.addr).unwrap();
    // A small receive window, and we never read: sipd's answers pile up.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on our own socket with a valid int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let local = stream.local_addr().unwrap();
    let server = s.addr;
    let mut writer = stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let w = std::thread::spawn(move || {
        for n in 1..=6000 {
            if writer.write_all(&options_bytes(server, local, n)).is_err() {
                return n;
            }
        }
        6001
    });
    let closed = wait_for(Duration::from_secs(20), || {
        (s.stderr().contains("peer not reading")).then_some(())
    });
    assert!(
        closed.is_some(),
        "the queue limit never hit:\n{}",
        s.stderr()
    );
    let _ = w.join();
    assert!(
        wait_for(S, || (counter(&s, "tcp connections") == 0).then_some(())).is_some(),
        "the connection is gone from the table"
    );
    let mut stream = stream;
    assert!(
        read_closed(&mut stream, Duration::from_secs(15)),
        "the socket is closed"
    );
    alive_and_answering(&mut s);
}
