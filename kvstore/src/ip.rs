//! `cilium/state/ip/v1/default/<ip>`: Cilium's `identity.IPIdentityPair`.

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
    /// The node hosting the endpoint (tunnel endpoint); Cilium writes `null` (a nil
    /// `net.IP`) when there is none.
    #[serde(rename = "HostIP", default, deserialize_with = "null_as_empty")]
    pub host_ip: String,
    #[serde(rename = "ID")]
    pub id: u32,
    /// Encryption key index.
    #[serde(rename = "Key", default)]
    pub key: u8,
    /// `cilium-global:<cluster>:<node>:<endpoint id>`.
    #[serde(rename = "Metadata", default)]
    pub metadata: String,
    /// Cilium's Go type has `omitempty` on both: absent for host and CIDR entries.
    #[serde(
        rename = "K8sNamespace",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub k8s_namespace: String,
    #[serde(
        rename = "K8sPodName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub k8s_pod_name: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

impl IpIdentityPair {
    /// Cilium's `FormatGlobalEndpointID`: the address space (not the cluster), node, id.
    pub fn metadata_for(node: &str, endpoint_id: i64) -> String {
        format!(
            "cilium-global:{}:{node}:{endpoint_id}",
            crate::keys::IP_ADDRESS_SPACE
        )
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
            metadata: IpIdentityPair::metadata_for("k8s-node1", 432),
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

    /// Values as Cilium's own Go type (`identity.IPIdentityPair`, `omitempty` on the pod
    /// fields and NamedPorts) writes them: by the agent for a pod with named ports, for an
    /// endpoint that is no pod, and by the clustermesh-apiserver (no metadata).
    #[test]
    fn values_written_by_cilium_decode() {
        let with_named_ports = r#"{"IP":"10.0.1.23","Mask":null,"HostIP":"192.168.1.10","ID":48213,"Key":0,"Metadata":"cilium-global:default:worker-1:1532","K8sNamespace":"default","K8sPodName":"web-6d4b7c9f5-x2k9q","NamedPorts":[{"Name":"http","Port":8080,"Protocol":"TCP"},{"Name":"metrics","Port":9090,"Protocol":"TCP"}]}"#;
        let pair = IpIdentityPair::decode("k", with_named_ports.as_bytes()).expect("decodes");
        assert_eq!(
            (pair.id, pair.k8s_pod_name.as_str()),
            (48213, "web-6d4b7c9f5-x2k9q")
        );

        let not_a_pod = r#"{"IP":"10.0.1.77","Mask":null,"HostIP":"192.168.1.10","ID":31020,"Key":0,"Metadata":"cilium-global:default:worker-1:2871"}"#;
        let pair = IpIdentityPair::decode("k", not_a_pod.as_bytes()).expect("decodes");
        assert_eq!(pair.k8s_namespace, "");
        assert_eq!(pair.encode(), not_a_pod, "and encodes back byte for byte");

        let from_clustermesh_apiserver = r#"{"IP":"10.0.2.15","Mask":null,"HostIP":"192.168.1.11","ID":48213,"Key":0,"Metadata":"","K8sNamespace":"default","K8sPodName":"web-6d4b7c9f5-abcde"}"#;
        let pair =
            IpIdentityPair::decode("k", from_clustermesh_apiserver.as_bytes()).expect("decodes");
        assert_eq!(pair.metadata, "");

        // A nil `net.IP` host address is `null`; missing Key and Metadata are their zero.
        let sparse = r#"{"IP":"10.0.3.1","Mask":null,"HostIP":null,"ID":2}"#;
        let pair = IpIdentityPair::decode("k", sparse.as_bytes()).expect("decodes");
        assert_eq!((pair.host_ip.as_str(), pair.key), ("", 0));
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
