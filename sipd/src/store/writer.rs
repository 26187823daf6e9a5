//! The writer thread: the one owner of the write connection.
//!
//! # While the store works
//! It blocks for the first message, takes everything else already in the
//! channel into its [`Backlog`] and writes it in transactions of up to
//! [`BATCH_CAP`] writes, then pauses [`PACE`] so that writes arriving
//! meanwhile go into the next batch without waking it.
//!
//! # When a write fails
//! - A failure of the row itself (a value SQLite cannot take, a broken
//!   constraint) fails the batch; it is then written write by write so the
//!   others still land, and the bad write is dropped: reported to whoever
//!   waits, logged, counted in `errors`. Retrying would fail forever.
//! - A failure of the store (full disk, I/O error, read-only or locked
//!   database) leaves every write nobody waits for (bindings, CDRs, the
//!   deletions of a reload) queued in the backlog, in order and bounded
//!   (see `backlog`), and the store is *degraded*: logged once, shown by
//!   `sipctl status` with the queue depth and the last error. Writes
//!   someone waits for (a forwarding change) are answered with the error at
//!   once: the phone or sipctl is told "not saved", and the core never puts
//!   that change in force. Later writes still reach the backlog (the
//!   channel is drained every [`PACE`]); the backlog is retried after
//!   [`RETRY_FIRST`], doubling up to [`RETRY_MAX`], and at once when a
//!   waited-for write or a flush arrives. The first commit that works ends
//!   the degraded state (logged with how long it lasted).
//! - At shutdown ([`super::Store::finish`] or drop) what still cannot be
//!   written is logged (each CDR in full) and counted as dropped.
//!
//! The packet path never waits for any of this: it only sends on the channel.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::backlog::{Backlog, Limits};
use super::schema::PRUNE_CHUNK;
use super::spool::Spool;
use super::{Db, DbError, Msg, Stats, Write};

/// Most writes in one transaction.
pub const BATCH_CAP: usize = 5_000;

/// Pause of the writer after each batch: writes arriving meanwhile are
/// queued without waking it (a futex wake and a context switch per
/// REGISTER otherwise) and go into the next batch. Bounds how long a write
/// waits to be committed (plus the batch itself).
pub const PACE: Duration = Duration::from_millis(50);

/// First retry after the store failed.
pub const RETRY_FIRST: Duration = Duration::from_millis(500);

/// Longest pause between retries of a failing store.
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// When to try a failing store again.
struct Retry {
    at: Instant,
    backoff: Duration,
    since: Instant,
}

pub(super) struct Writer {
    db: Box<dyn Db>,
    rx: mpsc::Receiver<Msg>,
    stats: Arc<Stats>,
    path: PathBuf,
    backlog: Backlog,
    /// `Some` while the store is degraded.
    retry: Option<Retry>,
    /// Flushes and finishes to answer after the next write-out.
    flushes: Vec<mpsc::SyncSender<()>>,
    /// A finish asked for: write out, then give up on what is left.
    finish: bool,
    /// A waited-for write or a flush arrived: write out now.
    urgent: bool,
    /// The channel is still open (the handle lives).
    open: bool,
    /// CDRs deleted by the prune in progress.
    pruned: u64,
    /// PostgreSQL store: where CDRs go that the bounded queue cannot keep
    /// (and those queued at shutdown), until the database takes them.
    spool: Option<Spool>,
    /// The spool holds CDRs: the writer does not sleep on the channel.
    spool_pending: bool,
    /// Gives each CDR its `uid` when it is queued (seeded once from the
    /// OS, so the packet path asks the OS for nothing per call).
    uids: crate::rng::Rng,
}

impl Writer {
    pub fn new(
        db: Box<dyn Db>,
        rx: mpsc::Receiver<Msg>,
        stats: Arc<Stats>,
        path: PathBuf,
        limits: Limits,
    ) -> Writer {
        Writer {
            db,
            rx,
            stats,
            path,
            backlog: Backlog::new(limits),
            retry: None,
            flushes: Vec::new(),
            finish: false,
            urgent: false,
            open: true,
            pruned: 0,
            spool: None,
            spool_pending: false,
            uids: crate::rng::Rng::seeded(crate::rng::random_u64()),
        }
    }

    /// Spills CDRs to `spool` instead of dropping them.
    pub fn with_spool(mut self, spool: Option<Spool>) -> Writer {
        self.spool_pending = spool.as_ref().is_some_and(|s| s.len() > 0);
        self.spool = spool;
        self
    }

    /// Until the handle is dropped: gather, write out, answer flushes.
    pub fn run(mut self) {
        while self.open {
            self.gather();
            let due = self.retry.as_ref().is_none_or(|r| Instant::now() >= r.at);
            let mut wrote = false;
            if due || self.urgent || !self.open {
                wrote = self.write_out(due);
            }
            self.urgent = false;
            if self.finish || !self.open {
                self.finish = false;
                self.give_up();
            }
            for f in self.flushes.drain(..) {
                let _ = f.send(());
            }
            if self.retry.is_none() && self.backlog.is_empty() && self.open {
                wrote |= self.drain_spool();
            }
            if wrote && self.retry.is_none() && self.open {
                std::thread::sleep(PACE);
            }
        }
    }

    /// Waits for work: the first message while the store works, the retry
    /// time (or something urgent) while it fails; the channel is drained
    /// into the backlog meanwhile.
    fn gather(&mut self) {
        let Some(at) = self.retry.as_ref().map(|r| r.at) else {
            if self.backlog.is_empty() && self.spool_pending {
                // Spooled CDRs to move: wait a little for new work only.
                match self.rx.recv_timeout(PACE) {
                    Ok(msg) => self.take(msg),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.open = false;
                        return;
                    }
                }
            } else if self.backlog.is_empty() {
                match self.rx.recv() {
                    Ok(msg) => self.take(msg),
                    Err(_) => {
                        self.open = false;
                        return;
                    }
                }
            }
            self.drain();
            return;
        };
        loop {
            self.drain();
            let now = Instant::now();
            if !self.open || self.urgent || now >= at {
                return;
            }
            std::thread::sleep(PACE.min(at - now));
        }
    }

    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(msg) => self.take(msg),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.open = false;
                    return;
                }
            }
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Write(w, done) => {
                self.urgent |= done.is_some();
                self.queue(w, done);
            }
            Msg::Flush(f) => {
                self.urgent = true;
                self.flushes.push(f);
            }
            Msg::Finish(f) => {
                self.urgent = true;
                self.finish = true;
                self.flushes.push(f);
            }
        }
    }

    fn queue(&mut self, mut w: Write, done: Option<super::Done>) {
        if let Write::AddCdr(c) = &mut w {
            // Once, here: a batch retried after a lost commit keeps it.
            if c.uid == 0 {
                c.uid = self.uids.next_u64() | 1;
            }
        }
        let pushed = self.backlog.push(w, done);
        if pushed.merged > 0 {
            self.stats
                .pending
                .fetch_sub(pushed.merged, Ordering::Relaxed);
        }
        if let Some(w) = pushed.evicted {
            if self.spill(&w) {
                self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            self.lose(
                &w,
                "queue full while the store fails: dropped the oldest queued",
            );
        }
    }

    /// A CDR the queue cannot keep goes to the spool; `false` when there
    /// is none (SQLite) or it fails.
    fn spill(&mut self, w: &Write) -> bool {
        let (Some(spool), Write::AddCdr(c)) = (&self.spool, w) else {
            return false;
        };
        match spool.put(c) {
            Ok(()) => {
                self.spool_pending = true;
                let n = self.stats.spooled.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(10_000) {
                    tracing::warn!(
                        spool = %spool.path().display(),
                        "store: CDR queue full while the store fails: CDRs go to the spool on disk \
                         until the store takes them ({} so far)",
                        n + 1
                    );
                }
                true
            }
            Err(e) => {
                tracing::error!(spool = %spool.path().display(), "CDR spool: {e}");
                false
            }
        }
    }

    /// Moves spooled CDRs into the store, oldest first, a batch at a time,
    /// while it works. Returns whether it wrote any.
    fn drain_spool(&mut self) -> bool {
        let Some(spool) = &self.spool else {
            return false;
        };
        let batch = match spool.front(BATCH_CAP.min(1_000)) {
            Ok(b) if b.is_empty() => return false,
            Ok(b) => b,
            Err(e) => {
                tracing::error!(spool = %spool.path().display(), "CDR spool: {e}");
                return false;
            }
        };
        let last = batch.last().map(|(id, _)| *id).unwrap_or(0);
        let writes: Vec<Write> = batch.into_iter().map(|(_, c)| Write::AddCdr(c)).collect();
        let refs: Vec<&Write> = writes.iter().collect();
        #[cfg(test)]
        let result = if self.stats.fail.load(Ordering::Relaxed) {
            Err(test_failure())
        } else {
            self.db.write_tx(&refs)
        };
        #[cfg(not(test))]
        let result = self.db.write_tx(&refs);
        match result {
            Ok(_) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = spool.remove_upto(last) {
                    // Written again next time: the uids make that harmless.
                    tracing::error!(spool = %spool.path().display(), "CDR spool: {e}");
                    return false;
                }
                let left = spool.len();
                self.spool_pending = left > 0;
                if left == 0 {
                    tracing::warn!(spool = %spool.path().display(), "store: every spooled CDR is written");
                }
                true
            }
            Err(e) if e.store => {
                self.failed(&e, true);
                true
            }
            Err(e) => {
                // A row the database refuses: written one by one below
                // would need a slower path; keep them and say so.
                tracing::error!(spool = %spool.path().display(), "CDR spool: the store refuses a spooled CDR: {e}");
                false
            }
        }
    }

    /// Writes what is queued now (not what a prune queues again) until the
    /// backlog is done or the store fails. Returns whether it tried.
    fn write_out(&mut self, due: bool) -> bool {
        if self.backlog.is_empty() && due && self.retry.is_some() {
            // Nothing waits (the failed write was a forwarding change, now
            // answered): find out whether the store works again anyway, so
            // that status does not say degraded for ever on an idle system.
            match self.probe() {
                Ok(()) => {
                    if let Some(r) = self.retry.take() {
                        self.recovered(r);
                    }
                }
                Err(e) => self.failed(&e, due),
            }
            return true;
        }
        let mut budget = self.backlog.len();
        let tried = budget > 0;
        while budget > 0 && !self.backlog.is_empty() {
            match self.attempt() {
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) => {
                    self.failed(&e, due);
                    break;
                }
            }
        }
        tried
    }

    /// One transaction of up to [`BATCH_CAP`] writes from the front.
    /// `Ok(n)`: `n` writes left the backlog (written, or dropped as bad);
    /// `Err`: the store fails, the rest stays queued.
    fn attempt(&mut self) -> Result<usize, DbError> {
        let seqs = self.backlog.front(BATCH_CAP);
        match self.write_tx(&seqs) {
            Ok(pruned) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.written(&seqs, &pruned);
                return Ok(seqs.len());
            }
            Err(e) if e.store => return Err(e),
            Err(e) => tracing::error!(
                path = %self.path.display(),
                writes = seqs.len(),
                "store batch failed, retrying write by write: {e}"
            ),
        }
        let mut failed = 0usize;
        let mut first_error = None;
        for (i, &seq) in seqs.iter().enumerate() {
            match self.write_tx(&[seq]) {
                Ok(pruned) => {
                    self.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.written(&[seq], &pruned);
                }
                Err(e) if e.store => {
                    if i == 0 {
                        return Err(e);
                    }
                    // What went before is settled; the rest stays queued.
                    self.report_bad(failed, first_error);
                    return Ok(i);
                }
                Err(e) => {
                    failed += 1;
                    let Some(entry) = self.backlog.remove(seq) else {
                        continue;
                    };
                    self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if first_error.is_none() {
                        first_error = Some(format!("{e} ({:?})", entry.write));
                    }
                    if let Write::AddCdr(_) = entry.write {
                        log_lost(&entry.write, "CDR the store refuses, dropped");
                    }
                    if let Some(done) = entry.done {
                        let _ = done.send(Err(format!("store {}: {e}", self.path.display())));
                    }
                }
            }
        }
        self.report_bad(failed, first_error);
        Ok(seqs.len())
    }

    fn report_bad(&self, failed: usize, first_error: Option<String>) {
        if failed > 0 {
            tracing::error!(
                path = %self.path.display(),
                "store: {failed} writes failed and were dropped; first: {}",
                first_error.unwrap_or_default()
            );
        }
    }

    /// A transaction that writes and changes nothing (does the store take
    /// writes again?).
    fn probe(&mut self) -> Result<(), DbError> {
        #[cfg(test)]
        if self.stats.fail.load(Ordering::Relaxed) {
            return Err(test_failure());
        }
        self.db.probe()
    }

    /// The entries `seqs` in one transaction. Returns each prune's cutoff
    /// and the rows it deleted.
    fn write_tx(&mut self, seqs: &[u64]) -> Result<Vec<(u64, usize)>, DbError> {
        #[cfg(test)]
        if self.stats.fail.load(Ordering::Relaxed) {
            return Err(test_failure());
        }
        let writes: Vec<&Write> = seqs
            .iter()
            .filter_map(|s| self.backlog.get(*s).map(|e| &e.write))
            .collect();
        let counts = self.db.write_tx(&writes)?;
        Ok(writes
            .iter()
            .zip(counts)
            .filter_map(|(w, n)| match w {
                Write::PruneCdrs { ended_before_ms } => Some((*ended_before_ms, n)),
                _ => None,
            })
            .collect())
    }

    /// `seqs` are committed: out of the backlog, waiters told; a prune
    /// that filled its slice goes on in a later transaction.
    fn written(&mut self, seqs: &[u64], pruned: &[(u64, usize)]) {
        // Before the answers, as in `failed`.
        if let Some(r) = self.retry.take() {
            self.recovered(r);
        }
        for seq in seqs {
            if let Some(e) = self.backlog.remove(*seq) {
                self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                if let Some(done) = e.done {
                    let _ = done.send(Ok(()));
                }
            }
        }
        for &(cutoff, n) in pruned {
            self.pruned += n as u64;
            if n >= PRUNE_CHUNK {
                self.stats.pending.fetch_add(1, Ordering::Relaxed);
                self.queue(
                    Write::PruneCdrs {
                        ended_before_ms: cutoff,
                    },
                    None,
                );
            } else {
                if self.pruned > 0 {
                    tracing::info!(
                        "store: pruned {} CDRs that ended before {} UTC (cdr_keep_days)",
                        self.pruned,
                        proto::format_unix_ms(cutoff)
                    );
                }
                self.pruned = 0;
            }
        }
    }

    /// The store fails: waiters answered now, the rest kept for a retry.
    fn failed(&mut self, e: &DbError, due: bool) {
        let text = e.text.clone();
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        {
            // Before the answers: whoever hears "not saved" and asks for
            // status at once sees the store degraded.
            let mut h = crate::lock(&self.stats.health);
            h.last_error = Some(text.clone());
            h.degraded_since.get_or_insert(now);
        }
        for entry in self.backlog.take_waited_for() {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            if let Some(done) = entry.done {
                let _ = done.send(Err(format!("store {}: {text}", self.path.display())));
            }
        }
        let queued = self.backlog.len();
        match &mut self.retry {
            None => {
                tracing::error!(
                    path = %self.path.display(),
                    queued,
                    "store degraded: writes fail ({text}); {queued} writes kept queued, \
                     the store retried in {RETRY_FIRST:?} and then with backoff"
                );
                self.retry = Some(Retry {
                    at: now + RETRY_FIRST,
                    backoff: RETRY_FIRST,
                    since: now,
                });
            }
            Some(r) => {
                if due {
                    r.backoff = (r.backoff * 2).min(RETRY_MAX);
                }
                r.at = now + r.backoff;
                tracing::warn!(
                    path = %self.path.display(),
                    queued,
                    "store still degraded after {:.1?}: {text}; {queued} writes queued, \
                     next retry in {:?}",
                    now - r.since,
                    r.backoff
                );
            }
        }
    }

    fn recovered(&mut self, r: Retry) {
        crate::lock(&self.stats.health).degraded_since = None;
        tracing::warn!(
            path = %self.path.display(),
            "store works again after {:.1?} degraded; writing {} queued writes",
            r.since.elapsed(),
            self.backlog.len()
        );
    }

    /// Shutdown, or a finish: what could not be written is lost, and said so.
    fn give_up(&mut self) {
        let left = self.backlog.take_all();
        if left.is_empty() {
            return;
        }
        let error = crate::lock(&self.stats.health)
            .last_error
            .clone()
            .unwrap_or_default();
        tracing::error!(
            path = %self.path.display(),
            "store: sipd is stopping and {} writes could not be written ({error}); \
             the CDRs among them follow",
            left.len()
        );
        for entry in left {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            if self.spill(&entry.write) {
                continue;
            }
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if let Write::AddCdr(_) = entry.write {
                log_lost(&entry.write, "CDR lost at shutdown");
            }
            if let Some(done) = entry.done {
                let _ = done.send(Err(format!(
                    "store {}: not written before shutdown: {error}",
                    self.path.display()
                )));
            }
        }
    }

    /// An evicted write: counted and logged.
    fn lose(&mut self, w: &Write, why: &str) {
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        log_lost(w, why);
    }
}

/// One log line for a write that will never be stored; a CDR in full, so
/// that it can still be billed from the log.
fn log_lost(w: &Write, why: &str) {
    match w {
        Write::AddCdr(c) => tracing::error!(
            call_id = %c.call_id,
            caller = %c.caller,
            callerid = %c.callerid,
            accountcode = %c.accountcode,
            dialed = %c.dialed,
            target = %c.target,
            disposition = %c.disposition,
            code = c.code,
            start_ms = c.start,
            answer_ms = ?c.answer,
            end_ms = c.end,
            duration = c.duration,
            billsec = c.billsec,
            "store: {why} CDR"
        ),
        Write::PutBindings(name, _) => {
            tracing::error!(client = %name, "store: {why} binding write (REGISTER)")
        }
        Write::DeleteBinding(n) => {
            tracing::error!(client = %n, "store: {why} binding deletion")
        }
        Write::ForgetBindings { name, contacts } => tracing::error!(
            client = %name,
            devices = contacts.len(),
            "store: {why} deletion of bindings another node held"
        ),
        Write::DeleteBindingsExcept(keep) => tracing::error!(
            kept = keep.len(),
            "store: {why} deletion of removed clients' bindings"
        ),
        Write::PutForward(f) => {
            tracing::error!(client = %f.name, "store: {why} forwarding write")
        }
        Write::DeleteForward(n) => {
            tracing::error!(client = %n, "store: {why} forwarding deletion")
        }
        Write::PruneCdrs { .. } => tracing::warn!("store: {why} CDR prune (runs again daily)"),
    }
}

/// What a full disk looks like (tests).
#[cfg(test)]
fn test_failure() -> DbError {
    DbError::store("database or disk is full (test)")
}
