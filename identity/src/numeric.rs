//! Numeric security identities: reserved values, the cluster-allocated range, and the
//! cluster id carried in bits 16..24 (`N << 16 | local`, Cilium's layout with the default
//! `max-connected-clusters=255`).

use std::fmt;

/// Bits of an identity below the cluster id.
pub const CLUSTER_ID_SHIFT: u32 = 16;
/// The first number the cluster allocates (below: reserved and well-known).
pub const MIN_ALLOCATED: u32 = 256;
/// The last local number a cluster allocates.
pub const MAX_ALLOCATED: u32 = (1 << CLUSTER_ID_SHIFT) - 1;

/// A numeric security identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NumericIdentity(pub u32);

impl NumericIdentity {
    /// The cluster that allocated it (0 for reserved identities and unmeshed clusters).
    pub fn cluster_id(self) -> u8 {
        // The cluster id occupies exactly the 8 bits above the shift.
        ((self.0 >> CLUSTER_ID_SHIFT) & 0xff) as u8
    }

    pub fn reserved(self) -> Option<ReservedIdentity> {
        ReservedIdentity::ALL.into_iter().find(|r| r.id() == self)
    }

    /// Reserved (1..=255) numbers have fixed meanings and are never allocated.
    pub fn is_reserved_range(self) -> bool {
        self.0 < MIN_ALLOCATED
    }
}

impl fmt::Display for NumericIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Cilium's reserved identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReservedIdentity {
    Host,
    World,
    Unmanaged,
    Health,
    Init,
    RemoteNode,
    KubeApiserver,
    Ingress,
}

impl ReservedIdentity {
    pub const ALL: [ReservedIdentity; 8] = [
        Self::Host,
        Self::World,
        Self::Unmanaged,
        Self::Health,
        Self::Init,
        Self::RemoteNode,
        Self::KubeApiserver,
        Self::Ingress,
    ];

    pub fn id(self) -> NumericIdentity {
        NumericIdentity(match self {
            Self::Host => 1,
            Self::World => 2,
            Self::Unmanaged => 3,
            Self::Health => 4,
            Self::Init => 5,
            Self::RemoteNode => 6,
            Self::KubeApiserver => 7,
            Self::Ingress => 8,
        })
    }

    /// The name in `reserved:<name>` and in policy entities.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::World => "world",
            Self::Unmanaged => "unmanaged",
            Self::Health => "health",
            Self::Init => "init",
            Self::RemoteNode => "remote-node",
            Self::KubeApiserver => "kube-apiserver",
            Self::Ingress => "ingress",
        }
    }
}

/// The numbers one cluster may allocate: `id << 16 | 256 ..= id << 16 | 65535`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterScope {
    cluster_id: u8,
}

impl ClusterScope {
    pub fn new(cluster_id: u8) -> Self {
        Self { cluster_id }
    }

    pub fn cluster_id(self) -> u8 {
        self.cluster_id
    }

    pub fn first(self) -> NumericIdentity {
        NumericIdentity(self.base() | MIN_ALLOCATED)
    }

    pub fn last(self) -> NumericIdentity {
        NumericIdentity(self.base() | MAX_ALLOCATED)
    }

    /// How many numbers the scope holds (65,280).
    pub fn capacity(self) -> usize {
        (MAX_ALLOCATED - MIN_ALLOCATED + 1) as usize
    }

    pub fn contains(self, id: NumericIdentity) -> bool {
        (self.first()..=self.last()).contains(&id)
    }

    fn base(self) -> u32 {
        u32::from(self.cluster_id) << CLUSTER_ID_SHIFT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_zero_allocates_256_to_65535() {
        let scope = ClusterScope::new(0);
        assert_eq!(scope.first(), NumericIdentity(256));
        assert_eq!(scope.last(), NumericIdentity(65535));
        assert_eq!(scope.capacity(), 65280);
        assert!(!scope.contains(NumericIdentity(255)));
        assert!(!scope.contains(NumericIdentity(65536)));
    }

    #[test]
    fn cluster_ids_sit_above_bit_16() {
        let scope = ClusterScope::new(3);
        assert_eq!(scope.first(), NumericIdentity(3 << 16 | 256));
        assert_eq!(scope.last(), NumericIdentity(3 << 16 | 65535));
        assert_eq!(scope.first().cluster_id(), 3);
        assert_eq!(ClusterScope::new(255).last(), NumericIdentity(0x00ff_ffff));
        assert_eq!(NumericIdentity(0x00ff_ffff).cluster_id(), 255);
        assert!(!scope.contains(NumericIdentity(256)));
    }

    #[test]
    fn reserved_identities_have_cilium_numbers() {
        let table: Vec<(u32, &str)> = ReservedIdentity::ALL
            .iter()
            .map(|r| (r.id().0, r.name()))
            .collect();
        assert_eq!(
            table,
            [
                (1, "host"),
                (2, "world"),
                (3, "unmanaged"),
                (4, "health"),
                (5, "init"),
                (6, "remote-node"),
                (7, "kube-apiserver"),
                (8, "ingress")
            ]
        );
        assert_eq!(NumericIdentity(2).reserved(), Some(ReservedIdentity::World));
        assert!(NumericIdentity(255).is_reserved_range());
        assert!(!NumericIdentity(256).is_reserved_range());
    }
}
