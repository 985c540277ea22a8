//! Keeping a set of etcd keys equal to a desired map, every key under one lease of ours
//! so that the keys of a writer that died expire.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};
use tokio::sync::watch;

use crate::etcd::EtcdError;

/// etcd's default limit of operations in one transaction is 128.
const OPS_PER_TXN: usize = 100;

/// What brings `current` to `desired`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub puts: Vec<(String, String)>,
    pub deletes: Vec<String>,
}

impl Plan {
    /// Keys written or deleted.
    pub fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn plan(desired: &BTreeMap<String, String>, current: &BTreeMap<String, String>) -> Plan {
    Plan {
        puts: desired
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        deletes: current
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect(),
    }
}

/// A resync under a new lease: every desired key is written again (a key keeps the lease
/// it was last written with, and the old one may be about to expire), stale ones deleted.
pub fn rewrite(desired: &BTreeMap<String, String>, current: &BTreeMap<String, String>) -> Plan {
    Plan {
        puts: desired
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        deletes: plan(desired, current).deletes,
    }
}

/// A connection holding one lease, kept alive in the background.
pub struct LeasedClient {
    client: Client,
    lease: i64,
    alive: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl LeasedClient {
    /// Grants a lease of `ttl` and keeps it alive every `ttl / 3`.
    pub async fn new(mut client: Client, ttl: Duration) -> Result<Self, EtcdError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = client.lease_grant(seconds, None).await?.id();
        let (tell, alive) = watch::channel(true);
        let mut keep = client.clone();
        let every = (ttl / 3).max(Duration::from_millis(500));
        let keeper = tokio::spawn(async move {
            let ok = async {
                let (mut keeper, mut responses) = keep.lease_keep_alive(lease).await?;
                loop {
                    keeper.keep_alive().await?;
                    match responses.message().await? {
                        Some(r) if r.ttl() > 0 => {}
                        _ => return Ok::<(), EtcdError>(()),
                    }
                    tokio::time::sleep(every).await;
                }
            };
            if let Err(e) = ok.await {
                tracing::warn!(lease, error = %e, "etcd lease keepalive failed");
            }
            let _ = tell.send(false);
        });
        Ok(Self {
            client,
            lease,
            alive,
            keeper,
        })
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Resolves once keepalive failed: the lease may have expired with its keys; start
    /// over with a new one.
    pub async fn lost(&self) {
        let mut alive = self.alive.clone();
        // An error means the keeper is gone, which is a loss too.
        let _ = alive.wait_for(|alive| !*alive).await;
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Every key under `prefix` with its raw value.
    pub async fn list(&self, prefix: &str) -> Result<BTreeMap<String, Vec<u8>>, EtcdError> {
        let mut client = self.client.clone();
        let response = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect())
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<(), EtcdError> {
        let mut client = self.client.clone();
        client
            .put(key, value, Some(PutOptions::new().with_lease(self.lease)))
            .await?;
        Ok(())
    }

    /// Applies `plan` in transactions of up to [`OPS_PER_TXN`] operations.
    pub async fn apply(&self, plan: &Plan) -> Result<(), EtcdError> {
        let ops: Vec<TxnOp> = plan
            .puts
            .iter()
            .map(|(k, v)| {
                TxnOp::put(
                    k.as_str(),
                    v.as_str(),
                    Some(PutOptions::new().with_lease(self.lease)),
                )
            })
            .chain(plan.deletes.iter().map(|k| TxnOp::delete(k.as_str(), None)))
            .collect();
        let mut client = self.client.clone();
        for chunk in ops.chunks(OPS_PER_TXN) {
            client.txn(Txn::new().and_then(chunk.to_vec())).await?;
        }
        Ok(())
    }
}

impl Drop for LeasedClient {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn plan_puts_what_differs_and_deletes_what_is_not_desired() {
        let desired = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let current = map(&[("a", "1"), ("b", "old"), ("stale", "x")]);
        let plan = plan(&desired, &current);
        assert_eq!(
            plan.puts,
            [
                ("b".to_owned(), "2".to_owned()),
                ("c".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(plan.deletes, ["stale"]);
        assert!(super::plan(&desired, &desired).is_empty());
        let again = rewrite(&desired, &current);
        assert_eq!(again.puts.len(), 3, "a new lease needs every key written");
        assert_eq!(again.deletes, ["stale"]);
    }
}
