//! What the operator's and the agent's command lines share: Go-style durations, Cilium's
//! `--config-dir`, and the Kubernetes client from `--k8s-kubeconfig-path` (or the
//! in-cluster config).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Cilium's `--config-dir`: a directory holding one file per option, named after the
/// flag, as a mounted `cilium-config` ConfigMap gives. Flatten it into a binary's flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigDir {
    /// Directory with one file per option (`<flag-name>` holding its value); the command
    /// line wins over it; files naming another binary's options are skipped.
    #[arg(long = "config-dir")]
    pub config_dir: Option<PathBuf>,
}

/// Parses `P` from the process's arguments with the options of `--config-dir` added, or
/// exits with a message naming what is wrong (as clap does for a bad flag).
pub fn parse_args<P: clap::Parser>() -> P {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match with_config_dir(&P::command(), argv) {
        Ok(argv) => P::parse_from(argv),
        Err(message) => {
            let program = P::command().get_name().to_owned();
            eprintln!("{program}: {message}");
            std::process::exit(2)
        }
    }
}

/// `argv` with an option for every file of the `--config-dir` it names that is an option
/// of `command` and not already on the command line. Without `--config-dir`, `argv`.
pub fn with_config_dir(command: &clap::Command, argv: Vec<String>) -> Result<Vec<String>, String> {
    let Some(dir) = flag_value(&argv, "config-dir") else {
        return Ok(argv);
    };
    let given: Vec<&str> = argv
        .iter()
        .skip(1)
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split_once('=').map_or(a, |(name, _)| name))
        .collect();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("--config-dir {dir}: {e}"))?;
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        // A mounted ConfigMap also holds `..data` and timestamped directories.
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    files.sort();
    let mut options = Vec::new();
    for (name, path) in files {
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(name.as_str()))
        else {
            tracing::debug!(option = %name, "--config-dir: not an option of this binary");
            continue;
        };
        if name == "config-dir" || given.contains(&name.as_str()) {
            continue;
        }
        let value = std::fs::read_to_string(&path)
            .map_err(|e| format!("--config-dir {}: {e}", path.display()))?;
        let value = value.trim();
        if arg.get_action().takes_values() {
            options.push(format!("--{name}={value}"));
        } else {
            match value {
                "true" => options.push(format!("--{name}")),
                "false" => {}
                other => {
                    return Err(format!(
                        "--config-dir {}: {other:?} is not true or false",
                        path.display()
                    ));
                }
            }
        }
    }
    let mut argv = argv.into_iter();
    Ok(argv.next().into_iter().chain(options).chain(argv).collect())
}

/// The value of `--name=value` or `--name value` in `argv`.
fn flag_value(argv: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if *arg == long {
            return args.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(&long).and_then(|v| v.strip_prefix('=')) {
            return Some(value.to_owned());
        }
    }
    None
}

/// `host:port`, or `:port` for every address (Go's form, as Cilium's flags and its chart's
/// `cilium-config` write them).
pub fn parse_listen_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_owned(),
    };
    full.parse()
        .map_err(|e| format!("{text:?} is not an address like :9962 or 127.0.0.1:9962: {e}"))
}

/// `500ms`, `15s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 15s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "{s:?} is not a duration like 15s (units: ms, s, m, h)"
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `kubeconfig`, or from the environment (in-cluster, `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ClientError::Config(e.to_string()))?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Logs to stderr at `RUST_LOG` (default `info`), coloured only on a terminal: logs that
/// go to files and journald stay plain text.
/// `task`'s outcome when there is a task, else never: lets a binary `select!` over servers
/// and loops that a flag may turn off.
pub async fn run_if_some<F: std::future::IntoFuture>(task: Option<F>) -> F::Output {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// The exit code of a binary named `program` whose work ended with `outcome`; an error is
/// printed as one line with its causes.
pub fn exit_code(program: &str, outcome: anyhow::Result<()>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_absent_task_never_ends() {
        assert_eq!(run_if_some(Some(async { 5 })).await, 5);
        let absent = run_if_some(None::<std::future::Ready<u8>>);
        let waited = tokio::time::timeout(Duration::from_millis(50), absent).await;
        assert!(waited.is_err(), "an absent task ended");
    }

    #[test]
    fn listen_addresses_take_gos_port_only_form() {
        assert_eq!(
            parse_listen_addr(":9963"),
            Ok("0.0.0.0:9963".parse().expect("address"))
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:9234"),
            Ok("127.0.0.1:9234".parse().expect("address"))
        );
        let error = parse_listen_addr("9963").expect_err("no port-only form without ':'");
        assert!(error.contains("\"9963\" is not an address"), "{error}");
    }

    #[derive(clap::Parser, Debug)]
    struct Flags {
        #[arg(long, default_value = "default")]
        cluster_name: String,
        #[arg(long = "cluster-pool-ipv4-cidr", value_delimiter = ',')]
        pools: Vec<String>,
        #[arg(long)]
        debug: bool,
        #[command(flatten)]
        config: ConfigDir,
    }

    fn parse(dir: &Path, files: &[(&str, &str)], cli: &[&str]) -> Result<Flags, String> {
        for (name, value) in files {
            std::fs::write(dir.join(name), value).expect("write option");
        }
        let mut argv = vec![
            "flags".to_owned(),
            format!("--config-dir={}", dir.display()),
        ];
        argv.extend(cli.iter().map(|a| (*a).to_owned()));
        let argv = with_config_dir(&<Flags as clap::CommandFactory>::command(), argv)?;
        <Flags as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn config_dir_options_and_the_command_line_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
        let flags = parse(
            dir.path(),
            &[
                ("cluster-name", "mesh1\n"),
                ("cluster-pool-ipv4-cidr", "10.0.0.0/16,10.1.0.0/16"),
                ("debug", "true"),
                ("operator-only-option", "x"),
            ],
            &[],
        )
        .expect("parsed");
        assert_eq!(flags.cluster_name, "mesh1");
        assert_eq!(flags.pools, ["10.0.0.0/16", "10.1.0.0/16"]);
        assert!(flags.debug);

        let flags = parse(
            dir.path(),
            &[("debug", "false")],
            &["--cluster-name", "cli"],
        )
        .expect("parsed");
        assert_eq!(flags.cluster_name, "cli");
        assert!(!flags.debug);

        let error = parse(dir.path(), &[("debug", "yes")], &[]).expect_err("rejected");
        assert!(error.contains("\"yes\" is not true or false"), "{error}");
        let error = parse(&dir.path().join("missing"), &[], &[]).expect_err("rejected");
        assert!(error.contains("missing"), "{error}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "15", "15x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
