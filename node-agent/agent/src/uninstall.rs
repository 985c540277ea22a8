//! Uninstall: when the agent's DaemonSet is deleted (`helm uninstall`), the agent that then
//! stops removes what it put on the node — the CNI configuration (no pod is sent to a
//! plugin without an agent) and every pinned program and map. An agent stopped for any
//! other reason (a restart, an upgrade, a node drain) leaves both: the pinned datapath
//! keeps enforcing until the next agent takes over.
//!
//! Cilium leaves its pins on uninstall (`cilium-dbg cleanup` removes them by hand); this is
//! ours. The DaemonSet is watched from the start, not looked up at SIGTERM: Helm deletes the
//! agent's RBAC right after the DaemonSet, so a late lookup would be refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Api;
use kube::runtime::watcher::{self, Event};

/// Whether the DaemonSet has been seen deleted.
#[derive(Debug, Default, Clone)]
pub struct OwnerGone(Arc<AtomicBool>);

impl OwnerGone {
    pub fn is_gone(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What one watch event says of the DaemonSet (the watch selects it by name).
#[derive(Debug, Default)]
struct Observer {
    seen_in_list: bool,
}

impl Observer {
    /// True when the event shows the DaemonSet deleted or being deleted. A (re-)list that
    /// ends without it means it went while the watch was away.
    fn deleted(&mut self, event: &Event<DaemonSet>) -> bool {
        match event {
            Event::Apply(ds) | Event::InitApply(ds) => {
                self.seen_in_list |= matches!(event, Event::InitApply(_));
                ds.metadata.deletion_timestamp.is_some()
            }
            Event::Delete(_) => true,
            Event::Init => {
                self.seen_in_list = false;
                false
            }
            Event::InitDone => !self.seen_in_list,
        }
    }
}

/// Watches DaemonSet `name` in `namespace` for ever, setting the returned flag when it is
/// deleted.
pub fn watch_daemonset(client: kube::Client, namespace: &str, name: &str) -> OwnerGone {
    let gone = OwnerGone::default();
    let flag = gone.clone();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut observer = Observer::default();
        let mut events = std::pin::pin!(cilium_crds::cache::resume(
            client,
            watcher::watcher(api, config)
        ));
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    if observer.deleted(&event) && !flag.is_gone() {
                        tracing::info!(daemonset = %name, "the agent's DaemonSet is deleted: the node is cleaned up when this agent stops");
                        flag.set();
                    }
                }
                Err(e) => {
                    tracing::warn!(daemonset = %name, error = %e, "watching the agent's DaemonSet")
                }
            }
        }
    });
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(deleting: bool) -> DaemonSet {
        let mut ds = DaemonSet::default();
        ds.metadata.name = Some("cilium".into());
        if deleting {
            ds.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        ds
    }

    #[test]
    fn a_restart_is_not_an_uninstall() {
        let mut observer = Observer::default();
        let events = [
            Event::Init,
            Event::InitApply(ds(false)),
            Event::InitDone,
            Event::Apply(ds(false)),
        ];
        assert!(events.iter().all(|e| !observer.deleted(e)));
    }

    #[test]
    fn deletion_is_seen_in_each_form() {
        let mut observer = Observer::default();
        assert!(observer.deleted(&Event::Delete(ds(false))));
        assert!(observer.deleted(&Event::Apply(ds(true))));
        // Gone while the watch was away: the re-list ends without it.
        let mut observer = Observer::default();
        assert!(!observer.deleted(&Event::Init));
        assert!(observer.deleted(&Event::InitDone));
        // A re-list that has it again clears nothing but is not a deletion either.
        let mut observer = Observer::default();
        assert!(!observer.deleted(&Event::Init));
        assert!(!observer.deleted(&Event::InitApply(ds(false))));
        assert!(!observer.deleted(&Event::InitDone));
    }
}
