//! Host-scope IPAM: addresses of the node's PodCIDRs, each held by one owner.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("no free address in {cidrs} ({used} of {total} in use)")]
    Exhausted {
        cidrs: String,
        used: usize,
        total: usize,
    },
    #[error("{ip} is not in this node's PodCIDRs ({cidrs})")]
    OutOfRange { ip: Ipv4Addr, cidrs: String },
    #[error("{ip} is already allocated to {owner}")]
    Taken { ip: Ipv4Addr, owner: String },
    #[error("{0} is not allocated")]
    NotAllocated(Ipv4Addr),
}

#[derive(Debug, Clone)]
pub struct HostIpam {
    cidrs: Vec<Ipv4Net>,
    allocated: BTreeMap<Ipv4Addr, String>,
}

impl HostIpam {
    pub fn new(cidrs: Vec<Ipv4Net>) -> Self {
        Self {
            cidrs: cidrs.into_iter().map(|c| c.trunc()).collect(),
            allocated: BTreeMap::new(),
        }
    }

    pub fn cidrs(&self) -> &[Ipv4Net] {
        &self.cidrs
    }

    /// The lowest free address, given to `owner`.
    pub fn allocate_next(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        let free = self
            .cidrs
            .iter()
            .flat_map(|cidr| usable(*cidr))
            .find(|ip| !self.allocated.contains_key(ip));
        match free {
            Some(ip) => {
                self.allocated.insert(ip, owner.to_owned());
                Ok(ip)
            }
            None => Err(IpamError::Exhausted {
                cidrs: self.describe(),
                used: self.used(),
                total: self.total(),
            }),
        }
    }

    /// Gives `ip` to `owner`; already holding it is fine, another owner is not.
    pub fn allocate(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), IpamError> {
        if !self.cidrs.iter().any(|c| usable(*c).any(|u| u == ip)) {
            return Err(IpamError::OutOfRange {
                ip,
                cidrs: self.describe(),
            });
        }
        match self.allocated.get(&ip) {
            Some(held) if held != owner => Err(IpamError::Taken {
                ip,
                owner: held.clone(),
            }),
            _ => {
                self.allocated.insert(ip, owner.to_owned());
                Ok(())
            }
        }
    }

    /// Frees `ip`, returning who held it.
    pub fn release(&mut self, ip: Ipv4Addr) -> Result<String, IpamError> {
        self.allocated
            .remove(&ip)
            .ok_or(IpamError::NotAllocated(ip))
    }

    pub fn owner(&self, ip: Ipv4Addr) -> Option<&str> {
        self.allocated.get(&ip).map(String::as_str)
    }

    pub fn used(&self) -> usize {
        self.allocated.len()
    }

    /// Usable addresses in all blocks (network and broadcast addresses excluded).
    pub fn total(&self) -> usize {
        self.cidrs.iter().map(|c| usable(*c).count()).sum()
    }

    pub fn allocations(&self) -> impl Iterator<Item = (Ipv4Addr, &str)> {
        self.allocated
            .iter()
            .map(|(ip, owner)| (*ip, owner.as_str()))
    }

    fn describe(&self) -> String {
        let cidrs: Vec<String> = self.cidrs.iter().map(ToString::to_string).collect();
        cidrs.join(", ")
    }
}

/// The addresses of `cidr` a pod can hold: all but the network and broadcast addresses of
/// blocks that have them (/30 and larger).
fn usable(cidr: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let has_edges = cidr.prefix_len() <= 30;
    cidr.hosts()
        .filter(move |ip| !has_edges || (*ip != cidr.network() && *ip != cidr.broadcast()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn ipam(cidr: &str) -> HostIpam {
        HostIpam::new(vec![cidr.parse().expect("cidr")])
    }

    #[test]
    fn hands_out_the_lowest_free_address_and_reuses_released_ones() {
        let mut ipam = ipam("10.0.1.0/24");
        assert_eq!(ipam.total(), 254);
        assert_eq!(ipam.allocate_next("router"), Ok(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(ipam.allocate_next("a"), Ok(Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(ipam.allocate_next("b"), Ok(Ipv4Addr::new(10, 0, 1, 3)));
        assert_eq!(ipam.release(Ipv4Addr::new(10, 0, 1, 2)), Ok("a".into()));
        assert_eq!(ipam.allocate_next("c"), Ok(Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(ipam.owner(Ipv4Addr::new(10, 0, 1, 2)), Some("c"));
        assert_eq!(
            ipam.release(Ipv4Addr::new(10, 0, 1, 9)),
            Err(IpamError::NotAllocated(Ipv4Addr::new(10, 0, 1, 9)))
        );
    }

    #[test]
    fn specific_addresses_are_checked() {
        let mut ipam = ipam("10.0.1.0/24");
        let ip = Ipv4Addr::new(10, 0, 1, 7);
        assert_eq!(ipam.allocate(ip, "a"), Ok(()));
        assert_eq!(
            ipam.allocate(ip, "a"),
            Ok(()),
            "the holder may claim it again"
        );
        assert_eq!(
            ipam.allocate(ip, "b"),
            Err(IpamError::Taken {
                ip,
                owner: "a".into()
            })
        );
        for outside in [[10, 0, 2, 7], [10, 0, 1, 0], [10, 0, 1, 255]] {
            let outside = Ipv4Addr::from(outside);
            assert!(matches!(
                ipam.allocate(outside, "a"),
                Err(IpamError::OutOfRange { .. })
            ));
        }
    }

    #[test]
    fn exhaustion_names_the_block() {
        let mut ipam = ipam("10.0.1.0/30");
        assert!(ipam.allocate_next("a").is_ok());
        assert!(ipam.allocate_next("b").is_ok());
        let err = ipam
            .allocate_next("c")
            .expect_err("a /30 has two usable addresses");
        assert_eq!(
            err.to_string(),
            "no free address in 10.0.1.0/30 (2 of 2 in use)"
        );
    }

    proptest! {
        /// Whatever the sequence of allocations and releases, no address has two owners,
        /// every address is usable, and the count matches.
        #[test]
        fn never_two_owners(ops in proptest::collection::vec((any::<bool>(), 0u8..20), 0..200)) {
            let mut ipam = ipam("10.0.1.0/28");
            let mut held = BTreeSet::new();
            for (i, (allocate, pick)) in ops.into_iter().enumerate() {
                if allocate {
                    if let Ok(ip) = ipam.allocate_next(&format!("o{i}")) {
                        prop_assert!(held.insert(ip), "{} given twice", ip);
                        prop_assert!(ip != Ipv4Addr::new(10, 0, 1, 0) && ip != Ipv4Addr::new(10, 0, 1, 15));
                    } else {
                        prop_assert_eq!(held.len(), 14);
                    }
                } else if let Some(ip) = held.iter().nth(usize::from(pick) % held.len().max(1)).copied() {
                    prop_assert!(ipam.release(ip).is_ok());
                    held.remove(&ip);
                }
                prop_assert_eq!(ipam.used(), held.len());
            }
        }
    }
}
