//! The Helm chart: linted and rendered by Helm's own SDK, applied to a real kube-apiserver,
//! and its RBAC proven against what the binaries call: the operator and two agents run with
//! the chart's ServiceAccount tokens (no `system:masters`) and its `cilium-config` as their
//! `--config-dir`, and the apiserver's audit log is compared with the granted rules both
//! ways. Needs root (as CI has).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::chart::{self, find, helm, render};
use e2e::cluster::{Cluster, Setup, app_labels};
use e2e::operator::{FAST_LEASE, http_get};
use e2e::process::free_port;
use e2e::traffic::{reaches, serve_echo};
use e2e::{ClusterBed, wait_for};
use serde_json::Value;

const NAMESPACE: &str = "kube-system";
const SETTLE: Duration = Duration::from_secs(60);
const ECHO: u16 = 8080;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a values file");
    path
}

fn ci_values() -> PathBuf {
    chart::chart_dir().join("ci/clustermesh-ipv6-etcd-values.yaml")
}

fn apply(bed: &ClusterBed, objects: &[Value]) {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    bed.kubectl_run(&["apply", "-f", "-"], Some(&list.to_string()))
        .expect("the apiserver accepts every rendered object");
}

/// (apiGroup, resource[/subresource], verb) of every rule; resourceNames are ignored.
fn granted(objects: &[Value], kind: &str, name: &str) -> BTreeSet<(String, String, String)> {
    let role = find(objects, kind, name).expect("role rendered");
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    let text = |v: &Value| v.as_str().expect("string").to_owned();
                    grants.insert((text(group), text(resource), text(verb)));
                }
            }
        }
    }
    grants
}

/// Every (apiGroup, resource[/subresource], verb) `user` requested, with the status codes.
fn used(audit: &[Value], user: &str) -> BTreeMap<(String, String, String), BTreeSet<i64>> {
    let mut calls: BTreeMap<_, BTreeSet<i64>> = BTreeMap::new();
    for event in audit.iter().filter(|e| e["user"]["username"] == user) {
        let object = &event["objectRef"];
        let Some(resource) = object["resource"].as_str() else {
            continue; // non-resource URLs (/api, /version discovery)
        };
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let group = object["apiGroup"].as_str().unwrap_or_default().to_owned();
        let verb = event["verb"].as_str().unwrap_or_default().to_owned();
        let code = event["responseStatus"]["code"].as_i64().unwrap_or_default();
        calls
            .entry((group, resource, verb))
            .or_default()
            .insert(code);
    }
    calls
}

/// How the calls of each component differ from the chart's rules for it: refused calls,
/// calls no rule grants, and rules never used.
fn rbac_problems(audit: &[Value], objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for (user, roles, unused_allowed) in [
        (
            "system:serviceaccount:kube-system:cilium",
            vec![("ClusterRole", "cilium")],
            vec![],
        ),
        (
            "system:serviceaccount:kube-system:cilium-operator",
            vec![
                ("ClusterRole", "cilium-operator"),
                ("Role", "cilium-operator-leader-election"),
            ],
            // The recorder patches an Event only when the same one repeats.
            vec![("events.k8s.io", "events", "patch")],
        ),
    ] {
        let calls = used(audit, user);
        let refused: Vec<_> = calls
            .iter()
            .filter(|(_, codes)| codes.contains(&401) || codes.contains(&403))
            .collect();
        if !refused.is_empty() {
            problems.push(format!("{user} was refused: {refused:?}"));
        }
        let grants: BTreeSet<_> = roles
            .iter()
            .flat_map(|(kind, name)| granted(objects, kind, name))
            .collect();
        let called: BTreeSet<_> = calls.keys().cloned().collect();
        let ungranted: Vec<_> = called.difference(&grants).collect();
        if !ungranted.is_empty() {
            problems.push(format!("{user} called without a rule: {ungranted:?}"));
        }
        let unused: Vec<_> = grants
            .difference(&called)
            .filter(|(g, r, v)| !unused_allowed.contains(&(g.as_str(), r.as_str(), v.as_str())))
            .collect();
        if !unused.is_empty() {
            problems.push(format!("{user} is granted what it never calls: {unused:?}"));
        }
    }
    problems
}

#[test]
fn lint_render_schema_and_apply() {
    for values in [vec![], vec![ci_values()]] {
        let files: Vec<&Path> = values.iter().map(PathBuf::as_path).collect();
        let lint = helm("lint", &files, &[]).expect("helm.py runs");
        assert!(
            lint.success && lint.stdout.contains("no failures"),
            "helm lint --strict {values:?}:\n{}{}",
            lint.stdout,
            lint.stderr
        );
    }

    let defaults = render(&[]).expect("default values render");
    let operator = find(&defaults, "Deployment", "cilium-operator").expect("operator");
    let spec = &operator["spec"]["template"]["spec"];
    assert_eq!(operator["spec"]["replicas"], 2);
    assert_eq!(
        spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let container = &spec["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["ports"][0]["name"], "prometheus");
    assert_eq!(container["ports"][0]["containerPort"], 9963);
    let agent = find(&defaults, "DaemonSet", "cilium").expect("agent");
    let spec = &agent["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["containers"][0]["securityContext"]["privileged"], true);
    assert_eq!(spec["initContainers"][0]["name"], "install-cni");
    let mounts: BTreeSet<&str> = spec["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for path in ["/sys/fs/bpf", "/var/run/cilium", "/tmp/cilium/config-map"] {
        assert!(mounts.contains(path), "{path} not mounted: {mounts:?}");
    }
    let config = &find(&defaults, "ConfigMap", "cilium-config").expect("config")["data"];
    assert_eq!(config["cluster-pool-ipv4-cidr"], "10.0.0.0/8");
    assert_eq!(config["enable-policy"], "default");
    assert!(config.get("kvstore").is_none(), "no kvstore by default");
    assert!(
        config.get("prometheus-serve-addr").is_none(),
        "agent metrics off by default"
    );

    // No wildcard anywhere; leases only in the operator's Role.
    for role in defaults
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let text = role["rules"].to_string();
        assert!(
            !text.contains('*'),
            "wildcard in {}: {text}",
            role["metadata"]["name"]
        );
        let leases = text.contains("leases");
        assert_eq!(
            leases,
            role["metadata"]["name"] == "cilium-operator-leader-election",
            "leases in {}",
            role["metadata"]["name"]
        );
    }

    let mesh = render(&[&ci_values()]).expect("the clustermesh/IPv6/etcd values render");
    let config = &find(&mesh, "ConfigMap", "cilium-config").expect("config")["data"];
    assert_eq!(config["cluster-pool-ipv6-cidr"], "fd00:1::/104");
    assert_eq!(config["kvstore"], "etcd");
    assert_eq!(config["prometheus-serve-addr"], ":9962");
    let agent = find(&mesh, "DaemonSet", "cilium").expect("agent");
    let container = &agent["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], 9962);
    assert_eq!(
        agent["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        "9962"
    );
    assert_eq!(config["clustermesh-config"], "/var/lib/cilium/clustermesh/");
    let etcd: serde_yaml::Value =
        serde_yaml::from_str(config["etcd-config"].as_str().expect("etcd-config")).expect("yaml");
    assert_eq!(etcd["endpoints"][1], "https://etcd-1.cluster1.example:2379");
    assert_eq!(
        etcd["trusted-ca-file"],
        "/var/lib/etcd-secrets/etcd-client-ca.crt"
    );
    let secret = find(&mesh, "Secret", "cilium-clustermesh").expect("clustermesh secret");
    assert!(secret["data"]["cluster2.etcd-client.crt"].is_string());
    find(&mesh, "Secret", "cilium-etcd-secrets").expect("etcd secret");

    // Both sets are accepted by a real apiserver; applying the second updates the first.
    let bed = ClusterBed::start().expect("bed");
    apply(&bed, &defaults);
    apply(&bed, &mesh);
    let replicas = bed
        .kubectl_run(
            &[
                "get",
                "deploy",
                "cilium-operator",
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            None,
        )
        .expect("operator deployment");
    assert_eq!(replicas, "3");
    let aliases = bed
        .kubectl_run(
            &[
                "get",
                "ds",
                "cilium",
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.spec.template.spec.hostAliases[0].hostnames[0]}",
            ],
            None,
        )
        .expect("agent daemonset");
    assert_eq!(aliases, "cluster2.mesh.cilium.io");

    // Wrong values are refused with a message naming the key, before anything renders.
    let dir = bed.dir();
    for (name, values, says) in [
        ("type.yaml", "cluster:\n  id: one\n", "/cluster/id"),
        ("range.yaml", "cluster:\n  id: 256\n", "/cluster/id"),
        (
            "replicas.yaml",
            "operator:\n  replicas: two\n",
            "/operator/replicas",
        ),
        ("unknown.yaml", "clusterName: c1\n", "clusterName"),
        (
            "nested.yaml",
            "bpf:\n  policyMapSize: 10\n",
            "policyMapSize",
        ),
        (
            "enum.yaml",
            "policyEnforcementMode: strict\n",
            "/policyEnforcementMode",
        ),
        (
            "mesh.yaml",
            "cluster: {id: 2}\nclustermesh:\n  config:\n    enabled: true\n",
            "clustermesh.config.enabled needs etcd.enabled",
        ),
        (
            "self.yaml",
            "cluster: {name: c1, id: 1}\netcd: {enabled: true}\nclustermesh:\n  config:\n    enabled: true\n    clusters: [{name: c1}]\n",
            "\"c1\" is this cluster's own name",
        ),
    ] {
        let file = write(dir, name, values);
        let run = helm("template", &[&file], &[]).expect("helm.py runs");
        assert!(!run.success, "{name} rendered");
        assert!(run.stderr.contains(says), "{name}: {}", run.stderr);
    }
}

#[test]
fn operator_and_agents_work_with_the_charts_rbac_and_config() {
    let bed = ClusterBed::start().expect("bed");
    let values = write(
        bed.dir(),
        "rbac-values.yaml",
        &format!(
            // A pool of 4 blocks for 5 nodes: the fifth exhausts it (an Event).
            "ipam:\n  operator:\n    clusterPoolIPv4PodCIDRList: [10.210.0.0/21]\n    clusterPoolIPv4MaskSize: 23\n\
             etcd:\n  enabled: true\n  endpoints: [{}]\n\
             operator:\n  identityGCInterval: 2s\n  identityHeartbeatTimeout: 2s\n\
             policyEnforcementMode: always\n",
            bed.etcd_endpoint()
        ),
    );
    let objects = render(&[&values]).expect("render");
    apply(&bed, &objects);

    // The binaries read the rendered ConfigMap as a mounted one would be read.
    let config_dir = bed.dir().join("config-map");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    let config = find(&objects, "ConfigMap", "cilium-config").expect("config");
    for (key, value) in config["data"].as_object().expect("data") {
        write(&config_dir, key, value.as_str().expect("string value"));
    }
    // The conflist the agents install once ready (the DaemonSet mounts the ConfigMap and
    // the host's /etc/cni/net.d at the paths `cilium-config` names; here, the bed's dirs).
    let cni_source = find(&objects, "ConfigMap", "cni-configuration").expect("cni ConfigMap")
        ["data"]["05-cilium.conflist"]
        .as_str()
        .expect("conflist")
        .to_owned();
    assert_eq!(
        config["data"]["write-cni-conf-when-ready"],
        "/host/etc/cni/net.d/05-cilium.conflist"
    );
    assert_eq!(
        config["data"]["read-cni-conf"],
        "/tmp/cni-configuration/05-cilium.conflist"
    );
    let cni_read = write(bed.dir(), "05-cilium.conflist", &cni_source);
    let cni_written = bed.dir().join("net.d/05-cilium.conflist");
    let cni_flags = [
        format!("--read-cni-conf={}", cni_read.display()),
        format!("--write-cni-conf-when-ready={}", cni_written.display()),
    ];
    let config_flag = format!("--config-dir={}", config_dir.display());
    let etcd_flag = format!(
        "--kvstore-opt=etcd.config={}",
        config_dir.join("etcd-config").display()
    );
    let prometheus_port = free_port().expect("port");
    let operator_kubeconfig = bed
        .service_account_kubeconfig(NAMESPACE, "cilium-operator")
        .expect("operator token");
    let agent_kubeconfig = bed
        .service_account_kubeconfig(NAMESPACE, "cilium")
        .expect("agent token");
    let setup = Setup {
        nodes: 2,
        operator_flags: vec![
            config_flag.clone(),
            etcd_flag.clone(),
            format!("--operator-prometheus-serve-addr=127.0.0.1:{prometheus_port}"),
            FAST_LEASE[0].into(),
            FAST_LEASE[1].into(),
            FAST_LEASE[2].into(),
        ],
        operator_namespace: NAMESPACE.into(),
        agent_flags: [vec![config_flag, etcd_flag], cni_flags.to_vec()].concat(),
        operator_kubeconfig: Some(operator_kubeconfig),
        agent_kubeconfig: Some(agent_kubeconfig),
        ..Setup::standard(&bed, 2)
    };
    let mut cluster = Cluster::start_on(bed, setup).expect("cluster with the chart's RBAC");
    let bed = &cluster.bed;
    bed.create_namespace("apps").expect("namespace");

    // Pods on both nodes get endpoints with identities; policies get their status.
    let db = cluster.nodes[0]
        .add_pod(bed, "apps", "db", &app_labels("db"))
        .expect("db pod");
    let client = cluster.nodes[1]
        .add_pod(bed, "apps", "client", &app_labels("client"))
        .expect("client pod");
    let temp = cluster.nodes[1]
        .add_pod(bed, "apps", "temp", &app_labels("temp"))
        .expect("temp pod");
    wait_for("3 ready CiliumEndpoints", SETTLE, || {
        (cluster.ready_endpoints().ok()? == 3).then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&cni_written).expect("the agents installed the conflist"),
        cni_source
    );
    let policies = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: db, namespace: apps}\nspec:\n  endpointSelector: {matchLabels: {app: db}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: client, namespace: apps}\nspec:\n  endpointSelector: {matchLabels: {app: client}}\n  egress:\n  - toEndpoints: [{matchLabels: {app: db}}]\n---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: deny-temp}\nspec:\n  endpointSelector: {matchLabels: {app: temp}}\n  egressDeny:\n  - toEntities: [world]\n";
    bed.kubectl_run(&["apply", "-f", "-"], Some(policies))
        .expect("policies");
    for (kind, namespace, name) in [
        ("cnp", Some("apps"), "db"),
        ("cnp", Some("apps"), "client"),
        ("ccnp", None, "deny-temp"),
    ] {
        wait_for(&format!("{kind}/{name} Valid"), SETTLE, || {
            let condition = cluster.valid_condition(kind, namespace, name)?;
            (condition["status"] == "True").then_some(())
        });
    }
    serve_echo(&db.ns, ECHO);
    serve_echo(&client.ns, ECHO);
    wait_for("client → db under the policy", SETTLE, || {
        reaches(&client.ns, db.ip, ECHO).then_some(())
    });
    // `policyEnforcementMode: always` from the ConfigMap: nothing allows db → client, and
    // no rule selects the client's ingress, yet it is enforced.
    assert!(!reaches(&db.ns, client.ip, ECHO), "db reached client");
    let enforcing = bed
        .kubectl_run(
            &[
                "get",
                "cep",
                "client",
                "-n",
                "apps",
                "-o",
                "jsonpath={.status.policy.ingress.state}",
            ],
            None,
        )
        .expect("client CEP");
    assert_eq!(enforcing, "enforcing");

    // A relabelled pod gets a new identity: its CiliumEndpoint is updated.
    let identity_of = |pod: &str| {
        bed.kubectl_run(
            &[
                "get",
                "cep",
                pod,
                "-n",
                "apps",
                "-o",
                "jsonpath={.status.identity.id}",
            ],
            None,
        )
        .ok()
    };
    let before = identity_of("client").expect("client identity");
    bed.kubectl_run(
        &["label", "pod", "client", "-n", "apps", "tier=front"],
        None,
    )
    .expect("relabel");
    wait_for(
        "client's new identity in its CiliumEndpoint",
        SETTLE,
        || identity_of("client").filter(|id| !id.is_empty() && *id != before),
    );

    // A pod goes away: its CiliumEndpoint is deleted, its identity collected.
    cluster.nodes[1].del_pod(&temp).expect("CNI DEL");
    bed.kubectl_run(
        &["delete", "pod", "temp", "-n", "apps", "--wait=false"],
        None,
    )
    .expect("delete pod");
    wait_for("temp's identity collected", SETTLE, || {
        let ids = bed.list("ciliumidentities").ok()?;
        let left = ids
            .iter()
            .any(|id| id["security-labels"]["k8s:app"] == "temp");
        (!left).then_some(())
    });
    // Nodes without agents: the operator creates their CiliumNodes, runs out of blocks
    // (an Event), and deletes a CiliumNode whose Node goes.
    for (name, ip) in [
        ("node-x", "192.168.60.30"),
        ("node-y", "192.168.60.31"),
        ("node-z", "192.168.60.32"),
    ] {
        e2e::cluster::register_node(bed, name, ip.parse().expect("ip")).expect("node");
    }
    wait_for("a PodCIDR exhaustion Event", SETTLE, || {
        let events = bed
            .kubectl_run(
                &["get", "events.events.k8s.io", "-n", "default", "-o", "json"],
                None,
            )
            .ok()?;
        events.contains("PodCIDRAllocationFailed").then_some(())
    });
    bed.kubectl_run(&["delete", "node", "node-x"], None)
        .expect("delete node");
    wait_for("node-x's CiliumNode deleted", SETTLE, || {
        bed.kubectl_run(&["get", "cn", "node-x"], None)
            .is_err()
            .then_some(())
    });

    // Both run on their tokens alone, and serve their probes and metrics.
    let metrics = http_get(prometheus_port, "/metrics");
    assert!(metrics.contains("cilium_operator_is_leader 1"), "{metrics}");
    let health = cluster.nodes[0]
        .ns
        .run(|| http_get(9879, "/healthz"))
        .expect("node namespace");
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");
    let can_i = bed
        .kubectl()
        .args(["auth", "can-i", "update", "leases", "-n", NAMESPACE])
        .arg("--as=system:serviceaccount:kube-system:cilium")
        .output()
        .expect("kubectl auth can-i");
    assert_eq!(String::from_utf8_lossy(&can_i.stdout).trim(), "no");

    // The audit log: nothing was refused, every call had a rule and every rule was used.
    // Watches are audited when they end: stop the components first, then give the
    // apiserver a moment to see the connections close.
    for node in &mut cluster.nodes {
        node.kill_agent();
    }
    cluster.operator.process.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let audit = bed.audit_events().expect("audit log");
        let problems = rbac_problems(&audit, &objects);
        if problems.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the chart's RBAC and the calls differ:\n{}",
            problems.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
