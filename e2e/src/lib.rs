//! cluster-in-a-box: a real etcd and a real kube-apiserver on 127.0.0.1, for end-to-end
//! tests and the demo.
//!
//! [`ClusterBed::shared`] starts one bed per test process (the apiserver takes seconds to
//! start); tests isolate themselves by namespace or object name ([`unique_name`]).
//! [`ClusterBed::start`] gives a test its own bed when it must restart or break parts of it.

mod apiserver;
mod bed;
pub mod chart;
pub mod cluster;
mod etcd;
pub mod mesh;
pub mod netns;
pub mod node_bed;
pub mod operator;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod realnode;
pub mod remote_kvstore;
pub mod traffic;

pub use apiserver::{ApiServer, ApiServerOptions};
pub use bed::{ClusterBed, kubectl_run, unique_name};
pub use etcd::Etcd;

use std::time::Duration;

/// Why the test bed could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{name} exited ({status}); its last output:\n{log_tail}")]
    Exited {
        name: String,
        status: String,
        log_tail: String,
    },
    #[error("timed out waiting for {what}; last output:\n{log_tail}")]
    Timeout { what: String, log_tail: String },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{0}")]
    Setup(String),
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn cert(e: rcgen::Error) -> Self {
        Error::Cert(e)
    }
}

/// An `Error::Io` maker naming `what`, for `map_err`.
pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::io(what, e)
}

/// `path` in the cache `make deps` fills (`$CILIUM_RS_CACHE`, default
/// `/var/cache/cilium-rs`), or an error telling to run it (`hint` says more).
pub fn cached_dependency(path: &str, hint: &str) -> Result<std::path::PathBuf, Error> {
    let cache =
        std::env::var_os("CILIUM_RS_CACHE").unwrap_or_else(|| "/var/cache/cilium-rs".into());
    let full = std::path::Path::new(&cache).join(path);
    if full.exists() {
        Ok(full)
    } else {
        Err(Error::Setup(format!(
            "no {} (run `make deps`; {hint})",
            full.display()
        )))
    }
}

/// How long a server may take to become ready before the bed gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Polls `probe` every 250 ms until it yields; panics naming `what` after `timeout`.
/// For tests: a timeout is their failure.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    match process::poll(timeout, probe) {
        Some(value) => value,
        None => panic!("timed out waiting for {what}"),
    }
}

/// Blocks until Ctrl-C or SIGTERM.
pub fn wait_for_ctrl_c() {
    let (tx, rx) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else { return };
    std::thread::spawn(move || {
        runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending().await,
                    }
                } => {}
            }
        });
        let _ = tx.send(());
    });
    while rx.recv_timeout(Duration::from_secs(3600)).is_err() {}
}

/// The `main` of a demo binary: runs `run` (told whether `--exit` was given, i.e. stop
/// after printing instead of waiting for Ctrl-C) and turns an error into a message and
/// exit code 1.
pub fn demo_main(
    name: &str,
    run: impl FnOnce(bool) -> anyhow::Result<()>,
) -> std::process::ExitCode {
    let exit_at_once = std::env::args().skip(1).any(|a| a == "--exit");
    match run(exit_at_once) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
