//! The truth tables of Kubernetes' own NetworkPolicy e2e suite (`test/e2e/network/netpol`
//! of the v1.20 source the apiserver is built from), replayed on the two-node
//! cluster-in-a-box: namespaces x, y, z with pods a, b, c each serving TCP and UDP on 80 and
//! 81, each upstream test's policies applied step by step, and every cell of its 9 × 9
//! reachability matrix asserted per probed port and protocol. `e2e/netpol/tests.json` holds
//! the policies and matrices with the upstream test each comes from. Needs root.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use e2e::cluster::{Cluster, CniPod};
use e2e::traffic::{reaches, serve_echo, serve_udp_echo, udp_reaches, until_right, wrong_cells};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(60);
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];
/// What the replay can do; tests that need anything else are listed as skipped. Upstream
/// probes through Services' DNS names, hence its egress tests' DNS allowance; this replay
/// probes pod addresses directly, so those tests need no DNS here. Not here: `ipblock`, the
/// three tests that put pod addresses in an ipBlock and expect it to match them, where
/// Cilium (and this engine) match an ipBlock to addresses outside the cluster only.
const SUPPORTED: [&str; 5] = [
    "udp",
    "pod_relabel",
    "namespace_relabel",
    "named_port",
    "egress_to_dns",
];

fn suite() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("netpol/tests.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("tests.json")).expect("JSON")
}

/// The suite's pods by `ns/pod`.
struct Pods(BTreeMap<String, CniPod>);

impl Pods {
    fn probe(&self, from: &str, to: &str, port: u16, protocol: &str) -> bool {
        let (from, to) = (&self.0[from], &self.0[to]);
        match protocol {
            "UDP" => udp_reaches(&from.ns, to.ip, port),
            _ => reaches(&from.ns, to.ip, port),
        }
    }

    /// The cells of `probe` (`{port, protocol, expect: {from: {to: bool}}}`) that do not
    /// hold now, all probed at once.
    fn mismatches(&self, probe: &Value) -> Vec<String> {
        let port = u16::try_from(probe["port"].as_u64().expect("a port")).expect("a port");
        let protocol = probe["protocol"].as_str().unwrap_or("TCP");
        let cells: Vec<(&str, &str, bool)> = probe["expect"]
            .as_object()
            .expect("sources")
            .iter()
            .flat_map(|(from, row)| {
                row.as_object()
                    .expect("destinations")
                    .iter()
                    .map(move |(to, want)| {
                        (
                            from.as_str(),
                            to.as_str(),
                            want.as_bool().expect("true or false"),
                        )
                    })
            })
            // As upstream (`ignoreLoopback`): a pod reaching itself never leaves it.
            .filter(|(from, to, _)| from != to)
            .collect();
        wrong_cells(&cells, |(from, to, want)| {
            (self.probe(from, to, port, protocol) != *want)
                .then(|| format!("{from} -> {to} {port}/{protocol}: expected {want}"))
        })
    }

    /// Waits until every probe of `probes` holds; how long it took.
    fn until(&self, what: &str, probes: &[Value]) -> Duration {
        until_right(what, SETTLE, || {
            probes.iter().flat_map(|p| self.mismatches(p)).collect()
        })
    }

    /// `{{ns/pod.ip}}` in `text` replaced by that pod's address.
    fn fill_in(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, pod) in &self.0 {
            out = out.replace(&format!("{{{{{name}.ip}}}}"), &pod.ip.to_string());
        }
        out
    }
}

/// Every pair reachable on every port and protocol: the state with no policy.
fn everything_open() -> Vec<Value> {
    let all: Vec<String> = NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect();
    let row: serde_json::Map<String, Value> = all
        .iter()
        .map(|to| (to.clone(), Value::Bool(true)))
        .collect();
    let expect: serde_json::Map<String, Value> = all
        .iter()
        .map(|from| (from.clone(), Value::Object(row.clone())))
        .collect();
    ["TCP", "UDP"]
        .iter()
        .flat_map(|protocol| {
            let expect = expect.clone();
            PORTS.map(move |port| {
                serde_json::json!({"port": port, "protocol": protocol, "expect": expect})
            })
        })
        .collect()
}

fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) {
    cluster
        .bed
        .kubectl_run(args, stdin)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
}

fn delete_all_policies(cluster: &Cluster) {
    for ns in NAMESPACES {
        kubectl(
            cluster,
            &["delete", "networkpolicy", "--all", "-n", ns],
            None,
        );
    }
}

/// Gives object `kind/name` exactly `labels` (the others are removed).
fn set_labels(
    cluster: &Cluster,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
) {
    let object = cluster.bed.get(kind, namespace, name).expect("the object");
    let mut args = vec![
        "label".to_owned(),
        kind.to_owned(),
        name.to_owned(),
        "--overwrite".to_owned(),
    ];
    if let Some(ns) = namespace {
        args.extend(["-n".to_owned(), ns.to_owned()]);
    }
    args.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    let current = object["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    args.extend(
        current
            .keys()
            .filter(|k| !labels.contains_key(*k))
            .map(|k| format!("{k}-")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl(cluster, &args, None);
}

/// Namespace and pod labels exactly as the suite sets them (what a test added is removed).
fn label_everything(cluster: &Cluster) {
    let one = |key: &str, value: &str| BTreeMap::from([(key.to_owned(), value.to_owned())]);
    for ns in NAMESPACES {
        set_labels(cluster, "namespace", ns, None, &one("ns", ns));
        for pod in PODS {
            set_labels(cluster, "pod", pod, Some(ns), &one("pod", pod));
        }
    }
}

/// A step's relabelling: the pod's or namespace's whole label set after it.
fn apply_change(cluster: &Cluster, change: &Value) {
    let labels = |object: &Value| -> BTreeMap<String, String> {
        serde_json::from_value(object["labels"].clone()).expect("labels")
    };
    if let Some(relabel) = change.get("relabel_pod") {
        let (ns, pod) = relabel["pod"]
            .as_str()
            .and_then(|p| p.split_once('/'))
            .expect("ns/pod");
        set_labels(cluster, "pod", pod, Some(ns), &labels(relabel));
    }
    if let Some(relabel) = change.get("relabel_namespace") {
        let ns = relabel["namespace"].as_str().expect("a namespace");
        set_labels(cluster, "namespace", ns, None, &labels(relabel));
    }
}

#[test]
fn kubernetes_netpol_truth_tables() {
    let suite = suite();
    let cluster = Cluster::start(2).expect("cluster-in-a-box with two nodes");
    for ns in NAMESPACES {
        cluster.bed.create_namespace(ns).expect("namespace");
    }
    let mut pods = BTreeMap::new();
    for (i, (ns, pod)) in NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| (*ns, *p)))
        .enumerate()
    {
        let node = &cluster.nodes[i % cluster.nodes.len()];
        // As the suite's model: a container per port and protocol, the ports named.
        let containers: Vec<Value> = PORTS
            .iter()
            .flat_map(|port| ["tcp", "udp"].map(|p| (*port, p)))
            .map(|(port, protocol)| {
                serde_json::json!({
                    "name": format!("cont-{port}-{protocol}"),
                    "image": "registry.invalid/agnhost:2.21",
                    "ports": [{"name": format!("serve-{port}-{protocol}"), "containerPort": port,
                               "protocol": protocol.to_uppercase()}],
                })
            })
            .collect();
        let object = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns, "labels": {"pod": pod}},
            "spec": {"nodeName": node.name, "containers": containers},
        });
        kubectl(&cluster, &["apply", "-f", "-"], Some(&object.to_string()));
        let wired = node.wire_pod(ns, pod).expect("pod");
        for port in PORTS {
            serve_echo(&wired.ns, port);
            serve_udp_echo(&wired.ns, port);
        }
        pods.insert(format!("{ns}/{pod}"), wired);
    }
    let pods = Pods(pods);
    label_everything(&cluster);
    let open = everything_open();
    pods.until("no policy", &open);

    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    for test in suite["tests"].as_array().expect("tests") {
        let name = test["name"].as_str().expect("a name");
        let needs: Vec<&str> = test["needs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(missing) = needs.iter().find(|n| !SUPPORTED.contains(n)) {
            skipped.push(format!("{name} (needs {missing})"));
            continue;
        }
        let mut took = Duration::ZERO;
        for (i, step) in test["steps"].as_array().expect("steps").iter().enumerate() {
            if let Some(change) = step.get("change") {
                apply_change(&cluster, change);
            }
            delete_all_policies(&cluster);
            let policies = step["policies"].as_array().expect("policies");
            if !policies.is_empty() {
                let list =
                    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": policies});
                kubectl(
                    &cluster,
                    &["apply", "-f", "-"],
                    Some(&pods.fill_in(&list.to_string())),
                );
            }
            let probes = step["probes"].as_array().expect("probes");
            took += pods.until(&format!("{name}, step {i}"), probes);
        }
        // Back to no policy and the suite's labels before the next test.
        delete_all_policies(&cluster);
        label_everything(&cluster);
        pods.until(&format!("{name}: undone"), &open);
        ran.push((name.to_owned(), took));
    }
    for (name, took) in &ran {
        println!("{took:>12.1?}  {name}");
    }
    for name in &skipped {
        println!("     skipped  {name}");
    }
    assert!(
        ran.len() >= 25,
        "{} upstream tests replayed: {ran:#?}",
        ran.len()
    );
}
