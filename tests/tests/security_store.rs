//! End-to-end: what the store promises when writing fails (issue 10, point
//! 7). The store lives on a real small filesystem (a tmpfs of its own) that
//! the test fills after sipd started, so writes fail with the ENOSPC users
//! hit; then it frees the space, kills sipd with SIGKILL and starts it
//! again:
//! - a forwarding change by phone (`*72F`) or `sipctl fwd` on a full disk
//!   is answered "not saved" and is not in force, neither at once nor
//!   after the restart (the old one is);
//! - a REGISTER and a CDR of a call made on the full disk are kept queued,
//!   `sipctl status` says `degraded (N queued, …)`, and they are written
//!   once there is space again (status `ok`), so the restart has them;
//! - the store files are mode 0600;
//! - CDRs older than `cdr_keep_days` are pruned at start and after a
//!   reload that shortens it.
//!
//! Mounting needs root (CI runs as root); elsewhere the disk-full test says
//! it is skipped, unless `CI=true`, where it fails instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sipd::sip::HeaderName;
use sipd_tests::ua::unique;
use sipd_tests::{free_port, run_timeout, sipctl_bin, sipd_bin, text, wait_for, Sipd, Ua};

const S: Duration = Duration::from_secs(5);

const CONF: &str = "[general]\nnoanswer=5\n\n\
    [a]\naccountcode=o\nsecret=a\nexten=201\n\n\
    [b]\naccountcode=o\nsecret=b\nexten=202\n\n\
    [c]\naccountcode=o\nsecret=c\nexten=203\n";

// ---------------------------------------------------------------- a small disk

/// A tmpfs of `size` mounted on a fresh directory for this test alone;
/// unmounted on drop.
struct SmallDisk {
    mount: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after saying why) when mounting is not permitted here;
    /// under `CI=true` that is a failure.
    fn mount(size: &str) -> Option<SmallDisk> {
        let mount = tempfile::Builder::new()
            .prefix("sipd-smalldisk-")
            .tempdir()
            .unwrap();
        let out = run_timeout(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0700"))
                .arg("sipd-test")
                .arg(mount.path()),
            Duration::from_secs(10),
        );
        if out.status.success() {
            return Some(SmallDisk { mount });
        }
        let why = format!(
            "cannot mount a small tmpfs (needs root): {}",
            text(&out.stderr).trim()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        None
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Fills the filesystem to the last byte.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let block = vec![0u8; 64 * 1024];
        for size in [block.len(), 4096, 512, 1] {
            while f.write_all(&block[..size]).is_ok() {}
        }
        let _ = f.sync_all();
        let free = statvfs_free(self.path());
        assert_eq!(free, 0, "the small disk still has {free} bytes free");
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = run_timeout(
            Command::new("umount").arg("-l").arg(self.path()),
            Duration::from_secs(10),
        );
    }
}

fn statvfs_free(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the struct we own; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

// ---------------------------------------------------------------- sipd on it

/// sipd with its working directory (sip.conf, sipd.db, sipd.sock) on the
/// small disk and its logs elsewhere (a full disk must not eat them).
struct Daemon {
    child: Option<Child>,
    work: PathBuf,
    logs: tempfile::TempDir,
    addr: SocketAddr,
}

impl Daemon {
    fn start(work: &Path, conf: &str) -> Daemon {
        std::fs::write(work.join("sip.conf"), conf).unwrap();
        let mut d = Daemon {
            child: None,
            work: work.to_path_buf(),
            logs: tempfile::Builder::new()
                .prefix("sipd-logs-")
                .tempdir()
                .unwrap(),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join("stderr.log"))
            .unwrap();
        let child = Command::new(sipd_bin())
            .arg("-b")
            .arg(self.addr.to_string())
            .arg("-s")
            .arg(&self.work)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sipd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sock = self.work.join(proto::SOCKET_NAME);
            if let Ok(mut c) = proto::Client::connect(&sock) {
                if c.call(proto::Command::Status).is_ok() {
                    return;
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sipd exited during start-up ({st}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sipd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr.log")).unwrap_or_default()
    }

    fn sipctl(&self, args: &[&str]) -> Output {
        run_timeout(
            Command::new(sipctl_bin())
                .arg("-s")
                .arg(&self.work)
                .args(args),
            Duration::from_secs(30),
        )
    }

    /// `sipctl --json ARGS`, parsed.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.sipctl(&all);
        assert!(
            out.status.success(),
            "sipctl {args:?}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// (kind, number, source) of client `who`'s forwarding.
    fn fwd(&self, who: &str) -> (String, String, String) {
        let v = self.json(&["fwd", who]);
        let c = &v["clients"][0];
        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
        (s("kind"), s("number"), s("source"))
    }

    fn regs(&self) -> Vec<String> {
        let v = self.json(&["regs"]);
        let mut names: Vec<String> = v["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    fn cdr_ids(&self) -> Vec<String> {
        let v = self.json(&["cdr", "--last", "100"]);
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["call_id"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- sipd log ---\n{}", self.log());
        }
    }
}

fn phone(addr: SocketAddr, user: &str) -> Ua {
    let mut ua = Ua::udp(addr, user);
    let r = ua.register(user, 300);
    assert_eq!(r.status(), Some(200), "{}", text(r.raw()));
    ua
}

/// `ua` dials a star code; the final response's status and reason.
fn star(ua: &mut Ua, addr: SocketAddr, code: &str, secret: &str) -> (u16, String) {
    ua.invite(&format!("sip:{code}@{addr}"), secret);
    let r = ua.final_response(S).expect("no final response");
    (
        r.status().unwrap(),
        r.reason().unwrap_or_default().to_string(),
    )
}

fn fwd(kind: &str, number: &str, source: &str) -> (String, String, String) {
    (kind.into(), number.into(), source.into())
}

// ---------------------------------------------------------------- the tests

#[test]
fn a_full_disk_keeps_acknowledged_data_and_refuses_forwarding_changes() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let mut d = Daemon::start(disk.path(), CONF);
    let mut a = phone(d.addr, "a");
    let mut c = phone(d.addr, "c");
    // a forwards all calls to c (203) while the disk has room.
    assert_eq!(
        star(&mut a, d.addr, "*72203", "a"),
        (480, "Forwarding To 203".into())
    );
    assert_eq!(d.fwd("a"), fwd("always", "203", "phone"));

    disk.fill();

    // *72F on the full disk: the phone hears it was not saved, and the
    // forwarding in force is still the old one.
    let (code, reason) = star(&mut a, d.addr, "*72202", "a");
    assert_eq!(code, 500, "{reason}");
    assert_eq!(d.fwd("a"), fwd("always", "203", "phone"));
    // The same through sipctl.
    let out = d.sipctl(&["fwd", "a", "unavail", "202"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("not saved"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(d.fwd("a"), fwd("always", "203", "phone"));

    // b registers on the full disk: 200, as always (the packet path never
    // waits for the store).
    let mut b = phone(d.addr, "b");
    // A call made now follows the old forwarding (to c) and ends: its CDR
    // has to wait for room too.
    let call_id = unique("full-disk-call");
    b.invite_with(&format!("sip:201@{}", d.addr), "b", |r| {
        r.set("Call-ID", &call_id)
    });
    let got = c.expect_request("INVITE", S);
    assert!(
        got.header(&HeaderName::Diversion)
            .is_some_and(|v| v.contains("sip:a@")),
        "{}",
        text(got.raw())
    );
    c.respond(&got, 486, "Busy Here", "c-tag");
    assert_eq!(b.final_response(S).unwrap().status(), Some(486));

    // What status says meanwhile (checked below, after the data).
    let during = wait_for(S, || {
        let s = d.json(&["status"]);
        (s["store"]["queued"].as_u64() >= Some(2)).then_some(s)
    })
    .unwrap_or_else(|| d.json(&["status"]));
    let plain = text(&d.sipctl(&["status"]).stdout);

    disk.free();

    // Once there is room the queued binding and CDR are written without
    // anyone asking (the store retries by itself).
    let written = wait_for(Duration::from_secs(20), || {
        d.cdr_ids().contains(&call_id).then_some(())
    });
    assert!(
        written.is_some(),
        "the CDR of the call made on the full disk was never written: {:?}",
        d.cdr_ids()
    );
    let ok = wait_for(Duration::from_secs(20), || {
        let s = d.json(&["status"]);
        (s["store"]["state"] == "ok" && s["store"]["queued"] == 0).then_some(s)
    });
    assert!(ok.is_some(), "status: {}", d.json(&["status"])["store"]);

    // While the disk was full, status said so, with the queue depth.
    let store = &during["store"];
    assert_eq!(store["state"], "degraded", "{during}");
    assert!(store["queued"].as_u64() >= Some(2), "{store}");
    assert!(
        store["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("full")),
        "{store}"
    );
    let line = plain
        .lines()
        .find(|l| l.contains("store "))
        .unwrap_or_default()
        .to_string();
    eprintln!("sipctl status on the full disk: {}", line.trim());
    assert!(
        line.contains("degraded (") && line.contains("queued"),
        "{plain}"
    );
    // And so did the log.
    let log = d.log();
    assert!(log.contains("store degraded"), "{log}");
    assert!(log.contains("store works again"), "{log}");

    // kill -9 and restart: what was acknowledged is back, what was refused
    // is not.
    d.kill9();
    d.restart();
    assert_eq!(d.regs(), ["a", "b", "c"]);
    assert_eq!(d.fwd("a"), fwd("always", "203", "phone"));
    assert!(d.cdr_ids().contains(&call_id), "{:?}", d.cdr_ids());
    // And the store works: a change now is saved.
    let out = d.sipctl(&["fwd", "a", "unavail", "202"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(d.fwd("a"), fwd("unavail", "202", "sipctl"));
}

#[test]
fn store_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let sipd = Sipd::start(CONF);
    let _a = {
        let mut ua = Ua::udp(sipd.addr, "a");
        assert_eq!(ua.register("a", 300).status(), Some(200));
        ua
    };
    let db = sipd.path().join("sipd.db");
    let mode = |suffix: &str| {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        std::fs::metadata(&p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    // Written by the time the binding is committed.
    wait_for(S, || {
        std::fs::metadata(format!("{}-wal", db.display())).ok()
    });
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(mode(suffix), 0o600, "sipd.db{suffix} is {:o}", mode(suffix));
    }
}

fn keep_days(days: u32) -> String {
    CONF.replace("[general]\n", &format!("[general]\ncdr_keep_days={days}\n"))
}

#[test]
fn cdrs_older_than_cdr_keep_days_are_pruned_at_start_and_after_a_reload() {
    let mut sipd = Sipd::start(&keep_days(30));
    sipd.stop();
    // CDRs of calls that ended 40, 20 and 0 days ago, as a store of weeks
    // would hold them.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let day = 86_400_000;
    {
        let db = sipd.path().join("sipd.db");
        let (store, _) = sipd::store::Store::open(&db, now_ms / 1000).unwrap();
        for (id, days) in [
            ("ended-40-days-ago", 40),
            ("ended-20-days-ago", 20),
            ("today", 0),
        ] {
            let end = now_ms - days * day;
            store.add_cdr(sipd::store::CdrRow {
                call_id: id.into(),
                caller: "a".into(),
                callerid: "201".into(),
                accountcode: "o".into(),
                dialed: "202".into(),
                target: "b".into(),
                disposition: "ANSWERED".into(),
                code: 200,
                start: end - 60_000,
                answer: Some(end - 50_000),
                end,
                duration: 60,
                billsec: 50,
                device: String::new(),
                packets: [0, 0],
                relay: None,
                node: String::new(),
                uid: 0,
            });
        }
        store.close();
    }
    sipd.restart(&[]);
    let ids = |s: &Sipd| -> Vec<String> {
        let out = s.sipctl(&["--json", "cdr", "--last", "100"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut ids: Vec<String> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["call_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let pruned = wait_for(S, || (ids(&sipd).len() == 2).then_some(()));
    assert!(pruned.is_some(), "not pruned at start: {:?}", ids(&sipd));
    assert_eq!(ids(&sipd), ["ended-20-days-ago", "today"]);
    // A reload down to 10 days prunes again.
    sipd.write_conf(&keep_days(10));
    assert!(sipd.sipctl(&["reload"]).status.success());
    let pruned = wait_for(S, || (ids(&sipd).len() == 1).then_some(()));
    assert!(
        pruned.is_some(),
        "not pruned after reload: {:?}",
        ids(&sipd)
    );
    assert_eq!(ids(&sipd), ["today"]);
    assert!(sipd.stderr().contains("pruned 1 CDRs"), "{}", sipd.stderr());
}
