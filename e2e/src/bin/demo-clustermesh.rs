//! `make demo-clustermesh`: the clustermesh document's scenario on two clusters-in-a-box.
//! Starts two clusters (own apiserver, own kvstore with TLS client certificates, ids 101
//! and 102, nodes on one link), connects their agents through `--clustermesh-config`,
//! prints `cilium status --verbose`, `cilium node list`, who reaches cluster1's
//! protected-db before and after the document's policy, and the global service's backends
//! from both clusters; then keeps running until Ctrl-C (`--exit` stops at once).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::cluster::{AgentNode, app_labels};
use e2e::mesh::{Mesh, global_service};
use e2e::traffic::{print_reachability, reaches, serve_echo};

const REDIS: u16 = 6379;

fn main() -> std::process::ExitCode {
    e2e::demo_main("demo-clustermesh", run)
}

/// Polls `done` every 200 ms for up to a minute.
fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn show(node: &AgentNode, cluster: &str, args: &[&str]) -> anyhow::Result<()> {
    println!("\n({cluster} {}) $ cilium {}", node.name, args.join(" "));
    print!("{}", node.cilium(args)?);
    Ok(())
}

fn run(exit_at_once: bool) -> anyhow::Result<()> {
    println!(
        "starting cluster1 (id 101) and cluster2 (id 102): etcd, kube-apiserver, a TLS kvstore, cilium-operator and a node with cilium-agent each ..."
    );
    let mesh = Mesh::start(1, Duration::from_secs(120))?;
    let (c1, c2) = (&mesh.members[0], &mesh.members[1]);
    let (n1, n2) = (&c1.cluster.nodes[0], &c2.cluster.nodes[0]);
    let (bed1, bed2) = (&c1.cluster.bed, &c2.cluster.bed);
    bed2.create_namespace("istio-space")?;
    let db = n1.add_pod(bed1, "default", "protected-db", &app_labels("protected-db"))?;
    let employee1 = n1.add_pod(bed1, "default", "employee", &app_labels("employee"))?;
    let stranger1 = n1.add_pod(bed1, "default", "stranger", &app_labels("stranger"))?;
    let employee2 = n2.add_pod(bed2, "istio-space", "employee", &app_labels("employee"))?;
    let stranger2 = n2.add_pod(bed2, "istio-space", "stranger", &app_labels("stranger"))?;
    let db2 = n2.add_pod(bed2, "default", "protected-db", &app_labels("protected-db"))?;
    serve_echo(&db.ns, REDIS);
    serve_echo(&db2.ns, REDIS);
    until("the endpoints", || {
        c1.cluster.ready_endpoints().ok() == Some(3) && c2.cluster.ready_endpoints().ok() == Some(3)
    })?;

    println!(
        "\nwriting /var/lib/cilium/clustermesh/cluster2 for cluster1's agents and cluster1 for cluster2's"
    );
    mesh.connect(0, 1)?;
    mesh.connect(1, 0)?;
    until("the clusters to connect", || {
        [(n1, "1/1 clusters ready"), (n2, "1/1 clusters ready")]
            .iter()
            .all(|(node, ready)| node.cilium(&["status"]).is_ok_and(|s| s.contains(ready)))
    })?;
    show(n1, "cluster1", &["status", "--verbose"])?;
    show(n1, "cluster1", &["node", "list"])?;

    // Every pod of both clusters, as clients of cluster1's db.
    let clients = [&employee1, &stranger1, &employee2, &stranger2];
    until("cross-cluster connectivity", || {
        reaches(&employee2.ns, db.ip, REDIS)
    })?;
    print_reachability(
        "cluster1's protected-db, before any policy:",
        &db,
        REDIS,
        &clients,
    );

    let policy =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/clustermesh-l4.yaml");
    println!("\n(cluster1) $ kubectl apply -f examples/policies/clustermesh-l4.yaml");
    bed1.kubectl_run(&["apply", "-f", &policy.to_string_lossy()], None)?;
    until("the policy", || {
        !reaches(&stranger2.ns, db.ip, REDIS) && !reaches(&stranger1.ns, db.ip, REDIS)
    })?;
    print_reachability("with the policy:", &db, REDIS, &clients);

    println!(
        "\nannotating Service default/protected-db io.cilium/global-service=true in both clusters"
    );
    global_service(bed1, db.ip, REDIS)?;
    global_service(bed2, db2.ip, REDIS)?;
    until("the global service", || {
        n1.cilium(&["service", "list"])
            .is_ok_and(|s| s.contains(&db2.ip.to_string()))
    })?;
    show(n1, "cluster1", &["service", "list"])?;
    println!("\n(cluster2) $ etcdctl get --prefix cilium/state/services --print-value-only");
    print!(
        "{}",
        c2.kvstore().etcdctl(&[
            "get",
            "--prefix",
            "cilium/state/services",
            "--print-value-only"
        ])?
    );

    for member in &mesh.members {
        println!(
            "\n{}: KUBECONFIG={}",
            member.name,
            member.cluster.bed.kubeconfig().display()
        );
        for node in &member.cluster.nodes {
            println!("  {}: cilium -H {}", node.name, node.socket().display());
        }
    }
    if !exit_at_once {
        println!("running; Ctrl-C stops it");
        e2e::wait_for_ctrl_c();
    }
    Ok(())
}
