//! Parsing of authentication header values (RFC 3261 §25 / RFC 7616):
//! `Digest name=value, name="quoted", …`.

use super::parse::{is_lws, is_token_byte, parse_quoted, skip_lws, trim_lws};

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
}
