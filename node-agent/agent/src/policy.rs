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
        .any(|r| r.ingress.iter().chain(&r.egress).any(|s| s.has_l7));
    Validity {
        valid: true,
        message: if l7 {
            "Policy validation succeeded; L7 rules (http, dns, ...) are not enforced yet: only their L4 part is".into()
        } else {
            "Policy validation succeeded".into()
        },
    }
}

pub struct PolicyState {
    /// The cluster policies are read in (and whether selectors stay in it).
    cluster: LocalCluster,
    rules: Vec<Rule>,
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
            cache: SelectorCache::default(),
            cidrs: CidrIdentities::default(),
            mode,
            revision: 0,
        }
    }

    /// Reads every policy: the valid ones' rules replace the current set; each policy's
    /// validity is returned for its status. An invalid policy contributes no rule at all.
    pub fn load(
        &mut self,
        cnps: &[Arc<CiliumNetworkPolicy>],
        ccnps: &[Arc<CiliumClusterwideNetworkPolicy>],
    ) -> BTreeMap<PolicyRef, Validity> {
        let cluster = &self.cluster;
        let mut rules = Vec::new();
        let mut validities = BTreeMap::new();
        for cnp in cnps {
            let reference = PolicyRef {
                namespace: cnp.metadata.namespace.clone(),
                name: cnp.metadata.name.clone().unwrap_or_default(),
            };
            let parsed = checked(cnp.as_ref()).and_then(|()| parse_cnp(cnp, cluster));
            validities.insert(reference, take(parsed, &mut rules));
        }
        for ccnp in ccnps {
            let reference = PolicyRef {
                namespace: None,
                name: ccnp.metadata.name.clone().unwrap_or_default(),
            };
            let parsed = checked(ccnp.as_ref()).and_then(|()| parse_ccnp(ccnp, cluster));
            validities.insert(reference, take(parsed, &mut rules));
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

fn take(parsed: Result<Vec<Rule>, Vec<String>>, rules: &mut Vec<Rule>) -> Validity {
    match parsed {
        Ok(parsed) => {
            let validity = validity(vec![], &parsed);
            rules.extend(parsed);
            validity
        }
        Err(problems) => validity(problems, &[]),
    }
}
