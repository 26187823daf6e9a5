//! The health table alone: sequences of checks, answers, `503`s and
//! silence, answers from elsewhere, reloads. Time is moved by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{Config, Options};

fn config(text: &str) -> Config {
    let opts = Options {
        country: "7".into(),
        city: "495".into(),
        default_realm: "pbx".into(),
        file_name: "sip.conf".into(),
    };
    Config::parse(text, &opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Two gateways and a mediagate checked every 10 s, a phone, a gateway
/// that registers (no host) and one with checks off.
const CONF: &str = "\
[alice]\nsecret=a\n\
[g1]\naccountcode=gateways\nhost=10.0.0.1\nexten=1\nqualify=10\n\
[g2]\naccountcode=gateways\nhost=10.0.0.2:5080\ntransport=tcp\nexten=2\nqualify=10\n\
[media]\naccountcode=mediagates\nhost=10.0.0.3\ntransport=tls\nqualify=10\n\
[reg]\naccountcode=gateways\nsecret=r\nexten=3\n\
[off]\naccountcode=gateways\nhost=10.0.0.4\nexten=4\nqualify=0\n";

const Q: Duration = Duration::from_secs(10);

struct T {
    h: Health,
    now: Now,
    start: Now,
    next_token: u32,
    /// The checks sent, newest last.
    sent: Vec<Ping>,
}

impl T {
    fn new(text: &str) -> T {
        let now = Now::at(Instant::now(), 1_800_000_000_000);
        T {
            h: Health::new(&config(text), now),
            now,
            start: now,
            next_token: 100,
            sent: Vec::new(),
        }
    }

    fn reload(&mut self, text: &str) {
        self.h.sync(&config(text), self.now);
    }

    /// Move the clock by `d`, sending every check due on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.h.next_check().filter(|t| *t <= end.at);
            let Some(at) = next else { break };
            self.now = self.now + at.saturating_duration_since(self.now.at);
            self.tick();
        }
        self.now = end;
        self.tick();
    }

    fn tick(&mut self) {
        let mut tok = self.next_token;
        let pings = self.h.due_pings(self.now, 1000, &mut || {
            tok += 1;
            tok
        });
        self.next_token = tok;
        self.sent.extend(pings);
    }

    /// The last check sent to gateway `name`.
    fn last(&self, name: &str) -> Ping {
        let dest = self.h.get(name).unwrap().dest;
        self.sent
            .iter()
            .rev()
            .find(|p| p.dest == dest)
            .cloned()
            .unwrap_or_else(|| panic!("no check of {name} sent"))
    }

    fn checks_of(&self, name: &str) -> usize {
        let dest = self.h.get(name).unwrap().dest;
        self.sent.iter().filter(|p| p.dest == dest).count()
    }

    /// `name` answers its last check with `code`, from its own address.
    fn answer(&mut self, name: &str, code: u16) -> Answer {
        let p = self.last(name);
        self.h.on_answer(p.id, p.token, &p.dest, code, self.now)
    }

    fn state(&self, name: &str) -> State {
        self.h.get(name).unwrap().state
    }

    fn misses(&self, name: &str) -> u8 {
        self.h.get(name).unwrap().misses
    }

    fn down(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.h.down().iter().map(String::as_str).collect();
        v.sort();
        v
    }

    /// Move the clock to the next check of `name`, sending it (and the
    /// others due on the way).
    fn next_check_of(&mut self, name: &str) {
        let before = self.checks_of(name);
        for _ in 0..1000 {
            let at = self.h.next_check().expect("a check scheduled");
            self.now = self.now + at.saturating_duration_since(self.now.at);
            self.tick();
            if self.checks_of(name) > before {
                return;
            }
        }
        panic!("{name} was not checked again");
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn who_is_checked_and_where() {
    let t = T::new(CONF);
    // Phones and gateways without a host are not in the table.
    assert!(t.h.get("alice").is_none());
    assert!(t.h.get("reg").is_none());
    assert_eq!(t.h.len(), 4);
    let g = |n: &str| t.h.get(n).unwrap();
    assert_eq!(
        g("g1").dest,
        Peer::to(Transport::Udp, addr("10.0.0.1:5060"))
    );
    assert_eq!(
        g("g2").dest,
        Peer::to(Transport::Tcp, addr("10.0.0.2:5080"))
    );
    // TLS without a port: 5061, as the router sends calls.
    assert_eq!(
        g("media").dest,
        Peer::to(Transport::Tls, addr("10.0.0.3:5061"))
    );
    assert_eq!(g("media").role, Role::Mediagate);
    for n in ["g1", "g2", "media", "off"] {
        assert_eq!(g(n).state, State::Unknown, "{n}");
        assert_eq!(g(n).since_ms, t.start.unix_ms, "{n}");
        assert_eq!(g(n).rtt_ms, None, "{n}");
    }
    assert_eq!(g("off").qualify, 0);
    assert!(t.h.down().is_empty());
    assert_eq!(t.h.changes(), 0);
}

#[test]
fn default_qualify_of_gateways_is_30_whatever_general_says() {
    let t = T::new(
        "[general]\nqualify=0\n\
         [g]\naccountcode=gateways\nhost=10.0.0.1\nexten=1\n\
         [m]\naccountcode=mediagates\nhost=10.0.0.3\n",
    );
    assert_eq!(t.h.get("g").unwrap().qualify, 30);
    assert_eq!(t.h.get("m").unwrap().qualify, 30);
    let first = t.h.next_check().unwrap();
    assert!(first < t.start.at + Duration::from_secs(30));
}

#[test]
fn first_checks_are_spread_then_every_qualify() {
    let mut t = T::new(CONF);
    let first = t.h.next_check().unwrap();
    assert!(first < t.start.at + Q);
    t.advance(Q);
    // Each checked gateway exactly once in the first interval; `off` never.
    for n in ["g1", "g2", "media"] {
        assert_eq!(t.checks_of(n), 1, "{n}");
    }
    assert_eq!(t.checks_of("off"), 0);
    // Then one every qualify seconds.
    t.advance(Q * 5);
    for n in ["g1", "g2", "media"] {
        assert_eq!(t.checks_of(n), 6, "{n}");
    }
    assert_eq!(t.checks_of("off"), 0);
    // Tokens differ from check to check.
    let mut tokens: Vec<u32> = t.sent.iter().map(|p| p.token).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), t.sent.len());
    // Ids differ from gateway to gateway.
    let ids: std::collections::HashSet<u64> = t.sent.iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn an_answer_makes_it_up_with_its_round_trip() {
    let mut t = T::new(CONF);
    t.next_check_of("g1");
    let sent_at = t.now;
    t.now = t.now + Duration::from_millis(42);
    assert_eq!(t.answer("g1", 200), Answer::Alive);
    let g = t.h.get("g1").unwrap();
    assert_eq!(g.state, State::Up);
    assert_eq!(g.rtt_ms, Some(42));
    assert_eq!(g.misses, 0);
    assert_eq!(g.since_ms, sent_at.unix_ms + 42);
    assert_eq!(t.h.changes(), 1);
    // A second copy of the same answer changes nothing.
    assert_eq!(t.answer("g1", 200), Answer::Ignored);
    assert_eq!(t.h.changes(), 1);
    // Staying up is no state change: since stays.
    t.next_check_of("g1");
    t.now = t.now + Duration::from_millis(7);
    assert_eq!(t.answer("g1", 200), Answer::Alive);
    let g = t.h.get("g1").unwrap();
    assert_eq!((g.rtt_ms, g.since_ms), (Some(7), sent_at.unix_ms + 42));
    assert_eq!(t.h.changes(), 1);
}

/// One gateway checked every 10 s.
const ONE: &str = "[g1]\naccountcode=gateways\nhost=10.0.0.1\nexten=1\nqualify=10\n";

#[test]
fn three_unanswered_checks_in_a_row_make_it_down() {
    let mut t = T::new(ONE);
    t.next_check_of("g1");
    assert_eq!(t.answer("g1", 200), Answer::Alive);
    // Silence from now on: this check goes unanswered, and each next one
    // counts the one before it missed.
    t.next_check_of("g1");
    assert_eq!(t.misses("g1"), 0);
    for missed in 1..=3u8 {
        t.next_check_of("g1");
        assert_eq!(t.misses("g1"), missed);
        let want = if missed < MISSES_DOWN {
            State::Up
        } else {
            State::Down
        };
        assert_eq!(t.state("g1"), want, "after {missed} missed");
    }
    assert_eq!(t.down(), ["g1"]);
    assert_eq!(t.h.changes(), 2);
    let since = t.h.get("g1").unwrap().since_ms;
    assert_eq!(since, t.now.unix_ms);
    // Still checked while down; more misses are no new change.
    t.next_check_of("g1");
    t.next_check_of("g1");
    assert_eq!(t.state("g1"), State::Down);
    assert_eq!(t.misses("g1"), 5);
    assert_eq!(t.h.get("g1").unwrap().since_ms, since);
    assert_eq!(t.h.changes(), 2);
}

#[test]
fn never_answered_goes_from_unknown_to_down() {
    let mut t = T::new(CONF);
    // First check at the spread offset, then three more: the 4th send
    // finds the 3rd unanswered.
    t.next_check_of("g2");
    for _ in 0..2 {
        t.next_check_of("g2");
        assert_eq!(t.state("g2"), State::Unknown);
    }
    t.next_check_of("g2");
    assert_eq!(t.state("g2"), State::Down);
    assert!(t.down().contains(&"g2"));
    // Down within 4 x qualify of start.
    assert!(t.now.at <= t.start.at + Q * 4);
}

#[test]
fn a_503_is_a_failed_check_at_once() {
    let mut t = T::new(CONF);
    t.next_check_of("g1");
    assert_eq!(t.answer("g1", 200), Answer::Alive);
    for n in 1..=3u8 {
        t.next_check_of("g1");
        assert_eq!(t.answer("g1", 503), Answer::Unavailable);
        assert_eq!(t.misses("g1"), n);
    }
    // The third 503 made it down without waiting for the next check.
    assert_eq!(t.state("g1"), State::Down);
    // The next check does not count the answered (503) one again.
    t.next_check_of("g1");
    assert_eq!(t.misses("g1"), 3);
    // The RTT is of the last real answer.
    assert!(t.h.get("g1").unwrap().rtt_ms.is_some());
}

#[test]
fn silence_and_503_mix() {
    let mut t = T::new(CONF);
    t.next_check_of("g1");
    assert_eq!(t.answer("g1", 503), Answer::Unavailable);
    t.next_check_of("g1");
    // no answer to this one
    t.next_check_of("g1");
    assert_eq!(t.misses("g1"), 2);
    assert_eq!(t.state("g1"), State::Unknown);
    assert_eq!(t.answer("g1", 503), Answer::Unavailable);
    assert_eq!(t.state("g1"), State::Down);
}

#[test]
fn an_answer_in_between_starts_the_count_again() {
    let mut t = T::new(CONF);
    t.next_check_of("g1");
    t.next_check_of("g1");
    t.next_check_of("g1");
    assert_eq!(t.misses("g1"), 2);
    assert_eq!(t.answer("g1", 404), Answer::Alive);
    assert_eq!(t.misses("g1"), 0);
    t.next_check_of("g1");
    t.next_check_of("g1");
    t.next_check_of("g1");
    assert_eq!(t.misses("g1"), 2);
    assert_eq!(t.state("g1"), State::Up);
}

#[test]
fn any_other_final_answer_means_alive() {
    for code in [
        200, 202, 301, 400, 403, 404, 405, 408, 480, 481, 486, 500, 501, 502, 504, 600, 603, 699,
    ] {
        let mut t = T::new(CONF);
        t.next_check_of("g1");
        for _ in 0..3 {
            t.next_check_of("g1");
        }
        assert_eq!(t.state("g1"), State::Down, "{code}");
        // One answer brings it back.
        assert_eq!(t.answer("g1", code), Answer::Alive, "{code}");
        assert_eq!(t.state("g1"), State::Up, "{code}");
        assert_eq!(t.misses("g1"), 0);
        assert!(!t.down().contains(&"g1"), "{code}");
    }
}

#[test]
fn a_provisional_response_is_no_answer() {
    let mut t = T::new(CONF);
    t.next_check_of("g1");
    assert_eq!(t.answer("g1", 100), Answer::Ignored);
    assert_eq!(t.answer("g1", 183), Answer::Ignored);
    assert_eq!(t.state("g1"), State::Unknown);
    // The final one that follows still counts.
    assert_eq!(t.answer("g1", 200), Answer::Alive);
    // Only provisional ones: a miss.
    t.next_check_of("g1");
    assert_eq!(t.answer("g1", 100), Answer::Ignored);
    t.next_check_of("g1");
    assert_eq!(t.misses("g1"), 1);
}

#[test]
fn an_answer_from_elsewhere_is_not_an_answer() {
    let mut t = T::new(CONF);
    t.next_check_of("g1");
    t.next_check_of("g2");
    let p = t.last("g1");
    let from = |tr: Transport, a: &str| Peer::to(tr, addr(a));
    for other in [
        from(Transport::Udp, "10.0.0.1:5061"),  // another port
        from(Transport::Udp, "10.0.0.9:5060"),  // another host
        from(Transport::Udp, "10.0.0.2:5080"),  // another gateway
        from(Transport::Tcp, "10.0.0.1:5060"),  // another transport
        from(Transport::Udp, "127.0.0.1:5060"), // ourselves
    ] {
        assert_eq!(
            t.h.on_answer(p.id, p.token, &other, 200, t.now),
            Answer::Ignored,
            "{other}"
        );
        assert_eq!(
            t.h.on_answer(p.id, p.token, &other, 503, t.now),
            Answer::Ignored,
            "{other}"
        );
    }
    assert_eq!(t.state("g1"), State::Unknown);
    assert_eq!(t.misses("g1"), 0);
    // g2 answering g1's check (its branch) is not g1's answer either.
    let p2 = t.last("g2");
    assert_eq!(
        t.h.on_answer(p.id, p.token, &p2.dest, 200, t.now),
        Answer::Ignored
    );
    // The gateway itself, as an IPv4-mapped IPv6 source (a dual-stack
    // socket), is.
    let mapped = from(Transport::Udp, "[::ffff:10.0.0.1]:5060");
    assert_eq!(
        t.h.on_answer(p.id, p.token, &mapped, 200, t.now),
        Answer::Alive
    );
    // g2 over TCP from its address (the flow sipd opened; the flow id
    // does not matter).
    let mut tcp = p2.dest;
    tcp.flow = Some(9);
    tcp.local = Some(addr("127.0.0.1:5060"));
    assert_eq!(
        t.h.on_answer(p2.id, p2.token, &tcp, 405, t.now),
        Answer::Alive
    );
}

#[test]
fn forged_stale_and_late_answers_are_not_counted() {
    let mut t = T::new(CONF);
    t.next_check_of("g1");
    let first = t.last("g1");
    // Wrong token, unknown id.
    assert_eq!(
        t.h.on_answer(first.id, first.token ^ 1, &first.dest, 200, t.now),
        Answer::Ignored
    );
    assert_eq!(
        t.h.on_answer(first.id + 1000, first.token, &first.dest, 200, t.now),
        Answer::Ignored
    );
    assert_eq!(t.state("g1"), State::Unknown);
    // The answer to the first check arrives after the second was sent:
    // late, the first was a miss and this is not the second's answer.
    t.next_check_of("g1");
    assert_eq!(t.misses("g1"), 1);
    assert_eq!(
        t.h.on_answer(first.id, first.token, &first.dest, 200, t.now),
        Answer::Ignored
    );
    assert_eq!(t.state("g1"), State::Unknown);
    // The second's own answer counts.
    assert_eq!(t.answer("g1", 200), Answer::Alive);
}

#[test]
fn qualify_zero_is_never_checked_and_never_down() {
    let mut t = T::new(CONF);
    t.advance(Q * 20);
    assert_eq!(t.checks_of("off"), 0);
    assert_eq!(t.state("off"), State::Unknown);
    assert!(!t.down().contains(&"off"));
    let t = T::new("[off]\naccountcode=gateways\nhost=10.0.0.4\nexten=4\nqualify=0\n");
    assert_eq!(t.h.next_check(), None);
}

#[test]
fn checks_per_call_are_bounded() {
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!(
            "[g{i}]\naccountcode=gateways\nhost=10.1.{}.{}\nexten={i}\nqualify=1\n",
            i / 200,
            i % 200 + 1
        ));
    }
    let mut t = T::new(&text);
    let later = t.now + Duration::from_secs(5);
    let mut tok = 0;
    let mut token = || {
        tok += 1;
        tok
    };
    let first = t.h.due_pings(later, PINGS_PER_TICK, &mut token);
    assert_eq!(first.len(), PINGS_PER_TICK);
    let mut all = first.len();
    while all < 300 {
        let more = t.h.due_pings(later, PINGS_PER_TICK, &mut token);
        assert!(!more.is_empty() && more.len() <= PINGS_PER_TICK);
        all += more.len();
    }
    assert_eq!(all, 300);
    // The schedule holds one entry per gateway.
    assert_eq!(t.h.scheduled(), 300);
}

// ------------------------------------------------------------------ reload

fn with(conf: &str, from: &str, to: &str) -> String {
    assert!(conf.contains(from), "{from}");
    conf.replace(from, to)
}

/// g1 down, g2 up (it answers now), media down.
fn mixed() -> T {
    let mut t = T::new(CONF);
    t.next_check_of("g1");
    for _ in 0..3 {
        t.next_check_of("g1");
    }
    while t.state("media") != State::Down {
        t.next_check_of("media");
    }
    t.next_check_of("g2");
    t.answer("g2", 200);
    assert_eq!(t.state("g1"), State::Down);
    assert_eq!(t.state("g2"), State::Up);
    assert_eq!(t.down(), ["g1", "media"]);
    t
}

#[test]
fn reload_with_the_same_hosts_keeps_the_state() {
    let mut t = mixed();
    let before = (t.h.get("g1").cloned(), t.h.get("g2").cloned());
    let changes = t.h.changes();
    // Other settings change (prefix, a new phone): states stay.
    let text = with(CONF, "exten=1\n", "exten=11\n") + "[bob]\nsecret=b\n";
    t.reload(&text);
    assert_eq!((t.h.get("g1").cloned(), t.h.get("g2").cloned()), before);
    assert_eq!(t.down(), ["g1", "media"]);
    assert_eq!(t.h.changes(), changes);
    // And checks go on as before, answers to the outstanding ones count.
    assert_eq!(t.answer("g1", 200), Answer::Alive);
    assert_eq!(t.state("g1"), State::Up);
}

#[test]
fn reload_with_another_host_starts_again() {
    let mut t = mixed();
    let old = t.last("g1");
    t.now = t.now + Duration::from_millis(5);
    t.reload(&with(CONF, "host=10.0.0.1\n", "host=10.0.0.11\n"));
    let g = t.h.get("g1").unwrap().clone();
    assert_eq!(g.dest, Peer::to(Transport::Udp, addr("10.0.0.11:5060")));
    assert_eq!((g.state, g.misses, g.rtt_ms), (State::Unknown, 0, None));
    assert_eq!(g.since_ms, t.now.unix_ms);
    assert_eq!(t.down(), ["media"]);
    // A late answer from the old host (or the new one) to an old check is
    // not counted.
    assert_eq!(
        t.h.on_answer(old.id, old.token, &old.dest, 200, t.now),
        Answer::Ignored
    );
    let new_dest = g.dest;
    assert_eq!(
        t.h.on_answer(old.id, old.token, &new_dest, 200, t.now),
        Answer::Ignored
    );
    assert_eq!(t.state("g1"), State::Unknown);
    // The new host is checked within qualify, and counts from zero.
    t.next_check_of("g1");
    assert_eq!(t.last("g1").dest, new_dest);
    assert_ne!(t.last("g1").id, old.id);
    assert!(t.now.at <= t.start.at + Q * 5 + Q);
    assert_eq!(t.answer("g1", 200), Answer::Alive);
    // g2 was not touched.
    assert_eq!(t.state("g2"), State::Up);
}

#[test]
fn reload_with_another_port_or_transport_starts_again() {
    for (from, to) in [
        (
            "host=10.0.0.2:5080\ntransport=tcp",
            "host=10.0.0.2:5081\ntransport=tcp",
        ),
        (
            "host=10.0.0.2:5080\ntransport=tcp",
            "host=10.0.0.2:5080\ntransport=udp",
        ),
        (
            "host=10.0.0.2:5080\ntransport=tcp",
            "host=10.0.0.2:5080\ntransport=tls",
        ),
    ] {
        let mut t = mixed();
        t.reload(&with(CONF, from, to));
        assert_eq!(t.state("g2"), State::Unknown, "{to}");
        assert_eq!(t.h.get("g2").unwrap().rtt_ms, None);
        assert_eq!(t.state("g1"), State::Down);
    }
}

#[test]
fn reload_removes_and_adds_gateways() {
    let mut t = mixed();
    let old = t.last("g1");
    // g1 goes, g5 comes.
    let text = with(
        CONF,
        "[g1]\naccountcode=gateways\nhost=10.0.0.1\nexten=1\nqualify=10\n",
        "[g5]\naccountcode=gateways\nhost=10.0.0.5\nexten=5\nqualify=10\n",
    );
    t.reload(&text);
    assert!(t.h.get("g1").is_none());
    assert_eq!(t.down(), ["media"], "a removed gateway is not down");
    assert_eq!(
        t.h.on_answer(old.id, old.token, &old.dest, 200, t.now),
        Answer::Ignored
    );
    let g5 = t.h.get("g5").unwrap();
    assert_eq!((g5.state, g5.since_ms), (State::Unknown, t.now.unix_ms));
    t.next_check_of("g5");
    // Nothing more goes to g1's host.
    let to_g1 = |t: &T| t.sent.iter().filter(|p| p.dest == old.dest).count();
    let n = to_g1(&t);
    t.advance(Q * 3);
    assert_eq!(to_g1(&t), n);
    // g1 back: a new entry, unknown.
    t.reload(CONF);
    assert_eq!(t.state("g1"), State::Unknown);
    assert!(t.h.get("g5").is_none());
    // A gateway that becomes a phone, or loses its host, goes too.
    t.reload(&with(
        CONF,
        "[g2]\naccountcode=gateways\n",
        "[g2]\naccountcode=office\nsecret=x\n",
    ));
    assert!(t.h.get("g2").is_none());
    // Everything gone: the schedule empties.
    t.reload("[alice]\nsecret=a\n");
    assert!(t.h.is_empty());
    assert_eq!(t.h.next_check(), None);
    assert_eq!(t.h.scheduled(), 0);
}

#[test]
fn reload_with_another_qualify_reschedules_and_keeps_the_state() {
    let mut t = mixed();
    t.reload(&with(CONF, "exten=2\nqualify=10\n", "exten=2\nqualify=2\n"));
    assert_eq!(t.state("g2"), State::Up);
    let at = t.now;
    let n = t.checks_of("g2");
    t.advance(Duration::from_secs(2));
    assert_eq!(
        t.checks_of("g2"),
        n + 1,
        "first check within the new interval"
    );
    t.advance(Duration::from_secs(10));
    assert_eq!(t.checks_of("g2"), n + 6);
    assert!(t.now.at >= at.at);
    // Never answered since: down after three more.
    assert_eq!(t.state("g2"), State::Down);
}

#[test]
fn reload_to_qualify_zero_forgets_down() {
    let mut t = mixed();
    t.reload(&with(CONF, "exten=1\nqualify=10\n", "exten=1\nqualify=0\n"));
    let g = t.h.get("g1").unwrap();
    assert_eq!((g.state, g.misses), (State::Unknown, 0));
    assert_eq!(g.since_ms, t.now.unix_ms);
    assert_eq!(t.down(), ["media"]);
    let n = t.checks_of("g1");
    t.advance(Q * 5);
    assert_eq!(t.checks_of("g1"), n);
    // And on again: checked again.
    t.reload(CONF);
    t.advance(Q);
    assert_eq!(t.checks_of("g1"), n + 1);
}

#[test]
fn the_schedule_stays_small_across_reloads() {
    let mut t = T::new(CONF);
    for i in 0..50 {
        let q = if i % 2 == 0 {
            "qualify=3"
        } else {
            "qualify=10"
        };
        t.reload(&CONF.replace("qualify=10", q));
        t.advance(Duration::from_secs(1));
    }
    t.advance(Q * 2);
    // Replaced entries are dropped as they come up.
    assert!(t.h.scheduled() <= 3 + 3, "{}", t.h.scheduled());
}
