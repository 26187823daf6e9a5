//! Call bookkeeping: a call record from the first INVITE (for `sipctl
//! calls` and in-dialog routing), its state as branches answer, and one CDR
//! written when it ends.

use super::Ctx;
use crate::calls::{Call, Disposition, State};
use crate::core::{Core, Effects};
use crate::routing::router;
use crate::sip::{HeaderName, Message};
use crate::store::Write;
use crate::time::Now;
use crate::transport::Peer;

impl Core {
    pub(super) fn new_call(
        &mut self,
        msg: &Message,
        peer: Peer,
        caller: &crate::config::Client,
        dialed: &str,
        now: Now,
    ) {
        if self.calls.is_full() {
            return;
        }
        let mut call = Call::new(msg, peer, now.at, now.unix_ms);
        call.callerid = router::caller_id(caller).number;
        call.caller = caller.name.clone();
        call.accountcode = caller.accountcode.clone().unwrap_or_default();
        call.dialed = dialed.to_string();
        self.calls.insert(call);
    }

    /// End a call: write its CDR and forget it.
    pub(in crate::core) fn end_call(
        &mut self,
        call_id: &str,
        disp: Disposition,
        code: u16,
        now: Now,
        fx: &mut Effects,
    ) {
        if let Some(call) = self.calls.remove(call_id) {
            if call.node_leg {
                // Accounted by the node where the call entered.
                self.release_media(&call, fx);
                return;
            }
            let mut cdr = call.cdr(disp, code, now.unix_ms);
            cdr.relay = call.media.as_ref().map(|m| m.id);
            fx.write(Write::AddCdr(cdr));
            self.release_media(&call, fx);
        }
    }

    /// A call older than the longest call allowed (12 h without BYE).
    pub(in crate::core) fn end_overdue_call(&mut self, call_id: &str, now: Now, fx: &mut Effects) {
        let answered = self
            .calls
            .get(call_id)
            .is_some_and(|c| c.state == State::Answered);
        let (disp, code) = if answered {
            (Disposition::Answered, 200)
        } else {
            (Disposition::Failed, 408)
        };
        self.end_call(call_id, disp, code, now, fx);
    }

    /// The call is answered on branch `bno`.
    pub(super) fn answered(
        &mut self,
        ctx: &Ctx,
        bno: usize,
        msg: &Message,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some(call) = ctx.call_id.as_ref().and_then(|c| self.calls.get_mut(c)) else {
            return;
        };
        let Some(hop) = ctx.branches.get(bno).map(|b| &b.hop) else {
            return;
        };
        call.state = State::Answered;
        call.answer_ms = Some(now.unix_ms);
        call.target = hop.target.clone();
        call.callee_peer = Some(hop.dest);
        call.callee_tag = msg.to().tag().map(str::to_string);
        call.callee_contact = msg.contact_uri();
        // The caller's route set beyond us: the entries downstream proxies
        // put above ours, nearest first.
        let rr = msg.record_routes().unwrap_or_default();
        let ours = rr
            .iter()
            .position(|r| self.local.is_me(&r.uri.host, r.uri.port))
            .unwrap_or(0);
        call.callee_routes = rr[..ours].iter().rev().map(|r| r.uri.clone()).collect();
        call.from_presented = hop.presented_from.clone();
        call.device = hop.device.clone().unwrap_or_default();
        call.callee_to = msg.header(&HeaderName::To).unwrap_or("").to_string();
        call.ctx = None;
        if let Some(m) = &call.media {
            // The media timeout counts from the answer.
            fx.media.push(crate::media::MediaOp::Touch { id: m.id });
        }
    }
}
