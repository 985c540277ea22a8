//! The agent's controllers — its periodic jobs — and how each one's runs went, for
//! `cilium status` (Cilium's "Controller Status") and the metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cilium_agent_api::ControllerStatus;

use crate::metrics::AgentMetrics;

/// Names of the agent's controllers.
pub const SYNC_ENDPOINTS: &str = "sync-cilium-endpoints";
pub const POLICY: &str = "policy-computation";
pub const REPORT_POLICY_STATUS: &str = "report-policy-status";
pub const SYNC_IPCACHE: &str = "sync-ipcache";
pub const SYNC_ROUTES: &str = "sync-routes";
pub const REPORT_IPAM: &str = "report-ipam-usage";
pub const CT_GC: &str = "ct-map-gc";
pub const KVSTORE_HEALTH: &str = "kvstore-health";
pub const MONITOR: &str = "monitor-events";

#[derive(Default)]
pub struct Controllers {
    runs: Mutex<BTreeMap<&'static str, ControllerStatus>>,
}

impl Controllers {
    /// Records one run of controller `name`.
    pub fn record(
        &self,
        name: &'static str,
        took: Duration,
        outcome: Result<(), String>,
        metrics: &AgentMetrics,
    ) {
        metrics.controller_run(outcome.is_ok(), took);
        let now = jiff::Timestamp::now().to_string();
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let status = runs.entry(name).or_insert_with(|| ControllerStatus {
            name: name.to_owned(),
            success_count: 0,
            failure_count: 0,
            consecutive_failures: 0,
            last_success: None,
            last_failure: None,
            last_error: None,
            last_duration_seconds: 0.0,
        });
        status.last_duration_seconds = took.as_secs_f64();
        match outcome {
            Ok(()) => {
                status.success_count += 1;
                status.consecutive_failures = 0;
                status.last_success = Some(now);
            }
            Err(error) => {
                status.failure_count += 1;
                status.consecutive_failures += 1;
                status.last_failure = Some(now);
                status.last_error = Some(error);
            }
        }
        metrics.set_failing_controllers(runs.values().filter(|s| !s.is_healthy()).count());
    }

    /// Runs `run` as controller `name` and records how it went.
    pub fn run<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        metrics: &AgentMetrics,
        run: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let result = run();
        self.record(
            name,
            start.elapsed(),
            result.as_ref().map(drop).map_err(ToString::to_string),
            metrics,
        );
        result
    }

    pub fn snapshot(&self) -> Vec<ControllerStatus> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_until_a_success() {
        let controllers = Controllers::default();
        let metrics = AgentMetrics::default();
        let fail = || Err::<(), _>("etcd: connection refused");
        assert!(controllers.run(SYNC_ROUTES, &metrics, fail).is_err());
        assert!(controllers.run(SYNC_ROUTES, &metrics, fail).is_err());
        controllers.record(CT_GC, Duration::from_millis(3), Ok(()), &metrics);
        let snapshot = controllers.snapshot();
        let routes = snapshot
            .iter()
            .find(|s| s.name == SYNC_ROUTES)
            .expect("recorded");
        assert_eq!((routes.failure_count, routes.consecutive_failures), (2, 2));
        assert_eq!(
            routes.last_error.as_deref(),
            Some("etcd: connection refused")
        );
        assert!(!routes.is_healthy());
        assert!(metrics.encode().contains("cilium_controllers_failing 1"));

        assert_eq!(
            controllers.run(SYNC_ROUTES, &metrics, || Ok::<_, String>(5)),
            Ok(5)
        );
        let snapshot = controllers.snapshot();
        let routes = snapshot
            .iter()
            .find(|s| s.name == SYNC_ROUTES)
            .expect("recorded");
        assert_eq!((routes.success_count, routes.consecutive_failures), (1, 0));
        assert!(routes.is_healthy() && routes.last_error.is_some());
        assert!(metrics.encode().contains("cilium_controllers_failing 0"));
    }
}
