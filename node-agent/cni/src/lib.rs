//! cilium-cni: the CNI plugin of cilium-rs, per the CNI specification 1.0.
//!
//! The runtime's request (environment + network configuration on stdin) is parsed and
//! checked here, apart from the work ([`plugin`]): a bad request gets the spec's error
//! JSON and touches nothing.

pub mod plugin;
pub mod request;
pub mod result;

pub use request::{Command, Request};
pub use result::CniError;
