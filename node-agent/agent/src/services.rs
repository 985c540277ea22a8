//! The service list (`cilium service list`) and the node's load-balancing table: every
//! Service of this cluster with a cluster IP, its backends from its EndpointSlices and, for a
//! global service, the backends every remote cluster that shares the same namespace/name
//! publishes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use cilium_agent_api::{BackendModel, ServiceAddress, ServiceModel};
use cilium_datapath::lb::{BackendAddr, Frontend, LbTable, ServiceSpec};
use cilium_kvstore::ClusterService;
use cilium_kvstore::service::PortConfiguration;
use cilium_kvstore::service::{is_global, slices_of};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::clustermesh::RemoteCache;

/// Every (address, port) of an `ip → ports` map, sorted.
fn addresses(map: &BTreeMap<String, PortConfiguration>) -> Vec<ServiceAddress> {
    let mut out: Vec<ServiceAddress> = map
        .iter()
        .filter_map(|(ip, ports)| Some((ip.parse::<IpAddr>().ok()?, ports)))
        .flat_map(|(ip, ports)| {
            ports.values().map(move |port| ServiceAddress {
                ip,
                port: port.port,
                protocol: port.protocol.clone(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn backends(published: &ClusterService) -> impl Iterator<Item = BackendModel> + '_ {
    addresses(&published.backends)
        .into_iter()
        .map(|address| BackendModel {
            address,
            cluster: published.cluster.clone(),
        })
}

/// The addresses of the apiserver: the ready endpoints of the `default/kubernetes`
/// Service's EndpointSlices (what Cilium labels `reserved:kube-apiserver`).
pub fn kube_apiservers(slices: &[Arc<EndpointSlice>]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = slices
        .iter()
        .filter(|slice| {
            slice.metadata.namespace.as_deref() == Some("default")
                && slice
                    .labels()
                    .get(cilium_kvstore::service::SERVICE_NAME_LABEL)
                    .is_some_and(|name| name == "kubernetes")
        })
        .flat_map(|slice| &slice.endpoints)
        .filter(|endpoint| {
            endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true)
        })
        .flat_map(|endpoint| &endpoint.addresses)
        .filter_map(|address| address.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// This cluster's (namespace, name) of every global service.
pub fn local_global(services: &[Arc<Service>]) -> BTreeSet<(String, String)> {
    services
        .iter()
        .filter(|s| is_global(s))
        .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
        .collect()
}

/// A Service as this cluster publishes it (from `own`, its EndpointSlices), and the shared
/// publications of the remote clusters whose backends join it (only for a global service).
fn publications<'a>(
    cluster: &str,
    cluster_id: u8,
    service: &Service,
    own: &[&EndpointSlice],
    remote: &'a [Arc<RemoteCache>],
) -> (ClusterService, Vec<&'a ClusterService>) {
    let local = ClusterService::from_k8s(cluster, cluster_id, service, own);
    let shared = if is_global(service) {
        let key = format!(
            "{}/{}",
            service.namespace().unwrap_or_default(),
            service.name_any()
        );
        remote
            .iter()
            .filter_map(|cache| cache.services.get(&key))
            .filter(|published| published.shared)
            .collect()
    } else {
        Vec::new()
    };
    (local, shared)
}

/// The IP protocol number of a Kubernetes protocol the datapath balances (TCP, UDP; SCTP's
/// checksum cannot be patched in place, so SCTP services stay with kube-proxy).
fn balanced_protocol(protocol: &str) -> Option<u8> {
    cilium_policy::named::protocol_number(Some(protocol)).filter(|p| {
        [
            cilium_datapath::policy::PROTO_TCP,
            cilium_datapath::policy::PROTO_UDP,
        ]
        .contains(p)
    })
}

/// `sessionAffinity: ClientIP`'s timeout (Kubernetes' default: 3 hours), if set.
fn affinity_timeout(service: &Service) -> Option<u32> {
    let spec = service.spec.as_ref()?;
    (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10_800)
    })
}

/// The endpoints of `own` (a service's EndpointSlices) that are terminating but still
/// serving (Kubernetes' `serving` and `terminating` conditions), by port name: they keep
/// their connections.
fn terminating(own: &[&EndpointSlice]) -> BTreeMap<String, Vec<BackendAddr>> {
    let mut out: BTreeMap<String, Vec<BackendAddr>> = BTreeMap::new();
    for slice in own {
        let draining = slice.endpoints.iter().filter(|e| {
            e.conditions.as_ref().is_some_and(|c| {
                c.terminating == Some(true) && c.serving == Some(true) && c.ready != Some(true)
            })
        });
        for endpoint in draining {
            for address in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                for port in slice.ports.iter().flatten() {
                    let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                        continue;
                    };
                    out.entry(port.name.clone().unwrap_or_default())
                        .or_default()
                        .push(BackendAddr {
                            ip: address,
                            port: number,
                        });
                }
            }
        }
    }
    out
}

/// What the node balances: each cluster IP × service port (TCP and UDP) over the ready
/// backends of the same port name, a global service's shared remote backends included;
/// terminating local backends keep their connections.
pub fn lb_table(
    cluster: &str,
    cluster_id: u8,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    remote: &[Arc<RemoteCache>],
) -> LbTable {
    let mut table = LbTable::default();
    for service in services {
        let own = slices_of(service, slices.iter().map(Arc::as_ref));
        let (local, shared) = publications(cluster, cluster_id, service, &own, remote);
        let affinity_timeout_s = affinity_timeout(service);
        let draining = terminating(&own);
        for (ip, ports) in &local.frontends {
            let Ok(ip) = ip.parse::<IpAddr>() else {
                continue;
            };
            for (name, port) in ports {
                let Some(protocol) = balanced_protocol(&port.protocol) else {
                    continue;
                };
                let backends = std::iter::once(&local)
                    .chain(shared.iter().copied())
                    .flat_map(|published| &published.backends)
                    .filter_map(|(backend_ip, backend_ports)| {
                        let target = backend_ports.get(name)?;
                        (target.protocol == port.protocol).then_some(BackendAddr {
                            ip: backend_ip.parse().ok()?,
                            port: target.port,
                        })
                    })
                    .collect();
                let frontend = Frontend {
                    ip,
                    port: port.port,
                    protocol,
                };
                let spec = ServiceSpec {
                    backends,
                    terminating: draining.get(name).into_iter().flatten().copied().collect(),
                    affinity_timeout_s,
                };
                table.services.insert(frontend, spec);
            }
        }
    }
    table
}

/// Every Service with a frontend, numbered from 1 in namespace/name order.
pub fn service_list(
    cluster: &str,
    cluster_id: u8,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    remote: &[Arc<RemoteCache>],
) -> Vec<ServiceModel> {
    let mut sorted: Vec<&Arc<Service>> = services.iter().collect();
    sorted.sort_by_key(|s| (s.namespace(), s.name_any()));
    let mut models = Vec::new();
    for service in sorted {
        let (namespace, name) = (service.namespace().unwrap_or_default(), service.name_any());
        let own = slices_of(service, slices.iter().map(Arc::as_ref));
        let (local, shared) = publications(cluster, cluster_id, service, &own, remote);
        let frontends = addresses(&local.frontends);
        if frontends.is_empty() {
            continue;
        }
        let global = is_global(service);
        let mut all_backends: Vec<BackendModel> = backends(&local).collect();
        for published in shared {
            all_backends.extend(backends(published));
        }
        models.push(ServiceModel {
            id: u32::try_from(models.len() + 1).unwrap_or(u32::MAX),
            namespace,
            name,
            service_type: service
                .spec
                .as_ref()
                .and_then(|s| s.type_.clone())
                .unwrap_or_else(|| "ClusterIP".into()),
            global,
            frontends,
            backends: all_backends,
        });
    }
    models
}

#[cfg(test)]
mod tests {
    use cilium_kvstore::keys;

    use super::*;

    fn service(name: &str, global: bool) -> Arc<Service> {
        let annotations = global.then(|| serde_json::json!({"io.cilium/global-service": "true"}));
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "default", "annotations": annotations},
                "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "redis", "port": 6379}]},
            }))
            .expect("service"),
        )
    }

    fn slice(service: &str, ip: &str) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{service}-1"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip]}],
            }))
            .expect("slice"),
        )
    }

    fn remote_with(service: &str, ip: &str, shared: bool) -> Arc<RemoteCache> {
        let mut cache = RemoteCache::new("cluster2", 102);
        let mut published = ClusterService::from_k8s(
            "cluster2",
            102,
            &service_ref(service),
            &[slice(service, ip).as_ref()],
        );
        published.shared = shared;
        cache.put(
            &keys::service_key("cluster2", "default", service),
            published.encode().as_bytes(),
        );
        Arc::new(cache)
    }

    fn service_ref(name: &str) -> Service {
        (*service(name, true)).clone()
    }

    #[test]
    fn the_apiserver_is_the_kubernetes_services_ready_endpoints() {
        let mut not_ready = (*slice("kubernetes", "192.168.60.13")).clone();
        not_ready.metadata.name = Some("kubernetes-2".into());
        not_ready.endpoints[0].conditions = Some(Default::default());
        if let Some(c) = not_ready.endpoints[0].conditions.as_mut() {
            c.ready = Some(false);
        }
        let slices = [
            slice("kubernetes", "192.168.60.12"),
            slice("db", "10.210.0.5"),
            Arc::new(not_ready),
        ];
        assert_eq!(
            kube_apiservers(&slices),
            vec!["192.168.60.12".parse::<IpAddr>().expect("ip")]
        );
    }

    #[test]
    fn the_lb_table_maps_each_frontend_port_to_its_backends_port() {
        let service: Arc<Service> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.30", "sessionAffinity": "ClientIP", "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "sctp", "port": 9, "protocol": "SCTP"}]},
            }))
            .expect("service"),
        );
        let slice: Arc<EndpointSlice> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-1", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "dns", "port": 5353, "protocol": "UDP"}],
                "endpoints": [{"addresses": ["10.210.0.7"]},
                              {"addresses": ["10.210.0.8"], "conditions": {"ready": false}},
                              {"addresses": ["10.210.0.9"], "conditions":
                                  {"ready": false, "serving": true, "terminating": true}}],
            }))
            .expect("slice"),
        );
        let table = lb_table("cluster1", 1, &[service], &[slice], &[]);
        let ip: IpAddr = "10.96.0.30".parse().expect("ip");
        let backend: IpAddr = "10.210.0.7".parse().expect("ip");
        let http = &table.services[&Frontend {
            ip,
            port: 80,
            protocol: 6,
        }];
        assert_eq!(
            http.backends.iter().copied().collect::<Vec<_>>(),
            [BackendAddr {
                ip: backend,
                port: 8080
            }],
            "the ready endpoint only, at the target port"
        );
        assert_eq!(http.affinity_timeout_s, Some(10_800));
        assert_eq!(
            http.terminating.iter().copied().collect::<Vec<_>>(),
            [BackendAddr {
                ip: "10.210.0.9".parse().expect("ip"),
                port: 8080
            }],
            "the terminating endpoint keeps its connections"
        );
        let dns = &table.services[&Frontend {
            ip,
            port: 53,
            protocol: 17,
        }];
        assert_eq!(
            dns.backends.iter().map(|b| b.port).collect::<Vec<_>>(),
            [5353]
        );
        assert_eq!(table.services.len(), 2, "SCTP is left to kube-proxy");
    }

    #[test]
    fn global_services_get_the_backends_of_every_cluster() {
        let services = [service("db", true), service("web", false)];
        let slices = [slice("db", "10.210.0.5"), slice("web", "10.210.0.9")];
        let remote = [
            remote_with("db", "10.211.0.5", true),
            remote_with("web", "10.211.0.9", true),
        ];
        let list = service_list("cluster1", 101, &services, &slices, &remote);
        assert_eq!(list.len(), 2);
        let db = &list[0];
        assert!(db.global);
        assert_eq!(db.frontends[0].to_string(), "10.96.0.20:6379/TCP");
        let backends: Vec<(String, &str)> = db
            .backends
            .iter()
            .map(|b| (b.address.to_string(), b.cluster.as_str()))
            .collect();
        assert_eq!(
            backends,
            [
                ("10.210.0.5:6379/TCP".to_owned(), "cluster1"),
                ("10.211.0.5:6379/TCP".to_owned(), "cluster2")
            ]
        );
        assert_eq!(list[1].backends.len(), 1, "web is not global here");
        // (The fixture gives both services one cluster IP: the db alone.)
        let table = lb_table("cluster1", 101, &services[..1], &slices, &remote);
        let db = Frontend {
            ip: "10.96.0.20".parse().expect("ip"),
            port: 6379,
            protocol: 6,
        };
        assert_eq!(
            table.services[&db].backends.len(),
            2,
            "both clusters' db backends"
        );
        let unshared = [remote_with("db", "10.211.0.5", false)];
        let list = service_list("cluster1", 101, &services, &slices, &unshared);
        assert_eq!(list[0].backends.len(), 1, "cluster2 does not share its db");
        assert_eq!(local_global(&services).len(), 1);
    }
}
