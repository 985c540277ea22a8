//! The CiliumEndpoint of a local endpoint: what `kubectl get cep` shows of it.

use std::net::IpAddr;

use cilium_agent_api::EndpointStateName;
use cilium_crds::CiliumEndpoint;
use cilium_crds::endpoint::{
    AddressPair, EndpointIdentity, EndpointNetworking, EndpointPolicy, EndpointPolicyDirection,
    EndpointState, EndpointStatus, ExternalIdentifiers, NamedPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::endpoints::EndpointRecord;

/// The status the endpoint's CiliumEndpoint should carry; `enforcement` says whether its
/// ingress and egress are enforced (`enforcing`), or open because no rule selects it in
/// that direction (`non-enforcing`).
pub fn status(
    record: &EndpointRecord,
    node_ip: IpAddr,
    state: EndpointStateName,
    enforcement: (bool, bool),
    named_ports: Vec<NamedPort>,
) -> EndpointStatus {
    // Other nodes learn the pod's identity from here as soon as it is known.
    let identified = state != EndpointStateName::WaitingForIdentity;
    let direction = |enforcing: bool| EndpointPolicyDirection {
        enforcing,
        state: Some(
            if enforcing {
                "enforcing"
            } else {
                "non-enforcing"
            }
            .into(),
        ),
        allowed: None,
        denied: None,
    };
    EndpointStatus {
        id: Some(i64::from(record.id)),
        identity: identified.then(|| EndpointIdentity {
            id: i64::from(record.identity),
            labels: Some(record.labels.clone()),
        }),
        networking: Some(EndpointNetworking {
            addressing: vec![AddressPair {
                ipv4: Some(record.ipv4.to_string()),
                ipv6: None,
            }],
            node: Some(node_ip.to_string()),
        }),
        encryption: None,
        external_identifiers: Some(ExternalIdentifiers {
            container_id: Some(record.container_id.clone()),
            k8s_namespace: Some(record.k8s_namespace.clone()),
            k8s_pod_name: Some(record.k8s_pod_name.clone()),
            pod_name: Some(format!("{}/{}", record.k8s_namespace, record.k8s_pod_name)),
        }),
        named_ports: (!named_ports.is_empty()).then_some(named_ports),
        policy: Some(EndpointPolicy {
            ingress: Some(direction(enforcement.0)),
            egress: Some(direction(enforcement.1)),
        }),
        state: Some(match state {
            EndpointStateName::WaitingForIdentity => EndpointState::WaitingForIdentity,
            EndpointStateName::WaitingToRegenerate => EndpointState::WaitingToRegenerate,
            EndpointStateName::Ready => EndpointState::Ready,
        }),
    }
}

/// A new CiliumEndpoint for `record`, named after its pod and owned by it (so it goes with
/// the pod when the cluster's garbage collector runs), with `status`.
pub fn object(
    record: &EndpointRecord,
    pod_uid: Option<&str>,
    status: EndpointStatus,
) -> CiliumEndpoint {
    let mut cep = CiliumEndpoint::new(&record.k8s_pod_name, Default::default());
    cep.metadata.namespace = Some(record.k8s_namespace.clone());
    cep.metadata.owner_references = pod_uid.map(|uid| {
        vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: record.k8s_pod_name.clone(),
            uid: uid.to_owned(),
            ..Default::default()
        }]
    });
    cep.status = Some(status);
    cep
}

/// Whether an existing CiliumEndpoint is this node's (its status names this node's IP).
pub fn is_on_node(cep: &CiliumEndpoint, node_ip: IpAddr) -> bool {
    cep.status
        .as_ref()
        .and_then(|s| s.networking.as_ref())
        .and_then(|n| n.node.as_deref())
        .and_then(|n| n.parse::<IpAddr>().ok())
        == Some(node_ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::record;

    #[test]
    fn waiting_then_ready() {
        let node: IpAddr = "192.168.60.11".parse().expect("ip");
        let mut r = record(7, "c1", [10, 0, 1, 7]);
        let waiting = status(
            &r,
            node,
            EndpointStateName::WaitingForIdentity,
            (false, false),
            vec![],
        );
        assert_eq!(waiting.state, Some(EndpointState::WaitingForIdentity));
        assert_eq!(waiting.identity, None);
        assert_eq!(waiting.id, Some(7));
        r.identity = 31_000;
        r.labels = vec!["k8s:app=db".into()];
        let regenerating = status(
            &r,
            node,
            EndpointStateName::WaitingToRegenerate,
            (false, false),
            vec![],
        );
        assert_eq!(regenerating.state, Some(EndpointState::WaitingToRegenerate));
        assert_eq!(regenerating.identity.as_ref().map(|i| i.id), Some(31_000));
        let http = NamedPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
        };
        let ready = status(
            &r,
            node,
            EndpointStateName::Ready,
            (true, false),
            vec![http],
        );
        assert_eq!(ready.state, Some(EndpointState::Ready));
        assert_eq!(ready.identity.as_ref().map(|i| i.id), Some(31_000));
        let networking = ready.networking.as_ref().expect("networking");
        assert_eq!(networking.addressing[0].ipv4.as_deref(), Some("10.0.1.7"));
        assert_eq!(networking.node.as_deref(), Some("192.168.60.11"));
        let cep = object(&r, Some("uid-1"), ready);
        assert_eq!(cep.metadata.name.as_deref(), Some("pod-c1"));
        assert_eq!(cep.metadata.namespace.as_deref(), Some("default"));
        assert!(is_on_node(&cep, node));
        assert!(!is_on_node(&cep, "192.168.60.12".parse().expect("ip")));
        let json = serde_json::to_value(&cep).expect("json");
        assert_eq!(json["status"]["state"], "ready");
        assert_eq!(
            json["status"]["named-ports"],
            serde_json::json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(json["status"]["policy"]["ingress"]["state"], "enforcing");
        assert_eq!(json["status"]["policy"]["egress"]["enforcing"], false);
        assert_eq!(
            json["status"]["external-identifiers"]["pod-name"],
            "default/pod-c1"
        );
        assert_eq!(json["metadata"]["ownerReferences"][0]["kind"], "Pod");
    }
}
