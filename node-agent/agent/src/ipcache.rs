//! The ipcache the datapath should hold: every endpoint IP of the cluster with its identity
//! and node, every node IP as `host` (this node) or `remote-node`, health IPs as `health`,
//! the endpoints and nodes of the mesh's remote clusters, and `world` for everything else.
//! This cluster's entries win over a remote cluster's, and a remote cluster gets no entry
//! inside this cluster's PodCIDRs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cilium_crds::{CiliumEndpoint, CiliumNode};
use cilium_datapath::IpcacheEntry;
use cilium_identity::ReservedIdentity;
use ipnet::IpNet;

use crate::clustermesh::RemoteCache;
use crate::endpoints::EndpointRecord;
use crate::routes::{overlaps, pod_cidrs};

fn entry(identity: u32, node: Option<IpAddr>) -> IpcacheEntry {
    IpcacheEntry {
        identity,
        tunnel_endpoint: match node {
            Some(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        },
    }
}

fn reserved(identity: ReservedIdentity) -> IpcacheEntry {
    entry(identity.id().0, None)
}

/// What the ipcache should hold. `local_node` names this node's CiliumNode; `local` are this
/// node's endpoints, which win over what CiliumEndpoints say (those lag behind);
/// `apiservers` are the `kubernetes` Service's endpoints: those on another node get
/// `kube-apiserver` (7), as in Cilium (this node's stay `host`, labelled in the policy
/// engine; one outside the cluster stays what it is, narrower than Cilium's labelled CIDR).
pub fn desired<'a>(
    local_node: &str,
    local_node_ip: IpAddr,
    nodes: &[&'a CiliumNode],
    endpoints: impl IntoIterator<Item = &'a CiliumEndpoint>,
    local: impl IntoIterator<Item = &'a EndpointRecord>,
    remote: &[&RemoteCache],
    apiservers: &[IpAddr],
) -> BTreeMap<IpNet, IpcacheEntry> {
    let mut wanted = BTreeMap::new();
    for world in ["0.0.0.0/0", "::/0"] {
        if let Ok(prefix) = world.parse::<IpNet>() {
            wanted.insert(prefix, reserved(ReservedIdentity::World));
        }
    }
    // Remote clusters first: whatever this cluster says of an address overwrites them.
    let local_cidrs: Vec<IpNet> = nodes.iter().flat_map(|n| pod_cidrs(n)).collect();
    for cluster in remote {
        remote_entries(cluster, &local_cidrs, &mut wanted);
    }
    for node in nodes.iter().copied() {
        let is_local = node.metadata.name.as_deref() == Some(local_node);
        let identity = if is_local {
            ReservedIdentity::Host
        } else {
            ReservedIdentity::RemoteNode
        };
        for address in node.spec.addresses.iter().flatten() {
            if let Ok(ip) = address.ip.parse::<IpAddr>() {
                wanted.insert(IpNet::from(ip), reserved(identity));
            }
        }
        let health = node.spec.health.iter();
        for ip in health.flat_map(|h| [h.ipv4.as_deref(), h.ipv6.as_deref()]) {
            if let Some(Ok(ip)) = ip.map(str::parse::<IpAddr>) {
                wanted.insert(IpNet::from(ip), reserved(ReservedIdentity::Health));
            }
        }
    }
    let remote_node = ReservedIdentity::RemoteNode.id().0;
    for ip in apiservers {
        if let Some(entry) = wanted.get_mut(&IpNet::from(*ip))
            && entry.identity == remote_node
        {
            entry.identity = ReservedIdentity::KubeApiserver.id().0;
        }
    }
    for cep in endpoints {
        let Some(status) = cep.status.as_ref() else {
            continue;
        };
        let (Some(identity), Some(networking)) = (status.identity.as_ref(), &status.networking)
        else {
            continue;
        };
        let Ok(identity) = u32::try_from(identity.id) else {
            continue;
        };
        let node = networking.node.as_deref().and_then(|n| n.parse().ok());
        if node == Some(local_node_ip) {
            continue;
        }
        let ips = networking
            .addressing
            .iter()
            .flat_map(|pair| [pair.ipv4.as_deref(), pair.ipv6.as_deref()])
            .flatten()
            .filter_map(|ip| ip.parse::<IpAddr>().ok());
        for ip in ips {
            wanted.insert(IpNet::from(ip), entry(identity, node));
        }
    }
    for record in local {
        wanted.insert(
            IpNet::from(IpAddr::V4(record.ipv4)),
            entry(record.identity, Some(local_node_ip)),
        );
    }
    wanted
}

/// A remote cluster's nodes (`remote-node`, health IPs `health`) and endpoints (their
/// identity, via their node), outside `local_cidrs`.
fn remote_entries(
    cluster: &RemoteCache,
    local_cidrs: &[IpNet],
    wanted: &mut BTreeMap<IpNet, IpcacheEntry>,
) {
    let mut put = |ip: IpAddr, entry: IpcacheEntry| {
        let prefix = IpNet::from(ip);
        if !overlaps(&prefix, local_cidrs) {
            wanted.insert(prefix, entry);
        }
    };
    for node in cluster.nodes.values() {
        for address in &node.ip_addresses {
            if let Ok(ip) = address.ip.parse::<IpAddr>() {
                put(ip, reserved(ReservedIdentity::RemoteNode));
            }
        }
        if let Ok(ip) = node.ipv4_health_ip.parse::<IpAddr>() {
            put(ip, reserved(ReservedIdentity::Health));
        }
    }
    for pair in cluster.ips.values() {
        let (Ok(ip), host) = (pair.ip.parse::<IpAddr>(), pair.host_ip.parse().ok()) else {
            continue;
        };
        put(ip, entry(pair.id, host));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use cilium_crds::endpoint::{
        AddressPair, EndpointIdentity, EndpointNetworking, EndpointStatus,
    };
    use cilium_crds::node::{HealthAddressing, NodeAddress, NodeSpec};

    use super::*;

    pub(crate) fn cilium_node(
        name: &str,
        internal: &str,
        router: &str,
        health: &str,
    ) -> CiliumNode {
        let address = |type_: &str, ip: &str| NodeAddress {
            type_: type_.into(),
            ip: ip.into(),
        };
        CiliumNode::new(
            name,
            NodeSpec {
                addresses: Some(vec![
                    address("InternalIP", internal),
                    address("CiliumInternalIP", router),
                ]),
                health: Some(HealthAddressing {
                    ipv4: Some(health.into()),
                    ipv6: None,
                }),
                ..Default::default()
            },
        )
    }

    fn cep(name: &str, ip: &str, node: &str, identity: Option<i64>) -> CiliumEndpoint {
        let mut cep = CiliumEndpoint::new(name, Default::default());
        cep.status = Some(EndpointStatus {
            identity: identity.map(|id| EndpointIdentity { id, labels: None }),
            networking: Some(EndpointNetworking {
                addressing: vec![AddressPair {
                    ipv4: Some(ip.into()),
                    ipv6: None,
                }],
                node: Some(node.into()),
            }),
            ..Default::default()
        });
        cep
    }

    fn net(text: &str) -> IpNet {
        text.parse().expect("prefix")
    }

    /// Cilium's `kube-apiserver` entity: the `kubernetes` Service's endpoint on another node
    /// is identity 7; on this node it stays `host`; outside the cluster it is not labelled.
    #[test]
    fn apiserver_endpoints_on_other_nodes_are_kube_apiserver() {
        let nodes = [
            cilium_node("n1", "192.168.60.11", "10.0.1.1", "10.0.1.2"),
            cilium_node("n2", "192.168.60.12", "10.0.2.1", "10.0.2.2"),
        ];
        let node_ip: IpAddr = "192.168.60.11".parse().expect("ip");
        let apiservers: Vec<IpAddr> = ["192.168.60.11", "192.168.60.12", "203.0.113.7"]
            .iter()
            .map(|ip| ip.parse().expect("ip"))
            .collect();
        let wanted = desired(
            "n1",
            node_ip,
            &[&nodes[0], &nodes[1]],
            [],
            [],
            &[],
            &apiservers,
        );
        let identity = |p: &str| wanted.get(&net(p)).map(|e| e.identity);
        assert_eq!(identity("192.168.60.12/32"), Some(7));
        assert_eq!(identity("192.168.60.11/32"), Some(1));
        assert_eq!(
            identity("203.0.113.7/32"),
            None,
            "world, as any outside address"
        );
    }

    #[test]
    fn the_whole_cluster_with_reserved_identities() {
        let nodes = [
            cilium_node("n1", "192.168.60.11", "10.0.1.1", "10.0.1.2"),
            cilium_node("n2", "192.168.60.12", "10.0.2.1", "10.0.2.2"),
        ];
        let ceps = [
            cep("remote", "10.0.2.5", "192.168.60.12", Some(40_000)),
            cep("pending", "10.0.2.6", "192.168.60.12", None),
            cep("mine-but-stale", "10.0.1.9", "192.168.60.11", Some(41_000)),
            cep("garbage", "not-an-ip", "192.168.60.12", Some(42_000)),
        ];
        let mut local = crate::endpoints::tests::record(3, "a", [10, 0, 1, 3]);
        local.identity = 43_000;
        let node_ip: IpAddr = "192.168.60.11".parse().expect("ip");
        let wanted = desired(
            "n1",
            node_ip,
            &[&nodes[0], &nodes[1]],
            &ceps,
            [&local],
            &[],
            &[],
        );
        let identity = |p: &str| wanted.get(&net(p)).map(|e| e.identity);
        assert_eq!(identity("0.0.0.0/0"), Some(2));
        assert_eq!(identity("::/0"), Some(2));
        assert_eq!(identity("192.168.60.11/32"), Some(1), "this node is host");
        assert_eq!(identity("10.0.1.1/32"), Some(1), "so is its cilium_host");
        assert_eq!(identity("192.168.60.12/32"), Some(6));
        assert_eq!(identity("10.0.2.1/32"), Some(6));
        assert_eq!(identity("10.0.2.2/32"), Some(4), "health");
        assert_eq!(identity("10.0.2.5/32"), Some(40_000));
        assert_eq!(
            wanted
                .get(&net("10.0.2.5/32"))
                .and_then(|e| e.tunnel_endpoint),
            Some("192.168.60.12".parse().expect("ip")),
            "the node it runs on"
        );
        assert_eq!(identity("10.0.2.6/32"), None, "no identity yet");
        assert_eq!(
            identity("10.0.1.9/32"),
            None,
            "this node's own endpoints come from the agent"
        );
        assert_eq!(identity("10.0.1.3/32"), Some(43_000));
        assert_eq!(
            wanted.len(),
            10,
            "2 world, 3 per node, 1 remote and 1 local endpoint"
        );
    }

    #[test]
    fn remote_clusters_add_their_endpoints_but_never_override_local_ones() {
        let mut node = cilium_node("n1", "192.168.60.11", "10.210.0.1", "10.210.0.2");
        node.spec.ipam = Some(cilium_crds::node::IpamSpec {
            pod_cidrs: Some(vec!["10.210.0.0/22".into()]),
            pool: None,
        });
        let node_ip: IpAddr = "192.168.60.11".parse().expect("ip");
        let mut cluster2 = RemoteCache::new("cluster2", 102);
        let c2 = 102 << 16;
        for (ip, id) in [("10.211.0.5", c2 + 300), ("10.210.0.7", c2 + 301)] {
            let key = cilium_kvstore::keys::ip_key(ip);
            cluster2.put(&key, &crate::clustermesh::cache::tests::pair(ip, id));
        }
        let remote_node = cilium_kvstore::KvNode::from_cilium_node(
            "cluster2",
            102,
            &cilium_node("c2n1", "192.168.60.11", "10.211.0.1", "10.211.0.2"),
        );
        cluster2.nodes.insert("c2n1".into(), remote_node);
        let wanted = desired("n1", node_ip, &[&node], [], [], &[&cluster2], &[]);
        let get = |p: &str| wanted.get(&net(p)).copied();
        let employee = get("10.211.0.5/32").expect("the remote endpoint");
        assert_eq!(employee.identity, c2 + 300);
        assert_eq!(
            employee.tunnel_endpoint,
            Some("192.168.60.21".parse().expect("ip"))
        );
        assert_eq!(
            get("10.211.0.1/32").map(|e| e.identity),
            Some(6),
            "remote-node"
        );
        assert_eq!(get("10.211.0.2/32").map(|e| e.identity), Some(4), "health");
        assert_eq!(get("10.210.0.7/32"), None, "inside this cluster's PodCIDR");
        assert_eq!(
            get("192.168.60.11/32").map(|e| e.identity),
            Some(1),
            "a remote node claiming this node's address stays host"
        );
    }
}
