//! Forwarding state of the clients (spec §4.2 step 6, §5).
//!
//! A client has at most one forwarding: none, always to F (`=F`, `*72F`) or
//! to F when unavailable (`~F`, `*71F`). The value written in sip.conf's
//! `exten` is the default; an [`Override`] set by phone (`*72F`, `*71F`,
//! `*73`) or by `sipctl fwd` wins over it until it is removed, across
//! reloads and restarts (the store keeps it as a
//! [`ForwardRow`]).
//!
//! Decisions where the spec is open:
//! - `*73` and `sipctl fwd NAME clear` both set an override "off"
//!   ([`Forwarding::None`]): forwarding is off even when sip.conf has
//!   `=F`/`~F` ("including one from sip.conf", §5). [`Forwards::remove`]
//!   (the store's `clear_forward`, deleting the row) is the way back to
//!   sip.conf's value.
//! - An override equal to sip.conf's value is kept as an override: its
//!   source (phone or sipctl) is what `sipctl fwd` shows.
//! - A stored row with kind always/unavail whose number is not a number
//!   (digits, optional leading `+`) cannot come from sipd itself; it is
//!   skipped by [`Forwards::from_rows`] so that sip.conf's value applies.
//!   [`Override::from_row`] says why, for a log line. A stored source other
//!   than `phone` counts as `sipctl`.
//! - Overrides of gateways and mediagates are not kept: forwarding is for
//!   user clients ([`Forwards::retain_clients`]).
//!
//! Everything here is pure: no I/O, no clock (times come in as arguments).

use std::collections::HashMap;
use std::fmt;

use crate::config::{Client, Config, ForwardKind, Role};
use crate::store::{self, ForwardRow};

/// One client's forwarding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Forwarding {
    /// No forwarding (as an override: "off", overriding sip.conf).
    None,
    /// Every call goes to this number (`=F`, `*72F`).
    Always(String),
    /// Calls go to this number when the client is unavailable (`~F`, `*71F`).
    Unavailable(String),
}

impl Forwarding {
    /// From a kind and number (sip.conf's `exten`, a feature code).
    pub fn new(kind: ForwardKind, number: &str) -> Forwarding {
        match kind {
            ForwardKind::Always => Forwarding::Always(number.to_string()),
            ForwardKind::Unavailable => Forwarding::Unavailable(number.to_string()),
        }
    }

    /// The forwarding written in sip.conf for `client`.
    pub fn from_config(client: &Client) -> Forwarding {
        match &client.exten.forward {
            Some((kind, number)) => Forwarding::new(*kind, number),
            None => Forwarding::None,
        }
    }

    /// Kind and number, `None` when there is no forwarding.
    pub fn kind(&self) -> Option<(ForwardKind, &str)> {
        match self {
            Forwarding::None => None,
            Forwarding::Always(f) => Some((ForwardKind::Always, f)),
            Forwarding::Unavailable(f) => Some((ForwardKind::Unavailable, f)),
        }
    }

    /// The number forwarded to, if any.
    pub fn number(&self) -> Option<&str> {
        self.kind().map(|(_, f)| f)
    }

    /// `none`, `always` or `unavail` (as `sipctl fwd` and the store spell it).
    pub fn kind_str(&self) -> &'static str {
        match self {
            Forwarding::None => "none",
            Forwarding::Always(_) => "always",
            Forwarding::Unavailable(_) => "unavail",
        }
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

/// Who set an override.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetBy {
    /// A feature code dialed by the client (`*72F`, `*71F`, `*73`).
    Phone,
    /// `sipctl fwd NAME always|unavail F|clear`.
    Sipctl,
}

impl SetBy {
    /// The stored spelling: `phone` or `sipctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            SetBy::Phone => "phone",
            SetBy::Sipctl => "sipctl",
        }
    }

    /// The stored spelling; anything but `phone` is `sipctl`.
    pub fn parse(s: &str) -> SetBy {
        match s {
            "phone" => SetBy::Phone,
            _ => SetBy::Sipctl,
        }
    }
}

/// Where an effective forwarding comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// sip.conf's `exten` (also when it has no forwarding and there is no override).
    Config,
    Phone,
    Sipctl,
}

impl Source {
    /// `sip.conf`, `phone` or `sipctl` (as `sipctl fwd` shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "sip.conf",
            Source::Phone => "phone",
            Source::Sipctl => "sipctl",
        }
    }
}

impl From<SetBy> for Source {
    fn from(by: SetBy) -> Source {
        match by {
            SetBy::Phone => Source::Phone,
            SetBy::Sipctl => Source::Sipctl,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A forwarding set by phone or sipctl, winning over sip.conf.
/// `forwarding: Forwarding::None` is "off".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub forwarding: Forwarding,
    pub by: SetBy,
}

impl Override {
    pub fn new(forwarding: Forwarding, by: SetBy) -> Override {
        Override { forwarding, by }
    }

    /// The override a stored row describes; an error (for a log line) when
    /// an always/unavail row has no valid number.
    pub fn from_row(row: &ForwardRow) -> Result<Override, String> {
        let number = || -> Result<String, String> {
            if is_number(&row.number) {
                Ok(row.number.clone())
            } else {
                Err(format!(
                    "stored forwarding of {} to {:?} is not a number",
                    row.name, row.number
                ))
            }
        };
        let forwarding = match row.kind {
            store::ForwardKind::Always => Forwarding::Always(number()?),
            store::ForwardKind::Unavailable => Forwarding::Unavailable(number()?),
            store::ForwardKind::Off => Forwarding::None,
        };
        Ok(Override::new(forwarding, SetBy::parse(&row.source)))
    }

    /// The row that persists this override of client `name`, set at
    /// `set_at` (unix seconds).
    pub fn to_row(&self, name: &str, set_at: u64) -> ForwardRow {
        let (kind, number) = match &self.forwarding {
            Forwarding::None => (store::ForwardKind::Off, String::new()),
            Forwarding::Always(f) => (store::ForwardKind::Always, f.clone()),
            Forwarding::Unavailable(f) => (store::ForwardKind::Unavailable, f.clone()),
        };
        ForwardRow {
            name: name.to_string(),
            kind,
            number,
            source: self.by.as_str().to_string(),
            set_at,
        }
    }
}

/// The overrides of every client (by name). Clients without one use sip.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwards {
    overrides: HashMap<String, Override>,
}

impl Forwards {
    /// No overrides: everyone uses sip.conf.
    pub fn new() -> Forwards {
        Forwards::default()
    }

    /// The overrides loaded from the store. Rows [`Override::from_row`]
    /// refuses are skipped (sip.conf applies to those clients).
    pub fn from_rows(rows: &[ForwardRow]) -> Forwards {
        let overrides = rows
            .iter()
            .filter_map(|row| Some((row.name.clone(), Override::from_row(row).ok()?)))
            .collect();
        Forwards { overrides }
    }

    /// The forwarding that applies to `client` now and where it comes from:
    /// its override if any, else sip.conf's `exten`.
    pub fn effective(&self, client: &Client) -> (Forwarding, Source) {
        match self.overrides.get(&client.name) {
            Some(ov) => (ov.forwarding.clone(), ov.by.into()),
            None => (Forwarding::from_config(client), Source::Config),
        }
    }

    /// The override of client `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Override> {
        self.overrides.get(name)
    }

    /// Set (replace) the override of client `name`.
    pub fn set(&mut self, name: &str, ov: Override) {
        self.overrides.insert(name.to_string(), ov);
    }

    /// Remove the override of client `name`: sip.conf applies again.
    /// Returns the removed override.
    pub fn remove(&mut self, name: &str) -> Option<Override> {
        self.overrides.remove(name)
    }

    /// After a reload: drop the overrides of clients that no longer exist or
    /// are no longer user clients. Returns the names dropped (sorted), whose
    /// stored rows the caller may delete.
    pub fn retain_clients(&mut self, config: &Config) -> Vec<String> {
        let mut dropped = Vec::new();
        self.overrides.retain(|name, _| {
            let keep = config.client(name).is_some_and(|c| c.role == Role::User);
            if !keep {
                dropped.push(name.clone());
            }
            keep
        });
        dropped.sort();
        dropped
    }

    /// Number of overrides.
    pub fn len(&self) -> usize {
        self.overrides.len()
    }

    pub fn is_empty(&self) -> bool {
        self.overrides.is_empty()
    }

    /// Every override, sorted by client name.
    pub fn iter(&self) -> Vec<(&str, &Override)> {
        let mut all: Vec<(&str, &Override)> = self
            .overrides
            .iter()
            .map(|(name, ov)| (name.as_str(), ov))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }
}

/// Digits with an optional leading `+`.
pub(crate) fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Options;

    fn config(text: &str) -> Config {
        let opts = Options {
            country: "7".to_string(),
            city: "495".to_string(),
            default_realm: "pbx.test".to_string(),
            file_name: "sip.conf".to_string(),
        };
        Config::parse(text, &opts).unwrap_or_else(|e| panic!("{e}"))
    }

    fn example() -> Config {
        config(include_str!("../../sip.conf.example"))
    }

    fn row(name: &str, kind: store::ForwardKind, number: &str, source: &str) -> ForwardRow {
        ForwardRow {
            name: name.to_string(),
            kind,
            number: number.to_string(),
            source: source.to_string(),
            set_at: 1_700_000_000,
        }
    }

    fn always(n: &str) -> Forwarding {
        Forwarding::Always(n.to_string())
    }

    fn unavail(n: &str) -> Forwarding {
        Forwarding::Unavailable(n.to_string())
    }

    #[test]
    fn sip_conf_values_without_overrides() {
        let cfg = example();
        let fw = Forwards::new();
        let eff = |name: &str| fw.effective(cfg.client(name).unwrap());
        assert_eq!(eff("siphone2"), (always("4991234567"), Source::Config));
        assert_eq!(eff("siphone1"), (Forwarding::None, Source::Config));
        assert_eq!(eff("GATE1"), (Forwarding::None, Source::Config));

        let cfg = config("[a]\naccountcode=G\nsecret=s\nexten=1001~4991234567\n");
        assert_eq!(
            fw.effective(cfg.client("a").unwrap()),
            (unavail("4991234567"), Source::Config)
        );
    }

    #[test]
    fn override_wins_and_remove_restores_sip_conf() {
        let cfg = example();
        let s2 = cfg.client("siphone2").unwrap();
        let mut fw = Forwards::new();

        fw.set("siphone2", Override::new(unavail("1001"), SetBy::Phone));
        assert_eq!(fw.effective(s2), (unavail("1001"), Source::Phone));

        fw.set("siphone2", Override::new(always("+44123"), SetBy::Sipctl));
        assert_eq!(fw.effective(s2), (always("+44123"), Source::Sipctl));

        // *73 / sipctl clear: off, overriding sip.conf's =F.
        fw.set("siphone2", Override::new(Forwarding::None, SetBy::Phone));
        assert_eq!(fw.effective(s2), (Forwarding::None, Source::Phone));
        fw.set("siphone2", Override::new(Forwarding::None, SetBy::Sipctl));
        assert_eq!(fw.effective(s2), (Forwarding::None, Source::Sipctl));

        assert_eq!(
            fw.remove("siphone2"),
            Some(Override::new(Forwarding::None, SetBy::Sipctl))
        );
        assert_eq!(fw.effective(s2), (always("4991234567"), Source::Config));
        assert_eq!(fw.remove("siphone2"), None);
        assert!(fw.is_empty());
    }

    #[test]
    fn overrides_are_per_client() {
        let cfg = example();
        let mut fw = Forwards::new();
        fw.set("siphone1", Override::new(always("1002"), SetBy::Phone));
        assert_eq!(
            fw.effective(cfg.client("siphone1").unwrap()),
            (always("1002"), Source::Phone)
        );
        assert_eq!(
            fw.effective(cfg.client("siphone2").unwrap()),
            (always("4991234567"), Source::Config)
        );
        assert_eq!(fw.len(), 1);
        assert_eq!(
            fw.get("siphone1"),
            Some(&Override::new(always("1002"), SetBy::Phone))
        );
        assert_eq!(fw.get("siphone2"), None);
    }

    #[test]
    fn rows_round_trip() {
        let cases = [
            (
                Override::new(always("74991234567"), SetBy::Phone),
                store::ForwardKind::Always,
                "74991234567",
                "phone",
            ),
            (
                Override::new(unavail("1002"), SetBy::Sipctl),
                store::ForwardKind::Unavailable,
                "1002",
                "sipctl",
            ),
            (
                Override::new(Forwarding::None, SetBy::Phone),
                store::ForwardKind::Off,
                "",
                "phone",
            ),
            (
                Override::new(Forwarding::None, SetBy::Sipctl),
                store::ForwardKind::Off,
                "",
                "sipctl",
            ),
        ];
        for (ov, kind, number, source) in cases {
            let r = ov.to_row("siphone1", 42);
            assert_eq!(
                r,
                ForwardRow {
                    set_at: 42,
                    ..row("siphone1", kind, number, source)
                }
            );
            assert_eq!(Override::from_row(&r), Ok(ov.clone()));
        }
    }

    #[test]
    fn from_rows_builds_overrides() {
        let cfg = example();
        let fw = Forwards::from_rows(&[
            row("siphone1", store::ForwardKind::Always, "1002", "phone"),
            row("siphone2", store::ForwardKind::Off, "", "sipctl"),
            row(
                "foo",
                store::ForwardKind::Unavailable,
                "+74951234567",
                "sipctl",
            ),
        ]);
        let eff = |name: &str| fw.effective(cfg.client(name).unwrap());
        assert_eq!(eff("siphone1"), (always("1002"), Source::Phone));
        assert_eq!(eff("siphone2"), (Forwarding::None, Source::Sipctl));
        assert_eq!(eff("foo"), (unavail("+74951234567"), Source::Sipctl));
        assert_eq!(eff("bar"), (Forwarding::None, Source::Config));
    }

    #[test]
    fn from_rows_skips_bad_rows() {
        let cfg = example();
        let bad = [
            row("siphone2", store::ForwardKind::Always, "", "phone"),
            row(
                "siphone2",
                store::ForwardKind::Unavailable,
                "siphone1",
                "phone",
            ),
            row("siphone2", store::ForwardKind::Always, "+", "phone"),
            row("siphone2", store::ForwardKind::Always, "12 34", "phone"),
        ];
        for r in &bad {
            let err = Override::from_row(r).unwrap_err();
            assert!(
                err.contains("siphone2") && err.contains("not a number"),
                "{err}"
            );
            let fw = Forwards::from_rows(std::slice::from_ref(r));
            assert!(fw.is_empty());
            assert_eq!(
                fw.effective(cfg.client("siphone2").unwrap()),
                (always("4991234567"), Source::Config)
            );
        }
        // The number of an "off" row does not matter.
        let r = row("siphone2", store::ForwardKind::Off, "junk", "phone");
        assert_eq!(
            Override::from_row(&r),
            Ok(Override::new(Forwarding::None, SetBy::Phone))
        );
    }

    #[test]
    fn unknown_source_counts_as_sipctl() {
        let r = row("a", store::ForwardKind::Always, "1002", "admin");
        assert_eq!(Override::from_row(&r).unwrap().by, SetBy::Sipctl);
        assert_eq!(SetBy::parse("phone"), SetBy::Phone);
        assert_eq!(SetBy::parse("sipctl"), SetBy::Sipctl);
    }

    #[test]
    fn retain_clients_drops_removed_and_non_users() {
        let cfg = example();
        let mut fw = Forwards::new();
        for name in ["siphone1", "gone", "GATE1", "MEDIAGATE", "foo"] {
            fw.set(name, Override::new(always("1002"), SetBy::Phone));
        }
        let dropped = fw.retain_clients(&cfg);
        assert_eq!(dropped, ["GATE1", "MEDIAGATE", "gone"]);
        let names: Vec<&str> = fw.iter().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["foo", "siphone1"]);
        assert!(fw.retain_clients(&cfg).is_empty());
    }

    #[test]
    fn display_and_spellings() {
        assert_eq!(Forwarding::None.to_string(), "none");
        assert_eq!(always("1002").to_string(), "always 1002");
        assert_eq!(unavail("+44").to_string(), "unavail +44");
        assert_eq!(Source::Config.to_string(), "sip.conf");
        assert_eq!(Source::Phone.as_str(), "phone");
        assert_eq!(Source::Sipctl.as_str(), "sipctl");
        assert_eq!(Source::from(SetBy::Phone), Source::Phone);
        assert_eq!(Source::from(SetBy::Sipctl), Source::Sipctl);
        assert_eq!(Forwarding::new(ForwardKind::Always, "1"), always("1"));
        assert_eq!(Forwarding::new(ForwardKind::Unavailable, "1"), unavail("1"));
        assert_eq!(always("7").kind(), Some((ForwardKind::Always, "7")));
        assert_eq!(unavail("7").kind(), Some((ForwardKind::Unavailable, "7")));
        assert_eq!(Forwarding::None.kind(), None);
        assert_eq!(Forwarding::None.number(), None);
    }

    #[test]
    fn numbers() {
        for ok in ["1", "+1", "0123456789", "+74991234567"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in ["", "+", "++1", "1+", "a1", "1 2", "*72", "１"] {
            assert!(!is_number(bad), "{bad}");
        }
    }
}
