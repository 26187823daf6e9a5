//! The file and its schema: creating it private (mode 0600), migrations,
//! the start-up load, and the SQL of each [`Write`].

use std::collections::HashSet;
use std::path::Path;

use proto::Forwarding;
use rusqlite::{params, Connection};

use super::{BindingRow, ForwardRow, Write};

/// Most CDRs one prune deletes in one transaction: a first prune of a
/// large table goes in slices between other writes, each with a small WAL.
pub const PRUNE_CHUNK: usize = 10_000;

/// Schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: u32 = 3;

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
", "
    -- Several devices per client (issue 11): bindings keyed by client and
    -- Contact, with the device's instance and outbound flow; CDRs name the
    -- device that answered.
    CREATE TABLE bindings2 (
        name       TEXT NOT NULL,
        contact    TEXT NOT NULL,
        transport  TEXT NOT NULL,
        source     TEXT NOT NULL,
        local      TEXT NOT NULL DEFAULT '',
        expires_at INTEGER NOT NULL,
        user_agent TEXT NOT NULL,
        call_id    TEXT NOT NULL,
        cseq       INTEGER NOT NULL,
        instance   TEXT NOT NULL DEFAULT '',
        reg_id     INTEGER,
        outbound   INTEGER NOT NULL DEFAULT 0,
        seq        INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (name, contact)
    );
    INSERT INTO bindings2 (name, contact, transport, source, expires_at, user_agent, call_id, cseq)
        SELECT name, contact, transport, source, expires_at, user_agent, call_id, cseq FROM bindings;
    DROP TABLE bindings;
    ALTER TABLE bindings2 RENAME TO bindings;
    ALTER TABLE cdr ADD COLUMN device TEXT NOT NULL DEFAULT '';
", "
    -- Media relay (issue 14): packets relayed from each end of the call.
    ALTER TABLE cdr ADD COLUMN packets_caller INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE cdr ADD COLUMN packets_callee INTEGER NOT NULL DEFAULT 0;
"];

const SQL_PUT_BINDING: &str = "INSERT OR REPLACE INTO bindings
    (name, contact, transport, source, local, expires_at, user_agent, call_id, cseq,
     instance, reg_id, outbound, seq)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
const SQL_DELETE_BINDING: &str = "DELETE FROM bindings WHERE name = ?1";
const SQL_PUT_FORWARD: &str = "INSERT OR REPLACE INTO forwards
    (name, kind, number, source, set_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const SQL_DELETE_FORWARD: &str = "DELETE FROM forwards WHERE name = ?1";
const SQL_ADD_CDR: &str = "INSERT INTO cdr
    (call_id, caller, callerid, accountcode, dialed, target, disposition, code,
     start_ms, answer_ms, end_ms, duration, billsec, device, packets_caller, packets_callee)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
pub(super) const SQL_RECENT_CDRS: &str = "SELECT call_id, caller, callerid, accountcode,
    dialed, target, disposition, code, start_ms, answer_ms, end_ms, duration, billsec, device,
    packets_caller, packets_callee
    FROM cdr ORDER BY end_ms DESC, id DESC LIMIT ?1";

/// One slice of a prune, oldest first (walks the `cdr_end` index).
const SQL_PRUNE_CDRS: &str = "DELETE FROM cdr WHERE id IN
    (SELECT id FROM cdr WHERE end_ms < ?1 ORDER BY end_ms LIMIT ?2)";

/// The stored `kind` of a forwarding override: `"always"` (`*72F`, `=F`),
/// `"unavail"` (`*71F`, `~F`) or `"off"` for [`Forwarding::None`] (no
/// forwarding, overriding sip.conf's `=F`/`~F`: `*73` removes a forwarding
/// "including one from sip.conf", spec §5, and that has to survive a
/// restart; its stored number is empty).
pub(super) fn forward_kind(f: &Forwarding) -> &'static str {
    match f {
        Forwarding::Always { .. } => "always",
        Forwarding::Unavailable { .. } => "unavail",
        Forwarding::None => "off",
    }
}

/// The forwarding stored as `kind` and `number`; `None` for an unknown
/// kind. The number of an `"off"` row is ignored.
pub(super) fn forwarding_of(kind: &str, number: String) -> Option<Forwarding> {
    match kind {
        "always" => Some(Forwarding::Always { number }),
        "unavail" => Some(Forwarding::Unavailable { number }),
        "off" => Some(Forwarding::None),
        _ => None,
    }
}

/// `PRAGMA quick_check`; anything but a single `ok` is an error listing
/// (the first few of) the problems.
pub(super) fn quick_check(conn: &Connection) -> Result<(), String> {
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
pub(super) fn migrate(conn: &Connection) -> Result<(), String> {
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

pub(super) fn load_bindings(conn: &Connection, now_unix: u64) -> rusqlite::Result<Vec<BindingRow>> {
    let mut stmt = conn.prepare(
        "SELECT name, contact, transport, source, expires_at, user_agent, call_id, cseq,
                local, instance, reg_id, outbound
         FROM bindings WHERE expires_at > ?1 ORDER BY name, seq",
    )?;
    let mut rows = stmt.query(params![now_unix])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let row = (|| -> Result<BindingRow, String> {
            let source: String = r.get(3).map_err(|e| e.to_string())?;
            let local: String = r.get(8).map_err(|e| e.to_string())?;
            Ok(BindingRow {
                local: local.parse().ok(),
                instance: r.get(9).map_err(|e| e.to_string())?,
                reg_id: r.get(10).map_err(|e| e.to_string())?,
                outbound: r.get(11).map_err(|e| e.to_string())?,
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
                node: String::new(),
                node_addr: None,
            })
        })();
        match row {
            Ok(row) => out.push(row),
            Err(e) => tracing::warn!(client = %name, "store: skipping stored binding: {e}"),
        }
    }
    Ok(out)
}

pub(super) fn load_forwards(conn: &Connection) -> rusqlite::Result<Vec<ForwardRow>> {
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

/// Carries out one write on `conn` (inside the writer's transaction).
/// Returns the rows a prune deleted (0 for other writes).
pub(super) fn apply(conn: &Connection, w: &Write) -> rusqlite::Result<usize> {
    match w {
        Write::PutBindings(name, rows) => {
            conn.prepare_cached(SQL_DELETE_BINDING)?
                .execute(params![name])?;
            let mut put = conn.prepare_cached(SQL_PUT_BINDING)?;
            for (seq, b) in rows.iter().enumerate() {
                put.execute(params![
                    b.name,
                    b.contact,
                    b.transport,
                    b.source.to_string(),
                    b.local.map(|l| l.to_string()).unwrap_or_default(),
                    b.expires_at,
                    b.user_agent,
                    b.call_id,
                    b.cseq,
                    b.instance,
                    b.reg_id,
                    b.outbound,
                    seq as i64,
                ])?;
            }
        }
        Write::ForgetBindings { name, contacts } => {
            let mut del =
                conn.prepare_cached("DELETE FROM bindings WHERE name = ?1 AND contact = ?2")?;
            for c in contacts {
                del.execute(params![name, c])?;
            }
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
                c.device,
                c.packets[0],
                c.packets[1],
            ])?;
        }
        Write::PruneCdrs { ended_before_ms } => {
            let limit = i64::try_from(PRUNE_CHUNK).unwrap_or(i64::MAX);
            return conn
                .prepare_cached(SQL_PRUNE_CDRS)?
                .execute(params![ended_before_ms, limit]);
        }
    }
    Ok(0)
}

/// Creates the store file with mode 0600 if it is absent (SQLite would
/// create it 0644 under the usual umask; its `-wal` and `-shm` files take
/// the mode of the database file), and narrows an existing file, `-wal`
/// or `-shm` that others may read (written by an older sipd) to 0600:
/// bindings and CDRs name who called whom.
pub(super) fn make_private(path: &Path) -> Result<(), String> {
    use std::fs::{self, OpenOptions, Permissions};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.to_string()),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let Ok(meta) = fs::symlink_metadata(file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            fs::set_permissions(file, Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot narrow {} to mode 0600: {e}", file.display()))?;
            tracing::warn!(
                "store: {} was mode {mode:o}, readable by others; now 0600",
                file.display()
            );
        }
    }
    Ok(())
}
