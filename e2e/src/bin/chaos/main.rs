//! `make chaos`: faults injected into the real system, with what they cost, printed as a
//! table (never asserted: the machines are shared and noisy; the tests in `make test` hold
//! the guarantees). Debug binaries, each scenario on its own cluster-in-a-box.
//!
//! `chaos [leader] [apiserver] [etcd] [kvstore] [agent] [flood]` runs the named scenarios (all when none is
//! named). `CHAOS_KILLS` (default 10) sets how many times the leader is killed.

mod agent;
mod flood;
mod operator;

use std::process::ExitCode;
use std::time::Duration;

/// One row of the table.
pub struct Row {
    pub fault: String,
    pub measured: String,
    pub goal: &'static str,
}

fn main() -> ExitCode {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let runs = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let kills = std::env::var("CHAOS_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(10);
    let mut rows = Vec::new();
    let mut failed = false;
    let mut record = |name: &str, outcome: anyhow::Result<Row>| match outcome {
        Ok(row) => {
            println!("chaos {name}: {}", row.measured);
            rows.push(row);
        }
        Err(e) => {
            eprintln!("chaos {name}: {e:#}");
            failed = true;
        }
    };
    if runs("leader") {
        record("leader", operator::leader_kills(kills));
    }
    if runs("apiserver") {
        record("apiserver", operator::apiserver_restart());
    }
    if runs("etcd") {
        record("etcd", operator::etcd_restart());
    }
    if runs("kvstore") {
        record("kvstore", operator::kvstore_cut());
    }
    if runs("agent") {
        record("agent", agent::agent_kill(500));
    }
    if runs("flood") {
        let runtime = tokio::runtime::Runtime::new();
        record(
            "flood",
            runtime
                .map_err(anyhow::Error::from)
                .and_then(|runtime| flood::remote_flood(&runtime)),
        );
    }
    println!("\n| fault | measured | goal |\n|---|---|---|");
    for row in &rows {
        println!("| {} | {} | {} |", row.fault, row.measured, row.goal);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `min / median / max` of `samples` in seconds.
pub fn spread(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    samples.sort();
    let s = |d: Duration| format!("{:.2}", d.as_secs_f64());
    format!(
        "{} / {} / {} s",
        s(samples[0]),
        s(samples[samples.len() / 2]),
        s(samples[samples.len() - 1])
    )
}
