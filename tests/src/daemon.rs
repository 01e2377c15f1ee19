//! The real daemon (`floodgate run`) inside a namespace, with a real HTTP client. Each daemon
//! gets its own network namespace, so it listens on the default 127.0.0.1:9477 without
//! clashing, and its own directory for config, token, snapshot and log.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use floodgate_lab::Netns;
use serde_json::Value;

/// A fixed test token (the daemon wants at least 16 characters).
pub const TOKEN: &str = "test-token-0123456789abcdef";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Scratch directory for one daemon's files, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "fgt{}d{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating a scratch directory");
        Scratch(dir)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running `floodgate run`; stopped (SIGKILL if SIGTERM is not enough) on drop.
pub struct Daemon<'a> {
    pub ns: &'a Netns,
    pub pin_dir: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// How a daemon still running on drop is asked to stop (SIGKILL after 5 s regardless).
    drop_signal: i32,
}

/// An HTTP answer: status and body (JSON when it parses, else a string).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl<'a> Daemon<'a> {
    /// Write `config` (the whole file; use [`Daemon::base_config`] for the [daemon] basics)
    /// and start the daemon; returns once /healthz answers.
    pub fn start(ns: &'a Netns, pin_dir: &Path, dir: &Path, config: &str) -> Daemon<'a> {
        fs::write(dir.join("token"), TOKEN).expect("writing the token");
        let cfg = dir.join("floodgate.toml");
        fs::write(&cfg, config).expect("writing the config");
        let mut d = Daemon::new(ns, pin_dir, dir, cfg);
        d.spawn();
        d
    }

    /// Start the daemon with `--config DIR/floodgate.toml` not there (as after an install with
    /// no configuration); returns once /healthz answers. Writing [`Daemon::config`] later
    /// configures it. Until [`Daemon::stop`], it is killed on drop (SIGKILL), not stopped:
    /// without a file its snapshot goes to the default path, this machine's
    /// /var/lib/floodgate, which a SIGTERM would write.
    pub fn start_without_config(ns: &'a Netns, pin_dir: &Path, dir: &Path) -> Daemon<'a> {
        let cfg = dir.join("floodgate.toml");
        assert!(!cfg.exists(), "{} must not exist yet", cfg.display());
        let mut d = Daemon::new(ns, pin_dir, dir, cfg);
        d.drop_signal = libc::SIGKILL;
        d.spawn();
        d
    }

    fn new(ns: &'a Netns, pin_dir: &Path, dir: &Path, config: PathBuf) -> Daemon<'a> {
        Daemon {
            ns,
            pin_dir: pin_dir.to_path_buf(),
            dir: dir.to_path_buf(),
            config,
            log: dir.join("daemon.log"),
            child: None,
            drop_signal: libc::SIGTERM,
        }
    }

    /// The [daemon] section every test daemon needs: JSON logs, the token, a snapshot path.
    pub fn base_config(dir: &Path, extra_daemon_keys: &str) -> String {
        format!(
            "[daemon]\nlog_format = \"json\"\ntoken_file = \"{}\"\nsnapshot = \"{}\"\n{extra_daemon_keys}\n",
            dir.join("token").display(),
            dir.join("snapshot.json").display()
        )
    }

    /// `floodgate run --config CONFIG` in the daemon's namespace and pin directory.
    fn run_command(&self, config: &Path) -> std::process::Command {
        let mut cmd = crate::floodgate_command(self.ns, &self.pin_dir, &["run"]);
        cmd.arg("--config").arg(config).stdout(Stdio::null());
        cmd
    }

    /// Start a daemon with just the [daemon] basics ([`Daemon::base_config`]) plus
    /// `extra_daemon_keys`.
    pub fn start_basic(
        ns: &'a Netns,
        pin_dir: &Path,
        dir: &Path,
        extra_daemon_keys: &str,
    ) -> Daemon<'a> {
        Daemon::start(
            ns,
            pin_dir,
            dir,
            &Daemon::base_config(dir, extra_daemon_keys),
        )
    }

    /// Run `floodgate run` with this daemon's files once more, for a start that must fail:
    /// returns its exit status and what it wrote (killed, and a panic, after 20 s).
    pub fn run_to_exit(&self, config: &Path) -> (std::process::ExitStatus, String) {
        let mut child = self
            .run_command(config)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting floodgate run");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (status, err);
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "floodgate run --config {} did not exit in 20 s",
                    config.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start the process (again), appending to the same log; waits for /healthz.
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the daemon log");
        let child = self
            .run_command(&self.config)
            .stderr(log)
            .spawn()
            .expect("starting floodgate run");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("floodgate run exited ({status}): {}", self.log_text());
                }
            }
            if matches!(self.try_get("/healthz"), Some(r) if r.status == 200) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the daemon did not answer /healthz in 20 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id (the nsenter child execs floodgate, so it is the same).
    /// A line of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
    fn status_kib(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the daemon's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in {status}"))
    }

    /// The daemon's resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The most resident memory the daemon has had, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Stop with `sig` and wait for the process to go.
    pub fn stop(&mut self, sig: i32) -> std::process::ExitStatus {
        self.signal(sig);
        let mut child = self.child.take().expect("running");
        child.wait().expect("waiting for the daemon")
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines (JSON objects) whose `event` is `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// Wait until at least `count` `event` lines are in the log; returns them.
    pub fn wait_events(&self, event: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let ev = self.events(event);
            if ev.len() >= count {
                return ev;
            }
            assert!(
                started.elapsed() < timeout,
                "no {count} `{event}` event(s) in {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_get(&self, path: &str) -> Option<Reply> {
        self.request("GET", path, None, false).ok()
    }

    /// One request from inside the namespace. `auth`: send the token.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: bool,
    ) -> Result<Reply, String> {
        let url = format!("http://127.0.0.1:9477{path}");
        self.ns
            .run(|| http(method, &url, body, auth.then_some(TOKEN)))
            .map_err(|e| e.to_string())?
    }

    /// A request that must get an answer (any status).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>, auth: bool) -> Reply {
        self.request(method, path, body, auth)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

/// One HTTP request with ureq; 4xx/5xx are answers, not errors.
pub fn http(
    method: &str,
    url: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<Reply, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    // into_string caps bodies at 10 MB; list reads of 100k entries are bigger.
    let mut text = String::new();
    std::io::Read::read_to_string(&mut resp.into_reader(), &mut text).map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Reply { status, body })
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, self.drop_signal) };
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
