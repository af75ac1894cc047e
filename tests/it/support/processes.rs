//! Real child processes for black-box tests: `wxkeeper` subcommands started from the binary
//! Cargo built, their output in a scratch directory, signals sent with the `kill` command, and
//! a guard that never leaves a child behind (a stopped child is resumed first, then killed and
//! reaped), also when the test panics.
//!
//! Waits are async (tokio time) and bounded; each panics with what it waited for.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// The signals the tests send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
    Stop,
    Cont,
}

impl Signal {
    fn arg(self) -> &'static str {
        match self {
            Signal::Kill => "-KILL",
            Signal::Term => "-TERM",
            Signal::Stop => "-STOP",
            Signal::Cont => "-CONT",
        }
    }
}

/// Sends `sig` to `pid` with the `kill` command (no libc binding, no new crate).
pub fn send_signal(pid: u32, sig: Signal) {
    let status = Command::new("kill")
        .args([sig.arg(), &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run `kill {} {pid}`: {e}", sig.arg()));
    assert!(status.success(), "`kill {} {pid}` failed", sig.arg());
}

/// A directory for children's logs: removed when the test passes (unless
/// `WXKEEPER_TEST_KEEP_LOGS=1`), kept and named when it fails.
pub struct Scratch {
    pub path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("wxkeeper-{label}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("scratch directory");
        let keep = std::env::var("WXKEEPER_TEST_KEEP_LOGS").is_ok_and(|v| v == "1");
        Self { path, keep }
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.log"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() || self.keep {
            eprintln!("child logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `wxkeeper <subcommand>` from the binary under test, inheriting no `WXKEEPER_*` variable
/// from the test's own environment (every setting is given explicitly), logging at `info`.
pub fn wxkeeper(subcommand: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxkeeper"));
    cmd.arg(subcommand);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WXKEEPER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// A running child that is killed and reaped when dropped.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    stopped: bool,
}

impl ChildGuard {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: impl Into<String>, mut cmd: Command, log: &Path) -> Self {
        let name = name.into();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let err = file.try_clone().expect("log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name,
            child: Some(child),
            stopped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
            .id()
    }

    /// Sends `sig`; remembers whether the child is stopped, so that dropping resumes it.
    pub fn signal(&mut self, sig: Signal) {
        send_signal(self.pid(), sig);
        match sig {
            Signal::Stop => self.stopped = true,
            Signal::Cont => self.stopped = false,
            Signal::Kill | Signal::Term => {}
        }
    }

    /// Waits for the child to exit (after a signal), at most `within`; returns its status.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let name = self.name.clone();
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{name} is not running"));
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.stopped = false;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL and reap, at once (a stopped child is resumed first). No-op if not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.stopped {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
            self.stopped = false;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `url` until it answers 200, at most `within`.
pub async fn wait_http_ok(http: &reqwest::Client, url: &str, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let ok = http
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {url} did not answer 200 within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
