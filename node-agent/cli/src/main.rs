//! `cilium`: inspects the local cilium-agent through its API socket, with Cilium's
//! commands and output. Every error is one line on stderr and exit code 1.

mod render;

use std::path::PathBuf;

use cilium_agent_api::{
    Client, ClientError, EndpointRef, MonitorEventType, MonitorFilter, PrefilterChange,
};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(name = "cilium", version, about = "Inspect the local cilium-agent")]
struct Cli {
    /// The agent's API socket.
    #[arg(short = 'H', long = "host", global = true, env = "CILIUM_SOCK", default_value = cilium_agent_api::DEFAULT_SOCKET_PATH)]
    host: String,
    /// `json` for machine-readable output.
    #[arg(short = 'o', long = "output", global = true)]
    output: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The agent's health: kvstore, Kubernetes, IPAM, endpoints, controllers.
    Status {
        /// Also addresses in use and every controller.
        #[arg(long)]
        verbose: bool,
    },
    /// The endpoints of this node.
    #[command(subcommand)]
    Endpoint(ListOrGet),
    /// Security identities known to the agent (reserved ones included).
    #[command(subcommand)]
    Identity(ListOrGet),
    /// Nodes of the cluster and of the mesh's remote clusters.
    #[command(subcommand)]
    Node(ListOnly),
    /// Services with their backends (a global service's from every cluster).
    #[command(subcommand)]
    Service(ListOnly),
    /// The rules the agent enforces.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The datapath's maps.
    #[command(subcommand)]
    Bpf(BpfCommand),
    /// The agent's kvstore.
    #[command(subcommand)]
    Kvstore(KvstoreCommand),
    /// Source CIDRs the XDP prefilter drops.
    #[command(subcommand)]
    Prefilter(PrefilterCommand),
    /// Streams the datapath's verdicts.
    Monitor {
        /// `drop` or `policy-verdict`.
        #[arg(short = 't', long = "type")]
        kind: Option<String>,
        /// Only events of these endpoints.
        #[arg(long = "related-to")]
        related_to: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ListOrGet {
    List,
    Get { id: String },
}

#[derive(Subcommand, Debug)]
enum ListOnly {
    List,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// The rules, in Cilium's format.
    Get,
    /// The selector cache: selectors in use and the identities each selects.
    Selectors,
}

#[derive(Subcommand, Debug)]
enum BpfCommand {
    /// An endpoint's policy map.
    #[command(subcommand)]
    Policy(GetOnly),
    /// IP → identity.
    #[command(subcommand)]
    Ipcache(ListOnly),
    /// Local endpoint addresses.
    #[command(subcommand)]
    Endpoint(ListOnly),
    /// Connection tracking.
    #[command(subcommand)]
    Ct(CtCommand),
    /// Service load-balancing: frontends and their backends.
    #[command(subcommand)]
    Lb(ListOnly),
}

#[derive(Subcommand, Debug)]
enum GetOnly {
    Get { id: String },
}

#[derive(Subcommand, Debug)]
enum CtCommand {
    /// Entries of the global CT map (`global` may be given, as Cilium takes it).
    List { map: Option<String> },
}

#[derive(Subcommand, Debug)]
enum KvstoreCommand {
    Get {
        /// Every key under KEY.
        #[arg(long)]
        recursive: bool,
        key: String,
    },
}

#[derive(Subcommand, Debug)]
enum PrefilterCommand {
    List,
    /// Drop traffic from these CIDRs.
    Update(CidrArgs),
    /// Stop dropping traffic from these CIDRs.
    Delete(CidrArgs),
}

#[derive(clap::Args, Debug)]
struct CidrArgs {
    /// CIDRs (also as `--cidr`).
    cidrs: Vec<String>,
    #[arg(long = "cidr")]
    cidr_flags: Vec<String>,
}

/// What went wrong, as the one line printed.
#[derive(Debug)]
struct Failure(String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(e.to_string())
    }
}

type Outcome = Result<(), Failure>;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: starting: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("Error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Output as text or JSON (`-o json`).
#[derive(Clone, Copy)]
enum Format {
    Text,
    Json,
}

impl Format {
    fn parse(output: Option<&str>) -> Result<Self, Failure> {
        match output {
            None => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(Failure(format!(
                "unknown output format {other:?}: only json is supported"
            ))),
        }
    }

    /// Prints `value` as JSON, or as `text` renders it.
    fn print<T: Serialize>(self, value: &T, text: impl FnOnce(&T) -> String) -> Outcome {
        match self {
            Format::Json => println!("{}", to_json(value)?),
            Format::Text => print!("{}", text(value)),
        }
        Ok(())
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string_pretty(value).map_err(|e| Failure(format!("encoding JSON: {e}")))
}

fn endpoint_id(text: &str) -> Result<u16, Failure> {
    match text.parse::<EndpointRef>() {
        Ok(EndpointRef::Id(id)) => Ok(id),
        _ => Err(Failure(format!("{text:?} is not an endpoint id (1-65535)"))),
    }
}

fn identity_id(text: &str) -> Result<u32, Failure> {
    text.parse()
        .map_err(|_| Failure(format!("{text:?} is not an identity (a number)")))
}

fn cidrs(args: &CidrArgs) -> Result<Vec<IpNet>, Failure> {
    let texts: Vec<&String> = args.cidrs.iter().chain(&args.cidr_flags).collect();
    if texts.is_empty() {
        return Err(Failure("no CIDR given (e.g. 192.0.2.0/24)".into()));
    }
    texts
        .into_iter()
        .map(|text| {
            text.parse::<IpNet>()
                .map_err(|e| Failure(format!("invalid CIDR {text:?}: {e}")))
        })
        .collect()
}

async fn run(cli: Cli) -> Outcome {
    let format = Format::parse(cli.output.as_deref())?;
    let client = Client::new(PathBuf::from(&cli.host));
    match cli.command {
        Command::Status { verbose } => {
            let status = client.status().await?;
            format.print(&status, |s| render::status(s, verbose))
        }
        Command::Endpoint(ListOrGet::List) => {
            let mut endpoints = client.endpoints().await?;
            endpoints.sort_by_key(|e| e.id);
            format.print(&endpoints, |e| render::endpoints(e))
        }
        Command::Endpoint(ListOrGet::Get { id }) => {
            let endpoint = client.endpoint(&EndpointRef::Id(endpoint_id(&id)?)).await?;
            // Cilium prints an endpoint as JSON either way.
            println!("{}", to_json(&endpoint)?);
            Ok(())
        }
        Command::Identity(ListOrGet::List) => {
            let identities = client.identities().await?;
            format.print(&identities, |i| render::identities(i))
        }
        Command::Identity(ListOrGet::Get { id }) => {
            let identity = client.identity(identity_id(&id)?).await?;
            format.print(&identity, |i| render::identities(std::slice::from_ref(i)))
        }
        Command::Node(ListOnly::List) => {
            let nodes = client.nodes().await?;
            format.print(&nodes, |n| render::nodes(n))
        }
        Command::Service(ListOnly::List) => {
            let services = client.services().await?;
            format.print(&services, |s| render::services(s))
        }
        Command::Policy(PolicyCommand::Get) => {
            let policy = client.policy().await?;
            let rules = to_json(&policy.policy)?;
            format.print(&policy, |p| format!("{rules}\nRevision: {}\n", p.revision))
        }
        Command::Policy(PolicyCommand::Selectors) => {
            let selectors = client.selectors().await?;
            format.print(&selectors, |s| render::selectors(s))
        }
        Command::Bpf(BpfCommand::Policy(GetOnly::Get { id })) => {
            let map = client.policy_map(endpoint_id(&id)?).await?;
            format.print(&map, render::policy_map)
        }
        Command::Bpf(BpfCommand::Ipcache(ListOnly::List)) => {
            let entries = client.ipcache().await?;
            format.print(&entries, |e| render::ipcache(e))
        }
        Command::Bpf(BpfCommand::Endpoint(ListOnly::List)) => {
            let entries = client.bpf_endpoints().await?;
            format.print(&entries, |e| render::bpf_endpoints(e))
        }
        Command::Bpf(BpfCommand::Lb(ListOnly::List)) => {
            let entries = client.lb_entries().await?;
            format.print(&entries, |e| render::lb_entries(e))
        }
        Command::Bpf(BpfCommand::Ct(CtCommand::List { map })) => {
            if let Some(map) = map.filter(|m| m != "global") {
                return Err(Failure(format!(
                    "unknown CT map {map:?}: the datapath has one, global"
                )));
            }
            let entries = client.ct_entries().await?;
            format.print(&entries, |e| render::ct_entries(e))
        }
        Command::Kvstore(KvstoreCommand::Get { recursive, key }) => {
            let pairs = client.kvstore_get(&key, recursive).await?;
            format.print(&pairs, |p| render::kv_pairs(p))
        }
        Command::Prefilter(PrefilterCommand::List) => {
            let prefilter = client.prefilter().await?;
            format.print(&prefilter, render::prefilter)
        }
        Command::Prefilter(PrefilterCommand::Update(args)) => {
            let change = PrefilterChange {
                cidr_list: cidrs(&args)?,
            };
            let prefilter = client.change_prefilter(&change, true).await?;
            format.print(&prefilter, render::prefilter)
        }
        Command::Prefilter(PrefilterCommand::Delete(args)) => {
            let change = PrefilterChange {
                cidr_list: cidrs(&args)?,
            };
            let prefilter = client.change_prefilter(&change, false).await?;
            format.print(&prefilter, render::prefilter)
        }
        Command::Monitor { kind, related_to } => {
            let filter = MonitorFilter {
                kind: kind
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(Failure)?,
                related_to: related_to
                    .iter()
                    .map(|id| endpoint_id(id))
                    .collect::<Result<_, _>>()?,
            };
            monitor(&client, &filter, format).await
        }
    }
}

async fn monitor(client: &Client, filter: &MonitorFilter, format: Format) -> Outcome {
    let mut stream = client.monitor(filter).await?;
    let as_verdicts = filter.kind == Some(MonitorEventType::PolicyVerdict);
    if let Format::Text = format {
        println!("Listening for events on the datapath... Press Ctrl-C to quit");
    }
    while let Some(message) = stream.next().await {
        let message = message.map_err(Failure)?;
        match format {
            Format::Json => println!(
                "{}",
                serde_json::to_string(&message).map_err(|e| Failure(e.to_string()))?
            ),
            Format::Text => println!("{}", render::monitor_message(&message, as_verdicts)),
        }
    }
    Err(Failure("the agent closed the monitor stream".into()))
}
