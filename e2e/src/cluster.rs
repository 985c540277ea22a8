//! cluster-in-a-box with nodes: the bed (etcd + kube-apiserver), the operator, and "nodes"
//! — network namespaces on one shared link, each running a real `cilium-agent` (entered
//! with `nsenter --net`, so it keeps the host's /sys/fs/bpf) — and pods created as a
//! container runtime does: a Pod object, a fresh network namespace, `cilium-cni ADD`.
//!
//! The agents reach the apiserver and etcd at the same `127.0.0.1:<port>` as the tests: a
//! relay listens on the node namespace's loopback and forwards to the host's, as a
//! node-local proxy would.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::netns::{self, NetNs, ScratchBpffs};
use crate::operator::{FAST_LEASE, OperatorProcess, built_binary};
use crate::process::{Supervised, wait_until};
use crate::{ClusterBed, Error};

/// The pools the operator hands PodCIDRs out of.
pub const POD_POOL_V4: &str = "10.210.0.0/16";
/// The shared link's prefix; node `i` (from 0) is `.11 + i`.
pub const LAN_PREFIX: [u8; 3] = [192, 168, 60];

/// The namespace holding the bridge every node is plugged into.
pub struct Lan {
    ns: NetNs,
}

const BRIDGE: &str = "br0";

impl Lan {
    pub fn new() -> Result<Self, Error> {
        let ns = NetNs::new("lan")?;
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ns.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(Self { ns })
    }

    /// Plugs this machine in: `host_ifname` with `ip/24` in the host's namespace (so it
    /// reaches the nodes' addresses), the other end in the bridge. Deleted with the LAN.
    pub fn plug_host(&self, host_ifname: &str, port: &str, ip: Ipv4Addr) -> Result<(), Error> {
        netns::ip(&[
            "link",
            "add",
            host_ifname,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.ns.name(),
        ])?;
        self.ns.ip(&["link", "set", port, "master", BRIDGE, "up"])?;
        netns::ip(&["addr", "add", &format!("{ip}/24"), "dev", host_ifname])?;
        netns::ip(&["link", "set", host_ifname, "up"])
    }

    /// Plugs `node` in: its `eth0` with `ip/24`, the other end in the bridge.
    pub fn plug(&self, node: &NetNs, port: &str, ip: Ipv4Addr) -> Result<(), Error> {
        self.ns.ip(&[
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.name(),
        ])?;
        self.ns.ip(&["link", "set", port, "master", BRIDGE, "up"])?;
        node.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        node.ip(&["link", "set", "eth0", "up"])
    }
}

/// Forwards TCP connections to `127.0.0.1:<port>` inside a node namespace to the same
/// address in the host's, until dropped.
pub struct Relay {
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(node: &NetNs, port: u16) -> Result<Self, Error> {
        let listener = node
            .run(|| TcpListener::bind(("127.0.0.1", port)))?
            .map_err(|e| Error::io(format!("relay listen in {}", node.name()), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("relay nonblocking", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let _ = inside.set_nonblocking(false);
                        if let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) {
                            crate::proxy::pipe(inside, outside, None);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { stop })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One node: its namespace on the LAN, a Node object, and its agent.
pub struct AgentNode {
    pub name: String,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    dir: PathBuf,
    kubeconfig: PathBuf,
    bpffs: ScratchBpffs,
    agent: Option<Supervised>,
    starts: u32,
    /// Flags after the ones naming this node's paths (e.g. the kvstore's).
    flags: Vec<String>,
    _relays: Vec<Relay>,
}

impl AgentNode {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("cilium.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn bpffs_root(&self) -> &Path {
        self.bpffs.path()
    }

    /// The network configuration a runtime passes to `cilium-cni` on this node.
    pub fn net_conf(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "cilium",
            "type": "cilium-cni",
            "socket-path": self.socket(),
        })
        .to_string()
    }

    /// Starts the agent and waits until its API answers.
    pub fn start_agent(&mut self) -> Result<(), Error> {
        self.starts += 1;
        let mut command = self.ns.command(
            built_binary("cilium-agent")?
                .to_str()
                .ok_or_else(|| Error::Setup("binary path is not UTF-8".into()))?,
        );
        command
            .arg(format!("--k8s-node-name={}", self.name))
            .arg(format!(
                "--k8s-kubeconfig-path={}",
                self.kubeconfig.display()
            ))
            .arg(format!("--state-dir={}", self.state_dir().display()))
            .arg(format!("--bpf-root={}", self.bpffs.path().display()))
            .arg(format!("--socket-path={}", self.socket().display()))
            .args(&self.flags)
            .env("RUST_LOG", "info");
        let log = self.dir.join(format!("agent-{}.log", self.starts));
        let mut agent = Supervised::spawn("cilium-agent", command, &log)?;
        let socket = self.socket();
        wait_until(
            "the agent's API",
            Duration::from_secs(60),
            &mut agent,
            || agent_get(&socket, "/v1/healthz").is_some_and(|(status, _)| status == 200),
        )?;
        self.agent = Some(agent);
        Ok(())
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Supervised::pid)
    }

    /// Kills the agent with SIGKILL (no chance to clean up), as a crash would.
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.signal(libc::SIGKILL);
            agent.stop();
        }
    }

    pub fn agent_log(&self) -> String {
        self.agent
            .as_ref()
            .map(|a| a.log_tail(40))
            .unwrap_or_default()
    }

    /// `cilium -H <this node's socket> <args>`: its stdout, or an error with its stderr.
    pub fn cilium(&self, args: &[&str]) -> Result<String, Error> {
        let output = std::process::Command::new(built_binary("cilium")?)
            .arg("-H")
            .arg(self.socket())
            .args(args)
            .output()
            .map_err(|e| Error::io("run cilium", e))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Command {
                command: format!("cilium {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// `cilium-cni` in this node's namespace with the `CNI_*` variables of `env` and `stdin`.
    pub fn cni(&self, env: &[(&str, &str)], stdin: &str) -> Result<Output, Error> {
        let binary = built_binary("cilium-cni")?;
        let mut command = self.ns.command(
            binary
                .to_str()
                .ok_or_else(|| Error::Setup("binary path is not UTF-8".into()))?,
        );
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| Error::io("run cilium-cni", e))?;
        if let Some(mut pipe) = child.stdin.take() {
            let _ = pipe.write_all(stdin.as_bytes());
        }
        child
            .wait_with_output()
            .map_err(|e| Error::io("wait for cilium-cni", e))
    }

    /// A pod as a runtime makes one: the Pod object bound to this node, a new network
    /// namespace, and `cilium-cni ADD`. Fails with the plugin's output if ADD fails.
    pub fn add_pod(
        &self,
        bed: &ClusterBed,
        namespace: &str,
        name: &str,
        labels: &BTreeMap<&str, &str>,
    ) -> Result<CniPod, Error> {
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": self.name,
                "containers": [{"name": "main", "image": "registry.invalid/pause:3.9"}],
            },
        });
        bed.kubectl_run(&["apply", "-f", "-"], Some(&pod.to_string()))?;
        self.wire_pod(namespace, name)
    }

    /// The runtime's part for an existing Pod object: a new network namespace and
    /// `cilium-cni ADD`, tried again while the plugin says "try again later" (code 11: the
    /// agent is starting, or the pod's identity is not there yet), as a runtime does.
    pub fn wire_pod(&self, namespace: &str, name: &str) -> Result<CniPod, Error> {
        let ns = NetNs::new("pod")?;
        let container_id = format!("{}-{name}", ns.name());
        let env = cni_env("ADD", &container_id, &ns, namespace, name);
        let started = std::time::Instant::now();
        let output = loop {
            let output = self.cni(&as_pairs(&env), &self.net_conf())?;
            let try_again = !output.status.success()
                && serde_json::from_slice::<serde_json::Value>(&output.stdout)
                    .is_ok_and(|e| e["code"] == 11);
            if !try_again || started.elapsed() > ADD_RETRY_FOR {
                break output;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let add_time = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(Error::Command {
                command: format!("cilium-cni ADD {namespace}/{name}"),
                stderr: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
            });
        }
        let result: serde_json::Value = serde_json::from_str(&stdout)
            .map_err(|e| Error::Setup(format!("cilium-cni ADD printed {stdout:?}: {e}")))?;
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| Error::Setup(format!("no address in the CNI result {result}")))?;
        Ok(CniPod {
            ns,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            container_id,
            ip,
            result,
            add_time,
        })
    }

    /// `cilium-cni DEL` for `pod`; its output.
    pub fn del_pod(&self, pod: &CniPod) -> Result<Output, Error> {
        let env = cni_env("DEL", &pod.container_id, &pod.ns, &pod.namespace, &pod.name);
        self.cni(&as_pairs(&env), &self.net_conf())
    }
}

/// Waits up to `timeout` until every `(from, to, port, expected)` holds at once.
pub fn until_reachability(what: &str, timeout: Duration, cases: &[(&CniPod, &CniPod, u16, bool)]) {
    crate::wait_for(what, timeout, || {
        cases
            .iter()
            .all(|(from, to, port, expected)| {
                crate::traffic::reaches(&from.ns, to.ip, *port) == *expected
            })
            .then_some(())
    });
}

/// How long [`AgentNode::wire_pod`] keeps retrying an ADD the plugin asks to retry.
const ADD_RETRY_FOR: Duration = Duration::from_secs(90);

/// The `CNI_*` environment of a kubelet's call for a pod in `ns`.
pub fn cni_env(
    command: &str,
    container_id: &str,
    ns: &NetNs,
    namespace: &str,
    name: &str,
) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), command.into()),
        ("CNI_CONTAINERID".into(), container_id.into()),
        ("CNI_NETNS".into(), ns.path().display().to_string()),
        ("CNI_IFNAME".into(), "eth0".into()),
        ("CNI_PATH".into(), "/opt/cni/bin".into()),
        (
            "CNI_ARGS".into(),
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"),
        ),
    ]
}

pub fn as_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A pod wired by `cilium-cni`.
pub struct CniPod {
    pub ns: NetNs,
    pub namespace: String,
    pub name: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    /// What ADD printed.
    pub result: serde_json::Value,
    /// How long `cilium-cni ADD` took.
    pub add_time: Duration,
}

/// `GET path` on an agent's unix socket: the status and the body, or None if it does not
/// answer.
pub fn agent_get(socket: &Path, path: &str) -> Option<(u16, String)> {
    agent_request(socket, "GET", path, "")
}

/// `method path` with `body` on an agent's unix socket (HTTP/1.0, so the agent closes the
/// connection after answering). An agent may answer before it has read the body (a 405,
/// a body past its limit) and close: the answer still counts, as it does for curl, even
/// though the rest of the write or the end of the read then fails.
pub fn agent_request(socket: &Path, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(request.as_bytes());
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The bed, the operator, the LAN and the nodes.
pub struct Cluster {
    pub nodes: Vec<AgentNode>,
    pub operator: OperatorProcess,
    lan: Arc<Lan>,
    pub bed: ClusterBed,
}

/// How a cluster's operator and agents run: their flags and credentials.
pub struct Setup {
    pub nodes: usize,
    pub operator_flags: Vec<String>,
    /// Namespace of the operator's Lease.
    pub operator_namespace: String,
    /// Flags every agent gets after the ones naming its node's paths.
    pub agent_flags: Vec<String>,
    /// Kubeconfigs of the operator and the agents (default: the bed's admin).
    pub operator_kubeconfig: Option<PathBuf>,
    pub agent_kubeconfig: Option<PathBuf>,
    /// The link the nodes are plugged into (default: one of the cluster's own); clusters
    /// of a mesh share one.
    pub lan: Option<Arc<Lan>>,
    /// Host part of the first node's address on the link (`LAN_PREFIX.<n>`).
    pub first_address: u8,
    /// Host ports relayed into every node besides the apiserver's and etcd's (e.g. the
    /// kvstores of a mesh).
    pub relay_ports: Vec<u16>,
}

impl Setup {
    /// `nodes` nodes, the operator with the test pool in /22 blocks, fast leader election
    /// and the bed's etcd as the kvstore of both.
    pub fn standard(bed: &ClusterBed, nodes: usize) -> Self {
        let etcd = format!("--etcd-endpoints={}", bed.etcd_endpoint());
        Self {
            nodes,
            operator_flags: vec![
                format!("--cluster-pool-ipv4-cidr={POD_POOL_V4}"),
                "--kvstore=etcd".into(),
                etcd.clone(),
                // /22: room for the 1,000 endpoints of the policy benchmark on one node.
                "--cluster-pool-ipv4-mask-size=22".into(),
                FAST_LEASE[0].into(),
                FAST_LEASE[1].into(),
                FAST_LEASE[2].into(),
            ],
            operator_namespace: "default".into(),
            agent_flags: vec![etcd],
            operator_kubeconfig: None,
            agent_kubeconfig: None,
            lan: None,
            first_address: 11,
            relay_ports: Vec::new(),
        }
    }
}

impl Cluster {
    /// A bed of its own with the operator and `count` nodes (`node-1`, ...), each with a
    /// Node object and a running agent.
    pub fn start(count: usize) -> Result<Self, Error> {
        let bed = ClusterBed::start()?;
        let setup = Setup::standard(&bed, count);
        Self::start_on(bed, setup)
    }

    /// The operator and the nodes of `setup` on `bed`.
    pub fn start_on(bed: ClusterBed, setup: Setup) -> Result<Self, Error> {
        let flags: Vec<&str> = setup.operator_flags.iter().map(String::as_str).collect();
        let operator_kubeconfig = setup
            .operator_kubeconfig
            .clone()
            .unwrap_or_else(|| bed.kubeconfig().to_owned());
        let operator = OperatorProcess::start_with_kubeconfig(
            &bed,
            &operator_kubeconfig,
            "operator",
            &setup.operator_namespace,
            &flags,
        )?;
        let lan = match &setup.lan {
            Some(lan) => lan.clone(),
            None => Arc::new(Lan::new()?),
        };
        let apiserver_port = port_of(&bed.apiserver_url())?;
        let etcd_port = port_of(bed.etcd_endpoint())?;
        let mut nodes = Vec::new();
        for i in 0..setup.nodes {
            let index = u8::try_from(i).map_err(|_| Error::Setup("too many nodes".into()))?;
            let name = format!("node-{}", i + 1);
            let [a, b, c] = LAN_PREFIX;
            let host = setup
                .first_address
                .checked_add(index)
                .ok_or_else(|| Error::Setup("too many nodes for the link".into()))?;
            let ip = Ipv4Addr::new(a, b, c, host);
            let ns = netns::node()?;
            // Named by address: unique on a link several clusters share.
            lan.plug(&ns, &format!("port{host}"), ip)?;
            register_node(&bed, &name, ip)?;
            let dir = bed.dir().join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("node directory", e))?;
            let mut relays = Vec::new();
            for port in [apiserver_port, etcd_port]
                .into_iter()
                .chain(setup.relay_ports.iter().copied())
            {
                relays.push(Relay::start(&ns, port)?);
            }
            let mut node = AgentNode {
                _relays: relays,
                flags: setup.agent_flags.clone(),
                name,
                ns,
                ip,
                kubeconfig: setup
                    .agent_kubeconfig
                    .clone()
                    .unwrap_or_else(|| bed.kubeconfig().to_owned()),
                bpffs: ScratchBpffs::new("node"),
                dir,
                agent: None,
                starts: 0,
            };
            node.start_agent()?;
            nodes.push(node);
        }
        Ok(Self {
            nodes,
            operator,
            lan,
            bed,
        })
    }

    /// The `Valid` condition of policy `kind`/`name` (a CNP in `namespace`, or a CCNP), once
    /// the agents have written one.
    pub fn valid_condition(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<serde_json::Value> {
        let object = self.bed.get(kind, namespace, name).ok()?;
        object["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Valid")
            .cloned()
    }

    /// How many CiliumEndpoints, of every namespace, are `ready`.
    pub fn ready_endpoints(&self) -> Result<usize, Error> {
        let states = self.bed.kubectl_run(
            &[
                "get",
                "cep",
                "-A",
                "-o",
                "jsonpath={.items[*].status.state}",
            ],
            None,
        )?;
        Ok(states.split_whitespace().filter(|s| *s == "ready").count())
    }

    /// A host outside the cluster on the nodes' link (its addresses are `world` to the
    /// agents), with routes back to every node's PodCIDR via that node.
    pub fn outside_host(&self, ips: &[Ipv4Addr]) -> Result<NetNs, Error> {
        let (first, more) = ips
            .split_first()
            .ok_or_else(|| Error::Setup("an outside host needs an address".into()))?;
        let ns = NetNs::new("outside")?;
        let port = format!("out{}", ns.name().rsplit('-').next().unwrap_or("0"));
        self.lan.plug(&ns, &port, *first)?;
        for ip in more {
            ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        }
        for node in &self.nodes {
            let cidr = self.pod_cidr(node)?;
            ns.ip(&["route", "add", &cidr, "via", &node.ip.to_string()])?;
        }
        Ok(ns)
    }

    /// The first PodCIDR the operator gave `node`, as its CiliumNode says.
    pub fn pod_cidr(&self, node: &AgentNode) -> Result<String, Error> {
        let cidr = self.bed.kubectl_run(
            &[
                "get",
                "cn",
                &node.name,
                "-o",
                "jsonpath={.spec.ipam.podCIDRs[0]}",
            ],
            None,
        )?;
        Ok(cidr.trim().to_owned())
    }
}

/// The port of a URL such as `https://127.0.0.1:2379`.
pub fn port_of(url: &str) -> Result<u16, Error> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Setup(format!("{url} has no port")))
}

/// The labels of a test pod: `app=<app>`.
pub fn app_labels(app: &str) -> BTreeMap<&str, &str> {
    BTreeMap::from([("app", app)])
}

/// A Node object with `ip` as its InternalIP, as a kubelet registers it.
pub fn register_node(bed: &ClusterBed, name: &str, ip: Ipv4Addr) -> Result<(), Error> {
    let node = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    bed.kubectl_run(&["apply", "-f", "-"], Some(&node.to_string()))?;
    let status = serde_json::json!({"status": {"addresses": [
        {"type": "InternalIP", "address": ip.to_string()},
        {"type": "Hostname", "address": name},
    ]}});
    bed.kubectl_run(
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
        None,
    )
    .map(drop)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first, while their node namespaces and pins still exist.
        for node in &mut self.nodes {
            node.kill_agent();
        }
    }
}
