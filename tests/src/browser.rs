//! A real browser: headless Chromium (Debian package `chromium`) running a
//! page with JsSIP (npm package `jssip`, pinned in `tests/browser/`, which
//! `.ci/run` installs with `npm ci`), served by a tiny HTTP server inside the
//! test. Without either a test prints a notice and is skipped, except under
//! `CI=true`, where that is a failure.
//!
//! The page talks to the test over HTTP on loopback:
//! - `GET /` the page (`tests/browser/index.html`, with its configuration
//!   filled in), `GET /jssip.min.js` JsSIP's browser bundle;
//! - `POST /log` console lines (JsSIP's debug log, SIP messages included);
//! - `POST /step` a step name; the answer waits until the test has looked at
//!   sipd's side of that step ([`Event::Step`]), so the page goes on only
//!   then;
//! - `POST /result` the outcome, JSON.
//!
//! Chromium runs in its own process group with a fresh profile and is killed
//! with its children on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// `tests/browser/`: the page, `package.json` and npm's `node_modules`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// JsSIP's browser bundle as npm installed it.
pub fn jssip_js() -> PathBuf {
    dir().join("node_modules/jssip/dist/jssip.min.js")
}

/// Are Chromium and JsSIP there? `false` (with a notice) means the caller
/// should return.
pub fn available(test: &str) -> bool {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !jssip_js().exists() {
        missing.push(format!(
            "{} is missing (cd tests/browser && npm ci)",
            jssip_js().display()
        ));
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}, and CI=true");
    }
    eprintln!("NOTICE: {test} skipped: {why}");
    false
}

/// What the page told the test.
#[derive(Debug)]
pub enum Event {
    /// `POST /step`: the page waits for `ack` (Err: the page is told so).
    Step {
        name: String,
        ack: mpsc::Sender<Result<(), String>>,
    },
    /// `POST /result`: the body.
    Result(String),
}

/// The HTTP server the page comes from; stops on drop.
pub struct PageServer {
    pub addr: SocketAddr,
    pub events: mpsc::Receiver<Event>,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl PageServer {
    /// Serve `page` (HTML) at `/` and JsSIP at `/jssip.min.js` on a free
    /// loopback port.
    pub fn start(page: String) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind http");
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let page = Arc::new(page);
        let jssip = Arc::new(std::fs::read(jssip_js()).expect("read jssip.min.js"));
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (tx, log, page, jssip) =
                    (tx.clone(), log2.clone(), page.clone(), jssip.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve(conn, &tx, &log, &page, &jssip) {
                        log.lock().unwrap().push(format!("[http] {e}"));
                    }
                });
            }
        });
        PageServer {
            addr,
            events,
            log,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The console lines the page sent so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One request on one connection (answered with `Connection: close`).
fn serve(
    conn: TcpStream,
    tx: &mpsc::Sender<Event>,
    log: &Mutex<Vec<String>>,
    page: &str,
    jssip: &[u8],
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(16 << 20)];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let (status, ctype, data): (&str, &str, Vec<u8>) = match (method.as_str(), path.as_str()) {
        ("GET", "/") => (
            "200 OK",
            "text/html; charset=utf-8",
            page.as_bytes().to_vec(),
        ),
        ("GET", "/jssip.min.js") => ("200 OK", "text/javascript", jssip.to_vec()),
        ("POST", "/log") => {
            log.lock().unwrap().extend(body.lines().map(str::to_string));
            ("204 No Content", "text/plain", Vec::new())
        }
        ("POST", "/step") => {
            let (ack, answer) = mpsc::channel();
            let _ = tx.send(Event::Step {
                name: body.trim().to_string(),
                ack,
            });
            match answer.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(())) => ("200 OK", "text/plain", b"go on".to_vec()),
                Ok(Err(why)) => ("500 Test Failed", "text/plain", why.into_bytes()),
                Err(_) => (
                    "500 Test Gone",
                    "text/plain",
                    b"the test did not answer".to_vec(),
                ),
            }
        }
        ("POST", "/result") => {
            let _ = tx.send(Event::Result(body));
            ("204 No Content", "text/plain", Vec::new())
        }
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        data.len()
    )?;
    conn.write_all(&data)?;
    conn.flush()
}

/// Headless Chromium showing one page; killed with its children on drop.
pub struct Chromium {
    child: Mutex<Option<Child>>,
    _profile: tempfile::TempDir,
    output: PathBuf,
}

impl Chromium {
    /// Start Chromium on `url` with a fresh profile (and `HOME`), a fake
    /// microphone granted without asking, no certificate checks (sipd's is
    /// self-signed) and no WebRTC candidates. Nothing in the background: on
    /// a machine without a network those connections would only be refused.
    pub fn start(url: &str) -> Chromium {
        let profile = tempfile::Builder::new()
            .prefix("sipd-chromium-")
            .tempdir()
            .expect("temp dir");
        let output = profile.path().join("chromium.log");
        let out = std::fs::File::create(&output).expect("chromium log");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-domain-reliability",
                "--disable-breakpad",
                "--disable-dev-shm-usage",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--ignore-certificate-errors",
                // No ICE candidates at all (none is proxied): gathering ends
                // at once, the SDP is still valid, and no media packet goes
                // to any address, loopback or not.
                "--webrtc-ip-handling-policy=disable_non_proxied_udp",
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .arg(url)
            .env("HOME", profile.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("spawn chromium");
        Chromium {
            child: Mutex::new(Some(child)),
            _profile: profile,
            output,
        }
    }

    /// What Chromium printed, less its complaints about D-Bus (there is
    /// none here).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains(":ERROR:dbus/"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kill Chromium and every process of its group (again: a no-op).
    pub fn kill(&self) {
        let taken = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = taken {
            // SAFETY: kill(2) on the process group our child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.kill();
    }
}
