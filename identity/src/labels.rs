//! Labels and label sets, and their string forms: `source:key=value` for one label and
//! `source:key=value;` per label, sorted by key, for the kvstore
//! (`cilium/state/identities/v1/id/<id>` → `k8s:app=web;k8s:io.kubernetes.pod.namespace=default;`).

use std::collections::BTreeMap;
use std::fmt;

/// Source of labels taken from Kubernetes objects.
pub const SOURCE_K8S: &str = "k8s";
/// Source of Cilium's own reserved labels (`reserved:host`, ...).
pub const SOURCE_RESERVED: &str = "reserved";
/// Source given to a label written without one.
pub const SOURCE_UNSPEC: &str = "unspec";

/// `k8s:io.kubernetes.pod.namespace`: the pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// `k8s:io.cilium.k8s.policy.serviceaccount`: the pod's service account.
pub const POLICY_SERVICE_ACCOUNT: &str = "io.cilium.k8s.policy.serviceaccount";
/// `k8s:io.cilium.k8s.policy.cluster`: the cluster's name.
pub const POLICY_CLUSTER: &str = "io.cilium.k8s.policy.cluster";
/// Prefix of the namespace's labels copied onto its pods.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label {0:?} has an empty key")]
    EmptyKey(String),
    #[error(
        "label string {0:?} does not end with ';' (kvstore form is `source:key=value;` per label)"
    )]
    Unterminated(String),
    #[error("label {0:?} contains ';', which the kvstore form uses as separator")]
    Separator(String),
    #[error("key {key:?} appears twice in label string {text:?}")]
    DuplicateKey { key: String, text: String },
}

/// One label: `source:key=value` (`=value` left out when the value is empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub source: String,
    pub key: String,
    pub value: String,
}

impl Label {
    pub fn new(source: &str, key: &str, value: &str) -> Self {
        Self {
            source: source.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    pub fn k8s(key: &str, value: &str) -> Self {
        Self::new(SOURCE_K8S, key, value)
    }

    /// `source:key` (the form CiliumIdentity's `security-labels` uses as map key).
    pub fn source_key(&self) -> String {
        format!("{}:{}", self.source, self.key)
    }

    /// Parses `source:key=value`, `source:key`, or `key=value` (source `unspec`).
    pub fn parse(text: &str) -> Result<Self, LabelError> {
        if text.contains(';') {
            return Err(LabelError::Separator(text.to_owned()));
        }
        let (source_key, value) = text.split_once('=').unwrap_or((text, ""));
        let (source, key) = source_key
            .split_once(':')
            .unwrap_or((SOURCE_UNSPEC, source_key));
        if key.is_empty() {
            return Err(LabelError::EmptyKey(text.to_owned()));
        }
        Ok(Self::new(source, key, value))
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.key)?;
        if !self.value.is_empty() {
            write!(f, "={}", self.value)?;
        }
        Ok(())
    }
}

/// A set of labels with at most one per key, ordered by key (Cilium keys its label maps
/// by key, so two sources cannot both hold one key).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSet(BTreeMap<String, Label>);

impl LabelSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `label`, replacing any label with the same key.
    pub fn insert(&mut self, label: Label) {
        self.0.insert(label.key.clone(), label);
    }

    pub fn get(&self, key: &str) -> Option<&Label> {
        self.0.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The kvstore form: `source:key=value;` for each label, sorted by key.
    pub fn kvstore_string(&self) -> String {
        self.iter().map(|l| format!("{l};")).collect()
    }

    /// Parses the kvstore form back; every label must end with `;` and keys are unique.
    pub fn parse_kvstore(text: &str) -> Result<Self, LabelError> {
        let Some(body) = text.strip_suffix(';') else {
            return if text.is_empty() {
                Ok(Self::new())
            } else {
                Err(LabelError::Unterminated(text.to_owned()))
            };
        };
        let mut set = Self::new();
        for part in body.split(';') {
            let label = Label::parse(part)?;
            if set.get(&label.key).is_some() {
                return Err(LabelError::DuplicateKey {
                    key: label.key,
                    text: text.to_owned(),
                });
            }
            set.insert(label);
        }
        Ok(set)
    }

    /// CiliumIdentity's `security-labels`: `source:key` → value.
    pub fn security_labels(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|l| (l.source_key(), l.value.clone()))
            .collect()
    }

    /// Reads CiliumIdentity's `security-labels` (`source:key` → value).
    pub fn from_security_labels<'a>(
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Self, LabelError> {
        let mut set = Self::new();
        for (source_key, value) in labels {
            let (source, key) = source_key
                .split_once(':')
                .unwrap_or((SOURCE_UNSPEC, source_key.as_str()));
            if key.is_empty() {
                return Err(LabelError::EmptyKey(source_key.clone()));
            }
            if source_key.contains(';') || value.contains(';') {
                return Err(LabelError::Separator(format!("{source_key}={value}")));
            }
            set.insert(Label::new(source, key, value));
        }
        Ok(set)
    }

    /// The CiliumIdentity's `metadata.labels`, as Cilium sets them: the `k8s` labels
    /// without their source, leaving out the copied namespace labels and anything that
    /// is not a valid Kubernetes label (those may exceed its 63-character limits).
    pub fn k8s_metadata_labels(&self) -> BTreeMap<String, String> {
        self.iter()
            .filter(|l| l.source == SOURCE_K8S && !l.key.starts_with(NAMESPACE_LABELS_PREFIX))
            .filter(|l| is_label_key(&l.key) && is_label_value(&l.value))
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect()
    }
}

impl FromIterator<Label> for LabelSet {
    fn from_iter<T: IntoIterator<Item = Label>>(iter: T) -> Self {
        let mut set = Self::new();
        for label in iter {
            set.insert(label);
        }
        set
    }
}

impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kvstore_string())
    }
}

fn is_name_part(part: &str) -> bool {
    let bytes = part.as_bytes();
    !part.is_empty()
        && part.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain of at most 253.
fn is_label_key(key: &str) -> bool {
    match key.rsplit_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253
                && prefix
                    .split('.')
                    .all(|p| is_name_part(p) && !p.contains('_') && p == p.to_ascii_lowercase())
                && is_name_part(name)
        }
        None => is_name_part(key),
    }
}

fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_name_part(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvstore_string_is_sorted_by_key_with_a_separator_after_each() {
        let set: LabelSet = [
            Label::k8s("zeta", "1"),
            Label::k8s("app", "web"),
            Label::k8s(POD_NAMESPACE, "default"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            set.kvstore_string(),
            "k8s:app=web;k8s:io.kubernetes.pod.namespace=default;k8s:zeta=1;"
        );
    }

    #[test]
    fn kvstore_string_round_trips() {
        let text = "k8s:app=web;k8s:flag;reserved:host;";
        let set = LabelSet::parse_kvstore(text).expect("parses");
        assert_eq!(set.len(), 3);
        assert_eq!(set.get("flag").map(|l| l.value.as_str()), Some(""));
        assert_eq!(set.kvstore_string(), text);
    }

    #[test]
    fn bad_kvstore_strings_are_named() {
        assert_eq!(
            LabelSet::parse_kvstore("k8s:app=web"),
            Err(LabelError::Unterminated("k8s:app=web".into()))
        );
        assert!(matches!(
            LabelSet::parse_kvstore("k8s:app=a;k8s:app=b;"),
            Err(LabelError::DuplicateKey { .. })
        ));
        assert!(matches!(
            LabelSet::parse_kvstore("k8s:=a;"),
            Err(LabelError::EmptyKey(_))
        ));
        assert_eq!(LabelSet::parse_kvstore(""), Ok(LabelSet::new()));
    }

    #[test]
    fn security_labels_round_trip() {
        let set = LabelSet::parse_kvstore("k8s:app=web;k8s:io.kubernetes.pod.namespace=ns;")
            .expect("parses");
        let map = set.security_labels();
        assert_eq!(map.get("k8s:app").map(String::as_str), Some("web"));
        assert_eq!(LabelSet::from_security_labels(&map), Ok(set));
    }

    #[test]
    fn metadata_labels_leave_out_namespace_labels_and_invalid_ones() {
        let long = "x".repeat(64);
        let set: LabelSet = [
            Label::k8s("app", "web"),
            Label::k8s("io.cilium.k8s.namespace.labels.team", "a"),
            Label::k8s("long", &long),
            Label::new(SOURCE_RESERVED, "host", ""),
        ]
        .into_iter()
        .collect();
        let meta = set.k8s_metadata_labels();
        assert_eq!(meta.len(), 1, "{meta:?}");
        assert_eq!(meta.get("app").map(String::as_str), Some("web"));
    }
}
