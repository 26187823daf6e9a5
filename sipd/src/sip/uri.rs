//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::params::Params;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
}

/// Host part: a domain name (kept as written, compared case-insensitively by
/// callers), an IPv4 address or an IPv6 reference (written `[…]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
            Host::Name(_) => None,
        }
    }
    /// Parse `name`, `1.2.3.4` or `[::1]`. A name may hold ASCII letters,
    /// digits, `-`, `.` and `_` (lenient: labels are not checked further).
    pub fn parse(s: &str) -> Option<Host> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']')?;
            return inner.parse::<Ipv6Addr>().ok().map(Host::V6);
        }
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return None;
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            if let Ok(a) = s.parse::<Ipv4Addr>() {
                return Some(Host::V4(a));
            }
        }
        Some(Host::Name(s.to_string()))
    }

    /// Case-insensitive for names, exact for addresses.
    pub fn eq_ignore_case(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            _ => self == other,
        }
    }
}

/// Writes IPv6 in brackets.
impl Host {
    /// Append the host as written in a URI or Via (IPv6 in brackets).
    pub fn push_to(&self, out: &mut String) {
        match self {
            Host::Name(n) => out.push_str(n),
            Host::V4(a) => push_ipv4(out, *a),
            Host::V6(a) => {
                use fmt::Write as _;
                let _ = write!(out, "[{a}]");
            }
        }
    }
}

/// Append an IP address (IPv6 without brackets, as in `received=`).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => push_ipv4(out, a),
        IpAddr::V6(a) => {
            use fmt::Write as _;
            let _ = write!(out, "{a}");
        }
    }
}

/// Dotted quad without the formatting machinery (this is on the packet
/// path: `Ipv4Addr`'s `Display` showed up in profiles).
fn push_ipv4(out: &mut String, a: std::net::Ipv4Addr) {
    for (i, o) in a.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        super::parse::push_u32(out, u32::from(o));
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriError(pub String);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad URI: {}", self.0)
    }
}

impl std::error::Error for UriError {}

/// A parsed URI. `user` and `password` are %-unescaped. For `tel:` URIs the
/// number (e.g. `+74951234567`) is in `user` and `host` is `Host::Name("")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
    /// `?name=value&…` headers, %-unescaped.
    pub headers: Vec<(String, String)>,
}

fn err(what: &str, s: &str) -> UriError {
    UriError(format!("{what}: {s:?}"))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// %-unescape; `None` on a bad escape or when the result is not UTF-8.
fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let h = hex(*b.get(i + 1)?)?;
            let l = hex(*b.get(i + 2)?)?;
            out.push((h << 4) | l);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Characters written unescaped in each URI component.
#[derive(Clone, Copy)]
enum Part {
    User,
    Password,
    Header,
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

fn keep(part: Part, c: u8) -> bool {
    is_unreserved(c)
        || match part {
            // user-unreserved minus '?', which would be ambiguous with the
            // start of the headers when the URI is parsed again.
            Part::User => matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'/'),
            Part::Password => matches!(c, b'&' | b'=' | b'+' | b'$' | b','),
            Part::Header => matches!(c, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$'),
        }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str, part: Part) -> fmt::Result {
    for &c in s.as_bytes() {
        if keep(part, c) {
            fmt::Write::write_char(f, char::from(c))?;
        } else {
            write!(f, "%{c:02X}")?;
        }
    }
    Ok(())
}

/// URI parameters `;name[=value]`, stored as written (not unescaped).
fn parse_uri_params(s: &str) -> Result<Params, UriError> {
    let mut p = Params::default();
    for seg in s.split(';').filter(|x| !x.is_empty()) {
        let (name, value) = match seg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (seg, None),
        };
        if name.is_empty() {
            return Err(err("empty URI parameter name", s));
        }
        p.0.push((name.to_string(), value));
    }
    Ok(p)
}

impl Uri {
    /// Parse a `sip:`, `sips:` or `tel:` URI (scheme case-insensitive).
    ///
    /// No white space or control characters are allowed anywhere. `user`,
    /// `password` and headers are %-unescaped; URI parameters are kept as
    /// written. For sip/sips the userinfo ends at the first `@`; when that
    /// `@` comes after a `?` (which may be in the user part or start the
    /// headers), the `?` is taken as the start of the headers if what is
    /// before it is a valid host, else as part of the user.
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(err("white space or control character in URI", s));
        }
        let (scheme, rest) = s.split_once(':').ok_or_else(|| err("no scheme", s))?;
        let scheme = if scheme.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            return Err(err("unsupported scheme", s));
        };
        if scheme == Scheme::Tel {
            let (number, params) = rest.split_once(';').unwrap_or((rest, ""));
            if number.is_empty() || number.contains(['?', '@']) {
                return Err(err("bad tel number", s));
            }
            let user = unescape(number).ok_or_else(|| err("bad escape", s))?;
            return Ok(Uri {
                scheme,
                user: Some(user),
                password: None,
                host: Host::Name(String::new()),
                port: None,
                params: parse_uri_params(params)?,
                headers: Vec::new(),
            });
        }
        let at = match (rest.find('@'), rest.find('?')) {
            (Some(at), Some(q)) if q < at => {
                // Is the '?' the start of the headers (host before it)?
                let hostpart = rest.get(..q).unwrap_or("");
                let hostpart = hostpart.split(';').next().unwrap_or("");
                if Uri::parse_hostport(hostpart).is_ok() {
                    None
                } else {
                    Some(at)
                }
            }
            (at, _) => at,
        };
        let (user, password, rest) = match at {
            Some(at) => {
                let userinfo = rest.get(..at).unwrap_or("");
                let (u, p) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                if u.is_empty() {
                    return Err(err("empty user", s));
                }
                let u = unescape(u).ok_or_else(|| err("bad escape in user", s))?;
                let p = match p {
                    Some(p) => Some(unescape(p).ok_or_else(|| err("bad escape in password", s))?),
                    None => None,
                };
                (Some(u), p, rest.get(at + 1..).unwrap_or(""))
            }
            None => (None, None, rest),
        };
        let (before_headers, headers_s) = match rest.split_once('?') {
            Some((a, h)) => (a, Some(h)),
            None => (rest, None),
        };
        let (hostport, params_s) = before_headers
            .split_once(';')
            .unwrap_or((before_headers, ""));
        let (host, port) = Uri::parse_hostport(hostport).map_err(|m| err(m, s))?;
        let params = parse_uri_params(params_s)?;
        let mut headers = Vec::new();
        if let Some(h) = headers_s {
            for pair in h.split('&').filter(|x| !x.is_empty()) {
                let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                let n = unescape(n).ok_or_else(|| err("bad escape in header", s))?;
                let v = unescape(v).ok_or_else(|| err("bad escape in header", s))?;
                if n.is_empty() {
                    return Err(err("empty header name", s));
                }
                headers.push((n, v));
            }
        }
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), &'static str> {
        let (host_s, port_s) = if s.starts_with('[') {
            let close = s.find(']').ok_or("unterminated IPv6 reference")?;
            let (h, rest) = s.split_at(close + 1);
            match rest {
                "" => (h, None),
                r => (
                    h,
                    Some(r.strip_prefix(':').ok_or("junk after IPv6 reference")?),
                ),
            }
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let host = Host::parse(host_s).ok_or("bad host")?;
        let port = match port_s {
            None => None,
            Some(p) => Some(
                super::parse::parse_u32(p)
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or("bad port")?,
            ),
        };
        Ok((host, port))
    }

    /// The scheme as written in URIs (`sip`, `sips`, `tel`).
    pub fn scheme_str(&self) -> &'static str {
        match self.scheme {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
        }
    }
}

/// Serialises with user/password re-escaped where needed, IPv6 in brackets.
impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme_str())?;
        if self.scheme == Scheme::Tel {
            write_escaped(f, self.user.as_deref().unwrap_or(""), Part::User)?;
        } else {
            if let Some(u) = &self.user {
                write_escaped(f, u, Part::User)?;
                if let Some(p) = &self.password {
                    f.write_str(":")?;
                    write_escaped(f, p, Part::Password)?;
                }
                f.write_str("@")?;
            }
            write!(f, "{}", self.host)?;
            if let Some(p) = self.port {
                write!(f, ":{p}")?;
            }
        }
        for (n, v) in &self.params.0 {
            write!(f, ";{n}")?;
            if let Some(v) = v {
                write!(f, "={v}")?;
            }
        }
        if self.scheme != Scheme::Tel {
            for (i, (n, v)) in self.headers.iter().enumerate() {
                f.write_str(if i == 0 { "?" } else { "&" })?;
                write_escaped(f, n, Part::Header)?;
                f.write_str("=")?;
                write_escaped(f, v, Part::Header)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Uri {
        Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("example.com"),
            Some(Host::Name("example.com".into()))
        );
        assert_eq!(
            Host::parse("10.0.0.1"),
            Some(Host::V4("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(Host::parse("[::1]"), Some(Host::V6("::1".parse().unwrap())));
        assert_eq!(Host::parse("::1"), None);
        assert_eq!(Host::parse("[::1"), None);
        assert_eq!(Host::parse("[nothex]"), None);
        assert_eq!(Host::parse(""), None);
        assert_eq!(Host::parse("a b"), None);
        assert_eq!(
            Host::parse("999.1.1.1"),
            Some(Host::Name("999.1.1.1".into()))
        );
        assert_eq!(
            Host::parse("[2001:db8::1]").unwrap().to_string(),
            "[2001:db8::1]"
        );
        assert!(Host::parse("Example.COM")
            .unwrap()
            .eq_ignore_case(&Host::parse("example.com").unwrap()));
    }

    #[test]
    fn sip_uri_parts() {
        let u = p(
            "sip:alice:secret@Example.com:5061;transport=tcp;lr?Subject=hi%20there&Priority=urgent",
        );
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Name("Example.com".into()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.params.value("transport"), Some("tcp"));
        assert!(u.params.has("lr"));
        assert_eq!(
            u.headers,
            vec![
                ("Subject".into(), "hi there".into()),
                ("Priority".into(), "urgent".into())
            ]
        );
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@Example.com:5061;transport=tcp;lr?Subject=hi%20there&Priority=urgent"
        );

        let u = p("SIPS:[2001:db8::10]:5061");
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.user, None);
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.to_string(), "sips:[2001:db8::10]:5061");

        let u = p("sip:192.0.2.4");
        assert_eq!(u.host, Host::V4("192.0.2.4".parse().unwrap()));
        assert_eq!(u.port, None);
    }

    #[test]
    fn escapes_and_odd_users() {
        let u = p("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user.as_deref(), Some("sips:user@example.com"));
        assert_eq!(u.to_string(), "sip:sips%3Auser%40example.com@example.net");
        let u = p("sip:I%20have%20spaces@example.net");
        assert_eq!(u.user.as_deref(), Some("I have spaces"));
        let u = p("sip:null-%00-null@example.com");
        assert_eq!(u.user.as_deref(), Some("null-\0-null"));
        assert_eq!(u.to_string(), "sip:null-%00-null@example.com");
        let u = p("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u@example.net"));
        assert_eq!(u.host, Host::Name("example.com".into()));
        // RFC 4475 3.1.1.2 style: '?' and ';' in the user, odd password.
        let s = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        let u = p(s);
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host, Host::Name("example.com".into()));
        assert_eq!(Uri::parse(&u.to_string()).unwrap(), u);
        // '@' inside headers (unescaped Call-ID in Replaces)
        let u = p("sip:b.example.com?Replaces=12345@192.0.2.1%3Bto-tag%3D1");
        assert_eq!(u.user, None);
        assert_eq!(u.headers[0].1, "12345@192.0.2.1;to-tag=1");
        // escaped param names are kept as written
        let u = p("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.user.as_deref(), Some("caller"));
        assert!(u.params.has("%6C%72"));
        assert_eq!(
            u.to_string(),
            "sip:caller@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"
        );
    }

    #[test]
    fn tel() {
        let u = p("tel:+74951234567;phone-context=example.com");
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some("+74951234567"));
        assert_eq!(u.host, Host::Name(String::new()));
        assert_eq!(u.params.value("phone-context"), Some("example.com"));
        assert_eq!(u.to_string(), "tel:+74951234567;phone-context=example.com");
    }

    #[test]
    fn display_escapes_user() {
        let u = Uri {
            scheme: Scheme::Sip,
            user: Some("a b:c@d?e".into()),
            password: Some("p@ss:w".into()),
            host: Host::V6("::1".parse().unwrap()),
            port: Some(5060),
            params: Params::default(),
            headers: vec![("h".into(), "a b&c".into())],
        };
        let s = u.to_string();
        assert_eq!(s, "sip:a%20b%3Ac%40d%3Fe:p%40ss%3Aw@[::1]:5060?h=a%20b%26c");
        assert_eq!(Uri::parse(&s).unwrap(), u);
    }

    #[test]
    fn bad_uris() {
        for bad in [
            "",
            "sip:",
            "sip:@host",
            "sip:user@",
            "sip:host:port",
            "sip:host:70000",
            "sip:[::1",
            "sip:[::1]x",
            "sip:a b@host",
            "sip:user@host\r\n",
            "sip:%zz@host",
            "sip:%4@host",
            "http://example.com",
            "example.com",
            "tel:",
            "sip:host;=x",
            "sip:ho^st",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?}");
        }
    }
}
