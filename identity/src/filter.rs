//! Which labels are identity-relevant, with Cilium's `--labels` pattern syntax:
//! `[source:][!]regex`, the regex matched at the start of the key, `!` to exclude, source
//! `any` (or none) for every source. The longest matching pattern decides; a label no
//! pattern matches is kept unless inclusive patterns were given, in which case only
//! what they match is kept. Cilium's default exclusions always apply, and the labels
//! Cilium adds itself (namespace, service account, cluster, namespace labels) are kept.

use regex::Regex;

use crate::labels::{Label, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE, POLICY_CLUSTER};

/// Cilium's default exclusions (docs: "Limiting Identity-Relevant Labels").
pub const DEFAULT_EXCLUSIONS: &[&str] = &[
    r"!io\.kubernetes",
    r"!kubernetes\.io",
    // Per-pod labels the StatefulSet and indexed-Job controllers add: each pod would get an
    // identity of its own (Cilium excludes them too).
    r"!statefulset\.kubernetes\.io/pod-name",
    r"!apps\.kubernetes\.io/pod-index",
    r"!batch\.kubernetes\.io/job-completion-index",
    r"!.*beta\.kubernetes\.io",
    r"!k8s\.io",
    r"!pod-template-generation",
    r"!pod-template-hash",
    r"!controller-revision-hash",
    r"!annotation.*",
    r"!etcd_node",
];

/// Keys Cilium adds to every pod's labels; always relevant.
const CILIUM_KEYS: &[&str] = &[
    POD_NAMESPACE,
    "io.cilium.k8s.policy",
    NAMESPACE_LABELS_PREFIX,
    POLICY_CLUSTER,
];

#[derive(Debug, thiserror::Error)]
#[error("label pattern {pattern:?}: {reason}")]
pub struct FilterError {
    pub pattern: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct Pattern {
    text_len: usize,
    source: Option<String>,
    include: bool,
    key: Regex,
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, FilterError> {
        let error = |reason: String| FilterError {
            pattern: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let (negated_outside, rest) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        // A source is a plain word before the first ':'; regexes rarely hold one.
        let (source, body) = match rest.split_once(':') {
            Some((s, body))
                if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                (Some(s.to_owned()).filter(|s| s != "any"), body)
            }
            _ => (None, rest),
        };
        let (negated_inside, key) = match body.strip_prefix('!') {
            Some(key) => (true, key),
            None => (false, body),
        };
        if key.is_empty() {
            return Err(error("no key pattern".into()));
        }
        let regex = Regex::new(&format!("^(?:{key})")).map_err(|e| error(e.to_string()))?;
        Ok(Self {
            text_len: key.len(),
            source,
            include: !(negated_outside || negated_inside),
            key: regex,
        })
    }

    fn matches(&self, label: &Label) -> bool {
        self.source.as_ref().is_none_or(|s| *s == label.source) && self.key.is_match(&label.key)
    }
}

/// Decides which labels are identity-relevant.
#[derive(Debug, Clone)]
pub struct LabelFilter {
    patterns: Vec<Pattern>,
    allow_list: bool,
}

impl Default for LabelFilter {
    fn default() -> Self {
        // The default exclusions are constants covered by the tests below.
        Self::new::<&str>(&[]).expect("Cilium's default exclusions are valid patterns")
    }
}

impl LabelFilter {
    /// Cilium's defaults plus the user's patterns (`--labels`).
    pub fn new<S: AsRef<str>>(user: &[S]) -> Result<Self, FilterError> {
        let mut patterns = DEFAULT_EXCLUSIONS
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut allow_list = false;
        for text in user {
            let pattern = Pattern::parse(text.as_ref())?;
            allow_list |= pattern.include;
            patterns.push(pattern);
        }
        Ok(Self {
            patterns,
            allow_list,
        })
    }

    pub fn is_relevant(&self, label: &Label) -> bool {
        if CILIUM_KEYS.iter().any(|k| label.key.starts_with(k)) {
            return true;
        }
        self.patterns
            .iter()
            .filter(|p| p.matches(label))
            .max_by_key(|p| p.text_len)
            .map_or(!self.allow_list, |p| p.include)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relevant(filter: &LabelFilter, key: &str) -> bool {
        filter.is_relevant(&Label::k8s(key, "v"))
    }

    #[test]
    fn defaults_drop_kubernetes_bookkeeping_and_keep_the_rest() {
        let f = LabelFilter::default();
        for dropped in [
            "pod-template-hash",
            "controller-revision-hash",
            "pod-template-generation",
            "io.kubernetes.container.name",
            "kubernetes.io/hostname",
            "failure-domain.beta.kubernetes.io/zone",
            "k8s.io/foo",
            "annotation.x",
            "etcd_node",
            "statefulset.kubernetes.io/pod-name",
            "apps.kubernetes.io/pod-index",
            "batch.kubernetes.io/job-completion-index",
        ] {
            assert!(!relevant(&f, dropped), "{dropped} is dropped");
        }
        for kept in [
            "app",
            "chart",
            "heritage",
            "release",
            "app.kubernetes.io/name",
        ] {
            assert!(relevant(&f, kept), "{kept} is kept");
        }
        assert!(relevant(&f, POD_NAMESPACE), "cilium's own labels stay");
        assert!(relevant(
            &f,
            "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"
        ));
    }

    #[test]
    fn inclusive_patterns_turn_the_filter_into_an_allow_list() {
        let f = LabelFilter::new(&["k8s:app", "k8s:team"]).expect("valid");
        assert!(relevant(&f, "app"));
        assert!(relevant(&f, "team"));
        assert!(!relevant(&f, "version"));
        assert!(relevant(&f, POD_NAMESPACE));
        assert!(relevant(&f, "io.cilium.k8s.policy.serviceaccount"));
    }

    #[test]
    fn the_longest_match_decides() {
        let f = LabelFilter::new(&["!k8s:app", "app.kubernetes.io/name", "k8s:!version"])
            .expect("valid");
        assert!(!relevant(&f, "app"));
        assert!(relevant(&f, "app.kubernetes.io/name"));
        assert!(!relevant(&f, "version"));
        let exclude_only = LabelFilter::new(&["!uid"]).expect("valid");
        assert!(!relevant(&exclude_only, "uid"));
        assert!(
            relevant(&exclude_only, "other"),
            "exclusions alone keep the rest"
        );
    }

    #[test]
    fn sources_are_matched() {
        let f = LabelFilter::new(&["!container:app"]).expect("valid");
        assert!(relevant(&f, "app"), "a k8s label is not a container label");
        assert!(!f.is_relevant(&Label::new("container", "app", "x")));
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = LabelFilter::new(&["k8s:(unclosed"]).expect_err("invalid regex");
        assert!(err.to_string().contains("(unclosed"), "{err}");
        assert!(LabelFilter::new(&["k8s:!"]).is_err());
    }
}
