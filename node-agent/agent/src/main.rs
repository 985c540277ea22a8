use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cilium_agent::agent::{Agent, AgentSettings};
use cilium_agent::api::ApiContext;
use cilium_agent::clustermesh::{ClusterMesh, MeshSettings};
use cilium_agent::cni_conf::CniConf;
use cilium_agent::controllers;
use cilium_agent::endpoints::StateDir;
use cilium_agent::kvstore::Kvstore;
use cilium_agent::node::Registration;
use cilium_agent::policy::PolicyState;
use cilium_agent::publish::Publisher;
use cilium_agent::sync::{Caches, Reconciler};
use cilium_agent_api::delete_queue::{self, DeleteQueue};
use cilium_crds::cache::Waker;
use cilium_crds::cli::{ConfigDir, parse_duration, parse_listen_addr, run_if_some};
use cilium_datapath::{Datapath, DatapathConfig};
use cilium_identity::LabelFilter;
use cilium_kvstore::flags::KvstoreFlags;
use cilium_policy::{EnforcementMode, LocalCluster};

/// The cilium-rs node agent. Flags follow Cilium's agent where it has the same one.
#[derive(clap::Parser, Debug)]
#[command(name = "cilium-agent", version)]
struct Args {
    /// This node's name (the Node object the kubelet registered).
    #[arg(long = "k8s-node-name", env = "K8S_NODE_NAME")]
    node_name: String,
    #[arg(long, default_value = "default")]
    cluster_name: String,
    /// 0..=255 (0: not part of a mesh; a mesh needs 1..=255, unique in it).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8))]
    cluster_id: u8,
    /// Directory with one etcd config file per remote cluster, named after it
    /// (`endpoints:`, `ca-file`, `cert-file`, `key-file`); files added or removed at run
    /// time connect or disconnect that cluster.
    #[arg(long = "clustermesh-config")]
    clustermesh_config: Option<PathBuf>,
    /// Peer selectors without `io.cilium.k8s.policy.cluster` select this cluster's
    /// endpoints only (Cilium 1.19's default); false: endpoints of every cluster.
    #[arg(long = "policy-default-local-cluster", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    policy_default_local_cluster: bool,
    /// How long the entries of a remote cluster that went away are kept before they are
    /// withdrawn (not a Cilium flag: Cilium keeps them until the cluster returns).
    #[arg(long = "clustermesh-grace-period", default_value = "2m", value_parser = parse_duration)]
    clustermesh_grace_period: Duration,
    /// Where endpoint records are kept across restarts.
    #[arg(long, default_value = "/var/run/cilium/state")]
    state_dir: PathBuf,
    /// bpffs mount the datapath pins its maps and programs under.
    #[arg(long = "bpf-root", default_value = "/sys/fs/bpf")]
    bpf_root: PathBuf,
    /// Entries per endpoint policy map (256..=65536).
    #[arg(long = "bpf-policy-map-max", default_value_t = 16384)]
    policy_map_max: u32,
    /// The local API's unix socket.
    #[arg(long = "socket-path", default_value = cilium_agent_api::DEFAULT_SOCKET_PATH)]
    socket_path: PathBuf,
    /// A kubeconfig; without it, the in-cluster config (or $KUBECONFIG).
    #[arg(long = "k8s-kubeconfig-path", alias = "kubeconfig")]
    kubeconfig: Option<PathBuf>,
    /// Identity-relevant label patterns (as the operator's `--labels`).
    #[arg(long = "labels", value_delimiter = ',')]
    labels: Vec<String>,
    /// The kvstore (etcd) this cluster's state is mirrored to; its health is reported.
    #[command(flatten)]
    kvstore: KvstoreFlags,
    /// How often expired connection-tracking entries are removed.
    #[arg(long = "conntrack-gc-interval", default_value = "60s", value_parser = parse_duration)]
    ct_gc_interval: Duration,
    /// Policy enforcement: `default` (endpoints a rule selects), `always` (every endpoint)
    /// or `never`.
    #[arg(long = "enable-policy", default_value = "default")]
    enforcement: EnforcementMode,
    /// Port of `GET /healthz` on 127.0.0.1 (the kubelet's probes); 0 turns it off.
    #[arg(long = "agent-health-port", default_value_t = 9879)]
    health_port: u16,
    /// Address of `GET /metrics` for Prometheus (e.g. `:9962`); off when unset.
    #[arg(long = "prometheus-serve-addr", value_parser = parse_listen_addr)]
    prometheus_addr: Option<std::net::SocketAddr>,
    /// Attach endpoint programs with TCX links where the kernel has them (6.6+); false, or
    /// an older kernel: classic tc (clsact qdisc, cls_bpf through netlink). Cilium's flag.
    #[arg(long = "enable-tcx", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    enable_tcx: bool,
    /// Attach the XDP prefilter (source CIDRs dropped before the stack) to `--devices`.
    #[arg(long = "enable-xdp-prefilter", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    xdp_prefilter: bool,
    /// Port every agent answers health probes on, at its node's address (0: no probing).
    #[arg(long = "cluster-health-port", default_value_t = 4240)]
    cluster_health_port: u16,
    /// How often the other nodes' agents are probed.
    #[arg(long = "cluster-health-interval", default_value = "60s", value_parser = parse_duration)]
    cluster_health_interval: Duration,
    /// The node's native devices (the prefilter's).
    #[arg(long = "devices", value_delimiter = ',')]
    devices: Vec<String>,
    /// How long CNI ADD (a `sync-build` endpoint creation) waits for the pod's identity and
    /// policy before failing with "try again later" (ours: Cilium's plugin waits unbounded).
    #[arg(long = "endpoint-sync-build-timeout", default_value = "30s", value_parser = parse_duration)]
    sync_build_timeout: Duration,
    /// Install the CNI configuration `--read-cni-conf` at this path once the agent can serve
    /// ADD (Cilium's flag): the runtime calls no plugin before then.
    #[arg(long = "write-cni-conf-when-ready")]
    write_cni_conf_when_ready: Option<PathBuf>,
    /// The agent's DaemonSet: when it is deleted (an uninstall), the agent that stops
    /// removes the CNI configuration and its pinned datapath (not a Cilium flag: Cilium
    /// leaves them behind).
    #[arg(long = "agent-daemonset-name")]
    daemonset_name: Option<String>,
    /// The namespace the agent runs in (its DaemonSet's).
    #[arg(
        long = "k8s-namespace",
        env = "CILIUM_K8S_NAMESPACE",
        default_value = "kube-system"
    )]
    namespace: String,
    /// The CNI configuration `--write-cni-conf-when-ready` installs.
    #[arg(long = "read-cni-conf")]
    read_cni_conf: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigDir,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cilium_crds::cli::init_logging();
    cilium_crds::cli::exit_code("cilium-agent", run(cilium_crds::cli::parse_args()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Every flag is checked before anything is touched.
    let filter = LabelFilter::new(&args.labels).context("--labels")?;
    if args.clustermesh_config.is_some() && args.cluster_id == 0 {
        anyhow::bail!("--clustermesh-config needs --cluster-id 1..255 (unique in the mesh)");
    }
    if let Some(dir) = &args.clustermesh_config
        && !dir.is_dir()
    {
        anyhow::bail!("--clustermesh-config {}: not a directory", dir.display());
    }
    let cni_conf = match (&args.write_cni_conf_when_ready, &args.read_cni_conf) {
        (Some(destination), Some(source)) => {
            Some(CniConf::checked(source.clone(), destination.clone()).context("--read-cni-conf")?)
        }
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--write-cni-conf-when-ready needs --read-cni-conf"),
        (None, Some(_)) => anyhow::bail!("--read-cni-conf needs --write-cni-conf-when-ready"),
    };
    if args.xdp_prefilter && args.devices.is_empty() {
        anyhow::bail!("--enable-xdp-prefilter needs --devices (the devices to attach it to)");
    }
    let etcd = args.kvstore.etcd_config().map_err(anyhow::Error::msg)?;
    let datapath_config = DatapathConfig {
        bpffs_root: args.bpf_root.clone(),
        policy_map_max: args.policy_map_max,
        tc_attach: cilium_datapath::TcAttachMode::probe(args.enable_tcx),
        ..Default::default()
    };
    let store = StateDir::open(&args.state_dir)?;
    let client = cilium_crds::cli::client(args.kubeconfig.as_deref()).await?;

    let mut datapath = Datapath::open(&datapath_config).context("opening the datapath")?;
    let taken = datapath
        .reattach_pinned()
        .context("taking over pinned programs")?;
    tracing::info!(taken, pins = %datapath.pin_dir().display(), attach = datapath.tc_attach().name(), "datapath ready");
    let service_maps = cilium_datapath::lb::ServiceMaps::open(datapath.pin_dir())
        .context("opening the service maps")?;
    let prefilter_devices = if args.xdp_prefilter {
        args.devices.clone()
    } else {
        Vec::new()
    };
    for device in &prefilter_devices {
        datapath
            .attach_prefilter(device)
            .with_context(|| format!("attaching the XDP prefilter to {device}"))?;
        tracing::info!(%device, "XDP prefilter attached");
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling IPv4 forwarding")?;

    let node = Registration {
        client: &client,
        node_name: &args.node_name,
        cluster_name: &args.cluster_name,
        cluster_id: args.cluster_id,
    }
    .run()
    .await?;

    let changed = Waker::default();
    let settings = AgentSettings {
        enforcement: args.enforcement,
        prefilter_devices,
        sync_build_timeout: args.sync_build_timeout,
    };
    let agent = Arc::new(Agent::new(
        node,
        datapath,
        store,
        changed.clone(),
        settings,
    )?);
    let restored = agent.restore()?;
    tracing::info!(restored, "endpoints restored");
    let queue = DeleteQueue::new(delete_queue::dir_for_socket(&args.socket_path));
    let deleted = agent.process_queued_deletes(&queue)?;
    tracing::info!(deleted, "queued CNI deletions done");

    let owner_gone = args.daemonset_name.as_deref().map(|name| {
        cilium_agent::uninstall::watch_daemonset(client.clone(), &args.namespace, name)
    });
    let kvstore = etcd.map(|config| Arc::new(Kvstore::new(config, agent.clone())));
    if let Some(kvstore) = &kvstore {
        tokio::spawn(kvstore.clone().watch_health());
    }
    tokio::spawn(pump_events(agent.clone()));
    let listener = cilium_agent::api::listen(&args.socket_path)
        .with_context(|| format!("listening on {}", args.socket_path.display()))?;
    tracing::info!(socket = %args.socket_path.display(), "API listening");
    let services_changed = Waker::default();
    let caches = Caches::start(&client, &args.node_name, &changed, &services_changed);
    let local_cluster = LocalCluster {
        name: args.cluster_name.clone(),
        default_local: args.policy_default_local_cluster,
    };
    let history = cilium_agent::records::RecordDir::open(args.state_dir.join("policies"))?;
    let policy = Arc::new(std::sync::Mutex::new(
        PolicyState::new(args.enforcement, local_cluster).with_history(history)?,
    ));
    let mesh = args.clustermesh_config.clone().map(|config_dir| {
        ClusterMesh::new(
            MeshSettings {
                config_dir,
                cluster_name: args.cluster_name.clone(),
                cluster_id: args.cluster_id,
                grace_period: args.clustermesh_grace_period,
            },
            vec![changed.clone(), services_changed.clone()],
        )
    });
    if let Some(mesh) = &mesh {
        tokio::spawn(mesh.clone().run());
    }
    tokio::spawn(
        cilium_agent::balancer::Balancer {
            maps: service_maps,
            cluster_name: args.cluster_name.clone(),
            cluster_id: args.cluster_id,
            services: caches.services.clone(),
            endpoint_slices: caches.endpoint_slices.clone(),
            mesh: mesh.clone(),
            changed: services_changed,
        }
        .run(),
    );
    let context = ApiContext {
        agent: agent.clone(),
        policy: policy.clone(),
        caches: caches.clone(),
        kvstore,
        mesh: mesh.clone(),
    };
    let publisher = Arc::new(Publisher::new(
        client.clone(),
        agent.clone(),
        caches.clone(),
    ));
    let reconciler = Reconciler {
        client,
        agent: agent.clone(),
        caches,
        changed,
        filter,
        ct_gc_interval: args.ct_gc_interval,
        policy,
        mesh,
        publisher,
        cni_conf: cni_conf.clone(),
    };
    let health = cilium_agent::api::serve_health(args.health_port, agent.clone()).await?;
    let cluster_health = match args.cluster_health_port {
        0 => None,
        port => {
            let server = cilium_agent::health::serve(agent.node().ip, port).await?;
            tokio::spawn(cilium_agent::health::probe_nodes(
                agent.clone(),
                context.caches.clone(),
                port,
                args.cluster_health_interval,
            ));
            Some(server)
        }
    };
    let metrics = match args.prometheus_addr {
        Some(addr) => {
            let server = cilium_agent::api::serve_metrics(addr, context.clone()).await?;
            tracing::info!(%addr, "serving /metrics");
            Some(server)
        }
        None => None,
    };
    tokio::select! {
        served = cilium_agent::api::serve(listener, context) => served.context("API server")?,
        served = health => served.context("health server")?,
        served = run_if_some(metrics) => served.context("metrics server")?,
        served = run_if_some(cluster_health) => served.context("cluster health server")?,
        reconciled = reconciler.run() => reconciled?,
        _ = shutdown_signal() => {
            if owner_gone.as_ref().is_some_and(|gone| gone.is_gone()) {
                tracing::info!("uninstalled: removing the CNI configuration and the pinned datapath");
                if let Some(conf) = &cni_conf {
                    conf.remove()?;
                }
                agent.remove_datapath()?;
            } else {
                tracing::info!("shutting down; endpoints stay enforced by the pinned datapath");
            }
        }
    }
    Ok(())
}

/// How often the datapath's verdict events are handed to monitor readers.
const EVENT_PUMP_PERIOD: Duration = Duration::from_millis(200);

/// Drains the datapath's event ring for `cilium monitor` (and so it never fills up).
async fn pump_events(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(EVENT_PUMP_PERIOD);
    loop {
        tick.tick().await;
        if let Err(e) = agent.controller(controllers::MONITOR, || agent.pump_events()) {
            tracing::warn!(error = %e, "reading datapath events failed");
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
