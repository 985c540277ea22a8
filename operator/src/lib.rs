//! cilium-operator: leader election, cluster-pool PodCIDR allocation on CiliumNode.

pub mod podcidr;
