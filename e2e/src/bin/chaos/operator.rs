//! Faults of the operator's world: its leader killed during churn, the apiserver, its
//! etcd, and the kvstore's etcd killed and restarted under churn.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::operator::{FAST_LEASE, OperatorProcess, kill_leader};
use e2e::{ClusterBed, Etcd};
use serde_json::Value;

use crate::{Row, spread};

/// 4,096 blocks of /24: churn never exhausts it.
const POOL: &str = "--cluster-pool-ipv4-cidr=10.0.0.0/12";

fn apply(bed: &ClusterBed, objects: &[Value]) -> anyhow::Result<()> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    bed.kubectl_run(&["apply", "-f", "-"], Some(&list.to_string()))?;
    Ok(())
}

fn node(name: &str) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn pod(name: &str, app: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/pause:3.9"}]},
    })
}

fn pod_cidrs(bed: &ClusterBed) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    Ok(e2e::operator::pod_cidrs(bed)?)
}

/// Blocks given to more than one node.
fn duplicate_cidrs(cidrs: &BTreeMap<String, Vec<String>>) -> usize {
    let all: Vec<&String> = cidrs.values().flatten().collect();
    let distinct: BTreeSet<&&String> = all.iter().collect();
    all.len() - distinct.len()
}

/// Label sets with more than one CiliumIdentity, and the label sets that have one.
fn identities(bed: &ClusterBed) -> anyhow::Result<(usize, BTreeSet<String>)> {
    let mut by_labels: BTreeMap<String, usize> = BTreeMap::new();
    for cid in bed.list("ciliumidentities")? {
        *by_labels
            .entry(cid["security-labels"].to_string())
            .or_default() += 1;
    }
    let duplicates = by_labels.values().filter(|n| **n > 1).count();
    Ok((duplicates, by_labels.into_keys().collect()))
}

/// Creates Nodes and Pods in batches every 500 ms until `stop`; the names it created.
fn churn(bed: &ClusterBed, stop: &AtomicBool, prefix: &str, label_sets: usize) -> Vec<String> {
    let mut nodes = Vec::new();
    let mut batch = 0;
    while !stop.load(Ordering::Relaxed) {
        let names: Vec<String> = (0..10).map(|i| format!("{prefix}-{batch}-{i}")).collect();
        let mut objects: Vec<Value> = names.iter().map(|n| node(n)).collect();
        objects.extend((0..20).map(|i| {
            pod(
                &format!("{prefix}-{batch}-{i}"),
                &format!("app-{}", (batch * 20 + i) % label_sets),
            )
        }));
        // During an outage the apply fails; the batch is tried again.
        if apply(bed, &objects).is_ok() {
            nodes.extend(names);
            batch += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    nodes
}

/// Waits until every node of `nodes` has a PodCIDR; those still without one after
/// `timeout`.
fn missing_cidrs(bed: &ClusterBed, nodes: &[String], timeout: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let cidrs = pod_cidrs(bed)?;
        let missing = nodes
            .iter()
            .filter(|n| cidrs.get(*n).is_none_or(Vec::is_empty))
            .count();
        if missing == 0 || Instant::now() > deadline {
            return Ok(missing);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Two replicas; the leader is SIGKILLed `kills` times while Nodes and Pods are created, a
/// new replica replacing each one killed.
pub fn leader_kills(kills: usize) -> anyhow::Result<Row> {
    let bed = ClusterBed::start().context("bed")?;
    let flags = [POOL, FAST_LEASE[0], FAST_LEASE[1], FAST_LEASE[2]];
    let mut replicas = vec![
        OperatorProcess::start(&bed, "replica-0", "kube-system", &flags)?,
        OperatorProcess::start(&bed, "replica-1", "kube-system", &flags)?,
    ];
    let stop = AtomicBool::new(false);
    let label_sets = 150;
    let (nodes, takeovers) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let churned = scope.spawn(|| churn(&bed, &stop, "churn", label_sets));
        let mut takeovers = Vec::new();
        for kill in 0..kills {
            std::thread::sleep(Duration::from_secs(2));
            let takeover = kill_leader(&bed, "kube-system", &mut replicas, Duration::from_secs(60));
            takeovers.push(takeover.after);
            replicas.push(OperatorProcess::start(
                &bed,
                &format!("replica-{}", kill + 2),
                "kube-system",
                &flags,
            )?);
        }
        stop.store(true, Ordering::Relaxed);
        let nodes = churned
            .join()
            .map_err(|_| anyhow::anyhow!("the churn thread panicked"))?;
        Ok((nodes, takeovers))
    })?;
    let missed = missing_cidrs(&bed, &nodes, Duration::from_secs(120))?;
    let pods = nodes.len() * 2;
    let wanted: usize = label_sets.min(pods);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (duplicate_ids, sets) = loop {
        let (duplicates, sets) = identities(&bed)?;
        if sets.len() >= wanted || Instant::now() > deadline {
            break (duplicates, sets);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let duplicate_blocks = duplicate_cidrs(&pod_cidrs(&bed)?);
    let mut takeovers = takeovers;
    Ok(Row {
        fault: format!(
            "operator leader SIGKILL ×{kills} during churn ({} Nodes, {pods} Pods, {label_sets} label sets), lease 4 s; takeover = kill → the new holder's acquireTime",
            nodes.len()
        ),
        measured: format!(
            "takeover {}; duplicate PodCIDRs {duplicate_blocks}, duplicate identities {duplicate_ids}; Nodes without a PodCIDR {missed}, label sets without an identity {}",
            spread(&mut takeovers),
            wanted.saturating_sub(sets.len())
        ),
        goal: "takeover ≤ lease duration, 0 duplicates, 0 missed",
    })
}

/// The lease outlasts the outages: the same leader must serve after them.
const LONG_LEASE: [&str; 4] = [
    POOL,
    "--leader-election-lease-duration=60s",
    "--leader-election-renew-deadline=45s",
    "--leader-election-retry-period=2s",
];

/// A Node created every 500 ms while `fault` runs; how long each Node created after the
/// fault began took to be `served` (the names `served` returns, polled every 100 ms while
/// the churn goes on), counted from its creation or from the end of the fault, whichever
/// is later: a Node created during the outage cannot be served before it is over.
fn under_churn(
    what: &str,
    bed: &ClusterBed,
    fault: impl FnOnce() -> anyhow::Result<()>,
    served: impl Fn() -> anyhow::Result<BTreeSet<String>> + Sync,
) -> anyhow::Result<Row> {
    let created: Mutex<Vec<(String, Instant)>> = Mutex::default();
    let served_at: Mutex<BTreeMap<String, Instant>> = Mutex::default();
    let (churning, polling) = (AtomicBool::new(true), AtomicBool::new(true));
    let (fault_started, fault_over) = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            let mut n = 0;
            while churning.load(Ordering::Relaxed) {
                let name = format!("node-{n}");
                if apply(bed, &[node(&name)]).is_ok() {
                    locked(&created).push((name, Instant::now()));
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        scope.spawn(|| {
            while polling.load(Ordering::Relaxed) {
                // Reading fails while the fault lasts; what it reads after is what counts.
                if let Ok(names) = served() {
                    let now = Instant::now();
                    let mut at = locked(&served_at);
                    for name in names {
                        at.entry(name).or_insert(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_secs(3));
        let fault_started = Instant::now();
        let result = fault();
        let fault_over = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        churning.store(false, Ordering::Relaxed);
        // Its last Node may still be on its way in.
        let _ = churn.join();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let (created, at) = (locked(&created), locked(&served_at));
            if created.iter().all(|(n, _)| at.contains_key(n)) {
                break;
            }
            drop((created, at));
            std::thread::sleep(Duration::from_millis(100));
        }
        polling.store(false, Ordering::Relaxed);
        result.map(|()| (fault_started, fault_over))
    })?;
    let (created, served_at) = (locked(&created).clone(), locked(&served_at).clone());
    let missed = created
        .iter()
        .filter(|(n, _)| !served_at.contains_key(n))
        .count();
    let mut delays: Vec<Duration> = created
        .iter()
        .filter(|(_, at)| *at >= fault_started)
        .filter_map(|(n, at)| {
            Some(
                served_at
                    .get(n)?
                    .saturating_duration_since((*at).max(fault_over)),
            )
        })
        .collect();
    Ok(Row {
        fault: format!("{what}, 13 s, a Node created every 500 ms"),
        measured: format!(
            "Nodes created since the fault served in {} after their creation or the end of the fault ({} Nodes); missed {missed} of {}",
            spread(&mut delays),
            delays.len(),
            created.len()
        ),
        goal: "served ≤ 5 s after it is back, 0 missed",
    })
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Nodes that have a PodCIDR.
fn with_cidrs(bed: &ClusterBed) -> anyhow::Result<BTreeSet<String>> {
    Ok(pod_cidrs(bed)?
        .into_iter()
        .filter(|(_, cidrs)| !cidrs.is_empty())
        .map(|(name, _)| name)
        .collect())
}

pub fn apiserver_restart() -> anyhow::Result<Row> {
    let bed = ClusterBed::start().context("bed")?;
    let _operator = OperatorProcess::start(&bed, "chaos", "kube-system", &LONG_LEASE)?;
    under_churn(
        "kube-apiserver kill and restart",
        &bed,
        || {
            bed.restart_apiserver(Duration::from_secs(13))
                .context("restarting the apiserver")
        },
        || with_cidrs(&bed),
    )
}

pub fn etcd_restart() -> anyhow::Result<Row> {
    let bed = ClusterBed::start().context("bed")?;
    let _operator = OperatorProcess::start(&bed, "chaos", "kube-system", &LONG_LEASE)?;
    under_churn(
        "the apiserver's etcd kill and restart",
        &bed,
        || {
            bed.etcd().stop();
            std::thread::sleep(Duration::from_secs(13));
            bed.etcd().resume().context("restarting etcd")
        },
        || with_cidrs(&bed),
    )
}

/// The kvstore's etcd (not the apiserver's) killed under churn: Nodes count as served
/// once the mirror holds their `cilium/state/nodes/v1/<cluster>/<node>` key again.
pub fn kvstore_cut() -> anyhow::Result<Row> {
    let bed = ClusterBed::start().context("bed")?;
    let dir = bed.dir().join("kvstore");
    std::fs::create_dir_all(&dir)?;
    let etcd = Mutex::new(Etcd::start(&dir).context("kvstore etcd")?);
    let endpoint = format!("--etcd-endpoints={}", locked(&etcd).endpoint());
    let mut flags = LONG_LEASE.to_vec();
    flags.extend(["--cluster-name=chaos", "--kvstore-lease-ttl=30s", &endpoint]);
    let _operator = OperatorProcess::start(&bed, "chaos", "kube-system", &flags)?;
    let lock = || locked(&etcd);
    const NODE_KEYS: &str = "cilium/state/nodes/v1/chaos/";
    under_churn(
        "the kvstore's etcd kill and restart",
        &bed,
        || {
            lock().stop();
            std::thread::sleep(Duration::from_secs(13));
            lock().resume().context("restarting the kvstore's etcd")
        },
        || {
            let keys = lock()
                .etcdctl(&["get", "--prefix", "--keys-only", NODE_KEYS])
                .unwrap_or_default();
            Ok(keys
                .lines()
                .filter_map(|key| key.strip_prefix(NODE_KEYS))
                .map(str::to_owned)
                .collect())
        },
    )
}
