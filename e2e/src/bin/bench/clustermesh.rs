//! Loading a remote cluster: a remote kvstore (etcd with TLS) holding cluster2's config,
//! sync canaries, 100 nodes, 100 identities and 10,000 endpoint IPs, as its operator would
//! write them; the time from the file appearing in the agent's `--clustermesh-config` until
//! the cluster is ready in `cilium status`, and until all 10,000 IPs are in the agent's
//! BPF ipcache; and the agent's memory before and after.

use std::time::{Duration, Instant};

use e2e::remote_kvstore::{RemoteBed, RemoteSize, fill, remote_in_ipcache, remote_ready};

use crate::rss_kib;

const SIZE: RemoteSize = RemoteSize {
    nodes: 100,
    endpoints_per_node: 100,
    identities: 100,
};

pub fn run(runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let remote = RemoteBed::start()?;
    let state = SIZE.state();
    let started = Instant::now();
    runtime.block_on(fill(&remote.etcd_config()?, &state))?;
    println!(
        "clustermesh: cluster2's kvstore filled with {} keys in {:.1} s",
        state.len(),
        started.elapsed().as_secs_f64()
    );
    let node = remote.node();
    let pid = node
        .agent_pid()
        .ok_or_else(|| anyhow::anyhow!("no agent"))?;
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(pid);

    let expected = usize::try_from(SIZE.endpoints())?;
    let connected = Instant::now();
    remote.connect()?;
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
        "clustermesh: remote cluster with {expected} endpoints, {} nodes, {} identities: ready in {:.2} s, all endpoints in the BPF ipcache {:.2} s after the config file appeared",
        SIZE.nodes,
        SIZE.identities,
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
    Ok(())
}
