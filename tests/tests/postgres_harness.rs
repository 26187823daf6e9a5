//! The PostgreSQL test server itself (tests/src/postgres.rs): it starts,
//! answers SQL over TCP on its loopback port, keeps committed rows across a
//! stop and a start on the same port, and is gone after drop. Skipped with a
//! notice when PostgreSQL is not installed (a failure under CI=true).

use std::net::TcpStream;
use std::time::Duration;

use sipd_tests::postgres::Postgres;

#[test]
fn postgres_harness_keeps_rows_across_restart() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let port = pg.port();
    assert!(
        (10_000..20_000).contains(&port),
        "port {port} outside the harness's range"
    );
    assert_eq!(
        pg.url(),
        format!("postgresql://sipd@127.0.0.1:{port}/postgres")
    );
    assert_eq!(pg.query("SELECT current_user"), "sipd");
    assert_eq!(pg.query("SHOW listen_addresses"), "127.0.0.1");

    pg.query("CREATE TABLE harness (id integer PRIMARY KEY, name text NOT NULL)");
    pg.query("INSERT INTO harness VALUES (1, 'alice'), (2, 'bob')");
    assert_eq!(
        pg.query("SELECT id, name FROM harness ORDER BY id"),
        "1|alice\n2|bob"
    );

    pg.stop();
    assert!(!pg.is_running());
    assert!(
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err(),
        "still accepting connections after stop"
    );

    pg.start_again();
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.query("SELECT id, name FROM harness ORDER BY id"),
        "1|alice\n2|bob"
    );
    assert_eq!(pg.query("SELECT count(*) FROM harness"), "2");

    let dir = pg.path().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err(),
        "server still running after drop"
    );
}

#[test]
fn postgres_query_failure_reports_stderr() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pg.query("SELECT * FROM no_such_table")
    }))
    .expect_err("a query on a missing table must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("no_such_table"),
        "panic message without psql's error: {msg}"
    );
}
