//! The agent's local API: the models exchanged over its unix socket and a client for them.
//!
//! Paths follow Cilium's agent API (`/v1/healthz`, `/v1/endpoint`, `/v1/ipam`); an
//! endpoint is addressed by its id or, as Cilium's CNI plugin does, by
//! `container-id:<id>`, which makes creation idempotent for a runtime that retries.

mod client;
pub mod delete_queue;
mod inspect;
mod models;

pub use client::{Client, ClientError, MonitorStream};
pub use inspect::*;
pub use models::*;

/// Where the agent listens unless told otherwise (Cilium's path).
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/cilium/cilium.sock";
