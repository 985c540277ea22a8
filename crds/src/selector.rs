//! Label selectors as CiliumNetworkPolicy writes them (`endpointSelector`, `fromEndpoints`, ...).
//!
//! Cilium's `EndpointSelector` is a Kubernetes `LabelSelector` whose keys may carry a label
//! source (`k8s:app`, `any:app`, `reserved:host`). It is defined here rather than reusing
//! k8s-openapi's type so that the schema can enumerate the operators and the validator can
//! check that `values` agrees with the operator.

use std::collections::BTreeMap;

use garde::Validate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A label selector: every `matchLabels` pair and every `matchExpressions` requirement must hold.
/// An empty selector (`{}`) selects everything.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(crate::validation::PolicyContext))]
pub struct EndpointSelector {
    /// `key: value` pairs; a key may be prefixed with its source (`k8s:`, `any:`, `reserved:`).
    #[garde(skip)]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[garde(dive)]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// One requirement of a selector: `key` related to `values` by `operator`.
#[serde_with::skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
#[garde(context(crate::validation::PolicyContext))]
pub struct LabelSelectorRequirement {
    #[garde(length(min = 1))]
    #[schemars(length(min = 1))]
    pub key: String,
    #[garde(skip)]
    pub operator: SelectorOperator,
    /// Required and non-empty for `In`/`NotIn`; must be empty for `Exists`/`DoesNotExist`.
    #[garde(custom(values_agree_with(self.operator)))]
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

fn values_agree_with(
    operator: SelectorOperator,
) -> impl FnOnce(&Option<Vec<String>>, &crate::validation::PolicyContext) -> garde::Result {
    move |values, _| {
        let count = values.as_ref().map_or(0, Vec::len);
        match operator {
            SelectorOperator::In | SelectorOperator::NotIn if count == 0 => Err(garde::Error::new(
                format!("operator {operator:?} needs at least one value"),
            )),
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if count > 0 => Err(
                garde::Error::new(format!("operator {operator:?} takes no values")),
            ),
            _ => Ok(()),
        }
    }
}

impl EndpointSelector {
    /// A selector made of `matchLabels` only.
    pub fn from_labels<K: Into<String>, V: Into<String>>(
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            match_labels: Some(
                labels
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
            match_expressions: None,
        }
    }
}
