//! What the plugin prints: the result of an ADD, the VERSION answer, or an error, in the
//! format of the request's CNI version.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::request::SUPPORTED_VERSIONS;

/// The spec's error codes (CNI 1.0, "Error").
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Plugin-specific (100+): the agent refused the request.
    pub const AGENT_REFUSED: u32 = 100;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.msg, self.details)
    }
}

/// What an ADD made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub host_ifname: String,
    pub host_mac: String,
    pub ifname: String,
    pub mac: String,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl AddResult {
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut ip = json!({
            "address": format!("{}/32", self.ipv4),
            "gateway": self.gateway.to_string(),
            "interface": 1,
        });
        // Before 1.0 every address carried its family.
        if cni_version != "1.0.0" {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": cni_version,
            "interfaces": [
                { "name": self.host_ifname, "mac": self.host_mac },
                { "name": self.ifname, "mac": self.mac, "sandbox": self.netns },
            ],
            "ips": [ip],
            "routes": [{ "dst": "0.0.0.0/0", "gw": self.gateway.to_string() }],
        })
    }
}

pub fn version_json(cni_version: &str) -> Value {
    json!({ "cniVersion": cni_version, "supportedVersions": SUPPORTED_VERSIONS })
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_in_each_version() {
        let result = AddResult {
            host_ifname: "lxc0123456789ab".into(),
            host_mac: mac_text([2, 0, 0, 0, 0, 1]),
            ifname: "eth0".into(),
            mac: mac_text([2, 0, 0, 0, 0, 2]),
            netns: "/var/run/netns/p".into(),
            ipv4: Ipv4Addr::new(10, 0, 1, 5),
            gateway: Ipv4Addr::new(10, 0, 1, 1),
        };
        let v1 = result.to_json("1.0.0");
        assert_eq!(v1["ips"][0]["address"], "10.0.1.5/32");
        assert_eq!(v1["ips"][0]["interface"], 1);
        assert_eq!(v1["interfaces"][1]["sandbox"], "/var/run/netns/p");
        assert_eq!(v1["interfaces"][0]["mac"], "02:00:00:00:00:01");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(result.to_json("0.4.0")["ips"][0]["version"], "4");
        let error = CniError::new(codes::TRY_AGAIN_LATER, "agent down", "socket missing");
        assert_eq!(error.to_json("1.0.0")["code"], 11);
        assert_eq!(version_json("1.0.0")["supportedVersions"][3], "1.0.0");
    }
}
