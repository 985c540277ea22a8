//! `make demo`: the whole system on cluster-in-a-box. Starts etcd, kube-apiserver, the
//! operator and two agent nodes; creates the protected-db scenario's pods through the CNI
//! plugin; prints who reaches the db before and after the policy is applied, the cluster's
//! Cilium objects, the kvstore's keys and `cilium status` / `cilium endpoint list` of a node;
//! then keeps running until Ctrl-C (`--exit` stops at once).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::cluster::{Cluster, app_labels};
use e2e::traffic::{print_reachability, reaches, serve_echo};

const REDIS: u16 = 6379;

fn main() -> std::process::ExitCode {
    e2e::demo_main("demo", run)
}

fn run(exit_at_once: bool) -> anyhow::Result<()> {
    println!("starting etcd, kube-apiserver, cilium-operator and two nodes with cilium-agent ...");
    let cluster = Cluster::start(2)?;
    let bed = &cluster.bed;
    bed.create_namespace("istio-space")?;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let db = n1.add_pod(bed, "default", "protected-db", &app_labels("protected-db"))?;
    let stranger = n1.add_pod(bed, "default", "stranger", &app_labels("stranger"))?;
    let employee = n2.add_pod(bed, "default", "employee", &app_labels("employee"))?;
    let istio = n2.add_pod(bed, "istio-space", "employee", &app_labels("employee"))?;
    serve_echo(&db.ns, REDIS);
    let clients = [&employee, &istio, &stranger];
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.ready_endpoints()? < 4 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the endpoints did not become ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    print_reachability("before any policy:", &db, REDIS, &clients);

    let policy =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/protected-db.yaml");
    println!("\nkubectl apply -f examples/policies/protected-db.yaml");
    bed.kubectl_run(
        &["apply", "-n", "default", "-f", &policy.to_string_lossy()],
        None,
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while reaches(&stranger.ns, db.ip, REDIS) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    print_reachability("with the policy:", &db, REDIS, &clients);

    for args in [
        vec!["get", "ciliumnodes"],
        vec!["get", "ciliumidentities"],
        vec!["get", "ciliumendpoints", "-A"],
        vec!["get", "ciliumnetworkpolicies", "-A"],
    ] {
        println!("\n$ kubectl {}", args.join(" "));
        print!("{}", bed.kubectl_run(&args, None)?);
    }
    println!("\n$ etcdctl get --prefix cilium/state --keys-only");
    std::thread::sleep(Duration::from_secs(2));
    let keys = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            bed.etcd_endpoint(),
            "get",
            "--prefix",
            "cilium/state",
            "--keys-only",
        ])
        .output()?;
    String::from_utf8_lossy(&keys.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .for_each(|l| println!("{l}"));

    // The agent's own view, as a user on node-1 sees it with the cilium command.
    let node = &cluster.nodes[0];
    let cli = e2e::operator::built_binary("cilium")?;
    for args in [vec!["status"], vec!["endpoint", "list"]] {
        println!("\n(node-1) $ cilium {}", args.join(" "));
        let output = Command::new(&cli)
            .arg("-H")
            .arg(node.socket())
            .args(&args)
            .output()?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }

    println!("\nKUBECONFIG={}", bed.kubeconfig().display());
    for node in &cluster.nodes {
        println!(
            "{}: cilium -H {} (status, endpoint list, bpf policy get ID, monitor, ...)",
            node.name,
            node.socket().display()
        );
    }
    for pod in [&db, &stranger, &employee, &istio] {
        println!(
            "pod {}/{} {}: nsenter --net={}",
            pod.namespace,
            pod.name,
            pod.ip,
            pod.ns.path().display()
        );
    }
    if !exit_at_once {
        println!("running; Ctrl-C stops it");
        e2e::wait_for_ctrl_c();
    }
    Ok(())
}
