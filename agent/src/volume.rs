//! Named volumes: directories under `<root>/volumes/<ns>/<name>/_data` that
//! outlive the containers mounting them, each with a record in the metadata
//! database (the source of truth: a directory no record names is removed at
//! start-up).
//!
//! Who uses a volume is read from the container records, so that a volume
//! in use is never removed: [`Volumes::lock`] is held by whoever changes
//! that (the creation of a container that mounts volumes, the removal of a
//! volume), from its check to its last write.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::archive::apply::{apply_tar, ApplyOptions};
use crate::archive::whiteout::WhiteoutMode;
use crate::container::config::MountKind;
use crate::content::random_hex;
use crate::metadata::{now_nanos, Metadata, MetadataError, VolumeRecord};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+, at most 128 characters")]
    InvalidName(String),
    #[error("volume {name:?} is in use by container(s) {}", containers.join(", "))]
    InUse { name: String, containers: Vec<String> },
    #[error("filling volume {name:?} from the image's {path}: {message}")]
    Fill { name: String, path: String, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io { path: path.to_owned(), source }
}

/// Docker's rule for volume names (two characters at least).
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    if crate::container::spec::valid_volume_name(name) {
        Ok(())
    } else {
        Err(VolumeError::InvalidName(name.chars().take(140).collect()))
    }
}

pub struct Volumes {
    meta: Arc<Metadata>,
    /// `<root>/volumes`.
    dir: PathBuf,
    /// Held while the users of volumes may change (see the module's text).
    users: Mutex<()>,
}

impl Volumes {
    /// Open the volumes under `root`, removing the directories of volumes
    /// that have no record (a crash while one was made or removed).
    pub fn open(meta: Arc<Metadata>, root: &Path) -> Result<Self, VolumeError> {
        let dir = root.join("volumes");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io_err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        let v = Volumes { meta, dir, users: Mutex::new(()) };
        let removed = v.recover()?;
        if removed > 0 {
            tracing::info!(removed, "removed the directories of volumes that have no record");
        }
        Ok(v)
    }

    fn recover(&self) -> Result<usize, VolumeError> {
        let known: std::collections::HashSet<(String, String)> = self.meta.all_volumes()?.into_iter().map(|(ns, v)| (ns, v.name)).collect();
        let mut removed = 0;
        for ns_entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let ns_entry = ns_entry.map_err(io_err(&self.dir))?;
            let ns = ns_entry.file_name().to_string_lossy().into_owned();
            let ns_dir = ns_entry.path();
            if !ns_dir.is_dir() || ns.starts_with('.') {
                // Scratch space left by a crash.
                remove_all(&ns_dir);
                continue;
            }
            for entry in fs::read_dir(&ns_dir).map_err(io_err(&ns_dir))? {
                let entry = entry.map_err(io_err(&ns_dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&(ns.clone(), name)) {
                    remove_all(&entry.path());
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Hold this while checking who uses a volume and acting on it.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory containers mount.
    pub fn path(&self, ns: &str, name: &str) -> PathBuf {
        self.dir.join(ns).join(name).join("_data")
    }

    /// Scratch space on the volumes' filesystem, removed at start-up if left.
    pub fn scratch(&self) -> PathBuf {
        self.dir.join(format!(".tmp-{}", random_hex(8)))
    }

    pub fn get(&self, ns: &str, name: &str) -> Result<VolumeRecord, VolumeError> {
        Ok(self.meta.volume(ns, name)?)
    }

    pub fn list(&self, ns: &str) -> Result<Vec<VolumeRecord>, VolumeError> {
        Ok(self.meta.volumes(ns)?)
    }

    /// Make a volume: its directory, then its record. An empty `name` makes
    /// one named by 64 hex characters, as docker names them. The caller holds
    /// [`Volumes::lock`] (a directory without a record is then a crash's, and
    /// removed here).
    pub fn create(&self, ns: &str, name: &str, labels: BTreeMap<String, String>, anonymous: bool) -> Result<VolumeRecord, VolumeError> {
        let name = if name.is_empty() { format!("{}{}", random_hex(16), random_hex(16)) } else { name.to_owned() };
        validate_name(&name)?;
        if self.meta.volume(ns, &name).is_ok() {
            return Err(MetadataError::AlreadyExists { kind: "volume", name }.into());
        }
        let data = self.path(ns, &name);
        let top = data.parent().unwrap_or(&data).to_owned();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(top.parent().unwrap_or(&top)).map_err(io_err(&top))?;
        // A directory left by a crash (no record) starts again empty.
        remove_all(&top);
        fs::DirBuilder::new().mode(0o700).create(&top).map_err(io_err(&top))?;
        fs::DirBuilder::new().mode(0o755).create(&data).map_err(io_err(&data))?;
        let rec = VolumeRecord { name, labels, created: now_nanos(), anonymous };
        if let Err(e) = self.meta.insert_volume(ns, &rec) {
            remove_all(&top);
            return Err(e.into());
        }
        Ok(rec)
    }

    /// The volume `name`, made when missing; whether it was made.
    pub fn ensure(&self, ns: &str, name: &str, anonymous: bool) -> Result<(VolumeRecord, bool), VolumeError> {
        match self.meta.volume(ns, name) {
            Ok(rec) => Ok((rec, false)),
            Err(MetadataError::NotFound { .. }) => Ok((self.create(ns, name, BTreeMap::new(), anonymous)?, true)),
            Err(e) => Err(e.into()),
        }
    }

    /// The containers (names) of `ns` whose records mount volume `name`,
    /// whatever their state.
    pub fn users(&self, ns: &str, name: &str) -> Result<Vec<String>, VolumeError> {
        let mut users: Vec<String> = self
            .meta
            .containers(ns)?
            .iter()
            .filter(|c| c.config.mounts.iter().any(|m| m.kind == MountKind::Volume && m.source == name))
            .map(|c| c.name.clone())
            .collect();
        users.sort();
        Ok(users)
    }

    /// Remove a volume no container uses: its record, then its files.
    /// The caller holds [`Volumes::lock`].
    pub fn remove_locked(&self, ns: &str, name: &str) -> Result<VolumeRecord, VolumeError> {
        let users = self.users(ns, name)?;
        if !users.is_empty() {
            // Known or not, a name in use is in use (a record lost by hand).
            return Err(VolumeError::InUse { name: name.to_owned(), containers: users });
        }
        let rec = self.meta.delete_volume(ns, name)?;
        let top = self.dir.join(ns).join(name);
        // Out of the way at once; the files go after.
        let trash = self.scratch();
        let gone = match fs::rename(&top, &trash) {
            Ok(()) => trash,
            Err(_) => top,
        };
        remove_all(&gone);
        Ok(rec)
    }

    /// Bytes the volume's files take on disk.
    pub fn size(&self, ns: &str, name: &str) -> u64 {
        crate::snapshot::disk_usage(&self.path(ns, name)).map(|u| u.size).unwrap_or(0)
    }

    /// Whether the volume's directory holds nothing (a fill cut short by a
    /// crash left it empty: the fill goes beside it, then takes its place).
    pub fn is_empty(&self, ns: &str, name: &str) -> Result<bool, VolumeError> {
        let data = self.path(ns, name);
        Ok(fs::read_dir(&data).map_err(io_err(&data))?.next().is_none())
    }

    /// Copy what the tree at `root` holds at `path` (links followed inside
    /// the tree only) into the empty volume `name`, with the directory's own
    /// owner and mode: docker's copy of an image's content into a new
    /// volume. Nothing there, or not a directory: nothing is copied. The
    /// files go through the layer writer and the tar applier, with their
    /// rules (no entry lands outside the volume).
    pub fn fill(&self, ns: &str, name: &str, root: &Path, path: &str) -> Result<(), VolumeError> {
        let fill_err = |message: String| VolumeError::Fill { name: name.to_owned(), path: path.to_owned(), message };
        let Some(rel) = crate::build::source::resolve(root, path).map_err(|e| fill_err(e.to_string()))? else {
            return Ok(());
        };
        let src = root.join(&rel);
        let meta = match fs::symlink_metadata(&src) {
            Ok(m) if m.is_dir() => m,
            _ => return Ok(()),
        };
        let data = self.path(ns, name);
        // Filled beside `_data`, then renamed over it (empty): a fill cut
        // short leaves the volume empty, to be filled again at its next use.
        let filling = data.with_file_name(".filling");
        remove_all(&filling);
        fs::DirBuilder::new().mode(0o755).create(&filling).map_err(io_err(&filling))?;
        let tar_path = self.scratch();
        let result = (|| {
            let mut tar = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tar_path)
                .map_err(|e| fill_err(e.to_string()))?;
            crate::archive::diff::write_native_layer(&src, None, None, &[], std::io::BufWriter::new(&mut tar))
                .map_err(|e| fill_err(e.to_string()))?;
            std::io::Seek::rewind(&mut tar).map_err(|e| fill_err(e.to_string()))?;
            let opts = ApplyOptions { whiteouts: WhiteoutMode::Native, ..Default::default() };
            apply_tar(std::io::BufReader::new(tar), &filling, &opts).map_err(|e| fill_err(e.to_string()))?;
            std::os::unix::fs::chown(&filling, Some(meta.uid()), Some(meta.gid())).map_err(io_err(&filling))?;
            fs::set_permissions(&filling, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(io_err(&filling))?;
            fs::remove_dir(&data).map_err(io_err(&data))?;
            fs::rename(&filling, &data).map_err(io_err(&data))
        })();
        let _ = fs::remove_file(&tar_path);
        if result.is_err() {
            remove_all(&filling);
            // The volume stays usable (empty) whatever happened.
            let _ = fs::DirBuilder::new().mode(0o755).create(&data);
        }
        result
    }
}

/// Remove a file or a tree; what cannot be removed is logged.
fn remove_all(path: &Path) {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "removing volume files failed");
    }
}
