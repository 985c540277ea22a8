//! Starts a cluster-in-a-box (etcd, kube-apiserver, the cilium.io CRDs) and keeps it running
//! until Ctrl-C, printing how to reach it. `--exit` stops it right after start-up.

use std::time::Duration;

use e2e::ClusterBed;

fn main() -> std::process::ExitCode {
    let exit_at_once = std::env::args().skip(1).any(|a| a == "--exit");
    let bed = match ClusterBed::start() {
        Ok(bed) => bed,
        Err(e) => {
            eprintln!("cluster-in-a-box: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (etcd_pid, apiserver_pid) = bed.pids();
    println!(
        "etcd:           {} (pid {})",
        bed.etcd_endpoint(),
        etcd_pid.unwrap_or_default()
    );
    println!(
        "kube-apiserver: {} (pid {apiserver_pid})",
        bed.apiserver_url()
    );
    println!("KUBECONFIG={}", bed.kubeconfig().display());
    match bed.kubectl_run(&["get", "crd", "-o", "name"], None) {
        Ok(crds) => print!("{crds}"),
        Err(e) => eprintln!("cluster-in-a-box: {e}"),
    }
    if !exit_at_once {
        println!("running; Ctrl-C stops it");
        wait_for_ctrl_c();
    }
    std::process::ExitCode::SUCCESS
}

fn wait_for_ctrl_c() {
    let (tx, rx) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else { return };
    std::thread::spawn(move || {
        runtime.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        });
        let _ = tx.send(());
    });
    while rx.recv_timeout(Duration::from_secs(3600)).is_err() {}
}
