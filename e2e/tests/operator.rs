//! cilium-operator on a real apiserver: every Node gets a CiliumNode with a distinct
//! PodCIDR, a restart changes nothing, one of two replicas leads and the other takes over
//! after `kill -9`, exhaustion is reported and served once a block frees.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e::operator::{FAST_LEASE, OperatorProcess, http_get, is_leader, kill_leader, lease_holder};
use e2e::{ClusterBed, wait_for};

fn create_nodes(bed: &ClusterBed, names: impl IntoIterator<Item = String>) {
    let yaml: String = names
        .into_iter()
        .map(|n| format!("---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n"))
        .collect();
    bed.kubectl_run(&["apply", "-f", "-"], Some(&yaml))
        .expect("nodes are created");
}

/// CiliumNode name → podCIDRs.
fn pod_cidrs(bed: &ClusterBed) -> BTreeMap<String, Vec<String>> {
    e2e::operator::pod_cidrs(bed).expect("list ciliumnodes")
}

fn operator_error(bed: &ClusterBed, node: &str) -> String {
    bed.kubectl_run(
        &[
            "get",
            "cn",
            node,
            "-o",
            "jsonpath={.status.ipam.operator-status.error}",
        ],
        None,
    )
    .unwrap_or_default()
}

#[test]
fn fifty_nodes_get_distinct_blocks_that_survive_a_restart() {
    let bed = ClusterBed::start().expect("bed");
    let names: Vec<String> = (0..50).map(|i| format!("node-{i:02}")).collect();
    create_nodes(&bed, names.clone());
    let flags = [
        "--cluster-pool-ipv4-cidr=10.200.0.0/16",
        "--cluster-pool-ipv6-cidr=fd00:200::/104",
        FAST_LEASE[0],
        FAST_LEASE[1],
        FAST_LEASE[2],
    ];
    let mut first =
        OperatorProcess::start(&bed, "op-a", "default", &flags).expect("operator starts");

    let allocated = wait_for(
        "50 CiliumNodes with an IPv4 and an IPv6 block",
        Duration::from_secs(90),
        || {
            let all = pod_cidrs(&bed);
            (all.len() == 50 && all.values().all(|c| c.len() == 2)).then_some(all)
        },
    );
    assert_eq!(
        allocated.keys().cloned().collect::<Vec<_>>(),
        names,
        "a CiliumNode per Node, same names"
    );
    let blocks: BTreeSet<&String> = allocated.values().flatten().collect();
    assert_eq!(blocks.len(), 100, "every block is distinct");
    for cidrs in allocated.values() {
        assert!(
            cidrs[0].starts_with("10.200.") && cidrs[0].ends_with("/24"),
            "{cidrs:?}"
        );
        assert!(
            cidrs[1].starts_with("fd00:200::") && cidrs[1].ends_with("/120"),
            "{cidrs:?}"
        );
    }
    let health = bed.kubectl_run(&["get", "--raw", "/"], None).map(drop);
    assert!(health.is_ok());
    let metrics = http_get(first.api_port, "/metrics");
    assert!(is_leader(first.api_port), "{metrics}");
    assert!(http_get(first.api_port, "/healthz").contains("ok"));

    first.process.signal(libc::SIGKILL);
    first.process.stop();
    let second =
        OperatorProcess::start(&bed, "op-b", "default", &flags).expect("operator restarts");
    wait_for(
        "the restarted operator to lead",
        Duration::from_secs(30),
        || (lease_holder(&bed, "default").as_deref() == Some("op-b")).then_some(()),
    );
    // Let it run a few passes (new node included) before comparing.
    create_nodes(&bed, ["node-late".to_owned()]);
    wait_for("the late node's blocks", Duration::from_secs(30), || {
        pod_cidrs(&bed)
            .get("node-late")
            .filter(|c| c.len() == 2)
            .cloned()
    });
    let after = pod_cidrs(&bed);
    for (name, cidrs) in &allocated {
        assert_eq!(
            after.get(name),
            Some(cidrs),
            "{name} kept its blocks across the restart"
        );
    }
    assert!(
        !blocks.contains(&after["node-late"][0]),
        "the late node got a free block"
    );
    drop(second);
}

#[test]
fn one_replica_leads_a_killed_leader_is_replaced_and_exhaustion_is_served() {
    let bed = ClusterBed::start().expect("bed");
    let flags = [
        "--cluster-pool-ipv4-cidr=10.201.0.0/23",
        FAST_LEASE[0],
        FAST_LEASE[1],
        FAST_LEASE[2],
    ];
    let mut replicas = vec![
        OperatorProcess::start(&bed, "replica-1", "kube-system", &flags).expect("replica 1"),
        OperatorProcess::start(&bed, "replica-2", "kube-system", &flags).expect("replica 2"),
    ];
    let holder = wait_for("a lease holder", Duration::from_secs(30), || {
        lease_holder(&bed, "kube-system")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lease_holder(&bed, "kube-system").as_deref(),
        Some(holder.as_str()),
        "the holder stays put"
    );
    let leaders: Vec<&str> = replicas
        .iter()
        .filter(|r| is_leader(r.api_port))
        .map(|r| r.identity.as_str())
        .collect();
    assert_eq!(
        leaders,
        [holder.as_str()],
        "exactly the holder considers itself leader"
    );

    // Two blocks for three nodes: the third waits, with an error and an Event.
    create_nodes(&bed, ["a".to_owned(), "b".to_owned()]);
    wait_for("a and b served", Duration::from_secs(30), || {
        let all = pod_cidrs(&bed);
        (all.get("a").is_some_and(|c| c.len() == 1) && all.get("b").is_some_and(|c| c.len() == 1))
            .then_some(())
    });
    create_nodes(&bed, ["c".to_owned()]);
    let error = wait_for("c's allocation error", Duration::from_secs(30), || {
        Some(operator_error(&bed, "c")).filter(|e| !e.is_empty())
    });
    assert!(error.contains("allocator full"), "{error}");
    assert!(pod_cidrs(&bed)["c"].is_empty());
    let events = wait_for("the exhaustion Event", Duration::from_secs(30), || {
        bed.kubectl_run(&["get", "events.events.k8s.io", "-A", "-o", "json"], None)
            .ok()
            .filter(|e| e.contains("PodCIDRAllocationFailed"))
    });
    assert!(events.contains("\"c\""), "the Event is about node c");

    // kill -9 the leader: the other replica takes over and serves c once a's block frees.
    let killed_at = Instant::now();
    let killed = kill_leader(&bed, "kube-system", &mut replicas, Duration::from_secs(30)).killed;
    assert_eq!(killed, holder);
    println!(
        "takeover after kill -9: {:?} (lease duration 4s)",
        killed_at.elapsed()
    );
    let freed = pod_cidrs(&bed)["a"].clone();
    bed.kubectl_run(&["delete", "node", "a"], None)
        .expect("delete node a");
    wait_for("a's CiliumNode deleted", Duration::from_secs(30), || {
        (!pod_cidrs(&bed).contains_key("a")).then_some(())
    });
    let served = wait_for(
        "c served from the freed block",
        Duration::from_secs(30),
        || pod_cidrs(&bed).get("c").filter(|c| !c.is_empty()).cloned(),
    );
    assert_eq!(served, freed);
    wait_for("c's error cleared", Duration::from_secs(30), || {
        operator_error(&bed, "c").is_empty().then_some(())
    });
}

/// client-go's guarantee: a leader whose requests stall (only its connection to the
/// apiserver, through a proxy that stops forwarding) stops leading by its renew deadline
/// and exits, and the standby takes over within a lease duration after that.
#[test]
fn a_leader_cut_off_steps_down_by_its_renew_deadline() {
    let bed = ClusterBed::start().expect("bed");
    let apiserver = e2e::cluster::port_of(&bed.apiserver_url()).expect("apiserver port");
    let proxy = e2e::proxy::StallingProxy::start(apiserver).expect("proxy");
    let kubeconfig = std::fs::read_to_string(bed.kubeconfig())
        .expect("kubeconfig")
        .replace(
            &format!("127.0.0.1:{apiserver}"),
            &format!("127.0.0.1:{}", proxy.port),
        );
    let through_proxy = bed.dir().join("kubeconfig-through-proxy");
    std::fs::write(&through_proxy, kubeconfig).expect("write kubeconfig");
    let flags = [
        "--cluster-pool-ipv4-cidr=10.200.0.0/16",
        FAST_LEASE[0],
        FAST_LEASE[1],
        FAST_LEASE[2],
    ];
    let mut cut_off =
        OperatorProcess::start_with_kubeconfig(&bed, &through_proxy, "cut-off", "default", &flags)
            .expect("the replica behind the proxy");
    wait_for(
        "the proxied replica to lead",
        Duration::from_secs(30),
        || (lease_holder(&bed, "default").as_deref() == Some("cut-off")).then_some(()),
    );
    let _standby = OperatorProcess::start(&bed, "standby", "default", &flags).expect("the standby");

    proxy.stall();
    let stalled = Instant::now();
    // FAST_LEASE: renew deadline 3 s, lease 4 s, retry 1 s.
    wait_for(
        "the cut-off leader to exit",
        Duration::from_secs(10),
        || cut_off.process.check_running().is_err().then_some(()),
    );
    let exited = stalled.elapsed();
    let log = cut_off.process.log_tail(20);
    assert!(log.contains("renew"), "it says why: {log}");
    wait_for("the standby to take over", Duration::from_secs(15), || {
        (lease_holder(&bed, "default").as_deref() == Some("standby")).then_some(())
    });
    let taken_over = stalled.elapsed();
    println!("cut-off leader exited after {exited:?}; standby leading after {taken_over:?}");
    assert!(
        exited < taken_over,
        "the old leader had stopped before the standby led ({exited:?}, {taken_over:?})"
    );
}

/// After a 13 s apiserver outage the operator's watches resume within seconds: a Node
/// created once the apiserver is back gets its PodCIDR at once. (kube's default watch
/// backoff, 0.8 s doubling to 30 s, had grown during the outage: such a Node waited 25-31 s.)
/// The lease outlasts the outage, so the same leader serves before and after.
#[test]
fn watches_resume_within_seconds_after_an_apiserver_restart() {
    let bed = ClusterBed::start().expect("bed");
    let flags = [
        "--cluster-pool-ipv4-cidr=10.202.0.0/16",
        "--leader-election-lease-duration=60s",
        "--leader-election-renew-deadline=45s",
        "--leader-election-retry-period=2s",
    ];
    let _operator =
        OperatorProcess::start(&bed, "resume", "kube-system", &flags).expect("operator");
    let has_cidrs = |node: &str| pod_cidrs(&bed).get(node).is_some_and(|c| !c.is_empty());
    create_nodes(&bed, ["before".to_owned()]);
    wait_for("the first node's PodCIDR", Duration::from_secs(30), || {
        has_cidrs("before").then_some(())
    });

    bed.restart_apiserver(Duration::from_secs(13))
        .expect("the apiserver restarts");
    // Back means serving the cilium.io kinds too: a restarted apiserver creates a custom
    // resource's storage on its first request, and holds other requests meanwhile.
    wait_for(
        "the apiserver serves the CRDs",
        Duration::from_secs(30),
        || {
            bed.kubectl_run(
                &["get", "ciliumnodes,ciliumidentities,ciliumendpoints"],
                None,
            )
            .ok()
        },
    );
    let back = Instant::now();
    create_nodes(&bed, ["after".to_owned()]);
    wait_for("the new node's PodCIDR", Duration::from_secs(60), || {
        has_cidrs("after").then_some(())
    });
    let served = back.elapsed();
    println!("a Node created after a 13 s apiserver outage: PodCIDR in {served:.1?}");
    // Without waiting for `/readyz` before a retry: 8.7-8.8 s in about one run of three
    // (a watch of a custom resource that the restarting apiserver took before it had
    // started is held ~10 s); with kube's default backoff 25-31 s.
    assert!(
        served < Duration::from_secs(5),
        "the operator's watch resumed only after {served:?}"
    );
}
