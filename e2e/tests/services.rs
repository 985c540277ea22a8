//! Service load-balancing in the datapath with real traffic: a pod's connection to a
//! frontend (a ClusterIP) goes to one of its backends before the egress policy sees it, the
//! replies come back from the frontend, a connection keeps its backend, and new ones spread.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use cilium_datapath::lb::{BackendAddr, Frontend, LbTable, ServiceMaps, ServiceSpec};
use cilium_datapath::policy::{PROTO_TCP, PROTO_UDP};
use cilium_datapath::{Direction, L4Match, PolicyKey, PolicyMap, Verdict, abi};
use e2e::node_bed::{Bed, DB};
use e2e::traffic::{self, banner, echoes};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn frontend(port: u16, protocol: u8) -> Frontend {
    Frontend {
        ip: IpAddr::V4(VIP),
        port,
        protocol,
    }
}

fn at(ip: Ipv4Addr, port: u16) -> BackendAddr {
    BackendAddr {
        ip: IpAddr::V4(ip),
        port,
    }
}

fn table(services: &[(Frontend, &[BackendAddr])]) -> LbTable {
    LbTable {
        services: services
            .iter()
            .map(|(f, backends)| {
                let spec = ServiceSpec {
                    backends: backends.iter().copied().collect(),
                    ..Default::default()
                };
                (*f, spec)
            })
            .collect(),
    }
}

#[test]
fn frontends_are_balanced_to_backends_before_the_policy() {
    let bed = Bed::start();
    let mut dp = bed.datapath();
    let mut lb = ServiceMaps::open(dp.pin_dir()).expect("the service maps");
    traffic::serve_banner(&bed.db.ns, 6379, "db");
    traffic::serve_banner(&bed.stranger.ns, 6379, "stranger");
    traffic::serve_udp_echo(&bed.db.ns, 5353);
    traffic::serve_echo(&bed.db.ns, 7000);
    traffic::serve_echo(&bed.stranger.ns, 7000);
    let (db, stranger) = (bed.db.ip, bed.stranger.ip);

    let redis = frontend(80, PROTO_TCP);
    let dns = frontend(53, PROTO_UDP);
    let echo = frontend(70, PROTO_TCP);
    let two_backends = [at(db, 6379), at(stranger, 6379)];
    lb.apply(&table(&[
        (redis, &two_backends),
        (dns, &[at(db, 5353)]),
        (echo, &[at(db, 7000)]),
    ]))
    .expect("apply");
    let listed = lb.entries().expect("entries");
    assert_eq!(listed.len(), 3, "{listed:#?}");
    assert!(listed.iter().all(|e| e.affinity_timeout_s.is_none()));

    // New connections spread over both backends, and each gets its answer from the frontend
    // (the handshake completes only if the replies carry the frontend's address).
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..40 {
        let who = banner(&bed.employee.ns, VIP, 80).unwrap_or_else(|| "nobody".into());
        *answered.entry(who).or_default() += 1;
    }
    println!("40 connections to {VIP}:80: {answered:?}");
    assert_eq!(answered.get("nobody"), None, "{answered:?}");
    assert!(
        answered.get("db").is_some_and(|n| *n >= 5)
            && answered.get("stranger").is_some_and(|n| *n >= 5),
        "both backends get connections: {answered:?}"
    );

    // `sessionAffinity: ClientIP`: every connection of a client goes to one backend.
    let sticky = frontend(81, PROTO_TCP);
    let mut with_affinity = table(&[
        (redis, &two_backends),
        (dns, &[at(db, 5353)]),
        (echo, &[at(db, 7000)]),
        (sticky, &two_backends),
    ]);
    if let Some(spec) = with_affinity.services.get_mut(&sticky) {
        spec.affinity_timeout_s = Some(60);
    }
    lb.apply(&with_affinity).expect("apply");
    let chosen: std::collections::BTreeSet<Option<String>> =
        (0..20).map(|_| banner(&bed.employee.ns, VIP, 81)).collect();
    assert_eq!(chosen.len(), 1, "one backend for the client: {chosen:?}");
    assert!(chosen.iter().all(Option::is_some), "{chosen:?}");

    // UDP too: the reply comes from the frontend.
    assert!(
        traffic::udp_reaches(&bed.employee.ns, VIP, 53),
        "UDP through the frontend"
    );

    // A live connection keeps its backend when another one joins the service.
    let mut stream = traffic::connect(&bed.employee.ns, VIP, 70).expect("connect the echo");
    assert!(echoes(&mut stream));
    lb.apply(&table(&[
        (redis, &two_backends),
        (dns, &[at(db, 5353)]),
        (echo, &[at(stranger, 7000), at(db, 7000)]),
    ]))
    .expect("apply");
    for _ in 0..10 {
        assert!(echoes(&mut stream), "the connection stays on its backend");
    }

    // Its backend starts terminating (still serving): the connection stays, new
    // connections to the frontend go to the ready backends only.
    let mut draining = table(&[
        (redis, &[at(stranger, 6379)]),
        (dns, &[at(db, 5353)]),
        (echo, &[at(stranger, 7000)]),
    ]);
    for (f, terminating) in [(&redis, at(db, 6379)), (&echo, at(db, 7000))] {
        if let Some(spec) = draining.services.get_mut(f) {
            spec.terminating.insert(terminating);
        }
    }
    lb.apply(&draining).expect("apply");
    assert!(
        echoes(&mut stream),
        "a terminating backend keeps its connection"
    );
    let fresh: std::collections::BTreeSet<Option<String>> =
        (0..10).map(|_| banner(&bed.employee.ns, VIP, 80)).collect();
    assert_eq!(
        fresh,
        [Some("stranger".to_owned())].into_iter().collect(),
        "new ones avoid it"
    );
    lb.apply(&table(&[
        (redis, &two_backends),
        (dns, &[at(db, 5353)]),
        (echo, &[at(stranger, 7000), at(db, 7000)]),
    ]))
    .expect("apply");

    // The egress policy meets the backend: the employee may reach only the db's identity on
    // 6379. Without the translation it would see the frontend (world) and drop everything.
    let egress_to_db = PolicyMap::new([
        (PolicyKey::allow_all(Direction::Ingress), Verdict::Allow),
        (
            PolicyKey {
                identity: DB,
                direction: Direction::Egress,
                l4: L4Match::port(PROTO_TCP, 6379),
            },
            Verdict::Allow,
        ),
    ]);
    dp.set_policy(1, &egress_to_db).expect("policy");
    dp.drain_events();
    let mut under_policy: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..16 {
        let who = banner(&bed.employee.ns, VIP, 80).unwrap_or_else(|| "dropped".into());
        *under_policy.entry(who).or_default() += 1;
    }
    println!("16 connections under the egress policy: {under_policy:?}");
    assert!(
        under_policy.get("db").is_some_and(|n| *n > 0),
        "{under_policy:?}"
    );
    assert_eq!(under_policy.get("stranger"), None, "{under_policy:?}");
    let events = dp.drain_events();
    assert!(
        events.iter().any(|e| e.endpoint_id == 1
            && e.reason == u16::from(abi::DROP_POLICY)
            && e.dst == IpAddr::V4(stranger)),
        "the drops name the stranger backend, not the frontend: {events:#?}"
    );

    // A frontend that leaves the table is no longer translated.
    dp.set_policy(1, &PolicyMap::allow_all()).expect("policy");
    lb.apply(&table(&[(dns, &[at(db, 5353)])])).expect("apply");
    assert_eq!(
        banner(&bed.employee.ns, VIP, 80),
        None,
        "nothing answers the old frontend"
    );
    assert_eq!(lb.entries().expect("entries").len(), 1);
}
