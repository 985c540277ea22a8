//! Datapath numbers: the per-packet cost of the endpoint program under `BPF_PROG_TEST_RUN`
//! with 1, 1,000 and 10,000 policy entries, and TCP throughput between two pods over veths
//! with no filtering, with this datapath, and with the same policy as iptables rules.

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use cilium_datapath::{
    Datapath, DatapathConfig, Direction, Endpoint, EndpointProgram, IpcacheEntry, L4Match,
    PolicyKey, PolicyMap, Verdict, policy::PROTO_TCP,
};
use e2e::netns::{self, NetNs, Pod, ScratchBpffs};
use ipnet::IpNet;

const SIZES: [u32; 3] = [1, 1_000, 10_000];
const PORT: u16 = 5201;
const CLIENT: u32 = 1001;
const SERVER: u32 = 1000;
const REPEAT: u32 = 500_000;

fn open(pins: &ScratchBpffs) -> anyhow::Result<Datapath> {
    let config = DatapathConfig {
        bpffs_root: pins.path().to_path_buf(),
        ..DatapathConfig::default()
    };
    Datapath::open(&config).context("loading the datapath")
}

/// Ingress policy for the server: `entries` allows of which only the last admits the client.
fn server_policy(entries: u32) -> PolicyMap {
    let allow = |identity| {
        (
            PolicyKey {
                identity,
                direction: Direction::Ingress,
                l4: L4Match::port(PROTO_TCP, PORT),
            },
            Verdict::Allow,
        )
    };
    PolicyMap::new((1..entries).map(|i| allow(100_000 + i)).chain([
        allow(CLIENT),
        (PolicyKey::allow_all(Direction::Egress), Verdict::Allow),
    ]))
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::from(std::net::IpAddr::V4(ip))
}

/// An Ethernet + IPv4 + TCP (ACK) frame from `src` to `dst`:`PORT`.
fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = PROTO_TCP;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    f[34..36].copy_from_slice(&40_000u16.to_be_bytes());
    f[36..38].copy_from_slice(&PORT.to_be_bytes());
    f[46] = 0x50; // data offset 5 words
    f[47] = 0x10; // ACK
    f
}

pub fn run() -> anyhow::Result<()> {
    let ns = NetNs::new("bench")?;
    ns.run(per_packet)??;
    throughput()
}

/// The ingress program on one packet, allowed and dropped, by policy size.
fn per_packet() -> anyhow::Result<()> {
    let pins = ScratchBpffs::new("bench");
    let mut dp = open(&pins)?;
    let (server_ip, client_ip, stranger_ip) = (
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 3),
    );
    dp.upsert_ipcache(
        host(client_ip),
        IpcacheEntry {
            identity: CLIENT,
            tunnel_endpoint: None,
        },
    )?;
    dp.upsert_ipcache(
        host(stranger_ip),
        IpcacheEntry {
            identity: 1002,
            tunnel_endpoint: None,
        },
    )?;
    // BPF_PROG_TEST_RUN hands the program a packet on the loopback device.
    let endpoint = Endpoint {
        id: 1,
        ifname: "lo".into(),
        ips: vec![server_ip.into()],
        identity: SERVER,
        mac: [0; 6],
        node_mac: [0; 6],
    };
    let allowed = tcp_frame(client_ip, server_ip);
    let denied = tcp_frame(stranger_ip, server_ip);
    println!("datapath per packet (BPF_PROG_TEST_RUN, ingress program, mean of {REPEAT} runs):");
    println!(
        "  {:>14} {:>14} {:>14}",
        "policy entries", "allowed ns", "dropped ns"
    );
    let mut first = None;
    for entries in SIZES {
        dp.attach_endpoint(&endpoint, &server_policy(entries))?;
        let (verdict, allow_time) = dp.test_run(EndpointProgram::ToContainer, &allowed, REPEAT)?;
        if verdict != 0 {
            bail!("the allowed packet was dropped (verdict {verdict})");
        }
        let (verdict, drop_time) = dp.test_run(EndpointProgram::ToContainer, &denied, REPEAT)?;
        if verdict != 2 {
            bail!("the denied packet passed (verdict {verdict})");
        }
        let ns = |d: Duration| d.as_nanos();
        let base = *first.get_or_insert(allow_time.as_nanos().max(1));
        println!(
            "  {entries:>14} {:>14} {:>14}   allowed x{:.2} of 1 entry",
            ns(allow_time),
            ns(drop_time),
            allow_time.as_nanos() as f64 / base as f64
        );
        dp.drain_events();
    }
    Ok(())
}

/// Gbit/s of a 3-second iperf3 run from `client` to `server`.
fn iperf(client: &Pod, server: &Pod) -> anyhow::Result<f64> {
    let mut listener = server
        .ns
        .command("iperf3")
        .args(["-s", "-1", "-p", &PORT.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .ns
        .command("iperf3")
        .args([
            "-c",
            &server.ip.to_string(),
            "-p",
            &PORT.to_string(),
            "-t",
            "3",
            "-J",
        ])
        .output()
        .context("running iperf3 -c")?;
    let _ = listener.wait();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .with_context(|| {
            format!(
                "no throughput in iperf3's report: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The server's policy as iptables rules in the node's FORWARD chain: `entries` ACCEPT rules
/// of which only the last matches the client, both directions, default DROP (no conntrack
/// shortcut, so every packet walks the rules as every packet meets the BPF policy lookup).
fn iptables_rules(entries: u32, client: Ipv4Addr, server: Ipv4Addr) -> String {
    let mut rules =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n");
    for i in 1..entries {
        let fake = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 0)) + i);
        rules += &format!("-A FORWARD -s {fake} -d {server} -p tcp --dport {PORT} -j ACCEPT\n");
        rules += &format!("-A FORWARD -s {server} -d {fake} -p tcp --sport {PORT} -j ACCEPT\n");
    }
    rules += &format!("-A FORWARD -s {client} -d {server} -p tcp --dport {PORT} -j ACCEPT\n");
    rules +=
        &format!("-A FORWARD -s {server} -d {client} -p tcp --sport {PORT} -j ACCEPT\nCOMMIT\n");
    rules
}

fn iptables_restore(node: &NetNs, rules: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = node
        .command("iptables-restore")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("iptables-restore")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn throughput() -> anyhow::Result<()> {
    if Command::new("iperf3").arg("--version").output().is_err() {
        bail!("iperf3 is missing (make deps installs it)");
    }
    let node = netns::node()?;
    let client = netns::add_pod(&node, "lxc-client", Ipv4Addr::new(10, 200, 1, 1))?;
    let server = netns::add_pod(&node, "lxc-server", Ipv4Addr::new(10, 200, 1, 2))?;
    println!("TCP throughput pod to pod over veths (iperf3, 3 s each, Gbit/s):");
    let baseline = iperf(&client, &server)?;
    println!("  {:<32} {baseline:>7.2}", "no filtering");
    let row = |label: String, gbps: f64| {
        println!(
            "  {label:<32} {gbps:>7.2}   x{:.2} of no filtering",
            gbps / baseline
        )
    };

    let pins = ScratchBpffs::new("bench");
    let results = node.run(|| -> anyhow::Result<Vec<(u32, f64)>> {
        let mut dp = open(&pins)?;
        client.wire(&mut dp, 1, CLIENT, &PolicyMap::allow_all())?;
        server.wire(&mut dp, 2, SERVER, &PolicyMap::allow_all())?;
        let mut out = Vec::new();
        for entries in SIZES {
            dp.set_policy(2, &server_policy(entries))?;
            out.push((entries, iperf(&client, &server)?));
        }
        dp.detach_endpoint(1)?;
        dp.detach_endpoint(2)?;
        Ok(out)
    })??;
    let mut iptables = Vec::new();
    for entries in SIZES {
        iptables_restore(&node, &iptables_rules(entries, client.ip, server.ip))?;
        iptables.push((entries, iperf(&client, &server)?));
    }
    iptables_restore(&node, "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")?;
    for ((entries, bpf), (_, ipt)) in results.iter().zip(&iptables) {
        row(format!("cilium-rs, {entries} policy entries"), *bpf);
        row(format!("iptables, {entries} rules"), *ipt);
        println!("  {:<32} x{:.2}", "cilium-rs / iptables", bpf / ipt);
    }
    Ok(())
}
