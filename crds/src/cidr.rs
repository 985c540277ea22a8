//! CIDR strings in policies: kept as the user wrote them, checked by the schema's pattern
//! and parsed exactly by the validator.
//!
//! ipnet's own schema for `IpNet` is a `oneOf` without a `type`, which Kubernetes rejects
//! as non-structural, hence this newtype with a hand-written schema.

use std::borrow::Cow;
use std::fmt;

use ipnet::IpNet;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::validation::PolicyContext;

/// IPv4 `a.b.c.d/0..32` or IPv6 `x:y::z/0..128`. The IPv6 branch is a shape check; the
/// validator parses every CIDR exactly.
pub const CIDR_PATTERN: &str = concat!(
    r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])",
    r"|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
);

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cidr(pub String);

impl Cidr {
    /// The prefix, with host bits cleared (`10.1.2.3/8` is `10.0.0.0/8`, as Cilium reads it).
    pub fn parse(&self) -> Result<IpNet, ipnet::AddrParseError> {
        self.0.parse::<IpNet>().map(|net| net.trunc())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Cidr {
    fn from(s: &str) -> Self {
        Cidr(s.to_owned())
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A CIDR, IPv4 or IPv6, e.g. 10.0.0.0/8 or fd00::/64.",
            "pattern": CIDR_PATTERN,
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

impl garde::Validate for Cidr {
    type Context = PolicyContext;

    fn validate_into(
        &self,
        _: &Self::Context,
        parent: &mut dyn FnMut() -> garde::Path,
        report: &mut garde::Report,
    ) {
        if let Err(e) = self.parse() {
            report.append(
                parent(),
                garde::Error::new(format!("{:?} is not a CIDR: {e}", self.0)),
            );
        }
    }
}

/// `except` entries must be CIDRs inside the rule's `cidr`.
pub(crate) fn excepts_within(
    cidr: &Cidr,
) -> impl FnOnce(&Option<Vec<Cidr>>, &PolicyContext) -> garde::Result + '_ {
    move |excepts, _| {
        let Ok(outer) = cidr.parse() else {
            return Ok(()); // reported on `cidr` itself
        };
        let outside: Vec<&str> = excepts
            .iter()
            .flatten()
            .filter(|e| e.parse().is_ok_and(|inner| !outer.contains(&inner)))
            .map(|e| e.0.as_str())
            .collect();
        if outside.is_empty() {
            Ok(())
        } else {
            Err(garde::Error::new(format!(
                "{} not inside cidr {}",
                outside.join(", "),
                cidr.0
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches_pattern(s: &str) -> bool {
        regex::Regex::new(CIDR_PATTERN)
            .expect("pattern compiles")
            .is_match(s)
    }

    #[test]
    fn pattern_accepts_cidrs_of_both_families() {
        for good in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "192.168.1.7/32",
            "fd00::/64",
            "::/0",
            "2001:db8::1/128",
            "::ffff:10.0.0.0/104",
        ] {
            assert!(matches_pattern(good), "{good}");
            assert!(Cidr::from(good).parse().is_ok(), "{good} parses");
        }
    }

    #[test]
    fn pattern_rejects_malformed_cidrs() {
        for bad in [
            "10.0.0.0/33",
            "256.0.0.0/8",
            "10.0.0.0",
            "10.0.0/8",
            "fd00::/129",
            "galaxy/8",
            "10.0.0.0/8 ",
            "",
        ] {
            assert!(!matches_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn parse_is_exact_where_the_pattern_is_loose() {
        assert!(matches_pattern(":::/64"));
        assert!(Cidr::from(":::/64").parse().is_err());
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(
            Cidr::from("10.1.2.3/8")
                .parse()
                .map(|n| n.to_string())
                .as_deref(),
            Ok("10.0.0.0/8")
        );
    }
}
