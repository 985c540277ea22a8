//! The agent's side of the policy engine: which policies are valid (and their `Valid`
//! condition), the identity universe of the selector cache, and each endpoint's policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use cilium_crds::policy::PolicyCondition;
use cilium_crds::validation::PolicyObject;
use cilium_crds::{CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, validate_policy};
use cilium_identity::LabelSet;
use cilium_policy::cache::reserved_identities;
use cilium_policy::render::rule_json;
use cilium_policy::{
    CidrIdentities, EndpointPolicy, EnforcementMode, LocalCluster, PolicyRef, Rule, SelectorCache,
    endpoint_policy, parse_ccnp, parse_cnp,
};
use ipnet::IpNet;

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
    /// that parsed to `parsed`, and what its `Valid` condition says.
    fn admit(
        &mut self,
        reference: &PolicyRef,
        uid: Option<String>,
        generation: Option<i64>,
        parsed: Result<Vec<Rule>, Vec<String>>,
    ) -> (Vec<Rule>, Validity) {
        match parsed {
            Ok(rules) => {
                let validity = validity(vec![], &rules);
                self.0.insert(
                    reference.clone(),
                    LastGood {
                        uid,
                        generation,
                        rules: rules.clone(),
                    },
                );
                (rules, validity)
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
                        (last.rules.clone(), validity)
                    }
                    None => {
                        self.0.remove(reference);
                        (Vec::new(), validity)
                    }
                }
            }
        }
    }
}

pub struct PolicyState {
    /// The cluster policies are read in (and whether selectors stay in it).
    cluster: LocalCluster,
    rules: Vec<Rule>,
    last_good: LastGoodVersions,
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
            cache: SelectorCache::default(),
            cidrs: CidrIdentities::default(),
            mode,
            revision: 0,
        }
    }

    /// Reads every policy: the valid ones' rules replace the current set; each policy's
    /// validity is returned for its status. An invalid policy contributes no rule of its
    /// own; if an earlier version of the same object was valid, that version's rules stay.
    pub fn load(
        &mut self,
        cnps: &[Arc<CiliumNetworkPolicy>],
        ccnps: &[Arc<CiliumClusterwideNetworkPolicy>],
    ) -> BTreeMap<PolicyRef, Validity> {
        let cluster = &self.cluster;
        let mut rules = Vec::new();
        let mut validities = BTreeMap::new();
        let mut admit = |reference: PolicyRef, meta: &kube::api::ObjectMeta, parsed| {
            let (admitted, validity) =
                self.last_good
                    .admit(&reference, meta.uid.clone(), meta.generation, parsed);
            rules.extend(admitted);
            validities.insert(reference, validity);
        };
        for cnp in cnps {
            let reference = PolicyRef {
                namespace: cnp.metadata.namespace.clone(),
                name: cnp.metadata.name.clone().unwrap_or_default(),
            };
            let parsed = checked(cnp.as_ref()).and_then(|()| parse_cnp(cnp, cluster));
            admit(reference, &cnp.metadata, parsed);
        }
        for ccnp in ccnps {
            let reference = PolicyRef {
                namespace: None,
                name: ccnp.metadata.name.clone().unwrap_or_default(),
            };
            let parsed = checked(ccnp.as_ref()).and_then(|()| parse_ccnp(ccnp, cluster));
            admit(reference, &ccnp.metadata, parsed);
        }
        // Deleted policies leave no history behind.
        self.last_good
            .0
            .retain(|reference, _| validities.contains_key(reference));
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

    /// The selector cache's identities: reserved, the cluster's (from CiliumIdentities) and
    /// the CIDRs' local ones. Returns how many changed.
    pub fn update_identities(&mut self, identities: &[(u32, LabelSet)]) -> usize {
        let mut all = reserved_identities();
        all.extend(identities.iter().cloned());
        all.extend(self.cidrs.identities());
        self.cache.update_identities(all)
    }

    /// The labels of identity `id`, if known.
    pub fn labels(&self, id: u32) -> Option<&LabelSet> {
        self.cache.identities().get(&id)
    }

    pub fn endpoint(&mut self, labels: &LabelSet) -> EndpointPolicy {
        endpoint_policy(&self.rules, labels, &mut self.cache, &self.cidrs, self.mode)
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
        PolicyRef {
            namespace: Some("default".into()),
            name: "db".into(),
        }
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_version() {
        let mut state = PolicyState::new(EnforcementMode::Default, LocalCluster::new("c1"));
        let valid = state.load(&[cnp("u1", 1, "6379")], &[]);
        assert!(valid[&reference()].valid);
        let (_, enforced) = state.rules_json();
        // A port out of range: the edit is invalid.
        let invalid = state.load(&[cnp("u1", 2, "99999")], &[]);
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
        let recreated = state.load(&[cnp("u2", 1, "99999")], &[]);
        assert!(!recreated[&reference()].message.contains("stays enforced"));
        assert_eq!(state.rule_count(), 0);

        // A fixed edit replaces the kept version; a deletion forgets it.
        state.load(&[cnp("u2", 2, "6380")], &[]);
        assert_eq!(state.rule_count(), 1);
        state.load(&[], &[]);
        state.load(&[cnp("u2", 3, "99999")], &[]);
        assert_eq!(state.rule_count(), 0, "no history after the deletion");
    }
}
