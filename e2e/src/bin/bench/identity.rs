//! Issue 4's numbers: identities per second for 2,000 distinct label sets, from Pod
//! creation to the CiliumIdentity and its etcd key, and kvstore writes per second (the
//! mirror's writer alone, and the operator's during the run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use cilium_crds::CiliumIdentity;
use cilium_kvstore::EtcdConfig;
use cilium_kvstore::sync::{LeasedClient, Plan};
use e2e::operator::{OperatorProcess, http_get};
use e2e::{ClusterBed, Etcd};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::Api;
use kube::api::{ListParams, ObjectMeta};

use crate::{create_all, per_second, poll, rss_kib};

const LABEL_SETS: usize = 2_000;
const RAW_KEYS: usize = 10_000;

pub async fn run() -> anyhow::Result<()> {
    println!("== identity: {LABEL_SETS} distinct label sets");
    let bed = ClusterBed::start().context("cluster-in-a-box")?;
    let dir = bed.dir().join("kvstore");
    std::fs::create_dir_all(&dir)?;
    let etcd = Etcd::start(&dir)?;
    raw_writes(&etcd).await?;
    end_to_end(&bed, &etcd).await
}

/// The mirror's writer alone: leased puts in transactions.
async fn raw_writes(etcd: &Etcd) -> anyhow::Result<()> {
    let client = EtcdConfig::from_endpoints(vec![etcd.endpoint()])
        .connect()
        .await?;
    let store = LeasedClient::new(client, Duration::from_secs(60)).await?;
    let plan = Plan {
        puts: (0..RAW_KEYS)
            .map(|i| (format!("bench/raw/{i:06}"), format!("value-{i}")))
            .collect(),
        deletes: Vec::new(),
    };
    let started = Instant::now();
    store.apply(&plan).await?;
    let elapsed = started.elapsed();
    println!(
        "kvstore writer: {RAW_KEYS} leased puts in {elapsed:.2?} ({:.0} writes/s)",
        per_second(RAW_KEYS, elapsed)
    );
    Ok(())
}

fn pod(i: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i:05}")),
            labels: Some(BTreeMap::from([(
                "app".to_owned(),
                format!("bench-{i:05}"),
            )])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some("registry.invalid/bench".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn end_to_end(bed: &ClusterBed, etcd: &Etcd) -> anyhow::Result<()> {
    bed.create_namespace("bench")?;
    let endpoints = format!("--etcd-endpoints={}", etcd.endpoint());
    let operator = OperatorProcess::start(
        bed,
        "bench",
        "bench",
        &["--cluster-pool-ipv4-cidr=10.0.0.0/8", &endpoints],
    )?;
    let client = bed.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let identities: Api<CiliumIdentity> = Api::all(client);

    let started = Instant::now();
    create_all(&pods, LABEL_SETS, pod)
        .await
        .context("creating Pods")?;

    poll(
        "every CiliumIdentity",
        Duration::from_millis(500),
        Duration::from_secs(600),
        || {
            let identities = identities.clone();
            async move {
                let list = identities
                    .list(&ListParams::default().labels("io.kubernetes.pod.namespace=bench"))
                    .await?;
                Ok((list.items.len() >= LABEL_SETS).then_some(()))
            }
        },
    )
    .await?;
    let in_apiserver = started.elapsed();
    println!(
        "all {LABEL_SETS} CiliumIdentities exist {in_apiserver:.2?} after the first Pod was created ({:.0} identities/s)",
        per_second(LABEL_SETS, in_apiserver)
    );
    poll(
        "every identity key in etcd",
        Duration::from_millis(500),
        Duration::from_secs(600),
        || async {
            let out = etcd.etcdctl(&[
                "get",
                "--prefix",
                "cilium/state/identities/v1/id/",
                "--keys-only",
            ])?;
            let count = out.lines().filter(|l| !l.is_empty()).count();
            Ok((count >= LABEL_SETS).then_some(()))
        },
    )
    .await?;
    let in_etcd = started.elapsed();
    println!(
        "all {LABEL_SETS} identity keys in etcd {in_etcd:.2?} after the first Pod was created ({:.0} identities/s end to end)",
        per_second(LABEL_SETS, in_etcd)
    );
    let writes: usize = http_get(operator.api_port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("cilium_operator_kvstore_operations_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    println!(
        "operator kvstore writes during the run: {writes} ({:.0} writes/s over the run)",
        per_second(writes, in_etcd)
    );
    if let Some((rss, hwm)) = rss_kib(operator.process.pid()) {
        println!(
            "operator RSS: {:.1} MiB now, {:.1} MiB peak",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    Ok(())
}
