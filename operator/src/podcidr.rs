//! Cluster-pool PodCIDR allocation, as pure data: pools carved into equal blocks, one block
//! per family per node, occupancy rebuilt from what nodes already hold.
//!
//! Mirrors Cilium's cluster-pool: each configured pool CIDR is a set of `2^(mask - prefix)`
//! blocks; the first pool with a free block serves; a block a node already holds is kept
//! when it is valid (inside a pool, of the configured size, not taken by another node).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Cilium's limit: an IPv6 node block may be at most 16 bits longer than its pool.
pub const MAX_IPV6_MASK_DIFF: u8 = 16;

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("mask size /{mask} is shorter than pool {pool}'s prefix")]
    MaskShorterThanPool { pool: IpNet, mask: u8 },
    #[error("mask size /{mask} is too long for {family}")]
    MaskTooLong { family: Family, mask: u8 },
    #[error(
        "IPv6 mask size /{mask} is more than {MAX_IPV6_MASK_DIFF} bits longer than pool {pool}"
    )]
    Ipv6MaskTooFarFromPool { pool: IpNet, mask: u8 },
    #[error("pool {pool} is not {family}")]
    WrongFamily { pool: IpNet, family: Family },
    #[error("pools {a} and {b} overlap")]
    Overlap { a: IpNet, b: IpNet },
}

/// Why a node did not get (or keep) a block; the text goes to `status.ipam.operator-status.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("allocator full: no {0} PodCIDR left in the cluster pools")]
    Full(Family),
    #[error("requested CIDR {0} is not inside any cluster pool (or not of the pool's block size)")]
    NotInPool(String),
    #[error("requested CIDR {cidr} is already allocated to node {owner}")]
    Taken { cidr: IpNet, owner: String },
    #[error("{0:?} is not a CIDR")]
    Unparsable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

/// One pool CIDR carved into blocks of `mask` bits; block `i` starts at `base + i * size`.
#[derive(Debug, Clone)]
struct Pool {
    cidr: IpNet,
    mask: u8,
    used: BTreeSet<u128>,
    /// Where the next search starts (round-robin, as Cilium's cidrset).
    next: u128,
}

impl Pool {
    fn new(cidr: IpNet, mask: u8) -> Self {
        Self {
            cidr: cidr.trunc(),
            mask,
            used: BTreeSet::new(),
            next: 0,
        }
    }

    fn capacity(&self) -> u128 {
        1u128 << (self.mask - self.cidr.prefix_len())
    }

    fn host_bits(&self) -> u8 {
        self.cidr.max_prefix_len() - self.mask
    }

    fn base(&self) -> u128 {
        match self.cidr {
            IpNet::V4(n) => u128::from(u32::from(n.network())),
            IpNet::V6(n) => u128::from(n.network()),
        }
    }

    fn block(&self, index: u128) -> IpNet {
        let start = self.base() + (index << self.host_bits());
        match self.cidr {
            // The index is below capacity, so the address stays inside the IPv4 pool.
            IpNet::V4(_) => IpNet::V4(Ipv4Net::new_assert((start as u32).into(), self.mask)),
            IpNet::V6(_) => IpNet::V6(Ipv6Net::new_assert(start.into(), self.mask)),
        }
    }

    /// The index of `block` if it is one of this pool's blocks.
    fn index_of(&self, block: &IpNet) -> Option<u128> {
        if block.prefix_len() != self.mask || !self.cidr.contains(block) || block.trunc() != *block
        {
            return None;
        }
        let start = match block {
            IpNet::V4(n) => u128::from(u32::from(n.network())),
            IpNet::V6(n) => u128::from(n.network()),
        };
        Some((start - self.base()) >> self.host_bits())
    }

    fn allocate(&mut self) -> Option<IpNet> {
        let capacity = self.capacity();
        if self.used.len() as u128 >= capacity {
            return None;
        }
        // Find the first free index at or after `next`, wrapping once.
        let free_after = |from: u128, to: u128, used: &BTreeSet<u128>| {
            let mut candidate = from;
            for &u in used.range(from..to) {
                if u != candidate {
                    break;
                }
                candidate += 1;
            }
            (candidate < to).then_some(candidate)
        };
        let index = free_after(self.next, capacity, &self.used)
            .or_else(|| free_after(0, self.next, &self.used))?;
        self.used.insert(index);
        self.next = (index + 1) % capacity;
        Some(self.block(index))
    }
}

/// The operator's flags for cluster-pool IPAM.
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    pub ipv4: Vec<IpNet>,
    pub ipv4_mask: u8,
    pub ipv6: Vec<IpNet>,
    pub ipv6_mask: u8,
}

impl PoolConfig {
    /// Checks the flags before anything touches the cluster.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let all: Vec<(&IpNet, Family, u8)> = self
            .ipv4
            .iter()
            .map(|p| (p, Family::V4, self.ipv4_mask))
            .chain(self.ipv6.iter().map(|p| (p, Family::V6, self.ipv6_mask)))
            .collect();
        for &(pool, family, mask) in &all {
            if family_of(pool) != family {
                return Err(ConfigError::WrongFamily {
                    pool: *pool,
                    family,
                });
            }
            if mask > pool.max_prefix_len() {
                return Err(ConfigError::MaskTooLong { family, mask });
            }
            if mask < pool.prefix_len() {
                return Err(ConfigError::MaskShorterThanPool { pool: *pool, mask });
            }
            if family == Family::V6 && mask - pool.prefix_len() > MAX_IPV6_MASK_DIFF {
                return Err(ConfigError::Ipv6MaskTooFarFromPool { pool: *pool, mask });
            }
        }
        for (i, (a, _, _)) in all.iter().enumerate() {
            for (b, _, _) in &all[i + 1..] {
                if a.contains(*b) || b.contains(*a) {
                    return Err(ConfigError::Overlap { a: **a, b: **b });
                }
            }
        }
        Ok(())
    }
}

/// What a node should hold after allocation, and what went wrong on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The node's `spec.ipam.podCIDRs`, IPv4 first.
    pub pod_cidrs: Vec<String>,
    /// Every problem, joined for `status.ipam.operator-status.error`; `None` when all is well.
    pub errors: Vec<AllocError>,
}

impl Assignment {
    pub fn error_text(&self) -> Option<String> {
        (!self.errors.is_empty()).then(|| {
            self.errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// All pools, and which node holds which block.
#[derive(Debug, Clone)]
pub struct Allocator {
    pools: BTreeMap<Family, Vec<Pool>>,
    owners: BTreeMap<IpNet, String>,
    by_node: BTreeMap<String, BTreeMap<Family, IpNet>>,
}

impl Allocator {
    pub fn new(config: &PoolConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut pools = BTreeMap::new();
        pools.insert(
            Family::V4,
            config
                .ipv4
                .iter()
                .map(|p| Pool::new(*p, config.ipv4_mask))
                .collect(),
        );
        pools.insert(
            Family::V6,
            config
                .ipv6
                .iter()
                .map(|p| Pool::new(*p, config.ipv6_mask))
                .collect(),
        );
        Ok(Self {
            pools,
            owners: BTreeMap::new(),
            by_node: BTreeMap::new(),
        })
    }

    fn families(&self) -> impl Iterator<Item = Family> + '_ {
        self.pools
            .iter()
            .filter(|(_, pools)| !pools.is_empty())
            .map(|(family, _)| *family)
    }

    /// The block `node` holds for `family`, if any.
    pub fn block_of(&self, node: &str, family: Family) -> Option<IpNet> {
        self.by_node
            .get(node)
            .and_then(|blocks| blocks.get(&family))
            .copied()
    }

    /// Records the blocks `node` already holds (where valid and free) without allocating.
    /// After a restart, every node is restored before any is [`assign`](Self::assign)ed, so
    /// no new block is handed out before occupancy is known.
    pub fn restore(&mut self, node: &str, requested: &[String]) -> Vec<AllocError> {
        let mut errors = Vec::new();
        for text in requested {
            let Ok(cidr) = text.parse::<IpNet>() else {
                errors.push(AllocError::Unparsable(text.clone()));
                continue;
            };
            let family = family_of(&cidr);
            if self.block_of(node, family).is_some() {
                continue; // the node already holds (this or another) block of this family
            }
            if let Err(e) = self.occupy(node, cidr) {
                errors.push(e);
            }
        }
        errors
    }

    /// Brings `node` to one block per configured family: keeps what it `requested` (its
    /// current podCIDRs) where valid and free, allocates what is missing.
    pub fn assign(&mut self, node: &str, requested: &[String]) -> Assignment {
        let mut errors = self.restore(node, requested);
        let families: Vec<Family> = self.families().collect();
        for family in families {
            if self.block_of(node, family).is_none() {
                match self.allocate(family) {
                    Some(block) => self.record(node, block),
                    None => errors.push(AllocError::Full(family)),
                }
            }
        }
        let pod_cidrs = [Family::V4, Family::V6]
            .iter()
            .filter_map(|f| self.block_of(node, *f))
            .map(|b| b.to_string())
            .collect();
        Assignment { pod_cidrs, errors }
    }

    /// Frees every block `node` holds.
    pub fn release(&mut self, node: &str) {
        for (family, block) in self.by_node.remove(node).unwrap_or_default() {
            self.owners.remove(&block);
            for pool in self.pools.get_mut(&family).into_iter().flatten() {
                if let Some(index) = pool.index_of(&block) {
                    pool.used.remove(&index);
                }
            }
        }
    }

    /// Nodes holding blocks.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.by_node.keys().map(String::as_str)
    }

    /// (used, total) blocks per family.
    pub fn usage(&self, family: Family) -> (u128, u128) {
        self.pools
            .get(&family)
            .into_iter()
            .flatten()
            .fold((0, 0), |(u, t), p| {
                (u + p.used.len() as u128, t + p.capacity())
            })
    }

    fn occupy(&mut self, node: &str, cidr: IpNet) -> Result<(), AllocError> {
        if let Some(owner) = self.owners.get(&cidr) {
            return Err(AllocError::Taken {
                cidr,
                owner: owner.clone(),
            });
        }
        let family = family_of(&cidr);
        let pool = self
            .pools
            .get_mut(&family)
            .into_iter()
            .flatten()
            .find(|p| p.index_of(&cidr).is_some())
            .ok_or_else(|| AllocError::NotInPool(cidr.to_string()))?;
        if let Some(index) = pool.index_of(&cidr) {
            pool.used.insert(index);
        }
        self.record(node, cidr);
        Ok(())
    }

    fn allocate(&mut self, family: Family) -> Option<IpNet> {
        self.pools
            .get_mut(&family)?
            .iter_mut()
            .find_map(Pool::allocate)
    }

    fn record(&mut self, node: &str, block: IpNet) {
        self.owners.insert(block, node.to_owned());
        self.by_node
            .entry(node.to_owned())
            .or_default()
            .insert(family_of(&block), block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    fn config(v4: &[&str], v4_mask: u8, v6: &[&str], v6_mask: u8) -> PoolConfig {
        PoolConfig {
            ipv4: v4.iter().map(|s| net(s)).collect(),
            ipv4_mask: v4_mask,
            ipv6: v6.iter().map(|s| net(s)).collect(),
            ipv6_mask: v6_mask,
        }
    }

    #[test]
    fn nodes_get_consecutive_blocks_of_each_family() {
        let mut a =
            Allocator::new(&config(&["10.0.0.0/8"], 24, &["fd00::/104"], 120)).expect("config");
        let one = a.assign("n1", &[]);
        let two = a.assign("n2", &[]);
        assert_eq!(one.pod_cidrs, ["10.0.0.0/24", "fd00::/120"]);
        assert_eq!(two.pod_cidrs, ["10.0.1.0/24", "fd00::100/120"]);
        assert!(one.errors.is_empty() && two.errors.is_empty());
        assert_eq!(
            a.assign("n1", &one.pod_cidrs),
            one,
            "assigning again changes nothing"
        );
    }

    #[test]
    fn a_valid_existing_block_is_kept() {
        let mut a = Allocator::new(&config(&["10.0.0.0/16"], 24, &[], 0)).expect("config");
        assert_eq!(
            a.assign("n1", &["10.0.42.0/24".into()]).pod_cidrs,
            ["10.0.42.0/24"]
        );
        assert_eq!(a.assign("n2", &[]).pod_cidrs, ["10.0.0.0/24"]);
    }

    #[test]
    fn a_block_outside_the_pools_or_taken_is_reported_and_replaced() {
        let mut a = Allocator::new(&config(&["10.0.0.0/16"], 24, &[], 0)).expect("config");
        a.assign("n1", &["10.0.0.0/24".into()]);
        let taken = a.assign("n2", &["10.0.0.0/24".into()]);
        assert_eq!(taken.pod_cidrs, ["10.0.1.0/24"]);
        assert_eq!(
            taken.error_text().as_deref(),
            Some("requested CIDR 10.0.0.0/24 is already allocated to node n1")
        );
        let outside = a.assign("n3", &["192.168.0.0/24".into()]);
        assert_eq!(outside.pod_cidrs, ["10.0.2.0/24"]);
        assert!(matches!(outside.errors[..], [AllocError::NotInPool(_)]));
        let wrong_size = a.assign("n4", &["10.0.8.0/23".into()]);
        assert!(matches!(wrong_size.errors[..], [AllocError::NotInPool(_)]));
        assert_eq!(
            a.block_of("n1", Family::V4),
            Some(net("10.0.0.0/24")),
            "the first holder keeps it"
        );
    }

    #[test]
    fn exhaustion_is_reported_and_a_released_block_serves_the_next_node() {
        let mut a = Allocator::new(&config(&["10.0.0.0/23"], 24, &[], 0)).expect("config");
        a.assign("n1", &[]);
        a.assign("n2", &[]);
        let waiting = a.assign("n3", &[]);
        assert!(waiting.pod_cidrs.is_empty());
        assert_eq!(waiting.errors, [AllocError::Full(Family::V4)]);
        a.release("n1");
        assert_eq!(a.assign("n3", &[]).pod_cidrs, ["10.0.0.0/24"]);
    }

    #[test]
    fn multiple_pools_fill_in_order() {
        let mut a =
            Allocator::new(&config(&["10.0.0.0/24", "10.1.0.0/25"], 25, &[], 0)).expect("config");
        let blocks: Vec<_> = (0..3)
            .map(|i| a.assign(&format!("n{i}"), &[]).pod_cidrs)
            .collect();
        assert_eq!(
            blocks,
            [
                vec!["10.0.0.0/25"],
                vec!["10.0.0.128/25"],
                vec!["10.1.0.0/25"]
            ]
        );
        assert_eq!(a.assign("n3", &[]).errors, [AllocError::Full(Family::V4)]);
        assert_eq!(a.usage(Family::V4), (3, 3));
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(matches!(
            config(&["10.0.0.0/16"], 8, &[], 0).validate(),
            Err(ConfigError::MaskShorterThanPool { .. })
        ));
        assert!(matches!(
            config(&[], 0, &["fd00::/64"], 96).validate(),
            Err(ConfigError::Ipv6MaskTooFarFromPool { .. })
        ));
        assert!(config(&[], 0, &["fd00::/104"], 120).validate().is_ok());
        assert!(matches!(
            config(&["fd00::/104"], 24, &[], 0).validate(),
            Err(ConfigError::WrongFamily { .. })
        ));
        assert!(matches!(
            config(&["10.0.0.0/8", "10.1.0.0/16"], 24, &[], 0).validate(),
            Err(ConfigError::Overlap { .. })
        ));
        assert!(matches!(
            config(&["10.0.0.0/8"], 33, &[], 0).validate(),
            Err(ConfigError::MaskTooLong { .. })
        ));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Add(u8),
        Delete(u8),
        /// The operator restarts: a new allocator rebuilt from what nodes hold.
        Restart,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..24).prop_map(Step::Add),
            2 => (0u8..24).prop_map(Step::Delete),
            1 => Just(Step::Restart),
        ]
    }

    proptest! {
        /// Random adds, deletes and restarts never give two nodes overlapping blocks, keep
        /// every node's block across restarts, and serve every node while blocks remain.
        #[test]
        fn no_two_nodes_ever_overlap(steps in proptest::collection::vec(step(), 1..120)) {
            let cfg = config(&["10.0.0.0/22", "10.9.0.0/23"], 24, &["fd00::/120"], 124);
            let capacity = 6usize; // 4 + 2 IPv4 blocks; IPv6 has 16
            let mut allocator = Allocator::new(&cfg).expect("config");
            // What the apiserver holds: node → podCIDRs.
            let mut cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for step in steps {
                match step {
                    Step::Add(n) => {
                        let name = format!("node-{n}");
                        let current = cluster.get(&name).cloned().unwrap_or_default();
                        let assignment = allocator.assign(&name, &current);
                        cluster.insert(name, assignment.pod_cidrs);
                    }
                    Step::Delete(n) => {
                        let name = format!("node-{n}");
                        cluster.remove(&name);
                        allocator.release(&name);
                        // The operator retries waiting nodes when a block frees.
                        for (waiting, cidrs) in cluster.iter_mut().filter(|(_, c)| c.len() < 2) {
                            *cidrs = allocator.assign(waiting, cidrs).pod_cidrs;
                        }
                    }
                    Step::Restart => {
                        allocator = Allocator::new(&cfg).expect("config");
                        for (name, cidrs) in &cluster {
                            prop_assert!(allocator.restore(name, cidrs).is_empty());
                        }
                        for (name, cidrs) in cluster.iter_mut() {
                            let after = allocator.assign(name, cidrs).pod_cidrs;
                            prop_assert!(cidrs.iter().all(|c| after.contains(c)), "a restart keeps {}'s blocks", name);
                            *cidrs = after;
                        }
                    }
                }
                let blocks: Vec<IpNet> = cluster.values().flatten().map(|c| net(c)).collect();
                for (i, a) in blocks.iter().enumerate() {
                    for b in &blocks[i + 1..] {
                        prop_assert!(!a.contains(b) && !b.contains(a), "{} overlaps {}", a, b);
                    }
                }
                let v4_holders = cluster.values().filter(|c| c.iter().any(|c| c.contains('.'))).count();
                prop_assert_eq!(v4_holders, cluster.len().min(capacity));
            }
        }
    }
}
