//! The Helm chart from the tests: `charts/tools/helm.py` (Helm's own SDK, installed by
//! `make deps` into a venv beside the kube-apiserver build) lints and renders it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// `charts/cilium` of this checkout.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/cilium")
}

fn python() -> Result<PathBuf, Error> {
    crate::cached_dependency("helm-venv/bin/python", "it installs helm-python-sdk")
}

/// What one run of `helm.py` said.
pub struct HelmRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `helm.py <command> charts/cilium -f <values>...` with `extra` arguments.
pub fn helm(command: &str, values: &[&Path], extra: &[&str]) -> Result<HelmRun, Error> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/tools/helm.py");
    let mut run = Command::new(python()?);
    run.arg(script).arg(command).arg(chart_dir());
    for file in values {
        run.arg("-f").arg(file);
    }
    let output = run
        .args(extra)
        .output()
        .map_err(|e| Error::io("run helm.py", e))?;
    Ok(HelmRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The manifests the chart renders with `values` (files merged in order), as objects.
pub fn render(values: &[&Path]) -> Result<Vec<serde_json::Value>, Error> {
    let run = helm("template", values, &[])?;
    if !run.success {
        return Err(Error::Setup(format!(
            "helm template: {}",
            run.stderr.trim()
        )));
    }
    parse_documents(&run.stdout)
}

/// The objects of a multi-document YAML stream (empty documents skipped).
pub fn parse_documents(yaml: &str) -> Result<Vec<serde_json::Value>, Error> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document)
            .map_err(|e| Error::Setup(format!("rendered YAML: {e}")))?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The object of `kind` named `name` among `objects`.
pub fn find<'a>(
    objects: &'a [serde_json::Value],
    kind: &str,
    name: &str,
) -> Result<&'a serde_json::Value, Error> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .ok_or_else(|| Error::Setup(format!("the chart rendered no {kind} {name}")))
}
