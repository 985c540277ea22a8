//! A pod's identity labels: its own labels (source `k8s`) that the filter keeps, plus the
//! ones Cilium adds: namespace, service account, cluster name, and the namespace's labels.

use std::collections::BTreeMap;

use crate::filter::LabelFilter;
use crate::labels::{
    Label, LabelSet, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE, POLICY_CLUSTER, POLICY_SERVICE_ACCOUNT,
};

/// What of a pod and its namespace determines its identity.
#[derive(Debug, Clone, Copy)]
pub struct PodIdentitySource<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// `spec.serviceAccountName` (Kubernetes' default is `default`).
    pub service_account: Option<&'a str>,
    pub namespace_labels: &'a BTreeMap<String, String>,
}

pub fn identity_labels(
    pod: PodIdentitySource<'_>,
    cluster: &str,
    filter: &LabelFilter,
) -> LabelSet {
    let own = pod.labels.iter().map(|(k, v)| Label::k8s(k, v));
    let from_namespace = pod
        .namespace_labels
        .iter()
        .map(|(k, v)| Label::k8s(&format!("{NAMESPACE_LABELS_PREFIX}{k}"), v));
    let mut set: LabelSet = own
        .chain(from_namespace)
        .filter(|l| filter.is_relevant(l))
        .collect();
    set.insert(Label::k8s(POD_NAMESPACE, pod.namespace));
    set.insert(Label::k8s(
        POLICY_SERVICE_ACCOUNT,
        pod.service_account
            .filter(|s| !s.is_empty())
            .unwrap_or("default"),
    ));
    set.insert(Label::k8s(POLICY_CLUSTER, cluster));
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The istio-ingressgateway pod of the source document gives its identity 12928's
    /// labels, byte for byte.
    #[test]
    fn the_documented_ingressgateway_pod() {
        let labels = map(&[
            ("app", "istio-ingressgateway"),
            ("chart", "gateways"),
            ("heritage", "Tiller"),
            ("istio", "ai-ingressgateway"),
            ("pod-template-hash", "6bdbdbf7dc"),
            ("release", "istio"),
        ]);
        let set = identity_labels(
            PodIdentitySource {
                namespace: "istio-system",
                labels: &labels,
                service_account: Some("ai-ingressgateway-service-account"),
                namespace_labels: &BTreeMap::new(),
            },
            "default",
            &LabelFilter::default(),
        );
        assert_eq!(
            set.kvstore_string(),
            "k8s:app=istio-ingressgateway;\
             k8s:chart=gateways;\
             k8s:heritage=Tiller;\
             k8s:io.cilium.k8s.policy.cluster=default;\
             k8s:io.cilium.k8s.policy.serviceaccount=ai-ingressgateway-service-account;\
             k8s:io.kubernetes.pod.namespace=istio-system;\
             k8s:istio=ai-ingressgateway;\
             k8s:release=istio;"
        );
    }

    #[test]
    fn namespace_labels_are_copied_and_pods_cannot_fake_cilium_labels() {
        let labels = map(&[
            ("app", "web"),
            ("io.kubernetes.pod.namespace", "other"),
            ("io.cilium.k8s.policy.cluster", "other"),
        ]);
        let ns = map(&[("team", "a")]);
        let set = identity_labels(
            PodIdentitySource {
                namespace: "shop",
                labels: &labels,
                service_account: None,
                namespace_labels: &ns,
            },
            "c1",
            &LabelFilter::default(),
        );
        assert_eq!(
            set.kvstore_string(),
            "k8s:app=web;\
             k8s:io.cilium.k8s.namespace.labels.team=a;\
             k8s:io.cilium.k8s.policy.cluster=c1;\
             k8s:io.cilium.k8s.policy.serviceaccount=default;\
             k8s:io.kubernetes.pod.namespace=shop;"
        );
    }

    #[test]
    fn the_filter_option_changes_what_counts() {
        let labels = map(&[("app", "web"), ("version", "v2")]);
        let filter = LabelFilter::new(&["k8s:app"]).expect("valid");
        let set = identity_labels(
            PodIdentitySource {
                namespace: "ns",
                labels: &labels,
                service_account: Some("sa"),
                namespace_labels: &BTreeMap::new(),
            },
            "c",
            &filter,
        );
        assert!(set.get("app").is_some());
        assert!(set.get("version").is_none());
    }
}
