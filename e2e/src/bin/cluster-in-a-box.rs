//! Starts a cluster-in-a-box — etcd, kube-apiserver with the cilium.io CRDs, the operator,
//! and two nodes (network namespaces on one link) each running cilium-agent — and keeps it
//! running until Ctrl-C, printing how to reach it. `--exit` stops it right after start-up;
//! `--nodes N` sets the number of nodes.

use e2e::cluster::Cluster;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exit_at_once = args.iter().any(|a| a == "--exit");
    let nodes = match args.iter().position(|a| a == "--nodes") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if (1..=20).contains(&n) => n,
            _ => {
                eprintln!("cluster-in-a-box: --nodes takes a number from 1 to 20");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => 2,
    };
    let cluster = match Cluster::start(nodes) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("cluster-in-a-box: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let bed = &cluster.bed;
    let (etcd_pid, apiserver_pid) = bed.pids();
    println!(
        "etcd:            {} (pid {})",
        bed.etcd_endpoint(),
        etcd_pid.unwrap_or_default()
    );
    println!(
        "kube-apiserver:  {} (pid {apiserver_pid})",
        bed.apiserver_url()
    );
    println!("cilium-operator: (pid {})", cluster.operator.process.pid());
    for node in &cluster.nodes {
        println!(
            "{}:          {} in network namespace {} (enter: nsenter --net=/run/netns/{}); agent API {} (pid {})",
            node.name,
            node.ip,
            node.ns.name(),
            node.ns.name(),
            node.socket().display(),
            node.agent_pid().unwrap_or_default()
        );
    }
    println!("KUBECONFIG={}", bed.kubeconfig().display());
    match bed.kubectl_run(&["get", "ciliumnodes"], None) {
        Ok(table) => print!("{table}"),
        Err(e) => eprintln!("cluster-in-a-box: {e}"),
    }
    if !exit_at_once {
        println!("running; Ctrl-C stops it");
        e2e::wait_for_ctrl_c();
    }
    std::process::ExitCode::SUCCESS
}
