//! What the agent shows of itself for the `cilium` CLI: health and controllers, identities,
//! nodes, policies and selectors, the datapath's maps, the kvstore, the prefilter and the
//! monitor's events.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Cilium's health states (`cilium status` prints them first on each line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthState {
    Ok,
    Warning,
    Failure,
    Disabled,
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Ok => "Ok",
            HealthState::Warning => "Warning",
            HealthState::Failure => "Failure",
            HealthState::Disabled => "Disabled",
        })
    }
}

/// A component's health as Cilium's API reports it: `{"state": "Ok", "msg": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub state: HealthState,
    pub msg: String,
}

impl Health {
    pub fn new(state: HealthState, msg: impl Into<String>) -> Self {
        Self {
            state,
            msg: msg.into(),
        }
    }
}

/// One of the agent's periodic jobs and how its runs went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ControllerStatus {
    pub name: String,
    pub success_count: u64,
    pub failure_count: u64,
    pub consecutive_failures: u64,
    /// RFC 3339.
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_error: Option<String>,
    pub last_duration_seconds: f64,
}

impl ControllerStatus {
    pub fn is_healthy(&self) -> bool {
        self.consecutive_failures == 0
    }
}

/// Whether this agent reaches every node's agent (`GET /hello` on the health port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterHealth {
    pub reachable: usize,
    pub total: usize,
    pub nodes: Vec<NodeHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeHealth {
    /// `<cluster>/<node>`.
    pub name: String,
    pub ip: IpAddr,
    pub latency_ms: Option<f64>,
    /// Why the last probe failed; `None` when it succeeded.
    pub error: Option<String>,
}

/// A security identity and its labels (`source:key=value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityModel {
    pub id: u32,
    pub labels: Vec<String>,
}

/// A node of the cluster (or, with clustermesh, of a remote one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeModel {
    /// `<cluster>/<node>`, as Cilium names nodes.
    pub name: String,
    pub cluster: String,
    pub cluster_id: u32,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
    pub ipv4_alloc_cidr: Option<IpNet>,
    pub ipv6_alloc_cidr: Option<IpNet>,
    pub ipv4_health_ip: Option<IpAddr>,
    /// `local` for this node, `custom-resource` for CiliumNodes, `kvstore` for remote ones.
    pub source: String,
}

/// `GET /v1/policy`: the rules the agent enforces, in Cilium's rule format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyResponse {
    /// Bumped on every change of the rule set.
    pub revision: u64,
    pub policy: Vec<serde_json::Value>,
}

/// A selector of the selector cache and the identities it selects now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorModel {
    pub selector: String,
    pub identities: Vec<u32>,
}

/// One entry of an endpoint's policy map, as `cilium bpf policy get` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyMapEntryModel {
    /// `Allow` or `Deny`.
    pub verdict: String,
    /// `Ingress` or `Egress`.
    pub direction: String,
    /// The peer identity; 0 = any.
    pub identity: u32,
    pub labels: Vec<String>,
    /// `6379/TCP`, `8000-8007/TCP`, `TCP` or `ANY`.
    pub port_protocol: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyMapModel {
    pub endpoint_id: u16,
    /// The pinned map's name (`cilium_policy_v2_<id>`).
    pub map_name: String,
    pub max_entries: u32,
    pub entries: Vec<PolicyMapEntryModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct IpcacheEntryModel {
    pub prefix: IpNet,
    pub identity: u32,
    pub tunnel_endpoint: Option<IpAddr>,
}

/// An entry of `cilium_lxc`: a local endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BpfEndpointModel {
    pub ip: IpAddr,
    pub id: u16,
    pub identity: u32,
    pub ifindex: u32,
    pub flags: u32,
    pub mac: String,
    pub node_mac: String,
}

/// A frontend of the service maps (`cilium bpf lb list`), its backends in slot order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LbEntryModel {
    pub frontend: ServiceAddress,
    pub rev_nat_id: u16,
    /// `sessionAffinity: ClientIP`'s timeout.
    pub affinity_timeout_seconds: Option<u32>,
    pub backends: Vec<LbBackendModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LbBackendModel {
    pub id: u32,
    pub address: ServiceAddress,
}

/// A connection-tracking entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CtEntryModel {
    pub protocol: String,
    /// `IN` (the endpoint's ingress created it) or `OUT`.
    pub direction: String,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub endpoint_id: u16,
    pub peer_identity: u32,
    pub packets: u64,
    pub reply_packets: u64,
    /// Seconds until the entry expires (0 once expired and awaiting GC).
    pub expires_in_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvPair {
    pub key: String,
    pub value: String,
}

/// `GET /v1/prefilter`: the source prefixes the XDP prefilter drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PrefilterModel {
    /// The devices the prefilter is attached to (empty: it is off).
    pub devices: Vec<String>,
    pub entries: Vec<PrefilterEntryModel>,
    pub passed: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PrefilterEntryModel {
    pub cidr: IpNet,
    pub packets: u64,
    pub bytes: u64,
}

/// `PATCH` (add) and `DELETE` (remove) `/v1/prefilter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PrefilterChange {
    pub cidr_list: Vec<IpNet>,
}

/// Kinds of datapath events, as `cilium monitor --type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MonitorEventType {
    Drop,
    PolicyVerdict,
}

impl std::str::FromStr for MonitorEventType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "drop" => Ok(MonitorEventType::Drop),
            "policy-verdict" => Ok(MonitorEventType::PolicyVerdict),
            other => Err(format!(
                "unknown event type {other:?}: expected drop or policy-verdict"
            )),
        }
    }
}

/// One verdict of the datapath.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MonitorEvent {
    #[serde(rename = "type")]
    pub kind: MonitorEventType,
    /// `ingress` or `egress` of `endpoint_id`.
    pub direction: String,
    pub endpoint_id: u16,
    /// 0 when the packet was allowed, else Cilium's drop reason code.
    pub reason: u16,
    pub reason_name: String,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
    pub ifindex: u32,
    pub packet_len: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
}

impl MonitorEvent {
    /// Drops for policy reasons are policy verdicts too (`action deny`).
    pub fn is_policy_verdict(&self) -> bool {
        self.kind == MonitorEventType::PolicyVerdict
            || (self.kind == MonitorEventType::Drop && POLICY_DROP_REASONS.contains(&self.reason))
    }

    pub fn matches(&self, filter: &MonitorFilter) -> bool {
        let typed = match filter.kind {
            None => true,
            Some(MonitorEventType::Drop) => self.kind == MonitorEventType::Drop,
            Some(MonitorEventType::PolicyVerdict) => self.is_policy_verdict(),
        };
        typed && (filter.related_to.is_empty() || filter.related_to.contains(&self.endpoint_id))
    }
}

/// Drop reasons that are policy decisions: no allow (133) and a deny rule (181).
pub const POLICY_DROP_REASONS: [u16; 2] = [133, 181];

/// `GET /v1/monitor?type=...&related-to=...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorFilter {
    pub kind: Option<MonitorEventType>,
    pub related_to: Vec<u16>,
}

impl MonitorFilter {
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        match self.kind {
            Some(MonitorEventType::Drop) => parts.push("type=drop".to_owned()),
            Some(MonitorEventType::PolicyVerdict) => parts.push("type=policy-verdict".to_owned()),
            None => {}
        }
        parts.extend(self.related_to.iter().map(|id| format!("related-to={id}")));
        parts.join("&")
    }

    /// Reads the query string [`MonitorFilter::query`] writes.
    pub fn parse_query(query: &str) -> Result<Self, String> {
        let mut filter = MonitorFilter::default();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("type", kind)) => filter.kind = Some(kind.parse()?),
                Some(("related-to", id)) => filter.related_to.push(
                    id.parse()
                        .map_err(|_| format!("related-to={id:?} is not an endpoint id"))?,
                ),
                _ => return Err(format!("unknown monitor parameter {part:?}")),
            }
        }
        Ok(filter)
    }
}

/// One line of the monitor stream (newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MonitorMessage {
    Event(MonitorEvent),
    /// Events the stream could not deliver (the datapath's ring or this reader fell behind).
    Lost(u64),
}

/// `cilium status`'s ClusterMesh section: every remote cluster of `--clustermesh-config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterMeshStatus {
    pub clusters: Vec<RemoteClusterStatus>,
    /// Services annotated global in this cluster or a remote one.
    pub num_global_services: usize,
}

impl ClusterMeshStatus {
    pub fn ready(&self) -> usize {
        self.clusters.iter().filter(|c| c.ready).count()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RemoteClusterStatus {
    pub name: String,
    /// From its `cilium/cluster-config`, once read.
    pub cluster_id: Option<u32>,
    /// Connected, its configuration accepted and its initial state read.
    pub ready: bool,
    pub connected: bool,
    /// The etcd endpoints of its config file.
    pub endpoints: Vec<String>,
    /// What is wrong (or what it waits for) when not ready.
    pub status: String,
    pub num_nodes: usize,
    pub num_identities: usize,
    pub num_endpoints: usize,
    pub num_services: usize,
    /// Values of the remote kvstore that did not parse or were refused, and why the last
    /// one was.
    pub num_invalid_values: u64,
    pub last_invalid_value: Option<String>,
    pub num_failures: u64,
    /// RFC 3339 time of the last failure.
    pub last_failure: Option<String>,
    /// Whether its entries were withdrawn after it stayed away for the grace period.
    pub withdrawn: bool,
}

/// `GET /v1/service`: a Service as the agent sees it, with its backends from this cluster
/// and, for a global service, from every cluster of the mesh that shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceModel {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// `ClusterIP`, ...
    pub service_type: String,
    pub global: bool,
    pub frontends: Vec<ServiceAddress>,
    pub backends: Vec<BackendModel>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceAddress {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: String,
}

impl fmt::Display for ServiceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}/{}", self.port, self.protocol),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}/{}", self.port, self.protocol),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackendModel {
    pub address: ServiceAddress,
    /// The cluster the backend runs in.
    pub cluster: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_filters_round_trip_and_bad_ones_are_named() {
        let filter = MonitorFilter {
            kind: Some(MonitorEventType::PolicyVerdict),
            related_to: vec![12, 400],
        };
        assert_eq!(
            filter.query(),
            "type=policy-verdict&related-to=12&related-to=400"
        );
        assert_eq!(MonitorFilter::parse_query(&filter.query()), Ok(filter));
        assert_eq!(MonitorFilter::parse_query(""), Ok(MonitorFilter::default()));
        let err = MonitorFilter::parse_query("type=trace").expect_err("unknown type");
        assert!(err.contains("trace"), "{err}");
        assert!(MonitorFilter::parse_query("related-to=x").is_err());
        assert!(MonitorFilter::parse_query("since=1").is_err());
    }

    fn event(kind: MonitorEventType, reason: u16, endpoint_id: u16) -> MonitorEvent {
        MonitorEvent {
            kind,
            direction: "ingress".into(),
            endpoint_id,
            reason,
            reason_name: String::new(),
            src_identity: 1,
            dst_identity: 2,
            src: "10.0.0.1".parse().expect("ip"),
            dst: "10.0.0.2".parse().expect("ip"),
            protocol: 6,
            sport: 1,
            dport: 2,
            ifindex: 3,
            packet_len: 60,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn policy_drops_are_verdicts_and_other_drops_are_not() {
        let verdicts = MonitorFilter {
            kind: Some(MonitorEventType::PolicyVerdict),
            related_to: vec![],
        };
        let drops = MonitorFilter {
            kind: Some(MonitorEventType::Drop),
            related_to: vec![7],
        };
        let policy_drop = event(MonitorEventType::Drop, 133, 7);
        let unknown_endpoint = event(MonitorEventType::Drop, 200, 7);
        let allowed = event(MonitorEventType::PolicyVerdict, 0, 7);
        assert!(policy_drop.matches(&verdicts) && policy_drop.matches(&drops));
        assert!(!unknown_endpoint.matches(&verdicts) && unknown_endpoint.matches(&drops));
        assert!(allowed.matches(&verdicts) && !allowed.matches(&drops));
        assert!(!event(MonitorEventType::Drop, 133, 8).matches(&drops));
    }
}
