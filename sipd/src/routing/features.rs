//! PBX feature codes (spec §5): what a registered client dialed when the
//! Request-URI user starts with `*`, and the voice guidance for the result.
//!
//! | dialed          | [`Feature`]                  | announced as (Request-URI user / `480` reason) |
//! |-----------------|------------------------------|------------------------------------------------|
//! | `*11`           | `Pickup`                     | — (the proxy: `404 Nothing To Pick Up`, `480 Picked Up`) |
//! | `*72F`          | `SetForward(Always F)`       | `*72F` / `Forwarding To F`                     |
//! | `*71F`          | `SetForward(Unavailable F)`  | `*71F` / `Forwarding On Unavailable To F`      |
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
//!   allowed), and one the client itself may dial: the rules of
//!   [`forwards::change`], which `sipctl fwd` applies too. [`parse_for`]
//!   makes a refused F `BadForward`; [`decide`] changes the forwarding
//!   through them.
//! - Forwarding is for user clients: gateways and mediagates may not set
//!   one (the router already refuses their star codes with `404`).
//! - `*73` (and a check with no forwarding) answers `No Forwarding`.
//! - The announcement goes to the first mediagate (sip.conf order) that can
//!   be reached now (its registration, else its `host`), with Request-URI
//!   `sip:{user}@{host:port}` (or the registered Contact with the user
//!   replaced); no reachable mediagate → the proxy answers `480 {reason}`.
//!   A mediagate whose host is down (health checks) is passed over for
//!   one that is not, but used when all reachable ones are down.
//!
//! Everything here is pure.

use std::collections::HashSet;

use proto::Forwarding;

use super::forwards::{self, is_number, Override, SetBy};
use super::reach::{self, Location};
use crate::config::{Client, Config};
use crate::transport::Peer;

/// What a `*` code asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `*11`: pick up a call ringing in the caller's group.
    Pickup,
    /// `*72F` ([`Forwarding::Always`]) / `*71F` ([`Forwarding::Unavailable`],
    /// never [`Forwarding::None`]); F syntactically a number, and when
    /// returned by [`parse_for`] also allowed for the caller.
    SetForward(Forwarding),
    /// `*72` or `*71` alone.
    CheckForward,
    /// `*73`.
    ClearForward,
    /// Any other `*7…`, or F that is not a number or not allowed.
    BadForward,
    /// Any other `*…` (and anything not starting with `*`).
    Unknown,
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
    let (always, number) = match rest.as_bytes().first() {
        Some(b'2') => (true, &rest[1..]),
        Some(b'1') => (false, &rest[1..]),
        Some(b'3') if rest.len() == 1 => return Feature::ClearForward,
        _ => return Feature::BadForward,
    };
    if number.is_empty() {
        Feature::CheckForward
    } else if is_number(number) {
        Feature::SetForward(if always {
            Forwarding::always(number)
        } else {
            Forwarding::unavailable(number)
        })
    } else {
        Feature::BadForward
    }
}

/// Parse a `*` code dialed by `caller`: as [`parse`], and a `SetForward`
/// that [`forwards::change`] refuses for the caller becomes `BadForward`.
pub fn parse_for(config: &Config, caller: &Client, dialed: &str) -> Feature {
    match parse(dialed) {
        Feature::SetForward(forwarding)
            if forwards::change(config, caller, forwarding.clone(), SetBy::Phone).is_err() =>
        {
            Feature::BadForward
        }
        feature => feature,
    }
}

/// What `feature`, dialed by `caller` whose effective forwarding is
/// `current`, does: the override to set (and persist before the
/// announcement), and the announcement. `*72F`, `*71F` and `*73` change the
/// forwarding through [`forwards::change`]; a change it refuses sets
/// nothing and is announced as `*70`. `None` for `Pickup`, which is not
/// announced.
pub fn decide(
    config: &Config,
    caller: &Client,
    feature: &Feature,
    current: &Forwarding,
) -> Option<(Option<Override>, Outcome)> {
    let outcome = outcome(feature, current)?;
    let wanted = match feature {
        Feature::SetForward(forwarding) => forwarding.clone(),
        Feature::ClearForward => Forwarding::None,
        _ => return Some((None, outcome)),
    };
    Some(
        match forwards::change(config, caller, wanted, SetBy::Phone) {
            Ok(ov) => (Some(ov), outcome),
            Err(_) => (None, outcome_bad()),
        },
    )
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

/// A forwarding just set (`*72F`, `*71F`) or the current one (`*72`, `*71`):
/// `*72F` / `Forwarding To F`, `*71F` / `Forwarding On Unavailable To F`,
/// and for none `*73` / `No Forwarding`.
pub fn outcome_forwarding(forwarding: &Forwarding) -> Outcome {
    match forwarding {
        Forwarding::Always { number } => {
            Outcome::new(format!("*72{number}"), format!("Forwarding To {number}"))
        }
        Forwarding::Unavailable { number } => Outcome::new(
            format!("*71{number}"),
            format!("Forwarding On Unavailable To {number}"),
        ),
        Forwarding::None => outcome_clear(),
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
        Feature::SetForward(forwarding) => outcome_forwarding(forwarding),
        Feature::CheckForward => outcome_forwarding(current),
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

/// Where to announce `outcome`: the first reachable mediagate not `down`
/// (its host failed the health checks, `core/gateways.rs`; one reached at
/// its registration is never down here), else the first reachable one,
/// else `480` with the outcome's reason. `locate` gives a client's
/// registered binding.
pub fn announce(
    config: &Config,
    locate: &dyn Fn(&str) -> Option<Location>,
    down: &HashSet<String>,
    outcome: &Outcome,
) -> Announce {
    let mut fallback = None;
    for mg in config.mediagates() {
        if let Some(loc) = reach::reach_as(mg, &outcome.uri_user, locate) {
            let announce = Announce::Mediagate {
                target: mg.name.clone(),
                dest: loc.dest,
                ruri: loc.uri,
            };
            if !down.contains(&mg.name) || locate(&mg.name).is_some() {
                return announce;
            }
            fallback.get_or_insert(announce);
        }
    }
    if let Some(a) = fallback {
        return a;
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
        config(include_str!("../../../sip.conf.example"))
    }

    fn set(forwarding: Forwarding) -> Feature {
        Feature::SetForward(forwarding)
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
            set(Forwarding::always("4991234567"))
        );
        assert_eq!(parse("*711002"), set(Forwarding::unavailable("1002")));
        assert_eq!(
            parse("*72+44123456789"),
            set(Forwarding::always("+44123456789"))
        );
        assert_eq!(parse("*710"), set(Forwarding::unavailable("0")));
        // F is digits after *72 / *71, nothing else.
        assert_eq!(parse("*7272"), set(Forwarding::always("72")));
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

    #[test]
    fn parse_for_validates_f() {
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        let foo = cfg.client("foo").unwrap();
        assert_eq!(
            parse_for(&cfg, s1, "*721002"),
            set(Forwarding::always("1002"))
        );
        assert_eq!(
            parse_for(&cfg, s1, "*711002"),
            set(Forwarding::unavailable("1002"))
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
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        let none = Forwarding::None;
        let ov = |f: &Feature| decide(&cfg, s1, f, &none).and_then(|(ov, _)| ov);
        assert_eq!(
            ov(&set(Forwarding::always("1002"))),
            Some(Override::new(Forwarding::always("1002"), SetBy::Phone))
        );
        assert_eq!(
            ov(&set(Forwarding::unavailable("1002"))),
            Some(Override::new(Forwarding::unavailable("1002"), SetBy::Phone))
        );
        assert_eq!(
            ov(&Feature::ClearForward),
            Some(Override::new(Forwarding::None, SetBy::Phone))
        );
        for f in [
            Feature::Pickup,
            Feature::CheckForward,
            Feature::BadForward,
            Feature::Unknown,
        ] {
            assert_eq!(ov(&f), None, "{f:?}");
        }
    }

    #[test]
    fn decide_changes_through_the_rules_and_announces() {
        let cfg = example();
        let s1 = cfg.client("siphone1").unwrap();
        let foo = cfg.client("foo").unwrap();
        let current = Forwarding::unavailable("1002");
        // Allowed: the override and the announcement of the new forwarding.
        assert_eq!(
            decide(&cfg, s1, &set(Forwarding::always("4991234567")), &current),
            Some((
                Some(Override::new(
                    Forwarding::always("4991234567"),
                    SetBy::Phone
                )),
                o("*724991234567", "Forwarding To 4991234567")
            ))
        );
        assert_eq!(
            decide(&cfg, s1, &Feature::ClearForward, &current),
            Some((
                Some(Override::new(Forwarding::None, SetBy::Phone)),
                o("*73", "No Forwarding")
            ))
        );
        // Refused by forwards::change (own number, dialplan): nothing set, *70.
        for (client, f) in [
            (s1, Forwarding::always("1001")),
            (s1, Forwarding::unavailable("1001")),
            (foo, Forwarding::always("+4412345")),
        ] {
            assert_eq!(
                decide(&cfg, client, &set(f.clone()), &current),
                Some((None, o("*70", "Bad Forwarding Number"))),
                "{f}"
            );
        }
        // Checks and bad or unknown codes change nothing.
        assert_eq!(
            decide(&cfg, s1, &Feature::CheckForward, &current),
            Some((None, o("*711002", "Forwarding On Unavailable To 1002")))
        );
        assert_eq!(
            decide(&cfg, s1, &Feature::BadForward, &current),
            Some((None, o("*70", "Bad Forwarding Number")))
        );
        assert_eq!(
            decide(&cfg, s1, &Feature::Unknown, &current),
            Some((None, o("*00", "Unknown Feature Code")))
        );
        assert_eq!(decide(&cfg, s1, &Feature::Pickup, &current), None);
        // A gateway's star codes never get here (the router answers 404),
        // but the rules refuse them too.
        let g = cfg.client("GATE1").unwrap();
        assert_eq!(
            decide(&cfg, g, &Feature::ClearForward, &current),
            Some((None, o("*70", "Bad Forwarding Number")))
        );
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
        let always = Forwarding::always("4991234567");
        let unavail = Forwarding::unavailable("1002");
        // *72F, *71F
        assert_eq!(
            outcome(&set(Forwarding::always("4991234567")), &none),
            Some(o("*724991234567", "Forwarding To 4991234567"))
        );
        assert_eq!(
            outcome(&set(Forwarding::unavailable("1002")), &none),
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
        let current = Forwarding::unavailable("1002");
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
        let weird = Forwarding::always("1\r\n2\t3");
        let out = outcome_forwarding(&weird);
        assert_eq!(out.reason, "Forwarding To 1  2 3");
        assert!(!out.reason.contains(['\r', '\n']));
        for out in [
            outcome_forwarding(&Forwarding::always("+44123")),
            outcome_forwarding(&Forwarding::unavailable("1")),
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

    fn none() -> HashSet<String> {
        HashSet::new()
    }

    fn names(n: &[&str]) -> HashSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn announce_at_the_mediagate_host() {
        let cfg = example();
        let out = outcome_forwarding(&Forwarding::always("4991234567"));
        assert_eq!(
            announce(&cfg, &nobody, &none(), &out),
            Announce::Mediagate {
                target: "MEDIAGATE".to_string(),
                dest: Peer {
                    transport: Transport::Udp,
                    addr: "192.168.1.100:5070".parse().unwrap(),
                    flow: None,
                    local: None,
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
                outcome_forwarding(&Forwarding::always("4991234567")),
                "Forwarding To 4991234567",
            ),
            (outcome_clear(), "No Forwarding"),
            (outcome_bad(), "Bad Forwarding Number"),
            (outcome_unknown(), "Unknown Feature Code"),
        ] {
            assert_eq!(
                announce(&cfg, &nobody, &none(), &out),
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
            local: None,
        };
        let locate = move |name: &str| {
            (name == "M2").then(|| Location {
                dest: tcp,
                uri: "sip:media@10.0.0.2:5080;transport=tcp".to_string(),
            })
        };
        assert_eq!(
            announce(&cfg, &locate, &none(), &outcome_bad()),
            Announce::Mediagate {
                target: "M2".to_string(),
                dest: tcp,
                ruri: "sip:*70@10.0.0.2:5080;transport=tcp".to_string(),
            }
        );
        // Without M2's registration: M3 at its host (port 5060).
        match announce(&cfg, &nobody, &none(), &outcome_unknown()) {
            Announce::Mediagate { target, ruri, dest } => {
                assert_eq!(target, "M3");
                assert_eq!(ruri, "sip:*00@10.0.0.3:5060");
                assert_eq!(dest.addr, "10.0.0.3:5060".parse::<SocketAddr>().unwrap());
                assert_eq!(dest.transport, Transport::Udp);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn announce_prefers_a_mediagate_that_is_not_down() {
        let cfg = config(
            "[M1]\naccountcode=mediagates\nhost=10.0.0.1\n\
             [M2]\naccountcode=mediagates\nhost=10.0.0.2\n\
             [M3]\naccountcode=mediagates\nsecret=s\n",
        );
        let at = |down: &[&str], locate: &dyn Fn(&str) -> Option<Location>| match announce(
            &cfg,
            locate,
            &names(down),
            &outcome_unknown(),
        ) {
            Announce::Mediagate { target, .. } => target,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(&[], &nobody), "M1");
        assert_eq!(at(&["M1"], &nobody), "M2");
        assert_eq!(at(&["M2"], &nobody), "M1");
        // All reachable ones down: the first anyway.
        assert_eq!(at(&["M1", "M2"], &nobody), "M1");
        // A registered mediagate is reached at its registration: the
        // health of hosts does not apply to it.
        let m3 = |name: &str| {
            (name == "M3").then(|| Location {
                dest: Peer::to(Transport::Udp, "10.0.0.3:5060".parse().unwrap()),
                uri: "sip:m@10.0.0.3:5060".to_string(),
            })
        };
        assert_eq!(at(&["M1", "M2"], &m3), "M3");
        assert_eq!(at(&["M1", "M2", "M3"], &m3), "M3");
    }
}
