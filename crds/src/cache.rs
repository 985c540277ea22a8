//! Reflector caches of API objects, shared by the operator and the agent: one watch per
//! kind (listed in pages on start), kept in a [`Store`], waking whoever reads it.

use std::sync::Arc;

use std::borrow::Cow;

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::{Deserialize, Serialize};
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

/// What a cached kind is: a cluster-scoped or namespaced resource with a static type that
/// reflectors can hold.
pub trait Cached:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Objects listed per page when a watch (re)starts, so a large cluster is not fetched in
/// one response.
pub const PAGE_SIZE: u32 = 500;

/// A store of the objects `api` (narrowed by `config`'s selectors) holds, kept current by
/// a background watch that wakes every one of `wakers` on each change.
pub fn reflect<K>(api: Api<K>, config: watcher::Config, wakers: Vec<Waker>) -> Store<K>
where
    K: Cached,
{
    let (reader, writer) = reflector::store();
    tokio::spawn(drive(writer, watch(api, config), wakers));
    reader
}

/// How a broken watch retries: 0.5 s doubling to 1.5 s, plus a random part of as much again
/// (so at most 3 s), back to 0.5 s with the first event; a watch whose resource version expired (410, after an apiserver or etcd
/// restart) lists again at once ([`resume`]). kube's default (client-go's reflector: 0.8 s
/// doubling to 30 s, reset only after two minutes without errors) grows during an outage,
/// so after a 13 s apiserver restart a watch sat out ~19 s more before it listed again. The
/// cost of the bound: while the apiserver is down each watch retries every 0.5-3 s (refused
/// connections, cheap); the jitter spreads the reconnects of many agents.
pub fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(500))
        .with_max_delay(std::time::Duration::from_millis(1500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// Whether a watch error only says its resource version is gone (the watcher lists again).
fn expired(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

/// `events` with [`watch_backoff`] between failures, and after the backoff of a failure
/// the apiserver ready ([`apiserver_ready`]): the next event is not asked for until then,
/// except after an expired resource version.
pub fn resume<K: Send>(
    client: Client,
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send {
    use kube::runtime::utils::Backoff as _;
    let backoff = std::sync::Arc::new(std::sync::Mutex::new(watch_backoff()));
    events.then(move |event| {
        let (backoff, client) = (backoff.clone(), client.clone());
        async move {
            let delay = {
                let mut backoff = backoff.lock().unwrap_or_else(|p| p.into_inner());
                match &event {
                    Ok(_) => {
                        backoff.reset();
                        None
                    }
                    Err(e) if expired(e) => None,
                    Err(_) => backoff.next(),
                }
            };
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
                apiserver_ready(&client).await;
            }
            event
        }
    })
}

/// How often, and at most how long, a failed watch asks `/readyz` before it retries.
const READY_POLL: std::time::Duration = std::time::Duration::from_millis(200);
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Returns once the apiserver answers `/readyz` with anything but a server error (a 403
/// from a locked-down cluster counts: it is up), or after [`READY_WAIT`]. Why: a restarted
/// kube-apiserver takes connections before it has started; a request for a custom
/// resource it took then is held ~10 s (its CRD informer had not synced), one sent once
/// `/readyz` is ok is answered at once (measured on 1.20: 11.9 s against 0.09 s), and a
/// built-in kind's is answered either way.
async fn apiserver_ready(client: &Client) {
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    while tokio::time::Instant::now() < deadline {
        let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
            return;
        };
        match client.request_text(request).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code < 500 => return,
            Err(_) => tokio::time::sleep(READY_POLL).await,
        }
    }
}

/// The watch of `api`, listed in pages, retried as [`resume`] does, without managedFields
/// (often the largest part of an object and never read here).
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Cached,
{
    let client = api.clone().into_client();
    resume(client, watcher(api, config.page_size(PAGE_SIZE)))
        .modify(|object| object.meta_mut().managed_fields = None)
}

/// Writes `events` into the store of `writer`, waking `wakers` on each.
async fn drive<K>(
    writer: reflector::store::Writer<K>,
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
    wakers: Vec<Waker>,
) where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    reflector::reflector(writer, events)
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
}

/// EndpointSlices of every namespace, from `discovery.k8s.io/v1` or, on an apiserver
/// older than 1.21 that does not serve it, from `v1beta1` (as Cilium falls back); the
/// fields read here are the same in both.
pub fn reflect_endpoint_slices(client: &Client, wakers: Vec<Waker>) -> Store<EndpointSlice> {
    let (reader, writer) = reflector::store();
    let client = client.clone();
    tokio::spawn(async move {
        let v1: Api<EndpointSlice> = Api::all(client.clone());
        let probe = v1.list(&ListParams::default().limit(1)).await;
        if matches!(probe, Err(kube::Error::Api(ref s)) if s.code == 404) {
            tracing::info!("the apiserver serves EndpointSlices as discovery.k8s.io/v1beta1");
            let legacy: Api<EndpointSliceV1Beta1> = Api::all(client);
            let events = watch(legacy, watcher::Config::default()).map(|event| {
                event.map(|event| match event {
                    watcher::Event::Apply(slice) => watcher::Event::Apply(slice.into()),
                    watcher::Event::Delete(slice) => watcher::Event::Delete(slice.into()),
                    watcher::Event::Init => watcher::Event::Init,
                    watcher::Event::InitApply(slice) => watcher::Event::InitApply(slice.into()),
                    watcher::Event::InitDone => watcher::Event::InitDone,
                })
            });
            drive(writer, events, wakers).await;
        } else {
            drive(writer, watch(v1, watcher::Config::default()), wakers).await;
        }
    });
    reader
}

/// `discovery.k8s.io/v1beta1` EndpointSlice, the fields v1 kept (`topology` is dropped).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSliceV1Beta1 {
    pub metadata: ObjectMeta,
    pub address_type: String,
    /// Kubernetes 1.20's controller-manager writes `null` for a slice without endpoints
    /// (a headless Service's IPv6 slice): an empty list.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub endpoints: Vec<Endpoint>,
    pub ports: Option<Vec<EndpointPort>>,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

impl From<EndpointSliceV1Beta1> for EndpointSlice {
    fn from(legacy: EndpointSliceV1Beta1) -> Self {
        EndpointSlice {
            metadata: legacy.metadata,
            address_type: legacy.address_type,
            endpoints: legacy.endpoints,
            ports: legacy.ports,
        }
    }
}

impl Resource for EndpointSliceV1Beta1 {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "EndpointSlice".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "discovery.k8s.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1beta1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "endpointslices".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1beta1_slice_reads_as_v1() {
        let legacy: EndpointSliceV1Beta1 = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
            "metadata": {"name": "db-1", "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.210.0.5"], "conditions": {"ready": true},
                           "topology": {"kubernetes.io/hostname": "node-1"}}],
            "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}],
        }))
        .expect("v1beta1 JSON");
        let slice = EndpointSlice::from(legacy);
        assert_eq!(slice.endpoints[0].addresses, ["10.210.0.5"]);
        assert_eq!(
            slice.endpoints[0].conditions.as_ref().and_then(|c| c.ready),
            Some(true)
        );
        assert_eq!(slice.ports.as_ref().map(|p| p[0].port), Some(Some(6379)));
        assert_eq!(
            EndpointSliceV1Beta1::api_version(&()),
            "discovery.k8s.io/v1beta1"
        );
    }

    #[test]
    fn a_v1beta1_slice_with_null_endpoints_is_empty() {
        // As kube-controller-manager v1.20.2 writes a headless Service's IPv6 slice.
        let legacy: EndpointSliceV1Beta1 = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
            "metadata": {"name": "db-x", "namespace": "default"},
            "addressType": "IPv6", "endpoints": null, "ports": null,
        }))
        .expect("null endpoints read");
        assert!(legacy.endpoints.is_empty());
    }
}
