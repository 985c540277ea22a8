//! The policy engine, as pure code apart from the I/O that feeds it.
//!
//! - [`rules`] turns CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies into
//!   [`Rule`]s: the implied namespace added, entities and CIDRs turned into peers, ports
//!   into datapath L4 matches; a policy that cannot be turned whole is rejected whole.
//! - [`selector`] matches label selectors against identities' labels.
//! - [`cache`] is the selector cache (selector → identities it selects), updated
//!   identity by identity, and the local CIDR identities.
//! - [`compute`] gives one endpoint's policy map from the rules that select it.
//! - [`named`] resolves named ports per endpoint.
//! - [`netpol`] turns Kubernetes NetworkPolicies into rules, as Cilium does.
//! - [`render`] shows rules and selectors in Cilium's format, for the CLI.

pub mod cache;
pub mod compute;
pub mod named;
pub mod netpol;
pub mod render;
pub mod rules;
pub mod selector;

pub use cache::{CidrIdentities, SelectorCache};
pub use compute::{EndpointPolicy, EnforcementMode, Inputs, endpoint_policy};
pub use named::PortNames;
pub use netpol::parse_network_policy;
pub use rules::{LocalCluster, Peer, PeerRule, PolicyKind, PolicyRef, Rule, parse_ccnp, parse_cnp};
pub use selector::Selector;
