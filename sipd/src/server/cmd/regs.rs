//! `regs [NAME]`: the registrations, sorted by client.

use std::time::Instant;

use super::Daemon;

impl Daemon {
    pub(super) fn regs(&self, name: Option<&str>) -> proto::Regs {
        let core = crate::lock(&self.core);
        let now = Instant::now();
        let mut bindings: Vec<proto::Binding> = core
            .registrar()
            .iter()
            .filter(|b| name.is_none_or(|n| n == b.name))
            .map(|b| proto::Binding {
                name: b.name.clone(),
                contact: b.contact.clone(),
                source: b.source.to_string(),
                expires: b.remaining(now),
                user_agent: b.user_agent.clone(),
                status: match &b.held_by {
                    Some(h) if h.down => "node down".into(),
                    Some(_) => "on node".into(),
                    None => b.keepalive.reach.as_str().into(),
                },
                rtt_ms: b.keepalive.rtt_ms,
                instance: b.instance.clone(),
                outbound: b.outbound,
                node: b.held_by.as_ref().map(|h| h.node.clone()),
            })
            .collect();
        // By client, each client's devices oldest first (a stable sort).
        bindings.sort_by(|a, b| a.name.cmp(&b.name));
        proto::Regs { bindings }
    }
}
