//! Registering the node: its CiliumNode with the Node's InternalIP, the PodCIDRs the
//! operator assigns, then `cilium_host` with the router address and the CiliumNode's
//! CiliumInternalIP and health address.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cilium_crds::CiliumNode;
use cilium_crds::node::{HealthAddressing, NodeAddress};
use cilium_netdev::Netlink;
use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::agent::LocalNode;

/// The device holding the router address and its veth peer (Cilium's names).
pub const HOST_DEVICE: &str = "cilium_host";
pub const HOST_PEER: &str = "cilium_net";

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("Node {node} has no InternalIP or ExternalIP in status.addresses")]
    NoNodeIp { node: String },
    #[error("CiliumNode {node} has no usable IPv4 PodCIDR (spec.ipam.podCIDRs: {cidrs:?})")]
    NoIpv4Cidr { node: String, cidrs: Vec<String> },
    #[error("PodCIDR {0} is too small for the router and health addresses")]
    CidrTooSmall(Ipv4Net),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Wait(#[from] kube::runtime::wait::Error),
    #[error(transparent)]
    Netdev(#[from] cilium_netdev::Error),
}

/// The Node's InternalIP (ExternalIP when it has none).
pub fn node_ip(node: &Node) -> Option<IpAddr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    ["InternalIP", "ExternalIP"].iter().find_map(|kind| {
        addresses
            .iter()
            .filter(|a| a.type_ == *kind)
            .find_map(|a| a.address.parse().ok())
    })
}

/// The first IPv4 block of `cidrs`, and the node's router and health addresses in it (its
/// first two usable addresses, so they are the same after every restart).
pub fn plan_addresses(cidrs: &[String]) -> Option<(Vec<Ipv4Net>, Ipv4Addr, Ipv4Addr)> {
    let v4: Vec<Ipv4Net> = cidrs
        .iter()
        .filter_map(|c| match c.parse::<IpNet>() {
            Ok(IpNet::V4(net)) => Some(net.trunc()),
            _ => None,
        })
        .collect();
    let first = v4.first()?;
    let mut hosts = first.hosts().filter(|ip| *ip != first.network());
    let router = hosts.next()?;
    let health = hosts.next().filter(|ip| *ip != first.broadcast())?;
    Some((v4, router, health))
}

pub struct Registration<'a> {
    pub client: &'a Client,
    pub node_name: &'a str,
    pub cluster_name: &'a str,
    pub cluster_id: u8,
}

impl Registration<'_> {
    pub async fn run(&self) -> Result<LocalNode, RegisterError> {
        let node = self.wait_for_node().await?;
        let ip = node_ip(&node).ok_or_else(|| RegisterError::NoNodeIp {
            node: self.node_name.to_owned(),
        })?;
        let api: Api<CiliumNode> = Api::all(self.client.clone());
        let internal = NodeAddress {
            type_: "InternalIP".into(),
            ip: ip.to_string(),
        };
        self.ensure_cilium_node(&api, &node, vec![internal.clone()], None)
            .await?;
        tracing::info!(node = self.node_name, %ip, "waiting for PodCIDRs from the operator");
        let name = self.node_name.to_owned();
        let cn = await_condition(api.clone(), &name, |cn: Option<&CiliumNode>| {
            cn.and_then(|cn| cn.spec.ipam.as_ref())
                .and_then(|i| i.pod_cidrs.as_ref())
                .is_some_and(|c| !c.is_empty())
        })
        .await?;
        let cidrs = cn
            .and_then(|cn| cn.spec.ipam)
            .and_then(|i| i.pod_cidrs)
            .unwrap_or_default();
        let (v4, router_ip, health_ip) =
            plan_addresses(&cidrs).ok_or_else(|| RegisterError::NoIpv4Cidr {
                node: name.clone(),
                cidrs: cidrs.clone(),
            })?;

        let netlink = Netlink::connect()?;
        let host = netlink.ensure_veth_pair(HOST_DEVICE, HOST_PEER).await?;
        netlink
            .ensure_address(host.index, IpNet::from(IpAddr::V4(router_ip)))
            .await?;

        let router = NodeAddress {
            type_: "CiliumInternalIP".into(),
            ip: router_ip.to_string(),
        };
        let health = HealthAddressing {
            ipv4: Some(health_ip.to_string()),
            ipv6: None,
        };
        self.ensure_cilium_node(&api, &node, vec![internal, router], Some(health))
            .await?;
        tracing::info!(node = %name, cidrs = ?cidrs, %router_ip, %health_ip, "node registered");
        Ok(LocalNode {
            name,
            cluster_name: self.cluster_name.to_owned(),
            cluster_id: self.cluster_id,
            ip,
            cidrs: v4,
            router_ip,
            health_ip,
        })
    }

    /// The Node object, once it exists (the kubelet registers it; the agent does not).
    async fn wait_for_node(&self) -> Result<Node, RegisterError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut reported = false;
        loop {
            match api.get_opt(self.node_name).await {
                Ok(Some(node)) => return Ok(node),
                Ok(None) if !reported => {
                    tracing::warn!(
                        node = self.node_name,
                        "Node object not found; waiting for it"
                    );
                    reported = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(node = self.node_name, error = %e, "reading the Node failed; retrying")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Creates the CiliumNode (owned by the Node) or sets its addresses and health IPs,
    /// leaving the operator's fields (`spec.ipam`) alone.
    async fn ensure_cilium_node(
        &self,
        api: &Api<CiliumNode>,
        node: &Node,
        addresses: Vec<NodeAddress>,
        health: Option<HealthAddressing>,
    ) -> Result<(), RegisterError> {
        let mut cn = CiliumNode::new(self.node_name, Default::default());
        cn.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.name_any(),
            uid: node.uid().unwrap_or_default(),
            ..Default::default()
        }]);
        cn.spec.addresses = Some(addresses.clone());
        cn.spec.health = health.clone();
        match api.create(&PostParams::default(), &cn).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let mut spec = json!({ "addresses": addresses });
        if let Some(health) = health {
            spec["health"] = json!(health);
        }
        api.patch(
            self.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress as K8sAddress, NodeStatus};

    use super::*;

    #[test]
    fn router_and_health_are_the_first_addresses_of_the_first_ipv4_block() {
        let cidrs = vec![
            "fd00::/120".to_owned(),
            "10.0.7.0/24".to_owned(),
            "10.0.9.0/24".to_owned(),
        ];
        let (v4, router, health) = plan_addresses(&cidrs).expect("planned");
        assert_eq!(v4.len(), 2);
        assert_eq!(router, Ipv4Addr::new(10, 0, 7, 1));
        assert_eq!(health, Ipv4Addr::new(10, 0, 7, 2));
        assert!(plan_addresses(&["fd00::/120".to_owned()]).is_none());
        assert!(plan_addresses(&["10.0.0.0/31".to_owned()]).is_none());
        assert!(plan_addresses(&["garbage".to_owned()]).is_none());
    }

    #[test]
    fn the_node_ip_prefers_internal() {
        let address = |t: &str, a: &str| K8sAddress {
            type_: t.into(),
            address: a.into(),
        };
        let mut node = Node::default();
        assert_eq!(node_ip(&node), None);
        node.status = Some(NodeStatus {
            addresses: Some(vec![
                address("Hostname", "n1"),
                address("ExternalIP", "203.0.113.9"),
                address("InternalIP", "192.168.60.11"),
            ]),
            ..Default::default()
        });
        assert_eq!(node_ip(&node), Some("192.168.60.11".parse().expect("ip")));
    }
}
