//! `calls`: the calls in progress, oldest first.

use std::time::Instant;

use super::Daemon;

impl Daemon {
    pub(super) fn calls(&self) -> proto::Calls {
        let core = crate::lock(&self.core);
        let now = Instant::now();
        let mut calls: Vec<_> = core.calls().iter().collect();
        calls.sort_by_key(|c| c.started);
        proto::Calls {
            calls: calls
                .into_iter()
                .map(|c| proto::CallInfo {
                    call_id: c.call_id.clone(),
                    caller: c.caller.clone(),
                    dialed: c.dialed.clone(),
                    target: c.target.clone(),
                    state: c.state.as_str().to_string(),
                    duration_secs: now.duration_since(c.started).as_secs(),
                    device: c.device.clone(),
                    media: c.media.as_ref().map(|m| {
                        let st = self.relay.stats(m.id).unwrap_or_default();
                        let ports = m.streams.first().copied().flatten().unwrap_or([0, 0]);
                        proto::MediaInfo {
                            packets_from_caller: st.packets[0],
                            bytes_from_caller: st.bytes[0],
                            packets_from_callee: st.packets[1],
                            bytes_from_callee: st.bytes[1],
                            dropped: st.dropped,
                            caller_addr: st.latched[0].map(|a| a.to_string()),
                            callee_addr: st.latched[1].map(|a| a.to_string()),
                            caller_port: ports[0],
                            callee_port: ports[1],
                        }
                    }),
                })
                .collect(),
        }
    }
}
