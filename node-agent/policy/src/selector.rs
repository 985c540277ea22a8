//! Label selectors over identity labels, with Cilium's key sources: `app` matches a label
//! `app` of any source, `k8s:app` only the `k8s` one, `reserved:host` the host identity.

use std::collections::BTreeSet;

use cilium_crds::selector::{EndpointSelector, SelectorOperator};
use cilium_identity::LabelSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Sources a selector key may be prefixed with.
const SOURCES: [&str; 6] = ["k8s", "any", "reserved", "cidr", "container", "unspec"];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    /// None: any source.
    pub source: Option<String>,
    pub key: String,
    pub op: Op,
}

/// Every requirement must hold; no requirement selects every identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector(Vec<Requirement>);

fn split_key(text: &str) -> (Option<String>, String) {
    match text.split_once(':') {
        Some((source, key)) if SOURCES.contains(&source) => {
            let source = (source != "any").then(|| source.to_owned());
            (source, key.to_owned())
        }
        _ => (None, text.to_owned()),
    }
}

impl Selector {
    /// Selects every identity.
    pub fn all() -> Self {
        Self::default()
    }

    fn new(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort();
        requirements.dedup();
        Self(requirements)
    }

    /// `source:key=value` (source None: any).
    pub fn label(source: Option<&str>, key: &str, value: &str) -> Self {
        Self::new(vec![Requirement {
            source: source.map(str::to_owned),
            key: key.to_owned(),
            op: Op::In(BTreeSet::from([value.to_owned()])),
        }])
    }

    /// The reserved identity `name` (`reserved:host`, ...).
    /// Identities with label `key` (of `source`, or any), whatever its value.
    pub fn exists(source: Option<&str>, key: &str) -> Self {
        Self::new(vec![Requirement {
            source: source.map(str::to_owned),
            key: key.to_owned(),
            op: Op::Exists,
        }])
    }

    pub fn reserved(name: &str) -> Self {
        Self::new(vec![Requirement {
            source: Some("reserved".into()),
            key: name.to_owned(),
            op: Op::Exists,
        }])
    }

    pub fn from_api(selector: &EndpointSelector) -> Self {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let (source, key) = split_key(key);
            requirements.push(Requirement {
                source,
                key,
                op: Op::In(BTreeSet::from([value.clone()])),
            });
        }
        for expression in selector.match_expressions.iter().flatten() {
            let (source, key) = split_key(&expression.key);
            let values: BTreeSet<String> = expression.values.iter().flatten().cloned().collect();
            let op = match expression.operator {
                SelectorOperator::In => Op::In(values),
                SelectorOperator::NotIn => Op::NotIn(values),
                SelectorOperator::Exists => Op::Exists,
                SelectorOperator::DoesNotExist => Op::DoesNotExist,
            };
            requirements.push(Requirement { source, key, op });
        }
        Self::new(requirements)
    }

    /// A Kubernetes label selector (NetworkPolicy's), on `k8s` labels whose keys are
    /// `prefix` + the selector's key (Cilium's `io.cilium.k8s.namespace.labels.` for a
    /// namespace selector); an unknown operator is refused.
    pub fn from_k8s(selector: &LabelSelector, prefix: &str) -> Result<Self, String> {
        let requirement = |key: &str, op| Requirement {
            source: Some("k8s".into()),
            key: format!("{prefix}{key}"),
            op,
        };
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(key, value)| requirement(key, Op::In(BTreeSet::from([value.clone()]))))
            .collect();
        for expression in selector.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = expression.values.iter().flatten().cloned().collect();
            let op = match expression.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(format!(
                        "operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                    ));
                }
            };
            requirements.push(requirement(&expression.key, op));
        }
        Ok(Self::new(requirements))
    }

    /// The requirements, sorted.
    pub fn requirements(&self) -> &[Requirement] {
        &self.0
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some requirement is on `key` (any source).
    pub fn constrains(&self, key: &str) -> bool {
        self.0.iter().any(|r| r.key == key)
    }

    /// Whether some requirement is on a reserved label (such selectors name reserved
    /// identities, which have no namespace).
    pub fn is_reserved(&self) -> bool {
        self.0
            .iter()
            .any(|r| r.source.as_deref() == Some("reserved"))
    }

    /// Both selectors' requirements.
    pub fn and(&self, other: &Selector) -> Selector {
        Self::new(self.0.iter().chain(&other.0).cloned().collect())
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.0.iter().all(|requirement| {
            let label = labels
                .get(&requirement.key)
                .filter(|l| requirement.source.as_ref().is_none_or(|s| *s == l.source));
            match (&requirement.op, label) {
                (Op::In(values), Some(label)) => values.contains(&label.value),
                (Op::In(_), None) => false,
                (Op::NotIn(values), Some(label)) => !values.contains(&label.value),
                (Op::NotIn(_), None) => true,
                (Op::Exists, found) => found.is_some(),
                (Op::DoesNotExist, found) => found.is_none(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use cilium_identity::Label;

    use super::*;

    fn labels(pairs: &[(&str, &str, &str)]) -> LabelSet {
        pairs.iter().map(|(s, k, v)| Label::new(s, k, v)).collect()
    }

    fn selector(yaml: &str) -> Selector {
        Selector::from_api(&serde_yaml::from_str(yaml).expect("selector"))
    }

    #[test]
    fn keys_with_and_without_sources() {
        let pod = labels(&[
            ("k8s", "app", "db"),
            ("k8s", "io.kubernetes.pod.namespace", "default"),
        ]);
        assert!(selector("matchLabels: {app: db}").matches(&pod));
        assert!(selector("matchLabels: {k8s:app: db}").matches(&pod));
        assert!(selector("matchLabels: {any:app: db}").matches(&pod));
        assert!(!selector("matchLabels: {container:app: db}").matches(&pod));
        assert!(!selector("matchLabels: {app: web}").matches(&pod));
        assert!(selector("{}").matches(&pod));
        let host = labels(&[("reserved", "host", "")]);
        assert!(Selector::reserved("host").matches(&host));
        assert!(selector("matchLabels: {reserved:host: ''}").matches(&host));
        assert!(!Selector::reserved("host").matches(&pod));
    }

    #[test]
    fn expressions() {
        let pod = labels(&[("k8s", "app", "db"), ("k8s", "tier", "backend")]);
        let yes = [
            "matchExpressions: [{key: app, operator: In, values: [db, web]}]",
            "matchExpressions: [{key: app, operator: NotIn, values: [web]}]",
            "matchExpressions: [{key: missing, operator: NotIn, values: [x]}]",
            "matchExpressions: [{key: tier, operator: Exists}]",
            "matchExpressions: [{key: env, operator: DoesNotExist}]",
            "{matchLabels: {app: db}, matchExpressions: [{key: tier, operator: In, values: [backend]}]}",
        ];
        let no = [
            "matchExpressions: [{key: app, operator: In, values: [web]}]",
            "matchExpressions: [{key: app, operator: NotIn, values: [db]}]",
            "matchExpressions: [{key: env, operator: Exists}]",
            "matchExpressions: [{key: tier, operator: DoesNotExist}]",
            "{matchLabels: {app: db}, matchExpressions: [{key: tier, operator: In, values: [front]}]}",
        ];
        for text in yes {
            assert!(selector(text).matches(&pod), "{text}");
        }
        for text in no {
            assert!(!selector(text).matches(&pod), "{text}");
        }
    }

    #[test]
    fn conjunction_and_order_do_not_matter() {
        let a = selector("matchLabels: {app: db, tier: backend}");
        let b = Selector::label(None, "tier", "backend").and(&Selector::label(None, "app", "db"));
        assert_eq!(a, b);
        assert!(a.constrains("tier") && !a.constrains("env"));
    }
}
