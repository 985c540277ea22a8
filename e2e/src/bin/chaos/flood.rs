//! A remote cluster that floods its kvstore: more endpoint IPs than one cluster may make
//! the agent hold, identities outside its cluster id's range, values over the size taken,
//! then new keys as fast as etcd takes them. The agent's memory, what it holds, and what
//! it counted as refused.

use std::time::{Duration, Instant};

use anyhow::Context;
use cilium_identity::NumericIdentity;
use cilium_kvstore::keys;
use e2e::process::rss_kib;
use e2e::remote_kvstore::{
    REMOTE_ID, RemoteBed, RemoteSize, endpoint_ip, fill, remote_in_ipcache, remote_status, within,
};

use crate::Row;

/// 250,000 IPs: 50,000 past the 200,000 one cluster may make the agent hold.
const SIZE: RemoteSize = RemoteSize {
    nodes: 100,
    endpoints_per_node: 2_500,
    identities: 100,
};
const FOREIGN_IDENTITIES: u32 = 1_000;
const OVERSIZED: u32 = 10;
/// How long new keys are written once the agent holds its fill.
const FLOOD: Duration = Duration::from_secs(20);

/// What the flood writes besides the cluster's state: identities of another cluster's
/// range, and identities of its own range with a 1.2 MiB value.
fn junk() -> Vec<(String, String)> {
    let foreign = (u32::from(REMOTE_ID) + 1) << 16;
    let own = u32::from(REMOTE_ID) << 16;
    let mut junk: Vec<(String, String)> = (0..FOREIGN_IDENTITIES)
        .map(|i| {
            (
                keys::identity_id_key(NumericIdentity(foreign + 256 + i)),
                "k8s:app=stolen;".to_owned(),
            )
        })
        .collect();
    let huge = format!("k8s:app={};", "x".repeat(1_200_000));
    junk.extend((0..OVERSIZED).map(|i| {
        (
            keys::identity_id_key(NumericIdentity(own + 60_000 + i)),
            huge.clone(),
        )
    }));
    junk
}

pub fn remote_flood(runtime: &tokio::runtime::Runtime) -> anyhow::Result<Row> {
    let remote = RemoteBed::start().context("bed")?;
    let config = remote.etcd_config()?;
    let started = Instant::now();
    runtime.block_on(fill(&config, &SIZE.state()))?;
    // Oversized values one per transaction (etcd takes 1.5 MiB per request).
    for pair in junk() {
        runtime.block_on(fill(&config, &[pair]))?;
    }
    let filled = started.elapsed();
    let node = remote.node();
    let pid = node.agent_pid().context("no agent")?;
    let (before, _) = rss_kib(pid).context("agent RSS")?;

    let connected = Instant::now();
    remote.connect()?;
    let limit: usize = 200_000;
    let held = || {
        remote_status(node)
            .and_then(|s| s["num-endpoints"].as_u64())
            .unwrap_or(0)
    };
    // The status is cheap to read; the ipcache (a dump of 200,000 entries) is not.
    let minutes = Duration::from_secs(600);
    anyhow::ensure!(
        within(minutes, Duration::from_millis(200), || held()
            >= limit as u64),
        "the remote's endpoints were not taken in 600 s (the agent held {} of {limit})",
        held()
    );
    anyhow::ensure!(
        within(minutes, Duration::from_secs(2), || remote_in_ipcache(node)
            >= limit),
        "the remote's endpoints did not reach the ipcache in 600 s ({} of {limit} there)",
        remote_in_ipcache(node)
    );
    let loaded = connected.elapsed();
    let (after_fill, _) = rss_kib(pid).context("agent RSS")?;

    // New IPs past the limit, as fast as etcd takes them.
    let flood_started = Instant::now();
    let mut written = 0u32;
    while flood_started.elapsed() < FLOOD {
        let batch: Vec<(String, String)> = (0..1_000)
            .map(|i| {
                let index = SIZE.endpoints() + written + i;
                let ip = endpoint_ip(index);
                let pair = cilium_kvstore::IpIdentityPair {
                    ip: ip.clone(),
                    mask: None,
                    host_ip: "192.168.60.100".into(),
                    id: (u32::from(REMOTE_ID) << 16) + 256,
                    key: 0,
                    metadata: String::new(),
                    k8s_namespace: "default".into(),
                    k8s_pod_name: format!("flood-{index}"),
                };
                (keys::ip_key(&ip), pair.encode())
            })
            .collect();
        runtime.block_on(fill(&config, &batch))?;
        written += 1_000;
    }
    let expected_refused = u64::from(
        SIZE.endpoints() - u32::try_from(limit)? + FOREIGN_IDENTITIES + OVERSIZED + written,
    );
    let refused = || {
        remote_status(node)
            .and_then(|s| s["num-invalid-values"].as_u64())
            .unwrap_or(0)
    };
    within(Duration::from_secs(120), Duration::from_millis(200), || {
        refused() >= expected_refused
    });
    let status = remote_status(node).unwrap_or_default();
    let (after, peak) = rss_kib(pid).context("agent RSS")?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Row {
        fault: format!(
            "remote kvstore flood: {} IPs (limit {limit}), {FOREIGN_IDENTITIES} identities of another cluster's range, {OVERSIZED} values of 1.2 MiB (filled in {:.0} s), then {written} new IPs in {} s",
            SIZE.endpoints(),
            filled.as_secs_f64(),
            FLOOD.as_secs()
        ),
        measured: format!(
            "ready with {} in the ipcache after {:.1} s; holds {} endpoints, {} identities; refused and counted {} of {expected_refused}; agent RSS {:.0} → {:.0} MiB after the fill, {:.0} MiB after the flood (peak {:.0} MiB)",
            limit,
            loaded.as_secs_f64(),
            status["num-endpoints"],
            status["num-identities"],
            refused(),
            mib(before),
            mib(after_fill),
            mib(after),
            mib(peak)
        ),
        goal: "holds ≤ the limits, every excess value refused and counted, RSS within the documented ~350 MiB per remote cluster",
    })
}
