//! The test bed cleans up after itself: dropping a bed stops its servers and removes its
//! files, and a test process that dies (even by SIGKILL) takes its servers with it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::ClusterBed;

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state letter is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn gone_within(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn dropping_a_bed_stops_its_servers_and_removes_its_files() {
    let bed = ClusterBed::start().expect("bed starts");
    let (etcd, apiserver) = bed.pids();
    let etcd = etcd.expect("etcd runs");
    let dir = bed.dir().to_owned();
    assert!(alive(etcd) && alive(apiserver));
    bed.kubectl_run(&["get", "ciliumnodes"], None)
        .expect("the CRDs are installed");
    drop(bed);
    assert!(!alive(etcd), "etcd stopped");
    assert!(!alive(apiserver), "kube-apiserver stopped");
    assert!(!Path::new(&dir).exists(), "{} removed", dir.display());
}

#[test]
fn servers_die_with_a_killed_test_process() {
    let mut holder = Command::new(env!("CARGO_BIN_EXE_cluster-in-a-box"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cluster-in-a-box starts");
    let stdout = holder.stdout.take().expect("stdout is piped");
    let mut pids = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("readable output");
        if let Some(pid) = line
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.trim_end_matches(')').parse::<u32>().ok())
        {
            pids.push(pid);
        }
        if line.starts_with("running") {
            break;
        }
    }
    assert_eq!(
        pids.len(),
        5,
        "etcd, kube-apiserver, the operator and two agents: pids printed"
    );
    assert!(pids.iter().all(|&p| alive(p)));
    holder.kill().expect("SIGKILL the holder");
    holder.wait().expect("reap the holder");
    for pid in pids {
        assert!(
            gone_within(pid, Duration::from_secs(10)),
            "server {pid} died with its parent"
        );
    }
}
