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

/// Most digits a number may have (a forwarding target, a long or short
/// number, a callerid, a feature code's number): E.164 allows 15; 32
/// leaves room for prefixes and never holds a number sipd could not route.
pub const MAX_NUMBER_DIGITS: usize = 32;

/// What a number is, for error messages.
pub const NUMBER_RULE: &str = "1 to 32 digits, optionally after a leading '+'";

/// A number a client can dial or forward to: 1 to [`MAX_NUMBER_DIGITS`]
/// ASCII digits, optionally after one leading `+`. The one check for
/// every place a number enters: `sipctl fwd`, the control socket's `fwd`,
/// star codes (`*72F`), sip.conf, the store.
pub fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty()
        && digits.len() <= MAX_NUMBER_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `s` as an error message shows it: whole when short, else its first 32
/// characters and its length (a million digits make no error message).
pub fn shown(s: &str) -> String {
    let n = s.chars().count();
    if n <= 40 {
        s.to_string()
    } else {
        let head: String = s.chars().take(32).collect();
        format!("{head}... ({n} characters)")
    }
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
    fn numbers() {
        for ok in ["1", "+1", "0123456789", "+74991234567"] {
            assert!(is_number(ok), "{ok}");
        }
        let longest = "9".repeat(MAX_NUMBER_DIGITS);
        assert!(is_number(&longest));
        assert!(is_number(&format!("+{longest}")));
        for bad in ["", "+", "++1", "1+", "a1", "1 2", "*72", "\u{ff11}", "+-1"] {
            assert!(!is_number(bad), "{bad}");
        }
        assert!(!is_number(&format!("{longest}9")));
        assert!(!is_number(&format!("+{longest}9")));
        assert!(!is_number(&"1".repeat(1_000_000)));
    }

    #[test]
    fn long_values_are_shown_shortened() {
        assert_eq!(shown("4991234567"), "4991234567");
        assert_eq!(shown(&"7".repeat(40)), "7".repeat(40));
        assert_eq!(
            shown(&"1".repeat(1_000_000)),
            format!("{}... (1000000 characters)", "1".repeat(32))
        );
        // Characters, not bytes: never cut inside one.
        assert_eq!(
            shown(&"\u{e9}".repeat(41)),
            format!("{}... (41 characters)", "\u{e9}".repeat(32))
        );
    }

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
