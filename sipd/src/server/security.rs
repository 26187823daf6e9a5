//! The security log (`[general] security_log=FILE`, relative to DIR) and
//! the drop list of banned sources.
//!
//! One line per event, in a fixed format (README, "Security log"):
//!
//! ```text
//! 2026-12-03T09:41:00.123Z sipd[4242]: event=auth-failure user="alice" transport=udp src=192.0.2.7 port=5062
//! 2026-12-03T09:41:02.007Z sipd[4242]: event=ban transport=udp src=192.0.2.8 port=40001 reason="flood" until=1796290862
//! ```
//!
//! Events: `auth-failure` (wrong password, or an attempt refused while
//! locked: `locked=yes`), `unknown-user`, `acl-refused` (outside `permit`),
//! `flood`, `ban`, `ban-lifted`. `user` is shown only when the event has
//! one, cut to 64 characters of `[A-Za-z0-9._@+-]` (others become `?`), so
//! an attacker's user name cannot forge a line. The same events go to the
//! normal log at `warn`. The file is opened for appending (a log rotator
//! may move it: it is reopened on reload).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::core::SecurityEvent;

/// What the security log writes to: nothing, or one file.
#[derive(Default)]
pub struct SecurityLog {
    file: Mutex<Option<(PathBuf, File)>>,
}

/// A user name as the log shows it.
fn clean_user(u: &str) -> String {
    u.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@+-".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The line for an event (without the newline).
pub fn format_line(e: &SecurityEvent, unix_ms: u64, pid: u32) -> String {
    let when = proto::format_unix_ms(unix_ms).replace(' ', "T");
    let mut s = format!(
        "{when}.{:03}Z sipd[{pid}]: event={}",
        unix_ms % 1000,
        e.event
    );
    if let Some(u) = &e.user {
        s.push_str(&format!(" user=\"{}\"", clean_user(u)));
    }
    s.push_str(&format!(
        " transport={} src={} port={}",
        e.transport.name(),
        e.addr.ip().to_canonical(),
        e.addr.port()
    ));
    if let Some(d) = &e.detail {
        s.push(' ');
        s.push_str(d);
    }
    s
}

impl SecurityLog {
    /// Write to `path` from now on (`None`: nowhere). An error is returned
    /// (and nothing changes) when the file cannot be opened.
    pub fn open(&self, path: Option<&Path>) -> Result<(), String> {
        let mut cur = crate::lock(&self.file);
        let Some(path) = path else {
            *cur = None;
            return Ok(());
        };
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("security_log {}: {e}", path.display()))?;
        *cur = Some((path.to_path_buf(), f));
        Ok(())
    }

    /// Write these events (and log them at warn).
    pub fn write(&self, events: &[SecurityEvent]) {
        if events.is_empty() {
            return;
        }
        let now = crate::time::Now::read().unix_ms;
        let pid = std::process::id();
        let mut text = String::new();
        for e in events {
            let line = format_line(e, now, pid);
            tracing::warn!(target: "sipd::security", "{}", &line[line.find("event=").unwrap_or(0)..]);
            text.push_str(&line);
            text.push('\n');
        }
        let mut cur = crate::lock(&self.file);
        if let Some((path, f)) = cur.as_mut() {
            if let Err(e) = f.write_all(text.as_bytes()) {
                tracing::error!("security_log {}: {e}", path.display());
            }
        }
    }
}

/// Sources whose packets are dropped before they are parsed, until when.
#[derive(Default)]
pub struct DropList {
    map: Mutex<HashMap<IpAddr, Instant>>,
    /// Entries in `map`, read without the lock: the common case (nobody
    /// banned) costs the packet path one atomic load.
    len: std::sync::atomic::AtomicUsize,
}

impl DropList {
    pub fn apply(&self, changes: &[(IpAddr, Option<Instant>)]) {
        if changes.is_empty() {
            return;
        }
        let mut m = crate::lock(&self.map);
        for &(ip, until) in changes {
            match until {
                Some(t) => {
                    m.insert(ip, t);
                }
                None => {
                    m.remove(&ip);
                }
            }
        }
        self.len
            .store(m.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Nobody is banned (no need to look at each packet's source).
    pub fn is_empty(&self) -> bool {
        self.len.load(std::sync::atomic::Ordering::Relaxed) == 0
    }

    /// Run `f` with a test "is this address dropped now?" (one lock).
    pub fn with<R>(&self, f: impl FnOnce(&dyn Fn(IpAddr) -> bool) -> R) -> R {
        let m = crate::lock(&self.map);
        if m.is_empty() {
            return f(&|_| false);
        }
        let now = Instant::now();
        f(&|ip| m.get(&ip.to_canonical()).is_some_and(|&t| now < t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    #[test]
    fn lines_have_a_fixed_shape_and_user_names_cannot_forge_one() {
        let e = SecurityEvent {
            event: "auth-failure",
            user: Some("alice\nevent=ban src=1.2.3.4".into()),
            transport: Transport::Udp,
            addr: "192.0.2.7:5062".parse().unwrap(),
            detail: None,
        };
        let l = format_line(&e, 1_796_290_860_123, 42);
        assert_eq!(
            l,
            "2026-12-03T09:41:00.123Z sipd[42]: event=auth-failure user=\"alice?event?ban?src?1.2.3.4\" transport=udp src=192.0.2.7 port=5062"
        );
        let e = SecurityEvent {
            event: "ban",
            user: None,
            transport: Transport::Tls,
            addr: "[::ffff:192.0.2.8]:40001".parse().unwrap(),
            detail: Some("reason=\"flood\" until=5".into()),
        };
        let l = format_line(&e, 0, 1);
        assert_eq!(
            l,
            "1970-01-01T00:00:00.000Z sipd[1]: event=ban transport=tls src=192.0.2.8 port=40001 reason=\"flood\" until=5"
        );
    }
}
