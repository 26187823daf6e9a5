//! Start-up, the running daemon and shutdown: loads sip.conf, binds the SIP
//! sockets and the control socket, feeds received messages to the core,
//! ticks its timers, reloads on SIGHUP or `reload`, and stops cleanly on
//! SIGTERM/SIGINT (socket file removed, store flushed).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::{Command, Reply, Response};

use crate::cli::Flags;
use crate::config::{self, Config};
use crate::core::{Core, CoreOptions, Local, Pending};
use crate::malformed;
use crate::sip::{Limits, Message};
use crate::store::Store;
use crate::transport::{
    tcp::TcpLimits, udp::Datagram, DebugLog, Out, Peer, Sink, Tcp, Transport, Transports, Udp,
};

/// Interval of the core's timer tick.
const TICK: Duration = Duration::from_millis(20);

/// How often freed heap memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// After a burst (a REGISTER flood, a benchmark) glibc keeps the freed
/// memory of the transaction tables; give it back so that the resident
/// size follows the real state. Nothing to do with mimalloc (the default
/// build), which returns freed memory by itself.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Everything the tasks share.
pub struct Daemon {
    core: Mutex<Core>,
    transports: Transports,
    opts: config::Options,
    conf_path: PathBuf,
    dir: PathBuf,
    started: Instant,
    limits: Limits,
    /// One reload at a time (parsing happens outside the core lock).
    reload_lock: Mutex<()>,
    store: Arc<Store>,
    weak: std::sync::OnceLock<std::sync::Weak<Daemon>>,
    runtime: tokio::runtime::Handle,
}

/// Run sipd until SIGTERM/SIGINT. Errors are start-up errors, to be printed.
pub fn run(flags: Flags) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    rt.block_on(serve(flags))
}

fn options(flags: &Flags) -> config::Options {
    let file_name = flags
        .conf_path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sip.conf".into());
    config::Options {
        country: flags.country.clone(),
        city: flags.city.clone(),
        default_realm: crate::cli::hostname(),
        file_name,
    }
}

async fn serve(flags: Flags) -> Result<(), String> {
    let opts = options(&flags);
    let conf_path = flags.conf_path();
    let config = match Config::load(&conf_path, &opts) {
        Ok(Some(c)) => c,
        Ok(None) => {
            tracing::warn!(
                "{} not found: starting with no clients",
                conf_path.display()
            );
            Config::empty(&opts)
        }
        Err(e) => return Err(e.to_string()),
    };
    tracing::info!(
        "{} clients loaded from {}",
        config.clients.len(),
        conf_path.display()
    );

    let (store, loaded) = Store::open(&flags.store_path(), crate::registrar::unix_now())
        .map_err(|e| e.to_string())?;
    let store = Arc::new(store);

    let udp = Udp::bind(&flags.listen)
        .await
        .map_err(|e| format!("cannot listen on udp {:?}: {e}", flags.listen))?;
    let tcp = Tcp::bind(&flags.listen, TcpLimits::default())
        .await
        .map_err(|e| format!("cannot listen on tcp {:?}: {e}", flags.listen))?;
    let ctl_path = flags.ctl_path();
    let ctl = crate::control::bind(&ctl_path)
        .map_err(|e| format!("control socket {}: {e}", ctl_path.display()))?;
    let _socket_file = crate::control::SocketFile(ctl_path.clone());

    let addrs = udp.local_addrs();
    let local = Local::new(
        addrs.clone(),
        vec![config.general.realm.clone(), crate::cli::hostname()],
    );
    let transports = Transports {
        udp: Arc::new(udp),
        tcp: Arc::new(tcp),
        debug: flags.debug.then(|| Arc::new(DebugLog::new())),
    };
    let daemon = Arc::new(Daemon {
        core: Mutex::new(Core::new(
            Arc::new(config),
            local,
            Some((store.clone(), loaded)),
            CoreOptions {
                nonce_lifetime: Duration::from_secs(flags.nonce_expire),
            },
        )),
        transports: transports.clone(),
        opts,
        conf_path,
        dir: flags.dir.clone(),
        started: Instant::now(),
        limits: Limits::default(),
        reload_lock: Mutex::new(()),
        store: store.clone(),
        weak: std::sync::OnceLock::new(),
        runtime: tokio::runtime::Handle::current(),
    });
    let _ = daemon.weak.set(Arc::downgrade(&daemon));

    let sink: Arc<dyn Sink> = daemon.clone();
    transports
        .udp
        .spawn_receivers(sink.clone(), flags.udp_threads as usize);
    transports.tcp.start(sink);
    tokio::spawn(crate::control::serve(ctl, daemon.clone()));
    {
        let d = daemon.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next_trim = Instant::now() + TRIM_EVERY;
            loop {
                tick.tick().await;
                if Instant::now() >= next_trim {
                    next_trim = Instant::now() + TRIM_EVERY;
                    trim_heap();
                }
                let mut out = Vec::new();
                let pending = {
                    let mut core = crate::lock(&d.core);
                    core.on_tick(Instant::now(), &mut out);
                    core.take_pending()
                };
                d.transports.send_all(out);
                d.clone().wait_pending(pending);
            }
        });
    }
    for a in &addrs {
        tracing::info!("listening on udp:{a} tcp:{a}");
    }
    tracing::info!("control socket {}", ctl_path.display());

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let d = daemon.clone();
                match tokio::task::spawn_blocking(move || d.reload()).await {
                    Ok(Ok(r)) => tracing::info!("SIGHUP: reloaded: {} clients, added {:?}, removed {:?}, changed {:?}", r.clients, r.added, r.removed, r.changed),
                    Ok(Err(e)) => tracing::error!("SIGHUP: reload refused, keeping the old configuration:\n{e}"),
                    Err(e) => tracing::error!("SIGHUP: reload failed: {e}"),
                }
            }
        }
    }
    tracing::info!("shutting down");
    daemon.store.flush();
    Ok(())
}

impl Sink for Daemon {
    fn on_message(&self, data: &[u8], peer: Peer, oversized: bool) {
        self.handle_batch(&[Datagram {
            data,
            peer,
            oversized,
        }]);
    }

    fn on_datagrams(&self, batch: &[Datagram<'_>]) {
        self.handle_batch(batch);
    }
}

impl Daemon {
    /// Parse a batch of received messages outside the lock, run them
    /// through the core under one lock, then send what it produced.
    fn handle_batch(&self, items: &[Datagram<'_>]) {
        let mut out = Vec::new();
        let mut parsed = Vec::with_capacity(items.len());
        let mut malformed = 0;
        for &Datagram {
            data,
            peer,
            oversized,
        } in items
        {
            if let Some(d) = &self.transports.debug {
                d.log(true, &peer, data);
            }
            let result = if oversized {
                Err(crate::sip::ParseError::TooLarge)
            } else {
                match peer.transport {
                    Transport::Udp => Message::parse(data, &self.limits),
                    Transport::Tcp => Message::parse_stream(data, &self.limits),
                }
            };
            match result {
                Ok(msg) => parsed.push((msg, peer)),
                Err(e) => {
                    if malformed::is_noise(data) {
                        continue;
                    }
                    malformed += 1;
                    tracing::debug!("malformed message from {peer}: {e}");
                    if let Some(resp) = malformed::bad_request(data, &e) {
                        out.push(Out {
                            dest: peer,
                            data: resp,
                        });
                    }
                }
            }
        }
        let pending = {
            let mut core = crate::lock(&self.core);
            core.counters.malformed += malformed;
            let now = Instant::now();
            for (msg, peer) in parsed {
                core.on_message(msg, peer, now, &mut out);
            }
            core.take_pending()
        };
        if !out.is_empty() {
            self.transports.send_all(out);
        }
        if !pending.is_empty() {
            if let Some(me) = self.me() {
                me.wait_pending(pending);
            }
        }
    }
}

impl Daemon {
    /// An `Arc` to ourselves for tasks spawned from `&self` callbacks.
    fn me(&self) -> Option<Arc<Daemon>> {
        self.weak.get().and_then(|w| w.upgrade())
    }

    /// Finish feature answers once the store has committed their writes.
    fn wait_pending(self: Arc<Self>, pending: Vec<Pending>) {
        for (rx, deferred) in pending {
            let d = self.clone();
            // Called from UDP threads too: spawn on the runtime by handle.
            self.runtime.spawn(async move {
                let result = rx
                    .await
                    .unwrap_or_else(|_| Err("store writer stopped".into()));
                let mut out = Vec::new();
                d.core
                    .lock()
                    .unwrap()
                    .resume(deferred, result, Instant::now(), &mut out);
                d.transports.send_all(out);
            });
        }
    }

    /// Re-read sip.conf: validate first, keep the old config on any error,
    /// swap atomically on success.
    pub fn reload(&self) -> Result<proto::ReloadReport, String> {
        let _one = crate::lock(&self.reload_lock);
        let new = match Config::load(&self.conf_path, &self.opts) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(format!(
                    "{}: file not found; keeping the current configuration",
                    self.conf_path.display()
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        let clients = new.clients.len();
        let mut core = crate::lock(&self.core);
        let diff = core.config().diff(&new);
        core.set_config(Arc::new(new));
        Ok(proto::ReloadReport {
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
            clients,
        })
    }

    fn status(&self) -> proto::Status {
        let core = crate::lock(&self.core);
        let config = core.config();
        let mut listen = Vec::new();
        for a in self.transports.udp.local_addrs() {
            listen.push(format!("udp:{a}"));
        }
        for a in self.transports.tcp.local_addrs() {
            listen.push(format!("tcp:{a}"));
        }
        let c = &core.counters;
        let counter = |name: &str, value: u64| proto::Counter {
            name: name.into(),
            value,
        };
        proto::Status {
            name: "sipd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            realm: config.general.realm.clone(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            listen,
            country: config.country.clone(),
            city: config.city.clone(),
            dir: self.dir.display().to_string(),
            config: self.conf_path.display().to_string(),
            clients: config.clients.len(),
            registrations: core.registrar().len(),
            calls: core.calls().len(),
            transactions: core.transaction_count(),
            counters: vec![
                counter("requests in", c.requests_in),
                counter("responses in", c.responses_in),
                counter("malformed in", c.malformed),
                counter("retransmissions absorbed", c.retransmissions),
                counter("replies sent", c.replies_sent),
                counter("auth failures", c.auth_failures),
                counter("registrations accepted", c.registrations),
                counter("calls started", c.calls_started),
                counter("overload rejections", c.overload),
                counter("store writes pending", self.store.pending() as u64),
                counter("tcp connections", self.transports.tcp.connections() as u64),
            ],
        }
    }
}

impl crate::control::Handler for Daemon {
    async fn handle(self: Arc<Self>, cmd: Command) -> Response {
        match cmd {
            Command::Status => Response::ok(Reply::Status(self.status())),
            Command::Reload => {
                let d = self.clone();
                match tokio::task::spawn_blocking(move || d.reload()).await {
                    Ok(Ok(r)) => {
                        tracing::info!(
                            "reloaded: added {:?}, removed {:?}, changed {:?}",
                            r.added,
                            r.removed,
                            r.changed
                        );
                        Response::ok(Reply::Reload(r))
                    }
                    Ok(Err(e)) => {
                        tracing::error!("reload refused, keeping the old configuration:\n{e}");
                        Response::error(e)
                    }
                    Err(e) => Response::error(format!("reload failed: {e}")),
                }
            }
            Command::Regs { name } => Response::ok(Reply::Regs(self.regs(name.as_deref()))),
            Command::Calls => Response::ok(Reply::Calls(self.calls())),
            Command::Cdr { last } => {
                let store = self.store.clone();
                let n = last.unwrap_or(20).min(10_000) as usize;
                match tokio::task::spawn_blocking(move || store.recent_cdrs(n)).await {
                    Ok(Ok(rows)) => Response::ok(Reply::Cdr(proto::Cdrs {
                        records: rows.into_iter().map(cdr_of_row).collect(),
                    })),
                    Ok(Err(e)) => Response::error(e.to_string()),
                    Err(e) => Response::error(format!("cdr: {e}")),
                }
            }
            Command::Fwd { who, action } => self.fwd(&who, action).await,
        }
    }
}

fn cdr_of_row(r: crate::store::CdrRow) -> proto::Cdr {
    proto::Cdr {
        call_id: r.call_id,
        caller: r.caller,
        callerid: r.callerid,
        accountcode: r.accountcode,
        dialed: r.dialed,
        target: r.target,
        disposition: r.disposition,
        code: r.code,
        start: r.start,
        answer: r.answer,
        end: r.end,
        duration: r.duration,
        billsec: r.billsec,
    }
}

impl Daemon {
    fn regs(&self, name: Option<&str>) -> proto::Regs {
        let core = crate::lock(&self.core);
        let now = Instant::now();
        let mut bindings: Vec<proto::Binding> = core
            .registrar()
            .iter()
            .filter(|b| name.is_none_or(|n| n == b.name))
            .map(|b| proto::Binding {
                name: b.name.clone(),
                contact: b.contact.clone(),
                source: b.source.to_string(),
                expires: b.remaining(now),
                user_agent: b.user_agent.clone(),
            })
            .collect();
        bindings.sort_by(|a, b| a.name.cmp(&b.name));
        proto::Regs { bindings }
    }

    fn calls(&self) -> proto::Calls {
        let core = crate::lock(&self.core);
        let now = Instant::now();
        let mut calls: Vec<_> = core.calls().iter().collect();
        calls.sort_by_key(|c| c.started);
        proto::Calls {
            calls: calls
                .into_iter()
                .map(|c| proto::CallInfo {
                    call_id: c.call_id.clone(),
                    caller: c.caller.clone(),
                    dialed: c.dialed.clone(),
                    target: c.target.clone(),
                    state: c.state.as_str().to_string(),
                    duration_secs: now.duration_since(c.started).as_secs(),
                })
                .collect(),
        }
    }

    /// `fwd WHO [action]`: WHO is a name or number; a change through a
    /// number that names several clients is refused with the candidates.
    async fn fwd(&self, who: &str, action: Option<proto::FwdAction>) -> Response {
        use crate::forwards::{Forwarding, Override, SetBy};
        let rx = {
            let mut core = crate::lock(&self.core);
            let config = core.config().clone();
            let matches = config.lookup(who);
            if matches.is_empty() {
                return Response::error(format!("no client named or numbered '{who}'"));
            }
            let Some(action) = action else {
                return Response::ok(Reply::Fwd(fwd_report(&core, &matches)));
            };
            if matches.len() > 1 {
                let names: Vec<&str> = matches.iter().map(|c| c.name.as_str()).collect();
                return Response::error(format!(
                    "'{who}' names several clients ({}): use a name",
                    names.join(", ")
                ));
            }
            let client = matches[0];
            if client.role != crate::config::Role::User {
                return Response::error(format!(
                    "{} is not a user client: no forwarding",
                    client.name
                ));
            }
            let forwarding = match &action {
                proto::FwdAction::Always { number } | proto::FwdAction::Unavail { number } => {
                    if let Err(e) = crate::features::validate_forward(&config, client, number) {
                        return Response::error(e);
                    }
                    if matches!(action, proto::FwdAction::Always { .. }) {
                        Forwarding::Always(number.clone())
                    } else {
                        Forwarding::Unavailable(number.clone())
                    }
                }
                proto::FwdAction::Clear => Forwarding::None,
            };
            let ov = Override::new(forwarding, SetBy::Sipctl);
            let row = ov.to_row(&client.name, crate::registrar::unix_now());
            core.forwards_mut().set(&client.name, ov);
            self.store.set_forward(row)
        };
        match rx.await {
            Ok(Ok(())) => {
                let core = crate::lock(&self.core);
                let config = core.config().clone();
                Response::ok(Reply::Fwd(fwd_report(&core, &config.lookup(who))))
            }
            Ok(Err(e)) => Response::error(format!("forwarding not saved: {e}")),
            Err(_) => Response::error("forwarding not saved: store writer stopped"),
        }
    }
}

fn fwd_report(core: &Core, clients: &[&crate::config::Client]) -> proto::FwdReport {
    use crate::forwards::Forwarding;
    proto::FwdReport {
        clients: clients
            .iter()
            .map(|c| {
                let (f, source) = core.forwards().effective(c);
                let (kind, number) = match &f {
                    Forwarding::None => ("none", None),
                    Forwarding::Always(n) => ("always", Some(n.clone())),
                    Forwarding::Unavailable(n) => ("unavail", Some(n.clone())),
                };
                proto::FwdState {
                    name: c.name.clone(),
                    kind: kind.into(),
                    number,
                    source: (kind != "none" || source != crate::forwards::Source::Config)
                        .then(|| source.as_str().to_string()),
                }
            })
            .collect(),
    }
}
