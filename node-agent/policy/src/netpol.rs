//! Kubernetes NetworkPolicy (`networking.k8s.io/v1`) as rules, with Cilium's translation:
//! the policy selects pods of its namespace; `podSelector` peers are pods of the policy's
//! namespace, `namespaceSelector` peers pods of the namespaces whose labels match (Cilium's
//! `io.cilium.k8s.namespace.labels.*` identity labels), both together narrow each other;
//! `ipBlock` is a CIDR with `except` (pod addresses inside it are not matched: they carry
//! their pods' identities); an empty `from`/`to` admits every peer; `policyTypes` defaults
//! to Ingress, plus Egress when egress rules are given, and a listed type without rules
//! denies that direction.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use cilium_datapath::L4Match;
use cilium_datapath::policy::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use ipnet::IpNet;

use crate::named::NamedL4;
use crate::rules::{
    CLUSTER_KEY, L4Scope, LocalCluster, NAMESPACE_KEY, Peer, PeerRule, PolicyRef, Rule,
};
use crate::selector::Selector;

/// Where Cilium puts a namespace's labels in its pods' identities.
const NAMESPACE_LABELS: &str = "io.cilium.k8s.namespace.labels.";

struct Translation<'a> {
    namespace: &'a str,
    cluster: &'a LocalCluster,
    problems: Vec<String>,
}

impl Translation<'_> {
    /// Pods of this cluster (any namespace): what a namespace selector ranges over.
    fn cluster_pods(&self) -> Selector {
        Selector::exists(Some("k8s"), NAMESPACE_KEY).and(&self.local_cluster())
    }

    fn local_cluster(&self) -> Selector {
        Selector::label(Some("k8s"), CLUSTER_KEY, &self.cluster.name)
    }

    fn selector(&mut self, path: &str, selector: &LabelSelector, prefix: &str) -> Option<Selector> {
        Selector::from_k8s(selector, prefix)
            .map_err(|e| self.problems.push(format!("{path}: {e}")))
            .ok()
    }

    fn cidr(&mut self, path: &str, text: &str) -> Option<IpNet> {
        text.parse::<IpNet>()
            .map(|net| net.trunc())
            .map_err(|e| self.problems.push(format!("{path}: {text:?}: {e}")))
            .ok()
    }

    fn peer(&mut self, path: &str, peer: &NetworkPolicyPeer) -> Option<Peer> {
        if let Some(block) = &peer.ip_block {
            let cidr = self.cidr(&format!("{path}.ipBlock.cidr"), &block.cidr)?;
            let except = block
                .except
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, e)| self.cidr(&format!("{path}.ipBlock.except[{i}]"), e))
                .collect();
            return Some(Peer::Cidr { cidr, except });
        }
        let pods = match &peer.pod_selector {
            Some(selector) => self.selector(&format!("{path}.podSelector"), selector, "")?,
            None => Selector::all(),
        };
        let namespaces = match &peer.namespace_selector {
            Some(selector) => self
                .selector(
                    &format!("{path}.namespaceSelector"),
                    selector,
                    NAMESPACE_LABELS,
                )?
                .and(&self.cluster_pods()),
            // Without a namespace selector the pods are the policy's namespace's.
            None => Selector::label(Some("k8s"), NAMESPACE_KEY, self.namespace)
                .and(&self.local_cluster()),
        };
        Some(Peer::Endpoints(pods.and(&namespaces)))
    }

    fn ports(&mut self, path: &str, ports: &[NetworkPolicyPort]) -> (Vec<L4Match>, Vec<NamedL4>) {
        let (mut matches, mut named) = (Vec::new(), Vec::new());
        for (i, port) in ports.iter().enumerate() {
            let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => PROTO_TCP,
                "UDP" => PROTO_UDP,
                "SCTP" => PROTO_SCTP,
                other => {
                    self.problems.push(format!(
                        "{path}[{i}].protocol: {other:?} is not TCP, UDP or SCTP"
                    ));
                    continue;
                }
            };
            match &port.port {
                None => matches.push(L4Match::Protocol(protocol)),
                Some(IntOrString::String(name)) => named.push(NamedL4 {
                    name: name.clone(),
                    protocols: vec![protocol],
                }),
                Some(IntOrString::Int(first)) => {
                    let first = u16::try_from(*first).ok().filter(|p| *p > 0);
                    let last = match port.end_port {
                        None => first,
                        Some(last) => u16::try_from(last).ok(),
                    };
                    match (first, last) {
                        (Some(first), Some(last)) if last >= first => {
                            matches.extend(L4Match::port_range(protocol, first, last));
                        }
                        _ => self.problems.push(format!(
                            "{path}[{i}]: port {:?} to endPort {:?} is not a range of 1..65535",
                            port.port, port.end_port
                        )),
                    }
                }
            }
        }
        (matches, named)
    }

    /// Rule `path`; its peers are in field `peer_field` (`from` or `to`).
    fn section(
        &mut self,
        path: &str,
        peer_field: &str,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
    ) -> PeerRule {
        let peers = match peers {
            // No peer list, or an empty one: every peer, inside the cluster or not.
            None | Some([]) => vec![Peer::Entity(Selector::all())],
            Some(peers) => peers
                .iter()
                .enumerate()
                .filter_map(|(i, peer)| self.peer(&format!("{path}.{peer_field}[{i}]"), peer))
                .collect(),
        };
        let l4 = match ports {
            None | Some([]) => (L4Scope::Any, Vec::new()),
            Some(ports) => {
                let (matches, named) = self.ports(&format!("{path}.ports"), ports);
                (L4Scope::Only(matches), named)
            }
        };
        PeerRule {
            peers,
            requires: Vec::new(),
            l4: l4.0,
            named: l4.1,
            l7_ports: Vec::new(),
        }
    }
}

/// The rule of a NetworkPolicy, or every reason it cannot be enforced.
pub fn parse_network_policy(
    np: &NetworkPolicy,
    cluster: &LocalCluster,
) -> Result<Vec<Rule>, Vec<String>> {
    let source = PolicyRef::of_network_policy(np);
    let namespace = source.namespace.clone().unwrap_or_default();
    let mut translation = Translation {
        namespace: &namespace,
        cluster,
        problems: Vec::new(),
    };
    let spec = np.spec.clone().unwrap_or_default();
    let subject = translation
        .selector(
            "spec.podSelector",
            &spec.pod_selector.clone().unwrap_or_default(),
            "",
        )
        .unwrap_or_default()
        .and(&Selector::label(Some("k8s"), NAMESPACE_KEY, &namespace));
    let types: Vec<String> = spec.policy_types.clone().unwrap_or_else(|| {
        let mut types = vec!["Ingress".to_owned()];
        if spec.egress.is_some() {
            types.push("Egress".to_owned());
        }
        types
    });
    for (i, kind) in types.iter().enumerate() {
        if kind != "Ingress" && kind != "Egress" {
            translation.problems.push(format!(
                "spec.policyTypes[{i}]: {kind:?} is not Ingress or Egress"
            ));
        }
    }
    let (ingress_on, egress_on) = (
        types.iter().any(|t| t == "Ingress"),
        types.iter().any(|t| t == "Egress"),
    );
    // Each direction's rules as (peers, ports); a direction that is not a policy type has none.
    let ingress_rules: Vec<_> = spec
        .ingress
        .iter()
        .flatten()
        .filter(|_| ingress_on)
        .map(|r| (r.from.as_deref(), r.ports.as_deref()))
        .collect();
    let egress_rules: Vec<_> = spec
        .egress
        .iter()
        .flatten()
        .filter(|_| egress_on)
        .map(|r| (r.to.as_deref(), r.ports.as_deref()))
        .collect();
    type Rules<'a> = Vec<(
        Option<&'a [NetworkPolicyPeer]>,
        Option<&'a [NetworkPolicyPort]>,
    )>;
    let mut sections = |path: &str, field: &str, rules: Rules<'_>| -> Vec<PeerRule> {
        rules
            .into_iter()
            .enumerate()
            .map(|(i, (peers, ports))| {
                translation.section(&format!("{path}[{i}]"), field, peers, ports)
            })
            .collect()
    };
    let ingress = sections("spec.ingress", "from", ingress_rules);
    let egress = sections("spec.egress", "to", egress_rules);
    if !translation.problems.is_empty() {
        return Err(translation.problems);
    }
    Ok(vec![Rule {
        source,
        subject,
        ingress,
        ingress_deny: Vec::new(),
        egress,
        egress_deny: Vec::new(),
        default_deny_ingress: ingress_on,
        default_deny_egress: egress_on,
    }])
}
