//! Keeps the node's service maps equal to the cluster's Services and EndpointSlices (and
//! the global services' remote backends): on every change of those, and on a period to
//! retry a failed write. It holds the service maps alone, so balancing never waits for the
//! endpoint and policy work, nor they for it.

use std::sync::Arc;
use std::time::Duration;

use cilium_crds::cache::Waker;
use cilium_datapath::lb::ServiceMaps;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;

use crate::clustermesh::ClusterMesh;
use crate::services::lb_table;

const RESYNC_PERIOD: Duration = Duration::from_secs(10);

pub struct Balancer {
    pub maps: ServiceMaps,
    pub cluster_name: String,
    pub cluster_id: u8,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub mesh: Option<Arc<ClusterMesh>>,
    /// Woken by the Service and EndpointSlice watchers and the mesh.
    pub changed: Waker,
}

impl Balancer {
    /// Runs until the process ends; a failed write is logged and retried.
    pub async fn run(mut self) {
        if self.services.wait_until_ready().await.is_err()
            || self.endpoint_slices.wait_until_ready().await.is_err()
        {
            tracing::error!("the Service watchers stopped before they synced; no balancing");
            return;
        }
        loop {
            self.sync();
            tokio::select! {
                () = self.changed.woken() => {}
                () = tokio::time::sleep(RESYNC_PERIOD) => {}
            }
        }
    }

    fn sync(&mut self) {
        let remote = self.mesh.as_ref().map(|m| m.caches()).unwrap_or_default();
        let table = lb_table(
            &self.cluster_name,
            self.cluster_id,
            &self.services.state(),
            &self.endpoint_slices.state(),
            &remote,
        );
        match self.maps.apply(&table) {
            Ok(0) => {}
            Ok(writes) => tracing::debug!(
                writes,
                frontends = table.services.len(),
                "service maps updated"
            ),
            Err(error) => tracing::warn!(%error, "service maps not updated; retrying"),
        }
    }
}
