//! Forwarding state of the clients (spec §4.2 step 6, §5).
//!
//! A client has at most one forwarding ([`Forwarding`], the type the control
//! protocol shares): none, always to F (`=F`, `*72F`) or to F when
//! unavailable (`~F`, `*71F`). The value written in sip.conf's
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
//! # Changing a forwarding
//! [`change`] holds the rules for both ways of changing one, the feature
//! codes (`*72F`, `*71F`, `*73`; a refusal is announced as `*70`) and
//! `sipctl fwd WHO always F|unavail F|clear` (a refusal is its error):
//! - Forwarding is for user clients: gateways and mediagates have none.
//! - F is a number: digits with an optional leading `+` (a name is not
//!   allowed). It must be something the client itself may dial (spec §2.2,
//!   §5): a number that resolves (as the router resolves it) to another
//!   user client, or an external number its dialplan allows. F resolving to
//!   the client itself is refused (it would loop). Whether a gateway exists
//!   is not checked (one may be added by a reload). Forwarding chains
//!   through other clients are checked when a call is routed (`482`), not
//!   here: they change as others set their forwarding.
//! - Clearing (`*73`, `clear`) is always allowed for a user client.
//!
//! `sipctl fwd WHO` finds WHO with [`lookup`] (every client it names) or,
//! for a change, [`lookup_one`] (spec §6: a short number of several groups
//! is refused with the candidates); [`Forwards::report`] is what it shows.
//!
//! Everything here is pure: no I/O, no clock (times come in as arguments).

use std::collections::HashMap;
use std::fmt;

use proto::Forwarding;

use super::reach::{self, Resolved};
use crate::config::{Client, Config, Role};
use crate::store::ForwardRow;

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
        if let Some(number) = row.forwarding.number() {
            if !is_number(number) {
                return Err(format!(
                    "stored forwarding of {} to {:?} is not a number",
                    row.name,
                    proto::shown(number)
                ));
            }
        }
        Ok(Override::new(
            row.forwarding.clone(),
            SetBy::parse(&row.source),
        ))
    }

    /// The row that persists this override of client `name`, set at
    /// `set_at` (unix seconds).
    pub fn to_row(&self, name: &str, set_at: u64) -> ForwardRow {
        ForwardRow {
            name: name.to_string(),
            forwarding: self.forwarding.clone(),
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
            None => (client.exten.forward.clone(), Source::Config),
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

    /// What `sipctl fwd` shows for `clients`: each one's effective
    /// forwarding and where it comes from (no source for sip.conf's "none").
    pub fn report(&self, clients: &[&Client]) -> proto::FwdReport {
        let clients = clients
            .iter()
            .map(|c| {
                let (forwarding, source) = self.effective(c);
                proto::FwdState {
                    name: c.name.clone(),
                    source: (!forwarding.is_none() || source != Source::Config)
                        .then(|| source.as_str().to_string()),
                    forwarding,
                }
            })
            .collect();
        proto::FwdReport { clients }
    }
}

/// The clients `who` (of `sipctl fwd WHO`) names: the client of that name,
/// else of that long number (any form that normalises to it), else every
/// client with that short number (one per group). An error when none.
pub fn lookup<'a>(config: &'a Config, who: &str) -> Result<Vec<&'a Client>, String> {
    let clients = config.lookup(who);
    if clients.is_empty() {
        return Err(format!(
            "no client named or numbered '{}'",
            proto::shown(who)
        ));
    }
    Ok(clients)
}

/// The one client a change through `who` is for, as [`lookup`] finds it; a
/// `who` that names several clients is refused with their names.
pub fn lookup_one<'a>(config: &'a Config, who: &str) -> Result<&'a Client, String> {
    match lookup(config, who)?.as_slice() {
        [client] => Ok(client),
        several => {
            let names: Vec<&str> = several.iter().map(|c| c.name.as_str()).collect();
            Err(format!(
                "'{}' names several clients ({}): use a name",
                proto::shown(who),
                names.join(", ")
            ))
        }
    }
}

/// `client`'s forwarding changed to `forwarding` by `by`, if the rules allow
/// it (see the module docs): the override to set and persist. The error
/// says why not, e.g. `+4412345 is not allowed by foo's dialplan (4412345
/// does not match ^7\d+$)`.
pub fn change(
    config: &Config,
    client: &Client,
    forwarding: Forwarding,
    by: SetBy,
) -> Result<Override, String> {
    if client.role != Role::User {
        return Err(format!(
            "{} is not a user client: no forwarding",
            client.name
        ));
    }
    if let Some(number) = forwarding.number() {
        check_number(config, client, number)?;
    }
    Ok(Override::new(forwarding, by))
}

/// May user client `client` forward its calls to `number`?
fn check_number(config: &Config, client: &Client, number: &str) -> Result<(), String> {
    if !is_number(number) {
        return Err(format!(
            "'{}' is not a number ({})",
            proto::shown(number),
            crate::config::numbers::NUMBER_RULE
        ));
    }
    match reach::resolve(config, client, number) {
        Resolved::Client(target) if target.name == client.name => Err(format!(
            "{number} is {}'s own number: forwarding there would loop",
            client.name
        )),
        Resolved::Client(_) => Ok(()),
        Resolved::External(normalised) if client.dialplan.is_match(&normalised) => Ok(()),
        Resolved::External(normalised) => Err(format!(
            "{number} is not allowed by {}'s dialplan ({} does not match {})",
            client.name, normalised, client.dialplan_src
        )),
        Resolved::NotANumber => Err(format!("{number} is not a dialable number")),
    }
}

/// The one number check (`config::numbers::is_number`).
pub(crate) use crate::config::numbers::is_number;

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
        config(include_str!("../../../sip.conf.example"))
    }

    fn row(name: &str, forwarding: Forwarding, source: &str) -> ForwardRow {
        ForwardRow {
            name: name.to_string(),
            forwarding,
            source: source.to_string(),
            set_at: 1_700_000_000,
        }
    }

    fn always(n: &str) -> Forwarding {
        Forwarding::always(n)
    }

    fn unavail(n: &str) -> Forwarding {
        Forwarding::unavailable(n)
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
        // (How a row's forwarding is spelled in SQLite is the store's.)
        let cases = [
            (
                Override::new(always("74991234567"), SetBy::Phone),
                always("74991234567"),
                "phone",
            ),
            (
                Override::new(unavail("1002"), SetBy::Sipctl),
                unavail("1002"),
                "sipctl",
            ),
            (
                Override::new(Forwarding::None, SetBy::Phone),
                Forwarding::None,
                "phone",
            ),
            (
                Override::new(Forwarding::None, SetBy::Sipctl),
                Forwarding::None,
                "sipctl",
            ),
        ];
        for (ov, forwarding, source) in cases {
            let r = ov.to_row("siphone1", 42);
            assert_eq!(
                r,
                ForwardRow {
                    set_at: 42,
                    ..row("siphone1", forwarding, source)
                }
            );
            assert_eq!(Override::from_row(&r), Ok(ov.clone()));
        }
    }

    #[test]
    fn from_rows_builds_overrides() {
        let cfg = example();
        let fw = Forwards::from_rows(&[
            row("siphone1", always("1002"), "phone"),
            row("siphone2", Forwarding::None, "sipctl"),
            row("foo", unavail("+74951234567"), "sipctl"),
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
            row("siphone2", always(""), "phone"),
            row("siphone2", unavail("siphone1"), "phone"),
            row("siphone2", always("+"), "phone"),
            row("siphone2", always("12 34"), "phone"),
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
        // An "off" row has no number (the store ignores a stored one, see
        // its forward_kind_spellings_round_trip).
        let r = row("siphone2", Forwarding::None, "phone");
        assert_eq!(
            Override::from_row(&r),
            Ok(Override::new(Forwarding::None, SetBy::Phone))
        );
    }

    #[test]
    fn unknown_source_counts_as_sipctl() {
        let r = row("a", always("1002"), "admin");
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
        assert_eq!(always("7").number(), Some("7"));
        assert_eq!(unavail("7").number(), Some("7"));
        assert_eq!(Forwarding::None.number(), None);
    }

    // ------------------------------------------------------------ change

    /// [`change`] to always F and to unavailable F (the same rule for
    /// both), by sipctl and by phone (the same rule for both).
    fn validate_forward(cfg: &Config, client: &Client, number: &str) -> Result<(), String> {
        let by_sipctl = change(cfg, client, always(number), SetBy::Sipctl);
        let by_phone = change(cfg, client, unavail(number), SetBy::Phone);
        match (&by_sipctl, &by_phone) {
            (Ok(s), Ok(p)) => {
                assert_eq!(s, &Override::new(always(number), SetBy::Sipctl));
                assert_eq!(p, &Override::new(unavail(number), SetBy::Phone));
            }
            (s, p) => assert_eq!(s.clone().map(|_| ()), p.clone().map(|_| ())),
        }
        by_sipctl.map(|_| ())
    }

    #[test]
    fn validate_accepts_short_long_and_allowed_external() {
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        // short number in the caller's group
        assert_eq!(validate_forward(&cfg, s1, "1002"), Ok(()));
        // long number of a client, written in any form that normalises to it
        assert_eq!(validate_forward(&cfg, s1, "4999876543"), Ok(()));
        assert_eq!(validate_forward(&cfg, s1, "84999876543"), Ok(()));
        assert_eq!(validate_forward(&cfg, s1, "+74999876543"), Ok(()));
        // external, dialplan .+
        assert_eq!(validate_forward(&cfg, s1, "4991234567"), Ok(()));
        assert_eq!(validate_forward(&cfg, s1, "+44123456789"), Ok(()));
    }

    #[test]
    fn validate_refuses_names() {
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        let err = validate_forward(&cfg, s1, "siphone2").unwrap_err();
        assert!(err.contains("not a number"), "{err}");
        assert!(validate_forward(&cfg, s1, "").is_err());
        assert!(validate_forward(&cfg, s1, "+").is_err());
    }

    #[test]
    fn validate_refuses_own_number() {
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        let s2 = cfg.client("siphone2").unwrap();
        let err = validate_forward(&cfg, s1, "1001").unwrap_err();
        assert!(err.contains("siphone1's own number"), "{err}");
        for own in ["1002", "4999876543", "84999876543", "+74999876543"] {
            let err = validate_forward(&cfg, s2, own).unwrap_err();
            assert!(err.contains("siphone2's own number"), "{own}: {err}");
        }
    }

    #[test]
    fn validate_short_numbers_only_in_own_group() {
        let cfg = example();
        // foo (FOOBAR, context=domestic) forwarding to 1002 = bar, its group.
        let foo = cfg.client("foo").unwrap();
        assert_eq!(validate_forward(&cfg, foo, "1002"), Ok(()));
        // foo's own short number is 1001; siphone1's 1001 is in HOME.
        assert!(validate_forward(&cfg, foo, "1001")
            .unwrap_err()
            .contains("foo's own number"));
    }

    #[test]
    fn validate_applies_the_dialplan() {
        let cfg = example();
        // foo: context=domestic → ^7\d+$
        let foo = cfg.client("foo").unwrap();
        assert_eq!(validate_forward(&cfg, foo, "4991234567"), Ok(()));
        assert_eq!(
            validate_forward(&cfg, foo, "+4412345"),
            Err(
                "+4412345 is not allowed by foo's dialplan (4412345 does not match ^7\\d+$)"
                    .to_string()
            )
        );
        // A short number of another group is external for foo: 1001 is
        // foo's own, but 7777 is nobody's → 74957777 matches ^7\d+$.
        assert_eq!(validate_forward(&cfg, foo, "7777"), Ok(()));

        let em = config("[e]\nsecret=s\ncontext=em\n[x]\nsecret=s\nexten=4990000000\n");
        let e = em.client("e").unwrap();
        assert_eq!(validate_forward(&em, e, "12"), Ok(())); // 749512
        assert_eq!(validate_forward(&em, e, "123"), Ok(())); // 7495123
        let err = validate_forward(&em, e, "1234567").unwrap_err();
        assert!(err.contains("not allowed by e's dialplan"), "{err}");
        assert!(validate_forward(&em, e, "+44123456789").is_err());
        // a client's long number is not external: the dialplan does not apply
        assert_eq!(validate_forward(&em, e, "4990000000"), Ok(()));
    }

    #[test]
    fn validate_refuses_undialable_numbers() {
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        // "8" alone normalises to nothing.
        assert_eq!(
            validate_forward(&cfg, s1, "8"),
            Err("8 is not a dialable number".to_string())
        );
    }

    #[test]
    fn validate_refuses_gateways_and_mediagates() {
        // One message for both (the one `sipctl fwd` has always printed).
        let cfg = example();
        let g = cfg.client("GATE1").unwrap();
        let m = cfg.client("MEDIAGATE").unwrap();
        assert_eq!(
            validate_forward(&cfg, g, "1002"),
            Err("GATE1 is not a user client: no forwarding".to_string())
        );
        assert_eq!(
            validate_forward(&cfg, m, "1002"),
            Err("MEDIAGATE is not a user client: no forwarding".to_string())
        );
        // Clearing too.
        for c in [g, m] {
            assert!(change(&cfg, c, Forwarding::None, SetBy::Sipctl).is_err());
            assert!(change(&cfg, c, Forwarding::None, SetBy::Phone).is_err());
        }
    }

    #[test]
    fn change_clear_is_allowed_for_user_clients() {
        let cfg = example();
        for name in ["siphone1", "siphone2", "foo", "bar"] {
            let c = cfg.client(name).unwrap();
            for by in [SetBy::Phone, SetBy::Sipctl] {
                assert_eq!(
                    change(&cfg, c, Forwarding::None, by),
                    Ok(Override::new(Forwarding::None, by)),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn change_keeps_the_number_as_given() {
        // Valid in any form; the override keeps the spelling (sipctl fwd
        // shows it, the router normalises when routing).
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        assert_eq!(
            change(&cfg, s1, always("84999876543"), SetBy::Sipctl),
            Ok(Override::new(always("84999876543"), SetBy::Sipctl))
        );
    }

    // ------------------------------------------------------------ lookup

    #[test]
    fn lookup_by_name_long_and_short_number() {
        let cfg = example();
        let names = |who: &str| -> Vec<String> {
            lookup(&cfg, who)
                .unwrap()
                .into_iter()
                .map(|c| c.name.clone())
                .collect()
        };
        assert_eq!(names("siphone2"), ["siphone2"]);
        assert_eq!(names("GATE1"), ["GATE1"]);
        for long in ["4999876543", "84999876543", "+74999876543"] {
            assert_eq!(names(long), ["siphone2"], "{long}");
        }
        // 1001: foo (FOOBAR) and siphone1 (HOME), in sip.conf order.
        assert_eq!(names("1001"), ["foo", "siphone1"]);
        assert_eq!(names("1002"), ["bar", "siphone2"]);
        assert_eq!(
            lookup(&cfg, "nobody").unwrap_err(),
            "no client named or numbered 'nobody'"
        );
        assert!(lookup(&cfg, "").is_err());
    }

    #[test]
    fn lookup_one_refuses_ambiguous_numbers() {
        let cfg = example();
        assert_eq!(lookup_one(&cfg, "siphone1").unwrap().name, "siphone1");
        assert_eq!(lookup_one(&cfg, "84999876543").unwrap().name, "siphone2");
        assert_eq!(
            lookup_one(&cfg, "1001").unwrap_err(),
            "'1001' names several clients (foo, siphone1): use a name"
        );
        assert_eq!(
            lookup_one(&cfg, "1002").unwrap_err(),
            "'1002' names several clients (bar, siphone2): use a name"
        );
        assert_eq!(
            lookup_one(&cfg, "7777").unwrap_err(),
            "no client named or numbered '7777'"
        );
        // A short number of one group only is that client.
        let cfg = config("[a]\naccountcode=G\nsecret=s\nexten=201\n[b]\nsecret=s\n");
        assert_eq!(lookup_one(&cfg, "201").unwrap().name, "a");
    }

    // ------------------------------------------------------------ report

    #[test]
    fn report_shows_the_effective_forwarding_and_its_source() {
        let cfg = example();
        let mut fw = Forwards::new();
        fw.set("foo", Override::new(unavail("1002"), SetBy::Phone));
        fw.set("bar", Override::new(Forwarding::None, SetBy::Sipctl));
        let clients: Vec<&Client> = ["siphone1", "siphone2", "foo", "bar"]
            .iter()
            .map(|n| cfg.client(n).unwrap())
            .collect();
        let state = |name: &str, forwarding: Forwarding, source: Option<&str>| proto::FwdState {
            name: name.to_string(),
            forwarding,
            source: source.map(str::to_string),
        };
        assert_eq!(
            fw.report(&clients),
            proto::FwdReport {
                clients: vec![
                    // sip.conf without forwarding: no source shown
                    state("siphone1", Forwarding::None, None),
                    state("siphone2", always("4991234567"), Some("sip.conf")),
                    state("foo", unavail("1002"), Some("phone")),
                    // an "off" override shows who set it
                    state("bar", Forwarding::None, Some("sipctl")),
                ]
            }
        );
        assert_eq!(fw.report(&[]), proto::FwdReport::default());
    }

    #[test]
    fn numbers() {
        for ok in ["1", "+1", "0123456789", "+74991234567"] {
            assert!(is_number(ok), "{ok}");
        }
        let longest = "1".repeat(proto::MAX_NUMBER_DIGITS);
        assert!(is_number(&longest));
        assert!(is_number(&format!("+{longest}")));
        let too_long = "1".repeat(proto::MAX_NUMBER_DIGITS + 1);
        let million = "9".repeat(1_000_000);
        for bad in [
            "", "+", "++1", "1+", "a1", "1 2", "*72", "１", &too_long, &million,
        ] {
            assert!(!is_number(bad), "{bad}");
        }
    }

    #[test]
    fn change_refuses_numbers_over_32_digits_with_a_short_message() {
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        // 32 digits: a number (external, dialplan .+).
        assert_eq!(validate_forward(&cfg, s1, &"4".repeat(32)), Ok(()));
        let err = validate_forward(&cfg, s1, &"4".repeat(33)).unwrap_err();
        assert!(err.contains("not a number"), "{err}");
        let err = validate_forward(&cfg, s1, &"4".repeat(1_000_000)).unwrap_err();
        assert!(err.len() < 200, "{}", err.len());
        assert!(err.contains("1000000 characters"), "{err}");
        // A stored row from before the limit is skipped (sip.conf applies).
        let r = row("siphone2", always(&"4".repeat(100)), "sipctl");
        assert!(Override::from_row(&r).is_err());
        // lookup echoes a shortened WHO.
        let err = lookup(&cfg, &"x".repeat(100_000)).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }
}
