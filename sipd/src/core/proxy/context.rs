//! The proxy-context state machine: start the next step (one hop, or the
//! devices of one client in parallel), react to what each branch's client
//! transaction reports (provisional, final, timeout, transport failure,
//! timer C) and to the context's own timers (noanswer, no response, CANCEL
//! guard, cleanup), and answer the caller once: the first 2xx wins and the
//! other branches are cancelled; a 6xx ends the step; a step fails (and
//! the next one is tried) only when every branch of it failed.

use std::cmp::Reverse;
use std::time::Duration;

use super::{better_final, moves_on, Branch, Ctx, Hop, NO_BRANCH, NO_RESPONSE};
use crate::calls::State;
use crate::core::{Core, CtxTimer, Effects};
use crate::sip::{Message, Method};
use crate::time::Now;
use crate::transaction::{Owner, TxEvent, T64};

impl Core {
    pub(super) fn start_ctx(&mut self, mut ctx: Ctx, now: Now, fx: &mut Effects) {
        let cid = self.next_ctx;
        self.next_ctx += 1;
        if let Some(tx) = self.txns.server_mut(ctx.server) {
            tx.ctx = Some(cid);
            ctx.top_via.clone_from(&tx.resp_via);
        }
        if let Some(call_id) = &ctx.call_id {
            if let Some(call) = self.calls.get_mut(call_id) {
                call.ctx = Some(cid);
                ctx.media_from = Some(crate::media::CALLER);
            }
        }
        self.ctxs.insert(cid, Box::new(ctx));
        self.try_next(cid, now, fx);
    }

    /// The To tag of the first device ringing in a context's current step
    /// (the early dialog a pickup replaces when several devices ring).
    pub(in crate::core) fn ringing_tag(&self, cid: u64) -> Option<String> {
        let ctx = self.ctxs.get(&cid)?;
        ctx.live
            .iter()
            .filter_map(|&b| ctx.branches.get(b))
            .find_map(|b| b.to_tag.clone())
    }

    /// The request a proxy context is working on.
    pub(in crate::core) fn ctx_request(&self, cid: u64) -> Option<std::sync::Arc<Message>> {
        self.ctxs.get(&cid).map(|c| c.req.clone())
    }

    /// Send a ringing call elsewhere (pickup): the live branches are
    /// cancelled and `hop` becomes the only one left.
    pub(in crate::core) fn redirect_ctx(&mut self, cid: u64, hop: Hop, now: Now, fx: &mut Effects) {
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        if ctx.finished {
            self.ctxs.insert(cid, ctx);
            return;
        }
        for bno in ctx.live.clone() {
            self.abandon_branch(&mut ctx, cid, bno, now, fx);
        }
        ctx.hops.clear();
        ctx.hops.push_back(hop);
        self.ctxs.insert(cid, ctx);
        self.try_next(cid, now, fx);
    }

    /// Start the next step of a context, or answer the caller when none is left.
    pub(super) fn try_next(&mut self, cid: u64, now: Now, fx: &mut Effects) {
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        loop {
            let Some(first) = ctx.hops.pop_front() else {
                // Nothing left: the last final response, else the plan's answer.
                match ctx.last_final.take() {
                    Some((resp, bno)) => self.pass_final(&mut ctx, cid, Some(bno), &resp, now, fx),
                    None => {
                        let (code, reason) = ctx.no_attempt.clone();
                        self.finish_with(&mut ctx, cid, code, &reason, now, fx);
                    }
                }
                break;
            };
            ctx.step_final = None;
            ctx.step_error = None;
            let step = first.step;
            self.start_branch(&mut ctx, cid, first, now, fx);
            while ctx.hops.front().is_some_and(|h| h.step == step) {
                if let Some(hop) = ctx.hops.pop_front() {
                    self.start_branch(&mut ctx, cid, hop, now, fx);
                }
            }
            if !ctx.live.is_empty() {
                break;
            }
        }
        self.ctxs.insert(cid, ctx);
    }

    /// Send the request along one hop of the current step (nothing when
    /// the transaction table is full: the hop is skipped).
    fn start_branch(&mut self, ctx: &mut Ctx, cid: u64, hop: Hop, now: Now, fx: &mut Effects) {
        if ctx.media_body.is_none() {
            if ctx.invite && !ctx.in_dialog && ctx.call_id.is_some() {
                self.decide_media(
                    &ctx.req,
                    &ctx.peer,
                    hop.media_peer.as_ref().unwrap_or(&hop.dest),
                    &hop.target,
                    hop.ruri.as_deref(),
                );
            }
            ctx.media_body = Some(self.request_media(ctx, fx));
            if ctx.invite && !ctx.in_dialog {
                let callee = hop.media_peer.as_ref().unwrap_or(&hop.dest);
                self.expect_callee(ctx.req.call_id(), callee.addr.ip(), fx);
            }
        }
        let (branch_id, data) = self.build_forward(ctx, &hop);
        let bno = ctx.branches.len();
        let method = ctx.req.method().cloned().unwrap_or(Method::Invite);
        let owner = Owner {
            ctx: cid,
            branch: bno,
        };
        let Some(tx) = self.txns.create_client(
            owner,
            branch_id,
            &method,
            data,
            hop.dest,
            now.at,
            &mut fx.out,
        ) else {
            self.counters.overload += 1;
            return;
        };
        if ctx.invite && !ctx.in_dialog {
            self.ctx_timers.push(Reverse((
                now.at + NO_RESPONSE,
                cid,
                bno,
                CtxTimer::NoResponse,
            )));
            // Spec §4.5: a client that does not answer within noanswer
            // is unavailable, also when it is the last one to try.
            if let Some(secs) = hop.noanswer {
                self.ctx_timers.push(Reverse((
                    now.at + Duration::from_secs(u64::from(secs)),
                    cid,
                    bno,
                    CtxTimer::NoAnswer,
                )));
            }
            if let Some(call) = ctx.call_id.as_ref().and_then(|c| self.calls.get_mut(c)) {
                call.target = hop.target.clone();
            }
        }
        ctx.branches.push(Branch {
            tx,
            hop,
            provisional: false,
            cancel_pending: false,
            detached: false,
            to_tag: None,
        });
        ctx.live.push(bno);
    }

    /// Branch `bno` of the current step failed: with a final response
    /// (`resp`), or without one (`error`: timeout, transport error, timer
    /// C; `None`: given up by noanswer or no response). When it was the
    /// step's last branch, the step's best answer decides: move on to the
    /// next step (returns true: the caller re-inserts the context and calls
    /// `try_next`) or answer the caller.
    #[allow(clippy::too_many_arguments)]
    fn branch_failed(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        bno: usize,
        resp: Option<Message>,
        error: Option<(u16, &'static str)>,
        now: Now,
        fx: &mut Effects,
    ) -> bool {
        ctx.live.retain(|&b| b != bno);
        if resp.is_none() {
            if let Some(b) = ctx.branches.get_mut(bno) {
                b.detached = true;
            }
        }
        if ctx.cancelled {
            // The caller gets the first final response of a cancelled
            // branch (or 487 ourselves once none is left).
            match resp {
                Some(r) => self.pass_final(ctx, cid, Some(bno), &r, now, fx),
                None if ctx.live.is_empty() => {
                    self.finish_with(ctx, cid, 487, "Request Terminated", now, fx)
                }
                None => {}
            }
            return false;
        }
        if let Some(r) = resp {
            let code = r.status().unwrap_or(500);
            if code >= 600 {
                // RFC 3261 §16.7 step 5: a 6xx ends the fork.
                for other in ctx.live.clone() {
                    self.abandon_branch(ctx, cid, other, now, fx);
                }
                ctx.live.clear();
            }
            let old = ctx.step_final.as_ref().and_then(|(m, _)| m.status());
            if better_final(code, old) {
                ctx.step_final = Some((r, bno));
            }
        } else if let Some(err) = error {
            if ctx.step_error.is_none() {
                ctx.step_error = Some(err);
            }
        }
        if !ctx.live.is_empty() {
            return false;
        }
        // Every branch of the step has failed.
        match ctx.step_final.take() {
            Some((r, b)) => {
                let code = r.status().unwrap_or(500);
                let next_on = ctx.branches.get(b).and_then(|b| b.hop.next_on);
                if next_on.is_some_and(|n| moves_on(n, code)) {
                    ctx.last_final = Some((r, b));
                    return true;
                }
                self.pass_final(ctx, cid, Some(b), &r, now, fx);
                false
            }
            None => match ctx.step_error.take() {
                Some((code, reason)) => {
                    self.finish_with(ctx, cid, code, reason, now, fx);
                    false
                }
                None => true,
            },
        }
    }

    /// Send a final response from a branch upstream and finish the context.
    pub(super) fn pass_final(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        bno: Option<usize>,
        resp: &Message,
        now: Now,
        fx: &mut Effects,
    ) {
        let code = resp.status().unwrap_or(500);
        let hop = bno.and_then(|b| ctx.branches.get(b)).map(|b| b.hop.clone());
        let data = self.upstream_bytes(ctx, resp, hop.as_ref(), fx);
        self.txns
            .respond(ctx.server, code, data, now.at, &mut fx.out);
        self.finished(ctx, cid, code, now, fx);
    }

    /// Answer the caller ourselves and finish the context.
    pub(super) fn finish_with(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        code: u16,
        reason: &str,
        now: Now,
        fx: &mut Effects,
    ) {
        self.txns
            .reply(ctx.server, code, reason, &[], now.at, &mut fx.out);
        self.finished(ctx, cid, code, now, fx);
    }

    fn finished(&mut self, ctx: &mut Ctx, cid: u64, code: u16, now: Now, fx: &mut Effects) {
        if ctx.finished {
            return;
        }
        ctx.finished = true;
        if code >= 300 {
            // Branches still out (cancelled) are no longer the call: a 2xx
            // from one is hung up.
            ctx.live.clear();
        }
        // An INVITE context stays to pass on 2xx retransmissions and to hang
        // up late answers; any other one is done with its final response.
        let linger = if ctx.invite {
            crate::transaction::LINGER + Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        self.ctx_timers
            .push(Reverse((now.at + linger, cid, 0, CtxTimer::Cleanup)));
        if code >= 300 {
            if let Some(call_id) = ctx.call_id.clone() {
                let disp = crate::calls::Disposition::of_failure(code, ctx.cancelled);
                self.end_call(&call_id, disp, code, now, fx);
            }
        }
    }

    /// A client transaction reported something.
    pub(in crate::core) fn on_tx_event(&mut self, ev: TxEvent, now: Now, fx: &mut Effects) {
        let owner = match &ev {
            TxEvent::Provisional { owner, .. }
            | TxEvent::Final { owner, .. }
            | TxEvent::Timeout { owner, .. }
            | TxEvent::TransportError { owner, .. }
            | TxEvent::TimerC { owner, .. } => *owner,
        };
        if owner.branch == NO_BRANCH {
            return;
        }
        let cid = owner.ctx;
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        let bno = owner.branch;
        let live = !ctx.finished
            && ctx.live.contains(&bno)
            && ctx.branches.get(bno).is_some_and(|b| !b.detached);
        let next_on = ctx.branches.get(bno).and_then(|b| b.hop.next_on);
        let advance = match ev {
            TxEvent::Provisional { msg, .. } => {
                self.on_provisional(&mut ctx, cid, bno, live, &msg, now, fx);
                false
            }
            TxEvent::Final { msg, .. } => {
                let code = msg.status().unwrap_or(500);
                if (200..300).contains(&code) {
                    self.on_2xx(&mut ctx, cid, bno, &msg, now, fx);
                    false
                } else if live {
                    self.branch_failed(&mut ctx, cid, bno, Some(msg), None, now, fx)
                } else {
                    false
                }
            }
            TxEvent::Timeout { .. } | TxEvent::TransportError { .. } if live => {
                // RFC 3261 §16.9: a transport error counts as a 503 from that
                // branch; either way this target is not reachable now. A 503
                // alone is answered upstream as 500 (§16.7 step 6): sipd
                // itself is not unavailable. With a next hop to try, that
                // is tried instead.
                let err = match ev {
                    TxEvent::TransportError { .. } => (500, "Next Hop Unreachable"),
                    _ => (408, "Request Timeout"),
                };
                let err = next_on.is_none().then_some(err);
                self.branch_failed(&mut ctx, cid, bno, None, err, now, fx)
            }
            // A cancelled branch is already being cancelled: its 487 or
            // the CANCEL guard answers the caller, not timer C.
            TxEvent::TimerC { .. } if live && !ctx.cancelled => {
                self.abandon_branch(&mut ctx, cid, bno, now, fx);
                let err = ctx.hops.is_empty().then_some((408, "Request Timeout"));
                self.branch_failed(&mut ctx, cid, bno, None, err, now, fx)
            }
            TxEvent::Timeout { .. } | TxEvent::TransportError { .. } | TxEvent::TimerC { .. } => {
                false
            }
        };
        self.ctxs.insert(cid, ctx);
        if advance {
            self.try_next(cid, now, fx);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_provisional(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        bno: usize,
        live: bool,
        msg: &Message,
        now: Now,
        fx: &mut Effects,
    ) {
        let code = msg.status().unwrap_or(100);
        if let Some(b) = ctx.branches.get_mut(bno) {
            b.provisional = true;
            if code > 100 {
                if let Some(t) = msg.to().tag() {
                    b.to_tag = Some(t.to_string());
                }
            }
            if b.cancel_pending {
                b.cancel_pending = false;
                let tx = b.tx;
                self.send_cancel(cid, tx, now, fx);
            }
        }
        if !live || code <= 100 {
            return;
        }
        let Some(hop) = ctx.branches.get(bno).map(|b| b.hop.clone()) else {
            return;
        };
        let data = self.upstream_bytes(ctx, msg, Some(&hop), fx);
        self.txns
            .respond(ctx.server, code, data, now.at, &mut fx.out);
        if let Some(call) = ctx.call_id.as_ref().and_then(|c| self.calls.get_mut(c)) {
            if call.state == State::Trying {
                call.state = State::Ringing;
            }
            // One device ringing: that is the other end. Several: none
            // of them is until one answers (requests in an early dialog
            // find theirs by To tag, see `dialog.rs`).
            if ctx.live.len() == 1 {
                call.callee_peer = Some(hop.dest);
                if let Some(t) = msg.to().tag() {
                    call.callee_tag = Some(t.to_string());
                }
            }
        }
    }

    /// A 2xx from a branch: passed up (retransmissions too) when it is the
    /// answer; a branch we gave up on that answers anyway is hung up.
    fn on_2xx(
        &mut self,
        ctx: &mut Ctx,
        cid: u64,
        bno: usize,
        msg: &Message,
        now: Now,
        fx: &mut Effects,
    ) {
        let code = msg.status().unwrap_or(200);
        let hop = ctx.branches.get(bno).map(|b| b.hop.clone());
        let stray = ctx.branches.get(bno).is_some_and(|b| b.detached)
            || (ctx.finished && !ctx.live.contains(&bno));
        if stray && (ctx.call_id.is_none() || ctx.in_dialog) {
            // Not a call of ours to end (a re-INVITE, an announcement):
            // pass the answer on if the caller can still take it.
            let data = self.upstream_bytes(ctx, msg, hop.as_ref(), fx);
            self.txns
                .respond(ctx.server, code, data, now.at, &mut fx.out);
        } else if stray {
            // A branch we gave up on answered anyway: end that dialog.
            if let Some(hop) = hop {
                self.hang_up_stray(ctx, &hop, msg, now, fx);
            }
        } else {
            let data = self.upstream_bytes(ctx, msg, hop.as_ref(), fx);
            self.txns
                .respond(ctx.server, code, data, now.at, &mut fx.out);
            if !ctx.finished {
                self.answered(ctx, bno, msg, now, fx);
                // The first 2xx wins: the other devices stop ringing.
                for other in ctx.live.clone() {
                    if other != bno {
                        self.abandon_branch(ctx, cid, other, now, fx);
                    }
                }
                ctx.live = vec![bno];
                self.finished(ctx, cid, code, now, fx);
            }
        }
    }

    /// Proxy-context timers.
    pub(in crate::core) fn on_ctx_timer(
        &mut self,
        cid: u64,
        bno: usize,
        kind: CtxTimer,
        now: Now,
        fx: &mut Effects,
    ) {
        if kind == CtxTimer::Cleanup {
            // Keep the context while a branch can still answer (an INVITE
            // branch lives up to timer C + 64*T1), so that a late 2xx is
            // hung up instead of lost.
            let busy = self.ctxs.get(&cid).is_some_and(|c| {
                c.invite && c.branches.iter().any(|b| self.txns.client(b.tx).is_some())
            });
            if busy {
                self.ctx_timers.push(Reverse((
                    now.at + crate::transaction::LINGER,
                    cid,
                    0,
                    CtxTimer::Cleanup,
                )));
            } else {
                self.ctxs.remove(&cid);
            }
            return;
        }
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        let advance = match kind {
            CtxTimer::NoAnswer => {
                // Once the caller cancelled, its answer is the branch's 487
                // (or the CANCEL guard's), not the next target's. The
                // devices of one step share its noanswer: all stop ringing.
                if !ctx.finished && !ctx.cancelled && ctx.live.contains(&bno) {
                    for b in ctx.live.clone() {
                        self.abandon_branch(&mut ctx, cid, b, now, fx);
                    }
                    self.branch_failed(&mut ctx, cid, bno, None, None, now, fx)
                } else {
                    false
                }
            }
            CtxTimer::NoResponse => {
                let silent = ctx.branches.get(bno).is_some_and(|b| !b.provisional);
                if !ctx.finished && ctx.live.contains(&bno) && silent {
                    self.abandon_branch(&mut ctx, cid, bno, now, fx);
                    self.branch_failed(&mut ctx, cid, bno, None, None, now, fx)
                } else {
                    false
                }
            }
            CtxTimer::CancelGuard => {
                if !ctx.finished {
                    // A 2xx that still comes is then hung up, not lost.
                    for b in ctx.live.clone() {
                        self.abandon_branch(&mut ctx, cid, b, now, fx);
                    }
                    self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, fx);
                }
                false
            }
            CtxTimer::Cleanup => false,
        };
        self.ctxs.insert(cid, ctx);
        if advance {
            self.try_next(cid, now, fx);
        }
    }

    /// Arm the guard that answers 487 ourselves when a cancelled branch
    /// never sends its final response.
    pub(super) fn arm_cancel_guard(&mut self, cid: u64, bno: usize, now: Now) {
        self.ctx_timers
            .push(Reverse((now.at + T64, cid, bno, CtxTimer::CancelGuard)));
    }
}
