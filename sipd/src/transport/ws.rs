//! SIP over WebSocket (RFC 7118), plain (`-b ws:`) and over TLS (`-b wss:`),
//! with tokio-tungstenite. The HTTP upgrade is accepted only when the
//! client offers the `sip` subprotocol (answered with
//! `Sec-WebSocket-Protocol: sip`; anything else gets HTTP 400) and, when
//! `[general] ws_origins=` is set, only from a listed Origin (else HTTP
//! 403). Then one SIP message per text or binary frame, each way.
//!
//! A WebSocket connection is a flow of the same table as TCP's (the same
//! bounds, trust and deadlines); sipd pings it every [`WS_PING`] and closes
//! it when nothing at all was read for three of them. A frame of nothing
//! but CRLFs is a keep-alive (SIP.js sends `\r\n\r\n` and expects `\r\n`).
//! WebSocket clients cannot be connected to: a request to one whose
//! connection is gone fails at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::tcp::{deadline, FlowShared, ReadState, Registered, Stream, Tcp};
use super::{FlowId, Peer};
use crate::sip::Limits;

/// Interval of sipd's WebSocket pings.
pub const WS_PING: Duration = Duration::from_secs(30);

/// Does a `Sec-WebSocket-Protocol` offer include `sip`?
fn offers_sip(req: &Request) -> bool {
    req.headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"))
}

/// An HTTP answer refusing an upgrade.
type Refusal = (StatusCode, &'static str);

fn refuse((code, why): Refusal) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = code;
    r
}

/// The upgrade decision, pure: `Ok`, or the HTTP status to answer and why.
pub fn check_upgrade(req: &Request, origins: &[String]) -> Result<(), Refusal> {
    if !offers_sip(req) {
        return Err((
            StatusCode::BAD_REQUEST,
            "the sip WebSocket subprotocol is required (RFC 7118)",
        ));
    }
    if !origins.is_empty() {
        let origin = req
            .headers()
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Err((StatusCode::FORBIDDEN, "origin not allowed"));
        }
    }
    Ok(())
}

/// The frame limits: a SIP message at most.
fn config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
        .max_write_buffer_size(4 * limits.max_message)
}

impl Tcp {
    /// The HTTP upgrade on an accepted (and for WSS, decrypted)
    /// connection; then the flow.
    pub(super) async fn upgrade<S: Stream>(
        self: Arc<Self>,
        stream: S,
        from: SocketAddr,
        local: SocketAddr,
    ) {
        let origins = self.origins.load_full();
        let kind = self.kind.name();
        // tungstenite's callback type returns its (large) ErrorResponse.
        #[allow(clippy::result_large_err)]
        let callback = move |req: &Request, mut resp: Response| {
            if let Err(r) = check_upgrade(req, &origins) {
                tracing::debug!("{kind} {from}: upgrade refused: {} {}", r.0, r.1);
                return Err(refuse(r));
            }
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static("sip"));
            Ok(resp)
        };
        let cfg = config(&Limits::default());
        match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(cfg)).await {
            Ok(ws) => {
                self.adopt_ws(ws, from, local);
            }
            Err(e) => tracing::debug!("{kind} {from}: handshake failed: {e}"),
        }
    }

    fn adopt_ws<S: Stream>(
        self: Arc<Self>,
        ws: WebSocketStream<S>,
        addr: SocketAddr,
        local: SocketAddr,
    ) -> Option<FlowId> {
        let Registered { id, shared } = self.register(addr, true)?;
        let (sink, stream) = ws.split();
        let me = self.clone();
        let write_timeout = self.limits.write_timeout;
        self.run_flow(
            id,
            addr,
            shared.clone(),
            write_loop(sink, shared.clone(), write_timeout),
            async move { me.ws_read_loop(id, addr, local, stream, shared).await },
        );
        Some(id)
    }

    async fn ws_read_loop<R>(
        &self,
        id: FlowId,
        addr: SocketAddr,
        local: SocketAddr,
        mut stream: R,
        shared: Arc<FlowShared>,
    ) where
        R: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let peer = Peer {
            transport: self.kind,
            addr,
            flow: Some(id),
            local: Some(local),
        };
        let kind = self.kind.name();
        let opened = Instant::now();
        let mut st = ReadState {
            opened,
            last_read: opened,
            last_message: None,
            partial_since: None,
            trusted: shared.trusted(),
        };
        loop {
            st.trusted = shared.trusted();
            let (at, _) = deadline(&self.limits, &st);
            let msg = match tokio::time::timeout_at(at, stream.next()).await {
                Err(_) => {
                    st.trusted = shared.trusted();
                    let (at, why) = deadline(&self.limits, &st);
                    if at > Instant::now() {
                        continue;
                    }
                    tracing::debug!("{kind} {addr}: {why:?} timeout, closing");
                    return;
                }
                Ok(None) => return,
                Ok(Some(Err(e))) => {
                    tracing::debug!("{kind} {addr}: {e}");
                    return;
                }
                Ok(Some(Ok(m))) => m,
            };
            let now = Instant::now();
            st.last_read = now;
            let data: &[u8] = match &msg {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b,
                Message::Close(_) => return,
                // Pings are answered by tungstenite; pongs only show life.
                _ => continue,
            };
            if data.iter().all(|&b| b == b'\r' || b == b'\n') {
                if data.windows(4).any(|w| w == b"\r\n\r\n") {
                    self.queue(id, b"\r\n".to_vec());
                }
                continue;
            }
            st.last_message = Some(now);
            if let Some(sink) = self.sink.get() {
                sink.on_message(data, peer, false);
            }
        }
    }
}

/// Each queued message as one frame (text when it is UTF-8, as SIP
/// normally is; binary otherwise), and a ping every [`WS_PING`].
async fn write_loop<W>(mut sink: W, queue: Arc<FlowShared>, timeout: Duration)
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    let mut ping = tokio::time::interval_at(Instant::now() + WS_PING, WS_PING);
    loop {
        let msg = tokio::select! {
            data = queue.next() => {
                let Some(data) = data else { return };
                queue.written(data.len());
                match String::from_utf8(data) {
                    Ok(text) => Message::text(text),
                    Err(e) => Message::binary(e.into_bytes()),
                }
            }
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        match tokio::time::timeout(timeout, sink.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!("ws write: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("ws write: timed out");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri("/");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn upgrade_needs_the_sip_subprotocol() {
        assert!(check_upgrade(&req(&[("Sec-WebSocket-Protocol", "sip")]), &[]).is_ok());
        assert!(check_upgrade(&req(&[("Sec-WebSocket-Protocol", "chat, SIP")]), &[]).is_ok());
        let e = check_upgrade(&req(&[("Sec-WebSocket-Protocol", "chat")]), &[]).unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        let e = check_upgrade(&req(&[]), &[]).unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn origins_when_listed_must_match() {
        let allowed = vec!["https://phone.example".to_string()];
        let sip = ("Sec-WebSocket-Protocol", "sip");
        assert!(check_upgrade(&req(&[sip, ("Origin", "https://phone.example")]), &allowed).is_ok());
        let e =
            check_upgrade(&req(&[sip, ("Origin", "https://evil.example")]), &allowed).unwrap_err();
        assert_eq!(e.0, StatusCode::FORBIDDEN);
        let e = check_upgrade(&req(&[sip]), &allowed).unwrap_err();
        assert_eq!(e.0, StatusCode::FORBIDDEN);
        // No list: any origin.
        assert!(check_upgrade(&req(&[sip, ("Origin", "https://evil.example")]), &[]).is_ok());
    }
}
