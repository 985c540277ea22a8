//! The `cilium` command on cluster-in-a-box, each output checked against the real state:
//! the CiliumEndpoints and CiliumIdentities in the apiserver, the CiliumNodes, the policy
//! applied, the kvstore's keys, and traffic between pods (a stranger's SYN dropped and
//! seen by `cilium monitor`, the XDP prefilter cutting a pod off). The agents' and the
//! operator's `/metrics` are checked against the same state. Needs root.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::ClusterBed;
use e2e::cluster::{AgentNode, Cluster, Setup, app_labels};
use e2e::operator::{built_binary, http_get};
use e2e::traffic::{connect, echoes, reaches, serve_echo};
use e2e::wait_for;
use serde_json::Value;

const REDIS: u16 = 6379;
const SETTLE: Duration = Duration::from_secs(60);
const METRICS_PORT: u16 = 9962;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn cilium_binary() -> PathBuf {
    built_binary("cilium").expect("the cilium binary is built")
}

/// `cilium -H <node's socket> args...`.
fn cilium(node: &AgentNode, args: &[&str]) -> Output {
    Command::new(cilium_binary())
        .arg("-H")
        .arg(node.socket())
        .args(args)
        .output()
        .expect("cilium runs")
}

/// Stdout of a command that must succeed.
fn ok(node: &AgentNode, args: &[&str]) -> String {
    let output = cilium(node, args);
    assert!(
        output.status.success(),
        "cilium {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn json(node: &AgentNode, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&ok(node, &all)).expect("JSON output")
}

/// The one line of stderr of a command that must fail with exit code 1.
fn fails(node: &AgentNode, args: &[&str]) -> String {
    let output = cilium(node, args);
    assert_eq!(output.status.code(), Some(1), "cilium {args:?}: {output:?}");
    assert!(output.stdout.is_empty(), "nothing on stdout: {output:?}");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    stderr
}

/// A running `cilium monitor`; its stdout lines arrive on a channel.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(node: &AgentNode, args: &[&str]) -> Self {
        let mut child = Command::new(cilium_binary())
            .arg("-H")
            .arg(node.socket())
            .arg("monitor")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cilium monitor starts");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The first line `wanted` accepts within `timeout`, while `poke` runs between reads.
    fn expect(
        &self,
        what: &str,
        timeout: Duration,
        mut poke: impl FnMut(),
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            poke();
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                if wanted(&line) {
                    return line;
                }
                seen.push(line);
            }
        }
        panic!("no {what} in the monitor's output: {seen:#?}");
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

fn cep(cluster: &Cluster, name: &str) -> Value {
    cluster
        .bed
        .get("cep", Some("default"), name)
        .expect("kubectl get cep")
}

#[test]
fn every_command_shows_the_real_state() {
    let bed = ClusterBed::start().expect("bed");
    let mut setup = Setup::standard(&bed, 2);
    setup.agent_flags.extend([
        format!("--prometheus-serve-addr=127.0.0.1:{METRICS_PORT}"),
        "--enable-xdp-prefilter".into(),
        "--devices=eth0".into(),
        "--cluster-health-interval=1s".into(),
    ]);
    let mut cluster = Cluster::start_on(bed, setup).expect("cluster-in-a-box with two nodes");
    let bed = &cluster.bed;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let db = n1
        .add_pod(bed, "default", "protected-db", &app_labels("protected-db"))
        .expect("db");
    let employee = n2
        .add_pod(bed, "default", "employee", &app_labels("employee"))
        .expect("employee");
    let stranger = n2
        .add_pod(bed, "default", "stranger", &app_labels("stranger"))
        .expect("stranger");
    serve_echo(&db.ns, REDIS);
    wait_for("three ready endpoints", SETTLE, || {
        (cluster.ready_endpoints().ok()? == 3).then_some(())
    });
    let identity_of = |name: &str| {
        cep(&cluster, name)["status"]["identity"]["id"]
            .as_u64()
            .expect("CEP identity")
    };
    let (db_id, employee_id, stranger_id) = (
        identity_of("protected-db"),
        identity_of("employee"),
        identity_of("stranger"),
    );

    // endpoint list / get: the pod wired by CNI, with the identity of its CiliumEndpoint.
    let endpoints = json(n1, &["endpoint", "list"]);
    let listed = endpoints
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["ipv4"] == db.ip.to_string())
        .expect("the db endpoint is listed")
        .clone();
    assert_eq!(listed["identity"].as_u64(), Some(db_id));
    assert_eq!(listed["k8s-pod-name"], "protected-db");
    let endpoint_id = listed["id"].as_u64().expect("id");
    assert_eq!(
        cep(&cluster, "protected-db")["status"]["id"].as_u64(),
        Some(endpoint_id)
    );
    let table = ok(n1, &["endpoint", "list"]);
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    for column in [
        "ENDPOINT",
        "POLICY (ingress)",
        "POLICY (egress)",
        "IDENTITY",
        "LABELS (source:key[=value])",
        "IPv4",
        "STATUS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines
        .find(|l| l.contains(&db.ip.to_string()))
        .expect("db row");
    for cell in [
        endpoint_id.to_string(),
        db_id.to_string(),
        "Disabled".into(),
        "ready".into(),
    ] {
        assert!(row.contains(&cell), "{cell} in {row:?}");
    }
    assert!(table.contains("k8s:app=protected-db"), "{table}");
    let got = json(n1, &["endpoint", "get", &endpoint_id.to_string()]);
    assert_eq!(got["ipv4"], db.ip.to_string());

    // identity list / get: the reserved ones and every CiliumIdentity of the cluster.
    let identities = json(n1, &["identity", "list"]);
    let known: BTreeSet<u64> = identities
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|i| i["id"].as_u64())
        .collect();
    for reserved in [1, 2, 3, 4, 5, 6] {
        assert!(known.contains(&reserved), "reserved {reserved}: {known:?}");
    }
    for object in bed.list("ciliumidentities.cilium.io").expect("list") {
        let id: u64 = object["metadata"]["name"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .expect("numeric name");
        assert!(known.contains(&id), "CiliumIdentity {id} not listed");
    }
    let identity = json(n1, &["identity", "get", &db_id.to_string()]);
    let labels = identity["labels"].to_string();
    assert!(labels.contains("k8s:app=protected-db"), "{labels}");
    assert!(ok(n1, &["identity", "list"]).contains("reserved:world"));

    // node list: both nodes with the CIDRs of their CiliumNodes.
    let nodes = json(n1, &["node", "list"]);
    for node in &cluster.nodes {
        let listed = nodes
            .as_array()
            .expect("array")
            .iter()
            .find(|n| n["name"] == format!("default/{}", node.name))
            .unwrap_or_else(|| panic!("{} not in {nodes}", node.name));
        assert_eq!(listed["ipv4"], node.ip.to_string());
        let cidr = cluster.pod_cidr(node).expect("kubectl get cn");
        assert!(!cidr.is_empty());
        assert_eq!(listed["ipv4-alloc-cidr"], cidr, "{listed}");
    }
    assert!(ok(n1, &["node", "list"]).contains("default/node-2"));

    // The document's policy: the employee reaches the db, the stranger does not.
    let policy = repo_root().join("examples/policies/protected-db.yaml");
    bed.kubectl_run(&["apply", "-f", policy.to_str().expect("UTF-8 path")], None)
        .expect("apply");
    wait_for(
        "the stranger blocked and the employee admitted",
        SETTLE,
        || {
            (!reaches(&stranger.ns, db.ip, REDIS) && reaches(&employee.ns, db.ip, REDIS))
                .then_some(())
        },
    );

    // policy get / selectors: the rule as held, the selector cache's selections.
    let policy = json(n1, &["policy", "get"]);
    assert!(policy["revision"].as_u64() > Some(0));
    let rule = &policy["policy"][0];
    assert_eq!(
        rule["endpointSelector"]["matchLabels"]["any:app"],
        "protected-db"
    );
    assert_eq!(rule["ingress"][0]["toPorts"][0]["ports"][0]["port"], "6379");
    assert!(rule["labels"].to_string().contains("protected-db-l4"));
    let selectors = json(n1, &["policy", "selectors"]);
    let employee_selector = selectors
        .as_array()
        .expect("array")
        .iter()
        .find(|s| {
            let text = s["selector"].as_str().unwrap_or_default();
            text.contains("any:app=employee")
                && text.contains("k8s:io.kubernetes.pod.namespace=default")
        })
        .expect("the default employee selector is cached");
    assert_eq!(
        employee_selector["identities"],
        serde_json::json!([employee_id])
    );

    // bpf policy get: the db's map admits the employee's identity on 6379/TCP only.
    let map = json(n1, &["bpf", "policy", "get", &endpoint_id.to_string()]);
    let entries = map["entries"].as_array().expect("entries");
    let ingress: Vec<&Value> = entries
        .iter()
        .filter(|e| e["direction"] == "Ingress")
        .collect();
    assert!(
        ingress
            .iter()
            .any(|e| e["identity"].as_u64() == Some(employee_id)
                && e["port-protocol"] == "6379/TCP"
                && e["verdict"] == "Allow"),
        "{map}"
    );
    assert!(
        ingress
            .iter()
            .all(|e| e["identity"].as_u64() != Some(stranger_id)),
        "{map}"
    );
    assert!(
        ingress.iter().all(|e| e["identity"].as_u64() != Some(0)),
        "ingress is enforced: no wildcard entry: {map}"
    );
    let table = ok(n1, &["bpf", "policy", "get", &endpoint_id.to_string()]);
    assert!(table.contains("k8s:app=employee"), "{table}");
    let row = ok(n1, &["endpoint", "list"]);
    let row = row
        .lines()
        .find(|l| l.contains(&db.ip.to_string()))
        .expect("db row");
    assert!(
        row.contains("Enabled            Disabled"),
        "ingress enforced: {row}"
    );

    // monitor: the stranger's SYN dropped with both identities and the reason.
    let drops = Monitor::start(
        n1,
        &[
            "--type",
            "drop",
            "--related-to",
            &endpoint_id.to_string(),
            "-o",
            "json",
        ],
    );
    let verdicts = Monitor::start(n1, &["--type", "policy-verdict"]);
    let line = drops.expect(
        "the stranger's dropped SYN",
        SETTLE,
        || {
            let _ = reaches(&stranger.ns, db.ip, REDIS);
        },
        |line| line.contains(&format!("\"src\":\"{}\"", stranger.ip)),
    );
    let message: Value = serde_json::from_str(&line).expect("JSON line");
    let event = &message["event"];
    assert_eq!(event["type"], "drop");
    assert_eq!(event["reason"], 133);
    assert_eq!(event["reason-name"], "Policy denied");
    assert_eq!(event["src-identity"].as_u64(), Some(stranger_id));
    assert_eq!(event["dst-identity"].as_u64(), Some(db_id));
    assert_eq!(event["dst"], db.ip.to_string());
    assert_eq!(event["dport"], REDIS);
    assert_eq!(event["protocol"], 6);
    assert_eq!(event["endpoint-id"].as_u64(), Some(endpoint_id));
    let denied = verdicts.expect(
        "a deny verdict for the stranger",
        SETTLE,
        || {},
        |line| line.contains(&format!("remote ID {stranger_id}")),
    );
    assert!(denied.contains("action deny"), "{denied}");
    assert!(
        denied.contains(&format!("{}:{REDIS} tcp", db.ip)),
        "{denied}"
    );
    let allowed = verdicts.expect(
        "an allow verdict for the employee",
        SETTLE,
        || {
            let _ = reaches(&employee.ns, db.ip, REDIS);
        },
        |line| line.contains(&format!("remote ID {employee_id}")),
    );
    assert!(allowed.contains("action allow, "), "{allowed}");
    drop(drops);
    drop(verdicts);

    // bpf ipcache / endpoint / ct: what the datapath holds.
    let ipcache = json(n1, &["bpf", "ipcache", "list"]);
    let entry = |ip: std::net::Ipv4Addr| {
        ipcache
            .as_array()
            .expect("array")
            .iter()
            .find(|e| e["prefix"] == format!("{ip}/32"))
            .unwrap_or_else(|| panic!("{ip} not in the ipcache: {ipcache}"))
            .clone()
    };
    assert_eq!(entry(employee.ip)["identity"].as_u64(), Some(employee_id));
    assert_eq!(
        entry(employee.ip)["tunnel-endpoint"],
        n2.ip.to_string(),
        "remote pods are reached through their node"
    );
    assert_eq!(entry(db.ip)["identity"].as_u64(), Some(db_id));
    let lxc = json(n1, &["bpf", "endpoint", "list"]);
    let local = lxc
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["ip"] == db.ip.to_string())
        .expect("db in cilium_lxc");
    assert_eq!(local["id"].as_u64(), Some(endpoint_id));
    assert_eq!(local["identity"].as_u64(), Some(db_id));
    let mut held = connect(&employee.ns, db.ip, REDIS).expect("employee connects");
    assert!(echoes(&mut held));
    let ct = json(n1, &["bpf", "ct", "list", "global"]);
    assert!(
        ct.as_array()
            .expect("array")
            .iter()
            .any(|e| e["src"] == employee.ip.to_string()
                && e["dport"] == REDIS
                && e["peer-identity"].as_u64() == Some(employee_id)),
        "{ct}"
    );
    assert!(ok(n1, &["bpf", "ct", "list"]).contains(&format!("{}:{REDIS}", db.ip)));

    // kvstore get: the keys the operator mirrors (the kvstore issue's layout).
    let nodes = json(
        n1,
        &["kvstore", "get", "--recursive", "cilium/state/nodes/v1/"],
    );
    let keys: BTreeSet<&str> = nodes
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["key"].as_str())
        .collect();
    assert!(
        keys.contains("cilium/state/nodes/v1/default/node-1"),
        "{keys:?}"
    );
    assert!(
        keys.contains("cilium/state/nodes/v1/default/node-2"),
        "{keys:?}"
    );
    let ip_key = format!("cilium/state/ip/v1/default/{}", db.ip);
    wait_for("the db's address in the kvstore", SETTLE, || {
        let output = cilium(n1, &["kvstore", "get", &ip_key]);
        output.status.success().then_some(())
    });
    let text = ok(n1, &["kvstore", "get", &ip_key]);
    assert!(text.starts_with(&format!("{ip_key} => ")), "{text}");
    assert!(text.contains(&format!("\"ID\":{db_id}")), "{text}");
    // The key travels as one path segment, `%` and `/` included.
    let missing = fails(n1, &["kvstore", "get", "cilium/state/no such key 100%"]);
    assert!(
        missing.contains("no key \"cilium/state/no such key 100%\""),
        "{missing}"
    );

    // prefilter: the employee's address dropped at node-1's device, then admitted again.
    let cidr = format!("{}/32", employee.ip);
    let updated = json(n1, &["prefilter", "update", &cidr]);
    assert_eq!(updated["entries"][0]["cidr"], cidr);
    assert_eq!(updated["devices"], serde_json::json!(["eth0"]));
    wait_for("the employee cut off by the prefilter", SETTLE, || {
        (!reaches(&employee.ns, db.ip, REDIS)).then_some(())
    });
    let listed = json(n1, &["prefilter", "list"]);
    assert!(
        listed["entries"][0]["packets"].as_u64() > Some(0),
        "{listed}"
    );
    assert!(ok(n1, &["prefilter", "list"]).contains(&cidr));
    ok(n1, &["prefilter", "delete", "--cidr", &cidr]);
    assert!(reaches(&employee.ns, db.ip, REDIS), "admitted again");
    assert_eq!(
        json(n1, &["prefilter", "list"])["entries"],
        serde_json::json!([])
    );
    let bad = fails(n1, &["prefilter", "update", "10.0.0.300/8"]);
    assert!(bad.contains("invalid CIDR \"10.0.0.300/8\""), "{bad}");
    let absent = fails(n1, &["prefilter", "delete", "192.0.2.0/24"]);
    assert!(absent.contains("not in the prefilter"), "{absent}");
    let off = fails(n2, &["prefilter", "list", "--output", "yaml"]);
    assert!(off.contains("only json"), "{off}");

    // status: the kvstore, the apiserver, IPAM, endpoints, controllers.
    let status = json(n1, &["status"]);
    assert_eq!(status["kvstore"]["state"], "Ok", "{status}");
    assert_eq!(status["kubernetes"]["state"], "Ok", "{status}");
    assert_eq!(status["endpoints"], 1);
    let text = ok(n1, &["status"]);
    assert!(
        text.contains("KVStore:                Ok   etcd: "),
        "{text}"
    );
    assert!(text.contains("Kubernetes:             Ok   "), "{text}");
    assert!(text.contains(" [linux/"), "the apiserver's version: {text}");
    assert!(
        text.contains(&format!(
            "IPAM:                   IPv4: {}/{} allocated from {}",
            status["ipam"]["used"],
            status["ipam"]["total"],
            status["ipam"]["cidrs"][0].as_str().expect("cidr")
        )),
        "{text}"
    );
    let controllers = status["controllers"].as_array().expect("controllers").len();
    assert!(controllers >= 5, "{status}");
    assert!(
        text.contains(&format!(
            "Controller Status:      {controllers}/{controllers} healthy"
        )),
        "{text}"
    );
    let verbose = ok(n1, &["status", "--verbose"]);
    assert!(verbose.contains("sync-cilium-endpoints"), "{verbose}");
    assert!(
        verbose.contains(&format!("{} (default/protected-db)", db.ip)),
        "{verbose}"
    );

    // Metrics of the agent (in node-1's namespace) and of the operator.
    let metrics = n1
        .ns
        .run(|| http_get(METRICS_PORT, "/metrics"))
        .expect("netns");
    assert_eq!(
        metric(
            &metrics,
            r#"cilium_endpoint_state{endpoint_state="ready"} "#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            r#"cilium_drop_count_total{reason="Policy denied",direction="INGRESS"} "#
        ) >= Some(1.0),
        "{metrics}"
    );
    let map_name = format!("cilium_policy_v2_{endpoint_id:05}");
    assert_eq!(
        metric(
            &metrics,
            &format!(r#"cilium_policy_map_entries{{map_name="{map_name}"}} "#)
        ),
        Some(entries.len() as f64),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            &format!(r#"cilium_bpf_map_pressure{{map_name="{map_name}"}} "#)
        ) > Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"cilium_policy_endpoint_enforcement_status{enforcement="ingress"} "#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "cilium_policy "), Some(1.0), "{metrics}");
    assert!(
        metric(&metrics, r#"cilium_identity{type="cluster_local"} "#) >= Some(3.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            r#"cilium_kvstore_operations_duration_seconds_count{action="Get",kind="cli",outcome="success"} "#
        ) >= Some(2.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            r#"cilium_controllers_runs_total{status="success"} "#
        ) > Some(0.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "cilium_controllers_failing "), Some(0.0));
    let operator = http_get(cluster.operator.api_port, "/metrics");
    assert_eq!(
        metric(&operator, "cilium_operator_is_leader "),
        Some(1.0),
        "{operator}"
    );
    assert!(
        metric(&operator, "cilium_operator_identities ") >= Some(3.0),
        "{operator}"
    );
    assert!(
        metric(&operator, "cilium_operator_kvstore_operations_total ") > Some(0.0),
        "{operator}"
    );
    assert!(operator.contains("cilium_operator_node_reconcile_duration_seconds_count"));

    // Errors a person understands, one line each with exit code 1.
    let unknown = fails(n1, &["endpoint", "get", "4242"]);
    assert!(unknown.contains("no endpoint 4242"), "{unknown}");
    let bad_id = fails(n1, &["bpf", "policy", "get", "abc"]);
    assert!(bad_id.contains("\"abc\" is not an endpoint id"), "{bad_id}");
    let no_identity = fails(n1, &["identity", "get", "99999"]);
    assert!(no_identity.contains("no identity 99999"), "{no_identity}");
    // Cluster health: node-1 reaches both agents, then not node-2's once it is gone.
    wait_for("both nodes reachable", SETTLE, || {
        ok(n1, &["status"])
            .contains("Cluster health:         2/2 reachable\n")
            .then_some(())
    });
    let verbose = ok(n1, &["status", "--verbose"]);
    assert!(
        verbose.contains(&format!("  default/node-2 ({}): reachable (", n2.ip)),
        "{verbose}"
    );

    let down = Command::new(cilium_binary())
        .args(["-H", "/nonexistent/cilium.sock", "status"])
        .output()
        .expect("runs");
    assert_eq!(down.status.code(), Some(1));
    let down = String::from_utf8_lossy(&down.stderr);
    assert!(down.contains("cilium-agent is not running"), "{down}");
    // A copy any user may run: the checkout may sit in a directory only root can enter.
    let public = std::env::temp_dir().join(format!("cilium-cli-{}", std::process::id()));
    std::fs::create_dir_all(&public).expect("dir");
    let copy = public.join("cilium");
    std::fs::copy(cilium_binary(), &copy).expect("copy");
    for path in [&public, &copy] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let unprivileged = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .arg("-H")
        .arg(n1.socket())
        .arg("status")
        .output()
        .expect("setpriv runs");
    assert_eq!(unprivileged.status.code(), Some(1), "{unprivileged:?}");
    let denied = String::from_utf8_lossy(&unprivileged.stderr);
    assert!(denied.contains("permission denied"), "{denied}");
    assert_eq!(denied.lines().count(), 1, "{denied}");
    let _ = std::fs::remove_dir_all(&public);

    cluster.nodes[1].kill_agent();
    let n1 = &cluster.nodes[0];
    wait_for("node-2 unreachable", SETTLE, || {
        let status = json(n1, &["status"]);
        let health = &status["cluster-health"];
        (health["reachable"] == 1 && health["total"] == 2).then_some(())
    });
    let text = ok(n1, &["status"]);
    assert!(
        text.contains(&format!(
            "  default/node-2 ({}): unreachable: ",
            cluster.nodes[1].ip
        )),
        "{text}"
    );
}
