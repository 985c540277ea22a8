//! The ipcache map (`cilium_ipcache`: prefix → identity and tunnel endpoint) and a copy of
//! what it holds. The copy is read from the kernel once when the map is opened and kept
//! with every write, so making the map equal to a wanted set is a diff against memory:
//! dumping an LPM trie of 200,000 entries costs two syscalls per entry, and the agent
//! did it on every pass. [`Ipcache::reread`] takes the kernel's word again (the agent's
//! periodic resync), in case anything else wrote the pinned map.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::maps::{LpmTrie, MapData, MapError};
use ipnet::IpNet;

use crate::{Error, abi, addr};

const NAME: &str = "cilium_ipcache";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpcacheEntry {
    pub identity: u32,
    /// The node hosting the address when it is not this one.
    pub tunnel_endpoint: Option<Ipv4Addr>,
}

impl IpcacheEntry {
    fn value(self) -> abi::RemoteEndpointInfo {
        abi::RemoteEndpointInfo {
            sec_identity: self.identity,
            tunnel_endpoint: self
                .tunnel_endpoint
                .map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
            ..Default::default()
        }
    }

    fn from_value(value: &abi::RemoteEndpointInfo) -> Self {
        IpcacheEntry {
            identity: value.sec_identity,
            tunnel_endpoint: (value.tunnel_endpoint != 0)
                .then(|| Ipv4Addr::from(value.tunnel_endpoint.to_ne_bytes())),
        }
    }
}

/// The writes that turn `current` into `wanted`: upserts (new or changed) and deletions.
fn diff(
    current: &BTreeMap<IpNet, IpcacheEntry>,
    wanted: &BTreeMap<IpNet, IpcacheEntry>,
) -> (Vec<(IpNet, IpcacheEntry)>, Vec<IpNet>) {
    let upserts = wanted
        .iter()
        .filter(|(prefix, entry)| current.get(prefix) != Some(entry))
        .map(|(prefix, entry)| (*prefix, *entry))
        .collect();
    let deletions = current
        .keys()
        .filter(|prefix| !wanted.contains_key(prefix))
        .copied()
        .collect();
    (upserts, deletions)
}

pub(crate) struct Ipcache {
    map: LpmTrie<MapData, abi::IpcacheKey, abi::RemoteEndpointInfo>,
    /// What the map holds, as far as this process knows.
    held: BTreeMap<IpNet, IpcacheEntry>,
}

impl Ipcache {
    pub(crate) fn new(
        map: LpmTrie<MapData, abi::IpcacheKey, abi::RemoteEndpointInfo>,
    ) -> Result<Self, Error> {
        let mut ipcache = Ipcache {
            map,
            held: BTreeMap::new(),
        };
        ipcache.reread()?;
        Ok(ipcache)
    }

    /// The kernel's entries, read now.
    pub(crate) fn read(&self) -> Result<BTreeMap<IpNet, IpcacheEntry>, Error> {
        let mut out = BTreeMap::new();
        for item in self.map.iter() {
            let (key, value) = item.map_err(Error::map(NAME))?;
            if let Some(prefix) = addr::ipcache_prefix(&key) {
                out.insert(prefix, IpcacheEntry::from_value(&value));
            }
        }
        Ok(out)
    }

    /// Replaces the copy with what the kernel holds.
    pub(crate) fn reread(&mut self) -> Result<(), Error> {
        self.held = self.read()?;
        Ok(())
    }

    pub(crate) fn upsert(&mut self, prefix: IpNet, entry: IpcacheEntry) -> Result<(), Error> {
        self.map
            .insert(&addr::ipcache_key(prefix), entry.value(), 0)
            .map_err(Error::map(NAME))?;
        self.held.insert(prefix, entry);
        Ok(())
    }

    /// Removes a prefix; `false` when it was not there.
    pub(crate) fn delete(&mut self, prefix: IpNet) -> Result<bool, Error> {
        let removed = match self.map.remove(&addr::ipcache_key(prefix)) {
            Ok(()) => true,
            Err(MapError::KeyNotFound) => false,
            Err(e) => return Err(Error::map(NAME)(e)),
        };
        self.held.remove(&prefix);
        Ok(removed)
    }

    /// Makes the map equal to `wanted` by writing only the differences; returns how many
    /// writes that took. A failed write leaves the copy true to the kernel.
    pub(crate) fn sync(&mut self, wanted: &BTreeMap<IpNet, IpcacheEntry>) -> Result<usize, Error> {
        let (upserts, deletions) = diff(&self.held, wanted);
        let writes = upserts.len() + deletions.len();
        for (prefix, entry) in upserts {
            self.upsert(prefix, entry)?;
        }
        for prefix in deletions {
            self.delete(prefix)?;
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("prefix")
    }

    fn entry(identity: u32) -> IpcacheEntry {
        IpcacheEntry {
            identity,
            tunnel_endpoint: None,
        }
    }

    #[test]
    fn diff_writes_only_changes() {
        let a = entry(100);
        let b = entry(200);
        let current = BTreeMap::from([(net("10.0.0.1/32"), a), (net("10.0.0.2/32"), a)]);
        let wanted = BTreeMap::from([
            (net("10.0.0.1/32"), a),
            (net("10.0.0.2/32"), b),
            (net("10.0.0.3/32"), a),
        ]);
        let (upserts, deletions) = diff(&current, &wanted);
        assert_eq!(
            upserts,
            vec![(net("10.0.0.2/32"), b), (net("10.0.0.3/32"), a)]
        );
        assert!(deletions.is_empty());
        let (upserts, deletions) = diff(&wanted, &BTreeMap::new());
        assert!(upserts.is_empty());
        assert_eq!(deletions.len(), 3);
    }

    #[test]
    fn values_round_trip_with_and_without_a_tunnel() {
        for tunnel in [None, Some(Ipv4Addr::new(192, 168, 60, 12))] {
            let entry = IpcacheEntry {
                identity: 0x0001_2345,
                tunnel_endpoint: tunnel,
            };
            assert_eq!(IpcacheEntry::from_value(&entry.value()), entry);
        }
    }
}
