//! Service load-balancing maps: what the agent wants ([`LbTable`]: frontends and their
//! backends), its encoding into `cilium_lb_services`/`cilium_lb_backends` entries, and the
//! writer ([`ServiceMaps`]) that moves the pinned maps to it with only the entries that
//! changed. The endpoint program translates a pod's packets to a frontend with them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use aya::maps::{HashMap, Map, MapData};

use crate::{Error, abi, addr};

pub(crate) const SERVICES_MAP: &str = "cilium_lb_services";
pub(crate) const BACKENDS_MAP: &str = "cilium_lb_backends";

/// A service frontend: the address, port and protocol (`IPPROTO_*`) pods connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: u8,
}

/// A backend's address and port (its protocol is its frontend's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendAddr {
    pub ip: IpAddr,
    pub port: u16,
}

/// What one frontend balances over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Ready backends; new connections spread over them.
    pub backends: BTreeSet<BackendAddr>,
    /// Terminating backends that still serve: their connections stay, new ones go elsewhere.
    pub terminating: BTreeSet<BackendAddr>,
    /// `sessionAffinity: ClientIP`: a client keeps its backend this many seconds.
    pub affinity_timeout_s: Option<u32>,
}

/// Every frontend the node balances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbTable {
    pub services: BTreeMap<Frontend, ServiceSpec>,
}

/// The map contents a table encodes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    pub services: BTreeMap<abi::LbServiceKey, abi::LbService>,
    pub backends: BTreeMap<u32, abi::LbBackend>,
}

/// Stable numbers: a backend keeps its id and a frontend its reverse-NAT index while they
/// exist, so live connections (which remember them) survive updates of other entries. A
/// freed number is not handed out again until the space wraps: a connection still holding
/// it must not find another backend (or frontend) under it.
#[derive(Clone, Debug, Default)]
pub struct Numbering {
    backends: BTreeMap<(BackendAddr, u8), u32>,
    frontends: BTreeMap<Frontend, u16>,
    last_backend: u32,
    last_frontend: u16,
}

/// The first number after `last` (wrapping, 0 excluded: it means "none") not in `used`.
fn next_free<T: Copy + Ord + Into<u64> + TryFrom<u64>>(
    used: &BTreeSet<T>,
    last: T,
    max: u64,
) -> Option<T> {
    let start: u64 = last.into();
    (1..=max)
        .map(|step| (start + step - 1) % max + 1)
        .filter_map(|n| T::try_from(n).ok())
        .find(|n| !used.contains(n))
}

impl Numbering {
    fn backend(&mut self, backend: BackendAddr, protocol: u8) -> Option<u32> {
        if let Some(id) = self.backends.get(&(backend, protocol)) {
            return Some(*id);
        }
        let used: BTreeSet<u32> = self.backends.values().copied().collect();
        let id = next_free(
            &used,
            self.last_backend,
            u64::from(abi::LB_BACKEND_MAP_SIZE),
        )?;
        self.backends.insert((backend, protocol), id);
        self.last_backend = id;
        Some(id)
    }

    fn frontend(&mut self, frontend: Frontend) -> Option<u16> {
        if let Some(index) = self.frontends.get(&frontend) {
            return Some(*index);
        }
        let used: BTreeSet<u16> = self.frontends.values().copied().collect();
        let index = next_free(&used, self.last_frontend, u64::from(u16::MAX))?;
        self.frontends.insert(frontend, index);
        self.last_frontend = index;
        Some(index)
    }

    /// Forgets the numbers `table` no longer uses.
    fn retain(&mut self, table: &LbTable) {
        self.frontends.retain(|f, _| table.services.contains_key(f));
        let live: BTreeSet<(BackendAddr, u8)> = table
            .services
            .iter()
            .flat_map(|(f, spec)| {
                spec.backends
                    .iter()
                    .chain(&spec.terminating)
                    .map(|b| (*b, f.protocol))
            })
            .collect();
        self.backends.retain(|key, _| live.contains(key));
    }
}

fn service_key(frontend: &Frontend, slot: u16) -> abi::LbServiceKey {
    abi::LbServiceKey {
        addr: addr::to_words(frontend.ip),
        dport: frontend.port.to_be(),
        slot,
        protocol: frontend.protocol,
        family: addr::family(frontend.ip),
        pad: 0,
    }
}

fn backend_entry(backend: &BackendAddr) -> abi::LbBackend {
    abi::LbBackend {
        addr: addr::to_words(backend.ip),
        port: backend.port.to_be(),
        family: addr::family(backend.ip),
        pad: 0,
    }
}

/// A frontend whose backends are of another family than itself cannot be translated.
fn same_family(frontend: &Frontend, backend: &BackendAddr) -> bool {
    frontend.ip.is_ipv4() == backend.ip.is_ipv4()
}

impl LbTable {
    /// The entries the maps must hold: per frontend, slot 0 with the count and its
    /// reverse-NAT index, slots 1..=count with backend ids; every backend by id.
    pub fn encode(&self, numbering: &mut Numbering) -> Result<Encoded, Error> {
        numbering.retain(self);
        let mut out = Encoded::default();
        let full = |what: &str| Error::Config(format!("no free {what} number"));
        for (frontend, spec) in &self.services {
            let rev_nat_index = numbering
                .frontend(*frontend)
                .ok_or_else(|| full("frontend"))?;
            let backends: Vec<&BackendAddr> = spec
                .backends
                .iter()
                .filter(|b| same_family(frontend, b))
                .collect();
            let count = u16::try_from(backends.len())
                .map_err(|_| Error::Config(format!("{frontend:?} has too many backends")))?;
            // A terminating backend keeps its entry (and id) but gets no slot.
            let draining = spec
                .terminating
                .iter()
                .filter(|b| same_family(frontend, b) && !spec.backends.contains(b));
            for backend in draining {
                let id = numbering
                    .backend(*backend, frontend.protocol)
                    .ok_or_else(|| full("backend"))?;
                out.backends.insert(id, backend_entry(backend));
            }
            for (slot, backend) in (1..=count).zip(&backends) {
                let id = numbering
                    .backend(**backend, frontend.protocol)
                    .ok_or_else(|| full("backend"))?;
                out.backends.insert(id, backend_entry(backend));
                out.services.insert(
                    service_key(frontend, slot),
                    abi::LbService {
                        backend_id: id,
                        rev_nat_index,
                        ..Default::default()
                    },
                );
            }
            out.services.insert(
                service_key(frontend, 0),
                abi::LbService {
                    count,
                    rev_nat_index,
                    affinity_timeout_s: spec.affinity_timeout_s.unwrap_or(0),
                    flags: if spec.affinity_timeout_s.is_some() {
                        abi::LB_F_AFFINITY
                    } else {
                        0
                    },
                    ..Default::default()
                },
            );
        }
        Ok(out)
    }
}

/// One write of a map update, in the order they must happen so the program never meets a
/// slot without its backend or a count beyond the slots written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbWrite {
    PutBackend(u32, abi::LbBackend),
    PutService(abi::LbServiceKey, abi::LbService),
    DeleteService(abi::LbServiceKey),
    DeleteBackend(u32),
}

/// The writes that turn `old` into `new`: new backends, then backend slots, then the service
/// entries (slot 0) that announce them; removals after, slot 0 shrinking before its slots go.
pub fn plan(old: &Encoded, new: &Encoded) -> Vec<LbWrite> {
    let mut writes = Vec::new();
    for (id, backend) in &new.backends {
        if old.backends.get(id) != Some(backend) {
            writes.push(LbWrite::PutBackend(*id, *backend));
        }
    }
    let changed = |slot_zero: bool| {
        new.services
            .iter()
            .filter(move |(k, _)| (k.slot == 0) == slot_zero)
            .filter(|(k, v)| old.services.get(k) != Some(v))
            .map(|(k, v)| LbWrite::PutService(*k, *v))
    };
    writes.extend(changed(false));
    writes.extend(changed(true));
    let gone = |slot_zero: bool| {
        old.services
            .keys()
            .filter(move |k| (k.slot == 0) == slot_zero)
            .filter(|k| !new.services.contains_key(k))
            .map(|k| LbWrite::DeleteService(*k))
    };
    writes.extend(gone(true));
    writes.extend(gone(false));
    for id in old.backends.keys() {
        if !new.backends.contains_key(id) {
            writes.push(LbWrite::DeleteBackend(*id));
        }
    }
    writes
}

/// A frontend as the maps hold it, with its backends in slot order (`cilium bpf lb list`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbEntry {
    pub frontend: Frontend,
    pub rev_nat_index: u16,
    pub affinity_timeout_s: Option<u32>,
    pub backends: Vec<(u32, BackendAddr)>,
}

/// The pinned service maps, written as deltas from what was last applied.
pub struct ServiceMaps {
    services: HashMap<MapData, abi::LbServiceKey, abi::LbService>,
    backends: HashMap<MapData, u32, abi::LbBackend>,
    applied: Encoded,
    numbering: Numbering,
}

fn open_pinned(pins: &Path, name: &str) -> Result<MapData, Error> {
    MapData::from_pin(pins.join(name)).map_err(Error::map(name))
}

fn frontend_of(key: &abi::LbServiceKey) -> Option<Frontend> {
    Some(Frontend {
        ip: addr::from_words(key.family, key.addr)?,
        port: u16::from_be(key.dport),
        protocol: key.protocol,
    })
}

fn backend_of(backend: &abi::LbBackend) -> Option<BackendAddr> {
    Some(BackendAddr {
        ip: addr::from_words(backend.family, backend.addr)?,
        port: u16::from_be(backend.port),
    })
}

impl ServiceMaps {
    /// Opens the maps the endpoint object pinned in `pins` (after [`crate::Datapath::open`]),
    /// taking over what a previous agent wrote, numbers included.
    pub fn open(pins: &Path) -> Result<Self, Error> {
        let services = HashMap::try_from(Map::HashMap(open_pinned(pins, SERVICES_MAP)?))
            .map_err(Error::map(SERVICES_MAP))?;
        let backends = HashMap::try_from(Map::HashMap(open_pinned(pins, BACKENDS_MAP)?))
            .map_err(Error::map(BACKENDS_MAP))?;
        let mut maps = Self {
            services,
            backends,
            applied: Encoded::default(),
            numbering: Numbering::default(),
        };
        maps.applied = maps.read()?;
        for (key, value) in &maps.applied.services {
            let Some(frontend) = frontend_of(key) else {
                continue;
            };
            maps.numbering
                .frontends
                .insert(frontend, value.rev_nat_index);
            maps.numbering.last_frontend = maps.numbering.last_frontend.max(value.rev_nat_index);
            maps.numbering.last_backend = maps.numbering.last_backend.max(value.backend_id);
            if key.slot > 0
                && let Some(backend) = maps
                    .applied
                    .backends
                    .get(&value.backend_id)
                    .and_then(backend_of)
            {
                maps.numbering
                    .backends
                    .insert((backend, key.protocol), value.backend_id);
            }
        }
        Ok(maps)
    }

    fn read(&self) -> Result<Encoded, Error> {
        let mut out = Encoded::default();
        for item in self.services.iter() {
            let (key, value) = item.map_err(Error::map(SERVICES_MAP))?;
            out.services.insert(key, value);
        }
        for item in self.backends.iter() {
            let (id, backend) = item.map_err(Error::map(BACKENDS_MAP))?;
            out.backends.insert(id, backend);
        }
        Ok(out)
    }

    /// Moves the maps to `table`; the number of entries written or removed.
    pub fn apply(&mut self, table: &LbTable) -> Result<usize, Error> {
        let mut numbering = self.numbering.clone();
        let new = table.encode(&mut numbering)?;
        let writes = plan(&self.applied, &new);
        for write in &writes {
            match write {
                LbWrite::PutBackend(id, backend) => self
                    .backends
                    .insert(id, backend, 0)
                    .map_err(Error::map(BACKENDS_MAP))?,
                LbWrite::PutService(key, value) => self
                    .services
                    .insert(key, value, 0)
                    .map_err(Error::map(SERVICES_MAP))?,
                LbWrite::DeleteService(key) => {
                    ignore_missing(self.services.remove(key)).map_err(Error::map(SERVICES_MAP))?
                }
                LbWrite::DeleteBackend(id) => {
                    ignore_missing(self.backends.remove(id)).map_err(Error::map(BACKENDS_MAP))?
                }
            }
        }
        self.applied = new;
        self.numbering = numbering;
        Ok(writes.len())
    }

    /// The frontends as the kernel's maps hold them, sorted.
    pub fn entries(&self) -> Result<Vec<LbEntry>, Error> {
        Ok(entries_of(&self.read()?))
    }
}

/// The frontends the maps pinned in `pins` hold (`cilium bpf lb list`), read without
/// taking them over.
pub fn list(pins: &Path) -> Result<Vec<LbEntry>, Error> {
    // Opening reads both maps already.
    Ok(entries_of(&ServiceMaps::open(pins)?.applied))
}

fn entries_of(held: &Encoded) -> Vec<LbEntry> {
    {
        let mut out = Vec::new();
        for (key, value) in held.services.iter().filter(|(k, _)| k.slot == 0) {
            let Some(frontend) = frontend_of(key) else {
                continue;
            };
            let backends = (1..=value.count)
                .filter_map(|slot| {
                    let id = held
                        .services
                        .get(&abi::LbServiceKey { slot, ..*key })?
                        .backend_id;
                    Some((id, backend_of(held.backends.get(&id)?)?))
                })
                .collect();
            out.push(LbEntry {
                frontend,
                rev_nat_index: value.rev_nat_index,
                affinity_timeout_s: (value.flags & abi::LB_F_AFFINITY != 0)
                    .then_some(value.affinity_timeout_s),
                backends,
            });
        }
        out.sort_by_key(|e| e.frontend);
        out
    }
}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = 6;

    fn frontend(last: u8, port: u16) -> Frontend {
        Frontend {
            ip: IpAddr::from([10, 96, 0, last]),
            port,
            protocol: TCP,
        }
    }

    fn backend(last: u8, port: u16) -> BackendAddr {
        BackendAddr {
            ip: IpAddr::from([10, 210, 0, last]),
            port,
        }
    }

    fn table(services: &[(Frontend, &[BackendAddr])]) -> LbTable {
        LbTable {
            services: services
                .iter()
                .map(|(f, b)| {
                    (
                        *f,
                        ServiceSpec {
                            backends: b.iter().copied().collect(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_frontend_encodes_to_a_count_slot_and_backend_slots() {
        let t = table(&[(frontend(10, 80), &[backend(1, 8080), backend(2, 8080)])]);
        let encoded = t.encode(&mut Numbering::default()).expect("encode");
        let zero = encoded.services[&service_key(&frontend(10, 80), 0)];
        assert_eq!((zero.count, zero.rev_nat_index, zero.flags), (2, 1, 0));
        let ids: Vec<u32> = (1..=2)
            .map(|slot| encoded.services[&service_key(&frontend(10, 80), slot)].backend_id)
            .collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(u16::from_be(encoded.backends[&1].port), 8080);
        assert_eq!(service_key(&frontend(10, 80), 0).dport, 80u16.to_be());
    }

    #[test]
    fn numbers_are_stable_across_updates() {
        let mut numbering = Numbering::default();
        let before = table(&[
            (frontend(10, 80), &[backend(1, 80), backend(2, 80)]),
            (frontend(11, 53), &[backend(3, 53)]),
        ]);
        let first = before.encode(&mut numbering).expect("encode");
        // Backend 1 leaves, backend 4 joins, frontend 10 goes: the others keep their numbers.
        let after = table(&[
            (frontend(11, 53), &[backend(3, 53)]),
            (frontend(12, 80), &[backend(2, 80), backend(4, 80)]),
        ]);
        let second = after.encode(&mut numbering).expect("encode");
        let id_of = |e: &Encoded, b: BackendAddr| {
            e.backends
                .iter()
                .find(|(_, v)| backend_of(v) == Some(b))
                .map(|(id, _)| *id)
        };
        assert_eq!(
            id_of(&first, backend(2, 80)),
            id_of(&second, backend(2, 80))
        );
        assert_eq!(
            id_of(&first, backend(3, 53)),
            id_of(&second, backend(3, 53))
        );
        assert_eq!(
            id_of(&second, backend(4, 80)),
            Some(4),
            "a freed id is not reused at once"
        );
        let rev = |e: &Encoded, f| e.services[&service_key(&f, 0)].rev_nat_index;
        assert_eq!(
            rev(&first, frontend(11, 53)),
            rev(&second, frontend(11, 53))
        );
    }

    #[test]
    fn numbers_wrap_past_the_last_one_given() {
        let used: BTreeSet<u16> = [1, 2, 5].into_iter().collect();
        assert_eq!(next_free(&used, 2, 5), Some(3));
        assert_eq!(
            next_free(&used, 5, 5),
            Some(3),
            "wraps, skipping 0 and used ones"
        );
        let full: BTreeSet<u16> = (1..=5).collect();
        assert_eq!(next_free(&full, 3, 5), None);
    }

    #[test]
    fn plans_write_backends_first_and_remove_counts_before_slots() {
        let mut numbering = Numbering::default();
        let old = table(&[(frontend(10, 80), &[backend(1, 80), backend(2, 80)])])
            .encode(&mut numbering)
            .expect("encode");
        let new = table(&[(frontend(10, 80), &[backend(2, 80), backend(3, 80)])])
            .encode(&mut numbering)
            .expect("encode");
        let writes = plan(&old, &new);
        let first_service = writes
            .iter()
            .position(|w| matches!(w, LbWrite::PutService(..)))
            .expect("a service write");
        assert!(
            writes[..first_service]
                .iter()
                .all(|w| matches!(w, LbWrite::PutBackend(..))),
            "{writes:#?}"
        );
        assert!(
            matches!(writes.last(), Some(LbWrite::DeleteBackend(_))),
            "{writes:#?}"
        );

        let empty = plan(&new, &Encoded::default());
        let zero = empty
            .iter()
            .position(|w| matches!(w, LbWrite::DeleteService(k) if k.slot == 0))
            .expect("slot 0 deleted");
        let slot = empty
            .iter()
            .position(|w| matches!(w, LbWrite::DeleteService(k) if k.slot > 0))
            .expect("slots deleted");
        assert!(zero < slot, "{empty:#?}");
        assert!(plan(&new, &new).is_empty(), "no change, no write");
    }

    #[test]
    fn applying_plans_in_steps_equals_encoding_from_scratch() {
        // Any sequence of tables: the maps after each plan equal the final table's encoding.
        let tables = [
            table(&[(frontend(10, 80), &[backend(1, 80)])]),
            table(&[
                (frontend(10, 80), &[backend(1, 80), backend(2, 80)]),
                (frontend(11, 81), &[backend(2, 81)]),
            ]),
            table(&[(frontend(11, 81), &[])]),
            table(&[]),
            table(&[(
                frontend(12, 80),
                &[backend(5, 80), backend(6, 80), backend(7, 80)],
            )]),
        ];
        let mut numbering = Numbering::default();
        let mut held = Encoded::default();
        for t in &tables {
            let wanted = t.encode(&mut numbering).expect("encode");
            for write in plan(&held, &wanted) {
                match write {
                    LbWrite::PutBackend(id, b) => {
                        held.backends.insert(id, b);
                    }
                    LbWrite::PutService(k, v) => {
                        held.services.insert(k, v);
                    }
                    LbWrite::DeleteService(k) => {
                        held.services.remove(&k);
                    }
                    LbWrite::DeleteBackend(id) => {
                        held.backends.remove(&id);
                    }
                }
            }
            assert_eq!(held, wanted);
        }
    }

    #[test]
    fn a_terminating_backend_keeps_its_id_but_loses_its_slot() {
        let mut numbering = Numbering::default();
        let both = table(&[(frontend(10, 80), &[backend(1, 80), backend(2, 80)])]);
        let before = both.encode(&mut numbering).expect("encode");
        let mut draining = table(&[(frontend(10, 80), &[backend(2, 80)])]);
        if let Some(spec) = draining.services.values_mut().next() {
            spec.terminating.insert(backend(1, 80));
        }
        let after = draining.encode(&mut numbering).expect("encode");
        let zero = after.services[&service_key(&frontend(10, 80), 0)];
        assert_eq!(zero.count, 1, "new connections only to the ready one");
        assert_eq!(
            before.backends, after.backends,
            "both entries stay, ids unchanged"
        );
        let gone = table(&[(frontend(10, 80), &[backend(2, 80)])])
            .encode(&mut numbering)
            .expect("encode");
        assert_eq!(gone.backends.len(), 1, "once it stops serving it goes");
    }

    #[test]
    fn affinity_and_mixed_families() {
        let mut t = table(&[(
            frontend(10, 80),
            &[
                backend(1, 80),
                BackendAddr {
                    ip: "fd00::1".parse().expect("ip"),
                    port: 80,
                },
            ],
        )]);
        if let Some(spec) = t.services.values_mut().next() {
            spec.affinity_timeout_s = Some(10_800);
        }
        let encoded = t.encode(&mut Numbering::default()).expect("encode");
        let zero = encoded.services[&service_key(&frontend(10, 80), 0)];
        assert_eq!(
            zero.count, 1,
            "the IPv6 backend of an IPv4 frontend is left out"
        );
        assert_eq!(
            (zero.flags, zero.affinity_timeout_s),
            (abi::LB_F_AFFINITY, 10_800)
        );
    }
}
