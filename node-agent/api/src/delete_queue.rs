//! Cilium's CNI delete queue: when the runtime deletes a pod while the agent is down, the
//! plugin records the deletion here and reports success (the runtime would otherwise keep
//! the sandbox in an unknown state and retry forever); the agent deletes the queued
//! endpoints when it starts. One file per container, named after it, so a retried DEL
//! queues once.

use std::path::{Path, PathBuf};

/// The queue's directory for an agent listening on `socket_path`: `deleteQueue` beside the
/// socket (Cilium's `/var/run/cilium/deleteQueue`).
pub fn dir_for_socket(socket_path: &Path) -> PathBuf {
    socket_path
        .parent()
        .unwrap_or(Path::new("/"))
        .join("deleteQueue")
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0:?} is not a container id (letters, digits, '-', '_', '.', at most 128)")]
    BadContainerId(String),
    #[error("delete queue {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &Path, source: std::io::Error) -> QueueError {
    QueueError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A container id is a file name here: nothing that could leave the directory.
fn checked(container_id: &str) -> Result<&str, QueueError> {
    let ok = !container_id.is_empty()
        && container_id.len() <= 128
        && !container_id.starts_with('.')
        && container_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(container_id)
    } else {
        Err(QueueError::BadContainerId(container_id.to_owned()))
    }
}

#[derive(Debug, Clone)]
pub struct DeleteQueue {
    dir: PathBuf,
}

impl DeleteQueue {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records that `container_id`'s endpoint is to be deleted (written under a temporary
    /// name and renamed, so the agent never reads half an entry).
    pub fn enqueue(&self, container_id: &str) -> Result<(), QueueError> {
        let name = checked(container_id)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.dir.join(format!("{name}.delete"));
        let temporary = self.dir.join(format!(".{name}.new"));
        std::fs::write(&temporary, name).map_err(|e| io(&temporary, e))?;
        std::fs::rename(&temporary, &path).map_err(|e| io(&path, e))
    }

    /// The queued container ids, sorted; an absent directory is an empty queue. Files that
    /// are not entries are skipped (and left alone).
    pub fn queued(&self) -> Result<Vec<String>, QueueError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir, e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".delete")?;
                checked(id).ok().map(str::to_owned)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes `container_id`'s entry once its deletion is done.
    pub fn done(&self, container_id: &str) -> Result<(), QueueError> {
        let path = self.dir.join(format!("{}.delete", checked(container_id)?));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("delete-queue-{}-{n}", std::process::id()))
    }

    #[test]
    fn entries_are_queued_once_listed_and_removed() {
        let dir = scratch();
        let queue = DeleteQueue::new(dir.join("deleteQueue"));
        assert_eq!(queue.queued().expect("in the test"), Vec::<String>::new());
        queue.enqueue("b2c4").expect("in the test");
        queue.enqueue("a1f3").expect("in the test");
        queue.enqueue("a1f3").expect("in the test");
        std::fs::write(queue.dir().join("notes.txt"), "x").expect("in the test");
        assert_eq!(queue.queued().expect("in the test"), ["a1f3", "b2c4"]);
        queue.done("a1f3").expect("in the test");
        queue.done("a1f3").expect("in the test");
        assert_eq!(queue.queued().expect("in the test"), ["b2c4"]);
        std::fs::remove_dir_all(dir).expect("in the test");
    }

    #[test]
    fn a_container_id_cannot_name_a_path() {
        let queue = DeleteQueue::new(scratch());
        for bad in ["", "../etc/passwd", "a/b", ".hidden", &"x".repeat(129)] {
            assert!(
                matches!(queue.enqueue(bad), Err(QueueError::BadContainerId(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn the_queue_sits_beside_the_socket() {
        assert_eq!(
            dir_for_socket(Path::new(crate::DEFAULT_SOCKET_PATH)),
            Path::new("/var/run/cilium/deleteQueue")
        );
    }
}
