//! Makes sure the pin directory lives on a BPF filesystem, mounting one when the bpffs root
//! has none (a fresh machine has nothing at /sys/fs/bpf; Cilium's agent mounts it the same
//! way).

use std::path::Path;

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::Error;

pub const DEFAULT_ROOT: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs on `root` (or on /sys/fs/bpf when `root` lies below it) if needed, and
/// creates `pin_dir` with its `links/` directory.
pub fn ensure_mounted(root: &Path, pin_dir: &Path) -> Result<(), Error> {
    let fail = |path: &Path, source: std::io::Error| Error::Bpffs {
        path: path.to_path_buf(),
        source,
    };
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(root);
    if !is_bpffs(existing) {
        // Never mount over an unrelated directory such as /tmp or /.
        if existing != root && existing != Path::new(DEFAULT_ROOT) {
            return Err(fail(
                root,
                std::io::Error::other("no BPF filesystem is mounted here"),
            ));
        }
        mount(
            Some("bpffs"),
            existing,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| fail(existing, std::io::Error::from(e)))?;
    }
    std::fs::create_dir_all(pin_dir.join("links")).map_err(|e| fail(pin_dir, e))?;
    if !is_bpffs(pin_dir) {
        return Err(fail(
            pin_dir,
            std::io::Error::other("not on a BPF filesystem"),
        ));
    }
    Ok(())
}
