//! The `cilium.io/v2` API of cilium-rs: Rust types for Cilium's five CRDs, the CRD
//! definitions generated from them, and the validator for what a schema cannot express.

// kube's `printcolumn(name = .., type_ = ..)` repeats the same keys once per column.
#![allow(clippy::duplicated_attributes)]

pub mod cache;
pub mod cidr;
pub mod cli;
pub mod endpoint;
pub mod icmp;
pub mod identity;
pub mod node;
pub mod pod_identity;
pub mod policy;
pub mod selector;
pub mod validation;

pub use endpoint::CiliumEndpoint;
pub use identity::CiliumIdentity;
pub use node::CiliumNode;
pub use policy::{CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy};
pub use validation::{Problem, validate_policy};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The schema of a field whose content is kept as written (`x-kubernetes-preserve-unknown-fields`):
/// parts of Cilium's policy schema the engine does not read, kept so they are never pruned.
pub(crate) fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// A list of [`opaque_object`]s.
pub(crate) fn opaque_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// The five CRDs, in the order they are installed.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut endpoint = CiliumEndpoint::crd();
    // Cilium's agent writes a CEP's status together with the object; its CRD has no status
    // subresource, and tools that create CEPs with a status rely on that.
    for version in &mut endpoint.spec.versions {
        version.subresources = None;
    }
    [
        CiliumNode::crd(),
        CiliumIdentity::crd(),
        endpoint,
        CiliumNetworkPolicy::crd(),
        CiliumClusterwideNetworkPolicy::crd(),
    ]
    .into_iter()
    .map(without_null_enum_values)
    .collect()
}

/// schemars lists `null` among the values of an optional enum; Kubernetes rejects a `null`
/// enum value (the property is already `nullable`), so it is dropped.
fn without_null_enum_values(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                    values.retain(|v| !v.is_null());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut json) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut json);
    serde_json::from_value(json).unwrap_or(crd)
}

/// The CRDs as one multi-document YAML stream, as checked in under `crds/yaml/`.
pub fn all_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
