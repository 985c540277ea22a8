//! Network namespaces made by a test: a "node" namespace holding the host side of each pod's
//! veth, and one namespace per "pod", wired the way the CNI plugin wires pods (a /32 on the
//! pod's `eth0`, a default route via the node's router address), plus a bpffs directory of
//! the test's own for the datapath's pins. Everything is deleted when the values are
//! dropped, so a failing test leaves nothing behind. Addresses live only inside these
//! namespaces.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use cilium_datapath::{Datapath, Endpoint, IpcacheEntry, PolicyMap};
use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};

use crate::Error;

/// The address every host-side veth carries: the pods' default gateway (like Cilium's
/// cilium_host address).
pub const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The IPv6 router address on every host-side veth.
pub const ROUTER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);

/// Runs `command`; its output, or an error with its stderr when it fails.
pub(crate) fn run(command: &mut Command) -> Result<Output, Error> {
    let shown = format!("{command:?}");
    let output = command.output().map_err(|e| Error::io(shown.clone(), e))?;
    if !output.status.success() {
        return Err(Error::Command {
            command: shown,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(output)
}

/// `ip` with the given arguments.
pub fn ip(args: &[&str]) -> Result<(), Error> {
    run(Command::new("ip").args(args)).map(drop)
}

/// A network namespace under /run/netns, deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A namespace with a name unique to this process (`prefix` helps reading `ip netns`).
    pub fn new(prefix: &str) -> Result<Self, Error> {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(sweep_dead_processes_leftovers);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> …`
    pub fn ip(&self, args: &[&str]) -> Result<(), Error> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command run in this namespace's network only (`nsenter --net`: unlike `ip netns
    /// exec` it keeps the host's /sys/fs/bpf).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg(program);
        command
    }

    /// Moves the calling thread into this namespace for good (sockets it opens and
    /// interfaces it names are this namespace's).
    pub fn enter_this_thread(&self) -> Result<(), Error> {
        let file = File::open(self.path())
            .map_err(|e| Error::io(format!("opening {}", self.path().display()), e))?;
        setns(file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::io(format!("setns {}", self.name), std::io::Error::from(e)))
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter_this_thread()?;
                    Ok(f())
                })
                .join()
                .map_err(|_| Error::Setup(format!("a thread in {} panicked", self.name)))?
        })
    }

    /// The names of the network devices in this namespace.
    pub fn links(&self) -> std::collections::BTreeSet<String> {
        let output = self.command("ip").args(["-o", "link", "show"]).output();
        output
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| l.split(':').nth(1))
                    .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `ping -c1` to `target` gets an answer within a second.
    pub fn ping(&self, target: Ipv4Addr) -> bool {
        self.command("ping")
            .args(["-c1", "-W1", "-q", &target.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Whether `name` (`<prefix>-<pid>-<n>`, as this module names things) belongs to a process
/// that is gone.
fn owner_is_dead(name: &str) -> bool {
    let mut parts = name.rsplit('-');
    let _n = parts.next();
    parts
        .next()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// Namespaces and bpffs directories of test processes that were killed before they could
/// remove them.
fn sweep_dead_processes_leftovers() {
    let namespaces = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten();
    for entry in namespaces {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = ["node-", "pod-", "lan-", "rnode-"]
            .iter()
            .any(|p| name.starts_with(p));
        if ours && owner_is_dead(&name) {
            let _ = ip(&["netns", "del", &name]);
        }
    }
    let pins = std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .flatten();
    for entry in pins {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("cilium-rs-") && owner_is_dead(&name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A pod: its namespace, its addresses and the name of its host-side veth in the node.
pub struct Pod {
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    /// `fd00:200::` followed by the last two octets of `ip`.
    pub ip6: Ipv6Addr,
    pub host_ifname: String,
}

impl Pod {
    /// The pod as a datapath endpoint behind its host-side veth.
    pub fn endpoint(&self, id: u16, identity: u32) -> Endpoint {
        Endpoint {
            id,
            ifname: self.host_ifname.clone(),
            ips: vec![self.ip.into(), self.ip6.into()],
            identity,
            mac: [0; 6],
            node_mac: [0; 6],
        }
    }

    /// Puts both addresses in the ipcache with `identity` and attaches the endpoint with
    /// `policy`. Call it from a thread inside the node namespace.
    pub fn wire(
        &self,
        datapath: &mut Datapath,
        id: u16,
        identity: u32,
        policy: &PolicyMap,
    ) -> Result<(), cilium_datapath::Error> {
        for ip in [IpAddr::V4(self.ip), IpAddr::V6(self.ip6)] {
            let entry = IpcacheEntry {
                identity,
                tunnel_endpoint: None,
            };
            datapath.upsert_ipcache(IpNet::from(ip), entry)?;
        }
        datapath.attach_endpoint(&self.endpoint(id, identity), policy)?;
        Ok(())
    }
}

/// A directory of its own on /sys/fs/bpf for the datapath's pins (its `bpffs_root`),
/// removed with everything in it on drop.
pub struct ScratchBpffs(PathBuf);

impl ScratchBpffs {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        ScratchBpffs(PathBuf::from(format!(
            "/sys/fs/bpf/cilium-rs-{tag}-{}-{n}",
            std::process::id()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchBpffs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a pod namespace wired to `node` through a veth (`host_ifname` in the node,
/// `eth0` in the pod).
pub fn add_pod(node: &NetNs, host_ifname: &str, ip: Ipv4Addr) -> Result<Pod, Error> {
    let ns = NetNs::new("pod")?;
    let [.., high, low] = ip.octets();
    let ip6 = Ipv6Addr::new(
        0xfd00,
        0x200,
        0,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([high, low]),
    );
    let (pod_ip, pod_ip6) = (format!("{ip}/32"), format!("{ip6}/128"));
    let (router, router6) = (ROUTER_IP.to_string(), ROUTER_IP6.to_string());
    let veth = [
        "link",
        "add",
        host_ifname,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
    ];
    node.ip(&[&veth[..], &["netns", ns.name()]].concat())?;
    node.ip(&["addr", "add", &format!("{router}/32"), "dev", host_ifname])?;
    node.ip(&[
        "addr",
        "add",
        &format!("{router6}/128"),
        "dev",
        host_ifname,
        "nodad",
    ])?;
    node.ip(&["link", "set", host_ifname, "up"])?;
    node.ip(&["route", "add", &pod_ip, "dev", host_ifname])?;
    node.ip(&["-6", "route", "add", &pod_ip6, "dev", host_ifname])?;
    ns.ip(&["addr", "add", &pod_ip, "dev", "eth0"])?;
    ns.ip(&["addr", "add", &pod_ip6, "dev", "eth0", "nodad"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["route", "add", &router, "dev", "eth0"])?;
    ns.ip(&["route", "add", "default", "via", &router])?;
    ns.ip(&["-6", "route", "add", &router6, "dev", "eth0"])?;
    ns.ip(&["-6", "route", "add", "default", "via", &router6])?;
    let host_ifname = host_ifname.to_string();
    Ok(Pod {
        ns,
        ip,
        ip6,
        host_ifname,
    })
}

/// A node namespace that routes between its pods.
pub fn node() -> Result<NetNs, Error> {
    let node = NetNs::new("node")?;
    run(node.command("sysctl").args([
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        // Interfaces made later (both ends of pod veths) take their setting from `default`;
        // without duplicate address detection their link-local addresses work at once.
        "net.ipv6.conf.default.forwarding=1",
        "net.ipv6.conf.default.accept_dad=0",
    ]))?;
    Ok(node)
}
