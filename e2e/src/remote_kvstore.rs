//! A remote cluster that is only a kvstore: an etcd with TLS holding what another
//! cluster's operator would write (its config, sync canaries, nodes, identities, endpoint
//! IPs), and a one-node local cluster whose agent is pointed at it. The clustermesh bench
//! loads one; the chaos suite floods one.

use std::path::PathBuf;
use std::time::Duration;

use cilium_identity::{Label, LabelSet, NumericIdentity};
use cilium_kvstore::etcd_client::{Txn, TxnOp};
use cilium_kvstore::keys::{self, IDENTITIES_PREFIX, IP_PREFIX, NODES_PREFIX, SERVICES_PREFIX};
use cilium_kvstore::{AllocCidr, ClusterConfig, EtcdConfig, IpIdentityPair, KvNode, NodeAddress};
use serde_json::Value;

use crate::cluster::{AgentNode, Cluster, Setup, agent_get, port_of};
use crate::mesh::etcd_config;
use crate::pki::Authority;
use crate::{ClusterBed, Error, Etcd};

pub const REMOTE: &str = "cluster2";
pub const REMOTE_ID: u8 = 102;

/// How big the remote cluster is.
#[derive(Debug, Clone, Copy)]
pub struct RemoteSize {
    pub nodes: u32,
    pub endpoints_per_node: u32,
    pub identities: u32,
}

impl RemoteSize {
    pub fn endpoints(&self) -> u32 {
        self.nodes * self.endpoints_per_node
    }

    /// The remote's kvstore as its operator leaves it: every key, value. Node `n` has the
    /// PodCIDR `10.211.<n / 256>.<n % 256>`-based block, endpoint IPs `10.<211 + n / 256>…`.
    pub fn state(&self) -> Vec<(String, String)> {
        let base = u32::from(REMOTE_ID) << 16;
        let mut state = vec![(
            keys::cluster_config_key(REMOTE),
            ClusterConfig::for_cluster(REMOTE_ID).encode(),
        )];
        for i in 0..self.identities {
            let labels: LabelSet = [
                Label::k8s("app", &format!("app-{i}")),
                Label::k8s("io.kubernetes.pod.namespace", "default"),
                Label::k8s("io.cilium.k8s.policy.cluster", REMOTE),
            ]
            .into_iter()
            .collect();
            state.push((
                keys::identity_id_key(NumericIdentity(base + 256 + i)),
                labels.kvstore_string(),
            ));
        }
        for n in 0..self.nodes {
            // Addresses on the nodes' link, so the routes to their PodCIDRs install.
            let node_ip = format!("192.168.60.{}", 100 + n % 150);
            let node = KvNode {
                name: format!("node-{n}"),
                cluster: REMOTE.into(),
                ip_addresses: vec![NodeAddress {
                    kind: "InternalIP".into(),
                    ip: node_ip.clone(),
                }],
                ipv4_alloc_cidr: Some(AllocCidr::from_net(
                    &format!("10.211.{}.0/24", n % 256).parse().expect("a /24"),
                )),
                ipv6_alloc_cidr: None,
                ipv4_health_ip: String::new(),
                ipv6_health_ip: String::new(),
                cluster_id: u32::from(REMOTE_ID),
                source: "custom-resource".into(),
                encryption_key: 0,
            };
            state.push((keys::node_key(REMOTE, &node.name), node.encode()));
            for e in 0..self.endpoints_per_node {
                let index = n * self.endpoints_per_node + e;
                let ip = endpoint_ip(index);
                let pair = IpIdentityPair {
                    ip: ip.clone(),
                    mask: None,
                    host_ip: node_ip.clone(),
                    id: base + 256 + index % self.identities.max(1),
                    key: 0,
                    metadata: IpIdentityPair::metadata_for(&node.name, i64::from(e)),
                    k8s_namespace: "default".into(),
                    k8s_pod_name: format!("pod-{n}-{e}"),
                };
                state.push((keys::ip_key(&ip), pair.encode()));
            }
        }
        let now = "2026-11-23T00:00:00Z".to_owned();
        for prefix in [NODES_PREFIX, IDENTITIES_PREFIX, IP_PREFIX, SERVICES_PREFIX] {
            state.push((keys::synced_key(REMOTE, prefix), now.clone()));
        }
        state
    }
}

/// The remote's endpoint number `index`: `10.211.0.2` on, 250 per /24.
pub fn endpoint_ip(index: u32) -> String {
    let block = index / 250;
    format!(
        "10.{}.{}.{}",
        211 + block / 256,
        block % 256,
        index % 250 + 2
    )
}

/// Writes `state` into the etcd of `config`, 100 keys per transaction.
pub async fn fill(config: &EtcdConfig, state: &[(String, String)]) -> Result<(), Error> {
    let failed = |e: cilium_kvstore::etcd_client::Error| Error::Setup(format!("etcd: {e}"));
    let mut client = config
        .connect()
        .await
        .map_err(|e| Error::Setup(format!("etcd: {e}")))?;
    for chunk in state.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.map_err(failed)?;
    }
    Ok(())
}

/// The remote's kvstore, and a local one-node cluster whose agent has an (empty)
/// `--clustermesh-config` directory.
pub struct RemoteBed {
    pub cluster: Cluster,
    pub etcd: Etcd,
    /// The remote's etcd config (endpoints, TLS files) as the agent reads it.
    pub config_file: PathBuf,
    mesh_dir: PathBuf,
}

impl RemoteBed {
    pub fn start() -> Result<Self, Error> {
        let bed = ClusterBed::start()?;
        let remote_dir = bed.dir().join("cluster2-kvstore");
        std::fs::create_dir_all(&remote_dir).map_err(|e| Error::io("mkdir", e))?;
        let pki = Authority::new(&remote_dir, "cluster2 kvstore")?;
        let etcd = Etcd::start_tls(&remote_dir, &pki)?;
        let tls = etcd
            .tls()
            .cloned()
            .ok_or_else(|| Error::Setup("the remote etcd has no TLS".into()))?;
        let config_file = remote_dir.join("etcd.config");
        std::fs::write(&config_file, etcd_config(&etcd.endpoint(), &tls))
            .map_err(|e| Error::io("etcd.config", e))?;
        let mesh_dir = bed.dir().join("clustermesh");
        std::fs::create_dir_all(&mesh_dir).map_err(|e| Error::io("mkdir", e))?;
        let mut setup = Setup::standard(&bed, 1);
        setup.agent_flags.extend([
            "--cluster-name=cluster1".into(),
            "--cluster-id=101".into(),
            format!("--clustermesh-config={}", mesh_dir.display()),
        ]);
        setup
            .operator_flags
            .extend(["--cluster-name=cluster1".into(), "--cluster-id=101".into()]);
        setup.relay_ports = vec![port_of(&etcd.endpoint())?];
        let cluster = Cluster::start_on(bed, setup)?;
        Ok(Self {
            cluster,
            etcd,
            config_file,
            mesh_dir,
        })
    }

    pub fn etcd_config(&self) -> Result<EtcdConfig, Error> {
        EtcdConfig::from_file(&self.config_file).map_err(|e| Error::Setup(e.to_string()))
    }

    /// Points the agent at the remote: its config file appears in the mesh directory.
    pub fn connect(&self) -> Result<(), Error> {
        std::fs::copy(&self.config_file, self.mesh_dir.join(REMOTE))
            .map(drop)
            .map_err(|e| Error::io("clustermesh config", e))
    }

    pub fn node(&self) -> &AgentNode {
        &self.cluster.nodes[0]
    }
}

/// The remote cluster's entry in the agent's `cilium status`, once it has one.
pub fn remote_status(node: &AgentNode) -> Option<Value> {
    let (200, body) = agent_get(&node.socket(), "/v1/healthz")? else {
        return None;
    };
    let status: Value = serde_json::from_str(&body).ok()?;
    status["cluster-mesh"]["clusters"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == REMOTE)
        .cloned()
}

pub fn remote_ready(node: &AgentNode) -> bool {
    remote_status(node).is_some_and(|c| c["ready"] == true)
}

/// The remote's endpoints in the agent's BPF ipcache.
pub fn remote_in_ipcache(node: &AgentNode) -> usize {
    let Some((200, body)) = agent_get(&node.socket(), "/v1/map/ipcache") else {
        return 0;
    };
    let entries: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
    entries
        .iter()
        .filter(|e| {
            e["identity"]
                .as_u64()
                .is_some_and(|id| id >> 16 == u64::from(REMOTE_ID))
        })
        .count()
}

/// Polls `probe` every `every` until it holds; false after `timeout`.
pub fn within(timeout: Duration, every: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
