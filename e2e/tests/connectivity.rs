//! The L3/L4 policy scenarios of Cilium's `cilium connectivity test`, replayed on a two-node
//! cluster-in-a-box with the suite's own pods (client and client2 with echo-same-node on one
//! node, echo-other-node on the other), its manifests verbatim and its expectations: for each
//! scenario every client × (echo pod on 8080, ping of each echo pod and of the other client)
//! cell is asserted. `e2e/connectivity/` holds the manifests and `scenarios.json` (source
//! commit, each test's manifests and matrix; cells the upstream test asserts are `OK`/`DROP`,
//! cells it does not exercise are `ok*`/`drop*`, derived from Cilium's semantics). Needs root.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use e2e::cluster::{AgentNode, Cluster, CniPod};
use e2e::traffic::{reaches, serve_echo, until_right, wrong_cells};
use serde_json::Value;

const NAMESPACE: &str = "cilium-test";
const ECHO_PORT: u16 = 8080;
const SETTLE: Duration = Duration::from_secs(60);

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("connectivity")
}

/// The suite's pods by name.
struct Pods(BTreeMap<&'static str, CniPod>);

impl Pods {
    /// Whether `source` gets through for `cell`: `<pod>:8080` (a TCP exchange, as the
    /// suite's curl) or `ping <pod>`.
    fn probe(&self, source: &str, cell: &str) -> bool {
        let from = &self.0[source];
        match cell.strip_prefix("ping ") {
            Some(target) => from.ns.ping(self.0[target].ip),
            None => {
                let target = cell.trim_end_matches(":8080");
                reaches(&from.ns, self.0[target].ip, ECHO_PORT)
            }
        }
    }

    /// The cells of `expect` (`source → cell → OK|DROP|ok*|drop*`) that do not hold now,
    /// every cell probed at once.
    fn mismatches(&self, expect: &Value) -> Vec<String> {
        let cells: Vec<(&str, &str, bool)> = expect
            .as_object()
            .expect("sources")
            .iter()
            .flat_map(|(source, row)| {
                row.as_object()
                    .expect("cells")
                    .iter()
                    .map(move |(cell, want)| {
                        let want = want.as_str().expect("an outcome");
                        (
                            source.as_str(),
                            cell.as_str(),
                            want.eq_ignore_ascii_case("ok*") || want == "OK",
                        )
                    })
            })
            .collect();
        wrong_cells(&cells, |(source, cell, want)| {
            (self.probe(source, cell) != *want).then(|| {
                format!(
                    "{source} -> {cell}: expected {}",
                    if *want { "through" } else { "dropped" }
                )
            })
        })
    }

    /// Waits until `expect` holds; how long it took.
    fn until(&self, what: &str, expect: &Value) -> Duration {
        until_right(what, SETTLE, || self.mismatches(expect))
    }
}

/// A pod as the suite deploys it: its labels, a service account named after it, on `node`;
/// the echo pods declare their port as `http-8080`.
fn suite_pod(cluster: &Cluster, node: &AgentNode, name: &str, labels: &[(&str, &str)]) -> CniPod {
    let ports = if name.starts_with("echo") {
        serde_json::json!([{"name": "http-8080", "containerPort": ECHO_PORT}])
    } else {
        serde_json::json!([])
    };
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let objects = serde_json::json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": name, "namespace": NAMESPACE}},
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
             "spec": {"nodeName": node.name, "serviceAccountName": name,
                      "containers": [{"name": "main", "image": "registry.invalid/pause:3.9",
                                      "ports": ports}]}},
        ],
    });
    cluster
        .bed
        .kubectl_run(&["apply", "-f", "-"], Some(&objects.to_string()))
        .expect("the pod and its service account");
    node.wire_pod(NAMESPACE, name).expect("the pod wired")
}

fn kubectl_manifests(cluster: &Cluster, verb: &str, manifests: &[Value]) {
    for manifest in manifests {
        let path = suite_dir()
            .join("manifests")
            .join(manifest.as_str().expect("a file name"));
        cluster
            .bed
            .kubectl_run(
                &[verb, "-n", NAMESPACE, "-f", &path.to_string_lossy()],
                None,
            )
            .unwrap_or_else(|e| panic!("kubectl {verb} {}: {e}", path.display()));
    }
}

/// The names of the CiliumNetworkPolicies in `manifests` (NetworkPolicies have no status).
fn cnp_names(manifests: &[Value]) -> Vec<String> {
    manifests
        .iter()
        .filter_map(|m| {
            let path = suite_dir()
                .join("manifests")
                .join(m.as_str().expect("name"));
            let text = std::fs::read_to_string(&path).expect("manifest");
            let doc: Value = serde_yaml::from_str(&text).expect("YAML");
            (doc["kind"] == "CiliumNetworkPolicy")
                .then(|| doc["metadata"]["name"].as_str().expect("a name").to_owned())
        })
        .collect()
}

#[test]
fn cilium_connectivity_test_policy_scenarios() {
    let suite: Value = serde_json::from_str(
        &std::fs::read_to_string(suite_dir().join("scenarios.json")).expect("scenarios.json"),
    )
    .expect("scenarios.json is JSON");
    let cluster = Cluster::start(2).expect("cluster-in-a-box with two nodes");
    cluster.bed.create_namespace(NAMESPACE).expect("namespace");
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let pods = Pods(
        [
            ("client", n1, &[("name", "client"), ("kind", "client")][..]),
            (
                "client2",
                n1,
                &[("name", "client2"), ("kind", "client"), ("other", "client")][..],
            ),
            (
                "echo-same-node",
                n1,
                &[
                    ("name", "echo-same-node"),
                    ("kind", "echo"),
                    ("other", "echo"),
                ][..],
            ),
            (
                "echo-other-node",
                n2,
                &[
                    ("name", "echo-other-node"),
                    ("kind", "echo"),
                    ("first", "echo"),
                ][..],
            ),
        ]
        .into_iter()
        .map(|(name, node, labels)| (name, suite_pod(&cluster, node, name, labels)))
        .collect(),
    );
    for echo in ["echo-same-node", "echo-other-node"] {
        serve_echo(&pods.0[echo].ns, ECHO_PORT);
    }
    let baseline = &suite["baseline"];
    pods.until("no-policies", baseline);

    let scenarios = suite["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() >= 32, "every replayable scenario is listed");
    let mut timings = Vec::new();
    for scenario in scenarios {
        let test = scenario["test"].as_str().expect("a test name");
        let manifests = scenario["manifests"].as_array().expect("manifests");
        kubectl_manifests(&cluster, "apply", manifests);
        for name in cnp_names(manifests) {
            let valid = e2e::wait_for(&format!("{test}: {name} validated"), SETTLE, || {
                cluster.valid_condition("cnp", Some(NAMESPACE), &name)
            });
            assert_eq!(valid["status"], "True", "{test}: {name}: {valid}");
        }
        let enforced = pods.until(test, &scenario["expect"]);
        kubectl_manifests(&cluster, "delete", manifests);
        pods.until(&format!("{test} removed"), baseline);
        timings.push((test.to_owned(), enforced));
    }
    for (test, took) in &timings {
        println!("{test:60} matrix held after {took:?}");
    }
}
