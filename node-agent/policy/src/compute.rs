//! One endpoint's policy: which rules select it, whether each direction is enforced, and
//! the policy map entries — every selected peer identity (or the wildcard 0) × every L4
//! match, allows and denies, deny winning in the datapath.

use std::collections::BTreeSet;

use cilium_datapath::{Direction, L4Match, PolicyKey, PolicyMap, Verdict};
use cilium_identity::{LabelSet, ReservedIdentity};

use crate::cache::{CidrIdentities, SelectorCache};
use crate::named::PortNames;
use crate::rules::{L4Scope, Peer, PeerRule, Rule};
use crate::selector::Selector;

/// The wildcard identity of the policy map: any peer.
const ANY_PEER: u32 = 0;

/// Cilium's `--enable-policy` (Helm `policyEnforcementMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EnforcementMode {
    /// A direction is enforced once a rule selecting the endpoint covers it.
    #[default]
    Default,
    /// Every endpoint is enforced in both directions, selected by a rule or not.
    Always,
    /// Nothing is enforced; rules are still validated but never applied.
    Never,
}

impl std::str::FromStr for EnforcementMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Self::Default),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "{other:?} is not a policy enforcement mode (default, always, never)"
            )),
        }
    }
}

impl std::fmt::Display for EnforcementMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Default => "default",
            Self::Always => "always",
            Self::Never => "never",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub map: PolicyMap,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    /// Some selecting rule has L7 rules: L7 is not enforced, so their ports stay closed to
    /// those peers (unless another rule opens them at L4, as Cilium's L4-only rules do).
    pub l7_not_enforced: bool,
}

fn sections(rule: &Rule, direction: Direction) -> (&[PeerRule], &[PeerRule], bool) {
    match direction {
        Direction::Ingress => (&rule.ingress, &rule.ingress_deny, rule.default_deny_ingress),
        Direction::Egress => (&rule.egress, &rule.egress_deny, rule.default_deny_egress),
    }
}

/// The identities a section's peers stand for, with `requires` ANDed into its endpoint
/// selectors (not into entities or CIDRs, as in Cilium).
fn peer_identities(
    section: &PeerRule,
    requires: &[Selector],
    cache: &mut SelectorCache,
    cidrs: &CidrIdentities,
) -> BTreeSet<u32> {
    let mut identities = BTreeSet::new();
    for peer in &section.peers {
        match peer {
            Peer::Endpoints(selector) | Peer::Entity(selector) => {
                let selector = match peer {
                    Peer::Endpoints(_) => requires.iter().fold(selector.clone(), |s, r| s.and(r)),
                    _ => selector.clone(),
                };
                if selector.is_all() {
                    identities.insert(ANY_PEER);
                } else {
                    identities.extend(cache.selected(&selector).iter().copied());
                }
            }
            Peer::Cidr { cidr, except } => {
                identities.extend(
                    cidrs
                        .iter()
                        .filter(|(prefix, _)| {
                            cidr.contains(prefix) && !except.iter().any(|e| e.contains(prefix))
                        })
                        .map(|(_, id)| id),
                );
            }
        }
    }
    identities
}

/// What an endpoint's policy is computed against besides the rules.
pub struct Inputs<'a> {
    pub cache: &'a mut SelectorCache,
    pub cidrs: &'a CidrIdentities,
    /// The endpoint's and the cluster's port names.
    pub ports: &'a PortNames,
}

fn entries(
    section: &PeerRule,
    direction: Direction,
    verdict: Verdict,
    requires: &[Selector],
    inputs: &mut Inputs<'_>,
) -> Vec<(PolicyKey, Verdict)> {
    let l4: Vec<L4Match> = match &section.l4 {
        L4Scope::Any => vec![L4Match::Any],
        L4Scope::Only(l4) => l4
            .iter()
            .copied()
            .chain(
                section
                    .named
                    .iter()
                    .flat_map(|named| inputs.ports.resolve(direction, named)),
            )
            .collect(),
    };
    if l4.is_empty() {
        return Vec::new();
    }
    let identities = peer_identities(section, requires, inputs.cache, inputs.cidrs);
    identities
        .into_iter()
        .flat_map(|identity| {
            l4.iter().map(move |l4| {
                (
                    PolicyKey {
                        identity,
                        direction,
                        l4: *l4,
                    },
                    verdict,
                )
            })
        })
        .collect()
}

/// The policy of the endpoint whose identity has `labels`.
pub fn endpoint_policy(
    rules: &[Rule],
    labels: &LabelSet,
    inputs: &mut Inputs<'_>,
    mode: EnforcementMode,
) -> EndpointPolicy {
    let selecting: Vec<&Rule> = match mode {
        EnforcementMode::Never => Vec::new(),
        _ => rules.iter().filter(|r| r.subject.matches(labels)).collect(),
    };
    let mut all = Vec::new();
    let mut enforced = [false, false];
    for (slot, direction) in [Direction::Ingress, Direction::Egress]
        .into_iter()
        .enumerate()
    {
        // Requirements of every selecting rule, allow and deny kept apart (Cilium's
        // `requirements` and `requirementsDeny`).
        let requirements = |deny: bool| -> Vec<Selector> {
            selecting
                .iter()
                .flat_map(|r| {
                    let (allow, denies, _) = sections(r, direction);
                    if deny { denies } else { allow }
                })
                .flat_map(|s| s.requires.iter().cloned())
                .collect()
        };
        let (requires, requires_deny) = (requirements(false), requirements(true));
        enforced[slot] =
            mode == EnforcementMode::Always || selecting.iter().any(|r| sections(r, direction).2);
        if enforced[slot] {
            if direction == Direction::Ingress {
                // As Cilium's default `allow-localhost`: the node itself (kubelet probes)
                // always reaches its pods; a deny rule can still say otherwise.
                all.push((
                    PolicyKey {
                        identity: ReservedIdentity::Host.id().0,
                        direction,
                        l4: L4Match::Any,
                    },
                    Verdict::Allow,
                ));
            }
        } else {
            all.push((PolicyKey::allow_all(direction), Verdict::Allow));
        }
        for rule in &selecting {
            let (allow, deny, _) = sections(rule, direction);
            for section in allow {
                all.extend(entries(
                    section,
                    direction,
                    Verdict::Allow,
                    &requires,
                    inputs,
                ));
            }
            for section in deny {
                all.extend(entries(
                    section,
                    direction,
                    Verdict::Deny,
                    &requires_deny,
                    inputs,
                ));
            }
        }
    }
    EndpointPolicy {
        map: PolicyMap::new(all),
        ingress_enforced: enforced[0],
        egress_enforced: enforced[1],
        l7_not_enforced: selecting
            .iter()
            .any(|r| r.ingress.iter().chain(&r.egress).any(PeerRule::has_l7)),
    }
}

#[cfg(test)]
mod tests {

    use cilium_crds::{CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy};
    use cilium_datapath::policy::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
    use cilium_identity::Label;
    use ipnet::IpNet;

    use super::*;
    use crate::cache::reserved_identities;
    use crate::rules::{LocalCluster, parse_ccnp, parse_cnp};

    const DB: u32 = 300;
    const EMPLOYEE: u32 = 301;
    const STRANGER: u32 = 302;
    const HOST: u32 = 1;
    const ISTIO_EMPLOYEE: u32 = 303;

    fn pod(app: &str, namespace: &str) -> LabelSet {
        pod_of("c1", app, namespace)
    }

    fn pod_of(cluster: &str, app: &str, namespace: &str) -> LabelSet {
        [
            Label::k8s("app", app),
            Label::k8s("io.kubernetes.pod.namespace", namespace),
            Label::k8s("io.cilium.k8s.policy.cluster", cluster),
        ]
        .into_iter()
        .collect()
    }

    struct World {
        rules: Vec<Rule>,
        cache: SelectorCache,
        cidrs: CidrIdentities,
        mode: EnforcementMode,
        ports: PortNames,
    }

    impl World {
        fn new(policies: &[&str]) -> Self {
            Self::in_cluster(policies, &LocalCluster::new("c1"), [])
        }

        /// `policies` read in `cluster`, which also knows the identities of `remote`.
        fn in_cluster(
            policies: &[&str],
            cluster: &LocalCluster,
            remote: impl IntoIterator<Item = (u32, LabelSet)>,
        ) -> Self {
            let mut rules = Vec::new();
            for yaml in policies {
                let parsed = if yaml.contains("kind: NetworkPolicy") {
                    let np: k8s_openapi::api::networking::v1::NetworkPolicy =
                        serde_yaml::from_str(yaml).expect("networkpolicy");
                    crate::netpol::parse_network_policy(&np, cluster)
                } else if yaml.contains("CiliumClusterwideNetworkPolicy") {
                    let ccnp: CiliumClusterwideNetworkPolicy =
                        serde_yaml::from_str(yaml).expect("ccnp");
                    parse_ccnp(&ccnp, cluster)
                } else {
                    let cnp: CiliumNetworkPolicy = serde_yaml::from_str(yaml).expect("cnp");
                    parse_cnp(&cnp, cluster)
                };
                rules.extend(parsed.expect("valid policy"));
            }
            let mut cidrs = CidrIdentities::default();
            cidrs.update(&rules);
            let mut identities = reserved_identities();
            identities.extend([
                (DB, pod("protected-db", "default")),
                (EMPLOYEE, pod("employee", "default")),
                (STRANGER, pod("stranger", "default")),
                (ISTIO_EMPLOYEE, pod("employee", "istio-space")),
            ]);
            identities.extend(remote);
            identities.extend(cidrs.identities());
            let mut cache = SelectorCache::default();
            cache.update_identities(identities);
            World {
                rules,
                cache,
                cidrs,
                mode: EnforcementMode::Default,
                ports: PortNames::default(),
            }
        }

        fn policy(&mut self, identity: u32) -> EndpointPolicy {
            let labels = self.cache.identities()[&identity].clone();
            let mut inputs = Inputs {
                cache: &mut self.cache,
                cidrs: &self.cidrs,
                ports: &self.ports,
            };
            endpoint_policy(&self.rules, &labels, &mut inputs, self.mode)
        }

        /// The datapath's verdict for a packet to (ingress) or from (egress) `identity`.
        fn allows(
            &mut self,
            endpoint: u32,
            direction: Direction,
            peer: u32,
            protocol: u8,
            port: u16,
        ) -> bool {
            self.policy(endpoint)
                .map
                .decide(peer, direction, protocol, port)
                == Some(Verdict::Allow)
        }

        fn cidr_identity(&self, prefix: &str) -> u32 {
            let prefix: IpNet = prefix.parse().expect("prefix");
            self.cidrs
                .iter()
                .find(|(p, _)| *p == prefix)
                .map(|(_, id)| id)
                .expect("a CIDR identity")
        }
    }

    /// The L4 policy of the clustermesh source document, on one cluster.
    const PROTECTED_DB: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-employees, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: protected-db}}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: employee}
    - matchLabels: {app: employee, k8s:io.kubernetes.pod.namespace: istio-space}
    toPorts:
    - ports: [{port: "6379", protocol: TCP}]
"#;

    #[test]
    fn the_protected_db_admits_both_employees_on_6379_only() {
        let mut world = World::new(&[PROTECTED_DB]);
        let db = world.policy(DB);
        assert!(db.ingress_enforced && !db.egress_enforced);
        for employee in [EMPLOYEE, ISTIO_EMPLOYEE] {
            assert!(world.allows(DB, Direction::Ingress, employee, PROTO_TCP, 6379));
            assert!(!world.allows(DB, Direction::Ingress, employee, PROTO_TCP, 6380));
            assert!(!world.allows(DB, Direction::Ingress, employee, PROTO_UDP, 6379));
        }
        assert!(!world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 6379));
        assert!(
            !world.allows(DB, Direction::Ingress, 2, PROTO_TCP, 6379),
            "world"
        );
        assert!(
            world.allows(DB, Direction::Ingress, 1, PROTO_TCP, 22),
            "the local host"
        );
        assert!(
            world.allows(DB, Direction::Egress, STRANGER, PROTO_TCP, 80),
            "egress open"
        );
        // Endpoints the policy does not select are not enforced at all.
        let stranger = world.policy(STRANGER);
        assert!(!stranger.ingress_enforced && !stranger.egress_enforced);
        assert!(world.allows(STRANGER, Direction::Ingress, 2, PROTO_TCP, 1));
    }

    /// The policy of the clustermesh source document, as applied in cluster1.
    const MESH_PROTECTED_DB: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: clustermesh-ingress-l4-policy, namespace: default}
spec:
  endpointSelector:
    matchLabels: {app: protected-db, io.cilium.k8s.policy.cluster: cluster1}
  ingress:
  - toPorts:
    - ports: [{port: "6379", protocol: TCP}]
    fromEndpoints:
    - matchLabels:
        app: employee
        io.cilium.k8s.policy.cluster: cluster2
        k8s:io.kubernetes.pod.namespace: istio-space
    - matchLabels:
        app: employee
        k8s:io.kubernetes.pod.namespace: default
"#;

    #[test]
    fn the_mesh_policy_admits_both_employees_and_no_stranger_either_way() {
        // Identities of cluster 102 sit above bit 16 (`id >> 16` is the cluster id).
        let remote = |n: u32| (102 << 16) + n;
        let (c2_employee, c2_default_employee, c2_stranger) = (remote(1), remote(2), remote(3));
        let identities = [
            (DB, pod_of("cluster1", "protected-db", "default")),
            (EMPLOYEE, pod_of("cluster1", "employee", "default")),
            (STRANGER, pod_of("cluster1", "stranger", "default")),
            (c2_employee, pod_of("cluster2", "employee", "istio-space")),
            (
                c2_default_employee,
                pod_of("cluster2", "employee", "default"),
            ),
            (c2_stranger, pod_of("cluster2", "stranger", "istio-space")),
        ];
        for default_local in [true, false] {
            let cluster = LocalCluster {
                name: "cluster1".into(),
                default_local,
            };
            let mut world = World::in_cluster(&[MESH_PROTECTED_DB], &cluster, identities.clone());
            let allowed = |world: &mut World, peer| {
                world.allows(DB, Direction::Ingress, peer, PROTO_TCP, 6379)
            };
            assert!(allowed(&mut world, EMPLOYEE), "cluster1's employee");
            assert!(allowed(&mut world, c2_employee), "cluster2's employee");
            assert!(!allowed(&mut world, STRANGER), "cluster1's stranger");
            assert!(!allowed(&mut world, c2_stranger), "cluster2's stranger");
            // The selector without a cluster picks cluster2's employees in `default` only
            // under the older all-clusters behaviour.
            assert_eq!(
                allowed(&mut world, c2_default_employee),
                !default_local,
                "default_local = {default_local}"
            );
        }
    }

    #[test]
    fn the_implied_namespace_keeps_other_namespaces_out() {
        let only_default = PROTECTED_DB.replace(
            "    - matchLabels: {app: employee, k8s:io.kubernetes.pod.namespace: istio-space}\n",
            "",
        );
        let mut world = World::new(&[&only_default]);
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6379));
        assert!(!world.allows(DB, Direction::Ingress, ISTIO_EMPLOYEE, PROTO_TCP, 6379));
        // And the policy only selects pods of its own namespace.
        let elsewhere = only_default.replace("app: protected-db", "app: employee");
        let mut world = World::new(&[&elsewhere]);
        assert!(world.policy(EMPLOYEE).ingress_enforced);
        assert!(!world.policy(ISTIO_EMPLOYEE).ingress_enforced);
    }

    #[test]
    fn deny_beats_allow_and_ports_ranges_and_any() {
        let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: protected-db}}
  ingress:
  - fromEntities: [all]
    toPorts: [{ports: [{port: "8000", endPort: 8099, protocol: TCP}, {port: "53", protocol: ANY}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: stranger}}]
"#;
        let mut world = World::new(&[policy]);
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 8042));
        assert!(
            world.allows(DB, Direction::Ingress, 2, PROTO_TCP, 8099),
            "all includes world"
        );
        assert!(!world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 8100));
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_UDP, 53));
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 53));
        assert!(
            !world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 8042),
            "deny wins"
        );
    }

    #[test]
    fn egress_entities_and_cidrs_with_except() {
        let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: employee}}
  egress:
  - toEndpoints: [{matchLabels: {app: protected-db}}]
  - toEntities: [host]
  - toCIDRSet: [{cidr: 198.51.100.0/24, except: [198.51.100.128/25]}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - icmps: [{fields: [{type: EchoRequest}]}]
    toEndpoints: [{matchLabels: {app: stranger}}]
"#;
        let mut world = World::new(&[policy]);
        let inside = world.cidr_identity("198.51.100.0/24");
        let excepted = world.cidr_identity("198.51.100.128/25");
        assert!(world.policy(EMPLOYEE).egress_enforced);
        assert!(world.allows(EMPLOYEE, Direction::Egress, DB, PROTO_TCP, 5432));
        assert!(
            world.allows(EMPLOYEE, Direction::Egress, 1, PROTO_UDP, 53),
            "host"
        );
        assert!(world.allows(EMPLOYEE, Direction::Egress, inside, PROTO_TCP, 443));
        assert!(!world.allows(EMPLOYEE, Direction::Egress, inside, PROTO_TCP, 80));
        assert!(
            !world.allows(EMPLOYEE, Direction::Egress, excepted, PROTO_TCP, 443),
            "except"
        );
        assert!(
            !world.allows(EMPLOYEE, Direction::Egress, 2, PROTO_TCP, 443),
            "rest of world"
        );
        assert!(world.allows(EMPLOYEE, Direction::Egress, STRANGER, PROTO_ICMP, 8));
        assert!(!world.allows(EMPLOYEE, Direction::Egress, STRANGER, PROTO_ICMP, 13));
        assert!(!world.allows(EMPLOYEE, Direction::Egress, STRANGER, PROTO_TCP, 8));
        // A world entity rule selects the CIDR identities too (they are outside the cluster).
        let world_rule = policy.replace("toEntities: [host]", "toEntities: [world]");
        let mut world = World::new(&[&world_rule]);
        let inside = world.cidr_identity("198.51.100.0/24");
        assert!(world.allows(EMPLOYEE, Direction::Egress, inside, PROTO_TCP, 80));
        assert!(world.allows(EMPLOYEE, Direction::Egress, 2, PROTO_TCP, 80));
    }

    #[test]
    fn requires_narrow_every_peer_and_cluster_entity() {
        let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
specs:
- endpointSelector: {matchLabels: {app: protected-db}}
  ingress:
  - fromRequires: [{matchLabels: {app: employee}}]
- endpointSelector: {matchLabels: {app: protected-db}}
  ingress:
  - fromEndpoints: [{}]
"#;
        let mut world = World::new(&[policy]);
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 1));
        assert!(!world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 1));
        let cluster = r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: c}
spec:
  endpointSelector: {matchLabels: {app: protected-db}}
  ingress:
  - fromEntities: [cluster]
"#;
        let mut world = World::new(&[cluster]);
        for peer in [EMPLOYEE, ISTIO_EMPLOYEE, STRANGER, 1, 6] {
            assert!(
                world.allows(DB, Direction::Ingress, peer, PROTO_TCP, 1),
                "{peer}"
            );
        }
        assert!(
            !world.allows(DB, Direction::Ingress, 2, PROTO_TCP, 1),
            "world is not cluster"
        );
    }

    /// Cilium's `examples/policies/l3/egress-default-deny.yaml` and its ingress twin: an
    /// empty rule selects no peer, and the endpoint becomes default-deny that way.
    #[test]
    fn an_empty_rule_selects_no_peer_and_denies_by_default() {
        for direction in ["ingress", "egress"] {
            let policy = format!(
                r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: deny-all, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: stranger}}}}
  {direction}:
  - {{}}
"#
            );
            let mut world = World::new(&[&policy]);
            let stranger = world.policy(STRANGER);
            let dir = if direction == "ingress" {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            assert_eq!(
                (stranger.ingress_enforced, stranger.egress_enforced),
                (dir == Direction::Ingress, dir == Direction::Egress)
            );
            for peer in [EMPLOYEE, DB, 2, 6] {
                assert!(
                    !world.allows(STRANGER, dir, peer, PROTO_TCP, 80),
                    "{direction} {peer}"
                );
                assert!(
                    !world.allows(STRANGER, dir, peer, PROTO_ICMP, 8),
                    "{direction} {peer}"
                );
            }
            // A section with only requirements selects no peer either.
            let requires_only = policy.replace(
                "- {}",
                &format!(
                    "- {}Requires: [{{matchLabels: {{app: employee}}}}]",
                    if dir == Direction::Ingress {
                        "from"
                    } else {
                        "to"
                    }
                ),
            );
            let mut world = World::new(&[&requires_only]);
            assert!(
                !world.allows(STRANGER, dir, EMPLOYEE, PROTO_TCP, 80),
                "{direction}"
            );
        }
    }

    /// Cilium's L4-only rule ("Limit ingress/egress ports"): ports without a peer admit
    /// every peer on those ports.
    #[test]
    fn a_rule_with_only_ports_admits_every_peer_on_them() {
        let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l4-only, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: employee}}
  egress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - icmps: [{fields: [{type: Echo}]}]
"#;
        let mut world = World::new(&[policy]);
        for peer in [DB, STRANGER, 2, 1] {
            assert!(world.allows(EMPLOYEE, Direction::Egress, peer, PROTO_TCP, 80));
            assert!(!world.allows(EMPLOYEE, Direction::Egress, peer, PROTO_TCP, 81));
            assert!(world.allows(EMPLOYEE, Direction::Egress, peer, PROTO_ICMP, 8));
        }
    }

    /// Cilium's `requirements` narrow `fromEndpoints` only, and the deny sections' own
    /// requirements (`requirementsDeny`) never narrow an allow, nor the other way round.
    #[test]
    fn requirements_narrow_endpoints_only_and_allow_and_deny_apart() {
        let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: protected-db}}
  ingress:
  - fromEndpoints: [{}]
    fromEntities: [host, world]
  - fromRequires: [{matchLabels: {app: employee}}]
  ingressDeny:
  - fromEndpoints: [{}]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
  - fromRequires: [{matchLabels: {app: stranger}}]
"#;
        let mut world = World::new(&[policy]);
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 80));
        assert!(
            !world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 80),
            "the allow requirement narrows fromEndpoints"
        );
        assert!(
            world.allows(DB, Direction::Ingress, 2, PROTO_TCP, 80),
            "entities are not narrowed"
        );
        assert!(
            world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 22),
            "the deny is narrowed to strangers by the deny requirement, not the allow one"
        );
        assert!(!world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 22));
    }

    /// The seed document's L7 policy: until L7 is enforced, its port stays closed to the
    /// peers it names (never opened at L4); an L4-only rule elsewhere still opens it.
    #[test]
    fn l7_rules_keep_their_port_closed() {
        let l7 = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: rule1, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: protected-db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: employee}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: POST, path: /v1/request-landing}]}
    - ports: [{port: "6379", protocol: TCP}]
"#;
        let mut world = World::new(&[l7]);
        let db = world.policy(DB);
        assert!(db.ingress_enforced && db.l7_not_enforced);
        assert!(!world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 80));
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6379));
        let only_l7 = l7.replace("    - ports: [{port: \"6379\", protocol: TCP}]\n", "");
        let mut world = World::new(&[&only_l7]);
        for port in [80, 6379, 1] {
            assert!(
                !world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, port),
                "{port}"
            );
        }
        let l4 = PROTECTED_DB.replace("6379", "80");
        let mut world = World::new(&[&only_l7, &l4]);
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 80));
    }

    #[test]
    fn unenforceable_fields_reject_the_policy() {
        for (field, needle) in [
            (
                "authentication: {mode: required}",
                "spec.ingress[0].authentication.mode: \"required\"",
            ),
            (
                "toPorts: [{ports: [{port: \"443\"}], serverNames: [a.example]}]",
                "spec.ingress[0].toPorts[0].serverNames",
            ),
            (
                "icmps: [{fields: [{type: PacketTooBig}]}]",
                "\"PacketTooBig\" is not an IPv4 ICMP type",
            ),
        ] {
            let yaml = PROTECTED_DB.replace(
                "    toPorts:\n    - ports: [{port: \"6379\", protocol: TCP}]\n",
                &format!("    {field}\n"),
            );
            let cnp: CiliumNetworkPolicy = serde_yaml::from_str(&yaml).expect("cnp");
            let problems = parse_cnp(&cnp, &LocalCluster::new("c1")).expect_err(field);
            assert!(problems.iter().any(|p| p.contains(needle)), "{problems:?}");
        }
        let disabled = PROTECTED_DB.replace(
            "    toPorts:\n",
            "    authentication: {mode: disabled}\n    toPorts:\n",
        );
        let cnp: CiliumNetworkPolicy = serde_yaml::from_str(&disabled).expect("cnp");
        assert!(parse_cnp(&cnp, &LocalCluster::new("c1")).is_ok());
    }

    /// Cilium's named ports: an ingress rule's name is the selected endpoint's own port, an
    /// egress rule's the peers'; allow and deny alike; an unknown name opens nothing.
    #[test]
    fn named_ports_resolve_per_endpoint() {
        let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
specs:
- endpointSelector: {matchLabels: {app: protected-db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: employee}}]
    toPorts: [{ports: [{port: redis, protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: stranger}}]
    toPorts: [{ports: [{port: admin}]}]
- endpointSelector: {matchLabels: {app: employee}}
  egress:
  - toEndpoints: [{matchLabels: {app: protected-db}}]
    toPorts: [{ports: [{port: redis, protocol: TCP}, {port: nowhere}]}]
"#;
        let mut world = World::new(&[policy]);
        world.ports = PortNames::new(
            [("redis", PROTO_TCP, 6379), ("admin", PROTO_TCP, 9000)],
            [("redis", PROTO_TCP, 6380)],
        );
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6379));
        assert!(!world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6380));
        assert!(
            world
                .policy(DB)
                .map
                .decide(STRANGER, Direction::Ingress, PROTO_TCP, 9000)
                == Some(Verdict::Deny)
        );
        assert!(world.allows(EMPLOYEE, Direction::Egress, DB, PROTO_TCP, 6380));
        assert!(!world.allows(EMPLOYEE, Direction::Egress, DB, PROTO_TCP, 6379));
        // Without the names nothing opens (the rule still makes the endpoint enforced).
        world.ports = PortNames::default();
        let db = world.policy(DB);
        assert!(db.ingress_enforced);
        assert!(!world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6379));
    }

    /// `toEntities: kube-apiserver` selects identity 7 (an apiserver on another node, which
    /// `remote-node` still selects too), not other nodes.
    #[test]
    fn the_kube_apiserver_entity() {
        let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: employee}}
  egress:
  - toEntities: [kube-apiserver]
    toPorts: [{ports: [{port: "6443", protocol: TCP}]}]
"#;
        let mut world = World::new(&[policy]);
        assert!(world.allows(EMPLOYEE, Direction::Egress, 7, PROTO_TCP, 6443));
        assert!(!world.allows(EMPLOYEE, Direction::Egress, 6, PROTO_TCP, 6443));
        assert!(!world.allows(EMPLOYEE, Direction::Egress, 7, PROTO_TCP, 22));
        let remote_nodes = policy.replace("[kube-apiserver]", "[remote-node]");
        let mut world = World::new(&[&remote_nodes]);
        assert!(world.allows(EMPLOYEE, Direction::Egress, 7, PROTO_TCP, 6443));
    }

    fn netpol(spec: &str) -> String {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: default}}\nspec:\n{spec}"
        )
    }

    /// Kubernetes' documented NetworkPolicy semantics, as Cilium translates them.
    #[test]
    fn network_policies_as_kubernetes_defines_them() {
        // Deny all ingress: a listed type without rules.
        let mut world = World::new(&[&netpol("  podSelector: {}\n  policyTypes: [Ingress]\n")]);
        let db = world.policy(DB);
        assert!(db.ingress_enforced && !db.egress_enforced);
        assert!(!world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6379));
        assert!(
            world.allows(DB, Direction::Ingress, HOST, PROTO_TCP, 6379),
            "the node"
        );
        assert!(
            !world.policy(ISTIO_EMPLOYEE).ingress_enforced,
            "other namespaces"
        );

        // A pod selector admits pods of the policy's namespace only, on the ports given.
        let from_employees = netpol(
            "  podSelector: {matchLabels: {app: protected-db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: employee}}}]\n    ports: [{port: 6379}]\n",
        );
        let mut world = World::new(&[&from_employees]);
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6379));
        assert!(
            !world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_UDP, 6379),
            "TCP by default"
        );
        assert!(!world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6380));
        assert!(!world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 6379));
        assert!(!world.allows(DB, Direction::Ingress, ISTIO_EMPLOYEE, PROTO_TCP, 6379));
        assert!(
            !world.policy(DB).egress_enforced,
            "no egress rules: Ingress only"
        );

        // With a namespace selector, pods of every matching namespace; `{}` is all of them,
        // yet no reserved identity (world stays out).
        let any_namespace = from_employees.replace(
            "{podSelector: {matchLabels: {app: employee}}}",
            "{podSelector: {matchLabels: {app: employee}}, namespaceSelector: {}}",
        );
        let mut world = World::new(&[&any_namespace]);
        assert!(world.allows(DB, Direction::Ingress, ISTIO_EMPLOYEE, PROTO_TCP, 6379));
        assert!(!world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 6379));
        assert!(!world.allows(DB, Direction::Ingress, 2, PROTO_TCP, 6379));

        // `ingress: [{}]` admits everyone, world included, on every port.
        let open = netpol("  podSelector: {}\n  ingress: [{}]\n");
        let mut world = World::new(&[&open]);
        assert!(world.allows(DB, Direction::Ingress, 2, PROTO_UDP, 53));

        // Egress with an ipBlock and except; port ranges with endPort; Egress is then a
        // policy type by default, Ingress too (with no rules: denied).
        let egress = netpol(
            "  podSelector: {matchLabels: {app: employee}}\n  egress:\n  - to: [{ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.128/25]}}]\n    ports: [{port: 8000, endPort: 8099, protocol: UDP}]\n",
        );
        let mut world = World::new(&[&egress]);
        let inside = world.cidr_identity("198.51.100.0/24");
        let excepted = world.cidr_identity("198.51.100.128/25");
        let employee = world.policy(EMPLOYEE);
        assert!(employee.ingress_enforced && employee.egress_enforced);
        assert!(world.allows(EMPLOYEE, Direction::Egress, inside, PROTO_UDP, 8042));
        assert!(!world.allows(EMPLOYEE, Direction::Egress, inside, PROTO_UDP, 8100));
        assert!(!world.allows(EMPLOYEE, Direction::Egress, excepted, PROTO_UDP, 8042));
        assert!(
            !world.allows(EMPLOYEE, Direction::Egress, DB, PROTO_UDP, 8042),
            "pods are not the block"
        );
        assert!(!world.allows(EMPLOYEE, Direction::Ingress, DB, PROTO_TCP, 1));
    }

    #[test]
    fn network_policies_join_cilium_policies_and_deny_still_wins() {
        let allow = netpol(
            "  podSelector: {matchLabels: {app: protected-db}}\n  ingress:\n  - from: [{podSelector: {}}]\n",
        );
        let deny = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: d, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: protected-db}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: stranger}}]
"#;
        let mut world = World::new(&[&allow, deny]);
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 80));
        assert!(!world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 80));
        // A bad selector operator refuses the policy with the field.
        let bad = allow.replace(
            "{podSelector: {}}",
            "{podSelector: {matchExpressions: [{key: app, operator: Near}]}}",
        );
        let np: k8s_openapi::api::networking::v1::NetworkPolicy =
            serde_yaml::from_str(&bad).expect("np");
        let problems = crate::netpol::parse_network_policy(&np, &LocalCluster::new("c1"))
            .expect_err("refused");
        assert!(
            problems[0].contains("spec.ingress[0].from[0].podSelector"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_new_identity_is_selected_incrementally() {
        let mut world = World::new(&[PROTECTED_DB]);
        let before = world.policy(DB).map;
        let mut identities = world.cache.identities().clone();
        identities.insert(304, pod("employee", "default"));
        assert_eq!(world.cache.update_identities(identities), 1);
        let after = world.policy(DB).map;
        assert_ne!(before, after);
        assert!(world.allows(DB, Direction::Ingress, 304, PROTO_TCP, 6379));
    }

    #[test]
    fn default_deny_can_be_turned_off_and_l7_is_flagged() {
        let policy = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: protected-db}}
  enableDefaultDeny: {ingress: false}
  ingress:
  - fromEndpoints: [{matchLabels: {app: employee}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{method: GET}]}}]
"#;
        let mut world = World::new(&[policy]);
        let db = world.policy(DB);
        assert!(!db.ingress_enforced);
        assert!(db.l7_not_enforced);
        assert!(world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 22));
    }

    #[test]
    fn enforcement_modes() {
        let mut world = World::new(&[PROTECTED_DB]);
        world.mode = EnforcementMode::Always;
        // Selected by no rule, yet enforced both ways: only the node gets in.
        let stranger = world.policy(STRANGER);
        assert!(stranger.ingress_enforced && stranger.egress_enforced);
        assert!(!world.allows(STRANGER, Direction::Ingress, EMPLOYEE, PROTO_TCP, 80));
        assert!(!world.allows(STRANGER, Direction::Egress, DB, PROTO_TCP, 6379));
        assert!(world.allows(STRANGER, Direction::Ingress, HOST, PROTO_TCP, 80));
        // The rule's allows still apply.
        assert!(world.allows(DB, Direction::Ingress, EMPLOYEE, PROTO_TCP, 6379));
        assert!(!world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 6379));

        world.mode = EnforcementMode::Never;
        let db = world.policy(DB);
        assert!(!db.ingress_enforced && !db.egress_enforced);
        assert!(world.allows(DB, Direction::Ingress, STRANGER, PROTO_TCP, 6379));

        assert_eq!("always".parse(), Ok(EnforcementMode::Always));
        let error = "sometimes"
            .parse::<EnforcementMode>()
            .expect_err("rejected");
        assert!(error.contains("sometimes"), "{error}");
    }

    #[test]
    fn unusable_policies_are_rejected_whole() {
        let named = PROTECTED_DB.replace("port: \"6379\"", "port: redis, endPort: 6380");
        let cnp: CiliumNetworkPolicy = serde_yaml::from_str(&named).expect("cnp");
        let problems =
            parse_cnp(&cnp, &LocalCluster::new("c1")).expect_err("a named range is no range");
        assert!(
            problems[0].contains("spec.ingress[0].toPorts[0].ports[0].endPort"),
            "{problems:?}"
        );
        let bad_cidr = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
spec:
  endpointSelector: {}
  egress: [{toCIDR: [10.0.0.0/33]}]
"#;
        let cnp: CiliumNetworkPolicy = serde_yaml::from_str(bad_cidr).expect("cnp");
        assert!(parse_cnp(&cnp, &LocalCluster::new("c1")).is_err());
    }

    #[test]
    fn cidr_numbers_stay_with_their_prefix() {
        let mut world = World::new(&[r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: default}
spec:
  endpointSelector: {}
  egress: [{toCIDR: [192.0.2.0/24, 203.0.113.0/24]}]
"#]);
        let kept = world.cidr_identity("203.0.113.0/24");
        let only_second: Vec<Rule> = world
            .rules
            .iter()
            .cloned()
            .map(|mut r| {
                r.egress[0].peers.remove(0);
                r
            })
            .collect();
        world.cidrs.update(&only_second);
        assert_eq!(world.cidr_identity("203.0.113.0/24"), kept);
        assert_eq!(world.cidrs.iter().count(), 1);
    }
}
