//! `cilium/state/nodes/v1/<cluster>/<name>`: Cilium's `node.Node` as Go's encoding/json
//! writes it (field order, `IPv6AllocCIDR: null`, masks as base64 of their bytes).

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cilium_crds::CiliumNode;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// Where a node entry came from (Cilium's `source.Source`): agents announcing themselves
/// write `local`; a mirror of CiliumNode objects writes `custom-resource`, as Cilium's
/// clustermesh-apiserver does.
pub const SOURCE_LOCAL: &str = "local";
pub const SOURCE_CUSTOM_RESOURCE: &str = "custom-resource";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "IP")]
    pub ip: String,
}

/// A prefix as Go's `net.IPNet`: `{"IP":"10.6.6.0","Mask":"////AA=="}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocCidr {
    #[serde(rename = "IP")]
    pub ip: String,
    #[serde(rename = "Mask")]
    pub mask: String,
}

impl AllocCidr {
    pub fn from_net(net: &IpNet) -> Self {
        let mask = match net.netmask() {
            IpAddr::V4(m) => m.octets().to_vec(),
            IpAddr::V6(m) => m.octets().to_vec(),
        };
        Self {
            ip: net.network().to_string(),
            mask: STANDARD.encode(mask),
        }
    }

    pub fn to_net(&self) -> Result<IpNet, String> {
        let ip: IpAddr = self
            .ip
            .parse()
            .map_err(|e| format!("IP {:?}: {e}", self.ip))?;
        let bytes = STANDARD
            .decode(&self.mask)
            .map_err(|e| format!("Mask {:?}: {e}", self.mask))?;
        let expected = if ip.is_ipv4() { 4 } else { 16 };
        if bytes.len() != expected {
            return Err(format!(
                "Mask {:?} has {} bytes, {ip} needs {expected}",
                self.mask,
                bytes.len()
            ));
        }
        let ones: u32 = bytes.iter().map(|b| b.count_ones()).sum();
        let contiguous = bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |bit| b >> bit & 1 == 1))
            .skip_while(|set| *set)
            .all(|set| !set);
        if !contiguous {
            return Err(format!("Mask {:?} is not a prefix mask", self.mask));
        }
        let prefix = u8::try_from(ones).map_err(|e| e.to_string())?;
        IpNet::new(ip, prefix).map_err(|e| e.to_string())
    }
}

/// Cilium's node entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvNode {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Cluster")]
    pub cluster: String,
    #[serde(rename = "IPAddresses")]
    pub ip_addresses: Vec<NodeAddress>,
    #[serde(rename = "IPv4AllocCIDR")]
    pub ipv4_alloc_cidr: Option<AllocCidr>,
    #[serde(rename = "IPv6AllocCIDR")]
    pub ipv6_alloc_cidr: Option<AllocCidr>,
    #[serde(rename = "IPv4HealthIP")]
    pub ipv4_health_ip: String,
    #[serde(rename = "IPv6HealthIP")]
    pub ipv6_health_ip: String,
    #[serde(rename = "ClusterID")]
    pub cluster_id: u32,
    #[serde(rename = "Source")]
    pub source: String,
    #[serde(rename = "EncryptionKey")]
    pub encryption_key: u8,
}

impl KvNode {
    /// The entry of a CiliumNode, as a mirror of CiliumNode objects writes it (source
    /// `custom-resource`); addresses and CIDRs that do not parse are left out.
    pub fn from_cilium_node(cluster: &str, cluster_id: u8, cn: &CiliumNode) -> KvNode {
        let spec = &cn.spec;
        let pod_cidrs: Vec<IpNet> = spec
            .ipam
            .as_ref()
            .and_then(|i| i.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.parse().ok())
            .collect();
        let first = |v4: bool| {
            pod_cidrs
                .iter()
                .find(|c| matches!(c, IpNet::V4(_)) == v4)
                .map(AllocCidr::from_net)
        };
        let health = spec.health.as_ref();
        KvNode {
            name: cn.metadata.name.clone().unwrap_or_default(),
            cluster: cluster.to_owned(),
            ip_addresses: spec
                .addresses
                .iter()
                .flatten()
                .map(|a| NodeAddress {
                    kind: a.type_.clone(),
                    ip: a.ip.clone(),
                })
                .collect(),
            ipv4_alloc_cidr: first(true),
            ipv6_alloc_cidr: first(false),
            ipv4_health_ip: health.and_then(|h| h.ipv4.clone()).unwrap_or_default(),
            ipv6_health_ip: health.and_then(|h| h.ipv6.clone()).unwrap_or_default(),
            cluster_id: u32::from(cluster_id),
            source: SOURCE_CUSTOM_RESOURCE.to_owned(),
            encryption_key: spec
                .encryption
                .as_ref()
                .and_then(|e| e.key)
                .and_then(|k| u8::try_from(k).ok())
                .unwrap_or(0),
        }
    }

    pub fn encode(&self) -> String {
        // Plain strings, numbers and options: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(key: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let node: Self = serde_json::from_slice(value).map_err(|e| DecodeError::new(key, e))?;
        for cidr in node.ipv4_alloc_cidr.iter().chain(&node.ipv6_alloc_cidr) {
            cidr.to_net().map_err(|e| DecodeError::new(key, e))?;
        }
        for address in &node.ip_addresses {
            address.ip.parse::<IpAddr>().map_err(|e| {
                DecodeError::new(key, format!("{} {:?}: {e}", address.kind, address.ip))
            })?;
        }
        Ok(node)
    }

    /// `<cluster>/<node>`, the name Cilium shows a node by.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.cluster, self.name)
    }

    /// The first address of `kind` (`InternalIP`, `CiliumInternalIP`, ...).
    pub fn address(&self, kind: &str) -> Option<IpAddr> {
        self.ip_addresses
            .iter()
            .find(|a| a.kind == kind)
            .and_then(|a| a.ip.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `etcdctl get cilium/state/nodes/v1/default/k8s-node1` in the source document
    /// ("What's inside cilium-etcd"), as printed there.
    const DOCUMENTED: &str = r#"{
  "Name":"k8s-node1",
  "Cluster":"default",
  "IPAddresses":[{"Type":"InternalIP", "IP":"10.5.1.132"},
                 {"Type":"CiliumInternalIP", "IP":"10.6.6.71"}],
  "IPv4AllocCIDR":{"IP":"10.6.6.0", "Mask":"////AA=="},
  "IPv6AllocCIDR":null,
  "IPv4HealthIP":"10.6.6.79",
  "IPv6HealthIP":"",
  "ClusterID":0,
  "Source":"local",
  "EncryptionKey":0
}"#;

    fn without_whitespace(text: &str) -> String {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    }

    #[test]
    fn the_documented_node_decodes_and_encodes_byte_for_byte() {
        let node = KvNode::decode("k", DOCUMENTED.as_bytes()).expect("documented value");
        assert_eq!(node.address("InternalIP"), "10.5.1.132".parse().ok());
        assert_eq!(
            node.ipv4_alloc_cidr.as_ref().map(AllocCidr::to_net),
            Some(Ok("10.6.6.0/24".parse().expect("net")))
        );
        assert_eq!(node.encode(), without_whitespace(DOCUMENTED));
    }

    #[test]
    fn built_from_parts_it_is_the_documented_value() {
        let node = KvNode {
            name: "k8s-node1".into(),
            cluster: "default".into(),
            ip_addresses: vec![
                NodeAddress {
                    kind: "InternalIP".into(),
                    ip: "10.5.1.132".into(),
                },
                NodeAddress {
                    kind: "CiliumInternalIP".into(),
                    ip: "10.6.6.71".into(),
                },
            ],
            ipv4_alloc_cidr: Some(AllocCidr::from_net(&"10.6.6.0/24".parse().expect("net"))),
            ipv6_alloc_cidr: None,
            ipv4_health_ip: "10.6.6.79".into(),
            ipv6_health_ip: String::new(),
            cluster_id: 0,
            source: SOURCE_LOCAL.into(),
            encryption_key: 0,
        };
        assert_eq!(node.encode(), without_whitespace(DOCUMENTED));
    }

    #[test]
    fn ipv6_masks_are_sixteen_bytes() {
        let cidr = AllocCidr::from_net(&"fd00::100/120".parse().expect("net"));
        assert_eq!(cidr.mask, "////////////////////AA==");
        assert_eq!(cidr.to_net(), Ok("fd00::100/120".parse().expect("net")));
    }

    #[test]
    fn bad_values_are_named() {
        let bad_mask = DOCUMENTED.replace("////AA==", "/wD/AA==");
        let err = KvNode::decode("cilium/state/nodes/v1/default/x", bad_mask.as_bytes())
            .expect_err("not a prefix mask");
        assert!(err.to_string().contains("not a prefix mask"), "{err}");
        assert!(KvNode::decode("k", b"{\"Name\":").is_err());
        let bad_ip = DOCUMENTED.replace("10.5.1.132", "10.5.1");
        let err = KvNode::decode("k", bad_ip.as_bytes()).expect_err("bad ip");
        assert!(err.to_string().contains("InternalIP"), "{err}");
    }
}
