//! From Kubernetes objects to security identities and back: a pod's identity labels, which
//! pods need one, and the CiliumIdentity object for a number and its labels. The operator
//! allocates with these and the agent looks its pods' identities up with the same ones.

use std::collections::BTreeMap;

use cilium_identity::{LabelFilter, LabelSet, NumericIdentity, PodIdentitySource, identity_labels};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::CiliumIdentity;
use crate::identity::IdentityFields;

/// Whether a pod gets a security identity: not host-network, not finished, not deleted.
pub fn needs_identity(pod: &Pod) -> bool {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !host_network && !finished && pod.metadata.deletion_timestamp.is_none()
}

/// The identity labels of `pod`, given its namespace's labels (none if the namespace is
/// not known yet).
pub fn pod_identity_labels(
    pod: &Pod,
    namespace_labels: Option<&BTreeMap<String, String>>,
    cluster: &str,
    filter: &LabelFilter,
) -> LabelSet {
    let empty = BTreeMap::new();
    let namespace = pod.namespace().unwrap_or_default();
    let source = PodIdentitySource {
        namespace: &namespace,
        labels: pod.metadata.labels.as_ref().unwrap_or(&empty),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref()),
        namespace_labels: namespace_labels.unwrap_or(&empty),
    };
    identity_labels(source, cluster, filter)
}

/// The number and labels of a CiliumIdentity, or why they are unusable.
pub fn parse_identity(cid: &CiliumIdentity) -> Result<(NumericIdentity, LabelSet), String> {
    let name = cid.name_any();
    let id = name
        .parse::<u32>()
        .map_err(|_| format!("name {name:?} is not a number"))?;
    let labels = LabelSet::from_security_labels(&cid.spec.security_labels)
        .map_err(|e| format!("security-labels: {e}"))?;
    Ok((NumericIdentity(id), labels))
}

/// The CiliumIdentity Cilium writes for `labels`.
pub fn identity_object(id: NumericIdentity, labels: &LabelSet) -> CiliumIdentity {
    let mut cid = CiliumIdentity::new(
        &id.to_string(),
        IdentityFields {
            security_labels: labels.security_labels(),
        },
    );
    cid.metadata.labels = Some(labels.k8s_metadata_labels());
    cid
}

#[cfg(test)]
mod tests {
    use cilium_identity::Label;
    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;

    #[test]
    fn identity_objects_are_what_cilium_writes() {
        let labels: LabelSet = [
            Label::k8s("app", "web"),
            Label::k8s("io.kubernetes.pod.namespace", "shop"),
            Label::k8s("io.cilium.k8s.namespace.labels.team", "a"),
        ]
        .into_iter()
        .collect();
        let cid = identity_object(NumericIdentity(70000), &labels);
        assert_eq!(cid.metadata.name.as_deref(), Some("70000"));
        let meta = cid.metadata.labels.clone().unwrap_or_default();
        assert_eq!(meta.get("app").map(String::as_str), Some("web"));
        assert!(!meta.keys().any(|k| k.contains("namespace.labels")));
        assert_eq!(
            cid.spec
                .security_labels
                .get("k8s:io.kubernetes.pod.namespace")
                .map(String::as_str),
            Some("shop")
        );
        assert_eq!(parse_identity(&cid), Ok((NumericIdentity(70000), labels)));
        let mut unnamed = cid.clone();
        unnamed.metadata.name = Some("web".into());
        assert!(parse_identity(&unnamed).is_err_and(|e| e.contains("\"web\" is not a number")));
    }

    #[test]
    fn a_pods_labels_with_its_namespace_and_service_account() {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("shop".into());
        pod.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        pod.spec = Some(PodSpec {
            service_account_name: Some("front".into()),
            ..Default::default()
        });
        let namespace_labels = [("team".to_owned(), "a".to_owned())].into();
        let labels =
            pod_identity_labels(&pod, Some(&namespace_labels), "c1", &LabelFilter::default());
        let text: Vec<String> = labels.iter().map(ToString::to_string).collect();
        for expected in [
            "k8s:app=web",
            "k8s:io.kubernetes.pod.namespace=shop",
            "k8s:io.cilium.k8s.policy.serviceaccount=front",
            "k8s:io.cilium.k8s.policy.cluster=c1",
            "k8s:io.cilium.k8s.namespace.labels.team=a",
        ] {
            assert!(
                text.iter().any(|l| l == expected),
                "{expected} missing from {text:?}"
            );
        }
        assert!(needs_identity(&pod));
        if let Some(spec) = pod.spec.as_mut() {
            spec.host_network = Some(true);
        }
        assert!(!needs_identity(&pod));
    }
}
