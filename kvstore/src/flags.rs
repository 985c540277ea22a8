//! The kvstore flags of Cilium's agent and operator (`--kvstore`, `--kvstore-opt
//! etcd.config=<file>`, plus `--etcd-endpoints`), one definition for both binaries.

use std::path::PathBuf;

use crate::EtcdConfig;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct KvstoreFlags {
    /// kvstore type; only `etcd` exists.
    #[arg(long)]
    pub kvstore: Option<String>,
    /// kvstore options, `etcd.config=<file>` (Cilium's etcd YAML with endpoints and TLS
    /// files), or as Cilium's ConfigMap writes them, `{"etcd.config": "<file>"}`.
    #[arg(long = "kvstore-opt")]
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
        for (key, value) in self.options()? {
            match key.as_str() {
                "etcd.config" => config_file = Some(PathBuf::from(value)),
                _ => {
                    return Err(format!(
                        "--kvstore-opt {key:?} is not supported (etcd.config is)"
                    ));
                }
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

impl KvstoreFlags {
    /// Every `--kvstore-opt` as (key, value): `k=v[,k=v]` or a JSON object of strings.
    fn options(&self) -> Result<Vec<(String, String)>, String> {
        let mut options = Vec::new();
        for opt in &self.kvstore_opts {
            if opt.trim_start().starts_with('{') {
                let map: std::collections::BTreeMap<String, String> = serde_json::from_str(opt)
                    .map_err(|e| {
                        format!("--kvstore-opt {opt:?} is not a JSON object of strings: {e}")
                    })?;
                options.extend(map);
                continue;
            }
            for pair in opt.split(',').filter(|p| !p.is_empty()) {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--kvstore-opt {pair:?} is not key=value"))?;
                options.push((key.to_owned(), value.to_owned()));
            }
        }
        Ok(options)
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
                flags(None, &[r#"{"etcd.other": "x"}"#], &[]),
                "not supported",
            ),
            (flags(None, &["{etcd.config"], &[]), "not a JSON object"),
            (
                flags(None, &["etcd.config=/x"], &["http://a:1"]),
                "not both",
            ),
            (flags(None, &[], &["127.0.0.1:2379"]), "http://"),
            (
                flags(None, &["etcd.config=/nonexistent/etcd.yaml"], &[]),
                "/nonexistent/etcd.yaml",
            ),
            // Cilium's ConfigMap form names the same file.
            (
                flags(None, &[r#"{"etcd.config": "/nonexistent/cm.yaml"}"#], &[]),
                "/nonexistent/cm.yaml",
            ),
        ] {
            let error = bad.etcd_config().expect_err("rejected");
            assert!(error.contains(says), "{error}");
        }
    }
}
