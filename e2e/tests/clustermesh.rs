//! ClusterMesh end to end, the scenario of the clustermesh document: two clusters with
//! their own apiserver, kvstore (etcd with TLS client certificates), cluster id (101, 102)
//! and PodCIDRs, nodes on one link; each agent reads the other cluster's kvstore. The
//! document's policy in cluster1 admits both employees to protected-db and neither
//! stranger; a global service gets backends from both clusters; cutting cluster2's
//! kvstore leaves cluster1's own traffic alone, withdraws cluster2's entries after the
//! grace period, and everything returns with it. Needs root.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use e2e::cluster::{AgentNode, CniPod, app_labels};
use e2e::mesh::{METRICS_PORT, Member, Mesh, global_service};
use e2e::operator::http_get;
use e2e::traffic::{reaches, serve_echo};
use e2e::wait_for;
use serde_json::Value;

const REDIS: u16 = 6379;
const SETTLE: Duration = Duration::from_secs(60);
/// The agents' `--clustermesh-grace-period`.
const GRACE: Duration = Duration::from_secs(10);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

/// Waits until every `(from, to, expected)` holds at once on 6379.
fn until_reachability(what: &str, cases: &[(&CniPod, Ipv4Addr, bool)]) {
    wait_for(what, SETTLE, || {
        cases
            .iter()
            .all(|(from, to, expected)| reaches(&from.ns, *to, REDIS) == *expected)
            .then_some(())
    });
}

/// The agent's status as JSON.
fn status(node: &AgentNode) -> Value {
    let text = node
        .cilium(&["status", "-o", "json"])
        .expect("cilium status");
    serde_json::from_str(&text).expect("status JSON")
}

/// `node`'s agent's metric `line` (name and labels) has `value`.
fn metric_is(node: &AgentNode, line: &str, value: &str) -> bool {
    let metrics = node
        .ns
        .run(|| http_get(METRICS_PORT, "/metrics"))
        .unwrap_or_default();
    metrics.lines().any(|l| l == format!("{line} {value}"))
}

/// The status of remote cluster `name` as `node`'s agent reports it.
fn remote(node: &AgentNode, name: &str) -> Option<Value> {
    status(node)["cluster-mesh"]["clusters"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

fn ready_with_endpoints(node: &AgentNode, name: &str, endpoints: u64) -> Option<Value> {
    remote(node, name)
        .filter(|c| c["ready"] == true && c["num-endpoints"].as_u64() >= Some(endpoints))
}

fn identity_of(member: &Member, namespace: &str, pod: &str) -> u64 {
    let object = member
        .cluster
        .bed
        .get("cep", Some(namespace), pod)
        .expect("the CiliumEndpoint");
    object["status"]["identity"]["id"]
        .as_u64()
        .expect("an identity")
}

#[test]
fn two_clusters_share_endpoints_identities_policy_and_services() {
    let mesh = Mesh::start(1, GRACE).expect("two meshed clusters-in-a-box");
    let (c1, c2) = (&mesh.members[0], &mesh.members[1]);
    let (n1, n2) = (&c1.cluster.nodes[0], &c2.cluster.nodes[0]);
    let (bed1, bed2) = (&c1.cluster.bed, &c2.cluster.bed);
    bed2.create_namespace("istio-space").expect("namespace");

    let db = n1
        .add_pod(bed1, "default", "protected-db", &app_labels("protected-db"))
        .expect("db");
    let employee1 = n1
        .add_pod(bed1, "default", "employee", &app_labels("employee"))
        .expect("cluster1 employee");
    let stranger1 = n1
        .add_pod(bed1, "default", "stranger", &app_labels("stranger"))
        .expect("cluster1 stranger");
    let employee2 = n2
        .add_pod(bed2, "istio-space", "employee", &app_labels("employee"))
        .expect("cluster2 employee");
    let stranger2 = n2
        .add_pod(bed2, "istio-space", "stranger", &app_labels("stranger"))
        .expect("cluster2 stranger");
    // An employee of cluster2's `default`: the policy's selector without a cluster names
    // cluster1's only (Cilium 1.19's --policy-default-local-cluster).
    let employee2_default = n2
        .add_pod(bed2, "default", "employee", &app_labels("employee"))
        .expect("cluster2 default employee");
    let db2 = n2
        .add_pod(bed2, "default", "protected-db", &app_labels("protected-db"))
        .expect("cluster2 db");
    serve_echo(&db.ns, REDIS);
    serve_echo(&db2.ns, REDIS);
    wait_for("ready endpoints in both clusters", SETTLE, || {
        (c1.cluster.ready_endpoints().ok()? == 3 && c2.cluster.ready_endpoints().ok()? == 4)
            .then_some(())
    });

    // Identities carry their cluster's id above bit 16.
    let remote_employee = identity_of(c2, "istio-space", "employee");
    assert_eq!(remote_employee >> 16, 102, "identity {remote_employee}");
    assert_eq!(identity_of(c1, "default", "employee") >> 16, 101);

    // Files added at run time connect the clusters, both ways.
    mesh.connect(0, 1).expect("cluster1 → cluster2");
    mesh.connect(1, 0).expect("cluster2 → cluster1");
    let seen = wait_for("cluster1's agent has cluster2 ready", SETTLE, || {
        ready_with_endpoints(n1, "cluster2", 4)
    });
    assert_eq!(seen["cluster-id"], 102);
    assert_eq!(seen["num-nodes"], 1);
    wait_for("cluster2's agent has cluster1 ready", SETTLE, || {
        ready_with_endpoints(n2, "cluster1", 3)
    });
    const READINESS: &str =
        r#"cilium_clustermesh_remote_cluster_readiness_status{target_cluster="cluster2"}"#;
    assert!(
        metric_is(n1, READINESS, "1"),
        "cluster2 ready in the metrics"
    );
    assert!(metric_is(n1, "cilium_clustermesh_remote_clusters", "1"));
    let verbose = n1.cilium(&["status", "--verbose"]).expect("status");
    assert!(
        verbose.contains("ClusterMesh:            1/1 clusters ready"),
        "{verbose}"
    );
    assert!(
        verbose.contains("   cluster2: ready, 1 nodes, 4 endpoints, "),
        "{verbose}"
    );
    assert!(
        verbose.contains("└  etcd: 1/1 connected, https://127.0.0.1:"),
        "{verbose}"
    );
    let nodes = n1.cilium(&["node", "list"]).expect("node list");
    assert!(
        nodes.contains("cluster1/node-1") && nodes.contains("cluster2/node-1"),
        "{nodes}"
    );
    let identity = n1
        .cilium(&["identity", "get", &remote_employee.to_string()])
        .expect("the remote identity is known in cluster1");
    assert!(
        identity.contains("k8s:io.cilium.k8s.policy.cluster=cluster2"),
        "{identity}"
    );
    let ipcache = n1.cilium(&["bpf", "ipcache", "list"]).expect("ipcache");
    assert!(
        ipcache.contains(&employee2.ip.to_string()),
        "the remote employee is in cluster1's ipcache: {ipcache}"
    );

    // Without a policy every pod of both clusters reaches the db.
    until_reachability(
        "everyone reaches the db before the policy",
        &[
            (&employee1, db.ip, true),
            (&stranger1, db.ip, true),
            (&employee2, db.ip, true),
            (&stranger2, db.ip, true),
        ],
    );

    // The document's policy, in cluster1.
    let policy = repo_root().join("examples/policies/clustermesh-l4.yaml");
    bed1.kubectl_run(&["apply", "-f", policy.to_str().expect("UTF-8 path")], None)
        .expect("apply the policy");
    let enforced = [
        (&employee1, db.ip, true),
        (&stranger1, db.ip, false),
        (&employee2, db.ip, true),
        (&stranger2, db.ip, false),
        (&employee2_default, db.ip, false),
    ];
    until_reachability("both employees and no stranger", &enforced);

    // A value cluster2 may not send: an endpoint with an identity of cluster 0's range.
    let forged = serde_json::json!({
        "IP": "10.211.3.3", "Mask": null, "HostIP": "192.168.60.21", "ID": 300, "Key": 0,
        "Metadata": "", "K8sNamespace": "default", "K8sPodName": "forged",
    });
    c2.kvstore()
        .etcdctl(&[
            "put",
            "cilium/state/ip/v1/default/10.211.3.3",
            &forged.to_string(),
        ])
        .expect("etcdctl put");
    let refused = wait_for("the forged value is refused", SETTLE, || {
        remote(n1, "cluster2").filter(|c| c["num-invalid-values"].as_u64() >= Some(1))
    });
    assert!(
        refused["last-invalid-value"]
            .as_str()
            .is_some_and(|r| r.contains("identity 300 is outside cluster 102's range")),
        "{refused}"
    );
    let ipcache = n1.cilium(&["bpf", "ipcache", "list"]).expect("ipcache");
    assert!(!ipcache.contains("10.211.3.3"), "{ipcache}");

    // A cluster claiming cluster1's own id, then cluster2's, is refused and reported.
    let kvstore2 = c2.kvstore().endpoint();
    for (id, says) in [
        (101, "has this cluster's id 101"),
        (102, "has id 102, which cluster \"cluster2\" already has"),
    ] {
        c2.kvstore()
            .etcdctl(&[
                "put",
                "cilium/cluster-config/cluster3",
                &format!(r#"{{"id":{id}}}"#),
            ])
            .expect("etcdctl put");
        if id == 101 {
            // cluster3's file points at cluster2's kvstore, where its config now is.
            let config = std::fs::read_to_string(c1.mesh_dir.join("cluster2")).expect("config");
            assert!(config.contains(&kvstore2));
            std::fs::write(c1.mesh_dir.join("cluster3"), config).expect("cluster3's file");
        }
        wait_for(says, SETTLE, || {
            remote(n1, "cluster3").filter(|c| {
                c["ready"] == false && c["status"].as_str().is_some_and(|s| s.contains(says))
            })
        });
    }
    // With a valid id it is accepted, and waits for its sync canaries, which nobody wrote.
    c2.kvstore()
        .etcdctl(&[
            "put",
            "cilium/cluster-config/cluster3",
            r#"{"id":103,"capabilities":{"syncedCanaries":true}}"#,
        ])
        .expect("etcdctl put");
    wait_for("cluster3 waits for its canaries", SETTLE, || {
        remote(n1, "cluster3").filter(|c| {
            c["ready"] == false
                && c["withdrawn"] == false
                && c["cluster-id"] == 103
                && c["status"].as_str().is_some_and(|s| {
                    s.contains(
                        "waiting for the sync canary cilium/synced/cluster3/cilium/state/nodes/v1",
                    )
                })
        })
    });
    std::fs::remove_file(c1.mesh_dir.join("cluster3")).expect("remove cluster3's file");
    assert_eq!(
        remote(n1, "cluster2").map(|c| c["ready"].clone()),
        Some(Value::Bool(true)),
        "cluster2 is not disturbed"
    );

    // A changed file reconnects with the new content; the entries stay meanwhile (until
    // the grace period, which counts from the failure).
    let good = std::fs::read_to_string(c1.mesh_dir.join("cluster2")).expect("config");
    let unused = format!(
        "https://127.0.0.1:{}",
        e2e::process::free_port().expect("port")
    );
    std::fs::write(
        c1.mesh_dir.join("cluster2"),
        good.replace(&kvstore2, &unused),
    )
    .expect("rewrite cluster2's file");
    wait_for(
        "cluster2 reconnects to the new, dead endpoint",
        SETTLE,
        || {
            remote(n1, "cluster2").filter(|c| {
                c["ready"] == false && c["endpoints"][0].as_str() == Some(unused.as_str())
            })
        },
    );
    assert!(
        reaches(&employee2.ns, db.ip, REDIS),
        "cluster2's entries are kept while it reconnects"
    );
    std::fs::write(c1.mesh_dir.join("cluster2"), &good).expect("restore cluster2's file");
    wait_for("cluster2 ready again on its kvstore", SETTLE, || {
        ready_with_endpoints(n1, "cluster2", 4).filter(|c| c["withdrawn"] == false)
    });

    // A global service: backends of both clusters, in the kvstore and in the CLI.
    global_service(bed1, db.ip, REDIS).expect("cluster1's service");
    global_service(bed2, db2.ip, REDIS).expect("cluster2's service");
    let published = wait_for("cluster2 publishes its global service", SETTLE, || {
        c2.kvstore()
            .etcdctl(&[
                "get",
                "cilium/state/services/v1/cluster2/default/protected-db",
                "--print-value-only",
            ])
            .ok()
            .filter(|v| v.contains(&db2.ip.to_string()))
    });
    let published: Value = serde_json::from_str(published.trim()).expect("ClusterService JSON");
    assert_eq!(published["cluster"], "cluster2");
    assert_eq!(published["clusterID"], 102);
    let backends = wait_for("cluster1 lists both backends", SETTLE, || {
        let list: Value =
            serde_json::from_str(&n1.cilium(&["service", "list", "-o", "json"]).ok()?).ok()?;
        let service = list
            .as_array()?
            .iter()
            .find(|s| s["name"] == "protected-db")?
            .clone();
        let backends: Vec<(String, String)> = service["backends"]
            .as_array()?
            .iter()
            .map(|b| {
                (
                    b["address"]["ip"].as_str().unwrap_or("").to_owned(),
                    b["cluster"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        (backends.len() == 2).then_some(backends)
    });
    assert_eq!(
        backends,
        [
            (db.ip.to_string(), "cluster1".to_owned()),
            (db2.ip.to_string(), "cluster2".to_owned())
        ]
    );
    let table = n1.cilium(&["service", "list"]).expect("service list");
    assert!(table.contains("ClusterIP (global)"), "{table}");

    // The datapath balances the global service's cluster IP over both clusters' backends.
    let cluster_ip: Ipv4Addr = bed1
        .kubectl_run(
            &[
                "get",
                "service",
                "protected-db",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            None,
        )
        .expect("the service")
        .trim()
        .parse()
        .expect("a cluster IP");
    wait_for("the service answers", SETTLE, || {
        reaches(&employee1.ns, cluster_ip, REDIS).then_some(())
    });
    let destinations = wait_for("connections to both clusters' backends", SETTLE, || {
        for _ in 0..10 {
            assert!(
                reaches(&employee1.ns, cluster_ip, REDIS),
                "through the service"
            );
        }
        let ct: Value =
            serde_json::from_str(&n1.cilium(&["bpf", "ct", "list", "-o", "json"]).ok()?).ok()?;
        let destinations: std::collections::BTreeSet<String> = ct
            .as_array()?
            .iter()
            .filter(|e| e["src"] == employee1.ip.to_string() && e["dport"] == REDIS)
            .filter_map(|e| e["dst"].as_str().map(str::to_owned))
            .collect();
        (destinations.len() == 2).then_some(destinations)
    });
    assert_eq!(
        destinations,
        [db.ip.to_string(), db2.ip.to_string()]
            .into_iter()
            .collect(),
        "connections to the cluster IP reached the backends of both clusters"
    );
    let lb = n1.cilium(&["bpf", "lb", "list"]).expect("bpf lb list");
    for backend in [db.ip, db2.ip] {
        assert!(lb.contains(&format!("{backend}:{REDIS} (")), "{lb}");
    }
    assert!(lb.contains(&format!("{cluster_ip}:{REDIS}/TCP")), "{lb}");
    assert!(
        n1.cilium(&["status"])
            .expect("status")
            .contains("1 global-services"),
        "one global service"
    );

    // Cut cluster2's kvstore: cluster1's own traffic is untouched.
    c2.kvstore().stop();
    assert!(reaches(&employee1.ns, db.ip, REDIS), "right after the cut");
    wait_for("cluster1 sees cluster2 go", SETTLE, || {
        remote(n1, "cluster2")
            .filter(|c| c["ready"] == false && c["num-failures"].as_u64() >= Some(1))
    });
    assert!(
        metric_is(n1, READINESS, "0"),
        "cluster2 not ready in the metrics"
    );
    // After the grace period cluster2's entries are withdrawn: its employee is `world`.
    wait_for("cluster2's entries withdrawn", SETTLE, || {
        remote(n1, "cluster2").filter(|c| c["withdrawn"] == true)
    });
    // ... and its backends leave the global service's maps.
    wait_for("cluster2's backend out of the service maps", SETTLE, || {
        let lb = n1.cilium(&["bpf", "lb", "list"]).ok()?;
        (lb.contains(&format!("{}:{REDIS} (", db.ip))
            && !lb.contains(&format!("{}:{REDIS} (", db2.ip)))
        .then_some(())
    });
    until_reachability(
        "cluster1's traffic stays, cluster2's employee is cut off",
        &[
            (&employee1, db.ip, true),
            (&stranger1, db.ip, false),
            (&employee2, db.ip, false),
        ],
    );
    let nodes = n1.cilium(&["node", "list"]).expect("node list");
    assert!(!nodes.contains("cluster2/"), "{nodes}");

    // It comes back: so do its entries.
    c2.kvstore().resume().expect("cluster2's kvstore back");
    wait_for("cluster2 ready again", Duration::from_secs(90), || {
        ready_with_endpoints(n1, "cluster2", 4)
    });
    until_reachability("the policy's verdicts again", &enforced);

    // Removing the file disconnects at once.
    mesh.disconnect(0, 1).expect("remove the file");
    wait_for("cluster1 leaves cluster2", SETTLE, || {
        let mesh = status(n1)["cluster-mesh"].clone();
        mesh["clusters"].as_array()?.is_empty().then_some(())
    });
    until_reachability(
        "cluster2's employee is a stranger again",
        &[(&employee2, db.ip, false), (&employee1, db.ip, true)],
    );
}
