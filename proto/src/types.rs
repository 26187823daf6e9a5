//! Result payloads of the control commands.

use serde::{Deserialize, Serialize};

use crate::Forwarding;

/// The `result` of a successful response, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    Reload(ReloadReport),
    Regs(Regs),
    Calls(Calls),
    Cdr(Cdrs),
    Fwd(FwdReport),
    Bans(Bans),
    Gateways(Gateways),
}

/// `bans`: the ban table, the next to end first (and, after `bans clear`,
/// how many were lifted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bans {
    pub bans: Vec<BanEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared: Option<usize>,
}

/// One ban: a source over the flood limit (its packets dropped), or a
/// brute-force lock (a user locked from an address, or an address locked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanEntry {
    pub address: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Packets from the address are dropped unanswered.
    pub dropped: bool,
    pub since_unix: u64,
    pub until_unix: u64,
}

/// `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub version: String,
    /// The realm (hostname unless sip.conf sets one).
    pub realm: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// `udp:127.0.0.1:5060`, `tcp:[::1]:5060`, …
    pub listen: Vec<String>,
    pub country: String,
    pub city: String,
    pub dir: String,
    pub config: String,
    pub clients: usize,
    pub registrations: usize,
    pub calls: usize,
    pub transactions: usize,
    pub counters: Vec<Counter>,
    /// The store's health (absent from daemons older than this field: ok).
    /// Boxed: `Reply` stays small.
    #[serde(default)]
    pub store: Box<StoreStatus>,
}

/// The store in `status`: `ok`, or `degraded` while writes fail (a full
/// disk) and wait, queued, for a retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `ok` or `degraded`.
    pub state: String,
    /// Writes accepted and not yet committed.
    pub queued: u64,
    /// Seconds the store has been degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_secs: Option<u64>,
    /// The last write error (kept after the store recovered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Writes lost since start (queue full while degraded, or not written
    /// at shutdown), each logged.
    #[serde(default)]
    pub dropped: u64,
    /// Which store: `sqlite PATH` or `postgresql://USER@HOST:PORT/DB`
    /// (empty from daemons older than this field).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// PostgreSQL store: this node's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// PostgreSQL store: whether the change feed (LISTEN/NOTIFY and
    /// heartbeats) is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<bool>,
    /// PostgreSQL store: the other nodes, as their heartbeats show them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
}

/// Another node on the shared store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    /// Its SIP address.
    pub addr: String,
    /// `alive` or `down` (silent for more than 10 s).
    pub state: String,
    /// Seconds since its last heartbeat.
    pub silent_secs: u64,
}

impl Default for StoreStatus {
    fn default() -> StoreStatus {
        StoreStatus {
            state: "ok".into(),
            queued: 0,
            degraded_secs: None,
            last_error: None,
            dropped: 0,
            kind: String::new(),
            node: None,
            feed: None,
            nodes: Vec::new(),
        }
    }
}

impl StoreStatus {
    pub fn is_ok(&self) -> bool {
        self.state == "ok"
    }
}

/// `ok`, `ok (3 writes dropped since start)` or
/// `degraded (12 queued, last error: database or disk is full)`.
impl std::fmt::Display for StoreStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.state)?;
        let mut details = Vec::new();
        if !self.is_ok() {
            details.push(format!("{} queued", self.queued));
            if let Some(s) = self.degraded_secs {
                details.push(format!("for {s} s"));
            }
            if let Some(e) = &self.last_error {
                details.push(format!("last error: {e}"));
            }
        }
        if self.dropped > 0 {
            details.push(format!("{} writes dropped since start", self.dropped));
        }
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        Ok(())
    }
}

/// A named counter (messages in/out, errors, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub name: String,
    pub value: u64,
}

/// `reload`: what changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Clients in the new configuration.
    pub clients: usize,
}

/// What `sipctl reload` and `sipd -r` print.
impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        writeln!(f, "reloaded: {} clients", self.clients)?;
        writeln!(f, "added: {}", list(&self.added))?;
        writeln!(f, "removed: {}", list(&self.removed))?;
        writeln!(f, "changed: {}", list(&self.changed))
    }
}

/// `regs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regs {
    pub bindings: Vec<Binding>,
}

/// One registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub name: String,
    pub contact: String,
    /// `udp:127.0.0.1:40000`
    pub source: String,
    pub expires: u64,
    pub user_agent: String,
    /// Keep-alive state: `reachable`, `unreachable` or `unknown` (not
    /// pinged yet, or keep-alive off for it).
    #[serde(default)]
    pub status: String,
    /// Round-trip time of the last answered keep-alive OPTIONS, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
    /// `+sip.instance` of the device (RFC 5626), empty when none.
    #[serde(default)]
    pub instance: String,
    /// A flow-based (RFC 5626 outbound) binding: requests go over its flow.
    #[serde(default)]
    pub outbound: bool,
    /// PostgreSQL store with several nodes: the node that holds the
    /// device's flow, when it is another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `calls`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calls {
    pub calls: Vec<CallInfo>,
}

/// One call in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    pub call_id: String,
    pub caller: String,
    pub dialed: String,
    pub target: String,
    /// `trying`, `ringing`, `answered`
    pub state: String,
    pub duration_secs: u64,
    /// The device that answered (its registered Contact), empty before.
    #[serde(default)]
    pub device: String,
    /// The call's media relay, when its media goes through sipd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaInfo>,
}

/// What sipd's media relay did for one call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Packets and bytes relayed from the caller (to the callee), and
    /// from the callee (to the caller).
    pub packets_from_caller: u64,
    pub bytes_from_caller: u64,
    pub packets_from_callee: u64,
    pub bytes_from_callee: u64,
    /// Packets dropped (from foreign addresses, or with nowhere to go).
    pub dropped: u64,
    /// Where each end's RTP comes from, once the relay latched it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee_addr: Option<String>,
    /// The relay's RTP ports facing the caller and the callee (first stream).
    pub caller_port: u16,
    pub callee_port: u16,
}

/// `cdr`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdrs {
    pub records: Vec<Cdr>,
}

/// One call detail record (spec §4.6). Times are unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cdr {
    pub call_id: String,
    pub caller: String,
    pub callerid: String,
    pub accountcode: String,
    pub dialed: String,
    pub target: String,
    /// ANSWERED, BUSY, NO ANSWER, FAILED, CANCELLED
    pub disposition: String,
    pub code: u16,
    pub start: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<u64>,
    pub end: u64,
    pub duration: u64,
    pub billsec: u64,
    /// The device that answered (its registered Contact), empty when
    /// unanswered or not a registered client.
    #[serde(default)]
    pub device: String,
    /// Media packets sipd relayed from the caller and from the callee
    /// (0 when the call's media did not go through sipd).
    #[serde(default)]
    pub packets_caller: u64,
    #[serde(default)]
    pub packets_callee: u64,
    /// PostgreSQL store: the node whose call it was.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// `fwd`: the effective forwarding of each matching client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwdReport {
    pub clients: Vec<FwdState>,
}

/// Forwarding of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwdState {
    pub name: String,
    /// On the wire as `kind` (`none`, `always`, `unavail`) and, unless none,
    /// `number`.
    #[serde(flatten)]
    pub forwarding: Forwarding,
    /// `sip.conf`, `phone`, `sipctl` (absent for none)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `gateways`: the health of every gateway and mediagate, in sip.conf order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateways {
    pub gateways: Vec<GatewayInfo>,
}

/// One gateway or mediagate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    pub name: String,
    /// `gateway` or `mediagate`
    pub role: String,
    /// Where it is reached: its `host` over its transport
    /// (`udp:10.0.0.1:5060`), else the source of its registration; empty
    /// when it has no host and is not registered.
    pub host: String,
    /// `up`, `down` or `unknown` (not checked yet, `qualify=0`, or a
    /// registered gateway whose keep-alive has not been answered yet).
    pub state: String,
    /// Round trip of the last answered check, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
    /// Unix ms of the last state change (or of when sipd started checking
    /// the host: start, reload); absent for a registered gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Seconds between checks (0: not checked).
    #[serde(default)]
    pub qualify: u32,
    /// Calls in progress through it (out to it, or in from it).
    #[serde(default)]
    pub calls: u64,
}
