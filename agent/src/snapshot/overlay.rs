//! The overlayfs snapshotter: each snapshot is a directory of its own changes;
//! a container's filesystem is an overlay of its parents (read-only lower
//! layers) and its own directory (the writable upper layer). Layers shared by
//! several images or containers exist once on disk.

use std::fs;
use std::path::{Path, PathBuf};

use super::{io_err, Dirs, Mount, SnapshotError, Snapshotter};
use crate::archive::whiteout::WhiteoutMode;
use crate::metadata::SnapshotKind;

pub struct Overlay {
    dirs: Dirs,
}

impl Overlay {
    /// Storage under `base` (`<root>/snapshots/overlayfs`).
    pub fn new(base: PathBuf) -> Result<Self, SnapshotError> {
        Ok(Self { dirs: Dirs::new(base)? })
    }

    fn lowerdirs(&self, ids: &[u64]) -> String {
        ids.iter().map(|id| self.fs_dir(*id).display().to_string()).collect::<Vec<_>>().join(":")
    }
}

impl Snapshotter for Overlay {
    fn name(&self) -> &'static str {
        "overlayfs"
    }

    fn whiteout_mode(&self) -> WhiteoutMode {
        WhiteoutMode::Overlay
    }

    fn independent_layers(&self) -> bool {
        true
    }

    fn create(&self, id: u64, _parents: &[u64]) -> Result<(), SnapshotError> {
        let tmp = self.dirs.tmp_dir(id);
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(tmp.join("fs")).map_err(io_err(&tmp))?;
        fs::create_dir_all(tmp.join("work")).map_err(io_err(&tmp))?;
        self.dirs.publish(id)
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.dirs.dir(id).join("fs")
    }

    fn layer_dirs(&self, id: u64, parents: &[u64], kind: SnapshotKind) -> Vec<PathBuf> {
        // As `mounts` stacks them: a view shows its parent only, and a view of nothing its
        // own (empty) directory.
        let own = (kind != SnapshotKind::View || parents.is_empty()).then_some(id);
        own.into_iter().chain(parents.iter().copied()).map(|id| self.fs_dir(id)).collect()
    }

    fn mounts(&self, id: u64, parents: &[u64], kind: SnapshotKind) -> Vec<Mount> {
        let bind = |src: PathBuf, ro: bool| Mount {
            kind: "bind".into(),
            source: src.display().to_string(),
            target: String::new(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        match kind {
            SnapshotKind::Active if parents.is_empty() => vec![bind(self.fs_dir(id), false)],
            SnapshotKind::Active => vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![
                    format!("workdir={}", self.dirs.dir(id).join("work").display()),
                    format!("upperdir={}", self.fs_dir(id).display()),
                    format!("lowerdir={}", self.lowerdirs(parents)),
                ],
            }],
            SnapshotKind::View | SnapshotKind::Committed => {
                // A view shows its parent; a committed snapshot shows itself.
                let mut ids = Vec::new();
                if kind == SnapshotKind::Committed {
                    ids.push(id);
                }
                ids.extend_from_slice(parents);
                match ids.len() {
                    0 => vec![bind(self.fs_dir(id), true)],
                    1 => vec![bind(self.fs_dir(ids[0]), true)],
                    // An overlay with only lower layers is read-only by nature.
                    _ => vec![Mount {
                        kind: "overlay".into(),
                        source: "overlay".into(),
                        target: String::new(),
                        options: vec![format!("lowerdir={}", self.lowerdirs(&ids))],
                    }],
                }
            }
        }
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

/// Whether overlayfs with two lower layers can be mounted under `dir`.
/// Returns the reason when it cannot.
pub fn check_support(dir: &Path) -> Result<(), String> {
    use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
    let fstype = rustix::fs::statfs(dir).map_err(|e| format!("statfs {}: {e}", dir.display()))?.f_type;
    // OVERLAYFS_SUPER_MAGIC: an overlay upper dir cannot itself live on overlayfs.
    if fstype as u64 == 0x794c_7630 {
        return Err(format!("{} is on overlayfs", dir.display()));
    }
    let base = dir.join(format!("overlay-check-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let result = (|| {
        for d in ["l1", "l2", "upper", "work", "merged"] {
            fs::create_dir_all(base.join(d)).map_err(|e| e.to_string())?;
        }
        let opts = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            base.join("l1").display(),
            base.join("l2").display(),
            base.join("upper").display(),
            base.join("work").display()
        );
        let data = std::ffi::CString::new(opts).map_err(|e| e.to_string())?;
        mount("overlay", base.join("merged"), "overlay", MountFlags::empty(), Some(data.as_c_str()))
            .map_err(|e| format!("mounting overlay: {e}"))?;
        let _ = unmount(base.join("merged"), UnmountFlags::DETACH);
        Ok(())
    })();
    let _ = fs::remove_dir_all(&base);
    result
}
