//! The forwarding of one client (spec §2.2, §5, §6), the one type sipd (sip.conf,
//! store, router, feature codes) and sipctl share.
//!
//! Wire format (JSON, as before this type existed):
//! - its own serde form, as in a `fwd` reply's client (flattened into
//!   [`FwdState`](crate::FwdState)): `{"kind":"none"}`,
//!   `{"kind":"always","number":"F"}`, `{"kind":"unavail","number":"F"}`;
//! - as the `action` of a `fwd` request ([`action`]) the "no forwarding" value
//!   is spelled `clear`: `{"kind":"clear"}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The most digits a phone number may have (E.164 allows 15; prefixes and
/// short codes fit easily): a longer "number" is a typo or an attack.
pub const MAX_NUMBER_DIGITS: usize = 32;

/// A number a client can dial or forward to: 1 to [`MAX_NUMBER_DIGITS`]
/// ASCII digits with an optional leading `+`. The one check for every place
/// a number enters (sip.conf, feature codes, the control socket, sipctl).
pub fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty()
        && digits.len() <= MAX_NUMBER_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A client's forwarding: none, every call to a number (`=F`, `*72F`), or calls
/// to a number when the client is unavailable (`~F`, `*71F`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Forwarding {
    /// No forwarding (as a phone/sipctl override: "off", overriding sip.conf).
    #[default]
    #[serde(rename = "none")]
    None,
    /// Every call goes to `number`.
    #[serde(rename = "always")]
    Always { number: String },
    /// Calls go to `number` when the client is unavailable.
    #[serde(rename = "unavail")]
    Unavailable { number: String },
}

impl Forwarding {
    /// [`Forwarding::Always`] to `number`.
    pub fn always(number: impl Into<String>) -> Forwarding {
        Forwarding::Always {
            number: number.into(),
        }
    }

    /// [`Forwarding::Unavailable`] to `number`.
    pub fn unavailable(number: impl Into<String>) -> Forwarding {
        Forwarding::Unavailable {
            number: number.into(),
        }
    }

    /// The number forwarded to, `None` for [`Forwarding::None`].
    pub fn number(&self) -> Option<&str> {
        match self {
            Forwarding::None => None,
            Forwarding::Always { number } | Forwarding::Unavailable { number } => Some(number),
        }
    }

    /// `none`, `always` or `unavail` (as `sipctl fwd` shows it).
    pub fn kind_str(&self) -> &'static str {
        match self {
            Forwarding::None => "none",
            Forwarding::Always { .. } => "always",
            Forwarding::Unavailable { .. } => "unavail",
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Forwarding::None
    }
}

/// `none`, `always F`, `unavail F`.
impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number() {
            None => f.write_str(self.kind_str()),
            Some(n) => write!(f, "{} {n}", self.kind_str()),
        }
    }
}

/// Serde of the `action` of a `fwd` request (`Option<Forwarding>`, absent for
/// "show"): `{"kind":"always","number":"F"}`, `{"kind":"unavail","number":"F"}`,
/// and [`Forwarding::None`] as `{"kind":"clear"}`.
pub mod action {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Forwarding;

    #[derive(Serialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum ActionRef<'a> {
        Always { number: &'a str },
        Unavail { number: &'a str },
        Clear,
    }

    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Action {
        Always { number: String },
        Unavail { number: String },
        Clear,
    }

    pub fn serialize<S: Serializer>(
        action: &Option<Forwarding>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let wire = action.as_ref().map(|f| match f {
            Forwarding::None => ActionRef::Clear,
            Forwarding::Always { number } => ActionRef::Always { number },
            Forwarding::Unavailable { number } => ActionRef::Unavail { number },
        });
        wire.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Forwarding>, D::Error> {
        let wire = Option::<Action>::deserialize(deserializer)?;
        Ok(wire.map(|a| match a {
            Action::Always { number } => Forwarding::Always { number },
            Action::Unavail { number } => Forwarding::Unavailable { number },
            Action::Clear => Forwarding::None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_and_display() {
        assert_eq!(
            Forwarding::always("1002"),
            Forwarding::Always {
                number: "1002".into()
            }
        );
        assert_eq!(
            Forwarding::unavailable("+44"),
            Forwarding::Unavailable {
                number: "+44".into()
            }
        );
        assert_eq!(Forwarding::default(), Forwarding::None);
        assert_eq!(Forwarding::None.number(), None);
        assert_eq!(Forwarding::always("7").number(), Some("7"));
        assert_eq!(Forwarding::unavailable("8").number(), Some("8"));
        assert_eq!(Forwarding::None.kind_str(), "none");
        assert_eq!(Forwarding::always("7").kind_str(), "always");
        assert_eq!(Forwarding::unavailable("7").kind_str(), "unavail");
        assert!(Forwarding::None.is_none());
        assert!(!Forwarding::always("7").is_none());
        assert_eq!(Forwarding::None.to_string(), "none");
        assert_eq!(
            Forwarding::always("4991234567").to_string(),
            "always 4991234567"
        );
        assert_eq!(Forwarding::unavailable("+44").to_string(), "unavail +44");
    }

    #[test]
    fn own_serde_form() {
        let cases = [
            (Forwarding::None, r#"{"kind":"none"}"#),
            (
                Forwarding::always("4991234567"),
                r#"{"kind":"always","number":"4991234567"}"#,
            ),
            (
                Forwarding::unavailable("+44123"),
                r#"{"kind":"unavail","number":"+44123"}"#,
            ),
        ];
        for (f, json) in cases {
            assert_eq!(serde_json::to_string(&f).unwrap(), json);
            assert_eq!(serde_json::from_str::<Forwarding>(json).unwrap(), f);
        }
        for bad in [
            r#"{"kind":"clear"}"#,
            r#"{"kind":"always"}"#,
            r#"{"kind":"sometimes"}"#,
            r#"{"number":"1"}"#,
        ] {
            assert!(serde_json::from_str::<Forwarding>(bad).is_err(), "{bad}");
        }
    }
}
