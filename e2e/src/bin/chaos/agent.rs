//! The agent SIGKILLed with many endpoints while allowed traffic flows: what the pinned
//! datapath keeps, and how long the new agent takes to be ready.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::cluster::{Cluster, agent_get, app_labels};
use e2e::traffic::{reaches, serve_echo};

use crate::Row;

pub fn agent_kill(endpoints: usize) -> anyhow::Result<Row> {
    let mut cluster = Cluster::start(1).context("cluster")?;
    let started = Instant::now();
    let mut pods = Vec::new();
    for i in 0..endpoints {
        let app = if i == 0 {
            "db".to_owned()
        } else {
            format!("client-{}", i % 20)
        };
        let node = &cluster.nodes[0];
        pods.push(node.add_pod(
            &cluster.bed,
            "default",
            &format!("pod-{i}"),
            &app_labels(&app),
        )?);
    }
    let wired = started.elapsed();
    let (server, client) = (&pods[0], &pods[1]);
    serve_echo(&server.ns, 6379);
    anyhow::ensure!(
        reaches(&client.ns, server.ip, 6379),
        "no traffic before the kill"
    );

    let (stop, tried, lost) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let ready_after = std::thread::scope(|scope| -> anyhow::Result<Duration> {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                tried.fetch_add(1, Ordering::Relaxed);
                if !reaches(&client.ns, server.ip, 6379) {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        let node = &mut cluster.nodes[0];
        node.kill_agent();
        let killed = Instant::now();
        node.start_agent()?;
        let socket = node.socket();
        let deadline = killed + Duration::from_secs(120);
        while agent_get(&socket, "/v1/healthz").is_none_or(|(code, _)| code != 200) {
            anyhow::ensure!(Instant::now() < deadline, "the agent did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
        let ready = killed.elapsed();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        Ok(ready)
    })?;
    Ok(Row {
        fault: format!(
            "agent SIGKILL with {endpoints} endpoints (wired in {:.0} s), allowed traffic every 50 ms",
            wired.as_secs_f64()
        ),
        measured: format!(
            "connections failed {} of {}; new agent ready in {:.2} s",
            lost.into_inner(),
            tried.into_inner(),
            ready_after.as_secs_f64()
        ),
        goal: "0 lost, ready ≤ 2 s",
    })
}
