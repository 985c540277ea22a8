//! Policy computation on one agent node with many endpoints: time from a CNP's creation
//! until every selected endpoint's BPF map holds the result, time for an incremental update
//! when a new identity appears, and the agent's memory per endpoint. Endpoints are made
//! through the agent's API (a veth each, no pod namespace), with Pod objects for their
//! identities.

use std::time::{Duration, Instant};

use cilium_datapath::{Datapath, DatapathConfig, Direction, L4Match};
use e2e::cluster::{AgentNode, Cluster, agent_request};
use e2e::netns::ip;
use serde_json::{Value, json};

use crate::rss_kib;

const APPS: usize = 10;

fn endpoints(node: &AgentNode, count: usize) -> anyhow::Result<Vec<(u16, u32)>> {
    let (_, body) = agent_request(&node.socket(), "GET", "/v1/endpoint", "")
        .ok_or_else(|| anyhow::anyhow!("the agent does not answer"))?;
    let list: Vec<Value> = serde_json::from_str(&body)?;
    let ready: Vec<(u16, u32)> = list
        .iter()
        .filter(|e| e["state"] == "ready")
        .filter_map(|e| {
            Some((
                u16::try_from(e["id"].as_u64()?).ok()?,
                u32::try_from(e["identity"].as_u64()?).ok()?,
            ))
        })
        .collect();
    anyhow::ensure!(ready.len() <= count, "more endpoints than made");
    Ok(ready)
}

/// Makes endpoints `from..to`: Pod objects, a veth each in the node, IPAM and endpoint calls.
fn make_endpoints(cluster: &Cluster, from: usize, to: usize) -> anyhow::Result<()> {
    let node = &cluster.nodes[0];
    let pods: String = (from..to)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: default\n  labels:\n    app: bench-{}\nspec:\n  nodeName: {}\n  containers:\n  - name: main\n    image: registry.invalid/pause:3.9\n",
                i % APPS,
                node.name
            )
        })
        .collect();
    cluster
        .bed
        .kubectl_run(&["apply", "-f", "-"], Some(&pods))?;
    let socket = node.socket();
    for i in from..to {
        let (host, peer) = (format!("lxb{i}"), format!("lxp{i}"));
        ip(&[
            "-n",
            node.ns.name(),
            "link",
            "add",
            &host,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["-n", node.ns.name(), "link", "set", &host, "up"])?;
        let (status, body) = agent_request(
            &socket,
            "POST",
            "/v1/ipam",
            &json!({"owner": format!("default/p{i}")}).to_string(),
        )
        .ok_or_else(|| anyhow::anyhow!("the agent does not answer"))?;
        anyhow::ensure!(status == 201, "IPAM: {body}");
        let allocation: Value = serde_json::from_str(&body)?;
        let request = json!({
            "container-id": format!("bench{i}"),
            "k8s-namespace": "default",
            "k8s-pod-name": format!("p{i}"),
            "interface-name": host,
            "pod-interface-name": "eth0",
            "netns": "/proc/1/ns/net",
            "ipv4": allocation["ipv4"],
            "mac": "02:00:00:00:00:01",
            "host-mac": "02:00:00:00:00:02",
        });
        let (status, body) = agent_request(
            &socket,
            "PUT",
            &format!("/v1/endpoint/container-id:bench{i}"),
            &request.to_string(),
        )
        .ok_or_else(|| anyhow::anyhow!("the agent does not answer"))?;
        anyhow::ensure!(status == 201, "endpoint: {body}");
    }
    Ok(())
}

/// Polls until every endpoint's map has an ingress allow on TCP 80 for `identity`.
fn until_maps_hold(
    datapath: &Datapath,
    ids: &[u16],
    identity: u32,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let wanted = |id: u16| {
        datapath.policy(id).is_ok_and(|entries| {
            entries.iter().any(|e| {
                e.key.identity == identity
                    && e.key.direction == Direction::Ingress
                    && e.key.l4 == L4Match::port(6, 80)
            })
        })
    };
    let mut pending: Vec<u16> = ids.to_vec();
    while !pending.is_empty() {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{} maps never got identity {identity}",
            pending.len()
        );
        pending.retain(|id| !wanted(*id));
    }
    Ok(started.elapsed())
}

pub fn run() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let node = &cluster.nodes[0];
    let pid = node
        .agent_pid()
        .ok_or_else(|| anyhow::anyhow!("no agent"))?;
    let datapath = Datapath::open(&DatapathConfig {
        bpffs_root: node.bpffs_root().to_owned(),
        ..Default::default()
    })?;
    let (idle, _) = rss_kib(pid).unwrap_or_default();
    println!("policy: endpoints on one node, a CNP selecting all of them");
    let mut made = 0;
    for (round, count) in [100usize, 1000].into_iter().enumerate() {
        make_endpoints(&cluster, made, count)?;
        made = count;
        let deadline = Instant::now() + Duration::from_secs(300);
        let ready = loop {
            let ready = endpoints(node, count)?;
            if ready.len() == count {
                break ready;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {count} endpoints ready",
                ready.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let (rss, _) = rss_kib(pid).unwrap_or_default();
        let ids: Vec<u16> = ready.iter().map(|(id, _)| *id).collect();
        let bench0: u32 = cluster
            .bed
            .kubectl_run(
                &[
                    "get",
                    "ciliumid",
                    "-l",
                    "app=bench-0,!round",
                    "-o",
                    "jsonpath={.items[0].metadata.name}",
                ],
                None,
            )?
            .trim()
            .parse()?;
        let name = format!("bench-{round}");
        let policy = format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  endpointSelector: {{matchExpressions: [{{key: app, operator: Exists}}]}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: bench-0}}}}]\n    toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}]}}]\n"
        );
        let started = Instant::now();
        cluster
            .bed
            .kubectl_run(&["apply", "-f", "-"], Some(&policy))?;
        let applied = started.elapsed();
        let enforced =
            until_maps_hold(&datapath, &ids, bench0, Duration::from_secs(120))? + applied;

        // A new identity the policy selects as a peer: a pod with one more label.
        let extra = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: newcomer-{round}\n  namespace: default\n  labels: {{app: bench-0, round: \"{round}\"}}\nspec:\n  nodeName: elsewhere\n  containers: [{{name: main, image: registry.invalid/pause:3.9}}]\n"
        );
        let started = Instant::now();
        cluster
            .bed
            .kubectl_run(&["apply", "-f", "-"], Some(&extra))?;
        let newcomer = loop {
            let ids = cluster.bed.kubectl_run(
                &[
                    "get",
                    "ciliumid",
                    "-l",
                    &format!("round={round}"),
                    "-o",
                    "jsonpath={.items[*].metadata.name}",
                ],
                None,
            )?;
            if let Some(id) = ids
                .split_whitespace()
                .next()
                .and_then(|i| i.parse::<u32>().ok())
            {
                break id;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the new identity never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let identity_seen = started.elapsed();
        let incremental = until_maps_hold(&datapath, &ids, newcomer, Duration::from_secs(120))?;
        println!(
            "  {count} endpoints: CNP create -> every map enforces it: {:.2} s; new peer identity -> in every map: {:.2} s after its CiliumIdentity ({:.2} s after the Pod); agent RSS {} KiB ({:.1} KiB per endpoint over idle)",
            enforced.as_secs_f64(),
            incremental.as_secs_f64(),
            (identity_seen + incremental).as_secs_f64(),
            rss,
            rss.saturating_sub(idle) as f64 / count as f64
        );
        cluster
            .bed
            .kubectl_run(&["delete", "cnp", &name, "-n", "default"], None)?;
    }
    Ok(())
}
