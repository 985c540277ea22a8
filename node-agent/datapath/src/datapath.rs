//! Loading, pinning and the typed operations on the datapath's maps and links.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        HashMap, HashOfMaps, LpmTrie, Map, MapData, MapInfo, MapType, PerCpuArray, PerCpuHashMap,
        RingBuf, lpm_trie::Key,
    },
    programs::{
        LinkOrder, Program, ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions,
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
    },
};
use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::ipcache::{Ipcache, IpcacheEntry};
use crate::tc::{self, TcAttachMode};
use crate::{
    Error, abi, addr, bpffs,
    events::VerdictEvent,
    policy::{self, Direction, MapOp, PolicyKey, PolicyMap, Verdict},
};

static LXC_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_lxc.o"));
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_xdp.o"));

const FROM_CONTAINER: &str = "cil_from_container";
const TO_CONTAINER: &str = "cil_to_container";
const XDP_PREFILTER: &str = "cil_xdp_prefilter";
/// The programs on each endpoint's veth: the suffix of their pinned link's name, the
/// program, the hook (the pod's traffic leaves it on the veth's ingress).
const ENDPOINT_PROGRAMS: [(&str, &str, TcAttachType); 2] = [
    ("_from_container", FROM_CONTAINER, TcAttachType::Ingress),
    ("_to_container", TO_CONTAINER, TcAttachType::Egress),
];
const BPF_F_NO_PREALLOC: u32 = 1;
/// Cilium's allowed range for bpf-policy-map-max.
const POLICY_MAP_MAX_RANGE: std::ops::RangeInclusive<u32> = (1 << 8)..=(1 << 16);

/// Connection-tracking lifetimes (Cilium's defaults).
#[derive(Clone, Copy, Debug)]
pub struct CtTimeouts {
    pub tcp: Duration,
    pub tcp_syn: Duration,
    pub tcp_close: Duration,
    pub non_tcp: Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        CtTimeouts {
            tcp: Duration::from_secs(21_600),
            tcp_syn: Duration::from_secs(60),
            tcp_close: Duration::from_secs(10),
            non_tcp: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// Where bpffs is (or gets) mounted; pins go to `<root>/cilium-rs/v<PIN_VERSION>/`.
    pub bpffs_root: PathBuf,
    /// Entries per endpoint policy map (Cilium's `bpf-policy-map-max`, 256..=65536).
    pub policy_map_max: u32,
    pub ct_timeouts: CtTimeouts,
    /// How new endpoints' programs are attached.
    pub tc_attach: TcAttachMode,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            bpffs_root: PathBuf::from(bpffs::DEFAULT_ROOT),
            policy_map_max: abi::POLICY_MAP_SIZE,
            ct_timeouts: CtTimeouts::default(),
            tc_attach: TcAttachMode::probe(true),
        }
    }
}

impl DatapathConfig {
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs_root
            .join("cilium-rs")
            .join(format!("v{}", abi::PIN_VERSION))
    }
}

/// A local endpoint as the datapath needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Node-local endpoint id, 1..=65535.
    pub id: u16,
    /// The host side of the endpoint's veth.
    pub ifname: String,
    pub ips: Vec<IpAddr>,
    /// The endpoint's security identity.
    pub identity: u32,
    pub mac: [u8; 6],
    pub node_mac: [u8; 6],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyEntryView {
    pub key: PolicyKey,
    pub verdict: Verdict,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointCounter {
    pub direction: Direction,
    /// 0 = forwarded, else the drop reason.
    pub reason: u8,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefilterEntry {
    pub prefix: IpNet,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefilterTotals {
    pub passed: u64,
    pub dropped: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtEntry {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// The endpoint direction that created the entry.
    pub direction: Direction,
    pub endpoint_id: u16,
    pub peer_identity: u32,
    pub packets: u64,
    pub reply_packets: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub expires_ns: u64,
}

/// The endpoint programs, for [`Datapath::test_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointProgram {
    /// Packets leaving a pod (its egress).
    FromContainer,
    /// Packets entering a pod (its ingress).
    ToContainer,
}

/// What a policy update did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyChange {
    pub upserted: usize,
    pub deleted: usize,
}

type PolicyTrie = LpmTrie<MapData, abi::PolicyKey, abi::PolicyEntry>;

/// The loaded datapath. One per agent process.
pub struct Datapath {
    pins: PathBuf,
    policy_map_max: u32,
    tc_attach: TcAttachMode,
    lxc: Ebpf,
    xdp: Ebpf,
    ipcache: Ipcache,
    endpoints: HashMap<MapData, abi::EndpointKey, abi::EndpointInfo>,
    policies: HashOfMaps<MapData, u32, PolicyTrie>,
    ct: HashMap<MapData, abi::CtKey, abi::CtEntry>,
    metrics: PerCpuHashMap<MapData, abi::MetricsKey, abi::MetricsValue>,
    events: RingBuf<MapData>,
    events_lost: PerCpuArray<MapData, u64>,
    prefilter_v4: LpmTrie<MapData, abi::PrefilterV4Key, abi::PrefilterValue>,
    prefilter_v6: LpmTrie<MapData, abi::PrefilterV6Key, abi::PrefilterValue>,
    prefilter_stats: PerCpuArray<MapData, u64>,
}

/// What a pinned map must look like: aya would reuse a pin of another shape silently.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    map_type: MapType,
    key: usize,
    value: usize,
}

const fn shape(map_type: MapType, key: usize, value: usize) -> Shape {
    Shape {
        map_type,
        key,
        value,
    }
}

/// The maps the objects pin by name.
const PINNED_MAPS: [(&str, Shape); 15] = [
    (
        "cilium_ipcache",
        shape(
            MapType::LpmTrie,
            size_of::<Key<abi::IpcacheKey>>(),
            size_of::<abi::RemoteEndpointInfo>(),
        ),
    ),
    (
        "cilium_lxc",
        shape(
            MapType::Hash,
            size_of::<abi::EndpointKey>(),
            size_of::<abi::EndpointInfo>(),
        ),
    ),
    (
        "cilium_policy_v2",
        shape(MapType::HashOfMaps, size_of::<u32>(), size_of::<u32>()),
    ),
    (
        "cilium_ct_global",
        shape(
            MapType::LruHash,
            size_of::<abi::CtKey>(),
            size_of::<abi::CtEntry>(),
        ),
    ),
    (
        "cilium_ipv4_frag_datagrams",
        shape(
            MapType::LruHash,
            size_of::<abi::FragKey>(),
            size_of::<abi::FragPorts>(),
        ),
    ),
    (
        "cilium_metrics",
        shape(
            MapType::PerCpuHash,
            size_of::<abi::MetricsKey>(),
            size_of::<abi::MetricsValue>(),
        ),
    ),
    ("cilium_events", shape(MapType::RingBuf, 0, 0)),
    (
        "cilium_events_lost",
        shape(MapType::PerCpuArray, size_of::<u32>(), size_of::<u64>()),
    ),
    (
        "cilium_cidr_v4_dyn",
        shape(
            MapType::LpmTrie,
            size_of::<Key<abi::PrefilterV4Key>>(),
            size_of::<abi::PrefilterValue>(),
        ),
    ),
    (
        "cilium_cidr_v6_dyn",
        shape(
            MapType::LpmTrie,
            size_of::<Key<abi::PrefilterV6Key>>(),
            size_of::<abi::PrefilterValue>(),
        ),
    ),
    (
        "cilium_prefilter_stats",
        shape(MapType::PerCpuArray, size_of::<u32>(), size_of::<u64>()),
    ),
    (
        crate::lb::SERVICES_MAP,
        shape(
            MapType::Hash,
            size_of::<abi::LbServiceKey>(),
            size_of::<abi::LbService>(),
        ),
    ),
    (
        crate::lb::BACKENDS_MAP,
        shape(MapType::Hash, size_of::<u32>(), size_of::<abi::LbBackend>()),
    ),
    (
        "cilium_lb_conn",
        shape(
            MapType::LruHash,
            size_of::<abi::CtKey>(),
            size_of::<abi::LbConn>(),
        ),
    ),
    (
        "cilium_lb_affinity",
        shape(
            MapType::LruHash,
            size_of::<abi::LbAffinityKey>(),
            size_of::<abi::LbAffinity>(),
        ),
    ),
];

/// Each endpoint's policy map, pinned by the agent rather than by the objects.
const POLICY_MAP: Shape = shape(
    MapType::LpmTrie,
    size_of::<Key<abi::PolicyKey>>(),
    size_of::<abi::PolicyEntry>(),
);

fn check_shape(path: &Path, expected: Shape) -> Result<(), Error> {
    let info = MapInfo::from_pin(path).map_err(Error::map(path.display().to_string()))?;
    let found = shape(
        info.map_type()
            .map_err(Error::map(path.display().to_string()))?,
        info.key_size() as usize,
        info.value_size() as usize,
    );
    if found != expected {
        let show = |s: Shape| format!("{:?} key {} value {}", s.map_type, s.key, s.value);
        return Err(Error::IncompatiblePin {
            path: path.to_path_buf(),
            found: show(found),
            expected: show(expected),
        });
    }
    Ok(())
}

fn take<T>(bpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = bpf
        .take_map(name)
        .ok_or_else(|| Error::Config(format!("the eBPF object has no map {name}")))?;
    T::try_from(map).map_err(Error::map(name))
}

fn program_error(name: &'static str) -> impl FnOnce(ProgramError) -> Error {
    move |source| Error::Program { name, source }
}

/// A program of the loaded object as its concrete type (`SchedClassifier`, `Xdp`).
fn object_program<'a, P>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, Error>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let program = bpf
        .program_mut(name)
        .ok_or_else(|| Error::Config(format!("the eBPF object has no program {name}")))?;
    program.try_into().map_err(program_error(name))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn link_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Link {
        path: path.to_path_buf(),
        reason,
    }
}

/// The pinned link at `path`, if there is one.
fn pinned_link(path: &Path) -> Result<Option<FdLink>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let link = PinnedLink::from_pin(path).map_err(|e| link_error(path)(e.to_string()))?;
    Ok(Some(FdLink::from(link)))
}

fn pin_link(fd_link: FdLink, path: &Path) -> Result<(), Error> {
    fd_link
        .pin(path)
        .map_err(|e| link_error(path)(e.to_string()))?;
    Ok(())
}

/// Attaches a TC program to `ifname`, or swaps it into the link pinned at `path`; the pin
/// is then the link's only owner.
fn attach_tc(
    bpf: &mut Ebpf,
    name: &'static str,
    ifname: &str,
    hook: TcAttachType,
    path: &Path,
) -> Result<(), Error> {
    let program: &mut SchedClassifier = object_program(bpf, name)?;
    let link_id = match pinned_link(path)? {
        Some(old) => {
            let link =
                SchedClassifierLink::try_from(old).map_err(|e| link_error(path)(e.to_string()))?;
            match program.attach_to_link(link) {
                // The link's interface is gone (its pod was deleted while no agent ran):
                // the kernel detached it; only the pin is left.
                Err(ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(nix::errno::Errno::ENOLINK as i32) =>
                {
                    return Err(Error::DefunctLink {
                        path: path.to_owned(),
                    });
                }
                other => other,
            }
        }
        None => program.attach_with_options(
            ifname,
            hook,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ),
    }
    .map_err(|e| Error::Interface {
        name: ifname.to_string(),
        reason: format!("attaching TC program: {e}"),
    })?;
    let link = program.take_link(link_id).map_err(program_error(name))?;
    let fd_link = FdLink::try_from(link).map_err(|e| link_error(path)(e.to_string()))?;
    if !path.exists() {
        pin_link(fd_link, path)?;
    }
    Ok(())
}

/// The endpoints map's value for `endpoint` on interface `ifindex`.
fn endpoint_info(endpoint: &Endpoint, ifindex: u32) -> abi::EndpointInfo {
    abi::EndpointInfo {
        ifindex,
        lxc_id: endpoint.id,
        mac: endpoint.mac,
        node_mac: endpoint.node_mac,
        sec_id: endpoint.identity,
        ..Default::default()
    }
}

fn attach_xdp(bpf: &mut Ebpf, ifname: &str, path: &Path) -> Result<(), Error> {
    let program: &mut Xdp = object_program(bpf, XDP_PREFILTER)?;
    let link_id = match pinned_link(path)? {
        Some(old) => {
            let link = XdpLink::try_from(old).map_err(|e| link_error(path)(e.to_string()))?;
            program.attach_to_link(link)
        }
        None => program.attach(ifname, XdpMode::Default),
    }
    .map_err(|e| Error::Interface {
        name: ifname.to_string(),
        reason: format!("attaching XDP program: {e}"),
    })?;
    let link = program
        .take_link(link_id)
        .map_err(program_error(XDP_PREFILTER))?;
    let fd_link = FdLink::try_from(link)
        .map_err(|e| link_error(path)(format!("XDP needs bpf_link support to be pinned: {e}")))?;
    if !path.exists() {
        pin_link(fd_link, path)?;
    }
    Ok(())
}

/// Removes a pinned link; the program detaches once its last reference is gone.
fn unpin_link(path: &Path) -> Result<bool, Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(link_error(path)(e.to_string())),
    }
}

impl Datapath {
    /// Loads the programs and opens (or creates) the pinned maps. Programs are not attached
    /// anywhere yet: call [`Datapath::reattach_pinned`] to take over links a previous agent
    /// left, and [`Datapath::attach_endpoint`] for endpoints.
    pub fn open(config: &DatapathConfig) -> Result<Self, Error> {
        if !POLICY_MAP_MAX_RANGE.contains(&config.policy_map_max) {
            return Err(Error::Config(format!(
                "policy map size {} is outside {}..={}",
                config.policy_map_max,
                POLICY_MAP_MAX_RANGE.start(),
                POLICY_MAP_MAX_RANGE.end()
            )));
        }
        let pins = config.pin_dir();
        bpffs::ensure_mounted(&config.bpffs_root, &pins)?;
        for (name, expected) in PINNED_MAPS {
            let path = pins.join(name);
            if path.exists() {
                check_shape(&path, expected)?;
            }
        }

        let t = config.ct_timeouts;
        let (tcp, syn, close, other) = (
            nanos(t.tcp),
            nanos(t.tcp_syn),
            nanos(t.tcp_close),
            nanos(t.non_tcp),
        );
        let mut lxc = EbpfLoader::new()
            .default_map_pin_directory(&pins)
            .override_global("CT_LIFETIME_TCP_NS", &tcp, true)
            .override_global("CT_SYN_TIMEOUT_NS", &syn, true)
            .override_global("CT_CLOSE_TIMEOUT_NS", &close, true)
            .override_global("CT_LIFETIME_NONTCP_NS", &other, true)
            .load(LXC_OBJECT)?;
        for name in [FROM_CONTAINER, TO_CONTAINER] {
            object_program::<SchedClassifier>(&mut lxc, name)?
                .load()
                .map_err(program_error(name))?;
        }
        let mut xdp = EbpfLoader::new()
            .default_map_pin_directory(&pins)
            .load(XDP_OBJECT)?;
        object_program::<Xdp>(&mut xdp, XDP_PREFILTER)?
            .load()
            .map_err(program_error(XDP_PREFILTER))?;

        let datapath = Datapath {
            ipcache: Ipcache::new(take(&mut lxc, "cilium_ipcache")?)?,
            endpoints: take(&mut lxc, "cilium_lxc")?,
            policies: take(&mut lxc, "cilium_policy_v2")?,
            ct: take(&mut lxc, "cilium_ct_global")?,
            metrics: take(&mut lxc, "cilium_metrics")?,
            events: take(&mut lxc, "cilium_events")?,
            events_lost: take(&mut lxc, "cilium_events_lost")?,
            prefilter_v4: take(&mut xdp, "cilium_cidr_v4_dyn")?,
            prefilter_v6: take(&mut xdp, "cilium_cidr_v6_dyn")?,
            prefilter_stats: take(&mut xdp, "cilium_prefilter_stats")?,
            pins,
            policy_map_max: config.policy_map_max,
            tc_attach: config.tc_attach,
            lxc,
            xdp,
        };
        info!(pins = %datapath.pins.display(), attach = datapath.tc_attach.name(), "datapath loaded");
        Ok(datapath)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pins
    }

    /// Removes every pin (links, maps) of this datapath, for an uninstall: the programs
    /// detach and the maps are freed once this process closes its descriptors.
    pub fn remove_pins(&self) -> Result<(), Error> {
        // Netlink filters are not pinned: they are taken off each endpoint's veth.
        for ifname in self.endpoint_ifnames(|_| true)? {
            for (_, program, hook) in ENDPOINT_PROGRAMS {
                tc::detach_netlink(&ifname, hook, program)?;
            }
        }
        let remove = |dir: &Path| match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(link_error(dir)(e.to_string()))
            }
            _ => Ok(()),
        };
        remove(&self.pins)?;
        // `<root>/cilium-rs`, if no other pin version is left in it.
        if let Some(parent) = self.pins.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }

    fn link_path(&self, name: &str) -> PathBuf {
        self.pins.join("links").join(name)
    }

    /// Each endpoint's two links: pin name, program, hook.
    fn endpoint_links(id: u16) -> [(String, &'static str, TcAttachType); 2] {
        ENDPOINT_PROGRAMS
            .map(|(suffix, program, hook)| (format!("lxc{id:05}{suffix}"), program, hook))
    }

    fn policy_pin(&self, id: u16) -> PathBuf {
        self.pins.join(policy_map_name(id))
    }

    /// How new endpoints' programs are attached.
    pub fn tc_attach(&self) -> TcAttachMode {
        self.tc_attach
    }

    /// Swaps this process's programs into every link a previous agent pinned, atomically
    /// (`bpf_link_update`): the old programs enforce until the new ones take over. Returns how
    /// many links were taken over.
    pub fn reattach_pinned(&mut self) -> Result<usize, Error> {
        let dir = self.pins.join("links");
        let entries = std::fs::read_dir(&dir).map_err(|e| link_error(&dir)(e.to_string()))?;
        let mut taken = 0;
        for entry in entries {
            let entry = entry.map_err(|e| link_error(&dir)(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let endpoint_link = ENDPOINT_PROGRAMS
                .iter()
                .find(|(suffix, _, _)| name.ends_with(suffix))
                .map(|&(_, program, hook)| (program, hook));
            if let Some((program, hook)) = endpoint_link {
                match attach_tc(&mut self.lxc, program, "", hook, &path) {
                    Ok(()) => {}
                    Err(Error::DefunctLink { path }) => {
                        warn!(path = %path.display(), "the link's interface is gone; its pin is removed");
                        unpin_link(&path)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else if name.starts_with("xdp_") {
                attach_xdp(&mut self.xdp, "", &path)?;
            } else {
                warn!(path = %path.display(), "unknown pinned link left alone");
                continue;
            }
            taken += 1;
        }
        info!(taken, "took over pinned links");
        Ok(taken)
    }

    /// Wires an endpoint: its policy map (set to `policy`), its addresses in the endpoints
    /// map, then the programs on both directions of its veth. Calling it again for the same
    /// endpoint updates it in place (addresses, identity, policy as a diff, programs swapped).
    pub fn attach_endpoint(
        &mut self,
        endpoint: &Endpoint,
        policy: &PolicyMap,
    ) -> Result<PolicyChange, Error> {
        let id = endpoint.id;
        if id == 0 {
            return Err(Error::Endpoint {
                id,
                reason: "endpoint id 0 is reserved".into(),
            });
        }
        if endpoint.ips.is_empty() {
            return Err(Error::Endpoint {
                id,
                reason: "an endpoint needs at least one IP".into(),
            });
        }
        let ifindex = nix::net::if_::if_nametoindex(endpoint.ifname.as_str()).map_err(|e| {
            Error::Interface {
                name: endpoint.ifname.clone(),
                reason: e.to_string(),
            }
        })?;

        let trie = self.create_policy_trie(id)?;
        let change = self.write_policy(id, trie, policy)?;

        let wanted: BTreeSet<abi::EndpointKey> = endpoint
            .ips
            .iter()
            .map(|ip| addr::endpoint_key(*ip))
            .collect();
        for stale in self
            .endpoint_keys(id)?
            .into_iter()
            .filter(|k| !wanted.contains(k))
        {
            self.endpoints
                .remove(&stale)
                .map_err(Error::map("cilium_lxc"))?;
        }
        let info = endpoint_info(endpoint, ifindex);
        for key in &wanted {
            self.endpoints
                .insert(key, info, 0)
                .map_err(Error::map("cilium_lxc"))?;
        }

        for (link, program, hook) in Self::endpoint_links(id) {
            let path = self.link_path(&link);
            // A pinned TCX link stays one whatever the mode: it is swapped in place.
            if self.tc_attach == TcAttachMode::Tcx || path.exists() {
                attach_tc(&mut self.lxc, program, &endpoint.ifname, hook, &path)?;
            } else {
                tc::attach_netlink(&mut self.lxc, program, &endpoint.ifname, hook)?;
            }
        }
        debug!(id, ifname = %endpoint.ifname, ifindex, "endpoint attached");
        Ok(change)
    }

    /// Whether a previous agent left `endpoint` wholly wired: its policy map pinned and
    /// installed, each of its addresses in the endpoints map as [`Self::attach_endpoint`]
    /// writes it, both its links pinned (which [`Self::reattach_pinned`] swapped to this
    /// process's programs). Restoring such an endpoint costs a few lookups instead of a
    /// rewiring, and its pinned policy keeps enforcing until the first computation replaces
    /// it. `false` when anything is missing or differs: the caller wires it again.
    pub fn adopt_endpoint(&self, endpoint: &Endpoint) -> bool {
        let id = endpoint.id;
        let wired = self.policy_pin(id).exists()
            && self.policies.get(&u32::from(id), 0).is_ok()
            && Self::endpoint_links(id)
                .iter()
                .all(|(link, _, _)| self.link_path(link).exists());
        let Ok(ifindex) = nix::net::if_::if_nametoindex(endpoint.ifname.as_str()) else {
            return false;
        };
        let info = endpoint_info(endpoint, ifindex);
        wired
            && !endpoint.ips.is_empty()
            && endpoint.ips.iter().all(|ip| {
                self.endpoints
                    .get(&addr::endpoint_key(*ip), 0)
                    .is_ok_and(|held| held == info)
            })
    }

    /// Unwires an endpoint: programs detached, addresses and policy map removed. Safe to call
    /// for an endpoint that is partly or not at all wired.
    pub fn detach_endpoint(&mut self, id: u16) -> Result<(), Error> {
        let ifnames = self.endpoint_ifnames(|lxc_id| lxc_id == id)?;
        for (link, program, hook) in Self::endpoint_links(id) {
            unpin_link(&self.link_path(&link))?;
            for ifname in &ifnames {
                tc::detach_netlink(ifname, hook, program)?;
            }
        }
        let keys = self.endpoint_keys(id)?;
        // The endpoint's connections go with it: a pod that gets the address next must not
        // inherit them (their replies would pass without a policy lookup).
        let scrubbed = self.ct_remove_where(|key, entry| {
            entry.endpoint_id == id
                || keys
                    .iter()
                    .any(|k| k.family == key.family && (k.addr == key.saddr || k.addr == key.daddr))
        })?;
        for key in keys {
            self.endpoints
                .remove(&key)
                .map_err(Error::map("cilium_lxc"))?;
        }
        match self.policies.remove(&u32::from(id)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(Error::map("cilium_policy_v2")(e)),
        }
        let pin = self.policy_pin(id);
        if pin.exists() {
            std::fs::remove_file(&pin).map_err(|e| Error::Endpoint {
                id,
                reason: format!("{}: {e}", pin.display()),
            })?;
        }
        debug!(id, scrubbed, "endpoint detached");
        Ok(())
    }

    /// The interfaces of the endpoints `wanted` selects (by id), as they still exist.
    fn endpoint_ifnames(&self, wanted: impl Fn(u16) -> bool) -> Result<BTreeSet<String>, Error> {
        let mut names = BTreeSet::new();
        for item in self.endpoints.iter() {
            let (_, info) = item.map_err(Error::map("cilium_lxc"))?;
            if wanted(info.lxc_id)
                && let Ok(name) = nix::net::if_::if_indextoname(info.ifindex)
            {
                names.insert(name.to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn endpoint_keys(&self, id: u16) -> Result<Vec<abi::EndpointKey>, Error> {
        let mut keys = Vec::new();
        for item in self.endpoints.iter() {
            let (key, info) = item.map_err(Error::map("cilium_lxc"))?;
            if info.lxc_id == id {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// The endpoint's pinned policy map.
    fn policy_trie(&self, id: u16) -> Result<PolicyTrie, Error> {
        let pin = self.policy_pin(id);
        let name = policy_map_name(id);
        if !pin.exists() {
            return Err(Error::Endpoint {
                id,
                reason: "no such endpoint in the datapath".into(),
            });
        }
        check_shape(&pin, POLICY_MAP)?;
        let data = MapData::from_pin(&pin).map_err(Error::map(name.clone()))?;
        let map = Map::from_map_data(data).map_err(Error::map(name.clone()))?;
        PolicyTrie::try_from(map).map_err(Error::map(name))
    }

    /// The endpoint's policy map, created and pinned if missing, and (re-)registered in the
    /// outer map the programs look it up in.
    fn create_policy_trie(&mut self, id: u16) -> Result<PolicyTrie, Error> {
        let pin = self.policy_pin(id);
        if !pin.exists() {
            let name = policy_map_name(id);
            PolicyTrie::create(self.policy_map_max, BPF_F_NO_PREALLOC)
                .map_err(Error::map(name.clone()))?
                .pin(&pin)
                .map_err(|e| Error::Endpoint {
                    id,
                    reason: format!("pinning {name}: {e}"),
                })?;
        }
        let trie = self.policy_trie(id)?;
        self.policies
            .insert(u32::from(id), &trie, 0)
            .map_err(Error::map("cilium_policy_v2"))?;
        Ok(trie)
    }

    /// Sets an endpoint's policy: the difference to what its map holds is applied in an order
    /// that never opens more than the old or the new policy allows. A policy that does not
    /// fit, or a write that fails, leaves the map empty (everything dropped) and an error.
    pub fn set_policy(&mut self, id: u16, policy: &PolicyMap) -> Result<PolicyChange, Error> {
        let trie = self.policy_trie(id)?;
        self.write_policy(id, trie, policy)
    }

    fn write_policy(
        &self,
        id: u16,
        mut trie: PolicyTrie,
        policy: &PolicyMap,
    ) -> Result<PolicyChange, Error> {
        let name = policy_map_name(id);
        let (entries, foreign) = read_policy(&trie, &name)?;
        let current: BTreeMap<PolicyKey, Verdict> =
            entries.into_iter().map(|e| (e.key, e.verdict)).collect();
        if policy.len() > self.policy_map_max as usize {
            lock_down(&mut trie, &name);
            return Err(Error::PolicyMapFull {
                id,
                wanted: policy.len(),
                capacity: self.policy_map_max,
            });
        }
        let ops = policy::plan(&current, policy);
        let mut change = PolicyChange {
            deleted: foreign.len(),
            ..Default::default()
        };
        let mut apply = || -> Result<(), aya::maps::MapError> {
            for key in &foreign {
                trie.remove(key)?;
            }
            for op in &ops {
                match op {
                    MapOp::Upsert(key, verdict) => {
                        trie.insert(&key.encode(), verdict.entry(key.l4), 0)?;
                        change.upserted += 1;
                    }
                    MapOp::Delete(key) => {
                        trie.remove(&key.encode())?;
                        change.deleted += 1;
                    }
                }
            }
            Ok(())
        };
        if let Err(source) = apply() {
            lock_down(&mut trie, &name);
            return Err(Error::Map { name, source });
        }
        debug!(
            id,
            upserted = change.upserted,
            deleted = change.deleted,
            "policy map updated"
        );
        Ok(change)
    }

    /// Entries each endpoint policy map holds at most (`bpf-policy-map-max`).
    pub fn policy_map_max(&self) -> u32 {
        self.policy_map_max
    }

    /// The entries of an endpoint's policy map with their packet counters.
    pub fn policy(&self, id: u16) -> Result<Vec<PolicyEntryView>, Error> {
        let trie = self.policy_trie(id)?;
        Ok(read_policy(&trie, &policy_map_name(id))?.0)
    }

    pub fn upsert_ipcache(&mut self, prefix: IpNet, entry: IpcacheEntry) -> Result<(), Error> {
        self.ipcache.upsert(prefix, entry)
    }

    /// Removes a prefix; `false` when it was not there.
    pub fn delete_ipcache(&mut self, prefix: IpNet) -> Result<bool, Error> {
        self.ipcache.delete(prefix)
    }

    /// The kernel's ipcache entries, read now, by prefix.
    pub fn ipcache(&self) -> Result<Vec<(IpNet, IpcacheEntry)>, Error> {
        Ok(self.ipcache.read()?.into_iter().collect())
    }

    /// Makes the ipcache equal to `wanted`, writing only what differs from what this
    /// process last wrote (`reread`: from what the kernel holds now); returns the writes.
    pub fn sync_ipcache(
        &mut self,
        wanted: &BTreeMap<IpNet, IpcacheEntry>,
        reread: bool,
    ) -> Result<usize, Error> {
        if reread {
            self.ipcache.reread()?;
        }
        self.ipcache.sync(wanted)
    }

    /// Every local endpoint address with its endpoint id, identity and veth ifindex.
    pub fn endpoints(&self) -> Result<Vec<(IpAddr, abi::EndpointInfo)>, Error> {
        let mut out = Vec::new();
        for item in self.endpoints.iter() {
            let (key, info) = item.map_err(Error::map("cilium_lxc"))?;
            if let Some(ip) = addr::from_words(key.family, key.addr) {
                out.push((ip, info));
            }
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// Attaches the XDP prefilter to a node device (or takes over its pinned link).
    pub fn attach_prefilter(&mut self, ifname: &str) -> Result<(), Error> {
        let path = self.link_path(&format!("xdp_{ifname}"));
        attach_xdp(&mut self.xdp, ifname, &path)
    }

    pub fn detach_prefilter(&mut self, ifname: &str) -> Result<bool, Error> {
        unpin_link(&self.link_path(&format!("xdp_{ifname}")))
    }

    /// Makes the denied source prefixes exactly `denied` (counters of kept prefixes stay).
    pub fn set_prefilter(&mut self, denied: &BTreeSet<IpNet>) -> Result<(), Error> {
        let denied: BTreeSet<IpNet> = denied.iter().map(IpNet::trunc).collect();
        let current: BTreeSet<IpNet> = self.prefilter()?.into_iter().map(|e| e.prefix).collect();
        for prefix in denied.difference(&current) {
            self.prefilter_write(*prefix, true)?;
        }
        for prefix in current.difference(&denied) {
            self.prefilter_write(*prefix, false)?;
        }
        Ok(())
    }

    fn prefilter_write(&mut self, prefix: IpNet, insert: bool) -> Result<(), Error> {
        let len = u32::from(prefix.prefix_len());
        let words = addr::to_words(prefix.addr());
        let value = abi::PrefilterValue::default();
        let result = match (prefix, insert) {
            (IpNet::V4(_), true) => self.prefilter_v4.insert(&Key::new(len, words[0]), value, 0),
            (IpNet::V4(_), false) => self.prefilter_v4.remove(&Key::new(len, words[0])),
            (IpNet::V6(_), true) => self.prefilter_v6.insert(&Key::new(len, words), value, 0),
            (IpNet::V6(_), false) => self.prefilter_v6.remove(&Key::new(len, words)),
        };
        result.map_err(Error::map("cilium_cidr_dyn"))
    }

    pub fn prefilter(&self) -> Result<Vec<PrefilterEntry>, Error> {
        let mut out = Vec::new();
        for item in self.prefilter_v4.iter() {
            let (key, value) = item.map_err(Error::map("cilium_cidr_v4_dyn"))?;
            let ip = IpAddr::V4(Ipv4Addr::from(key.data().to_ne_bytes()));
            out.extend(prefilter_entry(ip, key.prefix_len(), value));
        }
        for item in self.prefilter_v6.iter() {
            let (key, value) = item.map_err(Error::map("cilium_cidr_v6_dyn"))?;
            let ip = addr::from_words(abi::FAMILY_IPV6, key.data());
            out.extend(ip.and_then(|ip| prefilter_entry(ip, key.prefix_len(), value)));
        }
        out.sort_by_key(|e| e.prefix);
        Ok(out)
    }

    pub fn prefilter_totals(&self) -> Result<PrefilterTotals, Error> {
        let sum = |index: u32| -> Result<u64, Error> {
            let values = self
                .prefilter_stats
                .get(&index, 0)
                .map_err(Error::map("cilium_prefilter_stats"))?;
            Ok(values.iter().sum())
        };
        Ok(PrefilterTotals {
            passed: sum(abi::PREFILTER_STATS_PASSED)?,
            dropped: sum(abi::PREFILTER_STATS_DROPPED)?,
        })
    }

    /// Packets and bytes of one endpoint by direction and reason (forwarded or why dropped).
    pub fn counters(&self, id: u16) -> Result<Vec<EndpointCounter>, Error> {
        Ok(self
            .all_counters()?
            .into_iter()
            .filter(|(endpoint, _)| *endpoint == id)
            .map(|(_, counter)| counter)
            .collect())
    }

    /// Every endpoint's counters, by endpoint id.
    pub fn all_counters(&self) -> Result<Vec<(u16, EndpointCounter)>, Error> {
        let mut out = Vec::new();
        for item in self.metrics.iter() {
            let (key, values) = item.map_err(Error::map("cilium_metrics"))?;
            let Some(direction) = Direction::from_abi(key.direction) else {
                continue;
            };
            out.push((
                key.endpoint_id,
                EndpointCounter {
                    direction,
                    reason: key.reason,
                    packets: values.iter().map(|v| v.packets).sum(),
                    bytes: values.iter().map(|v| v.bytes).sum(),
                },
            ));
        }
        out.sort_by_key(|(id, c)| (*id, c.direction, c.reason));
        Ok(out)
    }

    /// The verdict events waiting in the ring buffer (never blocks).
    pub fn drain_events(&mut self) -> Vec<VerdictEvent> {
        let mut out = Vec::new();
        while let Some(record) = self.events.next() {
            match VerdictEvent::decode(&record) {
                Some(event) => out.push(event),
                None => warn!(len = record.len(), "undecodable datapath event"),
            }
        }
        out
    }

    /// Events the datapath could not queue because the ring was full.
    pub fn events_lost(&self) -> Result<u64, Error> {
        let values = self
            .events_lost
            .get(&0, 0)
            .map_err(Error::map("cilium_events_lost"))?;
        Ok(values.iter().sum())
    }

    pub fn ct_entries(&self) -> Result<Vec<CtEntry>, Error> {
        let mut out = Vec::new();
        for item in self.ct.iter() {
            let (key, value) = item.map_err(Error::map("cilium_ct_global"))?;
            let direction = if key.flags == abi::CT_F_EGRESS {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let (Some(src), Some(dst)) = (
                addr::from_words(key.family, key.saddr),
                addr::from_words(key.family, key.daddr),
            ) else {
                continue;
            };
            out.push(CtEntry {
                src,
                dst,
                sport: u16::from_be(key.sport),
                dport: u16::from_be(key.dport),
                protocol: key.protocol,
                direction,
                endpoint_id: value.endpoint_id,
                peer_identity: value.peer_identity,
                packets: value.packets,
                reply_packets: value.reply_packets,
                expires_ns: value.expires_ns,
            });
        }
        Ok(out)
    }

    /// Runs an endpoint program `repeat` times on `packet` (an Ethernet frame) with
    /// `BPF_PROG_TEST_RUN`, in the calling thread's network namespace where the packet's
    /// interface is the loopback device. Returns the program's verdict (0 = pass, 2 = drop)
    /// and the kernel's mean time per run.
    pub fn test_run(
        &mut self,
        program: EndpointProgram,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(i32, Duration), Error> {
        let name = match program {
            EndpointProgram::FromContainer => FROM_CONTAINER,
            EndpointProgram::ToContainer => TO_CONTAINER,
        };
        let options = TestRunOptions {
            data_in: Some(packet),
            repeat,
            ..TestRunOptions::new()
        };
        let result = object_program::<SchedClassifier>(&mut self.lxc, name)?
            .test_run(options)
            .map_err(program_error(name))?;
        Ok((result.return_value as i32, result.duration))
    }

    /// Deletes expired connection-tracking entries; returns how many.
    pub fn ct_gc(&mut self) -> Result<usize, Error> {
        let now = monotonic_ns()?;
        self.ct_remove_where(|_, entry| entry.expires_ns < now)
    }

    /// Deletes the connection-tracking entries `doomed` picks; returns how many.
    fn ct_remove_where(
        &mut self,
        doomed: impl Fn(&abi::CtKey, &abi::CtEntry) -> bool,
    ) -> Result<usize, Error> {
        let mut picked = Vec::new();
        for item in self.ct.iter() {
            let (key, value) = item.map_err(Error::map("cilium_ct_global"))?;
            if doomed(&key, &value) {
                picked.push(key);
            }
        }
        for key in &picked {
            match self.ct.remove(key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(Error::map("cilium_ct_global")(e)),
            }
        }
        Ok(picked.len())
    }
}

fn prefilter_entry(
    ip: IpAddr,
    prefix_len: u32,
    value: abi::PrefilterValue,
) -> Option<PrefilterEntry> {
    let prefix = IpNet::new(ip, u8::try_from(prefix_len).ok()?).ok()?;
    Some(PrefilterEntry {
        prefix,
        packets: value.packets,
        bytes: value.bytes,
    })
}

/// The name of endpoint `id`'s policy map, as Cilium names it.
pub fn policy_map_name(id: u16) -> String {
    format!("cilium_policy_v2_{id:05}")
}

/// A policy map's entries sorted by key, and the keys this crate never writes.
fn read_policy(
    trie: &PolicyTrie,
    name: &str,
) -> Result<(Vec<PolicyEntryView>, Vec<Key<abi::PolicyKey>>), Error> {
    let mut entries = Vec::new();
    let mut foreign = Vec::new();
    for item in trie.iter() {
        let (raw, entry) = item.map_err(Error::map(name))?;
        match PolicyKey::decode(&raw) {
            Some(key) => entries.push(PolicyEntryView {
                key,
                verdict: Verdict::of_entry(&entry),
                packets: entry.packets,
                bytes: entry.bytes,
            }),
            None => foreign.push(raw),
        }
    }
    entries.sort_by_key(|e| e.key);
    Ok((entries, foreign))
}

/// Empties a policy map: with no entry the endpoint drops everything (fail closed).
fn lock_down(trie: &mut PolicyTrie, name: &str) {
    let keys: Vec<_> = trie.keys().filter_map(Result::ok).collect();
    for key in keys {
        if let Err(e) = trie.remove(&key) {
            warn!(map = name, error = %e, "could not clear policy entry during lockdown");
        }
    }
    warn!(
        map = name,
        "policy map locked down: the endpoint drops all traffic"
    );
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> Result<u64, Error> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|e| Error::Config(format!("reading CLOCK_MONOTONIC: {e}")))?;
    Ok(u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec()).unwrap_or(0))
}
