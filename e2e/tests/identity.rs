//! cilium-operator's identities and kvstore mirror on a real apiserver and a real etcd
//! (the kvstore, apart from the apiserver's own): pods get CiliumIdentities with Cilium's
//! labels, equal label sets share one, unused ones are collected, `etcdctl get` shows
//! Cilium's layout, an etcd outage ends in convergence, and numbers survive failover.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::operator::{FAST_LEASE, OperatorProcess, http_get, kill_leader, lease_holder};
use e2e::{ClusterBed, Etcd, wait_for};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

fn pod_yaml(namespace: &str, name: &str, labels: &[(&str, &str)]) -> String {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n{labels}spec:\n  containers:\n  - name: main\n    image: registry.invalid/app\n"
    )
}

/// CiliumIdentity number → security-labels.
fn identities(bed: &ClusterBed) -> BTreeMap<u32, BTreeMap<String, String>> {
    bed.list("ciliumidentities")
        .expect("list identities")
        .iter()
        .filter_map(|cid| {
            let id = cid["metadata"]["name"].as_str()?.parse().ok()?;
            let labels = serde_json::from_value(cid["security-labels"].clone()).ok()?;
            Some((id, labels))
        })
        .collect()
}

fn identity_of(bed: &ClusterBed, app: &str) -> Option<u32> {
    identities(bed)
        .into_iter()
        .find(|(_, labels)| labels.get("k8s:app").map(String::as_str) == Some(app))
        .map(|(id, _)| id)
}

/// Every key under `cilium/` → value.
fn kvstore(etcd: &Etcd) -> BTreeMap<String, String> {
    let Ok(out) = etcd.etcdctl(&["get", "--prefix", "cilium/"]) else {
        return BTreeMap::new();
    };
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter_map(|kv| Some((kv.first()?.to_string(), kv.get(1)?.to_string())))
        .collect()
}

fn kvstore_bed() -> (ClusterBed, Etcd) {
    let bed = ClusterBed::start().expect("bed");
    let dir = bed.dir().join("kvstore");
    std::fs::create_dir_all(&dir).expect("kvstore dir");
    let etcd = Etcd::start(&dir).expect("kvstore etcd");
    (bed, etcd)
}

fn operator_flags(etcd: &Etcd) -> Vec<String> {
    let mut flags = vec![
        "--cluster-pool-ipv4-cidr=10.210.0.0/16".to_owned(),
        "--cluster-name=c1".to_owned(),
        "--identity-gc-interval=2s".to_owned(),
        "--identity-heartbeat-timeout=4s".to_owned(),
        format!("--etcd-endpoints={}", etcd.endpoint()),
        "--kvstore-lease-ttl=30s".to_owned(),
    ];
    flags.extend(FAST_LEASE.map(str::to_owned));
    flags
}

#[test]
fn pods_get_identities_mirrored_in_cilium_s_kvstore_layout_and_gc_and_outages_converge() {
    let (bed, mut etcd) = kvstore_bed();
    // A stale, unparsable node entry from an earlier life: reported and removed.
    etcd.etcdctl(&["put", "cilium/state/nodes/v1/c1/ghost", "not json"])
        .expect("plant a stale key");
    bed.kubectl_run(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    team: a\n"),
    )
    .expect("namespace");
    let pods = [
        pod_yaml(
            "shop",
            "web-1",
            &[("app", "web"), ("pod-template-hash", "aaa")],
        ),
        pod_yaml(
            "shop",
            "web-2",
            &[("app", "web"), ("pod-template-hash", "bbb")],
        ),
        pod_yaml("shop", "db-1", &[("app", "db")]),
    ]
    .concat();
    bed.kubectl_run(&["apply", "-f", "-"], Some(&pods))
        .expect("pods");
    // The node the endpoint lives on: its CiliumNode (as an agent would create it), then
    // the Node.
    bed.kubectl_run(
        &["apply", "-f", "-"],
        Some("apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata:\n  name: n1\nspec:\n  addresses:\n  - type: InternalIP\n    ip: 192.168.50.10\n  - type: CiliumInternalIP\n    ip: 10.210.0.1\n  health:\n    ipv4: 10.210.0.2\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n"),
    )
    .expect("node");
    let flags = operator_flags(&etcd);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let operator = OperatorProcess::start(&bed, "op", "kube-system", &flags).expect("operator");

    let (web, db) = wait_for("identities for web and db", TIMEOUT, || {
        Some((identity_of(&bed, "web")?, identity_of(&bed, "db")?))
    });
    let all = identities(&bed);
    assert_eq!(all.len(), 2, "web-1 and web-2 share one identity: {all:#?}");
    assert!((256..=65535).contains(&web) && (256..=65535).contains(&db));
    let expected: BTreeMap<String, String> = [
        ("k8s:app", "web"),
        ("k8s:io.cilium.k8s.namespace.labels.team", "a"),
        ("k8s:io.cilium.k8s.policy.cluster", "c1"),
        ("k8s:io.cilium.k8s.policy.serviceaccount", "default"),
        ("k8s:io.kubernetes.pod.namespace", "shop"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(all[&web], expected, "pod-template-hash is left out");
    let meta = bed
        .kubectl_run(
            &[
                "get",
                "ciliumid",
                &web.to_string(),
                "-o",
                "jsonpath={.metadata.labels}",
            ],
            None,
        )
        .expect("identity labels");
    assert!(
        meta.contains("\"app\":\"web\"") && !meta.contains("namespace.labels"),
        "{meta}"
    );

    // The endpoint of web-1 on n1, as the agent will write it.
    let cep = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumEndpoint\nmetadata:\n  name: web-1\n  namespace: shop\nstatus:\n  id: 7\n  identity:\n    id: {web}\n  networking:\n    node: 192.168.50.10\n    addressing:\n    - ipv4: 10.210.0.5\n  state: ready\n"
    );
    bed.kubectl_run(&["apply", "-f", "-"], Some(&cep))
        .expect("endpoint");

    let web_labels = "k8s:app=web;k8s:io.cilium.k8s.namespace.labels.team=a;k8s:io.cilium.k8s.policy.cluster=c1;k8s:io.cilium.k8s.policy.serviceaccount=default;k8s:io.kubernetes.pod.namespace=shop;";
    let keys = wait_for("the kvstore layout", TIMEOUT, || {
        let keys = kvstore(&etcd);
        // Each kind is written in its own transaction: wait for all of them.
        let ready = keys.contains_key("cilium/state/ip/v1/default/10.210.0.5")
            && keys.contains_key(&format!("cilium/state/identities/v1/id/{web}"))
            && keys
                .get("cilium/state/nodes/v1/c1/n1")
                .is_some_and(|n| n.contains("IPv4AllocCIDR\":{"))
            && !keys.contains_key("cilium/state/nodes/v1/c1/ghost");
        ready.then_some(keys)
    });
    assert_eq!(
        keys.get(&format!("cilium/state/identities/v1/id/{web}"))
            .map(String::as_str),
        Some(web_labels)
    );
    assert_eq!(
        keys.get(&format!(
            "cilium/state/identities/v1/value/{web_labels}/192.168.50.10"
        ))
        .map(String::as_str),
        Some(web.to_string().as_str())
    );
    assert!(keys.contains_key(&format!("cilium/state/identities/v1/id/{db}")));
    let node: Value =
        serde_json::from_str(&keys["cilium/state/nodes/v1/c1/n1"]).expect("node json");
    let field_order: Vec<&str> = node
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(node["Name"], "n1");
    assert_eq!(
        node["IPAddresses"][0],
        serde_json::json!({"Type": "InternalIP", "IP": "192.168.50.10"})
    );
    assert_eq!(node["IPv4AllocCIDR"]["Mask"], "////AA==");
    assert_eq!(node["IPv4HealthIP"], "10.210.0.2");
    assert_eq!(field_order.len(), 10, "{field_order:?}");
    assert_eq!(
        keys["cilium/state/ip/v1/default/10.210.0.5"],
        format!(
            r#"{{"IP":"10.210.0.5","Mask":null,"HostIP":"192.168.50.10","ID":{web},"Key":0,"Metadata":"cilium-global:default:n1:7","K8sNamespace":"shop","K8sPodName":"web-1"}}"#
        )
    );
    assert_eq!(
        keys["cilium/cluster-config/c1"],
        r#"{"capabilities":{"syncedCanaries":true,"maxConnectedClusters":255}}"#
    );
    for prefix in ["nodes", "identities", "ip"] {
        let key = format!("cilium/synced/c1/cilium/state/{prefix}/v1");
        assert!(keys.contains_key(&key), "{key} missing: {:#?}", keys.keys());
    }
    assert!(keys.contains_key("cilium/.heartbeat"));
    let with_lease = etcd
        .etcdctl(&["get", "cilium/state/nodes/v1/c1/n1", "-w", "json"])
        .expect("etcdctl json");
    let lease =
        serde_json::from_str::<Value>(&with_lease).expect("json")["kvs"][0]["lease"].as_i64();
    assert!(
        lease.is_some_and(|l| l != 0),
        "keys carry a lease: {with_lease}"
    );
    let metrics = http_get(operator.api_port, "/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("cilium_operator_kvstore_invalid_values_total ")
                && !l.ends_with(" 0")
        ),
        "the ghost was reported: {metrics}"
    );

    // db's pod goes: its identity is marked, then deleted, and leaves the kvstore.
    bed.kubectl_run(
        &["delete", "pod", "-n", "shop", "db-1", "--wait=false"],
        None,
    )
    .expect("delete db pod");
    wait_for("db's identity marked", TIMEOUT, || {
        bed.kubectl_run(
            &[
                "get",
                "ciliumid",
                &db.to_string(),
                "-o",
                "jsonpath={.metadata.annotations}",
            ],
            None,
        )
        .ok()
        .filter(|a| a.contains("io.cilium.heartbeat"))
    });
    wait_for("db's identity deleted", TIMEOUT, || {
        (!identities(&bed).contains_key(&db)).then_some(())
    });
    wait_for("db's identity gone from etcd", TIMEOUT, || {
        (!kvstore(&etcd).contains_key(&format!("cilium/state/identities/v1/id/{db}"))).then_some(())
    });
    assert!(identities(&bed).contains_key(&web), "web is still used");

    // etcd is down for 20 s while objects change; then the mirror converges.
    etcd.stop();
    bed.kubectl_run(
        &["apply", "-f", "-"],
        Some(&pod_yaml("shop", "api-1", &[("app", "api")])),
    )
    .expect("api pod");
    bed.kubectl_run(&["delete", "ciliumendpoint", "-n", "shop", "web-1"], None)
        .expect("delete endpoint");
    let api = wait_for("api's identity (the apiserver is up)", TIMEOUT, || {
        identity_of(&bed, "api")
    });
    std::thread::sleep(Duration::from_secs(20));
    etcd.resume().expect("etcd back");
    wait_for(
        "the mirror to converge after the outage",
        Duration::from_secs(90),
        || {
            let keys = kvstore(&etcd);
            (keys.contains_key(&format!("cilium/state/identities/v1/id/{api}"))
                && !keys.contains_key("cilium/state/ip/v1/default/10.210.0.5")
                && !keys.contains_key(&format!(
                    "cilium/state/identities/v1/value/{web_labels}/192.168.50.10"
                )))
            .then_some(())
        },
    );
    assert!(
        http_get(operator.api_port, "/metrics")
            .lines()
            .any(|l| l.starts_with("cilium_operator_kvstore_errors_total ") && !l.ends_with(" 0")),
        "the outage was counted"
    );
    // Every key moved to the new session's lease: none is left on the old one to expire.
    let all = etcd
        .etcdctl(&["get", "--prefix", "cilium/", "-w", "json"])
        .expect("etcdctl json");
    let all: Value = serde_json::from_str(&all).expect("json");
    let leases: std::collections::BTreeSet<i64> = all["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| kv["lease"].as_i64())
        .collect();
    assert_eq!(leases.len(), 1, "one lease for all keys: {leases:?}");
}

#[test]
fn identity_numbers_survive_restart_and_failover() {
    let (bed, etcd) = kvstore_bed();
    bed.create_namespace("team").expect("namespace");
    let apps = ["a", "b", "c", "d", "e"];
    let pods: String = apps
        .iter()
        .map(|app| pod_yaml("team", &format!("pod-{app}"), &[("app", app)]))
        .collect();
    bed.kubectl_run(&["apply", "-f", "-"], Some(&pods))
        .expect("pods");
    let flags = operator_flags(&etcd);
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.push("--cluster-id=5");
    let mut replicas = vec![
        OperatorProcess::start(&bed, "one", "kube-system", &flags).expect("one"),
        OperatorProcess::start(&bed, "two", "kube-system", &flags).expect("two"),
    ];
    let numbers = wait_for("five identities", TIMEOUT, || {
        let all = identities(&bed);
        (all.len() == 5).then_some(all)
    });
    for id in numbers.keys() {
        assert!(
            (5 << 16 | 256..=5 << 16 | 65535).contains(id),
            "cluster 5's identities are 5<<16|n: {id}"
        );
    }

    let holder = kill_leader(&bed, "kube-system", &mut replicas, TIMEOUT).killed;
    bed.kubectl_run(
        &["apply", "-f", "-"],
        Some(&pod_yaml("team", "pod-f", &[("app", "f")])),
    )
    .expect("pod f");
    let after = wait_for("f's identity from the new leader", TIMEOUT, || {
        let all = identities(&bed);
        (all.len() == 6).then_some(all)
    });
    for (id, labels) in &numbers {
        assert_eq!(after.get(id), Some(labels), "identity {id} kept its labels");
    }
    // A pod that goes and comes back before its identity is collected keeps the number:
    // the mark is removed.
    let a = identity_of(&bed, "a").expect("a");
    let annotations = |id: u32| {
        bed.kubectl_run(
            &[
                "get",
                "ciliumid",
                &id.to_string(),
                "-o",
                "jsonpath={.metadata.annotations}",
            ],
            None,
        )
        .unwrap_or_default()
    };
    bed.kubectl_run(
        &["delete", "pod", "-n", "team", "pod-a", "--wait=false"],
        None,
    )
    .expect("delete pod-a");
    wait_for("a's identity marked", TIMEOUT, || {
        annotations(a).contains("io.cilium.heartbeat").then_some(())
    });
    bed.kubectl_run(
        &["apply", "-f", "-"],
        Some(&pod_yaml("team", "pod-a2", &[("app", "a")])),
    )
    .expect("pod-a2");
    wait_for("a's identity unmarked", TIMEOUT, || {
        (!annotations(a).contains("io.cilium.heartbeat")).then_some(())
    });
    assert_eq!(identity_of(&bed, "a"), Some(a), "a kept its number");

    // The restarted replica rebuilds from the same objects and changes nothing.
    let restarted = OperatorProcess::start(&bed, &holder, "kube-system", &flags).expect("restart");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(identities(&bed), after);
    let f = identity_of(&bed, "f").expect("f");
    wait_for("f's identity in etcd", TIMEOUT, || {
        kvstore(&etcd)
            .contains_key(&format!("cilium/state/identities/v1/id/{f}"))
            .then_some(())
    });
    drop(restarted);
}

#[test]
fn the_mirror_speaks_tls_with_client_certificates_from_cilium_s_etcd_config() {
    let bed = ClusterBed::start().expect("bed");
    let dir = bed.dir().join("kvstore-tls");
    std::fs::create_dir_all(&dir).expect("dir");
    let pki = e2e::pki::Authority::new(&dir, "kvstore CA").expect("CA");
    let etcd = Etcd::start_tls(&dir, &pki).expect("etcd with TLS");
    let tls = etcd.tls().expect("tls").clone();
    let config = dir.join("etcd.config");
    std::fs::write(
        &config,
        format!(
            "endpoints:\n- {}\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
            etcd.endpoint(),
            tls.ca.display(),
            tls.client.cert.display(),
            tls.client.key.display()
        ),
    )
    .expect("etcd.config");
    bed.create_namespace("secure").expect("namespace");
    bed.kubectl_run(
        &["apply", "-f", "-"],
        Some(&pod_yaml("secure", "app-1", &[("app", "tls")])),
    )
    .expect("pod");
    let flags = [
        "--cluster-pool-ipv4-cidr=10.211.0.0/16".to_owned(),
        "--kvstore=etcd".to_owned(),
        format!("--kvstore-opt=etcd.config={}", config.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _operator = OperatorProcess::start(&bed, "tls", "kube-system", &flags).expect("operator");
    let id = wait_for("the identity", TIMEOUT, || identity_of(&bed, "tls"));
    wait_for("its key in the TLS etcd", TIMEOUT, || {
        kvstore(&etcd)
            .get(&format!("cilium/state/identities/v1/id/{id}"))
            .filter(|labels| labels.starts_with("k8s:app=tls;"))
            .cloned()
    });
}

#[test]
fn bad_kvstore_flags_stop_the_operator_before_it_touches_the_cluster() {
    let bed = ClusterBed::shared();
    let dir = bed.dir().join("bad-kvstore-flags");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("etcd.config");
    std::fs::write(&config, "endpoints:\n- 127.0.0.1:2379\n").expect("write");
    let config_flag = format!("--kvstore-opt=etcd.config={}", config.display());
    for (flag, message) in [
        ("--etcd-endpoints=127.0.0.1:2379", "must start with http://"),
        (config_flag.as_str(), "must start with http://"),
        (
            "--kvstore-opt=etcd.config=/nonexistent/etcd.config",
            "/nonexistent/etcd.config",
        ),
        ("--kvstore-opt=consul.address=x", "not supported"),
        ("--kvstore=consul", "only \"etcd\""),
        ("--labels=k8s:(unclosed", "(unclosed"),
    ] {
        let mut operator = OperatorProcess::start(
            bed,
            "bad-flags",
            "bad-flags",
            &["--cluster-pool-ipv4-cidr=10.212.0.0/16", flag],
        )
        .expect("spawned");
        let error = wait_for("the operator to exit", TIMEOUT, || {
            operator.process.check_running().err()
        });
        let text = error.to_string();
        assert!(text.contains(message), "{flag}: {text}");
    }
    assert!(
        lease_holder(bed, "bad-flags").is_none(),
        "no Lease was taken"
    );
}
