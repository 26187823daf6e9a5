//! Parsing of authentication header values (RFC 3261 §25 / RFC 7616):
//! `Digest name=value, name="quoted", …`; and whether a digest `uri` names
//! the Request-URI ([`digest_uri_matches`]).

use super::parse::{is_lws, is_token_byte, parse_quoted, skip_lws, trim_lws};
use super::uri::{Scheme, Uri};

/// A credentials or challenge header value split into scheme and params.
/// Param names are lower-cased; quoted values unquoted and unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthParams {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl AuthParams {
    /// `None` when the value is not `scheme param-list`.
    ///
    /// LWS is allowed around `=` and `,`; empty list elements are skipped;
    /// an unquoted value runs to the next LWS or comma. A scheme without
    /// params is accepted (empty list).
    pub fn parse(value: &str) -> Option<AuthParams> {
        let s = trim_lws(value);
        let b = s.as_bytes();
        let mut i = 0;
        while b.get(i).is_some_and(|&c| is_token_byte(c)) {
            i += 1;
        }
        let scheme = s.get(..i)?;
        if scheme.is_empty() || b.get(i).is_some_and(|&c| !is_lws(c)) {
            return None;
        }
        let mut params = Vec::new();
        loop {
            i = skip_lws(b, i);
            match b.get(i) {
                None => break,
                Some(b',') => {
                    i += 1;
                    continue;
                }
                Some(_) => {}
            }
            let ns = i;
            while b.get(i).is_some_and(|&c| is_token_byte(c)) {
                i += 1;
            }
            let name = s.get(ns..i)?;
            if name.is_empty() {
                return None;
            }
            i = skip_lws(b, i);
            if b.get(i) != Some(&b'=') {
                return None;
            }
            i = skip_lws(b, i + 1);
            let value = if b.get(i) == Some(&b'"') {
                let (v, end) = parse_quoted(s, i)?;
                i = end;
                v
            } else {
                let vs = i;
                while b
                    .get(i)
                    .is_some_and(|&c| !is_lws(c) && c != b',' && c != b'"')
                {
                    i += 1;
                }
                s.get(vs..i)?.to_string()
            };
            params.push((name.to_ascii_lowercase(), value));
            i = skip_lws(b, i);
            match b.get(i) {
                None => break,
                Some(b',') => i += 1,
                Some(_) => return None,
            }
        }
        Some(AuthParams {
            scheme: scheme.to_string(),
            params,
        })
    }

    /// First value of param `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Whether the digest `uri` of credentials names the same resource as the
/// Request-URI (RFC 7616 §3.4.6, RFC 3261 §22.4): the same string, or, for
/// SIP and SIPS URIs, equal URIs by RFC 3261 §19.1.4 ([`sip_uris_equal`]).
/// Other schemes (tel, `*`, …) must be the same string.
pub fn digest_uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    match (Uri::parse(digest_uri), Uri::parse(request_uri)) {
        (Ok(a), Ok(b)) => sip_uris_equal(&a, &b),
        _ => false,
    }
}

/// SIP URI equality, RFC 3261 §19.1.4: the same scheme (sip or sips; tel
/// URIs are never equal here); user and password equal case-sensitively
/// after %-unescaping; host equal ignoring case (a name never equals an
/// address); port equal (absent is not 5060); URI parameters: any that
/// appears in both must be equal (names and values ignoring case, after
/// unescaping), `user`, `ttl`, `method`, `maddr` and `transport` must not
/// appear in one only (the rule lists the first four; the section's own
/// examples, and PJSIP, treat `transport` the same way), others in one
/// only are ignored; headers: the same set in both
/// (names ignoring case, values exactly). A URI that repeats a parameter
/// name equals no other URI.
pub fn sip_uris_equal(a: &Uri, b: &Uri) -> bool {
    if a.scheme != b.scheme || a.scheme == Scheme::Tel {
        return false;
    }
    if a.user != b.user || a.password != b.password {
        return false;
    }
    if !a.host.eq_ignore_case(&b.host) || a.port != b.port {
        return false;
    }
    let (Some(pa), Some(pb)) = (folded_params(a), folded_params(b)) else {
        return false;
    };
    let must_match =
        |name: &[u8]| matches!(name, b"user" | b"ttl" | b"method" | b"maddr" | b"transport");
    let lookup =
        |ps: &[Folded], name: &[u8]| ps.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    for (name, value) in &pa {
        match lookup(&pb, name) {
            Some(other) if &other != value => return false,
            None if must_match(name) => return false,
            _ => {}
        }
    }
    if pb
        .iter()
        .any(|(name, _)| must_match(name) && lookup(&pa, name).is_none())
    {
        return false;
    }
    sorted_headers(a) == sorted_headers(b)
}

/// URI headers with lower-cased names, sorted (their order does not matter).
fn sorted_headers(u: &Uri) -> Vec<(String, &str)> {
    let mut h: Vec<(String, &str)> = u
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect();
    h.sort_unstable();
    h
}

/// A URI parameter's name and value, unescaped and lower-cased.
type Folded = (Vec<u8>, Option<Vec<u8>>);

/// URI parameters unescaped and lower-cased; `None` if a name repeats or
/// an escape is bad.
fn folded_params(u: &Uri) -> Option<Vec<Folded>> {
    let mut out: Vec<Folded> = Vec::with_capacity(u.params.0.len());
    for (name, value) in &u.params.0 {
        let name = unescape_folded(name)?;
        let value = match value {
            Some(v) => Some(unescape_folded(v)?),
            None => None,
        };
        if out.iter().any(|(n, _)| *n == name) {
            return None;
        }
        out.push((name, value));
    }
    Some(out)
}

/// %-unescaped and ASCII-lower-cased bytes.
fn unescape_folded(s: &str) -> Option<Vec<u8>> {
    let hex = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let h = hex(*b.get(i + 1)?)?;
            let l = hex(*b.get(i + 2)?)?;
            out.push(((h << 4) | l).to_ascii_lowercase());
            i += 3;
        } else {
            out.push(c.to_ascii_lowercase());
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_credentials() {
        let a = AuthParams::parse(
            "Digest username=\"bob\", realm=\"x\", nc=00000001, qop=auth, uri=\"sip:a@b;x=1\"",
        )
        .unwrap();
        assert_eq!(a.scheme, "Digest");
        assert_eq!(a.get("username"), Some("bob"));
        assert_eq!(a.get("REALM"), Some("x"));
        assert_eq!(a.get("nc"), Some("00000001"));
        assert_eq!(a.get("qop"), Some("auth"));
        assert_eq!(a.get("uri"), Some("sip:a@b;x=1"));
        assert_eq!(a.get("cnonce"), None);
    }

    #[test]
    fn lws_and_escapes() {
        let a = AuthParams::parse(
            "  Digest   Username = \"a\\\"b\\\\c\" ,\r\n realm=\"r, with comma\",,\tNONCE= abc ",
        )
        .unwrap();
        assert_eq!(a.params[0], ("username".to_string(), "a\"b\\c".to_string()));
        assert_eq!(a.get("realm"), Some("r, with comma"));
        assert_eq!(a.get("nonce"), Some("abc"));
        assert_eq!(AuthParams::parse("Digest").unwrap().params.len(), 0);
    }

    #[test]
    fn garbage() {
        for g in [
            "",
            "   ",
            "\"Digest\" a=b",
            "Digest username",
            "Digest username=\"unterminated",
            "Digest a=b c=d",
            "Digest =b",
            "Digest, a=b",
            "Digest a=\"x\"y",
        ] {
            assert_eq!(AuthParams::parse(g), None, "{g:?}");
        }
    }

    #[test]
    fn rfc3261_uri_comparison_examples() {
        // RFC 3261 §19.1.4, equivalent pairs.
        for (a, b) in [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ] {
            assert!(digest_uri_matches(a, b), "{a} = {b}");
            assert!(digest_uri_matches(b, a), "{b} = {a}");
        }
        // Not equivalent.
        for (a, b) in [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ] {
            assert!(!digest_uri_matches(a, b), "{a} != {b}");
            assert!(!digest_uri_matches(b, a), "{b} != {a}");
        }
    }

    #[test]
    fn digest_uri_against_request_uri() {
        let ruri = "sip:1002@pbx.example.com:5060;user=phone";
        let same = [
            ruri,
            "sip:1002@PBX.Example.COM:5060;USER=Phone",
            "sip:%31%30%302@pbx.example.com:5060;user=phone",
            "sip:1002@pbx.example.com:5060;user=phone;lr",
            "sip:1002@pbx.example.com:5060;user=%70hone;x-whatever=1",
        ];
        for u in same {
            assert!(digest_uri_matches(u, ruri), "{u}");
        }
        let other = [
            // The attack: another number.
            "sip:1003@pbx.example.com:5060;user=phone",
            // What SIPp sends without -auth_uri: the server, no user.
            "sip:pbx.example.com:5060",
            "sips:1002@pbx.example.com:5060;user=phone",
            "sip:1002@pbx.example.com;user=phone",
            "sip:1002@pbx.example.com:5061;user=phone",
            "sip:1002@pbx.example.com:5060",
            "sip:1002@pbx.example.com:5060;user=ip",
            "sip:1002@pbx.example.com:5060;user=phone;maddr=10.0.0.1",
            "sip:1002@pbx.example.com:5060;user=phone;transport=tcp",
            "sip:1002@pbx.example.com:5060;user=phone;user=phone",
            "sip:1002:pw@pbx.example.com:5060;user=phone",
            "sip:1002@pbx.example.com:5060;user=phone?Subject=x",
            "sip:1002@10.0.0.1:5060;user=phone",
            "tel:1002",
            "*",
            "",
            "sip:1002@pbx.example.com:5060;user=%zz",
        ];
        for u in other {
            assert!(!digest_uri_matches(u, ruri), "{u}");
            assert!(!digest_uri_matches(ruri, u), "{u}");
        }
        // The user part is case-sensitive, the host is not; IPv6 addresses
        // compare as addresses.
        assert!(!digest_uri_matches("sip:Alice@h", "sip:alice@h"));
        assert!(digest_uri_matches(
            "sip:alice@[::1]:5060",
            "sip:alice@[0:0::1]:5060"
        ));
        assert!(!digest_uri_matches("sip:alice@[::1]", "sip:alice@[::2]"));
        // Other schemes: only the same string.
        assert!(digest_uri_matches("tel:+74951234567", "tel:+74951234567"));
        assert!(!digest_uri_matches("tel:+74951234567", "TEL:+74951234567"));
        assert!(digest_uri_matches("*", "*"));
        // Escaped parameter values that are not UTF-8 stay distinct.
        assert!(!digest_uri_matches("sip:h;x=%ff", "sip:h;x=%fe"));
        assert!(digest_uri_matches("sip:h;x=%FF", "sip:h;x=%ff"));
    }

    #[test]
    fn uri_comparison_is_an_equivalence_on_samples() {
        // Reflexive and symmetric over a mix of the URIs above.
        let uris = [
            "sip:1002@pbx.example.com:5060;user=phone",
            "sip:1002@PBX.Example.COM:5060;USER=Phone",
            "sip:%31002@pbx.example.com:5060;user=phone;lr",
            "sip:1002@pbx.example.com:5060",
            "sip:1002@pbx.example.com",
            "sips:1002@pbx.example.com",
            "sip:pbx.example.com",
            "sip:1002@pbx.example.com;transport=tcp",
            "sip:1002@pbx.example.com;transport=TCP;ob",
            "sip:1002@[::1]",
            "tel:1002",
            "garbage",
        ];
        for a in uris {
            assert!(digest_uri_matches(a, a), "{a}");
            for b in uris {
                assert_eq!(
                    digest_uri_matches(a, b),
                    digest_uri_matches(b, a),
                    "{a} / {b}"
                );
                for c in uris {
                    if digest_uri_matches(a, b) && digest_uri_matches(b, c) {
                        assert!(digest_uri_matches(a, c), "{a} / {b} / {c}");
                    }
                }
            }
        }
    }
}
