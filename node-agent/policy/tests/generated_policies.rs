//! Policies nobody wrote by hand: CiliumNetworkPolicies, CiliumClusterwideNetworkPolicies and
//! NetworkPolicies generated from the fields users write, with values right, wrong and absurd
//! (bad CIDRs, ports, protocols, operators, entities, empty and huge strings, wrong types).
//! Whatever decodes goes through validation and translation as the agent runs them: no
//! panic, and a refusal names every reason in words. `PROPTEST_CASES` sets how many (256
//! by default; `make chaos` runs many more).

use cilium_crds::validation::validate_policy;
use cilium_crds::{CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy};
use cilium_policy::{LocalCluster, parse_ccnp, parse_cnp, parse_network_policy};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use proptest::prelude::*;
use serde_json::{Value, json};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,8}",
        "[a-zA-Z0-9./:_-]{0,20}",
        Just("k8s:io.kubernetes.pod.namespace".to_owned()),
        Just("x".repeat(300)),
        any::<String>(),
    ]
}

fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u32..70_000).prop_map(|p| json!(p.to_string())),
        (0i64..70_000).prop_map(|p| json!(p)),
        Just(json!("http")),
        Just(json!("-1")),
        Just(json!("80-90")),
        text().prop_map(Value::String),
    ]
}

fn protocol() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("TCP")),
        Just(json!("UDP")),
        Just(json!("SCTP")),
        Just(json!("ANY")),
        Just(json!("ICMP")),
        Just(json!("tcp")),
        text().prop_map(Value::String),
    ]
}

fn cidr() -> impl Strategy<Value = Value> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..40)
            .prop_map(|(a, l)| json!(format!("{}.{}.{}.{}/{l}", a[0], a[1], a[2], a[3]))),
        Just(json!("fd00::/8")),
        Just(json!("0.0.0.0/0")),
        Just(json!("10.0.0.1")),
        text().prop_map(Value::String),
    ]
}

fn labels() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(text(), text(), 0..3).prop_map(|m| json!(m))
}

fn selector() -> impl Strategy<Value = Value> {
    let expression = (
        text(),
        prop_oneof![
            Just("In"),
            Just("NotIn"),
            Just("Exists"),
            Just("DoesNotExist"),
            Just("Bogus")
        ],
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(key, operator, values)| json!({"key": key, "operator": operator, "values": values}),
        );
    (labels(), prop::collection::vec(expression, 0..2)).prop_map(
        |(labels, expressions)| json!({"matchLabels": labels, "matchExpressions": expressions}),
    )
}

fn to_ports() -> impl Strategy<Value = Value> {
    let port_protocol = (port(), prop::option::of(0i64..70_000), protocol()).prop_map(
        |(port, end, protocol)| json!({"port": port, "endPort": end, "protocol": protocol}),
    );
    let http = (text(), text()).prop_map(|(method, path)| json!({"method": method, "path": path}));
    (
        prop::collection::vec(port_protocol, 0..3),
        prop::option::of(prop::collection::vec(http, 0..2)),
    )
        .prop_map(|(ports, http)| match http {
            Some(http) => json!([{"ports": ports, "rules": {"http": http}}]),
            None => json!([{"ports": ports}]),
        })
}

/// One ingress or egress rule with a random subset of the peer fields.
fn rule(egress: bool) -> impl Strategy<Value = Value> {
    let (endpoints, cidr_key, cidr_set_key, entities, requires) = if egress {
        (
            "toEndpoints",
            "toCIDR",
            "toCIDRSet",
            "toEntities",
            "toRequires",
        )
    } else {
        (
            "fromEndpoints",
            "fromCIDR",
            "fromCIDRSet",
            "fromEntities",
            "fromRequires",
        )
    };
    let entity = prop_oneof![
        Just("world"),
        Just("cluster"),
        Just("host"),
        Just("all"),
        Just("kube-apiserver"),
        Just("remote-node"),
        Just("nonsense")
    ];
    (
        prop::option::of(prop::collection::vec(selector(), 0..2)),
        prop::option::of(prop::collection::vec(cidr(), 0..2)),
        prop::option::of((cidr(), prop::collection::vec(cidr(), 0..2))),
        prop::option::of(prop::collection::vec(entity, 0..2)),
        prop::option::of(to_ports()),
        prop::option::of(prop::collection::vec(selector(), 0..1)),
        prop::option::of(prop::collection::vec((0u32..300, protocol()), 0..2)),
        any::<bool>(),
    )
        .prop_map(
            move |(eps, cidrs, cidr_set, ents, ports, reqs, icmps, fqdn)| {
                let mut rule = serde_json::Map::new();
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        rule.insert(key.to_owned(), value);
                    }
                };
                put(endpoints, eps.map(|v| json!(v)));
                put(cidr_key, cidrs.map(|v| json!(v)));
                put(
                    cidr_set_key,
                    cidr_set.map(|(c, except)| json!([{"cidr": c, "except": except}])),
                );
                put(entities, ents.map(|v| json!(v)));
                put("toPorts", ports);
                put(requires, reqs.map(|v| json!(v)));
                put(
                    "icmps",
                    icmps.map(|fields| {
                        let fields: Vec<Value> = fields
                            .into_iter()
                            .map(|(t, family)| json!({"type": t, "family": family}))
                            .collect();
                        json!([{"fields": fields}])
                    }),
                );
                if egress && fqdn {
                    rule.insert("toFQDNs".into(), json!([{"matchName": "example.com"}]));
                }
                Value::Object(rule)
            },
        )
}

fn spec() -> impl Strategy<Value = Value> {
    (
        selector(),
        prop::option::of(prop::collection::vec(rule(false), 0..3)),
        prop::option::of(prop::collection::vec(rule(true), 0..3)),
        prop::option::of(prop::collection::vec(rule(false), 0..2)),
        prop::option::of(prop::collection::vec(rule(true), 0..2)),
    )
        .prop_map(|(subject, ingress, egress, ingress_deny, egress_deny)| {
            let mut spec = json!({"endpointSelector": subject});
            for (key, value) in [
                ("ingress", ingress),
                ("egress", egress),
                ("ingressDeny", ingress_deny),
                ("egressDeny", egress_deny),
            ] {
                if let Some(rules) = value {
                    spec[key] = json!(rules);
                }
            }
            spec
        })
}

/// Anything JSON: a value of the wrong type where a rule field goes.
fn anything() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("endpointSelector".to_owned()),
                    Just("ingress".to_owned()),
                    Just("toPorts".to_owned()),
                    Just("port".to_owned()),
                    text()
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn cluster() -> LocalCluster {
    LocalCluster {
        name: "default".into(),
        default_local: true,
    }
}

/// The refusal names reasons, each in words.
fn explained(reasons: &[String]) -> bool {
    !reasons.is_empty() && reasons.iter().all(|r| !r.trim().is_empty())
}

fn cnp(spec: Value) -> Value {
    json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "generated", "namespace": "default"},
        "spec": spec,
    })
}

proptest! {
    #[test]
    fn generated_cnps_are_enforced_or_refused_with_reasons(spec in spec()) {
        if let Ok(policy) = serde_json::from_value::<CiliumNetworkPolicy>(cnp(spec)) {
            let problems = validate_policy(&policy);
            if problems.is_empty() {
                if let Err(reasons) = parse_cnp(&policy, &cluster()) {
                    prop_assert!(explained(&reasons), "{reasons:?}");
                }
            } else {
                prop_assert!(problems.iter().all(|p| !p.to_string().trim().is_empty()));
            }
        }
    }

    #[test]
    fn generated_ccnps_are_enforced_or_refused_with_reasons(spec in spec(), nodes in any::<bool>()) {
        let mut spec = spec;
        if nodes {
            spec["nodeSelector"] = spec["endpointSelector"].take();
        }
        let object = json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "generated"}, "spec": spec,
        });
        if let Ok(policy) = serde_json::from_value::<CiliumClusterwideNetworkPolicy>(object)
            && validate_policy(&policy).is_empty()
            && let Err(reasons) = parse_ccnp(&policy, &cluster())
        {
            prop_assert!(explained(&reasons), "{reasons:?}");
        }
    }

    #[test]
    fn policies_of_any_shape_never_panic(spec in anything()) {
        if let Ok(policy) = serde_json::from_value::<CiliumNetworkPolicy>(cnp(spec)) {
            let _ = validate_policy(&policy);
            let _ = parse_cnp(&policy, &cluster());
        }
    }

    #[test]
    fn generated_network_policies_are_enforced_or_refused_with_reasons(
        subject in selector(),
        peers in prop::collection::vec((prop::option::of(selector()), prop::option::of(selector()), prop::option::of((cidr(), prop::collection::vec(cidr(), 0..2)))), 0..3),
        ports in prop::collection::vec((prop::option::of(port()), prop::option::of(0i64..70_000), protocol()), 0..3),
        types in prop::option::of(prop::collection::vec(prop_oneof![Just("Ingress"), Just("Egress"), Just("Sideways")], 0..3)),
    ) {
        let peers: Vec<Value> = peers
            .into_iter()
            .map(|(pods, namespaces, block)| {
                let mut peer = json!({});
                if let Some(pods) = pods { peer["podSelector"] = pods; }
                if let Some(namespaces) = namespaces { peer["namespaceSelector"] = namespaces; }
                if let Some((c, except)) = block { peer["ipBlock"] = json!({"cidr": c, "except": except}); }
                peer
            })
            .collect();
        let ports: Vec<Value> = ports
            .into_iter()
            .map(|(port, end, protocol)| json!({"port": port, "endPort": end, "protocol": protocol}))
            .collect();
        let object = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "generated", "namespace": "default"},
            "spec": {
                "podSelector": subject,
                "ingress": [{"from": peers.clone(), "ports": ports.clone()}],
                "egress": [{"to": peers, "ports": ports}],
                "policyTypes": types,
            },
        });
        if let Ok(policy) = serde_json::from_value::<NetworkPolicy>(object)
            && let Err(reasons) = parse_network_policy(&policy, &cluster())
        {
            prop_assert!(explained(&reasons), "{reasons:?}");
        }
    }
}

/// The generator reaches the engine: of many generated CNPs, a good share decodes and passes
/// validation, and of those some translate and some are refused (else the properties above
/// would hold vacuously).
#[test]
fn the_generator_reaches_validation_and_translation() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = spec();
    let (mut decoded, mut valid, mut translated, mut refused) = (0, 0, 0, 0);
    for _ in 0..500 {
        let spec = strategy
            .new_tree(&mut runner)
            .expect("a generated spec")
            .current();
        let Ok(policy) = serde_json::from_value::<CiliumNetworkPolicy>(cnp(spec)) else {
            continue;
        };
        decoded += 1;
        if !validate_policy(&policy).is_empty() {
            continue;
        }
        valid += 1;
        match parse_cnp(&policy, &cluster()) {
            Ok(_) => translated += 1,
            Err(_) => refused += 1,
        }
    }
    println!(
        "500 generated: {decoded} decoded, {valid} valid, {translated} translated, {refused} refused"
    );
    assert!(decoded >= 100, "{decoded} of 500 decoded");
    assert!(valid >= 25, "{valid} of 500 valid");
    assert!(
        translated >= 5 && refused >= 5,
        "{translated} translated, {refused} refused"
    );
}
