//! Policies enforced end to end on cluster-in-a-box: the protected-db scenario of the
//! clustermesh document on one cluster of two nodes, then a deny rule, an egress rule, an
//! invalid policy, a pod whose labels change, and the policy's deletion. Needs root.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use e2e::cluster::{Cluster, app_labels, until_reachability};
use e2e::traffic::{reaches, serve_echo};
use e2e::wait_for;

const REDIS: u16 = 6379;
const WEB: u16 = 8080;
const SETTLE: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn apply(cluster: &Cluster, yaml: &str) {
    cluster
        .bed
        .kubectl_run(&["apply", "-f", "-"], Some(yaml))
        .expect("kubectl apply");
}

#[test]
fn the_protected_db_scenario_and_every_rule_kind() {
    let cluster = Cluster::start(2).expect("cluster-in-a-box with two agent nodes");
    cluster
        .bed
        .create_namespace("istio-space")
        .expect("namespace");
    let bed = &cluster.bed;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let db = n1
        .add_pod(bed, "default", "protected-db", &app_labels("protected-db"))
        .expect("db");
    let stranger = n1
        .add_pod(bed, "default", "stranger", &app_labels("stranger"))
        .expect("stranger");
    let employee = n2
        .add_pod(bed, "default", "employee", &app_labels("employee"))
        .expect("employee");
    let istio = n2
        .add_pod(bed, "istio-space", "employee", &app_labels("employee"))
        .expect("istio-space employee");
    serve_echo(&db.ns, REDIS);
    serve_echo(&stranger.ns, WEB);
    serve_echo(&employee.ns, WEB);
    wait_for("four ready endpoints", SETTLE, || {
        (cluster.ready_endpoints().ok()? == 4).then_some(())
    });

    // Before any policy everyone reaches the db.
    for pod in [&employee, &istio, &stranger] {
        assert!(
            reaches(&pod.ns, db.ip, REDIS),
            "{} before the policy",
            pod.name
        );
    }

    // The document's policy: both employees connect, the stranger does not.
    let policy = repo_root().join("examples/policies/protected-db.yaml");
    bed.kubectl_run(
        &["apply", "-n", "default", "-f", &policy.to_string_lossy()],
        None,
    )
    .expect("apply the policy");
    until_reachability(
        "only employees to reach the db",
        SETTLE,
        &[
            (&employee, &db, REDIS, true),
            (&istio, &db, REDIS, true),
            (&stranger, &db, REDIS, false),
        ],
    );
    let valid = wait_for("the policy's Valid condition", SETTLE, || {
        cluster.valid_condition("cnp", Some("default"), "protected-db-l4")
    });
    assert_eq!(valid["status"], "True", "{valid}");
    let cep = bed
        .get("cep", Some("default"), "protected-db")
        .expect("cep");
    assert_eq!(cep["status"]["policy"]["ingress"]["enforcing"], true);
    assert_eq!(cep["status"]["policy"]["egress"]["enforcing"], false);
    assert!(
        reaches(&db.ns, stranger.ip, WEB),
        "the db's egress is not enforced"
    );

    // An invalid policy is reported and not applied at all: this one would cut the db off
    // completely if its valid half were used.
    apply(
        &cluster,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: half-broken, namespace: default}
specs:
- endpointSelector: {matchLabels: {app: protected-db}}
  ingress: [{fromEndpoints: [{matchLabels: {app: nobody}}]}]
- endpointSelector: {matchLabels: {app: protected-db}}
  ingress: [{toPorts: [{ports: [{port: "6379", protocol: TCP}], serverNames: [db.example]}]}]
"#,
    );
    let invalid = wait_for("the invalid policy's condition", SETTLE, || {
        cluster.valid_condition("cnp", Some("default"), "half-broken")
    });
    assert_eq!(invalid["status"], "False", "{invalid}");
    assert!(
        invalid["message"]
            .as_str()
            .is_some_and(|m| m.contains("serverNames")),
        "{invalid}"
    );
    assert!(
        reaches(&employee.ns, db.ip, REDIS),
        "the invalid policy changed nothing"
    );
    bed.kubectl_run(&["delete", "cnp", "half-broken", "-n", "default"], None)
        .expect("delete");

    // A deny rule (clusterwide) wins over the allow for the istio-space employee.
    apply(
        &cluster,
        r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-istio-to-db}
spec:
  endpointSelector: {matchLabels: {app: protected-db}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: istio-space}}]
"#,
    );
    until_reachability(
        "the deny to cut istio-space off",
        SETTLE,
        &[(&istio, &db, REDIS, false), (&employee, &db, REDIS, true)],
    );
    bed.kubectl_run(&["delete", "ccnp", "no-istio-to-db"], None)
        .expect("delete");
    until_reachability("istio-space back", SETTLE, &[(&istio, &db, REDIS, true)]);

    // An egress rule: employees may only talk to the db.
    apply(
        &cluster,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: employees-egress, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: employee}}
  egress:
  - toEndpoints: [{matchLabels: {app: protected-db}}]
    toPorts: [{ports: [{port: "6379", protocol: TCP}]}]
"#,
    );
    until_reachability(
        "the employee's egress to be limited to the db",
        SETTLE,
        &[
            (&employee, &db, REDIS, true),
            (&employee, &stranger, WEB, false),
        ],
    );
    assert!(
        reaches(&istio.ns, stranger.ip, WEB),
        "other namespaces are not selected"
    );
    bed.kubectl_run(
        &["delete", "cnp", "employees-egress", "-n", "default"],
        None,
    )
    .expect("delete");

    // The stranger becomes an employee: access follows its new identity.
    bed.kubectl_run(
        &["label", "pod", "stranger", "app=employee", "--overwrite"],
        None,
    )
    .expect("relabel");
    until_reachability(
        "the relabelled pod to reach the db",
        SETTLE,
        &[(&stranger, &db, REDIS, true)],
    );

    // The stranger is a stranger again.
    bed.kubectl_run(
        &["label", "pod", "stranger", "app=stranger", "--overwrite"],
        None,
    )
    .expect("relabel back");
    until_reachability(
        "the stranger to be shut out again",
        SETTLE,
        &[(&stranger, &db, REDIS, false)],
    );
    // A policy that selects no pod changes nothing.
    apply(
        &cluster,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: selects-nobody, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: nobody}}
  ingress: [{fromEndpoints: [{matchLabels: {app: nobody}}]}]
  egress: [{toEndpoints: [{matchLabels: {app: nobody}}]}]
"#,
    );
    wait_for("the unselecting policy to be accepted", SETTLE, || {
        cluster
            .valid_condition("cnp", Some("default"), "selects-nobody")
            .filter(|c| c["status"] == "True")
    });
    assert!(reaches(&employee.ns, stranger.ip, WEB));
    assert!(reaches(&istio.ns, db.ip, REDIS));

    // An entity rule and a CIDR rule with `except`, against a host outside the cluster.
    let allowed_outside = Ipv4Addr::new(192, 168, 60, 101);
    let excepted_outside = Ipv4Addr::new(192, 168, 60, 100);
    let outside = cluster
        .outside_host(&[excepted_outside, allowed_outside])
        .expect("a host outside the cluster");
    serve_echo(&outside, WEB);
    let from_outside = |ip: Ipv4Addr| reaches(&outside, ip, WEB);
    let to_outside = |ip: Ipv4Addr| reaches(&stranger.ns, ip, WEB);
    assert!(
        from_outside(stranger.ip) && to_outside(allowed_outside) && to_outside(excepted_outside)
    );
    apply(
        &cluster,
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: stranger-fenced, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: stranger}}
  ingress:
  - fromEntities: [cluster]
  egress:
  - toCIDRSet: [{cidr: 192.168.60.0/24, except: [192.168.60.100/32]}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#,
    );
    wait_for("the entity and CIDR rules to take effect", SETTLE, || {
        let seen = (
            from_outside(stranger.ip),
            to_outside(allowed_outside),
            to_outside(excepted_outside),
        );
        (seen == (false, true, false)).then_some(())
    });
    assert!(
        reaches(&employee.ns, stranger.ip, WEB),
        "the cluster entity admits pods"
    );
    assert!(
        !reaches(&stranger.ns, employee.ip, WEB),
        "egress is limited to the CIDR"
    );
    bed.kubectl_run(&["delete", "cnp", "stranger-fenced", "-n", "default"], None)
        .expect("delete");

    // Deleting the policy opens the db again.
    bed.kubectl_run(&["delete", "cnp", "protected-db-l4", "-n", "default"], None)
        .expect("delete the policy");
    until_reachability(
        "everyone to reach the db",
        SETTLE,
        &[(&stranger, &db, REDIS, true), (&employee, &db, REDIS, true)],
    );
}
