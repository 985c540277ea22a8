//! Two cluster-in-a-box instances meshed as in the clustermesh document: each with its own
//! apiserver (and its etcd), its own kvstore (an etcd speaking TLS with client
//! certificates, which its operator mirrors the cluster into), its own cluster name, id
//! and PodCIDR pool, and nodes on one shared link. Each agent reads the other cluster's
//! kvstore through a file in its `--clustermesh-config` directory, written by
//! [`Mesh::connect`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::cluster::{Cluster, Lan, Setup, port_of};
use crate::etcd::EtcdTls;
use crate::operator::FAST_LEASE;
use crate::pki::Authority;
use crate::{ClusterBed, Error, Etcd};

/// The clusters of the mesh: (name, id, PodCIDR pool, host part of the first node's address).
pub const MEMBERS: [(&str, u8, &str, u8); 2] = [
    ("cluster1", 101, "10.210.0.0/16", 11),
    ("cluster2", 102, "10.211.0.0/16", 21),
];

/// Where every agent of the mesh serves `/metrics`, in its node's namespace.
pub const METRICS_PORT: u16 = 9962;

/// One cluster of the mesh.
pub struct Member {
    pub name: String,
    pub id: u8,
    pub cluster: Cluster,
    kvstore: Mutex<Etcd>,
    /// The agents' `--clustermesh-config`.
    pub mesh_dir: PathBuf,
}

impl Member {
    /// Direct control of this cluster's kvstore, e.g. to cut it and bring it back.
    pub fn kvstore(&self) -> MutexGuard<'_, Etcd> {
        self.kvstore.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Mesh {
    pub members: Vec<Member>,
    _lan: Arc<Lan>,
}

/// Cilium's etcd config file for `endpoint` with `tls`'s CA and client certificate.
pub fn etcd_config(endpoint: &str, tls: &EtcdTls) -> String {
    format!(
        "endpoints:\n- {endpoint}\nca-file: {}\ncert-file: {}\nkey-file: {}\n",
        tls.ca.display(),
        tls.client.cert.display(),
        tls.client.key.display()
    )
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

impl Mesh {
    /// Both clusters with `nodes` nodes each, their agents' remote clusters dropped after
    /// `grace` away; not yet connected to each other.
    pub fn start(nodes: usize, grace: Duration) -> Result<Self, Error> {
        let lan = Arc::new(Lan::new()?);
        // The kvstores first: every node relays both, so both ports must be known.
        let mut prepared = Vec::new();
        for (name, _, _, _) in MEMBERS {
            let bed = ClusterBed::start()?;
            let dir = bed.dir().join("kvstore");
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("kvstore directory", e))?;
            let pki = Authority::new(&dir, &format!("{name} kvstore"))?;
            let etcd = Etcd::start_tls(&dir, &pki)?;
            let tls = etcd
                .tls()
                .cloned()
                .ok_or_else(|| Error::Setup("the kvstore has no TLS".into()))?;
            let config = dir.join("etcd.config");
            write(&config, &etcd_config(&etcd.endpoint(), &tls))?;
            prepared.push((bed, etcd, config));
        }
        let kvstore_ports = prepared
            .iter()
            .map(|(_, etcd, _)| port_of(&etcd.endpoint()))
            .collect::<Result<Vec<u16>, Error>>()?;
        let mut members = Vec::new();
        for ((bed, etcd, config), (name, id, pool, first)) in prepared.into_iter().zip(MEMBERS) {
            let mesh_dir = bed.dir().join("clustermesh");
            std::fs::create_dir_all(&mesh_dir).map_err(|e| Error::io("mesh directory", e))?;
            let kvstore = format!("--kvstore-opt=etcd.config={}", config.display());
            let identity = [
                format!("--cluster-name={name}"),
                format!("--cluster-id={id}"),
            ];
            let mut operator_flags = vec![
                format!("--cluster-pool-ipv4-cidr={pool}"),
                "--cluster-pool-ipv4-mask-size=22".into(),
                "--kvstore=etcd".into(),
                kvstore.clone(),
            ];
            operator_flags.extend(identity.clone());
            operator_flags.extend(FAST_LEASE.iter().map(|f| (*f).to_owned()));
            let mut agent_flags = vec!["--kvstore=etcd".into(), kvstore];
            agent_flags.extend(identity);
            agent_flags.extend([
                format!("--clustermesh-config={}", mesh_dir.display()),
                format!("--clustermesh-grace-period={}s", grace.as_secs()),
                format!("--prometheus-serve-addr=127.0.0.1:{METRICS_PORT}"),
            ]);
            let setup = Setup {
                operator_flags,
                agent_flags,
                lan: Some(lan.clone()),
                first_address: first,
                relay_ports: kvstore_ports.clone(),
                ..Setup::standard(&bed, nodes)
            };
            let cluster = Cluster::start_on(bed, setup)?;
            members.push(Member {
                name: name.to_owned(),
                id,
                cluster,
                kvstore: Mutex::new(etcd),
                mesh_dir,
            });
        }
        Ok(Self { members, _lan: lan })
    }

    /// Writes `to`'s etcd config into `from`'s mesh directory, named after `to`: `from`'s
    /// agents connect to it.
    pub fn connect(&self, from: usize, to: usize) -> Result<(), Error> {
        let (source, target) = (&self.members[from], &self.members[to]);
        let kvstore = target.kvstore();
        let tls = kvstore
            .tls()
            .ok_or_else(|| Error::Setup("the kvstore has no TLS".into()))?;
        write(
            &source.mesh_dir.join(&target.name),
            &etcd_config(&kvstore.endpoint(), tls),
        )
    }

    /// Removes `to`'s file from `from`'s mesh directory: `from`'s agents disconnect.
    pub fn disconnect(&self, from: usize, to: usize) -> Result<(), Error> {
        let path = self.members[from].mesh_dir.join(&self.members[to].name);
        std::fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))
    }
}

/// A global `protected-db` Service in `default` and the EndpointSlice the
/// controller-manager would write for it with `backend` (the bed runs no
/// controller-manager; its apiserver, 1.20, serves EndpointSlices as v1beta1).
pub fn global_service(
    bed: &ClusterBed,
    backend: std::net::Ipv4Addr,
    port: u16,
) -> Result<(), Error> {
    let ports = serde_json::json!([{"name": "redis", "port": port, "protocol": "TCP"}]);
    let objects = [
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "protected-db", "namespace": "default",
                         "annotations": {"io.cilium/global-service": "true"}},
            "spec": {"selector": {"app": "protected-db"}, "ports": ports},
        }),
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
            "metadata": {"name": "protected-db-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "protected-db"}},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [backend.to_string()], "conditions": {"ready": true}}],
        }),
    ];
    for object in objects {
        bed.kubectl_run(&["apply", "-f", "-"], Some(&object.to_string()))?;
    }
    Ok(())
}
