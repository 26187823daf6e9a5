//! Running baresip (Debian package `baresip-core`) as a real phone, driven
//! over its `ctrl_tcp` module. Without `baresip` on the PATH a test prints a
//! notice and is skipped, except under `CI=true`, where that is a failure.
//!
//! What baresip 1.0 (Debian 12) needs here, measured:
//! - `-f DIR` with `config` and `accounts`; the `accounts` file is read only
//!   by the `account` module, and the commands (`dial`, `accept`, `hangup`)
//!   are the `menu` module's, so both are loaded next to `ctrl_tcp`;
//! - `net_interface 127.0.0.1` (the name `lo` is refused: "could not get
//!   network address") and `sip_listen 127.0.0.1:0`: UDP, TCP and TLS each
//!   get a free port (a fixed port P takes UDP+TCP P and TLS P+1); the
//!   Contact is `sip:NAME-0x...@127.0.0.1:UDPPORT`;
//! - `dns_server 127.0.0.1:53`, so nothing is asked of the network (sipd is
//!   named by address anyway);
//! - audio with no sound card: `aubridge` as both source and player (what is
//!   received is sent back). `ausine` does not do: it supports only 48 kHz,
//!   the G.711 source fails to start and the call is never answered;
//! - `ctrl_tcp` accepts one connection; commands and replies are
//!   netstring-framed JSON (`{"command":"dial","params":"sip:..","token":"t"}`
//!   answered by `{"response":true,"ok":true,"data":"..","token":"t"}`),
//!   events are netstrings too (`{"event":true,"type":"CALL_INCOMING",
//!   "id":CALL-ID,"peeruri":..}`); events before the connection are lost,
//!   so registration is checked in sipd, not through `REGISTER_OK`;
//! - `-t SECS` makes baresip quit by itself, a bound even if the test
//!   process dies before its `Drop` kills it;
//! - a WAV file as the audio source: `module aufile.so` and
//!   `audio_source aufile,/path/tone.wav`. The file must be S16LE mono at
//!   the codec's rate (8000 Hz for G.711) or the source fails; it is read
//!   whole at call start and played in real time, and its end is an audio
//!   error that closes the call, so it must outlast the call. In 1.0
//!   `aufile` is a source only (there is no `aufile` player);
//! - recording what is received: the `sndfile` audio filter (`module
//!   sndfile.so`, `snd_path DIR`) dumps each call's audio as 16-bit WAV at
//!   the codec's rate into `DIR/dump-YYYY-MM-DD-hh-mm-ss-dec.wav` (decoded,
//!   i.e. received) and `...-enc.wav` (what is sent); the header gets its
//!   length when the call's audio is torn down (after `CALL_CLOSED`). The
//!   filter runs on decode whatever the player does, so the player can be
//!   an `aubridge` device with no source of the same name (it discards);
//! - a phone "behind NAT" as far as its SDP goes: `module stun.so` (loaded
//!   before `account.so`, which resolves the account's media NAT when it
//!   reads the accounts) and the account parameters
//!   `;medianat=stun;stunserver=stun:IP:PORT`: each RTP/RTCP socket asks
//!   that STUN server for its mapped address before the INVITE goes out,
//!   and the SDP's `c=`/`m=` carry the answer, while Via and Contact keep
//!   the real address and media is still sent from 127.0.0.1.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const MODULES: &str = "/usr/lib/baresip/modules";

/// Is baresip usable? `false` (with a notice) means the caller should return.
pub fn available(test: &str) -> bool {
    let ok = Command::new("baresip")
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
        && std::path::Path::new(MODULES).join("ctrl_tcp.so").exists();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{test}: baresip with {MODULES}/ctrl_tcp.so is not installed \
                 (apt-get install baresip-core) and CI=true"
            );
        }
        eprintln!(
            "NOTICE: {test} skipped: baresip with {MODULES}/ctrl_tcp.so is not installed \
             (apt-get install baresip-core)"
        );
    }
    ok
}

/// One baresip with one account, registered to `server`; killed on drop.
pub struct Baresip {
    pub name: String,
    child: Child,
    dir: tempfile::TempDir,
    ctrl: TcpStream,
    rx: mpsc::Receiver<Value>,
    /// Messages received and not yet taken by a wait.
    pending: VecDeque<Value>,
    /// Every message received, for failure reports.
    seen: Vec<Value>,
}

impl Baresip {
    /// Start baresip for account `name` with password `secret` at `server`
    /// and connect to its control port. It quits by itself after `life`.
    pub fn start(name: &str, secret: &str, server: SocketAddr, life: Duration) -> Baresip {
        Baresip::start_with(name, secret, server, life, &[], "")
    }

    /// [`Baresip::start`] with `extra_config` lines and `account_params`
    /// appended to the account line (e.g. `;medianat=stun;stunserver=..`).
    /// An extra line whose key (first word) is a default line's key
    /// replaces that line (`audio_source aufile,/tmp/tone.wav`, say); other
    /// lines are added, `module X.so` lines before the default modules, so
    /// that what they register (a media NAT, say) exists when the
    /// `account` module reads the accounts.
    pub fn start_with(
        name: &str,
        secret: &str,
        server: SocketAddr,
        life: Duration,
        extra_config: &[&str],
        account_params: &str,
    ) -> Baresip {
        let dir = tempfile::Builder::new()
            .prefix(&format!("baresip-{name}-"))
            .tempdir()
            .expect("temp dir");
        let ctrl_port = crate::free_port();
        let defaults = [
            "poll_method epoll".to_string(),
            "net_interface 127.0.0.1".to_string(),
            "sip_listen 127.0.0.1:0".to_string(),
            "dns_server 127.0.0.1:53".to_string(),
            format!("module_path {MODULES}"),
            "module account.so".to_string(),
            "module g711.so".to_string(),
            "module aubridge.so".to_string(),
            "module menu.so".to_string(),
            "module ctrl_tcp.so".to_string(),
            format!("ctrl_tcp_listen 127.0.0.1:{ctrl_port}"),
            format!("audio_source aubridge,{name}"),
            format!("audio_player aubridge,{name}"),
            format!("audio_alert aubridge,{name}"),
        ];
        let key = |line: &str| line.split_whitespace().next().unwrap_or("").to_string();
        let extra_modules: Vec<&str> = extra_config
            .iter()
            .copied()
            .filter(|l| key(l) == "module")
            .collect();
        let mut lines: Vec<String> = Vec::new();
        for line in &defaults {
            if line.starts_with("module account.so") {
                lines.extend(extra_modules.iter().map(|l| l.to_string()));
            }
            let k = key(line);
            match extra_config.iter().find(|l| k != "module" && key(l) == k) {
                Some(replacement) => lines.push(replacement.to_string()),
                None => lines.push(line.clone()),
            }
        }
        for line in extra_config {
            let k = key(line);
            if k != "module" && !defaults.iter().any(|d| key(d) == k) {
                lines.push(line.to_string());
            }
        }
        let mut config = lines.join("\n");
        config.push('\n');
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(
            dir.path().join("accounts"),
            format!("<sip:{name}@{server}>;auth_pass={secret};regint=60{account_params}\n"),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut child = Command::new("baresip")
            .arg("-s") // SIP trace into the log
            .arg("-t")
            .arg(life.as_secs().max(1).to_string())
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn baresip");
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", ctrl_port)) {
                break s;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "baresip {name} exited during start-up ({st}):\n{}",
                    std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("baresip {name}: no control port 127.0.0.1:{ctrl_port} after 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (tx, rx) = mpsc::channel();
        let mut reader = ctrl.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // Netstrings: LEN ":" JSON ",".
                while let Some(colon) = buf.iter().position(|&b| b == b':') {
                    let Some(len) = std::str::from_utf8(&buf[..colon])
                        .ok()
                        .and_then(|s| s.parse::<usize>().ok())
                    else {
                        return; // not a netstring: stop reading
                    };
                    if buf.len() < colon + 1 + len + 1 {
                        break;
                    }
                    let v = serde_json::from_slice(&buf[colon + 1..colon + 1 + len])
                        .unwrap_or_else(|_| {
                            Value::String(
                                String::from_utf8_lossy(&buf[colon + 1..colon + 1 + len]).into(),
                            )
                        });
                    buf.drain(..colon + 1 + len + 1);
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        Baresip {
            name: name.to_string(),
            child,
            dir,
            ctrl,
            rx,
            pending: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    /// baresip's own directory (its `config`, `accounts` and `log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// baresip's output with its SIP trace.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Wait up to `timeout` for a message `pick` accepts and take it.
    fn wait(&mut self, timeout: Duration, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&pick) {
            return self.pending.remove(i).unwrap();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pick(&v) {
                        return v;
                    }
                    self.pending.push_back(v);
                }
                Err(e) => panic!(
                    "baresip {}: no {what} within {timeout:?} ({e:?}); messages so far:\n{}",
                    self.name,
                    self.seen
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// Run a command and return its reply's `data`; panics unless `ok`.
    pub fn command(&mut self, command: &str, params: &str) -> String {
        let token = crate::ua::unique(command);
        let json =
            serde_json::json!({"command": command, "params": params, "token": token}).to_string();
        self.ctrl
            .write_all(format!("{}:{json},", json.len()).as_bytes())
            .expect("write to ctrl_tcp");
        let reply = self.wait(
            Duration::from_secs(5),
            &format!("reply to {command}"),
            |v| v["response"] == true && v["token"] == token.as_str(),
        );
        assert_eq!(
            reply["ok"], true,
            "baresip {}: {command} {params}: {reply}",
            self.name
        );
        reply["data"].as_str().unwrap_or_default().to_string()
    }

    /// Wait for event `kind` (e.g. `CALL_ESTABLISHED`) and take it.
    pub fn event(&mut self, kind: &str, timeout: Duration) -> Value {
        self.wait(timeout, &format!("event {kind}"), |v| {
            v["event"] == true && v["type"] == kind
        })
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(400)..];
            eprintln!(
                "--- baresip {} log (tail) ---\n{}",
                self.name,
                tail.join("\n")
            );
        }
    }
}
