//! The CDR spool of the PostgreSQL store: a small SQLite file on the
//! node's own disk (`DIR/sipd-cdr-spool.db`, mode 0600, `synchronous=FULL`)
//! that takes the CDRs a long database outage pushes out of the bounded
//! queue, and those still queued at shutdown. The writer moves them into
//! PostgreSQL once it works again (oldest first, each CDR's `uid` makes a
//! repeat harmless), also after a restart. So a CDR is kept until written.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::CdrRow;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY, uid INTEGER NOT NULL, call_id TEXT NOT NULL, caller TEXT NOT NULL,
    callerid TEXT NOT NULL, accountcode TEXT NOT NULL, dialed TEXT NOT NULL,
    target TEXT NOT NULL, disposition TEXT NOT NULL, code INTEGER NOT NULL,
    start_ms INTEGER NOT NULL, answer_ms INTEGER, end_ms INTEGER NOT NULL,
    duration INTEGER NOT NULL, billsec INTEGER NOT NULL, device TEXT NOT NULL,
    packets_caller INTEGER NOT NULL, packets_callee INTEGER NOT NULL)";

pub(crate) struct Spool {
    conn: Connection,
    path: PathBuf,
}

impl Spool {
    pub fn open(path: &Path) -> Result<Spool, String> {
        let err = |e: rusqlite::Error| format!("CDR spool {}: {e}", path.display());
        super::schema::make_private(path)
            .map_err(|e| format!("CDR spool {}: {e}", path.display()))?;
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(super::BUSY_TIMEOUT).map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Spool {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps `c` on disk.
    pub fn put(&self, c: &CdrRow) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO spool (uid, call_id, caller, callerid, accountcode, dialed, target,
                 disposition, code, start_ms, answer_ms, end_ms, duration, billsec, device,
                 packets_caller, packets_callee)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?
            .execute(params![
                c.uid as i64,
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
        Ok(())
    }

    /// CDRs kept here.
    pub fn len(&self) -> usize {
        self.conn
            .query_row("SELECT count(*) FROM spool", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as usize)
            .unwrap_or(0)
    }

    /// The `n` oldest, with their ids.
    pub fn front(&self, n: usize) -> rusqlite::Result<Vec<(i64, CdrRow)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, uid, call_id, caller, callerid, accountcode, dialed, target, disposition,
             code, start_ms, answer_ms, end_ms, duration, billsec, device, packets_caller,
             packets_callee FROM spool ORDER BY id LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![n as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                CdrRow {
                    uid: r.get::<_, i64>(1)? as u64,
                    call_id: r.get(2)?,
                    caller: r.get(3)?,
                    callerid: r.get(4)?,
                    accountcode: r.get(5)?,
                    dialed: r.get(6)?,
                    target: r.get(7)?,
                    disposition: r.get(8)?,
                    code: r.get(9)?,
                    start: r.get(10)?,
                    answer: r.get(11)?,
                    end: r.get(12)?,
                    duration: r.get(13)?,
                    billsec: r.get(14)?,
                    device: r.get(15)?,
                    packets: [r.get(16)?, r.get(17)?],
                    relay: None,
                    node: String::new(),
                },
            ))
        })?;
        rows.collect()
    }

    /// Forgets the CDRs up to id `last` (they are in the database now).
    pub fn remove_upto(&self, last: i64) -> rusqlite::Result<()> {
        self.conn
            .execute("DELETE FROM spool WHERE id <= ?1", params![last])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdrs_are_kept_in_order_until_removed() {
        let dir = std::env::temp_dir().join(format!(
            "sipd-spool-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spool.db");
        let s = Spool::open(&path).unwrap();
        for i in 0..3u64 {
            let c = CdrRow {
                call_id: format!("c{i}"),
                caller: "a".into(),
                callerid: "1".into(),
                accountcode: String::new(),
                dialed: "2".into(),
                target: "b".into(),
                disposition: "ANSWERED".into(),
                code: 200,
                start: i,
                answer: Some(i),
                end: i + 1,
                duration: 1,
                billsec: 1,
                device: String::new(),
                packets: [i, 0],
                relay: None,
                node: String::new(),
                uid: 100 + i,
            };
            s.put(&c).unwrap();
        }
        assert_eq!(s.len(), 3);
        let f = s.front(2).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].1.call_id, "c0");
        assert_eq!(f[1].1.uid, 101);
        s.remove_upto(f[1].0).unwrap();
        assert_eq!(s.len(), 1);
        drop(s);
        // Survives a restart.
        let s = Spool::open(&path).unwrap();
        assert_eq!(s.front(10).unwrap()[0].1.call_id, "c2");
        let mode = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o077, 0);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
