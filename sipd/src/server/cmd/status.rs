//! `status`: version, uptime, listen addresses, table sizes, counters,
//! and the store's health (`ok` or `degraded` with the queue depth).

use super::Daemon;

impl Daemon {
    pub(super) fn status(&self) -> proto::Status {
        let core = crate::lock(&self.core);
        let config = core.config();
        let mut listen = Vec::new();
        for a in self.transports.udp.local_addrs() {
            listen.push(format!("udp:{a}"));
        }
        for a in self.transports.tcp.local_addrs() {
            listen.push(format!("tcp:{a}"));
        }
        let t = &self.transports;
        for s in [&t.tls, &t.ws, &t.wss].into_iter().flatten() {
            for a in s.local_addrs() {
                listen.push(format!("{}:{a}", s.kind().name()));
            }
        }
        let c = &core.counters;
        let counter = |name: &str, value: u64| proto::Counter {
            name: name.into(),
            value,
        };
        // Per stream transport: "tcp connections", "tls connections", ...
        let mut streams = Vec::new();
        for s in self.transports.streams() {
            use std::sync::atomic::Ordering::Relaxed;
            let n = s.kind().name();
            streams.push(counter(&format!("{n} connections"), s.connections() as u64));
            streams.push(counter(
                &format!("{n} connections refused"),
                s.refused.load(Relaxed),
            ));
            streams.push(counter(
                &format!("{n} connections untrusted"),
                s.untrusted() as u64,
            ));
            streams.push(counter(
                &format!("{n} connections evicted"),
                s.evicted.load(Relaxed),
            ));
        }
        proto::Status {
            name: "sipd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            realm: config.general.realm.clone(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            listen,
            country: config.country.clone(),
            city: config.city.clone(),
            dir: self.dir.display().to_string(),
            config: self.conf_path.display().to_string(),
            clients: config.clients.len(),
            registrations: core.registrar().len(),
            calls: core.calls().len(),
            transactions: core.transaction_count(),
            counters: vec![
                counter("requests in", c.requests_in),
                counter("responses in", c.responses_in),
                counter("malformed in", c.malformed),
                counter("retransmissions absorbed", c.retransmissions),
                counter("replies sent", c.replies_sent),
                counter("auth failures", c.auth_failures),
                counter("registrations accepted", c.registrations),
                counter("calls started", c.calls_started),
                counter("overload rejections", c.overload),
                counter("calls over call_limit", c.call_limit),
                counter("in-dialog requests refused", c.dialog_refused),
                counter("keep-alive OPTIONS sent", c.keepalives_sent),
                counter("keep-alive OPTIONS answered", c.keepalives_answered),
                counter(
                    "bindings unreachable",
                    core.registrar().iter().filter(|b| !b.reachable()).count() as u64,
                ),
                counter("gateway state changes", core.gateways().changes()),
                counter("gateways down", core.gateways().down().len() as u64),
                counter("gateway OPTIONS sent", c.gateway_checks_sent),
                counter("gateway OPTIONS answered", c.gateway_checks_answered),
                counter("store writes pending", self.store.pending() as u64),
                counter("send failures", c.send_failures),
                counter("store write errors", self.store.errors()),
                counter("store write failures retried", self.store.failures()),
                counter("store writes dropped", self.store.dropped()),
                counter("per-source rejections", core.refused_per_source()),
                counter("bans in table", core.ban_table_sizes().0 as u64),
                counter("bans", c.bans),
                counter("requests dropped from banned sources", c.banned_dropped),
                counter("flood sources counted", core.ban_table_sizes().1 as u64),
                counter("relayed calls", self.relay.len() as u64),
                counter("calls relayed since start", c.media_sessions),
                counter("relay ports in use", 2 * core.media_ports_in_use() as u64),
                counter("media packets relayed", self.relay.totals().0),
                counter("media packets dropped", self.relay.totals().1),
                counter("media streams without a free port", c.media_no_ports),
                counter("calls ended by media_timeout", c.media_timeouts),
            ]
            .into_iter()
            .chain(streams)
            .collect(),
            store: Box::new(self.store_status(&core)),
        }
    }
}

impl Daemon {
    /// The store of `status`: which, its state, and with PostgreSQL the
    /// node, the feed and the other nodes.
    fn store_status(&self, core: &crate::core::Core) -> proto::StoreStatus {
        let mut s = store_status(&self.store.health());
        s.kind = self.store.describe();
        if let Some(feed) = &self.feed {
            s.node = Some(feed.node.clone());
            s.feed = Some(crate::lock(&feed.sync).state().connected);
            s.nodes = core
                .nodes()
                .into_iter()
                .map(|n| proto::NodeStatus {
                    state: if n.alive() { "alive" } else { "down" }.into(),
                    addr: n.addr.map(|a| a.to_string()).unwrap_or_default(),
                    silent_secs: n.silent_for.as_secs(),
                    name: n.name,
                })
                .collect();
        }
        s
    }
}

/// The store line of `status`: `ok`, or `degraded` with the queue depth
/// and the last error.
fn store_status(h: &crate::store::Health) -> proto::StoreStatus {
    proto::StoreStatus {
        state: if h.degraded_for.is_some() {
            "degraded"
        } else {
            "ok"
        }
        .into(),
        queued: h.queued as u64,
        degraded_secs: h.degraded_for.map(|d| d.as_secs()),
        last_error: h.last_error.clone(),
        dropped: h.dropped,
        ..proto::StoreStatus::default()
    }
}
