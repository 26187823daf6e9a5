//! Command-line flags (spec §1). The seed's single-dash flags are kept
//! exactly (`-cc 812` is one flag, not `-c c`), with long forms beside them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone, PartialEq)]
#[command(
    name = "sipd",
    about = "SIP registrar, stateful proxy and small-office PBX",
    disable_version_flag = true,
    after_help = "Seed-compatible flags: -a -b ADDR -c CODE -cc CODE -d -s DIR -r -v.\n\
                  SIGTERM/SIGINT stop sipd gracefully; SIGHUP reloads sip.conf."
)]
pub struct Flags {
    /// Print about (name, description, copyright) and exit
    #[arg(short = 'a', long = "about")]
    pub about: bool,
    /// Listen address, repeatable: IP:port for SIP over UDP and TCP (IPv6 as
    /// [::1]:5060), tls:IP:port for SIP over TLS, ws:IP:port and wss:IP:port for
    /// SIP over WebSocket and secure WebSocket (RFC 7118)
    #[arg(
        short = 'b',
        long = "listen",
        value_name = "[tls:|ws:|wss:]ADDR",
        default_value = "127.0.0.1:5060",
        value_parser = listen
    )]
    pub listen: Vec<Listen>,
    /// Current country code
    #[arg(short = 'c', long = "country", value_name = "CODE", default_value = "7", value_parser = digits)]
    pub country: String,
    /// Current city code (seed flag: -cc)
    #[arg(long = "city", value_name = "CODE", default_value = "495", value_parser = digits)]
    pub city: String,
    /// Debug: print every SIP message received (<<) and sent (>>) to stdout
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// Working directory: sip.conf, the store and the control socket live here
    #[arg(short = 's', long = "dir", value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Tell the sipd running in the working directory to reload sip.conf
    #[arg(short = 'r', long = "reload")]
    pub reload: bool,
    /// Print name, version and hostname (the realm) and exit
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// Configuration file (default DIR/sip.conf)
    #[arg(long = "conf", value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// Control socket path (default DIR/sipd.sock)
    #[arg(long = "ctl", value_name = "PATH")]
    pub ctl: Option<PathBuf>,
    /// Lifetime of digest nonces in seconds (an older nonce gets stale=true)
    #[arg(long = "nonce-expire", value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub nonce_expire: u64,
    /// Threads reading each UDP socket
    #[arg(long = "udp-threads", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub udp_threads: u64,
    /// Media relay forwarding threads (0: one per core, at most 4)
    #[arg(long = "rtp-threads", value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub rtp_threads: u64,
    /// Most TCP connections open at once
    #[arg(long = "tcp-max-connections", value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tcp_max_connections: u64,
    /// Most TCP connections accepted from one IP address
    #[arg(long = "tcp-max-per-ip", value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tcp_max_per_ip: u64,
    /// Seconds a new TCP connection has to deliver its first SIP message
    #[arg(long = "tcp-first-message", value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tcp_first_message: u64,
    /// Seconds without anything read after which a trusted TCP connection is closed
    #[arg(long = "tcp-idle", value_name = "SECS", default_value_t = 7500,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub tcp_idle: u64,
    /// Seconds after its last complete message that a TCP connection which has
    /// not carried an authenticated request (and is not a static host's) is closed
    #[arg(long = "tcp-untrusted-idle", value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub tcp_untrusted_idle: u64,
    /// Seconds a SIP message that has started to arrive over TCP has to arrive complete
    #[arg(long = "tcp-message-timeout", value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tcp_message_timeout: u64,
    /// Most untrusted TCP connections open at once (default: half of --tcp-max-connections)
    #[arg(long = "tcp-max-untrusted", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tcp_max_untrusted: Option<u64>,
    /// Most untrusted TCP connections from one IP address (default: three quarters of --tcp-max-per-ip)
    #[arg(long = "tcp-max-untrusted-per-ip", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tcp_max_untrusted_per_ip: Option<u64>,
    /// Seconds a TLS handshake (and a WebSocket upgrade) may take, else the connection is closed
    #[arg(long = "handshake-timeout", value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub handshake_timeout: u64,
    /// Bytes queued for a TCP peer that does not read before its connection is closed
    #[arg(long = "tcp-max-queued", value_name = "BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub tcp_max_queued: u64,
    /// Most server transactions (and, separately, client transactions) at once
    #[arg(long = "max-transactions", value_name = "N", default_value_t = DEFAULT_TX.max_server as u64,
          value_parser = clap::value_parser!(u64).range(16..=10_000_000))]
    pub max_transactions: u64,
    /// Most open server transactions (not answered yet, or an INVITE's error
    /// not ACKed yet) from all sources together (then 503)
    #[arg(long = "max-open-transactions", value_name = "N",
          default_value_t = DEFAULT_TX.max_open as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_open_transactions: u64,
    /// Most open server transactions one source IP address may hold (then 503)
    #[arg(long = "max-transactions-per-source", value_name = "N",
          default_value_t = DEFAULT_TX.max_open_per_source as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_transactions_per_source: u64,

    /// Where bindings, forwarding overrides and CDRs are kept:
    /// `sqlite:PATH` (default: DIR/sipd.db) or
    /// `postgresql://USER[:PASS]@HOST[:PORT]/DB` (several nodes on one
    /// database share registrations, forwarding and CDRs)
    #[arg(long = "store", value_name = "URL", value_parser = store_url)]
    pub store: Option<StoreUrl>,

    /// This node's name on a shared PostgreSQL store (default: the hostname)
    #[arg(long = "node", value_name = "NAME")]
    pub node: Option<String>,

    /// The SIP address other nodes send requests for this node's phones to
    /// (default: the first UDP listen address; needed when that is a
    /// wildcard such as 0.0.0.0)
    #[arg(long = "node-address", value_name = "IP:PORT")]
    pub node_address: Option<SocketAddr>,
}

/// A `--store` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

fn store_url(s: &str) -> Result<StoreUrl, String> {
    if let Some(path) = s.strip_prefix("sqlite:") {
        if path.is_empty() {
            return Err("sqlite: needs a path (sqlite:/var/lib/sipd/sipd.db)".into());
        }
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    if s.starts_with("postgresql://") || s.starts_with("postgres://") {
        return Ok(StoreUrl::Postgres(s.to_string()));
    }
    Err(format!(
        "'{}' is not sqlite:PATH or postgresql://USER[:PASS]@HOST[:PORT]/DB",
        s.split('@').next_back().unwrap_or(s)
    ))
}

/// The transaction limits the flags start from.
const DEFAULT_TX: crate::transaction::TxLimits = crate::transaction::TxLimits::DEFAULT;

/// Which transports a `-b` address serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenKind {
    /// A bare address: UDP and TCP (seed-compatible).
    UdpTcp,
    Tls,
    Ws,
    Wss,
}

/// One `-b` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Listen {
    pub kind: ListenKind,
    pub addr: SocketAddr,
}

fn listen(s: &str) -> Result<Listen, String> {
    let (kind, rest) = match s.split_once(':') {
        Some((p, rest)) if p.eq_ignore_ascii_case("tls") => (ListenKind::Tls, rest),
        Some((p, rest)) if p.eq_ignore_ascii_case("ws") => (ListenKind::Ws, rest),
        Some((p, rest)) if p.eq_ignore_ascii_case("wss") => (ListenKind::Wss, rest),
        Some((p, _)) if p.eq_ignore_ascii_case("udp") || p.eq_ignore_ascii_case("tcp") => {
            return Err(format!(
                "'{s}': a bare IP:port listens on UDP and TCP; the prefixes are tls:, ws: and wss:"
            ))
        }
        _ => (ListenKind::UdpTcp, s),
    };
    let addr = rest
        .parse::<SocketAddr>()
        .map_err(|_| format!("'{s}' is not [tls:|ws:|wss:]IP:port (IPv6 as [::1]:5060)"))?;
    Ok(Listen { kind, addr })
}

fn digits(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not a code of 1 to 6 digits"))
    }
}

impl Flags {
    /// The addresses for SIP over UDP and TCP.
    pub fn sip_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(ListenKind::UdpTcp)
    }

    /// The addresses for SIP over TLS.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(ListenKind::Tls)
    }

    /// The addresses for SIP over WebSocket.
    pub fn ws_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(ListenKind::Ws)
    }

    /// The addresses for SIP over secure WebSocket.
    pub fn wss_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(ListenKind::Wss)
    }

    fn addrs(&self, kind: ListenKind) -> Vec<SocketAddr> {
        self.listen
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| l.addr)
            .collect()
    }

    /// Parse process arguments, accepting the seed's `-cc CODE` / `-cc=CODE`.
    pub fn parse_seed<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(rewrite_seed_args(args))
    }

    pub fn conf_path(&self) -> PathBuf {
        self.conf
            .clone()
            .unwrap_or_else(|| self.dir.join("sip.conf"))
    }

    pub fn ctl_path(&self) -> PathBuf {
        self.ctl
            .clone()
            .unwrap_or_else(|| proto::socket_path(&self.dir))
    }

    /// The SQLite store's file (`--store sqlite:PATH`, relative to DIR;
    /// default DIR/sipd.db); `None` with PostgreSQL.
    pub fn store_path(&self) -> Option<PathBuf> {
        match &self.store {
            None => Some(self.dir.join("sipd.db")),
            Some(StoreUrl::Sqlite(p)) => Some(self.dir.join(p)),
            Some(StoreUrl::Postgres(_)) => None,
        }
    }

    /// This node's name (`--node`, default the hostname).
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(hostname)
    }

    /// The TCP limits these flags set (write and connect timeouts fixed).
    /// The untrusted shares default to half of the connections and three
    /// quarters of those per IP (at least one), and never exceed them.
    pub fn tcp_limits(&self) -> crate::transport::tcp::TcpLimits {
        use std::time::Duration;
        let max_connections = self.tcp_max_connections as usize;
        let max_per_ip = self.tcp_max_per_ip as usize;
        let max_untrusted = self
            .tcp_max_untrusted
            .map_or(max_connections / 2, |n| n as usize)
            .clamp(1, max_connections);
        let max_untrusted_per_ip = self
            .tcp_max_untrusted_per_ip
            .map_or(max_per_ip - max_per_ip / 4, |n| n as usize)
            .clamp(1, max_per_ip);
        crate::transport::tcp::TcpLimits {
            max_connections,
            max_per_ip,
            max_untrusted,
            max_untrusted_per_ip,
            first_message_timeout: Duration::from_secs(self.tcp_first_message),
            untrusted_idle: Duration::from_secs(self.tcp_untrusted_idle),
            idle_timeout: Duration::from_secs(self.tcp_idle),
            message_timeout: Duration::from_secs(self.tcp_message_timeout),
            max_queued_bytes: self.tcp_max_queued as usize,
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            ..crate::transport::tcp::TcpLimits::default()
        }
    }

    /// The transaction limits these flags set.
    pub fn tx_limits(&self) -> crate::transaction::TxLimits {
        crate::transaction::TxLimits {
            max_server: self.max_transactions as usize,
            max_client: self.max_transactions as usize,
            max_open_per_source: self.max_transactions_per_source as usize,
            max_open: self.max_open_transactions as usize,
            ..crate::transaction::TxLimits::DEFAULT
        }
    }
}

/// `-cc` is one seed flag; clap would read it as `-c c`.
fn rewrite_seed_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_dashdash = false;
    for a in args {
        if after_dashdash {
            out.push(a);
            continue;
        }
        if a == "--" {
            after_dashdash = true;
            out.push(a);
        } else if a == "-cc" {
            out.push("--city".into());
        } else if let Some(v) = a.strip_prefix("-cc=") {
            out.push(format!("--city={v}"));
        } else {
            out.push(a);
        }
    }
    out
}

/// The machine's hostname: the default realm.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // when the name fits (we also bound the read by the buffer length).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(s) if !s.is_empty() => s.to_string(),
        _ => "localhost".into(),
    }
}

pub fn about() -> String {
    format!(
        "sipd {} - SIP registrar, stateful proxy and small-office PBX\n\
         Copyright (c) 2018 Vasily Suvorov (the Go sipd), 2026 the sipd developers. MIT license.\n",
        env!("CARGO_PKG_VERSION")
    )
}

pub fn version_line() -> String {
    format!(
        "sipd {} (realm {})\n",
        env!("CARGO_PKG_VERSION"),
        hostname()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::parse_seed(
            std::iter::once("sipd")
                .chain(args.iter().copied())
                .map(String::from),
        )
    }

    #[test]
    fn defaults() {
        let f = parse(&[]).unwrap();
        assert_eq!(
            f.sip_addrs(),
            vec!["127.0.0.1:5060".parse::<SocketAddr>().unwrap()]
        );
        assert!(f.tls_addrs().is_empty());
        assert_eq!((f.country.as_str(), f.city.as_str()), ("7", "495"));
        assert_eq!(f.dir, PathBuf::from("."));
        assert!(!f.debug && !f.reload && !f.version && !f.about);
        assert_eq!(f.conf_path(), PathBuf::from("./sip.conf"));
        assert_eq!(f.ctl_path(), PathBuf::from("./sipd.sock"));
    }

    #[test]
    fn seed_flags() {
        let f = parse(&[
            "-cc",
            "812",
            "-c",
            "7",
            "-b",
            "127.0.0.1:5099",
            "-s",
            "/tmp/x",
            "-d",
        ])
        .unwrap();
        assert_eq!(f.city, "812");
        assert_eq!(f.country, "7");
        assert_eq!(
            f.sip_addrs(),
            vec!["127.0.0.1:5099".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(f.dir, PathBuf::from("/tmp/x"));
        assert!(f.debug);
        assert_eq!(parse(&["-cc=812"]).unwrap().city, "812");
        assert!(parse(&["-r"]).unwrap().reload);
        assert!(parse(&["-v"]).unwrap().version);
        assert!(parse(&["-a"]).unwrap().about);
    }

    #[test]
    fn long_forms_and_ipv6() {
        let f = parse(&[
            "--city",
            "812",
            "--listen",
            "[::1]:5070",
            "--listen",
            "127.0.0.1:5070",
        ])
        .unwrap();
        assert_eq!(f.city, "812");
        assert_eq!(f.listen.len(), 2);
        assert!(f.listen[0].addr.is_ipv6());
        let f = parse(&[
            "-b",
            "127.0.0.1:5060",
            "-b",
            "tls:127.0.0.1:5061",
            "-b",
            "TLS:[::1]:5061",
            "-b",
            "ws:127.0.0.1:8080",
            "-b",
            "wss:[::1]:8443",
        ])
        .unwrap();
        assert_eq!(
            f.ws_addrs(),
            vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            f.wss_addrs(),
            vec!["[::1]:8443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(f.sip_addrs().len(), 1);
        assert_eq!(
            f.tls_addrs(),
            vec![
                "127.0.0.1:5061".parse::<SocketAddr>().unwrap(),
                "[::1]:5061".parse().unwrap()
            ]
        );
        let f = parse(&["--conf", "/etc/sip.conf", "--ctl", "/run/s.sock"]).unwrap();
        assert_eq!(f.conf_path(), PathBuf::from("/etc/sip.conf"));
        assert_eq!(f.ctl_path(), PathBuf::from("/run/s.sock"));
    }

    #[test]
    fn bad_flags() {
        assert!(parse(&["-cc", "abc"]).is_err());
        assert!(parse(&["-c", ""]).is_err());
        assert!(parse(&["-b", "localhost"]).is_err());
        assert!(parse(&["-b", "1.2.3.4"]).is_err());
        assert!(parse(&["-b", "tls:1.2.3.4"]).is_err());
        assert!(parse(&["-b", "udp:1.2.3.4:5060"]).is_err());
        assert!(parse(&["-b", "foo:1.2.3.4:5060"]).is_err());
        assert!(parse(&["-x"]).is_err());
    }

    #[test]
    fn limit_flags() {
        use std::time::Duration;
        let f = parse(&[]).unwrap();
        let t = f.tcp_limits();
        assert_eq!((t.max_connections, t.max_untrusted), (4096, 2048));
        assert_eq!((t.max_per_ip, t.max_untrusted_per_ip), (128, 96));
        assert_eq!(t.untrusted_idle, Duration::from_secs(30));
        assert_eq!(t.message_timeout, Duration::from_secs(10));
        let x = f.tx_limits();
        assert_eq!(
            (x.max_server, x.max_open, x.max_open_per_source),
            (200_000, 24_576, 8_192)
        );
        let f = parse(&[
            "--tcp-max-connections",
            "10",
            "--tcp-max-per-ip",
            "3",
            "--tcp-untrusted-idle",
            "2",
            "--tcp-message-timeout",
            "1",
            "--max-transactions",
            "1000",
            "--max-open-transactions",
            "100",
            "--max-transactions-per-source",
            "5",
        ])
        .unwrap();
        let t = f.tcp_limits();
        // Derived shares follow the caps (at least one).
        assert_eq!((t.max_untrusted, t.max_untrusted_per_ip), (5, 3));
        assert_eq!(t.untrusted_idle, Duration::from_secs(2));
        let x = f.tx_limits();
        assert_eq!(
            (
                x.max_server,
                x.max_client,
                x.max_open,
                x.max_open_per_source
            ),
            (1000, 1000, 100, 5)
        );
        // Explicit shares never exceed their caps.
        let f = parse(&[
            "--tcp-max-per-ip",
            "1",
            "--tcp-max-untrusted",
            "9999",
            "--tcp-max-untrusted-per-ip",
            "50",
        ])
        .unwrap();
        let t = f.tcp_limits();
        assert_eq!((t.max_untrusted, t.max_untrusted_per_ip), (4096, 1));
        assert!(parse(&["--tcp-untrusted-idle", "0"]).is_err());
        assert!(parse(&["--max-transactions-per-source", "0"]).is_err());
    }

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().is_empty());
        assert!(version_line().starts_with("sipd "));
    }
}
