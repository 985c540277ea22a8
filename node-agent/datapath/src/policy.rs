//! An endpoint's policy map as data: what the policy engine asks for, how it is encoded in
//! the per-endpoint LPM trie, how the datapath decides with it, and the ordered map
//! operations that move the map from what it holds to what is wanted without ever allowing
//! a packet that neither the old nor the new policy allows.
//!
//! Lookup semantics (mirrored by [`PolicyMap::decide`] and `policy_verdict()` in
//! `ebpf-prog/bpf_lxc.c`): two longest-prefix lookups, one with the peer's identity and one
//! with identity 0 (any peer). A deny found by either wins; otherwise the entry with the more
//! specific L4 part decides (exact port > protocol > any), the identity-specific one on a tie;
//! no entry means drop. Within one identity a more specific allow would shadow a broader deny
//! in the trie, so [`PolicyMap::new`] drops allows that a deny of the same identity covers:
//! that is how "deny wins" holds for every packet.

use std::collections::BTreeMap;

use crate::abi;
use aya::maps::lpm_trie::Key;

/// Traffic direction as the endpoint sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic entering the endpoint; the peer is the source.
    Ingress,
    /// Traffic leaving the endpoint; the peer is the destination.
    Egress,
}

impl Direction {
    pub const fn as_abi(self) -> u8 {
        match self {
            Direction::Ingress => abi::DIR_INGRESS,
            Direction::Egress => abi::DIR_EGRESS,
        }
    }

    pub const fn from_abi(value: u8) -> Option<Self> {
        match value {
            abi::DIR_INGRESS => Some(Direction::Ingress),
            abi::DIR_EGRESS => Some(Direction::Egress),
            _ => None,
        }
    }
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// Cilium's name of an IP protocol (`TCP`, `UDP`, ...); the number for others.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        PROTO_TCP => "TCP".into(),
        PROTO_UDP => "UDP".into(),
        PROTO_ICMP => "ICMP".into(),
        PROTO_ICMPV6 => "ICMPv6".into(),
        PROTO_SCTP => "SCTP".into(),
        other => other.to_string(),
    }
}

/// The L4 part of a policy key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Match {
    /// Any protocol, any port.
    Any,
    /// One protocol, any port.
    Protocol(u8),
    /// One protocol and the ports whose top `prefix_len` bits equal `port`'s (16 = one port).
    /// For ICMP and ICMPv6 the "port" is the message type.
    Ports {
        protocol: u8,
        port: u16,
        prefix_len: u8,
    },
}

impl L4Match {
    /// Exactly one port (or ICMP type).
    pub const fn port(protocol: u8, port: u16) -> Self {
        L4Match::Ports {
            protocol,
            port,
            prefix_len: 16,
        }
    }

    /// The smallest set of port prefixes covering `first..=last` (an `endPort` range).
    pub fn port_range(protocol: u8, first: u16, last: u16) -> Vec<Self> {
        let mut out = Vec::new();
        let (mut start, end) = (u32::from(first), u32::from(last));
        while start <= end {
            // The largest aligned block that starts at `start` and stays within `end`.
            let mut bits = if start == 0 {
                16
            } else {
                start.trailing_zeros().min(16)
            };
            while start + (1 << bits) - 1 > end {
                bits -= 1;
            }
            out.push(L4Match::Ports {
                protocol,
                port: start as u16,
                prefix_len: 16 - bits as u8,
            });
            start += 1 << bits;
        }
        out
    }

    /// The last port (or ICMP type) a port match covers; `None` without ports.
    pub fn last_port(self) -> Option<u16> {
        match self {
            L4Match::Any | L4Match::Protocol(_) => None,
            L4Match::Ports {
                port, prefix_len, ..
            } => {
                let span = u32::from(u16::MAX) >> u32::from(prefix_len.min(16));
                Some(u16::try_from(u32::from(port) + span).unwrap_or(u16::MAX))
            }
        }
    }

    fn protocol(self) -> Option<u8> {
        match self {
            L4Match::Any => None,
            L4Match::Protocol(p) | L4Match::Ports { protocol: p, .. } => Some(p),
        }
    }

    /// Bits of the key after the static part that must match (0, 8, or 8 + port bits).
    fn prefix_bits(self) -> u32 {
        match self {
            L4Match::Any => 0,
            L4Match::Protocol(_) => 8,
            L4Match::Ports { prefix_len, .. } => 8 + u32::from(prefix_len),
        }
    }

    /// Whether every packet this matches is also matched by `self`.
    pub fn covers(self, other: L4Match) -> bool {
        match (self, other) {
            (L4Match::Any, _) => true,
            (L4Match::Protocol(p), o) => o.protocol() == Some(p),
            (L4Match::Ports { .. }, L4Match::Any | L4Match::Protocol(_)) => false,
            (
                L4Match::Ports {
                    protocol: p,
                    port,
                    prefix_len,
                },
                L4Match::Ports {
                    protocol: q,
                    port: other_port,
                    prefix_len: other_len,
                },
            ) => {
                p == q
                    && prefix_len <= other_len
                    && masked(port, prefix_len) == masked(other_port, prefix_len)
            }
        }
    }

    /// Whether a packet with this protocol and port (or ICMP type) matches.
    pub fn matches(self, protocol: u8, port: u16) -> bool {
        self.covers(L4Match::port(protocol, port))
    }
}

fn masked(port: u16, prefix_len: u8) -> u16 {
    match prefix_len {
        0 => 0,
        n => port & (u16::MAX << (16 - u32::from(n.min(16)))),
    }
}

/// One policy map key: which peer (0 = any), which direction, which L4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub identity: u32,
    pub direction: Direction,
    pub l4: L4Match,
}

impl PolicyKey {
    /// Everything in `direction`: what an endpoint without policy in that direction gets.
    pub const fn allow_all(direction: Direction) -> Self {
        PolicyKey {
            identity: 0,
            direction,
            l4: L4Match::Any,
        }
    }

    /// The key in the map's LPM encoding.
    pub fn encode(&self) -> Key<abi::PolicyKey> {
        let (protocol, dport) = match self.l4 {
            L4Match::Any => (0, 0),
            L4Match::Protocol(p) => (p, 0),
            L4Match::Ports {
                protocol,
                port,
                prefix_len,
            } => (protocol, masked(port, prefix_len)),
        };
        Key::new(
            abi::POLICY_STATIC_PREFIX + self.l4.prefix_bits(),
            abi::PolicyKey {
                sec_label: self.identity,
                egress: self.direction.as_abi(),
                protocol,
                dport: dport.to_be(),
            },
        )
    }

    /// The key a map entry stands for, or `None` for an entry this crate never writes.
    pub fn decode(key: &Key<abi::PolicyKey>) -> Option<Self> {
        let data = key.data();
        let direction = Direction::from_abi(data.egress)?;
        let port = u16::from_be(data.dport);
        let l4 = match key.prefix_len() {
            abi::POLICY_STATIC_PREFIX if data.protocol == 0 && port == 0 => L4Match::Any,
            abi::POLICY_PROTO_PREFIX if port == 0 => L4Match::Protocol(data.protocol),
            n if n > abi::POLICY_PROTO_PREFIX && n <= abi::POLICY_FULL_PREFIX => {
                let prefix_len = (n - abi::POLICY_PROTO_PREFIX) as u8;
                if masked(port, prefix_len) != port {
                    return None;
                }
                L4Match::Ports {
                    protocol: data.protocol,
                    port,
                    prefix_len,
                }
            }
            _ => return None,
        };
        Some(PolicyKey {
            identity: data.sec_label,
            direction,
            l4,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    /// The map value for a new entry (counters start at zero).
    pub fn entry(self, l4: L4Match) -> abi::PolicyEntry {
        let mut flags = match self {
            Verdict::Allow => 0,
            Verdict::Deny => abi::POLICY_F_DENY,
        };
        match l4 {
            L4Match::Any => flags |= abi::POLICY_F_WILDCARD_PROTOCOL | abi::POLICY_F_WILDCARD_DPORT,
            L4Match::Protocol(_) => flags |= abi::POLICY_F_WILDCARD_DPORT,
            L4Match::Ports { .. } => {}
        }
        abi::PolicyEntry {
            flags,
            ..Default::default()
        }
    }

    pub fn of_entry(entry: &abi::PolicyEntry) -> Self {
        if entry.flags & abi::POLICY_F_DENY != 0 {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }
}

/// The wanted content of one endpoint's policy map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyMap {
    entries: BTreeMap<PolicyKey, Verdict>,
}

impl PolicyMap {
    /// From the engine's entries: a key given both verdicts is a deny, and allows that a deny
    /// of the same identity covers are dropped (see the module docs).
    pub fn new(entries: impl IntoIterator<Item = (PolicyKey, Verdict)>) -> Self {
        let mut wanted: BTreeMap<PolicyKey, Verdict> = BTreeMap::new();
        for (key, verdict) in entries {
            let slot = wanted.entry(key).or_insert(verdict);
            if verdict == Verdict::Deny {
                *slot = Verdict::Deny;
            }
        }
        let denies: Vec<PolicyKey> = wanted
            .iter()
            .filter(|(_, v)| **v == Verdict::Deny)
            .map(|(k, _)| *k)
            .collect();
        wanted.retain(|key, verdict| {
            *verdict == Verdict::Deny
                || !denies.iter().any(|d| {
                    d.identity == key.identity
                        && d.direction == key.direction
                        && d.l4.covers(key.l4)
                })
        });
        PolicyMap { entries: wanted }
    }

    /// No policy in either direction: everything passes.
    pub fn allow_all() -> Self {
        PolicyMap::new(
            [Direction::Ingress, Direction::Egress]
                .map(|d| (PolicyKey::allow_all(d), Verdict::Allow)),
        )
    }

    pub fn entries(&self) -> &BTreeMap<PolicyKey, Verdict> {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the datapath does with a packet from/to `peer` (see the module docs): `None` when
    /// no entry matches (dropped as DROP_POLICY).
    pub fn decide(
        &self,
        peer: u32,
        direction: Direction,
        protocol: u8,
        port: u16,
    ) -> Option<Verdict> {
        let longest = |identity: u32| {
            self.entries
                .iter()
                .filter(|(k, _)| {
                    k.identity == identity
                        && k.direction == direction
                        && k.l4.matches(protocol, port)
                })
                .max_by_key(|(k, _)| k.l4.prefix_bits())
                .map(|(k, v)| (k.l4.prefix_bits(), *v))
        };
        let (specific, any) = (longest(peer), longest(0));
        match (specific, any) {
            (Some((_, Verdict::Deny)), _) | (_, Some((_, Verdict::Deny))) => Some(Verdict::Deny),
            (Some(_), _) | (_, Some(_)) => Some(Verdict::Allow),
            (None, None) => None,
        }
    }
}

/// One change to a policy map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    Upsert(PolicyKey, Verdict),
    Delete(PolicyKey),
}

/// The operations that turn `current` into `wanted`, ordered so that no intermediate state
/// allows a packet that neither allows: new and changed denies first, then removal of
/// allows, then new allows, then removal of denies. Entries already right are not touched
/// (their packet counters keep counting).
pub fn plan(current: &BTreeMap<PolicyKey, Verdict>, wanted: &PolicyMap) -> Vec<MapOp> {
    let wanted = wanted.entries();
    let changed = |verdict: Verdict| {
        wanted
            .iter()
            .filter(move |(k, v)| **v == verdict && current.get(k) != Some(v))
            .map(|(k, v)| MapOp::Upsert(*k, *v))
    };
    let removed = |verdict: Verdict| {
        current
            .iter()
            .filter(move |(k, v)| **v == verdict && !wanted.contains_key(k))
            .map(|(k, _)| MapOp::Delete(*k))
    };
    changed(Verdict::Deny)
        .chain(removed(Verdict::Allow))
        .chain(changed(Verdict::Allow))
        .chain(removed(Verdict::Deny))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: u32 = 1000;
    const B: u32 = 1001;

    fn key(identity: u32, l4: L4Match) -> PolicyKey {
        PolicyKey {
            identity,
            direction: Direction::Ingress,
            l4,
        }
    }

    fn decide(map: &PolicyMap, peer: u32, protocol: u8, port: u16) -> Option<Verdict> {
        map.decide(peer, Direction::Ingress, protocol, port)
    }

    #[test]
    fn exact_beats_wildcard_port_beats_wildcard_identity() {
        let map = PolicyMap::new([
            (key(A, L4Match::port(PROTO_TCP, 6379)), Verdict::Allow),
            (key(0, L4Match::Protocol(PROTO_UDP)), Verdict::Allow),
        ]);
        assert_eq!(decide(&map, A, PROTO_TCP, 6379), Some(Verdict::Allow));
        assert_eq!(decide(&map, B, PROTO_TCP, 6379), None, "B has no entry");
        assert_eq!(decide(&map, A, PROTO_TCP, 6380), None);
        assert_eq!(
            decide(&map, B, PROTO_UDP, 53),
            Some(Verdict::Allow),
            "any peer, UDP any port"
        );
        assert_eq!(
            map.decide(A, Direction::Egress, PROTO_TCP, 6379),
            None,
            "direction is exact"
        );
    }

    #[test]
    fn deny_wins_over_every_allow() {
        // A broader deny of the same identity removes the narrower allow it would lose to in
        // the trie; a deny for any peer beats an identity's allow through the second lookup.
        let map = PolicyMap::new([
            (key(A, L4Match::Any), Verdict::Deny),
            (key(A, L4Match::port(PROTO_TCP, 6379)), Verdict::Allow),
            (key(B, L4Match::port(PROTO_TCP, 6379)), Verdict::Allow),
            (key(0, L4Match::port(PROTO_TCP, 22)), Verdict::Deny),
            (key(B, L4Match::Protocol(PROTO_TCP)), Verdict::Allow),
        ]);
        assert!(
            !map.entries()
                .contains_key(&key(A, L4Match::port(PROTO_TCP, 6379)))
        );
        assert_eq!(decide(&map, A, PROTO_TCP, 6379), Some(Verdict::Deny));
        assert_eq!(decide(&map, B, PROTO_TCP, 6379), Some(Verdict::Allow));
        assert_eq!(decide(&map, B, PROTO_TCP, 22), Some(Verdict::Deny));
        // The same key asked for both ways is a deny.
        let both = PolicyMap::new([
            (key(A, L4Match::Any), Verdict::Allow),
            (key(A, L4Match::Any), Verdict::Deny),
        ]);
        assert_eq!(decide(&both, A, PROTO_UDP, 1), Some(Verdict::Deny));
    }

    #[test]
    fn port_ranges_become_minimal_prefixes() {
        assert_eq!(
            L4Match::port_range(PROTO_TCP, 80, 80),
            vec![L4Match::port(PROTO_TCP, 80)]
        );
        let range = L4Match::port_range(PROTO_TCP, 8000, 8080);
        // 8000-8063, 8064-8079, 8080
        assert_eq!(
            range,
            vec![
                L4Match::Ports {
                    protocol: PROTO_TCP,
                    port: 8000,
                    prefix_len: 10
                },
                L4Match::Ports {
                    protocol: PROTO_TCP,
                    port: 8064,
                    prefix_len: 12
                },
                L4Match::port(PROTO_TCP, 8080),
            ]
        );
        for port in 0..=u16::MAX {
            let inside = (8000..=8080).contains(&port);
            assert_eq!(
                range.iter().any(|m| m.matches(PROTO_TCP, port)),
                inside,
                "port {port}"
            );
        }
        assert_eq!(
            L4Match::port_range(PROTO_UDP, 0, u16::MAX),
            vec![L4Match::Ports {
                protocol: PROTO_UDP,
                port: 0,
                prefix_len: 0
            }]
        );
        let lasts: Vec<Option<u16>> = range.iter().map(|m| m.last_port()).collect();
        assert_eq!(lasts, vec![Some(8063), Some(8079), Some(8080)]);
        assert_eq!(
            L4Match::port_range(PROTO_UDP, 0, u16::MAX)[0].last_port(),
            Some(u16::MAX)
        );
        assert_eq!(L4Match::Protocol(PROTO_TCP).last_port(), None);
    }

    #[test]
    fn keys_round_trip_through_the_map_encoding() {
        let keys = [
            PolicyKey::allow_all(Direction::Egress),
            key(A, L4Match::Protocol(PROTO_ICMP)),
            key(B, L4Match::port(PROTO_TCP, 6379)),
            key(
                B,
                L4Match::Ports {
                    protocol: PROTO_TCP,
                    port: 8064,
                    prefix_len: 12,
                },
            ),
        ];
        for k in keys {
            assert_eq!(PolicyKey::decode(&k.encode()), Some(k));
        }
        let encoded = key(B, L4Match::port(PROTO_TCP, 6379)).encode();
        assert_eq!(encoded.prefix_len(), abi::POLICY_FULL_PREFIX);
        assert_eq!(
            encoded.data().dport,
            6379u16.to_be(),
            "ports are in network order"
        );
        // Bits below the prefix or an unknown direction are not ours.
        let stray = Key::new(
            abi::POLICY_PROTO_PREFIX,
            abi::PolicyKey {
                dport: 5,
                ..Default::default()
            },
        );
        assert_eq!(PolicyKey::decode(&stray), None);
        let bad_dir = Key::new(
            abi::POLICY_STATIC_PREFIX,
            abi::PolicyKey {
                egress: 7,
                ..Default::default()
            },
        );
        assert_eq!(PolicyKey::decode(&bad_dir), None);
    }

    #[test]
    fn plan_touches_only_what_changed() {
        let current: BTreeMap<_, _> = [
            (key(A, L4Match::port(PROTO_TCP, 6379)), Verdict::Allow),
            (key(B, L4Match::Any), Verdict::Deny),
        ]
        .into();
        let wanted = PolicyMap::new([
            (key(A, L4Match::port(PROTO_TCP, 6379)), Verdict::Allow),
            (key(B, L4Match::port(PROTO_TCP, 6379)), Verdict::Allow),
        ]);
        assert_eq!(
            plan(&current, &wanted),
            vec![
                MapOp::Upsert(key(B, L4Match::port(PROTO_TCP, 6379)), Verdict::Allow),
                MapOp::Delete(key(B, L4Match::Any)),
            ]
        );
        assert!(plan(wanted.entries(), &wanted).is_empty());
    }

    fn arb_key() -> impl Strategy<Value = PolicyKey> {
        let l4 = prop_oneof![
            Just(L4Match::Any),
            prop::sample::select(vec![PROTO_TCP, PROTO_UDP]).prop_map(L4Match::Protocol),
            (
                prop::sample::select(vec![PROTO_TCP, PROTO_UDP]),
                0u16..8,
                13u8..=16
            )
                .prop_map(|(protocol, port, prefix_len)| L4Match::Ports {
                    protocol,
                    port: masked(port, prefix_len),
                    prefix_len
                }),
        ];
        (prop::sample::select(vec![0, A, B]), l4).prop_map(|(identity, l4)| key(identity, l4))
    }

    fn arb_map() -> impl Strategy<Value = PolicyMap> {
        prop::collection::vec((arb_key(), prop::bool::ANY), 0..8).prop_map(|v| {
            PolicyMap::new(
                v.into_iter()
                    .map(|(k, deny)| (k, if deny { Verdict::Deny } else { Verdict::Allow })),
            )
        })
    }

    proptest! {
        /// Applying a plan step by step never allows a packet that neither the old nor the new
        /// map allows, and ends at the new map.
        #[test]
        fn plan_never_opens_more_than_old_or_new(old in arb_map(), new in arb_map()) {
            let allowed = |m: &BTreeMap<PolicyKey, Verdict>, peer, proto, port| {
                PolicyMap { entries: m.clone() }.decide(peer, Direction::Ingress, proto, port) == Some(Verdict::Allow)
            };
            let mut state = old.entries().clone();
            for op in plan(old.entries(), &new) {
                match op {
                    MapOp::Upsert(k, v) => { state.insert(k, v); }
                    MapOp::Delete(k) => { state.remove(&k); }
                }
                for peer in [A, B, 7] {
                    for proto in [PROTO_TCP, PROTO_UDP] {
                        for port in 0..8 {
                            if allowed(&state, peer, proto, port) {
                                prop_assert!(
                                    allowed(old.entries(), peer, proto, port) || allowed(new.entries(), peer, proto, port),
                                    "{op:?} opened {peer} {proto}/{port}"
                                );
                            }
                        }
                    }
                }
            }
            prop_assert_eq!(&state, new.entries());
        }
    }
}
