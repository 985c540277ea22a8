//! `cilium/state/ip/v1/<cluster>/<ip>`: Cilium's `identity.IPIdentityPair`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::DecodeError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpIdentityPair {
    #[serde(rename = "IP")]
    pub ip: String,
    /// Set for CIDR entries (base64 of the mask bytes); `null` for a single address.
    #[serde(rename = "Mask")]
    pub mask: Option<String>,
    /// The node hosting the endpoint (tunnel endpoint).
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    #[serde(rename = "ID")]
    pub id: u32,
    /// Encryption key index.
    #[serde(rename = "Key")]
    pub key: u8,
    /// `cilium-global:<cluster>:<node>:<endpoint id>`.
    #[serde(rename = "Metadata")]
    pub metadata: String,
    #[serde(rename = "K8sNamespace")]
    pub k8s_namespace: String,
    #[serde(rename = "K8sPodName")]
    pub k8s_pod_name: String,
}

impl IpIdentityPair {
    pub fn metadata_for(cluster: &str, node: &str, endpoint_id: i64) -> String {
        format!("cilium-global:{cluster}:{node}:{endpoint_id}")
    }

    pub fn encode(&self) -> String {
        // Plain strings and numbers: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(key: &str, value: &[u8]) -> Result<Self, DecodeError> {
        let pair: Self = serde_json::from_slice(value).map_err(|e| DecodeError::new(key, e))?;
        pair.ip
            .parse::<IpAddr>()
            .map_err(|e| DecodeError::new(key, format!("IP {:?}: {e}", pair.ip)))?;
        if !pair.host_ip.is_empty() {
            pair.host_ip
                .parse::<IpAddr>()
                .map_err(|e| DecodeError::new(key, format!("HostIP {:?}: {e}", pair.host_ip)))?;
        }
        Ok(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `etcdctl get cilium/state/ip/v1/default/10.6.6.43` in the source document.
    const DOCUMENTED: &str = r#"{
  "IP":"10.6.6.43",
  "Mask":null,
  "HostIP":"10.5.1.132",
  "ID":12928,
  "Key":0,
  "Metadata":"cilium-global:default:k8s-node1:432",
  "K8sNamespace":"istio-system",
  "K8sPodName":"ai-ingressgateway-6bdbdbf7dc-jz85c"
}"#;

    #[test]
    fn the_documented_pair_encodes_byte_for_byte() {
        let pair = IpIdentityPair {
            ip: "10.6.6.43".into(),
            mask: None,
            host_ip: "10.5.1.132".into(),
            id: 12928,
            key: 0,
            metadata: IpIdentityPair::metadata_for("default", "k8s-node1", 432),
            k8s_namespace: "istio-system".into(),
            k8s_pod_name: "ai-ingressgateway-6bdbdbf7dc-jz85c".into(),
        };
        let compact: String = DOCUMENTED.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(pair.encode(), compact);
        assert_eq!(
            IpIdentityPair::decode("k", DOCUMENTED.as_bytes()).ok(),
            Some(pair)
        );
    }

    #[test]
    fn newer_fields_are_tolerated_and_bad_addresses_named() {
        let newer = DOCUMENTED.replace(
            "\"K8sPodName\"",
            "\"K8sServiceAccount\":\"sa\",\"NamedPorts\":[],\"K8sPodName\"",
        );
        assert!(IpIdentityPair::decode("k", newer.as_bytes()).is_ok());
        let bad = DOCUMENTED.replace("\"10.6.6.43\"", "\"10.6.6\"");
        let err = IpIdentityPair::decode("cilium/state/ip/v1/default/x", bad.as_bytes())
            .expect_err("bad IP");
        assert!(err.to_string().contains("IP \"10.6.6\""), "{err}");
    }
}
