//! Header names (case-insensitive, compact forms) and the structured header
//! values the proxy needs: name-addr (From/To/Contact/Route), Via, CSeq, params.

use std::fmt;
use std::net::IpAddr;

use super::message::{Method, ParseError};
use super::uri::{Host, Uri};

/// A header name. Known names are variants (compact forms map to them);
/// any other name is kept lower-cased in `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Accept,
    AcceptEncoding,
    AcceptLanguage,
    AlertInfo,
    Allow,
    AllowEvents,
    AnswerMode,
    AuthenticationInfo,
    Authorization,
    CallId,
    CallInfo,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLanguage,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Diversion,
    ErrorInfo,
    Event,
    Expires,
    From,
    InReplyTo,
    MaxForwards,
    MinExpires,
    MinSe,
    MimeVersion,
    Organization,
    PAssertedIdentity,
    PPreferredIdentity,
    Priority,
    Privacy,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RAck,
    Reason,
    RecordRoute,
    ReferTo,
    ReferredBy,
    Replaces,
    ReplyTo,
    Require,
    RetryAfter,
    Route,
    RSeq,
    Server,
    SessionExpires,
    Subject,
    SubscriptionState,
    Supported,
    Timestamp,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    Other(Box<str>),
}

impl HeaderName {
    /// Parse a header name: case-insensitive, compact forms
    /// (i m f t v l c k s e o u r b x) map to their full names.
    pub fn parse(name: &str) -> HeaderName {
        todo!("{name}")
    }
    /// Canonical spelling (e.g. `Call-ID`, `CSeq`, `WWW-Authenticate`); for
    /// `Other` the lower-cased name.
    pub fn as_str(&self) -> &str {
        todo!()
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Split a list header value at top-level commas (not inside `"…"` with
/// `\` escapes, nor inside `<…>`); each element trimmed; empty elements dropped.
pub fn split_list(value: &str) -> Vec<&str> {
    todo!("{value}")
}

/// `;name[=value]` parameters, order kept, names compared case-insensitively.
/// Quoted values are stored unquoted and unescaped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// `None`: absent; `Some(None)`: present without value; `Some(Some(v))`: with value.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        todo!("{name}")
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    /// The value if present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }
    /// Set (replace or append) a parameter.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        todo!("{name} {value:?}")
    }
    pub fn remove(&mut self, name: &str) {
        todo!("{name}")
    }
}

/// Writes `;name=value` for each param (quoting values that are not tokens).
impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("{:?}", f.width())
    }
}

/// name-addr or addr-spec with header params: From, To, Contact, Route,
/// Record-Route, P-Asserted-Identity, Diversion, Refer-To.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted and unescaped.
    pub display: Option<String>,
    pub uri: Uri,
    /// Header params after the URI (for an addr-spec without `<>`, the params
    /// after the URI belong to the header, as RFC 3261 §20.10 says).
    pub params: Params,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, ParseError> {
        todo!("{value}")
    }
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
}

/// Always writes the name-addr form: `"Display" <uri>;params`.
impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("{:?}", f.width())
    }
}

/// One Contact value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    Star,
    Addr(NameAddr),
}

/// One Via value: `SIP/2.0/UDP host[:port];params`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// Transport, upper-cased (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, …).
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        todo!("{value}")
    }
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
    pub fn received(&self) -> Option<IpAddr> {
        todo!()
    }
    /// `None`: no rport; `Some(None)`: `;rport` without value; `Some(Some(p))`.
    pub fn rport(&self) -> Option<Option<u16>> {
        todo!()
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("{:?}", f.width())
    }
}

/// CSeq: sequence number and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, ParseError> {
        todo!("{value}")
    }
}
