//! Compile berth-init (init/src/main.rs, no dependencies) alone with rustc,
//! statically linked, so that it runs in any image; berthd carries it
//! (`container::init::BINARY`) and mounts it into containers run with --init.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../init/src/main.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("berth-init");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut cmd = Command::new(rustc);
    // For the machine berthd is built for (a cross build's target, with its linker).
    let (target, host) = (std::env::var("TARGET").unwrap_or_default(), std::env::var("HOST").unwrap_or_default());
    if !target.is_empty() && target != host {
        cmd.args(["--target", &target]);
        let var = format!("CARGO_TARGET_{}_LINKER", target.to_uppercase().replace('-', "_"));
        if let Ok(linker) = std::env::var(var) {
            cmd.arg("-C").arg(format!("linker={linker}"));
        }
    }
    let status = cmd
        .args(["--edition", "2021", "--crate-name", "berth_init", "--crate-type", "bin"])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "strip=symbols", "-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running rustc for berth-init");
    assert!(status.success(), "compiling berth-init statically failed (it needs the C library's static archive: Debian's libc6-dev)");
}
