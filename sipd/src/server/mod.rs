//! Start-up, the running daemon and shutdown: loads sip.conf, binds the SIP
//! sockets and the control socket, ticks the core's timers, reloads on
//! SIGHUP or `reload`, and stops cleanly on SIGTERM/SIGINT (socket file
//! removed, store flushed). What the transports read goes through
//! `ingest` (parse, core, effects); control commands are in `cmd/`, one
//! file per command; the Prometheus endpoint (`metrics=`) in `metrics/`.

mod cmd;
mod ingest;
mod metrics;
mod security;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::Flags;
use crate::config::{self, Config};
use crate::core::{Core, CoreOptions, Effects, Local};
use crate::sip::Limits;
use crate::store::Store;
use crate::time::Now;
use crate::transport::tls::{Tls, TlsFiles, TlsPaths};
use crate::transport::{DebugLog, Sink, Tcp, Transport, Transports, Udp};

/// Interval of the core's timer tick.
const TICK: Duration = Duration::from_millis(20);

/// How often freed heap memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// After a burst (a flood, a benchmark) the allocator keeps the memory
/// the transaction tables freed; give it back so that the resident size
/// follows the real state (with glibc: `malloc_trim`; with mimalloc: a
/// forced collection of the calling thread's heap). Blocks freed by
/// another thread than the one that allocated them are only reclaimed by
/// their owner, so every thread that runs the core calls this now and
/// then: the tick after shrinking the tables, tokio workers when they park
/// (at most every [`TRIM_EVERY`]), UDP reader threads when idle
/// ([`Sink::on_idle`]).
pub(crate) fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(feature = "mimalloc")]
    {
        extern "C" {
            // mimalloc.h: void mi_collect(bool force); linked in by the
            // mimalloc crate (its libmimalloc-sys builds the C library).
            fn mi_collect(force: bool);
        }
        // SAFETY: mi_collect takes a plain bool and only frees memory the
        // allocator no longer uses.
        unsafe { mi_collect(true) };
    }
}

/// [`release_memory`] when this thread last did it over [`TRIM_EVERY`]
/// ago: for threads that go idle often (tokio workers park between tasks).
fn release_memory_now_and_then() {
    thread_local! {
        static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|l| match l.get() {
        Some(at) if now.duration_since(at) < TRIM_EVERY => false,
        _ => {
            l.set(Some(now));
            true
        }
    });
    if due {
        release_memory();
    }
}

/// Everything the tasks share.
pub struct Daemon {
    pub(super) core: Mutex<Core>,
    pub(super) transports: Transports,
    pub(super) opts: config::Options,
    pub(super) conf_path: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) started: Instant,
    pub(super) limits: Limits,
    /// One reload at a time (parsing happens outside the core lock).
    pub(super) reload_lock: Mutex<()>,
    pub(super) store: Arc<Store>,
    pub(super) weak: std::sync::OnceLock<std::sync::Weak<Daemon>>,
    pub(super) runtime: tokio::runtime::Handle,
    /// The TLS certificates in force (replaced on reload).
    pub(super) tls: Arc<Tls>,
    /// A `tls:` listener is open: a reload must keep a certificate.
    pub(super) tls_listening: bool,
    /// `security_log=`.
    pub(super) security: security::SecurityLog,
    /// Banned sources, dropped unparsed.
    pub(super) drops: security::DropList,
    /// The metrics listener (`metrics=`), moved by a reload.
    pub(super) metrics: Mutex<Option<metrics::Listener>>,
    /// The RTP relay (`media=`): its threads run whether or not a call
    /// is relayed (they sleep in epoll without one).
    pub(super) relay: Arc<crate::media::relay::Relay>,
    /// The PostgreSQL store's change feed (`None` with SQLite).
    pub(super) feed: Option<Feed>,
}

/// The change feed of a PostgreSQL store and this node's name.
pub(super) struct Feed {
    pub node: String,
    pub sync: Mutex<crate::store::postgres::Sync>,
}

/// The security log's path, relative to DIR.
fn security_path(dir: &std::path::Path, config: &Config) -> Option<PathBuf> {
    config.general.security_log.as_deref().map(|f| dir.join(f))
}

/// Tell systemd (when it started us with NOTIFY_SOCKET); best effort.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("systemd notify: {e}");
    }
}

/// Read and check the TLS files `config` names (relative to `dir`). With a
/// TLS listener a certificate and key are required.
fn load_tls(dir: &std::path::Path, config: &Config, listening: bool) -> Result<TlsFiles, String> {
    let g = &config.general;
    let paths = TlsPaths::new(
        dir,
        g.tls_cert.as_deref(),
        g.tls_key.as_deref(),
        g.tls_ca.as_deref(),
    );
    if listening && (paths.cert.is_none() || paths.key.is_none()) {
        return Err("a tls: listener needs tls_cert= and tls_key= (PEM files) in [general]".into());
    }
    let roots = config
        .clients
        .iter()
        .any(|c| c.transport == config::Transport::Tls);
    TlsFiles::load(&paths, roots).map_err(|e| format!("tls: {e}"))
}

/// Run sipd until SIGTERM/SIGINT. Errors are start-up errors, to be printed.
pub fn run(flags: Flags) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_park(release_memory_now_and_then)
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
    // The signal handlers come first, before any socket can be seen or
    // systemd is told we are ready: a SIGHUP sent at once (`systemctl
    // reload` right after the start, a test) would otherwise meet the
    // default action and kill the daemon.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
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

    let (store, loaded, pg) = open_store(&flags).await?;
    let store = Arc::new(store);
    let (feed, mut store_events) = match pg {
        Some(pg) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let node = pg.node.clone();
            let sync = crate::store::postgres::Sync::start(pg, tx)?;
            (
                Some(Feed {
                    node,
                    sync: Mutex::new(sync),
                }),
                Some(rx),
            )
        }
        None => (None, None),
    };

    let sip_addrs = flags.sip_addrs();
    let tls_addrs = flags.tls_addrs();
    let needs_cert = !tls_addrs.is_empty() || !flags.wss_addrs().is_empty();
    let tls_files = load_tls(&flags.dir, &config, needs_cert)?;
    let tls = Arc::new(Tls::new(tls_files));
    let udp = Udp::bind(&sip_addrs)
        .await
        .map_err(|e| format!("cannot listen on udp {sip_addrs:?}: {e}"))?;
    let tcp = Tcp::bind(&sip_addrs, flags.tcp_limits())
        .await
        .map_err(|e| format!("cannot listen on tcp {sip_addrs:?}: {e}"))?;
    let tls_tcp = Tcp::bind_tls(&tls_addrs, flags.tcp_limits(), tls.clone())
        .await
        .map_err(|e| format!("cannot listen on tls {tls_addrs:?}: {e}"))?;
    let ws_addrs = flags.ws_addrs();
    let wss_addrs = flags.wss_addrs();
    let ws = if ws_addrs.is_empty() {
        None
    } else {
        let ws = Tcp::bind_ws(&ws_addrs, flags.tcp_limits(), None)
            .await
            .map_err(|e| format!("cannot listen on ws {ws_addrs:?}: {e}"))?;
        ws.set_origins(config.general.ws_origins.clone());
        Some(Arc::new(ws))
    };
    let wss = if wss_addrs.is_empty() {
        None
    } else {
        let wss = Tcp::bind_ws(&wss_addrs, flags.tcp_limits(), Some(tls.clone()))
            .await
            .map_err(|e| format!("cannot listen on wss {wss_addrs:?}: {e}"))?;
        wss.set_origins(config.general.ws_origins.clone());
        Some(Arc::new(wss))
    };
    let metrics_socket = match config.general.metrics {
        Some(a) => {
            Some(metrics::bind(a).map_err(|e| format!("cannot listen on metrics={a}: {e}"))?)
        }
        None => None,
    };
    let ctl_path = flags.ctl_path();
    let ctl = crate::control::bind(&ctl_path)
        .map_err(|e| format!("control socket {}: {e}", ctl_path.display()))?;
    let _socket_file = crate::control::SocketFile(ctl_path.clone());

    let addrs = udp.local_addrs();
    let tls_addrs = tls_tcp.local_addrs();
    let mut streams: Vec<(Transport, std::net::SocketAddr)> =
        tls_addrs.iter().map(|a| (Transport::Tls, *a)).collect();
    for t in ws.iter().chain(wss.iter()) {
        streams.extend(t.local_addrs().into_iter().map(|a| (t.kind(), a)));
    }
    let local =
        Local::new(addrs.clone(), vec![crate::cli::hostname()]).with_listeners(streams.clone());
    let transports = Transports {
        udp: Arc::new(udp),
        tcp: Arc::new(tcp),
        tls: Some(Arc::new(tls_tcp)),
        ws,
        wss,
        debug: flags.debug.then(|| Arc::new(DebugLog::new())),
    };
    // Two forwarding threads on a small box, up to four on a bigger one:
    // each takes whole sessions, and fewer threads batch more per wake-up.
    let relay_threads = match flags.rtp_threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get().clamp(1, 4))
            .unwrap_or(2),
        n => n as usize,
    };
    let relay = crate::media::relay::Relay::start(relay_threads)
        .map_err(|e| format!("cannot start the media relay: {e}"))?;
    let daemon = Arc::new(Daemon {
        core: Mutex::new(Core::new(
            Arc::new(config),
            local,
            Some(&loaded),
            CoreOptions {
                nonce_lifetime: Duration::from_secs(flags.nonce_expire),
                tx_limits: flags.tx_limits(),
                ..CoreOptions::default()
            },
            Now::read(),
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
        tls,
        tls_listening: needs_cert,
        security: security::SecurityLog::default(),
        drops: security::DropList::default(),
        metrics: Mutex::new(None),
        relay,
        feed,
    });
    daemon.security.open(
        security_path(
            &flags.dir,
            &daemon.with_core(Effects::new(), |c, _| c.config().clone()),
        )
        .as_deref(),
    )?;
    let _ = daemon.weak.set(Arc::downgrade(&daemon));
    if let Some(socket) = metrics_socket {
        *crate::lock(&daemon.metrics) = Some(daemon.start_metrics(socket)?);
    }

    let sink: Arc<dyn Sink> = daemon.clone();
    transports
        .udp
        .spawn_receivers(sink.clone(), flags.udp_threads as usize)
        .map_err(|e| format!("cannot start UDP threads: {e}"))?;
    transports.tcp.start(sink.clone());
    for t in [&transports.tls, &transports.ws, &transports.wss]
        .into_iter()
        .flatten()
    {
        t.start(sink.clone());
    }
    tokio::spawn(crate::control::serve(ctl, daemon.clone()));
    if let Some(mut rx) = store_events.take() {
        // What the other nodes changed, applied as it comes.
        let d = daemon.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                d.with_core(Effects::new(), |core, fx| {
                    core.on_store_event(ev, Now::read(), fx)
                });
            }
        });
    }
    {
        let d = daemon.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next_trim = Instant::now() + TRIM_EVERY;
            let mut next_media = Instant::now() + MEDIA_CHECK;
            loop {
                tick.tick().await;
                if Instant::now() >= next_media {
                    next_media = Instant::now() + MEDIA_CHECK;
                    d.check_media();
                }
                if Instant::now() >= next_trim {
                    next_trim = Instant::now() + TRIM_EVERY;
                    d.with_core(Effects::new(), |core, _| core.shrink_tables());
                    release_memory();
                }
                d.with_core(Effects::new(), |core, fx| core.on_tick(Now::read(), fx));
            }
        });
    }
    for a in &addrs {
        tracing::info!("listening on udp:{a} tcp:{a}");
    }
    for (t, a) in &streams {
        tracing::info!("listening on {}:{a}", t.name());
    }
    tracing::info!("control socket {}", ctl_path.display());
    // systemd (Type=notify): ready once every socket is bound and served.
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!(
            "{} clients, listening on {} address(es)",
            daemon.with_core(Effects::new(), |c, _| c.config().clients.len()),
            addrs.len() + streams.len()
        )),
    ]);

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
    daemon.relay.stop();
    notify(&[sd_notify::NotifyState::Stopping]);
    // Writes a failing store cannot take are logged (CDRs in full) here.
    daemon.store.finish();
    Ok(())
}

/// How often relayed calls are checked for `media_timeout`.
const MEDIA_CHECK: Duration = Duration::from_secs(1);

/// Opens the store `--store` names: SQLite (default `DIR/sipd.db`) or
/// PostgreSQL, with the options of this node for the change feed.
async fn open_store(
    flags: &Flags,
) -> Result<
    (
        Store,
        crate::store::Loaded,
        Option<crate::store::postgres::PgOptions>,
    ),
    String,
> {
    let now = Now::read().unix();
    let Some(crate::cli::StoreUrl::Postgres(url)) = &flags.store else {
        let path = flags
            .store_path()
            .unwrap_or_else(|| flags.dir.join("sipd.db"));
        let (store, loaded) = Store::open(&path, now).map_err(|e| e.to_string())?;
        return Ok((store, loaded, None));
    };
    let node_addr = match flags.node_address {
        Some(a) => a,
        None => {
            let a = flags.sip_addrs().first().copied().ok_or(
                "--store postgresql:// needs a UDP listen address (-b IP:PORT) or --node-address",
            )?;
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(format!(
                    "-b {a} is not an address other nodes can send to: give --node-address IP:PORT"
                ));
            }
            a
        }
    };
    let pg = crate::store::postgres::PgOptions::new(url, &flags.node_name(), node_addr)?;
    let opened = {
        let pg = pg.clone();
        // The PostgreSQL client blocks (it runs a runtime of its own).
        let spool = flags.dir.join("sipd-cdr-spool.db");
        tokio::task::spawn_blocking(move || Store::open_postgres(&pg, &spool, now))
            .await
            .map_err(|e| format!("store: {e}"))?
    };
    let (store, loaded) = opened.map_err(|e| e.to_string())?;
    tracing::info!(
        store = %pg.display(),
        node = %pg.node,
        "PostgreSQL store: {} bindings of every node and {} forwarding overrides loaded",
        loaded.bindings.len(),
        loaded.forwards.len()
    );
    Ok((store, loaded, Some(pg)))
}

impl Daemon {
    /// Answered relayed calls without media for `media_timeout` are ended.
    fn check_media(&self) {
        if self.relay.is_empty() {
            return;
        }
        let timeout = self.with_core(Effects::new(), |c, _| c.config().general.media_timeout);
        if timeout == 0 {
            return;
        }
        let idle = self.relay.idle(Duration::from_secs(u64::from(timeout)));
        if !idle.is_empty() {
            self.with_core(Effects::new(), |core, fx| {
                core.on_media_idle(&idle, Now::read(), fx)
            });
        }
    }

    /// Re-read sip.conf: validate first, keep the old config on any error,
    /// swap atomically on success.
    pub fn reload(&self) -> Result<proto::ReloadReport, String> {
        let _one = crate::lock(&self.reload_lock);
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        notify(&reloading);
        let r = self.reload_locked();
        notify(&[sd_notify::NotifyState::Ready]);
        r
    }

    fn reload_locked(&self) -> Result<proto::ReloadReport, String> {
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
        // The certificates too, all or nothing with sip.conf: a file that
        // does not load keeps the old ones (and the old sip.conf) in force.
        let tls = load_tls(&self.dir, &new, self.tls_listening)
            .map_err(|e| format!("{e}; keeping the current configuration"))?;
        self.security
            .open(security_path(&self.dir, &new).as_deref())
            .map_err(|e| format!("{e}; keeping the current configuration"))?;
        // Last of the checks: a metrics= address that cannot be bound
        // refuses the reload (the listener stays where it was).
        self.move_metrics(new.general.metrics)?;
        let clients = new.clients.len();
        let origins = new.general.ws_origins.clone();
        let diff = self.with_core(Effects::new(), |core, fx| {
            let diff = core.config().diff(&new);
            core.set_config(Arc::new(new), fx);
            diff
        });
        let serial = tls.serial.clone();
        self.tls.replace(tls);
        for ws in [&self.transports.ws, &self.transports.wss]
            .into_iter()
            .flatten()
        {
            ws.set_origins(origins.clone());
        }
        if let Some(serial) = serial {
            tracing::info!("tls: certificate serial {serial} in force for new handshakes");
        }
        Ok(proto::ReloadReport {
            added: diff.added,
            removed: diff.removed,
            changed: diff.changed,
            clients,
        })
    }
}
