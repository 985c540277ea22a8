//! The agent's view of the kvstore: whether the configured etcd answers, and reads for
//! `cilium kvstore get`. Clustermesh reads remote clusters' kvstores through the same
//! configuration format.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_agent_api::{Health, HealthState, KvPair};
use cilium_kvstore::etcd_client::{self, Client, GetOptions};
use cilium_kvstore::{EtcdConfig, EtcdError};
use tokio::sync::Mutex;

use crate::agent::Agent;
use crate::controllers;

const CHECK_PERIOD: Duration = Duration::from_secs(10);
/// The key every Cilium cluster's operator keeps fresh; reading it proves a working session.
const HEARTBEAT_KEY: &str = "cilium/.heartbeat";

/// One etcd session shared by the health check and the CLI's reads; reconnects after an
/// error.
pub struct Kvstore {
    config: EtcdConfig,
    client: Mutex<Option<Client>>,
    agent: Arc<Agent>,
}

impl Kvstore {
    pub fn new(config: EtcdConfig, agent: Arc<Agent>) -> Self {
        Self {
            config,
            client: Mutex::new(None),
            agent,
        }
    }

    /// Runs `operation` on the session (connecting first if needed), timed as `action` of
    /// `kind` in the metrics; an error drops the session so the next call reconnects.
    async fn with_client<T, F>(
        &self,
        action: &str,
        kind: &str,
        operation: impl FnOnce(Client) -> F,
    ) -> Result<T, EtcdError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let start = Instant::now();
        let mut session = self.client.lock().await;
        let client = match session.as_ref() {
            Some(client) => client.clone(),
            None => {
                let client = self.config.connect().await;
                if client.is_err() {
                    self.agent
                        .metrics()
                        .kvstore_operation(action, kind, false, start.elapsed());
                }
                session.insert(client?).clone()
            }
        };
        drop(session);
        let result = operation(client).await;
        self.agent
            .metrics()
            .kvstore_operation(action, kind, result.is_ok(), start.elapsed());
        if result.is_err() {
            *self.client.lock().await = None;
        }
        Ok(result?)
    }

    /// `key`'s value, or with `recursive` every key under it, values as text.
    pub async fn get(&self, key: &str, recursive: bool) -> Result<Vec<KvPair>, EtcdError> {
        let options = recursive.then(|| GetOptions::new().with_prefix());
        let response = self
            .with_client("Get", "cli", |mut c| async move {
                c.get(key.to_owned(), options).await
            })
            .await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| KvPair {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: String::from_utf8_lossy(kv.value()).into_owned(),
            })
            .collect())
    }

    /// Reads the heartbeat and asks etcd for its version, every [`CHECK_PERIOD`], and
    /// records the result for `cilium status` as Cilium prints the kvstore.
    pub async fn watch_health(self: Arc<Self>) {
        let endpoints = self.config.endpoints.join(",");
        loop {
            let start = Instant::now();
            let checked = self
                .with_client("Get", "heartbeat", |mut c| async move {
                    c.get(HEARTBEAT_KEY, None).await?;
                    c.status().await
                })
                .await;
            let health = match &checked {
                Ok(status) => Health::new(
                    HealthState::Ok,
                    format!("etcd: {endpoints} - {}", status.version()),
                ),
                Err(e) => Health::new(HealthState::Failure, format!("etcd: {endpoints}: {e}")),
            };
            self.agent.controllers().record(
                controllers::KVSTORE_HEALTH,
                start.elapsed(),
                checked.as_ref().map(drop).map_err(ToString::to_string),
                self.agent.metrics(),
            );
            self.agent.set_kvstore_health(health);
            tokio::time::sleep(CHECK_PERIOD).await;
        }
    }
}
