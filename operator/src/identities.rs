//! Central CiliumIdentity allocation and GC by the leader.
//!
//! Each pass: the label set of every pod (see [`cilium_identity::identity_labels`]) gets a
//! number from the [`IdentityPool`], created as a CiliumIdentity named after it. The pool
//! is restored from every existing CiliumIdentity, oldest first, when leadership starts,
//! so numbers survive restarts and failovers. Every GC interval, identities that no pod
//! and no CiliumEndpoint uses are marked with `io.cilium.heartbeat` and deleted once the
//! mark is older than the heartbeat timeout; one used again is unmarked and keeps its
//! number.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_crds::CiliumIdentity;
use cilium_crds::pod_identity::{
    identity_object, needs_identity, parse_identity, pod_identity_labels,
};
use cilium_identity::{
    ClusterScope, IdentityPool, LabelFilter, LabelSet, NumericIdentity, PoolError,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::watch::{Caches, Waker};
use crate::{is_conflict, is_not_found};

/// Cilium's annotation marking an identity for deletion, with the time it was marked.
pub const HEARTBEAT_ANNOTATION: &str = "io.cilium.heartbeat";
/// Passes also run on this period, so failed writes are retried without a new event.
const RESYNC_PERIOD: Duration = Duration::from_secs(15);
/// CiliumIdentity creates in flight at once.
const CREATE_CONCURRENCY: usize = 16;
/// How long an identity we created counts as existing before the cache shows it.
const CREATED_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub cluster_name: String,
    pub cluster_id: u8,
    pub filter: LabelFilter,
    pub gc_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub gc_rate_interval: Duration,
    pub gc_rate_limit: usize,
}

pub struct IdentityController {
    client: Client,
    caches: Caches,
    changed: Waker,
    recorder: Recorder,
    config: IdentityConfig,
    metrics: Arc<Metrics>,
}

/// The leader's working state, rebuilt when leadership starts.
struct Leadership {
    pool: IdentityPool,
    /// Identities we created that the cache may not show yet.
    created: BTreeMap<NumericIdentity, Instant>,
    /// Label sets whose exhaustion was already reported.
    reported: BTreeSet<LabelSet>,
    next_gc: Instant,
    deletions: RateLimit,
}

impl IdentityController {
    pub fn new(
        client: Client,
        caches: &Caches,
        changed: Waker,
        recorder: Recorder,
        config: IdentityConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            caches: caches.clone(),
            changed,
            recorder,
            config,
            metrics,
        }
    }

    /// Runs passes while `leading` holds.
    pub async fn run(self, mut leading: watch::Receiver<bool>) -> anyhow::Result<()> {
        loop {
            leading.wait_for(|l| *l).await?;
            self.caches.ready().await?;
            let mut state = Leadership {
                pool: self.restore(),
                created: BTreeMap::new(),
                reported: BTreeSet::new(),
                next_gc: Instant::now() + self.config.gc_interval,
                deletions: RateLimit::new(self.config.gc_rate_limit, self.config.gc_rate_interval),
            };
            while *leading.borrow() {
                let wanted = self.wanted();
                self.allocate_pass(&mut state, &wanted).await;
                if Instant::now() >= state.next_gc {
                    self.gc_pass(&mut state, &wanted).await;
                    state.next_gc = Instant::now() + self.config.gc_interval;
                }
                let wait =
                    RESYNC_PERIOD.min(state.next_gc.saturating_duration_since(Instant::now()));
                tokio::select! {
                    _ = self.changed.woken() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = leading.changed() => {}
                }
            }
        }
    }

    fn scope(&self) -> ClusterScope {
        ClusterScope::new(self.config.cluster_id)
    }

    /// A pool holding every existing identity, oldest first (of two numbers for one label
    /// set the older is kept; the newer is left to GC once nothing uses it).
    fn restore(&self) -> IdentityPool {
        let mut pool = IdentityPool::new(self.scope());
        let mut all = self.caches.identities.state();
        all.sort_by_key(|cid| (cid.creation_timestamp().map(|t| t.0), cid.name_any()));
        for cid in all {
            let restored = parse_identity(&cid)
                .and_then(|(id, labels)| pool.restore(id, labels).map_err(|e| e.to_string()));
            if let Err(e) = restored {
                tracing::warn!(identity = %cid.name_any(), error = %e, "existing CiliumIdentity not used for allocation");
            }
        }
        tracing::info!(identities = pool.len(), "restored identities");
        pool
    }

    /// Brings the pool up to date with the cache: identities created elsewhere join it,
    /// deleted ones leave it (except those we just created, which the cache may lag).
    fn sync_pool(&self, state: &mut Leadership) {
        let mut present = BTreeSet::new();
        for cid in self.caches.identities.state() {
            let Ok((id, labels)) = parse_identity(&cid) else {
                continue;
            };
            present.insert(id);
            // Known ones are accepted as they are; conflicts were reported at leadership
            // start, and a conflicting number simply stays out of the pool.
            let _ = state.pool.restore(id, labels);
        }
        let now = Instant::now();
        state
            .created
            .retain(|id, at| !present.contains(id) && now.duration_since(*at) < CREATED_GRACE);
        let gone: Vec<NumericIdentity> = state
            .pool
            .ids()
            .map(|(id, _)| id)
            .filter(|id| !present.contains(id) && !state.created.contains_key(id))
            .collect();
        for id in gone {
            state.pool.release(id);
        }
    }

    /// Label sets of every pod that needs an identity, each with one pod to name in Events.
    fn wanted(&self) -> BTreeMap<LabelSet, Arc<Pod>> {
        let namespaces: BTreeMap<String, Arc<Namespace>> = self
            .caches
            .namespaces
            .state()
            .into_iter()
            .map(|ns| (ns.name_any(), ns))
            .collect();
        let mut wanted = BTreeMap::new();
        for pod in self.caches.pods.state() {
            if !needs_identity(&pod) {
                continue;
            }
            let namespace_labels = pod
                .namespace()
                .and_then(|ns| namespaces.get(&ns))
                .and_then(|ns| ns.metadata.labels.as_ref());
            let labels = pod_identity_labels(
                &pod,
                namespace_labels,
                &self.config.cluster_name,
                &self.config.filter,
            );
            wanted.entry(labels).or_insert(pod);
        }
        wanted
    }

    #[tracing::instrument(skip_all)]
    async fn allocate_pass(&self, state: &mut Leadership, wanted: &BTreeMap<LabelSet, Arc<Pod>>) {
        self.sync_pool(state);
        // Numbers are chosen here, in order; only the writes run concurrently.
        let mut allocated = Vec::new();
        for (labels, pod) in wanted {
            if state.pool.lookup(labels).is_some() {
                continue;
            }
            match state.pool.allocate(labels) {
                Ok(id) => allocated.push((id, labels.clone())),
                Err(e) => {
                    self.metrics.identity_allocation_failed();
                    if state.reported.insert(labels.clone()) {
                        tracing::error!(labels = %labels, error = %e, "cannot allocate an identity");
                        self.publish_exhaustion(pod, &e).await;
                    }
                }
            }
        }
        let api: Api<CiliumIdentity> = Api::all(self.client.clone());
        let mut writes = futures::stream::iter(allocated)
            .map(|(id, labels)| {
                let api = api.clone();
                async move {
                    let result = api
                        .create(&PostParams::default(), &identity_object(id, &labels))
                        .await;
                    (id, labels, result)
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY);
        while let Some((id, labels, result)) = writes.next().await {
            match result {
                Ok(_) => {
                    tracing::info!(identity = %id, labels = %labels, "allocated identity");
                    state.created.insert(id, Instant::now());
                    state.reported.remove(&labels);
                    self.metrics.identity_allocated();
                }
                Err(e) => {
                    // The number is taken by an object the cache does not show yet (409),
                    // or the write failed: free it; the pool's cursor moves on, and the
                    // next pass sees the cache's truth.
                    state.pool.release(id);
                    if !is_conflict(&e) {
                        tracing::warn!(identity = %id, error = %e, "creating CiliumIdentity failed; retrying");
                    }
                }
            }
        }
        self.metrics.set_identities(state.pool.len());
    }

    /// Numbers in use: by a pod's label set or by a CiliumEndpoint.
    fn in_use(
        &self,
        state: &Leadership,
        wanted: &BTreeMap<LabelSet, Arc<Pod>>,
    ) -> BTreeSet<NumericIdentity> {
        let by_pods = wanted.keys().filter_map(|labels| state.pool.lookup(labels));
        let by_endpoints = self.caches.endpoints.state().into_iter().filter_map(|cep| {
            cep.status
                .as_ref()
                .and_then(|s| s.identity.as_ref())
                .and_then(|i| u32::try_from(i.id).ok())
                .map(NumericIdentity)
        });
        by_pods.chain(by_endpoints).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn gc_pass(&self, state: &mut Leadership, wanted: &BTreeMap<LabelSet, Arc<Pod>>) {
        let in_use = self.in_use(state, wanted);
        let api: Api<CiliumIdentity> = Api::all(self.client.clone());
        let now = jiff::Timestamp::now();
        let mut marked = 0;
        for cid in self.caches.identities.state() {
            let Ok(id) = cid.name_any().parse::<u32>().map(NumericIdentity) else {
                continue;
            };
            if !self.scope().contains(id) {
                continue; // not ours to collect
            }
            let mark = cid
                .annotations()
                .get(HEARTBEAT_ANNOTATION)
                .map(String::as_str);
            let action = gc_action(
                in_use.contains(&id),
                mark,
                now,
                self.config.heartbeat_timeout,
            );
            let result = match action {
                GcAction::Keep => Ok(()),
                GcAction::Unmark => self.set_mark(&api, &cid, None).await,
                GcAction::Mark => {
                    marked += 1;
                    self.set_mark(&api, &cid, Some(now.to_string())).await
                }
                GcAction::Wait => {
                    marked += 1;
                    Ok(())
                }
                GcAction::Delete if !state.deletions.take() => {
                    marked += 1;
                    Ok(())
                }
                GcAction::Delete => self.delete(&api, &cid).await.map(|deleted| {
                    if deleted {
                        tracing::info!(identity = %id, "deleted unused identity");
                        state.pool.release(id);
                        self.metrics.identity_deleted();
                    }
                }),
            };
            if let Err(e) = result
                && !is_conflict(&e)
                && !is_not_found(&e)
            {
                tracing::warn!(identity = %id, error = %e, ?action, "identity GC write failed");
            }
        }
        self.metrics.set_identities_marked(marked);
    }

    async fn set_mark(
        &self,
        api: &Api<CiliumIdentity>,
        cid: &CiliumIdentity,
        mark: Option<String>,
    ) -> Result<(), kube::Error> {
        let patch = json!({
            "metadata": {
                "resourceVersion": cid.resource_version(),
                "annotations": {HEARTBEAT_ANNOTATION: mark},
            }
        });
        api.patch(
            &cid.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
    }

    /// Deletes only the object GC looked at: a changed one (unmarked, relabelled) stays.
    async fn delete(
        &self,
        api: &Api<CiliumIdentity>,
        cid: &CiliumIdentity,
    ) -> Result<bool, kube::Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: cid.uid(),
                resource_version: cid.resource_version(),
            }),
            ..Default::default()
        };
        match api.delete(&cid.name_any(), &params).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn publish_exhaustion(&self, pod: &Pod, error: &PoolError) {
        let event = exhaustion_event(error);
        if let Err(e) = self.recorder.publish(&event, &pod.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing Event failed");
        }
    }
}

/// The Warning on a pod whose labels could not get a number.
fn exhaustion_event(error: &PoolError) -> Event {
    Event {
        type_: EventType::Warning,
        reason: "IdentityAllocationFailed".into(),
        note: Some(error.to_string()),
        action: "AllocateIdentity".into(),
        secondary: None,
    }
}

/// Pods on the host network use the host's identity; finished pods need none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GcAction {
    Keep,
    Unmark,
    Mark,
    Wait,
    Delete,
}

/// What GC does with one identity. An unparsable mark is replaced by a fresh one, so a
/// corrupted annotation delays deletion instead of hastening it.
fn gc_action(
    in_use: bool,
    mark: Option<&str>,
    now: jiff::Timestamp,
    timeout: Duration,
) -> GcAction {
    match (in_use, mark) {
        (true, None) => GcAction::Keep,
        (true, Some(_)) => GcAction::Unmark,
        (false, None) => GcAction::Mark,
        (false, Some(text)) => match text.parse::<jiff::Timestamp>() {
            Err(_) => GcAction::Mark,
            Ok(marked) => {
                let age = now.duration_since(marked);
                let timeout =
                    jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::MAX);
                if age >= timeout {
                    GcAction::Delete
                } else {
                    GcAction::Wait
                }
            }
        },
    }
}

/// At most `limit` deletions per `interval`.
struct RateLimit {
    limit: usize,
    interval: Duration,
    window_start: Instant,
    used: usize,
}

impl RateLimit {
    fn new(limit: usize, interval: Duration) -> Self {
        Self {
            limit,
            interval,
            window_start: Instant::now(),
            used: 0,
        }
    }

    fn take(&mut self) -> bool {
        if self.window_start.elapsed() >= self.interval {
            self.window_start = Instant::now();
            self.used = 0;
        }
        if self.used < self.limit {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cilium_identity::Label;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn gc_marks_then_deletes_after_the_timeout_and_unmarks_what_is_used_again() {
        let now = at("2026-01-01T00:10:00Z");
        let timeout = Duration::from_secs(300);
        assert_eq!(gc_action(true, None, now, timeout), GcAction::Keep);
        assert_eq!(gc_action(false, None, now, timeout), GcAction::Mark);
        assert_eq!(
            gc_action(false, Some("2026-01-01T00:06:00.5Z"), now, timeout),
            GcAction::Wait
        );
        assert_eq!(
            gc_action(false, Some("2026-01-01T00:05:00Z"), now, timeout),
            GcAction::Delete
        );
        assert_eq!(
            gc_action(true, Some("2026-01-01T00:00:00Z"), now, timeout),
            GcAction::Unmark
        );
        assert_eq!(
            gc_action(false, Some("yesterday"), now, timeout),
            GcAction::Mark
        );
    }

    #[test]
    fn exhaustion_is_a_warning_naming_the_range() {
        let mut pool = IdentityPool::new(ClusterScope::new(4));
        for n in 0..pool.scope().capacity() {
            let labels: LabelSet = [Label::k8s("n", &n.to_string())].into_iter().collect();
            pool.allocate(&labels).expect("room");
        }
        let labels: LabelSet = [Label::k8s("app", "late")].into_iter().collect();
        let error = pool.allocate(&labels).expect_err("full");
        let event = exhaustion_event(&error);
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "IdentityAllocationFailed");
        let note = event.note.unwrap_or_default();
        assert!(
            note.contains("no more identities available in cluster 4's range 262400..=327679"),
            "{note}"
        );
    }

    #[test]
    fn rate_limit_allows_limit_per_window() {
        let mut limit = RateLimit::new(2, Duration::from_secs(3600));
        assert!(limit.take());
        assert!(limit.take());
        assert!(!limit.take());
        let mut zero_window = RateLimit::new(1, Duration::ZERO);
        assert!(zero_window.take());
        assert!(zero_window.take());
    }
}
