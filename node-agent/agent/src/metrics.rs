//! The agent's Prometheus metrics, with Cilium's names where Cilium has the metric.
//!
//! Gauges describing current state are set from a [`StateSample`] taken when `/metrics` is
//! scraped; the datapath's per-endpoint packet counters become monotonic counters by adding
//! what grew since the last sample (an endpoint that goes away keeps its share).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use cilium_datapath::{Direction, EndpointCounter, reason_name};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointStateLabel {
    endpoint_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnforcementLabel {
    enforcement: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabel {
    reason: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetClusterLabel {
    target_cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KvstoreLabel {
    action: String,
    kind: String,
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
}

/// What the gauges show, sampled from the agent's state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StateSample {
    /// Endpoints by Cilium state name (`ready`, `waiting-for-identity`).
    pub endpoint_states: BTreeMap<String, usize>,
    /// Endpoints by enforced direction: `none`, `ingress`, `egress`, `both`.
    pub enforcement: BTreeMap<String, usize>,
    /// Identities by type: `reserved`, `cluster_local`, `node_local` (CIDRs).
    pub identities: BTreeMap<String, usize>,
    /// Rules of valid policies.
    pub policy_rules: usize,
    /// Each endpoint policy map's name and entries.
    pub policy_maps: Vec<(String, usize)>,
    pub policy_map_max: u32,
    /// The mesh's remote clusters (empty without `--clustermesh-config`).
    pub remote_clusters: Vec<cilium_agent_api::RemoteClusterStatus>,
}

/// Where the datapath's per-endpoint counters stood at the last sample.
type CounterKey = (u16, Direction, u8);

pub struct AgentMetrics {
    registry: Registry,
    controller_runs: Family<StatusLabel, Counter>,
    controller_seconds: HistogramFamily<StatusLabel>,
    controllers_failing: Gauge,
    endpoint: Gauge,
    endpoint_state: Family<EndpointStateLabel, Gauge>,
    enforcement: Family<EnforcementLabel, Gauge>,
    identity: Family<TypeLabel, Gauge>,
    policy: Gauge,
    policy_map_entries: Family<MapLabel, Gauge>,
    map_pressure: Family<MapLabel, Gauge<f64, AtomicU64>>,
    drop_count: Family<DropLabel, Counter>,
    drop_bytes: Family<DropLabel, Counter>,
    forward_count: Family<DirectionLabel, Counter>,
    forward_bytes: Family<DirectionLabel, Counter>,
    kvstore_seconds: HistogramFamily<KvstoreLabel>,
    remote_clusters: Gauge,
    remote_cluster_readiness: Family<TargetClusterLabel, Gauge>,
    remote_cluster_failures: Family<TargetClusterLabel, Gauge>,
    remote_cluster_nodes: Family<TargetClusterLabel, Gauge>,
    last_counters: Mutex<BTreeMap<CounterKey, (u64, u64)>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cilium");
        let metrics = Self {
            controller_runs: Family::default(),
            controller_seconds: Family::new_with_constructor(duration_histogram),
            controllers_failing: Gauge::default(),
            endpoint: Gauge::default(),
            endpoint_state: Family::default(),
            enforcement: Family::default(),
            identity: Family::default(),
            policy: Gauge::default(),
            policy_map_entries: Family::default(),
            map_pressure: Family::default(),
            drop_count: Family::default(),
            drop_bytes: Family::default(),
            forward_count: Family::default(),
            forward_bytes: Family::default(),
            kvstore_seconds: Family::new_with_constructor(duration_histogram),
            remote_clusters: Gauge::default(),
            remote_cluster_readiness: Family::default(),
            remote_cluster_failures: Family::default(),
            remote_cluster_nodes: Family::default(),
            last_counters: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "controllers_runs",
            "Runs of the agent's controllers by outcome",
            metrics.controller_runs.clone(),
        );
        registry.register(
            "controllers_runs_duration_seconds",
            "Duration of controller runs by outcome",
            metrics.controller_seconds.clone(),
        );
        registry.register(
            "controllers_failing",
            "Controllers whose last run failed",
            metrics.controllers_failing.clone(),
        );
        registry.register(
            "endpoint",
            "Endpoints managed by this agent",
            metrics.endpoint.clone(),
        );
        registry.register(
            "endpoint_state",
            "Endpoints in each state",
            metrics.endpoint_state.clone(),
        );
        registry.register(
            "policy_endpoint_enforcement_status",
            "Endpoints by the directions policy is enforced in",
            metrics.enforcement.clone(),
        );
        registry.register(
            "identity",
            "Identities known to the agent by type",
            metrics.identity.clone(),
        );
        registry.register(
            "policy",
            "Rules of valid policies loaded",
            metrics.policy.clone(),
        );
        registry.register(
            "policy_map_entries",
            "Entries of each endpoint's policy map",
            metrics.policy_map_entries.clone(),
        );
        registry.register(
            "bpf_map_pressure",
            "Fill ratio of each endpoint's policy map (entries / bpf-policy-map-max)",
            metrics.map_pressure.clone(),
        );
        registry.register(
            "drop_count",
            "Packets the datapath dropped, by reason and direction",
            metrics.drop_count.clone(),
        );
        registry.register(
            "drop_bytes",
            "Bytes the datapath dropped, by reason and direction",
            metrics.drop_bytes.clone(),
        );
        registry.register(
            "forward_count",
            "Packets the datapath let through, by direction",
            metrics.forward_count.clone(),
        );
        registry.register(
            "forward_bytes",
            "Bytes the datapath let through, by direction",
            metrics.forward_bytes.clone(),
        );
        registry.register(
            "kvstore_operations_duration_seconds",
            "Duration of kvstore operations by action, kind and outcome",
            metrics.kvstore_seconds.clone(),
        );
        registry.register(
            "clustermesh_remote_clusters",
            "Remote clusters in --clustermesh-config",
            metrics.remote_clusters.clone(),
        );
        registry.register(
            "clustermesh_remote_cluster_readiness_status",
            "Whether a remote cluster is ready (1) or not (0)",
            metrics.remote_cluster_readiness.clone(),
        );
        registry.register(
            "clustermesh_remote_cluster_failures",
            "Failed sessions with a remote cluster's kvstore",
            metrics.remote_cluster_failures.clone(),
        );
        registry.register(
            "clustermesh_remote_cluster_nodes",
            "Nodes of a remote cluster",
            metrics.remote_cluster_nodes.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "INGRESS",
        Direction::Egress => "EGRESS",
    }
}

/// How much each counter grew since `previous`; a counter below its previous value was
/// reset (its endpoint id was reused), so all of it is new.
pub fn counter_growth(
    previous: &BTreeMap<CounterKey, (u64, u64)>,
    current: &BTreeMap<CounterKey, (u64, u64)>,
) -> Vec<(CounterKey, u64, u64)> {
    current
        .iter()
        .filter_map(|(key, &(packets, bytes))| {
            let (old_packets, old_bytes) = previous.get(key).copied().unwrap_or((0, 0));
            let (grown_packets, grown_bytes) = if packets < old_packets || bytes < old_bytes {
                (packets, bytes)
            } else {
                (packets - old_packets, bytes - old_bytes)
            };
            (grown_packets > 0 || grown_bytes > 0).then_some((*key, grown_packets, grown_bytes))
        })
        .collect()
}

impl AgentMetrics {
    pub fn controller_run(&self, succeeded: bool, took: Duration) {
        let label = StatusLabel {
            status: if succeeded { "success" } else { "failure" }.into(),
        };
        self.controller_runs.get_or_create(&label).inc();
        self.controller_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    pub fn set_failing_controllers(&self, count: usize) {
        self.controllers_failing.set(gauge_value(count));
    }

    pub fn kvstore_operation(&self, action: &str, kind: &str, succeeded: bool, took: Duration) {
        let label = KvstoreLabel {
            action: action.into(),
            kind: kind.into(),
            outcome: if succeeded { "success" } else { "failure" }.into(),
        };
        self.kvstore_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    pub fn observe_state(&self, sample: &StateSample) {
        self.endpoint
            .set(gauge_value(sample.endpoint_states.values().sum()));
        // Every state is written so a state that emptied shows 0, not its last value.
        for state in ["ready", "waiting-for-identity"] {
            let count = sample.endpoint_states.get(state).copied().unwrap_or(0);
            self.endpoint_state
                .get_or_create(&EndpointStateLabel {
                    endpoint_state: state.into(),
                })
                .set(gauge_value(count));
        }
        for enforcement in ["none", "ingress", "egress", "both"] {
            let count = sample.enforcement.get(enforcement).copied().unwrap_or(0);
            self.enforcement
                .get_or_create(&EnforcementLabel {
                    enforcement: enforcement.into(),
                })
                .set(gauge_value(count));
        }
        for kind in ["reserved", "cluster_local", "node_local"] {
            let count = sample.identities.get(kind).copied().unwrap_or(0);
            self.identity
                .get_or_create(&TypeLabel {
                    r#type: kind.into(),
                })
                .set(gauge_value(count));
        }
        self.policy.set(gauge_value(sample.policy_rules));
        // Maps of deleted endpoints disappear from the output.
        self.policy_map_entries.clear();
        self.map_pressure.clear();
        for (name, entries) in &sample.policy_maps {
            let label = MapLabel {
                map_name: name.clone(),
            };
            self.policy_map_entries
                .get_or_create(&label)
                .set(gauge_value(*entries));
            let pressure = *entries as f64 / f64::from(sample.policy_map_max.max(1));
            self.map_pressure.get_or_create(&label).set(pressure);
        }
        self.observe_remote_clusters(&sample.remote_clusters);
    }

    fn observe_remote_clusters(&self, clusters: &[cilium_agent_api::RemoteClusterStatus]) {
        self.remote_clusters.set(gauge_value(clusters.len()));
        // Disconnected clusters disappear from the output.
        self.remote_cluster_readiness.clear();
        self.remote_cluster_failures.clear();
        self.remote_cluster_nodes.clear();
        for cluster in clusters {
            let label = TargetClusterLabel {
                target_cluster: cluster.name.clone(),
            };
            self.remote_cluster_readiness
                .get_or_create(&label)
                .set(i64::from(cluster.ready));
            self.remote_cluster_failures
                .get_or_create(&label)
                .set(i64::try_from(cluster.num_failures).unwrap_or(i64::MAX));
            self.remote_cluster_nodes
                .get_or_create(&label)
                .set(gauge_value(cluster.num_nodes));
        }
    }

    /// Adds what the datapath's counters (`(endpoint, counter)`) grew since the last call.
    pub fn observe_counters(&self, counters: &[(u16, EndpointCounter)]) {
        let current: BTreeMap<CounterKey, (u64, u64)> = counters
            .iter()
            .map(|(id, c)| ((*id, c.direction, c.reason), (c.packets, c.bytes)))
            .collect();
        let mut last = self.last_counters.lock().unwrap_or_else(|p| p.into_inner());
        for ((_, direction, reason), packets, bytes) in counter_growth(&last, &current) {
            let direction = direction_name(direction).to_owned();
            if reason == 0 {
                let label = DirectionLabel { direction };
                self.forward_count.get_or_create(&label).inc_by(packets);
                self.forward_bytes.get_or_create(&label).inc_by(bytes);
            } else {
                let label = DropLabel {
                    reason: reason_name(u16::from(reason)).to_owned(),
                    direction,
                };
                self.drop_count.get_or_create(&label).inc_by(packets);
                self.drop_bytes.get_or_create(&label).inc_by(bytes);
            }
        }
        *last = current;
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(direction: Direction, reason: u8, packets: u64) -> EndpointCounter {
        EndpointCounter {
            direction,
            reason,
            packets,
            bytes: packets * 60,
        }
    }

    #[test]
    fn counters_add_growth_and_survive_deleted_endpoints_and_reused_ids() {
        let metrics = AgentMetrics::default();
        metrics.observe_counters(&[
            (7, counter(Direction::Ingress, 133, 3)),
            (7, counter(Direction::Egress, 0, 10)),
        ]);
        // Endpoint 7 drops two more, then goes away; endpoint 9 appears.
        metrics.observe_counters(&[(7, counter(Direction::Ingress, 133, 5))]);
        metrics.observe_counters(&[(9, counter(Direction::Ingress, 133, 1))]);
        // Id 9 reused by a new endpoint whose counters start again.
        metrics.observe_counters(&[(9, counter(Direction::Ingress, 181, 2))]);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"cilium_drop_count_total{reason="Policy denied",direction="INGRESS"} 6"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"cilium_drop_count_total{reason="Policy denied by denylist",direction="INGRESS"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"cilium_forward_count_total{direction="EGRESS"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"cilium_drop_bytes_total{reason="Policy denied",direction="INGRESS"} 360"#
            ),
            "{text}"
        );
    }

    #[test]
    fn gauges_follow_the_sample_and_forget_gone_maps() {
        let metrics = AgentMetrics::default();
        let mut sample = StateSample {
            endpoint_states: BTreeMap::from([("ready".into(), 2)]),
            enforcement: BTreeMap::from([("ingress".into(), 1), ("none".into(), 1)]),
            identities: BTreeMap::from([("reserved".into(), 9), ("cluster_local".into(), 3)]),
            policy_rules: 2,
            policy_maps: vec![("cilium_policy_v2_00012".into(), 64)],
            policy_map_max: 256,
            remote_clusters: vec![cilium_agent_api::RemoteClusterStatus {
                name: "cluster2".into(),
                ready: true,
                num_failures: 2,
                num_nodes: 3,
                ..Default::default()
            }],
        };
        metrics.observe_state(&sample);
        let text = metrics.encode();
        for line in [
            r#"cilium_endpoint_state{endpoint_state="ready"} 2"#,
            r#"cilium_endpoint_state{endpoint_state="waiting-for-identity"} 0"#,
            r#"cilium_policy_endpoint_enforcement_status{enforcement="ingress"} 1"#,
            r#"cilium_identity{type="cluster_local"} 3"#,
            r#"cilium_bpf_map_pressure{map_name="cilium_policy_v2_00012"} 0.25"#,
            r#"cilium_policy_map_entries{map_name="cilium_policy_v2_00012"} 64"#,
            "cilium_policy 2",
            "cilium_endpoint 2",
            "cilium_clustermesh_remote_clusters 1",
            r#"cilium_clustermesh_remote_cluster_readiness_status{target_cluster="cluster2"} 1"#,
            r#"cilium_clustermesh_remote_cluster_failures{target_cluster="cluster2"} 2"#,
            r#"cilium_clustermesh_remote_cluster_nodes{target_cluster="cluster2"} 3"#,
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        sample.policy_maps.clear();
        sample.endpoint_states.clear();
        sample.remote_clusters.clear();
        metrics.observe_state(&sample);
        let text = metrics.encode();
        assert!(!text.contains("cilium_policy_v2_00012"), "{text}");
        assert!(!text.contains(r#"target_cluster="cluster2""#), "{text}");
        assert!(
            text.contains("cilium_clustermesh_remote_clusters 0"),
            "{text}"
        );
        assert!(text.contains(r#"cilium_endpoint_state{endpoint_state="ready"} 0"#));
    }
}
