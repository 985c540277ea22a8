//! The node agent on cluster-in-a-box: two nodes (network namespaces on one link, each with
//! a real cilium-agent), the operator, and pods wired by `cilium-cni` as a runtime would.
//! Needs root (as CI has).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use e2e::cluster::{
    AgentNode, Cluster, CniPod, agent_get, agent_request, app_labels, as_pairs, cni_env,
};
use e2e::netns::NetNs;
use e2e::traffic::{reaches, serve_echo};
use e2e::wait_for;
use ipnet::Ipv4Net;
use serde_json::Value;

const ECHO: u16 = 8080;
const SETTLE: Duration = Duration::from_secs(60);

/// The agent's endpoints: id → (container, IPv4, identity, state).
fn endpoints(node: &AgentNode) -> BTreeMap<u64, (String, String, u64, String)> {
    let (status, body) = agent_get(&node.socket(), "/v1/endpoint").expect("the agent answers");
    assert_eq!(status, 200, "{body}");
    let list: Vec<Value> = serde_json::from_str(&body).expect("a JSON list");
    list.iter()
        .map(|e| {
            (
                e["id"].as_u64().unwrap_or_default(),
                (
                    e["container-id"].as_str().unwrap_or_default().to_owned(),
                    e["ipv4"].as_str().unwrap_or_default().to_owned(),
                    e["identity"].as_u64().unwrap_or_default(),
                    e["state"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

fn agent_status(node: &AgentNode) -> Value {
    let (_, body) = agent_get(&node.socket(), "/v1/healthz").expect("the agent answers");
    serde_json::from_str(&body).expect("JSON")
}

/// CiliumEndpoints by `namespace/name`.
fn ceps(cluster: &Cluster) -> BTreeMap<String, Value> {
    cluster
        .bed
        .list("ciliumendpoints.cilium.io")
        .expect("kubectl get cep")
        .into_iter()
        .map(|cep| {
            let key = format!(
                "{}/{}",
                cep["metadata"]["namespace"].as_str().unwrap_or_default(),
                cep["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, cep)
        })
        .collect()
}

fn node_cidr(cluster: &Cluster, node: &AgentNode) -> Ipv4Net {
    cluster
        .pod_cidr(node)
        .expect("kubectl get cn")
        .parse()
        .expect("a PodCIDR")
}

fn all_reach(pods: &[&CniPod]) -> Vec<String> {
    let mut failures = Vec::new();
    for from in pods {
        for to in pods {
            if from.name != to.name && !reaches(&from.ns, to.ip, ECHO) {
                failures.push(format!("{} -> {} ({})", from.name, to.name, to.ip));
            }
        }
    }
    failures
}

#[test]
fn pods_are_networked_within_and_across_nodes_and_survive_an_agent_restart() {
    let mut cluster = Cluster::start(2).expect("cluster-in-a-box with two agent nodes");
    let bed = &cluster.bed;

    // Each node registered its CiliumNode and got a block.
    let cn_table = bed
        .kubectl_run(&["get", "cn"], None)
        .expect("kubectl get cn");
    for node in &cluster.nodes {
        assert!(cn_table.contains(&node.name), "{cn_table}");
        assert!(
            cn_table.contains(&node.ip.to_string()),
            "InternalIP shown: {cn_table}"
        );
    }
    let cidrs: Vec<Ipv4Net> = cluster
        .nodes
        .iter()
        .map(|n| node_cidr(&cluster, n))
        .collect();
    assert_ne!(cidrs[0], cidrs[1]);
    for (node, cidr) in cluster.nodes.iter().zip(&cidrs) {
        let status = agent_status(node);
        let router: Ipv4Addr = status["router-ip"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("router");
        assert!(
            cidr.contains(&router),
            "cilium_host address {router} in {cidr}"
        );
        let cn = bed
            .kubectl_run(&["get", "cn", &node.name, "-o", "jsonpath={.spec.addresses[?(@.type==\"CiliumInternalIP\")].ip} {.spec.health.ipv4}"], None)
            .expect("cn");
        assert_eq!(
            cn,
            format!(
                "{router} {}",
                status["health-ip"].as_str().unwrap_or_default()
            )
        );
    }

    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let a1 = n1
        .add_pod(bed, "default", "a1", &app_labels("alpha"))
        .expect("a1");
    let a2 = n1
        .add_pod(bed, "default", "a2", &app_labels("beta"))
        .expect("a2");
    let b1 = n2
        .add_pod(bed, "default", "b1", &app_labels("alpha"))
        .expect("b1");
    let b2 = n2
        .add_pod(bed, "default", "b2", &app_labels("gamma"))
        .expect("b2");
    for (pod, cidr) in [
        (&a1, cidrs[0]),
        (&a2, cidrs[0]),
        (&b1, cidrs[1]),
        (&b2, cidrs[1]),
    ] {
        assert!(
            cidr.contains(&pod.ip),
            "{} got {} outside its node's {cidr}",
            pod.name,
            pod.ip
        );
        assert_eq!(pod.result["cniVersion"], "1.0.0");
        assert_eq!(pod.result["interfaces"][1]["name"], "eth0");
    }
    let pods = [&a1, &a2, &b1, &b2];
    for pod in pods {
        serve_echo(&pod.ns, ECHO);
    }
    assert_eq!(
        all_reach(&pods),
        Vec::<String>::new(),
        "TCP between every pair"
    );
    assert!(a1.ns.ping(a2.ip), "ping within a node");
    assert!(a1.ns.ping(b2.ip), "ping across nodes");
    assert!(b1.ns.ping(a2.ip), "ping across nodes, the other way");

    // Every pod's CiliumEndpoint: ready with the operator's identity for its labels.
    let ready = wait_for("four ready CiliumEndpoints", SETTLE, || {
        let ceps = ceps(&cluster);
        let all_ready = pods.iter().all(|p| {
            ceps.get(&format!("default/{}", p.name))
                .is_some_and(|c| c["status"]["state"] == "ready")
        });
        all_ready.then_some(ceps)
    });
    let identities: BTreeSet<String> = cluster
        .bed
        .list("ciliumidentities")
        .expect("kubectl get ciliumid")
        .iter()
        .filter_map(|cid| cid["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for (pod, node) in [(&a1, n1), (&a2, n1), (&b1, n2), (&b2, n2)] {
        let cep = &ready[&format!("default/{}", pod.name)];
        let status = &cep["status"];
        assert_eq!(
            status["networking"]["addressing"][0]["ipv4"],
            pod.ip.to_string()
        );
        assert_eq!(status["networking"]["node"], node.ip.to_string());
        assert_eq!(
            status["external-identifiers"]["container-id"],
            pod.container_id
        );
        let identity = status["identity"]["id"].as_u64().expect("an identity");
        assert!(identity >= 256, "{identity}");
        assert!(
            identities.contains(&identity.to_string()),
            "CiliumIdentity {identity} exists"
        );
        let id = status["id"].as_u64().expect("an endpoint id");
        let agent_view = &endpoints(node)[&id];
        assert_eq!(
            agent_view.2, identity,
            "the agent's endpoint has the CEP's identity"
        );
    }
    let same_labels = |a: &CniPod, b: &CniPod| {
        ready[&format!("default/{}", a.name)]["status"]["identity"]["id"]
            == ready[&format!("default/{}", b.name)]["status"]["identity"]["id"]
    };
    assert!(
        same_labels(&a1, &b1),
        "same labels, same identity on both nodes"
    );
    assert!(!same_labels(&a1, &a2));
    let table = bed
        .kubectl_run(&["get", "cep", "-n", "default"], None)
        .expect("kubectl get cep");
    for pod in pods {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", pod.name)))
            .unwrap_or_else(|| panic!("{} missing from\n{table}", pod.name));
        assert!(
            row.contains(&pod.ip.to_string()) && row.contains("ready"),
            "{row}"
        );
    }

    // The route to the other node's pods, via its InternalIP.
    let routes = n1
        .ns
        .command("ip")
        .args(["route", "show", "proto", "193"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        routes.contains(&format!("{} via {}", cidrs[1], n2.ip)),
        "{routes}"
    );

    // An agent killed with SIGKILL: pods keep talking while it is down, and after the
    // restart every endpoint has the same id, address and identity.
    let before = endpoints(&cluster.nodes[0]);
    cluster.nodes[0].kill_agent();
    assert_eq!(
        all_reach(&pods),
        Vec::<String>::new(),
        "traffic while the agent is down"
    );
    cluster.nodes[0].start_agent().expect("the agent restarts");
    // Restored endpoints keep their pinned maps and are `waiting-to-regenerate` until the
    // first policy computation; then they are what they were.
    let after = wait_for("the restarted agent's endpoints", SETTLE, || {
        let now = endpoints(&cluster.nodes[0]);
        (now.len() == before.len() && now.values().all(|e| e.3 == "ready")).then_some(now)
    });
    assert_eq!(
        after, before,
        "ids, addresses and identities survive a restart"
    );
    assert_eq!(
        all_reach(&pods),
        Vec::<String>::new(),
        "traffic after the restart"
    );

    // The ipcache of node 1 holds the pods of node 2 with their identities and node, the
    // nodes as host / remote-node, and world as the default.
    let ipcache = node_ipcache(&cluster.nodes[0]);
    let ceps_now = ceps(&cluster);
    for pod in [&b1, &b2] {
        let identity = ceps_now[&format!("default/{}", pod.name)]["status"]["identity"]["id"]
            .as_u64()
            .expect("identity");
        let entry = ipcache
            .get(&format!("{}/32", pod.ip))
            .expect("remote pod in the ipcache");
        assert_eq!(u64::from(entry.identity), identity);
        assert_eq!(entry.tunnel_endpoint, Some(cluster.nodes[1].ip));
    }
    let identity_of = |prefix: &str| ipcache.get(prefix).map(|e| e.identity);
    assert_eq!(
        identity_of(&format!("{}/32", cluster.nodes[0].ip)),
        Some(1),
        "host"
    );
    assert_eq!(
        identity_of(&format!("{}/32", cluster.nodes[1].ip)),
        Some(6),
        "remote-node"
    );
    assert_eq!(identity_of("0.0.0.0/0"), Some(2), "world");

    // A pod whose labels change gets the identity of its new labels.
    let old_identity = ceps_now["default/a2"]["status"]["identity"]["id"].clone();
    let b1_identity = ceps_now["default/b1"]["status"]["identity"]["id"].clone();
    cluster
        .bed
        .kubectl_run(&["label", "pod", "a2", "app=alpha", "--overwrite"], None)
        .expect("relabel a2");
    let relabeled = wait_for("a2's endpoint to take the alpha identity", SETTLE, || {
        let cep = ceps(&cluster).remove("default/a2")?;
        (cep["status"]["identity"]["id"] == b1_identity).then_some(cep)
    });
    assert_ne!(relabeled["status"]["identity"]["id"], old_identity);
    let a2_id = relabeled["status"]["id"].as_u64().expect("id");
    assert_eq!(
        Some(endpoints(&cluster.nodes[0])[&a2_id].2),
        b1_identity.as_u64(),
        "the datapath endpoint follows"
    );

    bad_input_changes_nothing(&mut cluster, &a1, &b1);

    // CHECK: the endpoint and both ends of the veth are there.
    let node1 = &cluster.nodes[0];
    let check = |pod: &CniPod| {
        let env = cni_env(
            "CHECK",
            &pod.container_id,
            &pod.ns,
            &pod.namespace,
            &pod.name,
        );
        node1
            .cni(&as_pairs(&env), &node1.net_conf())
            .expect("cilium-cni CHECK runs")
    };
    let checked = check(&a2);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );

    // DEL (twice: it is idempotent) and the Pod's deletion free the address and the CEP.
    let used_before = agent_status(node1)["ipam"]["used"].as_u64().expect("used");
    for attempt in 1..=2 {
        let output = node1.del_pod(&a2).expect("cilium-cni DEL runs");
        assert!(
            output.status.success(),
            "DEL #{attempt}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(output.stdout.is_empty(), "DEL prints nothing on success");
    }
    let gone: Value = serde_json::from_slice(&check(&a2).stdout).expect("a CNI error");
    assert_eq!(gone["code"], 3, "CHECK after DEL: {gone}");
    cluster
        .bed
        .kubectl_run(&["delete", "pod", "a2", "--wait=false"], None)
        .expect("delete pod");
    let status = agent_status(node1);
    assert_eq!(status["ipam"]["used"].as_u64(), Some(used_before - 1));
    let held = status["ipam"]["allocations"].to_string();
    assert!(
        !held.contains(&format!("\"{}\"", a2.ip)),
        "{} still allocated: {held}",
        a2.ip
    );
    assert!(!endpoints(node1).contains_key(&a2_id));
    wait_for("a2's CiliumEndpoint to go", SETTLE, || {
        (!ceps(&cluster).contains_key("default/a2")).then_some(())
    });
    assert!(
        !node1
            .ns
            .links()
            .iter()
            .any(|l| l.starts_with("lxc") && a2.result["interfaces"][0]["name"] == *l)
    );
    assert!(reaches(&a1.ns, b1.ip, ECHO), "the others are untouched");
}

/// The ipcache pinned by `node`'s agent, prefix → entry.
fn node_ipcache(node: &AgentNode) -> BTreeMap<String, cilium_datapath::IpcacheEntry> {
    let config = cilium_datapath::DatapathConfig {
        bpffs_root: node.bpffs_root().to_owned(),
        ..Default::default()
    };
    let datapath = cilium_datapath::Datapath::open(&config).expect("the pinned datapath opens");
    datapath
        .ipcache()
        .expect("ipcache")
        .into_iter()
        .map(|(prefix, entry)| (prefix.to_string(), entry))
        .collect()
}

/// Garbage on the CNI's stdin or the agent's API, and an agent that is down: each gets a
/// clear error and changes nothing.
fn bad_input_changes_nothing(cluster: &mut Cluster, existing: &CniPod, peer: &CniPod) {
    let node = &cluster.nodes[0];
    let endpoints_before = endpoints(node);
    let used_before = agent_status(node)["ipam"]["used"].clone();
    let links_before = node.ns.links();
    let fresh = NetNs::new("pod").expect("netns");
    let env = cni_env("ADD", "garbage-1", &fresh, "default", "garbage");
    for stdin in [
        "garbage",
        "",
        r#"{"cniVersion":"9.9.9","name":"x","type":"cilium-cni"}"#,
    ] {
        let output = node.cni(&as_pairs(&env), stdin).expect("cilium-cni runs");
        assert!(!output.status.success(), "ADD with {stdin:?} must fail");
        let error: Value = serde_json::from_slice(&output.stdout).expect("a CNI error on stdout");
        let expected = if stdin.contains("9.9.9") { 1 } else { 6 };
        assert_eq!(error["code"], expected, "{error}");
        assert!(
            error["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
    let mut no_netns = env.clone();
    no_netns.retain(|(k, _)| k != "CNI_NETNS");
    let output = node
        .cni(&as_pairs(&no_netns), &node.net_conf())
        .expect("runs");
    let error: Value = serde_json::from_slice(&output.stdout).expect("CNI error");
    assert_eq!(error["code"], 4, "missing CNI_NETNS: {error}");

    // The API answers malformed requests with a 4xx and a message.
    let socket = node.socket();
    for (method, path, body, status) in [
        ("PUT", "/v1/endpoint/container-id:x", "{not json", 400),
        ("PUT", "/v1/endpoint/12", "{}", 400),
        ("GET", "/v1/endpoint/0", "", 400),
        ("GET", "/v1/endpoint/4242", "", 404),
        ("DELETE", "/v1/ipam/not-an-ip", "", 400),
        ("DELETE", "/v1/ipam/10.99.0.1", "", 404),
        ("POST", "/v1/ipam", r#"{"owner": ""}"#, 400),
        ("GET", "/v1/nothing", "", 404),
    ] {
        let (got, answer) = agent_request(&socket, method, path, body).expect("the agent answers");
        assert_eq!(got, status, "{method} {path}: {answer}");
        let answer: Value = serde_json::from_str(&answer).expect("a JSON error");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let mode = std::fs::metadata(&socket)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600), "the API socket is root-only");

    assert_eq!(endpoints(node), endpoints_before);
    assert_eq!(agent_status(node)["ipam"]["used"], used_before);
    assert_eq!(node.ns.links(), links_before, "no device was left behind");

    // With the agent down, ADD asks the runtime to try again later and leaves nothing.
    cluster.nodes[0].kill_agent();
    let node = &cluster.nodes[0];
    let output = node.cni(&as_pairs(&env), &node.net_conf()).expect("runs");
    let error: Value = serde_json::from_slice(&output.stdout).expect("CNI error");
    assert_eq!(error["code"], 11, "{error}");
    assert_eq!(node.ns.links(), links_before);
    assert!(
        reaches(&existing.ns, peer.ip, ECHO),
        "pods keep talking meanwhile"
    );
    cluster.nodes[0]
        .start_agent()
        .expect("the agent comes back");
    wait_for("the restored endpoints, ready again", SETTLE, || {
        (endpoints(&cluster.nodes[0]) == endpoints_before).then_some(())
    });
}
