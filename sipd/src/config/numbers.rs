//! Number normalisation (spec §4.3) and context presets (spec §4.4).
//!
//! Edge cases decided here (the spec leaves them open):
//! - the input must be ASCII digits, optionally after one leading `+`;
//!   anything else (empty, `+` alone, spaces, dashes, `*`, letters) is `None`;
//! - `+DIGITS` is already international: the `+` is dropped and nothing else
//!   is done (no `8`/`10` stripping, no prefixes);
//! - a number that is empty after stripping the leading `8` (i.e. `8` alone)
//!   is `None`: it names no subscriber;
//! - the three length rules are alternatives decided on the length after the
//!   `8` is stripped: more than 10 digits → strip a leading `10` if there is
//!   one (and nothing else; a number of more than 10 digits without `10` is
//!   taken as already international, so `74951234567` stays as it is);
//!   exactly 10 → country code + digits; fewer → country + city + digits.

/// Normalise dialed digits: a leading `+` means international (just drop
/// it); otherwise strip one leading `8`, then strip `10` when more than 10
/// digits remain, prepend the country code to exactly 10 digits, and country +
/// city code to fewer. `None` when `dialed` is not `+`? digits.
pub fn normalise(dialed: &str, country: &str, city: &str) -> Option<String> {
    if let Some(intl) = dialed.strip_prefix('+') {
        return all_digits(intl).then(|| intl.to_string());
    }
    if !all_digits(dialed) {
        return None;
    }
    let rest = dialed.strip_prefix('8').unwrap_or(dialed);
    match rest.len() {
        0 => None,
        n if n > 10 => Some(rest.strip_prefix("10").unwrap_or(rest).to_string()),
        10 => Some(format!("{country}{rest}")),
        _ => Some(format!("{country}{city}{rest}")),
    }
}

/// The dialplan regex source of a context preset, `None` for an unknown name.
pub fn preset(context: &str, country: &str, city: &str) -> Option<String> {
    let c = regex::escape(country);
    let cc = regex::escape(city);
    match context {
        "em" => Some(format!(r"^{c}{cc}\d{{2,3}}$")),
        "local" => Some(format!(r"^{c}{cc}\d+$")),
        "domestic" => Some(format!(r"^{c}\d+$")),
        "international" => Some(".+".to_string()),
        _ => None,
    }
}

/// The preset names, for error messages.
pub(super) const PRESETS: &str = "em, local, domestic or international";

/// True for one or more ASCII digits.
pub(super) fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A number a client can dial (1 to 32 digits, optionally after a `+`):
/// the one check for every place a number enters, shared with sipctl
/// (`proto::is_number`).
pub use proto::{is_number, MAX_NUMBER_DIGITS, NUMBER_RULE};

/// A short number: 1 to 32 digits, no `+`.
pub(super) fn is_short_number(s: &str) -> bool {
    !s.starts_with('+') && is_number(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(dialed: &str) -> Option<String> {
        normalise(dialed, "7", "495")
    }

    #[test]
    fn spec_examples() {
        assert_eq!(n("1234567").as_deref(), Some("74951234567"));
        assert_eq!(n("84991234567").as_deref(), Some("74991234567"));
        assert_eq!(n("81044123456789").as_deref(), Some("44123456789"));
        assert_eq!(n("+44123456789").as_deref(), Some("44123456789"));
    }

    #[test]
    fn length_rules() {
        // exactly 10 digits (without 8) → country prefix
        assert_eq!(n("4991234567").as_deref(), Some("74991234567"));
        // fewer than 10 → country + city
        assert_eq!(n("1").as_deref(), Some("74951"));
        assert_eq!(n("1001").as_deref(), Some("74951001"));
        assert_eq!(n("812345").as_deref(), Some("749512345"));
        // more than 10 without 10 → unchanged (already international)
        assert_eq!(n("74951234567").as_deref(), Some("74951234567"));
        // 10 stripped even without the leading 8
        assert_eq!(n("1044123456789").as_deref(), Some("44123456789"));
        // 10 is only stripped when more than 10 digits remain
        assert_eq!(n("1012345678").as_deref(), Some("71012345678"));
        // after 10 is stripped nothing is prepended, whatever the length
        assert_eq!(n("810123456789").as_deref(), Some("123456789"));
        // only one 8 is stripped
        assert_eq!(n("88123").as_deref(), Some("74958123"));
    }

    #[test]
    fn plus_is_only_dropped() {
        assert_eq!(n("+74951234567").as_deref(), Some("74951234567"));
        assert_eq!(n("+8123").as_deref(), Some("8123"));
        assert_eq!(n("+1044").as_deref(), Some("1044"));
    }

    #[test]
    fn edge_cases() {
        assert_eq!(n(""), None);
        assert_eq!(n("+"), None);
        assert_eq!(n("8"), None);
        assert_eq!(n("++7"), None);
        assert_eq!(n("+7 495"), None);
        assert_eq!(n("495-12-34"), None);
        assert_eq!(n("*72"), None);
        assert_eq!(n("foo"), None);
        assert_eq!(n(" 123"), None);
        assert_eq!(n("12+3"), None);
        assert_eq!(n("١٢٣"), None, "non-ASCII digits are not digits");
        assert_eq!(n("80").as_deref(), Some("74950"));
    }

    #[test]
    fn other_codes() {
        assert_eq!(
            normalise("5551234", "1", "812").as_deref(),
            Some("18125551234")
        );
        assert_eq!(
            normalise("2125551234", "1", "812").as_deref(),
            Some("12125551234")
        );
        // empty city code: fewer than 10 digits get the country code only
        assert_eq!(normalise("123", "7", "").as_deref(), Some("7123"));
    }

    #[test]
    fn presets_moscow() {
        assert_eq!(preset("em", "7", "495").as_deref(), Some(r"^7495\d{2,3}$"));
        assert_eq!(preset("local", "7", "495").as_deref(), Some(r"^7495\d+$"));
        assert_eq!(preset("domestic", "7", "495").as_deref(), Some(r"^7\d+$"));
        assert_eq!(preset("international", "7", "495").as_deref(), Some(".+"));
    }

    #[test]
    fn presets_us() {
        assert_eq!(preset("em", "1", "812").as_deref(), Some(r"^1812\d{2,3}$"));
        assert_eq!(preset("local", "1", "812").as_deref(), Some(r"^1812\d+$"));
        assert_eq!(preset("domestic", "1", "812").as_deref(), Some(r"^1\d+$"));
        assert_eq!(preset("international", "1", "812").as_deref(), Some(".+"));
    }

    #[test]
    fn unknown_preset() {
        assert_eq!(preset("", "7", "495"), None);
        assert_eq!(preset("Domestic", "7", "495"), None);
        assert_eq!(preset("national", "7", "495"), None);
    }

    #[test]
    fn number_predicates() {
        assert!(all_digits("0123"));
        assert!(!all_digits(""));
        assert!(!all_digits("+1"));
        assert!(is_number("+1"));
        assert!(is_number("1"));
        assert!(!is_number("+"));
        assert!(!is_number(""));
        assert!(!is_number("1+"));
        assert!(is_number(&"1".repeat(32)));
        assert!(!is_number(&"1".repeat(33)));
        assert!(is_short_number("1001"));
        assert!(!is_short_number("+1001"));
        assert!(!is_short_number(&"1".repeat(33)));
    }
}
