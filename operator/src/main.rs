//! cilium-operator: leader-elected owner of CiliumNode PodCIDR allocation, CiliumIdentity
//! allocation and GC, and the etcd kvstore mirror.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cilium_crds::cli::{ConfigDir, parse_duration, parse_listen_addr, run_if_some};
use cilium_identity::LabelFilter;
use cilium_kvstore::flags::KvstoreFlags;
use cilium_operator::FIELD_MANAGER;
use cilium_operator::identities::{IdentityConfig, IdentityController};
use cilium_operator::kvmirror::{Mirror, MirrorConfig};
use cilium_operator::leader::{self, LEASE_NAME, Timing};
use cilium_operator::metrics::Metrics;
use cilium_operator::nodes::NodeController;
use cilium_operator::podcidr::PoolConfig;
use cilium_operator::watch::{Caches, Wakers};
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::events::{Recorder, Reporter};

/// Flags as Cilium's operator names them.
#[derive(Debug, clap::Parser)]
#[command(name = "cilium-operator", version)]
struct Args {
    /// IPv4 pools for cluster-pool IPAM (comma-separated or repeated).
    #[arg(long = "cluster-pool-ipv4-cidr", value_delimiter = ',', value_parser = parse_cidr)]
    ipv4_pools: Vec<IpNet>,
    #[arg(long = "cluster-pool-ipv4-mask-size", default_value_t = 24)]
    ipv4_mask: u8,
    /// IPv6 pools for cluster-pool IPAM.
    #[arg(long = "cluster-pool-ipv6-cidr", value_delimiter = ',', value_parser = parse_cidr)]
    ipv6_pools: Vec<IpNet>,
    #[arg(long = "cluster-pool-ipv6-mask-size", default_value_t = 120)]
    ipv6_mask: u8,
    #[arg(long, default_value = "default")]
    cluster_name: String,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8))]
    cluster_id: u8,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_election_renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_election_retry_period: Duration,
    /// Namespace of the leader-election Lease.
    #[arg(
        long = "k8s-namespace",
        env = "CILIUM_K8S_NAMESPACE",
        default_value = "kube-system"
    )]
    namespace: String,
    /// Kubeconfig file; without it, in-cluster config or $KUBECONFIG.
    #[arg(long = "k8s-kubeconfig-path", alias = "kubeconfig")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Address of /healthz and /metrics.
    #[arg(long = "operator-api-serve-addr", default_value = "127.0.0.1:9234", value_parser = parse_listen_addr)]
    api_addr: SocketAddr,
    /// A second address serving /metrics to Prometheus (Cilium's `:9963`); off when unset.
    #[arg(long = "operator-prometheus-serve-addr", value_parser = parse_listen_addr)]
    prometheus_addr: Option<SocketAddr>,
    /// Holder identity in the Lease (default: hostname and a random suffix).
    #[arg(long, env = "CILIUM_OPERATOR_ID")]
    identity: Option<String>,
    /// Identity-relevant label patterns, `[source:][!]regex` (comma-separated or
    /// repeated); Cilium's default exclusions always apply.
    #[arg(long = "labels", value_delimiter = ',')]
    labels: Vec<String>,
    /// How often unused identities are marked and deleted.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    identity_gc_interval: Duration,
    /// How long an identity stays marked unused before it is deleted.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    identity_heartbeat_timeout: Duration,
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    identity_gc_rate_interval: Duration,
    /// Most identities deleted per --identity-gc-rate-interval.
    #[arg(long, default_value_t = 2500)]
    identity_gc_rate_limit: usize,
    /// The kvstore; the mirror runs when etcd is configured.
    #[command(flatten)]
    kvstore: KvstoreFlags,
    /// TTL of the lease the mirror's keys are written under.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    kvstore_lease_ttl: Duration,
    #[command(flatten)]
    config: ConfigDir,
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse().map_err(|e| format!("{s:?} is not a CIDR: {e}"))
}

/// Go-style durations: `15s`, `500ms`, `2m`, `1h`.
impl Args {
    fn pools(&self) -> anyhow::Result<PoolConfig> {
        let pools = PoolConfig {
            ipv4: self.ipv4_pools.clone(),
            ipv4_mask: self.ipv4_mask,
            ipv6: self.ipv6_pools.clone(),
            ipv6_mask: self.ipv6_mask,
        };
        pools
            .validate()
            .context("invalid cluster-pool configuration")?;
        anyhow::ensure!(
            !pools.ipv4.is_empty() || !pools.ipv6.is_empty(),
            "set --cluster-pool-ipv4-cidr or --cluster-pool-ipv6-cidr"
        );
        Ok(pools)
    }

    fn identity_config(&self) -> anyhow::Result<IdentityConfig> {
        let filter = LabelFilter::new(&self.labels).context("invalid --labels")?;
        anyhow::ensure!(
            !self.identity_gc_interval.is_zero(),
            "--identity-gc-interval must be positive"
        );
        Ok(IdentityConfig {
            cluster_name: self.cluster_name.clone(),
            cluster_id: self.cluster_id,
            filter,
            gc_interval: self.identity_gc_interval,
            heartbeat_timeout: self.identity_heartbeat_timeout,
            gc_rate_interval: self.identity_gc_rate_interval,
            gc_rate_limit: self.identity_gc_rate_limit,
        })
    }

    /// The mirror's settings, or None when no etcd is configured.
    fn mirror_config(&self) -> anyhow::Result<Option<MirrorConfig>> {
        let Some(etcd) = self.kvstore.etcd_config().map_err(anyhow::Error::msg)? else {
            return Ok(None);
        };
        anyhow::ensure!(
            self.kvstore_lease_ttl >= Duration::from_secs(2),
            "--kvstore-lease-ttl must be at least 2s"
        );
        Ok(Some(MirrorConfig {
            etcd,
            cluster_name: self.cluster_name.clone(),
            cluster_id: self.cluster_id,
            lease_ttl: self.kvstore_lease_ttl,
        }))
    }

    fn timing(&self) -> anyhow::Result<Timing> {
        anyhow::ensure!(
            self.leader_election_renew_deadline < self.leader_election_lease_duration,
            "--leader-election-renew-deadline must be shorter than --leader-election-lease-duration"
        );
        Ok(Timing {
            lease_duration: self.leader_election_lease_duration,
            renew_deadline: self.leader_election_renew_deadline,
            retry_period: self.leader_election_retry_period,
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cilium_crds::cli::init_logging();
    cilium_crds::cli::exit_code("cilium-operator", run(cilium_crds::cli::parse_args()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Every flag is checked before the cluster is touched.
    let pools = args.pools()?;
    let timing = args.timing()?;
    let identity_config = args.identity_config()?;
    let mirror_config = args.mirror_config()?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let client = cilium_crds::cli::client(args.kubeconfig.as_deref()).await?;
    tracing::info!(%identity, cluster = %args.cluster_name, cluster_id = args.cluster_id, "starting");

    let metrics = Arc::new(Metrics::default());
    let server = serve(args.api_addr, metrics.clone()).await?;
    let prometheus = match args.prometheus_addr {
        Some(addr) => Some(serve(addr, metrics.clone()).await?),
        None => None,
    };
    let prometheus = run_if_some(prometheus);
    let (leading_tx, leading) = tokio::sync::watch::channel(false);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.namespace);
    let wakers = Wakers::default();
    let caches = Caches::start(&client, &wakers);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.clone()),
        },
    );
    let nodes = NodeController::new(
        client.clone(),
        &caches,
        wakers.nodes.clone(),
        recorder.clone(),
        pools,
        metrics.clone(),
    );
    let identities = IdentityController::new(
        client,
        &caches,
        wakers.identities.clone(),
        recorder,
        identity_config,
        metrics.clone(),
    );
    let mirror = mirror_config
        .map(|config| Mirror::new(&caches, wakers.mirror.clone(), config, metrics.clone()));
    let mirror_task = run_if_some(mirror.map(|mirror| mirror.run(leading.clone())));
    let identities_task = identities.run(leading.clone());
    let mut leader_metric = leading.clone();
    let metrics_task = async move {
        while leader_metric.changed().await.is_ok() {
            metrics.set_leader(*leader_metric.borrow());
        }
    };
    tokio::select! {
        r = leader::run(leases.clone(), identity.clone(), timing, leading_tx) => r,
        r = nodes.run(leading) => r,
        r = identities_task => r,
        r = mirror_task => r,
        r = server => r.context("health server task").and_then(|served| served.context("health server")),
        r = prometheus => r.context("metrics server task").and_then(|served| served.context("metrics server")),
        _ = metrics_task => Ok(()),
        _ = shutdown_signal() => {
            tracing::info!("shutting down; releasing {LEASE_NAME}");
            leader::release(&leases, &identity).await.map_err(Into::into)
        }
    }
}

async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.encode() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    Ok(tokio::spawn(
        async move { axum::serve(listener, app).await },
    ))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "cilium-operator".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{host}-{:010x}",
        (u64::from(nanos) << 16) ^ u64::from(std::process::id())
    )
}
