//! A stand-in agent process for the datapath restart tests: it loads the datapath, wires the
//! endpoints given on the command line with their ingress policy, fills the ipcache, and
//! exits — leaving enforcement to the pinned programs and maps.
//!
//! datapath-apply --bpffs-root DIR [--tc-attach tcx|netlink]
//!     [--endpoint ID:IFNAME:IPV4:IDENTITY]...
//!     [--ipcache CIDR=IDENTITY]...
//!     [--allow-ingress ENDPOINT_ID:PEER_IDENTITY:PROTOCOL:PORT]...
//!
//! An endpoint with no --allow-ingress gets no policy (everything passes); one with any gets
//! exactly those ingress entries and allows all egress.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, process::ExitCode};

use cilium_datapath::{
    Datapath, DatapathConfig, Direction, Endpoint, IpcacheEntry, L4Match, PolicyKey, PolicyMap,
    TcAttachMode, Verdict,
};
use ipnet::IpNet;

fn field<T: std::str::FromStr>(value: Option<&str>, what: &str, arg: &str) -> Result<T, String> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{arg}: bad or missing {what}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("datapath-apply: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut config = DatapathConfig::default();
    let mut endpoints = Vec::new();
    let mut ipcache = Vec::new();
    let mut ingress: BTreeMap<u16, Vec<(PolicyKey, Verdict)>> = BTreeMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let mut parts = value.split(':');
        match flag.as_str() {
            "--bpffs-root" => config.bpffs_root = PathBuf::from(&value),
            "--tc-attach" => {
                config.tc_attach = match value.as_str() {
                    "tcx" => TcAttachMode::Tcx,
                    "netlink" => TcAttachMode::Netlink,
                    other => return Err(format!("--tc-attach {other}: tcx or netlink")),
                }
            }
            "--endpoint" => endpoints.push(Endpoint {
                id: field(parts.next(), "endpoint id", &value)?,
                ifname: field(parts.next(), "interface", &value)?,
                ips: vec![field::<IpAddr>(parts.next(), "IP", &value)?],
                identity: field(parts.next(), "identity", &value)?,
                mac: [0; 6],
                node_mac: [0; 6],
            }),
            "--ipcache" => {
                let (cidr, identity) = value
                    .split_once('=')
                    .ok_or_else(|| format!("{value}: want CIDR=IDENTITY"))?;
                let prefix: IpNet = field(Some(cidr), "CIDR", &value)?;
                ipcache.push((
                    prefix,
                    IpcacheEntry {
                        identity: field(Some(identity), "identity", &value)?,
                        tunnel_endpoint: None,
                    },
                ));
            }
            "--allow-ingress" => {
                let id: u16 = field(parts.next(), "endpoint id", &value)?;
                let identity: u32 = field(parts.next(), "peer identity", &value)?;
                let protocol: u8 = field(parts.next(), "protocol", &value)?;
                let port: u16 = field(parts.next(), "port", &value)?;
                let key = PolicyKey {
                    identity,
                    direction: Direction::Ingress,
                    l4: L4Match::port(protocol, port),
                };
                ingress.entry(id).or_default().push((key, Verdict::Allow));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }

    let mut datapath = Datapath::open(&config).map_err(|e| e.to_string())?;
    for (prefix, entry) in ipcache {
        datapath
            .upsert_ipcache(prefix, entry)
            .map_err(|e| e.to_string())?;
    }
    for endpoint in &endpoints {
        let policy = match ingress.remove(&endpoint.id) {
            None => PolicyMap::allow_all(),
            Some(entries) => PolicyMap::new(
                entries
                    .into_iter()
                    .chain([(PolicyKey::allow_all(Direction::Egress), Verdict::Allow)]),
            ),
        };
        datapath
            .attach_endpoint(endpoint, &policy)
            .map_err(|e| e.to_string())?;
    }
    if let Some(id) = ingress.keys().next() {
        return Err(format!(
            "--allow-ingress names endpoint {id}, which no --endpoint gives"
        ));
    }
    Ok(())
}
