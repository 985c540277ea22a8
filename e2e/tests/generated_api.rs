//! Requests of every shape sent to a live agent's API socket (proptest; `PROPTEST_CASES`
//! sets how many: 256 in `make test`, 20,000 in `make chaos`): junk paths on every route,
//! every method, bodies that are empty, junk text, arbitrary JSON, the API's own request
//! bodies with a field broken, nesting past any parser's depth, and bodies past the size
//! taken. Every one gets an answer, never a server error, and every refusal says why; the
//! agent's endpoints, addresses and devices are what they were.

use std::time::Duration;

use e2e::cluster::{AgentNode, Cluster, agent_get, agent_request};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// The API's routes, `{}` where a path parameter goes (the monitor streams forever, so
/// it is not among them).
const ROUTES: &[&str] = &[
    "/v1/healthz",
    "/v1/ipam",
    "/v1/ipam/{}",
    "/v1/endpoint",
    "/v1/endpoint/{}",
    "/v1/identity",
    "/v1/identity/{}",
    "/v1/cluster/nodes",
    "/v1/service",
    "/v1/policy",
    "/v1/policy/selectors",
    "/v1/map/policy/{}",
    "/v1/map/ipcache",
    "/v1/map/endpoints",
    "/v1/map/ct",
    "/v1/map/lb",
    "/v1/kvstore/{}",
    "/v1/prefilter",
    "/v1/{}",
    "/{}",
];

const METHODS: &[&str] = &[
    "GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW",
];

/// Every byte outside unreserved characters percent-encoded, so the request line stays
/// one line whatever the text (the parameter's own value is what is being tried).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Path parameters: none of them names an endpoint, an address or a key that exists
/// (endpoint ids 1..=65535 and the node's pool are left out), so nothing can be changed.
fn parameter() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("65536".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("container-id:".to_owned()),
        "[a-z0-9]{1,20}".prop_map(|c| format!("container-id:generated-{c}")),
        Just("203.0.113.7".to_owned()),
        Just("10.0.0.256".to_owned()),
        Just("::1".to_owned()),
        Just("%00".to_owned()),
        Just("%ff%fe".to_owned()),
        "9{300,600}",
        "\\PC{1,40}".prop_map(|t| encode(&t)),
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => "\\PC{0,40}".prop_map(|q| format!("?{}", encode(&q))),
        1 => Just("?type=drop&type=&from=%zz".to_owned()),
    ]
}

/// Arbitrary JSON whose object keys are none of the API's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(1e308)),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["", "x", "0", "Owner", "ipv4 ", "ids", "\u{0}"]),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// An endpoint creation or an address request with one field broken: an endpoint's
/// `ipv4` is never an IPv4 address, an owner never a non-empty string, so neither can
/// succeed.
fn broken_request() -> impl Strategy<Value = String> {
    let endpoint = (
        prop::sample::select(vec![
            json!(""),
            json!("300.1.1.1"),
            json!(5),
            json!(null),
            json!("::1"),
        ]),
        prop::sample::select(vec![
            "container-id",
            "interface-name",
            "netns",
            "mac",
            "sync-build",
        ]),
        json_value(),
    )
        .prop_map(|(ipv4, field, value)| {
            let mut request = json!({
                "container-id": "generated", "k8s-namespace": "default",
                "k8s-pod-name": "generated", "interface-name": "lxcgenerated",
                "pod-interface-name": "eth0", "netns": "/var/run/netns/none",
                "ipv4": ipv4, "mac": "02:00:00:00:00:01", "host-mac": "02:00:00:00:00:02",
            });
            request[field] = value;
            request.to_string()
        });
    let owner = prop::sample::select(vec![
        json!(""),
        json!(7),
        json!(null),
        json!(["a"]),
        json!({}),
    ])
    .prop_map(|owner| json!({ "owner": owner }).to_string());
    prop_oneof![endpoint, owner]
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        3 => "\\PC{0,200}",
        4 => json_value().prop_map(|v| v.to_string()),
        4 => broken_request(),
        1 => (100usize..5_000).prop_map(|depth| "[".repeat(depth) + &"]".repeat(depth)),
        1 => (100usize..5_000).prop_map(|depth| "{\"x\":".repeat(depth) + "1" + &"}".repeat(depth)),
        // Past the size the API takes.
        1 => Just("x".repeat(3 << 20)),
    ]
}

#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    body: String,
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop::sample::select(METHODS),
        prop::sample::select(ROUTES),
        parameter(),
        query(),
        body(),
    )
        .prop_map(|(method, route, parameter, query, body)| Request {
            method,
            path: route.replace("{}", &parameter) + &query,
            body,
        })
}

/// What must hold of the agent's answer to `request`.
fn check(node: &AgentNode, request: &Request) -> Result<(), TestCaseError> {
    let answer = agent_request(&node.socket(), request.method, &request.path, &request.body);
    let Some((status, body)) = answer else {
        return Err(TestCaseError::fail("no answer within 5 s"));
    };
    prop_assert!(
        status < 500,
        "a server error {status}: {}",
        body.chars().take(300).collect::<String>()
    );
    if status >= 400 && request.method != "HEAD" {
        let why = match serde_json::from_str::<Value>(&body) {
            Ok(error) => error["error"].as_str().unwrap_or_default().to_owned(),
            Err(_) => body.clone(),
        };
        prop_assert!(
            !why.trim().is_empty(),
            "a {status} that says nothing: {body:?}"
        );
    }
    Ok(())
}

/// The agent's endpoints (id, container), its address pool's use, the node's devices.
fn state(
    node: &AgentNode,
) -> (
    Vec<(Value, Value)>,
    Value,
    std::collections::BTreeSet<String>,
) {
    let (_, endpoints) = agent_get(&node.socket(), "/v1/endpoint").expect("endpoints");
    let endpoints: Vec<Value> = serde_json::from_str(&endpoints).expect("endpoints JSON");
    let endpoints = endpoints
        .iter()
        .map(|e| (e["id"].clone(), e["container-id"].clone()))
        .collect();
    let (_, status) = agent_get(&node.socket(), "/v1/healthz").expect("status");
    let status: Value = serde_json::from_str(&status).expect("status JSON");
    (endpoints, status["ipam"].clone(), node.ns.links())
}

#[test]
fn generated_requests_get_a_clear_answer_and_change_nothing() {
    let cluster = Cluster::start(1).expect("cluster");
    let labels = e2e::cluster::app_labels("web");
    // Held to the end: dropping the pod takes its netns and veth away.
    let _pod = cluster.nodes[0]
        .add_pod(&cluster.bed, "default", "web", &labels)
        .expect("a pod");
    let node = &cluster.nodes[0];
    let pid = node.agent_pid();
    let before = state(node);
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&request(), |request| check(node, &request));
    if let Err(e) = outcome {
        panic!("{e}\n{}", node.agent_log());
    }
    assert_eq!(node.agent_pid(), pid, "the agent never restarted");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        state(node),
        before,
        "endpoints, addresses and devices are as they were"
    );
    drop(cluster);
}
