//! Who a dialed number is and where a client can be reached now (spec §4.2
//! rules 2–5): what the router, the feature codes and the forwarding rules
//! all need. Pure: registrations come in through a locator function.
//!
//! [`resolve`] applies rules 2–4 (a user client's name, a short number in
//! the dialer's group, a long number, all normalised) and calls anything
//! else external; gateways and mediagates are never targets. [`reach`] finds
//! a user client (its registration, else its `host`), [`reach_as`] a
//! gateway or mediagate with the user part of the Request-URI set.

use std::net::SocketAddr;

use crate::config::{Client, Config, Role};
use crate::transport::{Peer, Transport};

/// Where a client can be reached now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Where to send (the registration's source transport/address/flow).
    pub dest: Peer,
    /// Request-URI to use: the registered Contact.
    pub uri: String,
}

/// What a dialed number means for a dialer (rules 2–5, without the checks
/// of rule 5).
#[derive(Clone, Debug)]
pub enum Resolved<'a> {
    /// A user client (by name, short number in the dialer's group, long number).
    Client(&'a Client),
    /// An external number, normalised.
    External(String),
    /// Neither a client nor a number that normalises.
    NotANumber,
}

/// Resolve `number` as dialed by `dialer` (rules 2–4, else external).
pub fn resolve<'a>(config: &'a Config, dialer: &Client, number: &str) -> Resolved<'a> {
    let user = |c: &'a Client| (c.role == Role::User).then_some(c);
    let target = config
        .client(number)
        .and_then(user)
        .or_else(|| {
            let acc = dialer.accountcode.as_deref()?;
            config.by_short(acc, number).and_then(user)
        })
        .or_else(|| config.by_long(number).and_then(user));
    match target {
        Some(t) => Resolved::Client(t),
        None => match config.normalise(number) {
            Some(n) => Resolved::External(n),
            None => Resolved::NotANumber,
        },
    }
}

/// Where to reach user client `client` now: its registration (Request-URI
/// = the registered Contact), else its `host` over UDP with Request-URI
/// `sip:{user}@{host:port}`, else `None`.
pub fn reach(
    client: &Client,
    user: &str,
    locate: &dyn Fn(&str) -> Option<Location>,
) -> Option<Location> {
    locate(&client.name).or_else(|| host_location(client, user))
}

/// Like [`reach`], but the Request-URI user is always `user` (also in a
/// registered Contact): for gateways and mediagates, where the user part
/// carries the number or feature code.
pub fn reach_as(
    client: &Client,
    user: &str,
    locate: &dyn Fn(&str) -> Option<Location>,
) -> Option<Location> {
    match locate(&client.name) {
        Some(loc) => Some(Location {
            dest: loc.dest,
            uri: with_user(&loc.uri, user),
        }),
        None => host_location(client, user),
    }
}

/// Where requests to a client's `host` go: its `transport=` and the
/// written port, else the transport's own (5061 for TLS). Also where the
/// gateway health checks go (`core/gateways.rs`).
pub fn host_peer(client: &Client) -> Option<Peer> {
    use crate::config::Transport as T;
    let host = client.host?;
    let transport = match client.transport {
        T::Udp => Transport::Udp,
        T::Tcp => Transport::Tcp,
        T::Tls => Transport::Tls,
    };
    let addr = SocketAddr::new(host.ip, host.port.unwrap_or(transport.default_port()));
    Some(Peer::to(transport, addr))
}

fn host_location(client: &Client, user: &str) -> Option<Location> {
    let dest = host_peer(client)?;
    let param = match dest.transport {
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        _ => "",
    };
    Some(Location {
        dest,
        uri: format!("sip:{user}@{}{param}", dest.addr),
    })
}

/// `uri` (`sip:[user@]host…`) with its user part set to `user`.
fn with_user(uri: &str, user: &str) -> String {
    let Some(colon) = uri.find(':') else {
        return format!("sip:{user}@{uri}");
    };
    let (scheme, rest) = uri.split_at(colon + 1);
    // '@' may not appear unescaped in URI parameters or headers: the first
    // one ends the userinfo.
    let hostport = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}{user}@{hostport}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Options;

    const EXAMPLE: &str = include_str!("../../../sip.conf.example");

    fn config(text: &str) -> Config {
        let opts = Options {
            country: "7".to_string(),
            city: "495".to_string(),
            default_realm: "pbx.test".to_string(),
            file_name: "sip.conf".to_string(),
        };
        Config::parse(text, &opts).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn with_user_replaces_the_user_part() {
        assert_eq!(with_user("sip:a@h:5060;ob", "123"), "sip:123@h:5060;ob");
        assert_eq!(with_user("sip:h:5060", "123"), "sip:123@h:5060");
        assert_eq!(with_user("sips:a:pw@h", "*70"), "sips:*70@h");
        assert_eq!(
            with_user("sip:a;x=y@[::1]:5070;transport=tcp", "1"),
            "sip:1@[::1]:5070;transport=tcp"
        );
        assert_eq!(with_user("h", "1"), "sip:1@h");
    }

    #[test]
    fn resolve_order_and_kinds() {
        let cfg = config(EXAMPLE);
        let s1 = cfg.client("siphone1").unwrap();
        let g = cfg.client("GATE1").unwrap();
        let name = |r: Resolved| match r {
            Resolved::Client(c) => c.name.clone(),
            Resolved::External(n) => format!("ext:{n}"),
            Resolved::NotANumber => "none".to_string(),
        };
        assert_eq!(name(resolve(&cfg, s1, "foo")), "foo");
        assert_eq!(name(resolve(&cfg, s1, "1002")), "siphone2");
        assert_eq!(name(resolve(&cfg, g, "1002")), "ext:74951002");
        assert_eq!(name(resolve(&cfg, s1, "+74999876543")), "siphone2");
        assert_eq!(name(resolve(&cfg, s1, "GATE1")), "none");
        assert_eq!(name(resolve(&cfg, s1, "*72")), "none");
    }
}
