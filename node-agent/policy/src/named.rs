//! Named ports (`port: http`), resolved per endpoint as Cilium does: an ingress rule's names
//! from the selected endpoint's own container ports, an egress rule's from the named ports
//! of every endpoint in the cluster (CiliumEndpoints' `status.named-ports`). A name that
//! stands for more than one number of a protocol resolves to nothing for it (Cilium v1.17
//! drops such an entry): never wider than what the name means.

use std::collections::{BTreeMap, BTreeSet};

use cilium_datapath::policy::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use cilium_datapath::{Direction, L4Match};

/// A `toPorts` entry's port given by name, with the protocols it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedL4 {
    pub name: String,
    pub protocols: Vec<u8>,
}

/// Name → the (protocol, port) pairs it stands for.
type Names = BTreeMap<String, BTreeSet<(u8, u16)>>;

/// The port names an endpoint's policy is resolved with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortNames {
    own: Names,
    cluster: Names,
}

/// The protocol number of a Kubernetes protocol name (`TCP` when absent).
pub fn protocol_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP").to_ascii_uppercase().as_str() {
        "TCP" => Some(PROTO_TCP),
        "UDP" => Some(PROTO_UDP),
        "SCTP" => Some(PROTO_SCTP),
        _ => None,
    }
}

fn names<'a>(ports: impl IntoIterator<Item = (&'a str, u8, u16)>) -> Names {
    let mut names = Names::new();
    for (name, protocol, port) in ports {
        names
            .entry(name.to_owned())
            .or_default()
            .insert((protocol, port));
    }
    names
}

impl PortNames {
    /// `own`: the endpoint's container ports; `cluster`: every endpoint's (its own too),
    /// each as (name, protocol, port).
    pub fn new<'a>(
        own: impl IntoIterator<Item = (&'a str, u8, u16)>,
        cluster: impl IntoIterator<Item = (&'a str, u8, u16)>,
    ) -> Self {
        Self {
            own: names(own),
            cluster: names(cluster),
        }
    }

    /// The L4 matches `named` stands for in a rule of `direction`.
    pub fn resolve(&self, direction: Direction, named: &NamedL4) -> Vec<L4Match> {
        let names = match direction {
            Direction::Ingress => &self.own,
            Direction::Egress => &self.cluster,
        };
        let Some(ports) = names.get(&named.name) else {
            return Vec::new();
        };
        named
            .protocols
            .iter()
            .filter_map(|protocol| {
                let mut numbers = ports.iter().filter(|(p, _)| p == protocol).map(|(_, n)| *n);
                match (numbers.next(), numbers.next()) {
                    (Some(port), None) => Some(L4Match::port(*protocol, port)),
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(protocols: &[u8]) -> NamedL4 {
        NamedL4 {
            name: "http".into(),
            protocols: protocols.to_vec(),
        }
    }

    #[test]
    fn ingress_uses_the_endpoints_own_ports_and_egress_the_clusters() {
        let names = PortNames::new(
            [("http", PROTO_TCP, 8080)],
            [("http", PROTO_TCP, 9090), ("dns", PROTO_UDP, 53)],
        );
        assert_eq!(
            names.resolve(Direction::Ingress, &http(&[PROTO_TCP])),
            vec![L4Match::port(PROTO_TCP, 8080)]
        );
        assert_eq!(
            names.resolve(Direction::Egress, &http(&[PROTO_TCP, PROTO_UDP])),
            vec![L4Match::port(PROTO_TCP, 9090)],
            "only the protocols the name has"
        );
        assert!(
            names
                .resolve(Direction::Ingress, &http(&[PROTO_UDP]))
                .is_empty()
        );
    }

    #[test]
    fn a_name_with_two_numbers_resolves_to_nothing() {
        let names = PortNames::new(
            [],
            [
                ("http", PROTO_TCP, 8080),
                ("http", PROTO_TCP, 9090),
                ("http", PROTO_UDP, 53),
            ],
        );
        assert_eq!(
            names.resolve(Direction::Egress, &http(&[PROTO_TCP, PROTO_UDP])),
            vec![L4Match::port(PROTO_UDP, 53)]
        );
        assert!(
            names
                .resolve(Direction::Ingress, &http(&[PROTO_TCP]))
                .is_empty()
        );
        assert_eq!(protocol_number(None), Some(PROTO_TCP));
        assert_eq!(protocol_number(Some("sctp")), Some(PROTO_SCTP));
        assert_eq!(protocol_number(Some("ICMP")), None);
    }
}
