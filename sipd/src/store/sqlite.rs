//! The SQLite store (the default, one box): `DIR/sipd.db` in WAL mode with
//! `synchronous=NORMAL`, created mode 0600; the writer's connection and a
//! read-only one for listings. Schema and statements are in `schema.rs`.

use std::path::Path;

use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};

use super::{schema, CdrRow, Db, DbError, Loaded, StoreError, Write, BUSY_TIMEOUT};

/// The writer's side of the SQLite store.
pub(super) struct Sqlite {
    conn: Connection,
}

/// Opens (creating, checking, migrating) `path`; deletes bindings expired
/// at `now_unix` and loads the rest.
pub(super) fn open(path: &Path, now_unix: u64) -> Result<(Sqlite, Connection, Loaded), StoreError> {
    let err = |e: rusqlite::Error| StoreError::new(path, e);

    schema::make_private(path).map_err(|cause| StoreError::new(path, cause))?;
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
    schema::quick_check(&writer_conn).map_err(|cause| StoreError::new(path, cause))?;
    schema::migrate(&writer_conn).map_err(|cause| StoreError::new(path, cause))?;
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
        bindings: schema::load_bindings(&reader, now_unix).map_err(err)?,
        forwards: schema::load_forwards(&reader).map_err(err)?,
        purged,
    };
    Ok((Sqlite { conn: writer_conn }, reader, loaded))
}

impl Db for Sqlite {
    fn write_tx(&mut self, writes: &[&Write]) -> Result<Vec<usize>, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        let mut counts = Vec::with_capacity(writes.len());
        for w in writes {
            counts.push(schema::apply(&tx, w).map_err(db_error)?);
        }
        tx.commit().map_err(db_error)?;
        Ok(counts)
    }

    /// The schema version, rewritten: a transaction that writes a page.
    fn probe(&mut self) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        tx.pragma_update(None, "user_version", schema::SCHEMA_VERSION)
            .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }
}

/// The `n` most recent CDRs, newest first.
pub(super) fn recent_cdrs(conn: &Connection, n: usize) -> rusqlite::Result<Vec<CdrRow>> {
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(schema::SQL_RECENT_CDRS)?;
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
            device: r.get(13)?,
            packets: [r.get(14)?, r.get(15)?],
            relay: None,
            node: String::new(),
            uid: 0,
        })
    })?;
    rows.collect()
}

fn db_error(e: rusqlite::Error) -> DbError {
    DbError {
        store: is_store_failure(&e),
        text: e.to_string(),
    }
}

/// A failure of the store as a whole (retrying later can work), as opposed
/// to one of the row (retrying never will).
fn is_store_failure(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => !matches!(
            f.code,
            ErrorCode::ConstraintViolation
                | ErrorCode::TooBig
                | ErrorCode::TypeMismatch
                | ErrorCode::ParameterOutOfRange
                | ErrorCode::ApiMisuse
        ),
        // Conversions of values, wrong parameter counts: the row.
        _ => false,
    }
}
