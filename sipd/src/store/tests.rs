//! Tests of the store through its handle, on real files.

use super::schema::{forward_kind, forwarding_of, SQL_RECENT_CDRS};
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
        local: None,
        instance: String::new(),
        reg_id: None,
        outbound: false,
        node: String::new(),
        node_addr: None,
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
        device: String::new(),
        packets: [0, 0],
        relay: None,
        node: String::new(),
        uid: 0,
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
        "INSERT INTO bindings (name, contact, transport, source, expires_at, user_agent, call_id, cseq) VALUES ('x', 'sip:x@h', 'udp', 'not an address', ?1, '', 'c', 1)",
        [NOW + 100],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO bindings (name, contact, transport, source, expires_at, user_agent, call_id, cseq) VALUES ('y', 'sip:y@h', 'udp', '192.0.2.1:5060', ?1, '', 'c', -1)",
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
        local: None,
        instance: String::new(),
        reg_id: None,
        outbound: false,
        node: String::new(),
        node_addr: None,
        ..binding("alice", NOW + 60)
    };
    assert_eq!(loaded.bindings, vec![alice, binding("carol", NOW + 60)]);
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

// ------------------------------------------------ a store that fails

/// Polls `f` for up to `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

#[test]
fn a_failing_store_keeps_bindings_and_cdrs_until_they_are_written() {
    let dir = TempDir::new("degraded");
    let (store, _) = open(&dir.db());
    assert_eq!(store.health().degraded_for, None);
    store.fail_writes(true);
    store.put_binding(binding("alice", NOW + 3600));
    store.add_cdr(cdr("call-1", NOW * 1000, None));
    store.add_cdr(cdr("call-2", NOW * 1000 + 1, None));
    store.flush();
    let h = store.health();
    assert!(h.degraded_for.is_some(), "{h:?}");
    assert_eq!(h.queued, 3);
    assert_eq!(store.pending(), 3);
    assert!(
        h.last_error.as_deref().unwrap().contains("disk is full"),
        "{h:?}"
    );
    assert_eq!(h.dropped, 0);
    assert_eq!(count(&raw(&dir.db()), "cdr"), 0);

    // A waited-for write is answered at once, with the error: not saved.
    let err = store
        .set_forward(forward("alice", Forwarding::always("1002")))
        .blocking_recv()
        .unwrap()
        .unwrap_err();
    assert!(err.contains("disk is full"), "{err}");
    assert_eq!(store.pending(), 3, "the forwarding is not kept for later");

    // More refreshes of alice while it fails: still one queued write.
    for cseq in 2..=500 {
        store.put_binding(BindingRow {
            cseq,
            ..binding("alice", NOW + 3600)
        });
    }
    store.flush();
    assert_eq!(store.pending(), 3);

    store.fail_writes(false);
    store.flush();
    assert_eq!(store.pending(), 0);
    let h = store.health();
    assert_eq!(h.degraded_for, None, "{h:?}");
    assert!(h.last_error.is_some(), "the last error stays visible");
    assert_eq!(store.cdr_count().unwrap(), 2);
    assert!(store.failures() >= 2);
    store.close();
    let (_store, loaded) = open(&dir.db());
    assert_eq!(
        loaded.bindings,
        vec![BindingRow {
            cseq: 500,
            local: None,
            instance: String::new(),
            reg_id: None,
            outbound: false,
            node: String::new(),
            node_addr: None,
            ..binding("alice", NOW + 3600)
        }]
    );
    assert!(
        loaded.forwards.is_empty(),
        "the failed forwarding stays unsaved"
    );
}

#[test]
fn a_failing_store_is_retried_by_itself() {
    let dir = TempDir::new("retry");
    let (store, _) = open(&dir.db());
    store.fail_writes(true);
    store.add_cdr(cdr("call-1", NOW * 1000, None));
    store.flush();
    assert_eq!(store.pending(), 1);
    let started = Instant::now();
    store.fail_writes(false);
    // No flush, no new write: the backoff timer writes it.
    assert!(eventually(5, || store.pending() == 0));
    eprintln!("written by the retry after {:?}", started.elapsed());
    assert!(started.elapsed() <= RETRY_FIRST + Duration::from_secs(1));
    assert_eq!(store.cdr_count().unwrap(), 1);
    assert_eq!(store.health().degraded_for, None);
}

#[test]
fn the_order_of_writes_holds_across_a_failure() {
    let dir = TempDir::new("order");
    let (store, _) = open(&dir.db());
    for name in ["alice", "bob", "carol"] {
        store.put_binding(binding(name, NOW + 60));
    }
    store.flush();
    store.fail_writes(true);
    store.put_binding(binding("dave", NOW + 60));
    store.delete_bindings_except(vec!["bob".into()]);
    store.put_binding(binding("alice", NOW + 60)); // after the delete: stays
    store.delete_binding("bob");
    store.flush();
    store.fail_writes(false);
    store.close();
    let (_store, loaded) = open(&dir.db());
    let names: Vec<&str> = loaded.bindings.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["alice"]);
}

#[test]
fn a_full_queue_drops_the_oldest_and_counts_it() {
    let dir = TempDir::new("bound");
    let limits = backlog::Limits { cdrs: 5, state: 2 };
    let (store, _) = Store::open_with(&dir.db(), NOW, limits).unwrap();
    store.fail_writes(true);
    for i in 0..8 {
        store.add_cdr(cdr(&format!("call-{i}"), NOW * 1000 + i, None));
    }
    for name in ["a", "b", "c"] {
        store.put_binding(binding(name, NOW + 60));
    }
    store.flush();
    let h = store.health();
    assert_eq!(h.queued, 5 + 2);
    assert_eq!(h.dropped, 3 + 1);
    store.fail_writes(false);
    store.flush();
    let ids: Vec<String> = store
        .recent_cdrs(10)
        .unwrap()
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    assert_eq!(ids, ["call-7", "call-6", "call-5", "call-4", "call-3"]);
    store.close();
    let (_store, loaded) = open(&dir.db());
    let names: Vec<&str> = loaded.bindings.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
}

#[test]
fn what_a_failing_store_holds_at_shutdown_is_counted_as_lost() {
    let dir = TempDir::new("finish");
    let (store, _) = open(&dir.db());
    store.fail_writes(true);
    store.add_cdr(cdr("call-1", NOW * 1000, None));
    store.put_binding(binding("alice", NOW + 60));
    store.finish();
    assert_eq!(store.pending(), 0);
    assert_eq!(store.dropped(), 2);
    // Closing with nothing left does not block or count twice.
    store.fail_writes(false);
    store.close();
    let (store, loaded) = open(&dir.db());
    assert!(loaded.bindings.is_empty());
    assert_eq!(store.cdr_count().unwrap(), 0);
}

#[test]
fn a_store_that_works_finishes_with_everything_written() {
    let dir = TempDir::new("finish-ok");
    let (store, _) = open(&dir.db());
    store.add_cdr(cdr("call-1", NOW * 1000, None));
    store.finish();
    assert_eq!((store.pending(), store.dropped()), (0, 0));
    assert_eq!(store.cdr_count().unwrap(), 1);
}

// ------------------------------------------------ CDR retention

#[test]
fn prune_deletes_cdrs_that_ended_before_the_cutoff() {
    let dir = TempDir::new("prune");
    let (store, _) = open(&dir.db());
    let day = 86_400_000;
    let now = NOW * 1000;
    for (id, end) in [
        ("old", now - 91 * day),
        ("edge", now - 90 * day),
        ("young", now - 90 * day + 1),
        ("new", now),
    ] {
        store.add_cdr(cdr(id, end, None));
    }
    store.prune_cdrs(now - 90 * day);
    store.flush();
    let mut ids: Vec<String> = store
        .recent_cdrs(10)
        .unwrap()
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    ids.sort();
    // Ended strictly before the cutoff: gone; at or after it: kept.
    assert_eq!(ids, ["edge", "new", "young"]);
}

#[test]
fn a_large_prune_goes_in_slices_between_other_writes() {
    let dir = TempDir::new("prune-big");
    let (store, _) = open(&dir.db());
    let old = PRUNE_CHUNK * 2 + 10;
    for i in 0..old {
        store.add_cdr(cdr(&format!("old-{i}"), 1_000_000 + i as u64, None));
    }
    store.add_cdr(cdr("new", NOW * 1000, None));
    store.flush();
    let commits = store.commits();
    store.prune_cdrs(NOW * 1000 - 1);
    store.add_cdr(cdr("meanwhile", NOW * 1000 + 1, None));
    // The slices run one after another: wait for the last one, not only
    // for the queue to be empty between two of them.
    assert!(eventually(30, || store.pending() == 0
        && store.cdr_count().unwrap() == 2));
    assert_eq!(store.cdr_count().unwrap(), 2);
    assert!(
        store.commits() - commits >= 3,
        "{} transactions",
        store.commits() - commits
    );
}

#[test]
fn the_plan_of_a_prune_slice_walks_the_index() {
    let dir = TempDir::new("prune-plan");
    drop(open(&dir.db()));
    let conn = raw(&dir.db());
    let plan: Vec<String> = conn
        .prepare("EXPLAIN QUERY PLAN SELECT id FROM cdr WHERE end_ms < ?1 ORDER BY end_ms LIMIT ?2")
        .unwrap()
        .query_map([1, 10], |r| r.get(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let plan = plan.join(" | ");
    assert!(plan.contains("cdr_end"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
}

// ------------------------------------------------ file modes

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[test]
fn store_files_are_created_private() {
    let dir = TempDir::new("mode");
    let (store, _) = open(&dir.db());
    store.put_binding(binding("alice", NOW + 60));
    store.flush();
    for suffix in ["", "-wal", "-shm"] {
        let p = with_suffix(&dir.db(), suffix);
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[test]
fn store_files_readable_by_others_are_narrowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode-old");
    drop(open(&dir.db()));
    // As an older sipd left them (SQLite's 0644).
    let (store, _) = open(&dir.db());
    store.put_binding(binding("alice", NOW + 60));
    store.flush();
    for suffix in ["", "-wal", "-shm"] {
        let p = with_suffix(&dir.db(), suffix);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    drop(store);
    let (store, loaded) = open(&dir.db());
    assert_eq!(loaded.bindings.len(), 1);
    store.put_binding(binding("bob", NOW + 60));
    store.flush();
    for suffix in ["", "-wal", "-shm"] {
        let p = with_suffix(&dir.db(), suffix);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

#[test]
fn a_failed_waited_for_write_alone_is_followed_by_a_probe() {
    // Nothing queued after the failure: the store still finds out that it
    // works again (status must not say degraded for ever on an idle system).
    let dir = TempDir::new("probe");
    let (store, _) = open(&dir.db());
    store.fail_writes(true);
    let r = store.set_forward(forward("alice", Forwarding::always("1002")));
    assert!(r.blocking_recv().unwrap().is_err());
    assert!(store.health().degraded_for.is_some());
    assert_eq!(store.pending(), 0);
    // Still failing at the first retry: still degraded.
    std::thread::sleep(RETRY_FIRST + Duration::from_millis(200));
    assert!(store.health().degraded_for.is_some());
    store.fail_writes(false);
    assert!(eventually(5, || store.health().degraded_for.is_none()));
    let (_s, loaded) = open(&dir.db());
    assert!(loaded.forwards.is_empty());
}

#[test]
fn with_a_spool_a_full_queue_keeps_every_cdr_until_the_store_takes_it() {
    let dir = TempDir::new("spool");
    let spool = dir.0.join("spool.db");
    let limits = backlog::Limits { cdrs: 5, state: 2 };
    let store = Store::open_spooled(&dir.db(), &spool, limits).unwrap();
    store.fail_writes(true);
    for i in 0..8 {
        store.add_cdr(cdr(&format!("call-{i}"), NOW * 1000 + i, None));
    }
    store.flush();
    let h = store.health();
    assert_eq!(h.queued, 5, "the queue stays bounded");
    assert_eq!(h.dropped, 0, "nothing is lost");
    assert_eq!(store.spooled(), 3);
    // Shutdown while the store still fails: the queued ones go to the
    // spool too.
    store.finish();
    assert_eq!(store.dropped(), 0);
    assert_eq!(store.spooled(), 8);
    store.close();
    // Next start, the store works: every CDR reaches it, once.
    let store = Store::open_spooled(&dir.db(), &spool, limits).unwrap();
    store.add_cdr(cdr("call-8", NOW * 1000 + 8, None));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.cdr_count().unwrap() < 9 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut ids: Vec<String> = store
        .recent_cdrs(20)
        .unwrap()
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    ids.sort();
    let want: Vec<String> = (0..9).map(|i| format!("call-{i}")).collect();
    assert_eq!(ids, want);
    assert_eq!(super::spool::Spool::open(&spool).unwrap().len(), 0);
}
