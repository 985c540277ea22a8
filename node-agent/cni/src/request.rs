//! What the runtime asks: `CNI_*` variables and the network configuration on stdin.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::result::{CniError, codes};

/// The CNI versions whose results this plugin writes.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// The plugin's entry in a `.conflist` (or a single `.conf`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// The agent's API socket (default: Cilium's `/var/run/cilium/cilium.sock`).
    #[serde(rename = "socket-path")]
    pub socket_path: Option<PathBuf>,
}

/// A checked ADD/DEL/CHECK request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub container_id: String,
    /// Empty on DEL when the runtime no longer has the namespace.
    pub netns: String,
    pub ifname: String,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub conf: NetConf,
}

impl Request {
    /// `<namespace>/<pod>`: the IPAM owner and the endpoint's name in logs.
    pub fn pod(&self) -> Option<String> {
        Some(format!(
            "{}/{}",
            self.pod_namespace.as_ref()?,
            self.pod_name.as_ref()?
        ))
    }

    /// The host side of the pod's veth: `lxc` + 12 hex digits of the container id's SHA-256,
    /// stable across retries and within the kernel's 15 characters.
    pub fn host_ifname(&self) -> String {
        format!("lxc{}", &hex_digest(&self.container_id)[..12])
    }

    /// The veth's pod end before it moves and takes its final name (`eth0` may exist on
    /// the host).
    pub fn temporary_ifname(&self) -> String {
        format!("tmp{}", &hex_digest(&self.container_id)[..12])
    }
}

fn hex_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `CNI_COMMAND`.
pub fn command(env: &BTreeMap<String, String>) -> Result<Command, CniError> {
    match env.get("CNI_COMMAND").map(String::as_str) {
        Some("ADD") => Ok(Command::Add),
        Some("DEL") => Ok(Command::Del),
        Some("CHECK") => Ok(Command::Check),
        Some("VERSION") => Ok(Command::Version),
        Some(other) => Err(CniError::new(
            codes::INVALID_ENVIRONMENT,
            format!("unknown CNI_COMMAND {other:?}"),
            "supported: ADD, DEL, CHECK, VERSION",
        )),
        None => Err(CniError::new(
            codes::INVALID_ENVIRONMENT,
            "CNI_COMMAND is not set",
            "supported: ADD, DEL, CHECK, VERSION",
        )),
    }
}

/// The network configuration on stdin, checked.
pub fn net_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            codes::DECODING_FAILURE,
            "the network configuration on stdin is not valid",
            e.to_string(),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!("CNI version {} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    if conf.name.trim().is_empty() {
        return Err(CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            "the network configuration has an empty name",
            "",
        ));
    }
    Ok(conf)
}

/// `CNI_ARGS`: `K=V;K=V`.
fn cni_args(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    CniError::new(
                        codes::INVALID_ENVIRONMENT,
                        format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"),
                        "",
                    )
                })
        })
        .collect()
}

/// The ADD/DEL/CHECK request from the environment and stdin.
pub fn request(env: &BTreeMap<String, String>, stdin: &[u8]) -> Result<Request, CniError> {
    let command = command(env)?;
    let conf = net_conf(stdin)?;
    let required = |name: &str| {
        env.get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| {
                CniError::new(codes::INVALID_ENVIRONMENT, format!("{name} is not set"), "")
            })
    };
    let container_id = required("CNI_CONTAINERID")?;
    if !container_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(CniError::new(
            codes::INVALID_ENVIRONMENT,
            format!(
                "CNI_CONTAINERID {container_id:?} has characters other than letters, digits, '_', '.', '-'"
            ),
            "",
        ));
    }
    let ifname = required("CNI_IFNAME")?;
    if ifname.len() > 15 || ifname.contains('/') || ifname.contains(char::is_whitespace) {
        return Err(CniError::new(
            codes::INVALID_ENVIRONMENT,
            format!(
                "CNI_IFNAME {ifname:?} is not an interface name (at most 15 characters, no '/' or spaces)"
            ),
            "",
        ));
    }
    let netns = match command {
        Command::Del => env.get("CNI_NETNS").cloned().unwrap_or_default(),
        _ => required("CNI_NETNS")?,
    };
    if command == Command::Check && conf.cni_version.starts_with("0.3") {
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!("CHECK is not defined for CNI version {}", conf.cni_version),
            "CHECK needs 0.4.0 or later",
        ));
    }
    let args = cni_args(env.get("CNI_ARGS").map(String::as_str).unwrap_or_default())?;
    let pod_namespace = args.get("K8S_POD_NAMESPACE").cloned();
    let pod_name = args.get("K8S_POD_NAME").cloned();
    if command == Command::Add && (pod_namespace.is_none() || pod_name.is_none()) {
        return Err(CniError::new(
            codes::INVALID_ENVIRONMENT,
            "CNI_ARGS must name the pod (K8S_POD_NAMESPACE and K8S_POD_NAME)",
            "",
        ));
    }
    Ok(Request {
        command,
        container_id,
        netns,
        ifname,
        pod_namespace,
        pod_name,
        conf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"cilium","type":"cilium-cni"}"#;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn add_env() -> BTreeMap<String, String> {
        env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/p1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            ),
        ])
    }

    #[test]
    fn a_kubelet_add() {
        let request = request(&add_env(), CONF.as_bytes()).expect("valid");
        assert_eq!(request.command, Command::Add);
        assert_eq!(request.pod().as_deref(), Some("default/web-0"));
        assert_eq!(request.conf.socket_path, None);
        let host = request.host_ifname();
        assert!(host.starts_with("lxc") && host.len() == 15, "{host}");
        assert_eq!(host, request.host_ifname(), "stable");
        assert_ne!(host[3..], request.temporary_ifname()[..12]);
    }

    #[test]
    fn bad_requests_get_the_specs_codes() {
        let code = |env: &BTreeMap<String, String>, stdin: &str| {
            request(env, stdin.as_bytes()).expect_err("rejected").code
        };
        assert_eq!(code(&add_env(), "garbage"), codes::DECODING_FAILURE);
        assert_eq!(code(&add_env(), ""), codes::DECODING_FAILURE);
        assert_eq!(
            code(
                &add_env(),
                r#"{"cniVersion":"2.0.0","name":"c","type":"cilium-cni"}"#
            ),
            codes::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            code(
                &add_env(),
                r#"{"cniVersion":"1.0.0","name":" ","type":"cilium-cni"}"#
            ),
            codes::INVALID_NETWORK_CONFIG
        );
        for (key, value) in [
            ("CNI_COMMAND", "FROB"),
            ("CNI_CONTAINERID", ""),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "a-very-long-interface"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default"),
            ("CNI_ARGS", "broken"),
        ] {
            let mut env = add_env();
            env.insert(key.into(), value.into());
            assert_eq!(
                code(&env, CONF),
                codes::INVALID_ENVIRONMENT,
                "{key}={value}"
            );
        }
        let mut env = add_env();
        env.remove("CNI_COMMAND");
        assert_eq!(code(&env, CONF), codes::INVALID_ENVIRONMENT);
    }

    #[test]
    fn del_without_a_namespace_is_fine() {
        let mut env = add_env();
        env.insert("CNI_COMMAND".into(), "DEL".into());
        env.remove("CNI_NETNS");
        env.remove("CNI_ARGS");
        let request = request(&env, CONF.as_bytes()).expect("valid");
        assert_eq!(request.command, Command::Del);
        assert_eq!(request.netns, "");
    }

    #[test]
    fn check_needs_0_4() {
        let mut env = add_env();
        env.insert("CNI_COMMAND".into(), "CHECK".into());
        let old = r#"{"cniVersion":"0.3.1","name":"c","type":"cilium-cni"}"#;
        assert_eq!(
            request(&env, old.as_bytes()).expect_err("rejected").code,
            codes::INCOMPATIBLE_VERSION
        );
        assert!(request(&env, CONF.as_bytes()).is_ok());
    }
}
