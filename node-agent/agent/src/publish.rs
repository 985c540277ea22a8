//! What the agent publishes to the apiserver: each endpoint's CiliumEndpoint, the node's
//! IPAM use on its CiliumNode, and each policy's `Valid` condition. It runs in a loop of
//! its own, after each enforcement pass and on a period to retry failures, so a thousand
//! CiliumEndpoint writes never hold back the next identity or policy on its way to the
//! maps (they did: a new peer identity reached 1,000 endpoints' maps in 3.0 s).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cilium_crds::cache::Waker;
use cilium_crds::endpoint::NamedPort;
use cilium_crds::{
    CiliumClusterwideNetworkPolicy, CiliumEndpoint, CiliumNetworkPolicy, CiliumNode,
};
use cilium_policy::{PolicyKind, PolicyRef};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::agent::Agent;
use crate::endpoints::EndpointRecord;
use crate::policy::Validity;
use crate::sync::Caches;
use crate::{cep, controllers};

/// How often a publication runs without being asked (to retry failed writes).
const RETRY_PERIOD: Duration = Duration::from_secs(10);
/// CiliumEndpoint writes in flight at once.
const CEP_WRITE_CONCURRENCY: usize = 16;

pub struct Publisher {
    client: Client,
    agent: Arc<Agent>,
    caches: Caches,
    /// Each policy's validity as the last enforcement pass found it.
    validities: Mutex<BTreeMap<PolicyRef, Validity>>,
    /// The validity last logged for each NetworkPolicy.
    network_policies_logged: Mutex<BTreeMap<PolicyRef, Validity>>,
    requested: Waker,
}

impl Publisher {
    pub fn new(client: Client, agent: Arc<Agent>, caches: Caches) -> Self {
        Self {
            client,
            agent,
            caches,
            validities: Mutex::default(),
            network_policies_logged: Mutex::default(),
            requested: Waker::default(),
        }
    }

    /// Asks for a publication of what an enforcement pass left, with the policies'
    /// validities it found; requests made while one runs coalesce into the next.
    pub fn request(&self, validities: BTreeMap<PolicyRef, Validity>) {
        *self.validities.lock().unwrap_or_else(|p| p.into_inner()) = validities;
        self.requested.wake();
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.requested.woken() => {}
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
            }
            self.publish().await;
        }
    }

    async fn publish(&self) {
        let agent = &self.agent;
        if let Err(e) = agent
            .controlled(controllers::SYNC_ENDPOINTS, self.sync_endpoints())
            .await
        {
            tracing::warn!(error = %e, "CiliumEndpoint sync failed; retrying");
        }
        if let Err(e) = agent
            .controlled(controllers::REPORT_IPAM, self.report_ipam())
            .await
        {
            tracing::warn!(error = %e, "reporting IPAM use failed");
        }
        let validities = self
            .validities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Err(e) = agent
            .controlled(
                controllers::REPORT_POLICY_STATUS,
                self.report_validity(&validities),
            )
            .await
        {
            tracing::warn!(error = %e, "reporting policy validity failed");
        }
    }

    /// A CiliumEndpoint per endpoint with the current status; those of this node without an
    /// endpoint are deleted.
    async fn sync_endpoints(&self) -> Result<(), kube::Error> {
        let node_ip = self.agent.node().ip;
        let records = self.agent.records();
        // Writes run a few at a time: a thousand endpoints one at a time take seconds.
        // Owned records: a stream of borrowed ones is not `Send` for every lifetime, which a
        // spawned task needs.
        let mut writes = futures::stream::iter(records.clone())
            .map(|record| async move { self.sync_endpoint(&record).await })
            .buffer_unordered(CEP_WRITE_CONCURRENCY);
        while let Some(written) = writes.next().await {
            written?;
        }
        for cep in self.caches.endpoints.state() {
            if !cep::is_on_node(&cep, node_ip) {
                continue;
            }
            let namespace = cep.namespace().unwrap_or_default();
            let name = cep.name_any();
            let ours = records
                .iter()
                .any(|r| r.k8s_namespace == namespace && r.k8s_pod_name == name);
            if !ours {
                let api: Api<CiliumEndpoint> = Api::namespaced(self.client.clone(), &namespace);
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        tracing::info!(%namespace, %name, "deleted CiliumEndpoint of a removed endpoint")
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn sync_endpoint(&self, record: &EndpointRecord) -> Result<(), kube::Error> {
        let (state, enforcement) = self.agent.lifecycle(record);
        let pod = self.caches.pod_of(record);
        let named_ports = pod.as_deref().map(NamedPort::of_pod).unwrap_or_default();
        let status = cep::status(
            record,
            self.agent.node().ip,
            state,
            enforcement,
            named_ports,
        );
        let api: Api<CiliumEndpoint> = Api::namespaced(self.client.clone(), &record.k8s_namespace);
        let existing = self
            .caches
            .endpoints
            .get(&ObjectRef::new(&record.k8s_pod_name).within(&record.k8s_namespace));
        match existing {
            Some(existing) if existing.status.as_ref() == Some(&status) => Ok(()),
            Some(_) => {
                // The CRD has no status subresource: the status is part of the object.
                let patch = json!({ "status": status });
                api.patch(
                    &record.k8s_pod_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map(drop)
            }
            None => {
                let pod_uid = pod.and_then(|p| p.uid());
                let object = cep::object(record, pod_uid.as_deref(), status);
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => {
                        tracing::info!(id = record.id, pod = %record.ipam_owner(), "created CiliumEndpoint");
                        Ok(())
                    }
                    // Created by an earlier pass the cache has not shown yet.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// `status.ipam.used` of the node's CiliumNode: address → owner, as Cilium reports it.
    async fn report_ipam(&self) -> Result<(), kube::Error> {
        let node = self.agent.node();
        let nodes = self.caches.nodes.state();
        let used: BTreeMap<String, serde_json::Value> = self
            .agent
            .ipam_status()
            .allocations
            .into_iter()
            .map(|(ip, owner)| (ip.to_string(), json!({ "owner": owner })))
            .collect();
        let current = nodes
            .iter()
            .find(|cn| cn.name_any() == node.name)
            .and_then(|cn| cn.status.as_ref())
            .and_then(|s| s.ipam.as_ref())
            .and_then(|i| i.used.as_ref())
            .map(|u| {
                u.iter()
                    .map(|(ip, a)| (ip.clone(), json!({ "owner": a.owner })))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        if current == used {
            return Ok(());
        }
        let api: Api<CiliumNode> = Api::all(self.client.clone());
        // A merge patch merges maps: released addresses are removed with explicit nulls.
        let mut patch_used: serde_json::Map<String, serde_json::Value> = current
            .keys()
            .map(|ip| (ip.clone(), serde_json::Value::Null))
            .collect();
        patch_used.extend(used);
        let patch = json!({ "status": { "ipam": { "used": patch_used } } });
        api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
    }

    /// A NetworkPolicy has no status to write: its verdict is logged when it changes.
    fn log_network_policy_validity(&self, validities: &BTreeMap<PolicyRef, Validity>) {
        let mut logged = self
            .network_policies_logged
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        logged.retain(|reference, _| validities.contains_key(reference));
        let network_policies = validities
            .iter()
            .filter(|(reference, _)| reference.kind == PolicyKind::NetworkPolicy);
        for (reference, validity) in network_policies {
            if logged.get(reference) == Some(validity) {
                continue;
            }
            if validity.valid {
                tracing::info!(policy = %reference, message = %validity.message, "policy status");
            } else {
                tracing::warn!(policy = %reference, message = %validity.message, "policy status");
            }
            logged.insert(reference.clone(), validity.clone());
        }
    }

    /// Writes each policy's `Valid` condition where it says something else.
    async fn report_validity(
        &self,
        validities: &BTreeMap<PolicyRef, Validity>,
    ) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now().to_string();
        self.log_network_policy_validity(validities);
        for (reference, validity) in validities {
            if reference.kind == PolicyKind::NetworkPolicy {
                continue;
            }
            let name = ObjectRef::new(&reference.name);
            let conditions = match &reference.namespace {
                Some(namespace) => self
                    .caches
                    .cnps
                    .get(&name.within(namespace))
                    .and_then(|p| p.status.clone()),
                None => self
                    .caches
                    .ccnps
                    .get(&ObjectRef::new(&reference.name))
                    .and_then(|p| p.status.clone()),
            }
            .and_then(|status| status.conditions);
            if validity.is_reported(conditions.as_ref()) {
                continue;
            }
            let patch = json!({ "status": { "conditions": [validity.condition(&now)] } });
            let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
            match &reference.namespace {
                Some(namespace) => {
                    Api::<CiliumNetworkPolicy>::namespaced(self.client.clone(), namespace)
                        .patch_status(&reference.name, &params, &patch)
                        .await?;
                }
                None => {
                    Api::<CiliumClusterwideNetworkPolicy>::all(self.client.clone())
                        .patch_status(&reference.name, &params, &patch)
                        .await?;
                }
            }
            tracing::info!(policy = %reference, valid = validity.valid, message = %validity.message, "policy status");
        }
        Ok(())
    }
}
