//! `cilium-cni`: run by the container runtime with `CNI_*` in the environment and the
//! network configuration on stdin. Prints the result (or an error, with a non-zero exit)
//! on stdout, as the CNI specification requires.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use cilium_agent_api::delete_queue::{self, DeleteQueue};
use cilium_agent_api::{Client, DEFAULT_SOCKET_PATH};
use cilium_cni::request::{self, Command};
use cilium_cni::result::{self, CniError, codes};
use cilium_cni::{Request, plugin};
use serde_json::Value;

fn main() -> ExitCode {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // Errors are reported in the version the runtime asked for when it is readable.
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|v| request::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".to_owned());
    let outcome = match read {
        Ok(_) => run(&env, &stdin, &version),
        Err(e) => Err(CniError::new(
            codes::IO_FAILURE,
            "reading stdin",
            e.to_string(),
        )),
    };
    match outcome {
        Ok(output) => {
            if let Some(output) = output {
                print(&output);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            print(&error.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

fn print(value: &Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
}

fn run(
    env: &BTreeMap<String, String>,
    stdin: &[u8],
    version: &str,
) -> Result<Option<Value>, CniError> {
    if request::command(env)? == Command::Version {
        return Ok(Some(result::version_json(version)));
    }
    let request: Request = request::request(env, stdin)?;
    let socket_path = request
        .conf
        .socket_path
        .clone()
        .unwrap_or_else(|| DEFAULT_SOCKET_PATH.into());
    let queue = DeleteQueue::new(delete_queue::dir_for_socket(&socket_path));
    let client = Client::new(socket_path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(codes::IO_FAILURE, "starting the runtime", e.to_string()))?;
    runtime.block_on(async {
        match request.command {
            Command::Add => plugin::add(&request, &client)
                .await
                .map(|r| Some(r.to_json(&request.conf.cni_version))),
            Command::Del => plugin::del(&request, &client, &queue).await.map(|()| None),
            Command::Check => plugin::check(&request, &client).await.map(|()| None),
            Command::Version => Ok(Some(result::version_json(version))),
        }
    })
}
