//! Helpers for end-to-end tests: start the real `sipd` binary in a temporary
//! directory on a free loopback port ([`Sipd`]), run `sipctl` against it, and
//! talk SIP to it with a small test user agent ([`ua::Ua`]).
//!
//! Every helper has a timeout: a test never hangs on a silent daemon.

pub mod baresip;
pub mod browser;
pub mod metrics;
pub mod postgres;
pub mod sipp;
pub mod tls;
pub mod ua;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use ua::Ua;

/// Directory holding the workspace's built binaries (target/debug or
/// target/release), found from the running test executable.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test-binary>
        let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
        for bin in ["sipd", "sipctl"] {
            assert!(
                dir.join(bin).exists(),
                "{} is missing: run the tests with `cargo test --workspace` (it builds the binaries)",
                dir.join(bin).display()
            );
        }
        dir
    })
}

pub fn sipd_bin() -> PathBuf {
    bin_dir().join("sipd")
}

pub fn sipctl_bin() -> PathBuf {
    bin_dir().join("sipctl")
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port free for UDP and TCP on `ip` right now, never one this process
/// handed out before. The ports come from 10000-19999, below the kernel's
/// ephemeral range (32768-60999 by default) and the default RTP range
/// (20000-30000): a port probed free here cannot be taken in the meantime
/// by a socket some test or sipd binds to port 0 (the probe sockets close
/// on return, and CI once lost a gateway's bind to exactly that race).
pub fn free_port_on(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    // Start where the process id says, so that two test processes running
    // at once (rare: cargo runs test binaries one after another) mostly
    // probe different ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        let addr = format!("{}:{port}", bracket(ip));
        if UdpSocket::bind(&addr).is_ok() && TcpListener::bind(&addr).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port");
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// A running sipd in its own temporary working directory. Killed on drop.
pub struct Sipd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// The SIP listen address.
    pub addr: SocketAddr,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    env: Vec<(String, String)>,
}

/// Options for starting sipd.
#[derive(Clone, Debug, Default)]
pub struct Start {
    pub conf: Option<String>,
    pub args: Vec<String>,
    /// Listen address (default: 127.0.0.1 on a free port).
    pub listen: Option<SocketAddr>,
    /// Reuse this working directory instead of a fresh one.
    pub dir: Option<PathBuf>,
    /// Files written into the working directory before sipd starts (name,
    /// contents): certificates, say.
    pub files: Vec<(String, String)>,
    /// Extra environment for sipd (NOTIFY_SOCKET, say).
    pub env: Vec<(String, String)>,
}

impl Sipd {
    /// Start sipd with this sip.conf on a free loopback port and wait until
    /// its control socket answers.
    pub fn start(conf: &str) -> Sipd {
        Sipd::start_with(Start {
            conf: Some(conf.to_string()),
            ..Start::default()
        })
    }

    pub fn start_with(opts: Start) -> Sipd {
        let dir = tempfile::Builder::new()
            .prefix("sipd-e2e-")
            .tempdir()
            .expect("temp dir");
        if let Some(conf) = &opts.conf {
            std::fs::write(dir.path().join("sip.conf"), conf).unwrap();
        }
        for (name, data) in &opts.files {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        let addr = opts
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let mut s = Sipd {
            child: None,
            dir,
            addr,
            stdout_path: PathBuf::new(),
            stderr_path: PathBuf::new(),
            env: Vec::new(),
        };
        s.stdout_path = s.dir.path().join("stdout.log");
        s.stderr_path = s.dir.path().join("stderr.log");
        s.env = opts.env.clone();
        s.spawn(&opts.args);
        s.wait_ready();
        s
    }

    fn spawn(&mut self, args: &[String]) {
        let mut cmd = Command::new(sipd_bin());
        cmd.arg("-b")
            .arg(self.addr.to_string())
            .arg("-s")
            .arg(self.dir.path());
        cmd.args(args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env(
            "RUST_LOG",
            std::env::var("SIPD_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd.stdout(std::fs::File::create(&self.stdout_path).unwrap());
        cmd.stderr(std::fs::File::create(&self.stderr_path).unwrap());
        self.child = Some(cmd.spawn().expect("spawn sipd"));
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = proto::Client::connect(&self.socket()) {
                if c.call(proto::Command::Status).is_ok() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sipd exited during start-up ({status}): {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "sipd did not start: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restart in the same directory (after `kill`/`stop`).
    pub fn restart(&mut self, args: &[String]) {
        assert!(self.child.is_none(), "restart: sipd still running");
        self.spawn(args);
        self.wait_ready();
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join(proto::SOCKET_NAME)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Replace sip.conf (does not reload).
    pub fn write_conf(&self, conf: &str) {
        std::fs::write(self.dir.path().join("sip.conf"), conf).unwrap();
    }

    /// One control request.
    /// `regs`: every binding.
    pub fn regs(&self) -> Vec<proto::Binding> {
        match self
            .ctl(proto::Command::Regs { name: None })
            .into_result()
            .unwrap()
        {
            proto::Reply::Regs(r) => r.bindings,
            other => panic!("{other:?}"),
        }
    }

    /// `status`.
    pub fn status(&self) -> proto::Status {
        match self.ctl(proto::Command::Status).into_result().unwrap() {
            proto::Reply::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }

    pub fn ctl(&self, cmd: proto::Command) -> proto::Response {
        proto::Client::connect(&self.socket())
            .expect("connect control socket")
            .call(cmd)
            .expect("control call")
    }

    /// Run sipctl with `-s DIR` and these arguments.
    /// `sipctl ARGS` (with `--json` among them) as JSON; panics with
    /// sipctl's stderr when it fails.
    pub fn sipctl_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.sipctl(args);
        assert!(
            out.status.success(),
            "sipctl {args:?}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("sipctl {args:?}: {e}: {}", text(&out.stdout)))
    }

    /// `sipctl calls --json`: the calls in progress.
    pub fn calls_json(&self) -> Vec<serde_json::Value> {
        self.sipctl_json(&["calls", "--json"])["calls"]
            .as_array()
            .expect("calls")
            .clone()
    }

    pub fn sipctl(&self, args: &[&str]) -> Output {
        run_timeout(
            Command::new(sipctl_bin())
                .arg("-s")
                .arg(self.dir.path())
                .args(args),
            Duration::from_secs(30),
        )
    }

    /// Run `sipd -s DIR` with these extra arguments (e.g. `-r`).
    pub fn sipd_cmd(&self, args: &[&str]) -> Output {
        run_timeout(
            Command::new(sipd_bin())
                .arg("-s")
                .arg(self.dir.path())
                .args(args),
            Duration::from_secs(30),
        )
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Send a signal to sipd.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(10))
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sipd did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }
}

impl Drop for Sipd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- sipd stderr ---\n{}", self.stderr());
        }
    }
}

/// Run a command to completion with a timeout (killed after it).
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// Poll `f` until it returns Some or the timeout passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Text of a command's stdout/stderr.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
