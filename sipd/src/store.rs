//! Persistent store: registrar bindings, forwarding overrides and CDRs in
//! SQLite (`sipd.db` in the working directory, WAL mode,
//! `synchronous=NORMAL`).
//!
//! # Threads and connections
//! The packet path never touches SQLite. Every write is a message on an
//! unbounded channel (the hot-path cost is one channel send) to a single
//! writer thread that owns the write connection. The writer blocks for the
//! first message, then takes everything already queued (up to
//! [`BATCH_CAP`] messages) and applies it in one transaction with cached
//! statements. It never waits for more work, so a change is committed within
//! one transaction time of arriving: a `kill -9` loses at most the batch being
//! written. In WAL mode with `synchronous=NORMAL` a committed transaction
//! survives the death of the process (not necessarily a power cut).
//!
//! Reads (the start-up load, CDR listings) use a second connection of their
//! own, so they never wait behind a batch.
//!
//! # Durability for callers
//! [`Store::set_forward`] and [`Store::clear_forward`] return a receiver that
//! fires after the transaction holding the write has committed (or with the
//! error), so a feature code can confirm only what is on disk.
//! [`Store::flush`] blocks until everything queued before it is committed.
//!
//! # Errors
//! [`Store::open`] turns every problem with the file (not a database,
//! corrupt, unwritable, newer schema) into a [`StoreError`] naming the file.
//! A write that fails later is logged with `tracing::error!`, reported to any
//! caller waiting on it, counted in [`Store::errors`], and the writer keeps
//! running: a failed batch is retried write by write, so one bad row does not
//! take the rest of its batch with it.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use proto::Forwarding;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

/// Most messages the writer applies in one transaction.
pub const BATCH_CAP: usize = 5_000;

/// Schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE bindings (
        name       TEXT PRIMARY KEY NOT NULL,
        contact    TEXT NOT NULL,
        transport  TEXT NOT NULL,
        source     TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        user_agent TEXT NOT NULL,
        call_id    TEXT NOT NULL,
        cseq       INTEGER NOT NULL
    );
    CREATE TABLE forwards (
        name   TEXT PRIMARY KEY NOT NULL,
        kind   TEXT NOT NULL CHECK (kind IN ('always', 'unavail', 'off')),
        number TEXT NOT NULL,
        source TEXT NOT NULL,
        set_at INTEGER NOT NULL
    );
    CREATE TABLE cdr (
        id          INTEGER PRIMARY KEY,
        call_id     TEXT NOT NULL,
        caller      TEXT NOT NULL,
        callerid    TEXT NOT NULL,
        accountcode TEXT NOT NULL,
        dialed      TEXT NOT NULL,
        target      TEXT NOT NULL,
        disposition TEXT NOT NULL,
        code        INTEGER NOT NULL,
        start_ms    INTEGER NOT NULL,
        answer_ms   INTEGER,
        end_ms      INTEGER NOT NULL,
        duration    INTEGER NOT NULL,
        billsec     INTEGER NOT NULL
    );
    -- \"most recent\" listings: ORDER BY end_ms DESC, id DESC walks this index
    -- (every index entry ends with the rowid, which is id).
    CREATE INDEX cdr_end ON cdr (end_ms);
"];

const SQL_PUT_BINDING: &str = "INSERT OR REPLACE INTO bindings
    (name, contact, transport, source, expires_at, user_agent, call_id, cseq)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const SQL_DELETE_BINDING: &str = "DELETE FROM bindings WHERE name = ?1";
const SQL_PUT_FORWARD: &str = "INSERT OR REPLACE INTO forwards
    (name, kind, number, source, set_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const SQL_DELETE_FORWARD: &str = "DELETE FROM forwards WHERE name = ?1";
const SQL_ADD_CDR: &str = "INSERT INTO cdr
    (call_id, caller, callerid, accountcode, dialed, target, disposition, code,
     start_ms, answer_ms, end_ms, duration, billsec)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
const SQL_RECENT_CDRS: &str = "SELECT call_id, caller, callerid, accountcode,
    dialed, target, disposition, code, start_ms, answer_ms, end_ms, duration, billsec
    FROM cdr ORDER BY end_ms DESC, id DESC LIMIT ?1";

/// One registrar binding (one per client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingRow {
    /// Client name (primary key: one binding per client).
    pub name: String,
    /// Contact URI as registered.
    pub contact: String,
    /// Transport the REGISTER came over: `"udp"` or `"tcp"`.
    pub transport: String,
    /// Address the REGISTER came from (what NAT traversal sends to).
    pub source: SocketAddr,
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// `User-Agent` of the REGISTER (empty when absent).
    pub user_agent: String,
    /// Call-ID of the REGISTER.
    pub call_id: String,
    /// CSeq number of the REGISTER.
    pub cseq: u32,
}

/// The stored `kind` of a forwarding override: `"always"` (`*72F`, `=F`),
/// `"unavail"` (`*71F`, `~F`) or `"off"` for [`Forwarding::None`] (no
/// forwarding, overriding sip.conf's `=F`/`~F`: `*73` removes a forwarding
/// "including one from sip.conf", spec §5, and that has to survive a
/// restart; its stored number is empty).
fn forward_kind(f: &Forwarding) -> &'static str {
    match f {
        Forwarding::Always { .. } => "always",
        Forwarding::Unavailable { .. } => "unavail",
        Forwarding::None => "off",
    }
}

/// The forwarding stored as `kind` and `number`; `None` for an unknown
/// kind. The number of an `"off"` row is ignored.
fn forwarding_of(kind: &str, number: String) -> Option<Forwarding> {
    match kind {
        "always" => Some(Forwarding::Always { number }),
        "unavail" => Some(Forwarding::Unavailable { number }),
        "off" => Some(Forwarding::None),
        _ => None,
    }
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

/// A data write, as the writer applies it (the core asks for these in its
/// effects; the server hands them to [`Store::apply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    PutBinding(BindingRow),
    DeleteBinding(String),
    DeleteBindingsExcept(Vec<String>),
    PutForward(ForwardRow),
    DeleteForward(String),
    AddCdr(CdrRow),
}

impl Write {
    /// The binding this write replaces entirely, if it is a per-name binding write.
    fn binding_name(&self) -> Option<&str> {
        match self {
            Write::PutBinding(b) => Some(&b.name),
            Write::DeleteBinding(n) => Some(n),
            _ => None,
        }
    }
}

/// A message to the writer thread.
// Rows travel by value: boxing them would add an allocation per send on the
// packet path to save queue memory only while a backlog exists.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Write(Write, Option<Done>),
    Flush(mpsc::SyncSender<()>),
}

/// Counters shared by the handle and the writer.
#[derive(Default)]
struct Stats {
    pending: AtomicUsize,
    commits: AtomicU64,
    errors: AtomicU64,
}

/// Handle to the store: the writer thread's queue plus a read connection.
/// `Send + Sync`; share it behind an `Arc`.
///
/// Dropping the handle (or [`Store::close`]) lets the writer commit
/// everything queued, then joins it.
pub struct Store {
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
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
            .finish()
    }
}

impl Store {
    /// Opens `path` (normally `DIR/sipd.db`), creating it and its schema if
    /// absent; checks it (`PRAGMA quick_check`), deletes bindings expired at
    /// `now_unix` (seconds), loads what is left and the forwarding overrides,
    /// and starts the writer thread.
    ///
    /// Blocking. Any problem with the file is an `Err` naming it, never a panic.
    pub fn open(path: &Path, now_unix: u64) -> Result<(Store, Loaded), StoreError> {
        let err = |e: rusqlite::Error| StoreError::new(path, e);

        let writer_conn = Connection::open(path).map_err(err)?;
        writer_conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let mode: String = writer_conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::new(
                path,
                format!("cannot switch to WAL mode (journal_mode is {mode})"),
            ));
        }
        writer_conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        quick_check(&writer_conn).map_err(|cause| StoreError::new(path, cause))?;
        migrate(&writer_conn).map_err(|cause| StoreError::new(path, cause))?;
        let purged = writer_conn
            .execute(
                "DELETE FROM bindings WHERE expires_at <= ?1",
                params![now_unix],
            )
            .map_err(err)?;
        writer_conn.set_prepared_statement_cache_capacity(32);

        let reader = Connection::open(path).map_err(err)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(err)?;
        let loaded = Loaded {
            bindings: load_bindings(&reader, now_unix).map_err(err)?,
            forwards: load_forwards(&reader).map_err(err)?,
            purged,
        };

        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel();
        let writer = {
            let stats = Arc::clone(&stats);
            let thread_path = path.to_path_buf();
            std::thread::Builder::new()
                .name("sipd-store".into())
                .spawn(move || writer_loop(writer_conn, rx, &stats, &thread_path))
                .map_err(|e| StoreError::new(path, format!("cannot start writer thread: {e}")))?
        };
        let store = Store {
            tx: Some(tx),
            writer: Some(writer),
            reader: Mutex::new(reader),
            path: path.to_path_buf(),
            stats,
        };
        Ok((store, loaded))
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

    /// Queues an upsert of `row` (by name). Never blocks.
    pub fn put_binding(&self, row: BindingRow) {
        self.send(Write::PutBinding(row), None);
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

    /// The `n` most recent CDRs (by end time), newest first. Reads committed
    /// data on the read connection; blocking (use `spawn_blocking` from async
    /// code).
    pub fn recent_cdrs(&self, n: usize) -> Result<Vec<CdrRow>, StoreError> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let conn = crate::lock(&self.reader);
        let read = || -> rusqlite::Result<Vec<CdrRow>> {
            let mut stmt = conn.prepare_cached(SQL_RECENT_CDRS)?;
            let rows = stmt.query_map(params![limit], |r| {
                Ok(CdrRow {
                    call_id: r.get(0)?,
                    caller: r.get(1)?,
                    callerid: r.get(2)?,
                    accountcode: r.get(3)?,
                    dialed: r.get(4)?,
                    target: r.get(5)?,
                    disposition: r.get(6)?,
                    code: r.get(7)?,
                    start: r.get(8)?,
                    answer: r.get(9)?,
                    end: r.get(10)?,
                    duration: r.get(11)?,
                    billsec: r.get(12)?,
                })
            })?;
            rows.collect()
        };
        read().map_err(|e| StoreError::new(&self.path, e))
    }

    /// Number of CDRs stored (committed). Blocking.
    pub fn cdr_count(&self) -> Result<u64, StoreError> {
        let conn = crate::lock(&self.reader);
        conn.query_row("SELECT count(*) FROM cdr", [], |r| r.get(0))
            .map_err(|e| StoreError::new(&self.path, e))
    }

    /// Blocks until everything queued before this call has been committed
    /// (or has failed and been logged). Returns at once if the writer is gone.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = mpsc::sync_channel(1);
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Commits everything queued and stops the writer thread (graceful
    /// shutdown). Blocking. Dropping the handle does the same.
    pub fn close(self) {
        drop(self);
    }

    /// Writes queued but not yet committed (for status).
    pub fn pending(&self) -> usize {
        self.stats.pending.load(Ordering::Relaxed)
    }

    /// Transactions committed by the writer since open.
    pub fn commits(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }

    /// Writes that failed (logged and reported) since open.
    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
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

/// `PRAGMA quick_check`; anything but a single `ok` is an error listing
/// (the first few of) the problems.
fn quick_check(conn: &Connection) -> Result<(), String> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| e.to_string())?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        // One row may hold several newline-separated messages, headed by
        // "*** in database main ***".
        let problems: Vec<&str> = problems
            .iter()
            .flat_map(|p| p.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("***"))
            .collect();
        Err(format!(
            "integrity check failed (corrupt database): {}",
            problems.join("; ")
        ))
    }
}

/// Creates the schema or brings it up to [`SCHEMA_VERSION`].
fn migrate(conn: &Connection) -> Result<(), String> {
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "schema version {version} is newer than this sipd supports ({SCHEMA_VERSION})"
        ));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)
            .map_err(|e| format!("schema upgrade from version {from}: {e}"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

fn load_bindings(conn: &Connection, now_unix: u64) -> rusqlite::Result<Vec<BindingRow>> {
    let mut stmt = conn.prepare(
        "SELECT name, contact, transport, source, expires_at, user_agent, call_id, cseq
         FROM bindings WHERE expires_at > ?1 ORDER BY name",
    )?;
    let mut rows = stmt.query(params![now_unix])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let row = (|| -> Result<BindingRow, String> {
            let source: String = r.get(3).map_err(|e| e.to_string())?;
            Ok(BindingRow {
                contact: r.get(1).map_err(|e| e.to_string())?,
                transport: r.get(2).map_err(|e| e.to_string())?,
                source: source
                    .parse()
                    .map_err(|_| format!("bad source address {source:?}"))?,
                expires_at: r.get(4).map_err(|e| e.to_string())?,
                user_agent: r.get(5).map_err(|e| e.to_string())?,
                call_id: r.get(6).map_err(|e| e.to_string())?,
                cseq: r.get(7).map_err(|e| e.to_string())?,
                name: name.clone(),
            })
        })();
        match row {
            Ok(row) => out.push(row),
            Err(e) => tracing::warn!(client = %name, "store: skipping stored binding: {e}"),
        }
    }
    Ok(out)
}

fn load_forwards(conn: &Connection) -> rusqlite::Result<Vec<ForwardRow>> {
    let mut stmt =
        conn.prepare("SELECT name, kind, number, source, set_at FROM forwards ORDER BY name")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let row = (|| -> Result<ForwardRow, String> {
            let kind: String = r.get(1).map_err(|e| e.to_string())?;
            let number: String = r.get(2).map_err(|e| e.to_string())?;
            Ok(ForwardRow {
                forwarding: forwarding_of(&kind, number)
                    .ok_or_else(|| format!("unknown forwarding kind {kind:?}"))?,
                source: r.get(3).map_err(|e| e.to_string())?,
                set_at: r.get(4).map_err(|e| e.to_string())?,
                name: name.clone(),
            })
        })();
        match row {
            Ok(row) => out.push(row),
            Err(e) => tracing::warn!(client = %name, "store: skipping stored forwarding: {e}"),
        }
    }
    Ok(out)
}

/// Pause of the writer after each batch: writes arriving meanwhile are
/// queued without waking it (a futex wake and a context switch per
/// REGISTER otherwise) and go into the next batch. Bounds how long a write
/// waits to be committed (plus the batch itself).
pub const PACE: std::time::Duration = std::time::Duration::from_millis(50);

/// The writer thread: one batch per loop, until the handle is dropped and
/// the queue is empty.
fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Msg>, stats: &Stats, path: &Path) {
    let mut batch = Vec::with_capacity(64);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH_CAP {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        process_batch(&mut conn, batch.drain(..), stats, path);
        std::thread::sleep(PACE);
    }
}

/// Applies one batch: one transaction; on failure, one transaction per
/// write so the good ones still land. Then fires completions and flushes.
fn process_batch(
    conn: &mut Connection,
    batch: impl Iterator<Item = Msg>,
    stats: &Stats,
    path: &Path,
) {
    let mut writes = Vec::new();
    let mut dones: Vec<(usize, Done)> = Vec::new();
    let mut flushes = Vec::new();
    for msg in batch {
        match msg {
            Msg::Write(w, done) => {
                if let Some(done) = done {
                    dones.push((writes.len(), done));
                }
                writes.push(w);
            }
            Msg::Flush(f) => flushes.push(f),
        }
    }

    let mut results: Vec<Result<(), String>> = Vec::new();
    if !writes.is_empty() {
        let live = coalesce(&writes);
        match write_all(conn, &writes, &live) {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    writes = writes.len(),
                    "store batch failed, retrying write by write: {e}"
                );
                results = retry_each(conn, &writes, &live, stats, path);
            }
        }
    }
    stats.pending.fetch_sub(writes.len(), Ordering::Relaxed);

    for (i, done) in dones {
        let result = match results.get(i) {
            Some(Err(e)) => Err(format!("store {}: {e}", path.display())),
            _ => Ok(()),
        };
        let _ = done.send(result);
    }
    for f in flushes {
        let _ = f.send(());
    }
}

/// Marks which writes to apply: a binding put/delete is skipped when a later
/// write in the batch puts or deletes the same binding (the later one fully
/// decides the row, whatever `DeleteBindingsExcept` happens in between).
fn coalesce(writes: &[Write]) -> Vec<bool> {
    let mut live = vec![true; writes.len()];
    let mut seen = HashSet::new();
    for (i, w) in writes.iter().enumerate().rev() {
        if let Some(name) = w.binding_name() {
            if !seen.insert(name) {
                live[i] = false;
            }
        }
    }
    live
}

fn write_all(conn: &mut Connection, writes: &[Write], live: &[bool]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (w, _) in writes.iter().zip(live).filter(|(_, &l)| l) {
        apply(&tx, w)?;
    }
    tx.commit()
}

/// Per-write fallback after a failed batch. Returns one result per write.
fn retry_each(
    conn: &mut Connection,
    writes: &[Write],
    live: &[bool],
    stats: &Stats,
    path: &Path,
) -> Vec<Result<(), String>> {
    let mut failed = 0usize;
    let mut first_error = None;
    let results: Vec<Result<(), String>> = writes
        .iter()
        .zip(live)
        .map(|(w, &l)| {
            if !l {
                return Ok(());
            }
            let r = write_all(conn, std::slice::from_ref(w), &[true]);
            match r {
                Ok(()) => {
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    failed += 1;
                    let e = e.to_string();
                    if first_error.is_none() {
                        first_error = Some(format!("{e} ({w:?})"));
                    }
                    Err(e)
                }
            }
        })
        .collect();
    if failed > 0 {
        stats.errors.fetch_add(failed as u64, Ordering::Relaxed);
        tracing::error!(
            path = %path.display(),
            "store: {failed} of {} writes failed; first: {}",
            writes.len(),
            first_error.unwrap_or_default()
        );
    }
    results
}

fn apply(conn: &Connection, w: &Write) -> rusqlite::Result<()> {
    match w {
        Write::PutBinding(b) => {
            conn.prepare_cached(SQL_PUT_BINDING)?.execute(params![
                b.name,
                b.contact,
                b.transport,
                b.source.to_string(),
                b.expires_at,
                b.user_agent,
                b.call_id,
                b.cseq,
            ])?;
        }
        Write::DeleteBinding(name) => {
            conn.prepare_cached(SQL_DELETE_BINDING)?
                .execute(params![name])?;
        }
        Write::DeleteBindingsExcept(keep) => {
            let keep: HashSet<&str> = keep.iter().map(String::as_str).collect();
            let names: Vec<String> = conn
                .prepare_cached("SELECT name FROM bindings")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut del = conn.prepare_cached(SQL_DELETE_BINDING)?;
            for name in names.iter().filter(|n| !keep.contains(n.as_str())) {
                del.execute(params![name])?;
            }
        }
        Write::PutForward(f) => {
            conn.prepare_cached(SQL_PUT_FORWARD)?.execute(params![
                f.name,
                forward_kind(&f.forwarding),
                f.forwarding.number().unwrap_or_default(),
                f.source,
                f.set_at,
            ])?;
        }
        Write::DeleteForward(name) => {
            conn.prepare_cached(SQL_DELETE_FORWARD)?
                .execute(params![name])?;
        }
        Write::AddCdr(c) => {
            conn.prepare_cached(SQL_ADD_CDR)?.execute(params![
                c.call_id,
                c.caller,
                c.callerid,
                c.accountcode,
                c.dialed,
                c.target,
                c.disposition,
                c.code,
                c.start,
                c.answer,
                c.end,
                c.duration,
                c.billsec,
            ])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let dir = std::env::temp_dir().join(format!(
                "sipd-store-{tag}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("sipd.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const NOW: u64 = 1_700_000_000;

    fn binding(name: &str, expires_at: u64) -> BindingRow {
        BindingRow {
            name: name.to_owned(),
            contact: format!("sip:{name}@192.0.2.10:5062;transport=udp"),
            transport: "udp".to_owned(),
            source: "203.0.113.7:40123".parse().unwrap(),
            expires_at,
            user_agent: "test UA 1.0".to_owned(),
            call_id: format!("reg-{name}"),
            cseq: 1,
        }
    }

    fn forward(name: &str, forwarding: Forwarding) -> ForwardRow {
        ForwardRow {
            name: name.to_owned(),
            forwarding,
            source: "phone".to_owned(),
            set_at: NOW,
        }
    }

    fn cdr(call_id: &str, end: u64, answer: Option<u64>) -> CdrRow {
        CdrRow {
            call_id: call_id.to_owned(),
            caller: "alice".to_owned(),
            callerid: "74951234567".to_owned(),
            accountcode: "office".to_owned(),
            dialed: "1002".to_owned(),
            target: "bob".to_owned(),
            disposition: if answer.is_some() {
                "ANSWERED"
            } else {
                "NO ANSWER"
            }
            .to_owned(),
            code: if answer.is_some() { 200 } else { 480 },
            start: end - 30_000,
            answer,
            end,
            duration: 30,
            billsec: answer.map_or(0, |a| (end - a) / 1000),
        }
    }

    fn open(path: &Path) -> (Store, Loaded) {
        Store::open(path, NOW).unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// A plain connection of the test's own, to see what is committed.
    fn raw(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    fn count(conn: &Connection, table: &str) -> u64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn has_binding(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT count(*) FROM bindings WHERE name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
        check::<StoreError>();
    }

    #[test]
    fn creates_wal_database_with_schema_and_reopens() {
        let dir = TempDir::new("create");
        let (store, loaded) = open(&dir.db());
        assert_eq!(loaded, Loaded::default());
        assert_eq!(store.path(), dir.db());
        store.close();
        assert!(dir.db().is_file());

        let conn = raw(&dir.db());
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);

        let (store, loaded) = open(&dir.db());
        assert_eq!(loaded, Loaded::default());
        assert_eq!(store.cdr_count().unwrap(), 0);
    }

    #[test]
    fn bindings_upsert_and_delete_survive_reopen() {
        let dir = TempDir::new("bindings");
        let (store, _) = open(&dir.db());
        store.put_binding(binding("alice", NOW + 3600));
        store.put_binding(binding("bob", NOW + 3600));
        store.put_binding(binding("carol", NOW + 3600));
        let mut alice2 = binding("alice", NOW + 600);
        alice2.source = "[2001:db8::1]:5070".parse().unwrap();
        alice2.transport = "tcp".to_owned();
        alice2.cseq = 7;
        store.put_binding(alice2.clone());
        store.delete_binding("bob");
        store.close();

        let (store, loaded) = open(&dir.db());
        assert_eq!(
            loaded.bindings,
            vec![alice2.clone(), binding("carol", NOW + 3600)]
        );
        store.delete_binding("carol");
        store.close();

        let (_store, loaded) = open(&dir.db());
        assert_eq!(loaded.bindings, vec![alice2]);
    }

    #[test]
    fn expired_bindings_are_purged_on_open() {
        let dir = TempDir::new("expired");
        let (store, _) = open(&dir.db());
        store.put_binding(binding("gone", NOW - 10));
        store.put_binding(binding("edge", NOW)); // expires exactly now: expired
        store.put_binding(binding("live", NOW + 1));
        store.close();

        let (store, loaded) = open(&dir.db());
        assert_eq!(loaded.bindings, vec![binding("live", NOW + 1)]);
        assert_eq!(loaded.purged, 2);
        let conn = raw(&dir.db());
        assert_eq!(
            count(&conn, "bindings"),
            1,
            "expired rows deleted from the file"
        );
        drop(store);

        // Later start: the remaining one has expired too.
        let (_store, loaded) = Store::open(&dir.db(), NOW + 1).unwrap();
        assert!(loaded.bindings.is_empty());
        assert_eq!(loaded.purged, 1);
    }

    #[test]
    fn unreadable_stored_rows_are_skipped_not_fatal() {
        let dir = TempDir::new("badrows");
        drop(open(&dir.db()));
        let conn = raw(&dir.db());
        conn.execute(
            "INSERT INTO bindings VALUES ('x', 'sip:x@h', 'udp', 'not an address', ?1, '', 'c', 1)",
            [NOW + 100],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO bindings VALUES ('y', 'sip:y@h', 'udp', '192.0.2.1:5060', ?1, '', 'c', -1)",
            [NOW + 100],
        )
        .unwrap();
        drop(conn);
        let (_store, loaded) = open(&dir.db());
        assert!(loaded.bindings.is_empty());
    }

    #[tokio::test]
    async fn forward_completion_fires_after_commit() {
        let dir = TempDir::new("fwd");
        let (store, _) = open(&dir.db());
        let row = forward("alice", Forwarding::always("74991234567"));
        store.set_forward(row.clone()).await.unwrap().unwrap();
        // Committed: a brand-new connection sees it.
        let conn = raw(&dir.db());
        let (kind, number): (String, String) = conn
            .query_row(
                "SELECT kind, number FROM forwards WHERE name = 'alice'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((kind.as_str(), number.as_str()), ("always", "74991234567"));
        drop(conn);

        // Replace by an "unavailable" one, and record an explicit "off" for bob.
        let unavail = ForwardRow {
            source: "sipctl".to_owned(),
            ..forward("alice", Forwarding::unavailable("1002"))
        };
        store.set_forward(unavail.clone()).await.unwrap().unwrap();
        let off = forward("bob", Forwarding::None);
        store.set_forward(off.clone()).await.unwrap().unwrap();
        let conn = raw(&dir.db());
        assert_eq!(count(&conn, "forwards"), 2);
        let stored = |name: &str| -> (String, String) {
            conn.query_row(
                "SELECT kind, number FROM forwards WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(stored("alice"), ("unavail".to_owned(), "1002".to_owned()));
        assert_eq!(stored("bob"), ("off".to_owned(), String::new()));
        drop(conn);
        drop(store);

        let (store, loaded) = open(&dir.db());
        assert_eq!(loaded.forwards, vec![unavail, off]);

        store.clear_forward("alice").await.unwrap().unwrap();
        let conn = raw(&dir.db());
        assert_eq!(count(&conn, "forwards"), 1);
        drop(conn);
        drop(store);
        let (_store, loaded) = open(&dir.db());
        assert_eq!(loaded.forwards, vec![forward("bob", Forwarding::None)]);
    }

    #[test]
    fn forward_completion_works_from_plain_threads() {
        let dir = TempDir::new("fwdsync");
        let (store, _) = open(&dir.db());
        let rx = store.set_forward(forward("carol", Forwarding::always("1001")));
        rx.blocking_recv().unwrap().unwrap();
        assert_eq!(count(&raw(&dir.db()), "forwards"), 1);
        store
            .clear_forward("nobody")
            .blocking_recv()
            .unwrap()
            .unwrap();
    }

    #[test]
    fn forward_kind_spellings_round_trip() {
        for f in [
            Forwarding::always("74991234567"),
            Forwarding::unavailable("1002"),
            Forwarding::None,
        ] {
            let number = f.number().unwrap_or_default().to_owned();
            assert_eq!(forwarding_of(forward_kind(&f), number), Some(f));
        }
        assert_eq!(forward_kind(&Forwarding::always("1")), "always");
        assert_eq!(forward_kind(&Forwarding::unavailable("1")), "unavail");
        assert_eq!(forward_kind(&Forwarding::None), "off");
        assert_eq!(forwarding_of("never", "1".to_owned()), None);
        assert_eq!(forwarding_of("none", String::new()), None);
        // The number of an "off" row does not matter.
        assert_eq!(
            forwarding_of("off", "junk".to_owned()),
            Some(Forwarding::None)
        );
    }

    #[test]
    fn rows_written_by_hand_load() {
        // Rows as an existing sipd.db holds them (the schema and spellings
        // are unchanged): every kind, an off row with a number, a bad kind.
        let dir = TempDir::new("fwdraw");
        drop(open(&dir.db()));
        let conn = raw(&dir.db());
        conn.execute_batch(
            "INSERT INTO forwards VALUES ('a', 'always', '4991234567', 'phone', 1);
             INSERT INTO forwards VALUES ('b', 'unavail', '+44123', 'sipctl', 2);
             INSERT INTO forwards VALUES ('c', 'off', '', 'phone', 3);
             INSERT INTO forwards VALUES ('d', 'off', 'junk', 'sipctl', 4);",
        )
        .unwrap();
        // The schema's CHECK keeps other kinds out (the loader would skip
        // them).
        assert!(conn
            .execute(
                "INSERT INTO forwards VALUES ('e', 'sometimes', '1', 'phone', 5)",
                []
            )
            .is_err());
        drop(conn);
        let (_store, loaded) = open(&dir.db());
        let row = |name: &str, forwarding: Forwarding, source: &str, set_at: u64| ForwardRow {
            name: name.to_owned(),
            forwarding,
            source: source.to_owned(),
            set_at,
        };
        assert_eq!(
            loaded.forwards,
            vec![
                row("a", Forwarding::always("4991234567"), "phone", 1),
                row("b", Forwarding::unavailable("+44123"), "sipctl", 2),
                row("c", Forwarding::None, "phone", 3),
                row("d", Forwarding::None, "sipctl", 4),
            ]
        );
    }

    #[test]
    fn cdrs_listed_newest_first_with_limit() {
        let dir = TempDir::new("cdr");
        let (store, _) = open(&dir.db());
        let base = NOW * 1000;
        // Inserted out of end order; two share an end time (ties: later insert first).
        let ends = [5, 1, 9, 3, 9, 7, 2, 8, 6, 4];
        for (i, e) in ends.iter().enumerate() {
            let answer = (i % 2 == 0).then_some(base + e * 1000 - 10_000);
            store.add_cdr(cdr(&format!("call-{i}"), base + e * 1000, answer));
        }
        store.flush();
        assert_eq!(store.cdr_count().unwrap(), 10);

        let top = store.recent_cdrs(3).unwrap();
        let ids: Vec<&str> = top.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, ["call-4", "call-2", "call-7"]);
        assert_eq!(top[0], cdr("call-4", base + 9000, Some(base - 1000)));
        let unanswered = store
            .recent_cdrs(100)
            .unwrap()
            .into_iter()
            .find(|c| c.call_id == "call-1")
            .unwrap();
        assert_eq!(unanswered, cdr("call-1", base + 1000, None));

        assert_eq!(store.recent_cdrs(100).unwrap().len(), 10);
        assert!(store.recent_cdrs(0).unwrap().is_empty());
        assert_eq!(store.recent_cdrs(usize::MAX).unwrap().len(), 10);
        store.close();

        let (store, _) = open(&dir.db());
        assert_eq!(store.cdr_count().unwrap(), 10);
        assert_eq!(store.recent_cdrs(1).unwrap()[0].call_id, "call-4");
    }

    #[test]
    fn recent_cdrs_query_walks_the_index() {
        let dir = TempDir::new("plan");
        drop(open(&dir.db()));
        let conn = raw(&dir.db());
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {SQL_RECENT_CDRS}"))
            .unwrap()
            .query_map([10], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(plan.contains("cdr_end"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn garbage_file_is_an_error_naming_it() {
        let dir = TempDir::new("garbage");
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        fs::write(dir.db(), bytes).unwrap();
        let err = Store::open(&dir.db(), NOW).unwrap_err();
        let text = err.to_string();
        eprintln!("garbage file: {text}");
        assert!(
            text.starts_with(&format!("store {}: ", dir.db().display())),
            "{text}"
        );
        assert!(text.contains("not a database"), "{text}");
    }

    #[test]
    fn damaged_database_is_an_error() {
        let dir = TempDir::new("damaged");
        let (store, _) = open(&dir.db());
        for i in 0..2_000 {
            store.put_binding(binding(&format!("user{i:05}"), NOW + 3600));
            store.add_cdr(cdr(&format!("c{i}"), NOW * 1000 + i, None));
        }
        store.close();
        // Scribble over the second page onwards; keep the header page intact.
        let mut bytes = fs::read(dir.db()).unwrap();
        assert!(bytes.len() > 4 * 4096, "file too small: {}", bytes.len());
        for b in &mut bytes[4096..4 * 4096] {
            *b = 0xA5;
        }
        fs::write(dir.db(), bytes).unwrap();
        let err = Store::open(&dir.db(), NOW).unwrap_err();
        eprintln!("damaged file: {err}");
        assert!(err.0.contains(&dir.db().display().to_string()), "{err}");
    }

    #[test]
    fn unwritable_location_is_an_error() {
        let dir = TempDir::new("unwritable");
        let file = dir.0.join("plain-file");
        fs::write(&file, b"not a directory").unwrap();
        let path = file.join("sipd.db");
        let err = Store::open(&path, NOW).unwrap_err();
        eprintln!("parent is a file: {err}");
        assert!(
            err.0.starts_with(&format!("store {}: ", path.display())),
            "{err}"
        );

        let missing = dir.0.join("no-such-dir").join("sipd.db");
        let err = Store::open(&missing, NOW).unwrap_err();
        assert!(err.0.contains("no-such-dir"), "{err}");

        // A directory where the file should be.
        fs::create_dir(dir.db()).unwrap();
        assert!(Store::open(&dir.db(), NOW).is_err());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = TempDir::new("newer");
        drop(open(&dir.db()));
        raw(&dir.db())
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = Store::open(&dir.db(), NOW).unwrap_err();
        assert!(err.0.contains("newer than this sipd"), "{err}");
    }

    #[test]
    fn flush_makes_queued_writes_visible() {
        let dir = TempDir::new("flush");
        let (store, _) = open(&dir.db());
        for i in 0..500 {
            store.put_binding(binding(&format!("u{i}"), NOW + 60));
            store.add_cdr(cdr(&format!("c{i}"), NOW * 1000 + i, None));
        }
        store.flush();
        assert_eq!(store.pending(), 0);
        let conn = raw(&dir.db());
        assert_eq!(count(&conn, "bindings"), 500);
        assert_eq!(count(&conn, "cdr"), 500);
        assert_eq!(store.cdr_count().unwrap(), 500);
        assert_eq!(store.errors(), 0);
    }

    #[test]
    fn writes_commit_promptly_without_flush() {
        // What a kill -9 would leave: only committed data, seen by another connection.
        let dir = TempDir::new("prompt");
        let (store, _) = open(&dir.db());
        let conn = raw(&dir.db());
        let started = Instant::now();
        store.put_binding(binding("alice", NOW + 60));
        while !has_binding(&conn, "alice") {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "binding not committed within 1 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        eprintln!(
            "binding visible to another connection after {:?}",
            started.elapsed()
        );
    }

    const KILL_ENV: &str = "SIPD_STORE_TEST_KILL_DB";

    /// Run by `committed_writes_survive_kill_9` in a child process: queue
    /// writes, say so, and wait to be killed.
    #[test]
    #[ignore = "helper process for committed_writes_survive_kill_9"]
    fn kill_9_child() {
        let Some(path) = std::env::var_os(KILL_ENV) else {
            return;
        };
        let (store, _) = Store::open(Path::new(&path), NOW).unwrap();
        for i in 0..1_000 {
            store.put_binding(binding(&format!("user{i:04}"), NOW + 3600));
        }
        store.add_cdr(cdr("last-call", NOW * 1000, None));
        drop(store.set_forward(forward("user0001", Forwarding::always("1002"))));
        println!("SIPD-QUEUED");
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn committed_writes_survive_kill_9() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};

        let dir = TempDir::new("kill9");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["store::tests::kill_9_child", "--exact", "--ignored"])
            .args(["--nocapture", "--test-threads=1"])
            .env(KILL_ENV, dir.db())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("child exited before queueing its writes");
            }
            if line.contains("SIPD-QUEUED") {
                break;
            }
        }
        // The promise: changes older than about a second survive.
        std::thread::sleep(Duration::from_secs(1));
        child.kill().unwrap(); // SIGKILL: no destructors, no flush
        child.wait().unwrap();

        let (store, loaded) = open(&dir.db());
        assert_eq!(loaded.bindings.len(), 1_000);
        assert_eq!(loaded.forwards.len(), 1);
        assert_eq!(store.cdr_count().unwrap(), 1);
    }

    #[test]
    fn burst_of_bindings_is_batched() {
        const N: usize = 20_000;
        let dir = TempDir::new("burst");
        let (store, _) = open(&dir.db());
        let before = store.commits();
        let started = Instant::now();
        for i in 0..N {
            store.put_binding(binding(&format!("user{i:05}"), NOW + 3600));
        }
        let queued = started.elapsed();
        store.flush();
        let total = started.elapsed();
        let commits = store.commits() - before;
        eprintln!(
            "{N} put_binding: queued in {queued:?}, committed in {total:?}, {commits} transactions"
        );
        assert!(commits >= 1);
        assert!(
            commits <= (N / 10) as u64,
            "{commits} transactions for {N} writes"
        );
        assert_eq!(store.pending(), 0);
        assert_eq!(count(&raw(&dir.db()), "bindings"), N as u64);
        store.close();
        let (_store, loaded) = open(&dir.db());
        assert_eq!(loaded.bindings.len(), N);
    }

    #[test]
    fn repeated_writes_to_one_binding_keep_the_last() {
        let dir = TempDir::new("coalesce");
        let (store, _) = open(&dir.db());
        for cseq in 1..=1_000 {
            store.put_binding(BindingRow {
                cseq,
                ..binding("alice", NOW + 60)
            });
        }
        store.put_binding(binding("bob", NOW + 60));
        store.delete_binding("bob");
        store.delete_binding("carol");
        store.put_binding(binding("carol", NOW + 60));
        store.close();
        let (_store, loaded) = open(&dir.db());
        let alice = BindingRow {
            cseq: 1_000,
            ..binding("alice", NOW + 60)
        };
        assert_eq!(loaded.bindings, vec![alice, binding("carol", NOW + 60)]);
    }

    #[test]
    fn coalesce_keeps_only_the_last_write_per_binding() {
        let writes = vec![
            Write::PutBinding(binding("a", 1)),
            Write::AddCdr(cdr("x", 100_000, None)),
            Write::DeleteBinding("a".into()),
            Write::DeleteBindingsExcept(vec![]),
            Write::PutBinding(binding("b", 1)),
            Write::PutBinding(binding("a", 2)),
            Write::DeleteForward("a".into()),
        ];
        assert_eq!(
            coalesce(&writes),
            [false, true, false, true, true, true, true]
        );
    }

    #[test]
    fn delete_bindings_except_keeps_only_the_named() {
        let dir = TempDir::new("except");
        let (store, _) = open(&dir.db());
        for name in ["alice", "bob", "carol", "dave"] {
            store.put_binding(binding(name, NOW + 60));
        }
        store.delete_bindings_except(vec!["bob".into(), "dave".into(), "eve".into()]);
        store.put_binding(binding("alice", NOW + 60)); // after the delete: stays
        store.close();
        let (_store, loaded) = open(&dir.db());
        let names: Vec<&str> = loaded.bindings.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "dave"]);
    }

    #[test]
    fn close_and_drop_commit_everything_queued() {
        let dir = TempDir::new("close");
        let (store, _) = open(&dir.db());
        for i in 0..3_000 {
            store.put_binding(binding(&format!("u{i}"), NOW + 60));
            store.add_cdr(cdr(&format!("c{i}"), NOW * 1000 + i, None));
        }
        drop(store.set_forward(forward("u1", Forwarding::always("1002"))));
        store.close(); // no flush first
        let (store, loaded) = open(&dir.db());
        assert_eq!(loaded.bindings.len(), 3_000);
        assert_eq!(loaded.forwards.len(), 1);
        assert_eq!(store.cdr_count().unwrap(), 3_000);

        for i in 0..1_000 {
            store.add_cdr(cdr(&format!("d{i}"), NOW * 1000 + i, None));
        }
        drop(store); // plain drop does the same
        let (store, _) = open(&dir.db());
        assert_eq!(store.cdr_count().unwrap(), 4_000);
    }

    #[test]
    fn failed_write_is_reported_and_the_writer_keeps_going() {
        let dir = TempDir::new("failed");
        let (store, _) = open(&dir.db());
        // u64 beyond SQLite's i64: this write fails when bound.
        let bad = CdrRow {
            start: u64::MAX,
            ..cdr("bad", NOW * 1000, None)
        };
        store.add_cdr(bad);
        let rx = store.set_forward(forward("alice", Forwarding::always("1002")));
        store.add_cdr(cdr("good", NOW * 1000, None));
        store.flush();
        assert_eq!(rx.blocking_recv().unwrap(), Ok(()));
        assert_eq!(store.errors(), 1);
        assert_eq!(store.pending(), 0);
        let cdrs = store.recent_cdrs(10).unwrap();
        assert_eq!(cdrs.len(), 1);
        assert_eq!(cdrs[0].call_id, "good");

        // A failing durable write reports its error to the waiter.
        let bad_fwd = ForwardRow {
            set_at: u64::MAX,
            ..forward("bob", Forwarding::always("1001"))
        };
        let err = store
            .set_forward(bad_fwd)
            .blocking_recv()
            .unwrap()
            .unwrap_err();
        assert!(err.contains(&dir.db().display().to_string()), "{err}");
        assert_eq!(store.errors(), 2);

        store.put_binding(binding("carol", NOW + 60));
        store.flush();
        assert!(has_binding(&raw(&dir.db()), "carol"));
    }

    #[test]
    fn vanished_directory_does_not_kill_the_writer() {
        let dir = TempDir::new("vanish");
        let (store, _) = open(&dir.db());
        store.put_binding(binding("alice", NOW + 60));
        store.flush();
        fs::remove_dir_all(&dir.0).unwrap();
        for i in 0..100 {
            store.put_binding(binding(&format!("u{i}"), NOW + 60));
            store.add_cdr(cdr(&format!("c{i}"), NOW * 1000 + i, None));
        }
        // Whatever SQLite makes of it (writing to unlinked files or failing),
        // the completion fires and the thread survives.
        let outcome = store
            .set_forward(forward("alice", Forwarding::always("1")))
            .blocking_recv()
            .expect("completion dropped: writer died");
        eprintln!("write after the directory vanished: {outcome:?}");
        store.flush();
        assert_eq!(store.pending(), 0);
        let _ = store.recent_cdrs(5);
        store.close();
    }
}
