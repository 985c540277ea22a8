//! Direct routing: a route to every other node's PodCIDRs via that node's InternalIP, for
//! the nodes of this cluster and of the remote clusters of the mesh.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cilium_crds::CiliumNode;
use cilium_kvstore::KvNode;
use cilium_netdev::Route;
use ipnet::IpNet;

/// The node's address of type `kind` (`InternalIP`, `CiliumInternalIP`, ...) in `family`
/// (v4 when `v6` is false).
pub fn node_address(node: &CiliumNode, kind: &str, v6: bool) -> Option<IpAddr> {
    node.spec
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == kind)
        .filter_map(|a| a.ip.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv6() == v6)
}

/// Routes this node needs to reach the pods of the others: each PodCIDR of another node via
/// its InternalIP of the same family. Blocks that overlap this node's own are left out (the
/// operator never hands out such; a bad object must not steal local traffic).
pub fn desired<'a>(
    local_node: &str,
    local_cidrs: &[IpNet],
    nodes: impl IntoIterator<Item = &'a CiliumNode>,
) -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(local_node) {
            continue;
        }
        for cidr in pod_cidrs(node) {
            let via = node_address(node, "InternalIP", matches!(cidr, IpNet::V6(_)));
            routes.extend(route(cidr, via, local_cidrs));
        }
    }
    routes
}

/// The PodCIDRs of a CiliumNode that parse.
pub fn pod_cidrs(node: &CiliumNode) -> impl Iterator<Item = IpNet> + '_ {
    let cidrs = node.spec.ipam.as_ref().and_then(|i| i.pod_cidrs.as_ref());
    cidrs
        .into_iter()
        .flatten()
        .filter_map(|cidr| cidr.parse::<IpNet>().ok())
        .map(|cidr| cidr.trunc())
}

/// Whether `cidr` overlaps one of `protected`.
pub fn overlaps(cidr: &IpNet, protected: &[IpNet]) -> bool {
    protected
        .iter()
        .any(|own| own.contains(cidr) || cidr.contains(own))
}

/// The route to `cidr` via `via`, unless it overlaps a `protected` block.
fn route(cidr: IpNet, via: Option<IpAddr>, protected: &[IpNet]) -> Option<Route> {
    match (overlaps(&cidr, protected), via) {
        (false, Some(gateway)) => Some(Route {
            destination: cidr,
            gateway: Some(gateway),
            device: None,
        }),
        _ => None,
    }
}

/// Routes to the PodCIDRs of remote clusters' nodes via their InternalIPs. `local_cidrs`
/// are every PodCIDR of this cluster: a remote cluster claiming one gets no route.
pub fn remote_desired<'a>(
    local_cidrs: &[IpNet],
    nodes: impl IntoIterator<Item = &'a KvNode>,
) -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    for node in nodes {
        let blocks = [&node.ipv4_alloc_cidr, &node.ipv6_alloc_cidr];
        for cidr in blocks.into_iter().flatten() {
            let Ok(cidr) = cidr.to_net() else {
                continue;
            };
            let cidr = cidr.trunc();
            let via = node
                .ip_addresses
                .iter()
                .filter(|a| a.kind == "InternalIP")
                .filter_map(|a| a.ip.parse::<IpAddr>().ok())
                .find(|ip| ip.is_ipv6() == matches!(cidr, IpNet::V6(_)));
            routes.extend(route(cidr, via, local_cidrs));
        }
    }
    routes
}

/// The routes to delete and to add to turn `current` (as the kernel lists them, with the
/// output device it resolved) into `wanted`. Routes are compared by destination and gateway
/// only, so a route the kernel reports with its device is not replaced on every pass.
pub fn changes(current: &[Route], wanted: &BTreeSet<Route>) -> (Vec<Route>, Vec<Route>) {
    let key = |r: &Route| (r.destination, r.gateway);
    let current_keys: BTreeSet<_> = current.iter().map(key).collect();
    let wanted_keys: BTreeSet<_> = wanted.iter().map(key).collect();
    let delete = current
        .iter()
        .filter(|r| !wanted_keys.contains(&key(r)))
        .copied()
        .collect();
    let add = wanted
        .iter()
        .filter(|r| !current_keys.contains(&key(r)))
        .copied()
        .collect();
    (delete, add)
}

#[cfg(test)]
mod tests {
    use cilium_crds::node::IpamSpec;

    use super::*;
    use crate::ipcache::tests::cilium_node;

    fn with_cidrs(mut node: CiliumNode, cidrs: &[&str]) -> CiliumNode {
        node.spec.ipam = Some(IpamSpec {
            pod_cidrs: Some(cidrs.iter().map(|c| (*c).to_owned()).collect()),
            pool: None,
        });
        node
    }

    #[test]
    fn a_route_per_other_nodes_block_via_its_internal_ip() {
        let nodes = [
            with_cidrs(
                cilium_node("n1", "192.168.60.11", "10.0.1.1", "10.0.1.2"),
                &["10.0.1.0/24"],
            ),
            with_cidrs(
                cilium_node("n2", "192.168.60.12", "10.0.2.1", "10.0.2.2"),
                &["10.0.2.0/24", "fd00:2::/120", "bogus"],
            ),
            with_cidrs(
                cilium_node("n3", "192.168.60.13", "10.0.3.1", "10.0.3.2"),
                &["10.0.1.128/25"],
            ),
            cilium_node("n4", "192.168.60.14", "10.0.4.1", "10.0.4.2"),
        ];
        let local: Vec<IpNet> = vec!["10.0.1.0/24".parse().expect("cidr")];
        let routes = desired("n1", &local, &nodes);
        let expected = Route {
            destination: "10.0.2.0/24".parse().expect("cidr"),
            gateway: Some("192.168.60.12".parse().expect("ip")),
            device: None,
        };
        assert_eq!(routes.iter().copied().collect::<Vec<_>>(), vec![expected]);

        // The kernel lists the route with the device it resolved: nothing to change.
        let listed = Route {
            device: Some(2),
            ..expected
        };
        assert_eq!(changes(&[listed], &routes), (vec![], vec![]));
        let stale = Route {
            destination: "10.0.9.0/24".parse().expect("cidr"),
            ..listed
        };
        assert_eq!(changes(&[stale], &routes), (vec![stale], vec![expected]));
    }

    fn remote_node(name: &str, ip: &str, cidr: &str) -> KvNode {
        let mut node = KvNode::from_cilium_node(
            "cluster2",
            102,
            &cilium_node(name, ip, "10.211.0.1", "10.211.0.2"),
        );
        node.ipv4_alloc_cidr = Some(cilium_kvstore::AllocCidr::from_net(
            &cidr.parse().expect("cidr"),
        ));
        node
    }

    #[test]
    fn remote_nodes_get_routes_unless_they_claim_local_blocks() {
        let local: Vec<IpNet> = vec!["10.210.0.0/22".parse().expect("cidr")];
        let nodes = [
            remote_node("a", "192.168.60.21", "10.211.0.0/22"),
            remote_node("b", "192.168.60.22", "10.210.0.0/24"),
        ];
        let routes = remote_desired(&local, &nodes);
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            vec![Route {
                destination: "10.211.0.0/22".parse().expect("cidr"),
                gateway: Some("192.168.60.21".parse().expect("ip")),
                device: None,
            }]
        );
    }
}
