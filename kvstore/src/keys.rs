//! The key layout (Cilium's `Documentation/kvstore.rst`).

use cilium_identity::{LabelSet, NumericIdentity};

/// Master keys `id/<id>` and per-node keys `value/<labels>/<node-ip>`.
pub const IDENTITIES_PREFIX: &str = "cilium/state/identities/v1";
pub const NODES_PREFIX: &str = "cilium/state/nodes/v1";
pub const IP_PREFIX: &str = "cilium/state/ip/v1";
pub const SERVICES_PREFIX: &str = "cilium/state/services/v1";
pub const HEARTBEAT_KEY: &str = "cilium/.heartbeat";
pub const SYNCED_PREFIX: &str = "cilium/synced";
pub const CLUSTER_CONFIG_PREFIX: &str = "cilium/cluster-config";

pub fn identity_id_key(id: NumericIdentity) -> String {
    format!("{IDENTITIES_PREFIX}/id/{id}")
}

pub fn identity_value_key(labels: &LabelSet, node_ip: &str) -> String {
    format!(
        "{IDENTITIES_PREFIX}/value/{}/{node_ip}",
        labels.kvstore_string()
    )
}

pub fn node_key(cluster: &str, node: &str) -> String {
    format!("{NODES_PREFIX}/{cluster}/{node}")
}

pub fn service_key(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{SERVICES_PREFIX}/{cluster}/{namespace}/{name}")
}

/// Cilium's address space of the `ip/v1` keys (`pkg/ipcache/kvstore.go`): always `default`,
/// whatever the cluster is called; each cluster writes its own kvstore.
pub const IP_ADDRESS_SPACE: &str = "default";

/// `cilium/state/ip/v1/default/<ip>`.
pub fn ip_key(ip: &str) -> String {
    format!("{IP_PREFIX}/{IP_ADDRESS_SPACE}/{ip}")
}

/// `cilium/synced/<cluster>/<prefix>`: written once `prefix` is fully written.
pub fn synced_key(cluster: &str, prefix: &str) -> String {
    format!("{SYNCED_PREFIX}/{cluster}/{prefix}")
}

pub fn cluster_config_key(cluster: &str) -> String {
    format!("{CLUSTER_CONFIG_PREFIX}/{cluster}")
}

/// The identity number of a master key `.../id/<id>`.
pub fn parse_identity_id_key(key: &str) -> Option<NumericIdentity> {
    key.strip_prefix(IDENTITIES_PREFIX)?
        .strip_prefix("/id/")?
        .parse()
        .ok()
        .map(NumericIdentity)
}

/// The label string and node IP of `.../value/<labels>/<node-ip>` (labels may hold `/`,
/// node IPs do not, so the node is after the last `/`).
pub fn parse_identity_value_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(IDENTITIES_PREFIX)?
        .strip_prefix("/value/")?
        .rsplit_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use cilium_identity::Label;

    #[test]
    fn keys_are_cilium_s() {
        let labels: LabelSet = [Label::k8s("app", "a/b")].into_iter().collect();
        assert_eq!(
            identity_id_key(NumericIdentity(12928)),
            "cilium/state/identities/v1/id/12928"
        );
        let value = identity_value_key(&labels, "10.5.1.132");
        assert_eq!(
            value,
            "cilium/state/identities/v1/value/k8s:app=a/b;/10.5.1.132"
        );
        assert_eq!(
            parse_identity_value_key(&value),
            Some(("k8s:app=a/b;", "10.5.1.132"))
        );
        assert_eq!(
            parse_identity_id_key("cilium/state/identities/v1/id/12928"),
            Some(NumericIdentity(12928))
        );
        assert_eq!(
            parse_identity_id_key("cilium/state/identities/v1/id/x"),
            None
        );
        assert_eq!(
            node_key("default", "k8s-node1"),
            "cilium/state/nodes/v1/default/k8s-node1"
        );
        assert_eq!(ip_key("10.6.6.43"), "cilium/state/ip/v1/default/10.6.6.43");
        assert_eq!(
            synced_key("c1", NODES_PREFIX),
            "cilium/synced/c1/cilium/state/nodes/v1"
        );
        assert_eq!(cluster_config_key("c1"), "cilium/cluster-config/c1");
        assert_eq!(
            service_key("c1", "default", "db"),
            "cilium/state/services/v1/c1/default/db"
        );
    }
}
