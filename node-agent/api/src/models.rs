use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{ClusterHealth, ControllerStatus, Health};

/// `POST /v1/ipam`: one IPv4 address from the node's PodCIDR for `owner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamRequest {
    /// Who holds the address (the CNI plugin passes `<namespace>/<pod>`); shown in status.
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct IpamAllocation {
    pub ipv4: Ipv4Addr,
    /// The node's block the address is from.
    pub cidr: Ipv4Net,
    /// The pods' default gateway: the address of the node's `cilium_host` device.
    pub gateway: Ipv4Addr,
    /// The node's InternalIP.
    pub node_ip: IpAddr,
}

/// `PUT /v1/endpoint/container-id:<id>`: a pod whose veth the CNI plugin has wired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EndpointChangeRequest {
    pub container_id: String,
    pub k8s_namespace: String,
    pub k8s_pod_name: String,
    /// The host side of the pod's veth (`lxc…`).
    pub interface_name: String,
    /// The pod side of the veth, inside the pod (`eth0`).
    pub pod_interface_name: String,
    /// The pod's network namespace, as the runtime passed it (`CNI_NETNS`).
    pub netns: String,
    /// An address the agent gave out by `POST /v1/ipam`.
    pub ipv4: Ipv4Addr,
    /// MAC addresses of the pod side and of the host side, `aa:bb:…`.
    pub mac: String,
    pub host_mac: String,
    /// Cilium's `sync-build`: answer only once the endpoint's identity is resolved and its
    /// policy is in its map (or fail, undoing the endpoint, after the agent's timeout).
    #[serde(default)]
    pub sync_build: bool,
}

/// Cilium's endpoint states (the ones this agent passes through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointStateName {
    /// No security identity yet: the endpoint drops everything.
    WaitingForIdentity,
    /// The identity is known, its policy not yet in the endpoint's map (which still holds
    /// the previous identity's policy, or drops everything).
    WaitingToRegenerate,
    Ready,
}

impl fmt::Display for EndpointStateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointStateName::WaitingForIdentity => "waiting-for-identity",
            EndpointStateName::WaitingToRegenerate => "waiting-to-regenerate",
            EndpointStateName::Ready => "ready",
        })
    }
}

/// An endpoint as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EndpointModel {
    pub id: u16,
    pub container_id: String,
    pub k8s_namespace: String,
    pub k8s_pod_name: String,
    pub interface_name: String,
    pub ipv4: Ipv4Addr,
    /// The security identity in the datapath (`init` = 5 until the pod's is known).
    pub identity: u32,
    /// The identity's labels, `source:key=value`.
    pub labels: Vec<String>,
    pub state: EndpointStateName,
    /// Whether a policy is enforced on the endpoint's ingress and on its egress.
    #[serde(default)]
    pub ingress_enforced: bool,
    #[serde(default)]
    pub egress_enforced: bool,
}

/// `GET /v1/healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatusResponse {
    pub node_name: String,
    pub cluster_name: String,
    pub cluster_id: u8,
    pub node_ip: IpAddr,
    pub router_ip: Ipv4Addr,
    pub health_ip: Option<Ipv4Addr>,
    pub ipam: IpamStatus,
    pub endpoints: usize,
    /// The apiserver: its version once the agent's caches are synced.
    pub kubernetes: Health,
    /// `Disabled` without a kvstore, else whether etcd answers.
    pub kvstore: Health,
    /// The agent as a whole: `Ok` while every controller's last run succeeded.
    pub cilium: Health,
    /// `default`, `always` or `never` (`--enable-policy`).
    pub policy_enforcement: String,
    pub controllers: Vec<ControllerStatus>,
    /// The last round of node probes; `None` before the first or with probing off.
    pub cluster_health: Option<ClusterHealth>,
    /// Verdict events the datapath could not queue since it was loaded.
    pub monitor_events_lost: u64,
    /// `None` without `--clustermesh-config`.
    #[serde(default)]
    pub cluster_mesh: Option<crate::ClusterMeshStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct IpamStatus {
    pub cidrs: Vec<Ipv4Net>,
    pub used: usize,
    pub total: usize,
    /// Address → owner.
    pub allocations: Vec<(Ipv4Addr, String)>,
}

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
}

/// How a request names an endpoint: its id, or `container-id:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointRef {
    Id(u16),
    ContainerId(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an endpoint reference: expected an id (1-65535) or container-id:<container id>"
)]
pub struct BadEndpointRef(pub String);

impl FromStr for EndpointRef {
    type Err = BadEndpointRef;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(container) = text.strip_prefix("container-id:") {
            if container.is_empty() || !container.chars().all(|c| c.is_ascii_graphic()) {
                return Err(BadEndpointRef(text.to_owned()));
            }
            return Ok(EndpointRef::ContainerId(container.to_owned()));
        }
        match text.parse::<u16>() {
            Ok(id) if id > 0 => Ok(EndpointRef::Id(id)),
            _ => Err(BadEndpointRef(text.to_owned())),
        }
    }
}

impl fmt::Display for EndpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointRef::Id(id) => write!(f, "{id}"),
            EndpointRef::ContainerId(c) => write!(f, "container-id:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_references() {
        assert_eq!("7".parse(), Ok(EndpointRef::Id(7)));
        assert_eq!("65535".parse(), Ok(EndpointRef::Id(65535)));
        assert_eq!(
            "container-id:abc123".parse(),
            Ok(EndpointRef::ContainerId("abc123".into()))
        );
        for bad in [
            "0",
            "65536",
            "-1",
            "x",
            "",
            "container-id:",
            "container-id:a b",
        ] {
            assert!(bad.parse::<EndpointRef>().is_err(), "{bad:?} was accepted");
        }
        for reference in [EndpointRef::Id(12), EndpointRef::ContainerId("c1".into())] {
            assert_eq!(reference.to_string().parse(), Ok(reference));
        }
    }

    #[test]
    fn models_use_kebab_case_on_the_wire() {
        let allocation = IpamAllocation {
            ipv4: Ipv4Addr::new(10, 0, 1, 5),
            cidr: "10.0.1.0/24".parse().expect("cidr"),
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            node_ip: "192.168.60.11".parse().expect("ip"),
        };
        let json = serde_json::to_value(&allocation).expect("serializes");
        assert_eq!(json["node-ip"], "192.168.60.11");
        assert_eq!(json["cidr"], "10.0.1.0/24");
        assert_eq!(
            serde_json::to_value(EndpointStateName::WaitingForIdentity).expect("serializes"),
            "waiting-for-identity"
        );
    }
}
