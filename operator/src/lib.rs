//! cilium-operator: leader election, cluster-pool PodCIDR allocation on CiliumNode.

pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod podcidr;
