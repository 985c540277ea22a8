//! The agent's view of the kvstore: whether the configured etcd answers. Clustermesh reads
//! remote clusters' kvstores through the same configuration format.

use std::sync::Arc;
use std::time::Duration;

use cilium_kvstore::EtcdConfig;

use crate::agent::Agent;

const CHECK_PERIOD: Duration = Duration::from_secs(10);
/// The key every Cilium cluster's operator keeps fresh; reading it proves a working session.
const HEARTBEAT_KEY: &str = "cilium/.heartbeat";

/// Checks etcd every [`CHECK_PERIOD`] and records the result for `/v1/healthz`: `Ok: ...`
/// or `Failure: ...`, as `cilium status` prints the kvstore.
pub async fn watch_health(config: EtcdConfig, agent: Arc<Agent>) {
    let endpoints = config.endpoints.join(",");
    let mut client = None;
    loop {
        if client.is_none() {
            match config.connect().await {
                Ok(c) => client = Some(c),
                Err(e) => agent.set_kvstore_status(format!("Failure: {e}")),
            }
        }
        if let Some(c) = client.as_mut() {
            match c.get(HEARTBEAT_KEY, None).await {
                Ok(_) => agent.set_kvstore_status(format!("Ok: etcd {endpoints}")),
                Err(e) => {
                    agent.set_kvstore_status(format!("Failure: etcd {endpoints}: {e}"));
                    client = None;
                }
            }
        }
        tokio::time::sleep(CHECK_PERIOD).await;
    }
}
