//! The node agent's eBPF datapath: loads the C programs of `ebpf-prog/` with aya, pins every
//! map and link under `<bpffs>/cilium-rs/v<PIN_VERSION>/`, and offers typed operations on
//! them — endpoints, ipcache, per-endpoint policy (applied as a diff), the XDP prefilter,
//! counters, verdict events and connection tracking — and the service maps ([`lb`]).
//!
//! Restart safety: programs stay attached through pinned links (or, before TCX, netlink
//! filters; see [`TcAttachMode`]) while no agent runs; a new
//! [`Datapath::open`] reuses the pinned maps (after checking their shape) and
//! [`Datapath::reattach_pinned`] swaps the new programs in atomically, so enforcement never
//! pauses.

pub mod abi;
pub mod addr;
mod bpffs;
mod datapath;
pub mod events;
mod ipcache;
pub mod lb;
pub mod policy;
mod tc;

use std::path::PathBuf;

pub use bpffs::DEFAULT_ROOT as DEFAULT_BPFFS_ROOT;
pub use datapath::{
    CtEntry, CtTimeouts, Datapath, DatapathConfig, Endpoint, EndpointCounter, EndpointProgram,
    PolicyEntryView, PrefilterEntry, PrefilterTotals, monotonic_ns, policy_map_name,
};
pub use events::{EventKind, VerdictEvent, reason_name};
pub use ipcache::IpcacheEntry;
pub use policy::{Direction, L4Match, PolicyKey, PolicyMap, Verdict};
pub use tc::TcAttachMode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "pinned map {path} has another shape ({found}) than this build expects ({expected}); \
         remove it (or the whole pin directory) to start over"
    )]
    IncompatiblePin {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("loading the eBPF objects: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: String,
        source: aya::maps::MapError,
    },
    #[error("link {path}: its interface is gone (the kernel detached it)")]
    DefunctLink { path: PathBuf },
    #[error("link {path}: {reason}")]
    Link { path: PathBuf, reason: String },
    #[error("interface {name}: {reason}")]
    Interface { name: String, reason: String },
    #[error("endpoint {id}: {reason}")]
    Endpoint { id: u16, reason: String },
    #[error(
        "endpoint {id}: the policy needs {wanted} map entries but the map holds {capacity} \
         (bpf-policy-map-max); the endpoint drops all traffic until its policy fits"
    )]
    PolicyMapFull {
        id: u16,
        wanted: usize,
        capacity: u32,
    },
    #[error("{0}")]
    Config(String),
}

impl Error {
    fn map(name: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> Error {
        let name = name.into();
        move |source| Error::Map { name, source }
    }
}
