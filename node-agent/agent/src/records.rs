//! A directory of JSON records, one file each, written whole (temporary file, fsync, rename)
//! so a crash leaves the old record or the new one, never half of one. The endpoints and the
//! policies' last valid versions are kept this way across agent restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// What [`RecordDir::load`] found: the records by file stem, and files it could not read
/// (kept aside as `<name>.json.unreadable` for a person to look at, and reported).
#[derive(Debug)]
pub struct Loaded<T> {
    pub records: Vec<(String, T)>,
    pub unreadable: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    /// `dir`, created if missing.
    pub fn open(dir: PathBuf) -> Result<Self, StateError> {
        std::fs::create_dir_all(&dir).map_err(|cause| StateError::Io {
            what: "creating",
            path: dir.clone(),
            cause,
        })?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn save(&self, name: &str, record: &impl Serialize) -> Result<(), StateError> {
        let path = self.file(name);
        let temporary = path.with_extension("json.tmp");
        let io = |what| {
            let path = temporary.clone();
            move |cause| StateError::Io { what, path, cause }
        };
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| io("encoding")(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&temporary).map_err(io("creating"))?;
        file.write_all(&bytes).map_err(io("writing"))?;
        file.sync_all().map_err(io("syncing"))?;
        std::fs::rename(&temporary, &path).map_err(|cause| StateError::Io {
            what: "renaming into",
            path,
            cause,
        })
    }

    /// Removes record `name`; one that is not there is no error.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.file(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
                what: "removing",
                path,
                cause: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every record that parses and that `check` (given the file stem) accepts.
    pub fn load<T: DeserializeOwned>(
        &self,
        check: impl Fn(&str, &T) -> Result<(), String>,
    ) -> Result<Loaded<T>, StateError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|cause| StateError::Io {
            what: "reading",
            path: self.dir.clone(),
            cause,
        })?;
        let mut loaded = Loaded {
            records: Vec::new(),
            unreadable: Vec::new(),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string()))
                .and_then(|record| check(&stem, &record).map(|()| record));
            match parsed {
                Ok(record) => loaded.records.push((stem, record)),
                Err(reason) => {
                    let aside = path.with_extension("json.unreadable");
                    let _ = std::fs::rename(&path, &aside);
                    loaded.unreadable.push((aside, reason));
                }
            }
        }
        loaded.records.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(loaded)
    }
}
