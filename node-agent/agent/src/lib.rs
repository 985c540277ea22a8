//! cilium-agent: one per node. It registers the node (CiliumNode, `cilium_host`), hands
//! out pod addresses from the node's PodCIDRs, turns pods the CNI plugin wired into
//! endpoints (datapath attached, CiliumEndpoint with the pod's identity, state on disk),
//! keeps the ipcache and the routes to other nodes current, and serves the local API.

pub mod agent;
pub mod api;
pub mod balancer;
pub mod cep;
pub mod clustermesh;
pub mod cni_conf;
pub mod controllers;
pub mod endpoints;
pub mod health;
pub mod inspect;
pub mod ipam;
pub mod ipcache;
pub mod kvstore;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod publish;
pub mod records;
pub mod routes;
pub mod services;
pub mod sync;
pub mod uninstall;
