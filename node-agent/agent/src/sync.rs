//! The reconciler: keeps the kernel in line with the cluster and the node's endpoints.
//! Each pass resolves endpoint identities, computes and writes the endpoints' policy maps,
//! syncs the ipcache and the routes to other nodes, then asks the [`Publisher`] to write
//! what changed to the apiserver (in a loop of its own); it runs on every change of the
//! caches or the endpoints, and on a period to retry failures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_crds::cache::{Waker, reflect};
use cilium_crds::pod_identity::{parse_identity, pod_identity_labels};
use cilium_crds::{
    CiliumClusterwideNetworkPolicy, CiliumEndpoint, CiliumIdentity, CiliumNetworkPolicy, CiliumNode,
};
use cilium_identity::{LabelFilter, LabelSet, ReservedIdentity};
use cilium_netdev::Netlink;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::agent::Agent;
use crate::clustermesh::{ClusterMesh, RemoteCache};
use crate::cni_conf::CniConf;
use crate::endpoints::EndpointRecord;
use crate::policy::{PolicyState, Validity};
use crate::publish::Publisher;
use crate::{controllers, ipcache, routes, services};
use cilium_crds::endpoint::NamedPort;
use cilium_policy::{PolicyRef, PortNames};

const RESYNC_PERIOD: Duration = Duration::from_secs(10);

/// The objects the agent reads: its own node's pods, and the cluster's namespaces,
/// identities, CiliumNodes, CiliumEndpoints, policies, and Services with their
/// EndpointSlices.
#[derive(Clone)]
pub struct Caches {
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub identities: Store<CiliumIdentity>,
    pub nodes: Store<CiliumNode>,
    pub endpoints: Store<CiliumEndpoint>,
    pub cnps: Store<CiliumNetworkPolicy>,
    pub ccnps: Store<CiliumClusterwideNetworkPolicy>,
    pub network_policies: Store<NetworkPolicy>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
}

impl Caches {
    /// `changed` is woken by what the reconciler derives from, `services_changed` by the
    /// Services and EndpointSlices (the balancer's inputs).
    pub fn start(
        client: &Client,
        node_name: &str,
        changed: &Waker,
        services_changed: &Waker,
    ) -> Self {
        let all = || watcher::Config::default();
        let wake = || vec![changed.clone()];
        let local_pods = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        Self {
            pods: reflect(Api::all(client.clone()), local_pods, wake()),
            namespaces: reflect(Api::all(client.clone()), all(), wake()),
            identities: reflect(Api::all(client.clone()), all(), wake()),
            nodes: reflect(Api::all(client.clone()), all(), wake()),
            endpoints: reflect(Api::all(client.clone()), all(), wake()),
            cnps: reflect(Api::all(client.clone()), all(), wake()),
            ccnps: reflect(Api::all(client.clone()), all(), wake()),
            network_policies: reflect(Api::all(client.clone()), all(), wake()),
            // Services change nothing the reconciler writes: the balancer derives from them.
            services: reflect(
                Api::all(client.clone()),
                all(),
                vec![services_changed.clone()],
            ),
            endpoint_slices: cilium_crds::cache::reflect_endpoint_slices(
                client,
                vec![services_changed.clone()],
            ),
        }
    }

    /// The Pod of endpoint `record`, once the cache has it.
    pub fn pod_of(&self, record: &EndpointRecord) -> Option<Arc<Pod>> {
        self.pods
            .get(&ObjectRef::new(&record.k8s_pod_name).within(&record.k8s_namespace))
    }

    pub async fn ready(&self) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.pods.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.identities.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.cnps.wait_until_ready().await?;
        self.ccnps.wait_until_ready().await?;
        self.network_policies.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await?;
        self.endpoints.wait_until_ready().await
    }
}

/// Named ports as the policy engine takes them; ports of an unknown protocol are left out.
fn port_triples(ports: &[NamedPort]) -> impl Iterator<Item = (&str, u8, u16)> {
    ports.iter().filter_map(|p| {
        Some((
            p.name.as_deref()?,
            cilium_policy::named::protocol_number(p.protocol.as_deref())?,
            p.port?,
        ))
    })
}

/// The labels an endpoint record carries (`source:key=value` texts).
fn record_labels(record: &EndpointRecord) -> Result<LabelSet, String> {
    record
        .labels
        .iter()
        .map(|text| cilium_identity::Label::parse(text).map_err(|e| format!("label {text:?}: {e}")))
        .collect()
}

/// Every CiliumIdentity's number and labels; objects that do not parse are skipped.
pub fn parsed_identities(identities: &[Arc<CiliumIdentity>]) -> Vec<(u32, LabelSet)> {
    identities
        .iter()
        .filter_map(|cid| parse_identity(cid).ok())
        .map(|(id, labels)| (id.0, labels))
        .collect()
}

/// The apiserver's version as `cilium status` prints it: `1.20 (v1.20.15) [linux/amd64]`;
/// a build without a release number (major and minor empty) shows its git version only.
fn version_text(info: &k8s_openapi::apimachinery::pkg::version::Info) -> String {
    if info.major.is_empty() && info.minor.is_empty() {
        format!("{} [{}]", info.git_version, info.platform)
    } else {
        format!(
            "{}.{} ({}) [{}]",
            info.major, info.minor, info.git_version, info.platform
        )
    }
}

pub struct Reconciler {
    pub client: Client,
    pub agent: Arc<Agent>,
    pub caches: Caches,
    pub changed: Waker,
    pub filter: LabelFilter,
    pub ct_gc_interval: Duration,
    pub policy: Arc<std::sync::Mutex<PolicyState>>,
    /// The remote clusters, with `--clustermesh-config`.
    pub mesh: Option<Arc<ClusterMesh>>,
    /// CiliumEndpoints, IPAM use and policy validity, written after each pass.
    pub publisher: Arc<Publisher>,
    /// The CNI configuration installed once the caches synced (ADD is served from then on).
    pub cni_conf: Option<CniConf>,
}

impl Reconciler {
    pub async fn run(self) -> anyhow::Result<()> {
        self.caches.ready().await?;
        match self.client.apiserver_version().await {
            Ok(version) => self.agent.set_kubernetes_version(version_text(&version)),
            Err(e) => tracing::warn!(error = %e, "reading the apiserver's version failed"),
        }
        self.agent.set_synced();
        tracing::info!("caches synced");
        if let Some(conf) = &self.cni_conf {
            conf.install()?;
            tracing::info!(path = %conf.destination.display(), "CNI configuration installed");
        }
        let netlink = Netlink::connect()?;
        tokio::spawn(self.publisher.clone().run());
        let mut next_gc = Instant::now() + self.ct_gc_interval;
        let mut next_reread = Instant::now() + RESYNC_PERIOD;
        loop {
            // The ipcache is diffed against what the agent wrote; once a period against the
            // kernel's own entries, in case anything else wrote the pinned map.
            let reread = Instant::now() >= next_reread;
            if reread {
                next_reread = Instant::now() + RESYNC_PERIOD;
            }
            self.pass(&netlink, reread).await;
            if Instant::now() >= next_gc {
                match self
                    .agent
                    .controller(controllers::CT_GC, || self.agent.ct_gc())
                {
                    Ok(removed) => tracing::debug!(removed, "connection tracking GC"),
                    Err(e) => tracing::warn!(error = %e, "connection tracking GC failed"),
                }
                next_gc = Instant::now() + self.ct_gc_interval;
            }
            tokio::select! {
                _ = self.changed.woken() => {}
                _ = tokio::time::sleep(RESYNC_PERIOD) => {}
            }
        }
    }

    #[tracing::instrument(skip_all)]
    async fn pass(&self, netlink: &Netlink, reread_ipcache: bool) {
        // Parsed once for both users: the pods' identity lookup and the selector cache.
        let mut identities = parsed_identities(&self.caches.identities.state());
        self.resolve_identities(&identities);
        let remote: Vec<Arc<RemoteCache>> =
            self.mesh.as_ref().map(|m| m.caches()).unwrap_or_default();
        // Remote identities carry their cluster's id in their upper bits: never a local one.
        identities.extend(
            remote
                .iter()
                .flat_map(|c| c.identities.iter().map(|(id, l)| (*id, l.clone()))),
        );
        let apiservers = services::kube_apiservers(&self.caches.endpoint_slices.state());
        let apiserver_on_host = apiservers.contains(&self.agent.node().ip);
        let (validities, cidr_entries) = self.compute_policies(&identities, apiserver_on_host);
        let node = self.agent.node();
        let nodes = self.caches.nodes.state();
        let ceps = self.caches.endpoints.state();
        let remote: Vec<&RemoteCache> = remote.iter().map(Arc::as_ref).collect();
        let synced = self.agent.controller(controllers::SYNC_IPCACHE, || {
            self.agent.sync_ipcache(reread_ipcache, |local| {
                let local_nodes: Vec<&CiliumNode> = nodes.iter().map(Arc::as_ref).collect();
                let mut wanted = ipcache::desired(
                    &node.name,
                    node.ip,
                    &local_nodes,
                    ceps.iter().map(Arc::as_ref),
                    local,
                    &remote,
                    &apiservers,
                );
                // CIDRs of policies, unless an endpoint or node holds that very prefix.
                for (prefix, identity) in &cidr_entries {
                    wanted
                        .entry(*prefix)
                        .or_insert(cilium_datapath::IpcacheEntry {
                            identity: *identity,
                            tunnel_endpoint: None,
                        });
                }
                wanted
            })
        });
        match synced {
            Ok(0) => {}
            Ok(writes) => tracing::debug!(writes, "ipcache updated"),
            Err(e) => tracing::warn!(error = %e, "ipcache sync failed"),
        }
        if let Err(e) = self
            .agent
            .controlled(
                controllers::SYNC_ROUTES,
                self.sync_routes(netlink, &nodes, &remote),
            )
            .await
        {
            tracing::warn!(error = %e, "route sync failed");
        }
        self.publisher.request(validities);
    }

    /// Reads the policies and identities into the engine and sets every endpoint's policy
    /// map; returns each policy's validity and the CIDR identities for the ipcache.
    fn compute_policies(
        &self,
        identities: &[(u32, LabelSet)],
        apiserver_on_host: bool,
    ) -> (BTreeMap<PolicyRef, Validity>, Vec<(ipnet::IpNet, u32)>) {
        let mut state = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        let validities = state.load(
            &self.caches.cnps.state(),
            &self.caches.ccnps.state(),
            &self.caches.network_policies.state(),
        );
        state.update_identities(identities, apiserver_on_host);
        // Egress rules' port names: every endpoint's in the cluster (this node's pods too,
        // whose CiliumEndpoints may not be written yet).
        let ceps = self.caches.endpoints.state();
        // Each local pod's named ports, read once for both uses.
        let local_ports: BTreeMap<(String, String), Vec<NamedPort>> = self
            .caches
            .pods
            .state()
            .iter()
            .map(|p| {
                let key = (p.namespace().unwrap_or_default(), p.name_any());
                (key, NamedPort::of_pod(p))
            })
            .collect();
        let cluster_ports: Vec<(&str, u8, u16)> = ceps
            .iter()
            .filter_map(|cep| cep.status.as_ref()?.named_ports.as_ref())
            .chain(local_ports.values())
            .flat_map(|ports| port_triples(ports))
            .collect();
        // Failures are logged per endpoint and kept in the controller's status.
        let _ = self.agent.controller(controllers::POLICY, || {
            let mut failed = Vec::new();
            for record in self.agent.records() {
                // An endpoint waiting for its identity keeps a map that drops everything.
                if record.identity == ReservedIdentity::Init.id().0 {
                    continue;
                }
                // What selects the endpoint is its pod's labels as they are now: a pod
                // relabelled into a policy's selector is enforced at once, not once its new
                // identity is allocated (peers keep seeing the old identity until then).
                // Without the pod, the identity's labels, or the endpoint's own record.
                let current = self.identity_labels(&record);
                let labels = match current.or_else(|| state.labels(record.identity).cloned()) {
                    Some(labels) => labels,
                    None => match record_labels(&record) {
                        Ok(labels) => labels,
                        Err(e) => {
                            failed.push(format!("endpoint {}: {e}", record.id));
                            continue;
                        }
                    },
                };
                let own = local_ports
                    .get(&(record.k8s_namespace.clone(), record.k8s_pod_name.clone()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let ports = PortNames::new(port_triples(own), cluster_ports.iter().copied());
                let policy = state.endpoint(&labels, &ports);
                if let Err(e) = self.agent.set_policy(record.id, record.identity, policy) {
                    tracing::warn!(id = record.id, error = %e, "setting the endpoint's policy failed; it drops all traffic until a policy fits");
                    failed.push(e.to_string());
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(failed.join("; "))
            }
        });
        (validities, state.cidr_entries())
    }

    /// Each endpoint's identity from its pod's labels; `init` while the pod or its identity
    /// is not known yet.
    fn resolve_identities(&self, identities: &[(u32, LabelSet)]) {
        let index: BTreeMap<&LabelSet, u32> = identities
            .iter()
            .map(|(id, labels)| (labels, *id))
            .collect();
        for record in self.agent.records() {
            let Some(labels) = self.identity_labels(&record) else {
                continue;
            };
            let Some(identity) = index.get(&labels) else {
                continue;
            };
            let texts = labels.iter().map(ToString::to_string).collect();
            if let Err(e) = self.agent.set_identity(record.id, *identity, texts) {
                tracing::warn!(id = record.id, error = %e, "updating the endpoint's identity failed");
            }
        }
    }

    /// The Pod of endpoint `record`, once the cache has it.
    /// The identity labels of `record`'s pod as the caches hold it now (its labels, its
    /// namespace's, the cluster), filtered; `None` while the pod is not known.
    fn identity_labels(&self, record: &EndpointRecord) -> Option<LabelSet> {
        let pod = self.caches.pod_of(record)?;
        let namespace = self
            .caches
            .namespaces
            .get(&ObjectRef::new(&record.k8s_namespace));
        Some(pod_identity_labels(
            &pod,
            namespace
                .as_ref()
                .and_then(|ns| ns.metadata.labels.as_ref()),
            &self.agent.node().cluster_name,
            &self.filter,
        ))
    }

    async fn sync_routes(
        &self,
        netlink: &Netlink,
        nodes: &[Arc<CiliumNode>],
        remote: &[&RemoteCache],
    ) -> Result<(), cilium_netdev::Error> {
        let node = self.agent.node();
        let mut wanted = routes::desired(&node.name, &node.cidrs(), nodes.iter().map(Arc::as_ref));
        let mut cluster_cidrs = node.cidrs();
        cluster_cidrs.extend(nodes.iter().flat_map(|n| routes::pod_cidrs(n)));
        wanted.extend(routes::remote_desired(
            &cluster_cidrs,
            remote.iter().flat_map(|c| c.nodes.values()),
        ));
        let current = netlink.owned_routes().await?;
        let (delete, add) = routes::changes(&current, &wanted);
        for route in &delete {
            netlink.delete_route(route, true).await?;
            tracing::info!(destination = %route.destination, "removed route");
        }
        for route in &add {
            netlink.replace_route(route, true).await?;
            tracing::info!(destination = %route.destination, gateway = ?route.gateway, "added route");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cilium_crds::pod_identity::identity_object;
    use cilium_identity::{Label, NumericIdentity};

    use super::*;

    #[test]
    fn apiserver_versions_print_as_cilium_does() {
        let mut info = k8s_openapi::apimachinery::pkg::version::Info {
            major: "1".into(),
            minor: "20".into(),
            git_version: "v1.20.15".into(),
            platform: "linux/amd64".into(),
            ..Default::default()
        };
        assert_eq!(version_text(&info), "1.20 (v1.20.15) [linux/amd64]");
        info.major.clear();
        info.minor.clear();
        info.git_version = "v0.0.0-master+faecb196815e2".into();
        assert_eq!(
            version_text(&info),
            "v0.0.0-master+faecb196815e2 [linux/amd64]"
        );
    }

    #[test]
    fn identities_parse_and_bad_objects_are_skipped() {
        let labels: LabelSet = [Label::k8s("app", "db")].into_iter().collect();
        let good = Arc::new(identity_object(NumericIdentity(31_000), &labels));
        let mut bad = identity_object(NumericIdentity(31_001), &labels);
        bad.metadata.name = Some("not-a-number".into());
        let parsed = parsed_identities(&[good, Arc::new(bad)]);
        assert_eq!(parsed, vec![(31_000, labels)]);
    }
}
