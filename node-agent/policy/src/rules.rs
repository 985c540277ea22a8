//! From policy objects to rules: the implied namespace, entities and CIDRs as peers, ports
//! as datapath L4 matches. A policy that cannot be turned whole into rules is rejected
//! with every reason, and none of its rules is used.

use std::fmt;

use cilium_crds::icmp::icmp_type_number;
use cilium_crds::policy::{
    Authentication, AuthenticationMode, CidrRule, Entity, IcmpFamily, IcmpRule, PortProtocol,
    PortRule, Protocol, Rule as ApiRule,
};
use cilium_crds::selector::EndpointSelector;
use cilium_crds::{CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy};
use cilium_datapath::L4Match;
use cilium_datapath::policy::{PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::named::NamedL4;
use crate::selector::Selector;

/// The namespace label every pod identity carries.
pub const NAMESPACE_KEY: &str = "io.kubernetes.pod.namespace";
/// The cluster label every pod identity carries.
pub const CLUSTER_KEY: &str = "io.cilium.k8s.policy.cluster";

/// The kinds of policy object rules come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
    /// `networking.k8s.io/v1`.
    NetworkPolicy,
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Which policy a rule came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    /// None for a CiliumClusterwideNetworkPolicy.
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyRef {
    pub fn cnp(namespace: &str, name: &str) -> Self {
        Self {
            kind: PolicyKind::CiliumNetworkPolicy,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    pub fn ccnp(name: &str) -> Self {
        Self {
            kind: PolicyKind::CiliumClusterwideNetworkPolicy,
            namespace: None,
            name: name.to_owned(),
        }
    }

    pub fn network_policy(namespace: &str, name: &str) -> Self {
        Self {
            kind: PolicyKind::NetworkPolicy,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    fn namespace_and_name(meta: &ObjectMeta) -> (&str, &str) {
        (
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    pub fn of_cnp(cnp: &CiliumNetworkPolicy) -> Self {
        let (namespace, name) = Self::namespace_and_name(&cnp.metadata);
        Self::cnp(namespace, name)
    }

    pub fn of_ccnp(ccnp: &CiliumClusterwideNetworkPolicy) -> Self {
        Self::ccnp(ccnp.metadata.name.as_deref().unwrap_or_default())
    }

    pub fn of_network_policy(np: &NetworkPolicy) -> Self {
        let (namespace, name) = Self::namespace_and_name(&np.metadata);
        Self::network_policy(namespace, name)
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Who a rule admits (or denies).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// `fromEndpoints`/`toEndpoints` (or the all-peers wildcard of a rule with only
    /// ports): identities whose labels match, narrowed by the direction's requirements.
    Endpoints(Selector),
    /// An entity: a selector on reserved (or cluster) labels, which requirements do not
    /// narrow (as Cilium's aggregated selectors).
    Entity(Selector),
    /// CIDR identities inside `cidr` and outside every `except`.
    Cidr { cidr: IpNet, except: Vec<IpNet> },
}

/// The protocols and ports a section covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Scope {
    /// No `toPorts` or `icmps`: every protocol and port.
    Any,
    /// These only (none, when every port given carries L7 rules).
    Only(Vec<L4Match>),
}

/// One ingress or egress section of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRule {
    /// Empty: the section selects no peer (Cilium's empty rule `{}`).
    pub peers: Vec<Peer>,
    /// `fromRequires` / `toRequires`: every selecting rule's, allow and deny apart, are
    /// ANDed into the `Endpoints` peers of that kind of section for the endpoint.
    pub requires: Vec<Selector>,
    pub l4: L4Scope,
    /// Ports given by name, added to `l4` for each endpoint (see [`crate::named`]).
    pub named: Vec<NamedL4>,
    /// Ports whose `toPorts` entry has L7 rules. L7 is not enforced yet, so they are not
    /// opened to the section's peers at all (fail-closed), rather than opened at L4.
    pub l7_ports: Vec<L4Match>,
}

impl PeerRule {
    pub fn has_l7(&self) -> bool {
        !self.l7_ports.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub source: PolicyRef,
    /// Endpoints the rule applies to.
    pub subject: Selector,
    pub ingress: Vec<PeerRule>,
    pub ingress_deny: Vec<PeerRule>,
    pub egress: Vec<PeerRule>,
    pub egress_deny: Vec<PeerRule>,
    /// Whether the endpoints it selects become default-deny in that direction.
    pub default_deny_ingress: bool,
    pub default_deny_egress: bool,
}

/// The cluster policies are read in, and how selectors that name no cluster are taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCluster {
    pub name: String,
    /// Cilium 1.19's `--policy-default-local-cluster` (default true): a peer selector
    /// without `io.cilium.k8s.policy.cluster` selects this cluster's endpoints only; false
    /// restores the older behaviour, endpoints of every cluster in the mesh.
    pub default_local: bool,
}

impl LocalCluster {
    /// Cluster `name` with Cilium's default (selectors stay in the local cluster).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            default_local: true,
        }
    }
}

/// What a policy is read against.
struct Context<'a> {
    /// The namespace of a CNP, implied on its selectors.
    namespace: Option<&'a str>,
    cluster: &'a LocalCluster,
    problems: Vec<String>,
}

impl Context<'_> {
    /// A peer selector, with the policy's namespace unless it names one, and the local
    /// cluster unless it names one or `default_local` is off; selectors of reserved
    /// identities get neither.
    fn peer_selector(&self, selector: &EndpointSelector) -> Selector {
        let mut selector = Selector::from_api(selector);
        if selector.is_reserved() {
            return selector;
        }
        if let Some(ns) = self.namespace
            && !selector.constrains(NAMESPACE_KEY)
        {
            selector = selector.and(&Selector::label(Some("k8s"), NAMESPACE_KEY, ns));
        }
        if self.cluster.default_local && !selector.constrains(CLUSTER_KEY) {
            selector = selector.and(&self.local_cluster());
        }
        selector
    }

    fn local_cluster(&self) -> Selector {
        Selector::label(Some("k8s"), CLUSTER_KEY, &self.cluster.name)
    }

    fn entity(&self, entity: Entity) -> Vec<Peer> {
        let reserved = |name: &str| Peer::Entity(Selector::reserved(name));
        match entity {
            Entity::All => vec![Peer::Entity(Selector::all())],
            Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6 => vec![reserved("world")],
            Entity::Host => vec![reserved("host")],
            Entity::RemoteNode => vec![reserved("remote-node")],
            Entity::Health => vec![reserved("health")],
            Entity::Init => vec![reserved("init")],
            Entity::Ingress => vec![reserved("ingress")],
            Entity::Unmanaged => vec![reserved("unmanaged")],
            Entity::KubeApiserver => vec![reserved("kube-apiserver")],
            Entity::None => vec![],
            Entity::Cluster => {
                let mut peers: Vec<Peer> = [
                    "host",
                    "remote-node",
                    "init",
                    "health",
                    "ingress",
                    "unmanaged",
                    "kube-apiserver",
                ]
                .into_iter()
                .map(reserved)
                .collect();
                peers.push(Peer::Entity(self.local_cluster()));
                peers
            }
        }
    }

    fn cidr(&mut self, path: &str, text: &str) -> Option<IpNet> {
        match text.parse::<IpNet>() {
            Ok(net) => Some(net.trunc()),
            Err(e) => {
                self.problems.push(format!("{path}: {text:?}: {e}"));
                None
            }
        }
    }

    fn cidr_set(&mut self, path: &str, set: &CidrRule) -> Option<Peer> {
        if set.cidr_group_ref.is_some() || set.cidr_group_selector.is_some() {
            self.problems.push(format!(
                "{path}: CiliumCIDRGroup references are not supported; the rule is not applied"
            ));
            return None;
        }
        let cidr = self.cidr(&format!("{path}.cidr"), &set.cidr.0)?;
        let mut except = Vec::new();
        for (i, e) in set.except.iter().flatten().enumerate() {
            except.extend(self.cidr(&format!("{path}.except[{i}]"), &e.0));
        }
        Some(Peer::Cidr { cidr, except })
    }

    /// The numbered ports as L4 matches, and the named ones (resolved per endpoint).
    fn ports(&mut self, path: &str, ports: &[PortProtocol]) -> (Vec<L4Match>, Vec<NamedL4>) {
        let mut matches = Vec::new();
        let mut named = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let protocols: &[u8] = match port.protocol.unwrap_or_default() {
                Protocol::Tcp => &[PROTO_TCP],
                Protocol::Udp => &[PROTO_UDP],
                Protocol::Sctp => &[PROTO_SCTP],
                Protocol::Any => &[PROTO_TCP, PROTO_UDP, PROTO_SCTP],
            };
            let Ok(first) = port.port.parse::<u16>() else {
                if port.end_port.is_some() {
                    self.problems.push(format!(
                        "{path}[{i}].endPort: needs a numbered port, not {:?}",
                        port.port
                    ));
                    continue;
                }
                named.push(NamedL4 {
                    name: port.port.clone(),
                    protocols: protocols.to_vec(),
                });
                continue;
            };
            let last = match port.end_port.map(u16::try_from) {
                None => first,
                Some(Ok(last)) if last >= first => last,
                Some(_) => {
                    self.problems.push(format!(
                        "{path}[{i}].endPort: must be from {first} to 65535"
                    ));
                    continue;
                }
            };
            for &protocol in protocols {
                if first == 0 {
                    matches.push(L4Match::Protocol(protocol));
                } else {
                    matches.extend(L4Match::port_range(protocol, first, last));
                }
            }
        }
        (matches, named)
    }

    fn icmps(&mut self, path: &str, rules: &[IcmpRule]) -> Vec<L4Match> {
        let mut matches = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for (j, field) in rule.fields.iter().flatten().enumerate() {
                let family = field.family.unwrap_or_default();
                let protocol = match family {
                    IcmpFamily::IPv4 => PROTO_ICMP,
                    IcmpFamily::IPv6 => PROTO_ICMPV6,
                };
                match icmp_type_number(&field.icmp_type, family) {
                    Ok(t) => matches.push(L4Match::port(protocol, u16::from(t))),
                    Err(e) => self
                        .problems
                        .push(format!("{path}[{i}].fields[{j}].type: {e}")),
                }
            }
        }
        matches
    }
}

/// TLS interception, SNI matching and Envoy listeners restrict what a port admits; not
/// enforced here, so a rule using them is refused rather than applied wider.
fn unsupported_port_fields(context: &mut Context<'_>, path: &str, ports: &[PortRule]) {
    for (i, port) in ports.iter().enumerate() {
        let used = [
            ("terminatingTLS", port.terminating_tls.is_some()),
            ("originatingTLS", port.originating_tls.is_some()),
            ("serverNames", port.server_names.is_some()),
            ("listener", port.listener.is_some()),
        ];
        for (field, _) in used.iter().filter(|(_, set)| *set) {
            context.problems.push(format!(
                "{path}.toPorts[{i}].{field}: not enforced by this agent; the rule is not applied"
            ));
        }
    }
}

/// `authentication.mode: required` asks that unauthenticated peers be dropped; this agent
/// has no mutual authentication, so such a rule is refused (never applied weaker).
fn authentication(context: &mut Context<'_>, path: &str, auth: Option<&Authentication>) {
    if let Some(auth) = auth
        && auth.mode != AuthenticationMode::Disabled
    {
        context.problems.push(format!(
            "{path}.authentication.mode: {} needs mutual authentication, which this agent does not provide; the rule is not applied",
            serde_json::to_string(&auth.mode).unwrap_or_default()
        ));
    }
}

/// A direction's sections, read uniformly from allow and deny rules.
struct Section<'a> {
    endpoints: &'a Option<Vec<EndpointSelector>>,
    requires: &'a Option<Vec<EndpointSelector>>,
    cidrs: &'a Option<Vec<cilium_crds::cidr::Cidr>>,
    cidr_sets: &'a Option<Vec<CidrRule>>,
    entities: &'a Option<Vec<Entity>>,
    /// Each `toPorts` entry's ports, and whether it has L7 rules.
    ports: Vec<(&'a [PortProtocol], bool)>,
    icmps: &'a Option<Vec<IcmpRule>>,
}

fn peer_rule(context: &mut Context<'_>, path: &str, section: Section<'_>) -> PeerRule {
    let mut peers: Vec<Peer> = section
        .endpoints
        .iter()
        .flatten()
        .map(|s| Peer::Endpoints(context.peer_selector(s)))
        .collect();
    for entity in section.entities.iter().flatten() {
        peers.extend(context.entity(*entity));
    }
    for (i, cidr) in section.cidrs.iter().flatten().enumerate() {
        if let Some(cidr) = context.cidr(&format!("{path}.CIDR[{i}]"), &cidr.0) {
            peers.push(Peer::Cidr {
                cidr,
                except: vec![],
            });
        }
    }
    for (i, set) in section.cidr_sets.iter().flatten().enumerate() {
        peers.extend(context.cidr_set(&format!("{path}.CIDRSet[{i}]"), set));
    }
    let no_peer_given = section.endpoints.is_none()
        && section.entities.is_none()
        && section.cidrs.is_none()
        && section.cidr_sets.is_none();
    let asked_for_l4 = !section.ports.is_empty() || section.icmps.is_some();
    // As Cilium: a section with ports but no peer is an L4-only rule for every peer; a
    // section with neither (`{}`, or only requirements) selects no peer, which still
    // makes the endpoint default-deny in that direction.
    if no_peer_given && asked_for_l4 {
        peers.push(Peer::Endpoints(Selector::all()));
    }
    let requires = section
        .requires
        .iter()
        .flatten()
        .map(|s| context.peer_selector(s))
        .collect();
    let (mut l4, mut named, mut l7_ports) = (Vec::new(), Vec::new(), Vec::new());
    let mut has_l7_names = false;
    for (i, (ports, has_l7)) in section.ports.iter().enumerate() {
        let (matches, names) = context.ports(&format!("{path}.toPorts[{i}].ports"), ports);
        if *has_l7 {
            // Closed whatever they are named: L7 is not enforced.
            l7_ports.extend(matches);
            has_l7_names |= !names.is_empty();
        } else {
            l4.extend(matches);
            named.extend(names);
        }
    }
    l4.extend(context.icmps(
        &format!("{path}.icmps"),
        section.icmps.as_deref().unwrap_or_default(),
    ));
    if asked_for_l4 && l4.is_empty() && named.is_empty() && l7_ports.is_empty() && !has_l7_names {
        // Ports were given but none is usable: the section must not widen to every port.
        context
            .problems
            .push(format!("{path}: no usable port or ICMP type"));
    }
    PeerRule {
        peers,
        requires,
        l4: if asked_for_l4 {
            L4Scope::Only(l4)
        } else {
            L4Scope::Any
        },
        named,
        l7_ports,
    }
}

fn rule(context: &mut Context<'_>, path: &str, api: &ApiRule, source: &PolicyRef) -> Option<Rule> {
    let subject = match (&api.endpoint_selector, &api.node_selector) {
        (Some(selector), _) => {
            let selector = Selector::from_api(selector);
            match context.namespace {
                Some(ns) => selector.and(&Selector::label(Some("k8s"), NAMESPACE_KEY, ns)),
                None => selector,
            }
        }
        // Host endpoints are not managed by this agent yet: a node-selecting rule selects
        // no endpoint here.
        (None, Some(_)) => return None,
        (None, None) => {
            context
                .problems
                .push(format!("{path}: needs endpointSelector or nodeSelector"));
            return None;
        }
    };
    // The four kinds of section have the same shape under different field names; allow
    // sections may carry L7 rules, deny sections cannot.
    macro_rules! sections {
        ($name:literal, $list:expr, $peers:ident, $requires:ident, $cidr:ident, $cidr_set:ident,
         $entities:ident, $nodes:ident, $groups:ident $(, allow: $l7:ident, $auth:ident)?) => {
            $list
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, r)| {
                    let path = format!("{path}.{}[{i}]", $name);
                    if r.$nodes.is_some() {
                        context.problems.push(format!("{path}: node selectors are not supported yet"));
                    }
                    if r.$groups.is_some() {
                        context.problems.push(format!("{path}: cloud provider groups are not supported; the rule is not applied"));
                    }
                    $(unsupported_port_fields(context, &path, r.to_ports.as_deref().unwrap_or_default());
                    authentication(context, &path, r.$auth.as_ref());)?
                    let section = Section {
                        endpoints: &r.$peers,
                        requires: &r.$requires,
                        cidrs: &r.$cidr,
                        cidr_sets: &r.$cidr_set,
                        entities: &r.$entities,
                        ports: r
                            .to_ports
                            .iter()
                            .flatten()
                            .map(|p| (p.ports.as_deref().unwrap_or_default(), false $(|| p.$l7.is_some())?))
                            .collect(),
                        icmps: &r.icmps,
                    };
                    peer_rule(context, &path, section)
                })
                .collect::<Vec<PeerRule>>()
        };
    }
    #[rustfmt::skip]
    let (ingress, ingress_deny, egress, egress_deny) = (
        sections!("ingress", api.ingress, from_endpoints, from_requires, from_cidr, from_cidr_set, from_entities, from_nodes, from_groups, allow: rules, authentication),
        sections!("ingressDeny", api.ingress_deny, from_endpoints, from_requires, from_cidr, from_cidr_set, from_entities, from_nodes, from_groups),
        sections!("egress", api.egress, to_endpoints, to_requires, to_cidr, to_cidr_set, to_entities, to_nodes, to_groups, allow: rules, authentication),
        sections!("egressDeny", api.egress_deny, to_endpoints, to_requires, to_cidr, to_cidr_set, to_entities, to_nodes, to_groups),
    );
    if api
        .egress
        .iter()
        .flatten()
        .any(|r| r.to_fqdns.is_some() || r.to_services.is_some())
        || api
            .egress_deny
            .iter()
            .flatten()
            .any(|r| r.to_services.is_some())
    {
        context.problems.push(format!(
            "{path}: toFQDNs and toServices are not supported yet"
        ));
    }
    let defaults = api.enable_default_deny.as_ref();
    Some(Rule {
        source: source.clone(),
        subject,
        default_deny_ingress: defaults.and_then(|d| d.ingress).unwrap_or(true)
            && !(ingress.is_empty() && ingress_deny.is_empty()),
        default_deny_egress: defaults.and_then(|d| d.egress).unwrap_or(true)
            && !(egress.is_empty() && egress_deny.is_empty()),
        ingress,
        ingress_deny,
        egress,
        egress_deny,
    })
}

fn parse<'a>(
    source: PolicyRef,
    rules: impl Iterator<Item = (String, &'a ApiRule)>,
    cluster: &LocalCluster,
) -> Result<Vec<Rule>, Vec<String>> {
    let namespace = source.namespace.clone();
    let mut context = Context {
        namespace: namespace.as_deref(),
        cluster,
        problems: Vec::new(),
    };
    let parsed: Vec<Rule> = rules
        .filter_map(|(path, api)| rule(&mut context, &path, api, &source))
        .collect();
    if context.problems.is_empty() {
        Ok(parsed)
    } else {
        Err(context.problems)
    }
}

fn paths<'a>(
    spec: &'a Option<ApiRule>,
    specs: &'a Option<Vec<ApiRule>>,
) -> impl Iterator<Item = (String, &'a ApiRule)> {
    spec.iter().map(|r| ("spec".to_owned(), r)).chain(
        specs
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| (format!("specs[{i}]"), r)),
    )
}

/// The rules of a CiliumNetworkPolicy, or every reason it cannot be enforced.
pub fn parse_cnp(
    cnp: &CiliumNetworkPolicy,
    cluster: &LocalCluster,
) -> Result<Vec<Rule>, Vec<String>> {
    parse(
        PolicyRef::of_cnp(cnp),
        paths(&cnp.spec.spec, &cnp.spec.specs),
        cluster,
    )
}

pub fn parse_ccnp(
    ccnp: &CiliumClusterwideNetworkPolicy,
    cluster: &LocalCluster,
) -> Result<Vec<Rule>, Vec<String>> {
    parse(
        PolicyRef::of_ccnp(ccnp),
        paths(&ccnp.spec.spec, &ccnp.spec.specs),
        cluster,
    )
}
