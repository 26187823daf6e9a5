//! The few SDP lines (RFC 4566) a media relay reads and rewrites: the
//! connection address (`c=`, session level and per stream), each stream's
//! port (`m=`) and its RTCP port (`a=rtcp:`, RFC 3605); whether a stream is
//! inactive (hold) and whether the offer uses ICE. Every other byte passes
//! exactly as received (line endings included). Pure: no I/O.

use std::net::IpAddr;

/// One media stream (`m=` line) as its sender describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    /// `m=` port; 0: the stream is disabled (or rejected).
    pub port: u16,
    /// `a=rtcp:` port, when given (else RTCP is on `port + 1`).
    pub rtcp: Option<u16>,
    /// The connection address in force for the stream (its own `c=`, else
    /// the session's); `None` when there is none or it is not an address.
    pub addr: Option<IpAddr>,
    /// Carried over UDP (RTP/AVP, RTP/SAVP(F), UDP/TLS/RTP/SAVPF, udptl):
    /// a relay can carry it. TCP streams (BFCP, MSRP) pass untouched.
    pub udp: bool,
    /// `a=inactive` or a connection address of `0.0.0.0` (RFC 2543 hold):
    /// no packets expected.
    pub inactive: bool,
}

impl Stream {
    /// Does the relay carry this stream?
    pub fn relayed(&self) -> bool {
        self.udp && self.port != 0
    }
}

/// What a body says about its streams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub streams: Vec<Stream>,
    /// ICE candidates or credentials (`a=candidate`, `a=ice-ufrag`): the
    /// endpoint traverses NAT itself (WebRTC).
    pub ice: bool,
}

impl Summary {
    /// The connection addresses of the relayed streams.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.streams
            .iter()
            .filter(|s| s.relayed())
            .filter_map(|s| s.addr)
    }
}

/// Lines of `body` without their line ending (CRLF or LF), with the ending.
fn lines(body: &str) -> impl Iterator<Item = (&str, &str)> {
    body.split_inclusive('\n').map(|l| {
        let text = l.trim_end_matches('\n').trim_end_matches('\r');
        (text, &l[text.len()..])
    })
}

/// `c=IN IP4 1.2.3.4` (a TTL or count suffix `/127` ignored) -> the address.
fn conn_addr(v: &str) -> Option<IpAddr> {
    let mut it = v.split_ascii_whitespace();
    if it.next()? != "IN" {
        return None;
    }
    let _family = it.next()?;
    let a = it.next()?;
    a.split('/').next()?.parse().ok()
}

/// `m=audio 4000 RTP/AVP 0` -> (port, udp).
fn media_line(v: &str) -> Option<(u16, bool)> {
    let mut it = v.split_ascii_whitespace();
    let _kind = it.next()?;
    let port = it.next()?.split('/').next()?.parse().ok()?;
    let proto = it.next()?.to_ascii_uppercase();
    let udp =
        !proto.contains("TCP") && (proto.contains("RTP") || proto == "UDPTL" || proto == "UDP");
    Some((port, udp))
}

/// Read the streams of an SDP body; `None` when it is not SDP (no `v=`
/// line first, not UTF-8, or an `m=` line without a port).
pub fn parse(body: &[u8]) -> Option<Summary> {
    let body = std::str::from_utf8(body).ok()?;
    let mut summary = Summary::default();
    let mut session_addr: Option<IpAddr> = None;
    let mut session_inactive = false;
    let mut first = true;
    for (line, _) in lines(body) {
        if line.is_empty() {
            continue;
        }
        if first {
            if !line.starts_with("v=") {
                return None;
            }
            first = false;
            continue;
        }
        let (key, value) = line.split_at(line.find('=').map(|i| i + 1).unwrap_or(0));
        match key {
            "c=" => {
                let a = conn_addr(value);
                match summary.streams.last_mut() {
                    Some(s) => {
                        s.addr = a;
                        s.inactive |= a.is_some_and(|a| a.is_unspecified());
                    }
                    None => session_addr = a,
                }
            }
            "m=" => {
                let (port, udp) = media_line(value)?;
                summary.streams.push(Stream {
                    port,
                    rtcp: None,
                    addr: session_addr,
                    udp,
                    inactive: session_inactive || session_addr.is_some_and(|a| a.is_unspecified()),
                });
            }
            "a=" => {
                if let Some(p) = value.strip_prefix("rtcp:") {
                    let port = p
                        .split_ascii_whitespace()
                        .next()
                        .and_then(|p| p.parse().ok());
                    if let (Some(s), Some(port)) = (summary.streams.last_mut(), port) {
                        s.rtcp = Some(port);
                    }
                } else if value == "inactive" {
                    match summary.streams.last_mut() {
                        Some(s) => s.inactive = true,
                        None => session_inactive = true,
                    }
                } else if value.starts_with("candidate:") || value.starts_with("ice-ufrag:") {
                    summary.ice = true;
                }
            }
            _ => {}
        }
    }
    if first {
        return None;
    }
    Some(summary)
}

/// `IN IP4 addr` / `IN IP6 addr`.
fn push_conn(out: &mut String, ip: IpAddr) {
    out.push_str(match ip {
        IpAddr::V4(_) => "IN IP4 ",
        IpAddr::V6(_) => "IN IP6 ",
    });
    crate::sip::push_ip(out, ip);
}

/// The body with every connection address that is one (not `0.0.0.0`,
/// which keeps meaning hold) replaced by `ip`, and the port of relayed
/// stream `i` replaced by `ports[i]` (its `a=rtcp:` by `ports[i] + 1`,
/// with `ip` when the line names an address). Streams beyond `ports`, and
/// those the relay does not carry, keep their lines.
pub fn rewrite(body: &[u8], ip: IpAddr, ports: &[Option<u16>]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out = String::with_capacity(text.len() + 32);
    let mut stream: Option<usize> = None;
    let port_of = |i: Option<usize>| i.and_then(|i| ports.get(i).copied().flatten());
    for (line, end) in lines(text) {
        if let Some(v) = line.strip_prefix("c=") {
            match conn_addr(v) {
                // A stream the relay does not carry keeps its own address;
                // the session address is ours as soon as one stream is.
                Some(a)
                    if !a.is_unspecified() && (stream.is_none() || port_of(stream).is_some()) =>
                {
                    out.push_str("c=");
                    push_conn(&mut out, ip);
                }
                _ => out.push_str(line),
            }
        } else if let Some(v) = line.strip_prefix("m=") {
            stream = Some(stream.map_or(0, |i| i + 1));
            match (port_of(stream), v.split_once(' ')) {
                (Some(p), Some((kind, rest))) => {
                    let old = rest.split(' ').next().unwrap_or("");
                    if old == "0" {
                        out.push_str(line);
                    } else {
                        // Keep a port count (`4000/2`).
                        let count = old.find('/').map(|i| &old[i..]).unwrap_or("");
                        out.push_str("m=");
                        out.push_str(kind);
                        out.push(' ');
                        crate::sip::push_u32(&mut out, u32::from(p));
                        out.push_str(count);
                        out.push_str(&rest[old.len()..]);
                    }
                }
                _ => out.push_str(line),
            }
        } else if let (Some(v), Some(p)) = (line.strip_prefix("a=rtcp:"), port_of(stream)) {
            out.push_str("a=rtcp:");
            crate::sip::push_u32(&mut out, u32::from(p) + 1);
            if v.split_ascii_whitespace().nth(1).is_some() {
                out.push(' ');
                push_conn(&mut out, ip);
            }
        } else {
            out.push_str(line);
        }
        out.push_str(end);
    }
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n\
        m=video 4002 RTP/AVP 96\r\nc=IN IP4 10.0.0.6\r\na=rtcp:4005 IN IP4 10.0.0.6\r\n";

    #[test]
    fn parses_streams_addresses_and_rtcp() {
        let s = parse(OFFER.as_bytes()).unwrap();
        assert!(!s.ice);
        assert_eq!(s.streams.len(), 2);
        assert_eq!(s.streams[0].port, 4000);
        assert_eq!(s.streams[0].addr, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(s.streams[0].rtcp, None);
        assert_eq!(s.streams[1].addr, Some("10.0.0.6".parse().unwrap()));
        assert_eq!(s.streams[1].rtcp, Some(4005));
        assert!(s.streams.iter().all(|s| s.relayed() && !s.inactive));
    }

    #[test]
    fn rewrites_only_addresses_and_ports() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let out = rewrite(OFFER.as_bytes(), ip, &[Some(20000), Some(20002)]).unwrap();
        let want = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n\
        m=video 20002 RTP/AVP 96\r\nc=IN IP4 127.0.0.1\r\na=rtcp:20003 IN IP4 127.0.0.1\r\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn other_family_bare_lf_and_port_count() {
        let body = "v=0\nc=IN IP4 192.168.1.2\nm=audio 5004/2 RTP/AVP 0\na=rtcp:5009\n";
        let out = rewrite(body.as_bytes(), "::1".parse().unwrap(), &[Some(30000)]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "v=0\nc=IN IP6 ::1\nm=audio 30000/2 RTP/AVP 0\na=rtcp:30001\n"
        );
    }

    #[test]
    fn hold_and_disabled_streams_stay() {
        let body = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n";
        let s = parse(body.as_bytes()).unwrap();
        assert!(s.streams[0].inactive);
        assert!(!s.streams[1].relayed());
        let out = rewrite(
            body.as_bytes(),
            "127.0.0.1".parse().unwrap(),
            &[Some(20000), Some(20002)],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 20000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n"
        );
        let inactive = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n";
        assert!(parse(inactive.as_bytes()).unwrap().streams[0].inactive);
    }

    #[test]
    fn tcp_streams_and_ice() {
        let body = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\n\
            m=application 9 TCP/BFCP *\r\nc=IN IP4 1.2.3.4\r\na=ice-ufrag:x\r\n";
        let s = parse(body.as_bytes()).unwrap();
        assert!(s.ice);
        assert!(!s.streams[1].relayed());
        let out = rewrite(
            body.as_bytes(),
            "127.0.0.1".parse().unwrap(),
            &[Some(20000), None],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20000 RTP/AVP 0\r\n\
            m=application 9 TCP/BFCP *\r\nc=IN IP4 1.2.3.4\r\na=ice-ufrag:x\r\n"
        );
    }

    #[test]
    fn not_sdp() {
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"hello\r\n"), None);
        assert_eq!(parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n"), None);
        assert_eq!(parse(&[0xff, 0xfe]), None);
        // Anything else parses without panicking.
        for n in 0..OFFER.len() {
            let _ = parse(&OFFER.as_bytes()[..n]);
            let _ = rewrite(&OFFER.as_bytes()[..n], "::1".parse().unwrap(), &[Some(2)]);
        }
    }
}
