//! Size limits applied while parsing: [`Limits`].

/// Size limits applied while parsing; anything over them is a
/// [`ParseError`](super::ParseError).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Whole message including body.
    pub max_message: usize,
    /// Number of header lines (after unfolding).
    pub max_headers: usize,
    /// One header line including continuation lines.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 65_535,
            max_headers: 128,
            max_line: 8_192,
        }
    }
}
