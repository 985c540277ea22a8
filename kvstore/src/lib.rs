//! Cilium's etcd kvstore: the key layout under `cilium/`, the JSON values as Cilium's Go
//! code encodes them, and the etcd connection (endpoints, TLS, leases) used by the
//! operator's mirror and the agents' clustermesh watchers.

pub mod cluster_config;
pub mod etcd;
pub mod flags;
pub mod ip;
pub mod keys;
pub mod node;
pub mod service;
pub mod sync;

pub use cluster_config::ClusterConfig;
pub use etcd::{EtcdConfig, EtcdError};
/// The etcd client this crate connects with, for callers that read with it.
pub use etcd_client;
pub use ip::IpIdentityPair;
pub use node::{AllocCidr, KvNode, NodeAddress};
pub use service::ClusterService;

/// A value read from etcd that is not what its key promises.
#[derive(Debug, thiserror::Error)]
#[error("kvstore value of {key}: {reason}")]
pub struct DecodeError {
    pub key: String,
    pub reason: String,
}

impl DecodeError {
    pub fn new(key: &str, reason: impl ToString) -> Self {
        Self {
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }
}
