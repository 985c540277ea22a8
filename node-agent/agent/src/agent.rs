//! The agent's node-local state — IPAM, endpoints, the datapath — and the operations the
//! API and the reconciler perform on it. Each operation is all-or-nothing: a step that fails
//! undoes the ones before it, so the state on disk, in memory and in the kernel agree.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cilium_agent_api::delete_queue::DeleteQueue;
use cilium_agent_api::{
    BpfEndpointModel, ClusterHealth, CtEntryModel, EndpointChangeRequest, EndpointModel,
    EndpointRef, EndpointStateName, Health, HealthState, IpamAllocation, IpamStatus,
    IpcacheEntryModel, MonitorMessage, PolicyMapModel, PrefilterEntryModel, PrefilterModel,
    StatusResponse,
};
use cilium_crds::cache::Waker;
use cilium_datapath::{Datapath, Endpoint, IpcacheEntry, PolicyMap, monotonic_ns, policy_map_name};
use cilium_identity::{LabelSet, ReservedIdentity};
use cilium_policy::{EndpointPolicy, EnforcementMode};
use ipnet::{IpNet, Ipv4Net};
use tokio::sync::{broadcast, watch};

use crate::controllers::{self, Controllers};
use crate::endpoints::{EndpointRecord, EndpointTable, StateDir, StateError, parse_mac};
use crate::inspect;
use crate::ipam::{HostIpam, IpamError};
use crate::metrics::{AgentMetrics, StateSample};

/// How the agent was started: what status reports and what the prefilter may do.
#[derive(Debug, Clone, Default)]
pub struct AgentSettings {
    pub enforcement: EnforcementMode,
    /// Devices the XDP prefilter is attached to (none: it is off).
    pub prefilter_devices: Vec<String>,
    /// How long a `sync-build` endpoint creation waits for the endpoint to be ready.
    pub sync_build_timeout: Duration,
}

/// Verdict events buffered for each monitor reader before it counts as fallen behind.
const MONITOR_QUEUE: usize = 4096;

/// This node as the agent registered it.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub name: String,
    pub cluster_name: String,
    pub cluster_id: u8,
    /// The Node's InternalIP.
    pub ip: IpAddr,
    /// The IPv4 PodCIDRs the operator gave this node.
    pub cidrs: Vec<Ipv4Net>,
    /// The address of `cilium_host`, the pods' gateway (CiliumInternalIP).
    pub router_ip: Ipv4Addr,
    pub health_ip: Ipv4Addr,
}

impl LocalNode {
    pub fn cidrs(&self) -> Vec<IpNet> {
        self.cidrs.iter().copied().map(IpNet::V4).collect()
    }
}

/// IPAM owner names of the node's own addresses.
pub const ROUTER_OWNER: &str = "router";
pub const HEALTH_OWNER: &str = "health";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Not now: the caller should try again (CNI's "try again later").
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Datapath(#[from] cilium_datapath::Error),
    #[error(transparent)]
    State(#[from] StateError),
}

impl AgentError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            AgentError::BadRequest(_) | AgentError::Ipam(IpamError::OutOfRange { .. }) => 400,
            AgentError::NotFound(_) | AgentError::Ipam(IpamError::NotAllocated(_)) => 404,
            AgentError::Conflict(_) | AgentError::Ipam(IpamError::Taken { .. }) => 409,
            AgentError::Ipam(IpamError::Exhausted { .. }) | AgentError::Unavailable(_) => 503,
            AgentError::Datapath(_) | AgentError::State(_) => 500,
        }
    }
}

/// The policy an endpoint's map holds, and the identity it was computed for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppliedPolicy {
    identity: u32,
    policy: EndpointPolicy,
}

struct State {
    ipam: HostIpam,
    endpoints: EndpointTable,
    datapath: Datapath,
    /// The policy each endpoint's map holds, as last computed.
    policies: BTreeMap<u16, AppliedPolicy>,
}

impl State {
    /// Whether endpoint `id`'s ingress and egress are enforced (both, as far as anyone can
    /// tell, before its first policy: its map drops everything).
    fn enforced(&self, id: u16) -> (bool, bool) {
        self.policies.get(&id).map_or((true, true), |p| {
            (p.policy.ingress_enforced, p.policy.egress_enforced)
        })
    }

    fn lifecycle(&self, record: &EndpointRecord) -> EndpointStateName {
        record.state(self.policies.get(&record.id).map(|p| p.identity))
    }

    /// The endpoint as the API shows it, with the directions its policy enforces.
    fn model(&self, record: &EndpointRecord) -> EndpointModel {
        let mut model = record.model(self.lifecycle(record));
        (model.ingress_enforced, model.egress_enforced) = self.enforced(record.id);
        model
    }

    /// The map endpoint `id` should hold now: its computed policy, or nothing (drop all)
    /// until its first policy is computed — never allow-all for an endpoint whose policy
    /// is not known yet.
    fn policy_map(&self, id: u16) -> PolicyMap {
        self.policies
            .get(&id)
            .map(|p| p.policy.map.clone())
            .unwrap_or_else(|| PolicyMap::new([]))
    }
}

pub struct Agent {
    node: LocalNode,
    state: Mutex<State>,
    store: StateDir,
    /// Wakes the reconciler after a change it must publish (CiliumEndpoints, ipcache).
    changed: Waker,
    synced: AtomicBool,
    kvstore: Mutex<Health>,
    /// The apiserver's version, once known.
    kubernetes_version: Mutex<Option<String>>,
    settings: AgentSettings,
    metrics: AgentMetrics,
    controllers: Controllers,
    events: broadcast::Sender<MonitorMessage>,
    /// Touched whenever an endpoint's identity or policy changes (sync-build waits on it).
    endpoint_updates: watch::Sender<()>,
    /// The datapath's lost-event count already reported to monitor readers.
    events_lost: AtomicU64,
    cluster_health: Mutex<Option<ClusterHealth>>,
}

fn datapath_endpoint(record: &EndpointRecord) -> Endpoint {
    Endpoint {
        id: record.id,
        ifname: record.interface_name.clone(),
        ips: vec![IpAddr::V4(record.ipv4)],
        identity: record.identity,
        mac: record.mac,
        node_mac: record.host_mac,
    }
}

fn host_entry(record: &EndpointRecord, node_ip: IpAddr) -> (IpNet, IpcacheEntry) {
    let tunnel_endpoint = match node_ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    };
    (
        IpNet::from(IpAddr::V4(record.ipv4)),
        IpcacheEntry {
            identity: record.identity,
            tunnel_endpoint,
        },
    )
}

/// A network device name the kernel accepts.
fn check_ifname(what: &str, name: &str) -> Result<(), AgentError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(AgentError::BadRequest(format!(
            "{what} {name:?} is not a network device name (1-15 printable characters, no '/' or ':')"
        )))
    }
}

fn check_not_empty(what: &str, value: &str) -> Result<(), AgentError> {
    if value.trim().is_empty() {
        Err(AgentError::BadRequest(format!("{what} is empty")))
    } else {
        Ok(())
    }
}

impl Agent {
    /// The agent of `node`, with the router and health addresses taken in IPAM.
    pub fn new(
        node: LocalNode,
        datapath: Datapath,
        store: StateDir,
        changed: Waker,
        settings: AgentSettings,
    ) -> Result<Self, AgentError> {
        let mut ipam = HostIpam::new(node.cidrs.clone());
        ipam.allocate(node.router_ip, ROUTER_OWNER)?;
        ipam.allocate(node.health_ip, HEALTH_OWNER)?;
        Ok(Self {
            node,
            state: Mutex::new(State {
                ipam,
                endpoints: EndpointTable::default(),
                datapath,
                policies: BTreeMap::new(),
            }),
            store,
            changed,
            synced: AtomicBool::new(false),
            kvstore: Mutex::new(Health::new(HealthState::Disabled, "no kvstore configured")),
            kubernetes_version: Mutex::new(None),
            settings,
            metrics: AgentMetrics::default(),
            controllers: Controllers::default(),
            events: broadcast::channel(MONITOR_QUEUE).0,
            endpoint_updates: watch::channel(()).0,
            events_lost: AtomicU64::new(0),
            cluster_health: Mutex::new(None),
        })
    }

    pub fn set_cluster_health(&self, health: ClusterHealth) {
        *self
            .cluster_health
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(health);
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    pub fn controllers(&self) -> &Controllers {
        &self.controllers
    }

    /// Runs `run` as controller `name` (recorded for status and metrics).
    pub fn controller<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        run: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.controllers.run(name, &self.metrics, run)
    }

    /// Awaits `work` as a run of controller `name` (recorded for status and metrics).
    pub async fn controlled<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let result = work.await;
        self.controllers.record(
            name,
            start.elapsed(),
            result.as_ref().map(drop).map_err(ToString::to_string),
            &self.metrics,
        );
        result
    }

    pub fn set_kubernetes_version(&self, version: String) {
        *self
            .kubernetes_version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(version);
    }

    pub fn node(&self) -> &LocalNode {
        &self.node
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_kvstore_health(&self, health: Health) {
        *self.kvstore.lock().unwrap_or_else(|p| p.into_inner()) = health;
    }

    /// Whether the caches synced (pods' identities and the policies are known).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    /// Brings back the endpoints saved before a restart. An endpoint whose veth is gone
    /// (its pod was removed while the agent was down) is cleaned up; the others are
    /// re-attached in place with the same id, address and identity.
    pub fn restore(&self) -> Result<usize, AgentError> {
        let loaded = self.store.load()?;
        for (path, reason) in &loaded.unreadable {
            tracing::error!(path = %path.display(), %reason, "endpoint record unreadable; set aside");
        }
        let mut state = self.lock();
        let mut restored = 0;
        for record in loaded.records {
            let id = record.id;
            let present = nix::net::if_::if_nametoindex(record.interface_name.as_str()).is_ok();
            let claimed = if present {
                state.ipam.allocate(record.ipv4, &record.ipam_owner())
            } else {
                Ok(())
            };
            let endpoint = datapath_endpoint(&record);
            // The pinned map keeps enforcing what it held before the restart until the
            // first policy computation replaces it. An endpoint the datapath still holds
            // whole is adopted as it is; one that is not is wired again, with that policy.
            let attached = match claimed {
                Err(e) => Err(e.into()),
                Ok(()) if !present => Err(AgentError::NotFound(format!(
                    "device {} is gone",
                    record.interface_name
                ))),
                Ok(()) if state.datapath.adopt_endpoint(&endpoint) => Ok(()),
                Ok(()) => state
                    .datapath
                    .policy(id)
                    .and_then(|entries| {
                        let pinned =
                            PolicyMap::new(entries.into_iter().map(|e| (e.key, e.verdict)));
                        state.datapath.attach_endpoint(&endpoint, &pinned)
                    })
                    .map(drop)
                    .map_err(AgentError::from),
            };
            match attached {
                Ok(()) => {
                    let (prefix, entry) = host_entry(&record, self.node.ip);
                    state.datapath.upsert_ipcache(prefix, entry)?;
                    state.endpoints.insert(record);
                    restored += 1;
                }
                Err(reason) => {
                    tracing::warn!(id, %reason, "not restoring endpoint; removing it");
                    let _ = state.ipam.release(record.ipv4);
                    state.datapath.detach_endpoint(id)?;
                    state
                        .datapath
                        .delete_ipcache(IpNet::from(IpAddr::V4(record.ipv4)))?;
                    self.store.remove(id)?;
                }
            }
        }
        drop(state);
        self.changed.wake();
        Ok(restored)
    }

    pub fn allocate_ip(&self, owner: &str) -> Result<IpamAllocation, AgentError> {
        check_not_empty("owner", owner)?;
        let mut state = self.lock();
        let ip = state.ipam.allocate_next(owner)?;
        let cidr = self
            .node
            .cidrs
            .iter()
            .find(|c| c.contains(&ip))
            .copied()
            .unwrap_or_else(|| Ipv4Net::from(ip));
        tracing::info!(%ip, owner, "allocated");
        Ok(IpamAllocation {
            ipv4: ip,
            cidr,
            gateway: self.node.router_ip,
            node_ip: self.node.ip,
        })
    }

    pub fn release_ip(&self, ip: Ipv4Addr) -> Result<(), AgentError> {
        let mut state = self.lock();
        if let Some(endpoint) = state.endpoints.by_ip(ip) {
            return Err(AgentError::Conflict(format!(
                "{ip} belongs to endpoint {}; delete the endpoint instead",
                endpoint.id
            )));
        }
        if [self.node.router_ip, self.node.health_ip].contains(&ip) {
            return Err(AgentError::Conflict(format!(
                "{ip} is the node's own address"
            )));
        }
        let owner = state.ipam.release(ip)?;
        tracing::info!(%ip, owner, "released");
        Ok(())
    }

    /// Creates the endpoint of a wired pod; the same request again returns the endpoint
    /// unchanged (`false` = not created now).
    pub fn put_endpoint(
        &self,
        reference: &EndpointRef,
        request: EndpointChangeRequest,
    ) -> Result<(EndpointModel, bool), AgentError> {
        if *reference != EndpointRef::ContainerId(request.container_id.clone()) {
            return Err(AgentError::BadRequest(format!(
                "endpoints are created at container-id:<container-id> of the body; got {reference}"
            )));
        }
        check_not_empty("container-id", &request.container_id)?;
        check_not_empty("k8s-namespace", &request.k8s_namespace)?;
        check_not_empty("k8s-pod-name", &request.k8s_pod_name)?;
        check_not_empty("netns", &request.netns)?;
        check_ifname("interface-name", &request.interface_name)?;
        check_ifname("pod-interface-name", &request.pod_interface_name)?;
        let mac = parse_mac(&request.mac).map_err(AgentError::BadRequest)?;
        let host_mac = parse_mac(&request.host_mac).map_err(AgentError::BadRequest)?;
        // Before the caches synced the pod's identity and the policies are unknown.
        if !self.synced.load(Ordering::Relaxed) {
            return Err(AgentError::Unavailable(
                "cilium-agent is starting: its caches have not synced yet; try again".into(),
            ));
        }

        let mut state = self.lock();
        if let Some(existing) = state.endpoints.get(reference) {
            return if existing.ipv4 == request.ipv4
                && existing.interface_name == request.interface_name
            {
                Ok((state.model(existing), false))
            } else {
                Err(AgentError::Conflict(format!(
                    "container {} already has endpoint {} ({} on {})",
                    request.container_id, existing.id, existing.ipv4, existing.interface_name
                )))
            };
        }
        if let Some(holder) = state.endpoints.by_ip(request.ipv4) {
            return Err(AgentError::Conflict(format!(
                "{} belongs to endpoint {} of container {}",
                request.ipv4, holder.id, holder.container_id
            )));
        }
        let id = state
            .endpoints
            .next_id()
            .ok_or_else(|| AgentError::Conflict("all 65535 endpoint ids are in use".into()))?;
        let record = EndpointRecord {
            id,
            container_id: request.container_id,
            k8s_namespace: request.k8s_namespace,
            k8s_pod_name: request.k8s_pod_name,
            interface_name: request.interface_name,
            pod_interface_name: request.pod_interface_name,
            netns: request.netns,
            ipv4: request.ipv4,
            mac,
            host_mac,
            identity: ReservedIdentity::Init.id().0,
            labels: vec!["reserved:init".into()],
        };
        let claimed_now = state.ipam.owner(record.ipv4).is_none();
        state.ipam.allocate(record.ipv4, &record.ipam_owner())?;
        let wired = self.wire(&mut state, &record);
        if let Err(e) = wired {
            let _ = state.datapath.detach_endpoint(id);
            let _ = state
                .datapath
                .delete_ipcache(IpNet::from(IpAddr::V4(record.ipv4)));
            if claimed_now {
                let _ = state.ipam.release(record.ipv4);
            }
            return Err(e);
        }
        tracing::info!(id, container = %record.container_id, pod = %record.ipam_owner(), ip = %record.ipv4, "endpoint created");
        let model = state.model(&record);
        state.endpoints.insert(record);
        drop(state);
        self.changed.wake();
        Ok((model, true))
    }

    /// Datapath, ipcache and record on disk for `record`.
    fn wire(&self, state: &mut State, record: &EndpointRecord) -> Result<(), AgentError> {
        let policy = state.policy_map(record.id);
        state
            .datapath
            .attach_endpoint(&datapath_endpoint(record), &policy)?;
        let (prefix, entry) = host_entry(record, self.node.ip);
        state.datapath.upsert_ipcache(prefix, entry)?;
        self.store.save(record)?;
        Ok(())
    }

    pub fn delete_endpoint(&self, reference: &EndpointRef) -> Result<EndpointModel, AgentError> {
        let mut state = self.lock();
        let record = state
            .endpoints
            .get(reference)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("no endpoint {reference}")))?;
        // Kernel first: if it fails, the endpoint stays listed and a retry finishes the job.
        state.datapath.detach_endpoint(record.id)?;
        state
            .datapath
            .delete_ipcache(IpNet::from(IpAddr::V4(record.ipv4)))?;
        self.store.remove(record.id)?;
        let _ = state.ipam.release(record.ipv4);
        let model = state.model(&record);
        state.endpoints.remove(record.id);
        state.policies.remove(&record.id);
        drop(state);
        tracing::info!(id = record.id, container = %record.container_id, ip = %record.ipv4, "endpoint deleted");
        self.changed.wake();
        self.endpoint_updates.send_replace(());
        Ok(model)
    }

    /// Uninstall: every program detached and every pin removed. The pods keep their
    /// interfaces and addresses; nothing enforces their policy any more.
    pub fn remove_datapath(&self) -> Result<(), AgentError> {
        let state = self.lock();
        state.datapath.remove_pins()?;
        tracing::info!(pins = %state.datapath.pin_dir().display(), "pinned datapath removed");
        Ok(())
    }

    /// Deletes the endpoints whose CNI DEL was queued while the agent was down (Cilium's
    /// `processQueuedDeletes`); the number deleted. An entry whose deletion fails stays
    /// queued for the next start.
    pub fn process_queued_deletes(&self, queue: &DeleteQueue) -> Result<usize, AgentError> {
        let queued = queue
            .queued()
            .map_err(|e| AgentError::Unavailable(e.to_string()))?;
        let mut deleted = 0;
        for container_id in queued {
            match self.delete_endpoint(&EndpointRef::ContainerId(container_id.clone())) {
                Ok(_) => deleted += 1,
                Err(AgentError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(container = %container_id, error = %e, "a queued CNI deletion failed; it stays queued");
                    continue;
                }
            }
            if let Err(e) = queue.done(&container_id) {
                tracing::warn!(container = %container_id, error = %e, "removing a queued CNI deletion failed");
            }
        }
        Ok(deleted)
    }

    /// Waits until endpoint `reference` is ready (identity resolved, its policy in the
    /// map) for at most `timeout`; the endpoint as it then is, or why it is not ready.
    pub async fn wait_until_ready(
        &self,
        reference: &EndpointRef,
        timeout: Duration,
    ) -> Result<EndpointModel, AgentError> {
        let mut updates = self.endpoint_updates.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let model = self.endpoint(reference)?;
            if model.state == EndpointStateName::Ready {
                return Ok(model);
            }
            let why = match model.state {
                EndpointStateName::WaitingForIdentity => {
                    "no CiliumIdentity for its labels yet (is cilium-operator running?)"
                }
                _ => "its policy is not in its map yet",
            };
            match tokio::time::timeout_at(deadline, updates.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(AgentError::Unavailable(format!(
                        "endpoint {} ({}/{}) is not ready after {timeout:?}: {} — {why}; try again",
                        model.id, model.k8s_namespace, model.k8s_pod_name, model.state
                    )));
                }
            }
        }
    }

    pub fn endpoint(&self, reference: &EndpointRef) -> Result<EndpointModel, AgentError> {
        let state = self.lock();
        state
            .endpoints
            .get(reference)
            .map(|record| state.model(record))
            .ok_or_else(|| AgentError::NotFound(format!("no endpoint {reference}")))
    }

    pub fn records(&self) -> Vec<EndpointRecord> {
        self.lock().endpoints.iter().cloned().collect()
    }

    /// Gives endpoint `id` a new identity: datapath, ipcache and record updated together.
    pub fn set_identity(
        &self,
        id: u16,
        identity: u32,
        labels: Vec<String>,
    ) -> Result<(), AgentError> {
        let mut state = self.lock();
        let Some(current) = state.endpoints.get(&EndpointRef::Id(id)).cloned() else {
            return Ok(());
        };
        if current.identity == identity && current.labels == labels {
            return Ok(());
        }
        let mut updated = current.clone();
        updated.identity = identity;
        updated.labels = labels;
        if let Err(e) = self.wire(&mut state, &updated) {
            // Back to what the record on disk says.
            let _ = self.wire(&mut state, &current);
            return Err(e);
        }
        tracing::info!(
            id,
            from = current.identity,
            to = identity,
            "endpoint identity changed"
        );
        if let Some(slot) = state.endpoints.get_mut(id) {
            *slot = updated;
        }
        drop(state);
        self.endpoint_updates.send_replace(());
        Ok(())
    }

    /// Sets endpoint `id`'s policy map (a diff against what it holds), computed for
    /// `identity`. A policy that does not fit the map leaves the endpoint dropping
    /// everything, and the error.
    pub fn set_policy(
        &self,
        id: u16,
        identity: u32,
        policy: EndpointPolicy,
    ) -> Result<bool, AgentError> {
        let mut state = self.lock();
        if state.endpoints.get(&EndpointRef::Id(id)).is_none() {
            return Ok(false);
        }
        let applied = AppliedPolicy { identity, policy };
        match state.policies.get(&id) {
            Some(current) if *current == applied => return Ok(false),
            Some(current) if current.policy == applied.policy => {
                // The same map serves the new identity: nothing to write.
                state.policies.insert(id, applied);
                drop(state);
                self.endpoint_updates.send_replace(());
                return Ok(false);
            }
            _ => {}
        }
        let policy = &applied.policy;
        // On failure the datapath has locked the endpoint down (drops everything) and the
        // policy stays unrecorded, so the next pass tries again.
        let change = state.datapath.set_policy(id, &policy.map)?;
        tracing::info!(
            id,
            upserted = change.upserted,
            deleted = change.deleted,
            ingress = policy.ingress_enforced,
            egress = policy.egress_enforced,
            "endpoint policy updated"
        );
        state.policies.insert(id, applied);
        drop(state);
        self.endpoint_updates.send_replace(());
        Ok(true)
    }

    /// Endpoint `record`'s lifecycle state and whether its ingress and egress are enforced.
    pub fn lifecycle(&self, record: &EndpointRecord) -> (EndpointStateName, (bool, bool)) {
        let state = self.lock();
        (state.lifecycle(record), state.enforced(record.id))
    }

    /// Makes the datapath's ipcache equal to `wanted(local endpoints)`, writing what differs
    /// from what the agent last wrote (`reread`: from what the kernel holds now); returns
    /// the number of writes.
    pub fn sync_ipcache(
        &self,
        reread: bool,
        wanted: impl FnOnce(&[EndpointRecord]) -> BTreeMap<IpNet, IpcacheEntry>,
    ) -> Result<usize, AgentError> {
        let mut state = self.lock();
        let local: Vec<EndpointRecord> = state.endpoints.iter().cloned().collect();
        let wanted = wanted(&local);
        Ok(state.datapath.sync_ipcache(&wanted, reread)?)
    }

    /// Removes expired connection-tracking entries; returns how many.
    pub fn ct_gc(&self) -> Result<usize, AgentError> {
        Ok(self.lock().datapath.ct_gc()?)
    }

    pub fn ipam_status(&self) -> IpamStatus {
        let state = self.lock();
        IpamStatus {
            cidrs: self.node.cidrs.clone(),
            used: state.ipam.used(),
            total: state.ipam.total(),
            allocations: state
                .ipam
                .allocations()
                .map(|(ip, owner)| (ip, owner.to_owned()))
                .collect(),
        }
    }

    pub fn status(&self) -> StatusResponse {
        let ipam = self.ipam_status();
        let controllers = self.controllers.snapshot();
        let failing: Vec<&str> = controllers
            .iter()
            .filter(|c| !c.is_healthy())
            .map(|c| c.name.as_str())
            .collect();
        let cilium = if failing.is_empty() {
            Health::new(HealthState::Ok, "")
        } else {
            Health::new(
                HealthState::Warning,
                format!("failing controllers: {}", failing.join(", ")),
            )
        };
        StatusResponse {
            node_name: self.node.name.clone(),
            cluster_name: self.node.cluster_name.clone(),
            cluster_id: self.node.cluster_id,
            node_ip: self.node.ip,
            router_ip: self.node.router_ip,
            health_ip: Some(self.node.health_ip),
            endpoints: self.lock().endpoints.len(),
            ipam,
            kubernetes: self.kubernetes_health(&controllers),
            kvstore: self
                .kvstore
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            cilium,
            policy_enforcement: self.settings.enforcement.to_string(),
            controllers,
            cluster_health: self
                .cluster_health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            monitor_events_lost: self.events_lost.load(Ordering::Relaxed),
            // The API adds the mesh's, which the agent does not hold.
            cluster_mesh: None,
        }
    }

    /// `Ok <version>` once the caches synced and the writes to the apiserver succeed.
    fn kubernetes_health(&self, controllers: &[cilium_agent_api::ControllerStatus]) -> Health {
        if !self.synced.load(Ordering::Relaxed) {
            return Health::new(HealthState::Warning, "waiting for the caches to sync");
        }
        let writer_failing = controllers.iter().find(|c| {
            !c.is_healthy()
                && [
                    controllers::SYNC_ENDPOINTS,
                    controllers::REPORT_IPAM,
                    controllers::REPORT_POLICY_STATUS,
                ]
                .contains(&c.name.as_str())
        });
        match writer_failing {
            Some(c) => Health::new(
                HealthState::Warning,
                format!(
                    "{}: {}",
                    c.name,
                    c.last_error.as_deref().unwrap_or("failing")
                ),
            ),
            None => Health::new(
                HealthState::Ok,
                self.kubernetes_version
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_default(),
            ),
        }
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<MonitorMessage> {
        self.events.subscribe()
    }

    /// Hands the datapath's queued verdict events to the monitor's readers (and reports
    /// events the datapath lost); returns how many events there were.
    pub fn pump_events(&self) -> Result<usize, AgentError> {
        let (events, lost) = {
            let mut state = self.lock();
            (state.datapath.drain_events(), state.datapath.events_lost()?)
        };
        let reported = self.events_lost.swap(lost, Ordering::Relaxed);
        if lost > reported {
            // No reader is not an error: the events are simply not wanted now.
            let _ = self.events.send(MonitorMessage::Lost(lost - reported));
        }
        for event in &events {
            let _ = self
                .events
                .send(MonitorMessage::Event(inspect::monitor_event(event)));
        }
        Ok(events.len())
    }

    /// Endpoint `id`'s policy map; `identities` names the peers.
    pub fn policy_map(
        &self,
        id: u16,
        identities: &BTreeMap<u32, LabelSet>,
    ) -> Result<PolicyMapModel, AgentError> {
        let state = self.lock();
        if state.endpoints.get(&EndpointRef::Id(id)).is_none() {
            return Err(AgentError::NotFound(format!("no endpoint {id}")));
        }
        let entries = state.datapath.policy(id)?;
        Ok(PolicyMapModel {
            endpoint_id: id,
            map_name: policy_map_name(id),
            max_entries: state.datapath.policy_map_max(),
            entries: entries
                .iter()
                .map(|e| inspect::policy_entry(e, identities))
                .collect(),
        })
    }

    pub fn ipcache_entries(&self) -> Result<Vec<IpcacheEntryModel>, AgentError> {
        Ok(self
            .lock()
            .datapath
            .ipcache()?
            .iter()
            .map(|(prefix, entry)| inspect::ipcache_entry(*prefix, entry))
            .collect())
    }

    pub fn bpf_endpoints(&self) -> Result<Vec<BpfEndpointModel>, AgentError> {
        Ok(self
            .lock()
            .datapath
            .endpoints()?
            .iter()
            .map(|(ip, info)| inspect::bpf_endpoint(*ip, info))
            .collect())
    }

    /// The service maps' frontends and backends, as the kernel holds them.
    pub fn lb_entries(&self) -> Result<Vec<cilium_agent_api::LbEntryModel>, AgentError> {
        let pins = self.lock().datapath.pin_dir().to_path_buf();
        Ok(cilium_datapath::lb::list(&pins)?
            .iter()
            .map(inspect::lb_entry)
            .collect())
    }

    pub fn ct_entries(&self) -> Result<Vec<CtEntryModel>, AgentError> {
        let now = monotonic_ns()?;
        let mut entries: Vec<CtEntryModel> = self
            .lock()
            .datapath
            .ct_entries()?
            .iter()
            .map(|e| inspect::ct_entry(e, now))
            .collect();
        entries.sort_by_key(|e| (e.src, e.sport, e.dst, e.dport));
        Ok(entries)
    }

    pub fn prefilter(&self) -> Result<PrefilterModel, AgentError> {
        let state = self.lock();
        let totals = state.datapath.prefilter_totals()?;
        Ok(PrefilterModel {
            devices: self.settings.prefilter_devices.clone(),
            entries: state
                .datapath
                .prefilter()?
                .into_iter()
                .map(|e| PrefilterEntryModel {
                    cidr: e.prefix,
                    packets: e.packets,
                    bytes: e.bytes,
                })
                .collect(),
            passed: totals.passed,
            dropped: totals.dropped,
        })
    }

    /// Adds (`deny`) or removes source prefixes the prefilter drops.
    pub fn change_prefilter(
        &self,
        cidrs: &[IpNet],
        deny: bool,
    ) -> Result<PrefilterModel, AgentError> {
        if self.settings.prefilter_devices.is_empty() {
            return Err(AgentError::BadRequest(
                "the XDP prefilter is off: start the agent with --enable-xdp-prefilter and --devices".into(),
            ));
        }
        if cidrs.is_empty() {
            return Err(AgentError::BadRequest("no CIDR given".into()));
        }
        {
            let mut state = self.lock();
            let mut denied: BTreeSet<IpNet> = state
                .datapath
                .prefilter()?
                .into_iter()
                .map(|e| e.prefix)
                .collect();
            for cidr in cidrs {
                let cidr = cidr.trunc();
                if deny {
                    denied.insert(cidr);
                } else if !denied.remove(&cidr) {
                    return Err(AgentError::NotFound(format!(
                        "{cidr} is not in the prefilter"
                    )));
                }
            }
            state.datapath.set_prefilter(&denied)?;
        }
        tracing::info!(?cidrs, deny, "prefilter changed");
        self.prefilter()
    }

    /// The endpoint part of the metrics' state sample, and the datapath's counters.
    pub fn observe_metrics(&self, mut sample: StateSample) -> Result<(), AgentError> {
        let counters = {
            let state = self.lock();
            for record in state.endpoints.iter() {
                *sample
                    .endpoint_states
                    .entry(state.lifecycle(record).to_string())
                    .or_default() += 1;
                let name = match state.enforced(record.id) {
                    (false, false) => "none",
                    (true, false) => "ingress",
                    (false, true) => "egress",
                    (true, true) => "both",
                };
                *sample.enforcement.entry(name.into()).or_default() += 1;
                let entries = state
                    .policies
                    .get(&record.id)
                    .map_or(0, |p| p.policy.map.len());
                sample
                    .policy_maps
                    .push((policy_map_name(record.id), entries));
            }
            sample.policy_map_max = state.datapath.policy_map_max();
            state.datapath.all_counters()?
        };
        self.metrics.observe_state(&sample);
        self.metrics.observe_counters(&counters);
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<EndpointModel> {
        let state = self.lock();
        state
            .endpoints
            .iter()
            .map(|record| state.model(record))
            .collect()
    }
}
