//! Persistent store: registrar bindings, forwarding overrides and CDRs in
//! SQLite (`sipd.db` in the working directory, WAL mode,
//! `synchronous=NORMAL`), created mode 0600 (its `-wal` and `-shm` too).
//!
//! # Threads and connections
//! The packet path never touches SQLite. Every write is a message on an
//! unbounded channel (the hot-path cost is one channel send) to a single
//! writer thread that owns the write connection (`writer.rs`): it takes
//! everything queued and applies it in transactions of up to [`BATCH_CAP`]
//! writes with cached statements, so a change is committed within about one
//! [`PACE`] of arriving: a `kill -9` loses at most what was not yet
//! committed. In WAL mode with `synchronous=NORMAL` a committed transaction
//! survives the death of the process (not necessarily a power cut).
//!
//! Reads (the start-up load, CDR listings) use a second connection of their
//! own, so they never wait behind a batch.
//!
//! # Durability for callers
//! [`Store::apply_confirmed`] (and [`Store::set_forward`],
//! [`Store::clear_forward`]) return a receiver that fires after the
//! transaction holding the write has committed, or with the error, so a
//! feature code can confirm only what is on disk. [`Store::flush`] blocks
//! until everything queued before it has been tried.
//!
//! # Errors
//! [`Store::open`] turns every problem with the file (not a database,
//! corrupt, unwritable, newer schema) into a [`StoreError`] naming the file.
//! Later, a write the database refuses (a bad row) is dropped, logged and
//! counted in [`Store::errors`]; when the store itself fails (a full disk)
//! the writes nobody waits for stay queued, bounded (`backlog.rs`), and are
//! retried with backoff until they are written: [`Store::health`] says the
//! store is degraded, with the queue depth and the last error, for `sipctl
//! status`. A waited-for write is answered with the error at once.

mod backlog;
pub mod postgres;
mod schema;
mod spool;
mod sqlite;
mod writer;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proto::Forwarding;
use rusqlite::Connection;
use tokio::sync::oneshot;

pub use backlog::{MAX_QUEUED_CDRS, MAX_QUEUED_STATE};
pub use schema::{PRUNE_CHUNK, SCHEMA_VERSION};
pub use writer::{BATCH_CAP, PACE, RETRY_FIRST, RETRY_MAX};

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One registrar binding (one device of a client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingRow {
    /// Client name (with `contact`, the primary key).
    pub name: String,
    /// Contact URI as registered.
    pub contact: String,
    /// Transport the REGISTER came over: `"udp"` or `"tcp"`.
    pub transport: String,
    /// Address the REGISTER came from (what NAT traversal sends to).
    pub source: SocketAddr,
    /// Our listen address it came to (answers go from there again).
    pub local: Option<SocketAddr>,
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// `User-Agent` of the REGISTER (empty when absent).
    pub user_agent: String,
    /// Call-ID of the REGISTER.
    pub call_id: String,
    /// CSeq number of the REGISTER.
    pub cseq: u32,
    /// `+sip.instance` of the device, empty when none.
    pub instance: String,
    /// RFC 5626 `reg-id` of an outbound binding.
    pub reg_id: Option<u32>,
    /// A flow-based (RFC 5626 outbound) binding.
    pub outbound: bool,
    /// The node that holds the device's flow (PostgreSQL store with
    /// several nodes): empty for this node, whose rows are the only ones
    /// it writes (the writer puts its own name in).
    pub node: String,
    /// That node's SIP address (where other nodes send requests for the
    /// device); `None` for this node's rows.
    pub node_addr: Option<SocketAddr>,
}

/// A forwarding override set by phone or by `sipctl fwd` (one per client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRow {
    /// Client name (primary key).
    pub name: String,
    /// The forwarding (stored as `kind` `always`/`unavail`/`off` and
    /// `number`, empty for off). The number is as stored: whether it is a
    /// number is for the reader to check.
    pub forwarding: Forwarding,
    /// Who set it: `"phone"` or `"sipctl"`.
    pub source: String,
    /// When it was set, unix seconds.
    pub set_at: u64,
}

/// A call detail record, written once when a call ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdrRow {
    /// Call-ID of the caller's INVITE.
    pub call_id: String,
    /// Calling client name.
    pub caller: String,
    /// Caller ID presented.
    pub callerid: String,
    /// Caller's accountcode (group).
    pub accountcode: String,
    /// Number as dialed.
    pub dialed: String,
    /// Where the call went (client name or gateway + number).
    pub target: String,
    /// `ANSWERED`, `BUSY`, `NO ANSWER`, `FAILED` or `CANCELLED`.
    pub disposition: String,
    /// Final SIP response code.
    pub code: u16,
    /// First INVITE, unix milliseconds.
    pub start: u64,
    /// Answer (200 OK), unix milliseconds, if answered.
    pub answer: Option<u64>,
    /// End of the call, unix milliseconds.
    pub end: u64,
    /// Seconds from start to end.
    pub duration: u64,
    /// Billable seconds, from answer to end.
    pub billsec: u64,
    /// The device that answered (its registered Contact); empty when none.
    pub device: String,
    /// Media packets relayed from the caller and from the callee (0, 0
    /// when the call's media did not go through sipd).
    pub packets: [u64; 2],
    /// The relay session whose counters the server puts into `packets`
    /// before the row is written (not stored).
    pub relay: Option<u64>,
    /// The node whose call it was (PostgreSQL store; empty with SQLite).
    /// Filled in by the writer.
    pub node: String,
    /// A random id given by the writer when the row is queued, so that a batch retried
    /// after a commit whose outcome was lost (the database went away
    /// mid-commit) cannot store a call twice (PostgreSQL store).
    pub uid: u64,
}

/// What [`Store::open`] found in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Unexpired bindings (`expires_at > now`), by name.
    pub bindings: Vec<BindingRow>,
    /// Forwarding overrides, by name.
    pub forwards: Vec<ForwardRow>,
    /// Expired bindings deleted while opening.
    pub purged: usize,
}

/// A store error; its text names the file and the cause:
/// `store /path/sipd.db: cause`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl StoreError {
    fn new(path: &Path, cause: impl fmt::Display) -> StoreError {
        StoreError(format!("store {}: {cause}", path.display()))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Completion of a durable write: `Ok` after commit, or the error text.
type Done = oneshot::Sender<Result<(), String>>;

/// Why a transaction failed: the store as a whole (`store`: a full disk, a
/// database that went away; retrying later can work) or one of its rows
/// (retrying never will).
#[derive(Clone, Debug)]
pub(crate) struct DbError {
    pub store: bool,
    pub text: String,
}

impl DbError {
    #[cfg(test)]
    pub fn store(text: impl fmt::Display) -> DbError {
        DbError {
            store: true,
            text: text.to_string(),
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A database the writer thread writes to (SQLite or PostgreSQL).
pub(crate) trait Db: Send + 'static {
    /// The writes in one transaction; for each, the rows it deleted (what
    /// a prune reports; 0 for the others).
    fn write_tx(&mut self, writes: &[&Write]) -> Result<Vec<usize>, DbError>;
    /// A transaction that changes nothing: does the store work again?
    fn probe(&mut self) -> Result<(), DbError>;
}

/// The read side: start-up load aside, CDR listings for `sipctl cdr`.
enum Reader {
    Sqlite(Mutex<Connection>),
    Postgres(Box<postgres::Reader>),
}

/// A data write, as the writer applies it (the core asks for these in its
/// effects; the server hands them to [`Store::apply`]).
// CDRs travel by value (see `Msg`).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The whole set of a client's bindings (replacing what was stored).
    PutBindings(String, Vec<BindingRow>),
    /// Delete all bindings of a client.
    DeleteBinding(String),
    DeleteBindingsExcept(Vec<String>),
    /// Delete these bindings of a client whichever node holds them: a
    /// REGISTER here replaced or removed devices another node held
    /// (PostgreSQL store; with SQLite `PutBindings` already did).
    ForgetBindings {
        name: String,
        contacts: Vec<String>,
    },
    PutForward(ForwardRow),
    DeleteForward(String),
    AddCdr(CdrRow),
    /// Delete the CDRs of calls that ended before this time (unix
    /// milliseconds): `cdr_keep_days`. Done in slices of [`PRUNE_CHUNK`].
    PruneCdrs {
        ended_before_ms: u64,
    },
}

impl Write {
    /// `row` as the only binding of its client.
    pub fn binding(row: BindingRow) -> Write {
        Write::PutBindings(row.name.clone(), vec![row])
    }
}

/// A message to the writer thread.
// Rows travel by value: boxing them would add an allocation per send on the
// packet path to save queue memory only while a backlog exists.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Write(Write, Option<Done>),
    /// Answered once everything queued before it has been tried.
    Flush(mpsc::SyncSender<()>),
    /// Like a flush, then what still could not be written is given up
    /// (logged, counted as dropped): shutdown.
    Finish(mpsc::SyncSender<()>),
}

/// Counters shared by the handle and the writer.
#[derive(Default)]
struct Stats {
    /// Writes accepted and not yet committed (nor dropped).
    pending: AtomicUsize,
    commits: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
    /// CDRs put in the spool (PostgreSQL store) since open.
    spooled: AtomicU64,
    health: Mutex<HealthState>,
    /// Tests: every transaction fails as on a full disk.
    #[cfg(test)]
    fail: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct HealthState {
    degraded_since: Option<Instant>,
    last_error: Option<String>,
}

/// How the store is doing, for `sipctl status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Writes accepted and not yet committed.
    pub queued: usize,
    /// How long writes have been failing; `None` while the store works.
    pub degraded_for: Option<Duration>,
    /// The last error of the store (kept after it recovered).
    pub last_error: Option<String>,
    /// Writes lost since start: evicted from a full queue, or not written
    /// at shutdown.
    pub dropped: u64,
    /// Writes that failed for good since start: refused by the database,
    /// or waited for (a forwarding change) while the store failed.
    pub errors: u64,
}

/// Handle to the store: the writer thread's queue plus a read connection.
/// `Send + Sync`; share it behind an `Arc`.
///
/// Dropping the handle (or [`Store::close`]) lets the writer commit
/// everything queued (what a failing store cannot take is logged and
/// counted as lost), then joins it.
pub struct Store {
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    reader: Reader,
    path: PathBuf,
    stats: Arc<Stats>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("pending", &self.pending())
            .field("commits", &self.commits())
            .field("errors", &self.errors())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Store {
    /// Opens `path` (normally `DIR/sipd.db`), creating it (mode 0600) and
    /// its schema if absent; checks it (`PRAGMA quick_check`), deletes bindings expired at
    /// `now_unix` (seconds), loads what is left and the forwarding overrides,
    /// and starts the writer thread.
    ///
    /// Blocking. Any problem with the file is an `Err` naming it, never a panic.
    pub fn open(path: &Path, now_unix: u64) -> Result<(Store, Loaded), StoreError> {
        Store::open_with(path, now_unix, backlog::Limits::default())
    }

    /// [`Store::open`] with other bounds for the queue of a failing store.
    fn open_with(
        path: &Path,
        now_unix: u64,
        limits: backlog::Limits,
    ) -> Result<(Store, Loaded), StoreError> {
        let (db, reader, loaded) = sqlite::open(path, now_unix)?;
        let store = Store::start(
            Box::new(db),
            Reader::Sqlite(Mutex::new(reader)),
            path.to_path_buf(),
            limits,
            None,
        )?;
        Ok((store, loaded))
    }

    /// Opens the PostgreSQL store (`postgres.rs`): creates or migrates its
    /// schema, loads every node's unexpired bindings and the forwarding
    /// overrides, starts the writer thread. The store's change feed
    /// (LISTEN/NOTIFY, node heartbeats) is [`postgres::Sync`], started by
    /// the caller. Blocking.
    ///
    /// `spool` (normally `DIR/sipd-cdr-spool.db`) takes the CDRs a long
    /// outage pushes out of the bounded queue (`spool.rs`).
    pub fn open_postgres(
        pg: &postgres::PgOptions,
        spool: &Path,
        now_unix: u64,
    ) -> Result<(Store, Loaded), StoreError> {
        Store::open_postgres_with(pg, spool, now_unix, backlog::Limits::default())
    }

    fn open_postgres_with(
        pg: &postgres::PgOptions,
        spool: &Path,
        now_unix: u64,
        limits: backlog::Limits,
    ) -> Result<(Store, Loaded), StoreError> {
        let spool = spool::Spool::open(spool).map_err(StoreError)?;
        if spool.len() > 0 {
            tracing::warn!(
                spool = %spool.path().display(),
                "{} CDRs in the spool from before: written to the store first",
                spool.len()
            );
        }
        let (db, reader, loaded) = postgres::open(pg, now_unix)?;
        let store = Store::start(
            Box::new(db),
            Reader::Postgres(Box::new(reader)),
            PathBuf::from(pg.display()),
            limits,
            Some(spool),
        )?;
        Ok((store, loaded))
    }

    fn start(
        db: Box<dyn Db>,
        reader: Reader,
        path: PathBuf,
        limits: backlog::Limits,
        spool: Option<spool::Spool>,
    ) -> Result<Store, StoreError> {
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel();
        let writer = {
            let w = writer::Writer::new(db, rx, Arc::clone(&stats), path.clone(), limits)
                .with_spool(spool);
            std::thread::Builder::new()
                .name("sipd-store".into())
                .spawn(move || w.run())
                .map_err(|e| StoreError::new(&path, format!("cannot start writer thread: {e}")))?
        };
        Ok(Store {
            tx: Some(tx),
            writer: Some(writer),
            reader,
            path,
            stats,
        })
    }

    /// Which store this is, for `sipctl status`: `sqlite PATH` or
    /// `postgresql URL` (without a password).
    pub fn describe(&self) -> String {
        match self.reader {
            Reader::Sqlite(_) => format!("sqlite {}", self.path.display()),
            Reader::Postgres(_) => self.path.display().to_string(),
        }
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write. Never blocks.
    pub fn apply(&self, write: Write) {
        self.send(write, None);
    }

    /// Queues a write; the receiver fires after the transaction holding it
    /// has committed, or with the error. Never blocks.
    pub fn apply_confirmed(&self, write: Write) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        self.send(write, Some(done));
        rx
    }

    /// Queues `row` as the only binding of its client. Never blocks.
    pub fn put_binding(&self, row: BindingRow) {
        self.send(Write::binding(row), None);
    }

    /// Queues the deletion of `name`'s binding. Never blocks.
    pub fn delete_binding(&self, name: &str) {
        self.send(Write::DeleteBinding(name.to_owned()), None);
    }

    /// Queues the deletion of every binding whose name is not in `keep`
    /// (after a reload dropped clients, or at start-up against sip.conf).
    /// Never blocks.
    pub fn delete_bindings_except(&self, keep: Vec<String>) {
        self.send(Write::DeleteBindingsExcept(keep), None);
    }

    /// Queues an upsert of `row.name`'s forwarding override. The receiver
    /// fires after the transaction holding it has committed, or with the
    /// error. Never blocks.
    pub fn set_forward(&self, row: ForwardRow) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        self.send(Write::PutForward(row), Some(done));
        rx
    }

    /// Queues the removal of `name`'s forwarding override (sip.conf's
    /// forwarding applies again). The receiver fires after commit, or with
    /// the error. Never blocks.
    pub fn clear_forward(&self, name: &str) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        self.send(Write::DeleteForward(name.to_owned()), Some(done));
        rx
    }

    /// Queues a CDR. Never blocks.
    pub fn add_cdr(&self, row: CdrRow) {
        self.send(Write::AddCdr(row), None);
    }

    /// Queues the deletion of the CDRs of calls that ended before
    /// `ended_before_ms` (unix milliseconds). Never blocks.
    pub fn prune_cdrs(&self, ended_before_ms: u64) {
        self.send(Write::PruneCdrs { ended_before_ms }, None);
    }

    /// The `n` most recent CDRs (by end time), newest first. Reads committed
    /// data on the read connection; blocking (use `spawn_blocking` from async
    /// code).
    pub fn recent_cdrs(&self, n: usize) -> Result<Vec<CdrRow>, StoreError> {
        match &self.reader {
            Reader::Sqlite(conn) => sqlite::recent_cdrs(&crate::lock(conn), n)
                .map_err(|e| StoreError::new(&self.path, e)),
            Reader::Postgres(r) => r.recent_cdrs(n).map_err(|e| StoreError::new(&self.path, e)),
        }
    }

    /// Number of CDRs stored (committed). Blocking.
    pub fn cdr_count(&self) -> Result<u64, StoreError> {
        match &self.reader {
            Reader::Sqlite(conn) => crate::lock(conn)
                .query_row("SELECT count(*) FROM cdr", [], |r| r.get(0))
                .map_err(|e| StoreError::new(&self.path, e)),
            Reader::Postgres(r) => r.cdr_count().map_err(|e| StoreError::new(&self.path, e)),
        }
    }

    /// Blocks until everything queued before this call has been tried:
    /// committed, failed for good (logged), or still queued because the
    /// store fails (see [`Store::health`]). Returns at once if the writer is
    /// gone.
    pub fn flush(&self) {
        self.wait_for(Msg::Flush);
    }

    /// Graceful shutdown: like [`Store::flush`], then whatever a failing
    /// store could not take is given up: logged (each CDR in full) and
    /// counted in [`Store::dropped`]. Blocking.
    pub fn finish(&self) {
        self.wait_for(Msg::Finish);
    }

    fn wait_for(&self, msg: fn(mpsc::SyncSender<()>) -> Msg) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = mpsc::sync_channel(1);
        if tx.send(msg(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Commits everything queued and stops the writer thread (graceful
    /// shutdown). Blocking. Dropping the handle does the same.
    pub fn close(self) {
        drop(self);
    }

    /// Writes queued but not yet committed (for status): in the channel,
    /// in the batch being written, or waiting for a failing store.
    pub fn pending(&self) -> usize {
        self.stats.pending.load(Ordering::Relaxed)
    }

    /// Transactions committed by the writer since open.
    pub fn commits(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }

    /// Writes that failed for good (logged, and reported to whoever
    /// waited) since open: refused by the database, or waited for while the
    /// store failed.
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
    }

    /// Writes lost since open: evicted from a full queue while the store
    /// failed, or not written at shutdown (each logged).
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Transactions that failed because the store did (a full disk), each
    /// followed by a retry.
    pub fn failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }

    /// Whether writes are failing, how many wait, the last error.
    pub fn health(&self) -> Health {
        let h = crate::lock(&self.stats.health);
        Health {
            queued: self.pending(),
            degraded_for: h.degraded_since.map(|t| t.elapsed()),
            last_error: h.last_error.clone(),
            dropped: self.dropped(),
            errors: self.errors(),
        }
    }

    /// Tests: the SQLite store with a CDR spool (as the PostgreSQL store
    /// has) and other bounds.
    #[cfg(test)]
    fn open_spooled(
        path: &Path,
        spool: &Path,
        limits: backlog::Limits,
    ) -> Result<Store, StoreError> {
        let (db, reader, _) = sqlite::open(path, 0)?;
        Store::start(
            Box::new(db),
            Reader::Sqlite(Mutex::new(reader)),
            path.to_path_buf(),
            limits,
            Some(spool::Spool::open(spool).map_err(StoreError)?),
        )
    }

    /// CDRs put in the spool since open.
    pub fn spooled(&self) -> u64 {
        self.stats.spooled.load(Ordering::Relaxed)
    }

    /// Tests: make every transaction fail as on a full disk, or work again.
    #[cfg(test)]
    fn fail_writes(&self, fail: bool) {
        self.stats.fail.store(fail, Ordering::Relaxed);
    }

    fn send(&self, write: Write, done: Option<Done>) {
        // Count before sending so the writer never decrements below zero.
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        let result = match &self.tx {
            Some(tx) => tx.send(Msg::Write(write, done)).map_err(|e| e.0),
            None => Err(Msg::Write(write, done)),
        };
        if let Err(msg) = result {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %self.path.display(), "store writer is not running; write dropped");
            if let Msg::Write(_, Some(done)) = msg {
                let _ = done.send(Err(format!(
                    "store {}: writer is not running",
                    self.path.display()
                )));
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The writer drains what is queued, then sees the channel closed.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.path.display(), "store writer thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests;
