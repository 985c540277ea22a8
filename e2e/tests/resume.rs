//! The agent through an apiserver restart: while the apiserver is gone the datapath keeps
//! enforcing (no allowed connection lost), and once it is back the agent's watches resume
//! within seconds, so a policy written right after is enforced at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::cluster::{Cluster, app_labels};
use e2e::traffic::{reaches, serve_echo};
use e2e::wait_for;

const REDIS: u16 = 6379;
const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn the_agent_enforces_through_an_apiserver_restart_and_resumes_within_seconds() {
    let cluster = Cluster::start(1).expect("cluster-in-a-box with one agent node");
    let bed = &cluster.bed;
    let node = &cluster.nodes[0];
    let db = node
        .add_pod(bed, "default", "db", &app_labels("db"))
        .expect("db");
    let client = node
        .add_pod(bed, "default", "client", &app_labels("client"))
        .expect("client");
    let stranger = node
        .add_pod(bed, "default", "stranger", &app_labels("stranger"))
        .expect("stranger");
    serve_echo(&db.ns, REDIS);
    wait_for("three ready endpoints", SETTLE, || {
        (cluster.ready_endpoints().ok()? == 3).then_some(())
    });
    assert!(reaches(&stranger.ns, db.ip, REDIS), "no policy yet");

    // Allowed connections every 200 ms while the apiserver is away for 13 s.
    let (stop, tried, lost) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                tried.fetch_add(1, Ordering::Relaxed);
                if !reaches(&client.ns, db.ip, REDIS) {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        bed.restart_apiserver(Duration::from_secs(13))
            .expect("the apiserver restarts");
        stop.store(true, Ordering::Relaxed);
    });
    let (tried, lost) = (tried.into_inner(), lost.into_inner());
    println!("during the outage: {lost} of {tried} allowed connections failed");
    assert!(tried >= 30, "{tried} connections tried");
    assert_eq!(lost, 0, "the datapath kept enforcing without the apiserver");

    // Back means serving the cilium.io kinds too (see the operator's test).
    wait_for(
        "the apiserver serves the CRDs",
        Duration::from_secs(30),
        || {
            bed.kubectl_run(&["get", "ciliumnetworkpolicies,ciliumidentities"], None)
                .ok()
        },
    );
    let back = Instant::now();
    bed.kubectl_run(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: db, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: db}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n",
        ),
    )
    .expect("the policy");
    wait_for("the stranger shut out", SETTLE, || {
        (!reaches(&stranger.ns, db.ip, REDIS)).then_some(())
    });
    let enforced = back.elapsed();
    println!("a policy written after a 13 s apiserver outage: enforced in {enforced:.1?}");
    assert!(
        reaches(&client.ns, db.ip, REDIS),
        "the client is still allowed"
    );
    // kube's default backoff had grown to most of 30 s during such an outage.
    assert!(
        enforced < Duration::from_secs(15),
        "the agent's watches resumed only after {enforced:?}"
    );
}
