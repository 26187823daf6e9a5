//! Running SIPp (Debian package `sip-tester`) as an independent peer.
//! Without `sipp` on the PATH a test prints a notice and is skipped, except
//! under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The scenario directory (`tests/sipp/`).
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// Is SIPp usable? `false` (with a notice) means the caller should return.
pub fn available(test: &str) -> bool {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: sipp is not installed (apt-get install sip-tester) and CI=true");
        }
        eprintln!("NOTICE: {test} skipped: sipp is not installed (apt-get install sip-tester)");
    }
    ok
}

/// Counts from a SIPp run.
#[derive(Debug)]
pub struct Outcome {
    pub success: u64,
    pub failed: u64,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub errors: String,
}

/// Run sipp to completion with `args` (`-nostdin` and a hard timeout are
/// added), in `dir` (its logs land there).
pub fn run(dir: &Path, args: &[String], timeout: Duration) -> Outcome {
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .args(args)
        .arg("-nostdin")
        .arg("-trace_err");
    let out = crate::run_timeout(&mut cmd, timeout);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = |label: &str| -> u64 {
        stdout
            .lines()
            .filter(|l| l.contains(label))
            .filter_map(|l| l.split('|').nth(2).and_then(|c| c.trim().parse().ok()))
            .next_back()
            .unwrap_or(0)
    };
    let errors = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    Outcome {
        success: count("Successful call"),
        failed: count("Failed call"),
        status: out.status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        errors,
    }
}

/// A SIPp started in the background (a UAS, say); killed on drop.
pub struct Background {
    child: Child,
    pub dir: PathBuf,
}

impl Background {
    pub fn start(dir: &Path, args: &[String]) -> Background {
        let child = Command::new("sipp")
            .current_dir(dir)
            .args(args)
            .arg("-nostdin")
            .arg("-trace_err")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp");
        Background {
            child,
            dir: dir.to_path_buf(),
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `&str`s as the `String`s [`run`] and [`Background::start`] take.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The call-load setup shared by the SIPp call tests: clients `uas`
/// (secret `uas-pw`) and `caller` (secret `caller-pw`) exist in sipd at
/// `server`; writes `uasreg.csv` and `uac.csv` (the UAC calls `uas` as
/// `caller`) into `dir`, registers a SIPp UAS from the port it then answers
/// on (sipd calls the registration's source address) and starts it. Keep
/// the returned UAS alive for the test.
pub fn registered_uas(dir: &Path, server: &str) -> Background {
    std::fs::write(
        dir.join("uasreg.csv"),
        "SEQUENTIAL\nuas;[authentication username=uas password=uas-pw]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("uac.csv"),
        "SEQUENTIAL\nuas;caller;[authentication username=caller password=caller-pw]\n",
    )
    .unwrap();
    let uas_port = crate::free_port().to_string();
    let reg = run(
        dir,
        &args(&[
            server,
            "-sf",
            scenario("register.xml").to_str().unwrap(),
            "-inf",
            "uasreg.csv",
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port,
            "-timeout",
            "10",
        ]),
        Duration::from_secs(20),
    );
    assert_eq!(
        reg.success, 1,
        "UAS registration: {}\n{}",
        reg.stdout, reg.errors
    );
    let uas = Background::start(
        dir,
        &args(&[
            "-sf",
            scenario("uas.xml").to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port,
        ]),
    );
    std::thread::sleep(Duration::from_millis(300));
    uas
}
