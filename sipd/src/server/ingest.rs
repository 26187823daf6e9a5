//! From the transports to the core and back: a batch of received
//! messages is parsed outside the core lock, run through the core under
//! one lock, and the effects it returns are carried out (messages sent,
//! store writes queued, deferred answers resumed after their commit).

use std::sync::Arc;

use super::Daemon;
use crate::core::{Core, Effects};
use crate::malformed;
use crate::sip::Message;
use crate::time::Now;
use crate::transport::{udp::Datagram, Out, Peer, Sink};

impl Sink for Daemon {
    fn on_message(&self, data: &[u8], peer: Peer, oversized: bool) {
        self.handle_batch(&[Datagram {
            data,
            peer,
            oversized,
        }]);
    }

    fn on_datagrams(&self, batch: &[Datagram<'_>]) {
        self.handle_batch(batch);
    }

    fn on_idle(&self) {
        super::release_memory();
    }

    fn on_send_failed(&self, report: u64) {
        self.with_core(Effects::new(), |core, fx| {
            core.on_send_failed(report, Now::read(), fx)
        });
    }
}

impl Daemon {
    /// Parse a batch of received messages outside the lock, run them
    /// through the core under one lock, then send what it produced.
    fn handle_batch(&self, items: &[Datagram<'_>]) {
        // Banned sources: dropped before anything else, unanswered (no
        // filtering at all while nobody is banned).
        if self.drops.is_empty() {
            return self.run_batch(items.iter(), 0);
        }
        let mut banned = 0;
        let kept: Vec<&Datagram<'_>> = self.drops.with(|dropped| {
            items
                .iter()
                .filter(|d| {
                    let drop = dropped(d.peer.addr.ip());
                    banned += u64::from(drop);
                    !drop
                })
                .collect()
        });
        if kept.is_empty() && banned > 0 {
            crate::lock(&self.core).counters.banned_dropped += banned;
            return;
        }
        self.run_batch(kept.into_iter(), banned)
    }

    /// Parse `items` outside the lock, run them through the core under
    /// one lock (counting `banned` dropped ones), send what it produced.
    fn run_batch<'a, 'b: 'a>(&self, items: impl Iterator<Item = &'a Datagram<'b>>, banned: u64) {
        let mut fx = Effects::new();
        let out = &mut fx.out;
        let mut parsed = Vec::with_capacity(items.size_hint().0);
        let mut malformed = 0;
        for &Datagram {
            data,
            peer,
            oversized,
        } in items
        {
            if let Some(d) = &self.transports.debug {
                d.log(true, &peer, data);
            }
            let result = if oversized {
                Err(crate::sip::ParseError::TooLarge)
            } else {
                if peer.transport.is_framed() {
                    Message::parse(data, &self.limits)
                } else {
                    Message::parse_stream(data, &self.limits)
                }
            };
            match result {
                Ok(msg) => parsed.push((msg, peer)),
                Err(e) => {
                    if malformed::is_noise(data) {
                        continue;
                    }
                    malformed += 1;
                    tracing::debug!("malformed message from {peer}: {e}");
                    if let Some(resp) = malformed::bad_request(data, &e) {
                        out.push(Out::response(peer, resp));
                    }
                }
            }
        }
        self.with_core(fx, |core, fx| {
            core.counters.malformed += malformed;
            core.counters.banned_dropped += banned;
            let now = Now::read();
            for (msg, peer) in parsed {
                core.on_message(msg, peer, now, fx);
            }
        });
    }
}

impl Daemon {
    /// An `Arc` to ourselves for tasks spawned from `&self` callbacks.
    pub(super) fn me(&self) -> Option<Arc<Daemon>> {
        self.weak.get().and_then(|w| w.upgrade())
    }

    /// Run `f` on the core and carry out what it asked for: store writes
    /// are queued before the lock is released (so the store applies them
    /// in the order the core asked for them), messages are sent and
    /// deferred answers resumed after it. Called from UDP threads too:
    /// waits are spawned on the runtime by handle.
    pub(super) fn with_core<R>(
        &self,
        fx: Effects,
        f: impl FnOnce(&mut Core, &mut Effects) -> R,
    ) -> R {
        let (r, waits) = self.run_core(fx, f);
        for (token, rx) in waits {
            self.resume_after(token, rx);
        }
        r
    }

    /// [`Daemon::with_core`], handing back the confirmations to wait for.
    pub(super) fn run_core<R>(
        &self,
        mut fx: Effects,
        f: impl FnOnce(&mut Core, &mut Effects) -> R,
    ) -> (R, Vec<(u64, Confirmation)>) {
        let (r, waits) = {
            let mut core = crate::lock(&self.core);
            let r = f(&mut core, &mut fx);
            for w in fx.writes.iter_mut() {
                // A CDR of a relayed call gets its packet counts while the
                // session is still there.
                if let crate::store::Write::AddCdr(row) = w {
                    if let Some(st) = row.relay.take().and_then(|id| self.relay.stats(id)) {
                        row.packets = st.packets;
                    }
                }
            }
            for op in fx.media.drain(..) {
                if let Err(e) = self.relay.apply(&op) {
                    tracing::warn!(
                        "media relay: cannot bind {}; port taken out of service",
                        e.error
                    );
                    core.media_bind_failed(e.port);
                }
            }
            for w in fx.writes.drain(..) {
                self.store.apply(w);
            }
            let waits: Vec<(u64, Confirmation)> = fx
                .confirm
                .drain(..)
                .map(|(token, w)| (token, self.store.apply_confirmed(w)))
                .collect();
            (r, waits)
        };
        for flow in fx.trusted.drain(..) {
            self.transports.trust(flow);
        }
        self.drops.apply(&fx.drops);
        self.security.write(&fx.security);
        if !fx.out.is_empty() {
            self.transports.send_all(std::mem::take(&mut fx.out));
        }
        (r, waits)
    }

    /// Resume the core's answer `token` once the store has committed (or
    /// failed) its write.
    pub(super) fn resume_after(&self, token: u64, rx: Confirmation) {
        let Some(d) = self.me() else { return };
        self.runtime.spawn(async move {
            let result = rx
                .await
                .unwrap_or_else(|_| Err("store writer stopped".into()));
            d.with_core(Effects::new(), |core, fx| {
                core.resume(token, result, Now::read(), fx)
            });
        });
    }
}

/// The store's answer to a confirmed write.
pub(super) type Confirmation = tokio::sync::oneshot::Receiver<Result<(), String>>;
