//! The agent's side of the policy engine: which policies are valid (and their `Valid`
//! condition), the identity universe of the selector cache, and each endpoint's policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use cilium_crds::policy::PolicyCondition;
use cilium_crds::validation::PolicyObject;
use cilium_crds::{CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, validate_policy};
use cilium_identity::LabelSet;
use cilium_policy::cache::reserved_identities_on;
use cilium_policy::render::rule_json;
use cilium_policy::{
    CidrIdentities, EndpointPolicy, EnforcementMode, Inputs, LocalCluster, PolicyKind, PolicyRef,
    PortNames, Rule, SelectorCache, endpoint_policy, parse_ccnp, parse_cnp, parse_network_policy,
};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};

use crate::records::{RecordDir, StateError};

/// What a policy's `Valid` condition should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    pub valid: bool,
    pub message: String,
}

impl Validity {
    pub fn condition(&self, now: &str) -> PolicyCondition {
        PolicyCondition {
            type_: "Valid".into(),
            status: if self.valid { "True" } else { "False" }.into(),
            last_transition_time: Some(now.to_owned()),
            reason: Some(if self.valid { "Valid" } else { "InvalidPolicy" }.into()),
            message: Some(self.message.clone()),
        }
    }

    /// Whether `conditions` already say this.
    pub fn is_reported(&self, conditions: Option<&Vec<PolicyCondition>>) -> bool {
        conditions.into_iter().flatten().any(|c| {
            c.type_ == "Valid"
                && (c.status == "True") == self.valid
                && c.message.as_deref() == Some(self.message.as_str())
        })
    }
}

fn validity(problems: Vec<String>, rules: &[Rule]) -> Validity {
    if !problems.is_empty() {
        return Validity {
            valid: false,
            message: format!("not applied: {}", problems.join("; ")),
        };
    }
    let l7 = rules
        .iter()
        .any(|r| r.ingress.iter().chain(&r.egress).any(|s| s.has_l7()));
    Validity {
        valid: true,
        message: if l7 {
            "Policy validation succeeded; L7 rules (http, dns, ...) are not enforced yet: their ports stay closed to the rule's peers".into()
        } else {
            "Policy validation succeeded".into()
        },
    }
}

/// The last valid version of a policy, enforced while later edits of the same object are
/// invalid (a typo must not open the door).
#[derive(Debug, Clone)]
struct LastGood {
    uid: Option<String>,
    generation: Option<i64>,
    rules: Vec<Rule>,
}

/// Each policy's last valid version.
#[derive(Debug, Default)]
struct LastGoodVersions(BTreeMap<PolicyRef, LastGood>);

impl LastGoodVersions {
    /// The rules to enforce for the policy `reference` (object `uid` at `generation`)
    /// that parsed to `parsed`, what its `Valid` condition says, and whether this is a
    /// valid version not seen before (to be kept on disk).
    fn admit(
        &mut self,
        reference: &PolicyRef,
        uid: Option<String>,
        generation: Option<i64>,
        parsed: Result<Vec<Rule>, Vec<String>>,
    ) -> (Vec<Rule>, Validity, bool) {
        match parsed {
            Ok(rules) => {
                let validity = validity(vec![], &rules);
                let new_version = self
                    .0
                    .get(reference)
                    .is_none_or(|last| last.uid != uid || last.generation != generation);
                self.0.insert(
                    reference.clone(),
                    LastGood {
                        uid,
                        generation,
                        rules: rules.clone(),
                    },
                );
                (rules, validity, new_version)
            }
            Err(problems) => {
                let mut validity = validity(problems, &[]);
                // A new object of the same name starts without history.
                match self.0.get(reference).filter(|last| last.uid == uid) {
                    Some(last) => {
                        let version = last
                            .generation
                            .map(|g| format!(" (generation {g})"))
                            .unwrap_or_default();
                        validity
                            .message
                            .push_str(&format!("; the last valid version{version} stays enforced"));
                        (last.rules.clone(), validity, false)
                    }
                    None => {
                        self.0.remove(reference);
                        (Vec::new(), validity, false)
                    }
                }
            }
        }
    }
}

/// A policy's last valid version as kept on disk (`<state-dir>/policies/`), so a restarted
/// agent still enforces it while the object in the cluster is invalid.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "object")]
// The variants are the Kubernetes kinds, written as the `kind` tag.
#[allow(clippy::enum_variant_names)]
enum SavedPolicy {
    CiliumNetworkPolicy(Box<CiliumNetworkPolicy>),
    CiliumClusterwideNetworkPolicy(Box<CiliumClusterwideNetworkPolicy>),
    NetworkPolicy(Box<NetworkPolicy>),
}

/// The file a policy's last valid version is kept in (Kubernetes names have no `_`).
fn history_name(reference: &PolicyRef) -> String {
    let kind = match reference.kind {
        PolicyKind::CiliumNetworkPolicy => "cnp",
        PolicyKind::CiliumClusterwideNetworkPolicy => "ccnp",
        PolicyKind::NetworkPolicy => "knp",
    };
    match &reference.namespace {
        Some(namespace) => format!("{kind}_{namespace}_{}", reference.name),
        None => format!("{kind}_{}", reference.name),
    }
}

pub struct PolicyState {
    /// The cluster policies are read in (and whether selectors stay in it).
    cluster: LocalCluster,
    rules: Vec<Rule>,
    last_good: LastGoodVersions,
    /// Where the last valid versions are kept across restarts (none in unit tests).
    history: Option<RecordDir>,
    cache: SelectorCache,
    cidrs: CidrIdentities,
    mode: EnforcementMode,
    /// Bumped whenever the rule set changes (`cilium policy get` shows it).
    revision: u64,
}

impl PolicyState {
    pub fn new(mode: EnforcementMode, cluster: LocalCluster) -> Self {
        Self {
            cluster,
            rules: Vec::new(),
            last_good: LastGoodVersions::default(),
            history: None,
            cache: SelectorCache::default(),
            cidrs: CidrIdentities::default(),
            mode,
            revision: 0,
        }
    }

    /// Keeps the policies' last valid versions in `history`, and takes back those an
    /// earlier run kept there (a saved version that no longer parses is dropped).
    pub fn with_history(mut self, history: RecordDir) -> Result<Self, StateError> {
        let loaded = history.load(|_, _: &SavedPolicy| Ok(()))?;
        for (path, reason) in &loaded.unreadable {
            tracing::warn!(path = %path.display(), %reason, "kept policy version unreadable; set aside");
        }
        for (name, saved) in loaded.records {
            let (reference, meta, parsed) = match &saved {
                SavedPolicy::CiliumNetworkPolicy(cnp) => (
                    PolicyRef::of_cnp(cnp),
                    &cnp.metadata,
                    checked(cnp.as_ref()).and_then(|()| parse_cnp(cnp, &self.cluster)),
                ),
                SavedPolicy::NetworkPolicy(np) => (
                    PolicyRef::of_network_policy(np),
                    &np.metadata,
                    parse_network_policy(np, &self.cluster),
                ),
                SavedPolicy::CiliumClusterwideNetworkPolicy(ccnp) => (
                    PolicyRef::of_ccnp(ccnp),
                    &ccnp.metadata,
                    checked(ccnp.as_ref()).and_then(|()| parse_ccnp(ccnp, &self.cluster)),
                ),
            };
            match parsed {
                Ok(_) if history_name(&reference) != name => {
                    tracing::warn!(%name, "kept policy version under another name; ignored");
                }
                Ok(rules) => {
                    let last = LastGood {
                        uid: meta.uid.clone(),
                        generation: meta.generation,
                        rules,
                    };
                    self.last_good.0.insert(reference, last);
                }
                Err(problems) => {
                    tracing::warn!(%name, ?problems, "kept policy version no longer valid; dropped");
                    history.remove(&name)?;
                }
            }
        }
        tracing::info!(
            policies = self.last_good.0.len(),
            "last valid policy versions restored"
        );
        self.history = Some(history);
        Ok(self)
    }

    /// Reads every policy: the valid ones' rules replace the current set; each policy's
    /// validity is returned for its status. An invalid policy contributes no rule of its
    /// own; if an earlier version of the same object was valid, that version's rules stay.
    pub fn load(
        &mut self,
        cnps: &[Arc<CiliumNetworkPolicy>],
        ccnps: &[Arc<CiliumClusterwideNetworkPolicy>],
        nps: &[Arc<NetworkPolicy>],
    ) -> BTreeMap<PolicyRef, Validity> {
        let cluster = &self.cluster;
        let mut rules = Vec::new();
        let mut validities = BTreeMap::new();
        let mut new_versions = Vec::new();
        let mut admit = |reference: PolicyRef,
                         meta: &kube::api::ObjectMeta,
                         parsed,
                         saved: &dyn Fn() -> SavedPolicy| {
            let (admitted, validity, new_version) =
                self.last_good
                    .admit(&reference, meta.uid.clone(), meta.generation, parsed);
            if new_version {
                new_versions.push((history_name(&reference), saved()));
            }
            rules.extend(admitted);
            validities.insert(reference, validity);
        };
        for cnp in cnps {
            let reference = PolicyRef::of_cnp(cnp);
            let parsed = checked(cnp.as_ref()).and_then(|()| parse_cnp(cnp, cluster));
            admit(reference, &cnp.metadata, parsed, &|| {
                SavedPolicy::CiliumNetworkPolicy(Box::new(cnp.as_ref().clone()))
            });
        }
        for ccnp in ccnps {
            let reference = PolicyRef::of_ccnp(ccnp);
            let parsed = checked(ccnp.as_ref()).and_then(|()| parse_ccnp(ccnp, cluster));
            admit(reference, &ccnp.metadata, parsed, &|| {
                SavedPolicy::CiliumClusterwideNetworkPolicy(Box::new(ccnp.as_ref().clone()))
            });
        }
        for np in nps {
            let parsed = parse_network_policy(np, cluster);
            admit(
                PolicyRef::of_network_policy(np),
                &np.metadata,
                parsed,
                &|| SavedPolicy::NetworkPolicy(Box::new(np.as_ref().clone())),
            );
        }
        // Deleted policies leave no history behind.
        let deleted: Vec<PolicyRef> = self
            .last_good
            .0
            .keys()
            .filter(|reference| !validities.contains_key(*reference))
            .cloned()
            .collect();
        self.last_good
            .0
            .retain(|reference, _| validities.contains_key(reference));
        if let Some(history) = &self.history {
            let kept = new_versions
                .iter()
                .try_for_each(|(name, saved)| history.save(name, saved))
                .and_then(|()| {
                    deleted
                        .iter()
                        .try_for_each(|reference| history.remove(&history_name(reference)))
                });
            if let Err(e) = kept {
                // Enforcement is unaffected; only a restart meanwhile would lose the version.
                tracing::warn!(error = %e, "keeping the last valid policy versions failed");
            }
        }
        self.cidrs.update(&rules);
        if rules != self.rules {
            // Selections of selectors no rule uses any more would be kept current forever;
            // the ones still used are recomputed on first use.
            self.cache.retain(|_| false);
            self.rules = rules;
            self.revision += 1;
        }
        validities
    }

    /// The selector cache's identities: reserved (the host's labelled `kube-apiserver` when
    /// this node is an apiserver endpoint), the cluster's (from CiliumIdentities) and the
    /// CIDRs' local ones. Returns how many changed.
    pub fn update_identities(
        &mut self,
        identities: &[(u32, LabelSet)],
        apiserver_on_host: bool,
    ) -> usize {
        let mut all = reserved_identities_on(apiserver_on_host);
        all.extend(identities.iter().cloned());
        all.extend(self.cidrs.identities());
        self.cache.update_identities(all)
    }

    /// The labels of identity `id`, if known.
    pub fn labels(&self, id: u32) -> Option<&LabelSet> {
        self.cache.identities().get(&id)
    }

    /// The policy of an endpoint with `labels` and the port names `ports`.
    pub fn endpoint(&mut self, labels: &LabelSet, ports: &PortNames) -> EndpointPolicy {
        let mut inputs = Inputs {
            cache: &mut self.cache,
            cidrs: &self.cidrs,
            ports,
        };
        endpoint_policy(&self.rules, labels, &mut inputs, self.mode)
    }

    /// Every identity the agent knows: reserved, the cluster's and the CIDRs'.
    pub fn identities(&self) -> &BTreeMap<u32, LabelSet> {
        self.cache.identities()
    }

    pub fn mode(&self) -> EnforcementMode {
        self.mode
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The rules in Cilium's format, and the revision of the set.
    pub fn rules_json(&self) -> (u64, Vec<serde_json::Value>) {
        (self.revision, self.rules.iter().map(rule_json).collect())
    }

    /// The selector cache: each selector in use and the identities it selects.
    pub fn selectors(&self) -> Vec<(String, Vec<u32>)> {
        let mut out: Vec<(String, Vec<u32>)> = self
            .cache
            .selections()
            .map(|(selector, ids)| (selector.to_string(), ids.iter().copied().collect()))
            .collect();
        out.sort();
        out
    }

    /// The CIDR prefixes policies name, with their local identities, for the ipcache.
    pub fn cidr_entries(&self) -> Vec<(IpNet, u32)> {
        self.cidrs.iter().collect()
    }
}

/// The schema validator's problems with `policy`, as text.
fn checked(policy: &impl PolicyObject) -> Result<(), Vec<String>> {
    let problems = validate_policy(policy);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.iter().map(ToString::to_string).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cnp(uid: &str, generation: i64, port: &str) -> Arc<CiliumNetworkPolicy> {
        let mut cnp: CiliumNetworkPolicy = serde_yaml::from_str(&format!(
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: db, namespace: default}}
spec:
  endpointSelector: {{matchLabels: {{app: db}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: employee}}}}]
    toPorts: [{{ports: [{{port: "{port}", protocol: TCP}}]}}]
"#
        ))
        .expect("cnp");
        cnp.metadata.uid = Some(uid.into());
        cnp.metadata.generation = Some(generation);
        Arc::new(cnp)
    }

    fn reference() -> PolicyRef {
        PolicyRef::cnp("default", "db")
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_version() {
        let mut state = PolicyState::new(EnforcementMode::Default, LocalCluster::new("c1"));
        let valid = state.load(&[cnp("u1", 1, "6379")], &[], &[]);
        assert!(valid[&reference()].valid);
        let (_, enforced) = state.rules_json();
        // A port out of range: the edit is invalid.
        let invalid = state.load(&[cnp("u1", 2, "99999")], &[], &[]);
        let validity = &invalid[&reference()];
        assert!(!validity.valid);
        assert!(
            validity.message.contains("ports[0].port")
                && validity
                    .message
                    .contains("the last valid version (generation 1) stays enforced"),
            "{}",
            validity.message
        );
        assert_eq!(state.rules_json().1, enforced, "generation 1's rules stay");

        // Another object of the same name (deleted and created again) has no history.
        let recreated = state.load(&[cnp("u2", 1, "99999")], &[], &[]);
        assert!(!recreated[&reference()].message.contains("stays enforced"));
        assert_eq!(state.rule_count(), 0);

        // A fixed edit replaces the kept version; a deletion forgets it.
        state.load(&[cnp("u2", 2, "6380")], &[], &[]);
        assert_eq!(state.rule_count(), 1);
        state.load(&[], &[], &[]);
        state.load(&[cnp("u2", 3, "99999")], &[], &[]);
        assert_eq!(state.rule_count(), 0, "no history after the deletion");
    }

    fn with_history(dir: &std::path::Path) -> PolicyState {
        PolicyState::new(EnforcementMode::Default, LocalCluster::new("c1"))
            .with_history(RecordDir::open(dir.to_owned()).expect("dir"))
            .expect("history")
    }

    #[test]
    fn the_last_valid_version_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut before = with_history(dir.path());
        before.load(&[cnp("u1", 1, "6379")], &[], &[]);
        let enforced = before.rules_json().1;
        drop(before);

        // Restarted while the object in the cluster is invalid: generation 1 stays.
        let mut after = with_history(dir.path());
        let invalid = after.load(&[cnp("u1", 2, "99999")], &[], &[]);
        assert!(
            invalid[&reference()]
                .message
                .contains("(generation 1) stays enforced")
        );
        assert_eq!(after.rules_json().1, enforced);

        // A deleted policy's kept version goes with it.
        after.load(&[], &[], &[]);
        let mut again = with_history(dir.path());
        again.load(&[cnp("u1", 2, "99999")], &[], &[]);
        assert_eq!(again.rule_count(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
