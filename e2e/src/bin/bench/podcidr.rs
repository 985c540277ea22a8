//! Issue 3's numbers: 5,000 Nodes → time until every CiliumNode has its podCIDRs, the
//! allocator's time per node (pure, without the apiserver), and the operator's RSS.

use std::time::{Duration, Instant};

use anyhow::Context;
use cilium_crds::CiliumNode;
use cilium_operator::podcidr::{Allocator, PoolConfig};
use e2e::ClusterBed;
use e2e::operator::OperatorProcess;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, ObjectMeta};

use crate::{create_all, per_second, poll, rss_kib};

const NODES: usize = 5_000;

pub async fn run() -> anyhow::Result<()> {
    println!("== podcidr: {NODES} Nodes");
    allocator_per_node()?;
    end_to_end().await
}

fn pools() -> anyhow::Result<PoolConfig> {
    Ok(PoolConfig {
        ipv4: vec!["10.0.0.0/8".parse()?],
        ipv4_mask: 24,
        ipv6: vec!["fd00::/104".parse()?],
        ipv6_mask: 120,
    })
}

fn allocator_per_node() -> anyhow::Result<()> {
    let names: Vec<String> = (0..NODES).map(|i| format!("node-{i:05}")).collect();
    let mut allocator = Allocator::new(&pools()?)?;
    let started = Instant::now();
    let assigned: Vec<Vec<String>> = names
        .iter()
        .map(|n| allocator.assign(n, &[]).pod_cidrs)
        .collect();
    let assign = started.elapsed();

    // What a restarted operator does first: rebuild occupancy from every CiliumNode.
    let mut restarted = Allocator::new(&pools()?)?;
    let started = Instant::now();
    for (name, cidrs) in names.iter().zip(&assigned) {
        restarted.restore(name, cidrs);
    }
    let restore = started.elapsed();
    println!(
        "allocator assign (v4+v6, empty pools): {:.2} µs/node ({NODES} nodes in {assign:.2?})",
        assign.as_secs_f64() * 1e6 / NODES as f64
    );
    println!(
        "allocator restore after restart:       {:.2} µs/node ({NODES} nodes in {restore:.2?})",
        restore.as_secs_f64() * 1e6 / NODES as f64
    );
    Ok(())
}

async fn end_to_end() -> anyhow::Result<()> {
    let bed = ClusterBed::start().context("cluster-in-a-box")?;
    bed.create_namespace("bench")?;
    let operator = OperatorProcess::start(
        &bed,
        "bench",
        "bench",
        &[
            "--cluster-pool-ipv4-cidr=10.0.0.0/8",
            "--cluster-pool-ipv6-cidr=fd00::/104",
            "--cluster-pool-ipv6-mask-size=120",
        ],
    )?;
    let client = bed.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let cilium_nodes: Api<CiliumNode> = Api::all(client);

    let started = Instant::now();
    create_all(&nodes, NODES, |i| Node {
        metadata: ObjectMeta {
            name: Some(format!("bench-{i:05}")),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .context("creating Nodes")?;

    let mut peak_rss = 0;
    poll(
        "every CiliumNode to have podCIDRs",
        Duration::from_secs(2),
        Duration::from_secs(900),
        || {
            let cilium_nodes = cilium_nodes.clone();
            if let Some((_, hwm)) = rss_kib(operator.process.pid()) {
                peak_rss = peak_rss.max(hwm);
            }
            async move {
                let list = cilium_nodes.list(&ListParams::default()).await?;
                let served = list
                    .items
                    .iter()
                    .filter(|cn| {
                        cn.spec
                            .ipam
                            .as_ref()
                            .and_then(|i| i.pod_cidrs.as_ref())
                            .is_some_and(|c| c.len() == 2)
                    })
                    .count();
                Ok((served == NODES).then_some(()))
            }
        },
    )
    .await?;
    let all_served = started.elapsed();
    println!(
        "all {NODES} CiliumNodes have v4+v6 podCIDRs {all_served:.2?} after the first Node was created ({:.0} nodes/s end to end)",
        per_second(NODES, all_served)
    );
    if let Some((rss, hwm)) = rss_kib(operator.process.pid()) {
        println!(
            "operator RSS: {:.1} MiB now, {:.1} MiB peak",
            rss as f64 / 1024.0,
            hwm.max(peak_rss) as f64 / 1024.0
        );
    }
    Ok(())
}
