//! sip.conf: parsing with line numbers, validation, and the lookups the
//! registrar and router need (by name, short number in a group, long number,
//! static host address). A `Config` is immutable; reload builds a new one.
//!
//! The format and every decision taken where the spec (§2) is open are
//! described in `sip.conf.example` and in the module docs of `parse` (text
//! format), `build` (keys and checks), [`Exten`] (the exten grammar) and
//! [`numbers`] (normalisation).
//!
//! Treat a parsed `Config` as read-only: its lookups use indexes built by
//! [`Config::parse`], so editing `clients` afterwards makes them stale.

mod build;
mod exten;
pub mod numbers;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ipnet::IpNet;
use regex::Regex;

pub use exten::Exten;

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
    /// Digest algorithms offered in challenges, in order of preference
    /// (`digest=md5` by default, as Kamailio and Asterisk: many phones take
    /// the first challenge and fail when they lack its algorithm, RFC 7616
    /// §3.7 notwithstanding; `digest=sha-256,md5` opts in to SHA-256).
    pub digest: Vec<crate::auth::Algorithm>,
    /// Concurrent calls a phone may make (`call_limit=`, default 20);
    /// gateways and mediagates get ten times as many unless their section
    /// says otherwise. 0: no limit of its own.
    pub call_limit: u32,
    /// Bindings (devices) a client may hold (`max_contacts=`, default 5).
    pub max_contacts: u32,
    /// Seconds between keep-alive OPTIONS to each UDP binding
    /// (`qualify=`, default 25: under the 30 s many NATs keep a UDP
    /// mapping; 0 off).
    pub qualify: u32,
    /// The digest `uri` must name the Request-URI (`digest_uri=request`,
    /// the default); `digest_uri=any` does not compare them (Kamailio's
    /// default; for a proxy in front that rewrites the Request-URI).
    pub check_digest_uri: bool,
    /// Days a CDR is kept in the store before it is pruned (at start and
    /// daily); 0 keeps them for ever.
    pub cdr_keep_days: u32,
    /// `tls_cert=`, `tls_key=`, `tls_ca=`: PEM files relative to DIR (read
    /// by the server, which refuses a reload whose files do not load).
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_ca: Option<String>,
    /// `ws_origins=`: the Origin values a WebSocket handshake may carry
    /// (empty: any).
    pub ws_origins: Vec<String>,
    /// `flood=REQUESTS/SECONDS`: out-of-dialog requests one source may
    /// send per window before it is banned (default 100/2; 0 off).
    pub flood: (u32, u32),
    /// `ban=SECONDS`: how long a flood ban lasts (default 300).
    pub ban: u32,
    /// `security_log=FILE` (relative to DIR): one line per security event.
    pub security_log: Option<String>,
    /// `metrics=IP:port`: where Prometheus scrapes `/metrics` (off when
    /// unset). A reload that changes it moves the listener.
    pub metrics: Option<std::net::SocketAddr>,
    /// `media=auto|relay|direct`: when sipd relays a call's RTP itself
    /// (default auto: when an end is behind NAT or the ends are on
    /// different address families).
    pub media: Media,
    /// `rtp_ports=LO-HI`: the UDP ports relay sockets take (default
    /// 20000-30000; a stream leg takes an even port and the one above).
    pub rtp_ports: (u16, u16),
    /// `rtp_address=IP`: where relay sockets are bound (default: the listen
    /// address a call's signalling uses on that leg).
    pub rtp_address: Option<std::net::IpAddr>,
    /// `media_timeout=SECONDS`: an answered relayed call with no packet in
    /// either direction for this long is ended (default 60; 0 off).
    pub media_timeout: u32,
}

/// `media=`: when RTP goes through sipd's relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Media {
    /// Relay when an end is behind NAT or the ends' address families differ.
    Auto,
    /// Always relay.
    Relay,
    /// Never relay (media goes end to end).
    Direct,
}

impl Media {
    pub fn parse(v: &str) -> Option<Media> {
        match v.to_ascii_lowercase().as_str() {
            "auto" => Some(Media::Auto),
            "relay" => Some(Media::Relay),
            "direct" => Some(Media::Direct),
            _ => None,
        }
    }
}

/// Default `qualify` of gateways and mediagates, seconds: how often sipd
/// checks that they answer OPTIONS (like Kamailio's dispatcher probing).
pub const GATEWAY_QUALIFY: u32 = 30;

/// How sipd reaches a static client (`transport=`; default udp).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// As written in sip.conf: `IP`, `IP:port`, IPv6 with a port as `[IP]:port`.
impl fmt::Display for HostAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (ip, Some(port)) => write!(f, "{}", SocketAddr::new(ip, port)),
        }
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
    /// Shared between clients with the same source (one compiled program
    /// and one cache pool, not one per client).
    pub dialplan: std::sync::Arc<Regex>,
    /// The source of `dialplan` (for display).
    pub dialplan_src: String,
    /// `exten.long` normalised with the config's country and city codes.
    long_norm: Option<String>,
    /// `call_limit=` of this section, if set.
    pub call_limit: Option<u32>,
    /// `max_contacts=` of this section, if set.
    pub max_contacts: Option<u32>,
    /// `qualify=` of this section, if set.
    pub qualify: Option<u32>,
    /// `digest=` of this section, if set: the algorithms this client's
    /// challenges offer, in order (and so the only ones it may answer with).
    pub digest: Option<Vec<crate::auth::Algorithm>>,
    /// `transport=`: how requests to its static `host` go (udp by default).
    pub transport: Transport,
    /// `media=` of this section, if set.
    pub media: Option<Media>,
}

impl Client {
    /// Concurrent calls this client may make (0: no limit of its own).
    pub fn call_limit(&self, general: &General) -> u32 {
        self.call_limit.unwrap_or(match self.role {
            Role::User => general.call_limit,
            Role::Gateway | Role::Mediagate => general.call_limit.saturating_mul(10),
        })
    }
    /// Bindings this client may hold at once.
    /// When this client's calls are relayed: its own `media=`, else `[general]`'s.
    pub fn media(&self, general: &General) -> Media {
        self.media.unwrap_or(general.media)
    }
    pub fn max_contacts(&self, general: &General) -> u32 {
        self.max_contacts.unwrap_or(general.max_contacts)
    }
    /// Seconds between OPTIONS pings to this client (0: off): its own
    /// `qualify=`, else by role. A user's UDP bindings get `[general]
    /// qualify` (default 25, NAT keep-alive); a gateway or mediagate gets
    /// [`GATEWAY_QUALIFY`] whatever `[general]` says (health checks of its
    /// `host`, and of its UDP bindings when it registers).
    pub fn qualify(&self, general: &General) -> u32 {
        self.qualify.unwrap_or(match self.role {
            Role::User => general.qualify,
            Role::Gateway | Role::Mediagate => GATEWAY_QUALIFY,
        })
    }
    /// Digest algorithms this client is challenged with, in order.
    pub fn digest<'a>(&'a self, general: &'a General) -> &'a [crate::auth::Algorithm] {
        self.digest.as_deref().unwrap_or(&general.digest)
    }
    /// True when `ip` is allowed by `permit` (empty = any). An IPv4-mapped
    /// IPv6 address (`::ffff:1.2.3.4`) is also checked as the IPv4 address.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.permit.is_empty() {
            return true;
        }
        let canonical = ip.to_canonical();
        self.permit
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }
    /// The long number normalised (§4.3), if the client has one.
    pub fn long_normalised(&self) -> Option<&str> {
        self.long_norm.as_deref()
    }

    /// Same settings (every parsed value except the line number).
    fn same_settings(&self, other: &Client) -> bool {
        self.name == other.name
            && self.accountcode == other.accountcode
            && self.role == other.role
            && self.secret == other.secret
            && self.permit == other.permit
            && self.host == other.host
            && self.exten == other.exten
            && self.prefix == other.prefix
            && self.callerid == other.callerid
            && self.dialplan_src == other.dialplan_src
            && self.long_norm == other.long_norm
            && self.transport == other.transport
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

/// One error per line, `FILE:LINE: message`; an error about the whole file
/// (line 0, e.g. unreadable) is `FILE: message`. No trailing newline.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.line {
                0 => write!(f, "{}: {}", self.file_name, e.message)?,
                line => write!(f, "{}:{}: {}", self.file_name, line, e.message)?,
            }
        }
        Ok(())
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
    /// Normalised long number → client.
    by_long: HashMap<String, usize>,
    /// accountcode → short number → client.
    by_short: HashMap<String, HashMap<String, usize>>,
    /// accountcode → members in sip.conf order.
    groups: HashMap<String, Vec<usize>>,
    /// `host=IP:port` → client (IPs canonical: no IPv4-mapped IPv6).
    by_host_port: HashMap<SocketAddr, usize>,
    /// `host=IP` (no port) → client.
    by_host_ip: HashMap<IpAddr, usize>,
    /// The IP of every static `host=`, with or without a port (canonical).
    host_ips: std::collections::HashSet<IpAddr>,
}

impl Config {
    /// An empty configuration (no sip.conf).
    pub fn empty(opts: &Options) -> Config {
        Config::from_clients(General::defaults(opts), opts, Vec::new())
    }

    /// Parse and validate sip.conf text. Every error found is reported,
    /// sorted by line.
    pub fn parse(text: &str, opts: &Options) -> Result<Config, ConfigErrors> {
        build::build(text, opts)
    }

    /// Read and parse a file. A missing file is `Ok(None)`; an unreadable one
    /// is an error on line 0 (displayed as `FILE: cannot read: …`). Text
    /// that is not UTF-8 is an error on the line of the first bad byte.
    pub fn load(path: &Path, opts: &Options) -> Result<Option<Config>, ConfigErrors> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ConfigErrors::one(opts, 0, format!("cannot read: {e}"))),
        };
        match String::from_utf8(bytes) {
            Ok(text) => Config::parse(&text, opts).map(Some),
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
                Err(ConfigErrors::one(
                    opts,
                    line,
                    "not valid UTF-8 text".to_string(),
                ))
            }
        }
    }

    /// A config with these (already validated) clients and their indexes.
    fn from_clients(general: General, opts: &Options, clients: Vec<Client>) -> Config {
        let mut config = Config {
            general,
            country: opts.country.clone(),
            city: opts.city.clone(),
            clients,
            by_name: HashMap::new(),
            by_long: HashMap::new(),
            by_short: HashMap::new(),
            groups: HashMap::new(),
            by_host_port: HashMap::new(),
            by_host_ip: HashMap::new(),
            host_ips: std::collections::HashSet::new(),
        };
        for (i, c) in config.clients.iter().enumerate() {
            config.by_name.insert(c.name.clone(), i);
            if let Some(long) = &c.long_norm {
                config.by_long.insert(long.clone(), i);
            }
            if let Some(acc) = &c.accountcode {
                config.groups.entry(acc.clone()).or_default().push(i);
                if let Some(short) = &c.exten.short {
                    config
                        .by_short
                        .entry(acc.clone())
                        .or_default()
                        .insert(short.clone(), i);
                }
            }
            match c.host {
                Some(HostAddr {
                    ip,
                    port: Some(port),
                }) => {
                    config.by_host_port.insert(SocketAddr::new(ip, port), i);
                }
                Some(HostAddr { ip, port: None }) => {
                    config.by_host_ip.insert(ip, i);
                }
                None => {}
            }
            if let Some(h) = c.host {
                config.host_ips.insert(h.ip.to_canonical());
            }
        }
        config
    }

    /// Is `ip` a static client's address (any port)? O(1): asked for
    /// every out-of-dialog request by the flood defence.
    pub fn is_host_ip(&self, ip: IpAddr) -> bool {
        self.host_ips.contains(&ip.to_canonical())
    }

    pub fn client(&self, name: &str) -> Option<&Client> {
        self.by_name.get(name).map(|&i| &self.clients[i])
    }
    /// The client with short number `short` in group `accountcode`.
    pub fn by_short(&self, accountcode: &str, short: &str) -> Option<&Client> {
        let i = *self.by_short.get(accountcode)?.get(short)?;
        Some(&self.clients[i])
    }
    /// The client whose long number equals `dialed` after normalisation of both.
    pub fn by_long(&self, dialed: &str) -> Option<&Client> {
        let normalised = self.normalise(dialed)?;
        self.by_long.get(&normalised).map(|&i| &self.clients[i])
    }
    /// The static (`host=`) client a packet from `src` belongs to: a host with
    /// a port matches IP and port, one without a port matches the IP alone;
    /// the exact (IP, port) match wins.
    /// IPv4-mapped IPv6 sources (`::ffff:1.2.3.4`) match as the IPv4 address.
    pub fn by_source(&self, src: SocketAddr) -> Option<&Client> {
        let ip = src.ip().to_canonical();
        let i = self
            .by_host_port
            .get(&SocketAddr::new(ip, src.port()))
            .or_else(|| self.by_host_ip.get(&ip))?;
        Some(&self.clients[*i])
    }
    /// Members of a group in sip.conf order.
    pub fn group(&self, accountcode: &str) -> Vec<&Client> {
        self.groups
            .get(accountcode)
            .map(|members| members.iter().map(|&i| &self.clients[i]).collect())
            .unwrap_or_default()
    }
    /// The hunting list of `client` resolved to clients, in list order.
    /// (Positions are validated by `parse`; one that does not resolve, for a
    /// client that is not from this config, is skipped.)
    pub fn hunt_list(&self, client: &Client) -> Vec<&Client> {
        let Some(acc) = &client.accountcode else {
            return Vec::new();
        };
        let group = self.group(acc);
        client
            .exten
            .hunt
            .iter()
            .filter_map(|&p| group.get(p.checked_sub(1)?).copied())
            .collect()
    }
    /// Gateways that take outgoing calls (have a prefix), in sip.conf order.
    pub fn gateways(&self) -> Vec<&Client> {
        self.clients
            .iter()
            .filter(|c| c.role == Role::Gateway && c.prefix.is_some())
            .collect()
    }
    /// Mediagates in sip.conf order.
    pub fn mediagates(&self) -> Vec<&Client> {
        self.clients
            .iter()
            .filter(|c| c.role == Role::Mediagate)
            .collect()
    }
    /// Normalise a dialed number with this config's country and city codes.
    pub fn normalise(&self, dialed: &str) -> Option<String> {
        numbers::normalise(dialed, &self.country, &self.city)
    }
    /// Clients matching WHO: a name, a long number or a short number (in any group).
    /// The first that matches wins: the name, else the long number, else the
    /// short numbers of every group (in sip.conf order). Empty when nothing
    /// matches.
    pub fn lookup(&self, who: &str) -> Vec<&Client> {
        if let Some(c) = self.client(who) {
            return vec![c];
        }
        if let Some(c) = self.by_long(who) {
            return vec![c];
        }
        self.clients
            .iter()
            .filter(|c| c.accountcode.is_some() && c.exten.short.as_deref() == Some(who))
            .collect()
    }
    /// Which clients were added, removed or changed going from `self` to `new`.
    /// `added` and `changed` are in the new sip.conf order, `removed` in the
    /// old one. Changed means any parsed value differs (the dialplan compared
    /// by its source; the line number does not count), or the hunting list
    /// resolves to other clients (because the group's order changed).
    pub fn diff(&self, new: &Config) -> Diff {
        let mut diff = Diff::default();
        for c in &new.clients {
            match self.client(&c.name) {
                None => diff.added.push(c.name.clone()),
                Some(old) => {
                    let hunt = |cfg: &Config, c: &Client| -> Vec<String> {
                        cfg.hunt_list(c).iter().map(|t| t.name.clone()).collect()
                    };
                    if !old.same_settings(c) || hunt(self, old) != hunt(new, c) {
                        diff.changed.push(c.name.clone());
                    }
                }
            }
        }
        for c in &self.clients {
            if new.client(&c.name).is_none() {
                diff.removed.push(c.name.clone());
            }
        }
        diff
    }
}

impl General {
    /// The defaults: realm from the options, noanswer 20, expires 60–3600.
    pub fn defaults(opts: &Options) -> General {
        General {
            realm: opts.default_realm.clone(),
            noanswer: 20,
            min_expires: 60,
            max_expires: 3600,
            digest: vec![crate::auth::Algorithm::Md5],
            call_limit: 20,
            max_contacts: 5,
            qualify: 25,
            check_digest_uri: true,
            cdr_keep_days: 90,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            ws_origins: Vec::new(),
            flood: (100, 2),
            ban: 300,
            security_log: None,
            metrics: None,
            media: Media::Auto,
            rtp_ports: (20000, 30000),
            rtp_address: None,
            media_timeout: 60,
        }
    }
}

impl ConfigErrors {
    fn one(opts: &Options, line: usize, message: String) -> ConfigErrors {
        ConfigErrors {
            file_name: opts.file_name.clone(),
            errors: vec![ConfigError { line, message }],
        }
    }
}
