//! A node with three pods for the datapath tests: employee, stranger and the db, each a
//! network namespace behind a veth of the node's namespace, where the test thread lives.

use std::net::Ipv4Addr;
use std::time::Duration;

use cilium_datapath::{CtTimeouts, Datapath, DatapathConfig, PolicyMap, TcAttachMode};

use crate::netns::{self, NetNs, Pod, ScratchBpffs};

pub const EMPLOYEE: u32 = 1000;
pub const STRANGER: u32 = 1001;
pub const DB: u32 = 1002;

/// The datapath configuration of the tests: pins in `pins`, a 2-second non-TCP lifetime.
pub fn datapath_config(pins: &ScratchBpffs, tc_attach: TcAttachMode) -> DatapathConfig {
    DatapathConfig {
        bpffs_root: pins.path().to_path_buf(),
        tc_attach,
        ct_timeouts: CtTimeouts {
            non_tcp: Duration::from_secs(2),
            ..CtTimeouts::default()
        },
        ..DatapathConfig::default()
    }
}

/// A node with three pods: employee, stranger and the db. The test thread lives in the node.
pub struct Bed {
    pub pins: ScratchBpffs,
    pub tc_attach: TcAttachMode,
    pub employee: Pod,
    pub stranger: Pod,
    pub db: Pod,
    pub node: NetNs,
}

impl Bed {
    /// The bed with the attachment the kernel offers (TCX where it has it).
    pub fn start() -> Self {
        Self::attaching(TcAttachMode::probe(true))
    }

    pub fn attaching(tc_attach: TcAttachMode) -> Self {
        let node = netns::node().expect("node namespace");
        let employee =
            netns::add_pod(&node, "lxc-employee", Ipv4Addr::new(10, 200, 1, 1)).expect("pod");
        let stranger =
            netns::add_pod(&node, "lxc-stranger", Ipv4Addr::new(10, 200, 1, 2)).expect("pod");
        let db = netns::add_pod(&node, "lxc-db", Ipv4Addr::new(10, 200, 1, 3)).expect("pod");
        node.enter_this_thread().expect("enter the node namespace");
        Bed {
            pins: ScratchBpffs::new("test"),
            tc_attach,
            employee,
            stranger,
            db,
            node,
        }
    }

    pub fn pods(&self) -> [(u16, &Pod, u32); 3] {
        [
            (1, &self.employee, EMPLOYEE),
            (2, &self.stranger, STRANGER),
            (3, &self.db, DB),
        ]
    }

    /// Opens the datapath and wires the three pods with no policy, their IPs in the ipcache.
    pub fn datapath(&self) -> Datapath {
        let mut dp =
            Datapath::open(&datapath_config(&self.pins, self.tc_attach)).expect("datapath loads");
        for (id, pod, identity) in self.pods() {
            pod.wire(&mut dp, id, identity, &PolicyMap::allow_all())
                .expect("wire the pod");
        }
        dp
    }
}
