//! `make bench`: the speed and memory numbers of the issues, printed, never asserted (the
//! machines are shared and noisy). Runs on its own cluster-in-a-box with release binaries.
//!
//! `bench [podcidr] [identity] [cni] [policy] [datapath] [clustermesh]` runs the named benchmarks (all when none is named).

mod clustermesh;
mod cni;
mod datapath;
mod identity;
mod podcidr;
mod policy;

use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    if runs("podcidr") {
        report("podcidr", runtime.block_on(podcidr::run()), &mut failed);
    }
    if runs("identity") {
        report("identity", runtime.block_on(identity::run()), &mut failed);
    }
    if runs("cni") {
        report("cni", cni::run(), &mut failed);
    }
    if runs("policy") {
        report("policy", policy::run(), &mut failed);
    }
    if runs("datapath") {
        report("datapath", datapath::run(), &mut failed);
    }
    if runs("clustermesh") {
        report("clustermesh", clustermesh::run(&runtime), &mut failed);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn report(name: &str, outcome: anyhow::Result<()>, failed: &mut bool) {
    if let Err(e) = outcome {
        eprintln!("bench {name}: {e:#}");
        *failed = true;
    }
}

pub use e2e::process::rss_kib;

/// Polls `probe` every `every` until it yields, or fails after `timeout`.
pub async fn poll<T, F, Fut>(
    what: &str,
    every: Duration,
    timeout: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// Creates `count` objects built by `make`, `CREATE_CONCURRENCY` at a time, and prints
/// how long that took.
pub async fn create_all<K>(
    api: &kube::Api<K>,
    count: usize,
    make: impl Fn(usize) -> K,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use futures::{StreamExt, TryStreamExt};
    const CREATE_CONCURRENCY: usize = 16;
    let started = Instant::now();
    futures::stream::iter((0..count).map(make))
        .map(|object| {
            let api = api.clone();
            async move { api.create(&kube::api::PostParams::default(), &object).await }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let elapsed = started.elapsed();
    println!(
        "created {count} {}s in {elapsed:.2?} ({:.0}/s, {CREATE_CONCURRENCY} in flight)",
        std::any::type_name::<K>()
            .rsplit("::")
            .next()
            .unwrap_or("object"),
        per_second(count, elapsed)
    );
    Ok(())
}

pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}
