//! Location service (spec §3): one binding per client, with the address the
//! REGISTER really came from (transport, IP, port, TCP flow) so that requests
//! reach clients behind NAT; expiry; restore from the store.
//!
//! `process` is pure: it turns an authenticated REGISTER into the response
//! to send and the change to make.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{Config, General};
use crate::sip::{Contact, HeaderName, Message};
use crate::store::BindingRow;
use crate::transport::{Peer, Transport};

/// Default registration lifetime when the request names none (spec §3).
pub const DEFAULT_EXPIRES: u32 = 3600;

/// One registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    /// The registered Contact URI (Request-URI for requests to the client).
    pub contact: String,
    /// Where the REGISTER came from: requests to the client go here.
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
}

impl Binding {
    /// Does this new binding need a store write, given the previous one?
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

    pub fn to_row(&self) -> BindingRow {
        BindingRow {
            name: self.name.clone(),
            contact: self.contact.clone(),
            transport: self.source.transport.name().to_string(),
            source: self.source.addr,
            expires_at: self.expires_unix,
            user_agent: self.user_agent.clone(),
            call_id: self.call_id.clone(),
            cseq: self.cseq,
        }
    }
}

/// What to do with a REGISTER.
// Returned once per REGISTER and matched at once: boxing the binding
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Store this binding (replacing any other of the client).
    Bind(Binding),
    /// Remove the client's binding.
    Unbind,
    /// Only asking: answer with the current binding.
    Query,
    /// 423 with this Min-Expires.
    TooBrief(u32),
    /// 400 with this reason.
    Bad(&'static str),
    /// 500: an older CSeq for the same Call-ID (RFC 3261 §10.3 step 7), or
    /// the same CSeq from another address.
    OutOfOrder,
}

/// Decide what an authenticated REGISTER for client `name` from `peer` does.
pub fn process(
    general: &General,
    msg: &Message,
    name: &str,
    peer: Peer,
    current: Option<&Binding>,
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
    if let Some(b) = current.filter(|b| b.call_id == msg.call_id()) {
        if b.made_by(msg, peer) {
            // Answer as before.
            return Outcome::Query;
        }
        if msg.cseq().seq <= b.cseq {
            return Outcome::OutOfOrder;
        }
    }
    let header_expires = msg.expires();
    if contacts.contains(&Contact::Star) {
        // RFC 3261 §10.3 step 6: `*` only alone and with Expires: 0.
        if contacts.len() != 1 || header_expires != Some(0) {
            return Outcome::Bad("Contact * Needs Expires 0");
        }
        return Outcome::Unbind;
    }
    // One binding per client: the first contact counts.
    let Contact::Addr(first) = &contacts[0] else {
        return Outcome::Bad("Bad Contact");
    };
    let expires = match first.params.get("expires") {
        Some(Some(v)) => match v.trim().parse::<u64>() {
            Ok(n) => n.min(u64::from(u32::MAX)) as u32,
            Err(_) => return Outcome::Bad("Bad Contact Expires"),
        },
        Some(None) => return Outcome::Bad("Bad Contact Expires"),
        None => header_expires.unwrap_or(DEFAULT_EXPIRES),
    };
    if expires == 0 {
        return Outcome::Unbind;
    }
    if expires < general.min_expires {
        return Outcome::TooBrief(general.min_expires);
    }
    let expires = expires.min(general.max_expires);
    let user_agent = msg
        .header(&HeaderName::UserAgent)
        .map(|s| s.chars().take(128).collect())
        .unwrap_or_default();
    Outcome::Bind(Binding {
        name: name.to_string(),
        contact: first.uri.to_string(),
        source: peer,
        expires_at: now + Duration::from_secs(u64::from(expires)),
        expires_unix: now_unix + u64::from(expires),
        user_agent,
        call_id: msg.call_id().to_string(),
        cseq: msg.cseq().seq,
        stored_expires: now_unix + u64::from(expires),
    })
}

/// The bindings of every client.
#[derive(Default)]
pub struct Registrar {
    bindings: HashMap<String, Binding>,
    /// Source address → client name (requests from / to a known client).
    by_source: HashMap<SocketAddr, String>,
}

impl Registrar {
    pub fn new() -> Registrar {
        Registrar::default()
    }

    pub fn get(&self, name: &str) -> Option<&Binding> {
        self.bindings.get(name)
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values()
    }

    pub fn insert(&mut self, b: Binding) {
        if let Some(old) = self.bindings.get(&b.name) {
            if self.by_source.get(&old.source.addr) == Some(&old.name) {
                self.by_source.remove(&old.source.addr);
            }
        }
        self.by_source.insert(b.source.addr, b.name.clone());
        self.bindings.insert(b.name.clone(), b);
    }

    pub fn remove(&mut self, name: &str) -> Option<Binding> {
        let b = self.bindings.remove(name)?;
        if self.by_source.get(&b.source.addr).map(String::as_str) == Some(name) {
            self.by_source.remove(&b.source.addr);
        }
        Some(b)
    }

    /// The binding registered from this transport address.
    pub fn by_source(&self, addr: SocketAddr) -> Option<&Binding> {
        self.by_source.get(&addr).and_then(|n| self.bindings.get(n))
    }

    /// Remove expired bindings; returns their names.
    pub fn sweep(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .bindings
            .values()
            .filter(|b| b.expires_at <= now)
            .map(|b| b.name.clone())
            .collect();
        for n in &gone {
            self.remove(n);
        }
        gone
    }

    /// Drop bindings of clients no longer in `config` (after a reload), or
    /// that can no longer register (secret removed); returns their names.
    pub fn retain_clients(&mut self, config: &Config) -> Vec<String> {
        let gone: Vec<String> = self
            .bindings
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
    /// unknown clients skipped). Returns how many were restored.
    pub fn restore(
        &mut self,
        rows: &[BindingRow],
        config: &Config,
        now: Instant,
        now_unix: u64,
    ) -> usize {
        let mut n = 0;
        for r in rows {
            if r.expires_at <= now_unix || config.client(&r.name).is_none_or(|c| c.secret.is_none())
            {
                continue;
            }
            let Some(transport) = Transport::parse(&r.transport) else {
                continue;
            };
            let left = Duration::from_secs(r.expires_at - now_unix);
            self.insert(Binding {
                name: r.name.clone(),
                contact: r.contact.clone(),
                source: Peer::to(transport, r.source),
                expires_at: now + left,
                expires_unix: r.expires_at,
                user_agent: r.user_agent.clone(),
                call_id: r.call_id.clone(),
                cseq: r.cseq,
                stored_expires: r.expires_at,
            });
            n += 1;
        }
        n
    }

    /// The binding whose registered Contact is `uri` or whose source is `addr`
    /// (used to route in-dialog requests to clients behind NAT).
    pub fn by_contact(&self, uri: &str, addr: Option<SocketAddr>) -> Option<&Binding> {
        self.bindings
            .values()
            .find(|b| b.contact == uri || addr.is_some_and(|a| b.source.addr == a))
    }
}

#[cfg(test)]
mod tests;
