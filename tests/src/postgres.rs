//! A private PostgreSQL server for tests of the PostgreSQL store.
//!
//! [`Postgres::start`] runs `initdb` into a fresh temporary directory and
//! `pg_ctl start` on it: `--auth=trust`, superuser `sipd`, TCP on 127.0.0.1
//! only, on a port from [`crate::free_port_on`], the unix socket inside the
//! directory, `fsync=off` and small buffers. Without PostgreSQL's server
//! binaries (Debian package `postgresql`) it prints a notice and returns
//! `None`, so the test returns early, except under `CI=true`, where that is
//! a failure.
//!
//! initdb and the server refuse to run as root, and the tests run as root in
//! CI: then the directory is given to `nobody` and every server command runs
//! as that user through `setpriv` (util-linux; no PAM, no extra process). As
//! any other user they run directly.
//!
//! Every wait is bounded (start and stop: 30 s, a query: 30 s). Dropping a
//! [`Postgres`] stops the server (`pg_ctl stop -m immediate`, and SIGKILL
//! to the postmaster if that fails) and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{run_timeout, text};

/// The superuser initdb creates (`-U`), the user in [`Postgres::url`].
pub const USER: &str = "sipd";

/// The bound on starting and stopping the server, and on one query.
const WAIT: Duration = Duration::from_secs(30);

/// A running private PostgreSQL server; stopped and removed on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    psql: PathBuf,
    port: u16,
    /// `Some((uid, gid))` when the server runs as that user (we are root).
    run_as: Option<(u32, u32)>,
    running: AtomicBool,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the newest
/// `/usr/lib/postgresql/VERSION/bin` (Debian), else the directory of an
/// `initdb` on the PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).exists())
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| has_all(d))
}

/// uid and gid of `nobody`.
fn nobody() -> (u32, u32) {
    // SAFETY: getpwnam with a NUL-terminated name; the record is read at
    // once, before any other getpw* call in this thread.
    unsafe {
        let pw = libc::getpwnam(c"nobody".as_ptr());
        assert!(
            !pw.is_null(),
            "PostgreSQL: running as root and there is no user `nobody` to run it as"
        );
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

impl Postgres {
    /// Start a fresh server and wait until it accepts connections. `None`
    /// (with a notice) when PostgreSQL is not installed and CI is not set.
    pub fn start() -> Option<Postgres> {
        let test = std::thread::current()
            .name()
            .unwrap_or("this test")
            .to_string();
        let Some(bin) = find_bin_dir() else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: PostgreSQL is not installed (apt-get install postgresql) and CI=true"
                );
            }
            eprintln!(
                "NOTICE: {test} skipped: PostgreSQL is not installed (apt-get install postgresql)"
            );
            return None;
        };
        let psql = if bin.join("psql").exists() {
            bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        // SAFETY: geteuid has no preconditions.
        let run_as = (unsafe { libc::geteuid() } == 0).then(nobody);
        let dir = tempfile::Builder::new()
            .prefix("sipd-pg-")
            .tempdir()
            .expect("temp dir");
        if let Some(who) = run_as {
            chown(dir.path(), who);
        }
        let pg = Postgres {
            dir,
            bin,
            psql,
            port: crate::free_port_on("127.0.0.1"),
            run_as,
            running: AtomicBool::new(false),
        };
        std::fs::create_dir(pg.socket_dir()).expect("socket dir");
        if let Some(who) = run_as {
            chown(&pg.socket_dir(), who);
        }
        let out = pg.server_cmd(
            "initdb",
            &[
                "-D",
                pg.data_dir().to_str().unwrap(),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        // Appended to postgresql.conf (the last setting wins), so that
        // start_again starts the same server. The file stays nobody's.
        let conf = format!(
            "\n# sipd-tests\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n\
             max_connections = 50\n\
             max_wal_senders = 0\n\
             wal_level = minimal\n\
             logging_collector = off\n\
             log_min_messages = warning\n",
            pg.port,
            pg.socket_dir().display()
        );
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data_dir().join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append to postgresql.conf");
        pg.start_again();
        Some(pg)
    }

    /// `postgresql://sipd@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory (`data/`, `sock/`, `server.log`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log (`pg_ctl -l`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Run one of the server programs (initdb, pg_ctl) as the server's
    /// user, in the temporary directory, bounded by `timeout`.
    fn server_cmd(&self, prog: &str, args: &[&str], timeout: Duration) -> Output {
        let exe = self.bin.join(prog);
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        run_timeout(&mut cmd, timeout)
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data_dir();
        let mut all = vec!["-D", data.to_str().unwrap()];
        all.extend_from_slice(args);
        // pg_ctl's own wait (-t) is the bound; ours is a little longer.
        self.server_cmd("pg_ctl", &all, WAIT + Duration::from_secs(10))
    }

    /// Stop the server (`pg_ctl stop -m fast`) and wait until it is gone.
    pub fn stop(&self) {
        let out = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "30"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed ({}): {}{}\n--- server log ---\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            self.log()
        );
        self.running.store(false, Ordering::SeqCst);
    }

    /// Start the server (again, after [`Postgres::stop`]) on the same port
    /// and wait until it accepts connections.
    pub fn start_again(&self) {
        let log = self.log_path();
        // -l: the postmaster writes there, not to our pipes (run_timeout
        // reads them to the end).
        let out = self.pg_ctl(&["start", "-w", "-t", "30", "-l", log.to_str().unwrap()]);
        if !out.status.success() {
            // A half-started server must not outlive the test.
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "10"]);
            panic!(
                "pg_ctl start failed ({}): {}{}\n--- server log ---\n{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr),
                self.log()
            );
        }
        self.running.store(true, Ordering::SeqCst);
        // pg_ctl -w checked the socket; a query proves TCP and the user.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let out = self.psql(&["-c", "SELECT 1"]);
            if out.status.success() && text(&out.stdout).trim() == "1" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL does not answer on 127.0.0.1:{}: {}\n--- server log ---\n{}",
                self.port,
                text(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn psql(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut cmd = Command::new(&self.psql);
        cmd.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(&port)
        .args(["-U", USER, "-d", "postgres"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS");
        run_timeout(&mut cmd, WAIT)
    }

    /// Run SQL with `psql -At` (unaligned, tuples only: one row a line,
    /// columns separated by `|`); the trimmed stdout. Panics with psql's
    /// stderr when it fails.
    pub fn query(&self, sql: &str) -> String {
        let out = self.psql(&["-c", sql]);
        assert!(
            out.status.success(),
            "psql failed ({}) on {sql:?}: {}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    }

    /// Kill the postmaster (SIGKILL; its children exit when it is gone).
    fn kill_postmaster(&self) {
        let Ok(pidfile) = std::fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return;
        };
        if let Some(pid) = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        {
            if pid > 0 {
                // SAFETY: kill(2) on the pid from the server's own pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- PostgreSQL server log ---\n{}", self.log());
        }
        if self.data_dir().join("postmaster.pid").exists() {
            let out = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "10"]);
            if !out.status.success() {
                self.kill_postmaster();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // The TempDir removes the directory (root may remove nobody's files).
    }
}
