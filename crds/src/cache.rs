//! Reflector caches of API objects, shared by the operator and the agent: one watch per
//! kind (listed in pages on start), kept in a [`Store`], waking whoever reads it.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::Notify;

/// Wakes a controller when something it reads changed. Notify keeps one permit, so bursts
/// of events coalesce into one pass.
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    pub async fn woken(&self) {
        self.0.notified().await;
    }
}

/// Objects listed per page when a watch (re)starts, so a large cluster is not fetched in
/// one response.
pub const PAGE_SIZE: u32 = 500;

/// A store of the objects `api` (narrowed by `config`'s selectors) holds, kept current by
/// a background watch that wakes every one of `wakers` on each change.
pub fn reflect<K>(api: Api<K>, config: watcher::Config, wakers: Vec<Waker>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    // managedFields are often the largest part of an object and never read here.
    let stream = reflector::reflector(
        writer,
        watcher(api, config.page_size(PAGE_SIZE))
            .default_backoff()
            .modify(|object| object.meta_mut().managed_fields = None),
    );
    tokio::spawn(async move {
        stream
            .for_each(|event| {
                if let Err(e) = event {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch error; retrying");
                }
                for waker in &wakers {
                    waker.wake();
                }
                futures::future::ready(())
            })
            .await;
    });
    reader
}
