//! CiliumIdentity: a numeric security identity (the object's name) and its label set.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Cilium puts the labels at the top level of the object, not under a spec.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "cilium.io",
    version = "v2",
    kind = "CiliumIdentity",
    plural = "ciliumidentities",
    singular = "ciliumidentity",
    shortname = "ciliumid",
    category = "cilium",
    no_spec,
    printcolumn(
        name = "Namespace",
        type_ = "string",
        description = "The namespace of the entity",
        json_path = ".metadata.labels.io\\.kubernetes\\.pod\\.namespace"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        description = "The age of the identity",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct IdentityFields {
    /// `source:key` → value, e.g. `k8s:app` → `web`.
    #[serde(rename = "security-labels")]
    pub security_labels: BTreeMap<String, String>,
}
