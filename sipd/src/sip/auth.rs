//! Parsing of authentication header values (RFC 3261 §25 / RFC 7616):
//! `Digest name=value, name="quoted", …`.

/// A credentials or challenge header value split into scheme and params.
/// Param names are lower-cased; quoted values unquoted and unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthParams {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl AuthParams {
    /// `None` when the value is not `scheme param-list`.
    pub fn parse(value: &str) -> Option<AuthParams> {
        todo!("{value}")
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        todo!("{name}")
    }
}
