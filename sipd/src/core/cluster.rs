//! Several nodes on one PostgreSQL store (`--store postgresql://…`).
//!
//! - What the store's change feed reports ([`Event`]): other nodes'
//!   bindings, devices they took over, forwarding changes, and their
//!   heartbeats (a node silent for more than
//!   [`crate::store::postgres::NODE_SILENCE`] is down: its devices are not
//!   rung until they register on a live node).
//! - Which requests come from another node for a device whose flow this
//!   node holds (a Route naming this node with the client in
//!   [`crate::registrar::NODE_ROUTE_PARAM`], from a known node's address);
//!   `proxy/node.rs` relays them.

use std::collections::HashMap;

use super::{Core, Effects};
use crate::registrar::NODE_ROUTE_PARAM;
use crate::routing::forwards::{Forwards, Override};
use crate::sip::Message;
use crate::store::postgres::{Event, NodeInfo};
use crate::store::BindingRow;
use crate::time::Now;
use crate::transport::Peer;

impl Core {
    /// Apply what the store's change feed reports.
    pub fn on_store_event(&mut self, ev: Event, now: Now, fx: &mut Effects) {
        let _ = fx;
        let config = self.config.clone();
        match ev {
            Event::Resync { bindings, forwards } => {
                let mut by_name: HashMap<&str, Vec<BindingRow>> = HashMap::new();
                for r in &bindings {
                    by_name.entry(r.name.as_str()).or_default().push(r.clone());
                }
                let mut names: Vec<String> = by_name.keys().map(|n| n.to_string()).collect();
                names.extend(self.registrar.with_remote());
                names.sort();
                names.dedup();
                for name in names {
                    let rows = by_name.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                    self.sync_bindings(&name, rows, now);
                }
                let mut fresh = Forwards::from_rows(&forwards);
                fresh.retain_clients(&config);
                self.forwards = fresh;
            }
            Event::Bindings { name, rows } => self.sync_bindings(&name, &rows, now),
            Event::Forgot { name, contact } => {
                if self.registrar.forget(&name, &contact, &config, now.at) {
                    tracing::info!(
                        client = %name, contact = %contact,
                        "another node replaced or removed this device: its binding here is gone"
                    );
                }
            }
            Event::Forward { name, row } => match row {
                Some(row) if config.client(&name).is_some() => match Override::from_row(&row) {
                    Ok(ov) => self.forwards.set(&name, ov),
                    Err(e) => tracing::warn!(client = %name, "store: forwarding skipped: {e}"),
                },
                Some(_) => {}
                None => {
                    self.forwards.remove(&name);
                }
            },
            Event::Nodes(nodes) => self.set_nodes(nodes),
        }
    }

    fn sync_bindings(&mut self, name: &str, rows: &[BindingRow], now: Now) {
        let config = self.config.clone();
        let nodes = &self.nodes;
        let down = |n: &str| nodes.get(n).is_some_and(|i| !i.alive());
        let taken = self
            .registrar
            .sync_remote(name, rows, &config, &down, now.at, now.unix());
        for contact in taken {
            tracing::info!(
                client = %name, %contact,
                "device registered through another node, which holds it now"
            );
        }
    }

    fn set_nodes(&mut self, nodes: Vec<NodeInfo>) {
        for n in &nodes {
            let was = self.nodes.get(&n.name).map(NodeInfo::alive);
            if was != Some(n.alive()) && (was.is_some() || !n.alive()) {
                if n.alive() {
                    tracing::warn!(node = %n.name, "node is alive again: its devices are rung");
                } else {
                    tracing::warn!(
                        node = %n.name,
                        "node silent for {:.0?}: its devices are not rung until they register on a live node",
                        n.silent_for
                    );
                }
            }
        }
        self.nodes = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        let nodes = &self.nodes;
        self.registrar
            .set_nodes_down(&|n: &str| nodes.get(n).is_some_and(|i| !i.alive()));
    }

    /// The other nodes as the last heartbeat read showed them.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut v: Vec<NodeInfo> = self.nodes.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Is `msg` a request another node sends for a device this node
    /// holds? Its client, when it is: the top Route names us with the
    /// client, and it comes from a known node's SIP address.
    pub(in crate::core) fn node_request(&self, msg: &Message, peer: &Peer) -> Option<String> {
        if self.nodes.is_empty() {
            return None;
        }
        let routes = msg.routes().ok()?;
        let top = routes.first()?;
        if !self.local.is_me(&top.uri.host, top.uri.port) {
            return None;
        }
        let aor = top.uri.params.value(NODE_ROUTE_PARAM)?;
        let known = self.nodes.values().any(|n| n.addr == Some(peer.addr));
        known.then(|| percent_decode(aor))
    }
}

/// `%XX` escapes undone (the client name in a node Route).
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn node_route_names_decode() {
        assert_eq!(percent_decode("alice"), "alice");
        assert_eq!(percent_decode("a%40b"), "a@b");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41"), "A");
    }
}
