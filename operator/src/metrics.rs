//! The operator's Prometheus metrics, served on `/metrics`.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::podcidr::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: String,
}

pub struct Metrics {
    registry: Registry,
    is_leader: Gauge,
    pod_cidrs_used: MetricFamily<FamilyLabel, Gauge>,
    pod_cidrs_total: MetricFamily<FamilyLabel, Gauge<u64, AtomicU64>>,
    reconciles: Counter,
    reconcile_seconds: Histogram,
    identities: Gauge,
    identities_marked: Gauge,
    identities_allocated: Counter,
    identity_allocation_failures: Counter,
    identities_deleted: Counter,
    kvstore_operations: Counter,
    kvstore_errors: Counter,
    kvstore_invalid_values: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cilium_operator");
        let is_leader = Gauge::default();
        let pod_cidrs_used = MetricFamily::<FamilyLabel, Gauge>::default();
        let pod_cidrs_total = MetricFamily::<FamilyLabel, Gauge<u64, AtomicU64>>::default();
        let reconciles = Counter::default();
        let reconcile_seconds = Histogram::new([0.001, 0.01, 0.1, 1.0, 10.0]);
        registry.register(
            "is_leader",
            "1 when this replica holds the leader lease",
            is_leader.clone(),
        );
        registry.register(
            "ipam_pod_cidrs_allocated",
            "PodCIDR blocks allocated to nodes",
            pod_cidrs_used.clone(),
        );
        registry.register(
            "ipam_pod_cidrs_capacity",
            "PodCIDR blocks in the cluster pools",
            pod_cidrs_total.clone(),
        );
        registry.register(
            "node_reconciles",
            "CiliumNode reconcile passes",
            reconciles.clone(),
        );
        registry.register(
            "node_reconcile_duration_seconds",
            "Duration of CiliumNode reconcile passes",
            reconcile_seconds.clone(),
        );
        let identities = Gauge::default();
        let identities_marked = Gauge::default();
        let identities_allocated = Counter::default();
        let identity_allocation_failures = Counter::default();
        let identities_deleted = Counter::default();
        let kvstore_operations = Counter::default();
        let kvstore_errors = Counter::default();
        let kvstore_invalid_values = Counter::default();
        for (name, help, metric) in [
            (
                "identity_allocated",
                "CiliumIdentities created by this operator",
                &identities_allocated,
            ),
            (
                "identity_allocation_failures",
                "Label sets that could not get an identity (exhaustion or write failure)",
                &identity_allocation_failures,
            ),
            (
                "identity_gc_deleted",
                "Unused CiliumIdentities deleted by GC",
                &identities_deleted,
            ),
            (
                "kvstore_operations",
                "Keys written or deleted in the kvstore",
                &kvstore_operations,
            ),
            (
                "kvstore_errors",
                "kvstore sessions ended by an error",
                &kvstore_errors,
            ),
            (
                "kvstore_invalid_values",
                "Values read from the kvstore that did not parse",
                &kvstore_invalid_values,
            ),
        ] {
            registry.register(name, help, metric.clone());
        }
        registry.register(
            "identities",
            "CiliumIdentities held by the allocator",
            identities.clone(),
        );
        registry.register(
            "identity_gc_marked",
            "CiliumIdentities marked for deletion (io.cilium.heartbeat)",
            identities_marked.clone(),
        );
        Self {
            registry,
            is_leader,
            pod_cidrs_used,
            pod_cidrs_total,
            reconciles,
            reconcile_seconds,
            identities,
            identities_marked,
            identities_allocated,
            identity_allocation_failures,
            identities_deleted,
            kvstore_operations,
            kvstore_errors,
            kvstore_invalid_values,
        }
    }
}

/// Observes a pass's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_seconds
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn set_leader(&self, leading: bool) {
        self.is_leader.set(i64::from(leading));
    }

    pub fn set_pool_usage(&self, family: Family, used: u128, total: u128) {
        let label = FamilyLabel {
            family: family.to_string(),
        };
        self.pod_cidrs_used
            .get_or_create(&label)
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        self.pod_cidrs_total
            .get_or_create(&label)
            .set(u64::try_from(total).unwrap_or(u64::MAX));
    }

    pub fn set_identities(&self, count: usize) {
        self.identities
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn set_identities_marked(&self, count: usize) {
        self.identities_marked
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn identity_allocated(&self) {
        self.identities_allocated.inc();
    }

    pub fn identity_allocation_failed(&self) {
        self.identity_allocation_failures.inc();
    }

    pub fn identity_deleted(&self) {
        self.identities_deleted.inc();
    }

    pub fn kvstore_writes(&self, count: usize) {
        self.kvstore_operations
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    pub fn kvstore_error(&self) {
        self.kvstore_errors.inc();
    }

    pub fn kvstore_invalid_value(&self) {
        self.kvstore_invalid_values.inc();
    }

    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
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
