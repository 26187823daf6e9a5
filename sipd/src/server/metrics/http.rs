//! The HTTP side of the metrics: a tiny HTTP/1.x responder on tokio for one
//! resource, `GET /metrics` (also `HEAD`). No web framework for one
//! endpoint. Each connection carries one request and is closed after the
//! answer (`Connection: close`; Prometheus reconnects per scrape, which at
//! one scrape every few seconds costs nothing).
//!
//! Bounds, so that whoever reaches the port cannot hold sipd's resources:
//! a request head of at most [`MAX_HEAD`] bytes (else 431), the whole
//! exchange within [`TIMEOUT`] (else the connection is dropped), at most
//! [`MAX_CONNECTIONS`] connections at once (more are closed at accept).
//! Other paths get 404, other methods 405, what is not HTTP/1.x 400.
//!
//! The listener is a plain `std` socket bound by [`bind`] (sync, so a
//! reload on a blocking thread can bind it and report an error before
//! anything changes) and served by [`Listener::start`]; [`Listener::stop`]
//! closes it, waiting until the port is free.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time for a whole exchange: request read, answer rendered and written.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection is kept after the answer, for the client to close.
const LINGER: Duration = Duration::from_secs(1);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// The one resource.
pub const PATH: &str = "/metrics";

/// Renders the body of `GET /metrics`; an `Err` is answered with 500.
pub type Render = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Bind a listening TCP socket on `addr` (SO_REUSEADDR, so that the port
/// of a listener just closed can be bound again despite TIME_WAIT).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(64)?;
    Ok(s.into())
}

/// A metrics listener being served.
pub struct Listener {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Listener {
    /// Serve `socket` (from [`bind`]) on `runtime`, answering with `render`.
    pub fn start(
        socket: std::net::TcpListener,
        runtime: &tokio::runtime::Handle,
        render: Render,
    ) -> io::Result<Listener> {
        let addr = socket.local_addr()?;
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(socket)?
        };
        let task = runtime.spawn(accept_loop(listener, render));
        Ok(Listener { addr, task })
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close the listener and wait (up to 2 s) until its socket is closed.
    /// Blocking: call it off the runtime's workers. Connections being
    /// answered finish on their own (bounded by [`TIMEOUT`]).
    pub fn stop(self) {
        self.task.abort();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.task.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, render: Render) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::debug!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(TIMEOUT, exchange(stream, &render)).await;
        });
    }
}

/// One request, one answer, then close.
async fn exchange(mut stream: TcpStream, render: &Render) {
    let answer = match read_head(&mut stream).await {
        Head::Complete(head) => answer(&head, render),
        Head::TooLarge => simple(431, "Request Header Fields Too Large", &[]),
        Head::Closed => return,
    };
    if stream.write_all(&answer).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Closing with unread input would reset the connection, and the client
    // could lose the answer (a 431 leaves the rest of its head unread):
    // read what is left, a little and briefly, until the client closes.
    let mut rest = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut left = MAX_HEAD * 8;
        while left > 0 {
            match stream.read(&mut rest).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    Closed,
}

/// Read until the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Head::Complete(buf);
        }
        if buf.len() >= MAX_HEAD {
            return Head::TooLarge;
        }
    }
}

/// Where the head ends (after its blank line), if it is complete and
/// within [`MAX_HEAD`].
fn head_end(buf: &[u8]) -> Option<usize> {
    let limit = buf.len().min(MAX_HEAD);
    let crlf = memchr::memmem::find(&buf[..limit], b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(&buf[..limit], b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The answer to a complete request head.
pub fn answer(head: &[u8], render: &Render) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return simple(400, "Bad Request", &[]);
    };
    if !version.starts_with("HTTP/1.") {
        return simple(400, "Bad Request", &[]);
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != PATH {
        return simple(404, "Not Found", &[]);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return simple(405, "Method Not Allowed", &[("Allow", "GET, HEAD")]),
    };
    match render() {
        Ok(body) => {
            let mut out = response_head(
                200,
                "OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body.len(),
                &[],
            );
            if !head_only {
                out.extend_from_slice(body.as_bytes());
            }
            out
        }
        Err(e) => {
            tracing::warn!("metrics: {e}");
            simple(500, "Internal Server Error", &[])
        }
    }
}

/// An answer whose body is its reason phrase.
fn simple(code: u16, reason: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    let mut out = response_head(
        code,
        reason,
        "text/plain; charset=utf-8",
        body.len(),
        headers,
    );
    out.extend_from_slice(body.as_bytes());
    out
}

fn response_head(
    code: u16,
    reason: &str,
    content_type: &str,
    length: usize,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        h.push_str(&format!("{name}: {value}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render() -> Render {
        Arc::new(|| Ok("sipd_up 1\n".to_string()))
    }

    fn status(answer: &[u8]) -> String {
        let text = String::from_utf8_lossy(answer);
        text.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn get_metrics_and_the_rest() {
        let r = render();
        let ok = answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r);
        let text = String::from_utf8(ok).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 10\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nsipd_up 1\n"), "{text}");
        let q = answer(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &r);
        assert_eq!(status(&q), "HTTP/1.1 200 OK");
        let head = String::from_utf8(answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", &r)).unwrap();
        assert!(head.ends_with("Content-Length: 10\r\nConnection: close\r\n\r\n"));
        for (req, want) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 404 Not Found"),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"GET /metrics HTTP/2.0\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"\xff\xfe\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ] {
            assert_eq!(
                status(&answer(req, &r)),
                want,
                "{}",
                String::from_utf8_lossy(req)
            );
        }
        let e: Render = Arc::new(|| Err("broken".into()));
        let bad = answer(b"GET /metrics HTTP/1.1\r\n\r\n", &e);
        assert_eq!(status(&bad), "HTTP/1.1 500 Internal Server Error");
    }

    #[test]
    fn head_ends_at_the_blank_line_within_the_bound() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        let mut long = vec![b'a'; MAX_HEAD];
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head_end(&long), None);
    }

    #[test]
    fn served_over_tcp_and_stopped() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l = Listener::start(socket, rt.handle(), render()).unwrap();
        let addr = l.addr();
        let get = |req: &[u8]| -> String {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(req).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert!(get(b"GET /metrics HTTP/1.1\r\n\r\n").ends_with("sipd_up 1\n"));
        assert!(get(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert!(get(&huge).starts_with("HTTP/1.1 431"));
        l.stop();
        assert!(std::net::TcpStream::connect(addr).is_err());
        // The port is free again at once.
        let again = bind(addr).unwrap();
        drop(again);
    }
}
