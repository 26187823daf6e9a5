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
                })
                .collect(),
        }
    }
}
