//! Connecting to etcd as Cilium does: endpoints from `--kvstore-opt etcd.config=<file>`
//! (Cilium's YAML: `endpoints`, `trusted-ca-file`/`ca-file`, `cert-file`, `key-file`) or
//! from a plain endpoint list; TLS with client certificates when files are given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("reading {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no etcd endpoints configured")]
    NoEndpoints,
    #[error("etcd: {0}")]
    Client(#[from] etcd_client::Error),
    #[error("etcd lease {0} expired")]
    LeaseLost(i64),
}

impl EtcdError {
    /// Whether etcd answered with more than the client decodes at once (a page of large
    /// values): the same request for fewer keys can succeed.
    pub fn is_response_too_large(&self) -> bool {
        matches!(
            self,
            EtcdError::Client(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::OutOfRange
        )
    }
}

/// Where etcd is and how to authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    #[serde(alias = "ca-file")]
    pub trusted_ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl EtcdConfig {
    pub fn from_endpoints(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            ..Self::default()
        }
    }

    /// Reads Cilium's etcd config file; relative file paths in it are taken from the
    /// file's directory.
    pub fn from_file(path: &Path) -> Result<Self, EtcdError> {
        let text = std::fs::read_to_string(path).map_err(|source| EtcdError::File {
            what: "etcd config",
            path: path.to_owned(),
            source,
        })?;
        let mut config: Self = serde_yaml::from_str(&text).map_err(|e| EtcdError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut config.trusted_ca_file,
            &mut config.cert_file,
            &mut config.key_file,
        ]
        .into_iter()
        .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        config.validate().map_err(|reason| EtcdError::Config {
            path: path.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("`endpoints` is empty".into());
        }
        for endpoint in &self.endpoints {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(format!(
                    "endpoint {endpoint:?} must start with http:// or https://"
                ));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("`cert-file` and `key-file` go together".into());
        }
        Ok(())
    }

    fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
        std::fs::read(path).map_err(|source| EtcdError::File {
            what,
            path: path.to_owned(),
            source,
        })
    }

    /// Connects (lazily: an etcd that is down fails the first request, not this call).
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(15))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if self.trusted_ca_file.is_some() || self.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.trusted_ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(Self::read("CA file", ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                tls = tls.identity(Identity::from_pem(
                    Self::read("cert file", cert)?,
                    Self::read("key file", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        Ok(Client::connect(&self.endpoints, Some(options)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cilium_s_config_file_is_read_with_paths_relative_to_it() {
        let dir = std::env::temp_dir().join(format!("etcd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("etcd.config");
        std::fs::write(
            &path,
            "endpoints:\n- https://127.0.0.1:2379\ntrusted-ca-file: ca.crt\ncert-file: /abs/c.crt\nkey-file: k.key\n",
        )
        .expect("write");
        let config = EtcdConfig::from_file(&path).expect("valid");
        assert_eq!(config.endpoints, ["https://127.0.0.1:2379"]);
        assert_eq!(config.trusted_ca_file, Some(dir.join("ca.crt")));
        assert_eq!(config.cert_file, Some(PathBuf::from("/abs/c.crt")));
        std::fs::write(&path, "endpoints:\n- https://h:2379\nca-file: /ca\n").expect("write");
        assert_eq!(
            EtcdConfig::from_file(&path).expect("alias").trusted_ca_file,
            Some(PathBuf::from("/ca"))
        );
        for (bad, needle) in [
            ("endpoints: []\n", "empty"),
            ("endpoints:\n- 127.0.0.1:2379\n", "http://"),
            ("endpoints:\n- http://h\ncert-file: c\n", "go together"),
            ("endpoints:\n- http://h\ncafile: c\n", "unknown field"),
        ] {
            std::fs::write(&path, bad).expect("write");
            let err = EtcdConfig::from_file(&path).expect_err(bad);
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
