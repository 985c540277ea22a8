//! Cilium's `--write-cni-conf-when-ready`: the CNI network configuration is put where the
//! container runtime looks only once the agent can serve ADD. The runtime reports the node
//! NetworkReady (and the kubelet schedules pods onto it) as soon as a config exists, so one
//! written earlier, e.g. by an init container, sends pods to an agent that refuses them.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct CniConf {
    /// The configuration to install (`--read-cni-conf`, the chart's mounted ConfigMap).
    pub source: PathBuf,
    /// Where the runtime reads it (`--write-cni-conf-when-ready`).
    pub destination: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CniConfError {
    #[error("reading the CNI configuration {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a CNI configuration: {reason}")]
    Invalid { path: String, reason: String },
    #[error("writing the CNI configuration {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl CniConf {
    /// Reads and checks the source now, so a broken file stops the agent at start.
    pub fn checked(source: PathBuf, destination: PathBuf) -> Result<Self, CniConfError> {
        let conf = Self {
            source,
            destination,
        };
        conf.contents()?;
        Ok(conf)
    }

    fn contents(&self) -> Result<Vec<u8>, CniConfError> {
        let path = self.source.display().to_string();
        let bytes = std::fs::read(&self.source).map_err(|source| CniConfError::Read {
            path: path.clone(),
            source,
        })?;
        let invalid = |reason: String| CniConfError::Invalid {
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        for key in ["cniVersion", "name"] {
            if !value.get(key).is_some_and(serde_json::Value::is_string) {
                return Err(invalid(format!("no {key:?}")));
            }
        }
        if !value
            .get("plugins")
            .is_some_and(serde_json::Value::is_array)
            && !value.get("type").is_some_and(serde_json::Value::is_string)
        {
            return Err(invalid("neither \"plugins\" nor \"type\"".into()));
        }
        Ok(bytes)
    }

    /// Installs the configuration: written under a hidden name and renamed, so the runtime
    /// never loads half a file (it loads every file of the directory, hidden ones aside).
    pub fn install(&self) -> Result<(), CniConfError> {
        let bytes = self.contents()?;
        let write_error = |source| CniConfError::Write {
            path: self.destination.display().to_string(),
            source,
        };
        let dir = self.destination.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write_error)?;
        let name = self
            .destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = dir.join(format!(".{name}.new"));
        std::fs::write(&temporary, bytes).map_err(write_error)?;
        std::fs::rename(&temporary, &self.destination).map_err(write_error)
    }

    /// Removes the installed configuration (uninstall): new pods are no longer sent here.
    pub fn remove(&self) -> Result<(), CniConfError> {
        match std::fs::remove_file(&self.destination) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniConfError::Write {
                path: self.destination.display().to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cni-conf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("in the test");
        dir
    }

    #[test]
    fn installed_whole_and_removed() {
        let dir = scratch("install");
        let source = dir.join("05-cilium.conflist");
        let text = r#"{"cniVersion":"1.0.0","name":"cilium","plugins":[{"type":"cilium-cni"}]}"#;
        std::fs::write(&source, text).expect("in the test");
        let destination = dir.join("net.d/05-cilium.conflist");
        let conf = CniConf::checked(source, destination.clone()).expect("in the test");
        assert!(!destination.exists(), "written before install");
        conf.install().expect("in the test");
        assert_eq!(
            std::fs::read_to_string(&destination).expect("in the test"),
            text
        );
        let names: Vec<_> = std::fs::read_dir(dir.join("net.d"))
            .expect("in the test")
            .collect();
        assert_eq!(names.len(), 1, "a temporary file is left");
        conf.remove().expect("in the test");
        conf.remove().expect("in the test");
        assert!(!destination.exists());
        std::fs::remove_dir_all(dir).expect("in the test");
    }

    #[test]
    fn a_broken_source_is_refused_with_its_reason() {
        let dir = scratch("broken");
        for (text, says) in [
            ("{", "EOF"),
            (r#"{"name":"cilium","plugins":[]}"#, "no \"cniVersion\""),
            (r#"{"cniVersion":"1.0.0","name":"cilium"}"#, "neither"),
        ] {
            let source = dir.join("conf");
            std::fs::write(&source, text).expect("in the test");
            let error = CniConf::checked(source, dir.join("out"))
                .expect_err("refused")
                .to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
        let missing = CniConf::checked(dir.join("absent"), dir.join("out")).expect_err("refused");
        assert!(matches!(missing, CniConfError::Read { .. }), "{missing}");
        std::fs::remove_dir_all(dir).expect("in the test");
    }
}
