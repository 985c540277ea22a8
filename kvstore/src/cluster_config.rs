//! `cilium/cluster-config/<cluster>`: Cilium's `CiliumClusterConfig`, which a remote agent
//! reads before it trusts anything else of the cluster.

use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// Cilium's default (and our only) `max-connected-clusters`.
pub const MAX_CONNECTED_CLUSTERS: u32 = 255;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(rename = "syncedCanaries", default, skip_serializing_if = "is_false")]
    pub synced_canaries: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub cached: bool,
    #[serde(
        rename = "maxConnectedClusters",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub max_connected_clusters: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u32,
    #[serde(default)]
    pub capabilities: Capabilities,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ClusterConfig {
    /// What this project's writers publish: synced canaries, 255 clusters.
    pub fn for_cluster(id: u8) -> Self {
        Self {
            id: u32::from(id),
            capabilities: Capabilities {
                synced_canaries: true,
                cached: false,
                max_connected_clusters: MAX_CONNECTED_CLUSTERS,
            },
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(key: &str, value: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(value).map_err(|e| DecodeError::new(key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_as_cilium_s_go_struct() {
        assert_eq!(
            ClusterConfig::for_cluster(1).encode(),
            r#"{"id":1,"capabilities":{"syncedCanaries":true,"maxConnectedClusters":255}}"#
        );
        let older = ClusterConfig::decode("k", br#"{"id":2,"capabilities":{}}"#).expect("ok");
        assert_eq!(older.id, 2);
        assert!(!older.capabilities.synced_canaries);
        assert!(ClusterConfig::decode("k", b"{\"id\":-1}").is_err());
    }
}
