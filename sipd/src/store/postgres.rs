//! The PostgreSQL store (`--store postgresql://…`): several sipd nodes on
//! one database share the location service, the forwarding overrides and
//! the CDRs.
//!
//! - Writes go through the same writer thread, backlog and retry rules as
//!   SQLite's (`writer.rs`, `backlog.rs`); [`Pg`] is its [`Db`]. Each node
//!   writes only the bindings whose flows it holds (`node` column), takes a
//!   binding over by its key (client, Contact) when the device registers
//!   through it, and deletes another node's binding only when a REGISTER
//!   here replaced or removed it ([`Write::ForgetBindings`]). Every change
//!   is announced with `pg_notify('sipd', …)` in its own transaction, so
//!   the other nodes hear of it only once it is committed.
//! - CDRs carry the node and a random `uid` (unique): a batch retried
//!   after a commit whose outcome was lost stores each call once.
//! - [`Sync`] is the change feed: its own connection LISTENs, loads what
//!   a notification names and hands it to the server as an [`Event`]; a
//!   full resync follows every (re)connect; each second it writes this
//!   node's heartbeat and reads everyone's ([`NODE_SILENCE`]).
//!
//! Statements are prepared once per connection; a connection that failed
//! is dropped and made again at the writer's next retry.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Statement};

use super::schema::{forward_kind, forwarding_of, PRUNE_CHUNK};
use super::{BindingRow, CdrRow, Db, DbError, ForwardRow, Loaded, StoreError, Write};

/// Schema version this build writes (table `sipd_schema`).
pub const PG_SCHEMA_VERSION: i32 = 1;

/// A node whose heartbeat is older than this is dead: its bindings are
/// not routed to until the phones register again on a live node.
pub const NODE_SILENCE: Duration = Duration::from_secs(10);

/// How often a node writes its heartbeat and reads the others'.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Connect timeout of every connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The notification channel.
const CHANNEL: &str = "sipd";

/// Longest notification payload PostgreSQL takes is 8000 bytes.
const MAX_PAYLOAD: usize = 7900;

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE bindings (
        name       TEXT NOT NULL,
        contact    TEXT NOT NULL,
        transport  TEXT NOT NULL,
        source     TEXT NOT NULL,
        local      TEXT NOT NULL DEFAULT '',
        expires_at BIGINT NOT NULL,
        user_agent TEXT NOT NULL,
        call_id    TEXT NOT NULL,
        cseq       BIGINT NOT NULL,
        instance   TEXT NOT NULL DEFAULT '',
        reg_id     BIGINT,
        outbound   BOOLEAN NOT NULL DEFAULT false,
        seq        INTEGER NOT NULL DEFAULT 0,
        node       TEXT NOT NULL,
        node_addr  TEXT NOT NULL,
        PRIMARY KEY (name, contact)
    );
    CREATE INDEX bindings_node ON bindings (node);
    CREATE TABLE forwards (
        name   TEXT PRIMARY KEY,
        kind   TEXT NOT NULL CHECK (kind IN ('always', 'unavail', 'off')),
        number TEXT NOT NULL,
        source TEXT NOT NULL,
        set_at BIGINT NOT NULL
    );
    CREATE TABLE cdr (
        id             BIGSERIAL PRIMARY KEY,
        uid            BIGINT NOT NULL UNIQUE,
        node           TEXT NOT NULL,
        call_id        TEXT NOT NULL,
        caller         TEXT NOT NULL,
        callerid       TEXT NOT NULL,
        accountcode    TEXT NOT NULL,
        dialed         TEXT NOT NULL,
        target         TEXT NOT NULL,
        disposition    TEXT NOT NULL,
        code           INTEGER NOT NULL,
        start_ms       BIGINT NOT NULL,
        answer_ms      BIGINT,
        end_ms         BIGINT NOT NULL,
        duration       BIGINT NOT NULL,
        billsec        BIGINT NOT NULL,
        device         TEXT NOT NULL DEFAULT '',
        packets_caller BIGINT NOT NULL DEFAULT 0,
        packets_callee BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX cdr_end ON cdr (end_ms);
    CREATE TABLE nodes (
        name       TEXT PRIMARY KEY,
        sip_addr   TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
    );
"];

/// Upserts a run of bindings, one array per column (`unnest`): a binding
/// another node held under the same (client, Contact) is taken over.
const SQL_PUT_BINDINGS: &str = "INSERT INTO bindings
    (name, contact, transport, source, local, expires_at, user_agent, call_id, cseq,
     instance, reg_id, outbound, seq, node, node_addr)
    SELECT name, contact, transport, source, local, expires_at, user_agent, call_id, cseq,
     instance, reg_id, outbound, seq, $14, $15
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
     $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::bool[],
     $13::int[]) AS u(name, contact, transport, source, local, expires_at, user_agent,
     call_id, cseq, instance, reg_id, outbound, seq)
    ON CONFLICT (name, contact) DO UPDATE SET
     transport = EXCLUDED.transport, source = EXCLUDED.source, local = EXCLUDED.local,
     expires_at = EXCLUDED.expires_at, user_agent = EXCLUDED.user_agent,
     call_id = EXCLUDED.call_id, cseq = EXCLUDED.cseq, instance = EXCLUDED.instance,
     reg_id = EXCLUDED.reg_id, outbound = EXCLUDED.outbound, seq = EXCLUDED.seq,
     node = EXCLUDED.node, node_addr = EXCLUDED.node_addr";
/// This node's bindings of the clients `$2` that are not among the
/// (client, Contact) pairs `$3`, `$4`: the devices those REGISTERs dropped.
const SQL_DELETE_OWN_EXCEPT_MANY: &str = "DELETE FROM bindings WHERE node = $1
    AND name = ANY($2)
    AND (name, contact) NOT IN (SELECT * FROM unnest($3::text[], $4::text[]))";
const SQL_DELETE_OWN: &str = "DELETE FROM bindings WHERE name = $1 AND node = $2";
const SQL_DELETE_OWN_OTHERS: &str = "DELETE FROM bindings WHERE node = $1 AND NOT (name = ANY($2))";
const SQL_FORGET: &str = "DELETE FROM bindings WHERE name = $1 AND contact = ANY($2)";
const SQL_PUT_FORWARD: &str = "INSERT INTO forwards (name, kind, number, source, set_at)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, number = EXCLUDED.number,
     source = EXCLUDED.source, set_at = EXCLUDED.set_at";
const SQL_DELETE_FORWARD: &str = "DELETE FROM forwards WHERE name = $1";
const SQL_ADD_CDR: &str = "INSERT INTO cdr
    (uid, node, call_id, caller, callerid, accountcode, dialed, target, disposition, code,
     start_ms, answer_ms, end_ms, duration, billsec, device, packets_caller, packets_callee)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    ON CONFLICT (uid) DO NOTHING";
const SQL_PRUNE_CDRS: &str = "DELETE FROM cdr WHERE id IN
    (SELECT id FROM cdr WHERE end_ms < $1 ORDER BY end_ms LIMIT $2)";
const SQL_NOTIFY: &str = "SELECT pg_notify('sipd', $1)";
const SQL_BINDINGS: &str = "SELECT name, contact, transport, source, expires_at, user_agent,
    call_id, cseq, local, instance, reg_id, outbound, node, node_addr FROM bindings";
const SQL_FORWARDS: &str = "SELECT name, kind, number, source, set_at FROM forwards";
const SQL_RECENT_CDRS: &str = "SELECT call_id, caller, callerid, accountcode, dialed, target,
    disposition, code, start_ms, answer_ms, end_ms, duration, billsec, device,
    packets_caller, packets_callee, node, uid
    FROM cdr ORDER BY end_ms DESC, id DESC LIMIT $1";

/// Where the PostgreSQL store is and who this node is.
#[derive(Clone)]
pub struct PgOptions {
    config: postgres::Config,
    /// The URL as given, for messages (password left out).
    shown: String,
    /// This node's name (`--node`).
    pub node: String,
    /// This node's SIP address, where the other nodes send requests for
    /// the phones whose flows it holds.
    pub node_addr: SocketAddr,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.shown)
            .field("node", &self.node)
            .field("node_addr", &self.node_addr)
            .finish()
    }
}

impl PgOptions {
    /// Checks `url` (`postgresql://USER[:PASS]@HOST[:PORT]/DB`).
    pub fn new(url: &str, node: &str, node_addr: SocketAddr) -> Result<PgOptions, String> {
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| format!("--store {}: {e}", hide_password(url)))?;
        if config.get_hosts().is_empty() {
            return Err(format!("--store {}: no host", hide_password(url)));
        }
        if config.get_user().is_none() {
            return Err(format!("--store {}: no user", hide_password(url)));
        }
        if node.is_empty() || node.contains(['\t', '\n', '\r']) || node.len() > 64 {
            return Err(format!(
                "--node {node:?}: a node name is 1 to 64 characters without tabs or newlines"
            ));
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name(&format!("sipd {node}"));
        Ok(PgOptions {
            config,
            shown: hide_password(url),
            node: node.to_string(),
            node_addr,
        })
    }

    /// `postgresql://user@host:port/db` (no password).
    pub fn display(&self) -> String {
        self.shown.clone()
    }

    fn connect(&self) -> Result<Client, postgres::Error> {
        self.config.connect(NoTls)
    }
}

/// `url` with the password (between `user:` and `@`) left out.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

fn pg_error(e: postgres::Error) -> DbError {
    // Class 22 (data exception), 23 (integrity constraint), 42 (syntax or
    // access rule): the row or the statement, retrying never works.
    // Anything else (no connection, 57P01 admin shutdown, 08 connection
    // exceptions, 53 insufficient resources, 40 rollbacks): the store.
    let row = e
        .code()
        .is_some_and(|c| ["22", "23", "42"].iter().any(|p| c.code().starts_with(p)));
    let text = match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    };
    DbError { store: !row, text }
}

/// Creates or migrates the schema; two nodes starting at once are
/// serialised by an advisory lock.
fn migrate(client: &mut Client) -> Result<(), String> {
    let mut tx = client.transaction().map_err(|e| e.to_string())?;
    tx.execute("SELECT pg_advisory_xact_lock(5060)", &[])
        .map_err(|e| e.to_string())?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS sipd_schema (version INTEGER NOT NULL)")
        .map_err(|e| e.to_string())?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM sipd_schema", &[])
        .map_err(|e| e.to_string())?
    {
        Some(r) => r.try_get(0).map_err(|e| e.to_string())?,
        None => {
            tx.execute("INSERT INTO sipd_schema (version) VALUES (0)", &[])
                .map_err(|e| e.to_string())?;
            0
        }
    };
    if version > PG_SCHEMA_VERSION {
        return Err(format!(
            "schema version {version} is newer than this sipd supports ({PG_SCHEMA_VERSION})"
        ));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql)
            .map_err(|e| format!("schema upgrade from version {from}: {e}"))?;
    }
    if version != PG_SCHEMA_VERSION {
        tx.execute("UPDATE sipd_schema SET version = $1", &[&PG_SCHEMA_VERSION])
            .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

/// Connects, migrates, purges expired bindings, loads; the writer's side
/// and the read side.
pub(super) fn open(pg: &PgOptions, now_unix: u64) -> Result<(Pg, Reader, Loaded), StoreError> {
    let err = |e: String| StoreError(format!("store {}: {e}", pg.display()));
    let mut client = pg.connect().map_err(|e| err(e.to_string()))?;
    migrate(&mut client).map_err(err)?;
    // Two live nodes under one name would write each other's bindings.
    let clash = client
        .query_opt(
            "SELECT sip_addr FROM nodes WHERE name = $1 AND sip_addr <> $2
             AND seen_at > now() - make_interval(secs => $3)",
            &[
                &pg.node,
                &pg.node_addr.to_string(),
                &(NODE_SILENCE.as_secs_f64()),
            ],
        )
        .map_err(|e| err(e.to_string()))?;
    if let Some(row) = clash {
        let addr: String = row.try_get(0).unwrap_or_default();
        return Err(err(format!(
            "node name {:?} is in use by a live node at {addr}: give this one another --node",
            pg.node
        )));
    }
    let purged = client
        .execute(
            "DELETE FROM bindings WHERE expires_at <= $1",
            &[&(now_unix as i64)],
        )
        .map_err(|e| err(e.to_string()))?;
    let loaded = Loaded {
        bindings: load_bindings(&mut client, &pg.node, now_unix, None)
            .map_err(|e| err(e.to_string()))?,
        forwards: load_forwards(&mut client, None).map_err(|e| err(e.to_string()))?,
        purged: purged as usize,
    };
    let reader = Reader {
        pg: pg.clone(),
        client: Mutex::new(None),
    };
    let db = Pg {
        pg: pg.clone(),
        conn: Some(Conn::new(client).map_err(|e| err(e.to_string()))?),
    };
    Ok((db, reader, loaded))
}

/// The rows of `names` (all when `None`), unexpired; this node's rows with
/// an empty `node` (they are its own).
fn load_bindings(
    client: &mut Client,
    me: &str,
    now_unix: u64,
    names: Option<&[&str]>,
) -> Result<Vec<BindingRow>, postgres::Error> {
    let rows = match names {
        Some(n) => client.query(
            &format!("{SQL_BINDINGS} WHERE expires_at > $1 AND name = ANY($2) ORDER BY name, seq"),
            &[&(now_unix as i64), &n],
        )?,
        None => client.query(
            &format!("{SQL_BINDINGS} WHERE expires_at > $1 ORDER BY name, seq"),
            &[&(now_unix as i64)],
        )?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        // try_get: a row of another shape is skipped, never a panic.
        let row = (|| -> Result<BindingRow, String> {
            let e = |e: postgres::Error| e.to_string();
            let name: String = r.try_get(0).map_err(e)?;
            let source: String = r.try_get(3).map_err(e)?;
            let source = source
                .parse()
                .map_err(|_| format!("{name}: bad source {source:?}"))?;
            let node: String = r.try_get(12).map_err(e)?;
            let node_addr: String = r.try_get(13).map_err(e)?;
            let local: String = r.try_get(8).map_err(e)?;
            let mine = node == me;
            Ok(BindingRow {
                contact: r.try_get(1).map_err(e)?,
                transport: r.try_get(2).map_err(e)?,
                source,
                expires_at: r.try_get::<_, i64>(4).map_err(e)?.max(0) as u64,
                user_agent: r.try_get(5).map_err(e)?,
                call_id: r.try_get(6).map_err(e)?,
                cseq: r
                    .try_get::<_, i64>(7)
                    .map_err(e)?
                    .clamp(0, i64::from(u32::MAX)) as u32,
                local: local.parse().ok(),
                instance: r.try_get(9).map_err(e)?,
                reg_id: r
                    .try_get::<_, Option<i64>>(10)
                    .map_err(e)?
                    .and_then(|v| u32::try_from(v).ok()),
                outbound: r.try_get(11).map_err(e)?,
                node_addr: if mine { None } else { node_addr.parse().ok() },
                node: if mine { String::new() } else { node },
                name,
            })
        })();
        match row {
            Ok(row) => out.push(row),
            Err(e) => tracing::warn!("store: skipping stored binding: {e}"),
        }
    }
    Ok(out)
}

fn load_forwards(
    client: &mut Client,
    name: Option<&str>,
) -> Result<Vec<ForwardRow>, postgres::Error> {
    let rows = match name {
        Some(n) => client.query(&format!("{SQL_FORWARDS} WHERE name = $1"), &[&n])?,
        None => client.query(&format!("{SQL_FORWARDS} ORDER BY name"), &[])?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let row = (|| -> Result<ForwardRow, String> {
            let e = |e: postgres::Error| e.to_string();
            let name: String = r.try_get(0).map_err(e)?;
            let kind: String = r.try_get(1).map_err(e)?;
            let forwarding = forwarding_of(&kind, r.try_get(2).map_err(e)?)
                .ok_or_else(|| format!("{name}: unknown forwarding {kind:?}"))?;
            Ok(ForwardRow {
                name,
                forwarding,
                source: r.try_get(3).map_err(e)?,
                set_at: r.try_get::<_, i64>(4).map_err(e)?.max(0) as u64,
            })
        })();
        match row {
            Ok(row) => out.push(row),
            Err(e) => tracing::warn!("store: skipping stored forwarding: {e}"),
        }
    }
    Ok(out)
}

/// A connection of the writer with its statements.
struct Conn {
    client: Client,
    put_bindings: Statement,
    delete_own_except_many: Statement,
    delete_own: Statement,
    put_forward: Statement,
    add_cdr: Statement,
    notify: Statement,
}

impl Conn {
    fn new(mut client: Client) -> Result<Conn, postgres::Error> {
        // A generic plan made while the table was small scans it whole
        // for ever after (a few thousand bindings later, a millisecond of
        // database CPU per REGISTER): plan each statement for its values.
        client.batch_execute("SET plan_cache_mode = force_custom_plan")?;
        Ok(Conn {
            put_bindings: client.prepare(SQL_PUT_BINDINGS)?,
            delete_own_except_many: client.prepare(SQL_DELETE_OWN_EXCEPT_MANY)?,
            delete_own: client.prepare(SQL_DELETE_OWN)?,
            put_forward: client.prepare(SQL_PUT_FORWARD)?,
            add_cdr: client.prepare(SQL_ADD_CDR)?,
            notify: client.prepare(SQL_NOTIFY)?,
            client,
        })
    }
}

/// A run of `PutBindings` in one transaction, as columns.
#[derive(Default)]
struct Bindings {
    names: Vec<String>,
    keep: (Vec<String>, Vec<String>),
    name: Vec<String>,
    contact: Vec<String>,
    transport: Vec<String>,
    source: Vec<String>,
    local: Vec<String>,
    expires_at: Vec<i64>,
    user_agent: Vec<String>,
    call_id: Vec<String>,
    cseq: Vec<i64>,
    instance: Vec<String>,
    reg_id: Vec<Option<i64>>,
    outbound: Vec<bool>,
    seq: Vec<i32>,
}

impl Bindings {
    /// `name`'s set as this node sees it: its own rows (empty `node`) are
    /// written, the others' left to them.
    fn add(&mut self, name: &str, rows: &[BindingRow]) {
        if self.names.iter().any(|n| n == name) {
            // The backlog merges a client's writes, so this does not
            // happen; were it to, an upsert may not touch a row twice.
            self.retain_not(name);
        }
        self.names.push(name.to_string());
        for (seq, b) in rows.iter().enumerate() {
            if !b.node.is_empty() {
                continue;
            }
            self.keep.0.push(b.name.clone());
            self.keep.1.push(b.contact.clone());
            self.name.push(b.name.clone());
            self.contact.push(b.contact.clone());
            self.transport.push(b.transport.clone());
            self.source.push(b.source.to_string());
            self.local
                .push(b.local.map(|l| l.to_string()).unwrap_or_default());
            self.expires_at.push(b.expires_at as i64);
            self.user_agent.push(b.user_agent.clone());
            self.call_id.push(b.call_id.clone());
            self.cseq.push(i64::from(b.cseq));
            self.instance.push(b.instance.clone());
            self.reg_id.push(b.reg_id.map(i64::from));
            self.outbound.push(b.outbound);
            self.seq.push(seq as i32);
        }
    }

    /// Drops what was added for `name` (a later set replaces it).
    fn retain_not(&mut self, name: &str) {
        let keep: Vec<bool> = self.name.iter().map(|n| n != name).collect();
        fn filter<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        filter(&mut self.keep.0, &keep);
        filter(&mut self.keep.1, &keep);
        filter(&mut self.name, &keep);
        filter(&mut self.contact, &keep);
        filter(&mut self.transport, &keep);
        filter(&mut self.source, &keep);
        filter(&mut self.local, &keep);
        filter(&mut self.expires_at, &keep);
        filter(&mut self.user_agent, &keep);
        filter(&mut self.call_id, &keep);
        filter(&mut self.cseq, &keep);
        filter(&mut self.instance, &keep);
        filter(&mut self.reg_id, &keep);
        filter(&mut self.outbound, &keep);
        filter(&mut self.seq, &keep);
        self.names.retain(|n| n != name);
    }

    /// Writes the run (two statements) and notes its clients for the
    /// other nodes; empties it.
    fn flush(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        (delete, put): (&Statement, &Statement),
        (node, node_addr): (&String, &String),
        notes: &mut BTreeSet<String>,
    ) -> Result<(), DbError> {
        if self.names.is_empty() {
            return Ok(());
        }
        let b = std::mem::take(self);
        tx.execute(delete, &[node, &b.names, &b.keep.0, &b.keep.1])
            .map_err(pg_error)?;
        if !b.name.is_empty() {
            tx.execute(
                put,
                &[
                    &b.name,
                    &b.contact,
                    &b.transport,
                    &b.source,
                    &b.local,
                    &b.expires_at,
                    &b.user_agent,
                    &b.call_id,
                    &b.cseq,
                    &b.instance,
                    &b.reg_id,
                    &b.outbound,
                    &b.seq,
                    node,
                    node_addr,
                ],
            )
            .map_err(pg_error)?;
        }
        note_names(notes, node, &b.names);
        Ok(())
    }
}

/// `b` notifications naming `names`, as few as fit in a payload.
fn note_names(notes: &mut BTreeSet<String>, node: &str, names: &[String]) {
    let mut note = format!("b\t{node}");
    let head = note.len();
    for n in names {
        if note.len() + 1 + n.len() > MAX_PAYLOAD && note.len() > head {
            notes.insert(std::mem::replace(&mut note, format!("b\t{node}")));
        }
        note.push('\t');
        note.push_str(n);
    }
    if note.len() > head {
        notes.insert(note);
    }
}

/// The writer's side of the PostgreSQL store.
pub(super) struct Pg {
    pg: PgOptions,
    /// `None` after a failure: connected again at the next attempt.
    conn: Option<Conn>,
}

impl Pg {
    fn conn(&mut self) -> Result<&mut Conn, DbError> {
        if self.conn.is_none() {
            let client = self.pg.connect().map_err(pg_error)?;
            self.conn = Some(Conn::new(client).map_err(pg_error)?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn try_write(&mut self, writes: &[&Write]) -> Result<Vec<usize>, DbError> {
        let node = self.pg.node.clone();
        let node_addr = self.pg.node_addr.to_string();
        let c = self.conn()?;
        let mut tx = c.client.transaction().map_err(pg_error)?;
        let mut counts = Vec::with_capacity(writes.len());
        let mut notes: BTreeSet<String> = BTreeSet::new();
        let mut batch = Bindings::default();
        for w in writes {
            let mut n = 0usize;
            if !matches!(w, Write::PutBindings(..)) {
                batch.flush(
                    &mut tx,
                    (&c.delete_own_except_many, &c.put_bindings),
                    (&node, &node_addr),
                    &mut notes,
                )?;
            }
            match w {
                Write::PutBindings(name, rows) => {
                    // Runs of REGISTERs go in three statements (see
                    // `Bindings`), not three per binding.
                    batch.add(name, rows);
                    counts.push(0);
                    continue;
                }
                Write::DeleteBinding(name) => {
                    tx.execute(&c.delete_own, &[name, &node])
                        .map_err(pg_error)?;
                    notes.insert(format!("b\t{node}\t{name}"));
                }
                Write::DeleteBindingsExcept(keep) => {
                    let gone: Vec<String> = tx
                        .query(
                            "SELECT DISTINCT name FROM bindings WHERE node = $1 AND NOT (name = ANY($2))",
                            &[&node, keep],
                        )
                        .map_err(pg_error)?
                        .iter()
                        .filter_map(|r| r.try_get(0).ok())
                        .collect();
                    tx.execute(SQL_DELETE_OWN_OTHERS, &[&node, keep])
                        .map_err(pg_error)?;
                    for name in gone {
                        notes.insert(format!("b\t{node}\t{name}"));
                    }
                }
                Write::ForgetBindings { name, contacts } => {
                    tx.execute(SQL_FORGET, &[name, contacts])
                        .map_err(pg_error)?;
                    for contact in contacts {
                        let note = format!("x\t{node}\t{name}\t{contact}");
                        if note.len() <= MAX_PAYLOAD {
                            notes.insert(note);
                        }
                    }
                    notes.insert(format!("b\t{node}\t{name}"));
                }
                Write::PutForward(f) => {
                    tx.execute(
                        &c.put_forward,
                        &[
                            &f.name,
                            &forward_kind(&f.forwarding),
                            &f.forwarding.number().unwrap_or_default(),
                            &f.source,
                            &(f.set_at as i64),
                        ],
                    )
                    .map_err(pg_error)?;
                    notes.insert(format!("f\t{node}\t{}", f.name));
                }
                Write::DeleteForward(name) => {
                    tx.execute(SQL_DELETE_FORWARD, &[name]).map_err(pg_error)?;
                    notes.insert(format!("f\t{node}\t{name}"));
                }
                Write::AddCdr(r) => {
                    tx.execute(
                        &c.add_cdr,
                        &[
                            &(r.uid as i64),
                            &node,
                            &r.call_id,
                            &r.caller,
                            &r.callerid,
                            &r.accountcode,
                            &r.dialed,
                            &r.target,
                            &r.disposition,
                            &i32::from(r.code),
                            &(r.start as i64),
                            &r.answer.map(|a| a as i64),
                            &(r.end as i64),
                            &(r.duration as i64),
                            &(r.billsec as i64),
                            &r.device,
                            &(r.packets[0] as i64),
                            &(r.packets[1] as i64),
                        ],
                    )
                    .map_err(pg_error)?;
                }
                Write::PruneCdrs { ended_before_ms } => {
                    n = tx
                        .execute(
                            SQL_PRUNE_CDRS,
                            &[&(*ended_before_ms as i64), &(PRUNE_CHUNK as i64)],
                        )
                        .map_err(pg_error)? as usize;
                }
            }
            counts.push(n);
        }
        batch.flush(
            &mut tx,
            (&c.delete_own_except_many, &c.put_bindings),
            (&node, &node_addr),
            &mut notes,
        )?;
        for note in &notes {
            if note.len() <= MAX_PAYLOAD {
                tx.execute(&c.notify, &[note]).map_err(pg_error)?;
            }
        }
        tx.commit().map_err(pg_error)?;
        Ok(counts)
    }
}

impl Db for Pg {
    fn write_tx(&mut self, writes: &[&Write]) -> Result<Vec<usize>, DbError> {
        let r = self.try_write(writes);
        if r.as_ref().is_err_and(|e| e.store) {
            // The connection may be gone: a new one at the next attempt.
            self.conn = None;
        }
        r
    }

    fn probe(&mut self) -> Result<(), DbError> {
        let r = self
            .conn()
            .and_then(|c| c.client.batch_execute("SELECT 1").map_err(pg_error));
        if r.is_err() {
            self.conn = None;
        }
        r
    }
}

/// The read side of the PostgreSQL store (CDR listings): one connection,
/// made when first needed and again after a failure.
pub struct Reader {
    pg: PgOptions,
    client: Mutex<Option<Client>>,
}

impl Reader {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, String> {
        let mut slot = crate::lock(&self.client);
        if slot.is_none() {
            *slot = Some(self.pg.connect().map_err(|e| pg_error(e).text)?);
        }
        let client = slot.as_mut().expect("connected above");
        let r = f(client);
        if r.is_err() {
            *slot = None;
        }
        r.map_err(|e| pg_error(e).text)
    }

    pub(super) fn recent_cdrs(&self, n: usize) -> Result<Vec<CdrRow>, String> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        self.with(|c| {
            let rows = c.query(SQL_RECENT_CDRS, &[&limit])?;
            let u = |v: i64| v.max(0) as u64;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(CdrRow {
                    call_id: r.try_get(0)?,
                    caller: r.try_get(1)?,
                    callerid: r.try_get(2)?,
                    accountcode: r.try_get(3)?,
                    dialed: r.try_get(4)?,
                    target: r.try_get(5)?,
                    disposition: r.try_get(6)?,
                    code: r.try_get::<_, i32>(7)?.clamp(0, 999) as u16,
                    start: u(r.try_get(8)?),
                    answer: r.try_get::<_, Option<i64>>(9)?.map(u),
                    end: u(r.try_get(10)?),
                    duration: u(r.try_get(11)?),
                    billsec: u(r.try_get(12)?),
                    device: r.try_get(13)?,
                    packets: [u(r.try_get(14)?), u(r.try_get(15)?)],
                    relay: None,
                    node: r.try_get(16)?,
                    uid: r.try_get::<_, i64>(17)? as u64,
                });
            }
            Ok(out)
        })
    }

    pub(super) fn cdr_count(&self) -> Result<u64, String> {
        self.with(|c| {
            let r = c.query_one("SELECT count(*) FROM cdr", &[])?;
            Ok(r.try_get::<_, i64>(0)?.max(0) as u64)
        })
    }
}

impl Drop for Reader {
    /// A `postgres::Client` runs its own runtime and cannot be dropped on a
    /// tokio worker (the store may be dropped at the end of `serve`): it
    /// goes on a thread of its own.
    fn drop(&mut self) {
        let client = self.client.get_mut().map(Option::take).unwrap_or(None);
        if let Some(c) = client {
            let _ = std::thread::spawn(move || drop(c)).join();
        }
    }
}

/// Another node as the heartbeats show it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub addr: Option<SocketAddr>,
    /// Since its last heartbeat, by the database's clock.
    pub silent_for: Duration,
}

impl NodeInfo {
    pub fn alive(&self) -> bool {
        self.silent_for <= NODE_SILENCE
    }
}

/// What the change feed tells the server.
#[derive(Debug)]
pub enum Event {
    /// Everything, after (re)connecting: every node's unexpired bindings
    /// (this node's with an empty `node`) and the forwarding overrides.
    Resync {
        bindings: Vec<BindingRow>,
        forwards: Vec<ForwardRow>,
    },
    /// Another node changed a client's bindings: its rows now.
    Bindings { name: String, rows: Vec<BindingRow> },
    /// Another node deleted this binding (it replaced or removed the
    /// device): the flow here, if any, no longer carries it.
    Forgot { name: String, contact: String },
    /// Another node changed a client's forwarding override (`None`:
    /// removed).
    Forward {
        name: String,
        row: Option<ForwardRow>,
    },
    /// The other nodes, after each heartbeat.
    Nodes(Vec<NodeInfo>),
}

/// The feed's state for `sipctl status`.
#[derive(Clone, Debug, Default)]
pub struct FeedState {
    pub connected: bool,
    pub last_error: Option<String>,
    pub nodes: Vec<NodeInfo>,
}

/// The change feed's thread (LISTEN/NOTIFY and heartbeats).
pub struct Sync {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<FeedState>>,
}

impl Sync {
    /// Starts the feed; events go to `events` (the server applies them to
    /// the core). The first event after each connect is a [`Event::Resync`].
    pub fn start(
        pg: PgOptions,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
    ) -> Result<Sync, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(FeedState::default()));
        let feed = Feed {
            pg,
            events,
            stop: stop.clone(),
            state: state.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sipd-store-feed".into())
            .spawn(move || feed.run())
            .map_err(|e| format!("cannot start the store feed thread: {e}"))?;
        Ok(Sync {
            stop,
            thread: Some(thread),
            state,
        })
    }

    pub fn state(&self) -> FeedState {
        crate::lock(&self.state).clone()
    }

    /// Stops the feed and marks this node as gone (its heartbeat made old,
    /// so the other nodes stop routing to it at once). Blocking, bounded.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Feed {
    pg: PgOptions,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<FeedState>>,
}

impl Feed {
    fn run(self) {
        let mut backoff = Duration::from_millis(250);
        let mut was_down = false;
        while !self.stop.load(Ordering::Relaxed) {
            let err = match self.session() {
                Ok(()) => return,
                Err(e) => e,
            };
            {
                let mut s = crate::lock(&self.state);
                if s.connected || !was_down {
                    tracing::warn!(
                        store = %self.pg.display(),
                        "store feed lost ({err}); serving from memory, reconnecting"
                    );
                }
                s.connected = false;
                s.last_error = Some(err);
            }
            was_down = true;
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }

    /// One connection: LISTEN, resync, then notifications and heartbeats
    /// until it fails (`Err`) or the feed is stopped (`Ok`).
    fn session(&self) -> Result<(), String> {
        let me = self.pg.node.as_str();
        let mut c = self.pg.connect().map_err(|e| pg_error(e).text)?;
        c.batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|e| pg_error(e).text)?;
        self.heartbeat(&mut c)?;
        let now = crate::time::Now::read().unix();
        let bindings = load_bindings(&mut c, me, now, None).map_err(|e| pg_error(e).text)?;
        let forwards = load_forwards(&mut c, None).map_err(|e| pg_error(e).text)?;
        if self
            .events
            .send(Event::Resync { bindings, forwards })
            .is_err()
        {
            return Ok(());
        }
        {
            let mut s = crate::lock(&self.state);
            if s.last_error.is_some() {
                tracing::warn!(store = %self.pg.display(), "store feed connected again; resynced");
            }
            s.connected = true;
        }
        let mut next_beat = Instant::now() + HEARTBEAT;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                // Gone: the others stop routing here at once.
                let _ = c.execute(
                    "UPDATE nodes SET seen_at = now() - interval '1 day' WHERE name = $1",
                    &[&me],
                );
                return Ok(());
            }
            let wait = next_beat.saturating_duration_since(Instant::now());
            let mut payloads = Vec::new();
            {
                let mut n = c.notifications();
                let mut it = n.timeout_iter(wait.min(Duration::from_millis(200)));
                while let Some(note) = it.next().map_err(|e| pg_error(e).text)? {
                    payloads.push(note.payload().to_string());
                    if payloads.len() >= 1000 {
                        break;
                    }
                }
            }
            for p in payloads {
                self.on_payload(&mut c, &p)?;
            }
            if Instant::now() >= next_beat {
                next_beat = Instant::now() + HEARTBEAT;
                self.heartbeat(&mut c)?;
            }
        }
    }

    fn on_payload(&self, c: &mut Client, payload: &str) -> Result<(), String> {
        let mut parts = payload.splitn(4, '\t');
        let (kind, node, name) = (parts.next(), parts.next(), parts.next());
        let (Some(kind), Some(node), Some(name)) = (kind, node, name) else {
            return Ok(());
        };
        if node == self.pg.node {
            return Ok(());
        }
        let me = self.pg.node.as_str();
        let ev = match kind {
            "b" => {
                // One or more clients (tab-separated): their rows in one read.
                let mut names: Vec<&str> = vec![name];
                if let Some(rest) = parts.next() {
                    names.extend(rest.split('\t'));
                }
                let now = crate::time::Now::read().unix();
                let rows = load_bindings(c, me, now, Some(&names)).map_err(|e| pg_error(e).text)?;
                let mut by_name: std::collections::HashMap<String, Vec<BindingRow>> =
                    names.iter().map(|n| (n.to_string(), Vec::new())).collect();
                for r in rows {
                    if let Some(v) = by_name.get_mut(&r.name) {
                        v.push(r);
                    }
                }
                for (name, rows) in by_name {
                    let _ = self.events.send(Event::Bindings { name, rows });
                }
                return Ok(());
            }
            "x" => Event::Forgot {
                name: name.to_string(),
                contact: parts.next().unwrap_or("").to_string(),
            },
            "f" => {
                let row = load_forwards(c, Some(name))
                    .map_err(|e| pg_error(e).text)?
                    .into_iter()
                    .next();
                Event::Forward {
                    name: name.to_string(),
                    row,
                }
            }
            _ => return Ok(()),
        };
        let _ = self.events.send(ev);
        Ok(())
    }

    /// Writes this node's heartbeat, reads everyone's.
    fn heartbeat(&self, c: &mut Client) -> Result<(), String> {
        let me = self.pg.node.as_str();
        c.execute(
            "INSERT INTO nodes (name, sip_addr) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET sip_addr = EXCLUDED.sip_addr, seen_at = now()",
            &[&me, &self.pg.node_addr.to_string()],
        )
        .map_err(|e| pg_error(e).text)?;
        let rows = c
            .query(
                "SELECT name, sip_addr, GREATEST(0, EXTRACT(EPOCH FROM now() - seen_at))::float8
                 FROM nodes WHERE name <> $1 AND seen_at > now() - interval '7 days'
                 ORDER BY name",
                &[&me],
            )
            .map_err(|e| pg_error(e).text)?;
        let nodes: Vec<NodeInfo> = rows
            .iter()
            .filter_map(|r| {
                let addr: String = r.try_get(1).ok()?;
                let secs: f64 = r.try_get(2).ok()?;
                let secs = if secs.is_finite() {
                    secs.clamp(0.0, 1e9)
                } else {
                    1e9
                };
                Some(NodeInfo {
                    name: r.try_get(0).ok()?,
                    addr: addr.parse().ok(),
                    silent_for: Duration::from_secs_f64(secs),
                })
            })
            .collect();
        crate::lock(&self.state).nodes = nodes.clone();
        let _ = self.events.send(Event::Nodes(nodes));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            hide_password("postgresql://sipd:secret@db:5432/sipd"),
            "postgresql://sipd@db:5432/sipd"
        );
        assert_eq!(
            hide_password("postgresql://sipd@db/sipd"),
            "postgresql://sipd@db/sipd"
        );
    }

    #[test]
    fn options_are_checked() {
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert!(PgOptions::new("postgresql://sipd@127.0.0.1:5432/sipd", "a", a).is_ok());
        assert!(PgOptions::new("postgresql://127.0.0.1/sipd", "a", a).is_err());
        assert!(PgOptions::new("postgresql://sipd@127.0.0.1/sipd", "", a).is_err());
        assert!(PgOptions::new("postgresql://sipd@127.0.0.1/sipd", "a\tb", a).is_err());
        let e = PgOptions::new("postgresql://sipd:pw@127.0.0.1:notaport/sipd", "a", a).unwrap_err();
        assert!(!e.contains("pw"), "{e}");
    }

    #[test]
    fn a_node_is_dead_after_ten_silent_seconds() {
        let n = |s| NodeInfo {
            name: "a".into(),
            addr: None,
            silent_for: Duration::from_secs(s),
        };
        assert!(n(0).alive());
        assert!(n(10).alive());
        assert!(!n(11).alive());
    }
}
