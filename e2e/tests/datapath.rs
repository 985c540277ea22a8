//! The datapath with real packets: pods are network namespaces wired to a node namespace by
//! veths, the C programs run on the host side of each veth, and traffic is real TCP, ICMP
//! and ping between them. Needs root (as CI has). Every namespace and pin is removed when a
//! test ends, pass or fail.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use cilium_datapath::{
    Datapath, DatapathConfig, Direction, Endpoint, EventKind, IpcacheEntry, L4Match, PolicyKey,
    PolicyMap, TcAttachMode, Verdict, VerdictEvent, abi, policy::PROTO_ICMP, policy::PROTO_TCP,
};
use e2e::netns::{NetNs, Pod, ScratchBpffs};
use e2e::node_bed::{Bed, DB, EMPLOYEE, STRANGER, datapath_config};
use e2e::traffic::{self, echoes};
use ipnet::IpNet;

const REDIS: u16 = 6379;

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::from(std::net::IpAddr::V4(ip))
}

/// An ingress policy (egress stays open) made of `entries`.
fn ingress(entries: impl IntoIterator<Item = (PolicyKey, Verdict)>) -> PolicyMap {
    PolicyMap::new(
        entries
            .into_iter()
            .chain([(PolicyKey::allow_all(Direction::Egress), Verdict::Allow)]),
    )
}

/// An ingress policy that admits only `identity` on `l4` (egress stays open).
fn admit(identity: u32, l4: L4Match) -> PolicyMap {
    ingress([(key(identity, Direction::Ingress, l4), Verdict::Allow)])
}

fn key(identity: u32, direction: Direction, l4: L4Match) -> PolicyKey {
    PolicyKey {
        identity,
        direction,
        l4,
    }
}

fn serve(pod: &Pod, port: u16) {
    traffic::serve_echo(&pod.ns, port);
}

fn connect(from: &Pod, to: impl Into<std::net::IpAddr>, port: u16) -> std::io::Result<TcpStream> {
    traffic::connect(&from.ns, to, port)
}

fn reaches(from: &Pod, to: &Pod, port: u16) -> bool {
    traffic::reaches(&from.ns, to.ip, port)
}

fn drops(events: &[VerdictEvent], endpoint_id: u16, reason: u8) -> Vec<&VerdictEvent> {
    events
        .iter()
        .filter(|e| {
            e.kind == EventKind::Drop
                && e.endpoint_id == endpoint_id
                && e.reason == u16::from(reason)
        })
        .collect()
}

/// Runs a test once per tc attachment: TCX links where the kernel has them (probed), and the
/// classic `clsact`/cls_bpf filters of kernels before TCX (or `--enable-tcx=false`).
macro_rules! in_both_attach_modes {
    ($body:ident: $tcx:ident, $classic:ident) => {
        #[test]
        fn $tcx() {
            $body(TcAttachMode::probe(true));
        }

        #[test]
        fn $classic() {
            $body(TcAttachMode::Netlink);
        }
    };
}

in_both_attach_modes!(identity_policy_is_enforced:
    identity_policy_is_enforced_on_real_traffic, identity_policy_is_enforced_with_classic_tc);

fn identity_policy_is_enforced(tc_attach: TcAttachMode) {
    let bed = Bed::attaching(tc_attach);
    let mut dp = bed.datapath();
    serve(&bed.db, REDIS);
    serve(&bed.stranger, 8080);

    // No policy: everything passes, both ways.
    assert!(
        reaches(&bed.employee, &bed.db, REDIS),
        "no policy: employee reaches the db"
    );
    assert!(
        reaches(&bed.stranger, &bed.db, REDIS),
        "no policy: stranger reaches the db"
    );
    assert!(bed.employee.ns.ping(bed.db.ip), "no policy: ping passes");

    // Ingress allow from the employee identity to TCP 6379.
    dp.drain_events();
    dp.set_policy(3, &admit(EMPLOYEE, L4Match::port(PROTO_TCP, REDIS)))
        .expect("policy");
    let mut kept = connect(&bed.employee, bed.db.ip, REDIS).expect("employee connects");
    assert!(echoes(&mut kept), "replies flow back to the employee");
    let refused = connect(&bed.stranger, bed.db.ip, REDIS);
    assert!(
        refused.is_err(),
        "the stranger's SYN must be dropped, got {refused:?}"
    );
    let events = dp.drain_events();
    let dropped = drops(&events, 3, abi::DROP_POLICY);
    assert!(
        dropped.iter().any(|e| e.src_identity == STRANGER
            && e.dst_identity == DB
            && e.dport == REDIS
            && e.direction == Direction::Ingress
            && e.src == std::net::IpAddr::V4(bed.stranger.ip)),
        "a drop event names the stranger, the db and the port: {events:#?}"
    );
    assert!(
        events.iter().any(|e| e.kind == EventKind::PolicyVerdict
            && e.src_identity == EMPLOYEE
            && e.dport == REDIS),
        "the allowed connection's first packet is reported: {events:#?}"
    );
    let counters = dp.counters(3).expect("counters");
    assert!(
        counters.iter().any(|c| c.direction == Direction::Ingress
            && c.reason == abi::DROP_POLICY
            && c.packets >= 1),
        "{counters:?}"
    );
    let entries = dp.policy(3).expect("policy entries");
    let allow = entries
        .iter()
        .find(|e| e.key.identity == EMPLOYEE)
        .expect("the employee entry");
    assert!(
        allow.packets >= 2,
        "the entry counts the packets it allowed: {allow:?}"
    );
    assert!(
        dp.ct_entries()
            .expect("ct")
            .iter()
            .any(|c| c.dport == REDIS && c.endpoint_id == 3 && c.reply_packets > 0),
        "the connection is tracked with its replies"
    );

    // Without its ipcache entry the employee is "world" to the db, which the policy does not
    // admit; with the entry back it is admitted again.
    let employee_ip = host(bed.employee.ip);
    assert!(dp.delete_ipcache(employee_ip).expect("delete"));
    dp.drain_events();
    assert!(
        connect(&bed.employee, bed.db.ip, REDIS).is_err(),
        "an unknown source is world"
    );
    let world = dp.drain_events();
    assert!(
        drops(&world, 3, abi::DROP_POLICY)
            .iter()
            .any(|e| e.src_identity == abi::IDENTITY_WORLD),
        "{world:#?}"
    );
    let entry = IpcacheEntry {
        identity: EMPLOYEE,
        tunnel_endpoint: None,
    };
    dp.upsert_ipcache(employee_ip, entry).expect("upsert");
    assert!(
        reaches(&bed.employee, &bed.db, REDIS),
        "admitted again with its identity"
    );

    // Removing the allow mid-connection: the next forward packet is checked and dropped.
    dp.set_policy(3, &ingress([])).expect("policy");
    assert!(
        !echoes(&mut kept),
        "an established connection is cut when its allow goes away"
    );
    assert!(!drops(&dp.drain_events(), 3, abi::DROP_POLICY).is_empty());

    // A deny beats an allow: any peer may reach 6379, but the stranger is denied everything.
    dp.set_policy(
        3,
        &ingress([
            (
                key(0, Direction::Ingress, L4Match::port(PROTO_TCP, REDIS)),
                Verdict::Allow,
            ),
            (
                key(STRANGER, Direction::Ingress, L4Match::Any),
                Verdict::Deny,
            ),
        ]),
    )
    .expect("policy");
    assert!(
        reaches(&bed.employee, &bed.db, REDIS),
        "the wildcard allow admits the employee"
    );
    assert!(
        connect(&bed.stranger, bed.db.ip, REDIS).is_err(),
        "the deny wins for the stranger"
    );
    let denied = dp.drain_events();
    assert!(
        drops(&denied, 3, abi::DROP_POLICY_DENY)
            .iter()
            .any(|e| e.src_identity == STRANGER),
        "the drop says it was a deny: {denied:#?}"
    );

    // ICMP echo under policy: the employee may ping, the stranger may not; replies pass.
    dp.set_policy(3, &admit(EMPLOYEE, L4Match::port(PROTO_ICMP, 8)))
        .expect("policy");
    assert!(
        bed.employee.ns.ping(bed.db.ip),
        "echo request allowed, reply tracked"
    );
    assert!(
        !bed.stranger.ns.ping(bed.db.ip),
        "the stranger's echo request is dropped"
    );
    assert!(
        dp.ct_entries()
            .expect("ct")
            .iter()
            .any(|c| c.protocol == PROTO_ICMP),
        "the ping left a tracked connection"
    );

    // Egress: the employee may only talk to the db on 6379.
    dp.set_policy(3, &PolicyMap::allow_all()).expect("policy");
    dp.set_policy(
        1,
        &PolicyMap::new([
            (PolicyKey::allow_all(Direction::Ingress), Verdict::Allow),
            (
                key(DB, Direction::Egress, L4Match::port(PROTO_TCP, REDIS)),
                Verdict::Allow,
            ),
        ]),
    )
    .expect("policy");
    dp.drain_events();
    assert!(
        reaches(&bed.employee, &bed.db, REDIS),
        "egress to the db is allowed"
    );
    assert!(
        connect(&bed.employee, bed.stranger.ip, 8080).is_err(),
        "egress to the stranger is not"
    );
    let egress = dp.drain_events();
    assert!(
        drops(&egress, 1, abi::DROP_POLICY)
            .iter()
            .any(|e| e.direction == Direction::Egress
                && e.src_identity == EMPLOYEE
                && e.dst_identity == STRANGER),
        "{egress:#?}"
    );
    assert!(
        reaches(&bed.stranger, &bed.db, REDIS),
        "the db itself is open again"
    );

    // Connection-tracking entries expire (non-TCP lifetime is 2 s here) and are collected.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        dp.ct_gc().expect("gc") >= 1,
        "the expired ICMP entry is collected"
    );
    assert!(
        !dp.ct_entries()
            .expect("ct")
            .iter()
            .any(|c| c.protocol == PROTO_ICMP)
    );

    // Detaching removes the employee's programs and addresses: its egress policy is gone.
    dp.detach_endpoint(1).expect("detach");
    assert!(
        dp.endpoints()
            .expect("endpoints")
            .iter()
            .all(|(_, info)| info.lxc_id != 1)
    );
    // Once seen once under a parallel load: the first connection right after the detach
    // timed out; a later one gets through.
    e2e::wait_for("no program, no policy", Duration::from_secs(10), || {
        reaches(&bed.employee, &bed.stranger, 8080).then_some(())
    });
}

in_both_attach_modes!(ipv6_traffic_meets_the_policy: ipv6_traffic_meets_the_same_policy, ipv6_traffic_meets_the_policy_with_classic_tc);

fn ipv6_traffic_meets_the_policy(tc_attach: TcAttachMode) {
    let bed = Bed::attaching(tc_attach);
    let mut dp = bed.datapath();
    serve(&bed.db, REDIS);
    let v6_reaches =
        |from: &Pod| connect(from, bed.db.ip6, REDIS).is_ok_and(|mut s| echoes(&mut s));
    assert!(
        v6_reaches(&bed.employee) && v6_reaches(&bed.stranger),
        "no policy: IPv6 passes: {:#?}",
        dp.drain_events()
    );
    dp.set_policy(3, &admit(EMPLOYEE, L4Match::port(PROTO_TCP, REDIS)))
        .expect("policy");
    assert!(
        v6_reaches(&bed.employee),
        "the employee's identity comes from its IPv6 ipcache entry"
    );
    assert!(
        !v6_reaches(&bed.stranger),
        "the stranger is dropped over IPv6 too"
    );
    let events = dp.drain_events();
    assert!(
        drops(&events, 3, abi::DROP_POLICY)
            .iter()
            .any(|e| e.src == std::net::IpAddr::V6(bed.stranger.ip6)),
        "{events:#?}"
    );

    // Neighbour discovery passes the policy (the pods above resolved their router through
    // it), but not the source check: a solicitation naming an endpoint's address from
    // another interface (here the loopback of the test run) is dropped; one from a
    // link-local source passes.
    let run = |dp: &mut Datapath, src: std::net::Ipv6Addr| {
        dp.test_run(
            cilium_datapath::EndpointProgram::FromContainer,
            &neighbour_solicitation(src, bed.db.ip6),
            1,
        )
        .expect("test run")
        .0
    };
    assert_eq!(run(&mut dp, bed.employee.ip6), 2, "spoofed source dropped");
    assert_eq!(
        run(&mut dp, "fe80::1".parse().expect("ip")),
        0,
        "link-local passes"
    );
}

/// An Ethernet frame with an ICMPv6 neighbour solicitation from `src` for `target`.
fn neighbour_solicitation(src: std::net::Ipv6Addr, target: std::net::Ipv6Addr) -> Vec<u8> {
    let mut frame = vec![0x33, 0x33, 0xff, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    let icmp_len: u16 = 24;
    frame.extend([0x60, 0, 0, 0]);
    frame.extend(icmp_len.to_be_bytes());
    frame.extend([58, 255]); // next header ICMPv6, hop limit
    frame.extend(src.octets());
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&target.octets()[13..]);
    frame.extend(group);
    frame.extend([135, 0, 0, 0, 0, 0, 0, 0]); // type, code, checksum, reserved
    frame.extend(target.octets());
    frame
}

// A ping of 3,000 bytes is three IPv4 fragments each way: the later ones meet the policy
// (and connection tracking) with their first fragment's ports, as in Cilium; they used to
// be dropped whatever the policy said.
in_both_attach_modes!(fragments_meet_the_policy_of_their_first: ipv4_fragments_meet_the_policy_of_their_first, fragments_meet_the_policy_of_their_first_with_classic_tc);

fn fragments_meet_the_policy_of_their_first(tc_attach: TcAttachMode) {
    let bed = Bed::attaching(tc_attach);
    let mut dp = bed.datapath();
    let big_ping = |from: &Pod, to: &Pod| {
        from.ns
            .command("ping")
            .args(["-c1", "-W2", "-q", "-s", "3000", &to.ip.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        big_ping(&bed.employee, &bed.db),
        "no policy: fragments pass"
    );
    dp.set_policy(3, &admit(EMPLOYEE, L4Match::port(PROTO_ICMP, 8)))
        .expect("policy");
    dp.drain_events();
    assert!(
        big_ping(&bed.employee, &bed.db),
        "the admitted peer's fragments pass"
    );
    assert!(
        !big_ping(&bed.stranger, &bed.db),
        "the stranger's are dropped"
    );
    let events = dp.drain_events();
    assert!(
        drops(&events, 3, abi::DROP_FRAG_NOT_FOUND).is_empty(),
        "every later fragment found its first: {events:#?}"
    );
    assert!(
        !drops(&events, 3, abi::DROP_POLICY).is_empty(),
        "{events:#?}"
    );
}

/// SCTP ports meet the policy like TCP and UDP ones (the Kubernetes NetworkPolicy suite has
/// SCTP cases); run on single packets with `BPF_PROG_TEST_RUN` (no SCTP sockets needed).
#[test]
fn sctp_ports_meet_the_policy() {
    let ns = NetNs::new("sctp").expect("netns");
    ns.run(|| {
        let pins = ScratchBpffs::new("sctp");
        let mut dp =
            Datapath::open(&datapath_config(&pins, TcAttachMode::probe(true))).expect("datapath");
        let (server, client) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        dp.upsert_ipcache(
            host(client),
            IpcacheEntry {
                identity: EMPLOYEE,
                tunnel_endpoint: None,
            },
        )
        .expect("ipcache");
        // The test run hands the packet to the program on the loopback device.
        let endpoint = Endpoint {
            id: 1,
            ifname: "lo".into(),
            ips: vec![server.into()],
            identity: DB,
            mac: [0; 6],
            node_mac: [0; 6],
        };
        let policy = admit(
            EMPLOYEE,
            L4Match::port(cilium_datapath::policy::PROTO_SCTP, 9000),
        );
        dp.attach_endpoint(&endpoint, &policy).expect("attach");
        let mut verdict = |port: u16| {
            dp.test_run(
                cilium_datapath::EndpointProgram::ToContainer,
                &sctp_frame(client, server, port),
                1,
            )
            .expect("test run")
            .0
        };
        assert_eq!(verdict(9000), 0, "the admitted SCTP port");
        assert_eq!(verdict(9001), 2, "another SCTP port");
    })
    .expect("in the namespace");
}

/// A sync writes only what differs from what this process wrote, without reading the
/// kernel's trie; a write by another process (here a second `Datapath` on the same pins)
/// goes unseen until a sync that rereads the kernel, which restores the wanted entries.
#[test]
fn ipcache_syncs_write_differences_and_rereads_correct_others_writes() {
    let ns = NetNs::new("ipcache").expect("netns");
    ns.run(|| {
        let pins = ScratchBpffs::new("ipcache");
        let config = datapath_config(&pins, TcAttachMode::probe(true));
        let mut agent = Datapath::open(&config).expect("datapath");
        let entry = |identity| IpcacheEntry {
            identity,
            tunnel_endpoint: Some(Ipv4Addr::new(192, 168, 60, 12)),
        };
        let mut wanted: BTreeMap<IpNet, IpcacheEntry> = (1..=200u8)
            .map(|i| (host(Ipv4Addr::new(10, 1, 0, i)), entry(EMPLOYEE)))
            .collect();
        assert_eq!(agent.sync_ipcache(&wanted, false).expect("sync"), 200);
        assert_eq!(agent.sync_ipcache(&wanted, false).expect("sync"), 0);
        wanted.insert(host(Ipv4Addr::new(10, 1, 0, 7)), entry(DB));
        wanted.remove(&host(Ipv4Addr::new(10, 1, 0, 8)));
        assert_eq!(agent.sync_ipcache(&wanted, false).expect("sync"), 2);
        let kernel: BTreeMap<IpNet, IpcacheEntry> =
            agent.ipcache().expect("read").into_iter().collect();
        assert_eq!(kernel, wanted, "the kernel holds what was wanted");

        let mut other = Datapath::open(&config).expect("a second opener");
        let stolen = host(Ipv4Addr::new(10, 1, 0, 9));
        assert!(other.delete_ipcache(stolen).expect("delete"));
        other
            .upsert_ipcache(host(Ipv4Addr::new(10, 9, 9, 9)), entry(STRANGER))
            .expect("upsert");
        assert_eq!(
            agent.sync_ipcache(&wanted, false).expect("sync"),
            0,
            "the held copy does not know of the other's writes"
        );
        assert_eq!(agent.sync_ipcache(&wanted, true).expect("sync"), 2);
        let kernel: BTreeMap<IpNet, IpcacheEntry> =
            agent.ipcache().expect("read").into_iter().collect();
        assert_eq!(kernel, wanted, "the reread put the kernel right");
    })
    .expect("in the namespace");
}

/// An Ethernet frame with an SCTP common header from `src` to `dst`:`port`.
fn sctp_frame(src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 20 + 12];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14] = 0x45;
    frame[16..18].copy_from_slice(&32u16.to_be_bytes());
    frame[22] = 64;
    frame[23] = 132; // SCTP
    frame[26..30].copy_from_slice(&src.octets());
    frame[30..34].copy_from_slice(&dst.octets());
    frame[34..36].copy_from_slice(&40_000u16.to_be_bytes());
    frame[36..38].copy_from_slice(&port.to_be_bytes());
    frame
}

#[test]
fn xdp_prefilter_drops_denied_sources_and_counts_them() {
    let bed = Bed::start();
    let mut dp = bed.datapath();
    // An outside host on a node device.
    let outside = NetNs::new("outside").expect("netns");
    bed.node
        .ip(&[
            "link",
            "add",
            "ext0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            outside.name(),
        ])
        .expect("veth");
    bed.node
        .ip(&["addr", "add", "10.201.0.1/24", "dev", "ext0"])
        .expect("addr");
    bed.node.ip(&["link", "set", "ext0", "up"]).expect("up");
    outside
        .ip(&["addr", "add", "10.201.0.2/24", "dev", "eth0"])
        .expect("addr");
    outside.ip(&["link", "set", "eth0", "up"]).expect("up");
    outside
        .ip(&["route", "add", "default", "via", "10.201.0.1"])
        .expect("route");

    dp.attach_prefilter("ext0").expect("xdp attaches");
    dp.drain_events();
    assert!(outside.ping(bed.db.ip), "nothing denied yet");
    let seen = dp.drain_events();
    assert!(
        seen.iter()
            .any(|e| e.endpoint_id == 3 && e.src_identity == abi::IDENTITY_WORLD),
        "a source outside the ipcache is world: {seen:#?}"
    );
    let denied: IpNet = "10.201.0.0/24".parse().expect("cidr");
    dp.set_prefilter(&BTreeSet::from([denied]))
        .expect("prefilter");
    assert!(
        !outside.ping(bed.db.ip),
        "the denied CIDR is dropped at XDP"
    );
    let entries = dp.prefilter().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].prefix, denied);
    assert!(
        entries[0].packets >= 1,
        "the prefix counts its drops: {entries:?}"
    );
    let totals = dp.prefilter_totals().expect("totals");
    assert!(totals.dropped >= 1 && totals.passed >= 1, "{totals:?}");
    // Other sources still pass while the CIDR is denied.
    assert!(bed.employee.ns.ping(bed.db.ip));
    dp.set_prefilter(&BTreeSet::new()).expect("prefilter");
    assert!(
        outside.ping(bed.db.ip),
        "removing the CIDR lets it through again"
    );
    assert!(dp.detach_prefilter("ext0").expect("detach"));
}

// Netlink filters outlive the agent unpinned and are replaced in place by the next one.
in_both_attach_modes!(enforcement_survives_the_agent:
    enforcement_survives_the_agent_and_a_new_agent_takes_over,
    enforcement_survives_the_agent_with_classic_tc);

fn enforcement_survives_the_agent(tc_attach: TcAttachMode) {
    let bed = Bed::attaching(tc_attach);
    serve(&bed.db, REDIS);
    // The "agent" is another process: it wires the pods, allows only the employee into the
    // db, and exits.
    let mut apply = bed.node.command(env!("CARGO_BIN_EXE_datapath-apply"));
    apply.arg("--bpffs-root").arg(bed.pins.path());
    if tc_attach == TcAttachMode::Netlink {
        apply.args(["--tc-attach", "netlink"]);
    }
    for (id, pod, identity) in bed.pods() {
        apply.args([
            "--endpoint",
            &format!("{id}:{}:{}:{identity}", pod.host_ifname, pod.ip),
        ]);
        apply.args(["--ipcache", &format!("{}/32={identity}", pod.ip)]);
    }
    apply.args([
        "--allow-ingress",
        &format!("3:{EMPLOYEE}:{PROTO_TCP}:{REDIS}"),
    ]);
    run_ok(&mut apply);

    // No process holds the datapath now: the pinned programs enforce on their own.
    assert!(
        reaches(&bed.employee, &bed.db, REDIS),
        "the employee is still allowed"
    );
    assert!(
        connect(&bed.stranger, bed.db.ip, REDIS).is_err(),
        "the stranger is still dropped"
    );
    let mut kept = connect(&bed.employee, bed.db.ip, REDIS).expect("connects");

    // A new agent (this process) loads, checks the pins and swaps its programs into the
    // links, while the stranger keeps trying: not one attempt may get through.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = Arc::clone(&stop);
        let ns = bed.stranger.ns.path();
        let target = bed.db.ip;
        std::thread::spawn(move || {
            let ns = std::fs::File::open(ns).expect("netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let mut tries = 0;
            let mut passed = 0;
            while !stop.load(Ordering::Relaxed) {
                tries += 1;
                if TcpStream::connect_timeout(
                    &SocketAddr::from((target, REDIS)),
                    Duration::from_millis(200),
                )
                .is_ok()
                {
                    passed += 1;
                }
            }
            (tries, passed)
        })
    };
    let mut dp = Datapath::open(&datapath_config(&bed.pins, tc_attach))
        .expect("a new agent opens the pinned datapath");
    let taken = dp.reattach_pinned().expect("takes over the links");
    // What the new agent may adopt without rewiring: an endpoint exactly as the old one
    // wired it (with pinned links, so TCX only); any difference means wiring it again.
    for (id, pod, identity) in bed.pods() {
        let as_wired = Endpoint {
            ips: vec![pod.ip.into()],
            ..pod.endpoint(id, identity)
        };
        assert_eq!(
            dp.adopt_endpoint(&as_wired),
            tc_attach == TcAttachMode::Tcx,
            "endpoint {id} as it was wired ({tc_attach:?})"
        );
        let other_identity = Endpoint {
            identity: identity + 1,
            ..as_wired.clone()
        };
        assert!(
            !dp.adopt_endpoint(&other_identity),
            "{id}: another identity"
        );
        assert!(
            !dp.adopt_endpoint(&pod.endpoint(id, identity)),
            "{id}: its IPv6 address was never in the endpoints map"
        );
    }
    if tc_attach == TcAttachMode::Netlink {
        // No links are pinned: the restored endpoints are attached again, replacing the
        // filters in place, with the policy they had.
        for (id, pod, identity) in bed.pods() {
            let policy = if id == 3 {
                PolicyMap::new([
                    (
                        key(
                            EMPLOYEE,
                            Direction::Ingress,
                            L4Match::port(PROTO_TCP, REDIS),
                        ),
                        Verdict::Allow,
                    ),
                    (PolicyKey::allow_all(Direction::Egress), Verdict::Allow),
                ])
            } else {
                PolicyMap::allow_all()
            };
            dp.attach_endpoint(&pod.endpoint(id, identity), &policy)
                .expect("the new agent replaces the filters");
        }
    }
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::Relaxed);
    let (tries, passed) = prober.join().expect("prober");
    let pinned_links = if tc_attach == TcAttachMode::Tcx { 6 } else { 0 };
    assert_eq!(
        taken, pinned_links,
        "two links for each of three endpoints (TCX)"
    );
    assert!(
        tries >= 2,
        "the prober ran during the takeover ({tries} tries)"
    );
    assert_eq!(passed, 0, "the stranger got through during the takeover");
    assert!(
        echoes(&mut kept),
        "the employee's connection lived through the takeover"
    );

    // The new agent's maps are the old ones: it sees the policy and changes it.
    let entries = dp.policy(3).expect("policy");
    assert!(
        entries
            .iter()
            .any(|e| e.key.identity == EMPLOYEE && e.verdict == Verdict::Allow),
        "{entries:?}"
    );
    dp.set_policy(3, &PolicyMap::allow_all()).expect("policy");
    assert!(
        reaches(&bed.stranger, &bed.db, REDIS),
        "the new agent's change takes effect"
    );
    // Uninstall: nothing of ours is left on the veths, whichever the attachment.
    dp.remove_pins().expect("remove the datapath");
    drop(dp);
    for (_, pod, _) in bed.pods() {
        for direction in ["ingress", "egress"] {
            let out = bed
                .node
                .command("tc")
                .args(["filter", "show", "dev", &pod.host_ifname, direction])
                .output()
                .expect("tc");
            let filters = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                !filters.contains("cil_"),
                "{} {direction}: {filters}",
                pod.host_ifname
            );
        }
    }
}

in_both_attach_modes!(bad_requests_fail_closed: bad_requests_fail_closed_with_clear_errors, bad_requests_fail_closed_with_classic_tc);

fn bad_requests_fail_closed(tc_attach: TcAttachMode) {
    let bed = Bed::attaching(tc_attach);
    let config = DatapathConfig {
        policy_map_max: 256,
        ..datapath_config(&bed.pins, bed.tc_attach)
    };
    let mut dp = Datapath::open(&config).expect("datapath");
    let db = bed.db.endpoint(3, DB);
    dp.attach_endpoint(&db, &PolicyMap::allow_all())
        .expect("attach");
    serve(&bed.db, REDIS);
    assert!(reaches(&bed.employee, &bed.db, REDIS));

    // A policy larger than the map: refused, and the endpoint is locked down, not left open.
    let huge = ingress((0..300).map(|i| {
        (
            key(5000 + i, Direction::Ingress, L4Match::Any),
            Verdict::Allow,
        )
    }));
    let err = dp.set_policy(3, &huge).expect_err("does not fit");
    assert!(
        err.to_string()
            .contains("needs 301 map entries but the map holds 256"),
        "{err}"
    );
    assert!(
        dp.policy(3).expect("entries").is_empty(),
        "locked down: no entry, everything dropped"
    );
    assert!(
        connect(&bed.employee, bed.db.ip, REDIS).is_err(),
        "locked down endpoints drop traffic"
    );

    let err = dp
        .attach_endpoint(
            &Endpoint {
                id: 0,
                ..db.clone()
            },
            &PolicyMap::allow_all(),
        )
        .expect_err("id 0");
    assert!(
        err.to_string().contains("endpoint id 0 is reserved"),
        "{err}"
    );
    let err = dp
        .attach_endpoint(
            &Endpoint {
                id: 9,
                ifname: "no-such-if".into(),
                ..db.clone()
            },
            &PolicyMap::allow_all(),
        )
        .expect_err("no interface");
    assert!(err.to_string().contains("no-such-if"), "{err}");
    let err = dp
        .set_policy(77, &PolicyMap::allow_all())
        .expect_err("unknown endpoint");
    assert!(err.to_string().contains("endpoint 77"), "{err}");
    let err = Datapath::open(&DatapathConfig {
        policy_map_max: 10,
        ..datapath_config(&bed.pins, bed.tc_attach)
    })
    .err()
    .expect("bad size");
    assert!(
        err.to_string()
            .contains("policy map size 10 is outside 256..=65536"),
        "{err}"
    );
    drop(dp);

    // A pin of another shape under the same name is refused, not reused.
    let stale = config.pin_dir().join("cilium_ipcache");
    std::fs::remove_file(&stale).expect("remove the ipcache pin");
    aya::maps::HashMap::<_, u32, u32>::create(4, 0)
        .expect("map")
        .pin(&stale)
        .expect("pin");
    let err = Datapath::open(&config).err().expect("incompatible pin");
    assert!(err.to_string().contains("has another shape"), "{err}");
}

fn run_ok(command: &mut Command) {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
