//! The `exten` grammar (spec §2.2): `[L]['#'S]['(' LIST ')'][('='|'~')F]`.

use super::ForwardKind;

/// Parsed `exten` of a user client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exten {
    pub long: Option<String>,
    pub short: Option<String>,
    /// 1-based positions in the client's group, in list order.
    pub hunt: Vec<usize>,
    pub forward: Option<(ForwardKind, String)>,
}

impl Exten {
    /// Parse an exten value; the error is a message without line number.
    pub fn parse(value: &str) -> Result<Exten, String> {
        todo!("{value}")
    }
}
