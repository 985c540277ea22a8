//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (`cilium.io/v2`).
//!
//! Field names follow Cilium's `pkg/policy/api`. Optional lists stay `Option<Vec<_>>` so an
//! object read from the apiserver serializes back exactly as it was (`ingress: []` and no
//! `ingress` are kept apart).

use garde::Validate;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::selector::EndpointSelector;
use crate::validation::PolicyContext;

/// The body shared by CNP and CCNP: one rule in `spec`, a list in `specs`, or both.
#[serde_with::skip_serializing_none]
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate,
)]
#[kube(
    group = "cilium.io",
    version = "v2",
    kind = "CiliumNetworkPolicy",
    plural = "ciliumnetworkpolicies",
    singular = "ciliumnetworkpolicy",
    shortname = "cnp",
    shortname = "ciliumnp",
    category = "cilium",
    category = "ciliumpolicy",
    namespaced,
    no_spec,
    status = "PolicyStatus",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Valid')].status"
    )
)]
#[garde(context(PolicyContext))]
pub struct NetworkPolicyBody {
    #[garde(dive, custom(crate::validation::some_rule(&self.specs)))]
    pub spec: Option<Rule>,
    #[garde(dive)]
    pub specs: Option<Vec<Rule>>,
}

/// CCNP has the same body as CNP but is cluster-scoped and may use `nodeSelector`.
#[serde_with::skip_serializing_none]
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate,
)]
#[kube(
    group = "cilium.io",
    version = "v2",
    kind = "CiliumClusterwideNetworkPolicy",
    plural = "ciliumclusterwidenetworkpolicies",
    singular = "ciliumclusterwidenetworkpolicy",
    shortname = "ccnp",
    category = "cilium",
    category = "ciliumpolicy",
    no_spec,
    status = "PolicyStatus",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Valid')].status"
    )
)]
#[garde(context(PolicyContext))]
pub struct ClusterwideNetworkPolicyBody {
    #[garde(dive, custom(crate::validation::some_rule(&self.specs)))]
    pub spec: Option<Rule>,
    #[garde(dive)]
    pub specs: Option<Vec<Rule>>,
}

/// One policy rule: which endpoints (or nodes) it selects and what they may send and receive.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct Rule {
    #[garde(dive, custom(crate::validation::one_subject(&self.node_selector)))]
    pub endpoint_selector: Option<EndpointSelector>,
    /// Selects nodes instead of endpoints; CiliumClusterwideNetworkPolicy only.
    #[garde(dive)]
    pub node_selector: Option<EndpointSelector>,
    #[garde(dive)]
    pub ingress: Option<Vec<IngressRule>>,
    #[garde(dive)]
    pub ingress_deny: Option<Vec<IngressDenyRule>>,
    #[garde(dive)]
    pub egress: Option<Vec<EgressRule>>,
    #[garde(dive)]
    pub egress_deny: Option<Vec<EgressDenyRule>>,
    #[garde(skip)]
    pub labels: Option<Vec<PolicyLabel>>,
    #[garde(skip)]
    pub enable_default_deny: Option<DefaultDeny>,
    #[garde(skip)]
    pub description: Option<String>,
}

/// A label attached to a rule (`labels:` in a rule), e.g. for `cilium policy delete`.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyLabel {
    pub key: String,
    pub value: Option<String>,
    pub source: Option<String>,
}

/// Whether selecting an endpoint turns each direction to default-deny (Cilium's default: yes).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DefaultDeny {
    pub ingress: Option<bool>,
    pub egress: Option<bool>,
}

/// Traffic the selected endpoints may receive. Peers within one rule are OR-ed; the
/// `toPorts` then restrict them.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct IngressRule {
    #[garde(dive)]
    pub from_endpoints: Option<Vec<EndpointSelector>>,
    #[garde(dive)]
    pub from_requires: Option<Vec<EndpointSelector>>,
    #[serde(rename = "fromCIDR")]
    #[garde(dive)]
    pub from_cidr: Option<Vec<Cidr>>,
    #[serde(rename = "fromCIDRSet")]
    #[garde(dive)]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    #[garde(skip)]
    pub from_entities: Option<Vec<Entity>>,
    #[garde(dive)]
    pub from_nodes: Option<Vec<EndpointSelector>>,
    /// Cloud provider groups (AWS security groups): kept, never pruned, and refused by the
    /// engine, which cannot resolve them.
    #[garde(skip)]
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_list")]
    pub from_groups: Option<Vec<serde_json::Value>>,
    #[garde(dive)]
    pub to_ports: Option<Vec<PortRule>>,
    #[garde(dive)]
    pub icmps: Option<Vec<IcmpRule>>,
    #[garde(skip)]
    pub authentication: Option<Authentication>,
}

/// Traffic the selected endpoints must not receive; beats any allow.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct IngressDenyRule {
    #[garde(dive)]
    pub from_endpoints: Option<Vec<EndpointSelector>>,
    #[garde(dive)]
    pub from_requires: Option<Vec<EndpointSelector>>,
    #[serde(rename = "fromCIDR")]
    #[garde(dive)]
    pub from_cidr: Option<Vec<Cidr>>,
    #[serde(rename = "fromCIDRSet")]
    #[garde(dive)]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    #[garde(skip)]
    pub from_entities: Option<Vec<Entity>>,
    #[garde(dive)]
    pub from_nodes: Option<Vec<EndpointSelector>>,
    /// Cloud provider groups (AWS security groups): kept, never pruned, and refused by the
    /// engine, which cannot resolve them.
    #[garde(skip)]
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_list")]
    pub from_groups: Option<Vec<serde_json::Value>>,
    #[garde(dive)]
    pub to_ports: Option<Vec<PortDenyRule>>,
    #[garde(dive)]
    pub icmps: Option<Vec<IcmpRule>>,
}

/// Traffic the selected endpoints may send.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct EgressRule {
    #[garde(dive)]
    pub to_endpoints: Option<Vec<EndpointSelector>>,
    #[garde(dive)]
    pub to_requires: Option<Vec<EndpointSelector>>,
    #[serde(rename = "toCIDR")]
    #[garde(dive)]
    pub to_cidr: Option<Vec<Cidr>>,
    #[serde(rename = "toCIDRSet")]
    #[garde(dive)]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    #[garde(skip)]
    pub to_entities: Option<Vec<Entity>>,
    #[garde(dive)]
    pub to_nodes: Option<Vec<EndpointSelector>>,
    /// Cloud provider groups (AWS security groups): kept, never pruned, and refused by the
    /// engine, which cannot resolve them.
    #[garde(skip)]
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_list")]
    pub to_groups: Option<Vec<serde_json::Value>>,
    #[garde(dive)]
    pub to_services: Option<Vec<ServiceSelector>>,
    #[garde(dive)]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(rename = "toFQDNs")]
    #[garde(dive)]
    pub to_fqdns: Option<Vec<FqdnSelector>>,
    #[garde(dive)]
    pub icmps: Option<Vec<IcmpRule>>,
    #[garde(skip)]
    pub authentication: Option<Authentication>,
}

/// Traffic the selected endpoints must not send; beats any allow.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct EgressDenyRule {
    #[garde(dive)]
    pub to_endpoints: Option<Vec<EndpointSelector>>,
    #[garde(dive)]
    pub to_requires: Option<Vec<EndpointSelector>>,
    #[serde(rename = "toCIDR")]
    #[garde(dive)]
    pub to_cidr: Option<Vec<Cidr>>,
    #[serde(rename = "toCIDRSet")]
    #[garde(dive)]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    #[garde(skip)]
    pub to_entities: Option<Vec<Entity>>,
    #[garde(dive)]
    pub to_nodes: Option<Vec<EndpointSelector>>,
    /// Cloud provider groups (AWS security groups): kept, never pruned, and refused by the
    /// engine, which cannot resolve them.
    #[garde(skip)]
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_list")]
    pub to_groups: Option<Vec<serde_json::Value>>,
    #[garde(dive)]
    pub to_services: Option<Vec<ServiceSelector>>,
    #[garde(dive)]
    pub to_ports: Option<Vec<PortDenyRule>>,
    #[garde(dive)]
    pub icmps: Option<Vec<IcmpRule>>,
}

/// A CIDR with optional holes: `except` entries must lie inside `cidr`.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct CidrRule {
    #[garde(dive)]
    pub cidr: Cidr,
    #[garde(dive, custom(crate::cidr::excepts_within(&self.cidr)))]
    pub except: Option<Vec<Cidr>>,
    /// CiliumCIDRGroup references: kept, never pruned, and refused by the engine.
    #[garde(skip)]
    pub cidr_group_ref: Option<String>,
    #[garde(skip)]
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_object")]
    pub cidr_group_selector: Option<serde_json::Value>,
}

/// Cilium's entities: named groups of peers that are not pods of this cluster.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    All,
    World,
    #[serde(rename = "world-ipv4")]
    WorldIpv4,
    #[serde(rename = "world-ipv6")]
    WorldIpv6,
    Cluster,
    Host,
    Init,
    Ingress,
    Unmanaged,
    RemoteNode,
    Health,
    None,
    KubeApiserver,
}

/// Ports (and optionally L7 rules) that an allow rule is limited to.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct PortRule {
    #[garde(dive)]
    pub ports: Option<Vec<PortProtocol>>,
    /// L7 rules: accepted and kept; until L7 is enforced their ports stay closed to the
    /// rule's peers.
    #[garde(skip)]
    pub rules: Option<L7Rules>,
    /// TLS interception, SNI matching and Envoy listeners, as in Cilium's schema: kept
    /// (never pruned) so the engine refuses what it does not enforce instead of widening.
    #[serde(rename = "terminatingTLS")]
    #[garde(skip)]
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_object")]
    pub terminating_tls: Option<serde_json::Value>,
    #[serde(rename = "originatingTLS")]
    #[garde(skip)]
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_object")]
    pub originating_tls: Option<serde_json::Value>,
    #[garde(skip)]
    pub server_names: Option<Vec<String>>,
    #[garde(skip)]
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_object")]
    pub listener: Option<serde_json::Value>,
}

/// Ports that a deny rule is limited to (deny rules carry no L7 part).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct PortDenyRule {
    #[garde(dive)]
    pub ports: Option<Vec<PortProtocol>>,
}

/// A port (a decimal string, or a named port) or a port range `port..=endPort`, per protocol.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct PortProtocol {
    /// `"0"` to `"65535"` (0 = any port), or a named port.
    #[garde(pattern(
        r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*)$"
    ))]
    pub port: String,
    /// Last port of a range starting at `port`; needs a numeric `port` no larger than it.
    #[garde(range(min = 0, max = 65535), custom(crate::validation::end_port_after(&self.port)))]
    #[serde(rename = "endPort")]
    pub end_port: Option<i32>,
    #[garde(skip)]
    pub protocol: Option<Protocol>,
}

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    #[default]
    Any,
}

/// ICMP types allowed (or denied), per family.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[garde(context(PolicyContext))]
pub struct IcmpRule {
    #[garde(dive)]
    pub fields: Option<Vec<IcmpField>>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema, Validate)]
#[garde(context(PolicyContext))]
pub struct IcmpField {
    /// `IPv4` (the default) or `IPv6`.
    #[garde(skip)]
    pub family: Option<IcmpFamily>,
    /// The ICMP type as a number (0..255) or Cilium's name for it (`EchoRequest`, ...).
    #[serde(rename = "type")]
    #[garde(custom(crate::validation::icmp_type(&self.family)))]
    pub icmp_type: IntOrString,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IcmpFamily {
    #[default]
    IPv4,
    IPv6,
}

/// A DNS name (`matchName`) or pattern with `*` wildcards (`matchPattern`).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct FqdnSelector {
    #[garde(custom(crate::validation::one_of_fqdn(&self.match_pattern)))]
    pub match_name: Option<String>,
    #[garde(skip)]
    pub match_pattern: Option<String>,
}

/// A Kubernetes Service as an egress peer.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(PolicyContext))]
pub struct ServiceSelector {
    #[garde(skip)]
    pub k8s_service: Option<ServiceReference>,
    #[garde(dive)]
    pub k8s_service_selector: Option<ServiceLabelSelector>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReference {
    pub service_name: Option<String>,
    pub namespace: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[garde(context(PolicyContext))]
pub struct ServiceLabelSelector {
    #[garde(dive)]
    pub selector: EndpointSelector,
    #[garde(skip)]
    pub namespace: Option<String>,
}

/// Mutual authentication required for a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Authentication {
    pub mode: AuthenticationMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AuthenticationMode {
    Disabled,
    Required,
    TestAlwaysFail,
}

/// L7 rules of a port rule. Kept so that policies written for Cilium apply unchanged.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct L7Rules {
    pub http: Option<Vec<HttpRule>>,
    pub dns: Option<Vec<FqdnSelector>>,
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_list")]
    pub kafka: Option<Vec<serde_json::Value>>,
    pub l7proto: Option<String>,
    #[serde(default)]
    #[schemars(schema_with = "crate::opaque_list")]
    pub l7: Option<Vec<serde_json::Value>>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRule {
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub headers: Option<Vec<String>>,
    pub header_matches: Option<Vec<HeaderMatch>>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeaderMatch {
    pub name: String,
    pub value: Option<String>,
    pub mismatch: Option<String>,
}

/// What the agent reports about a policy: the `Valid` condition (and why not).
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub conditions: Option<Vec<PolicyCondition>>,
}

#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// `Valid`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub last_transition_time: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl NetworkPolicyBody {
    /// Every rule of the policy, `spec` first.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.spec.iter().chain(self.specs.iter().flatten())
    }
}

impl ClusterwideNetworkPolicyBody {
    /// Every rule of the policy, `spec` first.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.spec.iter().chain(self.specs.iter().flatten())
    }
}
