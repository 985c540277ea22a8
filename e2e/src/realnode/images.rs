//! Container images without a registry: OCI layouts built with umoci from this machine's
//! files, imported into each node's containerd (`ctr images import`).
//!
//! - `localhost/pause:1`: the sandbox image (busybox's `sleep infinity`);
//! - `localhost/busybox:1`: the test pods' image (sh, httpd, wget, nc);
//! - for the upstream e2e suite, `agnhost` under the name that suite pulls (its binary from
//!   the conformance build, busybox for the clients' shell);
//! - the project's image under the chart's name: the Dockerfile's content (every binary,
//!   the eBPF objects, the conflist) from the local build, with the shared libraries the
//!   binaries link and busybox for the init container's shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::operator::built_binary;
use crate::{Error, io_error as io};

/// The image the chart names by default (`image.repository`, its `appVersion`).
pub const PROJECT_IMAGE: &str = "ghcr.io/cilium-rs/cilium-rs";
pub const PAUSE_IMAGE: &str = "localhost/pause:1";
pub const TEST_IMAGE: &str = "localhost/busybox:1";
/// The image Kubernetes v1.20's e2e suite runs its pods with (`test/utils/image/manifest.go`).
pub const AGNHOST_IMAGE: &str = "k8s.gcr.io/e2e-test-images/agnhost";
pub const AGNHOST_TAG: &str = "2.21";

/// The built archives: (base name for `ctr images import`, OCI archive).
pub struct Images {
    pub archives: Vec<(String, PathBuf)>,
}

fn run(command: &mut Command) -> Result<String, Error> {
    crate::netns::run(command).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The chart's `appVersion`: the project image's tag.
pub fn app_version() -> Result<String, Error> {
    let chart = crate::chart::chart_dir().join("Chart.yaml");
    let text = std::fs::read_to_string(&chart).map_err(io(format!("read {}", chart.display())))?;
    text.lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .ok_or_else(|| Error::Setup(format!("no appVersion in {}", chart.display())))
}

/// `cilium-cni` built statically (`make cni-static`): it runs on any host's libc.
pub fn static_cni() -> Result<PathBuf, Error> {
    let debug = built_binary("cilium-cni")?;
    let target = debug
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::Setup("no target directory".into()))?;
    let path = target.join("x86_64-unknown-linux-gnu/debug/cilium-cni");
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Setup(format!(
            "{} is not built (run `make cni-static`)",
            path.display()
        )))
    }
}

/// A root filesystem with busybox and its applets (the base of every image here).
fn busybox_root(root: &Path) -> Result<(), Error> {
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/run"] {
        std::fs::create_dir_all(root.join(dir)).map_err(io("mkdir rootfs"))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(io("copy busybox"))?;
    let applets = run(Command::new("/bin/busybox").arg("--list"))?;
    for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io("applet link"))?;
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(io("passwd"))?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n").map_err(io("group"))?;
    Ok(())
}

/// Copies `binary` into the image stripped of its debug info (a tenth of the size), with
/// every shared library it loads at the same path.
fn install_binary(root: &Path, binary: &Path, name: &str) -> Result<(), Error> {
    let destination = root.join("usr/local/bin").join(name);
    std::fs::create_dir_all(root.join("usr/local/bin")).map_err(io("mkdir bin"))?;
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&destination))?;
    let ldd = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io("ldd"))?;
    // A static binary: ldd says so and exits non-zero.
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let library = match line.split_once("=>") {
            Some((_, after)) => after.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        let Some(library) = library.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let inside = root.join(library.trim_start_matches('/'));
        if inside.exists() {
            continue;
        }
        if let Some(dir) = inside.parent() {
            std::fs::create_dir_all(dir).map_err(io("mkdir lib"))?;
        }
        std::fs::copy(library, &inside).map_err(io(format!("copy {library}")))?;
    }
    Ok(())
}

/// The eBPF objects the agent's build compiled (also embedded in the agent).
fn datapath_objects() -> Result<Vec<PathBuf>, Error> {
    let build = built_binary("cilium-agent")?
        .parent()
        .map(|d| d.join("build"))
        .ok_or_else(|| Error::Setup("no build directory".into()))?;
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(&build)
        .map_err(io("read build dir"))?
        .flatten()
    {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("cilium-datapath-")
        {
            continue;
        }
        let out = entry.path().join("out");
        if let Ok(modified) = out.join("bpf_lxc.o").metadata().and_then(|m| m.modified())
            && newest.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            newest = Some((modified, out));
        }
    }
    let (_, out) = newest.ok_or_else(|| Error::Setup("no built bpf_lxc.o".into()))?;
    Ok(std::fs::read_dir(out)
        .map_err(io("read out dir"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect())
}

/// What the image runs: its entrypoint (may be empty) and command.
struct Run<'a> {
    entrypoint: &'a [&'a str],
    cmd: &'a [&'a str],
}

impl<'a> Run<'a> {
    fn cmd(cmd: &'a [&'a str]) -> Self {
        Self {
            entrypoint: &[],
            cmd,
        }
    }
}

/// Builds `layout:tag` from a root filesystem filled by `fill`, running `run`, and archives
/// it to `<dir>/<name>-oci.tar`.
fn build_image(
    dir: &Path,
    name: &str,
    tag: &str,
    run_config: Run<'_>,
    fill: impl FnOnce(&Path) -> Result<(), Error>,
) -> Result<PathBuf, Error> {
    let layout = dir.join(name);
    let image = format!("{}:{tag}", layout.display());
    let bundle = dir.join(format!("bundle-{name}"));
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle))?;
    fill(&bundle.join("rootfs"))?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle))?;
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image]);
    for part in run_config.entrypoint {
        config.arg(format!("--config.entrypoint={part}"));
    }
    for part in run_config.cmd {
        config.arg(format!("--config.cmd={part}"));
    }
    run(&mut config)?;
    run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    let archive = dir.join(format!("{name}-oci.tar"));
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."))?;
    std::fs::remove_dir_all(&bundle).map_err(io("remove bundle"))?;
    std::fs::remove_dir_all(&layout).map_err(io("remove layout"))?;
    Ok(archive)
}

impl Images {
    /// Builds the three images into `dir`, and agnhost's with `agnhost` (its binary).
    pub fn build(dir: &Path, agnhost: Option<&Path>) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(io("mkdir images"))?;
        let pause = build_image(
            dir,
            "pause",
            "1",
            Run::cmd(&["/bin/sleep", "infinity"]),
            busybox_root,
        )?;
        let busybox = build_image(dir, "busybox", "1", Run::cmd(&["/bin/sh"]), busybox_root)?;
        let cni = static_cni()?;
        let objects = datapath_objects()?;
        let conflist =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../node-agent/cni/05-cilium.conflist");
        let project = build_image(
            dir,
            "cilium-rs",
            &app_version()?,
            Run::cmd(&["cilium-agent", "--help"]),
            |root| {
                busybox_root(root)?;
                for name in ["cilium-agent", "cilium-operator", "cilium"] {
                    install_binary(root, &built_binary(name)?, name)?;
                }
                install_binary(root, &cni, "cilium-cni")?;
                let bpf = root.join("var/lib/cilium/bpf");
                std::fs::create_dir_all(&bpf).map_err(io("mkdir bpf"))?;
                for object in &objects {
                    if let Some(file) = object.file_name() {
                        std::fs::copy(object, bpf.join(file)).map_err(io("copy object"))?;
                    }
                }
                std::fs::create_dir_all(root.join("etc/cilium")).map_err(io("mkdir etc"))?;
                std::fs::copy(&conflist, root.join("etc/cilium/05-cilium.conflist"))
                    .map_err(io("copy conflist"))?;
                Ok(())
            },
        )?;
        let mut archives = vec![
            ("localhost/pause".into(), pause),
            ("localhost/busybox".into(), busybox),
            (PROJECT_IMAGE.into(), project),
        ];
        if let Some(binary) = agnhost {
            // As upstream's Dockerfile: `/agnhost` is the entrypoint, `pause` the default.
            let run = Run {
                entrypoint: &["/agnhost"],
                cmd: &["pause"],
            };
            let image = build_image(dir, "agnhost", AGNHOST_TAG, run, |root| {
                busybox_root(root)?;
                std::fs::copy(binary, root.join("agnhost")).map_err(io("copy agnhost"))?;
                Ok(())
            })?;
            archives.push((AGNHOST_IMAGE.into(), image));
        }
        Ok(Self { archives })
    }
}
