//! "Is this URI me?" and "which of my addresses goes in Via and
//! Record-Route": our listen addresses and names. All user agents on a test
//! machine share 127.0.0.1, so an address matches only with its port (a
//! name, our realm or hostname, names the whole server). A message goes out
//! from the listen address its peer used ([`Peer::local`]), else from the
//! first one of the peer's address family. When sipd listens on 0.0.0.0 /
//! ::, the address written into messages is the loopback address toward
//! loopback peers and the machine's primary address (the one the routing
//! table picks) toward everyone else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use crate::sip::Host;
use crate::transport::{Peer, Transport};

#[derive(Clone, Debug)]
pub struct Local {
    /// Addresses we listen on (UDP and TCP share them).
    pub addrs: Vec<SocketAddr>,
    /// TLS, WS and WSS listen addresses.
    pub streams: Vec<(Transport, SocketAddr)>,
    /// Names that mean us besides the realm (the hostname), lower-case.
    pub names: Vec<String>,
    /// The realm (sip.conf's, set by the core), lower-case.
    realm: String,
    /// For wildcard listen addresses: our primary IPv4 / IPv6 address.
    primary: Vec<IpAddr>,
}

/// The source address the kernel would use toward a documentation address
/// (a UDP connect sends nothing).
fn primary(v6: bool) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if v6 {
        (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            "[2001:db8::1]:9".parse().ok()?,
        )
    } else {
        (
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            "192.0.2.1:9".parse().ok()?,
        )
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(probe).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

impl Local {
    pub fn new(addrs: Vec<SocketAddr>, names: Vec<String>) -> Local {
        let names = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut p = Vec::new();
        for v6 in [false, true] {
            if addrs
                .iter()
                .any(|a| a.ip().is_unspecified() && a.is_ipv6() == v6)
            {
                p.extend(primary(v6));
            }
        }
        Local {
            addrs,
            streams: Vec::new(),
            names,
            realm: String::new(),
            primary: p,
        }
    }

    /// Our TLS, WS and WSS listen addresses (Via and Record-Route toward
    /// peers of those transports).
    pub fn with_listeners(mut self, streams: Vec<(Transport, SocketAddr)>) -> Local {
        self.streams = streams;
        self
    }

    /// Every address we listen on, whatever the transport.
    fn all(&self) -> impl Iterator<Item = &SocketAddr> {
        self.addrs.iter().chain(self.streams.iter().map(|(_, a)| a))
    }

    /// The realm names us too (set from the configuration in force).
    pub fn set_realm(&mut self, realm: &str) {
        self.realm = realm.to_ascii_lowercase();
    }

    /// The address to put in Via and Record-Route for messages exchanged
    /// with `peer`: the listen address it used, else our first listen
    /// address of its family (made concrete when it is a wildcard).
    pub fn addr_for(&self, peer: &Peer) -> SocketAddr {
        let to = &peer.addr;
        let family = |a: &&SocketAddr| a.is_ipv4() == to.is_ipv4();
        let own = || {
            self.streams
                .iter()
                .filter(|(t, _)| *t == peer.transport)
                .map(|(_, a)| a)
        };
        let a = peer
            .local
            .or_else(|| {
                if own().next().is_some() {
                    own().find(family).or_else(|| own().next()).copied()
                } else {
                    self.addrs
                        .iter()
                        .find(family)
                        .or_else(|| self.addrs.first())
                        .copied()
                }
            })
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
        if !a.ip().is_unspecified() {
            return a;
        }
        let ip = if to.ip().is_loopback() {
            if a.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
        } else {
            self.primary
                .iter()
                .find(|p| p.is_ipv4() == a.is_ipv4())
                .copied()
                .unwrap_or(a.ip())
        };
        SocketAddr::new(ip, a.port())
    }

    /// Does `host[:port]` name this server? An address needs one of our
    /// ports (absent = 5060); a name of ours (realm, hostname) names the
    /// whole server without a port, or with one of ours.
    pub fn is_me(&self, host: &Host, port: Option<u16>) -> bool {
        match host.ip() {
            Some(ip) => {
                let port = port.unwrap_or(5060);
                self.all()
                    .any(|a| a.port() == port && self.ip_matches(a.ip(), ip))
            }
            None => {
                let Host::Name(name) = host else { return false };
                port.is_none_or(|p| self.all().any(|a| a.port() == p))
                    && (self.realm.eq_ignore_ascii_case(name)
                        || self.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            }
        }
    }

    fn ip_matches(&self, listen: IpAddr, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        // Listening on 0.0.0.0 / :: : loopback, our primary address and the
        // wildcard itself (as written in a Via from a misconfigured peer).
        listen == ip
            || (listen.is_unspecified()
                && listen.is_ipv4() == ip.is_ipv4()
                && (ip.is_loopback() || ip.is_unspecified() || self.primary.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_needs_matching_port() {
        let l = Local::new(vec!["127.0.0.1:5099".parse().unwrap()], vec!["Box".into()]);
        let lo = Host::V4([127, 0, 0, 1].into());
        assert!(l.is_me(&lo, Some(5099)));
        assert!(!l.is_me(&lo, Some(5060)));
        assert!(!l.is_me(&lo, None));
        assert!(l.is_me(&Host::Name("box".into()), Some(5099)));
        assert!(l.is_me(&Host::Name("box".into()), None));
        assert!(!l.is_me(&Host::Name("box".into()), Some(5060)));
        assert!(!l.is_me(&Host::Name("other".into()), Some(5099)));
        let l = Local::new(vec!["127.0.0.1:5060".parse().unwrap()], vec![]);
        assert!(l.is_me(&lo, None));
        assert!(!l.is_me(&Host::V4([10, 0, 0, 1].into()), None));
    }

    #[test]
    fn addr_for_picks_family() {
        let l = Local::new(
            vec![
                "127.0.0.1:5060".parse().unwrap(),
                "[::1]:5062".parse().unwrap(),
            ],
            vec![],
        );
        let to = |a: &str| Peer::to(crate::transport::Transport::Udp, a.parse().unwrap());
        assert_eq!(l.addr_for(&to("[::1]:7000")).port(), 5062);
        assert_eq!(l.addr_for(&to("127.0.0.2:7000")).port(), 5060);
    }

    #[test]
    fn addr_for_prefers_the_address_the_peer_used() {
        let l = Local::new(
            vec![
                "127.0.0.1:5060".parse().unwrap(),
                "127.0.0.2:5060".parse().unwrap(),
            ],
            vec![],
        );
        let mut p = Peer::to(
            crate::transport::Transport::Udp,
            "127.0.0.9:7000".parse().unwrap(),
        );
        assert_eq!(l.addr_for(&p), "127.0.0.1:5060".parse().unwrap());
        p.local = Some("127.0.0.2:5060".parse().unwrap());
        assert_eq!(l.addr_for(&p), "127.0.0.2:5060".parse().unwrap());
    }

    #[test]
    fn wildcard_listen_writes_concrete_addresses() {
        let l = Local::new(vec!["0.0.0.0:5071".parse().unwrap()], vec![]);
        let to = |a: &str| Peer::to(crate::transport::Transport::Udp, a.parse().unwrap());
        let lo = l.addr_for(&to("127.0.0.1:6000"));
        assert_eq!(lo, "127.0.0.1:5071".parse().unwrap());
        let out = l.addr_for(&to("192.0.2.7:5060"));
        assert!(!out.ip().is_unspecified(), "{out}");
        assert_eq!(out.port(), 5071);
        // Our own concrete addresses are "me".
        assert!(l.is_me(&Host::V4([127, 0, 0, 1].into()), Some(5071)));
        assert!(l.is_me(&out.ip().into(), Some(5071)) || out.ip().is_unspecified());
        assert!(!l.is_me(&Host::V4([192, 0, 2, 7].into()), Some(5071)));
    }
}
