//! A remote cluster's kvstore read by a real agent: values too large for one response do
//! not keep the agent from reading the rest of the cluster.

use std::time::Duration;

use cilium_identity::NumericIdentity;
use cilium_kvstore::keys;
use e2e::remote_kvstore::{
    REMOTE_ID, RemoteBed, RemoteSize, fill, remote_in_ipcache, remote_status, within,
};

const SIZE: RemoteSize = RemoteSize {
    nodes: 2,
    endpoints_per_node: 10,
    identities: 3,
};
/// 14 values of 1.2 MiB: 16.8 MiB in one page, more than the agent decodes at once.
const OVERSIZED: u32 = 14;

#[test]
fn a_page_of_oversized_values_is_read_in_halves_and_each_refused() {
    let remote = RemoteBed::start().expect("bed");
    let config = remote.etcd_config().expect("etcd config");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(fill(&config, &SIZE.state()))
        .expect("fill");
    let own = u32::from(REMOTE_ID) << 16;
    let huge = format!("k8s:app={};", "x".repeat(1_200_000));
    // One per transaction: etcd takes 1.5 MiB per request.
    for i in 0..OVERSIZED {
        let key = keys::identity_id_key(NumericIdentity(own + 60_000 + i));
        runtime
            .block_on(fill(&config, &[(key, huge.clone())]))
            .expect("an oversized value");
    }
    remote.connect().expect("connect");
    let node = remote.node();
    let ready = within(Duration::from_secs(60), Duration::from_millis(200), || {
        remote_status(node).is_some_and(|s| s["ready"] == true)
    });
    let status = remote_status(node).unwrap_or_default();
    assert!(ready, "the remote cluster is read: {status}");
    assert_eq!(
        status["num-endpoints"],
        u64::from(SIZE.endpoints()),
        "{status}"
    );
    assert_eq!(
        status["num-identities"],
        u64::from(SIZE.identities),
        "{status}"
    );
    assert_eq!(
        status["num-invalid-values"],
        u64::from(OVERSIZED),
        "each oversized value refused once: {status}"
    );
    assert!(
        status["last-invalid-value"]
            .as_str()
            .is_some_and(|r| r.contains("bytes")),
        "{status}"
    );
    assert!(
        within(Duration::from_secs(30), Duration::from_millis(500), || {
            remote_in_ipcache(node) == SIZE.endpoints() as usize
        }),
        "the remote's endpoints reach the ipcache ({} there)",
        remote_in_ipcache(node)
    );
}
