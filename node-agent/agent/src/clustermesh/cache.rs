//! What the agent holds of one remote cluster: its nodes, identities, endpoint IPs and
//! global services, read from its kvstore. Every value is checked before it is taken: a
//! value that does not parse, or claims what the cluster may not (an identity outside its
//! cluster id's range, another cluster's name), is refused and counted, and the key's
//! previous value is dropped rather than kept stale. What a cluster can make the agent hold
//! is bounded ([`Limits`]): values past a size, and keys past a count per kind, are refused
//! and counted too.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use cilium_identity::{ClusterScope, LabelSet, NumericIdentity};
use cilium_kvstore::cluster_config::MAX_CONNECTED_CLUSTERS;
use cilium_kvstore::keys::{
    IDENTITIES_PREFIX, IP_ADDRESS_SPACE, IP_PREFIX, NODES_PREFIX, SERVICES_PREFIX,
};
use cilium_kvstore::{ClusterConfig, ClusterService, IpIdentityPair, KvNode};

/// One key of a remote kvstore, by what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RemoteKey<'a> {
    Node(&'a str),
    Identity(&'a str),
    Ip(&'a str),
    Service(&'a str),
}

/// Which of `cluster`'s keys `key` is, if one the agent reads.
fn classify<'a>(cluster: &str, key: &'a str) -> Option<RemoteKey<'a>> {
    let under = |prefix: &str| {
        key.strip_prefix(prefix)?
            .strip_prefix('/')?
            .strip_prefix(cluster)?
            .strip_prefix('/')
    };
    if let Some(rest) = under(NODES_PREFIX) {
        return Some(RemoteKey::Node(rest));
    }
    // Cilium writes every cluster's IPs under one address space, in its own kvstore.
    if let Some(rest) = key
        .strip_prefix(IP_PREFIX)
        .and_then(|k| k.strip_prefix('/'))
        .and_then(|k| k.strip_prefix(IP_ADDRESS_SPACE))
        .and_then(|k| k.strip_prefix('/'))
    {
        return Some(RemoteKey::Ip(rest));
    }
    if let Some(rest) = under(SERVICES_PREFIX) {
        return Some(RemoteKey::Service(rest));
    }
    key.strip_prefix(IDENTITIES_PREFIX)?
        .strip_prefix("/id/")
        .map(RemoteKey::Identity)
}

/// How much one remote cluster may make the agent hold. With the defaults a cluster costs
/// at most ~350 MiB (the benchmark measured 1.6 KiB per remote endpoint; the IPs dominate),
/// and Cilium's published scale (50k–100k pods, 10k identities, 1k nodes per cluster) fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest value taken (a ClusterService with thousands of backends fits).
    pub value_bytes: usize,
    pub nodes: usize,
    /// A cluster id's whole identity range.
    pub identities: usize,
    pub ips: usize,
    pub services: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            value_bytes: 1 << 20,
            nodes: 10_000,
            identities: 1 << 16,
            ips: 200_000,
            services: 50_000,
        }
    }
}

/// What the agent holds of one remote cluster.
#[derive(Debug, Clone, Default)]
pub struct RemoteState {
    pub nodes: BTreeMap<String, KvNode>,
    pub identities: BTreeMap<u32, LabelSet>,
    pub ips: BTreeMap<String, IpIdentityPair>,
    pub services: BTreeMap<String, ClusterService>,
}

/// The state of one remote cluster, and what was refused. The held state is shared
/// (reconciler passes read it while the watch writes a new version) and copied only when
/// a value is taken or dropped: a flood of refused keys copies nothing (it copied 200,000
/// entries per watch response, and the agent's RSS grew 150 MiB while holding nothing more).
#[derive(Debug, Clone, Default)]
pub struct RemoteCache {
    cluster: String,
    scope: Option<ClusterScope>,
    limits: Limits,
    state: Arc<RemoteState>,
    /// Values refused since the cache was made, and the last reason.
    pub invalid: u64,
    pub last_invalid: Option<String>,
}

impl Deref for RemoteCache {
    type Target = RemoteState;

    fn deref(&self) -> &RemoteState {
        &self.state
    }
}

impl DerefMut for RemoteCache {
    fn deref_mut(&mut self) -> &mut RemoteState {
        Arc::make_mut(&mut self.state)
    }
}

impl RemoteCache {
    /// An empty cache of cluster `name`, whose identities lie in `cluster_id`'s range.
    pub fn new(name: &str, cluster_id: u8) -> Self {
        Self::with_limits(name, cluster_id, Limits::default())
    }

    pub fn with_limits(name: &str, cluster_id: u8, limits: Limits) -> Self {
        Self {
            cluster: name.to_owned(),
            scope: Some(ClusterScope::new(cluster_id)),
            limits,
            ..Self::default()
        }
    }

    /// Whether a new key of `kind` would take the cluster past its limit for that kind.
    fn full(&self, kind: &RemoteKey<'_>) -> Option<String> {
        let (held, limit, what, present) = match kind {
            RemoteKey::Node(name) => (
                self.nodes.len(),
                self.limits.nodes,
                "nodes",
                self.nodes.contains_key(*name),
            ),
            RemoteKey::Identity(id) => (
                self.identities.len(),
                self.limits.identities,
                "identities",
                id.parse::<u32>()
                    .is_ok_and(|id| self.identities.contains_key(&id)),
            ),
            RemoteKey::Ip(ip) => (
                self.ips.len(),
                self.limits.ips,
                "IPs",
                self.ips.contains_key(*ip),
            ),
            RemoteKey::Service(name) => (
                self.services.len(),
                self.limits.services,
                "services",
                self.services.contains_key(*name),
            ),
        };
        (!present && held >= limit).then(|| {
            format!(
                "cluster {:?} already has {held} {what}, the most one cluster may have",
                self.cluster
            )
        })
    }

    fn refuse(&mut self, key: &str, reason: impl ToString) {
        let reason = reason.to_string();
        tracing::warn!(cluster = %self.cluster, %key, %reason, "refused a remote kvstore value");
        self.invalid += 1;
        self.last_invalid = Some(reason);
    }

    fn in_range(&self, id: u32) -> Result<(), String> {
        match self.scope {
            Some(scope) if scope.contains(NumericIdentity(id)) => Ok(()),
            Some(scope) => Err(format!(
                "identity {id} is outside cluster {}'s range {}..={}",
                scope.cluster_id(),
                scope.first(),
                scope.last()
            )),
            None => Err("the cluster's id is not known".into()),
        }
    }

    /// Takes `key = value`; returns whether the cache changed.
    pub fn put(&mut self, key: &str, value: &[u8]) -> bool {
        let Some(kind) = classify(&self.cluster, key) else {
            return false;
        };
        if value.len() > self.limits.value_bytes {
            let reason = format!(
                "{key}: a value of {} bytes, over the {} taken",
                value.len(),
                self.limits.value_bytes
            );
            self.refuse(key, reason);
            return self.delete(key);
        }
        if let Some(reason) = self.full(&kind) {
            // Nothing held changes: the key was not there (a flood of new keys past the
            // limit wakes no one).
            self.refuse(key, format!("{key}: {reason}"));
            return false;
        }
        let taken = match kind {
            RemoteKey::Node(name) => KvNode::decode(key, value)
                .map_err(|e| e.to_string())
                .and_then(|node| match node.cluster == self.cluster {
                    true => Ok(node),
                    false => Err(format!(
                        "{key}: node of cluster {:?} in cluster {:?}'s keys",
                        node.cluster, self.cluster
                    )),
                })
                .map(|node| self.nodes.insert(name.to_owned(), node).is_none()),
            RemoteKey::Identity(id) => id
                .parse::<u32>()
                .map_err(|e| format!("{key}: {id:?} is not an identity: {e}"))
                .and_then(|id| self.in_range(id).map(|()| id))
                .and_then(|id| {
                    let text = String::from_utf8_lossy(value);
                    LabelSet::parse_kvstore(&text)
                        .map_err(|e| format!("{key}: labels {text:?}: {e}"))
                        .map(|labels| (id, labels))
                })
                .map(|(id, labels)| self.identities.insert(id, labels).is_none()),
            RemoteKey::Ip(ip) => IpIdentityPair::decode(key, value)
                .map_err(|e| e.to_string())
                .and_then(|pair| self.in_range(pair.id).map(|()| pair))
                .map(|pair| self.ips.insert(ip.to_owned(), pair).is_none()),
            RemoteKey::Service(name) => ClusterService::decode(key, value)
                .map_err(|e| e.to_string())
                .and_then(|service| match service.cluster == self.cluster {
                    true => Ok(service),
                    false => Err(format!(
                        "{key}: service of cluster {:?} in cluster {:?}'s keys",
                        service.cluster, self.cluster
                    )),
                })
                .map(|service| self.services.insert(name.to_owned(), service).is_none()),
        };
        match taken {
            // An update of an existing key changes the cache as well.
            Ok(_) => true,
            Err(reason) => {
                self.refuse(key, reason);
                self.delete(key)
            }
        }
    }

    /// Refuses `key`, whose value could not be read at all (too large to receive), and
    /// drops what the cache held for it; returns whether the cache changed.
    pub fn refuse_unread(&mut self, key: &str, reason: &str) -> bool {
        if classify(&self.cluster, key).is_none() {
            return false;
        }
        self.refuse(key, format!("{key}: {reason}"));
        self.delete(key)
    }

    /// Removes `key`; returns whether the cache held it (the held state is copied only
    /// then).
    pub fn delete(&mut self, key: &str) -> bool {
        match classify(&self.cluster, key) {
            Some(RemoteKey::Node(name)) => {
                self.nodes.contains_key(name) && self.deref_mut().nodes.remove(name).is_some()
            }
            Some(RemoteKey::Identity(id)) => id.parse::<u32>().is_ok_and(|id| {
                self.identities.contains_key(&id)
                    && self.deref_mut().identities.remove(&id).is_some()
            }),
            Some(RemoteKey::Ip(ip)) => {
                self.ips.contains_key(ip) && self.deref_mut().ips.remove(ip).is_some()
            }
            Some(RemoteKey::Service(name)) => {
                self.services.contains_key(name) && self.deref_mut().services.remove(name).is_some()
            }
            None => false,
        }
    }
}

/// Why a remote cluster's configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cluster {name:?} has id 0 (not meshed); clusters of a mesh need ids 1..=255")]
    NoId { name: String },
    #[error("cluster {name:?} has id {id}, outside 1..=255")]
    IdOutOfRange { name: String, id: u32 },
    #[error("cluster {name:?} has this cluster's id {id}; cluster ids must be unique in the mesh")]
    OwnId { name: String, id: u32 },
    #[error("cluster {name:?} has id {id}, which cluster {other:?} already has")]
    DuplicateId {
        name: String,
        id: u32,
        other: String,
    },
    #[error(
        "cluster {name:?} allows {remote} connected clusters, this one {MAX_CONNECTED_CLUSTERS}"
    )]
    MaxConnectedClusters { name: String, remote: u32 },
}

/// Whether remote cluster `name` with `config` may join this cluster (id `local_id`),
/// which is already connected to `others` (name → id).
pub fn check_config(
    name: &str,
    config: &ClusterConfig,
    local_id: u8,
    others: &BTreeMap<String, u32>,
) -> Result<u8, ConfigError> {
    let name_owned = || name.to_owned();
    let id = match config.id {
        0 => return Err(ConfigError::NoId { name: name_owned() }),
        id => u8::try_from(id).map_err(|_| ConfigError::IdOutOfRange {
            name: name_owned(),
            id,
        })?,
    };
    if id == local_id {
        return Err(ConfigError::OwnId {
            name: name_owned(),
            id: config.id,
        });
    }
    if let Some((other, _)) = others
        .iter()
        .find(|(other, other_id)| other.as_str() != name && **other_id == config.id)
    {
        return Err(ConfigError::DuplicateId {
            name: name_owned(),
            id: config.id,
            other: other.clone(),
        });
    }
    let max = config.capabilities.max_connected_clusters;
    if max != 0 && max != MAX_CONNECTED_CLUSTERS {
        return Err(ConfigError::MaxConnectedClusters {
            name: name_owned(),
            remote: max,
        });
    }
    Ok(id)
}

#[cfg(test)]
pub(crate) mod tests {
    use cilium_identity::Label;
    use cilium_kvstore::keys;

    use super::*;

    const C2: u32 = 102 << 16;

    /// cluster2's `ip/v1` value for `ip` with identity `id`, on node 192.168.60.21.
    pub(crate) fn pair(ip: &str, id: u32) -> Vec<u8> {
        IpIdentityPair {
            ip: ip.into(),
            mask: None,
            host_ip: "192.168.60.21".into(),
            id,
            key: 0,
            metadata: String::new(),
            k8s_namespace: "istio-space".into(),
            k8s_pod_name: "employee".into(),
        }
        .encode()
        .into_bytes()
    }

    #[test]
    fn remote_values_are_taken_and_withdrawn_by_key() {
        let mut cache = RemoteCache::new("cluster2", 102);
        let labels: LabelSet = [Label::k8s("app", "employee")].into_iter().collect();
        let id_key = keys::identity_id_key(NumericIdentity(C2 + 300));
        assert!(cache.put(&id_key, labels.kvstore_string().as_bytes()));
        let ip_key = keys::ip_key("10.211.0.5");
        assert!(cache.put(&ip_key, &pair("10.211.0.5", C2 + 300)));
        assert_eq!(cache.identities.get(&(C2 + 300)), Some(&labels));
        assert_eq!(cache.ips["10.211.0.5"].id, C2 + 300);
        // Keys the agent does not read, and other clusters' keys, are ignored.
        assert!(!cache.put("cilium/.heartbeat", b"now"));
        assert!(!cache.put(&keys::node_key("cluster3", "node-1"), b"{}"));
        assert!(cache.delete(&ip_key));
        assert!(cache.ips.is_empty());
        assert_eq!(cache.invalid, 0);
    }

    #[test]
    fn values_a_cluster_may_not_send_are_refused_and_drop_the_old_value() {
        let mut cache = RemoteCache::new("cluster2", 102);
        let ip_key = keys::ip_key("10.211.0.5");
        assert!(cache.put(&ip_key, &pair("10.211.0.5", C2 + 300)));
        // Identity 300 is cluster 0's: cluster2 may not put its pods there.
        assert!(cache.put(&ip_key, &pair("10.211.0.5", 300)));
        assert!(cache.ips.is_empty(), "the stale value is not kept");
        assert!(
            cache
                .last_invalid
                .as_deref()
                .unwrap_or("")
                .contains("outside cluster 102")
        );
        cache.put(&ip_key, b"{not json");
        let local_identity = keys::identity_id_key(NumericIdentity(101 << 16));
        cache.put(&local_identity, b"k8s:app=x;");
        cache.put(
            &keys::identity_id_key(NumericIdentity(C2 + 1)),
            b"no-source",
        );
        let node_of_other = r#"{"Name":"n","Cluster":"cluster9","IPAddresses":[],"IPv4AllocCIDR":null,"IPv6AllocCIDR":null,"IPv4HealthIP":"","IPv6HealthIP":"","ClusterID":9,"Source":"kvstore","EncryptionKey":0}"#;
        cache.put(&keys::node_key("cluster2", "n"), node_of_other.as_bytes());
        assert_eq!(cache.invalid, 5);
        assert!(cache.identities.is_empty() && cache.nodes.is_empty());
    }

    #[test]
    fn a_value_too_large_to_read_is_refused_by_its_key() {
        let mut cache = RemoteCache::new("cluster2", 102);
        let ip_key = keys::ip_key("10.211.0.5");
        assert!(cache.put(&ip_key, &pair("10.211.0.5", C2 + 300)));
        assert!(
            cache.refuse_unread(&ip_key, "too large"),
            "the old value goes"
        );
        assert!(cache.ips.is_empty());
        assert_eq!(cache.invalid, 1);
        assert!(!cache.refuse_unread(&keys::ip_key("10.211.0.6"), "too large"));
        assert_eq!(cache.invalid, 2, "counted even when nothing was held");
        assert!(!cache.refuse_unread("cilium/.heartbeat", "too large"));
        assert_eq!(
            cache.invalid, 2,
            "keys the agent does not read are not counted"
        );
    }

    #[test]
    fn refusals_copy_nothing_a_reader_shares() {
        let limits = Limits {
            ips: 1,
            ..Limits::default()
        };
        let mut cache = RemoteCache::with_limits("cluster2", 102, limits);
        assert!(cache.put(&keys::ip_key("10.211.0.5"), &pair("10.211.0.5", C2 + 300)));
        let read = cache.clone();
        assert!(!cache.put(&keys::ip_key("10.211.0.6"), &pair("10.211.0.6", C2 + 300)));
        assert!(!cache.put(&keys::ip_key("10.211.0.7"), &pair("10.211.0.7", 300)));
        assert_eq!(cache.invalid, 2);
        assert!(Arc::ptr_eq(&read.state, &cache.state), "nothing copied");
        assert!(cache.put(&keys::ip_key("10.211.0.5"), &pair("10.211.0.5", C2 + 301)));
        assert!(!Arc::ptr_eq(&read.state, &cache.state), "copied on a take");
        assert_eq!(
            read.ips["10.211.0.5"].id,
            C2 + 300,
            "the reader's copy is unchanged"
        );
        assert_eq!(cache.ips["10.211.0.5"].id, C2 + 301);
    }

    #[test]
    fn configs_with_a_taken_or_missing_id_are_refused() {
        let others = BTreeMap::from([("cluster3".to_owned(), 103)]);
        let config = |id| ClusterConfig::for_cluster(id);
        assert_eq!(
            check_config("cluster2", &config(102), 101, &others),
            Ok(102)
        );
        assert!(matches!(
            check_config("cluster2", &config(101), 101, &others),
            Err(ConfigError::OwnId { .. })
        ));
        assert!(matches!(
            check_config("cluster2", &config(103), 101, &others),
            Err(ConfigError::DuplicateId { .. })
        ));
        // Its own earlier entry is not a duplicate.
        let reconnect = BTreeMap::from([("cluster2".to_owned(), 102)]);
        assert_eq!(
            check_config("cluster2", &config(102), 101, &reconnect),
            Ok(102)
        );
        assert!(matches!(
            check_config("cluster2", &ClusterConfig::default(), 101, &others),
            Err(ConfigError::NoId { .. })
        ));
        let mut wide = config(102);
        wide.capabilities.max_connected_clusters = 511;
        let err = check_config("cluster2", &wide, 101, &others).expect_err("511");
        assert!(err.to_string().contains("511"), "{err}");
        let mut big = config(1);
        big.id = 300;
        assert!(matches!(
            check_config("cluster2", &big, 101, &others),
            Err(ConfigError::IdOutOfRange { .. })
        ));
    }

    #[test]
    fn a_cluster_cannot_make_the_agent_hold_more_than_its_limits() {
        let limits = Limits {
            value_bytes: 512,
            ips: 3,
            ..Limits::default()
        };
        let mut cache = RemoteCache::with_limits("cluster2", 102, limits);
        for last in 0..5 {
            let ip = format!("10.211.0.{last}");
            cache.put(&keys::ip_key(&ip), &pair(&ip, C2 + 300));
        }
        assert_eq!(cache.ips.len(), 3, "the fourth and fifth IPs are refused");
        assert_eq!(cache.invalid, 2);
        assert!(
            !cache.put(&keys::ip_key("10.211.0.9"), &pair("10.211.0.9", C2 + 300)),
            "a refused new key changes nothing held"
        );
        assert_eq!(cache.invalid, 3);
        assert!(
            cache
                .last_invalid
                .as_deref()
                .is_some_and(|r| r.contains("already has 3 IPs")),
            "{:?}",
            cache.last_invalid
        );
        // An update of a key already held is not a new key.
        assert!(cache.put(&keys::ip_key("10.211.0.0"), &pair("10.211.0.0", C2 + 301)));
        assert_eq!(cache.ips["10.211.0.0"].id, C2 + 301);
        // Oversized: refused, and the key's old value goes (nothing stale stays).
        let mut huge = pair("10.211.0.1", C2 + 300);
        huge.extend(std::iter::repeat_n(b' ', 600));
        assert!(
            cache.put(&keys::ip_key("10.211.0.1"), &huge),
            "the old value went"
        );
        assert!(!cache.ips.contains_key("10.211.0.1"));
        assert!(
            !cache.put(&keys::ip_key("10.211.0.1"), &huge),
            "nothing was held any more"
        );
        assert!(
            cache
                .last_invalid
                .as_deref()
                .is_some_and(|r| r.contains("over the 512"))
        );
    }

    mod generated {
        //! A remote kvstore that writes anything: keys of every kind the agent reads (and
        //! others), values right, mutated and absurd. Whatever comes, the cache never panics
        //! and never holds what cluster2 may not claim.

        use super::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        fn identity() -> impl Strategy<Value = u32> {
            prop_oneof![
                3 => C2..C2 + 65_536,
                1 => any::<u32>(),
                1 => Just(0u32),
                1 => Just((101u32 << 16) + 5),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                identity().prop_map(|id| keys::identity_id_key(NumericIdentity(id))),
                "[a-z0-9.:/-]{0,20}".prop_map(|ip| keys::ip_key(&ip)),
                "[a-z0-9-]{0,12}".prop_map(|n| keys::node_key("cluster2", &n)),
                "[a-z0-9-]{0,12}".prop_map(|n| keys::node_key("cluster1", &n)),
                "[a-z0-9-]{0,12}".prop_map(|n| keys::service_key("cluster2", "default", &n)),
                any::<String>(),
            ]
        }

        fn value() -> impl Strategy<Value = Vec<u8>> {
            let pair = (
                identity(),
                prop_oneof!["10\\.211\\.0\\.[0-9]{1,2}", "[0-9.]{0,15}"],
                any::<Option<String>>(),
            )
                .prop_map(|(id, ip, mask)| {
                    json!({"IP": ip, "Mask": mask, "HostIP": null, "ID": id})
                        .to_string()
                        .into_bytes()
                });
            let node = (prop_oneof![Just("cluster2"), Just("cluster1"), Just("")], any::<i64>())
                .prop_map(|(cluster, id)| json!({"Name": "n", "Cluster": cluster, "ClusterID": id, "IPAddresses": [{"Type": "InternalIP", "IP": "x"}]}).to_string().into_bytes());
            let service = prop_oneof![Just("cluster2"), Just("cluster3")].prop_map(|cluster| {
                json!({"cluster": cluster, "namespace": "default", "name": "db",
                       "frontends": {"10.96.0.1": {"": {"Protocol": "TCP", "Port": 80}}},
                       "backends": {"not-an-ip": {}}, "shared": true, "clusterID": 102})
                .to_string()
                .into_bytes()
            });
            let labels =
                prop_oneof!["k8s:app=[a-z]{1,8};", "[a-z:=;.-]{0,40}"].prop_map(String::into_bytes);
            let junk = prop::collection::vec(any::<u8>(), 0..200);
            let wrong_type = any::<i64>().prop_map(|n| Value::from(n).to_string().into_bytes());
            prop_oneof![pair, node, service, labels, junk, wrong_type]
        }

        proptest! {
            #[test]
            fn a_remote_cluster_cannot_claim_what_is_not_its_own(
                writes in prop::collection::vec((key(), value(), any::<bool>()), 1..40)
            ) {
                let mut cache = RemoteCache::new("cluster2", 102);
                for (key, value, delete) in &writes {
                    if *delete {
                        cache.delete(key);
                    } else {
                        cache.put(key, value);
                    }
                    let scope = ClusterScope::new(102);
                    prop_assert!(cache.identities.keys().all(|id| scope.contains(NumericIdentity(*id))));
                    prop_assert!(cache.ips.values().all(|p| scope.contains(NumericIdentity(p.id))));
                    prop_assert!(cache.nodes.values().all(|n| n.cluster == "cluster2"));
                    prop_assert!(cache.services.values().all(|s| s.cluster == "cluster2"));
                    prop_assert!(cache.last_invalid.as_ref().is_none_or(|r| !r.trim().is_empty()));
                }
            }

            /// The generator is not all junk: cluster2's own values get in.
            #[test]
            fn valid_remote_values_are_taken(
                id in ClusterScope::new(102).first().0..=ClusterScope::new(102).last().0,
                last in 0u8..255,
            ) {
                let mut cache = RemoteCache::new("cluster2", 102);
                let ip = format!("10.211.0.{last}");
                prop_assert!(cache.put(&keys::ip_key(&ip), &pair(&ip, id)));
                prop_assert!(cache.put(&keys::identity_id_key(NumericIdentity(id)), b"k8s:app=db;"));
                prop_assert_eq!((cache.ips.len(), cache.identities.len(), cache.invalid), (1, 1, 0));
            }
        }
    }
}
