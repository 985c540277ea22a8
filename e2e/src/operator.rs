//! Runs the `cilium-operator` binary against a bed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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
        Self::start_with_kubeconfig(bed, bed.kubeconfig(), identity, namespace, flags)
    }

    /// As [`start`](Self::start), with the credentials of `kubeconfig`.
    pub fn start_with_kubeconfig(
        bed: &ClusterBed,
        kubeconfig: &std::path::Path,
        identity: &str,
        namespace: &str,
        flags: &[&str],
    ) -> Result<Self, Error> {
        let api_port = free_port()?;
        let mut command = Command::new(built_binary("cilium-operator")?);
        command
            .arg(format!("--k8s-kubeconfig-path={}", kubeconfig.display()))
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

/// Leader-election flags short enough for tests.
pub const FAST_LEASE: [&str; 3] = [
    "--leader-election-lease-duration=4s",
    "--leader-election-renew-deadline=3s",
    "--leader-election-retry-period=1s",
];

/// One field of the operator's Lease in `namespace` (a kubectl jsonpath).
fn lease_field(bed: &ClusterBed, namespace: &str, path: &str) -> Option<String> {
    bed.kubectl_run(
        &[
            "get",
            "lease",
            "cilium-operator-resource-lock",
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={path}"),
        ],
        None,
    )
    .ok()
}

/// The holder of the operator's Lease in `namespace`.
pub fn lease_holder(bed: &ClusterBed, namespace: &str) -> Option<String> {
    lease_field(bed, namespace, "{.spec.holderIdentity}").filter(|h| !h.is_empty())
}

/// Whether the replica serving metrics on `api_port` considers itself leader.
pub fn is_leader(api_port: u16) -> bool {
    http_get(api_port, "/metrics")
        .lines()
        .any(|l| l == "cilium_operator_is_leader 1")
}

/// The whole HTTP/1.0 response to `GET path` on loopback, or "" when unreachable.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// A leader killed and the replica that took its place.
pub struct Takeover {
    pub killed: String,
    pub next: String,
    /// From the kill to the new holder's `acquireTime` (which it stamps as it writes
    /// itself in; one clock, this machine's).
    pub after: Duration,
}

/// Kills (`kill -9`) the replica holding the Lease in `namespace`, removes it from
/// `replicas`, and waits until a remaining one holds the Lease.
pub fn kill_leader(
    bed: &ClusterBed,
    namespace: &str,
    replicas: &mut Vec<OperatorProcess>,
    timeout: Duration,
) -> Takeover {
    let holder = crate::wait_for("a lease holder", timeout, || lease_holder(bed, namespace));
    let index = replicas
        .iter()
        .position(|r| r.identity == holder)
        .expect("the holder is one of the replicas");
    let mut leader = replicas.remove(index);
    let killed_at = k8s_openapi::jiff::Timestamp::now();
    leader.process.signal(libc::SIGKILL);
    leader.process.stop();
    let survivors: Vec<String> = replicas.iter().map(|r| r.identity.clone()).collect();
    let next = crate::wait_for("a surviving replica to take the lease", timeout, || {
        lease_holder(bed, namespace).filter(|h| survivors.contains(h))
    });
    let acquired = lease_field(bed, namespace, "{.spec.acquireTime}")
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .expect("the new holder's acquireTime");
    let after = acquired
        .duration_since(killed_at)
        .try_into()
        .unwrap_or_default();
    Takeover {
        killed: holder,
        next,
        after,
    }
}

/// CiliumNode name → its podCIDRs.
pub fn pod_cidrs(
    bed: &ClusterBed,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, Error> {
    Ok(bed
        .list("ciliumnodes")?
        .iter()
        .map(|cn| {
            let cidrs = cn["spec"]["ipam"]["podCIDRs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect();
            let name = cn["metadata"]["name"].as_str().unwrap_or_default();
            (name.to_owned(), cidrs)
        })
        .collect())
}
