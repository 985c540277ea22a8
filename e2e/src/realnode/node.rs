//! One real node: a network namespace on the bed's link and a mount namespace of its own
//! (entered by every daemon of the node), running containerd and kubelet v1.20.2 as a
//! kubeadm node would, plus kube-proxy (iptables mode).
//!
//! The mount namespace gives the node what a host has and another node must not share:
//! `/var/lib/kubelet`, `/var/log/pods`, `/var/log/containers` (kubelet 1.20 hard-codes
//! them and collects other nodes' entries there), `/etc/cni/net.d`, `/opt/cni/bin`,
//! `/var/run/cilium`, `/run/containerd` (shim sockets), `/run/netns` (pod namespaces), and
//! a bpffs of its own on `/sys/fs/bpf`, shared so the agent's Bidirectional mount works.
//! Daemons are entered with `nsenter -t <holder> -n -m`, not `ip netns exec` (which
//! remounts /sys and hides the cgroup hierarchies).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::apiserver::kubernetes_binary;
use crate::netns::NetNs;
use crate::process::{Supervised, wait_until};
use crate::{Error, START_TIMEOUT, io_error as io};

use super::host;

/// The directories a node keeps private: (its own directory under the node's, the path
/// the node sees it at).
const PRIVATE_DIRS: [(&str, &str); 8] = [
    ("var-lib-kubelet", "/var/lib/kubelet"),
    ("var-log-pods", "/var/log/pods"),
    ("var-log-containers", "/var/log/containers"),
    ("etc-cni-netd", "/etc/cni/net.d"),
    ("opt-cni-bin", "/opt/cni/bin"),
    ("run-cilium", "/run/cilium"),
    ("run-containerd", "/run/containerd"),
    ("run-netns", "/run/netns"),
];

/// What a node needs from its cluster to start.
pub struct NodeSpec<'a> {
    pub name: &'a str,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    /// The kubelet's kubeconfig (its node token).
    pub kubeconfig: PathBuf,
    /// kube-proxy's kubeconfig.
    pub proxy_kubeconfig: PathBuf,
    /// The CA kubelet checks the apiserver's client certificate against.
    pub client_ca: PathBuf,
    /// The cgroup (in every v1 hierarchy) its pods run under.
    pub cgroup: String,
    /// (base name, OCI archive) imported into containerd.
    pub images: &'a [(String, PathBuf)],
}

pub struct RealNode {
    pub name: String,
    pub ip: Ipv4Addr,
    pub ns: NetNs,
    dir: PathBuf,
    cgroup: String,
    // Field order is drop order: daemons first, the mount namespace last.
    kube_proxy: Option<Supervised>,
    kubelet: Option<Supervised>,
    containerd: Option<Supervised>,
    holder: Supervised,
}

impl RealNode {
    /// Starts the node's namespaces, containerd (with the images) and kubelet.
    pub fn start(ns: NetNs, spec: &NodeSpec<'_>) -> Result<Self, Error> {
        let dir = spec.dir.clone();
        for (own, _) in PRIVATE_DIRS {
            std::fs::create_dir_all(dir.join(own)).map_err(io("mkdir node dir"))?;
        }
        // containerd's CRI needs the loopback plugin beside the network's (kubeadm nodes
        // get it from kubernetes-cni).
        std::fs::copy("/usr/lib/cni/loopback", dir.join("opt-cni-bin/loopback"))
            .map_err(io("copy the loopback CNI plugin"))?;
        host::create_cgroup(&spec.cgroup)?;

        let mut script = String::from("set -e\n");
        for (own, seen) in PRIVATE_DIRS {
            script += &format!(
                "mkdir -p {seen}\nmount --bind {} {seen}\n",
                dir.join(own).display()
            );
        }
        // The machine's bpffs is replaced, not covered: containerd checks the propagation
        // of the first mount it finds at the path.
        script += "umount -l /sys/fs/bpf 2>/dev/null || true\nmount -t bpf bpf /sys/fs/bpf\nmount --make-shared /sys/fs/bpf\n";
        let ready = dir.join("mounts-ready");
        script += &format!("touch {}\nexec sleep infinity\n", ready.display());
        let mut holder = Command::new("nsenter");
        holder
            .arg(format!("--net={}", ns.path().display()))
            .args([
                "unshare",
                "-m",
                "--propagation",
                "slave",
                "--",
                "/bin/sh",
                "-c",
            ])
            .arg(script);
        let mut holder = Supervised::spawn(
            &format!("{} mount namespace", spec.name),
            holder,
            &dir.join("namespace.log"),
        )?;
        wait_until("the node's mounts", START_TIMEOUT, &mut holder, || {
            ready.exists()
        })?;
        let mut node = Self {
            name: spec.name.to_owned(),
            ip: spec.ip,
            ns,
            dir,
            cgroup: spec.cgroup.clone(),
            kube_proxy: None,
            kubelet: None,
            containerd: None,
            holder,
        };
        node.start_containerd(spec.images)?;
        node.start_kubelet(spec)?;
        node.start_kube_proxy(spec)?;
        Ok(node)
    }

    /// `program` in the node's network and mount namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.holder.pid().to_string())
            .args(["-n", "-m", "--"])
            .arg(program);
        command
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// What the node sees at `path` of its private directories (e.g. `/etc/cni/net.d`).
    pub fn private_path(&self, seen: &str) -> Option<PathBuf> {
        PRIVATE_DIRS.iter().find_map(|(own, at)| {
            let rest = seen.strip_prefix(at)?;
            Some(self.dir.join(own).join(rest.trim_start_matches('/')))
        })
    }

    fn start_containerd(&mut self, images: &[(String, PathBuf)]) -> Result<(), Error> {
        let config = self.dir.join("containerd.toml");
        std::fs::write(&config, containerd_config(&self.dir)).map_err(io("containerd.toml"))?;
        let mut command = self.command("containerd");
        command.arg("--config").arg(&config);
        let mut containerd =
            Supervised::spawn("containerd", command, &self.dir.join("containerd.log"))?;
        let socket = self.socket();
        wait_until(
            "containerd's socket",
            START_TIMEOUT,
            &mut containerd,
            || socket.exists(),
        )?;
        self.containerd = Some(containerd);
        for (base, archive) in images {
            let output = self
                .command("ctr")
                .arg("-a")
                .arg(self.socket())
                .args(["-n", "k8s.io", "images", "import", "--base-name", base])
                .arg(archive)
                .output()
                .map_err(io("ctr images import"))?;
            if !output.status.success() {
                return Err(Error::Command {
                    command: format!("ctr images import {}", archive.display()),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                });
            }
        }
        Ok(())
    }

    fn start_kubelet(&mut self, spec: &NodeSpec<'_>) -> Result<(), Error> {
        let config = self.dir.join("kubelet-config.yaml");
        std::fs::write(&config, kubelet_config(spec)).map_err(io("kubelet config"))?;
        let mut command = self.command(kubernetes_binary("kubelet")?);
        command
            .arg(format!("--config={}", config.display()))
            .arg(format!("--kubeconfig={}", spec.kubeconfig.display()))
            .arg("--container-runtime=remote")
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                self.socket().display()
            ))
            .arg(format!("--hostname-override={}", spec.name))
            .arg(format!("--node-ip={}", spec.ip))
            // No CAP_SYS_RESOURCE in this machine's bounding set: runc cannot lower
            // oom_score_adj (containerd clamps pods' values, see its config).
            .arg("--oom-score-adj=0")
            .arg("--v=1");
        self.kubelet = Some(Supervised::spawn(
            "kubelet",
            command,
            &self.dir.join("kubelet.log"),
        )?);
        Ok(())
    }

    fn start_kube_proxy(&mut self, spec: &NodeSpec<'_>) -> Result<(), Error> {
        let mut command = self.command(kubernetes_binary("kube-proxy")?);
        command
            .arg(format!("--kubeconfig={}", spec.proxy_kubeconfig.display()))
            .arg(format!("--hostname-override={}", spec.name))
            .arg("--proxy-mode=iptables")
            // Leave the host-wide conntrack limits as they are.
            .arg("--conntrack-max-per-core=0")
            .arg("--conntrack-tcp-timeout-established=0")
            .arg("--conntrack-tcp-timeout-close-wait=0")
            .arg("--metrics-bind-address=127.0.0.1:10249")
            .arg("--healthz-bind-address=127.0.0.1:10256")
            .arg("--v=1");
        self.kube_proxy = Some(Supervised::spawn(
            "kube-proxy",
            command,
            &self.dir.join("kube-proxy.log"),
        )?);
        Ok(())
    }

    /// The end of a daemon's log (`kubelet`, `containerd`, `kube-proxy`).
    pub fn log_tail(&self, daemon: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{daemon}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops everything of the node: the daemons, then every container and shim left.
    fn stop(&mut self) {
        self.kube_proxy = None;
        self.kubelet = None;
        host::kill_cgroup(&self.cgroup);
        host::kill_shims(&self.socket());
        self.containerd = None;
        self.holder.stop();
        host::remove_cgroup(&self.cgroup);
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// containerd 1.6: its own root, state, sockets and runc root in the node's directory; CNI
/// from the node's `/etc/cni/net.d` and `/opt/cni/bin`.
fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # No CAP_SYS_RESOURCE here: runc cannot set a negative oom_score_adj; clamp instead.
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{d}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
"#,
        pause = super::images::PAUSE_IMAGE,
    )
}

fn kubelet_config(spec: &NodeSpec<'_>) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
failSwapOn: false
makeIPTablesUtilChains: false
serializeImagePulls: false
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
resolvConf: /etc/resolv.conf
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 4s
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}}
# The images are imported, never pullable: a full disk must not garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
        ip = spec.ip,
        cgroup = spec.cgroup,
        ca = spec.client_ca.display(),
    )
}

/// How long a node takes to register and report Ready with images imported (seen: ~6 s).
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(120);
