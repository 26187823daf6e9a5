//! sipctl: admin CLI for a running sipd. Each subcommand is one control
//! request (see the `proto` crate); the reply is printed as a table for
//! people or, with `--json`, as the raw JSON result for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use proto::{format_unix_ms, Client, Command, Forwarding, Reply};
use tabled::settings::Style;
use tabled::{Table, Tabled};

#[derive(Parser, Debug)]
#[command(name = "sipctl", version, about = "Admin CLI for a running sipd")]
struct Cli {
    /// sipd's working directory (where sipd.sock lives)
    #[arg(
        short = 's',
        long = "dir",
        value_name = "DIR",
        default_value = ".",
        global = true
    )]
    dir: PathBuf,
    /// Control socket path (overrides -s)
    #[arg(long = "ctl", value_name = "PATH", global = true)]
    ctl: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Version, uptime, listen addresses, clients loaded, counters
    Status,
    /// Re-read sip.conf (validated first; the old config stays on error)
    Reload,
    /// Registrations (all, or of one client)
    Regs { name: Option<String> },
    /// Calls in progress
    Calls,
    /// Recent call detail records
    Cdr {
        /// How many records (newest first)
        #[arg(long, default_value_t = 20)]
        last: u32,
    },
    /// Show or change call forwarding: `fwd WHO`, `fwd WHO always F`,
    /// `fwd WHO unavail F`, `fwd WHO clear` (WHO: client name or number)
    Fwd {
        who: String,
        #[arg(value_parser = ["always", "unavail", "clear"])]
        action: Option<String>,
        number: Option<String>,
    },
    /// The ban table (flood bans, brute-force locks); `bans clear ADDR`
    /// lifts every ban of that address
    Bans {
        #[arg(value_parser = ["clear"])]
        action: Option<String>,
        address: Option<String>,
    },
    /// Gateways and mediagates: host, health (up/down/unknown), last RTT,
    /// since when, calls in progress through each
    Gateways,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sipctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<String, String> {
    let cmd = match &cli.cmd {
        Cmd::Status => Command::Status,
        Cmd::Reload => Command::Reload,
        Cmd::Regs { name } => Command::Regs { name: name.clone() },
        Cmd::Calls => Command::Calls,
        Cmd::Cdr { last } => Command::Cdr { last: Some(*last) },
        Cmd::Fwd {
            who,
            action,
            number,
        } => Command::Fwd {
            who: who.clone(),
            action: fwd_action(action.as_deref(), number.as_deref())?,
        },
        Cmd::Bans { action, address } => match (action.as_deref(), address) {
            (None, None) => Command::Bans { clear: None },
            (Some("clear"), Some(a)) => Command::Bans {
                clear: Some(a.clone()),
            },
            (Some(_), None) => {
                return Err("'clear' needs an address: sipctl bans clear ADDR".into())
            }
            _ => return Err("usage: sipctl bans [clear ADDR]".into()),
        },
        Cmd::Gateways => Command::Gateways,
    };
    let path = cli
        .ctl
        .clone()
        .unwrap_or_else(|| proto::socket_path(&cli.dir));
    let mut client = Client::connect(&path).map_err(|e| e.to_string())?;
    let reply = client.call(cmd).map_err(|e| e.to_string())?.into_result()?;
    if cli.json {
        let mut s = serde_json::to_string_pretty(&reply).map_err(|e| e.to_string())?;
        s.push('\n');
        return Ok(s);
    }
    Ok(render(&reply))
}

/// The change asked for (`None`: show only); `clear` is [`Forwarding::None`].
/// The number is checked here too (sipd checks it again), so that a typo
/// or a runaway argument gets a clear error before anything is sent.
fn fwd_action(action: Option<&str>, number: Option<&str>) -> Result<Option<Forwarding>, String> {
    match (action, number) {
        (None, None) => Ok(None),
        (Some("clear"), None) => Ok(Some(Forwarding::None)),
        (Some("clear"), Some(_)) => Err("'clear' takes no number".into()),
        (Some(_), Some(n)) if !proto::is_number(n) => Err(format!(
            "'{}' is not a number ({})",
            proto::shown(n),
            proto::NUMBER_RULE
        )),
        (Some(kind), Some(n)) => Ok(Some(if kind == "always" {
            Forwarding::always(n)
        } else {
            Forwarding::unavailable(n)
        })),
        (Some(kind), None) => Err(format!(
            "'{kind}' needs a number: sipctl fwd WHO {kind} NUMBER"
        )),
        (None, Some(_)) => unreachable!("clap fills action before number"),
    }
}

fn table<T: Tabled>(rows: impl IntoIterator<Item = T>) -> String {
    let mut t = Table::new(rows);
    t.with(Style::psql());
    format!("{t}\n")
}

#[derive(Tabled)]
struct KeyValue {
    key: String,
    value: String,
}

fn kv(key: &str, value: impl ToString) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn render(reply: &Reply) -> String {
    match reply {
        Reply::Status(s) => {
            let mut rows = vec![
                kv("name", &s.name),
                kv("version", &s.version),
                kv("realm", &s.realm),
                kv("pid", s.pid),
                kv("uptime", format_duration(s.uptime_secs)),
                kv("listen", s.listen.join(" ")),
                kv("country code", &s.country),
                kv("city code", &s.city),
                kv("directory", &s.dir),
                kv("config", &s.config),
                kv("clients", s.clients),
                kv("registrations", s.registrations),
                kv("calls", s.calls),
                kv("transactions", s.transactions),
                kv("store", &s.store),
            ];
            if !s.store.kind.is_empty() {
                rows.push(kv("store backend", &s.store.kind));
            }
            if let Some(node) = &s.store.node {
                rows.push(kv("node", node));
            }
            if let Some(feed) = s.store.feed {
                rows.push(kv(
                    "store feed",
                    if feed {
                        "connected"
                    } else {
                        "disconnected (serving from memory)"
                    },
                ));
            }
            for n in &s.store.nodes {
                rows.push(kv(
                    &format!("node {}", n.name),
                    format!("{} {} (heartbeat {} s ago)", n.addr, n.state, n.silent_secs),
                ));
            }
            rows.extend(s.counters.iter().map(|c| kv(&c.name, c.value)));
            table(rows)
        }
        Reply::Reload(r) => r.to_string(),
        Reply::Regs(r) => {
            #[derive(Tabled)]
            struct Row<'a> {
                name: &'a str,
                contact: &'a str,
                source: &'a str,
                expires: u64,
                status: &'a str,
                rtt: String,
                #[tabled(rename = "user agent")]
                user_agent: &'a str,
            }
            let n = r.bindings.len();
            let sources: Vec<String> = r
                .bindings
                .iter()
                .map(|b| match &b.node {
                    Some(node) => format!("{} via node {node}", b.source),
                    None => b.source.clone(),
                })
                .collect();
            let rows = r.bindings.iter().zip(&sources).map(|(b, source)| Row {
                name: &b.name,
                contact: &b.contact,
                source,
                expires: b.expires,
                status: &b.status,
                rtt: b.rtt_ms.map(|ms| format!("{ms} ms")).unwrap_or_default(),
                user_agent: &b.user_agent,
            });
            format!(
                "{}{n} registration{}\n",
                table(rows),
                if n == 1 { "" } else { "s" }
            )
        }
        Reply::Calls(c) => {
            #[derive(Tabled)]
            struct Row<'a> {
                #[tabled(rename = "call-id")]
                call_id: &'a str,
                caller: &'a str,
                dialed: &'a str,
                target: &'a str,
                state: &'a str,
                device: &'a str,
                duration: String,
                /// Relayed media: packets from caller / from callee and
                /// the latched addresses; `-` when media goes end to end.
                media: String,
            }
            let n = c.calls.len();
            let rows = c.calls.iter().map(|c| Row {
                call_id: &c.call_id,
                caller: &c.caller,
                dialed: &c.dialed,
                target: &c.target,
                state: &c.state,
                device: &c.device,
                duration: format_duration(c.duration_secs),
                media: c.media.as_ref().map_or_else(
                    || "-".to_string(),
                    |m| {
                        format!(
                            "{} pkts ({} B) from {} / {} pkts ({} B) from {}",
                            m.packets_from_caller,
                            m.bytes_from_caller,
                            m.caller_addr.as_deref().unwrap_or("?"),
                            m.packets_from_callee,
                            m.bytes_from_callee,
                            m.callee_addr.as_deref().unwrap_or("?"),
                        )
                    },
                ),
            });
            format!("{}{n} call{}\n", table(rows), if n == 1 { "" } else { "s" })
        }
        Reply::Cdr(c) => {
            #[derive(Tabled)]
            struct Row<'a> {
                start: String,
                caller: &'a str,
                dialed: &'a str,
                target: &'a str,
                device: &'a str,
                disposition: &'a str,
                code: u16,
                duration: u64,
                billsec: u64,
                /// Media packets relayed from caller / from callee.
                packets: String,
                #[tabled(rename = "call-id")]
                call_id: &'a str,
                /// The node whose call it was (PostgreSQL store).
                #[tabled(skip)]
                node: &'a str,
            }
            let n = c.records.len();
            let rows = c.records.iter().map(|r| Row {
                start: format_unix_ms(r.start),
                caller: &r.caller,
                dialed: &r.dialed,
                target: &r.target,
                device: &r.device,
                disposition: &r.disposition,
                code: r.code,
                duration: r.duration,
                billsec: r.billsec,
                packets: format!("{}/{}", r.packets_caller, r.packets_callee),
                call_id: &r.call_id,
                node: &r.node,
            });
            let shown = if c.records.iter().any(|r| !r.node.is_empty()) {
                // Several nodes on one store: whose call each was.
                #[derive(Tabled)]
                struct WithNode<'a> {
                    node: &'a str,
                    #[tabled(inline)]
                    row: Row<'a>,
                }
                table(rows.map(|row| WithNode {
                    node: row.node,
                    row,
                }))
            } else {
                table(rows)
            };
            format!("{shown}{n} record{}\n", if n == 1 { "" } else { "s" })
        }
        Reply::Fwd(f) => {
            #[derive(Tabled)]
            struct Row<'a> {
                name: &'a str,
                forwarding: &'a str,
                number: &'a str,
                source: &'a str,
            }
            table(f.clients.iter().map(|c| Row {
                name: &c.name,
                forwarding: c.forwarding.kind_str(),
                number: c.forwarding.number().unwrap_or("-"),
                source: c.source.as_deref().unwrap_or("-"),
            }))
        }
        Reply::Bans(b) => {
            #[derive(Tabled)]
            struct Row<'a> {
                address: &'a str,
                reason: &'a str,
                dropped: &'a str,
                since: String,
                until: String,
            }
            let n = b.bans.len();
            let mut s = String::new();
            if let Some(c) = b.cleared {
                s.push_str(&format!(
                    "{c} ban{} lifted\n",
                    if c == 1 { "" } else { "s" }
                ));
            }
            s.push_str(&table(b.bans.iter().map(|x| Row {
                address: &x.address,
                reason: &x.reason,
                dropped: if x.dropped { "yes" } else { "no" },
                since: format_unix_ms(x.since_unix * 1000),
                until: format_unix_ms(x.until_unix * 1000),
            })));
            s.push_str(&format!("{n} ban{}\n", if n == 1 { "" } else { "s" }));
            s
        }
        Reply::Gateways(g) => render_gateways(g),
    }
}

/// `sipctl gateways`: one row per gateway or mediagate, sip.conf order.
fn render_gateways(g: &proto::Gateways) -> String {
    #[derive(Tabled)]
    struct Row<'a> {
        name: &'a str,
        role: &'a str,
        host: &'a str,
        state: &'a str,
        rtt: String,
        since: String,
        calls: u64,
    }
    let n = g.gateways.len();
    let rows = g.gateways.iter().map(|g| Row {
        name: &g.name,
        role: &g.role,
        host: if g.host.is_empty() {
            "(not registered)"
        } else {
            &g.host
        },
        state: &g.state,
        rtt: g.rtt_ms.map(|ms| format!("{ms} ms")).unwrap_or_default(),
        since: g.since.map(format_unix_ms).unwrap_or_default(),
        calls: g.calls,
    });
    format!(
        "{}{n} gateway{}\n",
        table(rows),
        if n == 1 { "" } else { "s" }
    )
}

fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration(59), "00:00:59");
        assert_eq!(format_duration(3_661), "01:01:01");
        assert_eq!(format_duration(90_061), "1d 01:01:01");
    }

    #[test]
    fn fwd_arguments() {
        assert_eq!(fwd_action(None, None).unwrap(), None);
        assert_eq!(
            fwd_action(Some("clear"), None).unwrap(),
            Some(Forwarding::None)
        );
        assert!(fwd_action(Some("clear"), Some("1")).is_err());
        assert_eq!(
            fwd_action(Some("always"), Some("84991234567")).unwrap(),
            Some(Forwarding::always("84991234567"))
        );
        assert!(fwd_action(Some("always"), None)
            .unwrap_err()
            .contains("needs a number"));
        assert_eq!(
            fwd_action(Some("unavail"), Some("1002")).unwrap(),
            Some(Forwarding::unavailable("1002"))
        );
        assert!(fwd_action(Some("always"), Some(&"9".repeat(32))).is_ok());
        for bad in ["alice", "", "12 34", "+", "*72"] {
            let e = fwd_action(Some("always"), Some(bad)).unwrap_err();
            assert!(e.contains("is not a number"), "{bad}: {e}");
        }
        let e = fwd_action(Some("unavail"), Some(&"9".repeat(1_000_000))).unwrap_err();
        assert!(e.len() < 200 && !e.contains('\n'), "{e}");
        assert!(e.contains("1000000 characters"), "{e}");
    }

    #[test]
    fn gateways_table() {
        let g = proto::Gateways {
            gateways: vec![
                proto::GatewayInfo {
                    name: "GW1".into(),
                    role: "gateway".into(),
                    host: "udp:10.0.0.1:5060".into(),
                    state: "down".into(),
                    rtt_ms: Some(12),
                    since: Some(1_795_651_200_123),
                    qualify: 30,
                    calls: 1,
                },
                proto::GatewayInfo {
                    name: "REG".into(),
                    role: "gateway".into(),
                    host: String::new(),
                    state: "unknown".into(),
                    rtt_ms: None,
                    since: None,
                    qualify: 30,
                    calls: 0,
                },
            ],
        };
        let out = render_gateways(&g);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("name") && lines[0].contains("since"),
            "{out}"
        );
        assert!(
            lines[2].contains("GW1") && lines[2].contains("udp:10.0.0.1:5060"),
            "{out}"
        );
        assert!(
            lines[2].contains("down") && lines[2].contains("12 ms"),
            "{out}"
        );
        assert!(lines[2].contains("2026-11-26 00:00:00"), "{out}");
        assert!(
            lines[3].contains("(not registered)") && lines[3].contains("unknown"),
            "{out}"
        );
        assert_eq!(lines.last(), Some(&"2 gateways"));
        assert!(matches!(
            Cli::try_parse_from(["sipctl", "gateways", "--json"])
                .unwrap()
                .cmd,
            Cmd::Gateways
        ));
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from(["sipctl", "-s", "/tmp/x", "regs", "--json"]).unwrap();
        assert!(c.json);
        assert_eq!(c.dir, PathBuf::from("/tmp/x"));
        assert!(Cli::try_parse_from(["sipctl", "fwd", "1001", "sometimes"]).is_err());
        let c = Cli::try_parse_from(["sipctl", "fwd", "1001", "always", "84991234567"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Fwd { .. }));
    }
}
