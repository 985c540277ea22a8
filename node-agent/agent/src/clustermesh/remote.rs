//! The watcher of one remote cluster: connect, check its cluster config, wait for its
//! sync canaries, list its state in pages, then follow a watch until an error; then again
//! after a backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cilium_kvstore::etcd_client::{Client, EventType, GetOptions, KvClient, WatchOptions};
use cilium_kvstore::keys::{
    self, HEARTBEAT_KEY, IDENTITIES_PREFIX, IP_PREFIX, NODES_PREFIX, SERVICES_PREFIX,
};
use cilium_kvstore::{ClusterConfig, EtcdConfig, EtcdError};

use super::ClusterMesh;
use super::cache::{ConfigError, RemoteCache, check_config};

/// Everything the agent reads of a remote cluster lies under this prefix.
const STATE_PREFIX: &str = "cilium/state/";
/// Keys per page of the initial list (a remote cluster may hold tens of thousands).
const PAGE: i64 = 2_000;
/// The largest response decoded (gRPC's default is 4 MiB, which ten values of 1.2 MiB in
/// one page exceed: the list failed on every try, and the cluster was never read). A page
/// over it is asked for again in halves; a single value over it is refused by its key.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// How often a session proves the remote etcd still answers.
const STATUS_CHECK: Duration = Duration::from_secs(5);
/// How long one check (or a canary poll) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the watch ended: {0}")]
    WatchEnded(String),
}

impl From<cilium_kvstore::etcd_client::Error> for SessionError {
    fn from(e: cilium_kvstore::etcd_client::Error) -> Self {
        Self::Etcd(e.into())
    }
}

impl From<cilium_kvstore::DecodeError> for SessionError {
    fn from(e: cilium_kvstore::DecodeError) -> Self {
        Self::Invalid(e.to_string())
    }
}

async fn timed<T, E: Into<SessionError>>(
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(SessionError::Timeout(REQUEST_TIMEOUT)),
    }
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Watches cluster `name` (config file `path`) until the task is aborted.
#[tracing::instrument(skip(mesh, path), fields(cluster = %name))]
pub(super) async fn watch(mesh: Arc<ClusterMesh>, name: String, path: PathBuf) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut was_ready = false;
        let ended = session(&mesh, &name, &path, &mut was_ready).await;
        if was_ready {
            backoff = Duration::from_secs(1);
        }
        let reason = ended.err().map(|e| e.to_string()).unwrap_or_default();
        tracing::warn!(error = %reason, retry_in = ?backoff, "remote cluster unavailable");
        mesh.update(&name, |remote| {
            remote.lost_since = super::lost_since(
                remote.status.ready,
                remote.lost_since,
                std::time::Instant::now(),
            );
            remote.status.ready = false;
            remote.status.connected = false;
            remote.status.num_failures += 1;
            remote.status.last_failure = Some(jiff::Timestamp::now().to_string());
            remote.status.status = reason;
        });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn set_status(mesh: &ClusterMesh, name: &str, text: impl Into<String>) {
    let text = text.into();
    mesh.update(name, |remote| remote.status.status = text);
}

async fn session(
    mesh: &ClusterMesh,
    name: &str,
    path: &std::path::Path,
    was_ready: &mut bool,
) -> Result<std::convert::Infallible, SessionError> {
    let config = EtcdConfig::from_file(path)?;
    mesh.update(name, |remote| {
        remote.status.endpoints = config.endpoints.clone();
    });
    let mut client = config.connect().await?;

    let config_key = keys::cluster_config_key(name);
    let cluster_config = loop {
        let response = timed(client.get(config_key.as_str(), None)).await?;
        match response.kvs().first() {
            Some(kv) => break ClusterConfig::decode(&config_key, kv.value())?,
            None => {
                set_status(mesh, name, format!("waiting for {config_key}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let cluster_id = check_config(
        name,
        &cluster_config,
        mesh.settings.cluster_id,
        &mesh.other_ids(name),
    )?;
    mesh.update(name, |remote| {
        remote.status.cluster_id = Some(u32::from(cluster_id));
        remote.status.connected = true;
    });

    if cluster_config.capabilities.synced_canaries {
        for prefix in [NODES_PREFIX, IDENTITIES_PREFIX, IP_PREFIX, SERVICES_PREFIX] {
            let canary = keys::synced_key(name, prefix);
            while timed(client.get(canary.as_str(), None))
                .await?
                .kvs()
                .is_empty()
            {
                set_status(mesh, name, format!("waiting for the sync canary {canary}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    let (cache, revision) = list(&mut client, name, cluster_id).await?;
    tracing::info!(
        nodes = cache.nodes.len(),
        identities = cache.identities.len(),
        endpoints = cache.ips.len(),
        services = cache.services.len(),
        invalid = cache.invalid,
        "remote cluster ready"
    );
    mesh.update(name, |remote| {
        remote.cache = Arc::new(cache);
        remote.status.ready = true;
        remote.status.withdrawn = false;
        remote.status.status = "ready".into();
        remote.lost_since = None;
    });
    *was_ready = true;
    mesh.wake();
    follow(mesh, name, &mut client, revision).await
}

/// Every key under [`STATE_PREFIX`] at one revision, read in pages.
async fn list(
    client: &mut Client,
    name: &str,
    cluster_id: u8,
) -> Result<(RemoteCache, i64), SessionError> {
    let mut cache = RemoteCache::new(name, cluster_id);
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let end = prefix_end(STATE_PREFIX);
    let mut from = STATE_PREFIX.as_bytes().to_vec();
    let mut revision = 0;
    let mut page = PAGE;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let response = match timed(kv.get(from.clone(), Some(options))).await {
            Ok(response) => response,
            Err(SessionError::Etcd(e)) if e.is_response_too_large() && page > 1 => {
                page /= 2;
                continue;
            }
            Err(SessionError::Etcd(e)) if e.is_response_too_large() => {
                let (key, at) = first_key(&mut kv, &from, &end, revision).await?;
                revision = at;
                cache.refuse_unread(
                    &String::from_utf8_lossy(&key),
                    &format!("a value over the {MAX_RESPONSE_BYTES} bytes a response may carry"),
                );
                from = key;
                from.push(0);
                continue;
            }
            Err(e) => return Err(e),
        };
        page = (page * 2).min(PAGE);
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        for kv in response.kvs() {
            cache.put(&String::from_utf8_lossy(kv.key()), kv.value());
        }
        match (response.more(), response.kvs().last()) {
            (true, Some(last)) => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok((cache, revision)),
        }
    }
}

/// The first key in `from..end` (without its value) and the revision it was read at.
async fn first_key(
    kv: &mut KvClient,
    from: &[u8],
    end: &[u8],
    revision: i64,
) -> Result<(Vec<u8>, i64), SessionError> {
    let mut options = GetOptions::new()
        .with_range(end.to_vec())
        .with_limit(1)
        .with_keys_only();
    if revision != 0 {
        options = options.with_revision(revision);
    }
    let response = timed(kv.get(from.to_vec(), Some(options))).await?;
    let at = match revision {
        0 => response.header().map_or(0, |h| h.revision()),
        known => known,
    };
    let key = response
        .kvs()
        .first()
        .map(|kv| kv.key().to_vec())
        .ok_or_else(|| SessionError::Invalid("a page too large to read holds no key".into()))?;
    Ok((key, at))
}

/// Applies the watch's events from `revision` on, and checks etcd every [`STATUS_CHECK`].
async fn follow(
    mesh: &ClusterMesh,
    name: &str,
    client: &mut Client,
    revision: i64,
) -> Result<std::convert::Infallible, SessionError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .watch(STATE_PREFIX, Some(options))
        .await?;
    let mut check = tokio::time::interval(STATUS_CHECK);
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = message?
                    .ok_or_else(|| SessionError::WatchEnded("closed by etcd".into()))?;
                if response.canceled() {
                    return Err(SessionError::WatchEnded(format!(
                        "canceled ({}; compacted at {})",
                        response.cancel_reason(),
                        response.compact_revision()
                    )));
                }
                let mut changed = false;
                mesh.update(name, |remote| {
                    let cache = Arc::make_mut(&mut remote.cache);
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key());
                        changed |= match event.event_type() {
                            EventType::Put => cache.put(&key, kv.value()),
                            EventType::Delete => cache.delete(&key),
                        };
                    }
                });
                if changed {
                    mesh.wake();
                }
            }
            _ = check.tick() => {
                timed(client.get(HEARTBEAT_KEY, None)).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end("cilium/state/"), b"cilium/state0");
    }
}
