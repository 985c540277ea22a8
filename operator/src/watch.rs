//! The operator's caches: one reflector per kind, shared by the controllers that read it.
//! Every replica keeps them warm so a new leader starts from a full view.

use std::sync::Arc;

use cilium_crds::{CiliumEndpoint, CiliumIdentity, CiliumNode};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
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

/// Which controllers each kind wakes.
#[derive(Clone, Default)]
pub struct Wakers {
    pub nodes: Waker,
    pub identities: Waker,
    pub mirror: Waker,
}

#[derive(Clone)]
pub struct Caches {
    pub nodes: Store<Node>,
    pub cilium_nodes: Store<CiliumNode>,
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub identities: Store<CiliumIdentity>,
    pub endpoints: Store<CiliumEndpoint>,
}

impl Caches {
    pub fn start(client: &Client, wakers: &Wakers) -> Self {
        let Wakers {
            nodes,
            identities,
            mirror,
        } = wakers;
        Self {
            nodes: reflect(Api::all(client.clone()), vec![nodes.clone()]),
            cilium_nodes: reflect(
                Api::all(client.clone()),
                vec![nodes.clone(), mirror.clone()],
            ),
            pods: reflect(Api::all(client.clone()), vec![identities.clone()]),
            namespaces: reflect(Api::all(client.clone()), vec![identities.clone()]),
            identities: reflect(
                Api::all(client.clone()),
                vec![identities.clone(), mirror.clone()],
            ),
            endpoints: reflect(
                Api::all(client.clone()),
                vec![identities.clone(), mirror.clone()],
            ),
        }
    }

    /// Waits until every cache holds its initial list.
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.nodes.wait_until_ready().await?;
        self.cilium_nodes.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.identities.wait_until_ready().await?;
        self.endpoints.wait_until_ready().await
    }
}

fn reflect<K>(api: Api<K>, wakers: Vec<Waker>) -> Store<K>
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
        watcher(api, watcher::Config::default().page_size(500))
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
