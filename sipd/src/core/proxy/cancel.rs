//! CANCEL (RFC 3261 §16.10): the caller's CANCEL is answered 200 at once
//! and sent down every live branch; the caller gets the first 487 (or
//! ours when none comes). Abandoning a branch (noanswer, pickup, timer C)
//! cancels it the same way, once it has answered provisionally.

use std::sync::Arc;

use super::{Ctx, NO_BRANCH};
use crate::calls::Disposition;
use crate::core::{response_dest, via_with_received, Core, Effects};
use crate::sip::{HeaderName, Message};
use crate::time::Now;
use crate::transaction::{Owner, TxId};
use crate::transport::Peer;

impl Core {
    pub(in crate::core) fn on_cancel(
        &mut self,
        msg: Message,
        peer: Peer,
        now: Now,
        fx: &mut Effects,
    ) {
        let invite = self.txns.invite_for_cancel(&msg);
        // Only the source of the INVITE may cancel it: anyone else who
        // learnt its ids gets the answer of a CANCEL that matches nothing,
        // statelessly (a transaction would catch the real CANCEL, which
        // has the same branch, as its retransmission).
        let foreign = invite
            .and_then(|i| self.txns.server(i))
            .is_some_and(|inv| inv.peer.addr != peer.addr);
        if foreign {
            self.counters.dialog_refused += 1;
            let reason = "Call/Transaction Does Not Exist";
            self.reply_stateless(&msg, peer, 481, reason, &[], fx);
            return;
        }
        let resp_via = via_with_received(msg.top_via(), &peer);
        let resp_dest = response_dest(msg.top_via(), &peer);
        let msg = Arc::new(msg);
        let tag = self.rng.next_u64();
        let Some(id) = self
            .txns
            .create_server(msg.clone(), peer, resp_dest, resp_via, tag)
        else {
            self.reply_stateless(
                &msg,
                peer,
                503,
                "Service Unavailable",
                &[(HeaderName::RetryAfter, "5")],
                fx,
            );
            return;
        };
        let Some(inv) = invite.and_then(|i| self.txns.server(i)) else {
            self.txns.reply(
                id,
                481,
                "Call/Transaction Does Not Exist",
                &[],
                now.at,
                &mut fx.out,
            );
            return;
        };
        let (inv_id, is_final, cid) = (inv.id, inv.is_final(), inv.ctx);
        self.txns.reply(id, 200, "OK", &[], now.at, &mut fx.out);
        if is_final {
            return;
        }
        let Some(cid) = cid else {
            // Not proxied (e.g. a feature code in progress): answer it ourselves.
            self.txns
                .reply(inv_id, 487, "Request Terminated", &[], now.at, &mut fx.out);
            self.end_call(msg.call_id(), Disposition::Cancelled, 487, now, fx);
            return;
        };
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        ctx.cancelled = true;
        ctx.hops.clear();
        // No longer ringing for anyone: `*11` cannot pick it up.
        if let Some(call) = ctx.call_id.as_ref().and_then(|c| self.calls.get_mut(c)) {
            call.ctx = None;
        }
        if ctx.live.is_empty() {
            self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, fx);
        }
        for bno in ctx.live.clone() {
            if let Some(b) = ctx.branches.get_mut(bno) {
                if b.provisional {
                    let tx = b.tx;
                    self.send_cancel(cid, tx, now, fx);
                } else {
                    b.cancel_pending = true;
                }
            }
        }
        if let Some(&first) = ctx.live.first() {
            self.arm_cancel_guard(cid, first, now);
        }
        self.ctxs.insert(cid, ctx);
    }

    /// Stop ringing a branch: CANCEL it (now, or when it first answers
    /// provisionally) and ignore its final response.
    pub(super) fn abandon_branch(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        bno: usize,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some(b) = ctx.branches.get_mut(bno) else {
            return;
        };
        if b.detached {
            return;
        }
        b.detached = true;
        if b.provisional {
            let tx = b.tx;
            self.send_cancel(cid, tx, now, fx);
        } else {
            b.cancel_pending = true;
        }
        ctx.live.retain(|&b| b != bno);
    }

    /// A CANCEL for the INVITE of client transaction `tx` (its own client
    /// transaction; responses to it are ignored).
    pub(super) fn send_cancel(&mut self, cid: u64, tx: TxId, now: Now, fx: &mut Effects) {
        let Some(c) = self.txns.client(tx) else {
            return;
        };
        let (Some(data), branch, dest) = (c.build_cancel(), c.branch.clone(), c.dest) else {
            return;
        };
        let owner = Owner {
            ctx: cid,
            branch: NO_BRANCH,
        };
        self.txns.create_client(
            owner,
            branch,
            &crate::sip::Method::Cancel,
            data,
            dest,
            now.at,
            &mut fx.out,
        );
        self.txns.cancelled(tx, now.at);
    }
}
