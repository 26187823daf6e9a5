//! The control socket (spec §6): a Unix stream socket speaking the `proto`
//! crate's newline-delimited JSON. Each line is answered by exactly one line;
//! malformed JSON or an unknown command gets an error response. A line
//! longer than `proto::MAX_REQUEST_LINE` (64 KiB) gets an error response and
//! the connection is closed; a long line's buffer is released after it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto::{Command, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// What the control socket asks of the daemon.
pub trait Handler: Send + Sync + 'static {
    fn handle(self: Arc<Self>, cmd: Command) -> impl std::future::Future<Output = Response> + Send;
}

/// Bind the socket with mode 0600. A stale socket file from a crashed run is
/// replaced; a live one (another sipd answering) is an error.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another sipd is running with control socket {}",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask only changes the process file-mode mask; restored below.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serve connections until the task is dropped.
pub async fn serve<H: Handler>(listener: UnixListener, handler: Arc<H>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let h = handler.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, h).await {
                        tracing::debug!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A request line's buffer above this is released after its request (a
/// long request must not pin its memory for the connection's lifetime).
const KEEP_BUFFER: usize = 4096;

async fn connection<H: Handler>(stream: UnixStream, handler: Arc<H>) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        if line.capacity() > KEEP_BUFFER {
            line = Vec::new();
        }
        line.clear();
        let n = (&mut r)
            .take(proto::MAX_REQUEST_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.len() > proto::MAX_REQUEST_LINE {
            // The rest of the line cannot be told from a next request.
            let resp = Response::error(format!(
                "request line too long (more than {} bytes)",
                proto::MAX_REQUEST_LINE
            ));
            w.write_all(proto::to_line(&resp).as_bytes()).await?;
            return Ok(());
        }
        let resp = match std::str::from_utf8(text) {
            Err(_) => Response::error("malformed request: not UTF-8"),
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => match proto::parse_request(text.trim()) {
                Ok(req) => handler.clone().handle(req.cmd).await,
                Err(e) => Response::error(e),
            },
        };
        w.write_all(proto::to_line(&resp).as_bytes()).await?;
    }
}

use tokio::io::AsyncReadExt as _;

/// Removes the socket file when dropped (graceful shutdown).
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
