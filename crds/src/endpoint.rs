//! CiliumEndpoint: the agent's report of one pod's endpoint (id, identity, addresses, policy).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A CiliumEndpoint has no spec: everything is in `status`, written by the agent with the
/// object (Cilium's CRD declares no status subresource for it, see `crate::all`).
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "cilium.io",
    version = "v2",
    kind = "CiliumEndpoint",
    plural = "ciliumendpoints",
    singular = "ciliumendpoint",
    shortname = "cep",
    shortname = "ciliumep",
    category = "cilium",
    namespaced,
    no_spec,
    status = "EndpointStatus",
    printcolumn(
        name = "Security Identity",
        type_ = "integer",
        description = "Security Identity",
        json_path = ".status.identity.id"
    ),
    printcolumn(
        name = "Ingress Enforcement",
        type_ = "string",
        description = "Ingress enforcement in the endpoint",
        json_path = ".status.policy.ingress.state",
        priority = 1
    ),
    printcolumn(
        name = "Egress Enforcement",
        type_ = "string",
        description = "Egress enforcement in the endpoint",
        json_path = ".status.policy.egress.state",
        priority = 1
    ),
    printcolumn(
        name = "Endpoint State",
        type_ = "string",
        description = "Endpoint current state",
        json_path = ".status.state"
    ),
    printcolumn(
        name = "IPv4",
        type_ = "string",
        description = "Endpoint IPv4 address",
        json_path = ".status.networking.addressing[0].ipv4"
    ),
    printcolumn(
        name = "IPv6",
        type_ = "string",
        description = "Endpoint IPv6 address",
        json_path = ".status.networking.addressing[0].ipv6"
    )
)]
pub struct EndpointFields {}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointStatus {
    /// The endpoint id, local to its node.
    pub id: Option<i64>,
    pub identity: Option<EndpointIdentity>,
    pub networking: Option<EndpointNetworking>,
    pub encryption: Option<EndpointEncryption>,
    #[serde(rename = "external-identifiers")]
    pub external_identifiers: Option<ExternalIdentifiers>,
    #[serde(rename = "named-ports")]
    pub named_ports: Option<Vec<NamedPort>>,
    pub policy: Option<EndpointPolicy>,
    pub state: Option<EndpointState>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointIdentity {
    pub id: i64,
    /// `source:key=value` strings.
    pub labels: Option<Vec<String>>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointNetworking {
    pub addressing: Vec<AddressPair>,
    /// IP of the node the endpoint runs on.
    pub node: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AddressPair {
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointEncryption {
    pub key: Option<i64>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExternalIdentifiers {
    #[serde(rename = "container-id")]
    pub container_id: Option<String>,
    #[serde(rename = "k8s-namespace")]
    pub k8s_namespace: Option<String>,
    #[serde(rename = "k8s-pod-name")]
    pub k8s_pod_name: Option<String>,
    #[serde(rename = "pod-name")]
    pub pod_name: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamedPort {
    pub name: Option<String>,
    pub port: Option<u16>,
    pub protocol: Option<String>,
}

impl NamedPort {
    /// The named container ports of `pod` (`status.named-ports` of its CiliumEndpoint),
    /// sorted by name as Cilium lists them.
    pub fn of_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<NamedPort> {
        let mut ports: Vec<NamedPort> = pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|container| container.ports.iter().flatten())
            .filter_map(|port| {
                Some(NamedPort {
                    name: Some(port.name.clone()?),
                    port: u16::try_from(port.container_port).ok(),
                    protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                })
            })
            .collect();
        ports.sort_by(|a, b| a.name.cmp(&b.name));
        ports
    }
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointPolicy {
    pub ingress: Option<EndpointPolicyDirection>,
    pub egress: Option<EndpointPolicyDirection>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointPolicyDirection {
    pub enforcing: bool,
    /// `<PolicyEnforcementState>`: `enforcing`, `non-enforcing`, `disabled`, ...
    pub state: Option<String>,
    pub allowed: Option<Vec<IdentityTuple>>,
    pub denied: Option<Vec<IdentityTuple>>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityTuple {
    pub identity: Option<i64>,
    #[serde(rename = "identity-labels")]
    pub identity_labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(rename = "dest-port")]
    pub dest_port: Option<u16>,
    pub protocol: Option<u8>,
}

/// Cilium's endpoint states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointState {
    Creating,
    WaitingForIdentity,
    NotReady,
    WaitingToRegenerate,
    Regenerating,
    Restoring,
    Ready,
    Disconnecting,
    Disconnected,
    Invalid,
}
