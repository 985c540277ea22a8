//! The product on real nodes: kubelet v1.20.2 + containerd 1.6 + runc, the chart installed
//! as a user installs it (rendered by Helm's SDK with this cluster's values, applied with
//! kubectl), the agents and operators running as the DaemonSet's and the Deployment's pods,
//! containerd calling `cilium-cni` for every pod. One bed for the whole story: it takes
//! about half a minute to start.

use std::path::Path;
use std::time::Duration;

use e2e::realnode::{PodRef, RealCluster, http_probe};
use e2e::wait_for;

const SETTLE: Duration = Duration::from_secs(120);
const REDIS: u16 = 6379;

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

fn pods_ready(cluster: &RealCluster, namespace: &str, selector: &str, count: usize) -> Vec<PodRef> {
    wait_for(
        &format!("{count} ready pods {selector} in {namespace}"),
        SETTLE,
        || {
            let pods = cluster.pods(namespace, selector).ok()?;
            (pods.len() == count && pods.iter().all(|p| p.ready && p.ip.is_some())).then_some(pods)
        },
    )
}

fn assert_all_reach(cluster: &RealCluster, clients: &[&PodRef], dbs: &[PodRef], when: &str) {
    for client in clients {
        for db in dbs {
            assert!(
                cluster.reaches(client, db.ip.expect("ip"), REDIS),
                "{} does not reach {} {when}",
                client.name,
                db.name
            );
        }
    }
}

/// How many of `tries` requests (every 250 ms) from `from` to `to` got an answer.
fn answered(cluster: &RealCluster, from: &PodRef, to: &PodRef, tries: usize) -> usize {
    let Some(ip) = to.ip else { return 0 };
    let probe = http_probe(ip, REDIS, 1);
    let script = format!(
        "n=0; for i in $(seq {tries}); do {probe} 2>/dev/null | grep -q '200 OK' && n=$((n+1)); sleep 0.25; done; echo $n"
    );
    cluster
        .exec(from, &["sh", "-c", &script])
        .ok()
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_chart_runs_on_real_nodes() {
    let cluster = RealCluster::start(2).expect("real cluster");

    // Nodes are not Ready for pods before an agent can wire them.
    std::thread::sleep(Duration::from_secs(3));
    let ready = cluster
        .jsonpath(
            &["get", "nodes"],
            "{.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        )
        .expect("nodes");
    assert!(
        !ready.contains("True"),
        "a node is Ready without a CNI: {ready}"
    );

    // Install as a user does: the chart with this cluster's values, nothing else.
    let values = cluster
        .write("values.yaml", &cluster.chart_values())
        .expect("values");
    let manifest = cluster.install_chart(&[&values]).expect("install");
    wait_for("both nodes Ready", SETTLE, || {
        let ready = cluster.jsonpath(
            &["get", "nodes"],
            "{.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        )?;
        (ready == "True True").then_some(())
    });
    for node in &cluster.nodes {
        let conflist = node
            .private_path("/etc/cni/net.d/05-cilium.conflist")
            .expect("path");
        assert!(conflist.exists(), "{}: no conflist", node.name);
    }
    let status = cluster
        .cilium(&["status"])
        .expect("cilium status in the agent pod");
    assert!(status.contains("v1.20.2"), "{status}");
    assert!(status.contains("Ok"), "{status}");

    // Real workloads on both nodes reach each other and have CiliumEndpoints.
    cluster
        .kubectl_run(&["apply", "-f", &repo("e2e/realnode/workloads.yaml")], None)
        .expect("workloads");
    let dbs = pods_ready(&cluster, "default", "app=protected-db", 2);
    let employees = pods_ready(&cluster, "default", "app=employee", 2);
    let istio = pods_ready(&cluster, "istio-space", "app=employee", 1);
    let stranger = pods_ready(&cluster, "default", "app=stranger", 1);
    let nodes_of = |pods: &[PodRef]| {
        let mut nodes: Vec<_> = pods.iter().filter_map(|p| p.node.clone()).collect();
        nodes.sort();
        nodes
    };
    assert_eq!(nodes_of(&dbs), ["node1", "node2"]);
    assert_eq!(nodes_of(&employees), ["node1", "node2"]);
    wait_for("6 ready CiliumEndpoints", SETTLE, || {
        let states = cluster.jsonpath(&["get", "cep", "-A"], "{.items[*].status.state}")?;
        (states.split(' ').filter(|s| *s == "ready").count() == 6).then_some(())
    });
    // A StatefulSet's pods differ only by per-pod labels, which are not identity-relevant.
    let db_identities = cluster
        .jsonpath(
            &["get", "cep", "protected-db-0", "protected-db-1"],
            "{.items[*].status.identity.id}",
        )
        .expect("db CEPs");
    let ids: Vec<&str> = db_identities.split(' ').collect();
    assert!(
        ids.len() == 2 && ids[0] == ids[1],
        "the db pods' identities: {ids:?}"
    );
    let clients: Vec<&PodRef> = employees.iter().chain(&istio).chain(&stranger).collect();
    assert_all_reach(&cluster, &clients, &dbs, "before any policy");

    // The seed's protected-db policy, enforced between real pods across nodes.
    cluster
        .kubectl_run(
            &[
                "apply",
                "-n",
                "default",
                "-f",
                &repo("examples/policies/protected-db.yaml"),
            ],
            None,
        )
        .expect("policy");
    wait_for("the stranger shut out", SETTLE, || {
        dbs.iter()
            .all(|db| {
                db.ip
                    .is_some_and(|ip| !cluster.reaches(&stranger[0], ip, REDIS))
            })
            .then_some(())
    });
    let employees_all: Vec<&PodRef> = employees.iter().chain(&istio).collect();
    assert_all_reach(&cluster, &employees_all, &dbs, "under the policy");

    // No policy selects the employees: they reach each other (until `always`, below).
    assert!(cluster.reaches(&employees[0], employees[1].ip.expect("ip"), REDIS));

    agent_restart(&cluster, &dbs[0], &employees, &stranger[0]);
    agent_down(&cluster);
    upgrade(&cluster, &values, &employees);
    uninstall(&cluster, &manifest);
}

/// Deleting an agent pod (the DaemonSet makes a new one) keeps allowed connections
/// flowing and denied ones denied: the pinned datapath enforces meanwhile.
fn agent_restart(cluster: &RealCluster, db: &PodRef, employees: &[PodRef], stranger: &PodRef) {
    let node = db.node.clone().expect("db's node");
    let agent = cluster
        .agent_on(&node)
        .expect("pods")
        .expect("an agent on the db's node");
    let employee = employees
        .iter()
        .find(|e| e.node.as_deref() != Some(node.as_str()))
        .expect("an employee on the other node");
    const TRIES: usize = 40;
    let (allowed, denied) = std::thread::scope(|scope| {
        let allowed = scope.spawn(|| answered(cluster, employee, db, TRIES));
        let denied = scope.spawn(|| answered(cluster, stranger, db, TRIES));
        std::thread::sleep(Duration::from_secs(2));
        cluster
            .kubectl_run(
                &[
                    "delete",
                    "pod",
                    "-n",
                    "kube-system",
                    &agent.name,
                    "--wait=false",
                ],
                None,
            )
            .expect("delete the agent pod");
        (
            allowed.join().expect("allowed"),
            denied.join().expect("denied"),
        )
    });
    assert_eq!(
        allowed, TRIES,
        "allowed requests lost across the agent's restart"
    );
    assert_eq!(
        denied, 0,
        "denied requests answered across the agent's restart"
    );
    wait_for("a new agent on the db's node", SETTLE, || {
        let new = cluster.agent_on(&node).ok()??;
        (new.name != agent.name && new.ready).then_some(())
    });
    assert!(
        !cluster.reaches(stranger, db.ip.expect("ip"), REDIS),
        "the new agent let the stranger in"
    );
}

/// With node2's agent away: a new pod waits (the runtime retries ADD) and starts once the
/// agent is back; a pod deleted meanwhile is deleted for the runtime at once (its DEL
/// queued) and its endpoint cleaned up by the returning agent.
fn agent_down(cluster: &RealCluster) {
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}\nspec:\n  nodeName: node2\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: localhost/busybox:1, imagePullPolicy: Never, command: [sleep, '100000']}}\n"
        )
    };
    cluster
        .kubectl_run(&["apply", "-f", "-"], Some(&pod("doomed")))
        .expect("doomed pod");
    pods_ready(cluster, "default", "app=doomed", 1);
    let pin = |on: &str| {
        cluster
            .kubectl_run(
                &[
                    "patch",
                    "ds",
                    "cilium",
                    "-n",
                    "kube-system",
                    "--type=merge",
                    "-p",
                    on,
                ],
                None,
            )
            .expect("patch the DaemonSet")
    };
    pin(r#"{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":"node1"}}}}}"#);
    wait_for("node2's agent gone", SETTLE, || {
        cluster.agent_on("node2").ok()?.is_none().then_some(())
    });
    let node2 = &cluster.nodes[1];
    cluster
        .kubectl_run(&["apply", "-f", "-"], Some(&pod("late")))
        .expect("late pod");
    cluster
        .kubectl_run(&["delete", "pod", "doomed", "--timeout=60s"], None)
        .expect("the runtime deletes a pod while the agent is down");
    let queue = node2.private_path("/run/cilium/deleteQueue").expect("path");
    // doomed's DEL, and those containerd sends after each failed ADD of `late`.
    let queued = std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0);
    assert!(queued >= 1, "no deletion is queued in {}", queue.display());
    std::thread::sleep(Duration::from_secs(5));
    let late = cluster.pods("default", "app=late").expect("pods");
    assert!(!late[0].ready, "a pod started without an agent");

    pin(r#"{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":null}}}}}"#);
    wait_for("the agents rolled out", SETTLE, || {
        cluster.agents_rolled_out()
    });
    pods_ready(cluster, "default", "app=late", 1);
    wait_for("the queued deletion done", SETTLE, || {
        let left = std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0);
        (left == 0).then_some(())
    });
    wait_for("doomed's CiliumEndpoint gone", SETTLE, || {
        cluster
            .kubectl_run(&["get", "cep", "doomed"], None)
            .is_err()
            .then_some(())
    });
    let agent = cluster
        .agent_on("node2")
        .expect("pods")
        .expect("node2's agent");
    let endpoints = cluster
        .exec(&agent, &["cilium", "endpoint", "list"])
        .expect("cilium endpoint list");
    assert!(!endpoints.contains("doomed"), "{endpoints}");
    assert!(endpoints.contains("late"), "{endpoints}");
}

/// A chart upgrade that changes a value rolls the agents and takes effect.
fn upgrade(cluster: &RealCluster, values: &Path, employees: &[PodRef]) {
    let checksum = || {
        cluster
            .jsonpath(
                &["get", "ds", "cilium", "-n", "kube-system"],
                "{.spec.template.metadata.annotations.cilium\\.io/config-checksum}",
            )
            .expect("checksum")
    };
    let before = checksum();
    let always = cluster
        .write("values-always.yaml", "policyEnforcementMode: always\n")
        .expect("values");
    let manifest = cluster.render_chart(&[values, &always]).expect("render");
    cluster
        .kubectl_run(&["apply", "-f", "-"], Some(&manifest))
        .expect("upgrade");
    assert_ne!(
        checksum(),
        before,
        "the changed ConfigMap does not roll the agents"
    );
    wait_for("the agents rolled out", SETTLE, || {
        cluster.agents_rolled_out()
    });
    wait_for("`always` enforced between employees", SETTLE, || {
        (!cluster.reaches(&employees[0], employees[1].ip?, REDIS)).then_some(())
    });
}

/// Uninstalled in Helm's order (workloads, then the rest; CRDs stay): nothing of the
/// agent is left on the nodes.
fn uninstall(cluster: &RealCluster, manifest: &str) {
    cluster
        .kubectl_run(&["delete", "ds", "cilium", "-n", "kube-system"], None)
        .expect("delete the DaemonSet");
    cluster
        .kubectl_run(
            &["delete", "deploy", "cilium-operator", "-n", "kube-system"],
            None,
        )
        .expect("delete the Deployment");
    let rest: Vec<String> = e2e::chart::parse_documents(manifest)
        .expect("manifest")
        .into_iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(|o| serde_yaml::to_string(&o).expect("yaml"))
        .collect();
    cluster
        .kubectl_run(
            &["delete", "--ignore-not-found", "-f", "-"],
            Some(&rest.join("---\n")),
        )
        .expect("delete the rest");
    wait_for("no agent pod left", SETTLE, || {
        cluster
            .pods("kube-system", "k8s-app=cilium")
            .ok()?
            .is_empty()
            .then_some(())
    });
    for node in &cluster.nodes {
        let conflist = node
            .private_path("/etc/cni/net.d/05-cilium.conflist")
            .expect("path");
        wait_for(&format!("{}'s conflist removed", node.name), SETTLE, || {
            (!conflist.exists()).then_some(())
        });
        let pins = node
            .command("ls")
            .args(["-A", "/sys/fs/bpf"])
            .output()
            .expect("ls bpffs");
        // A bpffs shows the kernel's own `maps.debug` and `progs.debug` iterators.
        let left: Vec<String> = String::from_utf8_lossy(&pins.stdout)
            .lines()
            .filter(|l| !l.ends_with(".debug"))
            .map(str::to_owned)
            .collect();
        assert!(
            pins.status.success() && left.is_empty(),
            "{}: pins left: {left:?}",
            node.name
        );
    }
}
