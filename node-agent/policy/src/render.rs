//! Rules and selectors as the agent shows them (`cilium policy get`, `cilium policy
//! selectors`): Cilium's rule format with every key's source spelled out (`any:` when the
//! policy named none) and the namespace a CiliumNetworkPolicy implies made explicit.

use std::fmt;

use cilium_datapath::L4Match;
use cilium_datapath::policy::{PROTO_ICMP, PROTO_ICMPV6, protocol_name};
use serde_json::{Map, Value, json};

use crate::rules::{L4Scope, Peer, PeerRule, Rule};
use crate::selector::{Op, Requirement, Selector};

fn key_text(requirement: &Requirement) -> String {
    format!(
        "{}:{}",
        requirement.source.as_deref().unwrap_or("any"),
        requirement.key
    )
}

fn values_text(values: &std::collections::BTreeSet<String>) -> String {
    values.iter().cloned().collect::<Vec<_>>().join(",")
}

/// `k8s:app=db, any:tier in (a,b), reserved:host, !k8s:env`; `(all)` for the empty one.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements().is_empty() {
            return f.write_str("(all)");
        }
        let parts: Vec<String> = self
            .requirements()
            .iter()
            .map(|r| {
                let key = key_text(r);
                match &r.op {
                    Op::In(values) if values.len() == 1 => format!("{key}={}", values_text(values)),
                    Op::In(values) => format!("{key} in ({})", values_text(values)),
                    Op::NotIn(values) => format!("{key} notin ({})", values_text(values)),
                    Op::Exists => key,
                    Op::DoesNotExist => format!("!{key}"),
                }
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// A selector in the API's form: single values as `matchLabels`, the rest as expressions.
pub fn selector_json(selector: &Selector) -> Value {
    let mut labels = Map::new();
    let mut expressions = Vec::new();
    for r in selector.requirements() {
        let key = key_text(r);
        match &r.op {
            Op::In(values) if values.len() == 1 => {
                labels.insert(key, Value::String(values_text(values)));
            }
            Op::In(values) => {
                expressions.push(json!({"key": key, "operator": "In", "values": values}))
            }
            Op::NotIn(values) => {
                expressions.push(json!({"key": key, "operator": "NotIn", "values": values}))
            }
            Op::Exists => expressions.push(json!({"key": key, "operator": "Exists"})),
            Op::DoesNotExist => expressions.push(json!({"key": key, "operator": "DoesNotExist"})),
        }
    }
    let mut out = Map::new();
    if !labels.is_empty() {
        out.insert("matchLabels".into(), Value::Object(labels));
    }
    if !expressions.is_empty() {
        out.insert("matchExpressions".into(), Value::Array(expressions));
    }
    Value::Object(out)
}

/// The L4 part of a section: `toPorts` and `icmps`.
fn l4_json(l4: &[L4Match], out: &mut Map<String, Value>) {
    let mut ports = Vec::new();
    let mut icmp_fields = Vec::new();
    for m in l4 {
        match *m {
            L4Match::Any => {}
            L4Match::Protocol(protocol) => {
                ports.push(json!({"port": "0", "protocol": protocol_name(protocol)}))
            }
            L4Match::Ports {
                protocol: protocol @ (PROTO_ICMP | PROTO_ICMPV6),
                port,
                ..
            } => {
                let family = if protocol == PROTO_ICMP {
                    "IPv4"
                } else {
                    "IPv6"
                };
                icmp_fields.push(json!({"type": port, "family": family}));
            }
            L4Match::Ports {
                protocol,
                port,
                prefix_len,
            } => {
                let last = u32::from(port) + (u32::from(u16::MAX) >> u32::from(prefix_len.min(16)));
                let mut entry =
                    json!({"port": port.to_string(), "protocol": protocol_name(protocol)});
                if last > u32::from(port) {
                    entry["endPort"] = json!(last);
                }
                ports.push(entry);
            }
        }
    }
    if !ports.is_empty() {
        out.insert("toPorts".into(), json!([{ "ports": ports }]));
    }
    if !icmp_fields.is_empty() {
        out.insert("icmps".into(), json!([{ "fields": icmp_fields }]));
    }
}

/// One section; `side` is `from` (ingress) or `to` (egress).
fn peer_rule_json(section: &PeerRule, side: &str) -> Value {
    let mut out = Map::new();
    let endpoints: Vec<Value> = section
        .peers
        .iter()
        .filter_map(|p| match p {
            Peer::Endpoints(selector) | Peer::Entity(selector) => Some(selector_json(selector)),
            Peer::Cidr { .. } => None,
        })
        .collect();
    let cidrs: Vec<Value> = section
        .peers
        .iter()
        .filter_map(|p| match p {
            Peer::Cidr { cidr, except } if except.is_empty() => {
                Some(json!({"cidr": cidr.to_string()}))
            }
            Peer::Cidr { cidr, except } => {
                let except: Vec<String> = except.iter().map(ToString::to_string).collect();
                Some(json!({"cidr": cidr.to_string(), "except": except}))
            }
            Peer::Endpoints(_) | Peer::Entity(_) => None,
        })
        .collect();
    if !endpoints.is_empty() {
        out.insert(format!("{side}Endpoints"), Value::Array(endpoints));
    }
    if !cidrs.is_empty() {
        out.insert(format!("{side}CIDRSet"), Value::Array(cidrs));
    }
    if !section.requires.is_empty() {
        out.insert(
            format!("{side}Requires"),
            section.requires.iter().map(selector_json).collect(),
        );
    }
    if let L4Scope::Only(l4) = &section.l4 {
        l4_json(l4, &mut out);
    }
    if !section.named.is_empty() {
        let named = section.named.iter().flat_map(|n| {
            n.protocols
                .iter()
                .map(|p| json!({"port": n.name, "protocol": protocol_name(*p)}))
        });
        match out
            .get_mut("toPorts")
            .and_then(|t| t[0]["ports"].as_array_mut())
        {
            Some(ports) => ports.extend(named),
            None => {
                out.insert(
                    "toPorts".into(),
                    json!([{ "ports": named.collect::<Vec<_>>() }]),
                );
            }
        }
    }
    if section.has_l7() {
        // Not Cilium's: the ports of L7 rules, which stay closed while L7 is not enforced.
        let mut closed = Map::new();
        l4_json(&section.l7_ports, &mut closed);
        out.insert("l7NotEnforcedClosedPorts".into(), Value::Object(closed));
    }
    Value::Object(out)
}

/// A rule in Cilium's format, with the labels naming the policy it came from.
pub fn rule_json(rule: &Rule) -> Value {
    let mut out = Map::new();
    out.insert("endpointSelector".into(), selector_json(&rule.subject));
    for (name, sections, side) in [
        ("ingress", &rule.ingress, "from"),
        ("ingressDeny", &rule.ingress_deny, "from"),
        ("egress", &rule.egress, "to"),
        ("egressDeny", &rule.egress_deny, "to"),
    ] {
        if !sections.is_empty() {
            out.insert(
                name.into(),
                sections.iter().map(|s| peer_rule_json(s, side)).collect(),
            );
        }
    }
    if !rule.default_deny_ingress || !rule.default_deny_egress {
        out.insert(
            "enableDefaultDeny".into(),
            json!({"ingress": rule.default_deny_ingress, "egress": rule.default_deny_egress}),
        );
    }
    let label = |key: &str, value: &str| json!({"key": key, "value": value, "source": "k8s"});
    let mut labels = vec![label(
        "io.cilium.k8s.policy.derived-from",
        &rule.source.kind.to_string(),
    )];
    labels.push(label("io.cilium.k8s.policy.name", &rule.source.name));
    if let Some(namespace) = &rule.source.namespace {
        labels.push(label("io.cilium.k8s.policy.namespace", namespace));
    }
    out.insert("labels".into(), Value::Array(labels));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use cilium_crds::CiliumNetworkPolicy;

    use super::*;
    use crate::rules::{LocalCluster, parse_cnp};

    fn rules(yaml: &str) -> Vec<Rule> {
        let cnp: CiliumNetworkPolicy = serde_yaml::from_str(yaml).expect("policy");
        parse_cnp(&cnp, &LocalCluster::new("default")).expect("valid")
    }

    /// The rule of `cilium policy get` in the source document ("What's NOT inside
    /// cilium-etcd"): source prefixes spelled out, the namespace made explicit; peer
    /// selectors also name the local cluster, as with Cilium 1.19's default (the document
    /// predates it).
    #[test]
    fn the_documented_rule_shape() {
        let rules = rules(
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cnp-test, namespace: default}
spec:
  endpointSelector: {matchLabels: {cnp: test}}
  ingress:
  - fromEndpoints: [{matchLabels: {cnp: apitest}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "8000", endPort: 8003, protocol: TCP}]}]
  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
    icmps: [{fields: [{type: 8}]}]
"#,
        );
        let json = rule_json(&rules[0]);
        assert_eq!(
            json["endpointSelector"]["matchLabels"],
            json!({"any:cnp": "test", "k8s:io.kubernetes.pod.namespace": "default"})
        );
        assert_eq!(
            json["ingress"][0]["fromEndpoints"][0]["matchLabels"],
            json!({
                "any:cnp": "apitest",
                "k8s:io.cilium.k8s.policy.cluster": "default",
                "k8s:io.kubernetes.pod.namespace": "default",
            })
        );
        assert_eq!(
            json["ingress"][0]["toPorts"][0]["ports"],
            json!([{"port": "80", "protocol": "TCP"}, {"port": "8000", "endPort": 8003, "protocol": "TCP"}])
        );
        assert_eq!(
            json["ingress"][1]["fromCIDRSet"],
            json!([{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}])
        );
        assert_eq!(
            json["ingress"][1]["icmps"],
            json!([{"fields": [{"type": 8, "family": "IPv4"}]}])
        );
        assert_eq!(json["labels"][1]["value"], "cnp-test");
        assert_eq!(json["labels"][2]["value"], "default");
        assert!(json.get("egress").is_none());
    }

    #[test]
    fn selectors_print_every_operator() {
        let selector = Selector::label(Some("k8s"), "app", "db")
            .and(&Selector::reserved("host"))
            .and(&Selector::label(None, "tier", "web"));
        assert_eq!(
            selector.to_string(),
            "any:tier=web, k8s:app=db, reserved:host"
        );
        assert_eq!(Selector::all().to_string(), "(all)");
        assert_eq!(
            selector_json(&Selector::reserved("world")),
            json!({"matchExpressions": [{"key": "reserved:world", "operator": "Exists"}]})
        );
    }
}
