//! Builds the C datapath in `ebpf-prog/` with clang (`-target bpf`, with BTF) into OUT_DIR,
//! where `src/programs.rs` embeds the objects, and records the C layout of every map
//! key/value (`ebpf-prog/layout.c`, built for the host) for the layout test.

use std::{env, path::PathBuf, process::Command};

const PROGRAMS: [&str; 2] = ["bpf_lxc", "bpf_xdp"];

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let source = manifest.join("../../ebpf-prog");
    let include = source.join("include");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    for program in PROGRAMS {
        let object = out.join(format!("{program}.o"));
        run(Command::new(&clang)
            .args([
                "-g",
                "-O2",
                "-Wall",
                "-Werror",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
            ])
            .arg("-I")
            .arg(&include)
            // asm/types.h lives under the multiarch include directory on Debian.
            .args(["-I", "/usr/include/x86_64-linux-gnu"])
            .arg("-c")
            .arg(source.join(format!("{program}.c")))
            .arg("-o")
            .arg(&object));
    }

    let layout_bin = out.join("layout");
    run(Command::new(&clang)
        .arg("-I")
        .arg(&include)
        .arg(source.join("layout.c"))
        .arg("-o")
        .arg(&layout_bin));
    let printed = Command::new(&layout_bin)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", layout_bin.display()));
    assert!(printed.status.success(), "{} failed", layout_bin.display());
    std::fs::write(out.join("c_layout.txt"), printed.stdout).expect("writing c_layout.txt");
}

fn run(command: &mut Command) {
    let shown = format!("{command:?}");
    let status = command.status().unwrap_or_else(|e| {
        panic!("{shown}: {e} (the datapath needs clang and libbpf-dev: run `make deps`)")
    });
    assert!(status.success(), "{shown} failed");
}
