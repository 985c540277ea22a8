//! Rust mirrors of `ebpf-prog/include/cilium_rs.h`: every map key and value, byte for byte,
//! and the constants the loader shares with the programs. The `layout` test compares each
//! size, offset and constant with what the C compiler printed for the same header.
//!
//! LPM trie keys are split as aya wants them: `aya::maps::lpm_trie::Key<T>` carries the
//! `prefixlen` word and `T` the rest of the C struct.
#![allow(unsafe_code)] // `aya::Pod` is an unsafe marker trait; bytemuck checks there is no padding.

use bytemuck::{Pod, Zeroable};

pub const PIN_VERSION: u32 = 1;

pub const IDENTITY_WORLD: u32 = 2;

pub const FAMILY_IPV4: u8 = 1;
pub const FAMILY_IPV6: u8 = 2;

pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

pub const IPCACHE_MAP_SIZE: u32 = 512_000;
pub const IPCACHE_STATIC_PREFIX: u32 = 32;
pub const ENDPOINTS_MAP_SIZE: u32 = 65_535;
pub const POLICY_MAP_SIZE: u32 = 16_384;
pub const POLICY_OUTER_MAP_SIZE: u32 = 65_535;
pub const POLICY_STATIC_PREFIX: u32 = 40;
pub const POLICY_PROTO_PREFIX: u32 = 48;
pub const POLICY_FULL_PREFIX: u32 = 64;
pub const POLICY_F_DENY: u8 = 1;
pub const POLICY_F_WILDCARD_PROTOCOL: u8 = 2;
pub const POLICY_F_WILDCARD_DPORT: u8 = 4;
pub const CT_MAP_SIZE: u32 = 262_144;
pub const CT_F_EGRESS: u8 = 1;
pub const CT_F_INGRESS: u8 = 2;
pub const METRICS_MAP_SIZE: u32 = 65_536;
pub const EVENTS_RING_SIZE: u32 = 256 * 1024;
pub const EVENT_DROP: u8 = 1;
pub const EVENT_POLICY_VERDICT: u8 = 2;
pub const PREFILTER_MAP_SIZE: u32 = 65_536;
pub const PREFILTER_STATS_PASSED: u32 = 0;
pub const PREFILTER_STATS_DROPPED: u32 = 1;
pub const PREFILTER_STATS_SIZE: u32 = 2;

pub const REASON_FORWARDED: u8 = 0;
pub const DROP_INVALID_SIP: u8 = 132;
pub const DROP_CSUM_L3: u8 = 138;
pub const DROP_CSUM_L4: u8 = 139;
pub const DROP_WRITE_ERROR: u8 = 141;
pub const DROP_POLICY: u8 = 133;
pub const DROP_INVALID: u8 = 134;
pub const DROP_CT_INVALID_HDR: u8 = 135;
pub const DROP_FRAG_NOSUPPORT: u8 = 157;
pub const DROP_FRAG_NOT_FOUND: u8 = 158;
pub const FRAG_MAP_SIZE: u32 = 8192;
pub const DROP_POLICY_DENY: u8 = 181;
pub const DROP_UNKNOWN_ENDPOINT: u8 = 200;
pub const LB_SERVICE_MAP_SIZE: u32 = 65_536;
pub const LB_BACKEND_MAP_SIZE: u32 = 65_536;
pub const LB_CONN_MAP_SIZE: u32 = 262_144;
pub const LB_F_AFFINITY: u8 = 1;
pub const LB_CONN_FORWARD: u8 = 1;
pub const LB_CONN_REVERSE: u8 = 2;

/// `struct ipcache_key` after `prefixlen`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IpcacheKey {
    pub pad1: u16,
    pub cluster_id: u8,
    pub family: u8,
    /// Network byte order; IPv4 in `addr[0]`.
    pub addr: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RemoteEndpointInfo {
    pub sec_identity: u32,
    /// IPv4 of the node hosting the address, network order; 0 = this node.
    pub tunnel_endpoint: u32,
    pub node_id: u16,
    pub key: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
pub struct EndpointKey {
    pub addr: [u32; 4],
    pub family: u8,
    pub key: u8,
    pub cluster_id: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EndpointInfo {
    pub ifindex: u32,
    pub unused: u16,
    pub lxc_id: u16,
    pub flags: u32,
    pub mac: [u8; 6],
    pub node_mac: [u8; 6],
    pub sec_id: u32,
    pub pad: [u32; 3],
}

/// `struct policy_key` after `prefixlen`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PolicyKey {
    pub sec_label: u32,
    pub egress: u8,
    pub protocol: u8,
    /// Network byte order.
    pub dport: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PolicyEntry {
    pub proxy_port: u16,
    pub flags: u8,
    pub auth_type: u8,
    pub pad1: u16,
    pub pad2: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// An IPv4 datagram being fragmented (`cilium_ipv4_frag_datagrams`' key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    pub id: u16,
    pub protocol: u8,
    pub pad: u8,
}

/// The L4 ports of its first fragment, network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragPorts {
    pub sport: u16,
    pub dport: u16,
    pub policy_port: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtKey {
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub flags: u8,
    pub family: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntry {
    pub expires_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    pub peer_identity: u32,
    pub endpoint_id: u16,
    pub state: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct MetricsKey {
    pub endpoint_id: u16,
    pub direction: u8,
    pub reason: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VerdictEvent {
    pub timestamp_ns: u64,
    pub kind: u8,
    pub direction: u8,
    pub family: u8,
    pub protocol: u8,
    pub endpoint_id: u16,
    pub reason: u16,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub ifindex: u32,
    pub packet_len: u32,
    pub pad: u32,
}

/// `struct prefilter_v4_key` after `prefixlen`: the address in network order.
pub type PrefilterV4Key = u32;
/// `struct prefilter_v6_key` after `prefixlen`.
pub type PrefilterV6Key = [u32; 4];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PrefilterValue {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct lb_service_key`: a frontend, and a slot (0: the service; 1..: its backends).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Pod, Zeroable)]
pub struct LbServiceKey {
    pub addr: [u32; 4],
    pub dport: u16, // network order
    pub slot: u16,
    pub protocol: u8,
    pub family: u8,
    pub pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LbService {
    pub backend_id: u32,
    pub count: u16,
    pub rev_nat_index: u16,
    pub affinity_timeout_s: u32,
    pub flags: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LbBackend {
    pub addr: [u32; 4],
    pub port: u16, // network order
    pub family: u8,
    pub pad: u8,
}

/// `struct lb_conn`, under a `CtKey` with `LB_CONN_FORWARD` or `LB_CONN_REVERSE` as flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LbConn {
    pub addr: [u32; 4],
    pub backend_id: u32,
    pub port: u16,
    pub rev_nat_index: u16,
    pub created_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LbAffinityKey {
    pub client: [u32; 4],
    pub rev_nat_index: u16,
    pub family: u8,
    pub pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LbAffinity {
    pub last_used_ns: u64,
    pub backend_id: u32,
    pub pad: u32,
}

macro_rules! aya_pod {
    ($($t:ty),*) => { $(
        // SAFETY: repr(C), Copy, and bytemuck::Pod proves every bit pattern valid and no padding.
        unsafe impl aya::Pod for $t {}
    )* };
}
aya_pod!(
    IpcacheKey,
    RemoteEndpointInfo,
    EndpointKey,
    EndpointInfo,
    PolicyKey,
    PolicyEntry,
    CtKey,
    CtEntry,
    MetricsKey,
    MetricsValue,
    PrefilterValue,
    LbServiceKey,
    LbService,
    LbBackend,
    LbConn,
    LbAffinityKey,
    LbAffinity
);

#[cfg(test)]
mod layout {
    use super::*;
    use aya::maps::lpm_trie::Key;
    use std::{collections::BTreeMap, mem::offset_of};

    const C_LAYOUT: &str = include_str!(concat!(env!("OUT_DIR"), "/c_layout.txt"));

    /// Every line the C side printed, as "sizeof x" / "offsetof x.f" / "const X" → value.
    fn c_side() -> BTreeMap<String, u64> {
        C_LAYOUT
            .lines()
            .map(|line| {
                let (name, value) = line.rsplit_once(' ').expect("name value");
                (name.to_string(), value.parse().expect("number"))
            })
            .collect()
    }

    /// The same facts computed from the Rust mirrors (LPM keys carry the 4-byte prefixlen).
    fn rust_side() -> BTreeMap<String, u64> {
        const LPM: usize = 4;
        let mut r = BTreeMap::new();
        let mut put = |name: &str, value: usize| {
            r.insert(name.to_string(), value as u64);
        };
        put("sizeof ipcache_key", size_of::<Key<IpcacheKey>>());
        put("offsetof ipcache_key.prefixlen", 0);
        put(
            "offsetof ipcache_key.cluster_id",
            LPM + offset_of!(IpcacheKey, cluster_id),
        );
        put(
            "offsetof ipcache_key.family",
            LPM + offset_of!(IpcacheKey, family),
        );
        put(
            "offsetof ipcache_key.addr",
            LPM + offset_of!(IpcacheKey, addr),
        );
        put(
            "sizeof remote_endpoint_info",
            size_of::<RemoteEndpointInfo>(),
        );
        put(
            "offsetof remote_endpoint_info.sec_identity",
            offset_of!(RemoteEndpointInfo, sec_identity),
        );
        put(
            "offsetof remote_endpoint_info.tunnel_endpoint",
            offset_of!(RemoteEndpointInfo, tunnel_endpoint),
        );
        put(
            "offsetof remote_endpoint_info.node_id",
            offset_of!(RemoteEndpointInfo, node_id),
        );
        put("sizeof endpoint_key", size_of::<EndpointKey>());
        put("offsetof endpoint_key.addr", offset_of!(EndpointKey, addr));
        put(
            "offsetof endpoint_key.family",
            offset_of!(EndpointKey, family),
        );
        put("sizeof endpoint_info", size_of::<EndpointInfo>());
        put(
            "offsetof endpoint_info.ifindex",
            offset_of!(EndpointInfo, ifindex),
        );
        put(
            "offsetof endpoint_info.lxc_id",
            offset_of!(EndpointInfo, lxc_id),
        );
        put(
            "offsetof endpoint_info.flags",
            offset_of!(EndpointInfo, flags),
        );
        put("offsetof endpoint_info.mac", offset_of!(EndpointInfo, mac));
        put(
            "offsetof endpoint_info.node_mac",
            offset_of!(EndpointInfo, node_mac),
        );
        put(
            "offsetof endpoint_info.sec_id",
            offset_of!(EndpointInfo, sec_id),
        );
        put("sizeof policy_key", size_of::<Key<PolicyKey>>());
        put("offsetof policy_key.prefixlen", 0);
        put(
            "offsetof policy_key.sec_label",
            LPM + offset_of!(PolicyKey, sec_label),
        );
        put(
            "offsetof policy_key.egress",
            LPM + offset_of!(PolicyKey, egress),
        );
        put(
            "offsetof policy_key.protocol",
            LPM + offset_of!(PolicyKey, protocol),
        );
        put(
            "offsetof policy_key.dport",
            LPM + offset_of!(PolicyKey, dport),
        );
        put("sizeof policy_entry", size_of::<PolicyEntry>());
        put(
            "offsetof policy_entry.proxy_port",
            offset_of!(PolicyEntry, proxy_port),
        );
        put(
            "offsetof policy_entry.flags",
            offset_of!(PolicyEntry, flags),
        );
        put(
            "offsetof policy_entry.auth_type",
            offset_of!(PolicyEntry, auth_type),
        );
        put(
            "offsetof policy_entry.packets",
            offset_of!(PolicyEntry, packets),
        );
        put(
            "offsetof policy_entry.bytes",
            offset_of!(PolicyEntry, bytes),
        );
        put("sizeof frag_key", size_of::<FragKey>());
        put("offsetof frag_key.saddr", offset_of!(FragKey, saddr));
        put("offsetof frag_key.daddr", offset_of!(FragKey, daddr));
        put("offsetof frag_key.id", offset_of!(FragKey, id));
        put("offsetof frag_key.protocol", offset_of!(FragKey, protocol));
        put("sizeof frag_ports", size_of::<FragPorts>());
        put("offsetof frag_ports.sport", offset_of!(FragPorts, sport));
        put("offsetof frag_ports.dport", offset_of!(FragPorts, dport));
        put(
            "offsetof frag_ports.policy_port",
            offset_of!(FragPorts, policy_port),
        );
        put("sizeof ct_key", size_of::<CtKey>());
        put("offsetof ct_key.saddr", offset_of!(CtKey, saddr));
        put("offsetof ct_key.daddr", offset_of!(CtKey, daddr));
        put("offsetof ct_key.sport", offset_of!(CtKey, sport));
        put("offsetof ct_key.dport", offset_of!(CtKey, dport));
        put("offsetof ct_key.protocol", offset_of!(CtKey, protocol));
        put("offsetof ct_key.flags", offset_of!(CtKey, flags));
        put("offsetof ct_key.family", offset_of!(CtKey, family));
        put("sizeof ct_entry", size_of::<CtEntry>());
        put(
            "offsetof ct_entry.expires_ns",
            offset_of!(CtEntry, expires_ns),
        );
        put("offsetof ct_entry.packets", offset_of!(CtEntry, packets));
        put("offsetof ct_entry.bytes", offset_of!(CtEntry, bytes));
        put(
            "offsetof ct_entry.reply_packets",
            offset_of!(CtEntry, reply_packets),
        );
        put(
            "offsetof ct_entry.reply_bytes",
            offset_of!(CtEntry, reply_bytes),
        );
        put(
            "offsetof ct_entry.peer_identity",
            offset_of!(CtEntry, peer_identity),
        );
        put(
            "offsetof ct_entry.endpoint_id",
            offset_of!(CtEntry, endpoint_id),
        );
        put("offsetof ct_entry.state", offset_of!(CtEntry, state));
        put("sizeof metrics_key", size_of::<MetricsKey>());
        put(
            "offsetof metrics_key.endpoint_id",
            offset_of!(MetricsKey, endpoint_id),
        );
        put(
            "offsetof metrics_key.direction",
            offset_of!(MetricsKey, direction),
        );
        put(
            "offsetof metrics_key.reason",
            offset_of!(MetricsKey, reason),
        );
        put("sizeof metrics_value", size_of::<MetricsValue>());
        put(
            "offsetof metrics_value.packets",
            offset_of!(MetricsValue, packets),
        );
        put(
            "offsetof metrics_value.bytes",
            offset_of!(MetricsValue, bytes),
        );
        put("sizeof verdict_event", size_of::<VerdictEvent>());
        put(
            "offsetof verdict_event.timestamp_ns",
            offset_of!(VerdictEvent, timestamp_ns),
        );
        put(
            "offsetof verdict_event.type",
            offset_of!(VerdictEvent, kind),
        );
        put(
            "offsetof verdict_event.direction",
            offset_of!(VerdictEvent, direction),
        );
        put(
            "offsetof verdict_event.family",
            offset_of!(VerdictEvent, family),
        );
        put(
            "offsetof verdict_event.protocol",
            offset_of!(VerdictEvent, protocol),
        );
        put(
            "offsetof verdict_event.endpoint_id",
            offset_of!(VerdictEvent, endpoint_id),
        );
        put(
            "offsetof verdict_event.reason",
            offset_of!(VerdictEvent, reason),
        );
        put(
            "offsetof verdict_event.src_identity",
            offset_of!(VerdictEvent, src_identity),
        );
        put(
            "offsetof verdict_event.dst_identity",
            offset_of!(VerdictEvent, dst_identity),
        );
        put(
            "offsetof verdict_event.saddr",
            offset_of!(VerdictEvent, saddr),
        );
        put(
            "offsetof verdict_event.daddr",
            offset_of!(VerdictEvent, daddr),
        );
        put(
            "offsetof verdict_event.sport",
            offset_of!(VerdictEvent, sport),
        );
        put(
            "offsetof verdict_event.dport",
            offset_of!(VerdictEvent, dport),
        );
        put(
            "offsetof verdict_event.ifindex",
            offset_of!(VerdictEvent, ifindex),
        );
        put(
            "offsetof verdict_event.packet_len",
            offset_of!(VerdictEvent, packet_len),
        );
        put("sizeof prefilter_v4_key", size_of::<Key<PrefilterV4Key>>());
        put("offsetof prefilter_v4_key.addr", LPM);
        put("sizeof prefilter_v6_key", size_of::<Key<PrefilterV6Key>>());
        put("offsetof prefilter_v6_key.addr", LPM);
        put("sizeof prefilter_value", size_of::<PrefilterValue>());
        put(
            "offsetof prefilter_value.packets",
            offset_of!(PrefilterValue, packets),
        );
        put(
            "offsetof prefilter_value.bytes",
            offset_of!(PrefilterValue, bytes),
        );
        put("sizeof lb_service_key", size_of::<LbServiceKey>());
        put(
            "offsetof lb_service_key.addr",
            offset_of!(LbServiceKey, addr),
        );
        put(
            "offsetof lb_service_key.dport",
            offset_of!(LbServiceKey, dport),
        );
        put(
            "offsetof lb_service_key.slot",
            offset_of!(LbServiceKey, slot),
        );
        put(
            "offsetof lb_service_key.protocol",
            offset_of!(LbServiceKey, protocol),
        );
        put(
            "offsetof lb_service_key.family",
            offset_of!(LbServiceKey, family),
        );
        put("sizeof lb_service", size_of::<LbService>());
        put(
            "offsetof lb_service.backend_id",
            offset_of!(LbService, backend_id),
        );
        put("offsetof lb_service.count", offset_of!(LbService, count));
        put(
            "offsetof lb_service.rev_nat_index",
            offset_of!(LbService, rev_nat_index),
        );
        put(
            "offsetof lb_service.affinity_timeout_s",
            offset_of!(LbService, affinity_timeout_s),
        );
        put("offsetof lb_service.flags", offset_of!(LbService, flags));
        put("sizeof lb_backend", size_of::<LbBackend>());
        put("offsetof lb_backend.addr", offset_of!(LbBackend, addr));
        put("offsetof lb_backend.port", offset_of!(LbBackend, port));
        put("offsetof lb_backend.family", offset_of!(LbBackend, family));
        put("sizeof lb_conn", size_of::<LbConn>());
        put("offsetof lb_conn.addr", offset_of!(LbConn, addr));
        put(
            "offsetof lb_conn.backend_id",
            offset_of!(LbConn, backend_id),
        );
        put("offsetof lb_conn.port", offset_of!(LbConn, port));
        put(
            "offsetof lb_conn.rev_nat_index",
            offset_of!(LbConn, rev_nat_index),
        );
        put(
            "offsetof lb_conn.created_ns",
            offset_of!(LbConn, created_ns),
        );
        put("sizeof lb_affinity_key", size_of::<LbAffinityKey>());
        put(
            "offsetof lb_affinity_key.client",
            offset_of!(LbAffinityKey, client),
        );
        put(
            "offsetof lb_affinity_key.rev_nat_index",
            offset_of!(LbAffinityKey, rev_nat_index),
        );
        put(
            "offsetof lb_affinity_key.family",
            offset_of!(LbAffinityKey, family),
        );
        put("sizeof lb_affinity", size_of::<LbAffinity>());
        put(
            "offsetof lb_affinity.last_used_ns",
            offset_of!(LbAffinity, last_used_ns),
        );
        put(
            "offsetof lb_affinity.backend_id",
            offset_of!(LbAffinity, backend_id),
        );

        let consts: [(&str, u64); 44] = [
            ("PIN_VERSION", PIN_VERSION.into()),
            ("IDENTITY_WORLD", IDENTITY_WORLD.into()),
            ("FAMILY_IPV4", FAMILY_IPV4.into()),
            ("FAMILY_IPV6", FAMILY_IPV6.into()),
            ("DIR_INGRESS", DIR_INGRESS.into()),
            ("DIR_EGRESS", DIR_EGRESS.into()),
            ("IPCACHE_MAP_SIZE", IPCACHE_MAP_SIZE.into()),
            ("IPCACHE_STATIC_PREFIX", IPCACHE_STATIC_PREFIX.into()),
            ("ENDPOINTS_MAP_SIZE", ENDPOINTS_MAP_SIZE.into()),
            ("POLICY_MAP_SIZE", POLICY_MAP_SIZE.into()),
            ("POLICY_OUTER_MAP_SIZE", POLICY_OUTER_MAP_SIZE.into()),
            ("POLICY_STATIC_PREFIX", POLICY_STATIC_PREFIX.into()),
            ("POLICY_PROTO_PREFIX", POLICY_PROTO_PREFIX.into()),
            ("POLICY_FULL_PREFIX", POLICY_FULL_PREFIX.into()),
            ("POLICY_F_DENY", POLICY_F_DENY.into()),
            (
                "POLICY_F_WILDCARD_PROTOCOL",
                POLICY_F_WILDCARD_PROTOCOL.into(),
            ),
            ("POLICY_F_WILDCARD_DPORT", POLICY_F_WILDCARD_DPORT.into()),
            ("CT_MAP_SIZE", CT_MAP_SIZE.into()),
            ("CT_F_EGRESS", CT_F_EGRESS.into()),
            ("CT_F_INGRESS", CT_F_INGRESS.into()),
            ("METRICS_MAP_SIZE", METRICS_MAP_SIZE.into()),
            ("EVENTS_RING_SIZE", EVENTS_RING_SIZE.into()),
            ("EVENT_DROP", EVENT_DROP.into()),
            ("EVENT_POLICY_VERDICT", EVENT_POLICY_VERDICT.into()),
            ("PREFILTER_MAP_SIZE", PREFILTER_MAP_SIZE.into()),
            ("PREFILTER_STATS_SIZE", PREFILTER_STATS_SIZE.into()),
            ("DROP_INVALID_SIP", DROP_INVALID_SIP.into()),
            ("DROP_POLICY", DROP_POLICY.into()),
            ("DROP_INVALID", DROP_INVALID.into()),
            ("DROP_CT_INVALID_HDR", DROP_CT_INVALID_HDR.into()),
            ("DROP_FRAG_NOSUPPORT", DROP_FRAG_NOSUPPORT.into()),
            ("DROP_FRAG_NOT_FOUND", DROP_FRAG_NOT_FOUND.into()),
            ("FRAG_MAP_SIZE", FRAG_MAP_SIZE.into()),
            ("DROP_POLICY_DENY", DROP_POLICY_DENY.into()),
            ("DROP_UNKNOWN_ENDPOINT", DROP_UNKNOWN_ENDPOINT.into()),
            ("DROP_CSUM_L3", DROP_CSUM_L3.into()),
            ("DROP_CSUM_L4", DROP_CSUM_L4.into()),
            ("DROP_WRITE_ERROR", DROP_WRITE_ERROR.into()),
            ("LB_SERVICE_MAP_SIZE", LB_SERVICE_MAP_SIZE.into()),
            ("LB_BACKEND_MAP_SIZE", LB_BACKEND_MAP_SIZE.into()),
            ("LB_CONN_MAP_SIZE", LB_CONN_MAP_SIZE.into()),
            ("LB_F_AFFINITY", LB_F_AFFINITY.into()),
            ("LB_CONN_FORWARD", LB_CONN_FORWARD.into()),
            ("LB_CONN_REVERSE", LB_CONN_REVERSE.into()),
        ];
        for (name, value) in consts {
            r.insert(format!("const {name}"), value);
        }
        r
    }

    #[test]
    fn rust_mirrors_match_the_c_header() {
        let c = c_side();
        let rust = rust_side();
        assert!(
            c.len() > 80,
            "the C layout program printed only {} lines",
            c.len()
        );
        for (name, value) in &c {
            assert_eq!(
                rust.get(name),
                Some(value),
                "{name}: C says {value}, Rust {:?}",
                rust.get(name)
            );
        }
        assert_eq!(
            c.len(),
            rust.len(),
            "Rust checks facts the C side does not print"
        );
    }
}
