//! `make demo` keeps showing what it promises: the matrix before and after the policy, the
//! Cilium objects and the kvstore keys.

use std::process::Command;

/// What demo `binary --exit` prints; it must succeed.
fn run_to_exit(binary: &str) -> String {
    let output = Command::new(binary)
        .arg("--exit")
        .output()
        .expect("the demo runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

#[test]
fn the_demo_shows_the_policy_taking_effect() {
    let text = run_to_exit(env!("CARGO_BIN_EXE_demo"));
    let (before, after) = text
        .split_once("with the policy:")
        .expect("both matrices are printed");
    let verdict = |section: &str, who: &str| {
        section
            .lines()
            .find(|l| l.trim_start().starts_with(who))
            .map(|l| l.trim_end().to_owned())
            .unwrap_or_default()
    };
    for who in [
        "default/employee",
        "istio-space/employee",
        "default/stranger",
    ] {
        assert!(
            verdict(before, who).ends_with("connects"),
            "{who} before:\n{text}"
        );
    }
    assert!(
        verdict(after, "default/employee").ends_with("connects"),
        "{text}"
    );
    assert!(
        verdict(after, "istio-space/employee").ends_with("connects"),
        "{text}"
    );
    assert!(
        verdict(after, "default/stranger").ends_with("times out"),
        "{text}"
    );
    for expected in [
        "protected-db-l4",
        "cilium/state/identities/v1/id/",
        "cilium/state/ip/v1/default/",
        "cilium/state/nodes/v1/default/node-1",
        "(node-1) $ cilium endpoint list",
        "LABELS (source:key[=value])",
        "k8s:app=protected-db",
        "Controller Status:",
        "KUBECONFIG=",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

/// `make demo-clustermesh`: both clusters ready, remote nodes listed, the verdicts of the
/// document's policy across clusters, and the global service's backends from both.
#[test]
fn the_clustermesh_demo_shows_the_mesh() {
    let text = run_to_exit(env!("CARGO_BIN_EXE_demo-clustermesh"));
    let (_, after) = text
        .split_once("with the policy:")
        .expect("the matrix with the policy is printed");
    let verdict = |who: &str| {
        after
            .lines()
            .find(|l| l.trim_start().starts_with(who))
            .map(|l| l.trim_end().to_owned())
            .unwrap_or_default()
    };
    assert!(verdict("default/employee").ends_with("connects"), "{text}");
    assert!(
        verdict("istio-space/employee").ends_with("connects"),
        "{text}"
    );
    assert!(verdict("default/stranger").ends_with("times out"), "{text}");
    assert!(
        verdict("istio-space/stranger").ends_with("times out"),
        "{text}"
    );
    for expected in [
        "ClusterMesh:            1/1 clusters ready",
        "   cluster2: ready, 1 nodes",
        "cluster2/node-1",
        "ClusterIP (global)",
        "(cluster2)",
        "\"cluster\":\"cluster2\"",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
}
