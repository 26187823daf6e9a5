//! `reload` (also `sipd -r`): re-read sip.conf off the runtime's workers;
//! on any error the configuration in force stays.

use std::sync::Arc;

use proto::{Reply, Response};

use super::Daemon;

impl Daemon {
    pub(super) async fn reload_command(self: &Arc<Self>) -> Response {
        let d = self.clone();
        match tokio::task::spawn_blocking(move || d.reload()).await {
            Ok(Ok(r)) => {
                tracing::info!(
                    "reloaded: added {:?}, removed {:?}, changed {:?}",
                    r.added,
                    r.removed,
                    r.changed
                );
                Response::ok(Reply::Reload(r))
            }
            Ok(Err(e)) => {
                tracing::error!("reload refused, keeping the old configuration:\n{e}");
                Response::error(e)
            }
            Err(e) => Response::error(format!("reload failed: {e}")),
        }
    }
}
