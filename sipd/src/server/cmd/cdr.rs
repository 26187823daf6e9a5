//! `cdr [--last N]`: the most recent call detail records, read on the
//! store's read connection off the runtime's workers.

use std::sync::Arc;

use proto::{Reply, Response};

use super::Daemon;

impl Daemon {
    pub(super) async fn cdr(self: &Arc<Self>, last: Option<u32>) -> Response {
        let store = self.store.clone();
        let n = last.unwrap_or(20).min(10_000) as usize;
        match tokio::task::spawn_blocking(move || store.recent_cdrs(n)).await {
            Ok(Ok(rows)) => Response::ok(Reply::Cdr(proto::Cdrs {
                records: rows.into_iter().map(cdr_of_row).collect(),
            })),
            Ok(Err(e)) => Response::error(e.to_string()),
            Err(e) => Response::error(format!("cdr: {e}")),
        }
    }
}

fn cdr_of_row(r: crate::store::CdrRow) -> proto::Cdr {
    proto::Cdr {
        call_id: r.call_id,
        caller: r.caller,
        callerid: r.callerid,
        accountcode: r.accountcode,
        dialed: r.dialed,
        target: r.target,
        disposition: r.disposition,
        code: r.code,
        device: r.device,
        packets_caller: r.packets[0],
        packets_callee: r.packets[1],
        start: r.start,
        answer: r.answer,
        end: r.end,
        duration: r.duration,
        billsec: r.billsec,
        node: r.node,
    }
}
