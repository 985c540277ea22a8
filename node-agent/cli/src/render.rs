//! What the `cilium` command prints, as pure functions of the API's models: tables laid
//! out as Cilium's (multi-line cells for labels), status lines, monitor lines.

use cilium_agent_api::{
    BpfEndpointModel, ClusterMeshStatus, ControllerStatus, CtEntryModel, EndpointModel,
    IdentityModel, IpcacheEntryModel, KvPair, LbEntryModel, MonitorEvent, MonitorEventType,
    MonitorMessage, NodeModel, PolicyMapModel, PrefilterModel, SelectorModel, ServiceModel,
    StatusResponse,
};

/// Columns separated by three spaces; a cell with several lines makes its row that tall.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let longest = cell.lines().map(str::len).max().unwrap_or(0);
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(longest);
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        out.push_str(text.join("   ").trim_end());
        out.push('\n');
    };
    line(headers);
    for row in rows {
        let cells: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
        let height = cells.iter().map(Vec::len).max().unwrap_or(0).max(1);
        for n in 0..height {
            let parts: Vec<&str> = (0..headers.len())
                .map(|i| cells.get(i).and_then(|c| c.get(n)).copied().unwrap_or(""))
                .collect();
            line(&parts);
        }
    }
    out
}

fn enabled(on: bool) -> String {
    if on { "Enabled" } else { "Disabled" }.into()
}

pub fn endpoints(endpoints: &[EndpointModel]) -> String {
    let rows: Vec<Vec<String>> = endpoints
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                enabled(e.ingress_enforced),
                enabled(e.egress_enforced),
                e.identity.to_string(),
                e.labels.join("\n"),
                e.ipv4.to_string(),
                e.state.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ENDPOINT",
            "POLICY (ingress)",
            "POLICY (egress)",
            "IDENTITY",
            "LABELS (source:key[=value])",
            "IPv4",
            "STATUS",
        ],
        &rows,
    )
}

pub fn identities(identities: &[IdentityModel]) -> String {
    let rows: Vec<Vec<String>> = identities
        .iter()
        .map(|i| vec![i.id.to_string(), i.labels.join("\n")])
        .collect();
    table(&["ID", "LABELS"], &rows)
}

fn or_empty(value: Option<impl ToString>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

pub fn nodes(nodes: &[NodeModel]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                or_empty(n.ipv4),
                or_empty(n.ipv4_alloc_cidr),
                or_empty(n.ipv6),
                or_empty(n.ipv6_alloc_cidr),
                n.source.clone(),
            ]
        })
        .collect();
    table(
        &[
            "Name",
            "IPv4 Address",
            "Endpoint CIDR",
            "IPv6 Address",
            "Endpoint CIDR",
            "Source",
        ],
        &rows,
    )
}

pub fn selectors(selectors: &[SelectorModel]) -> String {
    let rows: Vec<Vec<String>> = selectors
        .iter()
        .map(|s| {
            let ids: Vec<String> = s.identities.iter().map(ToString::to_string).collect();
            vec![s.selector.clone(), ids.join("\n")]
        })
        .collect();
    table(&["SELECTOR", "IDENTITIES"], &rows)
}

pub fn policy_map(map: &PolicyMapModel) -> String {
    let rows: Vec<Vec<String>> = map
        .entries
        .iter()
        .map(|e| {
            vec![
                e.verdict.clone(),
                e.direction.clone(),
                e.identity.to_string(),
                e.labels.join("\n"),
                e.port_protocol.clone(),
                e.bytes.to_string(),
                e.packets.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "POLICY",
            "DIRECTION",
            "IDENTITY",
            "LABELS (source:key[=value])",
            "PORT/PROTO",
            "BYTES",
            "PACKETS",
        ],
        &rows,
    )
}

pub fn ipcache(entries: &[IpcacheEntryModel]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let tunnel = e
                .tunnel_endpoint
                .map_or_else(|| "0.0.0.0".to_owned(), |t| t.to_string());
            vec![
                e.prefix.to_string(),
                format!("identity={} tunnelendpoint={tunnel}", e.identity),
            ]
        })
        .collect();
    table(&["IP PREFIX/ADDRESS", "IDENTITY"], &rows)
}

pub fn bpf_endpoints(entries: &[BpfEndpointModel]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.ip.to_string(),
                format!(
                    "id={:<5} sec_id={:<6} flags=0x{:04x} ifindex={:<3} mac={} nodemac={}",
                    e.id, e.identity, e.flags, e.ifindex, e.mac, e.node_mac
                ),
            ]
        })
        .collect();
    table(&["IP ADDRESS", "LOCAL ENDPOINT INFO"], &rows)
}

/// Cilium's `bpf lb list`: each frontend's backends with the frontend's reverse-NAT id and
/// the slot, then the service entry itself (slot 0).
pub fn lb_entries(entries: &[LbEntryModel]) -> String {
    let mut rows = Vec::new();
    for entry in entries {
        let mut frontend = entry.frontend.to_string();
        for (slot, backend) in (1..).zip(&entry.backends) {
            rows.push(vec![
                std::mem::take(&mut frontend),
                format!(
                    "{} ({}) ({slot})",
                    address(backend.address.ip, backend.address.port),
                    entry.rev_nat_id
                ),
            ]);
        }
        let unspecified = match entry.frontend.ip {
            std::net::IpAddr::V4(_) => "0.0.0.0:0",
            std::net::IpAddr::V6(_) => "[::]:0",
        };
        let affinity = entry
            .affinity_timeout_seconds
            .map(|t| format!(" [ClientIP affinity {t}s]"))
            .unwrap_or_default();
        rows.push(vec![
            frontend,
            format!(
                "{unspecified} ({}) (0) [ClusterIP]{affinity}",
                entry.rev_nat_id
            ),
        ]);
    }
    table(
        &["SERVICE ADDRESS", "BACKEND ADDRESS (REVNAT_ID) (SLOT)"],
        &rows,
    )
}

fn address(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

pub fn ct_entries(entries: &[CtEntryModel]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {} -> {} expires={} Packets={} RxPackets={} SourceSecurityID={} endpoint={}\n",
                e.protocol,
                e.direction,
                address(e.src, e.sport),
                address(e.dst, e.dport),
                e.expires_in_seconds,
                e.packets,
                e.reply_packets,
                e.peer_identity,
                e.endpoint_id
            )
        })
        .collect()
}

/// `key => value`, as `cilium kvstore get` prints.
pub fn kv_pairs(pairs: &[KvPair]) -> String {
    pairs
        .iter()
        .map(|p| format!("{} => {}\n", p.key, p.value))
        .collect()
}

pub fn prefilter(model: &PrefilterModel) -> String {
    let devices = if model.devices.is_empty() {
        "none (the prefilter is off)".to_owned()
    } else {
        model.devices.join(", ")
    };
    let rows: Vec<Vec<String>> = model
        .entries
        .iter()
        .map(|e| {
            vec![
                e.cidr.to_string(),
                e.packets.to_string(),
                e.bytes.to_string(),
            ]
        })
        .collect();
    format!(
        "Devices: {devices}\nPassed: {}, dropped: {}\n{}",
        model.passed,
        model.dropped,
        table(&["CIDR", "DROPPED PACKETS", "DROPPED BYTES"], &rows)
    )
}

fn status_line(out: &mut String, name: &str, value: &str) {
    out.push_str(format!("{:<24}{value}", format!("{name}:")).trim_end());
    out.push('\n');
}

fn controllers_healthy(controllers: &[ControllerStatus]) -> String {
    let healthy = controllers.iter().filter(|c| c.is_healthy()).count();
    format!("{healthy}/{} healthy", controllers.len())
}

pub fn status(status: &StatusResponse, verbose: bool) -> String {
    let mut out = String::new();
    let health = |h: &cilium_agent_api::Health| format!("{:<4} {}", h.state.to_string(), h.msg);
    status_line(&mut out, "KVStore", &health(&status.kvstore));
    status_line(&mut out, "Kubernetes", &health(&status.kubernetes));
    status_line(&mut out, "Cilium", &health(&status.cilium));
    status_line(
        &mut out,
        "Node",
        &format!(
            "{} ({}), cluster {} (id {})",
            status.node_name, status.node_ip, status.cluster_name, status.cluster_id
        ),
    );
    let cidrs: Vec<String> = status.ipam.cidrs.iter().map(ToString::to_string).collect();
    status_line(
        &mut out,
        "IPAM",
        &format!(
            "IPv4: {}/{} allocated from {}",
            status.ipam.used,
            status.ipam.total,
            cidrs.join(", ")
        ),
    );
    if verbose {
        for (ip, owner) in &status.ipam.allocations {
            out.push_str(&format!("  {ip} ({owner})\n"));
        }
    }
    status_line(&mut out, "Endpoints", &status.endpoints.to_string());
    status_line(&mut out, "Policy enforcement", &status.policy_enforcement);
    status_line(
        &mut out,
        "Controller Status",
        &controllers_healthy(&status.controllers),
    );
    if verbose {
        let rows: Vec<Vec<String>> = status
            .controllers
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.last_success.clone().unwrap_or_else(|| "never".into()),
                    c.last_failure.clone().unwrap_or_else(|| "never".into()),
                    format!("{}/{}", c.success_count, c.failure_count),
                    c.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let text = table(
            &[
                "Name",
                "Last success",
                "Last failure",
                "Runs (ok/failed)",
                "Last error",
            ],
            &rows,
        );
        for line in text.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    match &status.cluster_health {
        Some(health) => {
            status_line(
                &mut out,
                "Cluster health",
                &format!("{}/{} reachable", health.reachable, health.total),
            );
            for node in health.nodes.iter().filter(|n| verbose || n.error.is_some()) {
                let state = match (&node.error, node.latency_ms) {
                    (Some(error), _) => format!("unreachable: {error}"),
                    (None, Some(ms)) => format!("reachable ({ms:.1} ms)"),
                    (None, None) => "reachable".into(),
                };
                out.push_str(&format!("  {} ({}): {state}\n", node.name, node.ip));
            }
        }
        None => status_line(&mut out, "Cluster health", "probing not done yet"),
    }
    if let Some(mesh) = &status.cluster_mesh {
        cluster_mesh(&mut out, mesh, verbose);
    }
    status_line(
        &mut out,
        "Monitor",
        &format!("{} events lost", status.monitor_events_lost),
    );
    out
}

/// Cilium's `ClusterMesh: 1/1 clusters ready, 0 global-services` and, verbose or for a
/// cluster that is not ready, a line per cluster.
fn cluster_mesh(out: &mut String, mesh: &ClusterMeshStatus, verbose: bool) {
    status_line(
        out,
        "ClusterMesh",
        &format!(
            "{}/{} clusters ready, {} global-services",
            mesh.ready(),
            mesh.clusters.len(),
            mesh.num_global_services
        ),
    );
    for cluster in mesh.clusters.iter().filter(|c| verbose || !c.ready) {
        let state = if cluster.ready {
            "ready".to_owned()
        } else {
            format!("not-ready ({})", cluster.status)
        };
        let last = cluster.last_failure.as_deref().unwrap_or("never");
        out.push_str(&format!(
            "   {}: {state}, {} nodes, {} endpoints, {} identities, {} services, {} failures (last: {last})\n",
            cluster.name,
            cluster.num_nodes,
            cluster.num_endpoints,
            cluster.num_identities,
            cluster.num_services,
            cluster.num_failures,
        ));
        let connected = usize::from(cluster.connected);
        let mut etcd = format!(
            "   └  etcd: {connected}/1 connected, {}",
            cluster.endpoints.join(", ")
        );
        if let Some(id) = cluster.cluster_id {
            etcd.push_str(&format!(", cluster id {id}"));
        }
        if cluster.num_invalid_values > 0 {
            etcd.push_str(&format!(", {} values refused", cluster.num_invalid_values));
            if let Some(last) = &cluster.last_invalid_value {
                etcd.push_str(&format!(" (last: {last})"));
            }
        }
        if cluster.withdrawn {
            etcd.push_str(", entries withdrawn");
        }
        out.push_str(&etcd);
        out.push('\n');
    }
}

/// `cilium service list`: ID, frontend, type, and one backend per line.
pub fn services(services: &[ServiceModel]) -> String {
    let mut rows = Vec::new();
    for service in services {
        let mut backends: Vec<String> = service
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{} => {} ({})", i + 1, b.address, b.cluster))
            .collect();
        if backends.is_empty() {
            backends.push(String::new());
        }
        for (i, frontend) in service.frontends.iter().enumerate() {
            for (j, backend) in backends.iter().enumerate() {
                let first = i == 0 && j == 0;
                let kind = match (j, service.global) {
                    (0, true) => format!("{} (global)", service.service_type),
                    (0, false) => service.service_type.clone(),
                    _ => String::new(),
                };
                rows.push(vec![
                    if first {
                        service.id.to_string()
                    } else {
                        String::new()
                    },
                    if j == 0 {
                        frontend.to_string()
                    } else {
                        String::new()
                    },
                    kind,
                    backend.clone(),
                ]);
            }
        }
    }
    table(&["ID", "Frontend", "Service Type", "Backend"], &rows)
}

fn protocol(number: u8) -> String {
    match number {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => format!("proto {other}"),
    }
}

fn flow(event: &MonitorEvent) -> String {
    format!(
        "{} -> {} {}",
        address(event.src, event.sport),
        address(event.dst, event.dport),
        protocol(event.protocol)
    )
}

/// One monitor line, as `cilium monitor` prints it. `as_verdicts`: the reader asked for
/// policy verdicts, so policy drops print as `action deny` verdicts.
pub fn monitor_message(message: &MonitorMessage, as_verdicts: bool) -> String {
    let event = match message {
        MonitorMessage::Lost(count) => return format!("Lost {count} events"),
        MonitorMessage::Event(event) => event,
    };
    let verdict =
        event.kind == MonitorEventType::PolicyVerdict || (as_verdicts && event.is_policy_verdict());
    if verdict {
        let remote = if event.direction == "ingress" {
            event.src_identity
        } else {
            event.dst_identity
        };
        let action = if event.kind == MonitorEventType::Drop {
            "deny"
        } else {
            "allow"
        };
        format!(
            "Policy verdict log: flow 0x0 local EP ID {}, remote ID {remote}, proto {}, {}, action {action}, {}",
            event.endpoint_id,
            event.protocol,
            event.direction,
            flow(event)
        )
    } else {
        let side = if event.direction == "ingress" {
            "to"
        } else {
            "from"
        };
        format!(
            "xx drop ({}) flow 0x0 {side} endpoint {}, ifindex {}, identity {}->{}: {}",
            event.reason_name,
            event.endpoint_id,
            event.ifindex,
            event.src_identity,
            event.dst_identity,
            flow(event)
        )
    }
}

#[cfg(test)]
mod tests {
    use cilium_agent_api::{EndpointStateName, Health, HealthState, IpamStatus};

    use super::*;

    /// `cilium endpoint list` of the source document ("What's inside cilium-etcd"),
    /// with the health endpoint's row.
    #[test]
    fn endpoint_list_has_ciliums_columns_and_one_label_per_line() {
        let endpoint = EndpointModel {
            id: 2489,
            container_id: "c".into(),
            k8s_namespace: "default".into(),
            k8s_pod_name: "redis".into(),
            interface_name: "lxc1".into(),
            ipv4: "10.2.2.2".parse().expect("ip"),
            identity: 42222,
            labels: vec![
                "k8s:app=redis".into(),
                "k8s:io.kubernetes.pod.namespace=default".into(),
            ],
            state: EndpointStateName::Ready,
            ingress_enforced: true,
            egress_enforced: false,
        };
        let text = endpoints(&[endpoint]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ENDPOINT   POLICY (ingress)   POLICY (egress)   IDENTITY   LABELS (source:key[=value])               IPv4       STATUS"
        );
        assert_eq!(
            lines[1],
            "2489       Enabled            Disabled          42222      k8s:app=redis                             10.2.2.2   ready"
        );
        assert_eq!(
            lines[2],
            "                                                           k8s:io.kubernetes.pod.namespace=default"
        );
        assert_eq!(lines.len(), 3);
    }

    fn event(kind: MonitorEventType, reason: u16, direction: &str) -> MonitorEvent {
        MonitorEvent {
            kind,
            direction: direction.into(),
            endpoint_id: 1234,
            reason,
            reason_name: if reason == 133 {
                "Policy denied".into()
            } else {
                "Forwarded".into()
            },
            src_identity: 31_001,
            dst_identity: 31_000,
            src: "10.200.0.5".parse().expect("ip"),
            dst: "10.200.4.7".parse().expect("ip"),
            protocol: 6,
            sport: 40_000,
            dport: 6379,
            ifindex: 7,
            packet_len: 74,
            timestamp_ns: 1,
        }
    }

    #[test]
    fn monitor_lines_as_cilium_prints_them() {
        let drop = MonitorMessage::Event(event(MonitorEventType::Drop, 133, "ingress"));
        assert_eq!(
            monitor_message(&drop, false),
            "xx drop (Policy denied) flow 0x0 to endpoint 1234, ifindex 7, identity 31001->31000: 10.200.0.5:40000 -> 10.200.4.7:6379 tcp"
        );
        assert_eq!(
            monitor_message(&drop, true),
            "Policy verdict log: flow 0x0 local EP ID 1234, remote ID 31001, proto 6, ingress, action deny, 10.200.0.5:40000 -> 10.200.4.7:6379 tcp"
        );
        let allowed = MonitorMessage::Event(event(MonitorEventType::PolicyVerdict, 0, "egress"));
        assert!(
            monitor_message(&allowed, false)
                .contains("remote ID 31000, proto 6, egress, action allow")
        );
        assert_eq!(
            monitor_message(&MonitorMessage::Lost(3), false),
            "Lost 3 events"
        );
    }

    #[test]
    fn status_lines_and_controller_health() {
        let controller = |name: &str, failures| ControllerStatus {
            name: name.into(),
            success_count: 4,
            failure_count: failures,
            consecutive_failures: failures,
            last_success: Some("2026-11-23T10:00:00Z".into()),
            last_failure: None,
            last_error: (failures > 0).then(|| "apiserver: connection refused".into()),
            last_duration_seconds: 0.01,
        };
        let response = StatusResponse {
            node_name: "node-1".into(),
            cluster_name: "default".into(),
            cluster_id: 0,
            node_ip: "192.168.60.11".parse().expect("ip"),
            router_ip: "10.200.0.1".parse().expect("ip"),
            health_ip: None,
            ipam: IpamStatus {
                cidrs: vec!["10.200.0.0/22".parse().expect("cidr")],
                used: 5,
                total: 1022,
                allocations: vec![("10.200.0.1".parse().expect("ip"), "router".into())],
            },
            endpoints: 3,
            kubernetes: Health::new(HealthState::Ok, "1.20 (v1.20.15) [linux/amd64]"),
            kvstore: Health::new(HealthState::Disabled, "no kvstore configured"),
            cilium: Health::new(HealthState::Ok, ""),
            policy_enforcement: "default".into(),
            controllers: vec![
                controller("sync-routes", 0),
                controller("report-ipam-usage", 2),
            ],
            cluster_health: Some(cilium_agent_api::ClusterHealth {
                reachable: 1,
                total: 2,
                nodes: vec![
                    cilium_agent_api::NodeHealth {
                        name: "default/node-1".into(),
                        ip: "192.168.60.11".parse().expect("ip"),
                        latency_ms: Some(0.25),
                        error: None,
                    },
                    cilium_agent_api::NodeHealth {
                        name: "default/node-2".into(),
                        ip: "192.168.60.12".parse().expect("ip"),
                        latency_ms: None,
                        error: Some("connection refused".into()),
                    },
                ],
            }),
            monitor_events_lost: 0,
            cluster_mesh: None,
        };
        let text = status(&response, false);
        assert!(
            text.contains("KVStore:                Disabled no kvstore configured\n"),
            "{text}"
        );
        assert!(
            text.contains("Kubernetes:             Ok   1.20 (v1.20.15) [linux/amd64]\n"),
            "{text}"
        );
        assert!(
            text.contains("IPAM:                   IPv4: 5/1022 allocated from 10.200.0.0/22\n"),
            "{text}"
        );
        assert!(
            text.contains("Controller Status:      1/2 healthy\n"),
            "{text}"
        );
        assert!(!text.contains("router"), "{text}");
        assert!(
            text.contains("Cluster health:         1/2 reachable\n"),
            "{text}"
        );
        assert!(
            text.contains("  default/node-2 (192.168.60.12): unreachable: connection refused\n"),
            "{text}"
        );
        assert!(
            !text.contains("default/node-1 ("),
            "only problems unless verbose: {text}"
        );
        let verbose = status(&response, true);
        assert!(verbose.contains("10.200.0.1 (router)"), "{verbose}");
        assert!(
            verbose.contains("apiserver: connection refused"),
            "{verbose}"
        );
        assert!(
            verbose.contains("  default/node-1 (192.168.60.11): reachable (0.2 ms)\n"),
            "{verbose}"
        );
    }

    #[test]
    fn the_cluster_mesh_section_as_cilium_prints_it() {
        let ready = cilium_agent_api::RemoteClusterStatus {
            name: "cluster2".into(),
            cluster_id: Some(102),
            ready: true,
            connected: true,
            endpoints: vec!["https://127.0.0.1:2379".into()],
            status: "ready".into(),
            num_nodes: 1,
            num_identities: 3,
            num_endpoints: 4,
            num_services: 1,
            ..Default::default()
        };
        let gone = cilium_agent_api::RemoteClusterStatus {
            name: "cluster3".into(),
            status: "etcd did not answer within 5s".into(),
            num_failures: 2,
            last_failure: Some("2026-11-23T10:00:00Z".into()),
            withdrawn: true,
            ..Default::default()
        };
        let mesh = ClusterMeshStatus {
            clusters: vec![ready, gone],
            num_global_services: 1,
        };
        let mut quiet = String::new();
        cluster_mesh(&mut quiet, &mesh, false);
        assert_eq!(
            quiet,
            "ClusterMesh:            1/2 clusters ready, 1 global-services\n   \
             cluster3: not-ready (etcd did not answer within 5s), 0 nodes, 0 endpoints, 0 identities, 0 services, 2 failures (last: 2026-11-23T10:00:00Z)\n   \
             └  etcd: 0/1 connected, , entries withdrawn\n"
        );
        let mut verbose = String::new();
        cluster_mesh(&mut verbose, &mesh, true);
        assert!(verbose.contains(
            "   cluster2: ready, 1 nodes, 4 endpoints, 3 identities, 1 services, 0 failures (last: never)\n   └  etcd: 1/1 connected, https://127.0.0.1:2379, cluster id 102\n"
        ), "{verbose}");
    }

    #[test]
    fn services_list_a_backend_per_line() {
        let address = |ip: &str| cilium_agent_api::ServiceAddress {
            ip: ip.parse().expect("ip"),
            port: 6379,
            protocol: "TCP".into(),
        };
        let service = ServiceModel {
            id: 1,
            namespace: "default".into(),
            name: "protected-db".into(),
            service_type: "ClusterIP".into(),
            global: true,
            frontends: vec![address("10.96.0.20")],
            backends: vec![
                cilium_agent_api::BackendModel {
                    address: address("10.210.0.5"),
                    cluster: "cluster1".into(),
                },
                cilium_agent_api::BackendModel {
                    address: address("10.211.0.5"),
                    cluster: "cluster2".into(),
                },
            ],
        };
        assert_eq!(
            services(&[service]),
            [
                "ID   Frontend              Service Type         Backend",
                "1    10.96.0.20:6379/TCP   ClusterIP (global)   1 => 10.210.0.5:6379/TCP (cluster1)",
                "                                                2 => 10.211.0.5:6379/TCP (cluster2)",
                "",
            ]
            .join("\n")
        );
    }

    #[test]
    fn lb_entries_list_backends_by_slot_then_the_service_entry() {
        let address = |ip: &str, port| cilium_agent_api::ServiceAddress {
            ip: ip.parse().expect("ip"),
            port,
            protocol: "TCP".into(),
        };
        let entries = [LbEntryModel {
            frontend: address("10.96.0.10", 80),
            rev_nat_id: 3,
            affinity_timeout_seconds: None,
            backends: vec![
                cilium_agent_api::LbBackendModel {
                    id: 7,
                    address: address("10.0.1.5", 8080),
                },
                cilium_agent_api::LbBackendModel {
                    id: 9,
                    address: address("10.0.2.6", 8080),
                },
            ],
        }];
        let text = lb_entries(&entries);
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                "SERVICE ADDRESS     BACKEND ADDRESS (REVNAT_ID) (SLOT)",
                "10.96.0.10:80/TCP   10.0.1.5:8080 (3) (1)",
                "                    10.0.2.6:8080 (3) (2)",
                "                    0.0.0.0:0 (3) (0) [ClusterIP]",
            ]
        );
    }
}
