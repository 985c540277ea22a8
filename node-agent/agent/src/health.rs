//! Cluster health, as Cilium's health checks: every agent answers `GET /hello` on its
//! node's address (`--cluster-health-port`, Cilium's 4240), and probes every node's agent
//! the same way, so `cilium status` shows which nodes it can reach over the node network.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use cilium_agent_api::{ClusterHealth, NodeHealth};
use cilium_kvstore::KvNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::Agent;
use crate::sync::Caches;

/// How long a probe may take before its node counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves `GET /hello` on `ip:port`.
pub async fn serve(
    ip: IpAddr,
    port: u16,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let addr = SocketAddr::new(ip, port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
    Ok(async move { axum::serve(listener, hello()).await })
}

fn hello() -> Router {
    Router::new().route("/hello", get(|| async { "hello\n" }))
}

/// One probe: connects and asks for `/hello`; `Ok(round trip)` on a 200.
async fn probe(addr: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /hello HTTP/1.0\r\nHost: cilium-health\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200") {
            Ok(start.elapsed())
        } else {
            Err(format!(
                "unexpected answer {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(40)])
            ))
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
}

/// The summary of one round of probes.
pub fn summarize(nodes: Vec<NodeHealth>) -> ClusterHealth {
    ClusterHealth {
        reachable: nodes.iter().filter(|n| n.error.is_none()).count(),
        total: nodes.len(),
        nodes,
    }
}

/// Probes every CiliumNode's InternalIP every `interval` and records the result.
pub async fn probe_nodes(agent: Arc<Agent>, caches: Caches, port: u16, interval: Duration) {
    loop {
        let node = agent.node();
        let targets: Vec<(String, IpAddr)> = caches
            .nodes
            .state()
            .iter()
            .filter_map(|cn| {
                let entry = KvNode::from_cilium_node(&node.cluster_name, node.cluster_id, cn);
                let ip = entry.address("InternalIP")?;
                Some((entry.full_name(), ip))
            })
            .collect();
        let probes = targets.into_iter().map(|(name, ip)| async move {
            let result = probe(SocketAddr::new(ip, port)).await;
            NodeHealth {
                name,
                ip,
                latency_ms: result.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0),
                error: result.err(),
            }
        });
        let mut nodes = futures::future::join_all(probes).await;
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        agent.set_cluster_health(summarize(nodes));
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_tell_reachable_from_unreachable_nodes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, hello()).await });
        assert!(probe(addr).await.is_ok());

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let closed_addr = closed.local_addr().expect("addr");
        drop(closed);
        let err = probe(closed_addr).await.expect_err("nothing listens");
        assert!(err.contains("refused"), "{err}");

        let health = summarize(vec![
            NodeHealth {
                name: "default/node-1".into(),
                ip: addr.ip(),
                latency_ms: Some(0.2),
                error: None,
            },
            NodeHealth {
                name: "default/node-2".into(),
                ip: closed_addr.ip(),
                latency_ms: None,
                error: Some(err),
            },
        ]);
        assert_eq!((health.reachable, health.total), (1, 2));
    }
}
