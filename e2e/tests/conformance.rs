//! Kubernetes' own NetworkPolicy e2e suite (v1.20.2's `e2e.test`, built from the same source
//! package as the cluster) on the real nodes with the chart installed: the tests every CNI
//! is measured against, unmodified.
//!
//! `make test` runs the specs listed in [`FAST`]; `make conformance` runs every spec of the
//! suite (`CILIUM_RS_CONFORMANCE=full`) except the ones Cilium's own CI skips when it runs
//! this suite, for the same reasons:
//! - the SCTP connectivity specs (`[Feature:SCTPConnectivity]`): here because this kernel is
//!   built without SCTP sockets (`CONFIG_IP_SCTP` unset), so agnhost cannot serve SCTP (the
//!   SCTP policy itself is tested, `should not allow access by TCP when a policy specifies
//!   only SCTP`, and the datapath tests SCTP ports with single packets);
//! - the three specs that put a pod's address in an `ipBlock` and expect it to select that
//!   pod: as in Cilium (cilium/cilium#9209), an ipBlock selects addresses outside the
//!   cluster; a pod is selected by its labels (its identity), never by its IP.

use std::time::Duration;

use e2e::realnode::RealCluster;
use e2e::realnode::conformance::{Selection, conformance_binary, run_suite};
use e2e::wait_for;

/// The specs `make test` runs (about a minute each): ingress, egress through a Service,
/// named ports, a pod relabelled into a deny (enforced before its new identity exists),
/// and the API operations.
const FAST: &[&str] = &[
    "should allow ingress access on one named port",
    "should allow egress access on one named port",
    "should deny ingress access to updated pod",
    "should support creating NetworkPolicy API operations",
];

/// What is not run (see the module's comment).
const SKIPPED: &[&str] = &[
    r"\[Feature:SCTPConnectivity\]",
    "should allow egress access to server in CIDR block",
    "should enforce except clause while egress access to server in CIDR block",
    "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
];

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = "\\^$.|?*+()[]{}".contains(c);
            escape.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The specs of v1.20.2's `NetworkPolicy [LinuxOnly]` (29) and `NetworkPolicy API` (1)
/// groups, less the three ipBlock ones.
const SUITE_SPECS: usize = 27;

fn selection(full: bool) -> Selection {
    let focus = if full {
        r"\[sig-network\] NetworkPolicy".to_owned()
    } else {
        let specs: Vec<String> = FAST.iter().map(|s| regex_escape(s)).collect();
        format!(r"\[sig-network\] NetworkPolicy.*({})", specs.join("|"))
    };
    Selection {
        focus,
        skip: Some(SKIPPED.join("|")),
    }
}

#[test]
fn kubernetes_network_policy_suite_passes_on_real_nodes() {
    let agnhost = conformance_binary("agnhost").expect("the conformance build");
    let cluster = RealCluster::start_for_conformance(2, &agnhost).expect("real cluster");
    let values = cluster
        .write("values.yaml", &cluster.chart_values())
        .expect("values");
    cluster.install_chart(&[&values]).expect("install");
    wait_for("both nodes Ready", Duration::from_secs(120), || {
        let ready = cluster.jsonpath(
            &["get", "nodes"],
            "{.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        )?;
        (ready == "True True").then_some(())
    });

    let full = std::env::var("CILIUM_RS_CONFORMANCE").is_ok_and(|v| v == "full");
    let selection = selection(full);
    // Outside the bed, which goes with the cluster.
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e.test.log");
    let report = run_suite(
        cluster.kubeconfig(),
        &selection,
        &cluster.dir().join("report"),
        &log,
    )
    .expect("the suite ran");
    println!(
        "e2e.test --ginkgo.focus='{}': {} passed, {} failed of {} in {:.0} s",
        selection.focus,
        report.passed.len(),
        report.failed.len(),
        report.total,
        report.seconds
    );
    for spec in &report.passed {
        println!("  passed: {spec}");
    }
    for spec in &report.failed {
        println!("  FAILED: {spec}");
    }
    assert!(
        report.failed.is_empty(),
        "{} specs failed: {:#?} (the log: {})",
        report.failed.len(),
        report.failed,
        log.display()
    );
    let expected = if full { SUITE_SPECS } else { FAST.len() };
    assert_eq!(
        (report.total, report.passed.len()),
        (expected, expected),
        "every selected spec ran and passed: {report:?}"
    );
}
