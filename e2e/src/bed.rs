//! The bed: etcd + kube-apiserver + the cilium.io CRDs, in a directory of its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::pki::Authority;
use crate::{ApiServer, Error, Etcd};

/// Parent of every bed's directory; a bed's directory is named `<pid>-<n>`.
fn beds_root() -> PathBuf {
    std::env::temp_dir().join("cilium-rs-e2e")
}

pub struct ClusterBed {
    dir: PathBuf,
    kubeconfig: PathBuf,
    etcd_endpoint: String,
    apiserver: Mutex<ApiServer>,
    etcd: Mutex<Etcd>,
}

impl ClusterBed {
    /// Starts a bed of its own: etcd, kube-apiserver, the CRDs installed and established.
    pub fn start() -> Result<Self, Error> {
        sweep_dead_beds();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = beds_root().join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let pki = Authority::new(&dir, "cilium-rs test bed")?;
        let etcd = Etcd::start(&dir)?;
        let etcd_endpoint = etcd.endpoint();
        let apiserver = ApiServer::start(&dir, &etcd_endpoint, &pki)?;
        let bed = Self {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            etcd_endpoint,
            apiserver: Mutex::new(apiserver),
            etcd: Mutex::new(etcd),
        };
        bed.install_crds()?;
        Ok(bed)
    }

    /// The bed shared by every test of this process, started on first use.
    ///
    /// Panics with the reason when the bed cannot start: every test that needs it fails
    /// with that message.
    pub fn shared() -> &'static ClusterBed {
        static SHARED: OnceLock<Result<ClusterBed, String>> = OnceLock::new();
        match SHARED.get_or_init(|| ClusterBed::start().map_err(|e| e.to_string())) {
            Ok(bed) => bed,
            Err(reason) => panic!("the test bed did not start: {reason}"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn etcd_endpoint(&self) -> &str {
        &self.etcd_endpoint
    }

    /// Direct control of etcd, e.g. to stop and resume it.
    pub fn etcd(&self) -> MutexGuard<'_, Etcd> {
        self.etcd
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn apiserver_url(&self) -> String {
        self.apiserver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .url()
    }

    /// Kills kube-apiserver, waits `outage`, starts it again on the same port and returns
    /// once it is ready: watches break and must resume.
    pub fn restart_apiserver(&self, outage: std::time::Duration) -> Result<(), Error> {
        self.apiserver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restart(outage)
    }

    /// Process ids of etcd (if running) and kube-apiserver.
    pub fn pids(&self) -> (Option<u32>, u32) {
        (
            self.etcd().pid(),
            self.apiserver
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pid(),
        )
    }

    /// `kubectl --kubeconfig=<bed>`; add arguments and run.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        command
    }

    /// Runs kubectl with `args` (and `stdin`, if any); its stdout on success, else an error
    /// carrying its stderr.
    pub fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
        kubectl_run(&self.kubeconfig, args, stdin)
    }

    /// `kubectl get <kind> -o json`'s items.
    pub fn list(&self, kind: &str) -> Result<Vec<serde_json::Value>, Error> {
        let out = self.kubectl_run(&["get", kind, "-o", "json"], None)?;
        let mut list: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| Error::Setup(format!("kubectl get {kind}: {e}")))?;
        match list["items"].take() {
            serde_json::Value::Array(items) => Ok(items),
            other => Err(Error::Setup(format!(
                "kubectl get {kind}: items is not a list: {other}"
            ))),
        }
    }

    /// One object as JSON: `kubectl get <kind> <name> [-n namespace] -o json`.
    pub fn get(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<serde_json::Value, Error> {
        let mut args = vec!["get", kind, name, "-o", "json"];
        if let Some(namespace) = namespace {
            args.extend(["-n", namespace]);
        }
        let out = self.kubectl_run(&args, None)?;
        serde_json::from_str(&out)
            .map_err(|e| Error::Setup(format!("kubectl get {kind} {name}: {e}")))
    }

    /// A kubeconfig file for service account `namespace/name`, with a token from the
    /// TokenRequest API (as the kubelet mounts one into the account's pods).
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, Error> {
        let token = self.kubectl_run(
            &["create", "token", name, "-n", namespace, "--duration=2h"],
            None,
        )?;
        let yaml = self
            .apiserver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kubeconfig_yaml_for(token.trim());
        let path = self.dir.join(format!("kubeconfig-{namespace}-{name}"));
        crate::pki::write(&path, &yaml)?;
        Ok(path)
    }

    /// The audit log's events (every request of a service account so far).
    pub fn audit_events(&self) -> Result<Vec<serde_json::Value>, Error> {
        let path = self.dir.join(crate::apiserver::AUDIT_LOG);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| Error::Setup(format!("audit log line {l:?}: {e}")))
            })
            .collect()
    }

    /// A client authenticated as the admin.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates a namespace (and nothing else) for a test's objects.
    pub fn create_namespace(&self, name: &str) -> Result<(), Error> {
        self.kubectl_run(&["create", "namespace", name], None)
            .map(drop)
    }

    fn install_crds(&self) -> Result<(), Error> {
        let yaml =
            cilium_crds::all_yaml().map_err(|e| Error::Setup(format!("render CRDs: {e}")))?;
        self.kubectl_run(&["apply", "-f", "-"], Some(&yaml))?;
        let names: Vec<String> = cilium_crds::all()
            .iter()
            .filter_map(|crd| crd.metadata.name.clone())
            .map(|name| format!("crd/{name}"))
            .collect();
        let mut args = vec!["wait", "--for=condition=established", "--timeout=60s"];
        args.extend(names.iter().map(String::as_str));
        self.kubectl_run(&args, None).map(drop)
    }
}

impl Drop for ClusterBed {
    fn drop(&mut self) {
        // Stop the servers before their files go.
        self.apiserver
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .stop();
        self.etcd
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .stop();
        // `CILIUM_RS_KEEP_BED=1` keeps the logs of a failing test (the next run sweeps it).
        if std::env::var_os("CILIUM_RS_KEEP_BED").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes the directories of beds whose test process is gone (statics are never dropped,
/// so the shared bed's directory outlives its process; the next run cleans it).
fn sweep_dead_beds() {
    let Ok(entries) = std::fs::read_dir(beds_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_string_lossy()
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A DNS-1123 name unique within this test process and across concurrent ones.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `kubectl --kubeconfig=<kubeconfig>` with `args` (and `stdin`, if any); its stdout
/// on success, else an error carrying its stderr.
pub fn kubectl_run(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
    let mut command = Command::new("kubectl");
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| Error::io("run kubectl", e))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A kubectl that fails early closes its stdin; its stderr says why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| Error::io("wait for kubectl", e))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(Error::Command {
            command: format!("kubectl {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
