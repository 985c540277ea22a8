//! The etcd kvstore mirror, run by the leader: CiliumNodes, CiliumIdentities,
//! CiliumEndpoints and global Services written in Cilium's layout (see [`cilium_kvstore::keys`]), every key
//! under one lease of ours, plus `cilium/cluster-config/<cluster>`, the
//! `cilium/synced/<cluster>/<prefix>` canaries after the first full write, and
//! `cilium/.heartbeat` every minute.
//!
//! A session starts by reading what etcd holds under our prefixes and writing the
//! difference to the apiserver's truth (stale keys removed, missing ones written); then
//! it writes the difference on every change. Any etcd error ends the session; the next
//! one starts over after a backoff, so an etcd outage ends in a full resync.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cilium_crds::{CiliumEndpoint, CiliumIdentity, CiliumNode};
use cilium_identity::{ClusterScope, NumericIdentity};
use cilium_kvstore::keys::{self, IDENTITIES_PREFIX, IP_PREFIX, NODES_PREFIX, SERVICES_PREFIX};
use cilium_kvstore::service;
use cilium_kvstore::sync::{LeasedClient, plan, rewrite};
use cilium_kvstore::{
    ClusterConfig, ClusterService, DecodeError, EtcdConfig, EtcdError, IpIdentityPair, KvNode,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::watch::{Caches, Waker};
use cilium_crds::pod_identity::parse_identity;

/// Cilium writes its heartbeat every minute; readers treat 2 missed ones as a dead store.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Retries start at this and double up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The cluster's own etcd: a retry is one connection attempt, so it is cheap to try
/// often, and a mirror that waited out a long backoff after an outage would serve
/// remote clusters a stale view for that long.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct MirrorConfig {
    pub etcd: EtcdConfig,
    pub cluster_name: String,
    pub cluster_id: u8,
    pub lease_ttl: Duration,
}

pub struct Mirror {
    caches: Caches,
    changed: Waker,
    config: MirrorConfig,
    metrics: Arc<Metrics>,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("leadership lost")]
    NotLeading,
}

impl Mirror {
    pub fn new(
        caches: &Caches,
        changed: Waker,
        config: MirrorConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            caches: caches.clone(),
            changed,
            config,
            metrics,
        }
    }

    pub async fn run(self, mut leading: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            leading.wait_for(|l| *l).await?;
            self.caches.ready().await?;
            match self.session(&mut leading).await {
                Ok(never) => match never {},
                Err(SessionEnd::NotLeading) => {}
                Err(SessionEnd::Etcd(e)) => {
                    self.metrics.kvstore_error();
                    tracing::warn!(error = %e, retry_in = ?backoff, "kvstore mirror interrupted; will resync");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            backoff = FIRST_BACKOFF;
        }
    }

    fn desired(&self) -> BTreeMap<String, String> {
        let mut state = desired_state(
            &self.config.cluster_name,
            self.config.cluster_id,
            &self.caches.cilium_nodes.state(),
            &self.caches.identities.state(),
            &self.caches.endpoints.state(),
        );
        state.extend(global_services(
            &self.config.cluster_name,
            self.config.cluster_id,
            &self.caches.services.state(),
            &self.caches.endpoint_slices.state(),
        ));
        state
    }

    #[tracing::instrument(skip_all)]
    async fn session(
        &self,
        leading: &mut watch::Receiver<bool>,
    ) -> Result<std::convert::Infallible, SessionEnd> {
        let client = self.config.etcd.connect().await?;
        let store = LeasedClient::new(client, self.config.lease_ttl).await?;
        let cluster = &self.config.cluster_name;

        let desired = self.desired();
        let current = self.owned_keys(&store).await?;
        let first = rewrite(&desired, &current);
        store.apply(&first).await?;
        self.metrics.kvstore_writes(first.len());
        tracing::info!(
            keys = desired.len(),
            removed = first.deletes.len(),
            lease = store.lease(),
            "kvstore in sync"
        );
        let now = jiff::Timestamp::now().to_string();
        for prefix in [NODES_PREFIX, IDENTITIES_PREFIX, IP_PREFIX, SERVICES_PREFIX] {
            store.put(&keys::synced_key(cluster, prefix), &now).await?;
        }
        let mut written = desired;
        let mut next_heartbeat = tokio::time::Instant::now();
        loop {
            if !*leading.borrow() {
                return Err(SessionEnd::NotLeading);
            }
            if tokio::time::Instant::now() >= next_heartbeat {
                store
                    .put(keys::HEARTBEAT_KEY, &jiff::Timestamp::now().to_string())
                    .await?;
                next_heartbeat = tokio::time::Instant::now() + HEARTBEAT_INTERVAL;
            }
            let desired = self.desired();
            let step = plan(&desired, &written);
            if !step.is_empty() {
                store.apply(&step).await?;
                self.metrics.kvstore_writes(step.len());
                written = desired;
            }
            tokio::select! {
                _ = self.changed.woken() => {}
                _ = tokio::time::sleep_until(next_heartbeat) => {}
                _ = leading.changed() => {}
                _ = store.lost() => return Err(EtcdError::LeaseLost(store.lease()).into()),
            }
        }
    }

    /// What etcd holds under the keys this cluster's mirror owns. Values that do not
    /// parse are reported; owned ones are then overwritten or removed by the plan.
    async fn owned_keys(
        &self,
        store: &LeasedClient,
    ) -> Result<BTreeMap<String, String>, EtcdError> {
        let cluster = &self.config.cluster_name;
        let scope = ClusterScope::new(self.config.cluster_id);
        let mut owned = BTreeMap::new();
        let report = |e: DecodeError| {
            self.metrics.kvstore_invalid_value();
            tracing::warn!(error = %e, "kvstore holds a value that does not parse");
        };
        // The prefixes this cluster owns, each with the decoder of its values (`ip/v1` is
        // under Cilium's one address space, `default`).
        type Check = fn(&str, &[u8]) -> Result<(), DecodeError>;
        let owned_prefixes: [(String, Check); 3] = [
            (format!("{NODES_PREFIX}/{cluster}/"), |k, v| {
                KvNode::decode(k, v).map(drop)
            }),
            (
                format!("{IP_PREFIX}/{}/", keys::IP_ADDRESS_SPACE),
                |k, v| IpIdentityPair::decode(k, v).map(drop),
            ),
            (format!("{SERVICES_PREFIX}/{cluster}/"), |k, v| {
                ClusterService::decode(k, v).map(drop)
            }),
        ];
        for (prefix, check) in owned_prefixes {
            for (key, value) in store.list(&prefix).await? {
                if let Err(e) = check(&key, &value) {
                    report(e);
                }
                owned.insert(key, String::from_utf8_lossy(&value).into_owned());
            }
        }
        for (key, value) in store.list(&format!("{IDENTITIES_PREFIX}/")).await? {
            let text = String::from_utf8_lossy(&value).into_owned();
            let id = if let Some(id) = keys::parse_identity_id_key(&key) {
                if let Err(e) = cilium_identity::LabelSet::parse_kvstore(&text) {
                    report(DecodeError::new(&key, e));
                }
                Some(id)
            } else if keys::parse_identity_value_key(&key).is_some() {
                match text.parse::<u32>() {
                    Ok(n) => Some(NumericIdentity(n)),
                    Err(e) => {
                        report(DecodeError::new(
                            &key,
                            format!("{text:?} is not an identity: {e}"),
                        ));
                        None
                    }
                }
            } else {
                None
            };
            // Identity keys of other clusters sharing this etcd are theirs.
            if id.is_some_and(|id| scope.contains(id)) {
                owned.insert(key, text);
            }
        }
        let config_key = keys::cluster_config_key(cluster);
        for (key, value) in store.list(&config_key).await? {
            if key == config_key {
                if let Err(e) = ClusterConfig::decode(&key, &value) {
                    report(e);
                }
                owned.insert(key, String::from_utf8_lossy(&value).into_owned());
            }
        }
        Ok(owned)
    }
}

/// `cilium/state/services/v1/<cluster>/<ns>/<name>` of every global service, with the
/// backends of the EndpointSlices labelled with its name.
pub fn global_services(
    cluster: &str,
    cluster_id: u8,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for svc in services.iter().filter(|s| service::is_global(s)) {
        let (namespace, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
        let own = service::slices_of(svc, slices.iter().map(Arc::as_ref));
        let published = ClusterService::from_k8s(cluster, cluster_id, svc, &own);
        state.insert(
            keys::service_key(cluster, &namespace, &name),
            published.encode(),
        );
    }
    state
}

/// Every key this cluster's mirror writes, with its value: the pure heart of the mirror.
pub fn desired_state(
    cluster: &str,
    cluster_id: u8,
    cilium_nodes: &[Arc<CiliumNode>],
    identities: &[Arc<CiliumIdentity>],
    endpoints: &[Arc<CiliumEndpoint>],
) -> BTreeMap<String, String> {
    let scope = ClusterScope::new(cluster_id);
    let mut state = BTreeMap::new();
    state.insert(
        keys::cluster_config_key(cluster),
        ClusterConfig::for_cluster(cluster_id).encode(),
    );
    let mut node_names: BTreeMap<String, String> = BTreeMap::new();
    for cn in cilium_nodes {
        let node = KvNode::from_cilium_node(cluster, cluster_id, cn);
        for address in &node.ip_addresses {
            node_names
                .entry(address.ip.clone())
                .or_insert_with(|| node.name.clone());
        }
        state.insert(keys::node_key(cluster, &node.name), node.encode());
    }
    let mut labels_of = BTreeMap::new();
    for cid in identities {
        if let Ok((id, labels)) = parse_identity(cid)
            && scope.contains(id)
        {
            state.insert(keys::identity_id_key(id), labels.kvstore_string());
            labels_of.insert(id, labels);
        }
    }
    let mut sorted: Vec<&Arc<CiliumEndpoint>> = endpoints.iter().collect();
    sorted.sort_by_key(|cep| (cep.namespace(), cep.name_any()));
    for cep in sorted {
        let Some(status) = cep.status.as_ref() else {
            continue;
        };
        let (Some(identity), Some(networking)) = (&status.identity, &status.networking) else {
            continue;
        };
        let Ok(id) = u32::try_from(identity.id) else {
            continue;
        };
        let host_ip = networking.node.clone().unwrap_or_default();
        let node_name = node_names
            .get(&host_ip)
            .cloned()
            .unwrap_or_else(|| host_ip.clone());
        if let Some(labels) = labels_of.get(&NumericIdentity(id))
            && !host_ip.is_empty()
        {
            state.insert(keys::identity_value_key(labels, &host_ip), id.to_string());
        }
        let addresses = networking
            .addressing
            .iter()
            .flat_map(|pair| [pair.ipv4.clone(), pair.ipv6.clone()])
            .flatten()
            .filter(|ip| ip.parse::<IpAddr>().is_ok());
        for ip in addresses {
            let pair = IpIdentityPair {
                ip: ip.clone(),
                mask: None,
                host_ip: host_ip.clone(),
                id,
                key: status
                    .encryption
                    .as_ref()
                    .and_then(|e| e.key)
                    .and_then(|k| u8::try_from(k).ok())
                    .unwrap_or(0),
                metadata: IpIdentityPair::metadata_for(&node_name, status.id.unwrap_or(0)),
                k8s_namespace: cep.namespace().unwrap_or_default(),
                k8s_pod_name: cep.name_any(),
            };
            // Of two endpoints claiming one IP, the first by namespace/name keeps it.
            state
                .entry(keys::ip_key(&ip))
                .or_insert_with(|| pair.encode());
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use cilium_crds::endpoint::{
        AddressPair, EndpointFields, EndpointIdentity, EndpointNetworking, EndpointStatus,
    };
    use cilium_crds::node::{HealthAddressing, IpamSpec, NodeAddress as CrdAddress, NodeSpec};
    use cilium_identity::{Label, LabelSet};

    /// What a mirror reads: CiliumNodes, CiliumIdentities, CiliumEndpoints.
    type Objects = (
        Vec<Arc<CiliumNode>>,
        Vec<Arc<CiliumIdentity>>,
        Vec<Arc<CiliumEndpoint>>,
    );

    fn seed_objects() -> Objects {
        let node = CiliumNode::new(
            "k8s-node1",
            NodeSpec {
                addresses: Some(vec![
                    CrdAddress {
                        type_: "InternalIP".into(),
                        ip: "10.5.1.132".into(),
                    },
                    CrdAddress {
                        type_: "CiliumInternalIP".into(),
                        ip: "10.6.6.71".into(),
                    },
                ]),
                health: Some(HealthAddressing {
                    ipv4: Some("10.6.6.79".into()),
                    ipv6: None,
                }),
                ipam: Some(IpamSpec {
                    pod_cidrs: Some(vec!["10.6.6.0/24".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let labels: LabelSet = [
            Label::k8s("app", "istio-ingressgateway"),
            Label::k8s("io.kubernetes.pod.namespace", "istio-system"),
        ]
        .into_iter()
        .collect();
        let identity = cilium_crds::pod_identity::identity_object(NumericIdentity(12928), &labels);
        let mut endpoint =
            CiliumEndpoint::new("ai-ingressgateway-6bdbdbf7dc-jz85c", EndpointFields {});
        endpoint.metadata.namespace = Some("istio-system".into());
        endpoint.status = Some(EndpointStatus {
            id: Some(432),
            identity: Some(EndpointIdentity {
                id: 12928,
                labels: None,
            }),
            networking: Some(EndpointNetworking {
                addressing: vec![AddressPair {
                    ipv4: Some("10.6.6.43".into()),
                    ipv6: None,
                }],
                node: Some("10.5.1.132".into()),
            }),
            ..Default::default()
        });
        (
            vec![Arc::new(node)],
            vec![Arc::new(identity)],
            vec![Arc::new(endpoint)],
        )
    }

    /// The source document's keys and values, from the objects they describe.
    #[test]
    fn the_documented_layout() {
        let (nodes, identities, endpoints) = seed_objects();
        let state = desired_state("default", 0, &nodes, &identities, &endpoints);
        let get = |k: &str| state.get(k).map(String::as_str);
        assert_eq!(
            get("cilium/state/nodes/v1/default/k8s-node1"),
            Some(
                r#"{"Name":"k8s-node1","Cluster":"default","IPAddresses":[{"Type":"InternalIP","IP":"10.5.1.132"},{"Type":"CiliumInternalIP","IP":"10.6.6.71"}],"IPv4AllocCIDR":{"IP":"10.6.6.0","Mask":"////AA=="},"IPv6AllocCIDR":null,"IPv4HealthIP":"10.6.6.79","IPv6HealthIP":"","ClusterID":0,"Source":"custom-resource","EncryptionKey":0}"#
            )
        );
        assert_eq!(
            get("cilium/state/ip/v1/default/10.6.6.43"),
            Some(
                r#"{"IP":"10.6.6.43","Mask":null,"HostIP":"10.5.1.132","ID":12928,"Key":0,"Metadata":"cilium-global:default:k8s-node1:432","K8sNamespace":"istio-system","K8sPodName":"ai-ingressgateway-6bdbdbf7dc-jz85c"}"#
            )
        );
        let labels = "k8s:app=istio-ingressgateway;k8s:io.kubernetes.pod.namespace=istio-system;";
        assert_eq!(get("cilium/state/identities/v1/id/12928"), Some(labels));
        assert_eq!(
            get(&format!(
                "cilium/state/identities/v1/value/{labels}/10.5.1.132"
            )),
            Some("12928")
        );
        assert_eq!(
            get("cilium/cluster-config/default"),
            Some(r#"{"capabilities":{"syncedCanaries":true,"maxConnectedClusters":255}}"#)
        );
        assert_eq!(state.len(), 5, "{state:#?}");
    }

    #[test]
    fn only_global_services_are_published_with_their_own_slices() {
        let service = |name: &str, global: bool| {
            let annotations =
                global.then(|| serde_json::json!({"io.cilium/global-service": "true"}));
            Arc::new(
                serde_json::from_value::<Service>(serde_json::json!({
                    "metadata": {"name": name, "namespace": "default", "annotations": annotations},
                    "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 6379}]},
                }))
                .expect("service"),
            )
        };
        let slice = |service: &str, namespace: &str, ip: &str| {
            Arc::new(
                serde_json::from_value::<EndpointSlice>(serde_json::json!({
                    "metadata": {"name": format!("{service}-{ip}"), "namespace": namespace,
                                 "labels": {"kubernetes.io/service-name": service}},
                    "addressType": "IPv4",
                    "ports": [{"port": 6379, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [ip]}],
                }))
                .expect("slice"),
            )
        };
        let services = [service("db", true), service("local-only", false)];
        let slices = [
            slice("db", "default", "10.210.0.5"),
            slice("db", "other", "10.210.0.6"),
            slice("local-only", "default", "10.210.0.7"),
        ];
        let state = global_services("cluster1", 101, &services, &slices);
        assert_eq!(
            state.keys().collect::<Vec<_>>(),
            ["cilium/state/services/v1/cluster1/default/db"]
        );
        let published = ClusterService::decode("k", state.values().next().expect("one").as_bytes())
            .expect("decodes");
        assert_eq!(
            published.backends.keys().collect::<Vec<_>>(),
            ["10.210.0.5"],
            "the slice of another namespace is not this service's"
        );
        assert_eq!(published.cluster_id, 101);
    }

    #[test]
    fn other_clusters_identities_and_endpoints_without_identity_are_left_out() {
        let (nodes, identities, mut endpoints) = seed_objects();
        let mut cep = (*endpoints[0]).clone();
        cep.metadata.name = Some("no-identity".into());
        if let Some(status) = cep.status.as_mut() {
            status.identity = None;
        }
        endpoints.push(Arc::new(cep));
        // Cluster 3 owns 3<<16|256.., so identity 12928 is not its to mirror.
        let state = desired_state("c3", 3, &nodes, &identities, &endpoints);
        assert!(
            !state
                .keys()
                .any(|k| k.starts_with("cilium/state/identities/")),
            "{state:#?}"
        );
        assert_eq!(
            state
                .keys()
                .filter(|k| k.starts_with("cilium/state/ip/v1/default/"))
                .count(),
            1
        );
    }
}
