//! The native snapshotter: every snapshot is a full copy of its parent, made
//! with `cp -a` (which keeps owners, modes, hardlinks, xattrs and device
//! nodes). Slower and bigger than overlayfs, but it works on any filesystem,
//! including when the agent's root is itself on overlayfs.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{io_err, Dirs, Mount, SnapshotError, Snapshotter};
use crate::archive::whiteout::WhiteoutMode;
use crate::metadata::SnapshotKind;
use crate::process::run_with_timeout;

/// Upper bound on copying one snapshot.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Native {
    dirs: Dirs,
}

impl Native {
    /// Storage under `base` (`<root>/snapshots/native`).
    pub fn new(base: PathBuf) -> Result<Self, SnapshotError> {
        Ok(Self { dirs: Dirs::new(base)? })
    }
}

impl Snapshotter for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn whiteout_mode(&self) -> WhiteoutMode {
        WhiteoutMode::Native
    }

    fn independent_layers(&self) -> bool {
        false
    }

    fn create(&self, id: u64, parents: &[u64]) -> Result<(), SnapshotError> {
        let tmp = self.dirs.tmp_dir(id);
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let target = tmp.join("fs");
        match parents.first() {
            None => fs::create_dir(&target).map_err(io_err(&target))?,
            Some(parent) => {
                let source = self.fs_dir(*parent);
                let mut cmd = Command::new("cp");
                cmd.arg("-a").arg("--reflink=auto").arg(&source).arg(&target);
                run_with_timeout(&mut cmd, COPY_TIMEOUT).map_err(|message| SnapshotError::Copy { path: source.clone(), message })?;
            }
        }
        self.dirs.publish(id)
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.dirs.dir(id).join("fs")
    }

    fn layer_dirs(&self, id: u64, _parents: &[u64], _kind: SnapshotKind) -> Vec<PathBuf> {
        // Every kind is a full copy.
        vec![self.fs_dir(id)]
    }

    fn mounts(&self, id: u64, parents: &[u64], kind: SnapshotKind) -> Vec<Mount> {
        let ro = kind != SnapshotKind::Active;
        // A view is a full copy of its parent too, so every kind mounts its own directory.
        let _ = parents;
        vec![Mount {
            kind: "bind".into(),
            source: self.fs_dir(id).display().to_string(),
            target: String::new(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        }]
    }

    fn remove(&self, id: u64) -> Result<(), SnapshotError> {
        self.dirs.remove(id)
    }

    fn ids_on_disk(&self) -> Result<Vec<u64>, SnapshotError> {
        self.dirs.ids()
    }

    fn remove_partial(&self) -> Result<usize, SnapshotError> {
        self.dirs.remove_tmp()
    }
}
