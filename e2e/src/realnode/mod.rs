//! The real cluster-in-a-box: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler on this machine, and nodes running kubelet + containerd + kube-proxy, each
//! in a network and mount namespace of its own (see [`node`]). Everything is Kubernetes
//! v1.20.2 built from Debian's source package (`e2e/setup/build-kubernetes.sh`); images
//! come from the local build without a registry ([`images`]).
//!
//! Layout: the nodes sit on one bridge (`192.168.70.0/24`, node `i` at `.11 + i`); the
//! machine is plugged into it at `.1`, where the apiserver listens, so kubelets, pods
//! and kubectl all reach it at one address, and it reaches the kubelets for exec and logs.
//!
//! Everything is torn down on drop; what a killed test process leaves (containers and
//! shims, cgroups, the kernel tunables kubelet sets) is undone by the next bed
//! ([`host::sweep_dead_beds`]).

pub mod conformance;
pub mod host;
pub mod images;
pub mod node;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::apiserver::kubernetes_binary;
use crate::cluster::Lan;
use crate::netns::NetNs;
use crate::pki::Authority;
use crate::process::Supervised;
use crate::{ApiServer, ApiServerOptions, Error, Etcd, io_error as io, kubectl_run};

pub use images::Images;
pub use node::RealNode;

/// The machine's address on the nodes' link: the apiserver's.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 70, 1);
/// Node `i` (from 0) is at `.11 + i`.
pub fn node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 70, 11 + index as u8)
}

pub struct RealCluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    // Drop order matters; see `Drop`.
    pub nodes: Vec<RealNode>,
    scheduler: Option<Supervised>,
    controller_manager: Option<Supervised>,
    apiserver: ApiServer,
    etcd: Etcd,
    _lan: Lan,
}

impl RealCluster {
    /// Starts the control plane and `count` nodes, registered (not yet Ready: no CNI).
    pub fn start(count: usize) -> Result<Self, Error> {
        Self::start_with_images(count, None)
    }

    /// The same, with agnhost's image on the nodes for the upstream e2e suite (its binary).
    pub fn start_for_conformance(count: usize, agnhost: &Path) -> Result<Self, Error> {
        Self::start_with_images(count, Some(agnhost))
    }

    fn start_with_images(count: usize, agnhost: Option<&Path>) -> Result<Self, Error> {
        host::sweep_dead_beds();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bed = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = host::beds_root().join(&bed);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let lan = Lan::new()?;
        lan.plug_host(&format!("crs{}", std::process::id()), "host", HOST_IP)?;
        let pki = Authority::new(&dir, "cilium-rs real nodes")?;
        let etcd = Etcd::start(&dir)?;
        let names: Vec<String> = (1..=count).map(|i| format!("node{i}")).collect();
        let node_token = |name: &str| format!("{name}-token-{bed}");
        let options = ApiServerOptions {
            address: HOST_IP,
            tokens: names
                .iter()
                .map(|n| format!("{},system:node:{n},{n},\"system:nodes\"", node_token(n)))
                .collect(),
            service_accounts: true,
            kubelet_client: Some(pki.issue_for_group(
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                "system:masters",
            )?),
        };
        let apiserver = ApiServer::start_with(&dir, &etcd.endpoint(), &pki, &options)?;
        let kubeconfig = dir.join("kubeconfig");
        let mut cluster = Self {
            dir: dir.clone(),
            kubeconfig,
            nodes: Vec::new(),
            scheduler: None,
            controller_manager: None,
            apiserver,
            etcd,
            _lan: lan,
        };
        // RBAC only (no Node authorizer): kubelets get the built-in node role.
        cluster.kubectl_run(
            &[
                "create",
                "clusterrolebinding",
                "system-nodes",
                "--clusterrole=system:node",
                "--group=system:nodes",
            ],
            None,
        )?;
        cluster.start_controllers(&pki)?;

        let images = Images::build(&dir.join("images"), agnhost)?;
        host::save_sysctls(&dir.join("sysctl.orig"))?;
        for (index, name) in names.iter().enumerate() {
            let ns = NetNs::new("rnode")?;
            cluster
                ._lan
                .plug(&ns, &format!("n{}", index + 1), node_ip(index))?;
            let node_kubeconfig = dir.join(format!("{name}.kubeconfig"));
            std::fs::write(
                &node_kubeconfig,
                cluster.apiserver.kubeconfig_yaml_for(&node_token(name)),
            )
            .map_err(io("node kubeconfig"))?;
            let spec = node::NodeSpec {
                name,
                ip: node_ip(index),
                dir: dir.join(name),
                kubeconfig: node_kubeconfig,
                proxy_kubeconfig: cluster.kubeconfig.clone(),
                client_ca: pki.ca_file(),
                cgroup: host::cgroup_name(&bed, name),
                images: &images.archives,
            };
            cluster.nodes.push(RealNode::start(ns, &spec)?);
        }
        let registered = crate::process::poll(node::NODE_READY_TIMEOUT, || {
            let out = cluster
                .kubectl_run(&["get", "nodes", "-o", "name"], None)
                .ok()?;
            (out.lines().count() == count).then_some(())
        });
        if registered.is_none() {
            let tails: Vec<String> = cluster
                .nodes
                .iter()
                .map(|n| format!("{}:\n{}", n.name, n.log_tail("kubelet", 15)))
                .collect();
            return Err(Error::Setup(format!(
                "the nodes did not register:\n{}",
                tails.join("\n")
            )));
        }
        Ok(cluster)
    }

    fn start_controllers(&mut self, pki: &Authority) -> Result<(), Error> {
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        let mut manager = Command::new(kubernetes_binary("kube-controller-manager")?);
        manager
            .arg(&kubeconfig)
            .arg(format!(
                "--service-account-private-key-file={}",
                self.dir.join("sa.key").display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca_file().display()))
            .args([
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--v=1",
            ]);
        self.controller_manager = Some(Supervised::spawn(
            "kube-controller-manager",
            manager,
            &self.dir.join("kube-controller-manager.log"),
        )?);
        let mut scheduler = Command::new(kubernetes_binary("kube-scheduler")?);
        scheduler.arg(&kubeconfig).args([
            "--leader-elect=false",
            "--port=0",
            "--secure-port=0",
            "--v=1",
        ]);
        self.scheduler = Some(Supervised::spawn(
            "kube-scheduler",
            scheduler,
            &self.dir.join("kube-scheduler.log"),
        )?);
        // Pods need their service account's token Secret, which the controller-manager makes.
        crate::process::poll(crate::START_TIMEOUT, || {
            let out = self
                .kubectl_run(&["get", "secrets", "-n", "default", "-o", "name"], None)
                .ok()?;
            out.contains("secret/default-token-").then_some(())
        })
        .ok_or_else(|| Error::Setup("kube-controller-manager made no service-account token".into()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin's kubeconfig (`KUBECONFIG=<this> kubectl get pods -A`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn apiserver_port(&self) -> u16 {
        self.apiserver.port()
    }

    pub fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
        kubectl_run(&self.kubeconfig, args, stdin)
    }

    /// Values that make the chart work on this cluster as a user would set them: the
    /// apiserver's address (no kube-proxy serves the agents before they run) and images
    /// that are imported, never pulled.
    pub fn chart_values(&self) -> String {
        format!(
            "k8sServiceHost: \"{HOST_IP}\"\nk8sServicePort: \"{}\"\nimage:\n  pullPolicy: Never\n",
            self.apiserver.port()
        )
    }

    /// The chart rendered by Helm's SDK with `values` files (CRDs included, as
    /// `helm install` installs them).
    pub fn render_chart(&self, values: &[&Path]) -> Result<String, Error> {
        let run = crate::chart::helm("template", values, &["--include-crds"])?;
        if !run.success {
            return Err(Error::Setup(format!(
                "helm template: {}",
                run.stderr.trim()
            )));
        }
        Ok(run.stdout)
    }

    /// Writes `text` as a file of the bed (values files, manifests).
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))?;
        Ok(path)
    }
}

/// A shell command that sends `GET /` to `ip:port` and prints the answer, waiting at most
/// `seconds` (for busybox in the test image).
pub fn http_probe(ip: Ipv4Addr, port: u16, seconds: u32) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w {seconds} {ip} {port}")
}

/// A pod as the tests address it.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub node: Option<String>,
    pub ready: bool,
}

impl RealCluster {
    /// The pods of `namespace` matching the label `selector` (`-l`).
    pub fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<PodRef>, Error> {
        let out = self.kubectl_run(
            &["get", "pods", "-n", namespace, "-l", selector, "-o", "json"],
            None,
        )?;
        let list: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| Error::Setup(format!("kubectl get pods: {e}")))?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        Ok(items
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| PodRef {
                namespace: namespace.to_owned(),
                name: p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                ip: p["status"]["podIP"].as_str().and_then(|ip| ip.parse().ok()),
                node: p["spec"]["nodeName"].as_str().map(str::to_owned),
                ready: p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                }),
            })
            .collect())
    }

    /// `kubectl exec` of `command` in `pod`: its output, or the error.
    pub fn exec(&self, pod: &PodRef, command: &[&str]) -> Result<String, Error> {
        let mut args = vec!["exec", "-n", &pod.namespace, &pod.name, "--"];
        args.extend_from_slice(command);
        self.kubectl_run(&args, None)
    }

    /// Whether `from` gets an HTTP answer from `ip:port` within 2 s (busybox `nc`: its
    /// static `wget` crashes resolving even a literal address).
    pub fn reaches(&self, from: &PodRef, ip: Ipv4Addr, port: u16) -> bool {
        let script = http_probe(ip, port, 2);
        self.exec(from, &["sh", "-c", &script])
            .is_ok_and(|out| out.contains("200 OK"))
    }

    /// `kubectl <args> -o jsonpath=<path>`'s output, if it succeeds.
    pub fn jsonpath(&self, args: &[&str], path: &str) -> Option<String> {
        let jsonpath = format!("jsonpath={path}");
        let mut all = args.to_vec();
        all.extend(["-o", &jsonpath]);
        self.kubectl_run(&all, None).ok()
    }

    /// The agent DaemonSet has rolled out its current spec: every agent updated and Ready.
    pub fn agents_rolled_out(&self) -> Option<()> {
        let status = self.jsonpath(
            &["get", "ds", "cilium", "-n", "kube-system"],
            "{.metadata.generation} {.status.observedGeneration} {.status.updatedNumberScheduled} {.status.numberReady} {.status.desiredNumberScheduled}",
        )?;
        let fields: Vec<&str> = status.split(' ').collect();
        let [generation, observed, updated, ready, desired] = fields[..] else {
            return None;
        };
        let nodes = self.nodes.len().to_string();
        (generation == observed && updated == desired && ready == desired && desired == nodes)
            .then_some(())
    }

    /// Installs the chart as a user does (rendered with `values` files, applied) and waits
    /// for the agents and operators to be Ready; the applied manifest.
    pub fn install_chart(&self, values: &[&Path]) -> Result<String, Error> {
        let manifest = self.render_chart(values)?;
        self.kubectl_run(&["apply", "-f", "-"], Some(&manifest))?;
        let timeout = node::NODE_READY_TIMEOUT;
        crate::process::poll(timeout, || self.agents_rolled_out())
            .ok_or_else(|| Error::Setup("the agents did not roll out".into()))?;
        crate::process::poll(timeout, || {
            let ready = self.jsonpath(
                &["get", "deploy", "cilium-operator", "-n", "kube-system"],
                "{.status.readyReplicas}",
            )?;
            (ready == "2").then_some(())
        })
        .ok_or_else(|| Error::Setup("the operators did not get Ready".into()))?;
        Ok(manifest)
    }

    /// `cilium <args>` in an agent pod (`kubectl exec ds/cilium`).
    pub fn cilium(&self, args: &[&str]) -> Result<String, Error> {
        let mut all = vec!["exec", "-n", "kube-system", "ds/cilium", "--", "cilium"];
        all.extend_from_slice(args);
        self.kubectl_run(&all, None)
    }

    /// The agent pod on `node`.
    pub fn agent_on(&self, node: &str) -> Result<Option<PodRef>, Error> {
        Ok(self
            .pods("kube-system", "k8s-app=cilium")?
            .into_iter()
            .find(|p| p.node.as_deref() == Some(node)))
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        // Kubelets and their pods first, then the tunables they changed, then the control
        // plane (which the kubelets would otherwise keep retrying).
        self.nodes.clear();
        host::restore_sysctls(&self.dir.join("sysctl.orig"));
        self.scheduler = None;
        self.controller_manager = None;
        self.apiserver.stop();
        self.etcd.stop();
        if std::env::var_os("CILIUM_RS_KEEP_BED").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
