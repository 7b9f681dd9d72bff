//! What changed in a snapshot directory against the filesystem below it: docker's `diff`
//! listing, and the OCI layer (an uncompressed tar changeset) that `commit` stores.
//!
//! The directory's form ([`WhiteoutMode`]) decides how:
//!
//! - [`WhiteoutMode::Overlay`]: the directory (an overlayfs upper dir) holds exactly what
//!   changed: whiteout devices (char device 0:0) for deletions, `trusted.overlay.opaque=y` on
//!   directories whose lower contents were removed. The layers below, read as one [`Stack`], only
//!   decide between Added and Modified.
//! - [`WhiteoutMode::Native`]: the directory is a full copy; it is compared with the full copy
//!   it was made from, entry by entry (docker's "naive diff").
//!
//! The container may still be running while we read its tree, so the tree is only read through
//! the [`walk`](super::walk) (no path lookups, no symlink followed, every inode checked to be the
//! one looked up, [`DiffError::Changed`] otherwise), at most [`MAX_DEPTH`] levels deep. The tar
//! encoding is [`super::write`]'s.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::stack::{Found, Stack, StackError};
use super::walk::{self, file_type, Node, Side, Visitor, WalkError, WalkOptions};
use super::whiteout::{self, WhiteoutMode, OVERLAY_REDIRECT};
use super::write::{layer_xattrs, LayerWriter, Xattr};
use super::xattr;

/// Most path components an entry may have: deeper trees are refused, not walked.
pub const MAX_DEPTH: usize = 1000;

/// How a path differs from the image: docker's `A`, `C` and `D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    /// Docker's letter for the change: `A`, `C` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path of a container's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute path in the container, e.g. `/etc/hosts` (lossy UTF-8).
    pub path: String,
    /// Whether the path is a directory (for a deletion: was one).
    pub is_dir: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Reading the container's or the image's tree failed.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the layer archive failed (`path` is the entry being written).
    #[error("writing {path} into the layer archive: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is nested more than {max} levels deep")]
    TooDeep { path: PathBuf, max: usize },
    /// An entry was replaced or removed while it was read (the container is running).
    #[error("{path} changed while it was being read")]
    Changed { path: PathBuf },
    /// Something a layer cannot represent faithfully.
    #[error("{path} cannot be stored in a layer: {reason}")]
    Unsupported { path: PathBuf, reason: String },
}

impl From<StackError> for DiffError {
    fn from(e: StackError) -> Self {
        match e {
            StackError::Io { path, source } => DiffError::Io { path, source },
            StackError::TooLarge { path, max } => {
                DiffError::Io { path, source: io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than {max} bytes")) }
            }
        }
    }
}

/// Changes of snapshot directory `dir`, of form `mode`, against `base`: the directories below
/// it, topmost first (for [`WhiteoutMode::Native`], the one full copy it was made from, if any).
/// See [`overlay_changes`] and [`native_changes`].
pub fn changes(dir: &Path, mode: WhiteoutMode, base: &[PathBuf]) -> Result<Vec<Change>, DiffError> {
    match mode {
        WhiteoutMode::Overlay => overlay_changes(dir, base),
        WhiteoutMode::Native => native_changes(dir, base.first().map(PathBuf::as_path)),
    }
}

/// Writes the changes of `dir` (see [`changes`]) to `out` as an uncompressed layer tar; returns
/// the number of entries written. See [`write_overlay_layer`] and [`write_native_layer`].
/// Empty regular files at the paths of `leave_out` (`/etc/hosts`) are not written.
pub fn write_layer<W: Write>(
    dir: &Path,
    mode: WhiteoutMode,
    base: &[PathBuf],
    mtime_clamp: Option<i64>,
    leave_out: &[&str],
    out: W,
) -> Result<u64, DiffError> {
    match mode {
        WhiteoutMode::Overlay => write_overlay_layer(dir, mtime_clamp, leave_out, out),
        WhiteoutMode::Native => write_native_layer(dir, base.first().map(PathBuf::as_path), mtime_clamp, leave_out, out),
    }
}

/// Changes of an overlay container: `upper` is the container snapshot's upper dir, `lowers` the
/// image's layer dirs, nearest first.
///
/// A path exists in the image if the nearest lower that has it holds it, and no whiteout, opaque
/// directory or non-directory in a nearer lower hides it (see [`Stack`]). Upper entries are
/// reported as: a whiteout → Deleted (if the image has the path; a whiteout of nothing changes
/// nothing); any other entry → Modified if the image has the path, else Added. Directories are
/// reported like files, so the parents of changes show as Modified (as docker does); an opaque
/// directory is reported as the directory alone (Modified), plus its upper children. Sockets are
/// skipped. Sorted by path.
pub fn overlay_changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, DiffError> {
    let image = Stack::open(lowers, WhiteoutMode::Overlay)?;
    let root = image.root().to_vec();
    let mut v = OverlayList { upper, image, stack: vec![root], changes: Vec::new() };
    walk::walk(open_tree(upper)?, None, walk_options(), &mut v)?;
    Ok(sorted(v.changes))
}

/// Changes of a native container: `dir` is its full copy, `parent` the image's top (full)
/// snapshot dir, or `None` for an empty image.
///
/// Entries are compared by type, mode, owner, device number and, for non-directories, size and
/// mtime (seconds and nanoseconds), and symlink target. Directory size and mtime are not
/// compared (they change as children come and go, which is reported anyway). A directory
/// holding a change is reported as Modified; a deleted directory is reported once, not its
/// children. Sockets are skipped. Sorted by path.
pub fn native_changes(dir: &Path, parent: Option<&Path>) -> Result<Vec<Change>, DiffError> {
    let mut changes = Vec::new();
    native_walk(dir, parent, &mut changes)?;
    Ok(sorted(changes))
}

/// Writes the layer of an overlay container's `upper` dir to `out` as an uncompressed tar and
/// returns the number of entries written (PAX extension headers not counted).
///
/// Every upper entry is written, in walk order (sorted names, parents before children), named
/// relative to the layer root (`etc/hosts`, `etc/`): whiteout devices as empty `.wh.NAME`
/// files, opaque directories as the directory followed by `DIR/.wh..wh..opq`; files with their
/// contents, symlinks, devices and fifos as they are; further names of one inode as hardlinks
/// to the first. Mode, owner and mtime (whole seconds) are kept; of the xattrs, `user.*` and
/// `security.capability` are kept (never overlayfs' own). Sockets are skipped.
///
/// On error, `out` holds part of an archive; discard it.
pub fn write_overlay_layer<W: Write>(upper: &Path, mtime_clamp: Option<i64>, leave_out: &[&str], out: W) -> Result<u64, DiffError> {
    let mut w = LayerWriter::new(out, upper).clamp_mtimes(mtime_clamp).leave_out_empty_files(leave_out);
    walk::walk(open_tree(upper)?, None, walk_options(), &mut OverlayTar { upper, w: &mut w })?;
    w.finish()
}

/// Writes the layer of a native container (see [`native_changes`]) to `out` as an
/// uncompressed tar and returns the number of entries written: Added and Modified paths with
/// their content from `dir` (as [`write_overlay_layer`] writes entries), an empty `.wh.NAME`
/// file for each Deleted one.
///
/// On error, `out` holds part of an archive; discard it.
pub fn write_native_layer<W: Write>(
    dir: &Path,
    parent: Option<&Path>,
    mtime_clamp: Option<i64>,
    leave_out: &[&str],
    out: W,
) -> Result<u64, DiffError> {
    let mut w = LayerWriter::new(out, dir).clamp_mtimes(mtime_clamp).leave_out_empty_files(leave_out);
    native_walk(dir, parent, &mut w)?;
    w.finish()
}

fn native_walk<O: Out>(dir: &Path, parent: Option<&Path>, out: &mut O) -> Result<(), DiffError> {
    let new = open_tree(dir)?;
    let root_st = rustix::fs::fstat(&new).map_err(|e| io_err(dir.to_owned(), e))?;
    let old = parent.map(open_tree).transpose()?;
    let mut v = NativeDiff { dir, parent, out, dirs: vec![DirState { rel: Vec::new(), st: root_st, xattrs: Vec::new() }], reported: 1 };
    walk::walk(new, old, walk_options(), &mut v)
}

/// Set every time in the tree at `dir` later than `clamp` (seconds) to
/// `clamp`, links and whiteouts included, never following a link: the
/// files of a snapshot made to match a layer written with
/// [`write_layer`]'s clamp (SOURCE_DATE_EPOCH).
pub fn clamp_times(dir: &Path, clamp: i64) -> Result<(), DiffError> {
    struct Clamp<'a> {
        root: &'a Path,
        clamp: i64,
    }
    impl Visitor for Clamp<'_> {
        type Error = DiffError;
        fn walk_error(&self, e: WalkError) -> DiffError {
            walk_err(self.root, e)
        }
        fn node(&mut self, node: &Node<'_>) -> Result<bool, DiffError> {
            let Some(side) = &node.new else { return Ok(false) };
            if side.st.st_mtime > self.clamp || side.st.st_atime > self.clamp {
                let t = rustix::fs::Timespec { tv_sec: self.clamp, tv_nsec: 0 };
                let times = rustix::fs::Timestamps { last_access: t, last_modification: t };
                rustix::fs::utimensat(side.parent, node.name, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| io_err(join(self.root, node.rel), e))?;
            }
            Ok(file_type(side.st) == FileType::Directory)
        }
        fn leave(&mut self, _rel: &[u8], _name: &[u8], _parent: BorrowedFd<'_>) -> Result<(), DiffError> {
            Ok(())
        }
    }
    walk::walk(open_tree(dir)?, None, walk_options(), &mut Clamp { root: dir, clamp })
}

fn walk_options() -> WalkOptions {
    WalkOptions { max_depth: Some(MAX_DEPTH), skip_sockets: true }
}

/// Opens the root of a tree. Its path comes from the caller and is trusted (it may be reached
/// through symlinks).
fn open_tree(root: &Path) -> Result<OwnedFd, DiffError> {
    rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| io_err(root.to_owned(), e))
}

/// A walk's failure in the tree at `root`.
pub(crate) fn walk_err(root: &Path, e: WalkError) -> DiffError {
    match e {
        WalkError::Io { rel, errno } => io_err(join(root, &rel), errno),
        WalkError::Changed { rel } => DiffError::Changed { path: join(root, &rel) },
        WalkError::TooDeep { rel, max } => DiffError::TooDeep { path: join(root, &rel), max },
    }
}

fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

pub(crate) fn io_err(path: PathBuf, e: Errno) -> DiffError {
    DiffError::Io { path, source: e.into() }
}

/// `root/rel`.
pub(crate) fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn change(kind: ChangeKind, rel: &[u8], is_dir: bool) -> Change {
    Change { kind, path: format!("/{}", String::from_utf8_lossy(rel)), is_dir }
}

// ---------------------------------------------------------------------------------------------
// Overlay

/// [`overlay_changes`].
struct OverlayList<'u> {
    upper: &'u Path,
    /// The image: the lowers, stacked.
    image: Stack,
    /// For each directory being walked: the lowers whose copy of it shows in the image.
    stack: Vec<Vec<usize>>,
    changes: Vec<Change>,
}

impl Visitor for OverlayList<'_> {
    type Error = DiffError;

    fn walk_error(&self, e: WalkError) -> DiffError {
        walk_err(self.upper, e)
    }

    fn node(&mut self, node: &Node<'_>) -> Result<bool, DiffError> {
        let Some(side) = &node.new else { return Ok(false) };
        let shown = self.stack.last().map(Vec::as_slice).unwrap_or_default();
        let found = self.image.lookup(shown, node.parent_rel(), node.name)?;
        let in_image = !matches!(found, Found::Absent);
        if let Some(dir) = side.dir {
            check_no_redirect(dir, &join(self.upper, node.rel))?;
        }
        if whiteout::is_overlay_whiteout(side.st) {
            if in_image {
                self.changes.push(change(ChangeKind::Deleted, node.rel, matches!(found, Found::Dir { .. })));
            }
        } else {
            let kind = if in_image { ChangeKind::Modified } else { ChangeKind::Added };
            self.changes.push(change(kind, node.rel, side.dir.is_some()));
        }
        if side.dir.is_some() {
            self.stack.push(match found {
                Found::Dir { layers, .. } => layers,
                _ => Vec::new(),
            });
        }
        Ok(true)
    }

    fn leave(&mut self, _: &[u8], _: &[u8], _: BorrowedFd<'_>) -> Result<(), DiffError> {
        self.stack.pop();
        Ok(())
    }
}

/// A directory renamed with overlayfs' `redirect_dir` holds only part of its contents in the
/// upper dir; we cannot diff it.
fn check_no_redirect(dir: BorrowedFd<'_>, path: &Path) -> Result<(), DiffError> {
    if xattr::has(dir, OVERLAY_REDIRECT.as_bytes()).map_err(|e| io_err(path.to_owned(), e))? {
        return Err(DiffError::Unsupported { path: path.to_owned(), reason: "overlayfs redirected directory (redirect_dir)".into() });
    }
    Ok(())
}

/// [`write_overlay_layer`].
struct OverlayTar<'w, W: Write> {
    upper: &'w Path,
    w: &'w mut LayerWriter<W>,
}

impl<W: Write> Visitor for OverlayTar<'_, W> {
    type Error = DiffError;

    fn walk_error(&self, e: WalkError) -> DiffError {
        walk_err(self.upper, e)
    }

    fn node(&mut self, node: &Node<'_>) -> Result<bool, DiffError> {
        let Some(side) = &node.new else { return Ok(false) };
        if whiteout::is_overlay_whiteout(side.st) {
            self.w.whiteout(node.rel, Some(side.st))?;
            return Ok(false);
        }
        let Some(dir) = side.dir else {
            self.w.node(node.rel, node.name, side.st, side.parent)?;
            return Ok(false);
        };
        let path = join(self.upper, node.rel);
        check_no_redirect(dir, &path)?;
        let err = |e| io_err(path.clone(), e);
        let opaque = whiteout::is_overlay_opaque(dir).map_err(err)?;
        let xattrs = layer_xattrs(dir).map_err(err)?;
        self.w.dir(node.rel, side.st, &xattrs)?;
        if opaque {
            self.w.opaque(node.rel, side.st)?;
        }
        Ok(true)
    }

    fn leave(&mut self, _: &[u8], _: &[u8], _: BorrowedFd<'_>) -> Result<(), DiffError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Native

/// Where [`NativeDiff`] reports changes: a listing or a layer.
trait Out {
    /// Whether [`dir`](Out::dir) wants the directory's xattrs.
    const XATTRS: bool;
    fn dir(&mut self, kind: ChangeKind, rel: &[u8], st: &Stat, xattrs: &[Xattr]) -> Result<(), DiffError>;
    fn node(&mut self, kind: ChangeKind, rel: &[u8], name: &[u8], st: &Stat, parent: BorrowedFd<'_>) -> Result<(), DiffError>;
    /// `rel` (a directory if `was_dir`) was deleted from directory `dir` (as it is now).
    fn deleted(&mut self, rel: &[u8], was_dir: bool, dir: &Stat) -> Result<(), DiffError>;
}

impl Out for Vec<Change> {
    const XATTRS: bool = false;

    fn dir(&mut self, kind: ChangeKind, rel: &[u8], _: &Stat, _: &[Xattr]) -> Result<(), DiffError> {
        self.push(change(kind, rel, true));
        Ok(())
    }

    fn node(&mut self, kind: ChangeKind, rel: &[u8], _: &[u8], _: &Stat, _: BorrowedFd<'_>) -> Result<(), DiffError> {
        self.push(change(kind, rel, false));
        Ok(())
    }

    fn deleted(&mut self, rel: &[u8], was_dir: bool, _: &Stat) -> Result<(), DiffError> {
        self.push(change(ChangeKind::Deleted, rel, was_dir));
        Ok(())
    }
}

impl<W: Write> Out for LayerWriter<W> {
    const XATTRS: bool = true;

    fn dir(&mut self, _: ChangeKind, rel: &[u8], st: &Stat, xattrs: &[Xattr]) -> Result<(), DiffError> {
        LayerWriter::dir(self, rel, st, xattrs)
    }

    fn node(&mut self, _: ChangeKind, rel: &[u8], name: &[u8], st: &Stat, parent: BorrowedFd<'_>) -> Result<(), DiffError> {
        LayerWriter::node(self, rel, name, st, parent)
    }

    fn deleted(&mut self, rel: &[u8], _: bool, dir: &Stat) -> Result<(), DiffError> {
        // Deletions carry no owner; their time is the directory's (that of the deletion, or later).
        let mut st = *dir;
        st.st_uid = 0;
        st.st_gid = 0;
        self.whiteout(rel, Some(&st))
    }
}

/// A directory being walked by [`NativeDiff`], kept to report it as Modified (before its
/// first changed child) if something inside it changed.
struct DirState {
    rel: Vec<u8>,
    st: Stat,
    xattrs: Vec<Xattr>,
}

/// The naive diff of a full copy against its parent, for [`native_changes`] and [`write_native_layer`].
struct NativeDiff<'o, O: Out> {
    /// The copy and its parent (for messages).
    dir: &'o Path,
    parent: Option<&'o Path>,
    out: &'o mut O,
    /// The directories being walked, root first.
    dirs: Vec<DirState>,
    /// How many of `dirs` (always a prefix) were reported already; the root never is.
    reported: usize,
}

impl<O: Out> NativeDiff<'_, O> {
    /// Reports the directories above the next change that were not reported yet.
    fn report_parents(&mut self) -> Result<(), DiffError> {
        for d in &mut self.dirs[self.reported..] {
            self.out.dir(ChangeKind::Modified, &d.rel, &d.st, &d.xattrs)?;
            d.xattrs = Vec::new();
        }
        self.reported = self.dirs.len();
        Ok(())
    }

    /// Whether `new` differs from `old` (see [`native_changes`]).
    fn differs(&self, node: &Node<'_>, new: &Side<'_>, old: &Side<'_>) -> Result<bool, DiffError> {
        let (a, b) = (new.st, old.st);
        if a.st_mode != b.st_mode || a.st_uid != b.st_uid || a.st_gid != b.st_gid || a.st_rdev != b.st_rdev {
            return Ok(true);
        }
        match file_type(a) {
            FileType::Directory => Ok(false),
            ft => {
                if a.st_size != b.st_size || a.st_mtime != b.st_mtime || a.st_mtime_nsec != b.st_mtime_nsec {
                    return Ok(true);
                }
                if ft != FileType::Symlink {
                    return Ok(false);
                }
                let target = |side: &Side<'_>, root: &Path| {
                    rustix::fs::readlinkat(side.parent, node.name, Vec::new()).map_err(|e| io_err(join(root, node.rel), e))
                };
                Ok(target(new, self.dir)? != target(old, self.parent.unwrap_or(self.dir))?)
            }
        }
    }
}

impl<O: Out> Visitor for NativeDiff<'_, O> {
    type Error = DiffError;

    fn walk_error(&self, e: WalkError) -> DiffError {
        walk_err(self.dir, e)
    }

    fn node(&mut self, node: &Node<'_>) -> Result<bool, DiffError> {
        let new = match (&node.new, &node.old) {
            (None, None) => return Ok(false),
            (None, Some(old)) => {
                self.report_parents()?;
                let Some(parent) = self.dirs.last() else { return Ok(false) };
                self.out.deleted(node.rel, file_type(old.st) == FileType::Directory, &parent.st)?;
                return Ok(false);
            }
            (Some(new), _) => new,
        };
        let kind = match &node.old {
            None => Some(ChangeKind::Added),
            Some(old) => self.differs(node, new, old)?.then_some(ChangeKind::Modified),
        };
        let xattrs = match new.dir {
            Some(fd) if O::XATTRS => layer_xattrs(fd).map_err(|e| io_err(join(self.dir, node.rel), e))?,
            _ => Vec::new(),
        };
        if let Some(kind) = kind {
            self.report_parents()?;
            match new.dir {
                Some(_) => self.out.dir(kind, node.rel, new.st, &xattrs)?,
                None => self.out.node(kind, node.rel, node.name, new.st, new.parent)?,
            }
        }
        if new.dir.is_some() {
            let xattrs = if kind.is_some() { Vec::new() } else { xattrs };
            self.dirs.push(DirState { rel: node.rel.to_vec(), st: *new.st, xattrs });
            if kind.is_some() {
                self.reported += 1;
            }
        }
        Ok(true)
    }

    fn leave(&mut self, _: &[u8], _: &[u8], _: BorrowedFd<'_>) -> Result<(), DiffError> {
        self.dirs.pop();
        self.reported = self.reported.min(self.dirs.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{apply_tar, ApplyOptions, WhiteoutMode};
    use crate::walk::WALK_FDS;
    use crate::whiteout::OVERLAY_OPAQUE;
    use rustix::fs::AtFlags;
    use rustix::fs::{Timespec, Timestamps, XattrFlags, CWD};
    use std::collections::BTreeMap;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::process::Command;
    use tar::EntryType;

    fn write(path: &Path, data: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn set_mtime(path: &Path, tv_sec: i64, tv_nsec: i64) {
        let t = Timespec { tv_sec, tv_nsec };
        let times = Timestamps { last_access: t, last_modification: t };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    fn mknod(path: &Path, ft: FileType, mode: u32, major: u32, minor: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        rustix::fs::mknodat(CWD, path, ft, Mode::from_raw_mode(mode), rustix::fs::makedev(major, minor)).unwrap();
        chmod(path, mode);
    }

    fn whiteout(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        rustix::fs::mknodat(CWD, path, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0)).unwrap();
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
    }

    fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        rustix::fs::lgetxattr(path, name, &mut buf[..]).ok().map(|n| buf[..n].to_vec())
    }

    fn socket(path: &Path) {
        // Dropping the listener leaves the socket file in place.
        drop(std::os::unix::net::UnixListener::bind(path).unwrap());
    }

    fn cp_a(from: &Path, to: &Path) {
        let st = Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp (coreutils) is needed");
        assert!(st.success(), "cp -a {from:?} {to:?}");
    }

    fn shown(changes: &[Change]) -> Vec<String> {
        changes.iter().map(|c| format!("{} {}", c.kind.letter(), c.path)).collect()
    }

    /// Type, mode, owner, and (for files) link count, mtime seconds and contents of every
    /// entry under `root`; sockets left out.
    fn describe(root: &Path) -> BTreeMap<String, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            let mut paths: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            paths.sort();
            for p in paths {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let md = fs::symlink_metadata(&p).unwrap();
                let ft = md.file_type();
                let owner = format!("{:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid());
                let desc = if ft.is_symlink() {
                    format!("link -> {}", fs::read_link(&p).unwrap().display())
                } else if ft.is_dir() {
                    walk(root, &p, out);
                    let opaque = get_xattr(&p, OVERLAY_OPAQUE).is_some();
                    format!("dir {owner} opaque={opaque}")
                } else if ft.is_file() {
                    let data = String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned();
                    format!("file {owner} nlink={} mtime={} {data:?}", md.nlink(), md.mtime())
                } else if ft.is_char_device() && md.rdev() == 0 {
                    "whiteout".to_owned()
                } else if ft.is_char_device() || ft.is_block_device() {
                    format!("dev {owner} {}", md.rdev())
                } else if ft.is_fifo() {
                    format!("fifo {owner}")
                } else {
                    continue;
                };
                out.insert(rel, desc);
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    #[derive(Debug)]
    struct TarEntry {
        name: String,
        kind: EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        link: Option<String>,
        data: Vec<u8>,
        dev: (u32, u32),
        pax_keys: Vec<String>,
        xattrs: Vec<(String, Vec<u8>)>,
    }

    fn read_tar(bytes: &[u8]) -> Vec<TarEntry> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let (mut pax_keys, mut xattrs) = (Vec::new(), Vec::new());
            if let Some(exts) = entry.pax_extensions().unwrap() {
                for ext in exts {
                    let ext = ext.unwrap();
                    let key = ext.key().unwrap().to_owned();
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                    }
                    pax_keys.push(key);
                }
            }
            let h = entry.header().clone();
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let link = entry.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push(TarEntry {
                name,
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link,
                data,
                dev: (h.device_major().unwrap().unwrap_or(0), h.device_minor().unwrap().unwrap_or(0)),
                pax_keys,
                xattrs,
            });
        }
        out
    }

    fn names(entries: &[TarEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    fn entry<'e>(entries: &'e [TarEntry], name: &str) -> &'e TarEntry {
        entries.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no entry {name:?} in {:?}", names(entries)))
    }

    fn apply(bytes: &[u8], root: &Path, whiteouts: WhiteoutMode) -> u64 {
        let opts = ApplyOptions { whiteouts, ..ApplyOptions::default() };
        apply_tar(bytes, root, &opts).unwrap().entries
    }

    /// Two lowers and an upper exercising every kind of overlay change; also a directory
    /// outside them that a symlink in the upper points to.
    struct OverlayFixture {
        _tmp: tempfile::TempDir,
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        outside: PathBuf,
    }

    fn overlay_fixture() -> OverlayFixture {
        let tmp = tempfile::tempdir().unwrap();
        let (l1, l2, upper, outside) = (tmp.path().join("l1"), tmp.path().join("l2"), tmp.path().join("upper"), tmp.path().join("outside"));
        // Deepest lower.
        write(&l2.join("etc/passwd"), b"root");
        write(&l2.join("etc/hosts"), b"h2");
        write(&l2.join("usr/bin/tool"), b"t");
        write(&l2.join("var/log/old.log"), b"old");
        write(&l2.join("opt/data/a"), b"a");
        write(&l2.join("opt/data/b"), b"b");
        write(&l2.join("srv/file"), b"f");
        // Nearer lower: hides var/log/old.log (whiteout), opt/data's old contents (opaque)
        // and the srv directory (a file in its place).
        write(&l1.join("etc/hosts"), b"h1");
        whiteout(&l1.join("var/log/old.log"));
        write(&l1.join("opt/data/c"), b"c");
        set_xattr(&l1.join("opt/data"), OVERLAY_OPAQUE, b"y");
        write(&l1.join("srv"), b"not a dir");
        // The container's changes.
        write(&upper.join("etc/passwd"), b"root2");
        write(&upper.join("app/bin/run"), b"run");
        write(&upper.join("app/conf"), b"conf");
        whiteout(&upper.join("usr/bin/tool"));
        write(&upper.join("var/log/old.log"), b"new log");
        write(&upper.join("opt/data/c"), b"c2");
        write(&upper.join("opt/data/new"), b"n");
        set_xattr(&upper.join("opt/data"), OVERLAY_OPAQUE, b"y");
        write(&upper.join("srv/file"), b"f2");
        whiteout(&upper.join("ghost"));
        socket(&upper.join("run.sock"));
        write(&outside.join("secret"), b"secret");
        symlink(&outside, upper.join("escape")).unwrap();
        OverlayFixture { _tmp: tmp, lowers: vec![l1, l2], upper, outside }
    }

    #[test]
    fn overlay_changes_follow_the_image_seen_through_all_lowers() {
        let fx = overlay_fixture();
        let changes = overlay_changes(&fx.upper, &fx.lowers).unwrap();
        let expected = [
            "A /app",
            "A /app/bin",
            "A /app/bin/run",
            "A /app/conf",
            // A symlink is an entry; what it points to is never read.
            "A /escape",
            "C /etc",
            "C /etc/passwd",
            // Opaque directory: reported itself; its children against the image.
            "C /opt",
            "C /opt/data",
            "C /opt/data/c",
            // Hidden in the image by l1's opaque directory, so new.
            "A /opt/data/new",
            // A directory where the image has a file: srv/file of l2 is hidden by l1's file.
            "C /srv",
            "A /srv/file",
            "C /usr",
            "C /usr/bin",
            "D /usr/bin/tool",
            // Hidden in the image by l1's whiteout, so added.
            "C /var",
            "C /var/log",
            "A /var/log/old.log",
        ];
        // The whiteout of a path the image lacks (ghost) and the socket are not changes.
        assert_eq!(shown(&changes), expected);
        // escape leads to a directory with contents, none of which were listed.
        assert!(fs::metadata(fx.upper.join("escape/secret")).is_ok() && fx.outside.join("secret").exists());
    }

    #[test]
    fn an_upper_without_lowers_is_all_added_and_a_missing_upper_is_an_io_error() {
        let fx = overlay_fixture();
        let changes = overlay_changes(&fx.upper, &[]).unwrap();
        assert!(changes.iter().all(|c| c.kind == ChangeKind::Added), "{changes:?}");
        assert!(changes.iter().any(|c| c.path == "/app/bin/run"));
        let missing = fx.upper.join("nope");
        match overlay_changes(&missing, &fx.lowers) {
            Err(DiffError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
        match overlay_changes(&fx.upper, std::slice::from_ref(&missing)) {
            Err(DiffError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
    }

    /// An upper dir with one entry of every kind the layer writer handles.
    fn tar_upper(tmp: &Path) -> (PathBuf, String) {
        let upper = tmp.join("upper");
        let passwd = upper.join("etc/passwd");
        write(&passwd, b"x");
        chmod(&passwd, 0o640);
        rustix::fs::chown(&passwd, Some(rustix::fs::Uid::from_raw(1000)), Some(rustix::fs::Gid::from_raw(1001))).unwrap();
        set_xattr(&passwd, "user.note", b"hello");
        set_xattr(&passwd, "trusted.overlay.origin", b"junk");
        set_mtime(&passwd, 1_600_000_000, 500_000_000);
        // Overlayfs makes whiteouts as links to one shared inode.
        whiteout(&upper.join("gone"));
        fs::hard_link(upper.join("gone"), upper.join("gone2")).unwrap();
        write(&upper.join("data/keep"), b"k");
        set_xattr(&upper.join("data"), OVERLAY_OPAQUE, b"y");
        symlink("etc/passwd", upper.join("link")).unwrap();
        write(&upper.join("hard/a"), b"same");
        fs::hard_link(upper.join("hard/a"), upper.join("hard/b")).unwrap();
        mknod(&upper.join("fifo"), FileType::Fifo, 0o644, 0, 0);
        mknod(&upper.join("null"), FileType::CharacterDevice, 0o666, 1, 3);
        socket(&upper.join("sock"));
        let long = "l".repeat(120);
        write(&upper.join(&long).join("f"), b"deep");
        write(&tmp.join("outside/secret"), b"secret");
        symlink(tmp.join("outside"), upper.join("escape")).unwrap();
        (upper, long)
    }

    #[test]
    fn the_mount_points_of_bound_files_are_left_out_of_a_layer_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        write(&upper.join("etc/hosts"), b"");
        write(&upper.join("etc/hostname"), b"");
        write(&upper.join("etc/resolv.conf"), b"nameserver 1.1.1.1\n");
        write(&upper.join("tmp/hosts"), b"");
        let leave_out = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];
        let mut buf = Vec::new();
        write_overlay_layer(&upper, None, &leave_out, &mut buf).unwrap();
        let names: Vec<String> = read_tar(&buf).into_iter().map(|e| e.name).collect();
        // The empty mount points go; a file with content at such a path, and an empty file elsewhere, stay.
        assert_eq!(names, ["etc/", "etc/resolv.conf", "tmp/", "tmp/hosts"]);
    }

    #[test]
    fn an_overlay_layer_holds_whiteouts_opaque_markers_links_and_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let (upper, long) = tar_upper(tmp.path());
        let mut buf = Vec::new();
        let count = write_overlay_layer(&upper, None, &[], &mut buf).unwrap();
        let entries = read_tar(&buf);
        let (long_dir, long_file) = (format!("{long}/"), format!("{long}/f"));
        let expected = [
            "data/",
            "data/.wh..wh..opq",
            "data/keep",
            "escape",
            "etc/",
            "etc/passwd",
            "fifo",
            ".wh.gone",
            ".wh.gone2",
            "hard/",
            "hard/a",
            "hard/b",
            "link",
            &long_dir,
            &long_file,
            "null",
        ];
        assert_eq!(names(&entries), expected);
        assert_eq!(count, expected.len() as u64);

        let passwd = entry(&entries, "etc/passwd");
        assert_eq!(passwd.kind, EntryType::Regular);
        assert_eq!((passwd.mode, passwd.uid, passwd.gid, passwd.mtime), (0o640, 1000, 1001, 1_600_000_000));
        assert_eq!(passwd.data, b"x");
        assert_eq!(passwd.xattrs, [("user.note".to_owned(), b"hello".to_vec())]);
        for e in &entries {
            assert!(e.pax_keys.iter().all(|k| !k.contains("trusted.")), "{}: {:?}", e.name, e.pax_keys);
        }
        for wh in [".wh.gone", ".wh.gone2", "data/.wh..wh..opq"] {
            let e = entry(&entries, wh);
            assert_eq!((e.kind, e.data.len()), (EntryType::Regular, 0), "{wh}");
        }
        assert_eq!(entry(&entries, "data/").kind, EntryType::Directory);
        let b = entry(&entries, "hard/b");
        assert_eq!((b.kind, b.link.as_deref()), (EntryType::Link, Some("hard/a")));
        assert_eq!(entry(&entries, "hard/a").data, b"same");
        let link = entry(&entries, "link");
        assert_eq!((link.kind, link.link.as_deref()), (EntryType::Symlink, Some("etc/passwd")));
        let escape = entry(&entries, "escape");
        assert_eq!(escape.kind, EntryType::Symlink);
        assert!(entries.iter().all(|e| !e.name.starts_with("escape/")));
        let null = entry(&entries, "null");
        assert_eq!((null.kind, null.dev, null.mode), (EntryType::Char, (1, 3), 0o666));
        assert_eq!(entry(&entries, "fifo").kind, EntryType::Fifo);
        let f = entry(&entries, &long_file);
        assert!(f.pax_keys.contains(&"path".to_owned()), "{:?}", f.pax_keys);
        assert_eq!(f.data, b"deep");

        // Applied by our own applier to an empty overlay upper, the layer gives the upper back.
        let applied = tmp.path().join("applied");
        fs::create_dir(&applied).unwrap();
        assert_eq!(apply(&buf, &applied, WhiteoutMode::Overlay), count);
        assert_eq!(describe(&applied), describe(&upper));
        assert_eq!(get_xattr(&applied.join("etc/passwd"), "user.note").as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn names_that_would_read_as_whiteouts_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        write(&upper.join("etc/.wh.passwd"), b"not a whiteout");
        // Listing is fine; a layer cannot say it.
        assert_eq!(shown(&overlay_changes(&upper, &[]).unwrap()), ["A /etc", "A /etc/.wh.passwd"]);
        let r = write_overlay_layer(&upper, None, &[], Vec::new());
        assert!(matches!(&r, Err(DiffError::Unsupported { path, .. }) if path.ends_with("etc/.wh.passwd")), "{r:?}");
        let r = write_native_layer(&upper, None, None, &[], Vec::new());
        assert!(matches!(r, Err(DiffError::Unsupported { .. })), "{r:?}");
    }

    /// An image (`parent`) and a container's full copy of it (`dir`) with changes.
    struct NativeFixture {
        _tmp: tempfile::TempDir,
        parent: PathBuf,
        dir: PathBuf,
    }

    fn native_fixture() -> NativeFixture {
        let tmp = tempfile::tempdir().unwrap();
        let (parent, dir) = (tmp.path().join("parent"), tmp.path().join("dir"));
        write(&parent.join("etc/passwd"), b"root");
        write(&parent.join("etc/hosts"), b"h");
        write(&parent.join("etc/mode"), b"m");
        write(&parent.join("lib/a/x"), b"x");
        write(&parent.join("lib/a/y/z"), b"z");
        write(&parent.join("lib/keep"), b"k");
        write(&parent.join("same/file"), b"s");
        write(&parent.join("kind"), b"a file");
        symlink("target1", parent.join("link")).unwrap();
        cp_a(&parent, &dir);

        write(&dir.join("etc/passwd"), b"root2");
        chmod(&dir.join("etc/mode"), 0o600);
        fs::remove_file(dir.join("etc/hosts")).unwrap();
        fs::remove_dir_all(dir.join("lib/a")).unwrap();
        write(&dir.join("new/dir/file"), b"new");
        fs::hard_link(dir.join("new/dir/file"), dir.join("new/dir/file2")).unwrap();
        // Same length and mtime: only the target tells them apart.
        let old = rustix::fs::lstat(parent.join("link")).unwrap();
        fs::remove_file(dir.join("link")).unwrap();
        symlink("target2", dir.join("link")).unwrap();
        set_mtime(&dir.join("link"), old.st_mtime, old.st_mtime_nsec as i64);
        fs::remove_file(dir.join("kind")).unwrap();
        write(&dir.join("kind/inner"), b"i");
        socket(&dir.join("sock"));
        NativeFixture { _tmp: tmp, parent, dir }
    }

    #[test]
    fn native_changes_compare_the_copy_with_its_parent() {
        let fx = native_fixture();
        let changes = native_changes(&fx.dir, Some(&fx.parent)).unwrap();
        let expected = [
            "C /etc",
            "D /etc/hosts",
            "C /etc/mode",
            "C /etc/passwd",
            "C /kind",
            "A /kind/inner",
            "C /lib",
            // A deleted directory, once.
            "D /lib/a",
            "C /link",
            "A /new",
            "A /new/dir",
            "A /new/dir/file",
            "A /new/dir/file2",
        ];
        assert_eq!(shown(&changes), expected);
        assert_eq!(native_changes(&fx.parent, Some(&fx.parent)).unwrap(), []);
        let all = native_changes(&fx.dir, None).unwrap();
        let expected_all = [
            "A /etc",
            "A /etc/mode",
            "A /etc/passwd",
            "A /kind",
            "A /kind/inner",
            "A /lib",
            "A /lib/keep",
            "A /link",
            "A /new",
            "A /new/dir",
            "A /new/dir/file",
            "A /new/dir/file2",
            "A /same",
            "A /same/file",
        ];
        assert_eq!(shown(&all), expected_all);
    }

    #[test]
    fn a_native_layer_applied_to_the_parent_gives_the_container_tree() {
        let fx = native_fixture();
        let mut buf = Vec::new();
        let count = write_native_layer(&fx.dir, Some(&fx.parent), None, &[], &mut buf).unwrap();
        let entries = read_tar(&buf);
        let expected = [
            "etc/",
            "etc/.wh.hosts",
            "etc/mode",
            "etc/passwd",
            "kind/",
            "kind/inner",
            "lib/",
            "lib/.wh.a",
            "link",
            "new/",
            "new/dir/",
            "new/dir/file",
            "new/dir/file2",
        ];
        assert_eq!(names(&entries), expected);
        assert_eq!(count, expected.len() as u64);
        assert_eq!(entry(&entries, "etc/mode").mode, 0o600);
        assert_eq!(entry(&entries, "etc/passwd").data, b"root2");
        let link = entry(&entries, "link");
        assert_eq!((link.kind, link.link.as_deref()), (EntryType::Symlink, Some("target2")));
        let f2 = entry(&entries, "new/dir/file2");
        assert_eq!((f2.kind, f2.link.as_deref()), (EntryType::Link, Some("new/dir/file")));
        let passwd_mtime = fs::symlink_metadata(fx.dir.join("etc/passwd")).unwrap().mtime();
        assert_eq!(entry(&entries, "etc/passwd").mtime, passwd_mtime as u64);

        let copy = fx.parent.with_file_name("copy");
        cp_a(&fx.parent, &copy);
        assert_eq!(apply(&buf, &copy, WhiteoutMode::Native), count);
        assert_eq!(describe(&copy), describe(&fx.dir));

        // Without a parent, the layer is the whole tree.
        let mut buf = Vec::new();
        let count = write_native_layer(&fx.dir, None, None, &[], &mut buf).unwrap();
        let empty = fx.parent.with_file_name("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(apply(&buf, &empty, WhiteoutMode::Native), count);
        assert_eq!(describe(&empty), describe(&fx.dir));
    }

    /// `levels` nested directories `d`, each (and the root) also holding a file `f`.
    fn deep_tree(root: &Path, levels: usize) -> PathBuf {
        let mut dir = root.to_owned();
        for _ in 0..levels {
            write(&dir.join("f"), b"f");
            dir.push("d");
        }
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn trees_deeper_than_the_fd_window_are_walked_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let levels = 3 * WALK_FDS;
        let upper = tmp.path().join("upper");
        let bottom = deep_tree(&upper, levels);
        let changes = overlay_changes(&upper, &[]).unwrap();
        assert_eq!(changes.len(), 2 * levels);
        let mut buf = Vec::new();
        assert_eq!(write_overlay_layer(&upper, None, &[], &mut buf).unwrap(), 2 * levels as u64);
        let entries = read_tar(&buf);
        // Walk order: each level's `d` subtree, then its `f` (climbing back through the window).
        assert_eq!(entries.last().unwrap().name, "f");
        for e in &entries {
            if let Some((parent, _)) = e.name.trim_end_matches('/').rsplit_once('/') {
                let parent = format!("{parent}/");
                assert!(entries.iter().position(|p| p.name == parent) < entries.iter().position(|x| x.name == e.name));
            }
        }

        // Both trees of a native diff climb back the same way.
        let dir = tmp.path().join("dir");
        cp_a(&upper, &dir);
        write(&dir.join("f"), b"changed");
        let deepest_f = bottom.parent().unwrap().join("f");
        write(&dir.join(deepest_f.strip_prefix(&upper).unwrap()), b"changed too");
        let changes = native_changes(&dir, Some(&upper)).unwrap();
        // Every directory down to the deepest file, that file, and the top one.
        assert_eq!(changes.len(), (levels - 1) + 2, "{:?}", shown(&changes));
        assert!(changes.iter().all(|c| c.kind == ChangeKind::Modified));
    }

    #[test]
    fn trees_deeper_than_the_limit_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        let mut bottom = upper.clone();
        for _ in 0..MAX_DEPTH {
            bottom.push("d");
        }
        fs::create_dir_all(&bottom).unwrap();
        assert_eq!(overlay_changes(&upper, &[]).unwrap().len(), MAX_DEPTH);
        write(&bottom.join("x"), b"one level too deep");
        let r = overlay_changes(&upper, &[]);
        assert!(matches!(&r, Err(DiffError::TooDeep { path, max: MAX_DEPTH }) if path.ends_with("d/x")), "{r:?}");
        assert!(matches!(write_overlay_layer(&upper, None, &[], Vec::new()), Err(DiffError::TooDeep { .. })));
        assert!(matches!(native_changes(&upper, None), Err(DiffError::TooDeep { .. })));
    }

    /// An overlay mount, unmounted (lazily) on drop if the test did not.
    struct Mounted {
        target: PathBuf,
        mounted: bool,
    }

    impl Mounted {
        fn new(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Self {
            let opts = format!("lowerdir={},upperdir={},workdir={},metacopy=off", lower.display(), upper.display(), work.display());
            let data = std::ffi::CString::new(opts).unwrap();
            rustix::mount::mount("overlay", target, "overlay", rustix::mount::MountFlags::empty(), Some(data.as_c_str()))
                .expect("mounting overlayfs (tests run as root on a kernel with overlayfs)");
            Self { target: target.to_owned(), mounted: true }
        }

        fn unmount(&mut self) {
            if self.mounted {
                rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::empty()).unwrap();
                self.mounted = false;
            }
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            if self.mounted {
                let _ = rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }

    #[test]
    fn changes_made_through_a_real_overlay_mount_round_trip_through_the_applier() {
        let tmp = tempfile::tempdir().unwrap();
        let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| tmp.path().join(d));
        for d in [&upper, &work, &merged] {
            fs::create_dir(d).unwrap();
        }
        write(&lower.join("etc/passwd"), b"root:x:0:0\n");
        write(&lower.join("etc/hosts"), b"127.0.0.1 localhost\n");
        write(&lower.join("usr/bin/tool"), b"tool");
        write(&lower.join("var/cache/a"), b"a");
        write(&lower.join("var/cache/b"), b"b");
        write(&lower.join("data/keep"), b"keep");

        let mut mount = Mounted::new(&lower, &upper, &work, &merged);
        let m = |p: &str| merged.join(p);
        write(&m("etc/new"), b"new");
        let mut passwd = fs::OpenOptions::new().append(true).open(m("etc/passwd")).unwrap();
        passwd.write_all(b"user:x:1000:1000\n").unwrap();
        drop(passwd);
        fs::remove_file(m("usr/bin/tool")).unwrap();
        fs::remove_dir_all(m("var/cache")).unwrap();
        fs::create_dir(m("var/cache")).unwrap();
        write(&m("var/cache/c"), b"c");
        write(&m("app/run"), b"run");
        fs::hard_link(m("app/run"), m("app/run2")).unwrap();
        symlink("../etc/passwd", m("app/link")).unwrap();
        chmod(&m("data/keep"), 0o600);
        let seen = describe(&merged);
        mount.unmount();

        assert!(get_xattr(&upper.join("var/cache"), OVERLAY_OPAQUE).is_some(), "overlayfs made var/cache opaque");
        let changes = overlay_changes(&upper, std::slice::from_ref(&lower)).unwrap();
        let expected = [
            "A /app",
            "A /app/link",
            "A /app/run",
            "A /app/run2",
            "C /data",
            "C /data/keep",
            "C /etc",
            "A /etc/new",
            "C /etc/passwd",
            "C /usr",
            "C /usr/bin",
            "D /usr/bin/tool",
            "C /var",
            "C /var/cache",
            "A /var/cache/c",
        ];
        assert_eq!(shown(&changes), expected);

        let mut buf = Vec::new();
        let count = write_overlay_layer(&upper, None, &[], &mut buf).unwrap();
        let entries = read_tar(&buf);
        let names = names(&entries);
        for name in ["usr/bin/.wh.tool", "var/cache/", "var/cache/.wh..wh..opq", "var/cache/c", "etc/new"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let run2 = entry(&entries, "app/run2");
        assert_eq!((run2.kind, run2.link.as_deref()), (EntryType::Link, Some("app/run")));

        // The layer applied to a copy of the lower gives what the mount showed.
        let copy = tmp.path().join("copy");
        cp_a(&lower, &copy);
        assert_eq!(apply(&buf, &copy, WhiteoutMode::Native), count);
        assert!(copy.join("etc/new").exists() && !copy.join("usr/bin/tool").exists() && !copy.join("var/cache/a").exists());
        assert_eq!(describe(&copy), seen);
    }
}
