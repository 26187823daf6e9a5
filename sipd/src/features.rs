//! PBX feature codes (spec §5): what a registered client dialed when the
//! Request-URI user starts with `*`, and the voice guidance for the result.
//!
//! | dialed          | [`Feature`]                  | announced as (Request-URI user / `480` reason) |
//! |-----------------|------------------------------|------------------------------------------------|
//! | `*11`           | `Pickup`                     | — (the proxy: `404 Nothing To Pick Up`, `480 Picked Up`) |
//! | `*72F`          | `SetForward { Always, F }`   | `*72F` / `Forwarding To F`                     |
//! | `*71F`          | `SetForward { Unavailable, F }` | `*71F` / `Forwarding On Unavailable To F`   |
//! | `*72`, `*71`    | `CheckForward`               | `*72F` / `*71F` for the one set, `*73` / `No Forwarding` when none |
//! | `*73`           | `ClearForward`               | `*73` / `No Forwarding`                        |
//! | other `*7…`     | `BadForward`                 | `*70` / `Bad Forwarding Number`                |
//! | any other `*…`  | `Unknown`                    | `*00` / `Unknown Feature Code`                 |
//!
//! Decisions where the spec is open:
//! - Codes are matched exactly: `*11` followed by anything, or `*1`, is
//!   `Unknown`; `*73` followed by anything is `BadForward` (an "other
//!   `*7…`"), as are `*7` and `*70`.
//! - F is a number: digits with an optional leading `+` (a name is not
//!   allowed). It must be something the client itself may dial
//!   ([`validate_forward`]): a number that resolves (as the router resolves
//!   it) to another user client, or an external number its dialplan allows.
//!   F resolving to the client itself is refused (it would loop). Whether a
//!   gateway exists is not checked (one may be added by a reload).
//!   Forwarding chains through other clients are checked when a call is
//!   routed (`482`), not here: they change as others set their forwarding.
//! - Forwarding is for user clients: gateways and mediagates may not set
//!   one (the router already refuses their star codes with `404`).
//! - `*73` (and a check with no forwarding) answers `No Forwarding`.
//! - The announcement goes to the first mediagate (sip.conf order) that can
//!   be reached now (its registration, else its `host`), with Request-URI
//!   `sip:{user}@{host:port}` (or the registered Contact with the user
//!   replaced); no reachable mediagate → the proxy answers `480 {reason}`.
//!
//! Everything here is pure.

use crate::config::{Client, Config, ForwardKind, Role};
use crate::forwards::{is_number, Forwarding, Override, SetBy};
use crate::router::{self, Location, Resolved};
use crate::transport::Peer;

/// What a `*` code asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `*11`: pick up a call ringing in the caller's group.
    Pickup,
    /// `*72F` (Always) / `*71F` (Unavailable); F syntactically a number, and
    /// when returned by [`parse_for`] also allowed for the caller.
    SetForward { kind: ForwardKind, number: String },
    /// `*72` or `*71` alone.
    CheckForward,
    /// `*73`.
    ClearForward,
    /// Any other `*7…`, or F that is not a number or not allowed.
    BadForward,
    /// Any other `*…` (and anything not starting with `*`).
    Unknown,
}

impl Feature {
    /// The override (set by phone) this feature makes: `SetForward` →
    /// always/unavailable F, `ClearForward` → off. `None` for the others.
    pub fn override_by_phone(&self) -> Option<Override> {
        match self {
            Feature::SetForward { kind, number } => {
                Some(Override::new(Forwarding::new(*kind, number), SetBy::Phone))
            }
            Feature::ClearForward => Some(Override::new(Forwarding::None, SetBy::Phone)),
            _ => None,
        }
    }
}

/// Parse a dialed `*` code (syntax only: F is checked to be a number, not
/// whether the caller may dial it; see [`parse_for`]).
pub fn parse(dialed: &str) -> Feature {
    let Some(code) = dialed.strip_prefix('*') else {
        return Feature::Unknown;
    };
    if code == "11" {
        return Feature::Pickup;
    }
    let Some(rest) = code.strip_prefix('7') else {
        return Feature::Unknown;
    };
    let (kind, number) = match rest.as_bytes().first() {
        Some(b'2') => (ForwardKind::Always, &rest[1..]),
        Some(b'1') => (ForwardKind::Unavailable, &rest[1..]),
        Some(b'3') if rest.len() == 1 => return Feature::ClearForward,
        _ => return Feature::BadForward,
    };
    if number.is_empty() {
        Feature::CheckForward
    } else if is_number(number) {
        Feature::SetForward {
            kind,
            number: number.to_string(),
        }
    } else {
        Feature::BadForward
    }
}

/// Parse a `*` code dialed by `caller`: as [`parse`], and a `SetForward`
/// whose F the caller may not forward to becomes `BadForward`.
pub fn parse_for(config: &Config, caller: &Client, dialed: &str) -> Feature {
    match parse(dialed) {
        Feature::SetForward { number, .. }
            if validate_forward(config, caller, &number).is_err() =>
        {
            Feature::BadForward
        }
        feature => feature,
    }
}

/// Check that `caller` may forward its calls to `number` (for `*72F`/`*71F`
/// and `sipctl fwd`). The error says why not, e.g. `4412345 is not allowed
/// by siphone1's dialplan`.
pub fn validate_forward(config: &Config, caller: &Client, number: &str) -> Result<(), String> {
    match caller.role {
        Role::User => {}
        Role::Gateway => {
            return Err(format!(
                "{} is a gateway: it has no forwarding",
                caller.name
            ))
        }
        Role::Mediagate => {
            return Err(format!(
                "{} is a mediagate: it has no forwarding",
                caller.name
            ))
        }
    }
    if !is_number(number) {
        return Err(format!(
            "'{number}' is not a number (digits, optionally with a leading '+')"
        ));
    }
    match router::resolve(config, caller, number) {
        Resolved::Client(target) if target.name == caller.name => Err(format!(
            "{number} is {}'s own number: forwarding there would loop",
            caller.name
        )),
        Resolved::Client(_) => Ok(()),
        Resolved::External(normalised) if caller.dialplan.is_match(&normalised) => Ok(()),
        Resolved::External(normalised) => Err(format!(
            "{number} is not allowed by {}'s dialplan ({} does not match {})",
            caller.name, normalised, caller.dialplan_src
        )),
        Resolved::NotANumber => Err(format!("{number} is not a dialable number")),
    }
}

/// The voice guidance for a feature's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Request-URI user of the INVITE sent to the mediagate, e.g. `*724991234567`.
    pub uri_user: String,
    /// Reason phrase of the `480` when there is no mediagate (no CR/LF,
    /// no control characters), e.g. `Forwarding To 4991234567`.
    pub reason: String,
}

impl Outcome {
    fn new(uri_user: String, reason: String) -> Outcome {
        Outcome {
            uri_user,
            reason: phrase(&reason),
        }
    }
}

/// Forwarding to `number` was set (or is the current one): `*72F` /
/// `Forwarding To F`, `*71F` / `Forwarding On Unavailable To F`.
pub fn outcome_set(kind: ForwardKind, number: &str) -> Outcome {
    match kind {
        ForwardKind::Always => {
            Outcome::new(format!("*72{number}"), format!("Forwarding To {number}"))
        }
        ForwardKind::Unavailable => Outcome::new(
            format!("*71{number}"),
            format!("Forwarding On Unavailable To {number}"),
        ),
    }
}

/// `*72`/`*71`: the current forwarding; `*73` / `No Forwarding` when none.
pub fn outcome_check(current: &Forwarding) -> Outcome {
    match current.kind() {
        Some((kind, number)) => outcome_set(kind, number),
        None => outcome_clear(),
    }
}

/// `*73`: forwarding removed.
pub fn outcome_clear() -> Outcome {
    Outcome::new("*73".to_string(), "No Forwarding".to_string())
}

/// Other `*7…`, or F not allowed.
pub fn outcome_bad() -> Outcome {
    Outcome::new("*70".to_string(), "Bad Forwarding Number".to_string())
}

/// Any other `*…`.
pub fn outcome_unknown() -> Outcome {
    Outcome::new("*00".to_string(), "Unknown Feature Code".to_string())
}

/// The announcement of `feature`'s result. `current` is the caller's
/// effective forwarding (used by `CheckForward`). `None` for `Pickup`,
/// which is not announced.
pub fn outcome(feature: &Feature, current: &Forwarding) -> Option<Outcome> {
    Some(match feature {
        Feature::Pickup => return None,
        Feature::SetForward { kind, number } => outcome_set(*kind, number),
        Feature::CheckForward => outcome_check(current),
        Feature::ClearForward => outcome_clear(),
        Feature::BadForward => outcome_bad(),
        Feature::Unknown => outcome_unknown(),
    })
}

/// `*11` with nothing ringing in the group (spec §5.1).
pub const NOTHING_TO_PICK_UP: (u16, &str) = (404, "Nothing To Pick Up");
/// The end of the picker's `*11` INVITE when sipd moved the call itself (spec §5.1).
pub const PICKED_UP: (u16, &str) = (480, "Picked Up");

/// How to play an [`Outcome`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announce {
    /// Send the INVITE to this mediagate.
    Mediagate {
        /// The mediagate's name.
        target: String,
        dest: Peer,
        ruri: String,
    },
    /// No mediagate: answer the INVITE with this.
    Reply { code: u16, reason: String },
}

/// Where to announce `outcome`: the first reachable mediagate, else `480`
/// with the outcome's reason. `locate` gives a client's registered binding.
pub fn announce(
    config: &Config,
    locate: &dyn Fn(&str) -> Option<Location>,
    outcome: &Outcome,
) -> Announce {
    for mg in config.mediagates() {
        if let Some(loc) = router::reach_as(mg, &outcome.uri_user, locate) {
            return Announce::Mediagate {
                target: mg.name.clone(),
                dest: loc.dest,
                ruri: loc.uri,
            };
        }
    }
    Announce::Reply {
        code: 480,
        reason: outcome.reason.clone(),
    }
}

/// A valid SIP reason phrase: control characters (CR, LF, …) become spaces.
fn phrase(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::Options;
    use crate::transport::Transport;

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

    fn set(kind: ForwardKind, n: &str) -> Feature {
        Feature::SetForward {
            kind,
            number: n.to_string(),
        }
    }

    // ------------------------------------------------------------ parse

    #[test]
    fn parse_pickup() {
        assert_eq!(parse("*11"), Feature::Pickup);
        for other in ["*1", "*111", "*110", "*11*", "*12", "*10"] {
            assert_eq!(parse(other), Feature::Unknown, "{other}");
        }
    }

    #[test]
    fn parse_set_forward() {
        assert_eq!(
            parse("*724991234567"),
            set(ForwardKind::Always, "4991234567")
        );
        assert_eq!(parse("*711002"), set(ForwardKind::Unavailable, "1002"));
        assert_eq!(
            parse("*72+44123456789"),
            set(ForwardKind::Always, "+44123456789")
        );
        assert_eq!(parse("*710"), set(ForwardKind::Unavailable, "0"));
        // F is digits after *72 / *71, nothing else.
        assert_eq!(parse("*7272"), set(ForwardKind::Always, "72"));
    }

    #[test]
    fn parse_check_and_clear() {
        assert_eq!(parse("*72"), Feature::CheckForward);
        assert_eq!(parse("*71"), Feature::CheckForward);
        assert_eq!(parse("*73"), Feature::ClearForward);
    }

    #[test]
    fn parse_bad_forward() {
        for bad in [
            "*7",
            "*70",
            "*74",
            "*79",
            "*730",
            "*731002",
            "*7*",
            "*72siphone2",
            "*72+",
            "*72++1",
            "*72 1002",
            "*721002#",
            "*71*",
            "*72-1",
            "*7a",
        ] {
            assert_eq!(parse(bad), Feature::BadForward, "{bad}");
        }
    }

    #[test]
    fn parse_unknown() {
        for unknown in [
            "*", "*0", "*00", "*99", "*8", "**", "*#", "*x72", "1002", "",
        ] {
            assert_eq!(parse(unknown), Feature::Unknown, "{unknown}");
        }
    }

    // ------------------------------------------------------------ validate

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
        let cfg = example();
        let g = cfg.client("GATE1").unwrap();
        let m = cfg.client("MEDIAGATE").unwrap();
        assert!(validate_forward(&cfg, g, "1002")
            .unwrap_err()
            .contains("gateway"));
        assert!(validate_forward(&cfg, m, "1002")
            .unwrap_err()
            .contains("mediagate"));
    }

    #[test]
    fn parse_for_validates_f() {
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        let foo = cfg.client("foo").unwrap();
        assert_eq!(
            parse_for(&cfg, s1, "*721002"),
            set(ForwardKind::Always, "1002")
        );
        assert_eq!(
            parse_for(&cfg, s1, "*711002"),
            set(ForwardKind::Unavailable, "1002")
        );
        assert_eq!(parse_for(&cfg, s1, "*721001"), Feature::BadForward); // itself
        assert_eq!(parse_for(&cfg, s1, "*711001"), Feature::BadForward);
        assert_eq!(parse_for(&cfg, foo, "*72+4412345"), Feature::BadForward); // dialplan
        assert_eq!(parse_for(&cfg, foo, "*71+4412345"), Feature::BadForward);
        assert_eq!(parse_for(&cfg, s1, "*728"), Feature::BadForward); // not dialable
                                                                      // the rest is parse()
        assert_eq!(parse_for(&cfg, s1, "*11"), Feature::Pickup);
        assert_eq!(parse_for(&cfg, s1, "*72"), Feature::CheckForward);
        assert_eq!(parse_for(&cfg, s1, "*71"), Feature::CheckForward);
        assert_eq!(parse_for(&cfg, s1, "*73"), Feature::ClearForward);
        assert_eq!(parse_for(&cfg, s1, "*74"), Feature::BadForward);
        assert_eq!(parse_for(&cfg, s1, "*5"), Feature::Unknown);
    }

    #[test]
    fn overrides_made_by_features() {
        assert_eq!(
            set(ForwardKind::Always, "1002").override_by_phone(),
            Some(Override::new(
                Forwarding::Always("1002".into()),
                SetBy::Phone
            ))
        );
        assert_eq!(
            set(ForwardKind::Unavailable, "1002").override_by_phone(),
            Some(Override::new(
                Forwarding::Unavailable("1002".into()),
                SetBy::Phone
            ))
        );
        assert_eq!(
            Feature::ClearForward.override_by_phone(),
            Some(Override::new(Forwarding::None, SetBy::Phone))
        );
        for f in [
            Feature::Pickup,
            Feature::CheckForward,
            Feature::BadForward,
            Feature::Unknown,
        ] {
            assert_eq!(f.override_by_phone(), None, "{f:?}");
        }
    }

    // ------------------------------------------------------------ outcomes

    fn o(user: &str, reason: &str) -> Outcome {
        Outcome {
            uri_user: user.to_string(),
            reason: reason.to_string(),
        }
    }

    #[test]
    fn outcome_table() {
        let none = Forwarding::None;
        let always = Forwarding::Always("4991234567".into());
        let unavail = Forwarding::Unavailable("1002".into());
        // *72F, *71F
        assert_eq!(
            outcome(&set(ForwardKind::Always, "4991234567"), &none),
            Some(o("*724991234567", "Forwarding To 4991234567"))
        );
        assert_eq!(
            outcome(&set(ForwardKind::Unavailable, "1002"), &none),
            Some(o("*711002", "Forwarding On Unavailable To 1002"))
        );
        // *72 / *71: the one set, *73 when none
        assert_eq!(
            outcome(&Feature::CheckForward, &always),
            Some(o("*724991234567", "Forwarding To 4991234567"))
        );
        assert_eq!(
            outcome(&Feature::CheckForward, &unavail),
            Some(o("*711002", "Forwarding On Unavailable To 1002"))
        );
        assert_eq!(
            outcome(&Feature::CheckForward, &none),
            Some(o("*73", "No Forwarding"))
        );
        // *73
        assert_eq!(
            outcome(&Feature::ClearForward, &always),
            Some(o("*73", "No Forwarding"))
        );
        // other *7…, other *…
        assert_eq!(
            outcome(&Feature::BadForward, &always),
            Some(o("*70", "Bad Forwarding Number"))
        );
        assert_eq!(
            outcome(&Feature::Unknown, &none),
            Some(o("*00", "Unknown Feature Code"))
        );
        assert_eq!(outcome(&Feature::Pickup, &none), None);
    }

    #[test]
    fn outcome_of_dialed_codes() {
        // Dialed → the Request-URI user of the table.
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        let current = Forwarding::Unavailable("1002".into());
        let user =
            |dialed: &str| outcome(&parse_for(&cfg, s1, dialed), &current).map(|o| o.uri_user);
        assert_eq!(user("*724991234567").as_deref(), Some("*724991234567"));
        assert_eq!(user("*711002").as_deref(), Some("*711002"));
        assert_eq!(user("*72").as_deref(), Some("*711002"));
        assert_eq!(user("*71").as_deref(), Some("*711002"));
        assert_eq!(user("*73").as_deref(), Some("*73"));
        assert_eq!(user("*74").as_deref(), Some("*70"));
        assert_eq!(user("*721001").as_deref(), Some("*70"));
        assert_eq!(user("*42").as_deref(), Some("*00"));
        assert_eq!(user("*11"), None);
    }

    #[test]
    fn reasons_are_valid_phrases() {
        let weird = Forwarding::Always("1\r\n2\t3".into());
        let out = outcome_check(&weird);
        assert_eq!(out.reason, "Forwarding To 1  2 3");
        assert!(!out.reason.contains(['\r', '\n']));
        for out in [
            outcome_set(ForwardKind::Always, "+44123"),
            outcome_set(ForwardKind::Unavailable, "1"),
            outcome_clear(),
            outcome_bad(),
            outcome_unknown(),
        ] {
            assert!(out.reason.chars().all(|c| !c.is_control()), "{out:?}");
        }
    }

    // ------------------------------------------------------------ announce

    fn nobody(_: &str) -> Option<Location> {
        None
    }

    #[test]
    fn announce_at_the_mediagate_host() {
        let cfg = example();
        let out = outcome_set(ForwardKind::Always, "4991234567");
        assert_eq!(
            announce(&cfg, &nobody, &out),
            Announce::Mediagate {
                target: "MEDIAGATE".to_string(),
                dest: Peer {
                    transport: Transport::Udp,
                    addr: "192.168.1.100:5070".parse().unwrap(),
                    flow: None,
                },
                ruri: "sip:*724991234567@192.168.1.100:5070".to_string(),
            }
        );
    }

    #[test]
    fn announce_without_mediagate_is_480_with_the_reason() {
        let cfg = config("[a]\nsecret=s\n");
        for (out, reason) in [
            (
                outcome_set(ForwardKind::Always, "4991234567"),
                "Forwarding To 4991234567",
            ),
            (outcome_clear(), "No Forwarding"),
            (outcome_bad(), "Bad Forwarding Number"),
            (outcome_unknown(), "Unknown Feature Code"),
        ] {
            assert_eq!(
                announce(&cfg, &nobody, &out),
                Announce::Reply {
                    code: 480,
                    reason: reason.to_string()
                }
            );
        }
    }

    #[test]
    fn announce_at_a_registered_mediagate() {
        // The first reachable mediagate: M1 has no host and is not
        // registered, M2 is registered (over TCP), M3 has a host.
        let cfg = config(
            "[M1]\naccountcode=mediagates\nsecret=s\n\
             [M2]\naccountcode=mediagates\nsecret=s\n\
             [M3]\naccountcode=mediagates\nhost=10.0.0.3\n",
        );
        let tcp = Peer {
            transport: Transport::Tcp,
            addr: "10.0.0.2:40000".parse::<SocketAddr>().unwrap(),
            flow: Some(7),
        };
        let locate = move |name: &str| {
            (name == "M2").then(|| Location {
                dest: tcp,
                uri: "sip:media@10.0.0.2:5080;transport=tcp".to_string(),
            })
        };
        assert_eq!(
            announce(&cfg, &locate, &outcome_bad()),
            Announce::Mediagate {
                target: "M2".to_string(),
                dest: tcp,
                ruri: "sip:*70@10.0.0.2:5080;transport=tcp".to_string(),
            }
        );
        // Without M2's registration: M3 at its host (port 5060).
        match announce(&cfg, &nobody, &outcome_unknown()) {
            Announce::Mediagate { target, ruri, dest } => {
                assert_eq!(target, "M3");
                assert_eq!(ruri, "sip:*00@10.0.0.3:5060");
                assert_eq!(dest.addr, "10.0.0.3:5060".parse::<SocketAddr>().unwrap());
                assert_eq!(dest.transport, Transport::Udp);
            }
            other => panic!("{other:?}"),
        }
    }
}
