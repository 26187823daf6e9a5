//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::header::Params;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
}

/// Host part: a domain name (kept as written, compared case-insensitively by
/// callers), an IPv4 address or an IPv6 reference (written `[…]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
            Host::Name(_) => None,
        }
    }
    /// Parse `name`, `1.2.3.4` or `[::1]`.
    pub fn parse(s: &str) -> Option<Host> {
        todo!("{s}")
    }
}

/// Writes IPv6 in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("{:?}", f.width())
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriError(pub String);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad URI: {}", self.0)
    }
}

impl std::error::Error for UriError {}

/// A parsed URI. `user` and `password` are %-unescaped. For `tel:` URIs the
/// number (e.g. `+74951234567`) is in `user` and `host` is `Host::Name("")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
    /// `?name=value&…` headers, %-unescaped.
    pub headers: Vec<(String, String)>,
}

impl Uri {
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        todo!("{s}")
    }
}

/// Serialises with user/password re-escaped where needed, IPv6 in brackets.
impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("{:?}", f.width())
    }
}
