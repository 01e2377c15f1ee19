//! `floodgate run`: the daemon. It attaches the configured interfaces, applies the
//! configuration, serves the push API and /metrics, sweeps expired entries, saves snapshots,
//! logs attack events, and reloads on SIGHUP or when the file changes.
//!
//! The daemon owns no state the kernel does not already hold: lists, counters, the program and
//! its attachments are pinned, so a restart (or `kill -9`) loses nothing and filtering never
//! stops. A start re-adopts what it finds; only a fresh boot (no pinned maps) restores the
//! snapshot. Every change takes the same cross-process lock the CLI takes, so the CLI and the
//! API can be used side by side.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use filter_common::Action;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    attack,
    config::{self, DaemonFile, Desired, LogFormat},
    error::{Error, Result, one_line},
    lists::ListKind,
    loader::{self, PinDir},
    metrics::DaemonMetrics,
    progress::Progress,
    snapshot,
    state::{Access, State},
    sys::{self, DaemonLock, StateLock},
};

/// What `floodgate run` was asked to do.
pub struct Options {
    pub config: PathBuf,
    /// Overrides `daemon.log_format`.
    pub log_format: Option<LogFormat>,
    pub pin: PinDir,
}

/// The running configuration and what came with it.
pub struct Runtime {
    pub daemon: DaemonFile,
    /// The API token (from `daemon.token_file`); None: writes are refused.
    pub token: Option<String>,
    /// `[auto]`, checked.
    pub auto: crate::auto::settings::AutoConfig,
    /// Hash of the file's bytes last applied (or rejected): a change is a new hash. None: the
    /// daemon started without a file, so the file's appearing is a change.
    file_hash: Option<u64>,
}

/// What the API handlers and the background tasks share.
pub struct Shared {
    pub pin: PinDir,
    state: Mutex<State>,
    pub runtime: RwLock<Runtime>,
    pub metrics: DaemonMetrics,
    /// Kernel id of the pinned STATS map the daemon opened: if the pin stops naming it, the
    /// pins were purged and the daemon's maps are no longer what the CLI sees.
    stats_map: Option<u32>,
    pub config_path: PathBuf,
    pub started: Instant,
    /// Bumped by every change made through the daemon (the snapshot writer watches it).
    changes: AtomicU64,
    /// Automatic mitigation's detector and metrics.
    pub auto: crate::auto::run::Auto,
}

impl Shared {
    /// The state for reading (no cross-process lock: the kernel's maps are always consistent
    /// entry by entry).
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a handler must not wedge the daemon: the maps are still fine.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Are the daemon's maps still the pinned ones? (No after `detach --purge` or an unmount.)
    pub fn pins_intact(&self) -> Result<()> {
        if self.stats_map.is_some() && loader::stats_map_id(&self.pin) == self.stats_map {
            return Ok(());
        }
        Err(Error::PinsGone {
            pin_dir: self.pin.root().to_path_buf(),
        })
    }

    /// Make a change under the lock the CLI takes too. Refused when the pins are gone: a
    /// change to maps nobody else can see would be reported done and have no effect.
    pub fn write<T>(&self, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let out = self.locked(|state| {
            self.pins_intact()?;
            change(state)
        });
        self.changes.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Run `work` under the lock the CLI takes too, after undoing a batch whose writer died
    /// part-way (a CLI command, or a handler of ours): what `work` sees holds whole batches.
    fn locked<T>(&self, work: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let _lock = StateLock::acquire(self.pin.root())?;
        let mut state = self.state();
        if let Some(r) = state.lists.recover()? {
            log_recovered(&r);
        }
        work(&mut state)
    }

    pub fn runtime(&self) -> std::sync::RwLockReadGuard<'_, Runtime> {
        self.runtime.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Say that an unfinished batch was undone.
fn log_recovered(r: &crate::lists::Recovered) {
    if r.stale {
        info!(event = "journal_stale", why = %r);
    } else {
        warn!(event = "journal_rolled_back", list = r.list, source = %r.source, pid = r.pid,
              started_unix_s = r.started_unix_s, undone = r.undone, why = %r);
    }
}

/// Set up logging: text or one JSON object per line, on stderr. `RUST_LOG` filters.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A configuration file read and checked, with its token and the hash of its bytes.
type Loaded = (Desired, Option<String>, u64);

fn reading(path: &Path) -> String {
    format!(
        "reading {} (a commented example: examples/floodgate.toml in the source tree)",
        path.display()
    )
}

/// Read and check the configuration file and its token: everything a (re)load needs before it
/// may change anything.
fn load_config(path: &Path) -> anyhow::Result<Loaded> {
    let text = sys::read_regular(path).with_context(|| reading(path))?;
    parse_config(path, text)
}

/// At start, a file that does not exist is no error (None): `floodgate run` starts with the
/// defaults, so that a fresh install starts (see [`run`]). A file that exists is read and
/// checked as on every reload.
fn load_config_at_start(path: &Path) -> anyhow::Result<Option<Loaded>> {
    match sys::read_regular(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        read => parse_config(path, read.with_context(|| reading(path))?).map(Some),
    }
}

fn parse_config(path: &Path, text: Vec<u8>) -> anyhow::Result<Loaded> {
    let file_hash = hash(&text);
    let text =
        String::from_utf8(text).with_context(|| format!("{} is not UTF-8", path.display()))?;
    let desired = config::parse(&path.display().to_string(), &text)?;
    let token = match &desired.daemon.token_file {
        // Which file's token_file: the error may be read far from the command that read it.
        Some(p) => Some(read_token(p).with_context(|| path.display().to_string())?),
        None => None,
    };
    Ok((desired, token, file_hash))
}

fn read_token(p: &Path) -> anyhow::Result<String> {
    let t = sys::read_regular(p)
        .with_context(|| format!("reading daemon.token_file {}", p.display()))?;
    let t = String::from_utf8(t)
        .with_context(|| format!("daemon.token_file {} is not UTF-8", p.display()))?;
    let t = t.trim().to_string();
    anyhow::ensure!(
        t.len() >= 16,
        "daemon.token_file {}: the token must be at least 16 characters",
        p.display()
    );
    Ok(t)
}

/// Mount bpffs where the pin directory needs it, if nothing is mounted there yet.
fn ensure_bpffs(pin: &PinDir) -> anyhow::Result<()> {
    if sys::on_bpffs(pin.root()) {
        return Ok(());
    }
    let target = Path::new("/sys/fs/bpf");
    std::fs::create_dir_all(target).ok();
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    // SAFETY: NUL-terminated strings; a null data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            c("bpf").as_ptr(),
            c("/sys/fs/bpf").as_ptr(),
            c("bpf").as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("mounting bpffs at /sys/fs/bpf");
    }
    info!(event = "bpffs_mounted", path = "/sys/fs/bpf");
    sys::require_bpffs(pin.root())?;
    Ok(())
}

/// Check that every configured interface exists (before anything changes).
fn check_interfaces(d: &DaemonFile) -> Result<()> {
    for iface in &d.interfaces {
        if sys::if_index(iface).is_none() {
            return Err(Error::UnknownInterface {
                name: iface.clone(),
            });
        }
    }
    Ok(())
}

/// Attach what the configuration names and detach what it no longer names.
fn attach_configured(
    state: &mut State,
    pin: &PinDir,
    old: &[String],
    new: &DaemonFile,
) -> Result<()> {
    let outcomes = loader::attach(&mut state.ebpf, pin, &new.interfaces, new.attach_mode)?;
    state.restore_synproxy()?;
    for o in outcomes {
        if o.already {
            info!(event = "interface_adopted", interface = %o.iface, mode = o.mode.name());
        } else {
            info!(event = "interface_attached", interface = %o.iface, mode = o.mode.name(),
                  fell_back = o.fell_back.as_deref().unwrap_or(""));
        }
    }
    let gone: Vec<String> = old
        .iter()
        .filter(|i| !new.interfaces.contains(i))
        .cloned()
        .collect();
    if !gone.is_empty() {
        let attached: Vec<String> = loader::attachments(pin)?
            .into_iter()
            .map(|a| a.iface)
            .filter(|i| gone.contains(i))
            .collect();
        for iface in loader::detach(pin, &attached, false, false)? {
            info!(event = "interface_detached", interface = %iface, why = "not in the configuration");
        }
    }
    Ok(())
}

/// What `floodgate run --check-config FILE` found: the file and its token file are good.
pub struct Checked {
    pub desired: Desired,
    /// The token file holds a usable token.
    pub token: bool,
}

/// Read and check a configuration file and its token file exactly as a start or a reload
/// does, and that the interfaces it names exist here; nothing else is touched (no bpffs, no
/// maps, no lock, no port).
pub fn check_config(path: &Path) -> anyhow::Result<Checked> {
    let (desired, token, _) = load_config(path)?;
    check_interfaces(&desired.daemon)
        .with_context(|| format!("{}: daemon.interfaces (a start would fail)", path.display()))?;
    Ok(Checked {
        desired,
        token: token.is_some(),
    })
}

impl std::fmt::Display for Checked {
    /// What `floodgate run` would do with the file, one line per part.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let d = &self.desired.daemon;
        let s = &self.desired.settings;
        let or = |v: Vec<&str>, none: &str| {
            if v.is_empty() {
                none.to_string()
            } else {
                v.join(" ")
            }
        };
        writeln!(f, "mode:        {}", s.mode.name())?;
        if d.interfaces.is_empty() {
            writeln!(f, "interfaces:  none (nothing is attached)")?;
        } else {
            let ifaces = d.interfaces.join(" ");
            writeln!(f, "interfaces:  {ifaces} ({} mode)", d.attach_mode.name())?;
        }
        writeln!(f, "listen:      {}", d.listen)?;
        match (&d.token_file, self.token) {
            (Some(p), true) => writeln!(f, "api writes:  with the token in {}", p.display())?,
            _ => writeln!(f, "api writes:  disabled (no daemon.token_file)")?,
        }
        let reads = if d.protect_reads {
            "need the token"
        } else {
            "open"
        };
        writeln!(f, "api reads:   {reads}")?;
        let sanity = filter_common::sanity_bits::ALL
            .iter()
            .filter(|(bit, _)| s.sanity.bits & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        writeln!(f, "sanity:      {}", or(sanity, "off"))?;
        let reflection = if s.reflection.enabled { "on" } else { "off" };
        writeln!(f, "reflection:  {reflection}")?;
        if s.synguard.enabled {
            writeln!(f, "synguard:    on ({})", s.synguard.summary())?;
        } else {
            writeln!(f, "synguard:    off")?;
        }
        writeln!(f, "rules:       {}", s.rules.len())?;
        let a = &self.desired.auto;
        if a.groups.is_empty() {
            writeln!(f, "auto:        off (no [[auto.groups]])")?;
        } else {
            let groups: Vec<String> = a
                .groups
                .iter()
                .map(|g| format!("{} ({} prefixes)", g.name, g.prefixes.len()))
                .collect();
            writeln!(
                f,
                "auto:        {}, groups {}",
                filter_common::auto_mode::name(a.mode),
                groups.join(", ")
            )?;
        }
        let limits: Vec<&str> = s.limits.keys().map(|c| c.name()).collect();
        match limits.len() {
            0 => writeln!(f, "limits:      none")?,
            n => writeln!(f, "limits:      {n} ({})", limits.join(" "))?,
        }
        for (name, list) in [
            ("blocklist", &self.desired.block),
            ("allowlist", &self.desired.allow),
        ] {
            match list {
                Some(items) => writeln!(
                    f,
                    "{name}:   {} entries of source config (replace the source's)",
                    items.len()
                )?,
                None => writeln!(f, "{name}:   left as it is (not in [lists])")?,
            }
        }
        if d.snapshot.as_os_str().is_empty() {
            writeln!(f, "snapshot:    off")
        } else {
            writeln!(
                f,
                "snapshot:    {} (checked every {})",
                d.snapshot.display(),
                humantime::format_duration(d.snapshot_interval)
            )
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT.
///
/// With no file at `opts.config` it starts anyway, so `systemctl start floodgate` works right
/// after an install: every `[daemon]` key at its default (no interfaces attached, no token so
/// API writes are refused, listen on 127.0.0.1:9477), and the defences and lists are left as
/// they are (the CLI may have set them). The file is read once it appears, as on any change.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let (desired, token, file_hash) = match load_config_at_start(&opts.config)? {
        Some((desired, token, file_hash)) => (desired, token, Some(file_hash)),
        None => {
            let desired = Desired {
                daemon: DaemonFile::default(),
                auto: Default::default(),
                settings: Default::default(),
                block: None,
                allow: None,
            };
            (desired, None, None)
        }
    };
    init_logging(opts.log_format.unwrap_or(desired.daemon.log_format));
    if file_hash.is_none() {
        warn!(
            event = "config_missing",
            path = %opts.config.display(),
            running = format!(
                "with the defaults: no interfaces attached, API writes disabled (no token), \
                 listen {}; defences and lists left as they are",
                desired.daemon.listen
            ),
            fix = "write the file (every key, commented: examples/floodgate.toml; check it with \
                   `floodgate run --check-config FILE`): it is read within a second, listen \
                   and map sizes at the next start"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(serve(opts, desired, token, file_hash));
    if let Err(e) = &result {
        error!(event = "failed", error = %format!("{e:#}"));
    }
    result
}

async fn serve(
    opts: Options,
    desired: Desired,
    token: Option<String>,
    file_hash: Option<u64>,
) -> anyhow::Result<()> {
    let d = desired.daemon.clone();
    let pin = opts
        .pin
        .clone()
        .with_source_table(d.source_table_size)
        .with_blocklist_size(d.blocklist_size);
    // First of all: one daemon per pin directory, or a second one would apply its file to the
    // live maps before failing on the busy port.
    let _daemon_lock = DaemonLock::acquire(pin.root())?;
    ensure_bpffs(&pin)?;
    check_interfaces(&d)?;
    let fresh = !crate::state::has_state(&pin);
    let lock = StateLock::acquire(pin.root())?;
    let mut state = State::open(&pin, Access::Locked)?;
    let stats_map = loader::stats_map_id(&pin);
    if let Some(r) = &state.recovered {
        log_recovered(r);
    }
    if fresh {
        let text_logs = opts.log_format.unwrap_or(d.log_format) == LogFormat::Text;
        if let Err(e) = restore_snapshot(&mut state, &d.snapshot, text_logs) {
            // Leave nothing the next start could take for good state: these maps were made by
            // this start and hold a part of the snapshot at most.
            drop(state);
            let maps = pin.maps();
            if let Err(rm) = std::fs::remove_dir_all(&maps) {
                warn!(event = "cleanup_failed", path = %maps.display(), error = %rm);
            }
            return Err(e.into());
        }
    } else {
        info!(event = "maps_adopted", pin_dir = %pin.root().display(),
              why = "pinned maps found: lists and counters carry on");
    }
    // Without a file there is nothing to apply: the defences and lists stay as they are.
    if file_hash.is_some() {
        state.apply(&desired)?;
        crate::auto::run::apply(&state, &pin, &desired.auto)?;
        warn_synguard(&desired.settings);
    }
    attach_configured(&mut state, &pin, &[], &d)?;
    drop(lock);

    let open_files = match sys::raise_open_file_limit() {
        Ok(n) => n,
        Err(e) => {
            warn!(event = "open_file_limit_unchanged", error = %e);
            0
        }
    };
    // Each connection is a file descriptor; the maps, the listener and the log need some too.
    if open_files != 0 && open_files < d.max_connections as u64 + 64 {
        warn!(
            event = "open_file_limit_low",
            open_files,
            max_connections = d.max_connections,
            fix = "raise LimitNOFILE (systemd) or `ulimit -n`, or lower daemon.max_connections"
        );
    }
    let listener = tokio::net::TcpListener::bind(d.listen)
        .await
        .with_context(|| format!("listening on {} (daemon.listen)", d.listen))?;
    let shared = Arc::new(Shared {
        pin: pin.clone(),
        state: Mutex::new(state),
        runtime: RwLock::new(Runtime {
            daemon: d.clone(),
            token,
            auto: desired.auto.clone(),
            file_hash,
        }),
        metrics: DaemonMetrics::default(),
        stats_map,
        config_path: opts.config.clone(),
        started: Instant::now(),
        changes: AtomicU64::new(1),
        auto: Default::default(),
    });
    info!(event = "started", version = env!("CARGO_PKG_VERSION"), listen = %d.listen,
          config = %opts.config.display(), interfaces = ?d.interfaces, open_files,
          writes = if shared.runtime().token.is_some() { "token" } else { "disabled (no daemon.token_file)" });

    let app = crate::api::router(shared.clone(), d.max_body_bytes);
    // Aborted on SIGTERM below, which closes every connection it serves.
    let server = tokio::spawn(crate::connections::serve(listener, app, shared.clone()));
    tokio::spawn(crate::datalog::forward(pin.clone()));
    tokio::spawn(sweeper(shared.clone()));
    tokio::spawn(snapshotter(shared.clone()));
    tokio::spawn(attack_monitor(shared.clone()));
    tokio::spawn(top_sampler(shared.clone()));
    tokio::spawn(crate::auto::run::task(shared.clone()));
    tokio::spawn(config_watcher(shared.clone()));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let sh = shared.clone();
                tokio::task::spawn_blocking(move || reload(&sh, "SIGHUP")).await?;
            }
        }
    }
    server.abort();
    let sh = shared.clone();
    tokio::task::spawn_blocking(move || shutdown(&sh)).await?;
    Ok(())
}

/// `show_progress`: text logs, so a person may be watching (a bar is drawn only on a
/// terminal, and never between JSON log lines).
fn restore_snapshot(state: &mut State, path: &Path, show_progress: bool) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    let mut progress = show_progress.then(|| Progress::on_terminal("entries restored"));
    let mut report = |done, total| {
        if let Some(p) = progress.as_mut() {
            p.update(done, total);
        }
    };
    let restored = snapshot::read(path).and_then(|snap| match snap {
        None => Ok(None),
        Some(snap) => snapshot::restore(&mut state.lists, &snap, &mut report).map(Some),
    });
    drop(progress);
    match restored {
        Ok(None) => {
            let kept = snapshot::kept_aside(path);
            info!(event = "snapshot_none", path = %path.display(), why = "fresh maps, no snapshot yet",
                  corrupt_kept = ?kept);
        }
        Ok(Some(r)) => {
            info!(event = "snapshot_restored", path = %path.display(), entries = r.entries,
                  expired_skipped = r.expired);
        }
        // A snapshot that cannot be restored is moved aside, never overwritten or retried:
        // the next start begins without it, and the file stays for the operator.
        Err(Error::Snapshot { path, message }) => {
            let aside = snapshot::move_aside(&path)?;
            error!(event = "snapshot_corrupt", path = %path.display(), kept_as = %aside.display(),
                   error = %message);
            return Err(Error::SnapshotKeptAside {
                path,
                message,
                aside,
            });
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn shutdown(sh: &Shared) {
    let d = sh.runtime().daemon.clone();
    save_snapshot(sh, &d.snapshot);
    if d.detach_on_exit {
        match loader::detach(&sh.pin, &d.interfaces, false, false) {
            Ok(done) => {
                info!(event = "interfaces_detached", interfaces = ?done, why = "daemon.detach_on_exit")
            }
            Err(e) => warn!(event = "detach_failed", error = %one_line(&e)),
        }
    }
    info!(
        event = "stopped",
        filter = if d.detach_on_exit {
            "detached"
        } else {
            "still running"
        }
    );
}

/// Re-read the file; apply it only if all of it is good. A bad file changes nothing.
pub fn reload(sh: &Shared, why: &str) {
    let path = sh.config_path.clone();
    let (desired, token, file_hash) = match load_config(&path) {
        Ok(x) => x,
        Err(e) => {
            // Remember the bad file's hash: the watcher must not retry it every second.
            if let Ok(bytes) = sys::read_regular(&path) {
                sh.runtime
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .file_hash = Some(hash(&bytes));
            }
            sh.metrics.reloads.with_label_values(&["rejected"]).inc();
            error!(event = "reload_rejected", trigger = why, error = %format!("{e:#}"),
                   running = "unchanged");
            return;
        }
    };
    let old = sh.runtime().daemon.clone();
    let result = check_interfaces(&desired.daemon).and_then(|()| {
        sh.write(|state| {
            state.apply(&desired)?;
            crate::auto::run::apply(state, &sh.pin, &desired.auto)?;
            attach_configured(state, &sh.pin, &old.interfaces, &desired.daemon)
        })
    });
    let mut rt = sh.runtime.write().unwrap_or_else(|p| p.into_inner());
    rt.file_hash = Some(file_hash);
    if let Err(e) = result {
        sh.metrics.reloads.with_label_values(&["rejected"]).inc();
        error!(event = "reload_rejected", trigger = why, error = %format!("{e:#}"),
               running = "unchanged");
        return;
    }
    for (what, changed) in [
        ("listen", old.listen != desired.daemon.listen),
        (
            "max_body_bytes",
            old.max_body_bytes != desired.daemon.max_body_bytes,
        ),
        ("log_format", old.log_format != desired.daemon.log_format),
        (
            "blocklist_size",
            old.blocklist_size != desired.daemon.blocklist_size,
        ),
        (
            "source_table_size",
            old.source_table_size != desired.daemon.source_table_size,
        ),
    ] {
        if changed {
            warn!(
                event = "reload_partial",
                setting = what,
                why = "takes effect at the next start"
            );
        }
    }
    rt.daemon = desired.daemon;
    rt.token = token;
    rt.auto = desired.auto.clone();
    sh.metrics.reloads.with_label_values(&["applied"]).inc();
    let s = &desired.settings;
    info!(
        event = "reloaded",
        trigger = why,
        rules = s.rules.len(),
        limit_classes = s.limits.len(),
        synguard = s.synguard.enabled,
        mode = s.mode.name()
    );
    warn_synguard(s);
}

/// The SYN guard is on but this namespace's kernel would refuse its handshakes: say so.
fn warn_synguard(s: &crate::settings::Settings) {
    if s.synguard.enabled && sys::tcp_syncookies() == Some(0) {
        warn!(
            event = "synguard_syncookies_off",
            why = "net.ipv4.tcp_syncookies is 0: the kernel cannot complete the SYN guard's \
                   handshakes",
            fix = "sysctl -w net.ipv4.tcp_syncookies=1"
        );
    }
}

/// Reload when the file's bytes change (checked every second), or when it appears.
async fn config_watcher(sh: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Ok(bytes) = sys::read_regular(&sh.config_path) else {
            continue;
        };
        if Some(hash(&bytes)) != sh.runtime().file_hash {
            let s = sh.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&s, "file changed")).await;
        }
    }
}

/// Delete expired entries now and then (the data plane already ignores them).
async fn sweeper(sh: Arc<Shared>) {
    loop {
        let every = sh.runtime().daemon.sweep_interval;
        tokio::time::sleep(every).await;
        let s = sh.clone();
        let r = tokio::task::spawn_blocking(move || {
            s.write(|st| {
                let b = st.lists.sweep_expired(ListKind::Block)?;
                let a = st.lists.sweep_expired(ListKind::Allow)?;
                // Auto-bans since the last sweep: mark them in the front, so the data plane
                // goes back to skipping the blocklist for sources nobody listed.
                st.lists.refresh_front()?;
                Ok(a + b)
            })
        })
        .await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(event = "swept", expired_entries = n),
            Ok(Err(e)) => warn!(event = "sweep_failed", error = %one_line(&e)),
            Err(e) => warn!(event = "sweep_failed", error = %e),
        }
    }
}

fn save_snapshot(sh: &Shared, path: &Path) {
    if path.as_os_str().is_empty() {
        return;
    }
    let started = Instant::now();
    // Under the state lock: a CLI load under way must not be saved half done, and one that
    // died part-way is undone first; either way a reboot brings back whole batches only.
    let snap = match sh.locked(|state| snapshot::take(&state.lists)) {
        Ok(s) => s,
        Err(e) => {
            warn!(event = "snapshot_failed", error = %one_line(&e));
            return;
        }
    };
    match snapshot::write(path, &snap) {
        Ok(()) => tracing::debug!(event = "snapshot_written", path = %path.display(),
            entries = snap.blocklist.len() + snap.allowlist.len(),
            ms = started.elapsed().as_millis() as u64),
        Err(e) => warn!(event = "snapshot_failed", path = %path.display(), error = %one_line(&e)),
    }
}

/// Save the lists every `snapshot_interval` when something may have changed: a change through
/// the daemon, different entry counts (the CLI, auto-bans), or at least every tenth interval.
async fn snapshotter(sh: Arc<Shared>) {
    let seen: Arc<Mutex<(u64, Vec<usize>, u32)>> = Arc::default();
    loop {
        let d = sh.runtime().daemon.clone();
        tokio::time::sleep(d.snapshot_interval).await;
        let (s, seen) = (sh.clone(), seen.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let counts = {
                let st = s.state();
                let mut c = st.lists.map_counts(ListKind::Block).to_vec();
                c.extend(st.lists.map_counts(ListKind::Allow));
                c
            };
            let changes = s.changes.load(Ordering::Relaxed);
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.2 += 1;
            if (changes, &counts) != (seen.0, &seen.1) || seen.2 >= 10 {
                save_snapshot(&s, &d.snapshot);
                *seen = (changes, counts, 0);
            }
        })
        .await;
    }
}

/// `[daemon.top]`: every `every`, one second of samples; the top source nets and destination
/// ports become the `floodgate_top_*` gauges (replaced whole each time).
async fn top_sampler(sh: Arc<Shared>) {
    loop {
        let top = sh.runtime().daemon.top.clone();
        tokio::time::sleep(top.every.max(Duration::from_secs(1))).await;
        if top.sample == 0 {
            sh.metrics.top_source_nets.reset();
            sh.metrics.top_dst_ports.reset();
            continue;
        }
        let s = sh.clone();
        let r = tokio::task::spawn_blocking(move || {
            let counters = || -> Result<Vec<(u64, u64)>> {
                Ok(s.state()
                    .stats
                    .snapshot()?
                    .iter()
                    .map(|(_, c)| (c.packets, c.bytes))
                    .collect())
            };
            crate::top::sample_once(&s.pin, &counters, Duration::from_secs(1), top.sample, 10)
        })
        .await;
        match r {
            Ok(Ok(report)) => {
                sh.metrics.top_source_nets.reset();
                for row in &report.source_nets {
                    sh.metrics
                        .top_source_nets
                        .with_label_values(&[&row.key])
                        .set(row.pps);
                }
                sh.metrics.top_dst_ports.reset();
                for row in &report.dst_ports {
                    sh.metrics
                        .top_dst_ports
                        .with_label_values(&[&row.key])
                        .set(row.pps);
                }
            }
            Ok(Err(e)) => warn!(event = "top_failed", error = %one_line(&e)),
            Err(_) => {}
        }
    }
}

/// Sample the counters every second and log attack events.
async fn attack_monitor(sh: Arc<Shared>) {
    let mut monitor = attack::Monitor::default();
    let origin = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let snap = match sh.state().stats.read() {
            Ok(s) => s,
            Err(e) => {
                warn!(event = "stats_failed", error = %one_line(&e));
                continue;
            }
        };
        let counters: Vec<_> = snap
            .iter()
            .filter(|(r, _)| r.action() == Action::Drop)
            .map(|(r, c)| (*r, c.packets, c.bytes))
            .collect();
        let cfg = sh.runtime().daemon.attack.clone();
        for ev in monitor.sample(&cfg, origin.elapsed(), &counters) {
            match ev {
                attack::Event::Started { reason, pps } => {
                    sh.metrics.attack_active.with_label_values(&[reason]).set(1);
                    warn!(
                        event = "attack_started",
                        reason,
                        pps = pps.round() as u64,
                        threshold_pps = cfg
                            .thresholds
                            .get(reason)
                            .copied()
                            .unwrap_or(cfg.threshold_pps)
                    );
                }
                attack::Event::Ended {
                    reason,
                    peak_pps,
                    packets,
                    bytes,
                    duration,
                } => {
                    sh.metrics.attack_active.with_label_values(&[reason]).set(0);
                    warn!(
                        event = "attack_ended",
                        reason,
                        peak_pps = peak_pps.round() as u64,
                        packets,
                        bytes,
                        duration_s = duration.as_secs_f64()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory for one test's files, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("fg-check-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("creating a temporary directory");
            Dir(dir)
        }

        /// Write `config` (`{dir}` stands for the directory) and, if given, the token file.
        fn write(&self, config: &str, token: Option<&str>) -> PathBuf {
            if let Some(t) = token {
                std::fs::write(self.0.join("token"), t).expect("writing the token");
            }
            let path = self.0.join("floodgate.toml");
            let text = config.replace("{dir}", &self.0.display().to_string());
            std::fs::write(&path, text).expect("writing the config");
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const TOKEN: &str = "a-token-of-more-than-16-characters";

    #[test]
    fn check_config_says_what_a_start_would_do() {
        let dir = Dir::new("good");
        let path = dir.write(
            "mode = \"dry-run\"\n\
             [daemon]\ninterfaces = [\"lo\"]\nlisten = \"127.0.0.1:9999\"\n\
             token_file = \"{dir}/token\"\nsnapshot = \"\"\n\
             [[rules]]\nproto = \"udp\"\ndst_port = \"53\"\naction = \"drop\"\n\
             [limits.udp]\nper_source = \"1000\"\n\
             [lists]\nblock = [\"198.18.0.0/24\", \"2001:db8::/48\"]\n\
             [auto]\nmode = \"enforce\"\n[[auto.groups]]\nname = \"web\"\n\
             prefixes = [\"198.18.0.0/24\"]\nthresholds = { udp = \"10k\" }\n",
            Some(TOKEN),
        );
        let checked = check_config(&path).unwrap_or_else(|e| panic!("{e:#}"));
        let text = checked.to_string();
        for line in [
            "mode:        dry-run",
            "interfaces:  lo (auto mode)",
            "listen:      127.0.0.1:9999",
            "api writes:  with the token in",
            "rules:       1",
            "limits:      1 (udp)",
            "blocklist:   2 entries of source config",
            "allowlist:   left as it is",
            "snapshot:    off",
            "auto:        enforce, groups web (1 prefixes)",
        ] {
            assert!(text.contains(line), "the summary says `{line}`:\n{text}");
        }
        let empty = dir.write("", None);
        let text = check_config(&empty)
            .unwrap_or_else(|e| panic!("an empty file is good: {e:#}"))
            .to_string();
        for line in [
            "interfaces:  none",
            "api writes:  disabled (no daemon.token_file)",
            "listen:      127.0.0.1:9477",
        ] {
            assert!(text.contains(line), "the defaults say `{line}`:\n{text}");
        }
    }

    #[test]
    fn check_config_names_the_line_and_field_of_an_error() {
        // (what is wrong, file, token file, what the error must say)
        let cases: &[(&str, &str, Option<&str>, &[&str])] = &[
            (
                "unknown key",
                "[sanity]\nland = true\nbogus = 1\n",
                None,
                &["line 3", "unknown field `bogus`"],
            ),
            (
                "bad rule",
                "[[rules]]\naction = \"drop\"\n\n[[rules]]\ndst_port = \"99-1\"\naction = \"drop\"\n",
                None,
                &["line 4", "rules[1]", "range is empty"],
            ),
            (
                "bad listen",
                "[daemon]\nlisten = \"nope\"\n",
                None,
                &["line 2", "listen = \"nope\"", "invalid socket address"],
            ),
            (
                "bad list entry",
                "[lists]\nblock = [\"198.18.0.1/15\"]\n",
                None,
                &["line 2", "lists.block[0]", "host bits are set"],
            ),
            (
                "short token",
                "[daemon]\ntoken_file = \"{dir}/token\"\n",
                Some("short"),
                &["daemon.token_file", "at least 16 characters"],
            ),
            (
                "no token file",
                "[daemon]\ntoken_file = \"{dir}/no-such-token\"\n",
                None,
                &["reading daemon.token_file", "no-such-token"],
            ),
            (
                "unknown interface",
                "[daemon]\ninterfaces = [\"fgt-nosuch0\"]\n",
                None,
                &["daemon.interfaces", "no such interface: fgt-nosuch0"],
            ),
        ];
        for (what, config, token, says) in cases {
            let dir = Dir::new("bad");
            let path = dir.write(config, *token);
            let err = match check_config(&path) {
                Ok(c) => panic!("{what}: checked as good:\n{c}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains(&path.display().to_string()),
                "{what}: `{err}` names the file"
            );
            for s in *says {
                assert!(err.contains(s), "{what}: `{err}` says {s}");
            }
        }
        let missing = Dir::new("missing");
        let err = check_config(&missing.0.join("absent.toml")).map(|_| ());
        assert!(
            matches!(&err, Err(e) if format!("{e:#}").contains("absent.toml")),
            "a file that is not there is an error for --check-config: {err:?}"
        );
    }
}
