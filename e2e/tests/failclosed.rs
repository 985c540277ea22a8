//! Enforcement fails closed at every moment of an endpoint's life and on the policies a
//! Cilium user brings, on real traffic between pods of a two-node cluster-in-a-box: a pod a
//! policy restricts is protected the instant CNI ADD returns; with the operator down ADD
//! asks the runtime to retry and leaves nothing behind; Cilium's egress-default-deny example
//! blocks; the seed document's L7 policy keeps its port closed; an invalid edit keeps the
//! last valid version enforced; a deleted pod's connections are scrubbed. Needs root.

use std::path::PathBuf;
use std::time::Duration;

use e2e::cluster::{
    AgentNode, Cluster, Setup, agent_get, app_labels, as_pairs, cni_env, until_reachability,
};
use e2e::netns::NetNs;
use e2e::traffic::{reaches, serve_echo};
use e2e::{ClusterBed, wait_for};
use serde_json::Value;

const WEB: u16 = 8080;
const HTTP: u16 = 80;
const SETTLE: Duration = Duration::from_secs(60);
/// The agents' `--endpoint-sync-build-timeout` here (30 s by default).
const SYNC_BUILD_TIMEOUT: &str = "6s";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn apply(cluster: &Cluster, yaml: &str) {
    cluster
        .bed
        .kubectl_run(&["apply", "-n", "default", "-f", "-"], Some(yaml))
        .expect("kubectl apply");
}

fn apply_example(cluster: &Cluster, file: &str) {
    let path = repo_root().join("examples/policies").join(file);
    cluster
        .bed
        .kubectl_run(
            &["apply", "-n", "default", "-f", &path.to_string_lossy()],
            None,
        )
        .expect("kubectl apply the example");
}

fn delete_cnp(cluster: &Cluster, name: &str) {
    cluster
        .bed
        .kubectl_run(&["delete", "cnp", name, "-n", "default"], None)
        .expect("delete the policy");
}

/// The `Valid` condition once it says `status` and its message contains `needle`.
fn until_condition(cluster: &Cluster, name: &str, status: &str, needle: &str) -> Value {
    wait_for(
        &format!("{name} to be Valid={status} with {needle:?}"),
        SETTLE,
        || {
            cluster
                .valid_condition("cnp", Some("default"), name)
                .filter(|c| {
                    c["status"] == status
                        && c["message"].as_str().is_some_and(|m| m.contains(needle))
                })
        },
    )
}

fn agent_json(node: &AgentNode, path: &str) -> Value {
    let (status, body) = agent_get(&node.socket(), path).expect("the agent answers");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Connection-tracking entries of `node` that name `ip`.
fn ct_entries_of(node: &AgentNode, ip: std::net::Ipv4Addr) -> Vec<Value> {
    let ip = ip.to_string();
    agent_json(node, "/v1/map/ct")
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["src"] == ip.as_str() || e["dst"] == ip.as_str())
        .cloned()
        .collect()
}

const GUARDED: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: guarded}
spec:
  endpointSelector: {matchLabels: {app: guarded}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: employee}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
"#;

#[test]
fn enforcement_fails_closed() {
    let bed = ClusterBed::start().expect("a bed");
    let mut setup = Setup::standard(&bed, 2);
    setup.agent_flags.push(format!(
        "--endpoint-sync-build-timeout={SYNC_BUILD_TIMEOUT}"
    ));
    let mut cluster = Cluster::start_on(bed, setup).expect("cluster-in-a-box with two nodes");
    let bed = &cluster.bed;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let employee = n2
        .add_pod(bed, "default", "employee", &app_labels("employee"))
        .expect("employee");
    let stranger = n1
        .add_pod(bed, "default", "stranger", &app_labels("stranger"))
        .expect("stranger");
    serve_echo(&employee.ns, WEB);
    serve_echo(&stranger.ns, WEB);

    // 1. A pod a policy restricts, with labels no identity has yet: the first probe made
    // the instant ADD returns is dropped (the map allowed everything until the first pass).
    apply(&cluster, GUARDED);
    until_condition(&cluster, "guarded", "True", "succeeded");
    let guarded = n1
        .add_pod(bed, "default", "guarded", &app_labels("guarded"))
        .expect("guarded");
    serve_echo(&guarded.ns, WEB);
    assert!(
        !reaches(&stranger.ns, guarded.ip, WEB),
        "a probe right after ADD returned got in"
    );
    let model = agent_json(n1, "/v1/endpoint")
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["container-id"] == guarded.container_id.as_str())
        .cloned()
        .expect("the endpoint");
    assert_eq!(
        model["state"], "ready",
        "ADD returned a ready endpoint: {model}"
    );
    until_reachability(
        "the employee on the other node to reach the guarded pod",
        SETTLE,
        &[
            (&employee, &guarded, WEB, true),
            (&stranger, &guarded, WEB, false),
        ],
    );

    // 2. The operator gone: nobody allocates the new pod's identity. ADD waits the
    // sync-build timeout, then asks the runtime to try again, and leaves nothing behind.
    // (Killed, not stopped: a stopped operator exits once resumed, past its renew deadline.)
    cluster.operator.process.signal(libc::SIGKILL);
    bed.kubectl_run(
        &["apply", "-f", "-"],
        Some(
            &serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "newcomer", "namespace": "default", "labels": {"app": "newcomer"}},
                "spec": {"nodeName": n1.name, "containers": [{"name": "main", "image": "registry.invalid/pause:3.9"}]},
            })
            .to_string(),
        ),
    )
    .expect("the newcomer's Pod");
    let endpoints_before = agent_json(n1, "/v1/endpoint").as_array().map(Vec::len);
    let used_before = agent_json(n1, "/v1/healthz")["ipam"]["used"].clone();
    let links_before = n1.ns.links();
    let pod_ns = NetNs::new("pod").expect("netns");
    let env = cni_env("ADD", "newcomer-1", &pod_ns, "default", "newcomer");
    let output = n1
        .cni(&as_pairs(&env), &n1.net_conf())
        .expect("cilium-cni runs");
    let error: Value = serde_json::from_slice(&output.stdout).expect("a CNI error");
    assert!(!output.status.success());
    assert_eq!(error["code"], 11, "try again later: {error}");
    let message = error["msg"].as_str().unwrap_or_default();
    assert!(
        message.contains("waiting-for-identity") && message.contains("CiliumIdentity"),
        "{error}"
    );
    assert_eq!(
        agent_json(n1, "/v1/endpoint").as_array().map(Vec::len),
        endpoints_before,
        "no endpoint left"
    );
    assert_eq!(
        agent_json(n1, "/v1/healthz")["ipam"]["used"],
        used_before,
        "no address left"
    );
    assert_eq!(n1.ns.links(), links_before, "no veth left");
    wait_for("no CiliumEndpoint for the refused pod", SETTLE, || {
        bed.get("cep", Some("default"), "newcomer")
            .is_err()
            .then_some(())
    });
    // A new replica, as the operator's Deployment would start.
    let operator_flags = Setup::standard(bed, 2).operator_flags;
    let flags: Vec<&str> = operator_flags.iter().map(String::as_str).collect();
    let mut replacement =
        e2e::operator::OperatorProcess::start(bed, "operator-2", "default", &flags)
            .expect("a new operator");
    let newcomer = n1
        .wire_pod("default", "newcomer")
        .expect("the runtime's retry works");
    serve_echo(&newcomer.ns, WEB);
    assert!(
        reaches(&stranger.ns, newcomer.ip, WEB),
        "no policy selects it"
    );

    // 3. Cilium's egress-default-deny example: an empty rule selects no peer, so the
    // stranger may send nothing (its map had `Allow Egress 0 ANY`).
    assert!(stranger.ns.ping(employee.ip) && reaches(&stranger.ns, employee.ip, WEB));
    apply_example(&cluster, "egress-default-deny.yaml");
    wait_for("the stranger's egress to be shut", SETTLE, || {
        (!reaches(&stranger.ns, employee.ip, WEB) && !stranger.ns.ping(employee.ip)).then_some(())
    });
    assert!(
        !reaches(&stranger.ns, newcomer.ip, WEB),
        "on its own node too"
    );
    assert!(
        reaches(&employee.ns, newcomer.ip, WEB),
        "others are not selected"
    );
    let cep = bed.get("cep", Some("default"), "stranger").expect("cep");
    assert_eq!(cep["status"]["policy"]["egress"]["enforcing"], true);
    delete_cnp(&cluster, "deny-all-egress");
    until_reachability(
        "the stranger's egress back",
        SETTLE,
        &[(&stranger, &employee, WEB, true)],
    );

    // 4. The seed document's L7 policy: L7 is not enforced, so port 80 stays closed to the
    // empire's ships instead of opening it to every request (PUT /v1/exhaust-port got 200).
    fn empire(class: &str) -> std::collections::BTreeMap<&str, &str> {
        [("org", "empire"), ("class", class)].into_iter().collect()
    }
    let deathstar = n1
        .add_pod(bed, "default", "deathstar", &empire("deathstar"))
        .expect("deathstar");
    let tiefighter = n2
        .add_pod(bed, "default", "tiefighter", &empire("tiefighter"))
        .expect("tiefighter");
    serve_echo(&deathstar.ns, HTTP);
    until_reachability(
        "the death star open before the policy",
        SETTLE,
        &[(&tiefighter, &deathstar, HTTP, true)],
    );
    apply_example(&cluster, "l7-deathstar.yaml");
    let condition = until_condition(&cluster, "rule1", "True", "stay closed");
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("not enforced")),
        "{condition}"
    );
    until_reachability(
        "port 80 closed to the tie fighter and everyone else",
        SETTLE,
        &[
            (&tiefighter, &deathstar, HTTP, false),
            (&stranger, &deathstar, HTTP, false),
        ],
    );

    // 5. An invalid edit of a valid policy keeps the valid version enforced.
    let broken = GUARDED.replace(
        "    toPorts:",
        "    authentication: {mode: required}\n    toPorts:",
    );
    apply(&cluster, &broken);
    let condition = until_condition(&cluster, "guarded", "False", "stays enforced");
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("authentication.mode")),
        "{condition}"
    );
    assert!(
        !reaches(&stranger.ns, guarded.ip, WEB),
        "still shut to the stranger"
    );
    assert!(
        reaches(&employee.ns, guarded.ip, WEB),
        "still open to the employee"
    );

    // ... and across an agent restart: the kept version is in the agent's state dir. The
    // pinned map enforces meanwhile; what counts is the map after the first computation.
    cluster.nodes[0].kill_agent();
    cluster.nodes[0].start_agent().expect("the agent restarts");
    let n1 = &cluster.nodes[0];
    wait_for("the restored endpoints, recomputed", SETTLE, || {
        agent_json(n1, "/v1/endpoint")
            .as_array()?
            .iter()
            .all(|e| e["state"] == "ready")
            .then_some(())
    });
    assert!(
        !reaches(&stranger.ns, guarded.ip, WEB),
        "still shut after the restart"
    );
    assert!(
        reaches(&employee.ns, guarded.ip, WEB),
        "still open after the restart"
    );

    // 5c. An endpoint whose CiliumIdentity is gone (deleted with no operator to recreate it)
    // still gets every policy change, computed from its own labels.
    let guarded_identity = agent_json(n1, "/v1/endpoint")
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["container-id"] == guarded.container_id.as_str())
        .and_then(|e| e["identity"].as_u64())
        .expect("the guarded pod's identity");
    replacement.process.stop();
    cluster
        .bed
        .kubectl_run(
            &["delete", "ciliumidentity", &guarded_identity.to_string()],
            None,
        )
        .expect("delete the CiliumIdentity");
    apply(&cluster, &GUARDED.replace("\"8080\"", "\"9090\""));
    until_condition(&cluster, "guarded", "True", "succeeded");
    until_reachability(
        "the edit to reach the endpoint without a CiliumIdentity",
        SETTLE,
        &[(&employee, &guarded, WEB, false)],
    );
    apply(&cluster, GUARDED);
    until_reachability(
        "the employee back on 8080",
        SETTLE,
        &[(&employee, &guarded, WEB, true)],
    );

    // 6. A deleted pod's connections go with it: nothing for a pod reusing its address.
    let held = e2e::traffic::connect(&employee.ns, guarded.ip, WEB).expect("a connection");
    assert!(
        !ct_entries_of(n1, guarded.ip).is_empty(),
        "the connection is tracked"
    );
    let output = n1.del_pod(&guarded).expect("DEL runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        ct_entries_of(n1, guarded.ip),
        Vec::<Value>::new(),
        "scrubbed"
    );
    drop(held);
}

/// The agent refuses to create an endpoint before its caches synced (the pod's identity and
/// the policies are unknown then), with the error CNI turns into "try again later"; on a real
/// datapath, nothing is wired meanwhile.
#[test]
fn endpoints_wait_for_synced_caches() {
    use cilium_agent::agent::{Agent, AgentSettings, LocalNode};
    use cilium_agent::endpoints::StateDir;
    use cilium_agent_api::{EndpointChangeRequest, EndpointRef};

    let pins = e2e::netns::ScratchBpffs::new("unsynced");
    let datapath = cilium_datapath::Datapath::open(&cilium_datapath::DatapathConfig {
        bpffs_root: pins.path().to_owned(),
        ..Default::default()
    })
    .expect("the datapath loads");
    let state = tempfile::tempdir().expect("state dir");
    let node = LocalNode {
        name: "node-1".into(),
        cluster_name: "default".into(),
        cluster_id: 0,
        ip: "192.168.60.11".parse().expect("ip"),
        cidrs: vec!["10.99.0.0/24".parse().expect("cidr")],
        router_ip: "10.99.0.1".parse().expect("ip"),
        health_ip: "10.99.0.2".parse().expect("ip"),
    };
    let agent = Agent::new(
        node,
        datapath,
        StateDir::open(state.path()).expect("state"),
        Default::default(),
        AgentSettings::default(),
    )
    .expect("an agent");
    let request = EndpointChangeRequest {
        container_id: "c1".into(),
        k8s_namespace: "default".into(),
        k8s_pod_name: "p1".into(),
        interface_name: "lxc-unsynced".into(),
        pod_interface_name: "eth0".into(),
        netns: "/var/run/netns/none".into(),
        ipv4: "10.99.0.5".parse().expect("ip"),
        mac: "0a:00:00:00:00:01".into(),
        host_mac: "0a:00:00:00:00:02".into(),
        sync_build: true,
    };
    let refused = agent
        .put_endpoint(&EndpointRef::ContainerId("c1".into()), request)
        .expect_err("refused before the caches synced");
    assert_eq!(refused.status(), 503, "{refused}");
    assert!(
        refused.to_string().contains("caches have not synced"),
        "{refused}"
    );
    assert!(agent.endpoints().is_empty());
    assert_eq!(
        agent.ipam_status().used,
        2,
        "only the router and health addresses"
    );
}
