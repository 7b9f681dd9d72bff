//! berth-init (init/src/main.rs), carried by berthd: the PID 1 of containers
//! run with `--init`. The build script compiles it statically, so it runs in
//! any image. It is written under the root once per content and bind-mounted
//! read-only into those containers.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The static binary.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-init"));

/// Where a container sees it.
pub const PATH_IN_CONTAINER: &str = "/sbin/berth-init";

/// `<root>/bin/berth-init`, written (atomically) unless it holds these bytes.
/// A running container keeps the one it was started with.
pub fn install(root: &Path) -> std::io::Result<PathBuf> {
    let dir = root.join("bin");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("berth-init");
    if std::fs::read(&path).is_ok_and(|b| b == BINARY) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".berth-init.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(BINARY)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
