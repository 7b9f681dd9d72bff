//! Snapshots: the filesystems images are unpacked into and containers run on.
//!
//! [`Snapshotter`] is the storage half (directories and mounts), with two real
//! implementations: [`overlay::Overlay`] (layers stacked by overlayfs) and
//! [`native::Native`] (each snapshot a full copy of its parent). [`Snapshots`]
//! is what everyone else uses: keys, parents, kinds and labels in the database,
//! and the files of a snapshot through the layer format of [`crate::archive`]:
//! [`Snapshots::apply_layer`], [`Snapshots::read_file`], [`Snapshots::changes`]
//! and [`Snapshots::write_changes`]. Callers never need to know which
//! snapshotter they hold; what differs between them that a caller may plan
//! around is a capability ([`Snapshots::applies_layers_detached`]).
//!
//! Every change writes the directory first and the record second, and every
//! removal deletes the record first and the directory second, so a crash at
//! any point leaves at worst a directory that no record names; [`Snapshots::recover`]
//! deletes those at start.

pub mod native;
pub mod overlay;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::apply::{apply_tar, ApplyError, ApplyOptions, ApplyStats};
use crate::archive::diff::{self, Change, DiffError};
use crate::archive::stack::{Stack, StackError};
use crate::archive::whiteout::WhiteoutMode;
use crate::metadata::{now_nanos, ContainerRecord, Metadata, MetadataError, SnapshotKind, SnapshotRecord};

/// Label set on snapshots made by unpacking an image: garbage collected once no image uses them.
pub const LABEL_MANAGED: &str = "berth.io/managed";
/// Most ancestors a snapshot may have (overlayfs stacks at most 500 layers,
/// and one page of mount options holds far fewer paths).
pub const MAX_CHAIN: usize = 500;

/// Label set on the temporary active snapshot of an unpack in progress.
pub const LABEL_UNPACKING: &str = "berth.io/unpacking";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("snapshot {key:?} is {actual}, expected {expected}")]
    WrongKind { key: String, actual: &'static str, expected: &'static str },
    #[error("snapshot {key:?} has {children} child snapshot(s); remove them first")]
    HasChildren { key: String, children: usize },
    #[error("invalid snapshot key {0:?}: must be 1-512 bytes without NUL")]
    InvalidKey(String),
    #[error("snapshot storage at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("copying snapshot {path}: {message}")]
    Copy { path: PathBuf, message: String },
    #[error("snapshot {key:?} has more than {max} ancestors")]
    ChainTooLong { key: String, max: usize },
}

/// Errors of [`Snapshots::changes`] and [`Snapshots::write_changes`].
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Diff(#[from] DiffError),
}

/// Errors of [`Snapshots::apply_layer`].
#[derive(Debug, thiserror::Error)]
pub enum ApplyLayerError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The layer is corrupt, hostile or unsupported, or writing it failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl From<StackError> for SnapshotError {
    fn from(e: StackError) -> Self {
        match e {
            StackError::Io { path, source } => SnapshotError::Io { path, source },
            StackError::TooLarge { path, max } => {
                SnapshotError::Io { path, source: io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than {max} bytes")) }
            }
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_owned(), source }
}

/// A mount that assembles (part of) a snapshot's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

/// Disk usage of one snapshot's own layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

/// The storage half of a snapshotter. Only [`Snapshots`] calls it: what the
/// rest of the agent needs of a snapshot's files, [`Snapshots`] answers.
pub trait Snapshotter: Send + Sync {
    /// Name shown to users and stored in the record ("overlayfs", "native").
    fn name(&self) -> &'static str;
    /// The on-disk form of this snapshotter's directories: how layer whiteouts
    /// are written into them, and how [`layer_dirs`](Self::layer_dirs) stack.
    ///
    /// Outside this module, only `image/unpack.rs` still calls it; it is to
    /// use [`Snapshots::apply_layer`] instead.
    fn whiteout_mode(&self) -> WhiteoutMode;
    /// Whether a layer can be unpacked without its parent's files present
    /// (true for overlayfs: a layer is a diff of its own).
    ///
    /// Outside this module, use [`Snapshots::applies_layers_detached`].
    fn independent_layers(&self) -> bool;
    /// Create storage for snapshot `id`, whose committed ancestors are
    /// `parents` (nearest first). Atomic: the directory appears whole or not at all.
    fn create(&self, id: u64, parents: &[u64]) -> Result<(), SnapshotError>;
    /// The directory that holds the snapshot's own files; layers are applied here.
    fn fs_dir(&self, id: u64) -> PathBuf;
    /// The directories whose union, read with the rules of
    /// [`whiteout_mode`](Self::whiteout_mode), is the filesystem of snapshot
    /// `id` of kind `kind` (whose committed ancestors are `parents`, nearest
    /// first) as its mounts show it: topmost first.
    fn layer_dirs(&self, id: u64, parents: &[u64], kind: SnapshotKind) -> Vec<PathBuf>;
    /// Mounts that assemble the snapshot.
    fn mounts(&self, id: u64, parents: &[u64], kind: SnapshotKind) -> Vec<Mount>;
    /// Delete the storage of `id` (no error if it is already gone).
    fn remove(&self, id: u64) -> Result<(), SnapshotError>;
    /// Ids of every snapshot directory on disk, including half-made ones.
    fn ids_on_disk(&self) -> Result<Vec<u64>, SnapshotError>;
    /// Delete half-made directories (`<id>.tmp`); returns how many.
    fn remove_partial(&self) -> Result<usize, SnapshotError>;
}

/// Storage directory shared by both snapshotters: `<base>/<id>/fs`.
pub(crate) struct Dirs {
    pub base: PathBuf,
}

impl Dirs {
    pub fn new(base: PathBuf) -> Result<Self, SnapshotError> {
        fs::create_dir_all(&base).map_err(io_err(&base))?;
        crate::disk::spread_subdirs(&base);
        Ok(Self { base })
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.base.join(id.to_string())
    }

    pub fn tmp_dir(&self, id: u64) -> PathBuf {
        self.base.join(format!("{id}.tmp"))
    }

    pub fn remove(&self, id: u64) -> Result<(), SnapshotError> {
        for dir in [self.dir(id), self.tmp_dir(id)] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SnapshotError::Io { path: dir, source: e }),
            }
        }
        Ok(())
    }

    /// Publish `<id>.tmp` as `<id>` durably (the record is written after this).
    pub fn publish(&self, id: u64) -> Result<(), SnapshotError> {
        let dir = self.dir(id);
        fs::rename(self.tmp_dir(id), &dir).map_err(io_err(&dir))?;
        crate::content::sync_dir(&self.base).map_err(io_err(&self.base))
    }

    /// Delete every `<id>.tmp` entry.
    pub fn remove_tmp(&self) -> Result<usize, SnapshotError> {
        let mut n = 0;
        for e in fs::read_dir(&self.base).map_err(io_err(&self.base))? {
            let e = e.map_err(io_err(&self.base))?;
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let p = e.path();
                fs::remove_dir_all(&p).map_err(io_err(&p))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every `<id>` or `<id>.tmp` entry.
    pub fn ids(&self) -> Result<Vec<u64>, SnapshotError> {
        let mut ids = Vec::new();
        for e in fs::read_dir(&self.base).map_err(io_err(&self.base))? {
            let e = e.map_err(io_err(&self.base))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Ok(id) = name.trim_end_matches(".tmp").parse::<u64>() {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

/// Snapshots of every namespace: records in the database, storage in a [`Snapshotter`].
pub struct Snapshots {
    meta: Arc<Metadata>,
    sn: Box<dyn Snapshotter>,
    /// Disk usage of committed snapshots by storage id: they never change and
    /// ids are never reused, so each is measured once (image lists ask often).
    usage_cache: std::sync::Mutex<std::collections::HashMap<u64, Usage>>,
}

fn validate_key(key: &str) -> Result<(), SnapshotError> {
    if key.is_empty() || key.len() > 512 || key.contains('\0') {
        return Err(SnapshotError::InvalidKey(key.chars().take(80).collect()));
    }
    Ok(())
}

impl Snapshots {
    pub fn new(meta: Arc<Metadata>, sn: Box<dyn Snapshotter>) -> Self {
        Self { meta, sn, usage_cache: Default::default() }
    }

    /// The snapshotter's name (`overlayfs`, `native`). The files of
    /// snapshots are read and written through the methods of [`Snapshots`].
    pub fn snapshotter_name(&self) -> &'static str {
        self.sn.name()
    }

    /// Whether a layer can be applied into an active snapshot prepared without
    /// a parent, and that snapshot then committed onto the layer's real parent
    /// with [`Snapshots::commit_with_parent`]. When true, the layers of an
    /// image may be applied in parallel, or while they are still arriving;
    /// when false, each layer must be applied into a snapshot prepared on its
    /// parent, in order.
    pub fn applies_layers_detached(&self) -> bool {
        self.sn.independent_layers()
    }

    /// Storage ids of `parent` and its ancestors, nearest first.
    pub fn chain(&self, ns: &str, parent: &str) -> Result<Vec<u64>, SnapshotError> {
        let mut ids = Vec::new();
        let mut cur = parent.to_owned();
        while !cur.is_empty() {
            if ids.len() >= MAX_CHAIN {
                return Err(SnapshotError::ChainTooLong { key: parent.to_owned(), max: MAX_CHAIN });
            }
            let rec = self.meta.snapshot(ns, &cur)?;
            ids.push(rec.id);
            cur = rec.parent;
        }
        Ok(ids)
    }

    /// Make a snapshot; `container`, when given, is stored in the same transaction.
    fn create(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        kind: SnapshotKind,
        labels: BTreeMap<String, String>,
        container: Option<(&ContainerRecord, &oci_spec::runtime::Spec)>,
    ) -> Result<SnapshotRecord, SnapshotError> {
        validate_key(key)?;
        if self.meta.snapshot(ns, key).is_ok() {
            return Err(MetadataError::AlreadyExists { kind: "snapshot", name: key.to_owned() }.into());
        }
        let parents = self.chain(ns, parent)?;
        if !parent.is_empty() {
            let p = self.meta.snapshot(ns, parent)?;
            if p.kind != SnapshotKind::Committed {
                return Err(SnapshotError::WrongKind { key: parent.to_owned(), actual: p.kind.as_str(), expected: "committed" });
            }
        }
        let id = self.meta.next_snapshot_id()?;
        self.sn.create(id, &parents)?;
        let now = now_nanos();
        let rec = SnapshotRecord { key: key.to_owned(), parent: parent.to_owned(), kind, id, labels, created: now, updated: now };
        if let Err(e) = self.meta.insert_snapshot_for(ns, &rec, container) {
            let _ = self.sn.remove(id);
            return Err(e.into());
        }
        Ok(rec)
    }

    /// A container's writable snapshot on top of `parent`, stored in one
    /// transaction with the container's record and spec.
    pub fn prepare_for_container(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        container: (&ContainerRecord, &oci_spec::runtime::Spec),
    ) -> Result<(), SnapshotError> {
        self.create(ns, key, parent, SnapshotKind::Active, labels, Some(container)).map(|_| ())
    }

    /// Remove a container's record and its writable snapshot in one
    /// transaction, then the snapshot's storage.
    pub fn remove_with_container(&self, ns: &str, container_id: &str, key: &str) -> Result<ContainerRecord, SnapshotError> {
        let (rec, snap) = self.meta.delete_container_and_snapshot(ns, container_id, key)?;
        if let Some(snap) = snap {
            if let Ok(mut c) = self.usage_cache.lock() {
                c.remove(&snap.id);
            }
            self.sn.remove(snap.id)?;
        }
        Ok(rec)
    }

    /// A writable snapshot on top of `parent` (or empty).
    pub fn prepare(&self, ns: &str, key: &str, parent: &str, labels: BTreeMap<String, String>) -> Result<Vec<Mount>, SnapshotError> {
        let rec = self.create(ns, key, parent, SnapshotKind::Active, labels, None)?;
        self.mounts(ns, &rec.key)
    }

    /// A read-only view of the committed `parent`.
    pub fn view(&self, ns: &str, key: &str, parent: &str, labels: BTreeMap<String, String>) -> Result<Vec<Mount>, SnapshotError> {
        let rec = self.create(ns, key, parent, SnapshotKind::View, labels, None)?;
        self.mounts(ns, &rec.key)
    }

    /// Prepare an active snapshot and return its record (for unpacking into it).
    pub fn prepare_record(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<SnapshotRecord, SnapshotError> {
        self.create(ns, key, parent, SnapshotKind::Active, labels, None)
    }

    /// Commit active `key` as the committed snapshot `name`.
    pub fn commit(&self, ns: &str, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<(), SnapshotError> {
        validate_key(name)?;
        let active = self.meta.snapshot(ns, key)?;
        if active.kind != SnapshotKind::Active {
            return Err(SnapshotError::WrongKind { key: key.to_owned(), actual: active.kind.as_str(), expected: "active" });
        }
        let mut rec = active.clone();
        rec.key = name.to_owned();
        rec.kind = SnapshotKind::Committed;
        rec.labels = labels;
        rec.updated = now_nanos();
        self.meta.commit_snapshot(ns, key, &rec)?;
        Ok(())
    }

    /// Commit active `key` as `name`, re-parenting it on the committed
    /// `parent`. Used for overlay layers unpacked in parallel, which need no
    /// parent files while they are written.
    pub fn commit_with_parent(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        validate_key(name)?;
        let active = self.meta.snapshot(ns, key)?;
        if active.kind != SnapshotKind::Active {
            return Err(SnapshotError::WrongKind { key: key.to_owned(), actual: active.kind.as_str(), expected: "active" });
        }
        if !parent.is_empty() {
            let p = self.meta.snapshot(ns, parent)?;
            if p.kind != SnapshotKind::Committed {
                return Err(SnapshotError::WrongKind { key: parent.to_owned(), actual: p.kind.as_str(), expected: "committed" });
            }
        }
        let mut rec = active;
        rec.key = name.to_owned();
        rec.parent = parent.to_owned();
        rec.kind = SnapshotKind::Committed;
        rec.labels = labels;
        rec.updated = now_nanos();
        self.meta.commit_snapshot(ns, key, &rec)?;
        Ok(())
    }

    /// Remove a snapshot that has no children.
    pub fn remove(&self, ns: &str, key: &str) -> Result<(), SnapshotError> {
        let rec = self.meta.delete_snapshot(ns, key).map_err(|e| match e {
            MetadataError::HasChildren { name, children } => SnapshotError::HasChildren { key: name, children },
            e => e.into(),
        })?;
        if let Ok(mut c) = self.usage_cache.lock() {
            c.remove(&rec.id);
        }
        self.sn.remove(rec.id)
    }

    pub fn stat(&self, ns: &str, key: &str) -> Result<SnapshotRecord, SnapshotError> {
        Ok(self.meta.snapshot(ns, key)?)
    }

    pub fn list(&self, ns: &str) -> Result<Vec<SnapshotRecord>, SnapshotError> {
        Ok(self.meta.snapshots(ns)?)
    }

    pub fn update_labels(&self, ns: &str, key: &str, labels: BTreeMap<String, String>) -> Result<SnapshotRecord, SnapshotError> {
        let mut rec = self.meta.snapshot(ns, key)?;
        rec.labels = labels;
        rec.updated = now_nanos();
        self.meta.update_snapshot(ns, &rec)?;
        Ok(rec)
    }

    pub fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let rec = self.meta.snapshot(ns, key)?;
        let parents = self.chain(ns, &rec.parent)?;
        Ok(self.sn.mounts(rec.id, &parents, rec.kind))
    }

    /// The directories of the filesystem below a snapshot whose committed
    /// ancestors are `parents` (nearest first): what it was created from.
    fn base_dirs(&self, parents: &[u64]) -> Vec<PathBuf> {
        match parents.split_first() {
            Some((parent, above)) => self.sn.layer_dirs(*parent, above, SnapshotKind::Committed),
            None => Vec::new(),
        }
    }

    /// Apply `layer`, an uncompressed OCI layer tar, to the active snapshot
    /// `key`, and flush it to disk. Whiteouts take the snapshotter's form;
    /// a hardlink to a file of the snapshot's parents is satisfied from them.
    /// The reader is read to its end. On error the snapshot is half-written:
    /// remove it.
    pub fn apply_layer(&self, ns: &str, key: &str, layer: impl Read, max_entries: u64) -> Result<ApplyStats, ApplyLayerError> {
        let rec = self.meta.snapshot(ns, key).map_err(SnapshotError::from)?;
        if rec.kind != SnapshotKind::Active {
            return Err(SnapshotError::WrongKind { key: key.to_owned(), actual: rec.kind.as_str(), expected: "active" }.into());
        }
        let parents = self.chain(ns, &rec.parent)?;
        let dir = self.sn.fs_dir(rec.id);
        let opts =
            ApplyOptions { whiteouts: self.sn.whiteout_mode(), lowers: self.base_dirs(&parents), max_entries, ..ApplyOptions::default() };
        let stats = apply_tar(layer, &dir, &opts)?;
        sync_fs(&dir)?;
        tracing::debug!(namespace = %ns, key = %key, entries = stats.entries, bytes = stats.bytes, "layer applied");
        Ok(stats)
    }

    /// The contents of the regular file at `path` (inside the snapshot, `/`
    /// or not) as a container on snapshot `key` would see it: the topmost
    /// layer that has the path wins, a whiteout hides it, an opaque directory
    /// on the way hides what the layers below hold; symlinks are followed
    /// inside the snapshot, never out of it. None when it is absent or not a
    /// regular file; an I/O error when it is longer than `max_bytes`.
    pub fn read_file(&self, ns: &str, key: &str, path: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, SnapshotError> {
        let rec = self.meta.snapshot(ns, key)?;
        let parents = self.chain(ns, &rec.parent)?;
        let dirs = self.sn.layer_dirs(rec.id, &parents, rec.kind);
        Ok(Stack::open(&dirs, self.sn.whiteout_mode())?.read_file(path.as_bytes(), max_bytes)?)
    }

    /// What changed in snapshot `key` (active, or committed) since it was
    /// created from its parent, sorted by path (see [`crate::archive::diff`]).
    pub fn changes(&self, ns: &str, key: &str) -> Result<Vec<Change>, ChangesError> {
        let (dir, base) = self.diff_sides(ns, key)?;
        Ok(diff::changes(&dir, self.sn.whiteout_mode(), &base)?)
    }

    /// Writes the changes of snapshot `key` (see [`Snapshots::changes`]) to
    /// `out` as an uncompressed OCI layer tar; returns the number of entries.
    /// On error, `out` holds part of an archive: discard it.
    /// No mtime later than `mtime_clamp` (seconds) is written, when given.
    /// Empty regular files at the paths of `leave_out` are not written.
    pub fn write_changes(
        &self,
        ns: &str,
        key: &str,
        mtime_clamp: Option<i64>,
        leave_out: &[&str],
        out: impl Write,
    ) -> Result<u64, ChangesError> {
        let (dir, base) = self.diff_sides(ns, key)?;
        Ok(diff::write_layer(&dir, self.sn.whiteout_mode(), &base, mtime_clamp, leave_out, out)?)
    }

    /// Mount snapshot `key` (active: read-write) at the empty directory
    /// `at`, run `f` on it, and unmount it (lazily, should it be busy),
    /// whatever `f` returns. For the agent's own work on a filesystem as a
    /// container sees it (a build's COPY); containers are mounted by their
    /// runtime.
    pub fn with_mounted<T>(&self, ns: &str, key: &str, at: &Path, f: impl FnOnce(&Path) -> T) -> Result<T, SnapshotError> {
        use rustix::mount::{unmount, UnmountFlags};
        self.mount_at(ns, key, at)?;
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                if let Err(e) = unmount(self.0, UnmountFlags::empty()) {
                    tracing::debug!(path = %self.0.display(), error = %e, "unmounting lazily");
                    let _ = unmount(self.0, UnmountFlags::DETACH);
                }
            }
        }
        let _mounted = Unmount(at);
        Ok(f(at))
    }

    /// Mount snapshot `key` at the empty directory `at` (a view or committed
    /// snapshot read-only), for the agent's own use; the caller unmounts it.
    /// [`Snapshots::with_mounted`] is the scoped form.
    pub fn mount_at(&self, ns: &str, key: &str, at: &Path) -> Result<(), SnapshotError> {
        use rustix::mount::{mount, mount_bind_recursive, unmount, MountFlags, UnmountFlags};
        let mounts = self.mounts(ns, key)?;
        let [m] = mounts.as_slice() else {
            return Err(SnapshotError::Copy { path: at.to_owned(), message: format!("{} mounts for one snapshot", mounts.len()) });
        };
        let err = |e: rustix::io::Errno| SnapshotError::Io { path: at.to_owned(), source: e.into() };
        match m.kind.as_str() {
            "overlay" => {
                let data = std::ffi::CString::new(m.options.join(","))
                    .map_err(|_| SnapshotError::Copy { path: at.to_owned(), message: "NUL in mount options".into() })?;
                mount("overlay", at, "overlay", MountFlags::empty(), Some(data.as_c_str())).map_err(err)?;
            }
            _ => {
                mount_bind_recursive(m.source.as_str(), at).map_err(err)?;
                // A view (or a committed snapshot) shows its layer read-only, whoever mounts it.
                if m.options.iter().any(|o| o == "ro") {
                    if let Err(e) = rustix::mount::mount_remount(at, MountFlags::BIND | MountFlags::RDONLY, "") {
                        let _ = unmount(at, UnmountFlags::DETACH);
                        return Err(err(e));
                    }
                }
            }
        }
        Ok(())
    }

    /// Clamp the times of snapshot `key`'s own files to `clamp` (seconds), so
    /// that they match a layer written from it with that clamp.
    ///
    /// An overlay snapshot's own directory holds its changes only: all of it
    /// is clamped. A native snapshot is a whole copy: only what changed is
    /// (clamping the rest would make every inherited file a change).
    pub fn clamp_times(&self, ns: &str, key: &str, clamp: i64) -> Result<(), ChangesError> {
        let (dir, _) = self.diff_sides(ns, key)?;
        if self.sn.whiteout_mode() == WhiteoutMode::Overlay {
            return Ok(diff::clamp_times(&dir, clamp)?);
        }
        use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
        let root = rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| SnapshotError::Io { path: dir.clone(), source: e.into() })?;
        let t = Timespec { tv_sec: clamp, tv_nsec: 0 };
        let times = Timestamps { last_access: t, last_modification: t };
        for c in self.changes(ns, key)? {
            if c.kind == diff::ChangeKind::Deleted {
                continue;
            }
            let rel = c.path.trim_start_matches('/');
            let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            // The parent is reached without following any link the container made.
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let pfd = if parent.is_empty() {
                None
            } else {
                match rustix::fs::openat2(&root, parent, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), resolve) {
                    Ok(fd) => Some(fd),
                    Err(_) => continue,
                }
            };
            let at = pfd.as_ref().map_or(root.as_fd(), |f| f.as_fd());
            if let Ok(st) = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
                if st.st_mtime > clamp || st.st_atime > clamp {
                    rustix::fs::utimensat(at, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| SnapshotError::Io { path: dir.join(rel), source: e.into() })?;
                }
            }
        }
        Ok(())
    }

    /// The own directory of snapshot `key` and the directories below it.
    fn diff_sides(&self, ns: &str, key: &str) -> Result<(PathBuf, Vec<PathBuf>), SnapshotError> {
        let rec = self.meta.snapshot(ns, key)?;
        if rec.kind == SnapshotKind::View {
            return Err(SnapshotError::WrongKind { key: key.to_owned(), actual: rec.kind.as_str(), expected: "active or committed" });
        }
        let parents = self.chain(ns, &rec.parent)?;
        Ok((self.sn.fs_dir(rec.id), self.base_dirs(&parents)))
    }

    pub fn usage(&self, ns: &str, key: &str) -> Result<Usage, SnapshotError> {
        let rec = self.meta.snapshot(ns, key)?;
        let committed = rec.kind == SnapshotKind::Committed;
        if committed {
            if let Some(u) = self.usage_cache.lock().ok().and_then(|c| c.get(&rec.id).copied()) {
                return Ok(u);
            }
        }
        let dir = self.sn.fs_dir(rec.id);
        let usage = disk_usage(&dir).map_err(io_err(&dir))?;
        if committed {
            if let Ok(mut c) = self.usage_cache.lock() {
                c.insert(rec.id, usage);
            }
        }
        Ok(usage)
    }

    /// Bring storage and records back in line after a crash: drop the active
    /// snapshots of unpacks that never finished, and every directory that no
    /// record names. Returns how many directories were removed.
    pub fn recover(&self) -> Result<usize, SnapshotError> {
        for (ns, rec) in self.meta.all_snapshots()? {
            if rec.kind == SnapshotKind::Active && rec.labels.contains_key(LABEL_UNPACKING) {
                tracing::info!(namespace = %ns, key = %rec.key, "removing snapshot of an interrupted unpack");
                self.meta.delete_snapshot(&ns, &rec.key)?;
            }
        }
        let known: std::collections::HashSet<u64> = self.meta.all_snapshots()?.into_iter().map(|(_, r)| r.id).collect();
        let mut removed = 0;
        removed += self.sn.remove_partial()?;
        for id in self.sn.ids_on_disk()? {
            if !known.contains(&id) {
                tracing::info!(id, "removing snapshot directory that no record names");
                self.sn.remove(id)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Flush the filesystem holding `dir` (one syncfs per layer instead of an fsync per file).
fn sync_fs(dir: &Path) -> Result<(), SnapshotError> {
    use rustix::fs::{open, syncfs, Mode, OFlags};
    let err = |e: rustix::io::Errno| SnapshotError::Io { path: dir.to_owned(), source: e.into() };
    let fd = open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(err)?;
    syncfs(&fd).map_err(err)
}

/// Sum of allocated bytes and inode count under `dir`, each hardlinked inode counted once.
pub fn disk_usage(dir: &Path) -> io::Result<Usage> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let meta = fs::symlink_metadata(&d)?;
        if seen.insert((meta.dev(), meta.ino())) {
            usage.size += meta.blocks() * 512;
            usage.inodes += 1;
        }
        if !meta.is_dir() {
            continue;
        }
        for e in fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert((m.dev(), m.ino())) {
                usage.size += m.blocks() * 512;
                usage.inodes += 1;
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::user::{resolve_user, UserError};

    const NS: &str = "default";
    const SNAPSHOTTERS: [&str; 2] = ["overlayfs", "native"];
    const LOWER_PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const LOWER_GROUP: &[u8] = b"root:x:0:\nstaff:x:50:alice\n";
    const TOP_PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n";

    struct Fixture {
        tmp: tempfile::TempDir,
        snaps: Snapshots,
    }

    /// Real snapshots of snapshotter `name` under a temporary root.
    fn fixture(name: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let meta = Arc::new(Metadata::open(&tmp.path().join("metadata.redb"), name).unwrap());
        let base = tmp.path().join("snapshots").join(name);
        let sn: Box<dyn Snapshotter> =
            if name == "native" { Box::new(native::Native::new(base).unwrap()) } else { Box::new(overlay::Overlay::new(base).unwrap()) };
        Fixture { tmp, snaps: Snapshots::new(meta, sn) }
    }

    /// An uncompressed layer: names ending in `/` are directories, the others files.
    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(if name.ends_with('/') { tar::EntryType::Directory } else { tar::EntryType::Regular });
            h.set_mode(if name.ends_with('/') { 0o755 } else { 0o644 });
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Unpacks `layers` as an image unpack does, whatever the snapshotter; returns the top key.
    fn unpack(snaps: &Snapshots, layers: &[Vec<u8>]) -> String {
        let mut parent = String::new();
        for (i, layer) in layers.iter().enumerate() {
            let (key, name) = (format!("unpack-{i}"), format!("layer-{i}"));
            let on = if snaps.applies_layers_detached() { "" } else { parent.as_str() };
            snaps.prepare_record(NS, &key, on, BTreeMap::new()).unwrap();
            snaps.apply_layer(NS, &key, &layer[..], u64::MAX).unwrap();
            snaps.commit_with_parent(NS, &name, &key, &parent, BTreeMap::new()).unwrap();
            parent = name;
        }
        parent
    }

    fn read(snaps: &Snapshots, key: &str, path: &str) -> Option<String> {
        snaps.read_file(NS, key, path, 1 << 20).unwrap().map(|d| String::from_utf8(d).unwrap())
    }

    /// `--user` resolved against the image's files as the snapshotter shows them.
    fn user(snaps: &Snapshots, key: &str, spec: &str) -> Result<u32, UserError> {
        let (passwd, group) = (read(snaps, key, "/etc/passwd"), read(snaps, key, "/etc/group"));
        resolve_user(spec, passwd.as_deref(), group.as_deref()).map(|u| u.uid)
    }

    fn base_layer() -> Vec<u8> {
        layer(&[("etc/", b""), ("etc/passwd", LOWER_PASSWD), ("etc/group", LOWER_GROUP), ("etc/hosts", b"127.0.0.1 localhost\n")])
    }

    #[test]
    fn a_user_of_a_lower_layer_is_not_found_when_the_top_layer_makes_etc_opaque() {
        for name in SNAPSHOTTERS {
            let fx = fixture(name);
            let top = layer(&[("etc/", b""), ("etc/passwd", TOP_PASSWD), ("etc/.wh..wh..opq", b"")]);
            let image = unpack(&fx.snaps, &[base_layer(), top]);
            assert_eq!(read(&fx.snaps, &image, "/etc/passwd").as_deref().map(str::as_bytes), Some(TOP_PASSWD), "{name}");
            // The lower /etc/group is hidden too, though the top layer has none.
            assert_eq!(read(&fx.snaps, &image, "/etc/group"), None, "{name}");
            assert!(matches!(user(&fx.snaps, &image, "alice"), Err(UserError::UserNotFound(_))), "{name}");
            assert!(matches!(user(&fx.snaps, &image, "bob:staff"), Err(UserError::NoGroupFile(_))), "{name}");
            assert_eq!(user(&fx.snaps, &image, "bob").unwrap(), 1001, "{name}");

            // Opaque, with no passwd of its own: none at all.
            let top = layer(&[("etc/", b""), ("etc/.wh..wh..opq", b""), ("etc/hostname", b"box\n")]);
            let fx = fixture(name);
            let image = unpack(&fx.snaps, &[base_layer(), top]);
            assert_eq!(read(&fx.snaps, &image, "/etc/passwd"), None, "{name}");
            assert_eq!(read(&fx.snaps, &image, "/etc/hostname").as_deref(), Some("box\n"), "{name}");
            assert!(matches!(user(&fx.snaps, &image, "alice"), Err(UserError::NoPasswd(_))), "{name}");
        }
    }

    #[test]
    fn a_user_is_not_found_when_the_top_layer_whites_out_etc_passwd() {
        for name in SNAPSHOTTERS {
            let fx = fixture(name);
            let image = unpack(&fx.snaps, &[base_layer(), layer(&[("etc/.wh.passwd", b"")])]);
            assert_eq!(read(&fx.snaps, &image, "/etc/passwd"), None, "{name}");
            assert_eq!(read(&fx.snaps, &image, "/etc/group").as_deref().map(str::as_bytes), Some(LOWER_GROUP), "{name}");
            assert!(matches!(user(&fx.snaps, &image, "alice"), Err(UserError::NoPasswd(_))), "{name}");
            // The layer below still has it.
            assert!(read(&fx.snaps, "layer-0", "/etc/passwd").is_some_and(|p| p.contains("alice")), "{name}");
        }
    }

    /// A mount of a snapshot, taken down (lazily) on drop.
    struct Mounted(PathBuf);

    impl Mounted {
        fn new(mounts: &[Mount], target: &Path) -> Self {
            use rustix::mount::{mount, mount_bind, MountFlags};
            fs::create_dir_all(target).unwrap();
            let [m] = mounts else { panic!("one mount expected: {mounts:?}") };
            match m.kind.as_str() {
                "bind" => mount_bind(m.source.as_str(), target).unwrap(),
                "overlay" => {
                    let data = std::ffi::CString::new(m.options.join(",")).unwrap();
                    mount("overlay", target, "overlay", MountFlags::empty(), Some(data.as_c_str()))
                        .expect("mounting overlayfs (tests run as root on a kernel with overlayfs)");
                }
                other => panic!("mount kind {other}"),
            }
            Mounted(target.to_owned())
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }

    #[test]
    fn the_changes_of_an_active_snapshot_are_listed_and_written_as_a_layer_whatever_the_snapshotter() {
        for name in SNAPSHOTTERS {
            let fx = fixture(name);
            let image = unpack(&fx.snaps, &[base_layer()]);
            let mounts = fx.snaps.prepare(NS, "ctr", &image, BTreeMap::new()).unwrap();
            let root = fx.tmp.path().join("rootfs");
            {
                // What a container does through its mounts.
                let _m = Mounted::new(&mounts, &root);
                fs::write(root.join("etc/motd"), b"hello\n").unwrap();
                fs::write(root.join("etc/passwd"), [LOWER_PASSWD, b"carol:x:1002:1002::/:/bin/sh\n"].concat()).unwrap();
                fs::remove_file(root.join("etc/hosts")).unwrap();
            }
            let changes = fx.snaps.changes(NS, "ctr").unwrap();
            let shown: Vec<String> = changes.iter().map(|c| format!("{} {} {}", c.kind.letter(), c.path, c.is_dir)).collect();
            assert_eq!(shown, ["C /etc true", "D /etc/hosts false", "A /etc/motd false", "C /etc/passwd false"], "{name}");

            let mut tar = Vec::new();
            fx.snaps.write_changes(NS, "ctr", None, &[], &mut tar).unwrap();
            // Applied on the image, the layer gives what the container saw.
            fx.snaps.prepare_record(NS, "commit", &image, BTreeMap::new()).unwrap();
            fx.snaps.apply_layer(NS, "commit", &tar[..], u64::MAX).unwrap();
            fx.snaps.commit(NS, "committed", "commit", BTreeMap::new()).unwrap();
            assert_eq!(read(&fx.snaps, "committed", "/etc/motd").as_deref(), Some("hello\n"), "{name}");
            assert_eq!(read(&fx.snaps, "committed", "/etc/hosts"), None, "{name}");
            assert!(read(&fx.snaps, "committed", "etc/passwd").is_some_and(|p| p.contains("carol")), "{name}");
            assert_eq!(fx.snaps.changes(NS, "committed").unwrap(), changes, "{name}");
            // The image itself is untouched.
            assert!(read(&fx.snaps, &image, "/etc/hosts").is_some(), "{name}");
        }
    }

    #[test]
    fn layers_are_applied_only_to_active_snapshots() {
        for name in SNAPSHOTTERS {
            let fx = fixture(name);
            let image = unpack(&fx.snaps, &[base_layer()]);
            let r = fx.snaps.apply_layer(NS, &image, &base_layer()[..], u64::MAX);
            assert!(matches!(r, Err(ApplyLayerError::Snapshot(SnapshotError::WrongKind { .. }))), "{name}: {r:?}");
            fx.snaps.view(NS, "v", &image, BTreeMap::new()).unwrap();
            assert!(matches!(fx.snaps.changes(NS, "v"), Err(ChangesError::Snapshot(SnapshotError::WrongKind { .. }))), "{name}");
            // A view reads as its parent.
            assert!(read(&fx.snaps, "v", "/etc/passwd").is_some_and(|p| p.contains("alice")), "{name}");
        }
    }
}
