//! Pods through the CNI plugin on one agent node: time per `cilium-cni ADD` and DEL, time
//! until every CiliumEndpoint is ready, and the agent's memory per endpoint.

use std::time::{Duration, Instant};

use e2e::cluster::Cluster;

use crate::rss_kib;

const PODS: usize = 100;

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let total: Duration = times.iter().sum();
    let mean = total / u32::try_from(times.len().max(1)).unwrap_or(1);
    format!(
        "mean {:.1} ms, p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        mean.as_secs_f64() * 1e3,
        percentile(times, 50).as_secs_f64() * 1e3,
        percentile(times, 95).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    )
}

pub fn run() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let node = &cluster.nodes[0];
    let pid = node
        .agent_pid()
        .ok_or_else(|| anyhow::anyhow!("the agent is not running"))?;
    let (rss_before, _) = rss_kib(pid).unwrap_or_default();

    let pods: String = (0..PODS)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{i}\n  namespace: default\n  labels:\n    app: bench-{}\nspec:\n  nodeName: {}\n  containers:\n  - name: main\n    image: registry.invalid/pause:3.9\n",
                i % 10,
                node.name
            )
        })
        .collect();
    cluster
        .bed
        .kubectl_run(&["apply", "-f", "-"], Some(&pods))?;

    let started = Instant::now();
    let mut wired = Vec::with_capacity(PODS);
    for i in 0..PODS {
        wired.push(node.wire_pod("default", &format!("bench-{i}"))?);
    }
    let all_added = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = cluster.ready_endpoints()?;
        if ready == PODS {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {PODS} endpoints became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_ready = started.elapsed();
    let (rss_after, peak) = rss_kib(pid).unwrap_or_default();

    let mut adds: Vec<Duration> = wired.iter().map(|p| p.add_time).collect();
    let mut dels = Vec::with_capacity(PODS);
    for pod in &wired {
        let started = Instant::now();
        let output = node.del_pod(pod)?;
        anyhow::ensure!(output.status.success(), "DEL {} failed", pod.name);
        dels.push(started.elapsed());
    }

    println!("cni: {PODS} pods on one node through cilium-cni");
    println!(
        "  ADD (veth, addresses, routes, endpoint): {}",
        summary(&mut adds)
    );
    println!(
        "  all {PODS} ADDs: {:.1} s; all CiliumEndpoints ready {:.1} s after the first ADD",
        all_added.as_secs_f64(),
        all_ready.as_secs_f64()
    );
    println!("  DEL: {}", summary(&mut dels));
    println!(
        "  agent RSS: {rss_before} KiB idle, {rss_after} KiB with {PODS} endpoints (peak {peak} KiB): {:.1} KiB per endpoint",
        rss_after.saturating_sub(rss_before) as f64 / PODS as f64
    );
    Ok(())
}
