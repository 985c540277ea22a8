//! Security identities as Cilium defines them: labels (`source:key=value`), which of a
//! pod's labels are identity-relevant, their kvstore form, and numeric identities with
//! their reserved values, cluster scoping and allocation.

pub mod filter;
pub mod labels;
pub mod numeric;
pub mod pod;
pub mod pool;

pub use filter::LabelFilter;
pub use labels::{Label, LabelError, LabelSet};
pub use numeric::{ClusterScope, NumericIdentity, ReservedIdentity};
pub use pod::{PodIdentitySource, identity_labels};
pub use pool::{IdentityPool, PoolError};
