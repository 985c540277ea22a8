//! The operator's caches: one reflector per kind, shared by the controllers that read it.
//! Every replica keeps them warm so a new leader starts from a full view.

pub use cilium_crds::cache::Waker;
use cilium_crds::cache::reflect;
use cilium_crds::{CiliumEndpoint, CiliumIdentity, CiliumNode};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};

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
    /// Global services and their backends, for the kvstore mirror.
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
}

impl Caches {
    pub fn start(client: &Client, wakers: &Wakers) -> Self {
        let Wakers {
            nodes,
            identities,
            mirror,
        } = wakers;
        Self {
            nodes: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                vec![nodes.clone()],
            ),
            cilium_nodes: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                vec![nodes.clone(), mirror.clone()],
            ),
            pods: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                vec![identities.clone()],
            ),
            namespaces: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                vec![identities.clone()],
            ),
            identities: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                vec![identities.clone(), mirror.clone()],
            ),
            endpoints: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                vec![identities.clone(), mirror.clone()],
            ),
            services: reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                vec![mirror.clone()],
            ),
            endpoint_slices: cilium_crds::cache::reflect_endpoint_slices(
                client,
                vec![mirror.clone()],
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
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await?;
        self.endpoints.wait_until_ready().await
    }
}
