//! The kvstore flags of Cilium's agent and operator (`--kvstore`, `--kvstore-opt
//! etcd.config=<file>`, plus `--etcd-endpoints`), one definition for both binaries.

use std::path::PathBuf;

use crate::EtcdConfig;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct KvstoreFlags {
    /// kvstore type; only `etcd` exists.
    #[arg(long)]
    pub kvstore: Option<String>,
    /// kvstore options, `etcd.config=<file>` (Cilium's etcd YAML with endpoints and TLS files).
    #[arg(long = "kvstore-opt", value_delimiter = ',')]
    pub kvstore_opts: Vec<String>,
    /// etcd endpoints, instead of an etcd.config file.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
}

impl KvstoreFlags {
    /// The etcd to use, or None when no kvstore is configured.
    pub fn etcd_config(&self) -> Result<Option<EtcdConfig>, String> {
        if let Some(kind) = &self.kvstore
            && !(kind == "etcd" || kind.is_empty())
        {
            return Err(format!("--kvstore={kind:?}: only \"etcd\" is supported"));
        }
        let mut config_file = None;
        for opt in &self.kvstore_opts {
            match opt.split_once('=') {
                Some(("etcd.config", path)) => config_file = Some(PathBuf::from(path)),
                Some((key, _)) => {
                    return Err(format!(
                        "--kvstore-opt {key:?} is not supported (etcd.config is)"
                    ));
                }
                None => return Err(format!("--kvstore-opt {opt:?} is not key=value")),
            }
        }
        match (config_file, self.etcd_endpoints.is_empty()) {
            (Some(_), false) => {
                Err("set either --kvstore-opt etcd.config or --etcd-endpoints, not both".into())
            }
            (Some(path), true) => EtcdConfig::from_file(&path)
                .map(Some)
                .map_err(|e| e.to_string()),
            (None, false) => {
                for endpoint in &self.etcd_endpoints {
                    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                        return Err(format!(
                            "--etcd-endpoints {endpoint:?} must start with http:// or https://"
                        ));
                    }
                }
                Ok(Some(EtcdConfig::from_endpoints(
                    self.etcd_endpoints.clone(),
                )))
            }
            (None, true) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(kvstore: Option<&str>, opts: &[&str], endpoints: &[&str]) -> KvstoreFlags {
        KvstoreFlags {
            kvstore: kvstore.map(str::to_owned),
            kvstore_opts: opts.iter().map(|o| (*o).to_owned()).collect(),
            etcd_endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    #[test]
    fn flag_combinations() {
        assert_eq!(flags(None, &[], &[]).etcd_config(), Ok(None));
        assert_eq!(
            flags(Some("etcd"), &[], &["http://127.0.0.1:2379"]).etcd_config(),
            Ok(Some(EtcdConfig::from_endpoints(vec![
                "http://127.0.0.1:2379".into()
            ])))
        );
        for (bad, says) in [
            (flags(Some("consul"), &[], &[]), "only \"etcd\""),
            (flags(None, &["etcd.other=x"], &[]), "not supported"),
            (flags(None, &["nonsense"], &[]), "not key=value"),
            (
                flags(None, &["etcd.config=/x"], &["http://a:1"]),
                "not both",
            ),
            (flags(None, &[], &["127.0.0.1:2379"]), "http://"),
            (
                flags(None, &["etcd.config=/nonexistent/etcd.yaml"], &[]),
                "/nonexistent/etcd.yaml",
            ),
        ] {
            let error = bad.etcd_config().expect_err("rejected");
            assert!(error.contains(says), "{error}");
        }
    }
}
