//! The proxy-context state machine: start the next hop, react to what the
//! branch's client transaction reports (provisional, final, timeout,
//! transport failure, timer C) and to the context's own timers (noanswer,
//! no response, CANCEL guard, cleanup), and answer the caller once.

use std::cmp::Reverse;
use std::time::Duration;

use super::{moves_on, Branch, Ctx, Hop, NO_BRANCH, NO_RESPONSE};
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
            }
        }
        self.ctxs.insert(cid, Box::new(ctx));
        self.try_next(cid, now, fx);
    }

    /// The request a proxy context is working on.
    pub(in crate::core) fn ctx_request(&self, cid: u64) -> Option<std::sync::Arc<Message>> {
        self.ctxs.get(&cid).map(|c| c.req.clone())
    }

    /// Send a ringing call elsewhere (pickup): the live branch is
    /// cancelled and `hop` becomes the only one left.
    pub(in crate::core) fn redirect_ctx(&mut self, cid: u64, hop: Hop, now: Now, fx: &mut Effects) {
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        if ctx.finished {
            self.ctxs.insert(cid, ctx);
            return;
        }
        if let Some(bno) = ctx.current {
            self.abandon_branch(&mut ctx, cid, bno, now, fx);
        }
        ctx.hops.clear();
        ctx.hops.push_back(hop);
        self.ctxs.insert(cid, ctx);
        self.try_next(cid, now, fx);
    }

    /// Start the next hop of a context, or answer the caller when none is left.
    pub(super) fn try_next(&mut self, cid: u64, now: Now, fx: &mut Effects) {
        let Some(mut ctx) = self.ctxs.remove(&cid) else {
            return;
        };
        loop {
            let Some(hop) = ctx.hops.pop_front() else {
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
            let (branch_id, data) = self.build_forward(&ctx, &hop);
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
                continue;
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
            });
            ctx.current = Some(bno);
            break;
        }
        self.ctxs.insert(cid, ctx);
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
        let data = self.upstream_bytes(resp, hop.as_ref());
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
            && ctx.current == Some(bno)
            && ctx.branches.get(bno).is_some_and(|b| !b.detached);
        match ev {
            TxEvent::Provisional { msg, .. } => {
                self.on_provisional(&mut ctx, cid, bno, live, &msg, now, fx)
            }
            TxEvent::Final { msg, .. } => {
                let code = msg.status().unwrap_or(500);
                if (200..300).contains(&code) {
                    self.on_2xx(&mut ctx, cid, bno, &msg, now, fx);
                } else if live {
                    let next_on = ctx.branches.get(bno).and_then(|b| b.hop.next_on);
                    if !ctx.cancelled && next_on.is_some_and(|n| moves_on(n, code)) {
                        ctx.last_final = Some((msg, bno));
                        self.ctxs.insert(cid, ctx);
                        self.try_next(cid, now, fx);
                        return;
                    }
                    self.pass_final(&mut ctx, cid, Some(bno), &msg, now, fx);
                }
            }
            TxEvent::Timeout { .. } | TxEvent::TransportError { .. } if live => {
                // RFC 3261 §16.9: a transport error counts as a 503 from that
                // branch; either way this target is not reachable now. A 503
                // alone is answered upstream as 500 (§16.7 step 6): sipd
                // itself is not unavailable.
                let (code, reason) = match ev {
                    TxEvent::TransportError { .. } => (500, "Next Hop Unreachable"),
                    _ => (408, "Request Timeout"),
                };
                let next_on = ctx.branches.get(bno).and_then(|b| b.hop.next_on);
                if ctx.cancelled {
                    self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, fx);
                } else if next_on.is_some() {
                    if let Some(b) = ctx.branches.get_mut(bno) {
                        b.detached = true;
                    }
                    ctx.current = None;
                    self.ctxs.insert(cid, ctx);
                    self.try_next(cid, now, fx);
                    return;
                } else {
                    self.finish_with(&mut ctx, cid, code, reason, now, fx);
                }
            }
            // A cancelled branch is already being cancelled: its 487 or
            // the CANCEL guard answers the caller, not timer C.
            TxEvent::TimerC { .. } if live && !ctx.cancelled => {
                self.abandon_branch(&mut ctx, cid, bno, now, fx);
                if ctx.hops.is_empty() {
                    self.finish_with(&mut ctx, cid, 408, "Request Timeout", now, fx);
                } else {
                    self.ctxs.insert(cid, ctx);
                    self.try_next(cid, now, fx);
                    return;
                }
            }
            TxEvent::Timeout { .. } | TxEvent::TransportError { .. } | TxEvent::TimerC { .. } => {}
        }
        self.ctxs.insert(cid, ctx);
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
        let data = self.upstream_bytes(msg, Some(&hop));
        self.txns
            .respond(ctx.server, code, data, now.at, &mut fx.out);
        if let Some(call) = ctx.call_id.as_ref().and_then(|c| self.calls.get_mut(c)) {
            if call.state == State::Trying {
                call.state = State::Ringing;
            }
            call.callee_peer = Some(hop.dest);
            if let Some(t) = msg.to().tag() {
                call.callee_tag = Some(t.to_string());
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
            || (ctx.finished && ctx.current != Some(bno));
        if stray && (ctx.call_id.is_none() || ctx.in_dialog) {
            // Not a call of ours to end (a re-INVITE, an announcement):
            // pass the answer on if the caller can still take it.
            let data = self.upstream_bytes(msg, hop.as_ref());
            self.txns
                .respond(ctx.server, code, data, now.at, &mut fx.out);
        } else if stray {
            // A branch we gave up on answered anyway: end that dialog.
            if let Some(hop) = hop {
                self.hang_up_stray(ctx, &hop, msg, now, fx);
            }
        } else {
            let data = self.upstream_bytes(msg, hop.as_ref());
            self.txns
                .respond(ctx.server, code, data, now.at, &mut fx.out);
            if !ctx.finished {
                self.answered(ctx, bno, msg, now);
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
        match kind {
            CtxTimer::NoAnswer => {
                // Once the caller cancelled, its answer is the branch's 487
                // (or the CANCEL guard's), not the next target's.
                if !ctx.finished && !ctx.cancelled && ctx.current == Some(bno) {
                    self.abandon_branch(&mut ctx, cid, bno, now, fx);
                    self.ctxs.insert(cid, ctx);
                    self.try_next(cid, now, fx);
                    return;
                }
            }
            CtxTimer::NoResponse => {
                let silent = ctx.branches.get(bno).is_some_and(|b| !b.provisional);
                if !ctx.finished && ctx.current == Some(bno) && silent {
                    self.abandon_branch(&mut ctx, cid, bno, now, fx);
                    if ctx.cancelled {
                        self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, fx);
                    } else {
                        self.ctxs.insert(cid, ctx);
                        self.try_next(cid, now, fx);
                        return;
                    }
                }
            }
            CtxTimer::CancelGuard => {
                if !ctx.finished {
                    if let Some(b) = ctx.current {
                        // A 2xx that still comes is then hung up, not lost.
                        self.abandon_branch(&mut ctx, cid, b, now, fx);
                    }
                    self.finish_with(&mut ctx, cid, 487, "Request Terminated", now, fx);
                }
            }
            CtxTimer::Cleanup => {}
        }
        self.ctxs.insert(cid, ctx);
    }

    /// Arm the guard that answers 487 ourselves when a cancelled branch
    /// never sends its final response.
    pub(super) fn arm_cancel_guard(&mut self, cid: u64, bno: usize, now: Now) {
        self.ctx_timers
            .push(Reverse((now.at + T64, cid, bno, CtxTimer::CancelGuard)));
    }
}
