//! The cilium.io/v2 API on a real kube-apiserver: Cilium's documented policies apply and
//! round-trip through the Rust types, kubectl lists every kind with its columns, and bad
//! input is rejected with the offending field named.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cilium_crds::{CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, validate_policy};
use e2e::{ClusterBed, unique_name, wait_for};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("example file is readable");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("example is YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn get_json(bed: &ClusterBed, namespace: &str, kind: &str, name: &str) -> Value {
    let out = bed
        .kubectl_run(&["get", "-n", namespace, kind, name, "-o", "json"], None)
        .expect("kubectl get succeeds");
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

/// The object as the apiserver stores it, re-serialized through the Rust type.
fn through_rust_type(kind: &str, object: &Value) -> Value {
    match kind {
        "CiliumNetworkPolicy" => {
            let typed: CiliumNetworkPolicy =
                serde_json::from_value(object.clone()).expect("CNP parses");
            assert!(
                validate_policy(&typed).is_empty(),
                "documented policy is valid: {:?}",
                validate_policy(&typed)
            );
            serde_json::to_value(&typed).expect("CNP serializes")
        }
        "CiliumClusterwideNetworkPolicy" => {
            let typed: CiliumClusterwideNetworkPolicy =
                serde_json::from_value(object.clone()).expect("CCNP parses");
            assert!(
                validate_policy(&typed).is_empty(),
                "documented policy is valid: {:?}",
                validate_policy(&typed)
            );
            serde_json::to_value(&typed).expect("CCNP serializes")
        }
        other => panic!("unexpected kind {other}"),
    }
}

#[test]
fn documented_policies_apply_and_round_trip() {
    let bed = ClusterBed::shared();
    let namespace = unique_name("policies");
    bed.create_namespace(&namespace).expect("namespace");

    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples/policies"))
        .expect("examples/policies exists")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "every documented example is present: {files:?}"
    );

    let mut checked = 0;
    for file in &files {
        let file_arg = file.to_string_lossy().into_owned();
        bed.kubectl_run(&["apply", "-n", &namespace, "-f", &file_arg], None)
            .unwrap_or_else(|e| panic!("{} applies: {e}", file.display()));
        for doc in yaml_documents(file) {
            let kind = doc["kind"].as_str().expect("kind").to_owned();
            let name = doc["metadata"]["name"].as_str().expect("name").to_owned();
            let stored = get_json(bed, &namespace, &kind, &name);
            // The schema knows every field the example uses: nothing was pruned.
            for key in ["spec", "specs"] {
                assert_eq!(
                    stored[key],
                    doc[key],
                    "{}: {kind}/{name} kept `{key}` as written",
                    file.display()
                );
            }
            // The Rust types keep every field the apiserver returns.
            assert_eq!(
                through_rust_type(&kind, &stored),
                stored,
                "{kind}/{name} round-trips through Rust"
            );
            checked += 1;
        }
    }
    assert!(checked >= 13, "checked {checked} objects");
}

#[test]
fn seed_policy_with_metadata_description_applies_when_client_validation_is_off() {
    // The clustermesh document's policy, verbatim: `metadata.description` is not a Kubernetes
    // field, so kubectl's client-side validation refuses it; the server drops it.
    let bed = ClusterBed::shared();
    let namespace = unique_name("seed");
    bed.create_namespace(&namespace).expect("namespace");
    let verbatim = std::fs::read_to_string(repo_root().join("examples/policies/clustermesh-l4.yaml"))
        .expect("example")
        .replace("metadata:\n  name: \"clustermesh-ingress-l4-policy\"\n",
                 "metadata:\n  name: \"clustermesh-ingress-l4-policy\"\n  description: \"demo: allow only employee to access protected-db\"\n");
    // kubectl validates against the apiserver's OpenAPI document, which takes in a new
    // CRD's schema a few seconds after the CRD is established (a fresh bed's just was).
    wait_for(
        "the CNP schema in the OpenAPI document",
        Duration::from_secs(60),
        || {
            bed.kubectl_run(&["explain", "ciliumnetworkpolicies.spec.ingress"], None)
                .ok()
        },
    );
    let refused = bed.kubectl_run(&["apply", "-n", &namespace, "-f", "-"], Some(&verbatim));
    assert!(
        refused.is_err_and(|e| e.to_string().contains("description")),
        "kubectl names the unknown field"
    );
    bed.kubectl_run(
        &["apply", "--validate=false", "-n", &namespace, "-f", "-"],
        Some(&verbatim),
    )
    .expect("applies without client-side validation");
    let stored = get_json(bed, &namespace, "cnp", "clustermesh-ingress-l4-policy");
    assert_eq!(
        stored["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"],
        "6379"
    );
    assert_eq!(
        stored["spec"]["ingress"][0]["fromEndpoints"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}

/// Header line and the row for `name` of a `kubectl get` table.
fn table_row(output: &str, name: &str) -> (String, String) {
    let header = output.lines().next().unwrap_or_default().to_owned();
    let row = output
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|first| first.ends_with(name))
        })
        .unwrap_or_else(|| panic!("{name} is listed in:\n{output}"))
        .to_owned();
    (header, row)
}

#[test]
fn kubectl_lists_every_kind_with_printer_columns() {
    let bed = ClusterBed::shared();
    let namespace = unique_name("columns");
    bed.create_namespace(&namespace).expect("namespace");
    let node = unique_name("node");
    let identity = format!("{}", 40000 + std::process::id() % 20000);
    let objects = format!(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNode
metadata: {{name: {node}}}
spec:
  addresses:
  - {{type: InternalIP, ip: 192.168.50.11}}
  - {{type: CiliumInternalIP, ip: 10.6.6.71}}
  health: {{ipv4: 10.6.6.79}}
  ipam: {{podCIDRs: [10.6.6.0/24]}}
---
apiVersion: cilium.io/v2
kind: CiliumIdentity
metadata:
  name: "{identity}"
  labels: {{app: web, io.kubernetes.pod.namespace: {namespace}}}
security-labels:
  k8s:app: web
  k8s:io.kubernetes.pod.namespace: {namespace}
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {{name: web-0, namespace: {namespace}}}
status:
  id: 3139
  identity: {{id: {identity}, labels: ["k8s:app=web"]}}
  networking:
    addressing: [{{ipv4: 10.6.6.43}}]
    node: 192.168.50.11
  policy:
    ingress: {{enforcing: true, state: enforcing}}
    egress: {{enforcing: false, state: non-enforcing}}
  state: ready
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: cols, namespace: {namespace}}}
spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: {node}-ccnp}}
spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
"#
    );
    bed.kubectl_run(&["apply", "-f", "-"], Some(&objects))
        .expect("objects apply");
    bed.kubectl_run(
        &[
            "patch",
            "cnp",
            "cols",
            "-n",
            &namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"Valid","status":"True"}]}}"#,
        ],
        None,
    )
    .expect("status subresource takes the Valid condition");

    // Short names, one listing per kind.
    let out = bed
        .kubectl_run(&["get", "cn", &node], None)
        .expect("get cn");
    let (header, row) = table_row(&out, &node);
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CILIUMINTERNALIP", "INTERNALIP", "AGE"]
    );
    assert!(
        row.contains("10.6.6.71") && row.contains("192.168.50.11"),
        "{row}"
    );
    bed.kubectl_run(&["get", "ciliumn", &node], None)
        .expect("ciliumn is a short name too");

    let out = bed
        .kubectl_run(&["get", "ciliumid", &identity], None)
        .expect("get ciliumid");
    let (header, row) = table_row(&out, &identity);
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "NAMESPACE", "AGE"]
    );
    assert!(row.contains(&namespace), "{row}");

    let out = bed
        .kubectl_run(&["get", "cep", "-n", &namespace, "-o", "wide"], None)
        .expect("get cep");
    let (header, row) = table_row(&out, "web-0");
    for column in [
        "SECURITY IDENTITY",
        "INGRESS ENFORCEMENT",
        "EGRESS ENFORCEMENT",
        "ENDPOINT STATE",
        "IPV4",
        "IPV6",
    ] {
        assert!(header.contains(column), "cep column {column} in {header}");
    }
    for value in [
        identity.as_str(),
        "enforcing",
        "non-enforcing",
        "ready",
        "10.6.6.43",
    ] {
        assert!(row.contains(value), "cep row has {value}: {row}");
    }
    bed.kubectl_run(&["get", "ciliumep", "-n", &namespace], None)
        .expect("ciliumep is a short name too");

    let out = bed
        .kubectl_run(&["get", "cnp", "-n", &namespace], None)
        .expect("get cnp");
    let (header, row) = table_row(&out, "cols");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "AGE", "VALID"]
    );
    assert!(row.ends_with("True"), "{row}");
    bed.kubectl_run(&["get", "ciliumnp", "-n", &namespace], None)
        .expect("ciliumnp is a short name too");

    let ccnp = format!("{node}-ccnp");
    let out = bed
        .kubectl_run(&["get", "ccnp", &ccnp], None)
        .expect("get ccnp");
    let (header, _) = table_row(&out, &ccnp);
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "AGE", "VALID"]
    );

    // All five in one command, and through the `cilium` category.
    let out = bed
        .kubectl_run(&["get", "cn,ciliumid,cep,cnp,ccnp", "-n", &namespace], None)
        .expect("get all five");
    for name in [
        node.as_str(),
        identity.as_str(),
        "web-0",
        "cols",
        ccnp.as_str(),
    ] {
        assert!(
            out.contains(name),
            "{name} listed by `kubectl get cn,ciliumid,cep,cnp,ccnp`:\n{out}"
        );
    }
    let out = bed
        .kubectl_run(&["get", "cilium", "-n", &namespace], None)
        .expect("get cilium");
    for name in [
        format!("ciliumnode.cilium.io/{node}"),
        format!("ciliumidentity.cilium.io/{identity}"),
        "ciliumendpoint.cilium.io/web-0".to_owned(),
        "ciliumnetworkpolicy.cilium.io/cols".to_owned(),
        format!("ciliumclusterwidenetworkpolicy.cilium.io/{ccnp}"),
    ] {
        assert!(
            out.contains(&name),
            "{name} listed by `kubectl get cilium`:\n{out}"
        );
    }
}

fn policy_with_ingress(name: &str, ingress: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {name}\nspec:\n  endpointSelector:\n    matchLabels: {{app: db}}\n  ingress:\n{ingress}"
    )
}

#[test]
fn bad_policies_are_rejected_naming_the_field() {
    let bed = ClusterBed::shared();
    let namespace = unique_name("bad");
    bed.create_namespace(&namespace).expect("namespace");
    let cases = [
        (
            "port",
            "  - toPorts:\n    - ports:\n      - {port: \"99999\", protocol: TCP}\n",
            "toPorts.ports.port",
        ),
        (
            "protocol",
            "  - toPorts:\n    - ports:\n      - {port: \"80\", protocol: FOO}\n",
            "toPorts.ports.protocol",
        ),
        (
            "entity",
            "  - fromEntities: [galaxy]\n",
            "spec.ingress.fromEntities",
        ),
        (
            "cidr",
            "  - fromCIDR: [10.0.0.0/33]\n",
            "spec.ingress.fromCIDR",
        ),
        (
            "cidrset",
            "  - fromCIDRSet:\n    - {cidr: 10.0.0.0/8, except: [10.1.0.0/99]}\n",
            "spec.ingress.fromCIDRSet.except",
        ),
        (
            "v6",
            "  - fromCIDR: [\"fd00::/129\"]\n",
            "spec.ingress.fromCIDR",
        ),
        (
            "selector",
            "  - fromEndpoints: [\"app=web\"]\n",
            "spec.ingress.fromEndpoints",
        ),
        (
            "operator",
            "  - fromEndpoints:\n    - matchExpressions: [{key: a, operator: Like}]\n",
            "fromEndpoints.matchExpressions.operator",
        ),
        (
            "endport",
            "  - toPorts:\n    - ports:\n      - {port: \"80\", endPort: 70000}\n",
            "toPorts.ports.endPort",
        ),
    ];
    for (name, ingress, field) in cases {
        let yaml = policy_with_ingress(name, ingress);
        let error = bed
            .kubectl_run(&["apply", "-n", &namespace, "-f", "-"], Some(&yaml))
            .expect_err(&format!("policy `{name}` is rejected"));
        let message = error.to_string();
        assert!(
            message.contains(field),
            "rejection of `{name}` names {field}: {message}"
        );
        let listed = bed
            .kubectl_run(&["get", "cnp", "-n", &namespace, "-o", "name"], None)
            .expect("list");
        assert!(
            !listed.contains(name),
            "rejected policy `{name}` was not stored: {listed}"
        );
    }
    // kube-apiserver 1.20 names list fields without their index (`spec.ingress.fromCIDR`).
    // A policy must be an object with rules, not a string.
    let error = bed
        .kubectl_run(
            &["apply", "-n", &namespace, "-f", "-"],
            Some("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: str}\nspec: \"allow all\"\n"),
        )
        .expect_err("a string spec is rejected");
    assert!(error.to_string().contains("spec"), "{error}");
}

#[test]
fn validator_reports_what_the_schema_cannot_express() {
    // These pass the schema, so the apiserver stores them; the validator, used by operator
    // and agent, reports every problem with its path.
    let bed = ClusterBed::shared();
    let namespace = unique_name("semantic");
    bed.create_namespace(&namespace).expect("namespace");
    let yaml = policy_with_ingress(
        "semantic",
        "  - fromEndpoints:\n    - matchExpressions: [{key: a, operator: In}, {key: b, operator: Exists, values: [x]}]\n    fromCIDRSet:\n    - {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}\n    toPorts:\n    - ports:\n      - {port: \"443\", endPort: 80, protocol: TCP}\n",
    );
    bed.kubectl_run(&["apply", "-n", &namespace, "-f", "-"], Some(&yaml))
        .expect("schema accepts it");
    let stored = get_json(bed, &namespace, "cnp", "semantic");
    let policy: CiliumNetworkPolicy = serde_json::from_value(stored).expect("parses");
    let problems: Vec<String> = validate_policy(&policy)
        .iter()
        .map(ToString::to_string)
        .collect();
    let expected = [
        "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values: operator In needs at least one value",
        "spec.ingress[0].fromEndpoints[0].matchExpressions[1].values: operator Exists takes no values",
        "spec.ingress[0].fromCIDRSet[0].except: 10.1.0.0/24 not inside cidr 10.0.0.0/16",
        "spec.ingress[0].toPorts[0].ports[0].endPort: endPort 80 is smaller than port 443",
    ];
    for line in expected {
        assert!(
            problems.iter().any(|p| p == line),
            "{line:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}
