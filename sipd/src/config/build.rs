//! From the lexed text to a validated [`Config`]: what each key means, the
//! checks on one client and the checks across clients. Every error is
//! collected; the config is built only when there is none.
//!
//! Decisions where the spec (§2) is open:
//! - Keys, context names and the special accountcodes `gateways` and
//!   `mediagates` are lowercase and case-sensitive (`Secret=` is an unknown
//!   key). An accountcode that differs from a special one only by case
//!   (`Gateways`) is an error rather than a silently ordinary group.
//! - Every key needs a value: `secret=` or `permit=` is an error (an empty
//!   permit must never mean "any address" by accident).
//! - `permit` and its alias `acl` are one key: using both in one section is a
//!   duplicate key.
//! - Section names are SIP user names: ASCII letters, digits and
//!   `-_.!~*'()&=+$,;?/`, not starting with `*` (feature codes), not empty.
//!   A duplicate or badly named section is reported and its keys are still
//!   checked, but it takes no part in the checks across clients.
//! - `[general]` may appear once; bounds: `noanswer` 1–600 s, `min_expires`
//!   1–86400 s, `max_expires` 1–604800 s, `min_expires ≤ max_expires`
//!   (reported on the later of the two lines; an unset one counts with its
//!   default); `realm` must not contain `"`, `\` or control characters;
//!   `cdr_keep_days` 0–36500 (0: CDRs are never pruned); `metrics` is
//!   `IP:port` or `[IPv6]:port` with a port 1–65535 (no names, no bare IP).
//! - `permit`: comma-separated items, each an IPv4/IPv6 address or network.
//!   Abbreviated IPv4 (`10/8`, `192.168/16`) needs a prefix; a bare address
//!   must be complete and is a /32 or /128. The prefix may be a length or, for
//!   IPv4, a contiguous dotted mask (`/255.255.0.0`, as Asterisk writes it).
//!   Host bits set (`192.168.1.5/16`) are accepted and truncated to the
//!   network (`192.168.0.0/16`), as Kamailio does. Octets with leading zeros
//!   (`010`) are rejected (octal ambiguity).
//! - `host`: `IP`, `IP:port`, `[IPv6]`, `[IPv6]:port` or a bare IPv6 address;
//!   no DNS names; port 1–65535; unspecified, multicast and broadcast
//!   addresses are rejected; an IPv4-mapped IPv6 address is stored as the
//!   IPv4 address. Two clients with the same host (same IP and same port, or
//!   both without a port on the same IP) are an error: the source of a
//!   request must name one client.
//! - `exten` of a user: see [`Exten`]. A short number or a hunting list needs
//!   an accountcode. A long number must normalise (`8#1` does not). A
//!   forwarding target that is the client's own short or long number is an
//!   error (it would loop).
//! - `exten` of a gateway is its technical prefix: digits only. A mediagate
//!   takes no exten at all (it is reached by feature code): error.
//! - `dialplan` wins over `context` when both are given (the context name is
//!   still checked). Neither: `.+`.
//! - `callerid`: `"Name" <number>`, `Name <number>`, `<number>` or a number;
//!   the number is digits with an optional leading `+`; the name must not
//!   contain `"`, `\`, `<`, `>` or control characters; an empty name is none.
//! - The country code from the options must be digits and the city code
//!   digits or empty; otherwise a line-0 error.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proto::Forwarding;
use regex::Regex;

use super::exten::Exten;
use super::numbers::{self, all_digits, is_number};
use super::parse::{self, Item};
use super::{
    CallerId, Client, Config, ConfigError, ConfigErrors, General, HostAddr, Media, Options, Role,
    Transport,
};

const GENERAL: &str = "general";
const CLIENT_KEYS: [&str; 14] = [
    "media",
    "accountcode",
    "transport",
    "digest",
    "call_limit",
    "max_contacts",
    "qualify",
    "secret",
    "permit",
    "host",
    "exten",
    "callerid",
    "dialplan",
    "context",
];
const GENERAL_KEYS: [&str; 22] = [
    "media",
    "rtp_ports",
    "rtp_address",
    "media_timeout",
    "flood",
    "ban",
    "security_log",
    "ws_origins",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "max_contacts",
    "qualify",
    "realm",
    "noanswer",
    "min_expires",
    "max_expires",
    "digest",
    "digest_uri",
    "call_limit",
    "cdr_keep_days",
    "metrics",
];
/// Most concurrent calls a `call_limit` may allow (the calls table's default size).
const MAX_CALL_LIMIT: u32 = 100_000;

/// One `[section]` and its pairs, as lexed.
struct Section<'a> {
    line: usize,
    name: &'a str,
    pairs: Vec<(usize, &'a str, &'a str)>,
}

/// A client being checked, with the lines the checks across clients point at.
struct Draft {
    client: Client,
    exten_line: usize,
    host_line: usize,
}

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, line: usize, message: impl Into<String>) {
        self.0.push(ConfigError {
            line,
            message: message.into(),
        });
    }
}

pub(super) fn build(text: &str, opts: &Options) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::default();
    if !all_digits(&opts.country) {
        errors.add(
            0,
            format!("bad country code '{}': digits expected", opts.country),
        );
    }
    if !opts.city.is_empty() && !all_digits(&opts.city) {
        errors.add(0, format!("bad city code '{}': digits expected", opts.city));
    }

    let (items, lex_errors) = parse::lex(text);
    errors.0.extend(lex_errors);

    let mut sections: Vec<Section> = Vec::new();
    for item in &items {
        match item {
            Item::Section { line, name } => sections.push(Section {
                line: *line,
                name,
                pairs: Vec::new(),
            }),
            Item::Pair { line, key, value } => match sections.last_mut() {
                Some(section) => section.pairs.push((*line, key, value)),
                None => errors.add(*line, format!("key '{key}' outside any section")),
            },
        }
    }

    let mut general: Option<General> = None;
    let mut drafts: Vec<Draft> = Vec::new();
    // Clients share compiled dialplans: a regex per client would cost
    // megabytes and most of the parse time with thousands of clients.
    let mut regexes: HashMap<String, Arc<Regex>> = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for section in &sections {
        let first = seen.get(section.name).copied();
        if let Some(first) = first {
            errors.add(
                section.line,
                format!(
                    "duplicate section [{}] (first at line {first})",
                    section.name
                ),
            );
        } else {
            seen.insert(section.name, section.line);
        }
        if section.name == GENERAL {
            let g = parse_general(section, opts, &mut errors);
            general.get_or_insert(g);
            continue;
        }
        let name_ok = match check_name(section.name) {
            Ok(()) => true,
            Err(message) => {
                errors.add(section.line, message);
                false
            }
        };
        let draft = parse_client(section, opts, &mut errors, &mut regexes);
        if name_ok && first.is_none() {
            drafts.push(draft);
        }
    }

    check_across(&drafts, opts, &mut errors);

    if !errors.0.is_empty() {
        let mut errors = errors.0;
        errors.sort_by_key(|e| e.line);
        return Err(ConfigErrors {
            file_name: opts.file_name.clone(),
            errors,
        });
    }
    let general = general.unwrap_or_else(|| General::defaults(opts));
    let clients = drafts.into_iter().map(|d| d.client).collect();
    Ok(Config::from_clients(general, opts, clients))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty section name '[]'".to_string());
    }
    if name.starts_with('*') {
        return Err(format!(
            "bad client name '{name}': must not start with '*' (feature codes do)"
        ));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c);
    if !name.chars().all(ok) {
        return Err(format!(
            "bad client name '{}': use ASCII letters, digits and -_.!~*'()&=+$,;?/ (a SIP user name)",
            parse::shorten(name)
        ));
    }
    Ok(())
}

/// The pairs of a section by canonical key, reporting unknown, duplicate and
/// empty keys. `canonical` maps a written key to its canonical name.
fn collect_keys<'a>(
    section: &Section<'a>,
    canonical: impl Fn(&str) -> Option<&'static str>,
    where_: &str,
    errors: &mut Errors,
) -> HashMap<&'static str, (usize, &'a str)> {
    let mut keys: HashMap<&'static str, (usize, &'a str)> = HashMap::new();
    let mut written: HashMap<&'static str, &str> = HashMap::new();
    for &(line, key, value) in &section.pairs {
        let Some(canon) = canonical(key) else {
            errors.add(line, format!("unknown key '{key}'{where_}"));
            continue;
        };
        if let Some(&(first, _)) = keys.get(canon) {
            let first_key = written[canon];
            if first_key == key {
                errors.add(
                    line,
                    format!("duplicate key '{key}' (first at line {first})"),
                );
            } else {
                errors.add(
                    line,
                    format!("duplicate key '{key}' (same as '{first_key}' at line {first})"),
                );
            }
            continue;
        }
        if value.is_empty() {
            errors.add(line, format!("empty value for key '{key}'"));
        }
        keys.insert(canon, (line, value));
        written.insert(canon, key);
    }
    keys.retain(|_, (_, value)| !value.is_empty());
    keys
}

fn parse_general(section: &Section, opts: &Options, errors: &mut Errors) -> General {
    let canonical = |key: &str| GENERAL_KEYS.iter().copied().find(|&k| k == key);
    let keys = collect_keys(section, canonical, " in [general]", errors);
    let mut general = General::defaults(opts);

    if let Some(&(line, realm)) = keys.get("realm") {
        if realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            errors.add(
                line,
                format!("bad realm '{realm}': must not contain '\"', '\\' or control characters"),
            );
        } else {
            general.realm = realm.to_string();
        }
    }
    let mut seconds = |key: &str, min: u32, max: u32, slot: &mut u32| -> Option<usize> {
        let &(line, value) = keys.get(key)?;
        if !all_digits(value) {
            errors.add(
                line,
                format!("bad {key} '{value}': expected a whole number of seconds"),
            );
            return None;
        }
        match value.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => {
                *slot = n;
                Some(line)
            }
            _ => {
                errors.add(line, format!("{key} {value} is out of range ({min}-{max})"));
                None
            }
        }
    };
    let mut noanswer = general.noanswer;
    let mut min_expires = general.min_expires;
    let mut max_expires = general.max_expires;
    seconds("noanswer", 1, 600, &mut noanswer);
    let min_line = seconds("min_expires", 1, 86_400, &mut min_expires);
    let max_line = seconds("max_expires", 1, 604_800, &mut max_expires);
    let mut media_timeout = general.media_timeout;
    seconds("media_timeout", 0, 86_400, &mut media_timeout);
    general.media_timeout = media_timeout;
    // Compare only values that are valid (an invalid one was reported).
    let min_bad = keys.contains_key("min_expires") && min_line.is_none();
    let max_bad = keys.contains_key("max_expires") && max_line.is_none();
    if !min_bad && !max_bad && min_expires > max_expires {
        let line = min_line.max(max_line).unwrap_or(section.line);
        errors.add(
            line,
            format!("min_expires ({min_expires}) is greater than max_expires ({max_expires})"),
        );
    }
    general.noanswer = noanswer;
    general.min_expires = min_expires;
    general.max_expires = max_expires;
    if let Some(&(line, value)) = keys.get("digest") {
        match parse_digest(value) {
            Ok(algs) => general.digest = algs,
            Err(e) => errors.add(line, e),
        }
    }
    if let Some(&(line, value)) = keys.get("call_limit") {
        if let Some(n) = parse_call_limit(line, value, errors) {
            general.call_limit = n;
        }
    }
    if let Some(&(line, value)) = keys.get("max_contacts") {
        if let Some(n) = parse_max_contacts(line, value, errors) {
            general.max_contacts = n;
        }
    }
    if let Some(&(line, value)) = keys.get("qualify") {
        if let Some(n) = parse_qualify(line, value, errors) {
            general.qualify = n;
        }
    }
    if let Some(&(line, value)) = keys.get("digest_uri") {
        match value.to_ascii_lowercase().as_str() {
            "request" => general.check_digest_uri = true,
            "any" => general.check_digest_uri = false,
            _ => errors.add(
                line,
                format!("bad digest_uri '{value}': expected request or any"),
            ),
        }
    }
    for (key, slot) in [
        ("tls_cert", &mut general.tls_cert),
        ("tls_key", &mut general.tls_key),
        ("tls_ca", &mut general.tls_ca),
    ] {
        if let Some(&(_, value)) = keys.get(key) {
            *slot = Some(value.to_string());
        }
    }
    if let Some(&(line, value)) = keys.get("flood") {
        let parsed = value.split_once('/').and_then(|(n, s)| {
            let (n, s) = (n.trim(), s.trim());
            (all_digits(n) && all_digits(s))
                .then(|| Some((n.parse::<u32>().ok()?, s.parse::<u32>().ok()?)))
                .flatten()
        });
        match parsed {
            Some((n, s)) if n <= 1_000_000 && (1..=3600).contains(&s) => general.flood = (n, s),
            _ => errors.add(
                line,
                format!("bad flood '{value}': expected REQUESTS/SECONDS, e.g. 100/2 (0/1 off)"),
            ),
        }
    }
    if let Some(&(line, value)) = keys.get("ban") {
        match value.parse::<u32>() {
            Ok(n) if all_digits(value) && (1..=86_400).contains(&n) => general.ban = n,
            _ => errors.add(line, format!("bad ban '{value}': expected seconds 1-86400")),
        }
    }
    if let Some(&(_, value)) = keys.get("security_log") {
        general.security_log = Some(value.to_string());
    }
    if let Some(&(line, value)) = keys.get("ws_origins") {
        let list: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        match list.iter().find(|o| !o.contains("://") || o.ends_with('/')) {
            Some(bad) => errors.add(
                line,
                format!("bad ws_origins '{bad}': expected origins like https://phone.example.com (scheme://host[:port], no path)"),
            ),
            None => general.ws_origins = list,
        }
    }
    if let Some(&(line, value)) = keys.get("cdr_keep_days") {
        if !all_digits(value) {
            errors.add(
                line,
                format!("bad cdr_keep_days '{value}': expected a whole number of days"),
            );
        } else {
            match value.parse::<u32>() {
                Ok(n) if n <= MAX_CDR_KEEP_DAYS => general.cdr_keep_days = n,
                _ => errors.add(
                    line,
                    format!("cdr_keep_days {value} is out of range (0-{MAX_CDR_KEEP_DAYS})"),
                ),
            }
        }
    }
    if let Some(&(line, value)) = keys.get("media") {
        match Media::parse(value) {
            Some(m) => general.media = m,
            None => errors.add(line, bad_media(value)),
        }
    }
    if let Some(&(line, value)) = keys.get("rtp_ports") {
        match parse_rtp_ports(value) {
            Ok(r) => general.rtp_ports = r,
            Err(e) => errors.add(line, e),
        }
    }
    if let Some(&(line, value)) = keys.get("rtp_address") {
        match value.parse::<std::net::IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => general.rtp_address = Some(ip),
            _ => errors.add(
                line,
                format!(
                    "bad rtp_address '{value}': expected one IPv4 or IPv6 address of this host"
                ),
            ),
        }
    }
    if let Some(&(line, value)) = keys.get("metrics") {
        match parse_metrics(value) {
            Ok(addr) => general.metrics = Some(addr),
            Err(e) => errors.add(line, e),
        }
    }
    general
}

fn bad_media(value: &str) -> String {
    format!("bad media '{value}': expected auto, relay or direct")
}

/// `rtp_ports=LO-HI`: at least 4 ports (two legs of one stream), from
/// 1024 up, LO <= HI.
fn parse_rtp_ports(value: &str) -> Result<(u16, u16), String> {
    let bad =
        || format!("bad rtp_ports '{value}': expected LOW-HIGH, e.g. 20000-30000 (1024-65535)");
    let (lo, hi) = value.split_once('-').ok_or_else(bad)?;
    let (lo, hi) = (lo.trim(), hi.trim());
    if !all_digits(lo) || !all_digits(hi) {
        return Err(bad());
    }
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo < 1024 || hi < lo {
        return Err(bad());
    }
    // Even RTP ports with RTCP above: the range must hold two pairs.
    let first = lo + lo % 2;
    if u32::from(hi) < u32::from(first) + 3 {
        return Err(format!(
            "bad rtp_ports '{value}': the range must hold at least 4 ports (2 RTP/RTCP pairs)"
        ));
    }
    Ok((lo, hi))
}

/// `metrics=IP:port` or `metrics=[IPv6]:port`: the Prometheus listener.
fn parse_metrics(value: &str) -> Result<std::net::SocketAddr, String> {
    let bad =
        || format!("bad metrics '{value}': expected IP:port or [IPv6]:port, e.g. 127.0.0.1:9100");
    let addr: std::net::SocketAddr = value.parse().map_err(|_| bad())?;
    if addr.port() == 0 {
        return Err(format!("bad metrics '{value}': port 1-65535 expected"));
    }
    if addr.ip().is_multicast() {
        return Err(format!(
            "bad metrics '{value}': a multicast address cannot be listened on"
        ));
    }
    Ok(addr)
}

/// `call_limit=N`: concurrent calls a client may make, 0 for no limit
/// of its own (the calls table still bounds it).
fn parse_call_limit(line: usize, value: &str, errors: &mut Errors) -> Option<u32> {
    match value.parse::<u32>() {
        Ok(n) if all_digits(value) && n <= MAX_CALL_LIMIT => Some(n),
        _ => {
            errors.add(
                line,
                format!("bad call_limit '{value}': expected 0-{MAX_CALL_LIMIT} (0: no limit)"),
            );
            None
        }
    }
}
/// Most bindings `max_contacts` may allow one client.
const MAX_MAX_CONTACTS: u32 = 100;
/// Longest keep-alive interval, seconds (a NAT pinhole lasts far less).
const MAX_QUALIFY: u32 = 3600;

/// `max_contacts=N`: devices (bindings) one client may register at once.
fn parse_max_contacts(line: usize, value: &str, errors: &mut Errors) -> Option<u32> {
    match value.parse::<u32>() {
        Ok(n) if all_digits(value) && (1..=MAX_MAX_CONTACTS).contains(&n) => Some(n),
        _ => {
            errors.add(
                line,
                format!("bad max_contacts '{value}': expected 1-{MAX_MAX_CONTACTS}"),
            );
            None
        }
    }
}

/// `qualify=SECONDS`: keep-alive OPTIONS interval per UDP binding, 0 off.
fn parse_qualify(line: usize, value: &str, errors: &mut Errors) -> Option<u32> {
    match value.parse::<u32>() {
        Ok(n) if all_digits(value) && n <= MAX_QUALIFY => Some(n),
        _ => {
            errors.add(
                line,
                format!("bad qualify '{value}': expected seconds 0-{MAX_QUALIFY} (0: off)"),
            );
            None
        }
    }
}

/// A hundred years: more is a typo.
const MAX_CDR_KEEP_DAYS: u32 = 36_500;

/// `digest=sha-256,md5`: the algorithms to offer, in order, each once.
fn parse_digest(value: &str) -> Result<Vec<crate::auth::Algorithm>, String> {
    use crate::auth::Algorithm;
    let mut algs = Vec::new();
    for item in value.split(',').map(str::trim) {
        let alg = match item.to_ascii_lowercase().as_str() {
            "sha-256" => Algorithm::Sha256,
            "md5" => Algorithm::Md5,
            _ => {
                return Err(format!(
                    "bad digest '{value}': expected a list of sha-256 and md5 (e.g. 'sha-256,md5')"
                ))
            }
        };
        if algs.contains(&alg) {
            return Err(format!("bad digest '{value}': {item} is listed twice"));
        }
        algs.push(alg);
    }
    Ok(algs)
}

fn parse_client(
    section: &Section,
    opts: &Options,
    errors: &mut Errors,
    regexes: &mut HashMap<String, Arc<Regex>>,
) -> Draft {
    let canonical = |key: &str| match key {
        "acl" => Some("permit"),
        key => CLIENT_KEYS.iter().copied().find(|&k| k == key),
    };
    let keys = collect_keys(section, canonical, "", errors);
    let mut client = Client {
        name: section.name.to_string(),
        line: section.line,
        accountcode: None,
        role: Role::User,
        secret: None,
        permit: Vec::new(),
        host: None,
        exten: Exten::default(),
        prefix: None,
        callerid: None,
        dialplan: any_number(),
        dialplan_src: ".+".to_string(),
        long_norm: None,
        call_limit: None,
        max_contacts: None,
        qualify: None,
        digest: None,
        transport: Transport::Udp,
        media: None,
    };
    let mut exten_line = section.line;
    let mut host_line = section.line;

    if let Some(&(line, acc)) = keys.get("accountcode") {
        client.role = match acc {
            "gateways" => Role::Gateway,
            "mediagates" => Role::Mediagate,
            _ => Role::User,
        };
        for special in ["gateways", "mediagates"] {
            if acc != special && acc.eq_ignore_ascii_case(special) {
                errors.add(
                    line,
                    format!("accountcode '{acc}': write '{special}' in lowercase for that role"),
                );
            }
        }
        client.accountcode = Some(acc.to_string());
    }
    if let Some(&(line, value)) = keys.get("call_limit") {
        client.call_limit = parse_call_limit(line, value, errors);
    }
    if let Some(&(line, value)) = keys.get("max_contacts") {
        client.max_contacts = parse_max_contacts(line, value, errors);
    }
    if let Some(&(line, value)) = keys.get("qualify") {
        client.qualify = parse_qualify(line, value, errors);
    }
    if let Some(&(line, value)) = keys.get("transport") {
        match value.to_ascii_lowercase().as_str() {
            "udp" => client.transport = Transport::Udp,
            "tcp" => client.transport = Transport::Tcp,
            "tls" => client.transport = Transport::Tls,
            _ => errors.add(
                line,
                format!("bad transport '{value}': expected udp, tcp or tls"),
            ),
        }
    }
    if let Some(&(line, value)) = keys.get("media") {
        match Media::parse(value) {
            Some(m) => client.media = Some(m),
            None => errors.add(line, bad_media(value)),
        }
    }
    if let Some(&(line, value)) = keys.get("digest") {
        match parse_digest(value) {
            Ok(algs) => client.digest = Some(algs),
            Err(e) => errors.add(line, e),
        }
    }
    if let Some(&(_, secret)) = keys.get("secret") {
        client.secret = Some(secret.to_string());
    }
    if let Some(&(line, permit)) = keys.get("permit") {
        match parse_permit(permit) {
            Ok(nets) => client.permit = nets,
            Err(message) => errors.add(line, message),
        }
    }
    if let Some(&(line, host)) = keys.get("host") {
        host_line = line;
        match parse_host(host) {
            Ok(h) => client.host = Some(h),
            Err(message) => errors.add(line, message),
        }
    }
    if let Some(&(line, callerid)) = keys.get("callerid") {
        match parse_callerid(callerid) {
            Some(c) => client.callerid = Some(c),
            None => errors.add(
                line,
                format!(
                    "bad callerid '{callerid}': expected \"Name\" <number>, Name <number> or a number"
                ),
            ),
        }
    }
    let mut preset = None;
    if let Some(&(line, context)) = keys.get("context") {
        match numbers::preset(context, &opts.country, &opts.city) {
            Some(src) => preset = Some(src),
            None => errors.add(
                line,
                format!(
                    "unknown context '{context}' (expected {})",
                    numbers::PRESETS
                ),
            ),
        }
    }
    if let Some(&(line, src)) = keys.get("dialplan") {
        match compile(src, regexes) {
            Ok(re) => {
                client.dialplan = re;
                client.dialplan_src = src.to_string();
            }
            Err(e) => errors.add(
                line,
                format!("bad dialplan regex '{src}': {}", regex_error(&e)),
            ),
        }
    } else if let Some(src) = preset {
        // A preset is built from digit codes: it always compiles.
        if let Ok(re) = compile(&src, regexes) {
            client.dialplan = re;
            client.dialplan_src = src;
        }
    }
    if let Some(&(line, exten)) = keys.get("exten") {
        exten_line = line;
        if let Err(message) = apply_exten(&mut client, exten, opts) {
            errors.add(line, message);
        }
    }
    if client.secret.is_none() && client.host.is_none() && !keys.contains_key("host") {
        errors.add(
            section.line,
            format!("client '{}' needs secret or host", section.name),
        );
    }
    Draft {
        client,
        exten_line,
        host_line,
    }
}

fn any_number() -> Arc<Regex> {
    static ANY: std::sync::OnceLock<Arc<Regex>> = std::sync::OnceLock::new();
    ANY.get_or_init(|| Arc::new(Regex::new(".+").expect("constant regex")))
        .clone()
}

/// Compile a dialplan once per distinct source.
fn compile(src: &str, cache: &mut HashMap<String, Arc<Regex>>) -> Result<Arc<Regex>, regex::Error> {
    if let Some(re) = cache.get(src) {
        return Ok(re.clone());
    }
    let re = Arc::new(Regex::new(src)?);
    cache.insert(src.to_string(), re.clone());
    Ok(re)
}

/// The one line of a regex error that says what is wrong.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    if let Some(line) = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:"))
    {
        return line.trim().to_string();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Interpret `exten` for the client's role.
fn apply_exten(client: &mut Client, value: &str, opts: &Options) -> Result<(), String> {
    match client.role {
        Role::Gateway => {
            if !all_digits(value) {
                return Err(format!(
                    "bad exten '{value}': the exten of a gateway is its technical prefix (digits only)"
                ));
            }
            client.prefix = Some(value.to_string());
            Ok(())
        }
        Role::Mediagate => Err(format!(
            "bad exten '{value}': a mediagate has no exten (it is reached by feature code)"
        )),
        Role::User => {
            let exten = Exten::parse(value).map_err(|e| format!("bad exten '{value}': {e}"))?;
            let long_norm = match &exten.long {
                Some(long) => match numbers::normalise(long, &opts.country, &opts.city) {
                    Some(n) => Some(n),
                    None => {
                        return Err(format!(
                            "bad exten '{value}': long number '{long}' is not a dialable number"
                        ))
                    }
                },
                None => None,
            };
            if client.accountcode.is_none() {
                if let Some(short) = &exten.short {
                    return Err(format!(
                        "bad exten '{value}': short number '{short}' needs an accountcode (short numbers are dialed within a group)"
                    ));
                }
                if !exten.hunt.is_empty() {
                    return Err(format!(
                        "bad exten '{value}': hunting needs an accountcode (positions are members of the group)"
                    ));
                }
            }
            client.exten = exten;
            client.long_norm = long_norm;
            Ok(())
        }
    }
}

/// Checks that need all clients: hunting positions, unique numbers, unique
/// hosts, forwarding to oneself.
fn check_across(drafts: &[Draft], opts: &Options, errors: &mut Errors) {
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, d) in drafts.iter().enumerate() {
        if let Some(acc) = &d.client.accountcode {
            groups.entry(acc).or_default().push(i);
        }
    }

    let mut longs: HashMap<&str, usize> = HashMap::new();
    let mut shorts: HashMap<(&str, &str), usize> = HashMap::new();
    let mut hosts: HashMap<HostAddr, usize> = HashMap::new();
    for (i, d) in drafts.iter().enumerate() {
        let c = &d.client;
        if let Some(norm) = &c.long_norm {
            match longs.get(norm.as_str()) {
                Some(&j) => {
                    let other = &drafts[j];
                    let written = c.exten.long.as_deref().unwrap_or_default();
                    let theirs = other.client.exten.long.as_deref().unwrap_or_default();
                    let same = if written == theirs {
                        String::new()
                    } else {
                        format!(" as '{theirs}'")
                    };
                    errors.add(
                        d.exten_line,
                        format!(
                            "duplicate long number '{written}' (normalised {norm}): already used by '{}'{same} at line {}",
                            other.client.name, other.exten_line
                        ),
                    );
                }
                None => {
                    longs.insert(norm, i);
                }
            }
        }
        if let (Some(acc), Some(short)) = (&c.accountcode, &c.exten.short) {
            match shorts.get(&(acc.as_str(), short.as_str())) {
                Some(&j) => errors.add(
                    d.exten_line,
                    format!(
                        "duplicate short number '{short}' in group '{acc}': already used by '{}' at line {}",
                        drafts[j].client.name, drafts[j].exten_line
                    ),
                ),
                None => {
                    shorts.insert((acc, short), i);
                }
            }
        }
        if let Some(host) = c.host {
            match hosts.get(&host) {
                Some(&j) => errors.add(
                    d.host_line,
                    format!(
                        "host {host} is already used by '{}' at line {}",
                        drafts[j].client.name, drafts[j].host_line
                    ),
                ),
                None => {
                    hosts.insert(host, i);
                }
            }
        }
    }

    for (i, d) in drafts.iter().enumerate() {
        let c = &d.client;
        let Some(acc) = &c.accountcode else { continue };
        let members = &groups[acc.as_str()];
        // One "does not exist" per client: `(1-9999)` must not flood.
        let mut missing_reported = false;
        for &p in &c.exten.hunt {
            match members.get(p - 1) {
                None if missing_reported => {}
                None => {
                    missing_reported = true;
                    errors.add(
                        d.exten_line,
                        format!(
                            "hunting position {p} does not exist in group '{acc}' ({} members)",
                            members.len()
                        ),
                    );
                }
                Some(&j) if j == i => errors.add(
                    d.exten_line,
                    format!("hunting position {p} is '{}' itself", c.name),
                ),
                Some(_) => {}
            }
        }
    }

    for (i, d) in drafts.iter().enumerate() {
        let c = &d.client;
        let (sign, target) = match &c.exten.forward {
            Forwarding::Always { number } => ('=', number),
            Forwarding::Unavailable { number } => ('~', number),
            Forwarding::None => continue,
        };
        // The target as the router resolves it: short number in the
        // client's group first, then long number.
        let by_short = c
            .accountcode
            .as_ref()
            .and_then(|acc| shorts.get(&(acc.as_str(), target.as_str())));
        let resolved = by_short.copied().or_else(|| {
            let norm = numbers::normalise(target, &opts.country, &opts.city)?;
            longs.get(norm.as_str()).copied()
        });
        if resolved == Some(i) {
            errors.add(
                d.exten_line,
                format!("forwarding {sign}{target} goes to '{}' itself", c.name),
            );
        }
    }
}

/// `permit`: comma-separated networks.
fn parse_permit(value: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("empty network in permit '{value}'"));
        }
        let net =
            parse_net(item).map_err(|why| format!("bad network '{item}' in permit: {why}"))?;
        nets.push(net);
    }
    Ok(nets)
}

/// One permit item: address or network, abbreviated IPv4 allowed with a
/// prefix; host bits are truncated.
pub(super) fn parse_net(item: &str) -> Result<IpNet, String> {
    let (addr, prefix) = match item.split_once('/') {
        Some((a, p)) => (a.trim(), Some(p.trim())),
        None => (item, None),
    };
    if addr.contains(':') {
        let ip: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IPv6 address"))?;
        let len = match prefix {
            None => 128,
            Some(p) => prefix_len(p, 128)?,
        };
        let net = Ipv6Net::new(ip, len).map_err(|_| "prefix length must be 0-128".to_string())?;
        return Ok(IpNet::V6(net.trunc()));
    }
    let ip = parse_v4(addr, prefix.is_some())?;
    let len = match prefix {
        None => 32,
        Some(p) if p.contains('.') => mask_len(p)?,
        Some(p) => prefix_len(p, 32)?,
    };
    let net = Ipv4Net::new(ip, len).map_err(|_| "prefix length must be 0-32".to_string())?;
    Ok(IpNet::V4(net.trunc()))
}

fn prefix_len(p: &str, max: u8) -> Result<u8, String> {
    match p.parse::<u8>() {
        Ok(n) if all_digits(p) && n <= max => Ok(n),
        _ => Err(format!("prefix length '{p}' must be 0-{max}")),
    }
}

/// A dotted IPv4 mask such as `255.255.0.0` as a prefix length.
fn mask_len(p: &str) -> Result<u8, String> {
    let mask = u32::from(parse_v4(p, false).map_err(|_| format!("bad mask '{p}'"))?);
    let ones = mask.leading_ones();
    if ones + mask.trailing_zeros() < 32 && mask != 0 {
        return Err(format!("mask '{p}' is not contiguous"));
    }
    Ok(ones as u8)
}

/// Dotted decimal IPv4; with `abbreviated`, missing trailing octets are 0.
fn parse_v4(addr: &str, abbreviated: bool) -> Result<Ipv4Addr, String> {
    let parts: Vec<&str> = addr.split('.').collect();
    let octet = |s: &str| -> Option<u8> {
        if !all_digits(s) || (s.len() > 1 && s.starts_with('0')) {
            return None;
        }
        s.parse().ok()
    };
    let octets: Option<Vec<u8>> = parts.iter().map(|s| octet(s)).collect();
    let Some(octets) = octets.filter(|o| o.len() <= 4) else {
        return Err(format!("'{addr}' is not an IPv4 address"));
    };
    if octets.len() < 4 && !abbreviated {
        return Err(format!(
            "'{addr}' is not a complete IPv4 address (an abbreviated network needs a /prefix)"
        ));
    }
    let mut full = [0u8; 4];
    full[..octets.len()].copy_from_slice(&octets);
    Ok(Ipv4Addr::from(full))
}

/// `host=IP[:port]`.
pub(super) fn parse_host(value: &str) -> Result<HostAddr, String> {
    let generic = || {
        format!(
            "bad host '{value}': expected IP[:port], IPv6 as [IP]:port or a bare IPv6 address (DNS names are not supported)"
        )
    };
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && all_digits(p) => Ok(n),
            _ => Err(format!("bad host '{value}': port '{p}' must be 1-65535")),
        }
    };
    let (ip, port) = if let Some(rest) = value.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(generic)?;
        let ip: Ipv6Addr = addr.parse().map_err(|_| generic())?;
        let port = match after {
            "" => None,
            after => Some(port(after.strip_prefix(':').ok_or_else(generic)?)?),
        };
        (IpAddr::V6(ip), port)
    } else if let Ok(ip) = value.parse::<IpAddr>() {
        (ip, None)
    } else {
        match value.rsplit_once(':') {
            Some((addr, p)) if !addr.contains(':') => {
                let ip: Ipv4Addr = addr.parse().map_err(|_| generic())?;
                (IpAddr::V4(ip), Some(port(p)?))
            }
            _ => return Err(generic()),
        }
    };
    let ip = ip.to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(format!("bad host '{value}': not a unicast address"));
    }
    Ok(HostAddr { ip, port })
}

/// `"Name" <number>`, `Name <number>`, `<number>` or a bare number.
pub(super) fn parse_callerid(value: &str) -> Option<CallerId> {
    if is_number(value) {
        return Some(CallerId {
            display: None,
            number: value.to_string(),
        });
    }
    let rest = value.strip_suffix('>')?;
    let (name, number) = rest.rsplit_once('<')?;
    let number = number.trim();
    if !is_number(number) {
        return None;
    }
    let name = name.trim();
    let name = match name.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => name,
    };
    if name
        .chars()
        .any(|c| matches!(c, '"' | '\\' | '<' | '>') || c.is_control())
    {
        return None;
    }
    Some(CallerId {
        display: (!name.is_empty()).then(|| name.to_string()),
        number: number.to_string(),
    })
}
