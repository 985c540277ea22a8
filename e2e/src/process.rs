//! Child processes that cannot outlive the test process.
//!
//! Every server is started from one long-lived launcher thread with `PR_SET_PDEATHSIG`, so
//! the kernel kills it when the test process ends for any reason (a panic, `kill -9`, a
//! timeout). The signal follows the thread that spawned the child, which is why that thread
//! must outlive every test: a test thread would take its servers down when it finishes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn launcher() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("e2e-launcher".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The sender lives in a static, so this thread only ends with the process.
                loop {
                    thread::park();
                }
            })
            .expect("the launcher thread starts");
        Mutex::new(tx)
    })
}

/// A server process, killed when dropped (or when the test process dies).
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Supervised {
    /// Starts `command` with stdout and stderr in `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self, Error> {
        let out =
            File::create(log).map_err(|e| Error::io(format!("create {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| Error::io("dup log file", e))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut command);
        let (tx, rx) = mpsc::channel();
        launcher()
            .lock()
            .map_err(|_| Error::Setup("launcher lock poisoned".into()))?
            .send((command, tx))
            .map_err(|_| Error::Setup("launcher thread is gone".into()))?;
        let child = rx
            .recv()
            .map_err(|_| Error::Setup("launcher thread is gone".into()))?
            .map_err(|e| Error::io(format!("start {name}"), e))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the end of the log if the process has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log_tail: tail(&self.log, 30),
            }),
            Err(e) => Err(Error::io(format!("wait for {}", self.name), e)),
        }
    }

    /// The last `lines` lines of the process's output.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Sends `signal` (e.g. `libc::SIGKILL`) without waiting.
    pub fn signal(&self, signal: i32) {
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) on a pid we own; no memory is involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Kills the process and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls the async-signal-safe
    // prctl(2).
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `probe` every 250 ms until it yields, or `None` after `timeout`.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Polls `ready` every 100 ms until it holds, `process` exits, or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    process: &mut Supervised,
    mut ready: impl FnMut() -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        process.check_running()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                log_tail: process.log_tail(30),
            });
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Ports the servers of the tests listen on: below Linux's ephemeral range (32768..60999),
/// so an outgoing connection's local port never takes one between the check and the bind
/// (seen once: etcd failing with "address already in use").
const SERVER_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range.
pub fn free_port() -> Result<u16, Error> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = SERVER_PORTS.end - SERVER_PORTS.start;
    // Processes running tests side by side start at different places.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(SERVER_PORTS.start + offset) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Setup(format!("no free port in {SERVER_PORTS:?}")))
}

/// Resident set size now and at its peak (kB), from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
