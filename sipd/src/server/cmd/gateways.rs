//! `gateways`: the health of every gateway and mediagate, in sip.conf
//! order: where it is reached, up/down/unknown with the last round trip
//! and the time of the last change (`core/gateways.rs` checks hosts; a
//! gateway without a host shows its registration's keep-alive state),
//! and the calls in progress through it.

use std::collections::HashMap;

use super::Daemon;
use crate::config::Role;
use crate::registrar::Reach;

impl Daemon {
    pub(in crate::server) fn gateways(&self) -> proto::Gateways {
        let core = crate::lock(&self.core);
        let config = core.config();
        // Calls out to a gateway (its target) or in from one (its caller).
        let mut calls: HashMap<&str, u64> = HashMap::new();
        for c in core.calls().iter() {
            *calls.entry(c.target.as_str()).or_default() += 1;
            if c.caller != c.target {
                *calls.entry(c.caller.as_str()).or_default() += 1;
            }
        }
        let gateways = config
            .clients
            .iter()
            .filter(|c| c.role != Role::User)
            .map(|c| {
                let role = match c.role {
                    Role::Mediagate => "mediagate",
                    _ => "gateway",
                };
                let mut info = proto::GatewayInfo {
                    name: c.name.clone(),
                    role: role.into(),
                    host: String::new(),
                    state: "unknown".into(),
                    rtt_ms: None,
                    since: None,
                    qualify: c.qualify(&config.general),
                    calls: calls.get(c.name.as_str()).copied().unwrap_or(0),
                };
                if let Some(g) = core.gateways().get(&c.name) {
                    info.host = g.dest.to_string();
                    info.state = g.state.as_str().into();
                    info.rtt_ms = g.rtt_ms;
                    info.since = Some(g.since_ms);
                } else if let Some(b) = core.registrar().get(&c.name) {
                    info.host = b.source.to_string();
                    info.rtt_ms = b.keepalive.rtt_ms;
                    info.state = match b.keepalive.reach {
                        Reach::Reachable => "up",
                        Reach::Unreachable => "down",
                        Reach::Unknown => "unknown",
                    }
                    .into();
                }
                info
            })
            .collect();
        proto::Gateways { gateways }
    }
}
