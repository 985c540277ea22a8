//! cilium-operator: leader election, CiliumNode PodCIDR allocation, central CiliumIdentity
//! allocation and GC, and the etcd kvstore mirror.

pub mod identities;
pub mod kvmirror;
pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod podcidr;
pub mod watch;

/// The name this operator writes under (field manager, Event reporter).
pub const FIELD_MANAGER: &str = "cilium-operator";

pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
