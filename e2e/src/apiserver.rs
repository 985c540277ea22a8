//! kube-apiserver (v1.20, built from Debian's source by `e2e/setup/`) with generated certs
//! and a token for an admin in `system:masters`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::pki::{self, Authority};
use crate::process::{Supervised, free_port, wait_until};
use crate::{Error, START_TIMEOUT};

/// A Kubernetes v1.20.2 binary (`kube-apiserver`, `kubelet`, ...) where
/// `e2e/setup/build-kubernetes.sh` caches them.
pub fn kubernetes_binary(name: &str) -> Result<PathBuf, Error> {
    crate::cached_dependency(&format!("kubernetes-v1.20.2/{name}"), "it builds them")
}

fn binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("KUBE_APISERVER") {
        return Ok(path.into());
    }
    kubernetes_binary("kube-apiserver")
}

/// What a bed with real kubelets needs of the apiserver beyond the defaults.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Bind and advertise address (the `kubernetes` Service's endpoint).
    pub address: std::net::Ipv4Addr,
    /// More lines of the token file: `token,user,uid,"group"`.
    pub tokens: Vec<String>,
    /// The ServiceAccount admission plugin (pods get tokens; needs a controller-manager).
    pub service_accounts: bool,
    /// The client certificate it shows kubelets (exec, logs).
    pub kubelet_client: Option<pki::CertFiles>,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        Self {
            address: std::net::Ipv4Addr::LOCALHOST,
            tokens: Vec::new(),
            service_accounts: false,
            kubelet_client: None,
        }
    }
}

/// The audit log (JSON lines) in the bed's directory: every request of a service account.
pub const AUDIT_LOG: &str = "audit.log";

#[derive(Debug)]
pub struct ApiServer {
    address: std::net::Ipv4Addr,
    port: u16,
    token: String,
    ca_pem: String,
    process: Supervised,
    /// The command line and log, to start it again on the same port.
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    log: PathBuf,
    kubeconfig: PathBuf,
}

impl ApiServer {
    /// Starts the apiserver against `etcd`, with its files in `dir`.
    pub fn start(dir: &Path, etcd_endpoint: &str, pki: &Authority) -> Result<Self, Error> {
        Self::start_with(dir, etcd_endpoint, pki, &ApiServerOptions::default())
    }

    pub fn start_with(
        dir: &Path,
        etcd_endpoint: &str,
        pki: &Authority,
        options: &ApiServerOptions,
    ) -> Result<Self, Error> {
        let port = free_port()?;
        let address = options.address.to_string();
        let serving = pki.issue(
            "apiserver",
            "kube-apiserver",
            &["localhost", "127.0.0.1", &address, "10.96.0.1"],
        )?;
        let (sa_private, sa_public) = pki::signing_key(dir)?;
        let token = format!("admin-{}", std::process::id());
        let tokens = dir.join("tokens.csv");
        let mut lines = vec![format!("{token},admin,admin,\"system:masters\"")];
        lines.extend(options.tokens.iter().cloned());
        pki::write(&tokens, &(lines.join("\n") + "\n"))?;

        // Requests of service accounts (the components running with the chart's RBAC) are
        // audited: the chart test compares what they called with what the chart grants.
        let audit_policy = dir.join("audit-policy.yaml");
        pki::write(
            &audit_policy,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  userGroups: [\"system:serviceaccounts\"]\n- level: None\n",
        )?;

        let mut command = Command::new(binary()?);
        command
            .arg(format!("--etcd-servers={etcd_endpoint}"))
            .arg(format!("--audit-policy-file={}", audit_policy.display()))
            .arg(format!(
                "--audit-log-path={}",
                dir.join(AUDIT_LOG).display()
            ))
            .arg(format!("--bind-address={address}"))
            .arg(format!("--advertise-address={address}"))
            .arg(format!("--secure-port={port}"))
            .arg("--insecure-port=0")
            .arg(format!("--cert-dir={}", dir.display()))
            .arg(format!("--tls-cert-file={}", serving.cert.display()))
            .arg(format!("--tls-private-key-file={}", serving.key.display()))
            .arg(format!("--client-ca-file={}", pki.ca_file().display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                sa_public.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_private.display()
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--allow-privileged=true")
            .arg("--enable-priority-and-fairness=false")
            .arg("--profiling=false")
            .arg("--v=1");
        if !options.service_accounts {
            // No controller-manager runs to create service-account token secrets, which the
            // 1.20 ServiceAccount admission plugin would demand for every Pod.
            command.arg("--disable-admission-plugins=ServiceAccount");
        }
        if let Some(client) = &options.kubelet_client {
            command
                .arg(format!(
                    "--kubelet-client-certificate={}",
                    client.cert.display()
                ))
                .arg(format!("--kubelet-client-key={}", client.key.display()))
                .arg("--kubelet-preferred-address-types=InternalIP");
        }
        let program = command.get_program().to_owned();
        let args = command.get_args().map(ToOwned::to_owned).collect();
        let log = dir.join("kube-apiserver.log");
        let process = Supervised::spawn("kube-apiserver", command, &log)?;
        let mut server = Self {
            address: options.address,
            port,
            token,
            ca_pem: pki.ca_pem(),
            process,
            program,
            args,
            log,
            kubeconfig: dir.join("kubeconfig"),
        };
        pki::write(&server.kubeconfig, &server.kubeconfig_yaml())?;
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let probe = self.kubeconfig.clone();
        wait_until(
            "kube-apiserver /readyz",
            START_TIMEOUT,
            &mut self.process,
            || {
                Command::new("kubectl")
                    .arg(format!("--kubeconfig={}", probe.display()))
                    .args(["get", "--raw=/readyz", "--request-timeout=2s"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
        )
    }

    /// Kills the apiserver, waits `outage`, and starts it again on the same port; returns
    /// once it is ready.
    pub fn restart(&mut self, outage: std::time::Duration) -> Result<(), Error> {
        self.process.stop();
        std::thread::sleep(outage);
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        self.process = Supervised::spawn("kube-apiserver", command, &self.log)?;
        self.wait_ready()
    }

    pub fn url(&self) -> String {
        format!("https://{}:{}", self.address, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// A kubeconfig for the admin user (group `system:masters`).
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(&self.token)
    }

    /// A kubeconfig authenticating with `token` (e.g. a service account's).
    pub fn kubeconfig_yaml_for(&self, token: &str) -> String {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bed\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: bed\n  context:\n    cluster: bed\n    user: user\ncurrent-context: bed\n",
            self.url(),
        )
    }
}
