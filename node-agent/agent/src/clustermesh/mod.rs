//! Clustermesh: one watcher per remote cluster of `--clustermesh-config` (a directory with
//! one etcd config file per cluster, named after it). Each reads the cluster's
//! `cilium/cluster-config/<name>`, refuses a duplicate id or this cluster's own, waits for
//! its `cilium/synced/...` canaries, lists its state and follows it with a watch. The
//! reconciler reads the caches: remote endpoint IPs enter the ipcache, remote nodes get
//! routes, remote identities enter the selector cache, global services get the remote
//! backends.
//!
//! A cluster whose kvstore fails keeps its last state for the grace period, then its
//! entries are withdrawn; the watcher reconnects with backoff and replaces the state
//! wholesale once it has read it again. Files added to or removed from the directory
//! connect or disconnect their cluster.

pub mod cache;
mod remote;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cilium_agent_api::{ClusterMeshStatus, RemoteClusterStatus};
use cilium_crds::cache::Waker;
use tokio::task::JoinHandle;

pub use cache::RemoteCache;

/// How often the directory is read for added, changed and removed files.
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// This cluster, as the mesh knows it.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    pub config_dir: PathBuf,
    pub cluster_name: String,
    pub cluster_id: u8,
    /// How long a remote cluster that went away keeps its entries.
    pub grace_period: Duration,
}

/// One remote cluster: its watcher's task, state and status.
struct Remote {
    /// The config file's content the watcher was started with.
    config_text: String,
    task: JoinHandle<()>,
    cache: Arc<RemoteCache>,
    status: RemoteClusterStatus,
    /// When it was last seen ready, while not ready (for the grace period).
    lost_since: Option<Instant>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The remote clusters and their state, shared by their watchers, the reconciler and the API.
pub struct ClusterMesh {
    settings: MeshSettings,
    remotes: Mutex<BTreeMap<String, Remote>>,
    /// Woken when a remote cluster's state changes (the reconciler, the balancer).
    changed: Vec<Waker>,
}

impl ClusterMesh {
    pub fn new(settings: MeshSettings, changed: Vec<Waker>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            remotes: Mutex::new(BTreeMap::new()),
            changed,
        })
    }

    fn wake(&self) {
        for waker in &self.changed {
            waker.wake();
        }
    }

    fn remotes(&self) -> MutexGuard<'_, BTreeMap<String, Remote>> {
        self.remotes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the config directory and withdraws clusters past their grace period.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CONFIG_POLL);
        loop {
            tick.tick().await;
            self.read_config_dir();
            self.withdraw_stale();
        }
    }

    /// Starts, restarts and stops watchers to match the directory's files.
    fn read_config_dir(self: &Arc<Self>) {
        let files = match cluster_files(&self.settings.config_dir, &self.settings.cluster_name) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %self.settings.config_dir.display(), error = %e, "reading the clustermesh config directory failed");
                return;
            }
        };
        let mut remotes = self.remotes();
        let gone: Vec<String> = remotes
            .keys()
            .filter(|name| !files.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            remotes.remove(&name);
            tracing::info!(cluster = %name, "config removed; disconnected and withdrawn");
            self.wake();
        }
        for (name, text) in files {
            if remotes.get(&name).is_some_and(|r| r.config_text == text) {
                continue;
            }
            let path = self.settings.config_dir.join(&name);
            let task = tokio::spawn(remote::watch(self.clone(), name.clone(), path));
            if let Some(remote) = remotes.get_mut(&name) {
                // A changed file (new endpoints, rotated certificates): reconnect, and keep
                // the cluster's entries until the new session has read them again.
                tracing::info!(cluster = %name, "config changed; reconnecting");
                remote.task.abort();
                remote.task = task;
                remote.config_text = text;
                continue;
            }
            tracing::info!(cluster = %name, "connecting to remote cluster");
            remotes.insert(
                name.clone(),
                Remote {
                    config_text: text,
                    task,
                    cache: Arc::new(RemoteCache::default()),
                    status: RemoteClusterStatus {
                        name,
                        status: "connecting".into(),
                        ..Default::default()
                    },
                    lost_since: None,
                },
            );
        }
    }

    fn withdraw_stale(&self) {
        let grace = self.settings.grace_period;
        let mut remotes = self.remotes();
        for remote in remotes.values_mut() {
            let stale = remote.lost_since.is_some_and(|t| t.elapsed() >= grace);
            if stale && !remote.status.withdrawn {
                tracing::warn!(cluster = %remote.status.name, ?grace, "remote cluster gone for the grace period; its entries are withdrawn");
                remote.cache = Arc::new(RemoteCache::default());
                remote.status.withdrawn = true;
                self.wake();
            }
        }
    }

    /// Runs `change` on `name`'s entry, if the cluster is still configured.
    fn update(&self, name: &str, change: impl FnOnce(&mut Remote)) {
        if let Some(remote) = self.remotes().get_mut(name) {
            change(remote);
        }
    }

    /// The ids of the connected clusters other than `name`, for the duplicate check.
    fn other_ids(&self, name: &str) -> BTreeMap<String, u32> {
        self.remotes()
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .filter_map(|(other, r)| Some((other.clone(), r.status.cluster_id?)))
            .collect()
    }

    /// The caches of every cluster not withdrawn, for one reconciler pass.
    pub fn caches(&self) -> Vec<Arc<RemoteCache>> {
        self.remotes().values().map(|r| r.cache.clone()).collect()
    }

    /// Every cluster's status; `local_global` are this cluster's global services
    /// (namespace, name), counted with the remote ones.
    pub fn status(&self, local_global: &BTreeSet<(String, String)>) -> ClusterMeshStatus {
        let remotes = self.remotes();
        let clusters: Vec<RemoteClusterStatus> = remotes
            .values()
            .map(|r| RemoteClusterStatus {
                num_nodes: r.cache.nodes.len(),
                num_identities: r.cache.identities.len(),
                num_endpoints: r.cache.ips.len(),
                num_services: r.cache.services.len(),
                num_invalid_values: r.cache.invalid,
                last_invalid_value: r.cache.last_invalid.clone(),
                ..r.status.clone()
            })
            .collect();
        let mut global = local_global.clone();
        global.extend(
            remotes
                .values()
                .flat_map(|r| r.cache.services.values())
                .map(|s| (s.namespace.clone(), s.name.clone())),
        );
        ClusterMeshStatus {
            clusters,
            num_global_services: global.len(),
        }
    }
}

/// When a cluster's grace period started, after a failed session at `now`: at the loss of
/// a ready cluster, else unchanged (still counting from its loss, or never started for a
/// cluster that never got ready and so has no entries to withdraw).
fn lost_since(was_ready: bool, lost_since: Option<Instant>, now: Instant) -> Option<Instant> {
    if was_ready { Some(now) } else { lost_since }
}

/// The cluster config files of `dir`: name → content. Hidden entries (a mounted Secret's
/// `..data` links), this cluster's own file and files without `endpoints:` (certificates,
/// keys) are not clusters.
fn cluster_files(
    dir: &std::path::Path,
    own_name: &str,
) -> std::io::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == own_name {
            continue;
        }
        // Follows symlinks: a mounted Secret's files are links into `..data`.
        if !entry.path().is_file() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if text.contains("endpoints:") {
            files.insert(name, text);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_period_runs_from_the_loss_of_a_ready_cluster() {
        let start = Instant::now();
        let later = start + Duration::from_secs(5);
        assert_eq!(lost_since(true, None, start), Some(start));
        assert_eq!(
            lost_since(false, Some(start), later),
            Some(start),
            "failed retries do not restart it"
        );
        assert_eq!(
            lost_since(false, None, later),
            None,
            "never ready: nothing to withdraw"
        );
    }

    #[test]
    fn only_cluster_config_files_are_clusters() {
        let dir = std::env::temp_dir().join(format!("mesh-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("..data")).expect("dir");
        let config = "endpoints:\n- https://10.2.2.2:2379\nca-file: cluster2-ca.crt\n";
        std::fs::write(dir.join("cluster2"), config).expect("write");
        std::fs::write(dir.join("cluster1"), config).expect("own");
        std::fs::write(dir.join("cluster2-ca.crt"), "-----BEGIN CERTIFICATE-----").expect("ca");
        std::fs::write(dir.join(".hidden"), config).expect("hidden");
        let files = cluster_files(&dir, "cluster1").expect("read");
        assert_eq!(files.keys().collect::<Vec<_>>(), ["cluster2"]);
        assert_eq!(files["cluster2"], config);
        std::fs::remove_dir_all(&dir).ok();
    }
}
