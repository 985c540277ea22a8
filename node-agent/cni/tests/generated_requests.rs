//! What a container runtime (or anyone who can run the plugin) may hand `cilium-cni`:
//! generated environments and stdin, from plausible to absurd. Every request is either
//! accepted with exactly the checked fields, or refused with a CNI error code and a message;
//! the plugin never panics. `PROPTEST_CASES` sets how many (256 by default).

use std::collections::BTreeMap;

use cilium_cni::request::request;
use proptest::prelude::*;
use serde_json::{Value, json};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9_.-]{1,70}",
        "[ -~]{0,20}",
        Just("x".repeat(5000)),
        any::<String>(),
    ]
}

fn environment() -> impl Strategy<Value = BTreeMap<String, String>> {
    // Mostly right values, so that requests get past the first check often enough.
    let command = prop_oneof![
        3 => Just("ADD".to_owned()),
        3 => Just("DEL".to_owned()),
        1 => Just("CHECK".to_owned()),
        1 => Just("VERSION".to_owned()),
        1 => text()
    ];
    let args = prop_oneof![
        4 => Just("K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-0".to_owned()),
        1 => Just("IgnoreUnknown=1;K8S_POD_NAMESPACE=default".to_owned()),
        1 => Just("=;;==".to_owned()),
        1 => text(),
    ];
    (
        prop::option::weighted(0.95, command),
        prop::option::weighted(0.95, prop_oneof![3 => "[a-f0-9]{64}", 1 => text()]),
        prop::option::weighted(
            0.95,
            prop_oneof![3 => Just("/var/run/netns/cni-1".to_owned()), 1 => text()],
        ),
        prop::option::weighted(0.95, prop_oneof![3 => Just("eth0".to_owned()), 1 => text()]),
        prop::option::weighted(0.95, args),
    )
        .prop_map(|(command, container, netns, ifname, args)| {
            [
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", args),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect()
        })
}

fn stdin() -> impl Strategy<Value = Vec<u8>> {
    let version = prop_oneof![
        3 => Just(json!("1.0.0")),
        1 => Just(json!("0.4.0")),
        1 => Just(json!("0.3.1")),
        1 => Just(json!("9.9.9")),
        1 => Just(json!(1)),
        1 => text().prop_map(Value::String),
    ];
    let conf = (
        prop::option::weighted(0.95, version),
        prop::option::weighted(0.95, text()),
        prop::option::weighted(
            0.95,
            prop_oneof![3 => Just("cilium-cni".to_owned()), 1 => text()],
        ),
        prop::option::of(prop_oneof![
            Just(json!("/var/run/cilium/cilium.sock")),
            Just(json!(7)),
            text().prop_map(Value::String)
        ]),
    )
        .prop_map(|(version, name, type_, socket)| {
            let mut conf = serde_json::Map::new();
            for (key, value) in [
                ("cniVersion", version),
                ("name", name.map(Value::String)),
                ("type", type_.map(Value::String)),
                ("socket-path", socket),
            ] {
                if let Some(value) = value {
                    conf.insert(key.to_owned(), value);
                }
            }
            serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
        });
    prop_oneof![
        3 => conf,
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #[test]
    fn requests_are_checked_or_refused_with_a_code_and_a_message(env in environment(), input in stdin()) {
        match request(&env, &input) {
            Ok(accepted) => {
                prop_assert!(!accepted.container_id.is_empty());
                prop_assert!(accepted.container_id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
                prop_assert!(!accepted.ifname.is_empty() && accepted.ifname.len() <= 15);
                prop_assert!(!accepted.ifname.contains('/'));
            }
            Err(refused) => {
                prop_assert!(refused.code > 0, "{refused:?}");
                prop_assert!(!refused.msg.trim().is_empty(), "{refused:?}");
            }
        }
    }
}

/// The generator reaches acceptance as well as refusal.
#[test]
fn the_generator_reaches_accepted_requests() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (environment(), stdin());
    let accepted = (0..2000)
        .filter(|_| {
            let (env, input) = strategy.new_tree(&mut runner).expect("input").current();
            request(&env, &input).is_ok()
        })
        .count();
    assert!(
        accepted >= 5,
        "{accepted} of 2000 generated requests accepted"
    );
}
