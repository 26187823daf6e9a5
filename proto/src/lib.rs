//! Control protocol between sipd and sipctl (spec §6).
//!
//! Transport: a Unix stream socket (`DIR/sipd.sock`, mode 0600). Framing:
//! newline-delimited JSON, one [`Request`] object per line from the client and
//! one [`Response`] object per line back, several per connection. Every
//! message carries the protocol version `v`; a server answers a request with
//! another major version with an error response instead of guessing.
//!
//! Example exchange:
//! ```text
//! > {"v":1,"cmd":"status"}
//! < {"v":1,"ok":true,"result":{"type":"status","version":"0.1.0",...}}
//! > {"v":1,"cmd":"fwd","who":"1001","action":{"kind":"always","number":"4991234567"}}
//! < {"v":1,"ok":false,"error":"..."}
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod forwarding;
pub mod types;
pub use forwarding::{is_number, shown, Forwarding, MAX_NUMBER_DIGITS, NUMBER_RULE};
pub use types::*;

/// Protocol version spoken by this build.
pub const VERSION: u32 = 1;
/// File name of the control socket inside sipd's working directory.
pub const SOCKET_NAME: &str = "sipd.sock";
/// Longest request line a server accepts, in bytes (without the newline):
/// a longer one is answered with an error and the connection closed.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Longest response line a client accepts (`regs` of many clients is long).
pub const MAX_RESPONSE_LINE: usize = 16 * 1024 * 1024;

/// The control socket path for a working directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}

/// One request line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub cmd: Command,
}

impl Request {
    pub fn new(cmd: Command) -> Request {
        Request { v: VERSION, cmd }
    }
}

/// What the client asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Version, uptime, listen addresses, counters.
    Status,
    /// Re-read sip.conf; validate first, swap atomically on success.
    Reload,
    /// Registrations, optionally of one client only.
    Regs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Calls in progress.
    Calls,
    /// Most recent call detail records.
    Cdr {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<u32>,
    },
    /// Show (no action) or change the forwarding of a client (`sipctl fwd
    /// WHO always F|unavail F|clear`; `clear` is [`Forwarding::None`]).
    Fwd {
        who: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "forwarding::action"
        )]
        action: Option<Forwarding>,
    },
    /// The ban table; with `clear`, lift every ban of that address first.
    Bans {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clear: Option<String>,
    },
    /// Health of the gateways and mediagates (OPTIONS checks of their hosts).
    Gateways,
}

/// One response line: `ok` with a `result`, or not `ok` with an `error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Reply>,
}

impl Response {
    pub fn ok(result: Reply) -> Response {
        Response {
            v: VERSION,
            ok: true,
            error: None,
            result: Some(result),
        }
    }
    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            v: VERSION,
            ok: false,
            error: Some(msg.into()),
            result: None,
        }
    }
    /// The reply, or the server's error as `Err`.
    pub fn into_result(self) -> Result<Reply, String> {
        match (self.ok, self.result, self.error) {
            (true, Some(r), _) => Ok(r),
            (_, _, Some(e)) => Err(e),
            _ => Err("malformed response from sipd".into()),
        }
    }
}

/// Parse one request line as the server does: malformed JSON, a missing or
/// unknown command or another protocol version become an error message to
/// send back (never a dropped connection).
pub fn parse_request(line: &str) -> Result<Request, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    let v = value
        .get("v")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| "malformed request: missing protocol version \"v\"".to_string())?;
    if v != u64::from(VERSION) {
        return Err(format!(
            "unsupported protocol version {v} (this sipd speaks {VERSION})"
        ));
    }
    match value.get("cmd").and_then(|c| c.as_str()) {
        None => return Err("malformed request: missing \"cmd\"".into()),
        Some(c) if !KNOWN_COMMANDS.contains(&c) => return Err(format!("unknown command '{c}'")),
        Some(_) => {}
    }
    serde_json::from_value(value).map_err(|e| format!("malformed request: {e}"))
}

const KNOWN_COMMANDS: &[&str] = &[
    "status", "reload", "regs", "calls", "cdr", "fwd", "bans", "gateways",
];

/// Serialise a message as one line (with the trailing newline).
pub fn to_line<T: Serialize>(msg: &T) -> String {
    let mut s = serde_json::to_string(msg).expect("control messages always serialise");
    s.push('\n');
    s
}

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nobody listens on the socket (no sipd running in that directory).
    NotRunning(PathBuf, io::Error),
    Io(io::Error),
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(p, e) => {
                write!(
                    f,
                    "no sipd is running with control socket {} ({e})",
                    p.display()
                )
            }
            ClientError::Io(e) => write!(f, "control socket: {e}"),
            ClientError::Protocol(e) => write!(f, "control protocol: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A small blocking client (sipctl and `sipd -r` use it).
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .map_err(|e| ClientError::NotRunning(path.to_path_buf(), e))?;
        // A reload of a huge sip.conf takes well under this; a wedged daemon
        // must not hang scripts forever.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(ClientError::Io)?;
        let writer = stream.try_clone().map_err(ClientError::Io)?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Send one command and wait for its response. A request longer than
    /// [`MAX_REQUEST_LINE`] is refused here, before it is sent.
    pub fn call(&mut self, cmd: Command) -> Result<Response, ClientError> {
        let request = to_line(&Request::new(cmd));
        if request.len() - 1 > MAX_REQUEST_LINE {
            return Err(ClientError::Protocol(format!(
                "request too long ({} bytes, at most {MAX_REQUEST_LINE})",
                request.len() - 1
            )));
        }
        self.writer
            .write_all(request.as_bytes())
            .map_err(ClientError::Io)?;
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_RESPONSE_LINE as u64)
            .read_line(&mut line)
            .map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::Protocol(
                "sipd closed the connection without a reply".into(),
            ));
        }
        let resp: Response = serde_json::from_str(line.trim_end())
            .map_err(|e| ClientError::Protocol(format!("bad response: {e}")))?;
        if resp.v != VERSION {
            return Err(ClientError::Protocol(format!(
                "sipd speaks protocol version {}, this client {VERSION}",
                resp.v
            )));
        }
        Ok(resp)
    }
}

/// Unix milliseconds as UTC `YYYY-MM-DD HH:MM:SS` (civil-from-days, H. Hinnant),
/// so that neither sipd nor sipctl needs a date crate.
pub fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_unix_ms(0), "1970-01-01 00:00:00");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_unix_ms(1_795_651_200_123), "2026-11-26 00:00:00");
        assert_eq!(format_unix_ms(1_795_689_599_999), "2026-11-26 10:39:59");
    }

    #[test]
    fn store_status_text_and_json() {
        let ok = StoreStatus::default();
        assert_eq!(ok.to_string(), "ok");
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"state":"ok","queued":0,"dropped":0}"#
        );
        let degraded = StoreStatus {
            state: "degraded".into(),
            queued: 12,
            degraded_secs: Some(40),
            last_error: Some("database or disk is full".into()),
            dropped: 0,
            ..StoreStatus::default()
        };
        assert_eq!(
            degraded.to_string(),
            "degraded (12 queued, for 40 s, last error: database or disk is full)"
        );
        let back: StoreStatus =
            serde_json::from_str(&serde_json::to_string(&degraded).unwrap()).unwrap();
        assert_eq!(back, degraded);
        let recovered = StoreStatus {
            dropped: 3,
            last_error: Some("database or disk is full".into()),
            ..StoreStatus::default()
        };
        assert_eq!(recovered.to_string(), "ok (3 writes dropped since start)");
    }

    #[test]
    fn status_from_an_older_daemon_has_an_ok_store() {
        let json = r#"{"name":"sipd","version":"0.1.0","realm":"r","pid":1,"uptime_secs":2,
            "listen":[],"country":"7","city":"495","dir":".","config":"sip.conf","clients":0,
            "registrations":0,"calls":0,"transactions":0,"counters":[]}"#;
        let s: Status = serde_json::from_str(json).unwrap();
        assert!(s.store.is_ok());
    }

    #[test]
    fn request_wire_format() {
        let r = Request::new(Command::Fwd {
            who: "1001".into(),
            action: Some(Forwarding::always("4991234567")),
        });
        let line = to_line(&r);
        assert_eq!(
            line,
            "{\"v\":1,\"cmd\":\"fwd\",\"who\":\"1001\",\"action\":{\"kind\":\"always\",\"number\":\"4991234567\"}}\n"
        );
        assert_eq!(parse_request(line.trim_end()).unwrap(), r);
        assert_eq!(
            to_line(&Request::new(Command::Status)),
            "{\"v\":1,\"cmd\":\"status\"}\n"
        );
        assert_eq!(
            parse_request("{\"v\":1,\"cmd\":\"regs\"}").unwrap().cmd,
            Command::Regs { name: None }
        );
        assert_eq!(
            parse_request("{\"v\":1,\"cmd\":\"cdr\",\"last\":5}")
                .unwrap()
                .cmd,
            Command::Cdr { last: Some(5) }
        );
    }

    /// Every forwarding value as a `fwd` request, byte for byte.
    #[test]
    fn fwd_request_wire_format() {
        let cases = [
            (None, r#"{"v":1,"cmd":"fwd","who":"1001"}"#),
            (
                Some(Forwarding::always("4991234567")),
                r#"{"v":1,"cmd":"fwd","who":"1001","action":{"kind":"always","number":"4991234567"}}"#,
            ),
            (
                Some(Forwarding::unavailable("+44123")),
                r#"{"v":1,"cmd":"fwd","who":"1001","action":{"kind":"unavail","number":"+44123"}}"#,
            ),
            (
                Some(Forwarding::None),
                r#"{"v":1,"cmd":"fwd","who":"1001","action":{"kind":"clear"}}"#,
            ),
        ];
        for (action, json) in cases {
            let r = Request::new(Command::Fwd {
                who: "1001".into(),
                action,
            });
            assert_eq!(to_line(&r), format!("{json}\n"));
            assert_eq!(parse_request(json).unwrap(), r);
        }
        // An explicit null is "show", as before.
        assert_eq!(
            parse_request(r#"{"v":1,"cmd":"fwd","who":"a","action":null}"#)
                .unwrap()
                .cmd,
            Command::Fwd {
                who: "a".into(),
                action: None
            }
        );
        // The reply's spelling of "no forwarding" is not a request kind, nor
        // is a number optional.
        for bad in [
            r#"{"v":1,"cmd":"fwd","who":"a","action":{"kind":"none"}}"#,
            r#"{"v":1,"cmd":"fwd","who":"a","action":{"kind":"always"}}"#,
            r#"{"v":1,"cmd":"fwd","who":"a","action":{"number":"1"}}"#,
        ] {
            let err = parse_request(bad).unwrap_err();
            assert!(err.contains("malformed request"), "{bad}: {err}");
        }
    }

    /// Every forwarding value in a `fwd` reply, byte for byte.
    #[test]
    fn fwd_reply_wire_format() {
        let state = |name: &str, forwarding: Forwarding, source: Option<&str>| FwdState {
            name: name.into(),
            forwarding,
            source: source.map(Into::into),
        };
        let ok = Response::ok(Reply::Fwd(FwdReport {
            clients: vec![
                state("a", Forwarding::None, None),
                state("b", Forwarding::None, Some("sipctl")),
                state("c", Forwarding::always("4991234567"), Some("sip.conf")),
                state("d", Forwarding::unavailable("1002"), Some("phone")),
            ],
        }));
        let line = to_line(&ok);
        assert_eq!(
            line,
            concat!(
                r#"{"v":1,"ok":true,"result":{"type":"fwd","clients":["#,
                r#"{"name":"a","kind":"none"},"#,
                r#"{"name":"b","kind":"none","source":"sipctl"},"#,
                r#"{"name":"c","kind":"always","number":"4991234567","source":"sip.conf"},"#,
                r#"{"name":"d","kind":"unavail","number":"1002","source":"phone"}"#,
                "]}}\n"
            )
        );
        let back: Response = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(back, ok);
        // sipctl --json prints the reply pretty: same fields, same order.
        let pretty = serde_json::to_string_pretty(&ok.result.unwrap()).unwrap();
        assert!(
            pretty.contains(
                "\"name\": \"c\",\n      \"kind\": \"always\",\n      \"number\": \"4991234567\",\n      \"source\": \"sip.conf\""
            ),
            "{pretty}"
        );
    }

    #[test]
    fn gateways_wire_format() {
        let line = to_line(&Request::new(Command::Gateways));
        assert_eq!(line, "{\"v\":1,\"cmd\":\"gateways\"}\n");
        assert_eq!(
            parse_request(line.trim_end()).unwrap().cmd,
            Command::Gateways
        );
        let ok = Response::ok(Reply::Gateways(Gateways {
            gateways: vec![
                GatewayInfo {
                    name: "GW1".into(),
                    role: "gateway".into(),
                    host: "udp:10.0.0.1:5060".into(),
                    state: "up".into(),
                    rtt_ms: Some(3),
                    since: Some(1_795_651_200_123),
                    qualify: 30,
                    calls: 2,
                },
                GatewayInfo {
                    name: "M".into(),
                    role: "mediagate".into(),
                    host: String::new(),
                    state: "unknown".into(),
                    rtt_ms: None,
                    since: None,
                    qualify: 30,
                    calls: 0,
                },
            ],
        }));
        let line = to_line(&ok);
        assert_eq!(
            line,
            concat!(
                r#"{"v":1,"ok":true,"result":{"type":"gateways","gateways":["#,
                r#"{"name":"GW1","role":"gateway","host":"udp:10.0.0.1:5060","state":"up","#,
                r#""rtt_ms":3,"since":1795651200123,"qualify":30,"calls":2},"#,
                r#"{"name":"M","role":"mediagate","host":"","state":"unknown","qualify":30,"calls":0}"#,
                "]}}\n"
            )
        );
        let back: Response = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(back, ok);
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let cases = [
            ("", "malformed request"),
            ("not json", "malformed request"),
            ("[]", "missing protocol version"),
            ("{\"cmd\":\"status\"}", "missing protocol version"),
            (
                "{\"v\":2,\"cmd\":\"status\"}",
                "unsupported protocol version 2",
            ),
            (
                "{\"v\":\"1\",\"cmd\":\"status\"}",
                "missing protocol version",
            ),
            ("{\"v\":1}", "missing \"cmd\""),
            (
                "{\"v\":1,\"cmd\":\"shutdown\"}",
                "unknown command 'shutdown'",
            ),
            ("{\"v\":1,\"cmd\":\"fwd\"}", "malformed request"),
            (
                "{\"v\":1,\"cmd\":\"fwd\",\"who\":\"a\",\"action\":{\"kind\":\"sometimes\"}}",
                "malformed request",
            ),
            ("{\"v\":1,\"cmd\":\"cdr\",\"last\":-1}", "malformed request"),
        ];
        for (line, want) in cases {
            let err = parse_request(line).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn response_round_trip() {
        let r = Response::error("sip.conf:3: unknown key 'permt'");
        let back: Response = serde_json::from_str(to_line(&r).trim_end()).unwrap();
        assert_eq!(
            back.into_result().unwrap_err(),
            "sip.conf:3: unknown key 'permt'"
        );
        let ok = Response::ok(Reply::Reload(ReloadReport {
            added: vec!["a".into()],
            removed: vec![],
            changed: vec!["b".into()],
            clients: 2,
        }));
        let line = to_line(&ok);
        assert!(line.contains("\"type\":\"reload\""), "{line}");
        let back: Response = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(back, ok);
    }

    #[test]
    fn client_reports_missing_daemon() {
        let path =
            std::env::temp_dir().join(format!("sipd-proto-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        match Client::connect(&path) {
            Err(e @ ClientError::NotRunning(..)) => {
                assert!(e.to_string().contains("no sipd is running"), "{e}")
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
    }
}
