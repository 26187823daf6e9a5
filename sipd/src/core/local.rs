//! "Is this URI me?": our listen addresses and names. All user agents on a
//! test machine share 127.0.0.1, so an address matches only with its port.

use std::net::{IpAddr, SocketAddr};

use crate::sip::Host;

#[derive(Clone, Debug)]
pub struct Local {
    /// Addresses we listen on (UDP and TCP share them).
    pub addrs: Vec<SocketAddr>,
    /// Names that mean us (realm, hostname), lower-case.
    pub names: Vec<String>,
}

impl Local {
    pub fn new(addrs: Vec<SocketAddr>, names: Vec<String>) -> Local {
        let names = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        Local { addrs, names }
    }

    pub fn set_names(&mut self, names: Vec<String>) {
        self.names = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
    }

    /// The address to put in Via and Record-Route for messages sent to `to`:
    /// our listen address of the same family.
    pub fn addr_for(&self, to: &SocketAddr) -> SocketAddr {
        self.addrs
            .iter()
            .find(|a| a.is_ipv4() == to.is_ipv4())
            .or_else(|| self.addrs.first())
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    /// Does `host[:port]` (port absent = 5060) name this server?
    pub fn is_me(&self, host: &Host, port: Option<u16>) -> bool {
        let port = port.unwrap_or(5060);
        match host.ip() {
            Some(ip) => self
                .addrs
                .iter()
                .any(|a| a.port() == port && ip_matches(a.ip(), ip)),
            None => {
                let Host::Name(name) = host else { return false };
                self.addrs.iter().any(|a| a.port() == port)
                    && self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
            }
        }
    }
}

fn ip_matches(listen: IpAddr, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    // Listening on 0.0.0.0 / :: : any of our addresses; we cannot list the
    // interfaces cheaply, so accept loopback as ours and anything else
    // equal to the listen address.
    listen == ip || (listen.is_unspecified() && ip.is_loopback())
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
        assert_eq!(l.addr_for(&"[::1]:7000".parse().unwrap()).port(), 5062);
        assert_eq!(l.addr_for(&"127.0.0.2:7000".parse().unwrap()).port(), 5060);
    }
}
