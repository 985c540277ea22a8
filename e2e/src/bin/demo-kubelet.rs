//! `make demo-kubelet`: the protected-db story on real nodes — kubelet + containerd, the
//! chart installed with Helm's SDK, real pods from `e2e/realnode/workloads.yaml`. Prints
//! what a user would look at, then keeps the cluster until Ctrl-C (`--exit`: stops).

use std::path::Path;
use std::time::Duration;

use e2e::realnode::RealCluster;

fn main() -> std::process::ExitCode {
    let exit_at_once = std::env::args().any(|a| a == "--exit");
    match run(exit_at_once) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-kubelet: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(exit_at_once: bool) -> anyhow::Result<()> {
    println!(
        "starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and two nodes (kubelet + containerd + kube-proxy) ..."
    );
    let cluster = RealCluster::start(2)?;
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let values = cluster.write("values.yaml", &cluster.chart_values())?;
    println!(
        "helm install cilium charts/cilium -n kube-system -f {} (Helm's SDK, applied with kubectl) ...",
        values.display()
    );
    cluster.install_chart(&[&values])?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workloads = repo.join("e2e/realnode/workloads.yaml");
    cluster.kubectl_run(&["apply", "-f", &workloads.to_string_lossy()], None)?;
    let wanted = 6;
    e2e::process::poll(Duration::from_secs(120), || {
        let states = cluster.jsonpath(&["get", "cep", "-A"], "{.items[*].status.state}")?;
        let ready = cluster.jsonpath(
            &["get", "pods", "-A", "-l", "app"],
            "{.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        )?;
        (states.split(' ').filter(|s| *s == "ready").count() == wanted
            && ready.split(' ').filter(|s| *s == "True").count() == wanted)
            .then_some(())
    })
    .ok_or_else(|| anyhow::anyhow!("the workloads did not get ready"))?;
    let policy = repo.join("examples/policies/protected-db.yaml");
    let dbs = cluster.pods("default", "app=protected-db")?;
    let clients: Vec<_> = [
        ("default", "app=employee"),
        ("istio-space", "app=employee"),
        ("default", "app=stranger"),
    ]
    .iter()
    .map(|(ns, sel)| cluster.pods(ns, sel))
    .collect::<Result<Vec<_>, _>>()?
    .concat();
    let matrix = |title: &str| {
        println!("\n{title}");
        for client in &clients {
            let row: Vec<String> = dbs
                .iter()
                .map(|db| {
                    let ok = db.ip.is_some_and(|ip| cluster.reaches(client, ip, 6379));
                    format!("{} {}", db.name, if ok { "reached" } else { "refused" })
                })
                .collect();
            println!(
                "  {}/{} → {}",
                client.namespace,
                client.name,
                row.join(", ")
            );
        }
    };
    matrix("before any policy:");
    cluster.kubectl_run(
        &["apply", "-n", "default", "-f", &policy.to_string_lossy()],
        None,
    )?;
    let stranger = clients
        .last()
        .ok_or_else(|| anyhow::anyhow!("no stranger pod"))?;
    e2e::process::poll(Duration::from_secs(60), || {
        dbs.iter()
            .all(|db| db.ip.is_some_and(|ip| !cluster.reaches(stranger, ip, 6379)))
            .then_some(())
    })
    .ok_or_else(|| anyhow::anyhow!("the policy did not take effect"))?;
    matrix("with examples/policies/protected-db.yaml:");
    for args in [
        vec!["get", "nodes", "-o", "wide"],
        vec!["get", "pods", "-A", "-o", "wide"],
        vec!["get", "ciliumendpoints", "-A"],
        vec!["get", "ciliumnodes"],
    ] {
        println!("\n$ kubectl {}", args.join(" "));
        print!("{}", cluster.kubectl_run(&args, None)?);
    }
    println!("\n$ kubectl exec -n kube-system ds/cilium -- cilium status");
    print!("{}", cluster.cilium(&["status"])?);
    println!("\nKUBECONFIG={kubeconfig} kubectl get pods -A");
    if !exit_at_once {
        println!("running; Ctrl-C stops it");
        e2e::wait_for_ctrl_c();
    }
    Ok(())
}
