//! Prometheus metrics (`[general] metrics=IP:port`): `GET /metrics` in the
//! text exposition format, off unless sip.conf names an address.
//!
//! Pull, not push: nothing on the packet path changes for the metrics. A
//! scrape reads what sipd counts anyway (the core's [`Counters`], table
//! sizes, the transports' connection counts, the store's statistics), the
//! same numbers `sipctl status` shows. The core lock is held only to copy
//! the core's numbers into a [`Sample`] (the counters, a few table sizes,
//! one pass over bindings and calls); the transports and the store are
//! read after it is released, and the text is built without any lock.
//!
//! The text is made by the `prometheus` crate (tikv): a registry filled
//! from the sample at each scrape and its text encoder, so names, HELP,
//! TYPE and escaping follow the format without hand-written output.
//!
//! Reload: a reload that changes `metrics=` moves the listener. The new
//! address is bound before anything else changes, so a reload whose
//! address cannot be bound is refused whole and the old listener stays; a
//! reload that removes the key closes the listener. When the new address
//! overlaps the old one (same port, the wildcard address), the old one is
//! closed first and, if the new one still cannot be bound, opened again.
//!
//! The HTTP side is in `http.rs`.

mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::Daemon;
use crate::calls::State;
use crate::core::Counters;

pub use http::Listener;

/// What one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub counters: Counters,
    pub clients: usize,
    pub registered_clients: usize,
    pub bindings: usize,
    pub bindings_unreachable: usize,
    /// Calls trying, ringing, answered.
    pub calls: [usize; 3],
    pub transactions: usize,
    pub contexts: usize,
    pub per_source_refused: u64,
    /// Entries in the ban table.
    pub bans: usize,
    pub streams: Vec<Stream>,
    pub store: StoreSample,
    /// Relay sessions open, RTP/RTCP ports in use, packets relayed and dropped.
    pub relayed_calls: usize,
    pub relay_ports: usize,
    pub relay_packets: u64,
    pub relay_dropped: u64,
    /// Every gateway and mediagate, as `sipctl gateways` shows them.
    pub gateways: Vec<proto::GatewayInfo>,
    /// Gateway state changes (up/down) since start.
    pub gateway_changes: u64,
}

/// One stream transport's connections.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    pub transport: &'static str,
    pub connections: usize,
    pub untrusted: usize,
    pub refused: u64,
    pub evicted: u64,
}

#[derive(Clone, Debug, Default)]
pub struct StoreSample {
    pub queued: usize,
    pub degraded: bool,
    pub commits: u64,
    pub errors: u64,
    pub retries: u64,
    pub dropped: u64,
    /// PostgreSQL store: bindings other nodes hold, the other nodes alive
    /// and down, the change feed connected, CDRs spooled to disk.
    pub remote_bindings: usize,
    pub nodes: [usize; 2],
    pub feed: Option<bool>,
    pub spooled: u64,
}

impl Daemon {
    /// Read everything a scrape reports (the core lock only for the core's part).
    pub(super) fn sample(&self) -> Sample {
        let mut s = {
            let core = crate::lock(&self.core);
            let mut calls = [0usize; 3];
            for call in core.calls().iter() {
                calls[match call.state {
                    State::Trying => 0,
                    State::Ringing => 1,
                    State::Answered => 2,
                }] += 1;
            }
            let registrar = core.registrar();
            Sample {
                gateway_changes: core.gateways().changes(),
                counters: core.counters.clone(),
                clients: core.config().clients.len(),
                registered_clients: registrar.clients(),
                bindings: registrar.len(),
                bindings_unreachable: registrar.iter().filter(|b| !b.reachable()).count(),
                calls,
                transactions: core.transaction_count(),
                contexts: core.context_count(),
                per_source_refused: core.refused_per_source(),
                bans: core.ban_table_sizes().0,
                relay_ports: 2 * core.media_ports_in_use(),
                store: StoreSample {
                    remote_bindings: registrar.iter().filter(|b| b.held_by.is_some()).count(),
                    nodes: core.nodes().iter().fold([0, 0], |mut n, x| {
                        n[usize::from(!x.alive())] += 1;
                        n
                    }),
                    ..StoreSample::default()
                },
                ..Sample::default()
            }
        };
        s.gateways = self.gateways().gateways;
        s.relayed_calls = self.relay.len();
        (s.relay_packets, s.relay_dropped) = self.relay.totals();
        s.version = env!("CARGO_PKG_VERSION");
        s.uptime_secs = self.started.elapsed().as_secs();
        for t in self.transports.streams() {
            use std::sync::atomic::Ordering::Relaxed;
            s.streams.push(Stream {
                transport: t.kind().name(),
                connections: t.connections(),
                untrusted: t.untrusted(),
                refused: t.refused.load(Relaxed),
                evicted: t.evicted.load(Relaxed),
            });
        }
        let health = self.store.health();
        s.store = StoreSample {
            queued: health.queued,
            degraded: health.degraded_for.is_some(),
            commits: self.store.commits(),
            errors: self.store.errors(),
            retries: self.store.failures(),
            dropped: self.store.dropped(),
            spooled: self.store.spooled(),
            feed: self
                .feed
                .as_ref()
                .map(|f| crate::lock(&f.sync).state().connected),
            ..s.store
        };
        s
    }

    /// Serve the metrics on `socket` (bound by [`bind`]).
    pub(super) fn start_metrics(&self, socket: std::net::TcpListener) -> Result<Listener, String> {
        let weak = self.weak.get().cloned().unwrap_or_default();
        let render: http::Render = Arc::new(move || match weak.upgrade() {
            Some(d) => encode(&d.sample()),
            None => Err("shutting down".into()),
        });
        let l = Listener::start(socket, &self.runtime, render)
            .map_err(|e| format!("metrics: cannot serve: {e}"))?;
        tracing::info!("metrics on http://{}{}", l.addr(), http::PATH);
        Ok(l)
    }

    /// Reload: listen on `want` instead of where the metrics are served now
    /// (see the module's doc). `Err` leaves the listener as it was.
    pub(super) fn move_metrics(&self, want: Option<SocketAddr>) -> Result<(), String> {
        let mut slot = crate::lock(&self.metrics);
        if slot.as_ref().map(Listener::addr) == want {
            return Ok(());
        }
        let Some(addr) = want else {
            if let Some(old) = slot.take() {
                tracing::info!("metrics: no longer listening on {}", old.addr());
                old.stop();
            }
            return Ok(());
        };
        let socket = match bind(addr) {
            Ok(s) => s,
            Err(first) => {
                let Some(old) = slot.take() else {
                    return Err(cannot_listen(addr, &first));
                };
                // The old listener may hold the port: close it, try again,
                // and put it back if the new address still fails.
                let old_addr = old.addr();
                old.stop();
                match bind(addr) {
                    Ok(s) => s,
                    Err(e) => {
                        match bind(old_addr).map_err(|e| e.to_string()) {
                            Ok(s) => *slot = Some(self.start_metrics(s)?),
                            Err(e) => {
                                tracing::error!("metrics: cannot listen on {old_addr} again: {e}")
                            }
                        }
                        return Err(cannot_listen(addr, &e));
                    }
                }
            }
        };
        let new = self.start_metrics(socket)?;
        if let Some(old) = slot.replace(new) {
            old.stop();
        }
        Ok(())
    }
}

fn cannot_listen(addr: SocketAddr, e: &std::io::Error) -> String {
    format!("metrics={addr}: cannot listen: {e}; keeping the current configuration")
}

/// Bind the metrics listener's socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    http::bind(addr)
}

/// Registers metric families on a fresh registry, one scrape's worth.
struct Families(Registry);

impl Families {
    fn gauge(&self, name: &str, help: &str, value: usize) -> prometheus::Result<()> {
        let g = IntGauge::new(name, help)?;
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        self.0.register(Box::new(g))
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        self.0.register(Box::new(c))
    }

    fn gauges<'a>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> prometheus::Result<()> {
        let g = IntGaugeVec::new(Opts::new(name, help), &[label])?;
        for (l, v) in values {
            g.with_label_values(&[l])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        self.0.register(Box::new(g))
    }

    fn counters<'a>(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> prometheus::Result<()> {
        let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
        for (l, v) in values {
            c.with_label_values(&[l]).inc_by(v);
        }
        self.0.register(Box::new(c))
    }
}

/// The exposition text of a sample.
pub fn encode(s: &Sample) -> Result<String, String> {
    build(s)
        .and_then(|r| prometheus::TextEncoder::new().encode_to_string(&r.gather()))
        .map_err(|e| format!("metrics: {e}"))
}

fn build(s: &Sample) -> prometheus::Result<Registry> {
    let f = Families(Registry::new());
    let c = &s.counters;
    f.gauges(
        "sipd_build_info",
        "sipd's version (always 1).",
        "version",
        [(s.version, 1)],
    )?;
    f.gauge(
        "sipd_uptime_seconds",
        "Seconds since sipd started.",
        usize::try_from(s.uptime_secs).unwrap_or(usize::MAX),
    )?;
    f.gauge(
        "sipd_configured_clients",
        "Clients (sections) in sip.conf.",
        s.clients,
    )?;
    f.gauge(
        "sipd_registered_clients",
        "Clients with at least one binding.",
        s.registered_clients,
    )?;
    f.gauge(
        "sipd_bindings",
        "Registered bindings (contacts), all clients.",
        s.bindings,
    )?;
    f.gauge(
        "sipd_bans",
        "Entries in the ban table (flood bans and brute-force locks).",
        s.bans,
    )?;
    f.gauge(
        "sipd_relay_sessions",
        "Calls whose media goes through sipd's relay now.",
        s.relayed_calls,
    )?;
    f.gauge(
        "sipd_relay_ports",
        "UDP ports the media relay holds (RTP and RTCP).",
        s.relay_ports,
    )?;
    f.counter(
        "sipd_relay_packets_total",
        "Media packets the relay forwarded.",
        s.relay_packets,
    )?;
    f.counter(
        "sipd_relay_dropped_packets_total",
        "Media packets the relay dropped (foreign source, before the sender was known, nowhere to go).",
        s.relay_dropped,
    )?;
    f.counter(
        "sipd_relayed_calls_total",
        "Calls whose media went through the relay.",
        c.media_sessions,
    )?;
    f.counter(
        "sipd_media_timeouts_total",
        "Answered calls hung up because no media flowed for media_timeout.",
        c.media_timeouts,
    )?;
    f.gauge(
        "sipd_bindings_unreachable",
        "Bindings whose keep-alive OPTIONS went unanswered.",
        s.bindings_unreachable,
    )?;
    f.gauges(
        "sipd_calls_in_progress",
        "Calls in progress by state; their sum is all calls.",
        "state",
        [State::Trying, State::Ringing, State::Answered]
            .into_iter()
            .zip(s.calls)
            .map(|(st, n)| (st.as_str(), n)),
    )?;
    f.counter(
        "sipd_calls_started_total",
        "Calls proxied.",
        c.calls_started,
    )?;
    f.gauge(
        "sipd_transactions",
        "SIP transactions open or lingering, server and client.",
        s.transactions,
    )?;
    f.gauge(
        "sipd_proxy_contexts",
        "Proxy contexts open or lingering.",
        s.contexts,
    )?;
    f.counters(
        "sipd_requests_total",
        "SIP requests received, by method (retransmissions included).",
        "method",
        c.received.requests(),
    )?;
    f.counters(
        "sipd_responses_total",
        "SIP responses received, by status class (retransmissions included).",
        "class",
        c.received.responses(),
    )?;
    for (name, help, value) in [
        (
            "sipd_malformed_messages_total",
            "Messages that did not parse.",
            c.malformed,
        ),
        (
            "sipd_retransmissions_total",
            "Retransmitted requests absorbed by their transactions.",
            c.retransmissions,
        ),
        (
            "sipd_stateless_replies_total",
            "Responses sent without a transaction (challenges, refusals).",
            c.replies_sent,
        ),
        (
            "sipd_auth_failures_total",
            "Requests refused for failed authentication.",
            c.auth_failures,
        ),
        (
            "sipd_registrations_total",
            "REGISTER requests accepted.",
            c.registrations,
        ),
        (
            "sipd_bans_total",
            "Bans put in the ban table (floods and brute-force locks).",
            c.bans,
        ),
        (
            "sipd_banned_requests_dropped_total",
            "Requests dropped unanswered because their source is banned.",
            c.banned_dropped,
        ),
        (
            "sipd_overload_rejections_total",
            "Requests refused with 503 because a table was full.",
            c.overload,
        ),
        (
            "sipd_per_source_rejections_total",
            "Requests refused with 503: their source held too many open transactions.",
            s.per_source_refused,
        ),
        (
            "sipd_call_limit_rejections_total",
            "Calls refused because their caller had call_limit calls.",
            c.call_limit,
        ),
        (
            "sipd_dialog_refusals_total",
            "In-dialog requests refused (not from the dialog's ends or targets).",
            c.dialog_refused,
        ),
        (
            "sipd_send_failures_total",
            "Requests whose TCP connection could not be (re)opened.",
            c.send_failures,
        ),
        (
            "sipd_keepalives_sent_total",
            "Keep-alive OPTIONS sent to UDP bindings.",
            c.keepalives_sent,
        ),
        (
            "sipd_keepalives_answered_total",
            "Keep-alive OPTIONS answered.",
            c.keepalives_answered,
        ),
    ] {
        f.counter(name, help, value)?;
    }
    let streams = &s.streams;
    f.gauges(
        "sipd_connections",
        "Open connections by stream transport.",
        "transport",
        streams.iter().map(|t| (t.transport, t.connections)),
    )?;
    f.gauges(
        "sipd_connections_untrusted",
        "Open connections that carried no authenticated request yet.",
        "transport",
        streams.iter().map(|t| (t.transport, t.untrusted)),
    )?;
    f.counters(
        "sipd_connections_refused_total",
        "Connections refused at accept (limits).",
        "transport",
        streams.iter().map(|t| (t.transport, t.refused)),
    )?;
    f.counters(
        "sipd_connections_evicted_total",
        "Untrusted connections closed to make room for a new one.",
        "transport",
        streams.iter().map(|t| (t.transport, t.evicted)),
    )?;
    gateways(&f, s)?;
    let st = &s.store;
    f.gauge(
        "sipd_store_queue_depth",
        "Store writes queued, not yet committed.",
        st.queued,
    )?;
    f.gauge(
        "sipd_store_degraded",
        "1 while store writes are failing (kept queued and retried), else 0.",
        usize::from(st.degraded),
    )?;
    f.counter(
        "sipd_store_commits_total",
        "Store transactions committed.",
        st.commits,
    )?;
    f.counter(
        "sipd_store_write_errors_total",
        "Store writes that failed for good.",
        st.errors,
    )?;
    f.counter(
        "sipd_store_write_retries_total",
        "Store transactions that failed because the store did, each retried.",
        st.retries,
    )?;
    f.counter(
        "sipd_store_writes_dropped_total",
        "Store writes lost (evicted from a full queue, or not written at shutdown).",
        st.dropped,
    )?;
    if let Some(feed) = st.feed {
        // Several nodes on one PostgreSQL.
        f.gauge(
            "sipd_store_feed_connected",
            "1 while the PostgreSQL change feed (LISTEN/NOTIFY, heartbeats) is connected.",
            usize::from(feed),
        )?;
        f.gauges(
            "sipd_nodes",
            "Other nodes on the PostgreSQL store, by state (down: silent for more than 10 s).",
            "state",
            [("alive", st.nodes[0]), ("down", st.nodes[1])],
        )?;
        f.gauge(
            "sipd_remote_bindings",
            "Bindings whose flows other nodes hold.",
            st.remote_bindings,
        )?;
        f.counter(
            "sipd_store_cdrs_spooled_total",
            "CDRs put in the local spool because PostgreSQL could not take them in time.",
            st.spooled,
        )?;
    }
    Ok(f.0)
}

/// Per gateway and mediagate: its health state (one series per state, 1
/// for the state it is in: alerts need no absent-series rules), the round
/// trip of its last answered OPTIONS, and the calls through it.
fn gateways(f: &Families, s: &Sample) -> prometheus::Result<()> {
    const STATES: [&str; 3] = ["up", "down", "unknown"];
    let labels = ["gateway", "role"];
    let state = IntGaugeVec::new(
        Opts::new(
            "sipd_gateway_state",
            "Health of each gateway and mediagate by OPTIONS checks: 1 for the state it is in \
             (unknown: not checked yet, qualify=0, or a registered gateway not answered yet).",
        ),
        &["gateway", "role", "state"],
    )?;
    let up = IntGaugeVec::new(
        Opts::new(
            "sipd_gateway_up",
            "1 while the gateway or mediagate answers its OPTIONS checks, 0 while down or unknown.",
        ),
        &labels,
    )?;
    let rtt = GaugeVec::new(
        Opts::new(
            "sipd_gateway_options_rtt_seconds",
            "Round trip of the last answered OPTIONS check (absent until one is answered).",
        ),
        &labels,
    )?;
    let calls = IntGaugeVec::new(
        Opts::new(
            "sipd_gateway_calls_in_progress",
            "Calls in progress to or from the gateway or mediagate.",
        ),
        &labels,
    )?;
    for g in &s.gateways {
        let id = [g.name.as_str(), g.role.as_str()];
        for st in STATES {
            state
                .with_label_values(&[id[0], id[1], st])
                .set(i64::from(g.state == st));
        }
        up.with_label_values(&id).set(i64::from(g.state == "up"));
        if let Some(ms) = g.rtt_ms {
            rtt.with_label_values(&id).set(ms as f64 / 1000.0);
        }
        calls
            .with_label_values(&id)
            .set(i64::try_from(g.calls).unwrap_or(i64::MAX));
    }
    for family in [state, up, calls] {
        f.0.register(Box::new(family))?;
    }
    f.0.register(Box::new(rtt))?;
    f.counter(
        "sipd_gateway_state_changes_total",
        "Gateway and mediagate state changes (up, down) since start.",
        s.gateway_changes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_as_text() {
        let mut s = Sample {
            version: "1.2.3",
            uptime_secs: 42,
            bindings: 3,
            calls: [0, 1, 2],
            streams: vec![Stream {
                transport: "tcp",
                connections: 2,
                ..Stream::default()
            }],
            gateways: vec![
                gateway("GW1", "gateway", "up", Some(12), 3),
                gateway("GW2", "mediagate", "down", None, 0),
            ],
            gateway_changes: 4,
            ..Sample::default()
        };
        s.counters
            .received
            .request(Some(&crate::sip::Method::Register));
        s.counters.received.response(Some(401));
        let text = encode(&s).unwrap();
        for line in [
            "# TYPE sipd_build_info gauge",
            "sipd_build_info{version=\"1.2.3\"} 1",
            "# TYPE sipd_uptime_seconds gauge",
            "sipd_uptime_seconds 42",
            "sipd_bindings 3",
            "sipd_calls_in_progress{state=\"trying\"} 0",
            "sipd_calls_in_progress{state=\"answered\"} 2",
            "# TYPE sipd_requests_total counter",
            "sipd_requests_total{method=\"REGISTER\"} 1",
            "sipd_requests_total{method=\"other\"} 0",
            "sipd_responses_total{class=\"4xx\"} 1",
            "sipd_connections{transport=\"tcp\"} 2",
            "sipd_store_degraded 0",
            "sipd_gateway_state{gateway=\"GW1\",role=\"gateway\",state=\"up\"} 1",
            "sipd_gateway_state{gateway=\"GW1\",role=\"gateway\",state=\"down\"} 0",
            "sipd_gateway_state{gateway=\"GW2\",role=\"mediagate\",state=\"down\"} 1",
            "sipd_gateway_up{gateway=\"GW1\",role=\"gateway\"} 1",
            "sipd_gateway_up{gateway=\"GW2\",role=\"mediagate\"} 0",
            "sipd_gateway_options_rtt_seconds{gateway=\"GW1\",role=\"gateway\"} 0.012",
            "sipd_gateway_calls_in_progress{gateway=\"GW1\",role=\"gateway\"} 3",
            "sipd_gateway_state_changes_total 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // Every counter family is named *_total.
        for l in text.lines().filter(|l| l.ends_with(" counter")) {
            assert!(l.split(' ').nth(2).unwrap().ends_with("_total"), "{l}");
        }
        // No round trip known: no series rather than a made-up 0.
        assert!(
            !text.contains("sipd_gateway_options_rtt_seconds{gateway=\"GW2\""),
            "{text}"
        );
    }

    fn gateway(
        name: &str,
        role: &str,
        state: &str,
        rtt_ms: Option<u64>,
        calls: u64,
    ) -> proto::GatewayInfo {
        proto::GatewayInfo {
            name: name.into(),
            role: role.into(),
            host: String::new(),
            state: state.into(),
            rtt_ms,
            since: None,
            qualify: 30,
            calls,
        }
    }
}
