//! The structured header values the proxy needs: name-addr
//! (From/To/Contact/Route), Via, CSeq.

use std::fmt;
use std::net::IpAddr;

use super::error::ParseError;
use super::method::Method;
use super::params::{parse_header_params, Params};
use super::parse::{
    is_lws, is_token, is_token_byte, list_ranges, parse_quoted, parse_u32, skip_lws, trim_lws,
    write_quoted,
};
use super::uri::{Host, Uri};

/// Split a list header value at top-level commas (not inside `"…"` with
/// `\` escapes, nor inside `<…>`); each element trimmed; empty elements dropped.
pub fn split_list(value: &str) -> Vec<&str> {
    list_ranges(value).filter_map(|r| value.get(r)).collect()
}

fn bad(what: &str) -> ParseError {
    ParseError::BadHeader(what.to_string())
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
        let s = trim_lws(value);
        let b = s.as_bytes();
        if b.first() == Some(&b'"') {
            let (display, end) =
                parse_quoted(s, 0).ok_or_else(|| bad("unterminated display name"))?;
            let lt = skip_lws(b, end);
            if b.get(lt) != Some(&b'<') {
                return Err(bad("expected '<' after display name"));
            }
            return NameAddr::bracketed(s, lt, Some(display));
        }
        if let Some(lt) = s.find('<') {
            let display = trim_lws(s.get(..lt).unwrap_or(""));
            // display-name = *(token LWS); UTF-8 tolerated.
            if !display
                .bytes()
                .all(|c| is_token_byte(c) || is_lws(c) || c >= 0x80)
            {
                return Err(bad("bad display name"));
            }
            let display = (!display.is_empty()).then(|| display.to_string());
            return NameAddr::bracketed(s, lt, display);
        }
        // addr-spec: the URI ends at the first ';' (or LWS); what follows
        // are header parameters. A URI with ',', '?' or ';' must use <>.
        let end = s.find([';', ' ', '\t', '\r', '\n']).unwrap_or(s.len());
        let uri_s = s.get(..end).unwrap_or("");
        if uri_s.contains(['?', ',', '>', '"']) {
            return Err(bad("addr-spec with reserved characters needs <>"));
        }
        let uri = Uri::parse(uri_s).map_err(|e| ParseError::BadHeader(e.to_string()))?;
        let params = parse_header_params(s, end)?;
        Ok(NameAddr {
            display: None,
            uri,
            params,
        })
    }

    /// `<uri>` at `s[lt]`, then header params.
    fn bracketed(s: &str, lt: usize, display: Option<String>) -> Result<NameAddr, ParseError> {
        let inner_start = lt + 1;
        let rest = s.get(inner_start..).ok_or_else(|| bad("missing '>'"))?;
        let gt = rest.find('>').ok_or_else(|| bad("missing '>'"))? + inner_start;
        let uri_s = s.get(inner_start..gt).unwrap_or("");
        let uri = Uri::parse(uri_s).map_err(|e| ParseError::BadHeader(e.to_string()))?;
        let params = parse_header_params(s, gt + 1)?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// A name-addr with no display name and no params.
    pub fn from_uri(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Params::default(),
        }
    }
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
}

/// Always writes the name-addr form: `"Display" <uri>;params`.
impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write_quoted(f, d)?;
            f.write_str(" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

impl Contact {
    /// `*` or a name-addr / addr-spec with params.
    pub fn parse(value: &str) -> Result<Contact, ParseError> {
        if trim_lws(value) == "*" {
            Ok(Contact::Star)
        } else {
            NameAddr::parse(value).map(Contact::Addr)
        }
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contact::Star => f.write_str("*"),
            Contact::Addr(a) => a.fmt(f),
        }
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
        let s = trim_lws(value);
        let b = s.as_bytes();
        let token_at = |i: usize| {
            let mut e = i;
            while b.get(e).is_some_and(|&c| is_token_byte(c)) {
                e += 1;
            }
            (s.get(i..e).unwrap_or(""), e)
        };
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport
        let (proto, i) = token_at(0);
        if !proto.eq_ignore_ascii_case("SIP") {
            return Err(bad("Via: protocol is not SIP"));
        }
        let i = skip_lws(b, i);
        if b.get(i) != Some(&b'/') {
            return Err(bad("Via: expected '/'"));
        }
        let (version, i) = token_at(skip_lws(b, i + 1));
        if version != "2.0" {
            return Err(bad("Via: version is not 2.0"));
        }
        let i = skip_lws(b, i);
        if b.get(i) != Some(&b'/') {
            return Err(bad("Via: expected '/'"));
        }
        let (transport, i) = token_at(skip_lws(b, i + 1));
        if transport.is_empty() {
            return Err(bad("Via: missing transport"));
        }
        if !b.get(i).is_some_and(|&c| is_lws(c)) {
            return Err(bad("Via: expected LWS before sent-by"));
        }
        let hs = skip_lws(b, i);
        let he = if b.get(hs) == Some(&b'[') {
            s.get(hs..).and_then(|r| r.find(']')).map(|e| hs + e + 1)
        } else {
            let mut e = hs;
            while b
                .get(e)
                .is_some_and(|&c| !is_lws(c) && !matches!(c, b':' | b';' | b',' | b'['))
            {
                e += 1;
            }
            Some(e)
        }
        .ok_or_else(|| bad("Via: bad host"))?;
        let host = s
            .get(hs..he)
            .and_then(Host::parse)
            .ok_or_else(|| bad("Via: bad host"))?;
        let mut i = skip_lws(b, he);
        let mut port = None;
        if b.get(i) == Some(&b':') {
            let ps = skip_lws(b, i + 1);
            let mut pe = ps;
            while b.get(pe).is_some_and(u8::is_ascii_digit) {
                pe += 1;
            }
            let p = s
                .get(ps..pe)
                .and_then(parse_u32)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad("Via: bad port"))?;
            port = Some(p);
            i = pe;
        } else {
            i = he;
        }
        let params = parse_header_params(s, i)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
    /// The `received` parameter as an address (IPv6 with or without `[]`).
    pub fn received(&self) -> Option<IpAddr> {
        let v = self.params.value("received")?;
        let v = v
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(v);
        v.parse().ok()
    }
    /// `None`: no rport; `Some(None)`: `;rport` without value; `Some(Some(p))`.
    /// A value that is not a port number counts as no value.
    pub fn rport(&self) -> Option<Option<u16>> {
        let v = self.params.get("rport")?;
        Some(v.and_then(parse_u32).and_then(|p| u16::try_from(p).ok()))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// CSeq: sequence number and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// `1*DIGIT LWS Method`; the number must fit in 32 bits.
    pub fn parse(value: &str) -> Result<CSeq, ParseError> {
        let s = trim_lws(value);
        let ws = s.find([' ', '\t', '\r', '\n']).ok_or_else(|| bad("CSeq"))?;
        let seq = s
            .get(..ws)
            .and_then(parse_u32)
            .ok_or_else(|| bad("CSeq: bad number"))?;
        let method = trim_lws(s.get(ws..).unwrap_or(""));
        if !is_token(method) {
            return Err(bad("CSeq: bad method"));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn split() {
        assert_eq!(
            split_list(r#""Doe, John" <sip:a@b>;x="1,2", <sip:c@d>  ,,"#),
            vec![r#""Doe, John" <sip:a@b>;x="1,2""#, "<sip:c@d>"]
        );
        assert!(split_list("").is_empty());
    }

    #[test]
    fn name_addr_forms() {
        let a =
            NameAddr::parse(r#" "Doe, \"J\"" <sip:j@example.com;lr>;tag=1 ; x = "a;b" "#).unwrap();
        assert_eq!(a.display.as_deref(), Some(r#"Doe, "J""#));
        assert_eq!(a.uri.host, Host::Name("example.com".into()));
        assert!(a.uri.params.has("lr"));
        assert_eq!(a.tag(), Some("1"));
        assert_eq!(a.params.value("x"), Some("a;b"));
        assert_eq!(
            a.to_string(),
            r#""Doe, \"J\"" <sip:j@example.com;lr>;tag=1;x="a;b""#
        );
        assert_eq!(NameAddr::parse(&a.to_string()).unwrap(), a);

        // addr-spec: params belong to the header
        let b = NameAddr::parse("sip:alice@example.com;tag=88sja8x").unwrap();
        assert_eq!(b.tag(), Some("88sja8x"));
        assert!(b.uri.params.0.is_empty());
        assert_eq!(b.to_string(), "<sip:alice@example.com>;tag=88sja8x");

        let c = NameAddr::parse("Bob Smith<sip:bob@[2001:db8::1]:5062>").unwrap();
        assert_eq!(c.display.as_deref(), Some("Bob Smith"));
        assert_eq!(c.uri.host, Host::V6("2001:db8::1".parse().unwrap()));
        assert_eq!(c.uri.port, Some(5062));

        let d = NameAddr::parse("<tel:+1-201-555-0123>").unwrap();
        assert_eq!(d.uri.user.as_deref(), Some("+1-201-555-0123"));

        for bad in [
            "",
            "\"unterminated <sip:a@b>",
            "Bell, Alexander <sip:a@b>",
            "<sip:a@b",
            "< sip:a@b >",
            "<sip:a@b>;;tag=1",
            "<sip:a@b> junk",
            "sip:a@b?x=y",
            "<http://example.com>",
            "\"x\" sip:a@b",
            "sip:a@b, sip:c@d",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn contact() {
        assert_eq!(Contact::parse(" * ").unwrap(), Contact::Star);
        let c = Contact::parse("<sip:a@b>;expires=60;q=0.5").unwrap();
        match c {
            Contact::Addr(a) => assert_eq!(a.params.value("expires"), Some("60")),
            Contact::Star => panic!(),
        }
    }

    #[test]
    fn via_forms() {
        let v =
            Via::parse("SIP/2.0/udp host.example.com:5060;branch=z9hG4bK1;rport;received=10.0.0.1")
                .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::Name("host.example.com".into()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP host.example.com:5060;branch=z9hG4bK1;rport;received=10.0.0.1"
        );
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);

        let v = Via::parse("SIP  /  2.0 /\r\n TCP   [2001:db8::9:1] : 5070 ; branch = z9hG4bKx ; rport=5070 ; received=2001:db8::9:255").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(
            v.host,
            Host::V6("2001:db8::9:1".parse::<Ipv6Addr>().unwrap())
        );
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport(), Some(Some(5070)));
        assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/TCP [2001:db8::9:1]:5070;branch=z9hG4bKx;rport=5070;received=2001:db8::9:255"
        );

        let v = Via::parse("SIP/2.0/WSS 192.0.2.1;received=[2001:db8::1]").unwrap();
        assert_eq!(v.host, Host::V4("192.0.2.1".parse().unwrap()));
        assert_eq!(v.port, None);
        assert_eq!(v.received(), Some("2001:db8::1".parse().unwrap()));

        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/3.0/UDP host",
            "HTTP/2.0/UDP host",
            "SIP/2.0 host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP host;;branch=1",
            "SIP/2.0/UDP host junk",
            "SIP/2.0/UDP ho st",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cseq() {
        let c = CSeq::parse(" 4711  INVITE ").unwrap();
        assert_eq!(c.seq, 4711);
        assert_eq!(c.method, Method::Invite);
        assert_eq!(c.to_string(), "4711 INVITE");
        assert_eq!(
            CSeq::parse("1 FOO").unwrap().method,
            Method::Other("FOO".into())
        );
        assert_eq!(CSeq::parse("4294967295 ACK").unwrap().seq, u32::MAX);
        for bad in [
            "",
            "1",
            "INVITE",
            "1INVITE",
            "-1 INVITE",
            "x INVITE",
            "4294967296 INVITE",
            "36893488147419103232 INVITE",
            "1 INVITE x",
            "1 IN:VITE",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad:?}");
        }
    }
}
