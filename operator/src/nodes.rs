//! The CiliumNode reconciler: a CiliumNode for every Node, PodCIDRs from the cluster pools,
//! allocation problems in `status.ipam.operator-status.error` (and an Event), and a
//! deleted Node's CiliumNode removed with its blocks released.
//!
//! Every replica keeps its caches warm; only the leader runs passes. The allocator is
//! rebuilt from every CiliumNode when leadership starts, before any block is handed out.

use std::sync::Arc;
use std::time::Duration;

use cilium_crds::CiliumNode;
use cilium_crds::node::NodeAddress;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::podcidr::{AllocError, Allocator, Family, PoolConfig};
use crate::watch::{Caches, Waker};
use crate::{is_conflict, is_not_found};
/// Passes also run on this period, so a failed write is retried without a new event.
const RESYNC_PERIOD: Duration = Duration::from_secs(15);

pub struct NodeController {
    client: Client,
    nodes: Store<Node>,
    cilium_nodes: Store<CiliumNode>,
    changed: Waker,
    recorder: Recorder,
    pools: PoolConfig,
    metrics: Arc<Metrics>,
}

impl NodeController {
    pub fn new(
        client: Client,
        caches: &Caches,
        changed: Waker,
        recorder: Recorder,
        pools: PoolConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            nodes: caches.nodes.clone(),
            cilium_nodes: caches.cilium_nodes.clone(),
            changed,
            recorder,
            pools,
            metrics,
        }
    }

    /// Runs passes while `leading` holds.
    pub async fn run(self, mut leading: watch::Receiver<bool>) -> anyhow::Result<()> {
        loop {
            leading.wait_for(|l| *l).await?;
            self.nodes.wait_until_ready().await?;
            self.cilium_nodes.wait_until_ready().await?;
            let mut allocator = self.restore()?;
            while *leading.borrow() {
                self.pass(&mut allocator).await;
                tokio::select! {
                    _ = self.changed.woken() => {}
                    _ = tokio::time::sleep(RESYNC_PERIOD) => {}
                    _ = leading.changed() => {}
                }
            }
        }
    }

    /// An allocator holding every block the CiliumNodes already have, oldest node first
    /// (so of two nodes claiming one block, the older keeps it).
    fn restore(&self) -> anyhow::Result<Allocator> {
        let mut allocator = Allocator::new(&self.pools)?;
        for cn in self.by_age() {
            let problems = allocator.restore(&cn.name_any(), &pod_cidrs(&cn));
            for problem in problems {
                tracing::warn!(node = %cn.name_any(), %problem, "CiliumNode holds an unusable PodCIDR");
            }
        }
        Ok(allocator)
    }

    fn by_age(&self) -> Vec<Arc<CiliumNode>> {
        let mut all = self.cilium_nodes.state();
        all.sort_by(|a, b| {
            (a.creation_timestamp().map(|t| t.0), a.name_any())
                .cmp(&(b.creation_timestamp().map(|t| t.0), b.name_any()))
        });
        all
    }

    #[tracing::instrument(skip_all)]
    async fn pass(&self, allocator: &mut Allocator) {
        let _timer = self.metrics.reconcile_timer();
        let api: Api<CiliumNode> = Api::all(self.client.clone());
        // A CiliumNode for every Node.
        for node in self.nodes.state() {
            let missing = self
                .cilium_nodes
                .get(&reflector::ObjectRef::new(&node.name_any()))
                .is_none();
            if !missing {
                continue;
            }
            match api
                .create(&PostParams::default(), &cilium_node_for(&node))
                .await
            {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {}
                Err(e) => {
                    tracing::warn!(node = %node.name_any(), error = %e, "creating CiliumNode failed")
                }
            }
        }
        // A deleted Node takes its CiliumNode with it.
        for cn in self.cilium_nodes.state() {
            let name = cn.name_any();
            if self.nodes.get(&reflector::ObjectRef::new(&name)).is_none() {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: cn.uid(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => tracing::info!(node = %name, "deleted CiliumNode of a deleted Node"),
                    Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "deleting CiliumNode failed")
                    }
                }
            }
        }
        // Blocks of CiliumNodes that are gone are free again.
        let gone: Vec<String> = allocator
            .nodes()
            .filter(|n| {
                self.cilium_nodes
                    .get(&reflector::ObjectRef::new(n))
                    .is_none()
            })
            .map(str::to_owned)
            .collect();
        for name in gone {
            tracing::info!(node = %name, "releasing PodCIDRs of a deleted CiliumNode");
            allocator.release(&name);
        }
        for cn in self.by_age() {
            if cn.meta().deletion_timestamp.is_some() {
                continue;
            }
            if let Err(e) = self.reconcile(&api, allocator, &cn).await {
                tracing::warn!(node = %cn.name_any(), error = %e, "CiliumNode update failed; retrying on the next pass");
            }
        }
        for family in [Family::V4, Family::V6] {
            let (used, total) = allocator.usage(family);
            self.metrics.set_pool_usage(family, used, total);
        }
    }

    async fn reconcile(
        &self,
        api: &Api<CiliumNode>,
        allocator: &mut Allocator,
        cn: &CiliumNode,
    ) -> Result<(), kube::Error> {
        let name = cn.name_any();
        let current = pod_cidrs(cn);
        let assignment = allocator.assign(&name, &current);
        if assignment.pod_cidrs != current {
            // The resourceVersion makes this a conditional write: if another writer (or a
            // briefly overlapping leader) changed the node, it fails with 409 and the next
            // pass starts from what the apiserver holds.
            let patch = json!({
                "metadata": {"resourceVersion": cn.resource_version()},
                "spec": {"ipam": {"podCIDRs": assignment.pod_cidrs}},
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = %name, pod_cidrs = ?assignment.pod_cidrs, "allocated PodCIDRs")
                }
                Err(e) if is_conflict(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let error = assignment.error_text();
        let reported = cn
            .status
            .as_ref()
            .and_then(|s| s.ipam.as_ref())
            .and_then(|i| i.operator_status.as_ref())
            .and_then(|o| o.error.clone());
        if error != reported {
            let patch = json!({"status": {"ipam": {"operator-status": {"error": error}}}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            if assignment
                .errors
                .iter()
                .any(|e| matches!(e, AllocError::Full(_)))
            {
                self.publish_exhaustion(cn, error.as_deref().unwrap_or_default())
                    .await;
            }
        }
        Ok(())
    }

    async fn publish_exhaustion(&self, cn: &CiliumNode, note: &str) {
        let event = Event {
            type_: EventType::Warning,
            reason: "PodCIDRAllocationFailed".into(),
            note: Some(note.into()),
            action: "AllocatePodCIDR".into(),
            secondary: None,
        };
        // Events about cluster-scoped objects live in `default`; kube-apiserver 1.20 insists
        // that the regarded object's namespace matches the Event's.
        let mut regarding = cn.object_ref(&());
        regarding.namespace = Some("default".into());
        if let Err(e) = self.recorder.publish(&event, &regarding).await {
            tracing::warn!(error = %e, "publishing Event failed");
        }
    }
}

fn pod_cidrs(cn: &CiliumNode) -> Vec<String> {
    cn.spec
        .ipam
        .as_ref()
        .and_then(|i| i.pod_cidrs.clone())
        .unwrap_or_default()
}

/// A new CiliumNode for `node`, with the Node's addresses.
fn cilium_node_for(node: &Node) -> CiliumNode {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .map(|a| NodeAddress {
            type_: a.type_,
            ip: a.address,
        })
        .collect::<Vec<_>>();
    let mut cn = CiliumNode::new(&node.name_any(), Default::default());
    cn.spec.addresses = (!addresses.is_empty()).then_some(addresses);
    cn
}
