//! Verdict events from the datapath's ring buffer, decoded, and the names of its drop
//! reasons (Cilium's codes and wording, for the monitor).

use std::net::IpAddr;

use crate::{abi, addr, policy::Direction};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A packet was dropped; `reason` says why.
    Drop,
    /// The first packet of a connection the policy allowed.
    PolicyVerdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictEvent {
    pub kind: EventKind,
    pub direction: Direction,
    pub endpoint_id: u16,
    /// 0 for an allowed packet, else a drop reason (see [`reason_name`]).
    pub reason: u16,
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

impl VerdictEvent {
    /// Decodes one ring-buffer record; `None` for a record of the wrong size or kind.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<abi::VerdictEvent>() {
            return None;
        }
        let raw: abi::VerdictEvent = bytemuck::pod_read_unaligned(bytes);
        let kind = match raw.kind {
            abi::EVENT_DROP => EventKind::Drop,
            abi::EVENT_POLICY_VERDICT => EventKind::PolicyVerdict,
            _ => return None,
        };
        Some(VerdictEvent {
            kind,
            direction: Direction::from_abi(raw.direction)?,
            endpoint_id: raw.endpoint_id,
            reason: raw.reason,
            src_identity: raw.src_identity,
            dst_identity: raw.dst_identity,
            src: addr::from_words(raw.family, raw.saddr)?,
            dst: addr::from_words(raw.family, raw.daddr)?,
            protocol: raw.protocol,
            sport: u16::from_be(raw.sport),
            dport: u16::from_be(raw.dport),
            ifindex: raw.ifindex,
            packet_len: raw.packet_len,
            timestamp_ns: raw.timestamp_ns,
        })
    }
}

/// Cilium's name for a drop reason code (as `cilium monitor` prints it).
pub fn reason_name(reason: u16) -> &'static str {
    match u8::try_from(reason).unwrap_or(u8::MAX) {
        abi::REASON_FORWARDED => "Forwarded",
        abi::DROP_INVALID_SIP => "Invalid source ip",
        abi::DROP_POLICY => "Policy denied",
        abi::DROP_INVALID => "Invalid packet",
        abi::DROP_CT_INVALID_HDR => "CT: Invalid header",
        abi::DROP_FRAG_NOSUPPORT => "Fragmentation not supported",
        abi::DROP_FRAG_NOT_FOUND => "Fragment of an untracked datagram",
        abi::DROP_POLICY_DENY => "Policy denied by denylist",
        abi::DROP_UNKNOWN_ENDPOINT => "Unknown endpoint",
        _ => "Unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_drop_record() {
        let raw = abi::VerdictEvent {
            kind: abi::EVENT_DROP,
            direction: abi::DIR_INGRESS,
            family: abi::FAMILY_IPV4,
            protocol: 6,
            endpoint_id: 42,
            reason: abi::DROP_POLICY.into(),
            src_identity: 1001,
            dst_identity: 1000,
            saddr: addr::to_words("10.0.0.2".parse().expect("ip")),
            daddr: addr::to_words("10.0.0.3".parse().expect("ip")),
            sport: 40000u16.to_be(),
            dport: 6379u16.to_be(),
            ..Default::default()
        };
        let event = VerdictEvent::decode(bytemuck::bytes_of(&raw)).expect("decodes");
        assert_eq!(event.kind, EventKind::Drop);
        assert_eq!(event.dport, 6379);
        assert_eq!(event.src.to_string(), "10.0.0.2");
        assert_eq!(reason_name(event.reason), "Policy denied");
        assert_eq!(VerdictEvent::decode(&[0u8; 3]), None);
    }
}
