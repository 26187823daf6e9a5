//! Tests of sip.conf as a whole: keys, errors with their lines, lookups, diff.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proto::Forwarding;

use super::*;

fn opts_with(country: &str, city: &str) -> Options {
    Options {
        country: country.to_string(),
        city: city.to_string(),
        default_realm: "pbx.test".to_string(),
        file_name: "sip.conf".to_string(),
    }
}

fn opts() -> Options {
    opts_with("7", "495")
}

#[track_caller]
fn ok(text: &str) -> Config {
    Config::parse(text, &opts()).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

/// The displayed errors, one string per line.
#[track_caller]
fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, &opts()) {
        Ok(c) => panic!("expected errors, parsed {} clients", c.clients.len()),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

/// The only displayed error.
#[track_caller]
fn error(text: &str) -> String {
    let mut e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.remove(0)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn names(clients: &[&Client]) -> Vec<String> {
    clients.iter().map(|c| c.name.clone()).collect()
}

/// One client `[c]` with a secret and the given extra lines.
fn client_with(lines: &str) -> Config {
    ok(&format!("[c]\nsecret=s\n{lines}\n"))
}

// ---------------------------------------------------------------- example

const EXAMPLE: &str = include_str!("../../../sip.conf.example");

#[test]
fn example_clients_in_order() {
    let c = ok(EXAMPLE);
    let names: Vec<&str> = c.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "foo",
            "bar",
            "siphone1",
            "siphone2",
            "GATE1",
            "GATE2",
            "MEDIAGATE"
        ]
    );
    assert_eq!(c.general, General::defaults(&opts()));
    assert_eq!(c.general.realm, "pbx.test");
}

#[test]
fn example_roles_and_accountcodes() {
    let c = ok(EXAMPLE);
    let expect = [
        ("foo", Role::User, "FOOBAR"),
        ("bar", Role::User, "FOOBAR"),
        ("siphone1", Role::User, "HOME"),
        ("siphone2", Role::User, "HOME"),
        ("GATE1", Role::Gateway, "gateways"),
        ("GATE2", Role::Gateway, "gateways"),
        ("MEDIAGATE", Role::Mediagate, "mediagates"),
    ];
    for (name, role, acc) in expect {
        let client = c.client(name).unwrap();
        assert_eq!(client.role, role, "{name}");
        assert_eq!(client.accountcode.as_deref(), Some(acc), "{name}");
    }
}

#[test]
fn example_numbers() {
    let c = ok(EXAMPLE);
    let foo = c.client("foo").unwrap();
    assert_eq!(foo.exten.short.as_deref(), Some("1001"));
    assert_eq!(foo.exten.long, None);
    assert!(foo.exten.hunt.is_empty());
    assert_eq!(foo.exten.forward, Forwarding::None);

    let bar = c.client("bar").unwrap();
    assert_eq!(bar.exten.short.as_deref(), Some("1002"));
    assert_eq!(bar.exten.long, None);

    let s1 = c.client("siphone1").unwrap();
    assert_eq!(s1.exten.short.as_deref(), Some("1001"));
    assert_eq!(s1.exten.hunt, vec![2]);
    assert_eq!(names(&c.hunt_list(s1)), ["siphone2"]);

    let s2 = c.client("siphone2").unwrap();
    assert_eq!(s2.exten.long.as_deref(), Some("4999876543"));
    assert_eq!(s2.long_normalised(), Some("74999876543"));
    assert_eq!(s2.exten.short.as_deref(), Some("1002"));
    assert_eq!(s2.exten.forward, Forwarding::always("4991234567"));
    assert!(s2.exten.hunt.is_empty());

    assert_eq!(c.by_long("84999876543").unwrap().name, "siphone2");
    assert_eq!(c.by_long("4999876543").unwrap().name, "siphone2");
    assert_eq!(c.by_short("FOOBAR", "1001").unwrap().name, "foo");
    assert_eq!(c.by_short("HOME", "1001").unwrap().name, "siphone1");
    assert_eq!(c.by_short("HOME", "1002").unwrap().name, "siphone2");
    assert_eq!(c.by_short("FOOBAR", "1002").unwrap().name, "bar");
}

#[test]
fn example_hosts_and_prefixes() {
    let c = ok(EXAMPLE);
    let host = |name: &str| c.client(name).unwrap().host;
    assert_eq!(host("foo"), None);
    assert_eq!(host("siphone1"), None);
    assert_eq!(host("bar").unwrap().socket_addr(), sa("192.168.1.129:5060"));
    assert_eq!(
        host("GATE1").unwrap().socket_addr(),
        sa("192.168.1.200:5060")
    );
    assert_eq!(
        host("GATE2").unwrap().socket_addr(),
        sa("192.168.1.201:5060")
    );
    assert_eq!(
        host("MEDIAGATE").unwrap().socket_addr(),
        sa("192.168.1.100:5070")
    );
    assert_eq!(host("MEDIAGATE").unwrap().port, Some(5070));

    let prefix = |name: &str| c.client(name).unwrap().prefix.clone();
    assert_eq!(prefix("GATE1").as_deref(), Some("9995999"));
    assert_eq!(prefix("GATE2").as_deref(), Some("9"));
    assert_eq!(prefix("MEDIAGATE"), None);
    assert_eq!(prefix("foo"), None);
    assert_eq!(c.client("GATE1").unwrap().exten, Exten::default());

    assert_eq!(names(&c.gateways()), ["GATE1", "GATE2"]);
    assert_eq!(names(&c.mediagates()), ["MEDIAGATE"]);
    assert_eq!(c.by_source(sa("192.168.1.200:5060")).unwrap().name, "GATE1");
    assert_eq!(
        c.by_source(sa("192.168.1.100:5070")).unwrap().name,
        "MEDIAGATE"
    );
    assert!(c.by_source(sa("192.168.1.100:5060")).is_none());
}

#[test]
fn example_secrets_permits_dialplans() {
    let c = ok(EXAMPLE);
    let get = |name: &str| c.client(name).unwrap();
    assert_eq!(get("foo").secret.as_deref(), Some("abc"));
    assert_eq!(get("bar").secret.as_deref(), Some("cba"));
    assert_eq!(get("siphone1").secret.as_deref(), Some("12345"));
    assert_eq!(get("siphone2").secret.as_deref(), Some("4321"));
    assert_eq!(get("GATE1").secret, None);

    assert_eq!(
        get("foo").permit,
        vec![net("192.168.0.0/16"), net("10.0.0.0/8")]
    );
    assert_eq!(get("bar").permit, vec![net("192.168.1.129/32")]);
    assert!(get("siphone1").permit.is_empty());
    assert!(get("foo").permits(ip("10.1.2.3")));
    assert!(get("foo").permits(ip("192.168.200.1")));
    assert!(!get("foo").permits(ip("172.16.0.1")));
    assert!(get("bar").permits(ip("192.168.1.129")));
    assert!(!get("bar").permits(ip("192.168.1.130")));
    assert!(get("siphone1").permits(ip("8.8.8.8")));

    assert_eq!(get("foo").dialplan_src, r"^7\d+$");
    assert_eq!(get("foo").dialplan.as_str(), r"^7\d+$");
    assert_eq!(get("bar").dialplan_src, ".+");
    assert_eq!(get("siphone1").dialplan_src, ".+");
    assert_eq!(get("siphone2").dialplan_src, ".+");
    assert!(get("foo").dialplan.is_match("74951234567"));
    assert!(!get("foo").dialplan.is_match("44123456789"));
    assert_eq!(get("foo").callerid, None);
}

// ------------------------------------------------------- error reporting

#[test]
fn display_format() {
    let e = ConfigErrors {
        file_name: "x.conf".to_string(),
        errors: vec![
            ConfigError {
                line: 0,
                message: "whole file".to_string(),
            },
            ConfigError {
                line: 7,
                message: "a line".to_string(),
            },
        ],
    };
    assert_eq!(e.to_string(), "x.conf: whole file\nx.conf:7: a line");
}

#[test]
fn file_name_comes_from_options() {
    let mut o = opts();
    o.file_name = "/etc/sipd/other.conf".to_string();
    let e = Config::parse("[a]\npermt=10/8\n", &o).unwrap_err();
    assert_eq!(e.file_name, "/etc/sipd/other.conf");
    assert_eq!(
        e.to_string(),
        "/etc/sipd/other.conf:2: unknown key 'permt'\n/etc/sipd/other.conf:1: client 'a' needs secret or host"
            .lines()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn unknown_key_permt() {
    let text = "; sip.conf\n\n[foo]\nsecret=abc\npermt=10/8\nexten=1001\naccountcode=A\n";
    assert_eq!(error(text), "sip.conf:5: unknown key 'permt'");
}

#[test]
fn unknown_keys_are_case_sensitive() {
    assert_eq!(
        error("[a]\nsecret=x\nSecret=y\n"),
        "sip.conf:3: unknown key 'Secret'"
    );
    assert_eq!(
        error("[a]\nsecret=x\nfoo bar=1\n"),
        "sip.conf:3: unknown key 'foo bar'"
    );
}

#[test]
fn key_outside_section() {
    assert_eq!(
        errors("; top\nsecret=abc\nhost=1.2.3.4\n[a]\nsecret=x\n"),
        [
            "sip.conf:2: key 'secret' outside any section",
            "sip.conf:3: key 'host' outside any section",
        ]
    );
}

#[test]
fn line_neither_header_nor_pair() {
    assert_eq!(
        error("[a]\nsecret=x\nexten 1001\n"),
        "sip.conf:3: expected [section] or key=value, got 'exten 1001'"
    );
    assert_eq!(
        error("[a]\nsecret=x\n[b\n"),
        "sip.conf:3: bad section header '[b': expected [name]"
    );
    assert_eq!(
        error("[a]\nsecret=x\n= 5\n"),
        "sip.conf:3: missing key before '=' in '= 5'"
    );
}

#[test]
fn duplicate_section() {
    let text = "[a]\nsecret=x\n\n[b]\nsecret=y\n[a]\nsecret=z\n";
    assert_eq!(
        error(text),
        "sip.conf:6: duplicate section [a] (first at line 1)"
    );
}

#[test]
fn duplicate_section_keys_still_checked() {
    let text = "[a]\nsecret=x\n[a]\nscret=y\n";
    assert_eq!(
        errors(text),
        [
            "sip.conf:3: duplicate section [a] (first at line 1)",
            "sip.conf:3: client 'a' needs secret or host",
            "sip.conf:4: unknown key 'scret'",
        ]
    );
}

#[test]
fn duplicate_key() {
    assert_eq!(
        error("[a]\nsecret=x\nexten=1\naccountcode=G\nsecret=y\n"),
        "sip.conf:5: duplicate key 'secret' (first at line 2)"
    );
    // the first value is kept for the other checks
    assert_eq!(
        error("[a]\nhost=1.2.3.4\nhost=bad\n"),
        "sip.conf:3: duplicate key 'host' (first at line 2)"
    );
}

#[test]
fn permit_and_acl_are_one_key() {
    assert_eq!(
        error("[a]\nsecret=x\npermit=10/8\nacl=192.168/16\n"),
        "sip.conf:4: duplicate key 'acl' (same as 'permit' at line 3)"
    );
    assert_eq!(
        error("[a]\nsecret=x\nacl=10/8\nacl=192.168/16\n"),
        "sip.conf:4: duplicate key 'acl' (first at line 3)"
    );
    let c = client_with("acl=10/8");
    assert_eq!(c.clients[0].permit, vec![net("10.0.0.0/8")]);
}

#[test]
fn empty_values_are_errors() {
    for key in [
        "accountcode",
        "permit",
        "acl",
        "host",
        "exten",
        "callerid",
        "dialplan",
        "context",
    ] {
        assert_eq!(
            error(&format!("[a]\nsecret=x\n{key}=\n")),
            format!("sip.conf:3: empty value for key '{key}'")
        );
    }
    assert_eq!(
        errors("[a]\nsecret= ; none\n"),
        [
            "sip.conf:1: client 'a' needs secret or host",
            "sip.conf:2: empty value for key 'secret'",
        ]
    );
}

#[test]
fn section_names() {
    assert_eq!(
        error("[]\nsecret=x\n"),
        "sip.conf:1: empty section name '[]'"
    );
    assert_eq!(
        error("[  ]\nsecret=x\n"),
        "sip.conf:1: empty section name '[]'"
    );
    assert_eq!(
        error("[a b]\nsecret=x\n"),
        "sip.conf:1: bad client name 'a b': use ASCII letters, digits and -_.!~*'()&=+$,;?/ (a SIP user name)"
    );
    assert!(error("[a@b]\nsecret=x\n").starts_with("sip.conf:1: bad client name 'a@b'"));
    assert!(error("[a:b]\nsecret=x\n").starts_with("sip.conf:1: bad client name 'a:b'"));
    assert_eq!(
        error("[*72]\nsecret=x\n"),
        "sip.conf:1: bad client name '*72': must not start with '*' (feature codes do)"
    );
    // names are trimmed, case-sensitive and may use SIP user characters
    let c = ok("[ Foo ]\nsecret=x\n[foo]\nsecret=y\n[a.b-c_d+e]\nsecret=z\n[1001]\nsecret=w\n");
    assert_eq!(
        c.clients
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["Foo", "foo", "a.b-c_d+e", "1001"]
    );
    assert_eq!(c.client("Foo").unwrap().secret.as_deref(), Some("x"));
    assert!(c.client("FOO").is_none());
}

#[test]
fn several_errors_at_once_sorted_by_line() {
    let text = "\
[a]
secret=x
permt=10/8
host=pbx.example.com
[b]
context=nowhere
dialplan=(
[a]
secret=y
exten=1(5)
";
    assert_eq!(
        errors(text),
        [
            "sip.conf:3: unknown key 'permt'",
            "sip.conf:4: bad host 'pbx.example.com': expected IP[:port], IPv6 as [IP]:port or a bare IPv6 address (DNS names are not supported)",
            "sip.conf:5: client 'b' needs secret or host",
            "sip.conf:6: unknown context 'nowhere' (expected em, local, domestic or international)",
            "sip.conf:7: bad dialplan regex '(': unclosed group",
            "sip.conf:8: duplicate section [a] (first at line 1)",
            "sip.conf:10: bad exten '1(5)': short number '1' needs an accountcode (short numbers are dialed within a group)",
        ]
    );
}

// ----------------------------------------------------------- text format

#[test]
fn comments_inline_and_escaped() {
    let text = "\
; comment line
   ; indented comment
[a] ; the client a
secret=ab\\;cd ; the secret is ab;cd
exten=9995999 ; a long number
accountcode=A;no space before the comment
callerid=\"Semi\\;colon\" <123> ; display has a ;
";
    let c = ok(text);
    let a = c.client("a").unwrap();
    assert_eq!(a.secret.as_deref(), Some("ab;cd"));
    assert_eq!(a.exten.long.as_deref(), Some("9995999"));
    assert_eq!(a.accountcode.as_deref(), Some("A"));
    assert_eq!(
        a.callerid,
        Some(CallerId {
            display: Some("Semi;colon".to_string()),
            number: "123".to_string()
        })
    );
}

#[test]
fn backslashes_other_than_escape_are_kept() {
    let c = client_with(r"dialplan=^7\d{10}$ ; eleven digits");
    assert_eq!(c.clients[0].dialplan_src, r"^7\d{10}$");
    assert!(c.clients[0].dialplan.is_match("74951234567"));
}

#[test]
fn whitespace_is_trimmed() {
    let text =
        "  [ a ]  \n\t secret \t=\t s e c r e t \t\n  exten =  1001  \naccountcode\t=\tG\n\n   \n";
    let c = ok(text);
    let a = c.client("a").unwrap();
    assert_eq!(a.line, 1);
    assert_eq!(a.secret.as_deref(), Some("s e c r e t"));
    assert_eq!(a.exten.short.as_deref(), Some("1001"));
    assert_eq!(a.accountcode.as_deref(), Some("G"));
}

#[test]
fn crlf_line_endings() {
    let text = "; x\r\n[a]\r\nsecret=abc\r\nexten=1001\r\naccountcode=G\r\n\r\n[b]\r\npermt=1\r\n";
    let e = Config::parse(text, &opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sip.conf:7: client 'b' needs secret or host\nsip.conf:8: unknown key 'permt'"
    );
    let c = ok(&text.replace("permt=1", "secret=x"));
    assert_eq!(c.client("a").unwrap().secret.as_deref(), Some("abc"));
    assert_eq!(c.client("a").unwrap().exten.short.as_deref(), Some("1001"));
    assert_eq!(c.client("b").unwrap().line, 7);
}

#[test]
fn values_may_contain_equals_and_quotes() {
    let c = client_with("accountcode=a=b");
    assert_eq!(c.clients[0].accountcode.as_deref(), Some("a=b"));
    let c = ok("[c]\nsecret=\"quoted\"\n");
    assert_eq!(c.clients[0].secret.as_deref(), Some("\"quoted\""));
}

#[test]
fn empty_text_and_empty_config() {
    let c = ok("");
    assert!(c.clients.is_empty());
    assert_eq!(c.general, General::defaults(&opts()));
    let c = ok("; only comments\n\n");
    assert!(c.clients.is_empty());

    let e = Config::empty(&opts());
    assert!(e.clients.is_empty());
    assert_eq!(e.general.realm, "pbx.test");
    assert_eq!(
        (
            e.general.noanswer,
            e.general.min_expires,
            e.general.max_expires
        ),
        (20, 60, 3600)
    );
    assert_eq!((e.country.as_str(), e.city.as_str()), ("7", "495"));
    assert!(e.client("foo").is_none());
    assert!(e.by_long("4999876543").is_none());
    assert!(e.by_source(sa("1.2.3.4:5060")).is_none());
    assert!(e.lookup("1001").is_empty());
    assert!(e.gateways().is_empty());
}

#[test]
fn bad_country_or_city_code() {
    let e = Config::parse("", &opts_with("+7", "495")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sip.conf: bad country code '+7': digits expected"
    );
    let e = Config::parse("", &opts_with("", "495")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sip.conf: bad country code '': digits expected"
    );
    let e = Config::parse("", &opts_with("7", "49x")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sip.conf: bad city code '49x': digits expected"
    );
    assert!(Config::parse("", &opts_with("7", "")).is_ok());
}

// ---------------------------------------------------------------- general

#[test]
fn general_values() {
    let c =
        ok("[general]\nrealm=sip.example.org\nnoanswer=30\nmin_expires=120\nmax_expires=7200\n");
    assert_eq!(
        c.general,
        General {
            realm: "sip.example.org".to_string(),
            noanswer: 30,
            min_expires: 120,
            max_expires: 7200,
            digest: vec![crate::auth::Algorithm::Md5],
            call_limit: 20,
            max_contacts: 5,
            qualify: 25,
            check_digest_uri: true,
            cdr_keep_days: 90,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            ws_origins: Vec::new(),
            flood: (100, 2),
            ban: 300,
            security_log: None,
            metrics: None,
            media: crate::config::Media::Auto,
            rtp_ports: (20000, 30000),
            rtp_address: None,
            media_timeout: 60,
        }
    );
    assert!(c.clients.is_empty());
    assert!(c.client("general").is_none());
}

#[test]
fn media_keys() {
    use crate::config::Media;
    let c = ok(
        "[general]\nmedia=relay\nrtp_ports=30001-30010\nrtp_address=::1\nmedia_timeout=0\n\
        [a]\nsecret=x\nmedia=direct\n[b]\nsecret=x\n",
    );
    assert_eq!(c.general.media, Media::Relay);
    assert_eq!(c.general.rtp_ports, (30001, 30010));
    assert_eq!(c.general.rtp_address, Some("::1".parse().unwrap()));
    assert_eq!(c.general.media_timeout, 0);
    assert_eq!(c.client("a").unwrap().media(&c.general), Media::Direct);
    assert_eq!(c.client("b").unwrap().media(&c.general), Media::Relay);
    for (text, want) in [
        ("[general]\nmedia=nat\n", "bad media 'nat'"),
        ("[general]\nrtp_ports=2000\n", "bad rtp_ports"),
        ("[general]\nrtp_ports=30000-20000\n", "bad rtp_ports"),
        ("[general]\nrtp_ports=80-2000\n", "bad rtp_ports"),
        ("[general]\nrtp_ports=20001-20003\n", "at least 4 ports"),
        ("[general]\nrtp_address=0.0.0.0\n", "bad rtp_address"),
        ("[general]\nrtp_address=example.com\n", "bad rtp_address"),
        ("[general]\nmedia_timeout=-1\n", "media_timeout"),
        ("[a]\nsecret=x\nmedia=yes\n", "bad media 'yes'"),
    ] {
        let e = Config::parse(text, &opts_with("7", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn max_contacts_and_qualify_general_and_per_client() {
    let c = ok("[general]\nmax_contacts=3\nqualify=10\n[a]\nsecret=x\n[b]\nsecret=x\nmax_contacts=1\nqualify=0\n");
    let a = c.client("a").unwrap();
    let b = c.client("b").unwrap();
    assert_eq!((a.max_contacts(&c.general), a.qualify(&c.general)), (3, 10));
    assert_eq!((b.max_contacts(&c.general), b.qualify(&c.general)), (1, 0));
    let d = ok("[a]\nsecret=x\n");
    let a = d.client("a").unwrap();
    assert_eq!((a.max_contacts(&d.general), a.qualify(&d.general)), (5, 25));
    for bad in ["0", "101", "-1", "x", "+3"] {
        let e = error(&format!("[general]\nmax_contacts={bad}\n"));
        assert!(e.contains("bad max_contacts"), "{e}");
        let e = error(&format!("[a]\nsecret=x\nmax_contacts={bad}\n"));
        assert!(e.contains("bad max_contacts"), "{e}");
    }
    for bad in ["3601", "-1", "x", "1.5"] {
        let e = error(&format!("[general]\nqualify={bad}\n"));
        assert!(e.contains("bad qualify"), "{e}");
        let e = error(&format!("[a]\nsecret=x\nqualify={bad}\n"));
        assert!(e.contains("bad qualify"), "{e}");
    }
}

#[test]
fn qualify_default_by_role() {
    // Gateways and mediagates: 30 s unless their section says otherwise,
    // whatever [general] qualify is (it is the phones' NAT keep-alive).
    for general in ["", "[general]\nqualify=0\n", "[general]\nqualify=10\n"] {
        let c = ok(&format!(
            "{general}[u]\nsecret=x\n[gw]\naccountcode=gateways\nhost=10.0.0.1\nexten=9\n\
             [gw2]\naccountcode=gateways\nhost=10.0.0.2\nqualify=5\n\
             [gw3]\naccountcode=gateways\nhost=10.0.0.3\nqualify=0\n\
             [mg]\naccountcode=mediagates\nhost=10.0.0.4\n"
        ));
        let q = |n: &str| c.client(n).unwrap().qualify(&c.general);
        assert_eq!(q("u"), c.general.qualify, "{general}");
        assert_eq!(
            (q("gw"), q("gw2"), q("gw3"), q("mg")),
            (GATEWAY_QUALIFY, 5, 0, 30),
            "{general}"
        );
    }
}

#[test]
fn call_limits() {
    let c = ok("[general]\ncall_limit=5\n[a]\nsecret=x\n[b]\nsecret=x\ncall_limit=0\n\
                [gw]\naccountcode=gateways\nhost=10.0.0.1\n[gw2]\naccountcode=gateways\nhost=10.0.0.2\ncall_limit=7\n");
    let limit = |n: &str| c.client(n).unwrap().call_limit(&c.general);
    assert_eq!(limit("a"), 5);
    assert_eq!(limit("b"), 0);
    assert_eq!(limit("gw"), 50);
    assert_eq!(limit("gw2"), 7);
    let d = ok("[a]\nsecret=x\n");
    assert_eq!(d.client("a").unwrap().call_limit(&d.general), 20);
    for bad in ["-1", "x", "100001", "+3", "2 calls"] {
        let e = error(&format!("[general]\ncall_limit={bad}\n"));
        assert!(e.contains("bad call_limit"), "{e}");
        let e = error(&format!("[a]\nsecret=x\ncall_limit={bad}\n"));
        assert!(e.contains("bad call_limit"), "{e}");
    }
}

#[test]
fn general_partial_and_anywhere() {
    let c = ok("[a]\nsecret=x\n[general]\nnoanswer=5\n[b]\nsecret=y\n");
    assert_eq!(c.general.noanswer, 5);
    assert_eq!(c.general.realm, "pbx.test");
    assert_eq!(c.general.min_expires, 60);
    assert_eq!(c.general.max_expires, 3600);
    assert_eq!(c.clients.len(), 2);
    // bounds are inclusive
    let c = ok("[general]\nnoanswer=600\nmin_expires=1\nmax_expires=604800\n");
    assert_eq!((c.general.noanswer, c.general.min_expires), (600, 1));
    assert_eq!(c.general.max_expires, 604_800);
    let c = ok("[general]\nnoanswer=1\nmin_expires=3600\n");
    assert_eq!(c.general.min_expires, 3600);
}

#[test]
fn cdr_keep_days_default_bounds_and_never() {
    assert_eq!(ok("").general.cdr_keep_days, 90);
    assert_eq!(ok("[general]\ncdr_keep_days=7\n").general.cdr_keep_days, 7);
    assert_eq!(ok("[general]\ncdr_keep_days=0\n").general.cdr_keep_days, 0);
    assert_eq!(
        ok("[general]\ncdr_keep_days=36500\n").general.cdr_keep_days,
        36_500
    );
}

#[test]
fn general_unknown_and_duplicate_keys() {
    assert_eq!(
        error("[general]\nrealm=x\nsecret=y\n"),
        "sip.conf:3: unknown key 'secret' in [general]"
    );
    assert_eq!(
        error("[general]\nnoanswer=10\nnoanswer=20\n"),
        "sip.conf:3: duplicate key 'noanswer' (first at line 2)"
    );
    assert_eq!(
        error("[general]\nrealm=\n"),
        "sip.conf:2: empty value for key 'realm'"
    );
    assert_eq!(
        error("[general]\nrealm=a\n[general]\nrealm=b\n"),
        "sip.conf:3: duplicate section [general] (first at line 1)"
    );
}

#[test]
fn general_bad_numbers() {
    let cases = [
        (
            "noanswer=abc",
            "bad noanswer 'abc': expected a whole number of seconds",
        ),
        (
            "noanswer=-5",
            "bad noanswer '-5': expected a whole number of seconds",
        ),
        (
            "noanswer=2.5",
            "bad noanswer '2.5': expected a whole number of seconds",
        ),
        ("noanswer=0", "noanswer 0 is out of range (1-600)"),
        ("noanswer=601", "noanswer 601 is out of range (1-600)"),
        (
            "noanswer=99999999999",
            "noanswer 99999999999 is out of range (1-600)",
        ),
        ("min_expires=0", "min_expires 0 is out of range (1-86400)"),
        (
            "min_expires=x",
            "bad min_expires 'x': expected a whole number of seconds",
        ),
        ("max_expires=0", "max_expires 0 is out of range (1-604800)"),
        (
            "max_expires=604801",
            "max_expires 604801 is out of range (1-604800)",
        ),
        (
            "cdr_keep_days=-1",
            "bad cdr_keep_days '-1': expected a whole number of days",
        ),
        (
            "cdr_keep_days=1.5",
            "bad cdr_keep_days '1.5': expected a whole number of days",
        ),
        (
            "cdr_keep_days=36501",
            "cdr_keep_days 36501 is out of range (0-36500)",
        ),
        (
            "cdr_keep_days=99999999999",
            "cdr_keep_days 99999999999 is out of range (0-36500)",
        ),
    ];
    for (line, message) in cases {
        assert_eq!(
            error(&format!("[general]\n{line}\n")),
            format!("sip.conf:2: {message}"),
            "{line}"
        );
    }
}

#[test]
fn general_min_greater_than_max() {
    assert_eq!(
        error("[general]\nmax_expires=100\nmin_expires=200\n"),
        "sip.conf:3: min_expires (200) is greater than max_expires (100)"
    );
    assert_eq!(
        error("[general]\nmin_expires=200\nmax_expires=100\n"),
        "sip.conf:3: min_expires (200) is greater than max_expires (100)"
    );
    // against the default of the other
    assert_eq!(
        error("[general]\nrealm=r\nmin_expires=7200\n"),
        "sip.conf:3: min_expires (7200) is greater than max_expires (3600)"
    );
    assert_eq!(
        error("[general]\nmax_expires=30\n"),
        "sip.conf:2: min_expires (60) is greater than max_expires (30)"
    );
    // an invalid value is not compared again
    assert_eq!(
        error("[general]\nmin_expires=200\nmax_expires=0\n"),
        "sip.conf:3: max_expires 0 is out of range (1-604800)"
    );
    // equal is fine
    let c = ok("[general]\nmin_expires=300\nmax_expires=300\n");
    assert_eq!((c.general.min_expires, c.general.max_expires), (300, 300));
}

#[test]
fn general_realm() {
    assert_eq!(
        error("[general]\nrealm=a\"b\n"),
        "sip.conf:2: bad realm 'a\"b': must not contain '\"', '\\' or control characters"
    );
    assert!(error("[general]\nrealm=a\\b\n").starts_with("sip.conf:2: bad realm"));
    let c = ok("[general]\nrealm=My PBX\n");
    assert_eq!(c.general.realm, "My PBX");
    let mut o = opts();
    o.default_realm = "host.lan".to_string();
    assert_eq!(Config::parse("", &o).unwrap().general.realm, "host.lan");
}

#[test]
fn general_names_are_case_sensitive() {
    // [General] is a client like any other
    assert_eq!(
        errors("[General]\nrealm=x\n"),
        [
            "sip.conf:1: client 'General' needs secret or host",
            "sip.conf:2: unknown key 'realm'",
        ]
    );
}

// ------------------------------------------------------------ client keys

#[test]
fn accountcode_roles() {
    let c = ok("[u]\nsecret=x\naccountcode=office\n[n]\nsecret=x\n[g]\nhost=1.1.1.1\naccountcode=gateways\n[m]\nhost=1.1.1.2\naccountcode=mediagates\n");
    assert_eq!(c.client("u").unwrap().role, Role::User);
    assert_eq!(
        c.client("u").unwrap().accountcode.as_deref(),
        Some("office")
    );
    assert_eq!(c.client("n").unwrap().role, Role::User);
    assert_eq!(c.client("n").unwrap().accountcode, None);
    assert_eq!(c.client("g").unwrap().role, Role::Gateway);
    assert_eq!(c.client("m").unwrap().role, Role::Mediagate);
}

#[test]
fn accountcode_special_values_are_lowercase() {
    assert_eq!(
        error("[g]\nhost=1.1.1.1\naccountcode=Gateways\n"),
        "sip.conf:3: accountcode 'Gateways': write 'gateways' in lowercase for that role"
    );
    assert_eq!(
        error("[g]\nhost=1.1.1.1\naccountcode=MEDIAGATES\n"),
        "sip.conf:3: accountcode 'MEDIAGATES': write 'mediagates' in lowercase for that role"
    );
    // other accountcodes are case-sensitive group ids
    let c =
        ok("[a]\nsecret=x\naccountcode=Home\nexten=1\n[b]\nsecret=x\naccountcode=HOME\nexten=1\n");
    assert_eq!(c.by_short("Home", "1").unwrap().name, "a");
    assert_eq!(c.by_short("HOME", "1").unwrap().name, "b");
    assert!(c.by_short("home", "1").is_none());
}

#[test]
fn secret_or_host_required() {
    assert_eq!(
        error("[ok]\nsecret=x\n\n[lonely]\naccountcode=A\nexten=1001\n"),
        "sip.conf:4: client 'lonely' needs secret or host"
    );
    assert_eq!(
        error("[empty]\n"),
        "sip.conf:1: client 'empty' needs secret or host"
    );
    let c = ok("[h]\nhost=10.0.0.1\n[s]\nsecret=x\n[both]\nsecret=y\nhost=10.0.0.2\n");
    assert_eq!(c.clients.len(), 3);
    // a bad host is reported once, not also as "needs secret or host"
    assert_eq!(
        error("[h]\nhost=nowhere\n"),
        "sip.conf:2: bad host 'nowhere': expected IP[:port], IPv6 as [IP]:port or a bare IPv6 address (DNS names are not supported)"
    );
}

#[test]
fn secret_keeps_inner_characters() {
    let c = ok("[a]\nsecret=  p@ss w=rd#1  \n");
    assert_eq!(c.clients[0].secret.as_deref(), Some("p@ss w=rd#1"));
}

// ------------------------------------------------------------------ permit

#[track_caller]
fn permit(value: &str) -> Vec<IpNet> {
    client_with(&format!("permit={value}")).clients[0]
        .permit
        .clone()
}

#[test]
fn permit_forms() {
    assert_eq!(permit("192.168/16"), vec![net("192.168.0.0/16")]);
    assert_eq!(permit("10/8"), vec![net("10.0.0.0/8")]);
    assert_eq!(permit("172.16.5/24"), vec![net("172.16.5.0/24")]);
    assert_eq!(permit("10.1/16"), vec![net("10.1.0.0/16")]);
    assert_eq!(permit("1.2.3.4"), vec![net("1.2.3.4/32")]);
    assert_eq!(permit("1.2.3.4/32"), vec![net("1.2.3.4/32")]);
    assert_eq!(permit("0/0"), vec![net("0.0.0.0/0")]);
    assert_eq!(permit("::1"), vec![net("::1/128")]);
    assert_eq!(permit("2001:db8::/32"), vec![net("2001:db8::/32")]);
    assert_eq!(permit("::/0"), vec![net("::/0")]);
    assert_eq!(
        permit("192.168.0.0/255.255.0.0"),
        vec![net("192.168.0.0/16")]
    );
    assert_eq!(permit("10.0.0.0/0.0.0.0"), vec![net("0.0.0.0/0")]);
    assert_eq!(
        permit(" 10/8 , 192.168.1.0/24,::1 "),
        vec![net("10.0.0.0/8"), net("192.168.1.0/24"), net("::1/128")]
    );
}

#[test]
fn permit_host_bits_are_truncated() {
    assert_eq!(permit("192.168.1.5/16"), vec![net("192.168.0.0/16")]);
    assert_eq!(permit("10.9.8.7/8"), vec![net("10.0.0.0/8")]);
    assert_eq!(permit("2001:db8::1/32"), vec![net("2001:db8::/32")]);
}

#[test]
fn permit_errors() {
    let cases = [
        ("10.0.0.256/8", "bad network '10.0.0.256/8' in permit: '10.0.0.256' is not an IPv4 address"),
        ("10/33", "bad network '10/33' in permit: prefix length '33' must be 0-32"),
        ("10/", "bad network '10/' in permit: prefix length '' must be 0-32"),
        ("10/+8", "bad network '10/+8' in permit: prefix length '+8' must be 0-32"),
        ("::1/129", "bad network '::1/129' in permit: prefix length '129' must be 0-128"),
        ("192.168", "bad network '192.168' in permit: '192.168' is not a complete IPv4 address (an abbreviated network needs a /prefix)"),
        ("abc", "bad network 'abc' in permit: 'abc' is not an IPv4 address"),
        ("host.example.com/8", "bad network 'host.example.com/8' in permit: 'host.example.com' is not an IPv4 address"),
        ("1.2.3.4.5/8", "bad network '1.2.3.4.5/8' in permit: '1.2.3.4.5' is not an IPv4 address"),
        ("010.0.0.0/8", "bad network '010.0.0.0/8' in permit: '010.0.0.0' is not an IPv4 address"),
        ("1..2/16", "bad network '1..2/16' in permit: '1..2' is not an IPv4 address"),
        ("::g/64", "bad network '::g/64' in permit: '::g' is not an IPv6 address"),
        ("1.2.3.4/255.0.255.0", "bad network '1.2.3.4/255.0.255.0' in permit: mask '255.0.255.0' is not contiguous"),
        ("1.2.3.4/255.255", "bad network '1.2.3.4/255.255' in permit: bad mask '255.255'"),
        ("10/8,", "empty network in permit '10/8,'"),
        ("10/8,,192.168/16", "empty network in permit '10/8,,192.168/16'"),
        ("10/8,bad", "bad network 'bad' in permit: 'bad' is not an IPv4 address"),
    ];
    for (value, message) in cases {
        assert_eq!(
            error(&format!("[c]\nsecret=s\npermit={value}\n")),
            format!("sip.conf:3: {message}"),
            "{value}"
        );
    }
}

#[test]
fn permits_addresses() {
    let c = client_with("permit=10/8,2001:db8::/32");
    let client = &c.clients[0];
    assert!(client.permits(ip("10.0.0.1")));
    assert!(client.permits(ip("10.255.255.255")));
    assert!(!client.permits(ip("11.0.0.0")));
    assert!(client.permits(ip("2001:db8::5")));
    assert!(!client.permits(ip("2001:db9::5")));
    // IPv4-mapped IPv6 checked as IPv4
    assert!(client.permits(ip("::ffff:10.1.2.3")));
    assert!(!client.permits(ip("::ffff:11.1.2.3")));
    // an empty permit allows everything
    let any = client_with("");
    assert!(any.clients[0].permits(ip("203.0.113.9")));
    assert!(any.clients[0].permits(ip("::1")));
}

// -------------------------------------------------------------------- host

#[track_caller]
fn host(value: &str) -> HostAddr {
    ok(&format!("[c]\nhost={value}\n")).clients[0].host.unwrap()
}

#[test]
fn host_forms() {
    assert_eq!(
        host("192.168.1.5"),
        HostAddr {
            ip: ip("192.168.1.5"),
            port: None
        }
    );
    assert_eq!(
        host("192.168.1.5:5070"),
        HostAddr {
            ip: ip("192.168.1.5"),
            port: Some(5070)
        }
    );
    assert_eq!(
        host("[::1]:5060"),
        HostAddr {
            ip: ip("::1"),
            port: Some(5060)
        }
    );
    assert_eq!(
        host("[2001:db8::1]"),
        HostAddr {
            ip: ip("2001:db8::1"),
            port: None
        }
    );
    assert_eq!(
        host("::1"),
        HostAddr {
            ip: ip("::1"),
            port: None
        }
    );
    assert_eq!(
        host("2001:db8::1"),
        HostAddr {
            ip: ip("2001:db8::1"),
            port: None
        }
    );
    assert_eq!(host("127.0.0.1:65535").port, Some(65535));
    // IPv4-mapped IPv6 is stored as IPv4
    assert_eq!(
        host("::ffff:1.2.3.4"),
        HostAddr {
            ip: ip("1.2.3.4"),
            port: None
        }
    );
    assert_eq!(
        host("[::ffff:1.2.3.4]:5080"),
        HostAddr {
            ip: ip("1.2.3.4"),
            port: Some(5080)
        }
    );
}

#[test]
fn host_socket_addr_and_display() {
    let h = HostAddr {
        ip: ip("10.0.0.1"),
        port: None,
    };
    assert_eq!(h.socket_addr(), sa("10.0.0.1:5060"));
    assert_eq!(h.to_string(), "10.0.0.1");
    let h = HostAddr {
        ip: ip("10.0.0.1"),
        port: Some(5070),
    };
    assert_eq!(h.socket_addr(), sa("10.0.0.1:5070"));
    assert_eq!(h.to_string(), "10.0.0.1:5070");
    let h = HostAddr {
        ip: ip("::1"),
        port: Some(5060),
    };
    assert_eq!(h.to_string(), "[::1]:5060");
    assert_eq!(h.socket_addr(), sa("[::1]:5060"));
    let h = HostAddr {
        ip: ip("::1"),
        port: None,
    };
    assert_eq!(h.to_string(), "::1");
}

#[test]
fn host_errors() {
    let generic = "expected IP[:port], IPv6 as [IP]:port or a bare IPv6 address (DNS names are not supported)";
    let cases = [
        ("pbx.example.com", generic.to_string()),
        ("pbx.example.com:5060", generic.to_string()),
        ("localhost", generic.to_string()),
        ("1.2.3", generic.to_string()),
        ("1.2.3.256", generic.to_string()),
        ("1.2.3.4:", "port '' must be 1-65535".to_string()),
        ("1.2.3.4:0", "port '0' must be 1-65535".to_string()),
        ("1.2.3.4:65536", "port '65536' must be 1-65535".to_string()),
        ("1.2.3.4:+80", "port '+80' must be 1-65535".to_string()),
        ("1.2.3.4:http", "port 'http' must be 1-65535".to_string()),
        ("[::1", generic.to_string()),
        ("[::1]5060", generic.to_string()),
        ("[1.2.3.4]:5060", generic.to_string()),
        ("[::1]:0", "port '0' must be 1-65535".to_string()),
        ("::1:5060:x", generic.to_string()),
        ("0.0.0.0", "not a unicast address".to_string()),
        ("[::]:5060", "not a unicast address".to_string()),
        ("224.0.0.1", "not a unicast address".to_string()),
        ("255.255.255.255:5060", "not a unicast address".to_string()),
        ("ff02::1", "not a unicast address".to_string()),
    ];
    for (value, why) in cases {
        assert_eq!(
            error(&format!("[c]\nsecret=s\nhost={value}\n")),
            format!("sip.conf:3: bad host '{value}': {why}"),
            "{value}"
        );
    }
}

#[test]
fn duplicate_hosts() {
    assert_eq!(
        error("[a]\nhost=10.0.0.1:5060\n[b]\nsecret=x\nhost=10.0.0.1:5060\n"),
        "sip.conf:5: host 10.0.0.1:5060 is already used by 'a' at line 2"
    );
    assert_eq!(
        error("[a]\nhost=10.0.0.1\n[b]\nhost=10.0.0.1\n"),
        "sip.conf:4: host 10.0.0.1 is already used by 'a' at line 2"
    );
    assert_eq!(
        error("[a]\nhost=1.2.3.4\n[b]\nhost=::ffff:1.2.3.4\n"),
        "sip.conf:4: host 1.2.3.4 is already used by 'a' at line 2"
    );
    // same IP: one without port and others with distinct ports is fine
    let c = ok("[a]\nhost=127.0.0.1\n[b]\nhost=127.0.0.1:5071\n[c]\nhost=127.0.0.1:5072\n");
    assert_eq!(c.clients.len(), 3);
}

// ------------------------------------------------------------------- exten

#[test]
fn exten_of_users() {
    let c = ok("\
[a]
secret=x
accountcode=G
exten=4951234567#11(2-3)~+44123
[b]
secret=x
accountcode=G
exten=#12
[c]
secret=x
accountcode=G
exten=123456
[d]
secret=x
exten=74991112233=100
");
    let a = c.client("a").unwrap();
    assert_eq!(
        a.exten,
        Exten {
            long: Some("4951234567".to_string()),
            short: Some("11".to_string()),
            hunt: vec![2, 3],
            forward: Forwarding::unavailable("+44123"),
        }
    );
    assert_eq!(a.long_normalised(), Some("74951234567"));
    assert_eq!(a.prefix, None);
    assert_eq!(names(&c.hunt_list(a)), ["b", "c"]);
    let b = c.client("b").unwrap();
    assert_eq!(
        (b.exten.long.as_deref(), b.exten.short.as_deref()),
        (None, Some("12"))
    );
    assert_eq!(b.long_normalised(), None);
    let cc = c.client("c").unwrap();
    assert_eq!(cc.exten.long.as_deref(), Some("123456"));
    assert_eq!(cc.long_normalised(), Some("7495123456"));
    // no accountcode: long numbers and forwarding are fine
    let d = c.client("d").unwrap();
    assert_eq!(d.long_normalised(), Some("74991112233"));
    assert_eq!(d.exten.forward, Forwarding::always("100"));
    assert!(c.hunt_list(d).is_empty());
}

#[test]
fn exten_syntax_errors() {
    let cases = [
        ("abc", "bad exten 'abc': 'abc' is not a number (1 to 32 digits, optionally after a leading '+')"),
        ("1001=", "bad exten '1001=': missing forwarding number after '='"),
        ("1001~x", "bad exten '1001~x': forwarding target 'x' is not a number (1 to 32 digits, optionally after a leading '+')"),
        ("1001=siphone2", "bad exten '1001=siphone2': forwarding target 'siphone2' is not a number (1 to 32 digits, optionally after a leading '+')"),
        ("123#", "bad exten '123#': missing short number after '#'"),
        ("1#2#3", "bad exten '1#2#3': more than one '#'"),
        ("1001(2", "bad exten '1001(2': missing ')' after the hunting list"),
        ("1001(0)", "bad exten '1001(0)': hunting positions start at 1"),
        ("1001(3-2)", "bad exten '1001(3-2)': bad range '3-2' in hunting list (start after end)"),
        ("1001(2,2)", "bad exten '1001(2,2)': position 2 listed twice in hunting list"),
        ("1001()", "bad exten '1001()': empty hunting list '()'"),
    ];
    for (value, message) in cases {
        assert_eq!(
            error(&format!("[c]\nsecret=s\naccountcode=G\nexten={value}\n")),
            format!("sip.conf:4: {message}"),
            "{value}"
        );
    }
}

#[test]
fn exten_needs_accountcode_for_short_and_hunting() {
    assert_eq!(
        error("[c]\nsecret=s\nexten=1001\n"),
        "sip.conf:3: bad exten '1001': short number '1001' needs an accountcode (short numbers are dialed within a group)"
    );
    assert_eq!(
        error("[c]\nsecret=s\nexten=4991234567(2)\n"),
        "sip.conf:3: bad exten '4991234567(2)': hunting needs an accountcode (positions are members of the group)"
    );
}

#[test]
fn exten_long_number_must_normalise() {
    assert_eq!(
        error("[c]\nsecret=s\nexten=8#1\naccountcode=G\n"),
        "sip.conf:3: bad exten '8#1': long number '8' is not a dialable number"
    );
}

#[test]
fn exten_may_come_before_accountcode() {
    let c = ok("[g]\nexten=9995999\nhost=1.1.1.1\naccountcode=gateways\n[u]\nexten=1(2)\nsecret=x\naccountcode=A\n[v]\nsecret=x\naccountcode=A\n");
    assert_eq!(c.client("g").unwrap().prefix.as_deref(), Some("9995999"));
    assert_eq!(c.client("u").unwrap().exten.short.as_deref(), Some("1"));
}

#[test]
fn hunting_positions_are_checked() {
    let group = "[a]\nsecret=x\naccountcode=G\n[b]\nsecret=x\naccountcode=G\n[other]\nsecret=x\naccountcode=H\n";
    assert_eq!(
        error(&format!(
            "{group}[c]\nsecret=x\naccountcode=G\nexten=1003(4)\n"
        )),
        "sip.conf:13: hunting position 4 does not exist in group 'G' (3 members)"
    );
    assert_eq!(
        error(&format!(
            "{group}[c]\nsecret=x\naccountcode=G\nexten=(1-3)\n"
        )),
        "sip.conf:13: hunting position 3 is 'c' itself"
    );
    assert_eq!(
        errors(&format!(
            "{group}[c]\nsecret=x\naccountcode=G\nexten=(3,5)\n"
        )),
        [
            "sip.conf:13: hunting position 3 is 'c' itself",
            "sip.conf:13: hunting position 5 does not exist in group 'G' (3 members)",
        ]
    );
    // one "does not exist" per client, however long the list
    assert_eq!(
        errors(&format!(
            "{group}[c]\nsecret=x\naccountcode=G\nexten=(1-9999)\n"
        )),
        [
            "sip.conf:13: hunting position 3 is 'c' itself",
            "sip.conf:13: hunting position 4 does not exist in group 'G' (3 members)",
        ]
    );
    let c = ok(&format!(
        "{group}[c]\nsecret=x\naccountcode=G\nexten=(2,1)\n"
    ));
    let hunt = c.hunt_list(c.client("c").unwrap());
    assert_eq!(names(&hunt), ["b", "a"]);
    // a later member counts too
    let c = ok("[a]\nsecret=x\naccountcode=G\nexten=(2)\n[b]\nsecret=x\naccountcode=G\n");
    assert_eq!(names(&c.hunt_list(c.client("a").unwrap())), ["b"]);
}

#[test]
fn gateway_exten_is_prefix() {
    let c = ok("[g]\nhost=1.1.1.1\naccountcode=gateways\nexten=0099\n[h]\nhost=1.1.1.2\naccountcode=gateways\n");
    let g = c.client("g").unwrap();
    assert_eq!(g.prefix.as_deref(), Some("0099"));
    assert_eq!(g.exten, Exten::default());
    assert_eq!(g.long_normalised(), None);
    assert_eq!(c.client("h").unwrap().prefix, None);
    assert_eq!(
        names(&c.gateways()),
        ["g"],
        "a gateway without prefix takes no calls"
    );
    // two gateways may share a prefix (one trunk, two hosts)
    let c = ok("[g]\nhost=1.1.1.1\naccountcode=gateways\nexten=9\n[h]\nhost=1.1.1.2\naccountcode=gateways\nexten=9\n");
    assert_eq!(names(&c.gateways()), ["g", "h"]);
    for bad in ["9#1", "+9", "9(2)", "9=1", "x"] {
        assert_eq!(
            error(&format!("[g]\nhost=1.1.1.1\naccountcode=gateways\nexten={bad}\n")),
            format!(
                "sip.conf:4: bad exten '{bad}': the exten of a gateway is its technical prefix (digits only)"
            )
        );
    }
}

#[test]
fn mediagate_has_no_exten() {
    assert_eq!(
        error("[m]\nhost=1.1.1.1\naccountcode=mediagates\nexten=1001\n"),
        "sip.conf:4: bad exten '1001': a mediagate has no exten (it is reached by feature code)"
    );
}

#[test]
fn duplicate_long_numbers() {
    let base = "[a]\nsecret=x\nexten=4999876543\n";
    assert_eq!(
        error(&format!("{base}[b]\nsecret=x\nexten=4999876543\n")),
        "sip.conf:6: duplicate long number '4999876543' (normalised 74999876543): already used by 'a' at line 3"
    );
    for same in [
        "84999876543",
        "+74999876543",
        "74999876543",
        "81074999876543",
    ] {
        assert_eq!(
            error(&format!("{base}[b]\nsecret=x\nexten={same}\n")),
            format!(
                "sip.conf:6: duplicate long number '{same}' (normalised 74999876543): already used by 'a' as '4999876543' at line 3"
            ),
            "{same}"
        );
    }
}

#[test]
fn duplicate_long_numbers_across_groups() {
    let text = "[a]\nsecret=x\naccountcode=A\nexten=1234567#1\n[b]\nsecret=x\naccountcode=B\nexten=84951234567#1\n";
    assert_eq!(
        error(text),
        "sip.conf:8: duplicate long number '84951234567' (normalised 74951234567): already used by 'a' as '1234567' at line 4"
    );
}

#[test]
fn distinct_long_numbers() {
    // +4999876543 and 8104999876543 are 4999876543 (international), not 74999876543
    let c = ok("[a]\nsecret=x\nexten=4999876543\n[b]\nsecret=x\nexten=+4999876543\n");
    assert_eq!(c.by_long("4999876543").unwrap().name, "a");
    assert_eq!(c.by_long("+4999876543").unwrap().name, "b");
    assert_eq!(c.by_long("8104999876543").unwrap().name, "b");
    assert_eq!(
        error("[a]\nsecret=x\nexten=+4999876543\n[b]\nsecret=x\nexten=8104999876543\n"),
        "sip.conf:6: duplicate long number '8104999876543' (normalised 4999876543): already used by 'a' as '+4999876543' at line 3"
    );
}

#[test]
fn duplicate_short_numbers() {
    assert_eq!(
        error("[a]\nsecret=x\naccountcode=G\nexten=1001\n[b]\nsecret=x\naccountcode=G\nexten=4991234567#1001\n"),
        "sip.conf:8: duplicate short number '1001' in group 'G': already used by 'a' at line 4"
    );
    // the same short number in different groups is fine
    let c =
        ok("[a]\nsecret=x\naccountcode=G\nexten=1001\n[b]\nsecret=x\naccountcode=H\nexten=1001\n");
    assert_eq!(c.by_short("G", "1001").unwrap().name, "a");
    assert_eq!(c.by_short("H", "1001").unwrap().name, "b");
}

#[test]
fn forwarding_to_oneself() {
    assert_eq!(
        error("[a]\nsecret=x\naccountcode=G\nexten=1001=1001\n"),
        "sip.conf:4: forwarding =1001 goes to 'a' itself"
    );
    assert_eq!(
        error("[a]\nsecret=x\nexten=4991234567~84991234567\n"),
        "sip.conf:3: forwarding ~84991234567 goes to 'a' itself"
    );
    // a short number of a colleague wins over an equal-looking long number
    let text = "[a]\nsecret=x\naccountcode=G\nexten=+74951001=1001\n[b]\nsecret=x\naccountcode=G\nexten=1001\n";
    let c = ok(text);
    assert_eq!(
        c.client("a").unwrap().exten.forward,
        Forwarding::always("1001")
    );
    // without the colleague, 1001 is a's own long number
    assert_eq!(
        error("[a]\nsecret=x\naccountcode=G\nexten=+74951001=1001\n"),
        "sip.conf:4: forwarding =1001 goes to 'a' itself"
    );
    // forwarding to another client or outside is fine
    ok("[a]\nsecret=x\naccountcode=G\nexten=1001=1002\n[b]\nsecret=x\naccountcode=G\nexten=1002\n");
    ok("[a]\nsecret=x\naccountcode=G\nexten=1001~+441234\n");
}

// ---------------------------------------------------------------- callerid

#[test]
fn callerid_forms() {
    let cid = |v: &str| {
        client_with(&format!("callerid={v}")).clients[0]
            .callerid
            .clone()
            .unwrap()
    };
    let expect = |display: Option<&str>, number: &str| CallerId {
        display: display.map(str::to_string),
        number: number.to_string(),
    };
    assert_eq!(
        cid("\"John Doe\" <74951234567>"),
        expect(Some("John Doe"), "74951234567")
    );
    assert_eq!(
        cid("John Doe <74951234567>"),
        expect(Some("John Doe"), "74951234567")
    );
    assert_eq!(cid("John<+7495>"), expect(Some("John"), "+7495"));
    assert_eq!(cid("\"\" <123>"), expect(None, "123"));
    assert_eq!(cid("<123>"), expect(None, "123"));
    assert_eq!(cid("< 123 >"), expect(None, "123"));
    assert_eq!(cid("74951234567"), expect(None, "74951234567"));
    assert_eq!(cid("+74951234567"), expect(None, "+74951234567"));
    assert_eq!(cid("\"Иван\" <1>"), expect(Some("Иван"), "1"));
}

#[test]
fn callerid_errors() {
    for bad in [
        "John",
        "John <>",
        "John <abc>",
        "John <123",
        "John 123>",
        "\"John <123>",
        "\"Jo\"hn\" <123>",
        "Jo<hn <123>",
        "123 456",
        "<123> x",
    ] {
        assert_eq!(
            error(&format!("[c]\nsecret=s\ncallerid={bad}\n")),
            format!(
                "sip.conf:3: bad callerid '{bad}': expected \"Name\" <number>, Name <number> or a number"
            ),
            "{bad}"
        );
    }
}

// -------------------------------------------------------- dialplan/context

#[test]
fn dialplan_regex() {
    let c = client_with(r"dialplan=^(7495|7499)\d{7}$");
    let d = &c.clients[0].dialplan;
    assert!(d.is_match("74951234567"));
    assert!(d.is_match("74991234567"));
    assert!(!d.is_match("74981234567"));
    assert_eq!(c.clients[0].dialplan_src, r"^(7495|7499)\d{7}$");
    // matched as a search, not anchored
    let c = client_with("dialplan=495");
    assert!(c.clients[0].dialplan.is_match("74951234567"));
    assert!(!c.clients[0].dialplan.is_match("74991234567"));
}

#[test]
fn bad_dialplan_regex() {
    assert_eq!(
        error("[c]\nsecret=s\ndialplan=^7(495\n"),
        "sip.conf:3: bad dialplan regex '^7(495': unclosed group"
    );
    assert_eq!(
        error("[c]\nsecret=s\ndialplan=(?=7)\n"),
        "sip.conf:3: bad dialplan regex '(?=7)': look-around, including look-ahead and look-behind, is not supported"
    );
    let e = error("[c]\nsecret=s\ndialplan=[z-a]\n");
    assert!(
        e.starts_with("sip.conf:3: bad dialplan regex '[z-a]': "),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn default_dialplan_is_anything() {
    let c = client_with("");
    assert_eq!(c.clients[0].dialplan_src, ".+");
    assert!(c.clients[0].dialplan.is_match("44123456789"));
    assert!(!c.clients[0].dialplan.is_match(""));
}

#[test]
fn dialplan_wins_over_context() {
    let c = client_with("context=em\ndialplan=^44");
    assert_eq!(c.clients[0].dialplan_src, "^44");
    let c = client_with("dialplan=^44\ncontext=local");
    assert_eq!(c.clients[0].dialplan_src, "^44");
    // the context is still checked
    assert_eq!(
        error("[c]\nsecret=s\ndialplan=^44\ncontext=world\n"),
        "sip.conf:4: unknown context 'world' (expected em, local, domestic or international)"
    );
}

#[test]
fn unknown_context() {
    for bad in ["world", "Domestic", "LOCAL", "em,local"] {
        assert_eq!(
            error(&format!("[c]\nsecret=s\ncontext={bad}\n")),
            format!(
                "sip.conf:3: unknown context '{bad}' (expected em, local, domestic or international)"
            )
        );
    }
}

fn preset_of(o: &Options, context: &str) -> Client {
    let c = Config::parse(&format!("[c]\nsecret=s\ncontext={context}\n"), o).unwrap();
    c.clients[0].clone()
}

#[test]
fn context_presets_moscow() {
    let o = opts_with("7", "495");
    let em = preset_of(&o, "em");
    assert_eq!(em.dialplan_src, r"^7495\d{2,3}$");
    assert!(em.dialplan.is_match("749501"));
    assert!(em.dialplan.is_match("7495112"));
    assert!(!em.dialplan.is_match("74951"));
    assert!(!em.dialplan.is_match("74951234"));
    assert!(!em.dialplan.is_match("7499112"));

    let local = preset_of(&o, "local");
    assert_eq!(local.dialplan_src, r"^7495\d+$");
    assert!(local.dialplan.is_match("74951234567"));
    assert!(!local.dialplan.is_match("74991234567"));

    let domestic = preset_of(&o, "domestic");
    assert_eq!(domestic.dialplan_src, r"^7\d+$");
    assert!(domestic.dialplan.is_match("74991234567"));
    assert!(!domestic.dialplan.is_match("44123456789"));

    let intl = preset_of(&o, "international");
    assert_eq!(intl.dialplan_src, ".+");
    assert!(intl.dialplan.is_match("44123456789"));
}

#[test]
fn context_presets_us() {
    let o = opts_with("1", "812");
    let em = preset_of(&o, "em");
    assert_eq!(em.dialplan_src, r"^1812\d{2,3}$");
    assert!(em.dialplan.is_match("1812911"));
    assert!(!em.dialplan.is_match("1813911"));

    let local = preset_of(&o, "local");
    assert_eq!(local.dialplan_src, r"^1812\d+$");
    assert!(local.dialplan.is_match("18125551234"));
    assert!(!local.dialplan.is_match("12125551234"));

    let domestic = preset_of(&o, "domestic");
    assert_eq!(domestic.dialplan_src, r"^1\d+$");
    assert!(domestic.dialplan.is_match("12125551234"));
    assert!(!domestic.dialplan.is_match("74951234567"));

    let intl = preset_of(&o, "international");
    assert_eq!(intl.dialplan_src, ".+");
    assert!(intl.dialplan.is_match("74951234567"));
}

#[test]
fn presets_apply_to_normalised_numbers() {
    // the dialplan is matched against what Config::normalise gives
    let c = ok("[c]\nsecret=s\ncontext=local\n");
    let d = &c.clients[0].dialplan;
    assert!(d.is_match(&c.normalise("1234567").unwrap()));
    assert!(d.is_match(&c.normalise("84951234567").unwrap()));
    assert!(!d.is_match(&c.normalise("84991234567").unwrap()));
    assert!(!d.is_match(&c.normalise("81044123456789").unwrap()));
}

// ------------------------------------------------------------------ lookups

const OFFICE: &str = "\
[alice]
secret=a
accountcode=SALES
exten=4951110001#101(2,3)
[bob]
secret=b
accountcode=SALES
exten=102
[carol]
secret=c
accountcode=SALES
exten=4951110003#103
[dave]
secret=d
accountcode=SUPPORT
exten=101
[trunk]
accountcode=gateways
host=10.0.0.1
exten=00
[trunk2]
accountcode=gateways
host=10.0.0.1:5080
exten=11
[idle]
accountcode=gateways
host=10.0.0.3:5060
[media]
accountcode=mediagates
host=[2001:db8::7]:5070
[loner]
secret=l
";

#[test]
fn normalise_uses_config_codes() {
    let c = ok(OFFICE);
    assert_eq!(c.normalise("1234567").as_deref(), Some("74951234567"));
    assert_eq!(c.normalise("84991234567").as_deref(), Some("74991234567"));
    assert_eq!(
        c.normalise("81044123456789").as_deref(),
        Some("44123456789")
    );
    assert_eq!(c.normalise("+44123456789").as_deref(), Some("44123456789"));
    assert_eq!(c.normalise("x"), None);
    let us = Config::parse(OFFICE, &opts_with("1", "812")).unwrap();
    assert_eq!(us.normalise("5551234").as_deref(), Some("18125551234"));
    assert_eq!(
        us.client("alice").unwrap().long_normalised(),
        Some("14951110001")
    );
}

#[test]
fn by_short_lookups() {
    let c = ok(OFFICE);
    assert_eq!(c.by_short("SALES", "101").unwrap().name, "alice");
    assert_eq!(c.by_short("SALES", "102").unwrap().name, "bob");
    assert_eq!(c.by_short("SUPPORT", "101").unwrap().name, "dave");
    assert!(c.by_short("SUPPORT", "102").is_none());
    assert!(c.by_short("NOPE", "101").is_none());
    assert!(c.by_short("SALES", "4951110001").is_none());
    assert!(
        c.by_short("gateways", "00").is_none(),
        "prefixes are not short numbers"
    );
}

#[test]
fn by_long_lookups() {
    let c = ok(OFFICE);
    for dialed in [
        "4951110001",
        "84951110001",
        "74951110001",
        "+74951110001",
        "8104951110001x",
    ] {
        let found = c.by_long(dialed).map(|c| c.name.as_str());
        let expect = if dialed.ends_with('x') {
            None
        } else {
            Some("alice")
        };
        assert_eq!(found, expect, "{dialed}");
    }
    assert_eq!(c.by_long("84951110003").unwrap().name, "carol");
    assert!(c.by_long("102").is_none());
    assert!(c.by_long("").is_none());
    assert!(c.by_long("+4951110001").is_none());
}

#[test]
fn by_source_lookups() {
    let c = ok(OFFICE);
    let who = |s: &str| c.by_source(sa(s)).map(|c| c.name.clone());
    // exact (IP, port) wins over the IP-only host
    assert_eq!(who("10.0.0.1:5080").as_deref(), Some("trunk2"));
    // IP-only host matches any port
    assert_eq!(who("10.0.0.1:5060").as_deref(), Some("trunk"));
    assert_eq!(who("10.0.0.1:40000").as_deref(), Some("trunk"));
    // a host with a port matches that port only
    assert_eq!(who("10.0.0.3:5060").as_deref(), Some("idle"));
    assert_eq!(who("10.0.0.3:5061"), None);
    assert_eq!(who("10.0.0.2:5060"), None);
    // IPv4-mapped IPv6 sources count as IPv4
    assert_eq!(who("[::ffff:10.0.0.1]:5080").as_deref(), Some("trunk2"));
    assert_eq!(who("[::ffff:10.0.0.1]:1234").as_deref(), Some("trunk"));
    assert_eq!(who("[::ffff:10.0.0.3]:5060").as_deref(), Some("idle"));
    // IPv6 hosts
    assert_eq!(who("[2001:db8::7]:5070").as_deref(), Some("media"));
    assert_eq!(who("[2001:db8::7]:5060"), None);
    // registered-only clients are never found by source
    assert_eq!(who("127.0.0.1:5060"), None);
}

#[test]
fn by_source_many_clients_on_one_ip() {
    let c = ok("[a]\nhost=127.0.0.1:5071\n[b]\nhost=127.0.0.1:5072\n[c]\nhost=::1\n");
    let who = |s: &str| c.by_source(sa(s)).map(|c| c.name.clone());
    assert_eq!(who("127.0.0.1:5071").as_deref(), Some("a"));
    assert_eq!(who("127.0.0.1:5072").as_deref(), Some("b"));
    assert_eq!(who("127.0.0.1:5060"), None);
    assert_eq!(who("[::1]:9999").as_deref(), Some("c"));
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5071);
    assert_eq!(c.by_source(v4).unwrap().name, "a");
    let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 5072);
    assert_eq!(c.by_source(mapped).unwrap().name, "b");
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
    assert_eq!(c.by_source(v6).unwrap().name, "c");
}

#[test]
fn groups() {
    let c = ok(OFFICE);
    assert_eq!(names(&c.group("SALES")), ["alice", "bob", "carol"]);
    assert_eq!(names(&c.group("SUPPORT")), ["dave"]);
    assert_eq!(names(&c.group("gateways")), ["trunk", "trunk2", "idle"]);
    assert!(c.group("NOPE").is_empty());
    assert!(c.group("").is_empty());
}

#[test]
fn hunt_lists() {
    let c = ok(OFFICE);
    assert_eq!(
        names(&c.hunt_list(c.client("alice").unwrap())),
        ["bob", "carol"]
    );
    assert!(c.hunt_list(c.client("bob").unwrap()).is_empty());
    assert!(c.hunt_list(c.client("trunk").unwrap()).is_empty());
    assert!(c.hunt_list(c.client("loner").unwrap()).is_empty());
    // a client from another config: positions that do not resolve are skipped
    let mut stranger = c.client("alice").unwrap().clone();
    stranger.exten.hunt = vec![3, 9, 1];
    assert_eq!(names(&c.hunt_list(&stranger)), ["carol", "alice"]);
}

#[test]
fn gateways_and_mediagates() {
    let c = ok(OFFICE);
    assert_eq!(names(&c.gateways()), ["trunk", "trunk2"]);
    assert_eq!(c.gateways()[0].prefix.as_deref(), Some("00"));
    assert_eq!(names(&c.mediagates()), ["media"]);
    assert_eq!(
        c.client("media").unwrap().host.unwrap().ip,
        ip("2001:db8::7")
    );
}

#[test]
fn lookup_who() {
    let c = ok(OFFICE);
    let who = |w: &str| names(&c.lookup(w));
    // a name
    assert_eq!(who("alice"), ["alice"]);
    assert_eq!(who("trunk"), ["trunk"]);
    // a long number, any written form
    assert_eq!(who("4951110003"), ["carol"]);
    assert_eq!(who("84951110003"), ["carol"]);
    assert_eq!(who("+74951110003"), ["carol"]);
    // a short number: every group
    assert_eq!(who("101"), ["alice", "dave"]);
    assert_eq!(who("102"), ["bob"]);
    // nothing
    assert!(who("999").is_empty());
    assert!(who("Alice").is_empty());
    assert!(who("").is_empty());
    assert!(
        who("00").is_empty(),
        "gateway prefixes are not numbers of clients"
    );
}

#[test]
fn lookup_name_wins_over_numbers() {
    let c = ok("[101]\nsecret=x\n[a]\nsecret=x\naccountcode=G\nexten=101\n[b]\nsecret=x\nexten=74951010101\n[7495101]\nsecret=x\n");
    assert_eq!(names(&c.lookup("101")), ["101"]);
    assert_eq!(names(&c.lookup("7495101")), ["7495101"]);
    assert_eq!(names(&c.lookup("1010101")), ["b"]);
}

#[test]
fn lookup_long_wins_over_short() {
    // 1001 normalises to 74951001, which is b's long number
    let c = ok("[a]\nsecret=x\naccountcode=G\nexten=1001\n[b]\nsecret=x\nexten=+74951001\n");
    assert_eq!(names(&c.lookup("1001")), ["b"]);
}

// --------------------------------------------------------------------- diff

#[test]
fn diff_nothing() {
    let a = ok(EXAMPLE);
    let b = ok(EXAMPLE);
    assert_eq!(a.diff(&b), Diff::default());
    // moving sections and comments around changes only line numbers
    let moved = format!("; a new header comment\n\n\n{EXAMPLE}");
    assert_eq!(a.diff(&ok(&moved)), Diff::default());
}

#[test]
fn diff_added_removed_changed() {
    let old = ok("[a]\nsecret=1\n[b]\nsecret=2\n[c]\nsecret=3\n[d]\nsecret=4\n");
    let new = ok("[e]\nsecret=5\n[d]\nsecret=4\npermit=10/8\n[b]\nsecret=2\n[a]\nsecret=one\n[f]\nhost=1.1.1.1\n");
    assert_eq!(
        old.diff(&new),
        Diff {
            added: vec!["e".to_string(), "f".to_string()],
            removed: vec!["c".to_string()],
            changed: vec!["d".to_string(), "a".to_string()],
        }
    );
    assert_eq!(
        new.diff(&old),
        Diff {
            added: vec!["c".to_string()],
            removed: vec!["e".to_string(), "f".to_string()],
            changed: vec!["a".to_string(), "d".to_string()],
        }
    );
}

#[test]
fn diff_each_key() {
    let base = "[x]\nsecret=s\naccountcode=G\nexten=1001\n[y]\nsecret=t\naccountcode=G\n";
    let old = ok(base);
    let variants = [
        "[x]\nsecret=S\naccountcode=G\nexten=1001\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=H\nexten=1001\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1002\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001(2)\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001=5\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001~5\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=12345#1001\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001\npermit=10/8\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001\nhost=1.2.3.4\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001\ncallerid=5\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001\ndialplan=^7\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001\ncontext=em\n[y]\nsecret=t\naccountcode=G\n",
    ];
    for v in variants {
        let d = old.diff(&ok(v));
        assert_eq!(d.changed, ["x"], "{v}");
        assert!(d.added.is_empty() && d.removed.is_empty(), "{v}");
    }
    // the same values written differently are no change
    let same = [
        "[x]\n  secret = s ; same\nexten=1001\naccountcode=G\n[y]\naccountcode=G\nsecret=t\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001\ncontext=international\n[y]\nsecret=t\naccountcode=G\n",
        "[x]\nsecret=s\naccountcode=G\nexten=1001\ndialplan=.+\n[y]\nsecret=t\naccountcode=G\n",
    ];
    for v in same {
        assert_eq!(old.diff(&ok(v)), Diff::default(), "{v}");
    }
}

#[test]
fn diff_permit_written_differently() {
    let old = client_with("permit=10/8");
    assert_eq!(old.diff(&client_with("permit=10.0.0.0/8")), Diff::default());
    assert_eq!(
        old.diff(&client_with("permit=10.1.2.3/255.0.0.0")),
        Diff::default()
    );
    assert_eq!(old.diff(&client_with("permit=10/9")).changed, ["c"]);
}

#[test]
fn diff_hunting_target_moved() {
    // x hunts position 2; reordering the group changes who that is
    let old = ok("[x]\nsecret=s\naccountcode=G\nexten=(2)\n[y]\nsecret=t\naccountcode=G\n[z]\nsecret=u\naccountcode=G\n");
    let new = ok("[x]\nsecret=s\naccountcode=G\nexten=(2)\n[z]\nsecret=u\naccountcode=G\n[y]\nsecret=t\naccountcode=G\n");
    assert_eq!(old.diff(&new).changed, ["x"]);
}

// --------------------------------------------------------------------- load

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sipd-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn load_missing_file_is_none() {
    let path = temp_path("does-not-exist.conf");
    assert!(Config::load(&path, &opts()).unwrap().is_none());
}

#[test]
fn load_file() {
    let path = temp_path("ok.conf");
    std::fs::write(&path, EXAMPLE).unwrap();
    let c = Config::load(&path, &opts()).unwrap().unwrap();
    assert_eq!(c.clients.len(), 7);
    std::fs::write(&path, "[a]\npermt=1\n").unwrap();
    let e = Config::load(&path, &opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sip.conf:1: client 'a' needs secret or host\nsip.conf:2: unknown key 'permt'"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn load_unreadable_is_line_zero() {
    let dir = temp_path("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let e = Config::load(&dir, &opts()).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].line, 0);
    assert!(e.to_string().starts_with("sip.conf: cannot read: "), "{e}");
}

#[test]
fn load_not_utf8() {
    let path = temp_path("latin1.conf");
    std::fs::write(&path, b"[a]\nsecret=x\ncallerid=\"Jos\xe9\" <1>\n").unwrap();
    let e = Config::load(&path, &opts()).unwrap_err();
    assert_eq!(e.to_string(), "sip.conf:3: not valid UTF-8 text");
    std::fs::remove_file(&path).unwrap();
}

// -------------------------------------------------------------- properties

mod properties {
    use proptest::prelude::*;

    use super::super::numbers::normalise;
    use super::*;

    proptest! {
        #[test]
        fn normalised_numbers_are_digits(dialed in "\\+?[0-9]{0,18}") {
            if let Some(n) = normalise(&dialed, "7", "495") {
                prop_assert!(!n.is_empty());
                prop_assert!(n.bytes().all(|b| b.is_ascii_digit()));
            }
        }

        #[test]
        fn normalise_rejects_non_numbers(dialed in ".*[^0-9+].*") {
            prop_assert_eq!(normalise(&dialed, "7", "495"), None);
        }

        #[test]
        fn parse_never_panics_and_lines_exist(
            text in "([\\[\\]a-z0-9=;#()~+,./:\\\\ \\t-]{0,30}(\\r?\\n)){0,30}"
        ) {
            let lines = text.lines().count();
            match Config::parse(&text, &opts()) {
                Ok(c) => {
                    for client in &c.clients {
                        prop_assert!(client.line >= 1 && client.line <= lines);
                        prop_assert!(client.secret.is_some() || client.host.is_some());
                    }
                }
                Err(e) => {
                    prop_assert!(!e.errors.is_empty());
                    for err in &e.errors {
                        prop_assert!(err.line >= 1 && err.line <= lines, "{err:?}");
                        prop_assert!(!err.message.contains('\n'));
                    }
                }
            }
        }

        #[test]
        fn sections_of_known_keys(
            exten in "[0-9#()=~,+-]{1,12}",
            permit in "[0-9./,:]{1,20}",
            host in "[0-9.:\\[\\]]{1,20}",
        ) {
            let text = format!(
                "[a]\nsecret=x\naccountcode=G\nexten={exten}\npermit={permit}\n[b]\nhost={host}\naccountcode=G\n"
            );
            if let Ok(c) = Config::parse(&text, &opts()) {
                let a = c.client("a").unwrap();
                prop_assert!(!a.permit.is_empty());
                for member in c.hunt_list(a) {
                    prop_assert!(member.name != "a");
                }
            }
        }
    }
}

#[test]
fn general_digest_algorithms() {
    use crate::auth::Algorithm;
    // MD5 alone by default: phones that stop at the first challenge they
    // cannot answer (baresip 1.0, SIPp, many desk phones) lack SHA-256.
    assert_eq!(ok("").general.digest, vec![Algorithm::Md5]);
    assert_eq!(
        ok("[general]\ndigest=sha-256,md5\n").general.digest,
        vec![Algorithm::Sha256, Algorithm::Md5]
    );
    assert_eq!(
        ok("[general]\ndigest=md5\n").general.digest,
        vec![Algorithm::Md5]
    );
    assert_eq!(
        ok("[general]\ndigest = MD5 , sha-256\n").general.digest,
        vec![Algorithm::Md5, Algorithm::Sha256]
    );
    assert!(error("[general]\ndigest=sha-1\n").starts_with("sip.conf:2: bad digest 'sha-1'"));
    assert!(error("[general]\ndigest=md5,md5\n").contains("listed twice"));
    assert!(error("[general]\ndigest=md5,\n").starts_with("sip.conf:2: bad digest"));
}

#[test]
fn client_digest_overrides_general() {
    use crate::auth::Algorithm;
    let c = ok("[general]\ndigest=sha-256,md5\n[a]\nsecret=x\n[b]\nsecret=x\ndigest=md5\n[c]\nsecret=x\ndigest = SHA-256\n");
    let digest = |n: &str| c.client(n).unwrap().digest(&c.general).to_vec();
    assert_eq!(digest("a"), vec![Algorithm::Sha256, Algorithm::Md5]);
    assert_eq!(digest("b"), vec![Algorithm::Md5]);
    assert_eq!(digest("c"), vec![Algorithm::Sha256]);
    let d = ok("[a]\nsecret=x\n");
    assert_eq!(d.client("a").unwrap().digest(&d.general), &[Algorithm::Md5]);
    assert!(error("[a]\nsecret=x\ndigest=\n").contains("empty value for key 'digest'"));
    for bad in ["sha-1", "md5,md5", "md5,"] {
        let e = error(&format!("[a]\nsecret=x\ndigest={bad}\n"));
        assert!(e.starts_with("sip.conf:3: bad digest"), "{bad}: {e}");
    }
}

#[test]
fn general_digest_uri() {
    assert!(ok("").general.check_digest_uri);
    assert!(
        ok("[general]\ndigest_uri=request\n")
            .general
            .check_digest_uri
    );
    assert!(!ok("[general]\ndigest_uri=ANY\n").general.check_digest_uri);
    assert!(error("[general]\ndigest_uri=no\n").starts_with("sip.conf:2: bad digest_uri 'no'"));
}

#[test]
fn tls_and_websocket_keys() {
    use super::Transport;
    let c = ok(
        "[general]\ntls_cert=cert.pem\ntls_key=keys/key.pem\ntls_ca=/etc/ssl/ca.pem\n\
                ws_origins=https://phone.example, http://127.0.0.1:8000\n\
                [gw]\naccountcode=gateways\nhost=10.0.0.1\ntransport=TLS\n\
                [gw2]\naccountcode=gateways\nhost=10.0.0.2\ntransport=tcp\n\
                [a]\nsecret=x\n",
    );
    assert_eq!(c.general.tls_cert.as_deref(), Some("cert.pem"));
    assert_eq!(c.general.tls_key.as_deref(), Some("keys/key.pem"));
    assert_eq!(c.general.tls_ca.as_deref(), Some("/etc/ssl/ca.pem"));
    assert_eq!(
        c.general.ws_origins,
        vec!["https://phone.example", "http://127.0.0.1:8000"]
    );
    assert_eq!(c.client("gw").unwrap().transport, Transport::Tls);
    assert_eq!(c.client("gw2").unwrap().transport, Transport::Tcp);
    assert_eq!(c.client("a").unwrap().transport, Transport::Udp);
    let d = ok("");
    assert!(d.general.tls_cert.is_none() && d.general.ws_origins.is_empty());
    let e = error("[gw]\naccountcode=gateways\nhost=10.0.0.1\ntransport=sctp\n");
    assert!(e.contains("bad transport 'sctp'"), "{e}");
    let e = error("[general]\nws_origins=phone.example\n");
    assert!(e.contains("bad ws_origins"), "{e}");
    let e = error("[general]\nws_origins=https://phone.example/\n");
    assert!(e.contains("bad ws_origins"), "{e}");
}

#[test]
fn flood_ban_and_security_log_keys() {
    let c = ok("[general]\nflood=500/10\nban=60\nsecurity_log=security.log\n");
    assert_eq!(c.general.flood, (500, 10));
    assert_eq!(c.general.ban, 60);
    assert_eq!(c.general.security_log.as_deref(), Some("security.log"));
    assert_eq!(ok("[general]\nflood=0/1\n").general.flood, (0, 1));
    let d = ok("");
    assert_eq!((d.general.flood, d.general.ban), ((100, 2), 300));
    for bad in [
        "100",
        "100/0",
        "x/2",
        "100/3601",
        "-1/2",
        "2000000/2",
        "100/2/3",
    ] {
        let e = error(&format!("[general]\nflood={bad}\n"));
        assert!(e.contains("bad flood"), "{bad}: {e}");
    }
    for bad in ["0", "86401", "x", "-5"] {
        let e = error(&format!("[general]\nban={bad}\n"));
        assert!(e.contains("bad ban"), "{bad}: {e}");
    }
}

#[test]
fn metrics_listener_address() {
    assert_eq!(ok("").general.metrics, None);
    let c = ok("[general]\nmetrics=127.0.0.1:9100\n");
    assert_eq!(c.general.metrics, Some(sa("127.0.0.1:9100")));
    let c = ok("[general]\nmetrics=[::1]:9100\n");
    assert_eq!(c.general.metrics, Some(sa("[::1]:9100")));
    for bad in [
        "127.0.0.1",
        "localhost:9100",
        "::1:9100",
        "9100",
        "127.0.0.1:99999",
    ] {
        let e = error(&format!("[general]\nrealm=x\nmetrics={bad}\n"));
        assert_eq!(
            e,
            format!("sip.conf:3: bad metrics '{bad}': expected IP:port or [IPv6]:port, e.g. 127.0.0.1:9100")
        );
    }
    let e = error("[general]\nmetrics=127.0.0.1:0\n");
    assert_eq!(
        e,
        "sip.conf:2: bad metrics '127.0.0.1:0': port 1-65535 expected"
    );
    let e = error("[general]\nmetrics=224.0.0.1:9100\n");
    assert!(
        e.starts_with("sip.conf:2: bad metrics '224.0.0.1:9100'"),
        "{e}"
    );
    let e = error("[alice]\nsecret=x\nmetrics=127.0.0.1:9100\n");
    assert!(e.contains("unknown key 'metrics'"), "{e}");
}

#[test]
fn host_ips_are_known_with_or_without_a_port() {
    let c = ok("[gw]\naccountcode=gateways\nhost=10.0.0.1:5070\nexten=9\n\
                [gw2]\naccountcode=gateways\nhost=::ffff:10.0.0.2\nexten=8\n[a]\nsecret=x\n");
    assert!(c.is_host_ip("10.0.0.1".parse().unwrap()));
    assert!(c.is_host_ip("10.0.0.2".parse().unwrap()));
    assert!(c.is_host_ip("::ffff:10.0.0.1".parse().unwrap()));
    assert!(!c.is_host_ip("10.0.0.3".parse().unwrap()));
}
