//! Loading a remote cluster: a remote kvstore (etcd with TLS) holding cluster2's config,
//! sync canaries, 100 nodes, 100 identities and 10,000 endpoint IPs, as its operator would
//! write them; the time from the file appearing in the agent's `--clustermesh-config` until
//! the cluster is ready in `cilium status`, and until all 10,000 IPs are in the agent's
//! BPF ipcache; and the agent's memory before and after.

use std::time::{Duration, Instant};

use cilium_identity::{Label, LabelSet, NumericIdentity};
use cilium_kvstore::etcd_client::{Txn, TxnOp};
use cilium_kvstore::keys::{self, IDENTITIES_PREFIX, IP_PREFIX, NODES_PREFIX, SERVICES_PREFIX};
use cilium_kvstore::{AllocCidr, ClusterConfig, EtcdConfig, IpIdentityPair, KvNode, NodeAddress};
use e2e::cluster::{AgentNode, Cluster, Setup, agent_get, port_of};
use e2e::mesh::etcd_config;
use e2e::pki::Authority;
use e2e::{ClusterBed, Etcd};
use serde_json::Value;

use crate::rss_kib;

const NODES: u32 = 100;
const ENDPOINTS_PER_NODE: u32 = 100;
const IDENTITIES: u32 = 100;
const REMOTE_ID: u8 = 102;

/// cluster2's kvstore as its operator leaves it: every key, value.
fn remote_state() -> Vec<(String, String)> {
    let cluster = "cluster2";
    let base = u32::from(REMOTE_ID) << 16;
    let mut state = vec![(
        keys::cluster_config_key(cluster),
        ClusterConfig::for_cluster(REMOTE_ID).encode(),
    )];
    for i in 0..IDENTITIES {
        let labels: LabelSet = [
            Label::k8s("app", &format!("app-{i}")),
            Label::k8s("io.kubernetes.pod.namespace", "default"),
            Label::k8s("io.cilium.k8s.policy.cluster", cluster),
        ]
        .into_iter()
        .collect();
        state.push((
            keys::identity_id_key(NumericIdentity(base + 256 + i)),
            labels.kvstore_string(),
        ));
    }
    for n in 0..NODES {
        // Addresses on the nodes' link, so the routes to their PodCIDRs install.
        let node_ip = format!("192.168.60.{}", 100 + n);
        let node = KvNode {
            name: format!("node-{n}"),
            cluster: cluster.into(),
            ip_addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                ip: node_ip.clone(),
            }],
            ipv4_alloc_cidr: Some(AllocCidr::from_net(
                &format!("10.211.{n}.0/24").parse().expect("a /24"),
            )),
            ipv6_alloc_cidr: None,
            ipv4_health_ip: String::new(),
            ipv6_health_ip: String::new(),
            cluster_id: u32::from(REMOTE_ID),
            source: "custom-resource".into(),
            encryption_key: 0,
        };
        state.push((keys::node_key(cluster, &node.name), node.encode()));
        for e in 0..ENDPOINTS_PER_NODE {
            let ip = format!("10.211.{n}.{}", e + 2);
            let pair = IpIdentityPair {
                ip: ip.clone(),
                mask: None,
                host_ip: node_ip.clone(),
                id: base + 256 + (n * ENDPOINTS_PER_NODE + e) % IDENTITIES,
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
        state.push((keys::synced_key(cluster, prefix), now.clone()));
    }
    state
}

async fn fill(config: &EtcdConfig, state: &[(String, String)]) -> anyhow::Result<()> {
    let mut client = config.connect().await?;
    for chunk in state.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}

/// cluster2's endpoints in the agent's BPF ipcache.
fn remote_in_ipcache(node: &AgentNode) -> usize {
    let Some((200, body)) = agent_get(&node.socket(), "/v1/map/ipcache") else {
        return 0;
    };
    let entries: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
    entries
        .iter()
        .filter(|e| {
            e["prefix"]
                .as_str()
                .is_some_and(|p| p.starts_with("10.211."))
        })
        .filter(|e| {
            e["identity"]
                .as_u64()
                .is_some_and(|id| id >> 16 == u64::from(REMOTE_ID))
        })
        .count()
}

fn remote_ready(node: &AgentNode) -> bool {
    let Some((200, body)) = agent_get(&node.socket(), "/v1/healthz") else {
        return false;
    };
    let status: Value = serde_json::from_str(&body).unwrap_or_default();
    status["cluster-mesh"]["clusters"]
        .as_array()
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["name"] == "cluster2" && c["ready"] == true)
        })
}

pub fn run(runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let bed = ClusterBed::start()?;
    let remote_dir = bed.dir().join("cluster2-kvstore");
    std::fs::create_dir_all(&remote_dir)?;
    let pki = Authority::new(&remote_dir, "cluster2 kvstore")?;
    let etcd = Etcd::start_tls(&remote_dir, &pki)?;
    let tls = etcd
        .tls()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no TLS"))?;
    let config_text = etcd_config(&etcd.endpoint(), &tls);
    let config_file = remote_dir.join("etcd.config");
    std::fs::write(&config_file, &config_text)?;
    let state = remote_state();
    let started = Instant::now();
    runtime.block_on(fill(&EtcdConfig::from_file(&config_file)?, &state))?;
    println!(
        "clustermesh: cluster2's kvstore filled with {} keys in {:.1} s",
        state.len(),
        started.elapsed().as_secs_f64()
    );

    let mesh_dir = bed.dir().join("clustermesh");
    std::fs::create_dir_all(&mesh_dir)?;
    let port = port_of(&etcd.endpoint())?;
    let mut setup = Setup::standard(&bed, 1);
    setup.agent_flags.extend([
        "--cluster-name=cluster1".into(),
        "--cluster-id=101".into(),
        format!("--clustermesh-config={}", mesh_dir.display()),
    ]);
    setup
        .operator_flags
        .extend(["--cluster-name=cluster1".into(), "--cluster-id=101".into()]);
    setup.relay_ports = vec![port];
    let cluster = Cluster::start_on(bed, setup)?;
    let node = &cluster.nodes[0];
    let pid = node
        .agent_pid()
        .ok_or_else(|| anyhow::anyhow!("no agent"))?;
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(pid);

    let expected = usize::try_from(NODES * ENDPOINTS_PER_NODE)?;
    let connected = Instant::now();
    std::fs::write(mesh_dir.join("cluster2"), &config_text)?;
    let deadline = connected + Duration::from_secs(300);
    let mut ready_after = None;
    loop {
        if ready_after.is_none() && remote_ready(node) {
            ready_after = Some(connected.elapsed());
        }
        if remote_in_ipcache(node) >= expected {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the remote endpoints did not arrive in 300 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let loaded = connected.elapsed();
    let after = rss_kib(pid);
    println!(
        "clustermesh: remote cluster with {expected} endpoints, {NODES} nodes, {IDENTITIES} identities: ready in {:.2} s, all endpoints in the BPF ipcache {:.2} s after the config file appeared",
        ready_after.unwrap_or(loaded).as_secs_f64(),
        loaded.as_secs_f64()
    );
    if let (Some((rss_before, _)), Some((rss_after, peak))) = (before, after) {
        println!(
            "clustermesh: agent RSS {:.1} MiB before, {:.1} MiB after (peak {:.1} MiB): {:.2} KiB per remote endpoint",
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0,
            peak as f64 / 1024.0,
            rss_after.saturating_sub(rss_before) as f64 / expected as f64
        );
    }
    drop(etcd);
    Ok(())
}
