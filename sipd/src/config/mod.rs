//! sip.conf: parsing with line numbers, validation, and the lookups the
//! registrar and router need (by name, short number in a group, long number,
//! static host address). A `Config` is immutable; reload builds a new one.

mod exten;
pub mod numbers;
mod parse;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ipnet::IpNet;
use regex::Regex;

pub use exten::Exten;

/// Forwarding kind: `=F` (always) or `~F` (when unavailable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardKind {
    Always,
    Unavailable,
}

/// Values from the command line that sip.conf depends on.
#[derive(Clone, Debug)]
pub struct Options {
    /// Country code (`-c`), e.g. `7`.
    pub country: String,
    /// City code (`-cc`), e.g. `495`.
    pub city: String,
    /// Default realm when `[general] realm` is not set (the hostname).
    pub default_realm: String,
    /// File name used in error messages (`sip.conf` unless `--conf` names another file).
    pub file_name: String,
}

/// `[general]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct General {
    pub realm: String,
    /// Seconds before a ringing call counts as unavailable.
    pub noanswer: u32,
    pub min_expires: u32,
    pub max_expires: u32,
}

/// What a client is, from its accountcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    /// `accountcode=gateways`: trunk to the outside world.
    Gateway,
    /// `accountcode=mediagates`: media server for voice guidance.
    Mediagate,
}

/// `host=IP[:port]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostAddr {
    pub ip: IpAddr,
    /// Written port; `None` means 5060 for sending and "any port" for matching.
    pub port: Option<u16>,
}

impl HostAddr {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(5060))
    }
}

/// `callerid="Name" <number>` or a bare number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerId {
    pub display: Option<String>,
    pub number: String,
}

/// One `[section]` of sip.conf.
#[derive(Clone, Debug)]
pub struct Client {
    pub name: String,
    /// Line of the section header.
    pub line: usize,
    pub accountcode: Option<String>,
    pub role: Role,
    pub secret: Option<String>,
    /// Empty means any address.
    pub permit: Vec<IpNet>,
    pub host: Option<HostAddr>,
    /// For users: numbers, hunting, forwarding. For gateways `exten.long` is
    /// not used; see `prefix`.
    pub exten: Exten,
    /// Gateways: technical prefix prepended to the normalised number.
    pub prefix: Option<String>,
    pub callerid: Option<CallerId>,
    /// Compiled `dialplan`, or the `context` preset, or `.+`.
    pub dialplan: Regex,
    /// The source of `dialplan` (for display).
    pub dialplan_src: String,
}

impl Client {
    /// True when `ip` is allowed by `permit` (empty = any).
    pub fn permits(&self, ip: IpAddr) -> bool {
        todo!("{ip}")
    }
    /// The long number normalised (§4.3), if the client has one.
    pub fn long_normalised(&self) -> Option<&str> {
        todo!()
    }
}

/// One error with the line it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub message: String,
}

/// All errors of one load, displayed one per line as `FILE:LINE: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file_name: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("{:?}", f.width())
    }
}

impl std::error::Error for ConfigErrors {}

/// What changed between two configs (by client name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// A validated sip.conf.
#[derive(Clone, Debug)]
pub struct Config {
    pub general: General,
    pub country: String,
    pub city: String,
    /// In sip.conf order.
    pub clients: Vec<Client>,
    by_name: HashMap<String, usize>,
}

impl Config {
    /// An empty configuration (no sip.conf).
    pub fn empty(opts: &Options) -> Config {
        todo!("{opts:?}")
    }

    /// Parse and validate sip.conf text. Every error found is reported.
    pub fn parse(text: &str, opts: &Options) -> Result<Config, ConfigErrors> {
        todo!("{} {opts:?}", text.len())
    }

    /// Read and parse a file. A missing file is `Ok(None)`; an unreadable one
    /// is an error on line 0.
    pub fn load(path: &Path, opts: &Options) -> Result<Option<Config>, ConfigErrors> {
        todo!("{path:?} {opts:?}")
    }

    pub fn client(&self, name: &str) -> Option<&Client> {
        self.by_name.get(name).map(|&i| &self.clients[i])
    }
    /// The client with short number `short` in group `accountcode`.
    pub fn by_short(&self, accountcode: &str, short: &str) -> Option<&Client> {
        todo!("{accountcode} {short}")
    }
    /// The client whose long number equals `dialed` after normalisation of both.
    pub fn by_long(&self, dialed: &str) -> Option<&Client> {
        todo!("{dialed}")
    }
    /// The static (`host=`) client a packet from `src` belongs to: a host with
    /// a port matches IP and port, one without a port matches the IP alone;
    /// the exact (IP, port) match wins.
    pub fn by_source(&self, src: SocketAddr) -> Option<&Client> {
        todo!("{src}")
    }
    /// Members of a group in sip.conf order.
    pub fn group(&self, accountcode: &str) -> Vec<&Client> {
        todo!("{accountcode}")
    }
    /// The hunting list of `client` resolved to clients, in list order.
    pub fn hunt_list(&self, client: &Client) -> Vec<&Client> {
        todo!("{}", client.name)
    }
    /// Gateways that take outgoing calls (have a prefix), in sip.conf order.
    pub fn gateways(&self) -> Vec<&Client> {
        todo!()
    }
    /// Mediagates in sip.conf order.
    pub fn mediagates(&self) -> Vec<&Client> {
        todo!()
    }
    /// Normalise a dialed number with this config's country and city codes.
    pub fn normalise(&self, dialed: &str) -> Option<String> {
        numbers::normalise(dialed, &self.country, &self.city)
    }
    /// Clients matching WHO: a name, a long number or a short number (in any group).
    pub fn lookup(&self, who: &str) -> Vec<&Client> {
        todo!("{who}")
    }
    /// Which clients were added, removed or changed going from `self` to `new`.
    pub fn diff(&self, new: &Config) -> Diff {
        todo!("{}", new.clients.len())
    }
}
