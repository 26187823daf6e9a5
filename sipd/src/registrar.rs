//! Location service (spec §3, RFC 3261 §10, RFC 5626): each client holds up
//! to `max_contacts` bindings (one per device), each with the address its
//! REGISTER really came from (transport, IP, port, TCP flow) so that
//! requests reach devices behind NAT; expiry; keep-alive state; restore
//! from the store.
//!
//! `process` is pure: it turns an authenticated REGISTER into the
//! response to send and the client's new set of bindings. Keep-alive
//! scheduling ([`Registrar::due_pings`], [`Registrar::on_pong`]) takes the
//! time as an argument and bounds its work per call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{Config, General};
use crate::routing::reach::Location;
use crate::sip::{Contact, HeaderName, Message};
use crate::store::BindingRow;
use crate::transport::{Peer, Transport};

/// Default registration lifetime when the request names none (spec §3).
pub const DEFAULT_EXPIRES: u32 = 3600;

/// Keep-alive OPTIONS missed in a row before a binding is unreachable.
pub const MISSES_UNREACHABLE: u8 = 3;

/// How often a binding whose client has keep-alive off is looked at again
/// (a reload may turn it on).
const QUALIFY_OFF_RECHECK: Duration = Duration::from_secs(30);

/// Is a device answering keep-alive OPTIONS?
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reach {
    /// Not asked yet (or keep-alive is off for it, or not over UDP).
    #[default]
    Unknown,
    Reachable,
    /// Missed [`MISSES_UNREACHABLE`] keep-alives in a row: not rung.
    Unreachable,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Unknown => "unknown",
            Reach::Reachable => "reachable",
            Reach::Unreachable => "unreachable",
        }
    }
}

/// Keep-alive state of one binding (not stored: a restart starts unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepAlive {
    pub reach: Reach,
    /// Round trip of the last answered OPTIONS.
    pub rtt_ms: Option<u64>,
    /// Unanswered OPTIONS in a row.
    pub misses: u8,
    /// The OPTIONS outstanding: when it was sent and its token.
    pub sent: Option<(Instant, u32)>,
    /// When the next OPTIONS is due (the schedule entry that counts).
    pub due: Option<Instant>,
}

/// One registration: one device of a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    /// The registered Contact URI (Request-URI for requests to the device).
    pub contact: String,
    /// Where the REGISTER came from: requests to the device go here.
    pub source: Peer,
    pub expires_at: Instant,
    /// Same instant as unix seconds (for the store and `sipctl regs`).
    pub expires_unix: u64,
    pub user_agent: String,
    pub call_id: String,
    pub cseq: u32,
    /// The expiry the store holds for this binding (it is not rewritten on
    /// every refresh, see [`Binding::worth_storing`]).
    pub stored_expires: u64,
    /// `+sip.instance` (RFC 5626 §4.1), unquoted; empty when none.
    pub instance: String,
    /// `reg-id` (RFC 5626 §4.2) when the device asked for outbound.
    pub reg_id: Option<u32>,
    /// A flow-based binding (RFC 5626): requests go over its flow only.
    pub outbound: bool,
    /// Registrar-assigned, kept across refreshes (0: not yet assigned).
    pub id: u64,
    pub keepalive: KeepAlive,
    /// The node that holds the device's flow when it is another sipd on
    /// the same PostgreSQL store (`None`: this node). Requests for the
    /// device go to that node, which relays them over the flow.
    pub held_by: Option<Holder>,
}

/// Another node that holds a binding's flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    /// Its SIP address.
    pub addr: SocketAddr,
    /// Its heartbeat is older than [`crate::store::postgres::NODE_SILENCE`]:
    /// the binding is not rung.
    pub down: bool,
}

/// Route header parameter naming the client whose binding a request from
/// another node is for.
pub const NODE_ROUTE_PARAM: &str = "sipd-aor";

impl Binding {
    /// Does this binding need a store write, given the previous one?
    /// A refresh from the same place with the same contact is written only
    /// when the stored expiry lags by more than a quarter of the lifetime:
    /// after a crash a restored binding may then expire that much early,
    /// and a refresh flood does not become a write flood.
    pub fn worth_storing(&self, prev: Option<&Binding>, lifetime: u64) -> bool {
        match prev {
            None => true,
            Some(p) => {
                p.contact != self.contact
                    || p.source != self.source
                    || p.user_agent != self.user_agent
                    || p.instance != self.instance
                    || p.reg_id != self.reg_id
                    || self.expires_unix.saturating_sub(p.stored_expires) > lifetime / 4
            }
        }
    }

    /// Is `msg` the REGISTER that made this binding (same Call-ID and
    /// CSeq), arriving again from the binding's source address? Then it is
    /// a retransmission that outlived its server transaction (our 200 was
    /// lost), and acting on it again changes nothing.
    pub fn made_by(&self, msg: &Message, peer: Peer) -> bool {
        self.source == peer && self.call_id == msg.call_id() && self.cseq == msg.cseq().seq
    }

    pub fn remaining(&self, now: Instant) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }

    /// Where requests to this device go: its flow, or the node that
    /// holds it.
    pub fn location(&self) -> Location {
        Location {
            dest: self.dest(),
            uri: self.contact.clone(),
        }
    }

    /// The next hop of requests to this device: its source (transport,
    /// address, flow), or over UDP the node that holds its flow.
    pub fn dest(&self) -> Peer {
        match &self.held_by {
            Some(h) => Peer::to(Transport::Udp, h.addr),
            None => self.source,
        }
    }

    /// For a device another node holds: the Route that makes that node
    /// relay the request over the device's flow (RFC 3327 style: the
    /// node's address, loose routing, the client named).
    pub fn node_route(&self) -> Option<String> {
        let h = self.held_by.as_ref()?;
        let host = match h.addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let aor: String = self
            .name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        Some(format!("<sip:{host};lr;{NODE_ROUTE_PARAM}={aor}>"))
    }

    /// May a call ring this device? Not when it stopped answering
    /// keep-alives, nor when the node holding its flow is silent.
    pub fn reachable(&self) -> bool {
        self.keepalive.reach != Reach::Unreachable && !self.held_by.as_ref().is_some_and(|h| h.down)
    }

    /// This binding as a Contact value of a 200 to REGISTER.
    pub fn contact_value(&self, expires: u64) -> String {
        let mut s = format!("<{}>;expires={expires}", self.contact);
        if !self.instance.is_empty() {
            s.push_str(";+sip.instance=\"");
            s.push_str(&self.instance.replace(['"', '\\'], ""));
            s.push('"');
        }
        if let Some(r) = self.reg_id {
            s.push_str(";reg-id=");
            s.push_str(&r.to_string());
        }
        s
    }

    pub fn to_row(&self) -> BindingRow {
        BindingRow {
            name: self.name.clone(),
            contact: self.contact.clone(),
            transport: self.source.transport.name().to_string(),
            source: self.source.addr,
            local: self.source.local,
            expires_at: self.expires_unix,
            user_agent: self.user_agent.clone(),
            call_id: self.call_id.clone(),
            cseq: self.cseq,
            instance: self.instance.clone(),
            reg_id: self.reg_id,
            outbound: self.outbound,
            node: self
                .held_by
                .as_ref()
                .map(|h| h.node.clone())
                .unwrap_or_default(),
            node_addr: self.held_by.as_ref().map(|h| h.addr),
        }
    }

    /// A binding as another node stored it (or this one, before a
    /// restart): `None` for a row that cannot be one.
    pub fn from_row(r: &BindingRow, now: Instant, now_unix: u64) -> Option<Binding> {
        if r.expires_at <= now_unix {
            return None;
        }
        let transport = Transport::parse(&r.transport)?;
        let held_by = if r.node.is_empty() {
            None
        } else {
            Some(Holder {
                node: r.node.clone(),
                addr: r.node_addr?,
                down: false,
            })
        };
        let left = Duration::from_secs(r.expires_at - now_unix);
        let mut source = Peer::to(transport, r.source);
        source.local = r.local;
        Some(Binding {
            name: r.name.clone(),
            contact: r.contact.clone(),
            source,
            expires_at: now + left,
            expires_unix: r.expires_at,
            user_agent: r.user_agent.clone(),
            call_id: r.call_id.clone(),
            cseq: r.cseq,
            stored_expires: r.expires_at,
            instance: r.instance.clone(),
            reg_id: r.reg_id,
            outbound: r.outbound,
            id: 0,
            keepalive: KeepAlive::default(),
            held_by,
        })
    }
}

/// A client's bindings after a REGISTER that changes them.
#[derive(Debug, PartialEq, Eq)]
pub struct Update {
    /// The whole new set, oldest first (empty: the client is unregistered).
    pub bindings: Vec<Binding>,
    /// Bindings pushed out because the client went over `max_contacts`.
    pub dropped: Vec<Binding>,
    /// Bindings the REGISTER removed (`expires=0`, `Contact: *`).
    pub removed: Vec<Binding>,
    /// The REGISTER asked for outbound and got it (`Require: outbound`).
    pub outbound: bool,
}

/// What to do with a REGISTER.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Store this set of bindings for the client.
    Update(Update),
    /// Only asking (or a retransmission): answer with the current bindings.
    Query,
    /// 423 with this Min-Expires.
    TooBrief(u32),
    /// 400 with this reason.
    Bad(&'static str),
    /// 500: an older CSeq for the same Call-ID (RFC 3261 §10.3 step 7), or
    /// the same CSeq from another address.
    OutOfOrder,
}

/// Does the request list `outbound` in this header (RFC 5626 §5.2)?
fn lists_outbound(msg: &Message, name: &HeaderName) -> bool {
    msg.header_values(name).iter().any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("outbound"))
    })
}

/// Decide what an authenticated REGISTER for client `name` from `peer`
/// does to its bindings `current` (oldest first), allowing at most
/// `max_contacts` of them.
#[allow(clippy::too_many_arguments)]
pub fn process(
    general: &General,
    max_contacts: usize,
    msg: &Message,
    name: &str,
    peer: Peer,
    current: &[Binding],
    now: Instant,
    now_unix: u64,
) -> Outcome {
    let contacts = match msg.contacts() {
        Ok(c) => c,
        Err(_) => return Outcome::Bad("Bad Contact"),
    };
    if contacts.is_empty() {
        return Outcome::Query;
    }
    let header_expires = msg.expires();
    if contacts.contains(&Contact::Star) {
        // RFC 3261 §10.3 step 6: `*` only alone and with Expires: 0.
        if contacts.len() != 1 || header_expires != Some(0) {
            return Outcome::Bad("Contact * Needs Expires 0");
        }
        // Step 6 also: a `*` older than a binding of the same Call-ID does nothing.
        for b in current.iter().filter(|b| b.call_id == msg.call_id()) {
            if b.made_by(msg, peer) {
                return Outcome::Query;
            }
            if msg.cseq().seq <= b.cseq {
                return Outcome::OutOfOrder;
            }
        }
        return Outcome::Update(Update {
            bindings: Vec::new(),
            dropped: Vec::new(),
            removed: current.to_vec(),
            outbound: false,
        });
    }
    let wants_outbound =
        lists_outbound(msg, &HeaderName::Supported) || lists_outbound(msg, &HeaderName::Require);
    let user_agent: String = msg
        .header(&HeaderName::UserAgent)
        .map(|s| s.chars().take(128).collect())
        .unwrap_or_default();
    let mut set: Vec<Binding> = current.to_vec();
    // Which entries of `set` this REGISTER made or changed: another of
    // its Contacts never replaces them.
    let mut fresh: Vec<bool> = vec![false; set.len()];
    let mut removed = Vec::new();
    let mut outbound_used = false;
    for c in &contacts {
        let Contact::Addr(addr) = c else {
            return Outcome::Bad("Bad Contact");
        };
        let expires = match addr.params.get("expires") {
            Some(Some(v)) => match v.trim().parse::<u64>() {
                Ok(n) => n.min(u64::from(u32::MAX)) as u32,
                Err(_) => return Outcome::Bad("Bad Contact Expires"),
            },
            Some(None) => return Outcome::Bad("Bad Contact Expires"),
            None => header_expires.unwrap_or(DEFAULT_EXPIRES),
        };
        let instance: String = addr
            .params
            .value("+sip.instance")
            .unwrap_or("")
            .trim()
            .chars()
            .take(256)
            .collect();
        let reg_id = match addr.params.get("reg-id") {
            None => None,
            Some(v) => match v.and_then(|v| v.trim().parse::<u32>().ok()) {
                Some(n) if n > 0 => Some(n),
                _ => return Outcome::Bad("Bad reg-id"),
            },
        };
        // RFC 5626 §6: outbound needs both the instance and the reg-id,
        // and the request must say it supports outbound.
        let outbound = wants_outbound && reg_id.is_some() && !instance.is_empty();
        let reg_id = reg_id.filter(|_| outbound);
        let uri = addr.uri.to_string();
        // The device this Contact is: same instance (and reg-id), else
        // same Contact URI; a new Contact from the same transport address
        // is the same device too, unless both name different instances.
        let same_device = |b: &Binding| {
            (!instance.is_empty() && b.instance == instance && b.reg_id == reg_id)
                || b.contact == uri
        };
        let same_place = |b: &Binding| {
            b.source.transport == peer.transport
                && b.source.addr == peer.addr
                && (b.instance.is_empty() || instance.is_empty() || b.instance == instance)
        };
        let old = |i: &usize| !fresh[*i];
        let mut idx = (0..set.len()).filter(old).find(|&i| same_device(&set[i]));
        if idx.is_none() && expires != 0 {
            idx = (0..set.len()).filter(old).find(|&i| same_place(&set[i]));
        }
        if let Some(b) = idx.map(|i| &set[i]) {
            if b.call_id == msg.call_id() {
                if b.made_by(msg, peer) {
                    // Answer as before.
                    return Outcome::Query;
                }
                if msg.cseq().seq <= b.cseq {
                    return Outcome::OutOfOrder;
                }
            }
        }
        if expires == 0 {
            if let Some(i) = idx {
                removed.push(set.remove(i));
                fresh.remove(i);
            }
            continue;
        }
        if expires < general.min_expires {
            return Outcome::TooBrief(general.min_expires);
        }
        let expires = u64::from(expires.min(general.max_expires));
        outbound_used |= outbound;
        let mut b = Binding {
            name: name.to_string(),
            contact: uri,
            source: peer,
            expires_at: now + Duration::from_secs(expires),
            expires_unix: now_unix + expires,
            user_agent: user_agent.clone(),
            call_id: msg.call_id().to_string(),
            cseq: msg.cseq().seq,
            stored_expires: now_unix + expires,
            instance,
            reg_id,
            outbound,
            id: 0,
            keepalive: KeepAlive::default(),
            held_by: None,
        };
        match idx {
            Some(i) => {
                let old = &set[i];
                b.id = old.id;
                b.stored_expires = old.stored_expires;
                if old.source == b.source {
                    b.keepalive = old.keepalive.clone();
                }
                set[i] = b;
                fresh[i] = true;
            }
            None => {
                set.push(b);
                fresh.push(true);
            }
        }
    }
    let mut dropped = Vec::new();
    while set.len() > max_contacts.max(1) {
        dropped.push(set.remove(0));
    }
    Outcome::Update(Update {
        bindings: set,
        dropped,
        removed,
        outbound: outbound_used,
    })
}

/// A keep-alive OPTIONS to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    pub id: u64,
    pub token: u32,
    pub name: String,
    pub contact: String,
    pub dest: Peer,
}

/// The bindings of every client.
#[derive(Default)]
pub struct Registrar {
    clients: HashMap<String, Vec<Binding>>,
    /// Source address → client name (requests from / to a known client).
    by_source: HashMap<SocketAddr, String>,
    /// Binding id → client name.
    by_id: HashMap<u64, String>,
    /// Bindings per source IP (a source with an authenticated registration).
    by_ip: HashMap<IpAddr, u32>,
    count: usize,
    next_id: u64,
    /// Keep-alive schedule: (due, binding id); entries whose binding is
    /// gone or was rescheduled are skipped when they come up.
    pings: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Registrar {
    pub fn new() -> Registrar {
        Registrar {
            next_id: 1,
            ..Registrar::default()
        }
    }

    /// The bindings of a client, oldest first (empty when unregistered).
    pub fn of(&self, name: &str) -> &[Binding] {
        self.clients.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The oldest binding of a client.
    pub fn get(&self, name: &str) -> Option<&Binding> {
        self.of(name).first()
    }

    /// The devices of a client that may be rung, oldest first.
    pub fn reachable(&self, name: &str) -> impl Iterator<Item = &Binding> {
        self.of(name).iter().filter(|b| b.reachable())
    }

    /// Where a call to client `name` goes first: its oldest reachable
    /// device (the proxy forks to the others too, see `core/proxy/plan.rs`).
    pub fn locate(&self, name: &str) -> Option<Location> {
        self.reachable(name).next().map(Binding::location)
    }

    /// Like [`Registrar::locate`], preferring the device at `from` (the
    /// one a request of the client came from).
    pub fn locate_from(&self, name: &str, from: SocketAddr) -> Option<Location> {
        self.reachable(name)
            .find(|b| b.source.addr == from)
            .map(Binding::location)
            .or_else(|| self.locate(name))
    }

    /// Bindings, all clients together.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Clients with at least one binding.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.clients.values().flatten()
    }

    /// Replace the bindings of client `name` by `set` (ids assigned to new
    /// ones, keep-alives scheduled for new UDP ones, `qualify` seconds
    /// apart, the first one spread over that interval).
    pub fn set(&mut self, name: &str, mut set: Vec<Binding>, qualify: u32, now: Instant) {
        self.unindex(name);
        if set.is_empty() {
            return;
        }
        for b in &mut set {
            if b.id == 0 {
                b.id = self.next_id;
                self.next_id += 1;
            }
            if b.keepalive.due.is_none() {
                let due = now + first_ping(b.id, qualify);
                b.keepalive.due = Some(due);
                self.pings.push(Reverse((due, b.id)));
            }
            self.by_id.insert(b.id, name.to_string());
            if b.held_by.is_some() {
                continue;
            }
            self.by_source.insert(b.source.addr, name.to_string());
            *self
                .by_ip
                .entry(b.source.addr.ip().to_canonical())
                .or_insert(0) += 1;
        }
        self.count += set.len();
        self.clients.insert(name.to_string(), set);
    }

    /// Forget a client's bindings from every index; returns them.
    fn unindex(&mut self, name: &str) -> Vec<Binding> {
        let Some(old) = self.clients.remove(name) else {
            return Vec::new();
        };
        self.count -= old.len();
        for b in &old {
            self.by_id.remove(&b.id);
            if b.held_by.is_some() {
                continue;
            }
            if self.by_source.get(&b.source.addr).map(String::as_str) == Some(name) {
                self.by_source.remove(&b.source.addr);
            }
            let ip = b.source.addr.ip().to_canonical();
            if let Some(n) = self.by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.by_ip.remove(&ip);
                }
            }
        }
        old
    }

    /// Does some binding come from `ip` (an authenticated registration)?
    pub fn has_ip(&self, ip: IpAddr) -> bool {
        self.by_ip.contains_key(&ip.to_canonical())
    }

    /// Remove every binding of a client; returns them.
    pub fn remove(&mut self, name: &str) -> Vec<Binding> {
        let old = self.unindex(name);
        if self.clients.is_empty() {
            self.pings.clear();
        }
        old
    }

    /// A binding registered from this transport address.
    pub fn by_source(&self, addr: SocketAddr) -> Option<&Binding> {
        let name = self.by_source.get(&addr)?;
        self.of(name)
            .iter()
            .find(|b| b.held_by.is_none() && b.source.addr == addr)
    }

    /// Remove expired bindings; returns the clients whose set changed.
    pub fn sweep(&mut self, now: Instant) -> Vec<String> {
        let changed: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, set)| set.iter().any(|b| b.expires_at <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &changed {
            let keep: Vec<Binding> = self
                .unindex(n)
                .into_iter()
                .filter(|b| b.expires_at > now)
                .collect();
            self.set(n, keep, 0, now);
        }
        changed
    }

    /// Drop bindings of clients no longer in `config` (after a reload), or
    /// that can no longer register (secret removed); returns their names.
    pub fn retain_clients(&mut self, config: &Config) -> Vec<String> {
        let gone: Vec<String> = self
            .clients
            .keys()
            .filter(|n| config.client(n).is_none_or(|c| c.secret.is_none()))
            .cloned()
            .collect();
        for n in &gone {
            self.remove(n);
        }
        gone
    }

    /// Restore stored bindings with their remaining lifetime (expired and
    /// unknown clients skipped, at most `max_contacts` per client, the
    /// latest kept). Returns how many were restored.
    pub fn restore(
        &mut self,
        rows: &[BindingRow],
        config: &Config,
        now: Instant,
        now_unix: u64,
    ) -> usize {
        let mut sets: HashMap<&str, Vec<Binding>> = HashMap::new();
        for r in rows {
            let Some(client) = config.client(&r.name).filter(|c| c.secret.is_some()) else {
                continue;
            };
            let Some(b) = Binding::from_row(r, now, now_unix) else {
                continue;
            };
            let set = sets.entry(r.name.as_str()).or_default();
            set.push(b);
            let max = client.max_contacts(&config.general) as usize;
            if set.len() > max.max(1) {
                set.remove(0);
            }
        }
        let mut n = 0;
        for (name, set) in sets {
            n += set.len();
            let qualify = config
                .client(name)
                .map_or(0, |c| c.qualify(&config.general));
            self.set(name, set, qualify, now);
        }
        n
    }

    /// Another node stored `name`'s bindings as `rows` (its own and every
    /// other node's; this node's rows have an empty `node`): the bindings
    /// other nodes hold become these, and a device this node held that
    /// another node now holds (it registered there: same Contact) is
    /// dropped here. This node's own bindings otherwise stay as they are
    /// in memory (they are the truth: the store may lag behind them).
    /// Returns the Contacts of the devices dropped here.
    pub fn sync_remote(
        &mut self,
        name: &str,
        rows: &[BindingRow],
        config: &Config,
        down: &dyn Fn(&str) -> bool,
        now: Instant,
        now_unix: u64,
    ) -> Vec<String> {
        let Some(client) = config.client(name).filter(|c| c.secret.is_some()) else {
            return Vec::new();
        };
        let remote: Vec<Binding> = rows
            .iter()
            .filter(|r| !r.node.is_empty() && r.name == name)
            .filter_map(|r| Binding::from_row(r, now, now_unix))
            .map(|mut b| {
                if let Some(h) = &mut b.held_by {
                    h.down = down(&h.node);
                }
                b
            })
            .collect();
        let old = self.unindex(name);
        let mut taken = Vec::new();
        let mut set: Vec<Binding> = Vec::with_capacity(old.len() + remote.len());
        for b in old.into_iter().filter(|b| b.held_by.is_none()) {
            if remote.iter().any(|r| r.contact == b.contact) {
                taken.push(b.contact);
            } else {
                set.push(b);
            }
        }
        set.extend(remote);
        let max = client.max_contacts(&config.general) as usize;
        while set.len() > max.max(1) {
            set.remove(0);
        }
        self.set(name, set, client.qualify(&config.general), now);
        taken
    }

    /// Another node deleted `name`'s binding `contact` (a REGISTER there
    /// replaced or removed the device): forgotten here too. Returns whether
    /// this node held it.
    pub fn forget(&mut self, name: &str, contact: &str, config: &Config, now: Instant) -> bool {
        if !self.of(name).iter().any(|b| b.contact == contact) {
            return false;
        }
        let mut set = self.unindex(name);
        let mine = set
            .iter()
            .any(|b| b.contact == contact && b.held_by.is_none());
        set.retain(|b| b.contact != contact);
        let qualify = config
            .client(name)
            .map_or(0, |c| c.qualify(&config.general));
        self.set(name, set, qualify, now);
        mine
    }

    /// The clients with bindings other nodes hold.
    pub fn with_remote(&self) -> Vec<String> {
        self.clients
            .iter()
            .filter(|(_, set)| set.iter().any(|b| b.held_by.is_some()))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Marks the bindings held by other nodes as down or up.
    pub fn set_nodes_down(&mut self, down: &dyn Fn(&str) -> bool) -> usize {
        let mut changed = 0;
        for b in self.clients.values_mut().flatten() {
            if let Some(h) = &mut b.held_by {
                let d = down(&h.node);
                if d != h.down {
                    h.down = d;
                    changed += 1;
                }
            }
        }
        changed
    }

    /// The binding whose registered Contact is `uri` or whose source is `addr`
    /// (used to route in-dialog requests to clients behind NAT).
    pub fn by_contact(&self, uri: &str, addr: Option<SocketAddr>) -> Option<&Binding> {
        self.iter()
            .find(|b| b.contact == uri || addr.is_some_and(|a| b.source.addr == a))
    }

    fn binding_mut(&mut self, id: u64) -> Option<&mut Binding> {
        let name = self.by_id.get(&id)?;
        self.clients.get_mut(name)?.iter_mut().find(|b| b.id == id)
    }

    /// Keep-alive OPTIONS due by `now`, at most `budget` of them: each
    /// UDP binding every `qualify(client)` seconds. An OPTIONS still
    /// unanswered when the next is due is a miss; the third miss in a row
    /// makes the binding unreachable. `token` makes each OPTIONS's branch
    /// unguessable.
    pub fn due_pings(
        &mut self,
        now: Instant,
        budget: usize,
        qualify: &dyn Fn(&str) -> u32,
        token: &mut dyn FnMut() -> u32,
    ) -> Vec<Ping> {
        let mut out = Vec::new();
        let mut looked = 0;
        while let Some(Reverse((due, id))) = self.pings.peek().copied() {
            if due > now || out.len() >= budget || looked >= 4 * budget {
                break;
            }
            self.pings.pop();
            looked += 1;
            let Some(name) = self.by_id.get(&id).cloned() else {
                continue;
            };
            let q = qualify(&name);
            let Some(b) = self.binding_mut(id) else {
                continue;
            };
            if b.keepalive.due != Some(due) {
                continue;
            }
            let next = if q == 0 || b.source.transport != Transport::Udp || b.held_by.is_some() {
                // Not pinged: its state is unknown (TCP flows keep
                // themselves alive with CRLF, RFC 5626 §4.4.1).
                b.keepalive = KeepAlive::default();
                now + QUALIFY_OFF_RECHECK
            } else {
                if b.keepalive.sent.is_some() {
                    b.keepalive.misses = b.keepalive.misses.saturating_add(1);
                    if b.keepalive.misses >= MISSES_UNREACHABLE
                        && b.keepalive.reach != Reach::Unreachable
                    {
                        b.keepalive.reach = Reach::Unreachable;
                        tracing::info!(
                            client = %b.name,
                            contact = %b.contact,
                            "device stopped answering keep-alive OPTIONS: unreachable"
                        );
                    }
                }
                let t = token();
                b.keepalive.sent = Some((now, t));
                out.push(Ping {
                    id,
                    token: t,
                    name: b.name.clone(),
                    contact: b.contact.clone(),
                    dest: b.source,
                });
                now + Duration::from_secs(u64::from(q))
            };
            b.keepalive.due = Some(next);
            self.pings.push(Reverse((next, id)));
        }
        out
    }

    /// A response to keep-alive `id`/`token` arrived from `from`: the
    /// binding is reachable (any response counts, as in Asterisk).
    /// Returns false for a response that is not ours to count.
    pub fn on_pong(&mut self, id: u64, token: u32, from: SocketAddr, now: Instant) -> bool {
        let Some(b) = self.binding_mut(id) else {
            return false;
        };
        let Some((sent, t)) = b.keepalive.sent else {
            return false;
        };
        if t != token || b.source.addr != from {
            return false;
        }
        if b.keepalive.reach == Reach::Unreachable {
            tracing::info!(client = %b.name, contact = %b.contact, "device answers keep-alive again: reachable");
        }
        b.keepalive.sent = None;
        b.keepalive.misses = 0;
        b.keepalive.reach = Reach::Reachable;
        b.keepalive.rtt_ms = Some(now.saturating_duration_since(sent).as_millis() as u64);
        true
    }

    /// When the next keep-alive is due, if any.
    pub fn next_ping(&self) -> Option<Instant> {
        self.pings.peek().map(|Reverse((at, _))| *at)
    }

    /// Keep-alive schedule entries (bounded by bindings plus the entries
    /// replaced since their binding changed).
    pub fn scheduled(&self) -> usize {
        self.pings.len()
    }
}

/// Delay of a new binding's first keep-alive: spread over the interval by
/// its id, so that a mass registration does not ping in one burst.
fn first_ping(id: u64, qualify: u32) -> Duration {
    if qualify == 0 {
        return QUALIFY_OFF_RECHECK;
    }
    let span = u64::from(qualify) * 1000;
    Duration::from_millis(id.wrapping_mul(2_654_435_761) % span)
}

#[cfg(test)]
mod tests;
