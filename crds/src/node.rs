//! CiliumNode: one per node, holding its addresses and the PodCIDRs the operator gave it.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[serde_with::skip_serializing_none]
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "cilium.io",
    version = "v2",
    kind = "CiliumNode",
    plural = "ciliumnodes",
    singular = "ciliumnode",
    shortname = "cn",
    shortname = "ciliumn",
    category = "cilium",
    status = "NodeStatus",
    printcolumn(
        name = "CiliumInternalIP",
        type_ = "string",
        description = "Cilium internal IP for this node",
        json_path = ".spec.addresses[?(@.type==\"CiliumInternalIP\")].ip"
    ),
    printcolumn(
        name = "InternalIP",
        type_ = "string",
        description = "IP of the node",
        json_path = ".spec.addresses[?(@.type==\"InternalIP\")].ip"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        description = "Time duration since creation of Ciliumnode",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct NodeSpec {
    #[serde(rename = "instance-id")]
    pub instance_id: Option<String>,
    pub addresses: Option<Vec<NodeAddress>>,
    pub health: Option<HealthAddressing>,
    pub ingress: Option<HealthAddressing>,
    pub encryption: Option<EncryptionSpec>,
    pub nodeidentity: Option<u64>,
    pub ipam: Option<IpamSpec>,
}

/// An address of the node: `InternalIP`, `ExternalIP`, `CiliumInternalIP`, ...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub ip: String,
}

/// IPs of the node's health (or ingress) endpoint.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthAddressing {
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EncryptionSpec {
    pub key: Option<i64>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpamSpec {
    /// The blocks this node allocates pod IPs from; written by the operator (cluster-pool).
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Option<Vec<String>>,
    /// IPs available for allocation (ENI/Azure-style modes), ip → owner.
    pub pool: Option<BTreeMap<String, AllocationIp>>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AllocationIp {
    pub owner: Option<String>,
    pub resource: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeStatus {
    pub ipam: Option<IpamStatus>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpamStatus {
    /// IPs in use, ip → owner.
    pub used: Option<BTreeMap<String, AllocationIp>>,
    /// State of each PodCIDR as the agent sees it.
    #[serde(rename = "pod-cidrs")]
    pub pod_cidrs: Option<BTreeMap<String, PodCidrStatus>>,
    /// Allocation problems reported by the operator.
    #[serde(rename = "operator-status")]
    pub operator_status: Option<OperatorStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodCidrStatus {
    /// `in-use`, `depleted` or `released`.
    pub status: String,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OperatorStatus {
    pub error: Option<String>,
}
