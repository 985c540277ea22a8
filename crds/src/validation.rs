//! Checks a policy's schema cannot express, in one call: [`validate_policy`] returns every
//! problem with the path of the field it concerns, so a user can fix them all at once.

use std::fmt;

use garde::Validate;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::policy::{CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, Rule};
use crate::selector::EndpointSelector;

/// What a rule may use depends on the policy kind it is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyContext {
    /// CiliumClusterwideNetworkPolicy: `nodeSelector` is allowed.
    pub clusterwide: bool,
}

/// One thing wrong with a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path of the offending field, e.g. `spec.ingress[0].toPorts[0].ports[0].endPort`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A policy object that can be validated: CNP or CCNP.
pub trait PolicyObject {
    fn validate_all(&self) -> Vec<Problem>;
}

impl PolicyObject for CiliumNetworkPolicy {
    fn validate_all(&self) -> Vec<Problem> {
        problems(
            self.spec
                .validate_with(&PolicyContext { clusterwide: false }),
        )
    }
}

impl PolicyObject for CiliumClusterwideNetworkPolicy {
    fn validate_all(&self) -> Vec<Problem> {
        problems(
            self.spec
                .validate_with(&PolicyContext { clusterwide: true }),
        )
    }
}

/// Every problem of `policy`; empty when it is valid.
pub fn validate_policy(policy: &impl PolicyObject) -> Vec<Problem> {
    policy.validate_all()
}

fn problems(result: Result<(), garde::Report>) -> Vec<Problem> {
    match result {
        Ok(()) => Vec::new(),
        Err(report) => report
            .iter()
            .map(|(path, error)| Problem {
                path: wire_path(&path.to_string()),
                message: error.message().to_string(),
            })
            .collect(),
    }
}

/// garde names fields as Rust does (`to_ports[0]`); users know them as the YAML does
/// (`toPorts[0]`). The serde names are camelCase except for a few acronyms and `type`.
fn wire_path(rust_path: &str) -> String {
    rust_path
        .split('.')
        .map(wire_segment)
        .collect::<Vec<_>>()
        .join(".")
}

fn wire_segment(segment: &str) -> String {
    let (field, index) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
    let wire = match field {
        "from_cidr" => "fromCIDR".to_owned(),
        "from_cidr_set" => "fromCIDRSet".to_owned(),
        "to_cidr" => "toCIDR".to_owned(),
        "to_cidr_set" => "toCIDRSet".to_owned(),
        "to_fqdns" => "toFQDNs".to_owned(),
        "icmp_type" => "type".to_owned(),
        _ => {
            let mut words = field.split('_');
            let first = words.next().unwrap_or_default().to_owned();
            words.fold(first, |mut acc, word| {
                let mut chars = word.chars();
                if let Some(c) = chars.next() {
                    acc.extend(c.to_uppercase());
                    acc.push_str(chars.as_str());
                }
                acc
            })
        }
    };
    format!("{wire}{index}")
}

/// `spec` or a non-empty `specs` must be present.
pub(crate) fn some_rule(
    specs: &Option<Vec<Rule>>,
) -> impl FnOnce(&Option<Rule>, &PolicyContext) -> garde::Result + '_ {
    move |spec, _| {
        if spec.is_none() && specs.as_ref().is_none_or(Vec::is_empty) {
            Err(garde::Error::new("the policy has neither spec nor specs"))
        } else {
            Ok(())
        }
    }
}

/// Exactly one of `endpointSelector` and `nodeSelector`; `nodeSelector` only in a CCNP.
pub(crate) fn one_subject(
    node_selector: &Option<EndpointSelector>,
) -> impl FnOnce(&Option<EndpointSelector>, &PolicyContext) -> garde::Result + '_ {
    move |endpoint_selector, ctx| match (endpoint_selector, node_selector) {
        (Some(_), Some(_)) => Err(garde::Error::new(
            "a rule has either endpointSelector or nodeSelector, not both",
        )),
        (None, None) => Err(garde::Error::new(
            "a rule needs an endpointSelector (or, in a CiliumClusterwideNetworkPolicy, a nodeSelector)",
        )),
        (None, Some(_)) if !ctx.clusterwide => Err(garde::Error::new(
            "nodeSelector is only allowed in a CiliumClusterwideNetworkPolicy",
        )),
        _ => Ok(()),
    }
}

/// `endPort` needs a numeric `port` that is not larger than it.
pub(crate) fn end_port_after(
    port: &str,
) -> impl FnOnce(&Option<i32>, &PolicyContext) -> garde::Result + '_ {
    move |end_port, _| {
        let Some(end) = *end_port else { return Ok(()) };
        match port.parse::<i32>() {
            Err(_) => Err(garde::Error::new(format!(
                "endPort {end} needs a numeric port, not {port:?}"
            ))),
            Ok(start) if end < start => Err(garde::Error::new(format!(
                "endPort {end} is smaller than port {start}"
            ))),
            Ok(_) => Ok(()),
        }
    }
}

/// The type must exist in the field's family (one table with the policy engine).
pub(crate) fn icmp_type(
    family: &Option<crate::policy::IcmpFamily>,
) -> impl FnOnce(&IntOrString, &PolicyContext) -> garde::Result + '_ {
    move |value, _| {
        crate::icmp::icmp_type_number(value, family.unwrap_or_default())
            .map(drop)
            .map_err(|e| garde::Error::new(e.to_string()))
    }
}

/// A `toFQDNs` entry has `matchName` or `matchPattern`, not both and not neither.
pub(crate) fn one_of_fqdn(
    pattern: &Option<String>,
) -> impl FnOnce(&Option<String>, &PolicyContext) -> garde::Result + '_ {
    move |name, _| match (name, pattern) {
        (Some(_), Some(_)) => Err(garde::Error::new("set matchName or matchPattern, not both")),
        (None, None) => Err(garde::Error::new("set matchName or matchPattern")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cnp(yaml: &str) -> CiliumNetworkPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: t, namespace: default}}\n{yaml}"
        ))
        .expect("test policy parses")
    }

    fn ccnp(yaml: &str) -> CiliumClusterwideNetworkPolicy {
        serde_yaml::from_str(&format!(
            "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: t}}\n{yaml}"
        ))
        .expect("test policy parses")
    }

    fn report(problems: Vec<Problem>) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_valid_policy_has_no_problems() {
        let policy = cnp(
            "spec:\n  endpointSelector: {matchLabels: {app: db}}\n  ingress:\n  - fromEndpoints: [{matchExpressions: [{key: a, operator: In, values: [x]}, {key: b, operator: Exists}]}]\n    fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]\n    toPorts: [{ports: [{port: \"80\", endPort: 90, protocol: TCP}]}]\n    icmps: [{fields: [{type: 8}, {type: EchoRequest, family: IPv6}]}]\n",
        );
        assert_eq!(report(validate_policy(&policy)), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let policy = cnp(
            "specs:\n- endpointSelector: {}\n  egress:\n  - toCIDRSet: [{cidr: 10.0.0.0/16, except: [10.0.1.0/24, 192.168.0.0/24]}]\n    toFQDNs: [{matchName: a.com, matchPattern: \"*.a.com\"}, {}]\n    toPorts: [{ports: [{port: http, endPort: 90}]}]\n    icmps: [{fields: [{type: 300}, {type: Galaxy}]}]\n    toCIDR: [\":::/64\"]\n",
        );
        let mut problems = report(validate_policy(&policy));
        problems.sort();
        assert_eq!(
            problems,
            [
                "specs[0].egress[0].icmps[0].fields[0].type: ICMP type 300 is outside 0..255",
                "specs[0].egress[0].icmps[0].fields[1].type: \"Galaxy\" is not an ICMP type name",
                "specs[0].egress[0].toCIDRSet[0].except: 192.168.0.0/24 not inside cidr 10.0.0.0/16",
                "specs[0].egress[0].toCIDR[0]: \":::/64\" is not a CIDR: invalid IP address syntax",
                "specs[0].egress[0].toFQDNs[0].matchName: set matchName or matchPattern, not both",
                "specs[0].egress[0].toFQDNs[1].matchName: set matchName or matchPattern",
                "specs[0].egress[0].toPorts[0].ports[0].endPort: endPort 90 needs a numeric port, not \"http\"",
            ]
        );
    }

    #[test]
    fn a_policy_needs_rules() {
        assert_eq!(
            report(validate_policy(&cnp(""))),
            ["spec: the policy has neither spec nor specs"]
        );
        assert_eq!(
            report(validate_policy(&cnp("specs: []"))),
            ["spec: the policy has neither spec nor specs"]
        );
    }

    #[test]
    fn node_selector_only_in_clusterwide_policies() {
        let body = "spec:\n  nodeSelector: {matchLabels: {role: worker}}\n  ingress: [{fromEntities: [cluster]}]\n";
        assert_eq!(
            report(validate_policy(&cnp(body))),
            [
                "spec.endpointSelector: nodeSelector is only allowed in a CiliumClusterwideNetworkPolicy",
            ]
        );
        assert!(validate_policy(&ccnp(body)).is_empty());
        let both = "spec:\n  nodeSelector: {}\n  endpointSelector: {}\n";
        assert_eq!(
            report(validate_policy(&ccnp(both))),
            ["spec.endpointSelector: a rule has either endpointSelector or nodeSelector, not both",]
        );
        assert_eq!(
            report(validate_policy(&ccnp("spec: {ingress: [{}]}"))).len(),
            1
        );
    }

    #[test]
    fn wire_paths_use_the_yaml_names() {
        assert_eq!(
            wire_path("spec.ingress_deny[0].from_cidr_set[1].except"),
            "spec.ingressDeny[0].fromCIDRSet[1].except"
        );
        assert_eq!(
            wire_path("specs[2].egress[0].to_fqdns[0].match_name"),
            "specs[2].egress[0].toFQDNs[0].matchName"
        );
        assert_eq!(
            wire_path("spec.endpoint_selector.match_expressions[0].values"),
            "spec.endpointSelector.matchExpressions[0].values"
        );
    }
}
