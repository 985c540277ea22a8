//! Runs the `cilium-operator` binary against a bed.

use std::path::PathBuf;
use std::process::Command;

use crate::process::{Supervised, free_port};
use crate::{ClusterBed, Error};

/// A binary in the workspace's `target/<profile>/` directory, found from the running
/// executable: a test (`target/<profile>/deps/<test>`) or a bin (`target/<profile>/<bin>`);
/// `make test` and `make bench` build the binaries there first.
pub fn built_binary(name: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let profile = exe
        .parent()
        .and_then(|dir| match dir.file_name() {
            Some(leaf) if leaf == "deps" => dir.parent(),
            _ => Some(dir),
        })
        .ok_or_else(|| Error::Setup(format!("no target directory above {}", exe.display())))?;
    let path = profile.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Setup(format!(
            "{} is not built (run `cargo build --workspace --bins`)",
            path.display()
        )))
    }
}

/// A running operator replica.
pub struct OperatorProcess {
    pub identity: String,
    pub api_port: u16,
    pub process: Supervised,
}

impl OperatorProcess {
    /// Starts a replica named `identity` with the Lease in `namespace` and extra flags.
    pub fn start(
        bed: &ClusterBed,
        identity: &str,
        namespace: &str,
        flags: &[&str],
    ) -> Result<Self, Error> {
        let api_port = free_port()?;
        let mut command = Command::new(built_binary("cilium-operator")?);
        command
            .arg(format!(
                "--k8s-kubeconfig-path={}",
                bed.kubeconfig().display()
            ))
            .arg(format!("--k8s-namespace={namespace}"))
            .arg(format!("--identity={identity}"))
            .arg(format!("--operator-api-serve-addr=127.0.0.1:{api_port}"))
            .args(flags);
        let log = bed.dir().join(format!("operator-{identity}.log"));
        let process = Supervised::spawn("cilium-operator", command, &log)?;
        Ok(Self {
            identity: identity.to_owned(),
            api_port,
            process,
        })
    }
}
