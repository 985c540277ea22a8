//! The node's endpoints: what the agent knows of each wired pod, their node-local ids, and
//! their records on disk, which let a restarted agent carry on without re-wiring pods.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use cilium_agent_api::{EndpointModel, EndpointRef, EndpointStateName};
use cilium_identity::ReservedIdentity;
use serde::{Deserialize, Serialize};

use crate::records::RecordDir;

/// One endpoint, as saved in `<state-dir>/endpoints/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EndpointRecord {
    pub id: u16,
    pub container_id: String,
    pub k8s_namespace: String,
    pub k8s_pod_name: String,
    pub interface_name: String,
    pub pod_interface_name: String,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
    /// The pod's security identity; `init` (5) until the operator's is known.
    pub identity: u32,
    pub labels: Vec<String>,
}

impl EndpointRecord {
    /// Where the endpoint is in Cilium's lifecycle, given the identity whose policy its map
    /// holds (`None` before the first).
    pub fn state(&self, policy_for: Option<u32>) -> EndpointStateName {
        if self.identity == ReservedIdentity::Init.id().0 {
            EndpointStateName::WaitingForIdentity
        } else if policy_for != Some(self.identity) {
            EndpointStateName::WaitingToRegenerate
        } else {
            EndpointStateName::Ready
        }
    }

    pub fn model(&self, state: EndpointStateName) -> EndpointModel {
        EndpointModel {
            id: self.id,
            container_id: self.container_id.clone(),
            k8s_namespace: self.k8s_namespace.clone(),
            k8s_pod_name: self.k8s_pod_name.clone(),
            interface_name: self.interface_name.clone(),
            ipv4: self.ipv4,
            identity: self.identity,
            labels: self.labels.clone(),
            state,
            ingress_enforced: false,
            egress_enforced: false,
        }
    }

    /// The IPAM owner name of the endpoint's address.
    pub fn ipam_owner(&self) -> String {
        format!("{}/{}", self.k8s_namespace, self.k8s_pod_name)
    }
}

/// Endpoints by id, with the lookups the API needs.
#[derive(Debug, Default, Clone)]
pub struct EndpointTable {
    by_id: BTreeMap<u16, EndpointRecord>,
}

impl EndpointTable {
    /// The lowest free id (Cilium numbers endpoints from 1; 0 is never an endpoint).
    pub fn next_id(&self) -> Option<u16> {
        (1..=u16::MAX).find(|id| !self.by_id.contains_key(id))
    }

    pub fn get(&self, reference: &EndpointRef) -> Option<&EndpointRecord> {
        match reference {
            EndpointRef::Id(id) => self.by_id.get(id),
            EndpointRef::ContainerId(container) => {
                self.by_id.values().find(|e| &e.container_id == container)
            }
        }
    }

    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&EndpointRecord> {
        self.by_id.values().find(|e| e.ipv4 == ip)
    }

    pub fn insert(&mut self, record: EndpointRecord) {
        self.by_id.insert(record.id, record);
    }

    pub fn remove(&mut self, id: u16) -> Option<EndpointRecord> {
        self.by_id.remove(&id)
    }

    pub fn get_mut(&mut self, id: u16) -> Option<&mut EndpointRecord> {
        self.by_id.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .filter(|p| p.len() == 2)
            .ok_or_else(|| format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    Ok(mac)
}

pub use crate::records::StateError;

/// Endpoint records on disk, `<state-dir>/endpoints/<id>.json`.
#[derive(Debug, Clone)]
pub struct StateDir {
    endpoints: RecordDir,
}

/// What [`StateDir::load`] found: the records, and files it could not read (kept aside as
/// `<name>.unreadable` for a person to look at, and reported).
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<EndpointRecord>,
    pub unreadable: Vec<(PathBuf, String)>,
}

impl StateDir {
    pub fn open(root: &Path) -> Result<Self, StateError> {
        Ok(Self {
            endpoints: RecordDir::open(root.join("endpoints"))?,
        })
    }

    pub fn save(&self, record: &EndpointRecord) -> Result<(), StateError> {
        self.endpoints.save(&record.id.to_string(), record)
    }

    pub fn remove(&self, id: u16) -> Result<(), StateError> {
        self.endpoints.remove(&id.to_string())
    }

    pub fn load(&self) -> Result<Loaded, StateError> {
        let loaded = self.endpoints.load(|stem, record: &EndpointRecord| {
            if record.id == 0 || stem != record.id.to_string() {
                Err(format!(
                    "holds endpoint id {} (file name disagrees)",
                    record.id
                ))
            } else {
                Ok(())
            }
        })?;
        let mut records: Vec<EndpointRecord> = loaded.records.into_iter().map(|(_, r)| r).collect();
        records.sort_by_key(|r| r.id);
        Ok(Loaded {
            records,
            unreadable: loaded.unreadable,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(id: u16, container: &str, ip: [u8; 4]) -> EndpointRecord {
        EndpointRecord {
            id,
            container_id: container.into(),
            k8s_namespace: "default".into(),
            k8s_pod_name: format!("pod-{container}"),
            interface_name: format!("lxc{container}"),
            pod_interface_name: "eth0".into(),
            netns: format!("/var/run/netns/{container}"),
            ipv4: Ipv4Addr::from(ip),
            mac: [2, 0, 0, 0, 0, 1],
            host_mac: [2, 0, 0, 0, 0, 2],
            identity: ReservedIdentity::Init.id().0,
            labels: vec![],
        }
    }

    #[test]
    fn ids_start_at_one_and_fill_gaps() {
        let mut table = EndpointTable::default();
        assert_eq!(table.next_id(), Some(1));
        table.insert(record(1, "a", [10, 0, 1, 2]));
        table.insert(record(2, "b", [10, 0, 1, 3]));
        table.insert(record(3, "c", [10, 0, 1, 4]));
        table.remove(2);
        assert_eq!(table.next_id(), Some(2));
        assert_eq!(
            table
                .get(&EndpointRef::ContainerId("c".into()))
                .map(|e| e.id),
            Some(3)
        );
        assert_eq!(
            table.by_ip(Ipv4Addr::new(10, 0, 1, 2)).map(|e| e.id),
            Some(1)
        );
        assert!(table.get(&EndpointRef::Id(2)).is_none());
    }

    #[test]
    fn the_state_follows_the_identity_and_its_policy() {
        let mut r = record(1, "a", [10, 0, 1, 2]);
        assert_eq!(r.state(None), EndpointStateName::WaitingForIdentity);
        r.identity = 31_000;
        assert_eq!(r.state(None), EndpointStateName::WaitingToRegenerate);
        assert_eq!(r.state(Some(31_000)), EndpointStateName::Ready);
        // Relabelled: the map still holds the old identity's policy.
        r.identity = 31_001;
        assert_eq!(
            r.state(Some(31_000)),
            EndpointStateName::WaitingToRegenerate
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f"),
            Ok([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        for bad in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:60",
            "0a:1b:2c:3d:4e:zz",
            "a:1b:2c:3d:4e:5f",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn records_survive_a_round_trip_and_bad_files_are_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("opens");
        let a = record(4, "a", [10, 0, 1, 2]);
        let b = record(9, "b", [10, 0, 1, 3]);
        state.save(&a).expect("saves");
        state.save(&b).expect("saves");
        std::fs::write(dir.path().join("endpoints/7.json"), b"{not json").expect("writes");
        std::fs::write(
            dir.path().join("endpoints/8.json"),
            serde_json::to_vec(&a).expect("json"),
        )
        .expect("writes");
        let loaded = state.load().expect("loads");
        assert_eq!(loaded.records, vec![a.clone(), b]);
        assert_eq!(loaded.unreadable.len(), 2, "{:?}", loaded.unreadable);
        assert!(dir.path().join("endpoints/7.json.unreadable").exists());
        state.remove(9).expect("removes");
        state.remove(9).expect("removing twice is fine");
        assert_eq!(state.load().expect("loads").records, vec![a]);
    }
}
