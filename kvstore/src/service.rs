//! `cilium/state/services/v1/<cluster>/<namespace>/<name>`: Cilium's `ClusterService`, the
//! frontends and backends of a global service as its own cluster sees them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// The annotation that shares a Service with the clusters of the mesh.
pub const GLOBAL_SERVICE_ANNOTATION: &str = "io.cilium/global-service";
/// Whether a global service takes backends from other clusters (default true).
pub const SHARED_SERVICE_ANNOTATION: &str = "io.cilium/shared-service";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Cilium's `loadbalancer.L4Addr`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct L4Addr {
    #[serde(rename = "Protocol")]
    pub protocol: String,
    #[serde(rename = "Port")]
    pub port: u16,
}

/// Port name → protocol and port (Cilium's `PortConfiguration`).
pub type PortConfiguration = BTreeMap<String, L4Addr>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterService {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    /// Frontend IP → its ports.
    pub frontends: BTreeMap<String, PortConfiguration>,
    /// Backend IP → its ports.
    pub backends: BTreeMap<String, PortConfiguration>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub include_external: bool,
    #[serde(default)]
    pub shared: bool,
    #[serde(rename = "clusterID", default)]
    pub cluster_id: u32,
}

fn annotation_is_true(service: &Service, key: &str) -> Option<bool> {
    let value = service.metadata.annotations.as_ref()?.get(key)?;
    Some(value.eq_ignore_ascii_case("true"))
}

/// Whether `service` is annotated `io.cilium/global-service: "true"`.
pub fn is_global(service: &Service) -> bool {
    annotation_is_true(service, GLOBAL_SERVICE_ANNOTATION) == Some(true)
}

/// A port of a Service or an EndpointSlice as (name, L4Addr); TCP when no protocol is
/// given, as in Kubernetes.
fn named_port(
    name: &Option<String>,
    protocol: &Option<String>,
    port: Option<i32>,
) -> Option<(String, L4Addr)> {
    Some((
        name.clone().unwrap_or_default(),
        L4Addr {
            protocol: protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: u16::try_from(port?).ok()?,
        },
    ))
}

/// The EndpointSlices of `service`: in its namespace, labelled with its name.
pub fn slices_of<'a>(
    service: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<&'a EndpointSlice> {
    let namespace = service.metadata.namespace.as_deref();
    let name = service.metadata.name.as_deref();
    slices
        .into_iter()
        .filter(|slice| {
            slice.metadata.namespace.as_deref() == namespace
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == name
        })
        .collect()
}

impl ClusterService {
    /// What cluster `cluster` publishes of a global `service`: its cluster IPs and ports,
    /// and the ready addresses of `slices` (those labelled with the service's name).
    pub fn from_k8s(
        cluster: &str,
        cluster_id: u8,
        service: &Service,
        slices: &[&EndpointSlice],
    ) -> Self {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let spec = service.spec.clone().unwrap_or_default();
        let mut frontends = BTreeMap::new();
        let ports: PortConfiguration = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|port| named_port(&port.name, &port.protocol, Some(port.port)))
            .collect();
        let cluster_ips = spec.cluster_ips.clone().unwrap_or_default();
        for ip in cluster_ips.iter().chain(spec.cluster_ip.iter()) {
            if ip.parse::<IpAddr>().is_ok() {
                frontends.insert(ip.clone(), ports.clone());
            }
        }
        let mut backends: BTreeMap<String, PortConfiguration> = BTreeMap::new();
        for slice in slices {
            let slice_ports: PortConfiguration = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|port| named_port(&port.name, &port.protocol, port.port))
                .collect();
            for endpoint in &slice.endpoints {
                // Kubernetes: a missing `ready` means ready.
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if address.parse::<IpAddr>().is_ok() {
                        backends
                            .entry(address.clone())
                            .or_default()
                            .extend(slice_ports.clone());
                    }
                }
            }
        }
        Self {
            cluster: cluster.to_owned(),
            namespace,
            name,
            frontends,
            backends,
            labels: service.metadata.labels.clone().unwrap_or_default(),
            selector: spec.selector.unwrap_or_default(),
            include_external: true,
            shared: annotation_is_true(service, SHARED_SERVICE_ANNOTATION).unwrap_or(true),
            cluster_id: u32::from(cluster_id),
        }
    }

    pub fn encode(&self) -> String {
        // Strings, numbers and maps of them: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A value read from another cluster: it must parse and its addresses must be IPs.
    pub fn decode(key: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let service: Self = serde_json::from_slice(value).map_err(|e| DecodeError::new(key, e))?;
        for ip in service.frontends.keys().chain(service.backends.keys()) {
            ip.parse::<IpAddr>()
                .map_err(|e| DecodeError::new(key, format!("address {ip:?}: {e}")))?;
        }
        Ok(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "protected-db", "namespace": "default",
                "annotations": {"io.cilium/global-service": "true"},
            },
            "spec": {
                "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                "selector": {"app": "protected-db"},
                "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}],
            },
        }))
        .expect("service")
    }

    fn slice(addresses: &[(&str, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "protected-db-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "protected-db"}},
            "addressType": "IPv4",
            "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}],
            "endpoints": addresses.iter().map(|(ip, ready)| serde_json::json!({
                "addresses": [ip], "conditions": {"ready": ready},
            })).collect::<Vec<_>>(),
        }))
        .expect("slice")
    }

    #[test]
    fn a_global_service_is_published_in_cilium_s_shape() {
        let service = service();
        assert!(is_global(&service));
        let slice = slice(&[("10.210.0.5", Some(true)), ("10.210.0.6", Some(false))]);
        let published = ClusterService::from_k8s("cluster1", 101, &service, &[&slice]);
        let json: serde_json::Value = serde_json::from_str(&published.encode()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "cluster": "cluster1", "namespace": "default", "name": "protected-db",
                "frontends": {"10.96.0.20": {"redis": {"Protocol": "TCP", "Port": 6379}}},
                "backends": {"10.210.0.5": {"redis": {"Protocol": "TCP", "Port": 6379}}},
                "labels": {}, "selector": {"app": "protected-db"},
                "includeExternal": true, "shared": true, "clusterID": 101,
            }),
            "not-ready backends are left out"
        );
        let key = "cilium/state/services/v1/cluster1/default/protected-db";
        assert_eq!(
            ClusterService::decode(key, published.encode().as_bytes()).expect("decodes"),
            published
        );
        let mut plain = service.clone();
        plain.metadata.annotations = None;
        assert!(!is_global(&plain));
    }

    #[test]
    fn values_that_do_not_parse_are_refused_with_the_key() {
        let key = "cilium/state/services/v1/c2/default/x";
        let err = ClusterService::decode(key, b"{\"cluster\":1}").expect_err("bad");
        assert!(err.to_string().contains(key), "{err}");
        let bad_ip = r#"{"cluster":"c2","namespace":"default","name":"x","frontends":{},"backends":{"not-an-ip":{}}}"#;
        let err = ClusterService::decode(key, bad_ip.as_bytes()).expect_err("bad ip");
        assert!(err.to_string().contains("not-an-ip"), "{err}");
    }
}
