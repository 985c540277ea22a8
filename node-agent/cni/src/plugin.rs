//! The work of ADD, DEL and CHECK: the veth, the pod's addresses and routes, and the calls
//! to the agent. ADD undoes what it did when a later step fails.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use cilium_agent_api::delete_queue::DeleteQueue;
use cilium_agent_api::{Client, ClientError, EndpointChangeRequest, EndpointRef, IpamAllocation};
use cilium_netdev::{Netlink, Route};
use ipnet::IpNet;

use crate::request::Request;
use crate::result::{AddResult, CniError, codes, mac_text};

fn agent_error(what: &str, e: ClientError) -> CniError {
    match e {
        ClientError::Unreachable { .. } => CniError::new(
            codes::TRY_AGAIN_LATER,
            format!("{what}: cilium-agent is not reachable"),
            e.to_string(),
        ),
        // The agent is starting, or the endpoint did not get ready in time: retryable.
        ClientError::Api { status: 503, .. } => {
            CniError::new(codes::TRY_AGAIN_LATER, format!("{what}: {e}"), "")
        }
        ClientError::Api { .. } => CniError::new(codes::AGENT_REFUSED, format!("{what}: {e}"), ""),
        ClientError::Protocol { .. } => {
            CniError::new(codes::IO_FAILURE, format!("{what}: {e}"), "")
        }
    }
}

fn netdev_error(what: &str, e: cilium_netdev::Error) -> CniError {
    CniError::new(codes::IO_FAILURE, what.to_owned(), e.to_string())
}

fn host_route(ip: Ipv4Addr, device: u32) -> Route {
    Route {
        destination: IpNet::from(IpAddr::V4(ip)),
        gateway: None,
        device: Some(device),
    }
}

pub async fn add(request: &Request, client: &Client) -> Result<AddResult, CniError> {
    if let Err(e) = std::fs::metadata(&request.netns) {
        return Err(CniError::new(
            codes::UNKNOWN_CONTAINER,
            format!("network namespace {} is not there", request.netns),
            e.to_string(),
        ));
    }
    let owner = request
        .pod()
        .unwrap_or_else(|| request.container_id.clone());
    let allocation = client
        .allocate_ip(&owner)
        .await
        .map_err(|e| agent_error("allocating an address", e))?;
    let wired = wire(request, &allocation, client).await;
    if wired.is_err() {
        // Leave nothing behind: the veth (both ends) and the address.
        if let Ok(host) = Netlink::connect() {
            let _ = host.delete_link(&request.host_ifname()).await;
        }
        let _ = client.release_ip(allocation.ipv4).await;
    }
    wired
}

async fn wire(
    request: &Request,
    allocation: &IpamAllocation,
    client: &Client,
) -> Result<AddResult, CniError> {
    let host_ifname = request.host_ifname();
    let temporary = request.temporary_ifname();
    let host = Netlink::connect().map_err(|e| netdev_error("netlink", e))?;
    // Left over from an ADD that died half-way.
    host.delete_link(&host_ifname)
        .await
        .map_err(|e| netdev_error("removing a stale veth", e))?;
    host.create_veth(&host_ifname, &temporary)
        .await
        .map_err(|e| netdev_error("creating the veth", e))?;
    let peer = host
        .require_link(&temporary)
        .await
        .map_err(|e| netdev_error("finding the veth's peer", e))?;
    host.move_to_namespace(peer.index, Path::new(&request.netns))
        .await
        .map_err(|e| netdev_error("moving the veth into the pod", e))?;

    let pod = Netlink::connect_in(Path::new(&request.netns))
        .map_err(|e| netdev_error("entering the pod's namespace", e))?;
    let inner = pod
        .require_link(&temporary)
        .await
        .map_err(|e| netdev_error("finding the veth in the pod", e))?;
    pod.rename(inner.index, &request.ifname)
        .await
        .map_err(|e| netdev_error("naming the pod's interface", e))?;
    pod.ensure_address(inner.index, IpNet::from(IpAddr::V4(allocation.ipv4)))
        .await
        .map_err(|e| netdev_error("adding the pod's address", e))?;
    pod.set_up(inner.index)
        .await
        .map_err(|e| netdev_error("setting the pod's interface up", e))?;
    if let Some(lo) = pod.link("lo").await.map_err(|e| netdev_error("lo", e))? {
        pod.set_up(lo.index)
            .await
            .map_err(|e| netdev_error("setting lo up", e))?;
    }
    // The gateway is reached straight out of the interface, then everything else via it.
    pod.replace_route(&host_route(allocation.gateway, inner.index), false)
        .await
        .map_err(|e| netdev_error("routing to the gateway", e))?;
    let default = Route {
        // 0.0.0.0/0
        destination: IpNet::V4(ipnet::Ipv4Net::default()),
        gateway: Some(IpAddr::V4(allocation.gateway)),
        device: Some(inner.index),
    };
    pod.replace_route(&default, false)
        .await
        .map_err(|e| netdev_error("adding the default route", e))?;

    let outer = host
        .require_link(&host_ifname)
        .await
        .map_err(|e| netdev_error("finding the host side of the veth", e))?;
    host.set_up(outer.index)
        .await
        .map_err(|e| netdev_error("setting the host side up", e))?;
    host.replace_route(&host_route(allocation.ipv4, outer.index), false)
        .await
        .map_err(|e| netdev_error("routing to the pod", e))?;

    let endpoint = EndpointChangeRequest {
        container_id: request.container_id.clone(),
        k8s_namespace: request.pod_namespace.clone().unwrap_or_default(),
        k8s_pod_name: request.pod_name.clone().unwrap_or_default(),
        interface_name: host_ifname.clone(),
        pod_interface_name: request.ifname.clone(),
        netns: request.netns.clone(),
        ipv4: allocation.ipv4,
        mac: mac_text(inner.mac),
        host_mac: mac_text(outer.mac),
        sync_build: true,
    };
    client
        .put_endpoint(&endpoint)
        .await
        .map_err(|e| agent_error("creating the endpoint", e))?;
    Ok(AddResult {
        host_ifname,
        host_mac: endpoint.host_mac,
        ifname: request.ifname.clone(),
        mac: endpoint.mac,
        netns: request.netns.clone(),
        ipv4: allocation.ipv4,
        gateway: allocation.gateway,
    })
}

/// Removes the endpoint (the agent releases its address) and the veth; what is already
/// gone is not an error. With the agent down, the deletion is queued for it (Cilium's
/// delete queue) and the veth removed now: the runtime sees a finished DEL.
pub async fn del(request: &Request, client: &Client, queue: &DeleteQueue) -> Result<(), CniError> {
    match client
        .delete_endpoint(&EndpointRef::ContainerId(request.container_id.clone()))
        .await
    {
        Ok(_) => {}
        Err(ClientError::Unreachable { .. }) => {
            queue.enqueue(&request.container_id).map_err(|e| {
                CniError::new(
                    codes::IO_FAILURE,
                    "cilium-agent is not reachable and the deletion could not be queued",
                    e.to_string(),
                )
            })?;
        }
        Err(e) => return Err(agent_error("deleting the endpoint", e)),
    }
    let host = Netlink::connect().map_err(|e| netdev_error("netlink", e))?;
    host.delete_link(&request.host_ifname())
        .await
        .map_err(|e| netdev_error("deleting the veth", e))?;
    Ok(())
}

/// The endpoint exists in the agent and the pod's interface holds its address.
pub async fn check(request: &Request, client: &Client) -> Result<(), CniError> {
    let endpoint = client
        .endpoint(&EndpointRef::ContainerId(request.container_id.clone()))
        .await
        .map_err(|e| match e {
            ClientError::Api { status: 404, .. } => CniError::new(
                codes::UNKNOWN_CONTAINER,
                format!("no endpoint for container {}", request.container_id),
                "",
            ),
            e => agent_error("reading the endpoint", e),
        })?;
    let host = Netlink::connect().map_err(|e| netdev_error("netlink", e))?;
    if host
        .link(&endpoint.interface_name)
        .await
        .map_err(|e| netdev_error("netlink", e))?
        .is_none()
    {
        return Err(CniError::new(
            codes::IO_FAILURE,
            format!("the pod's veth {} is missing", endpoint.interface_name),
            "",
        ));
    }
    let pod = Netlink::connect_in(Path::new(&request.netns))
        .map_err(|e| netdev_error("entering the pod's namespace", e))?;
    if pod
        .link(&request.ifname)
        .await
        .map_err(|e| netdev_error("netlink", e))?
        .is_none()
    {
        return Err(CniError::new(
            codes::IO_FAILURE,
            format!("{} is missing in {}", request.ifname, request.netns),
            "",
        ));
    }
    Ok(())
}
