//! `;name[=value]` header parameters: [`Params`] and their parsing.

use std::fmt;

use super::error::ParseError;
use super::parse::{is_lws, is_token_byte, parse_quoted, skip_lws, write_quoted};

/// `;name[=value]` parameters, order kept, names compared case-insensitively.
/// Quoted values are stored unquoted and unescaped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// `None`: absent; `Some(None)`: present without value; `Some(Some(v))`: with value.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
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
        let value = value.map(str::to_string);
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }
    /// Remove every parameter called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

impl Params {
    /// Append `;name[=value]` as `Display` writes it.
    pub fn push_one(out: &mut String, name: &str, value: Option<&str>) {
        out.push(';');
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            if is_raw_value(v) {
                out.push_str(v);
            } else {
                let _ = write_quoted(out, v);
            }
        }
    }
}

/// A value written without quotes: a token, or a host.
fn is_raw_value(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| is_token_byte(b) || matches!(b, b':' | b'[' | b']'))
}

/// Writes `;name=value` for each param (quoting values that are not tokens).
///
/// A value that is a host (IPv4, `[IPv6]` or a bare IPv6 address as in
/// `received=2001:db8::1`, i.e. token characters plus `:`, `[`, `]`) is
/// written unquoted too, as RFC 3261 `gen-value = token / host /
/// quoted-string` allows; an empty value is written `=""`.
impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in &self.0 {
            write!(f, ";{name}")?;
            if let Some(v) = value {
                f.write_str("=")?;
                if is_raw_value(v) {
                    f.write_str(v)?;
                } else {
                    write_quoted(f, v)?;
                }
            }
        }
        Ok(())
    }
}

/// Parse `*( SEMI generic-param )` header parameters from `s` starting at
/// `i`; the rest of the string must be parameters only (LWS allowed around
/// `;` and `=`). Values: quoted-string (unquoted, unescaped) or a run of
/// characters other than LWS, `;`, `,`, `"`.
pub(crate) fn parse_header_params(s: &str, mut i: usize) -> Result<Params, ParseError> {
    let b = s.as_bytes();
    let mut params = Params::default();
    loop {
        i = skip_lws(b, i);
        match b.get(i) {
            None => return Ok(params),
            Some(b';') => i += 1,
            Some(_) => return Err(ParseError::BadHeader("unexpected text after value".into())),
        }
        i = skip_lws(b, i);
        let ns = i;
        while b.get(i).is_some_and(|&c| is_token_byte(c)) {
            i += 1;
        }
        let name = s.get(ns..i).unwrap_or("");
        if name.is_empty() {
            return Err(ParseError::BadHeader("empty parameter name".into()));
        }
        let after_name = i;
        i = skip_lws(b, i);
        if b.get(i) == Some(&b'=') {
            i = skip_lws(b, i + 1);
            if b.get(i) == Some(&b'"') {
                let (v, end) = parse_quoted(s, i)
                    .ok_or_else(|| ParseError::BadHeader("unterminated quoted string".into()))?;
                params.0.push((name.to_string(), Some(v)));
                i = end;
            } else {
                let vs = i;
                while b
                    .get(i)
                    .is_some_and(|&c| !is_lws(c) && !matches!(c, b';' | b',' | b'"'))
                {
                    i += 1;
                }
                params.0.push((
                    name.to_string(),
                    Some(s.get(vs..i).unwrap_or("").to_string()),
                ));
            }
        } else {
            params.0.push((name.to_string(), None));
            i = after_name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let mut p = Params::default();
        p.set("tag", Some("abc"));
        p.set("lr", None);
        p.set("TAG", Some("def"));
        assert_eq!(p.value("tag"), Some("def"));
        assert_eq!(p.get("LR"), Some(None));
        assert!(!p.has("x"));
        p.set("x", Some("a b"));
        p.set("e", Some(""));
        p.set("received", Some("2001:db8::1"));
        assert_eq!(
            p.to_string(),
            r#";tag=def;lr;x="a b";e="";received=2001:db8::1"#
        );
        p.remove("Tag");
        assert!(!p.has("tag"));
        p.set("q", Some("say \"hi\" \\"));
        assert!(p.to_string().ends_with(r#";q="say \"hi\" \\""#));
    }

    #[test]
    fn header_params() {
        let p =
            parse_header_params(" ; tag = abc ;lr; x=\"a b;c\";received=2001:db8::1", 0).unwrap();
        assert_eq!(p.value("tag"), Some("abc"));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.value("x"), Some("a b;c"));
        assert_eq!(p.value("received"), Some("2001:db8::1"));
        assert!(parse_header_params(";;tag=1", 0).is_err());
        assert!(parse_header_params("junk", 0).is_err());
        assert!(parse_header_params(";x=\"open", 0).is_err());
        assert!(parse_header_params("", 0).unwrap().0.is_empty());
    }
}
