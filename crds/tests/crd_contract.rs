//! The CRDs as users and Cilium's tooling see them: names, short names, scopes, columns,
//! subresources and the field names that must match Cilium's. Also: the checked-in YAML is
//! what the types generate (`make crds` regenerates it).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};

fn crd(name: &str) -> CustomResourceDefinition {
    cilium_crds::all()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("CRD {name} is generated"))
}

fn schema(crd: &CustomResourceDefinition) -> &JSONSchemaProps {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has a schema")
}

/// The schema node at a dotted path; `[]` steps into array items.
fn at<'a>(mut node: &'a JSONSchemaProps, path: &str) -> &'a JSONSchemaProps {
    for step in path.split('.') {
        node = if step == "[]" {
            match node.items.as_ref() {
                Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s)) => s,
                other => panic!("no items at {path}: {other:?}"),
            }
        } else {
            node.properties
                .as_ref()
                .and_then(|p| p.get(step))
                .unwrap_or_else(|| panic!("field {step} of {path} is in the schema"))
        };
    }
    node
}

#[test]
fn checked_in_yaml_is_what_the_types_generate() {
    let generated = cilium_crds::all_yaml().expect("CRDs render");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/yaml/cilium-crds.yaml");
    let checked_in = std::fs::read_to_string(path).expect("crds/yaml/cilium-crds.yaml exists");
    assert!(
        generated == checked_in,
        "crds/yaml/cilium-crds.yaml is stale: run `make crds` and commit the result"
    );
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let generated = cilium_crds::all_yaml().expect("CRDs render");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/cilium/crds/cilium-crds.yaml"
    );
    let in_chart =
        std::fs::read_to_string(path).expect("charts/cilium/crds/cilium-crds.yaml exists");
    assert!(
        generated == in_chart,
        "charts/cilium/crds/cilium-crds.yaml differs from the types: run `make crds` and commit the result"
    );
}

#[test]
fn names_scopes_and_subresources_are_ciliums() {
    let expected = [
        (
            "ciliumnodes.cilium.io",
            "CiliumNode",
            "Cluster",
            &["cn", "ciliumn"][..],
            true,
        ),
        (
            "ciliumidentities.cilium.io",
            "CiliumIdentity",
            "Cluster",
            &["ciliumid"][..],
            false,
        ),
        (
            "ciliumendpoints.cilium.io",
            "CiliumEndpoint",
            "Namespaced",
            &["cep", "ciliumep"][..],
            false,
        ),
        (
            "ciliumnetworkpolicies.cilium.io",
            "CiliumNetworkPolicy",
            "Namespaced",
            &["cnp", "ciliumnp"][..],
            true,
        ),
        (
            "ciliumclusterwidenetworkpolicies.cilium.io",
            "CiliumClusterwideNetworkPolicy",
            "Cluster",
            &["ccnp"][..],
            true,
        ),
    ];
    assert_eq!(cilium_crds::all().len(), expected.len());
    for (name, kind, scope, short_names, status) in expected {
        let crd = crd(name);
        assert_eq!(crd.spec.group, "cilium.io");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.scope, scope, "{name}");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(
                &short_names
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()[..]
            ),
            "{name}"
        );
        assert!(
            crd.spec
                .names
                .categories
                .as_ref()
                .is_some_and(|c| c.contains(&"cilium".to_owned())),
            "{name} is in category cilium"
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v2");
        assert_eq!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            status,
            "{name} status subresource"
        );
    }
}

#[test]
fn printer_columns_are_ciliums() {
    let columns = |name: &str| -> Vec<(String, String, i32)> {
        crd(name).spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.json_path, c.priority.unwrap_or(0)))
            .collect()
    };
    let c = |n: &str, p: &str, prio: i32| (n.to_owned(), p.to_owned(), prio);
    assert_eq!(
        columns("ciliumnodes.cilium.io"),
        [
            c(
                "CiliumInternalIP",
                r#".spec.addresses[?(@.type=="CiliumInternalIP")].ip"#,
                0
            ),
            c(
                "InternalIP",
                r#".spec.addresses[?(@.type=="InternalIP")].ip"#,
                0
            ),
            c("Age", ".metadata.creationTimestamp", 0),
        ]
    );
    assert_eq!(
        columns("ciliumidentities.cilium.io"),
        [
            c(
                "Namespace",
                r".metadata.labels.io\.kubernetes\.pod\.namespace",
                0
            ),
            c("Age", ".metadata.creationTimestamp", 0),
        ]
    );
    assert_eq!(
        columns("ciliumendpoints.cilium.io"),
        [
            c("Security Identity", ".status.identity.id", 0),
            c("Ingress Enforcement", ".status.policy.ingress.state", 1),
            c("Egress Enforcement", ".status.policy.egress.state", 1),
            c("Endpoint State", ".status.state", 0),
            c("IPv4", ".status.networking.addressing[0].ipv4", 0),
            c("IPv6", ".status.networking.addressing[0].ipv6", 0),
        ]
    );
    for policy in [
        "ciliumnetworkpolicies.cilium.io",
        "ciliumclusterwidenetworkpolicies.cilium.io",
    ] {
        assert_eq!(
            columns(policy),
            [
                c("Age", ".metadata.creationTimestamp", 0),
                c("Valid", ".status.conditions[?(@.type=='Valid')].status", 0),
            ]
        );
    }
}

#[test]
fn field_names_match_ciliums() {
    let node = crd("ciliumnodes.cilium.io");
    for path in [
        "spec.addresses.[].type",
        "spec.addresses.[].ip",
        "spec.health.ipv4",
        "spec.ipam.podCIDRs",
        "status.ipam.operator-status.error",
        "spec.instance-id",
    ] {
        at(schema(&node), path);
    }
    let identity = crd("ciliumidentities.cilium.io");
    assert_eq!(
        schema(&identity).required.as_deref(),
        Some(&["security-labels".to_owned()][..])
    );
    at(schema(&identity), "security-labels");
    let endpoint = crd("ciliumendpoints.cilium.io");
    for path in [
        "status.id",
        "status.identity.id",
        "status.identity.labels",
        "status.networking.addressing.[].ipv4",
        "status.networking.node",
        "status.state",
        "status.policy.ingress.enforcing",
        "status.policy.egress.state",
        "status.external-identifiers.k8s-pod-name",
        "status.named-ports",
    ] {
        at(schema(&endpoint), path);
    }
    let cnp = crd("ciliumnetworkpolicies.cilium.io");
    let rule = at(schema(&cnp), "spec");
    for path in [
        "endpointSelector.matchLabels",
        "endpointSelector.matchExpressions.[].operator",
        "nodeSelector",
        "ingress.[].fromEndpoints",
        "ingress.[].fromRequires",
        "ingress.[].fromCIDR",
        "ingress.[].fromCIDRSet.[].except",
        "ingress.[].fromEntities",
        "ingress.[].toPorts.[].ports.[].endPort",
        "ingress.[].toPorts.[].rules.http.[].headers",
        "ingress.[].toPorts.[].rules.dns.[].matchPattern",
        "ingress.[].icmps.[].fields.[].type",
        "egress.[].toEndpoints",
        "egress.[].toRequires",
        "egress.[].toCIDR",
        "egress.[].toCIDRSet.[].cidr",
        "egress.[].toEntities",
        "egress.[].toFQDNs.[].matchName",
        "ingressDeny.[].fromEntities",
        "egressDeny.[].toPorts.[].ports",
        "description",
    ] {
        at(rule, path);
    }
    at(schema(&cnp), "specs.[].endpointSelector");
    at(schema(&cnp), "status.conditions.[].type");
}

#[test]
fn schema_constrains_ports_protocols_entities_and_cidrs() {
    let cnp = crd("ciliumnetworkpolicies.cilium.io");
    let ingress = at(schema(&cnp), "spec.ingress.[]");
    let port = at(ingress, "toPorts.[].ports.[]");
    let pattern = at(port, "port")
        .pattern
        .clone()
        .expect("port has a pattern");
    assert!(pattern.contains("6553[0-5]"), "{pattern}");
    let protocols: Vec<_> = at(port, "protocol")
        .enum_
        .clone()
        .expect("protocol enum")
        .into_iter()
        .map(|v| v.0)
        .collect();
    assert_eq!(protocols, ["TCP", "UDP", "SCTP", "ANY"]);
    let entities: Vec<_> = at(ingress, "fromEntities.[]")
        .enum_
        .clone()
        .expect("entity enum")
        .into_iter()
        .map(|v| v.0)
        .collect();
    for entity in [
        "all",
        "world",
        "cluster",
        "host",
        "init",
        "remote-node",
        "health",
        "kube-apiserver",
    ] {
        assert!(entities.contains(&serde_json::json!(entity)), "{entity}");
    }
    assert_eq!(
        at(ingress, "fromCIDR.[]").pattern.as_deref(),
        Some(cilium_crds::cidr::CIDR_PATTERN)
    );
    assert_eq!(
        at(ingress, "fromCIDRSet.[].except.[]").pattern.as_deref(),
        Some(cilium_crds::cidr::CIDR_PATTERN)
    );
}
