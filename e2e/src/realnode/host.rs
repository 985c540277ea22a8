//! What real nodes change on the machine, and how it is undone: the cgroups kubelets run
//! pods under, the kernel tunables kubelet sets (vm.overcommit_memory, kernel.panic, ...),
//! and processes that outlive their parents (containerd's shims and the containers).
//! Undone when the bed is dropped, and by the next bed when a test process was killed.

use std::path::{Path, PathBuf};

use crate::Error;

/// The v1 hierarchies the kubelet's `cgroupRoot` must already exist in.
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "unified"))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// Creates `/<name>` in every hierarchy (cpuset's with its parent's CPUs and memory nodes).
pub fn create_cgroup(name: &str) -> Result<(), Error> {
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("mkdir {}", dir.display()), e))?;
        if hierarchy.ends_with("cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = std::fs::read_to_string(hierarchy.join(file))
                    .map_err(|e| Error::io(format!("read {file}"), e))?;
                std::fs::write(dir.join(file), value.trim())
                    .map_err(|e| Error::io(format!("write {file}"), e))?;
            }
        }
    }
    Ok(())
}

/// The process ids in `dir` and every cgroup below it.
fn cgroup_pids(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_pids(&entry.path(), pids);
            }
        }
    }
}

fn kill(pid: i32) {
    // SAFETY: kill(2) with a pid read from the cgroup or /proc; no memory is involved.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// SIGKILLs every process in `/<name>` of the pids hierarchy (the pods' containers).
pub fn kill_cgroup(name: &str) {
    let mut pids = Vec::new();
    cgroup_pids(&Path::new("/sys/fs/cgroup/pids").join(name), &mut pids);
    pids.into_iter().for_each(kill);
}

/// Removes `/<name>` from every hierarchy, deepest first (waiting briefly for killed
/// processes to leave).
pub fn remove_cgroup(name: &str) {
    fn remove_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for _ in 0..50 {
        kill_cgroup(name);
        for hierarchy in hierarchies() {
            remove_tree(&hierarchy.join(name));
        }
        if hierarchies().iter().all(|h| !h.join(name).exists()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// SIGKILLs containerd shims serving the containerd at `socket` (they are daemons: nothing
/// kills them with containerd).
pub fn kill_shims(socket: &Path) {
    let wanted = socket.to_string_lossy().into_owned();
    kill_matching(|cmdline| cmdline.contains("containerd-shim") && cmdline.contains(&wanted));
}

fn kill_matching(matches: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if matches(&cmdline) {
            kill(pid);
        }
    }
}

/// The tunables kubelet sets on the whole machine at start.
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// The machine's values of the kubelet's tunables, saved in `file` before any kubelet runs.
pub fn save_sysctls(file: &Path) -> Result<(), Error> {
    let mut saved = String::new();
    for key in KUBELET_SYSCTLS {
        let value = std::fs::read_to_string(Path::new("/proc/sys").join(key))
            .map_err(|e| Error::io(format!("read {key}"), e))?;
        saved += &format!("{key}={}\n", value.trim());
    }
    std::fs::write(file, saved).map_err(|e| Error::io(format!("write {}", file.display()), e))
}

/// Writes the values `save_sysctls` kept back.
pub fn restore_sysctls(file: &Path) {
    let Ok(saved) = std::fs::read_to_string(file) else {
        return;
    };
    for line in saved.lines() {
        if let Some((key, value)) = line.split_once('=')
            && KUBELET_SYSCTLS.contains(&key)
        {
            let _ = std::fs::write(Path::new("/proc/sys").join(key), value);
        }
    }
}

/// The directory real-node beds live under; `<pid>-<n>` each.
pub fn beds_root() -> PathBuf {
    std::env::temp_dir().join("cilium-rs-realnode")
}

/// The cgroup name of `node` in the bed `bed` (`<pid>-<n>`): the sweep finds it by pid.
pub fn cgroup_name(bed: &str, node: &str) -> String {
    format!("cilium-rs-{bed}-{node}")
}

fn is_dead(pid: u32) -> bool {
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid a bed name (`<pid>-<n>`) starts with.
fn bed_pid(name: &str) -> Option<u32> {
    name.split('-').next().and_then(|p| p.parse().ok())
}

/// Undoes what beds of dead test processes left: their pods and shims are killed, their
/// cgroups removed, the tunables restored, their directories deleted. (Their daemons died
/// with the process: every one is started with a parent-death signal.) Shims and cgroups
/// are found by name, so they go even when the bed's directory is already gone.
pub fn sweep_dead_beds() {
    let root = beds_root().to_string_lossy().into_owned();
    let prefix = format!("-address {root}/");
    kill_matching(|cmdline| {
        cmdline.contains("containerd-shim")
            && cmdline
                .split_once(&prefix)
                .and_then(|(_, rest)| bed_pid(rest))
                .is_some_and(is_dead)
    });
    let mut dead_groups = std::collections::BTreeSet::new();
    for hierarchy in hierarchies() {
        let Ok(groups) = std::fs::read_dir(&hierarchy) else {
            continue;
        };
        for group in groups.flatten() {
            let group = group.file_name().to_string_lossy().into_owned();
            if group
                .strip_prefix("cilium-rs-")
                .and_then(bed_pid)
                .is_some_and(is_dead)
            {
                dead_groups.insert(group);
            }
        }
    }
    for group in dead_groups {
        remove_cgroup(&group);
    }
    let Ok(entries) = std::fs::read_dir(beds_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if bed_pid(&name).is_some_and(is_dead) {
            restore_sysctls(&entry.path().join("sysctl.orig"));
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
