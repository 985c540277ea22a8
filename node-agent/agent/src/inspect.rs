//! From the datapath's and the caches' types to the API's inspection models: pure
//! conversions, so what `cilium bpf ...` and `cilium monitor` print is tested here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cilium_agent_api::{
    BpfEndpointModel, CtEntryModel, IpcacheEntryModel, MonitorEvent, MonitorEventType, NodeModel,
    PolicyMapEntryModel,
};
use cilium_datapath::abi::EndpointInfo;
use cilium_datapath::policy::protocol_name;
use cilium_datapath::{
    CtEntry, Direction, EventKind, IpcacheEntry, L4Match, PolicyEntryView, Verdict, VerdictEvent,
    reason_name,
};
use cilium_identity::LabelSet;
use cilium_kvstore::KvNode;

/// `6379/TCP`, a range `8000-8007/TCP` for a port prefix, `TCP` or `ANY`.
pub fn port_protocol(l4: L4Match) -> String {
    match l4 {
        L4Match::Any => "ANY".into(),
        L4Match::Protocol(p) => protocol_name(p),
        L4Match::Ports { protocol, port, .. } => match l4.last_port() {
            Some(last) if last > port => format!("{port}-{last}/{}", protocol_name(protocol)),
            _ => format!("{port}/{}", protocol_name(protocol)),
        },
    }
}

fn direction_title(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    }
}

/// A label set as `source:key=value` texts.
pub fn label_texts(labels: &LabelSet) -> Vec<String> {
    labels.iter().map(ToString::to_string).collect()
}

/// One policy map entry with its peer's labels (`identities` is the selector cache's view).
pub fn policy_entry(
    view: &PolicyEntryView,
    identities: &BTreeMap<u32, LabelSet>,
) -> PolicyMapEntryModel {
    let labels = match view.key.identity {
        0 => vec!["ANY".to_owned()],
        id => identities
            .get(&id)
            .map(label_texts)
            .unwrap_or_else(|| vec!["(unknown identity)".to_owned()]),
    };
    PolicyMapEntryModel {
        verdict: match view.verdict {
            Verdict::Allow => "Allow",
            Verdict::Deny => "Deny",
        }
        .into(),
        direction: direction_title(view.key.direction).into(),
        identity: view.key.identity,
        labels,
        port_protocol: port_protocol(view.key.l4),
        packets: view.packets,
        bytes: view.bytes,
    }
}

pub fn ipcache_entry(prefix: ipnet::IpNet, entry: &IpcacheEntry) -> IpcacheEntryModel {
    IpcacheEntryModel {
        prefix,
        identity: entry.identity,
        tunnel_endpoint: entry.tunnel_endpoint.map(IpAddr::V4),
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn bpf_endpoint(ip: IpAddr, info: &EndpointInfo) -> BpfEndpointModel {
    BpfEndpointModel {
        ip,
        id: info.lxc_id,
        identity: info.sec_id,
        ifindex: info.ifindex,
        flags: info.flags,
        mac: mac_text(info.mac),
        node_mac: mac_text(info.node_mac),
    }
}

/// A CT entry; `now_ns` is CLOCK_MONOTONIC, the clock of its expiry.
pub fn ct_entry(entry: &CtEntry, now_ns: u64) -> CtEntryModel {
    CtEntryModel {
        protocol: protocol_name(entry.protocol),
        direction: match entry.direction {
            Direction::Ingress => "IN",
            Direction::Egress => "OUT",
        }
        .into(),
        src: entry.src,
        sport: entry.sport,
        dst: entry.dst,
        dport: entry.dport,
        endpoint_id: entry.endpoint_id,
        peer_identity: entry.peer_identity,
        packets: entry.packets,
        reply_packets: entry.reply_packets,
        expires_in_seconds: entry.expires_ns.saturating_sub(now_ns) / 1_000_000_000,
    }
}

/// A frontend of the service maps with its backends.
pub fn lb_entry(entry: &cilium_datapath::lb::LbEntry) -> cilium_agent_api::LbEntryModel {
    let protocol = protocol_name(entry.frontend.protocol);
    let address = |ip, port| cilium_agent_api::ServiceAddress {
        ip,
        port,
        protocol: protocol.clone(),
    };
    cilium_agent_api::LbEntryModel {
        frontend: address(entry.frontend.ip, entry.frontend.port),
        rev_nat_id: entry.rev_nat_index,
        affinity_timeout_seconds: entry.affinity_timeout_s,
        backends: entry
            .backends
            .iter()
            .map(|(id, backend)| cilium_agent_api::LbBackendModel {
                id: *id,
                address: address(backend.ip, backend.port),
            })
            .collect(),
    }
}

pub fn monitor_event(event: &VerdictEvent) -> MonitorEvent {
    MonitorEvent {
        kind: match event.kind {
            EventKind::Drop => MonitorEventType::Drop,
            EventKind::PolicyVerdict => MonitorEventType::PolicyVerdict,
        },
        direction: match event.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
        .into(),
        endpoint_id: event.endpoint_id,
        reason: event.reason,
        reason_name: reason_name(event.reason).into(),
        src_identity: event.src_identity,
        dst_identity: event.dst_identity,
        src: event.src,
        dst: event.dst,
        protocol: event.protocol,
        sport: event.sport,
        dport: event.dport,
        ifindex: event.ifindex,
        packet_len: event.packet_len,
        timestamp_ns: event.timestamp_ns,
    }
}

/// A node entry (from a CiliumNode or a kvstore) as `cilium node list` shows it.
pub fn node(entry: &KvNode) -> NodeModel {
    let address = |v4: bool| {
        ["InternalIP", "ExternalIP"]
            .iter()
            .flat_map(|kind| entry.ip_addresses.iter().filter(move |a| a.kind == *kind))
            .filter_map(|a| a.ip.parse::<IpAddr>().ok())
            .find(|ip| ip.is_ipv4() == v4)
    };
    NodeModel {
        name: entry.full_name(),
        cluster: entry.cluster.clone(),
        cluster_id: entry.cluster_id,
        ipv4: address(true),
        ipv6: address(false),
        ipv4_alloc_cidr: entry.ipv4_alloc_cidr.as_ref().and_then(|c| c.to_net().ok()),
        ipv6_alloc_cidr: entry.ipv6_alloc_cidr.as_ref().and_then(|c| c.to_net().ok()),
        ipv4_health_ip: entry.ipv4_health_ip.parse().ok(),
        source: entry.source.clone(),
    }
}

#[cfg(test)]
mod tests {
    use cilium_datapath::PolicyKey;
    use cilium_datapath::policy::{PROTO_TCP, PROTO_UDP};
    use cilium_identity::Label;

    use super::*;

    #[test]
    fn ports_print_as_cilium_does() {
        assert_eq!(port_protocol(L4Match::Any), "ANY");
        assert_eq!(port_protocol(L4Match::Protocol(PROTO_UDP)), "UDP");
        assert_eq!(port_protocol(L4Match::port(PROTO_TCP, 6379)), "6379/TCP");
        let range = L4Match::port_range(PROTO_TCP, 8000, 8007);
        assert_eq!(range.len(), 1);
        assert_eq!(port_protocol(range[0]), "8000-8007/TCP");
        assert_eq!(port_protocol(L4Match::port(132, 9)), "9/SCTP");
    }

    #[test]
    fn policy_entries_name_their_peers() {
        let employee: LabelSet = [Label::k8s("app", "employee")].into_iter().collect();
        let identities = BTreeMap::from([(31_000, employee)]);
        let view = |identity| PolicyEntryView {
            key: PolicyKey {
                identity,
                direction: Direction::Ingress,
                l4: L4Match::port(PROTO_TCP, 6379),
            },
            verdict: Verdict::Allow,
            packets: 4,
            bytes: 240,
        };
        let entry = policy_entry(&view(31_000), &identities);
        assert_eq!(entry.labels, vec!["k8s:app=employee"]);
        assert_eq!(
            (entry.verdict.as_str(), entry.direction.as_str()),
            ("Allow", "Ingress")
        );
        assert_eq!(entry.port_protocol, "6379/TCP");
        assert_eq!(policy_entry(&view(0), &identities).labels, vec!["ANY"]);
        assert_eq!(
            policy_entry(&view(99), &identities).labels,
            vec!["(unknown identity)"]
        );
    }

    #[test]
    fn ct_expiry_counts_down_and_stops_at_zero() {
        let entry = CtEntry {
            src: "10.0.0.1".parse().expect("ip"),
            dst: "10.0.0.2".parse().expect("ip"),
            sport: 40_000,
            dport: 6379,
            protocol: PROTO_TCP,
            direction: Direction::Ingress,
            endpoint_id: 3,
            peer_identity: 31_000,
            packets: 5,
            reply_packets: 4,
            expires_ns: 30_000_000_000,
        };
        assert_eq!(ct_entry(&entry, 10_000_000_000).expires_in_seconds, 20);
        assert_eq!(ct_entry(&entry, 40_000_000_000).expires_in_seconds, 0);
        assert_eq!(ct_entry(&entry, 0).direction, "IN");
    }

    #[test]
    fn nodes_are_named_cluster_slash_node() {
        let value = br#"{"Name":"k8s-node1","Cluster":"cluster2","IPAddresses":[{"Type":"CiliumInternalIP","IP":"10.6.6.71"},{"Type":"InternalIP","IP":"10.5.1.132"}],"IPv4AllocCIDR":{"IP":"10.6.6.0","Mask":"////AA=="},"IPv6AllocCIDR":null,"IPv4HealthIP":"10.6.6.79","IPv6HealthIP":"","ClusterID":102,"Source":"local","EncryptionKey":0}"#;
        let entry = KvNode::decode("k", value).expect("decodes");
        let model = node(&entry);
        assert_eq!(model.name, "cluster2/k8s-node1");
        assert_eq!(model.ipv4, "10.5.1.132".parse().ok());
        assert_eq!(model.ipv4_alloc_cidr, "10.6.6.0/24".parse().ok());
        assert_eq!(model.ipv6, None);
        assert_eq!(model.cluster_id, 102);
    }
}
