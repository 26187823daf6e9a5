//! Routing of an INVITE (spec §4.2, §4.5): who the caller reaches with the
//! Request-URI user it dialed, as a [`Decision`] for the proxy.
//!
//! [`route`] is pure: the registrations come in through a locator function,
//! the forwarding state as [`Forwards`], the random start of gateway
//! failover as a number. The proxy carries out the [`Plan`]: it tries the
//! attempts one after another, moving on as [`NextOn`] says.
//!
//! # Rules, in order
//! 1. A `*` code: [`Decision::Feature`] for user clients (F validated by
//!    [`features::parse_for`]), `404` for gateways and mediagates (the
//!    outside world never uses feature codes).
//! 2. A user client's name, 3. the short number of a user client in the
//!    caller's group, 4. the long number of a user client (both normalised):
//!    that client, the target T.
//! 5. Anything else is external: from a gateway or mediagate `404` (no
//!    transit between trunks); not a number `404`; not matched by the
//!    caller's dialplan (searched in the normalised number) `403`; no
//!    gateway with a prefix that can be reached (`host`, or registered)
//!    `503 No Gateway`; else one attempt per reachable gateway,
//!    starting at `gateway_start % n` and wrapping, with Request-URI
//!    `sip:{prefix}{normalised}@{host:port}`, presenting the caller's
//!    callerid ([`caller_id`]). Gateways in [`Call::down`] are left out,
//!    unless all the reachable ones are down: then all are tried, in the
//!    same order (a health check can be wrong; failing at once cannot
//!    be better).
//! 6. T with an effective `Always(F)`: F is routed as if T had dialed it
//!    (T's group, dialplan and callerid), with a Diversion naming T
//!    (`reason=unconditional`); a `Reply` there is the call's answer.
//!    Otherwise T is rung (its registration, else its `host`; neither: no
//!    attempt, T is unavailable), then the members of its hunting list in
//!    order (directly: their own forwarding is not applied; unreachable ones
//!    skipped), then, with an effective `Unavailable(F)`, F routed as if T
//!    had dialed it (Diversion naming T, `reason=unavailable`); a `Reply`
//!    from that routing just adds no attempts.
//!
//! A chain of forwarding follows at most [`MAX_FORWARD_STEPS`] steps (each
//! `=F` or `~F` followed is a step); one more is `482 Forwarding Chain Too
//! Long`. A forwarding that reaches a client already in the chain is `482
//! Loop Detected`.
//!
//! # Decisions where the spec is open
//! - Only user clients are targets: a gateway's or mediagate's name is not a
//!   client name for rule 2 (dialing `GATE2` from `GATE1` would be transit,
//!   and a gateway or mediagate is not a subscriber).
//! - Order of checks for an external number: caller role (404), number
//!   (404), dialplan (403), gateways (503).
//! - Calling oneself directly (by name or number) rings one's own binding.
//!   But a call never comes back to its caller through forwarding or
//!   hunting: a forwarding that resolves to the caller is a dead end
//!   (nothing rung for it, no error), and the caller is skipped in hunting
//!   lists. The caller is not part of the loop-detection chain.
//! - A client is rung at most once per plan (the first attempt wins), and a
//!   gateway at most once per Request-URI.
//! - Request-URI of a client: its registered Contact as is; a `host`
//!   client without a registration gets `sip:{user}@{host:port}` (port 5060
//!   when none is written; IPv6 in brackets), where user is the number or
//!   name it was reached by (the dialed U, a forwarding's F) or, for hunting
//!   members, its name. A registration wins over a `host`.
//! - Gateways (and mediagates, [`reach_as`]) that register instead of having
//!   a host are reached at their registration, the Contact's user replaced
//!   by `{prefix}{normalised}`. Such a gateway is never "down" here: the
//!   health checks are of `host`, and a registration's own keep-alive
//!   already decides whether it is located at all.
//! - `noanswer` is `Some(config.general.noanswer)` for every client attempt,
//!   also the last one (spec §4.5: a client that does not answer in time is
//!   unavailable, and the caller then gets the last final response); `None`
//!   for gateways.
//! - Diversion (RFC 5806): one entry per diversion, newest first, each
//!   `<sip:{name}@{realm}>;reason=…;counter=1` with the realm of
//!   `[general]`. Hunting members get an entry naming T with
//!   `reason=unavailable`, like `~F`.
//! - `Plan::no_attempt`: `503 Service Unavailable` when every attempt is a
//!   gateway, else `480 Temporarily Unavailable` (also when there is no
//!   attempt at all).

use std::collections::HashSet;

use proto::Forwarding;

use super::features::{self, Feature};
use super::forwards::Forwards;
use super::reach::{reach, reach_as, resolve, Location, Resolved};
use crate::config::{CallerId, Client, Config, Role};
use crate::transport::Peer;

/// Forwarding steps followed at most in one call.
pub const MAX_FORWARD_STEPS: usize = 5;

/// Everything [`route`] looks at.
pub struct Call<'a> {
    pub config: &'a Config,
    /// The identified caller (a `host` client or the authenticated user).
    pub caller: &'a Client,
    /// The Request-URI user, %-unescaped (may start with `+` or `*`).
    pub dialed: &'a str,
    /// A client's registered binding by name, `None` when not registered.
    /// (`host` clients without a binding are handled by the router.)
    pub locate: &'a dyn Fn(&str) -> Option<Location>,
    pub forwards: &'a Forwards,
    /// Random start index for gateway failover (reduced modulo the number
    /// of gateways).
    pub gateway_start: usize,
    /// Gateways (by name) whose `host` stopped answering health-check
    /// OPTIONS (`core/gateways.rs`): skipped, unless every gateway the
    /// call could use is down.
    pub down: &'a HashSet<String>,
}

/// What to do with the INVITE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answer it with this final response.
    Reply { code: u16, reason: String },
    /// A feature code dialed by a user client.
    Feature(Feature),
    /// Proxy it.
    Proxy(Plan),
}

/// The attempts of a proxied call, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub attempts: Vec<Attempt>,
    /// The Request-URI user as dialed.
    pub dialed: String,
    /// The final response when there is no attempt, or every attempt ended
    /// without a final response (timeout, noanswer).
    pub no_attempt: (u16, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptKind {
    Client,
    Gateway,
}

/// When the proxy moves on to the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextOn {
    /// A client: `486`, `480`, `408`, `603`, no answer within `noanswer`,
    /// or no response (timeout).
    Unavailable,
    /// A gateway: `408`, any `5xx` (incl. `503`), or no response.
    GatewayFailure,
}

/// One branch to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The client rung, or the gateway used (name), for call lists and CDRs.
    pub target: String,
    pub kind: AttemptKind,
    pub dest: Peer,
    /// Request-URI to send.
    pub ruri: String,
    pub next_on: NextOn,
    /// Seconds of ringing before giving up on this attempt (clients only).
    pub noanswer: Option<u32>,
    /// Gateways: present the caller as this (From user and
    /// P-Asserted-Identity). It is the callerid of whoever "dialed" the
    /// external number: the caller, or the client whose forwarding led there.
    pub present: Option<CallerId>,
    /// Diversion header values to add, newest first.
    pub diversion: Vec<String>,
}

/// How `client` presents itself on external calls: `callerid`, else its
/// long number (as written), else its name.
pub fn caller_id(client: &Client) -> CallerId {
    if let Some(cid) = &client.callerid {
        return cid.clone();
    }
    CallerId {
        display: None,
        number: client
            .exten
            .long
            .clone()
            .unwrap_or_else(|| client.name.clone()),
    }
}

/// A Diversion header value (RFC 5806) naming client `name`.
pub fn diversion(name: &str, realm: &str, reason: &str) -> String {
    format!("<sip:{name}@{realm}>;reason={reason};counter=1")
}

/// Route an INVITE (see the module docs for the rules).
pub fn route(call: &Call) -> Decision {
    if call.dialed.starts_with('*') {
        if call.caller.role != Role::User {
            return reply(404, "Not Found").into();
        }
        return Decision::Feature(features::parse_for(call.config, call.caller, call.dialed));
    }
    let mut router = Router {
        call,
        attempts: Vec::new(),
        chain: Vec::new(),
        rung: HashSet::new(),
    };
    match router.number(call.caller, call.dialed, &[], true) {
        Err(r) => r.into(),
        Ok(()) => {
            let attempts = router.attempts;
            let all_gateways =
                !attempts.is_empty() && attempts.iter().all(|a| a.kind == AttemptKind::Gateway);
            let no_attempt = if all_gateways {
                (503, "Service Unavailable".to_string())
            } else {
                (480, "Temporarily Unavailable".to_string())
            };
            Decision::Proxy(Plan {
                attempts,
                dialed: call.dialed.to_string(),
                no_attempt,
            })
        }
    }
}

/// A final answer instead of attempts.
#[derive(Debug)]
struct Reply {
    code: u16,
    reason: String,
}

fn reply(code: u16, reason: &str) -> Reply {
    Reply {
        code,
        reason: reason.to_string(),
    }
}

impl From<Reply> for Decision {
    fn from(r: Reply) -> Decision {
        Decision::Reply {
            code: r.code,
            reason: r.reason,
        }
    }
}

/// `Err` means the routing gave a final answer; it then added no attempts.
type Routed = Result<(), Reply>;

struct Router<'a, 'c> {
    call: &'c Call<'a>,
    attempts: Vec<Attempt>,
    /// Clients whose forwarding is being followed, first target first.
    chain: Vec<&'a str>,
    /// Clients (by name) and gateways (by name and Request-URI) in `attempts`.
    rung: HashSet<(&'a str, Option<String>)>,
}

impl<'a> Router<'a, '_> {
    /// `number` dialed by `dialer` (the caller when `direct`, else a client
    /// whose forwarding is followed).
    fn number(&mut self, dialer: &'a Client, number: &str, div: &[String], direct: bool) -> Routed {
        match resolve(self.call.config, dialer, number) {
            Resolved::Client(t) => {
                if self.chain.contains(&t.name.as_str()) {
                    return Err(reply(482, "Loop Detected"));
                }
                if !direct && t.name == self.call.caller.name {
                    // Forwarded back to the caller: a dead end.
                    return Ok(());
                }
                self.chain.push(&t.name);
                let routed = self.client(t, number, div);
                self.chain.pop();
                routed
            }
            Resolved::External(normalised) => self.external(dialer, &normalised, div),
            Resolved::NotANumber => Err(reply(404, "Not Found")),
        }
    }

    /// Target client `t` (last in the chain), reached by `user`.
    fn client(&mut self, t: &'a Client, user: &str, div: &[String]) -> Routed {
        let realm = &self.call.config.general.realm;
        let (forwarding, _) = self.call.forwards.effective(t);
        if let Forwarding::Always { number: f } = &forwarding {
            self.step()?;
            let div = prepend(diversion(&t.name, realm, "unconditional"), div);
            return self.number(t, f, &div, false);
        }
        self.ring(t, user, div);
        let unavailable = prepend(diversion(&t.name, realm, "unavailable"), div);
        for member in self.call.config.hunt_list(t) {
            if member.name != self.call.caller.name {
                self.ring(member, &member.name, &unavailable);
            }
        }
        if let Forwarding::Unavailable { number: f } = &forwarding {
            if self.step().is_ok() {
                // A Reply here (loop, 403, …) only means no more attempts.
                let _ = self.number(t, f, &unavailable, false);
            }
        }
        Ok(())
    }

    /// Following one more forwarding step from the last client in the chain.
    fn step(&self) -> Routed {
        if self.chain.len() > MAX_FORWARD_STEPS {
            Err(reply(482, "Forwarding Chain Too Long"))
        } else {
            Ok(())
        }
    }

    /// Ring client `c` where it is now; nothing when it cannot be reached
    /// or was already rung.
    fn ring(&mut self, c: &'a Client, user: &str, div: &[String]) {
        if self.rung.contains(&(c.name.as_str(), None)) {
            return;
        }
        let Some(loc) = reach(c, user, self.call.locate) else {
            return;
        };
        self.rung.insert((&c.name, None));
        self.attempts.push(Attempt {
            target: c.name.clone(),
            kind: AttemptKind::Client,
            dest: loc.dest,
            ruri: loc.uri,
            next_on: NextOn::Unavailable,
            noanswer: Some(self.call.config.general.noanswer),
            present: None,
            diversion: div.to_vec(),
        });
    }

    /// External number (normalised) dialed by `dialer`.
    fn external(&mut self, dialer: &Client, normalised: &str, div: &[String]) -> Routed {
        if dialer.role != Role::User {
            return Err(reply(404, "Not Found"));
        }
        if !dialer.dialplan.is_match(normalised) {
            return Err(reply(403, "Forbidden"));
        }
        let gateways = self.call.config.gateways();
        if gateways.is_empty() {
            return Err(reply(503, "No Gateway"));
        }
        let n = gateways.len();
        let start = self.call.gateway_start % n;
        let present = caller_id(dialer);
        // (gateway, where, down) in failover order.
        let mut found = Vec::with_capacity(n);
        for i in 0..n {
            let g = gateways[(start + i) % n];
            let prefix = g.prefix.as_deref().unwrap_or_default();
            let user = format!("{prefix}{normalised}");
            let Some(loc) = reach_as(g, &user, self.call.locate) else {
                continue;
            };
            let down = self.call.down.contains(&g.name) && (self.call.locate)(&g.name).is_none();
            found.push((g, loc, down));
        }
        if found.is_empty() {
            return Err(reply(503, "No Gateway"));
        }
        let all_down = found.iter().all(|(_, _, down)| *down);
        for (g, loc, down) in found {
            if down && !all_down {
                continue;
            }
            if !self.rung.insert((&g.name, Some(loc.uri.clone()))) {
                continue;
            }
            self.attempts.push(Attempt {
                target: g.name.clone(),
                kind: AttemptKind::Gateway,
                dest: loc.dest,
                ruri: loc.uri,
                next_on: NextOn::GatewayFailure,
                noanswer: None,
                present: Some(present.clone()),
                diversion: div.to_vec(),
            });
        }
        Ok(())
    }
}

fn prepend(first: String, rest: &[String]) -> Vec<String> {
    let mut v = Vec::with_capacity(rest.len() + 1);
    v.push(first);
    v.extend_from_slice(rest);
    v
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use super::*;
    use crate::config::Options;
    use crate::routing::forwards::{Override, SetBy};
    use crate::transport::Transport;

    const EXAMPLE: &str = include_str!("../../../sip.conf.example");
    const REALM: &str = "pbx.test";

    fn config(text: &str) -> Config {
        let opts = Options {
            country: "7".to_string(),
            city: "495".to_string(),
            default_realm: REALM.to_string(),
            file_name: "sip.conf".to_string(),
        };
        Config::parse(text, &opts).unwrap_or_else(|e| panic!("{e}"))
    }

    fn udp(addr: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: addr.parse::<SocketAddr>().unwrap(),
            flow: None,
            local: None,
        }
    }

    /// A config, who is registered, the forwarding overrides and the
    /// gateway start: everything `route` looks at.
    struct World {
        cfg: Config,
        regs: HashMap<String, Location>,
        fw: Forwards,
        start: usize,
        down: HashSet<String>,
    }

    impl World {
        fn new(text: &str) -> World {
            World {
                cfg: config(text),
                regs: HashMap::new(),
                fw: Forwards::new(),
                start: 0,
                down: HashSet::new(),
            }
        }

        /// These gateways failed their health checks.
        fn down(mut self, names: &[&str]) -> World {
            self.down = names.iter().map(|n| n.to_string()).collect();
            self
        }

        fn example() -> World {
            World::new(EXAMPLE)
        }

        /// Register `names`, each at its own port of 198.51.100.1 over UDP.
        fn reg(mut self, names: &[&str]) -> World {
            for name in names {
                let loc = binding(&self.cfg, name);
                self.regs.insert(name.to_string(), loc);
            }
            self
        }

        fn fwd(mut self, name: &str, forwarding: Forwarding, by: SetBy) -> World {
            self.fw.set(name, Override::new(forwarding, by));
            self
        }

        fn start(mut self, start: usize) -> World {
            self.start = start;
            self
        }

        fn route(&self, caller: &str, dialed: &str) -> Decision {
            let caller = self
                .cfg
                .client(caller)
                .unwrap_or_else(|| panic!("no client {caller}"));
            let locate = |name: &str| self.regs.get(name).cloned();
            route(&Call {
                config: &self.cfg,
                caller,
                dialed,
                locate: &locate,
                forwards: &self.fw,
                gateway_start: self.start,
                down: &self.down,
            })
        }

        #[track_caller]
        fn plan(&self, caller: &str, dialed: &str) -> Plan {
            match self.route(caller, dialed) {
                Decision::Proxy(plan) => {
                    assert_eq!(plan.dialed, dialed);
                    plan
                }
                other => panic!("{caller} dialing {dialed}: expected a plan, got {other:?}"),
            }
        }

        /// (target, Request-URI) of every attempt.
        #[track_caller]
        fn rings(&self, caller: &str, dialed: &str) -> Vec<(String, String)> {
            self.plan(caller, dialed)
                .attempts
                .into_iter()
                .map(|a| (a.target, a.ruri))
                .collect()
        }

        /// The targets of every attempt.
        #[track_caller]
        fn targets(&self, caller: &str, dialed: &str) -> Vec<String> {
            self.plan(caller, dialed)
                .attempts
                .into_iter()
                .map(|a| a.target)
                .collect()
        }

        #[track_caller]
        fn reply(&self, caller: &str, dialed: &str) -> (u16, String) {
            match self.route(caller, dialed) {
                Decision::Reply { code, reason } => (code, reason),
                other => panic!("{caller} dialing {dialed}: expected a reply, got {other:?}"),
            }
        }
    }

    /// The registration of `name` in tests: 198.51.100.1, port 20000 + its
    /// index in sip.conf, Contact `sip:{name}@198.51.100.1:{port};ob`.
    fn binding(cfg: &Config, name: &str) -> Location {
        let i = cfg.clients.iter().position(|c| c.name == name).unwrap();
        let port = 20000 + i;
        Location {
            dest: udp(&format!("198.51.100.1:{port}")),
            uri: format!("sip:{name}@198.51.100.1:{port};ob"),
        }
    }

    fn contact(cfg: &Config, name: &str) -> (String, String) {
        (name.to_string(), binding(cfg, name).uri)
    }

    fn pair(target: &str, ruri: &str) -> (String, String) {
        (target.to_string(), ruri.to_string())
    }

    fn div(name: &str, reason: &str) -> String {
        format!("<sip:{name}@{REALM}>;reason={reason};counter=1")
    }

    fn always(n: &str) -> Forwarding {
        Forwarding::always(n)
    }

    fn unavail(n: &str) -> Forwarding {
        Forwarding::unavailable(n)
    }

    fn cid(number: &str) -> Option<CallerId> {
        Some(CallerId {
            display: None,
            number: number.to_string(),
        })
    }

    fn unavailable_480() -> (u16, String) {
        (480, "Temporarily Unavailable".to_string())
    }

    // ------------------------------------------------ the seed's scenarios

    #[test]
    fn seed_siphone1_dials_1002_forwarded_out_through_the_gateways() {
        let w = World::example().reg(&["siphone1", "siphone2"]);
        let plan = w.plan("siphone1", "1002");
        let expected = |target: &str, host: &str, ruri: &str| Attempt {
            target: target.to_string(),
            kind: AttemptKind::Gateway,
            dest: udp(host),
            ruri: ruri.to_string(),
            next_on: NextOn::GatewayFailure,
            noanswer: None,
            // siphone2's callerid: no callerid= → its long number
            present: cid("4999876543"),
            diversion: vec![div("siphone2", "unconditional")],
        };
        assert_eq!(
            plan.attempts,
            vec![
                expected(
                    "GATE1",
                    "192.168.1.200:5060",
                    "sip:999599974991234567@192.168.1.200:5060"
                ),
                expected(
                    "GATE2",
                    "192.168.1.201:5060",
                    "sip:974991234567@192.168.1.201:5060"
                ),
            ]
        );
        assert_eq!(plan.no_attempt, (503, "Service Unavailable".to_string()));
        assert_eq!(
            plan.attempts[0].diversion,
            ["<sip:siphone2@pbx.test>;reason=unconditional;counter=1"]
        );
    }

    #[test]
    fn seed_override_off_rings_siphone2() {
        for by in [SetBy::Phone, SetBy::Sipctl] {
            let w = World::example().reg(&["siphone1", "siphone2"]).fwd(
                "siphone2",
                Forwarding::None,
                by,
            );
            let plan = w.plan("siphone1", "1002");
            assert_eq!(
                plan.attempts,
                vec![Attempt {
                    target: "siphone2".to_string(),
                    kind: AttemptKind::Client,
                    dest: binding(&w.cfg, "siphone2").dest,
                    ruri: binding(&w.cfg, "siphone2").uri,
                    next_on: NextOn::Unavailable,
                    noanswer: Some(20),
                    present: None,
                    diversion: vec![],
                }]
            );
            assert_eq!(plan.no_attempt, unavailable_480());
        }
    }

    #[test]
    fn seed_siphone1_unregistered_hunts_to_siphone2() {
        let w = World::example().reg(&["siphone2"]);
        for caller in ["foo", "bar", "GATE1", "MEDIAGATE"] {
            let plan = w.plan(caller, "siphone1");
            assert_eq!(
                plan.attempts,
                vec![Attempt {
                    target: "siphone2".to_string(),
                    kind: AttemptKind::Client,
                    dest: binding(&w.cfg, "siphone2").dest,
                    ruri: binding(&w.cfg, "siphone2").uri,
                    next_on: NextOn::Unavailable,
                    noanswer: Some(20),
                    present: None,
                    diversion: vec![div("siphone1", "unavailable")],
                }],
                "{caller}"
            );
        }
        // Registered: siphone1 first, then siphone2.
        let w = World::example().reg(&["siphone1", "siphone2"]);
        assert_eq!(
            w.rings("foo", "siphone1"),
            [contact(&w.cfg, "siphone1"), contact(&w.cfg, "siphone2")]
        );
    }

    // ------------------------------------------------ rule 1: feature codes

    #[test]
    fn star_codes_of_user_clients_are_features() {
        let w = World::example();
        let cases = [
            ("*11", Feature::Pickup),
            (
                "*724991234567",
                Feature::SetForward(Forwarding::always("4991234567")),
            ),
            (
                "*711002",
                Feature::SetForward(Forwarding::unavailable("1002")),
            ),
            ("*72", Feature::CheckForward),
            ("*71", Feature::CheckForward),
            ("*73", Feature::ClearForward),
            ("*70", Feature::BadForward),
            ("*7", Feature::BadForward),
            ("*72siphone2", Feature::BadForward),
            ("*721001", Feature::BadForward), // siphone1's own number
            ("*00", Feature::Unknown),
            ("*", Feature::Unknown),
        ];
        for (dialed, feature) in cases {
            assert_eq!(
                w.route("siphone1", dialed),
                Decision::Feature(feature),
                "{dialed}"
            );
        }
        // a number of more than 32 digits is no number
        let long = format!("*72{}", "4".repeat(33));
        assert_eq!(
            w.route("siphone1", &long),
            Decision::Feature(Feature::BadForward)
        );
        // host clients are user clients too
        assert_eq!(
            w.route("bar", "*73"),
            Decision::Feature(Feature::ClearForward)
        );
        // F validated against the dialer's dialplan: foo is domestic
        assert_eq!(
            w.route("foo", "*72+4412345"),
            Decision::Feature(Feature::BadForward)
        );
        assert_eq!(
            w.route("bar", "*72+4412345"),
            Decision::Feature(Feature::SetForward(Forwarding::always("+4412345")))
        );
    }

    #[test]
    fn gateways_and_mediagates_never_use_star_codes() {
        let w = World::example().reg(&["siphone1", "siphone2"]);
        for caller in ["GATE1", "GATE2", "MEDIAGATE"] {
            for dialed in ["*11", "*724991234567", "*72", "*73", "*70", "*00", "*"] {
                assert_eq!(
                    w.reply(caller, dialed),
                    (404, "Not Found".to_string()),
                    "{caller} {dialed}"
                );
            }
        }
    }

    // ------------------------------------------------ rules 2-4: clients

    #[test]
    fn rule2_client_name() {
        let w = World::example().reg(&["siphone1", "siphone2", "foo"]);
        assert_eq!(w.rings("foo", "siphone1")[0], contact(&w.cfg, "siphone1"));
        assert_eq!(w.rings("siphone1", "foo"), [contact(&w.cfg, "foo")]);
        // A name of another group is fine: names are global.
        assert_eq!(
            w.rings("siphone2", "bar"),
            [pair("bar", "sip:bar@192.168.1.129:5060")]
        );
    }

    #[test]
    fn rule3_short_number_in_the_callers_group_only() {
        let w = World::example().reg(&["siphone1", "siphone2", "foo"]);
        // 1001 is foo in FOOBAR and siphone1 in HOME.
        assert_eq!(w.rings("bar", "1001"), [contact(&w.cfg, "foo")]);
        assert_eq!(w.rings("siphone2", "1001")[0], contact(&w.cfg, "siphone1"));
        // 1002 is bar in FOOBAR.
        assert_eq!(
            w.rings("foo", "1002"),
            [pair("bar", "sip:1002@192.168.1.129:5060")]
        );
        // From a gateway a short number is nobody's: external → 404.
        assert_eq!(w.reply("GATE1", "1001"), (404, "Not Found".to_string()));
        assert_eq!(w.reply("MEDIAGATE", "1002"), (404, "Not Found".to_string()));
    }

    #[test]
    fn rule4_long_number_in_every_form() {
        let w = World::example()
            .reg(&["siphone2"])
            .fwd("siphone2", Forwarding::None, SetBy::Phone);
        for dialed in ["4999876543", "84999876543", "74999876543", "+74999876543"] {
            for caller in ["foo", "bar", "siphone1", "GATE1", "GATE2", "MEDIAGATE"] {
                assert_eq!(
                    w.rings(caller, dialed),
                    [contact(&w.cfg, "siphone2")],
                    "{caller} {dialed}"
                );
            }
        }
        // 8104999876543 → 104999876543 → 4999876543: without the country
        // code, not siphone2's number (74999876543) but an external one.
        assert_eq!(
            w.reply("GATE1", "8104999876543"),
            (404, "Not Found".to_string())
        );
        assert_eq!(w.targets("siphone1", "8104999876543"), ["GATE1", "GATE2"]);
    }

    #[test]
    fn gateway_calls_siphone2_by_long_number() {
        // sip.conf's =4991234567 applies: out again through the gateways,
        // as siphone2 (its dialplan, its callerid), Diversion naming it.
        let w = World::example().reg(&["siphone2"]);
        let plan = w.plan("GATE1", "4999876543");
        assert_eq!(
            plan.attempts
                .iter()
                .map(|a| (a.target.as_str(), a.ruri.as_str()))
                .collect::<Vec<_>>(),
            [
                ("GATE1", "sip:999599974991234567@192.168.1.200:5060"),
                ("GATE2", "sip:974991234567@192.168.1.201:5060")
            ]
        );
        for a in &plan.attempts {
            assert_eq!(a.present, cid("4999876543"));
            assert_eq!(a.diversion, [div("siphone2", "unconditional")]);
        }
        // Without the forwarding: siphone2's binding.
        let w = w.fwd("siphone2", Forwarding::None, SetBy::Sipctl);
        assert_eq!(
            w.rings("GATE1", "4999876543"),
            [contact(&w.cfg, "siphone2")]
        );
        // A gateway may also name a client (rule 2).
        assert_eq!(w.rings("GATE2", "siphone2"), [contact(&w.cfg, "siphone2")]);
    }

    #[test]
    fn gateways_and_mediagates_are_not_targets() {
        let w = World::example().reg(&["GATE1", "MEDIAGATE"]);
        for caller in ["siphone1", "foo"] {
            for dialed in ["GATE1", "GATE2", "MEDIAGATE"] {
                assert_eq!(w.reply(caller, dialed), (404, "Not Found".to_string()));
            }
        }
        // no transit between trunks by name either
        assert_eq!(w.reply("GATE1", "GATE2"), (404, "Not Found".to_string()));
        assert_eq!(w.reply("GATE1", "GATE1"), (404, "Not Found".to_string()));
    }

    #[test]
    fn digit_names_come_before_short_and_long_numbers() {
        let w = World::new(
            "[1002]\nsecret=s\n\
             [a]\naccountcode=G\nsecret=s\nexten=1001\n\
             [b]\naccountcode=G\nsecret=s\nexten=4991112233#1002\n",
        )
        .reg(&["1002", "b"]);
        assert_eq!(w.targets("a", "1002"), ["1002"]);
        assert_eq!(w.targets("a", "4991112233"), ["b"]);
    }

    #[test]
    fn calling_oneself_rings_ones_own_binding() {
        let w = World::example().reg(&["siphone1", "siphone2"]);
        for dialed in ["siphone1", "1001"] {
            assert_eq!(
                w.rings("siphone1", dialed),
                // then hunting (2) = siphone2
                [contact(&w.cfg, "siphone1"), contact(&w.cfg, "siphone2")],
                "{dialed}"
            );
        }
        let w = w.fwd("siphone2", Forwarding::None, SetBy::Phone);
        for dialed in ["siphone2", "1002", "4999876543"] {
            assert_eq!(w.rings("siphone2", dialed), [contact(&w.cfg, "siphone2")]);
        }
    }

    // ------------------------------------------------ where clients are rung

    #[test]
    fn registered_clients_at_their_binding() {
        let mut w = World::example();
        let tcp = Location {
            dest: Peer {
                transport: Transport::Tcp,
                addr: "203.0.113.7:51234".parse().unwrap(),
                flow: Some(42),
                local: None,
            },
            uri: "sip:siphone1@10.0.0.7:5060;transport=tcp".to_string(),
        };
        w.regs.insert("siphone1".to_string(), tcp.clone());
        let plan = w.plan("siphone2", "1001");
        assert_eq!(plan.attempts.len(), 1);
        assert_eq!(plan.attempts[0].dest, tcp.dest);
        assert_eq!(plan.attempts[0].ruri, tcp.uri);
        assert_eq!(plan.attempts[0].kind, AttemptKind::Client);
        assert_eq!(plan.attempts[0].next_on, NextOn::Unavailable);
    }

    #[test]
    fn host_clients_at_their_host() {
        let w = World::example();
        let plan = w.plan("foo", "1002");
        assert_eq!(
            plan.attempts,
            vec![Attempt {
                target: "bar".to_string(),
                kind: AttemptKind::Client,
                dest: udp("192.168.1.129:5060"),
                ruri: "sip:1002@192.168.1.129:5060".to_string(),
                next_on: NextOn::Unavailable,
                noanswer: Some(20),
                present: None,
                diversion: vec![],
            }]
        );
        assert_eq!(
            w.rings("foo", "bar"),
            [pair("bar", "sip:bar@192.168.1.129:5060")]
        );
    }

    #[test]
    fn host_without_port_and_ipv6_hosts() {
        let w = World::new(
            "[a]\naccountcode=G\nhost=10.0.0.1\nexten=101\n\
             [b]\naccountcode=G\nhost=[2001:db8::2]:5070\nexten=102\n\
             [c]\naccountcode=G\nhost=2001:db8::3\nexten=4993334455#103\n",
        );
        assert_eq!(w.rings("b", "101"), [pair("a", "sip:101@10.0.0.1:5060")]);
        let plan = w.plan("a", "102");
        assert_eq!(plan.attempts[0].ruri, "sip:102@[2001:db8::2]:5070");
        assert_eq!(plan.attempts[0].dest, udp("[2001:db8::2]:5070"));
        assert_eq!(
            w.rings("a", "84993334455"),
            [pair("c", "sip:84993334455@[2001:db8::3]:5060")]
        );
    }

    #[test]
    fn a_registration_wins_over_the_host() {
        let w = World::new(
            "[a]\naccountcode=G\nhost=10.0.0.1\nsecret=s\nexten=101\n\
             [b]\naccountcode=G\nsecret=s\nexten=102\n",
        )
        .reg(&["a"]);
        assert_eq!(w.rings("b", "101"), [contact(&w.cfg, "a")]);
    }

    #[test]
    fn unregistered_target_without_host_is_480() {
        let w = World::example();
        let plan = w.plan("siphone2", "1001");
        assert!(plan.attempts.is_empty());
        assert_eq!(plan.no_attempt, unavailable_480());
        let plan = w.plan("bar", "1001");
        assert!(plan.attempts.is_empty());
        assert_eq!(plan.no_attempt, unavailable_480());
    }

    #[test]
    fn noanswer_comes_from_general() {
        let w = World::new(
            "[general]\nnoanswer=7\n\
             [a]\naccountcode=G\nsecret=s\nexten=101(2)~+44123456789\n\
             [b]\naccountcode=G\nsecret=s\nexten=102\n\
             [g]\naccountcode=gateways\nhost=10.9.9.9\nexten=0\n",
        )
        .reg(&["a", "b"]);
        let plan = w.plan("b", "101");
        let got: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| (a.target.as_str(), a.kind, a.noanswer, a.next_on))
            .collect();
        assert_eq!(
            got,
            [
                ("a", AttemptKind::Client, Some(7), NextOn::Unavailable),
                ("g", AttemptKind::Gateway, None, NextOn::GatewayFailure),
            ]
        );
        // b is the caller: skipped in a's hunting list.
        assert_eq!(plan.no_attempt, unavailable_480());
    }

    // ------------------------------------------------ rule 5: external

    #[test]
    fn external_through_every_gateway_in_rotation() {
        let w = World::example();
        let expect = |first: &str| {
            let g1 = pair("GATE1", "sip:999599974991234567@192.168.1.200:5060");
            let g2 = pair("GATE2", "sip:974991234567@192.168.1.201:5060");
            if first == "GATE1" {
                vec![g1, g2]
            } else {
                vec![g2, g1]
            }
        };
        for (start, first) in [
            (0, "GATE1"),
            (1, "GATE2"),
            (2, "GATE1"),
            (3, "GATE2"),
            (usize::MAX, "GATE2"), // usize::MAX is odd
            (usize::MAX - 1, "GATE1"),
        ] {
            let w = World {
                start,
                ..World::example()
            };
            assert_eq!(w.rings("siphone1", "84991234567"), expect(first), "{start}");
        }
        let plan = w.plan("siphone1", "4991234567");
        for a in &plan.attempts {
            assert_eq!(a.kind, AttemptKind::Gateway);
            assert_eq!(a.next_on, NextOn::GatewayFailure);
            assert_eq!(a.noanswer, None);
            assert!(a.diversion.is_empty());
            // siphone1: no callerid, no long number → its name
            assert_eq!(a.present, cid("siphone1"));
        }
        assert_eq!(plan.no_attempt, (503, "Service Unavailable".to_string()));
    }

    #[test]
    fn gateway_rotation_with_three_gateways() {
        let text = "[u]\nsecret=s\n\
                    [g1]\naccountcode=gateways\nhost=10.0.0.1\nexten=1\n\
                    [g0]\naccountcode=gateways\nhost=10.0.0.9\n\
                    [g2]\naccountcode=gateways\nhost=10.0.0.2\nexten=2\n\
                    [g3]\naccountcode=gateways\nhost=10.0.0.3:5080\nexten=3\n";
        let orders = [["g1", "g2", "g3"], ["g2", "g3", "g1"], ["g3", "g1", "g2"]];
        for start in 0..9 {
            let w = World::new(text).start(start);
            // g0 has no prefix: it takes no outgoing calls.
            assert_eq!(w.targets("u", "+44123"), orders[start % 3], "{start}");
        }
        let w = World::new(text);
        assert_eq!(
            w.rings("u", "+44123"),
            [
                pair("g1", "sip:144123@10.0.0.1:5060"),
                pair("g2", "sip:244123@10.0.0.2:5060"),
                pair("g3", "sip:344123@10.0.0.3:5080"),
            ]
        );
    }

    #[test]
    fn down_gateways_are_skipped_unless_all_are_down() {
        let text = "[u]\nsecret=s\n\
                    [g1]\naccountcode=gateways\nhost=10.0.0.1\nexten=1\n\
                    [g2]\naccountcode=gateways\nhost=10.0.0.2\nexten=2\n\
                    [g3]\naccountcode=gateways\nhost=10.0.0.3\nexten=3\n";
        for start in 0..3 {
            let w = |down: &[&str]| World::new(text).start(start).down(down);
            let all = w(&[]).targets("u", "+44123");
            let without = |gone: &[&str]| -> Vec<String> {
                all.iter()
                    .filter(|g| !gone.contains(&g.as_str()))
                    .cloned()
                    .collect()
            };
            // The rotation of the gateways still up, in the same order.
            assert_eq!(w(&["g1"]).targets("u", "+44123"), without(&["g1"]));
            assert_eq!(
                w(&["g2", "g3"]).targets("u", "+44123"),
                without(&["g2", "g3"])
            );
            // All down: all tried anyway, in the usual order.
            assert_eq!(w(&["g1", "g2", "g3"]).targets("u", "+44123"), all);
            // Names that are not gateways (or not reachable) change nothing.
            assert_eq!(w(&["u", "nobody"]).targets("u", "+44123"), all);
            let plan = w(&["g1", "g2"]).plan("u", "+44123");
            assert_eq!(plan.no_attempt, (503, "Service Unavailable".to_string()));
        }
    }

    #[test]
    fn down_is_about_reachable_gateways_and_hosts_only() {
        // r registers (no host), h has a host: with r unregistered and h
        // down, h is all the call could use, so it is tried.
        let text = "[u]\nsecret=s\n\
                    [r]\naccountcode=gateways\nsecret=s\nexten=77\n\
                    [h]\naccountcode=gateways\nhost=10.0.0.1\nexten=88\n";
        let w = World::new(text).down(&["h"]);
        assert_eq!(w.targets("u", "+44123"), ["h"]);
        // r registered and up: h is skipped.
        let w = World::new(text).reg(&["r"]).down(&["h"]);
        assert_eq!(w.targets("u", "+44123"), ["r"]);
        // A registered gateway is reached at its registration: the health
        // of a host it may also have does not apply (its binding's own
        // keep-alive decides whether it is located).
        let text2 = "[u]\nsecret=s\n\
                     [b]\naccountcode=gateways\nsecret=s\nhost=10.0.0.2\nexten=66\n\
                     [h]\naccountcode=gateways\nhost=10.0.0.1\nexten=88\n";
        let w = World::new(text2).reg(&["b"]).down(&["b"]);
        assert_eq!(w.targets("u", "+44123"), ["b", "h"]);
        let w = World::new(text2).down(&["b"]);
        assert_eq!(w.targets("u", "+44123"), ["h"]);
    }

    #[test]
    fn down_gateways_after_forwarding_and_hunting() {
        // A forwarding to an external number skips the down gateway too;
        // the client attempts are not affected.
        let w = World::new(
            "[a]\naccountcode=G\nsecret=s\nexten=101~+44123\n\
             [b]\naccountcode=G\nsecret=s\nexten=102\n\
             [g1]\naccountcode=gateways\nhost=10.0.0.1\nexten=1\n\
             [g2]\naccountcode=gateways\nhost=10.0.0.2\nexten=2\n",
        )
        .reg(&["a"])
        .down(&["g1"]);
        assert_eq!(w.targets("b", "101"), ["a", "g2"]);
        let w = World {
            down: HashSet::new(),
            ..w
        };
        assert_eq!(w.targets("b", "101"), ["a", "g1", "g2"]);
    }

    #[test]
    fn normalisation_of_external_numbers() {
        let w = World::new("[u]\nsecret=s\n[g]\naccountcode=gateways\nhost=10.0.0.1\nexten=00\n");
        for (dialed, normalised) in [
            ("1234567", "74951234567"),
            ("84991234567", "74991234567"),
            ("4991234567", "74991234567"),
            ("81044123456789", "44123456789"),
            ("+44123456789", "44123456789"),
            ("74951234567", "74951234567"),
        ] {
            assert_eq!(
                w.rings("u", dialed),
                [pair("g", &format!("sip:00{normalised}@10.0.0.1:5060"))],
                "{dialed}"
            );
        }
    }

    #[test]
    fn dialplan_em_refuses_international_403() {
        let w = World::new(
            "[e]\nsecret=s\ncontext=em\n\
             [l]\nsecret=s\ncontext=local\n\
             [d]\nsecret=s\ncontext=domestic\n\
             [i]\nsecret=s\ncontext=international\n\
             [p]\nsecret=s\ndialplan=^7499\n\
             [g]\naccountcode=gateways\nhost=10.0.0.1\nexten=5\n",
        );
        let forbidden = (403, "Forbidden".to_string());
        // em: ^7495\d{2,3}$
        assert_eq!(w.reply("e", "+44123456789"), forbidden);
        assert_eq!(w.reply("e", "81044123456789"), forbidden);
        assert_eq!(w.reply("e", "4991234567"), forbidden);
        assert_eq!(w.reply("e", "1234567"), forbidden);
        assert_eq!(w.targets("e", "112"), ["g"]); // 7495112
        assert_eq!(w.targets("e", "01"), ["g"]);
        // local: ^7495\d+$
        assert_eq!(w.targets("l", "1234567"), ["g"]);
        assert_eq!(w.reply("l", "4991234567"), forbidden);
        // domestic: ^7\d+$
        assert_eq!(w.targets("d", "4991234567"), ["g"]);
        assert_eq!(w.reply("d", "+44123456789"), forbidden);
        // international
        assert_eq!(w.targets("i", "+44123456789"), ["g"]);
        // a dialplan is a search, not anchored at the end
        assert_eq!(w.targets("p", "84991234567"), ["g"]);
        assert_eq!(w.reply("p", "84951234567"), forbidden);
    }

    #[test]
    fn dialplan_does_not_apply_to_clients() {
        // e may call a client's long number whatever its dialplan says.
        let w = World::new("[e]\nsecret=s\ncontext=em\n[x]\nsecret=s\nexten=+44123456789\n")
            .reg(&["x"]);
        assert_eq!(w.targets("e", "+44123456789"), ["x"]);
        assert_eq!(w.targets("e", "81044123456789"), ["x"]);
    }

    #[test]
    fn not_a_number_is_404() {
        let w = World::example();
        for dialed in ["nobody", "", "+", "8", "12-34", "1002 ", "+1+2", "siphone"] {
            assert_eq!(
                w.reply("siphone1", dialed),
                (404, "Not Found".to_string()),
                "{dialed:?}"
            );
        }
    }

    #[test]
    fn external_from_gateway_or_mediagate_is_404() {
        let w = World::example();
        for caller in ["GATE1", "GATE2", "MEDIAGATE"] {
            for dialed in ["4991234567", "+44123456789", "1234567", "74991234567"] {
                assert_eq!(
                    w.reply(caller, dialed),
                    (404, "Not Found".to_string()),
                    "{caller} {dialed}"
                );
            }
        }
    }

    #[test]
    fn no_gateway_is_503() {
        let no_gw = (503, "No Gateway".to_string());
        let w = World::new("[u]\nsecret=s\n");
        assert_eq!(w.reply("u", "4991234567"), no_gw);
        // gateways without a prefix take no outgoing calls
        let w = World::new("[u]\nsecret=s\n[g]\naccountcode=gateways\nhost=10.0.0.1\n");
        assert_eq!(w.reply("u", "4991234567"), no_gw);
        // the dialplan is checked first
        let w = World::new("[u]\nsecret=s\ncontext=em\n");
        assert_eq!(w.reply("u", "4991234567"), (403, "Forbidden".to_string()));
        // and the number before that
        assert_eq!(w.reply("u", "x"), (404, "Not Found".to_string()));
    }

    #[test]
    fn registered_gateways() {
        // A gateway without host is reached at its registration, the
        // Contact's user replaced by prefix + number; unregistered: skipped.
        let text = "[u]\nsecret=s\n\
                    [r]\naccountcode=gateways\nsecret=s\nexten=77\n\
                    [h]\naccountcode=gateways\nhost=10.0.0.1\nexten=88\n";
        let w = World::new(text);
        assert_eq!(
            w.rings("u", "+44123"),
            [pair("h", "sip:8844123@10.0.0.1:5060")]
        );
        let w = World::new(text).reg(&["r"]);
        assert_eq!(
            w.rings("u", "+44123"),
            [
                pair("r", "sip:7744123@198.51.100.1:20001;ob"),
                pair("h", "sip:8844123@10.0.0.1:5060"),
            ]
        );
        let w = World::new("[u]\nsecret=s\n[r]\naccountcode=gateways\nsecret=s\nexten=77\n");
        assert_eq!(w.reply("u", "+44123"), (503, "No Gateway".to_string()));
    }

    #[test]
    fn present_is_callerid_else_long_number_else_name() {
        let w = World::new(
            "[a]\nsecret=s\ncallerid=\"Alice A\" <+74951112233>\nexten=4990001122\n\
             [b]\nsecret=s\ncallerid=4951234567\n\
             [c]\nsecret=s\nexten=4990001133\n\
             [d]\nsecret=s\n\
             [g]\naccountcode=gateways\nhost=10.0.0.1\nexten=0\n",
        );
        let present = |caller: &str| w.plan(caller, "+44123").attempts[0].present.clone();
        assert_eq!(
            present("a"),
            Some(CallerId {
                display: Some("Alice A".to_string()),
                number: "+74951112233".to_string()
            })
        );
        assert_eq!(present("b"), cid("4951234567"));
        assert_eq!(present("c"), cid("4990001133"));
        assert_eq!(present("d"), cid("d"));
    }

    // ------------------------------------------------ rule 6: forwarding

    /// HOME-like group for forwarding tests; t is the target.
    const FWD: &str = "\
[caller]
accountcode=G
secret=s
callerid=\"Caller\" <4951000001>
exten=101
[t]
accountcode=G
secret=s
context=domestic
exten=4992000002#102
[u]
accountcode=G
secret=s
exten=103
[ext]
secret=s
exten=4993000003
[g]
accountcode=gateways
host=10.0.0.1
exten=00
";

    #[test]
    fn always_sources_config_phone_sipctl() {
        let with_conf = FWD.replace("exten=4992000002#102", "exten=4992000002#102=103");
        let worlds = [
            World::new(&with_conf),
            World::new(FWD).fwd("t", always("103"), SetBy::Phone),
            World::new(FWD).fwd("t", always("103"), SetBy::Sipctl),
            // a phone override replaces sip.conf's (here: to the same)
            World::new(&with_conf).fwd("t", always("103"), SetBy::Phone),
        ];
        for w in worlds {
            let w = w.reg(&["t", "u"]);
            let plan = w.plan("caller", "102");
            assert_eq!(plan.attempts.len(), 1);
            let a = &plan.attempts[0];
            assert_eq!(
                (a.target.as_str(), a.ruri.as_str()),
                ("u", binding(&w.cfg, "u").uri.as_str())
            );
            assert_eq!(a.diversion, [div("t", "unconditional")]);
            assert_eq!(a.kind, AttemptKind::Client);
        }
    }

    #[test]
    fn always_is_applied_for_every_way_of_reaching_t() {
        let w = World::new(FWD)
            .reg(&["t", "u"])
            .fwd("t", always("103"), SetBy::Phone);
        for (caller, dialed) in [
            ("caller", "t"),
            ("caller", "102"),
            ("caller", "4992000002"),
            ("ext", "84992000002"),
            ("g", "74992000002"),
        ] {
            assert_eq!(w.targets(caller, dialed), ["u"], "{caller} {dialed}");
        }
    }

    #[test]
    fn always_to_external_uses_t_dialplan_and_callerid() {
        // t (domestic) forwards to +7…: allowed; present = t's long number.
        let w = World::new(FWD).fwd("t", always("+74957654321"), SetBy::Sipctl);
        let plan = w.plan("caller", "102");
        assert_eq!(
            plan.attempts,
            vec![Attempt {
                target: "g".to_string(),
                kind: AttemptKind::Gateway,
                dest: udp("10.0.0.1:5060"),
                ruri: "sip:0074957654321@10.0.0.1:5060".to_string(),
                next_on: NextOn::GatewayFailure,
                noanswer: None,
                present: cid("4992000002"),
                diversion: vec![div("t", "unconditional")],
            }]
        );
        assert_eq!(plan.no_attempt, (503, "Service Unavailable".to_string()));
        // t's dialplan refuses +44…, even though the caller's (.+) would not.
        let w = World::new(FWD).fwd("t", always("+44123456789"), SetBy::Sipctl);
        assert_eq!(w.reply("caller", "102"), (403, "Forbidden".to_string()));
        // ...and from a gateway too (the DID is forwarded out as t)
        assert_eq!(w.reply("g", "4992000002"), (403, "Forbidden".to_string()));
        let w = World::new(FWD).fwd("t", always("84957654321"), SetBy::Sipctl);
        assert_eq!(w.targets("g", "4992000002"), ["g"]);
    }

    #[test]
    fn forwarded_numbers_resolve_in_t_group() {
        // F = 101 is the short number of `caller` in G; `ext` has no group,
        // so 101 there is external (74951 01 → 7495101).
        let w = World::new(FWD)
            .reg(&["caller", "t", "u"])
            .fwd("ext", always("103"), SetBy::Phone);
        assert_eq!(
            w.rings("t", "4993000003"),
            [pair("g", "sip:007495103@10.0.0.1:5060")]
        );
        let w = w.fwd("ext", always("4992000002"), SetBy::Phone);
        assert_eq!(w.targets("u", "4993000003"), ["t"]);
    }

    #[test]
    fn always_with_an_unreachable_target_is_480() {
        let w = World::new(FWD).fwd("t", always("103"), SetBy::Phone);
        let plan = w.plan("caller", "102");
        assert!(plan.attempts.is_empty());
        assert_eq!(plan.no_attempt, unavailable_480());
    }

    #[test]
    fn always_skips_t_hunting_and_own_binding() {
        let text = FWD.replace("exten=4992000002#102", "exten=4992000002#102(3)~101");
        let w = World::new(&text)
            .reg(&["caller", "t", "u"])
            .fwd("t", always("4993000003"), SetBy::Phone)
            .reg(&["ext"]);
        assert_eq!(w.targets("caller", "102"), ["ext"]);
    }

    #[test]
    fn off_override_disables_sip_conf_forwarding() {
        for sign in ['=', '~'] {
            let text = FWD.replace(
                "exten=4992000002#102",
                &format!("exten=4992000002#102{sign}103"),
            );
            let w = World::new(&text).reg(&["t", "u"]);
            let conf = w.targets("caller", "102");
            let w = w.fwd("t", Forwarding::None, SetBy::Phone);
            assert_eq!(w.targets("caller", "102"), ["t"], "{sign}");
            match sign {
                '=' => assert_eq!(conf, ["u"]),
                _ => assert_eq!(conf, ["t", "u"]),
            }
        }
    }

    #[test]
    fn unavailable_sources_config_phone_sipctl() {
        let with_conf = FWD.replace("exten=4992000002#102", "exten=4992000002#102~103");
        let worlds = [
            World::new(&with_conf),
            World::new(FWD).fwd("t", unavail("103"), SetBy::Phone),
            World::new(FWD).fwd("t", unavail("103"), SetBy::Sipctl),
        ];
        for w in worlds {
            let w = w.reg(&["t", "u"]);
            let plan = w.plan("caller", "102");
            let got: Vec<_> = plan
                .attempts
                .iter()
                .map(|a| (a.target.as_str(), a.diversion.clone()))
                .collect();
            assert_eq!(got, [("t", vec![]), ("u", vec![div("t", "unavailable")])]);
            // t unregistered: straight to F
            let mut w = w;
            w.regs.remove("t");
            assert_eq!(w.targets("caller", "102"), ["u"]);
        }
    }

    #[test]
    fn a_phone_override_replaces_sip_conf_kind() {
        // sip.conf says =103; the phone says ~103: t rings first now.
        let text = FWD.replace("exten=4992000002#102", "exten=4992000002#102=103");
        let w = World::new(&text)
            .reg(&["t", "u"])
            .fwd("t", unavail("103"), SetBy::Phone);
        assert_eq!(w.targets("caller", "102"), ["t", "u"]);
        // and the other way round
        let text = FWD.replace("exten=4992000002#102", "exten=4992000002#102~103");
        let w = World::new(&text)
            .reg(&["t", "u"])
            .fwd("t", always("103"), SetBy::Sipctl);
        assert_eq!(w.targets("caller", "102"), ["u"]);
    }

    #[test]
    fn unavailable_to_external_after_hunting() {
        let text = FWD.replace(
            "exten=4992000002#102",
            "exten=4992000002#102(3)~84957654321",
        );
        let w = World::new(&text).reg(&["t", "u"]);
        let plan = w.plan("caller", "102");
        let got: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| {
                (
                    a.target.as_str(),
                    a.kind,
                    a.present.clone(),
                    a.diversion.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("t", AttemptKind::Client, None, vec![]),
                (
                    "u",
                    AttemptKind::Client,
                    None,
                    vec![div("t", "unavailable")]
                ),
                (
                    "g",
                    AttemptKind::Gateway,
                    cid("4992000002"),
                    vec![div("t", "unavailable")]
                ),
            ]
        );
        assert_eq!(plan.attempts[2].ruri, "sip:0074957654321@10.0.0.1:5060");
        // mixed plan: the caller gets 480 if nothing answers
        assert_eq!(plan.no_attempt, unavailable_480());
    }

    #[test]
    fn unavailable_reply_adds_nothing() {
        // ~+44… refused by t's dialplan: just t, no error.
        let w = World::new(FWD)
            .reg(&["t"])
            .fwd("t", unavail("+44123456789"), SetBy::Phone);
        assert_eq!(w.targets("caller", "102"), ["t"]);
        // ~ to nothing dialable
        let w = World::new(FWD)
            .reg(&["t"])
            .fwd("t", unavail("8"), SetBy::Phone);
        assert_eq!(w.targets("caller", "102"), ["t"]);
        // no gateway
        let text = FWD.replace("[g]\naccountcode=gateways\nhost=10.0.0.1\nexten=00\n", "");
        let w = World::new(&text)
            .reg(&["t"])
            .fwd("t", unavail("84957654321"), SetBy::Phone);
        assert_eq!(w.targets("caller", "102"), ["t"]);
        // and nobody at all
        let w = World::new(&text).fwd("t", unavail("84957654321"), SetBy::Phone);
        let plan = w.plan("caller", "102");
        assert!(plan.attempts.is_empty());
        assert_eq!(plan.no_attempt, unavailable_480());
    }

    #[test]
    fn unavailable_target_gets_full_routing() {
        // t ~103 (u); u =4993000003 (ext): the forwarded call follows u's =F.
        let w = World::new(FWD)
            .reg(&["t", "u", "ext"])
            .fwd("t", unavail("103"), SetBy::Phone)
            .fwd("u", always("4993000003"), SetBy::Phone);
        let plan = w.plan("caller", "102");
        let got: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| (a.target.as_str(), a.diversion.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("t", vec![]),
                (
                    "ext",
                    vec![div("u", "unconditional"), div("t", "unavailable")]
                ),
            ]
        );
    }

    #[test]
    fn diversion_chain_newest_first() {
        let w = World::new(FWD)
            .reg(&["ext"])
            .fwd("t", always("103"), SetBy::Phone)
            .fwd("u", always("4993000003"), SetBy::Phone);
        let plan = w.plan("caller", "102");
        assert_eq!(plan.attempts.len(), 1);
        assert_eq!(plan.attempts[0].target, "ext");
        assert_eq!(
            plan.attempts[0].diversion,
            [
                "<sip:u@pbx.test>;reason=unconditional;counter=1",
                "<sip:t@pbx.test>;reason=unconditional;counter=1",
            ]
        );
    }

    #[test]
    fn diversion_uses_the_configured_realm() {
        let text = format!("[general]\nrealm=sip.example.org\n{FWD}");
        let w = World::new(&text)
            .reg(&["u"])
            .fwd("t", always("103"), SetBy::Phone);
        assert_eq!(
            w.plan("caller", "102").attempts[0].diversion,
            ["<sip:t@sip.example.org>;reason=unconditional;counter=1"]
        );
    }

    // ------------------------------------------------ loops and the 5-step limit

    #[test]
    fn always_loop_is_482() {
        let loop_482 = (482, "Loop Detected".to_string());
        let w = World::new(FWD)
            .reg(&["t", "u"])
            .fwd("t", always("103"), SetBy::Phone)
            .fwd("u", always("102"), SetBy::Phone);
        assert_eq!(w.reply("caller", "102"), loop_482);
        assert_eq!(w.reply("caller", "103"), loop_482);
        assert_eq!(w.reply("g", "4992000002"), loop_482);
        // to itself (only a forged store row could do this)
        let w = World::new(FWD)
            .reg(&["t"])
            .fwd("t", always("4992000002"), SetBy::Sipctl);
        assert_eq!(w.reply("caller", "102"), loop_482);
        // a three-client loop
        let w = World::new(FWD)
            .fwd("t", always("103"), SetBy::Phone)
            .fwd("u", always("4993000003"), SetBy::Phone)
            .fwd("ext", always("4992000002"), SetBy::Phone);
        assert_eq!(w.reply("caller", "t"), loop_482);
    }

    #[test]
    fn unavailable_loop_stops_quietly() {
        // t ~u, u ~t: t, u, then the loop ends the plan.
        let w = World::new(FWD)
            .reg(&["t", "u"])
            .fwd("t", unavail("103"), SetBy::Phone)
            .fwd("u", unavail("102"), SetBy::Phone);
        assert_eq!(w.targets("caller", "102"), ["t", "u"]);
        assert_eq!(w.targets("caller", "103"), ["u", "t"]);
        // t ~u, u =t: the always-loop inside the ~ branch adds nothing
        let w = World::new(FWD)
            .reg(&["t", "u"])
            .fwd("t", unavail("103"), SetBy::Phone)
            .fwd("u", always("102"), SetBy::Phone);
        assert_eq!(w.targets("caller", "102"), ["t"]);
    }

    /// c1 … c7 in group C; c_i has short number 20i and forwards always to
    /// 20(i+1) (c7 does not forward).
    fn chain_config(kind: char) -> String {
        let mut text = String::new();
        for i in 1..=7 {
            let fwd = if i < 7 {
                format!("{kind}20{}", i + 1)
            } else {
                String::new()
            };
            text.push_str(&format!(
                "[c{i}]\naccountcode=C\nsecret=s\nexten=20{i}{fwd}\n"
            ));
        }
        text.push_str("[x]\naccountcode=C\nsecret=s\n");
        text
    }

    #[test]
    fn five_forwarding_steps_at_most() {
        let w = World::new(&chain_config('=')).reg(&["c1", "c2", "c3", "c4", "c5", "c6", "c7"]);
        // 202 → … → 207: five steps
        let plan = w.plan("x", "202");
        assert_eq!(plan.attempts.len(), 1);
        assert_eq!(plan.attempts[0].target, "c7");
        assert_eq!(
            plan.attempts[0].diversion,
            (2..=6)
                .rev()
                .map(|i| div(&format!("c{i}"), "unconditional"))
                .collect::<Vec<_>>()
        );
        // 201 → … → 207: six steps
        assert_eq!(
            w.reply("x", "201"),
            (482, "Forwarding Chain Too Long".to_string())
        );
        for (dialed, last) in [("203", "c7"), ("206", "c7"), ("207", "c7")] {
            assert_eq!(w.targets("x", dialed), [last]);
        }
    }

    #[test]
    fn unavailable_steps_count_too() {
        // ~ chain: every client is rung, the sixth step is not taken.
        let w = World::new(&chain_config('~')).reg(&["c1", "c2", "c3", "c4", "c5", "c6", "c7"]);
        assert_eq!(w.targets("x", "201"), ["c1", "c2", "c3", "c4", "c5", "c6"]);
        assert_eq!(w.targets("x", "202"), ["c2", "c3", "c4", "c5", "c6", "c7"]);
        let plan = w.plan("x", "202");
        assert_eq!(
            plan.attempts[5].diversion,
            (2..=6)
                .rev()
                .map(|i| div(&format!("c{i}"), "unavailable"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn forwarding_back_to_the_caller_is_a_dead_end() {
        let w = World::new(FWD)
            .reg(&["caller", "t", "u"])
            .fwd("t", always("101"), SetBy::Phone);
        let plan = w.plan("caller", "102");
        assert!(plan.attempts.is_empty());
        assert_eq!(plan.no_attempt, unavailable_480());
        // someone else calling t reaches `caller`
        assert_eq!(w.targets("u", "102"), ["caller"]);
        // ~ to the caller: t only
        let w = World::new(FWD)
            .reg(&["caller", "t", "u"])
            .fwd("t", unavail("101"), SetBy::Phone);
        assert_eq!(w.targets("caller", "102"), ["t"]);
        assert_eq!(w.targets("u", "102"), ["t", "caller"]);
    }

    // ------------------------------------------------ hunting

    const HUNT: &str = "\
[h1]
accountcode=G
secret=s
exten=101(3,2,5)
[h2]
accountcode=G
secret=s
exten=102=+44123456789
[h3]
accountcode=G
host=10.1.1.3
exten=103
[h4]
accountcode=G
secret=s
exten=104(1)~101
[h5]
accountcode=G
secret=s
exten=105
[out]
secret=s
exten=4995550000
[g]
accountcode=gateways
host=10.0.0.1
exten=00
";

    #[test]
    fn hunting_in_list_order() {
        let w = World::new(HUNT).reg(&["h1", "h2", "h5"]);
        let plan = w.plan("out", "h1");
        let got: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| (a.target.clone(), a.ruri.clone(), a.diversion.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("h1".to_string(), binding(&w.cfg, "h1").uri, vec![]),
                // hunting members rung by name; h3 at its host
                (
                    "h3".to_string(),
                    "sip:h3@10.1.1.3:5060".to_string(),
                    vec![div("h1", "unavailable")]
                ),
                // h2's own =F is not applied when hunted
                (
                    "h2".to_string(),
                    binding(&w.cfg, "h2").uri,
                    vec![div("h1", "unavailable")]
                ),
                (
                    "h5".to_string(),
                    binding(&w.cfg, "h5").uri,
                    vec![div("h1", "unavailable")]
                ),
            ]
        );
        for a in &plan.attempts {
            assert_eq!(a.next_on, NextOn::Unavailable);
            assert_eq!(a.noanswer, Some(20));
        }
    }

    #[test]
    fn hunting_skips_unregistered_members() {
        let w = World::new(HUNT).reg(&["h5"]);
        assert_eq!(w.targets("out", "h1"), ["h3", "h5"]);
        let w = World::new(HUNT);
        assert_eq!(w.targets("out", "h1"), ["h3"]);
    }

    #[test]
    fn hunting_skips_the_caller() {
        let w = World::new(HUNT).reg(&["h1", "h2", "h5"]);
        assert_eq!(w.targets("h5", "101"), ["h1", "h3", "h2"]);
        assert_eq!(w.targets("h2", "101"), ["h1", "h3", "h5"]);
    }

    #[test]
    fn unavailable_forwarding_after_hunting() {
        // h4: hunting (1) = h1, then ~101 = h1 again: h1 is rung once, but
        // ~101 routes h1 fully, so h1's own hunting list follows (h3 at
        // its host; h2, h5 unregistered).
        let w = World::new(HUNT).reg(&["h1", "h4"]);
        assert_eq!(w.targets("out", "h4"), ["h4", "h1", "h3"]);
        // Override ~: hunting first, then F.
        let w = World::new(HUNT)
            .reg(&["h1", "h4", "h5"])
            .fwd("h4", unavail("105"), SetBy::Phone);
        let plan = w.plan("h2", "104");
        let got: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| (a.target.as_str(), a.diversion.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("h4", vec![]),
                ("h1", vec![div("h4", "unavailable")]),
                ("h5", vec![div("h4", "unavailable")]),
            ]
        );
    }

    #[test]
    fn unavailable_forwarding_reaches_a_hunting_target() {
        // h4 unregistered: its hunting list (1) = h1, then ~101 = h1 routed
        // in full: h1 already rung, then h1's hunting list (3,2,5).
        let w = World::new(HUNT).reg(&["h1", "h2", "h5"]);
        let plan = w.plan("out", "h4");
        let got: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| (a.target.as_str(), a.diversion.clone()))
            .collect();
        let h4 = div("h4", "unavailable");
        let h1 = div("h1", "unavailable");
        assert_eq!(
            got,
            [
                ("h1", vec![h4.clone()]), // h4's hunting list (1) first
                ("h3", vec![h1.clone(), h4.clone()]),
                ("h2", vec![h1.clone(), h4.clone()]),
                ("h5", vec![h1, h4]),
            ]
        );
    }

    #[test]
    fn hunting_member_with_always_forwarding_called_directly_forwards() {
        // h2 =+44…: called directly, it is forwarded out; hunted, it rings.
        let w = World::new(HUNT).reg(&["h2"]);
        assert_eq!(w.targets("out", "h2"), ["g"]);
        assert_eq!(w.targets("out", "h1"), ["h3", "h2"]);
    }

    // ------------------------------------------------ scale and properties

    #[test]
    fn long_hunting_lists_stay_cheap() {
        // A group of 1000 with hunting (2-1000), everyone registered, each
        // member forwarding ~ to the next: a bounded plan, each client once.
        let n = 1000;
        let mut text = String::new();
        for i in 1..=n {
            let hunt = if i == 1 {
                format!("(2-{n})")
            } else {
                String::new()
            };
            let fwd = if i < n {
                format!("~{}", 10000 + i + 1)
            } else {
                String::new()
            };
            text.push_str(&format!(
                "[m{i}]\naccountcode=G\nsecret=s\nexten={}{hunt}{fwd}\n",
                10000 + i
            ));
        }
        let mut w = World::new(&text);
        for i in 1..=n {
            let name = format!("m{i}");
            let loc = binding(&w.cfg, &name);
            w.regs.insert(name, loc);
        }
        let plan = w.plan(&format!("m{n}"), "10001");
        // The caller (m1000) is skipped in the hunting list.
        assert_eq!(plan.attempts.len(), n - 1);
        assert_eq!(plan.attempts[0].target, "m1");
        assert_eq!(plan.attempts[n - 2].target, format!("m{}", n - 1));
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// Members m1..mN of group G (short 10i), a loner `z` and a gateway.
        fn text(hunts: &[Vec<usize>]) -> String {
            let mut t = String::new();
            for (i, hunt) in hunts.iter().enumerate() {
                let me = i + 1;
                let list: Vec<String> = hunt
                    .iter()
                    .map(|p| p % hunts.len() + 1)
                    .filter(|&p| p != me)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .map(|p| p.to_string())
                    .collect();
                let list = if list.is_empty() {
                    String::new()
                } else {
                    format!("({})", list.join(","))
                };
                t.push_str(&format!(
                    "[m{me}]\naccountcode=G\nsecret=s\nexten=499000000{me}#10{me}{list}\n"
                ));
            }
            t.push_str("[z]\nsecret=s\ncontext=domestic\n");
            t.push_str("[g]\naccountcode=gateways\nhost=10.0.0.1\nexten=0\n");
            t
        }

        fn number(n: usize) -> impl Strategy<Value = String> {
            prop_oneof![
                (1..=n).prop_map(|i| format!("10{i}")),
                (1..=n).prop_map(|i| format!("8499000000{i}")),
                (1..=n).prop_map(|i| format!("m{i}")),
                Just("+4412345".to_string()),
                Just("84957654321".to_string()),
                Just("x".to_string()),
            ]
        }

        fn forwarding(n: usize) -> impl Strategy<Value = Option<Forwarding>> {
            prop_oneof![
                Just(None),
                Just(Some(Forwarding::None)),
                number(n).prop_map(|f| Some(Forwarding::always(f))),
                number(n).prop_map(|f| Some(Forwarding::unavailable(f))),
            ]
        }

        /// Hunting lists, registered, overrides, caller index, dialed, gateway start.
        type Case = (
            Vec<Vec<usize>>,
            Vec<bool>,
            Vec<Option<Forwarding>>,
            usize,
            String,
            usize,
        );

        fn case() -> impl Strategy<Value = Case> {
            (2usize..=6).prop_flat_map(|n| {
                (
                    proptest::collection::vec(proptest::collection::vec(0usize..6, 0..4), n),
                    proptest::collection::vec(any::<bool>(), n),
                    proptest::collection::vec(forwarding(n), n),
                    0..n + 2,
                    number(n),
                    any::<usize>(),
                )
            })
        }

        proptest! {
            #[test]
            fn plans_are_sane((hunts, regs, fwds, caller, dialed, start) in case()) {
                let n = hunts.len();
                let mut w = World::new(&text(&hunts)).start(start);
                for i in 0..n {
                    let name = format!("m{}", i + 1);
                    if regs[i] {
                        let loc = binding(&w.cfg, &name);
                        w.regs.insert(name.clone(), loc);
                    }
                    if let Some(f) = &fwds[i] {
                        w.fw.set(&name, Override::new(f.clone(), SetBy::Phone));
                    }
                }
                let caller = match caller {
                    c if c < n => format!("m{}", c + 1),
                    c if c == n => "z".to_string(),
                    _ => "g".to_string(),
                };
                match w.route(&caller, &dialed) {
                    Decision::Feature(f) => prop_assert!(false, "feature {f:?}"),
                    Decision::Reply { code, .. } => {
                        prop_assert!([403, 404, 482, 503].contains(&code), "{code}");
                    }
                    Decision::Proxy(plan) => {
                        let mut clients = HashSet::new();
                        let mut gateways = HashSet::new();
                        for (i, a) in plan.attempts.iter().enumerate() {
                            prop_assert!(a.diversion.len() <= MAX_FORWARD_STEPS + 1);
                            match a.kind {
                                AttemptKind::Client => {
                                    prop_assert!(clients.insert(a.target.clone()), "{a:?}");
                                    prop_assert!(w.regs.contains_key(&a.target));
                                    prop_assert_eq!(&a.ruri, &w.regs[&a.target].uri);
                                    prop_assert_eq!(a.noanswer, Some(20));
                                    prop_assert!(a.present.is_none());
                                    if a.target == caller {
                                        // only when dialed directly, and first
                                        prop_assert_eq!(i, 0);
                                        let me = w.cfg.client(&caller).unwrap();
                                        let direct = matches!(
                                            resolve(&w.cfg, me, &dialed),
                                            Resolved::Client(c) if c.name == caller
                                        );
                                        prop_assert!(direct);
                                    }
                                }
                                AttemptKind::Gateway => {
                                    prop_assert!(gateways.insert(a.ruri.clone()), "{a:?}");
                                    prop_assert!(a.present.is_some());
                                    prop_assert_eq!(a.noanswer, None);
                                }
                            }
                        }
                        if caller == "g" {
                            // a gateway reaches clients only, unless forwarded
                            for a in &plan.attempts {
                                if a.kind == AttemptKind::Gateway {
                                    prop_assert!(!a.diversion.is_empty());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
