//! What changed in a container's writable layer: docker's `diff` listing, and the OCI layer
//! (an uncompressed tar changeset) that `commit` stores.
//!
//! One source per snapshotter:
//!
//! - overlayfs: the container's upper dir holds exactly what changed: whiteout devices (char
//!   device 0:0) for deletions, `trusted.overlay.opaque=y` on directories whose lower contents
//!   were removed. The image's lower dirs only decide between Added and Modified.
//! - native: the container's directory is a full copy of the image; it is compared with the
//!   image's top snapshot entry by entry (docker's "naive diff").
//!
//! The container may still be running while we read its tree, so the tree is never read
//! through paths: every name is looked up with `statat(AT_SYMLINK_NOFOLLOW)` in an fd of its
//! directory, directories and files are opened with `O_NOFOLLOW` and checked to be the very
//! inode that was looked up ([`DiffError::Changed`] otherwise). Nothing outside the tree is
//! read, whatever symlinks it holds. The walk is iterative, at most [`MAX_DEPTH`] levels deep,
//! and keeps at most [`WALK_FDS`] directory fds open per tree.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use tar::{EntryType, Header};

/// Most path components an entry may have: deeper trees are refused, not walked.
pub const MAX_DEPTH: usize = 1000;
/// Longest entry name written into a layer, in bytes: what the layer applier accepts by default.
pub const MAX_ENTRY_NAME: usize = 4096;
/// Most directory fds one tree walk keeps open (see [`DirStack`]).
const WALK_FDS: usize = 64;
/// Largest xattr name list / value read (the Linux VFS limit is 64 KiB).
const XATTR_BUF: usize = 64 * 1024;
/// Whiteout prefix and opaque-directory marker of OCI layers.
const WH_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";
const OVERLAY_REDIRECT: &str = "trusted.overlay.redirect";
const OVERLAY_METACOPY: &str = "trusted.overlay.metacopy";
/// Longest name that fits a ustar header's name (and link name) field; longer ones go into
/// a PAX `path` / `linkpath` record.
const USTAR_NAME: usize = 100;

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

/// Changes of an overlay container: `upper` is the container snapshot's upper dir, `lowers` the
/// image's layer dirs, nearest first.
///
/// A path exists in the image if the nearest lower that has it holds it, and no whiteout, opaque
/// directory or non-directory in a nearer lower hides it. Upper entries are reported as: a
/// whiteout → Deleted (if the image has the path; a whiteout of nothing changes nothing); any
/// other entry → Modified if the image has the path, else Added. Directories are reported like
/// files, so the parents of changes show as Modified (as docker does); an opaque directory is
/// reported as the directory alone (Modified), plus its upper children. Sockets are skipped.
/// Sorted by path.
pub fn overlay_changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, DiffError> {
    let root = image_root(lowers)?;
    let mut v = OverlayList { lowers, stack: vec![root], changes: Vec::new() };
    walk(upper, None, &mut v)?;
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
    let root_st = root_stat(dir)?;
    walk(dir, parent, &mut NativeDiff::new(&mut changes, root_st))?;
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
pub fn write_overlay_layer<W: Write>(upper: &Path, out: W) -> Result<u64, DiffError> {
    let mut w = LayerWriter::new(out, upper);
    walk(upper, None, &mut OverlayTar { w: &mut w })?;
    w.finish()
}

/// Writes the layer of a native container (see [`native_changes`]) to `out` as an
/// uncompressed tar and returns the number of entries written: Added and Modified paths with
/// their content from `dir` (as [`write_overlay_layer`] writes entries), an empty `.wh.NAME`
/// file for each Deleted one.
///
/// On error, `out` holds part of an archive; discard it.
pub fn write_native_layer<W: Write>(dir: &Path, parent: Option<&Path>, out: W) -> Result<u64, DiffError> {
    let mut w = LayerWriter::new(out, dir);
    let root_st = root_stat(dir)?;
    walk(dir, parent, &mut NativeDiff::new(&mut w, root_st))?;
    w.finish()
}

fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes
}

fn root_stat(dir: &Path) -> Result<Stat, DiffError> {
    rustix::fs::stat(dir).map_err(|e| io_err(dir.to_owned(), e))
}

fn io_err(path: PathBuf, e: Errno) -> DiffError {
    DiffError::Io { path, source: e.into() }
}

/// `root/rel`.
fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

// ---------------------------------------------------------------------------------------------
// The walk

/// A file's identity: (device, inode).
type Ident = (u64, u64);

fn stat_ident(st: &Stat) -> Ident {
    (to_u64(st.st_dev), to_u64(st.st_ino))
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn is_whiteout(st: &Stat) -> bool {
    file_type(st) == FileType::CharacterDevice && to_u64(st.st_rdev) == 0
}

/// The open directories from a tree's root down to the one being walked. Only the deepest
/// [`WALK_FDS`] keep their fd: when the walk climbs back to a directory whose fd was closed, it
/// is re-opened as `..` of the one below and checked to be the same directory.
struct DirStack {
    root: PathBuf,
    top: OwnedFd,
    top_id: Ident,
    /// The directories above `top`, outermost first; those from `first_open` on hold their fd.
    above: Vec<(Option<OwnedFd>, Ident)>,
    first_open: usize,
}

impl DirStack {
    /// The root path comes from the caller and is trusted (it may be reached through symlinks).
    fn open(root: &Path) -> Result<Self, DiffError> {
        let err = |e| io_err(root.to_owned(), e);
        let top = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(err)?;
        let top_id = rustix::fs::fstat(&top).map(|st| stat_ident(&st)).map_err(err)?;
        Ok(Self { root: root.to_owned(), top, top_id, above: Vec::new(), first_open: 0 })
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        join(&self.root, rel)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.top.as_fd()
    }

    /// Sorted names in the current directory, `rel`.
    fn list(&self, rel: &[u8]) -> Result<Vec<Vec<u8>>, DiffError> {
        let err = |e| io_err(self.path(rel), e);
        let mut names = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(self.fd()).map_err(err)?;
        while let Some(entry) = dir.read() {
            let name = entry.map_err(err)?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    /// `name` (at `rel`) in the current directory, never following a symlink; `None` if it is
    /// gone or a socket.
    fn lookup(&self, name: &[u8], rel: &[u8]) -> Result<Option<Stat>, DiffError> {
        match rustix::fs::statat(self.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if file_type(&st) == FileType::Socket => Ok(None),
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err(self.path(rel), e)),
        }
    }

    /// Opens directory `name` (at `rel`), which [`lookup`](Self::lookup) found as `st`.
    fn open_dir(&self, name: &[u8], st: &Stat, rel: &[u8]) -> Result<OwnedFd, DiffError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(self.fd(), name, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR | Errno::LOOP => DiffError::Changed { path: self.path(rel) },
            e => io_err(self.path(rel), e),
        })?;
        let now = rustix::fs::fstat(&fd).map_err(|e| io_err(self.path(rel), e))?;
        if stat_ident(&now) != stat_ident(st) {
            return Err(DiffError::Changed { path: self.path(rel) });
        }
        Ok(fd)
    }

    /// Enters directory `fd` (identity `id`).
    fn push(&mut self, fd: OwnedFd, id: Ident) {
        let up = std::mem::replace(&mut self.top, fd);
        let up_id = std::mem::replace(&mut self.top_id, id);
        self.above.push((Some(up), up_id));
        if self.above.len() - self.first_open > WALK_FDS {
            self.above[self.first_open].0 = None;
            self.first_open += 1;
        }
    }

    /// Leaves the current directory, `rel`, for its parent.
    fn pop(&mut self, rel: &[u8]) -> Result<(), DiffError> {
        let Some((fd, id)) = self.above.pop() else {
            return Ok(());
        };
        let fd = match fd {
            Some(fd) => fd,
            None => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let up = rustix::fs::openat(self.fd(), "..", flags, Mode::empty()).map_err(|e| io_err(self.path(rel), e))?;
                let up_id = rustix::fs::fstat(&up).map(|st| stat_ident(&st)).map_err(|e| io_err(self.path(rel), e))?;
                if up_id != id {
                    // The directory was moved while we were inside it.
                    return Err(DiffError::Changed { path: self.path(rel) });
                }
                up
            }
        };
        self.first_open = self.first_open.min(self.above.len());
        self.top = fd;
        self.top_id = id;
        Ok(())
    }
}

/// One side (new: the container's tree; old: the image's) of an entry met by the walk.
struct Side<'a> {
    /// Root of the tree (for messages).
    root: &'a Path,
    st: &'a Stat,
    /// The directory holding the entry.
    parent: BorrowedFd<'a>,
    /// The entry itself, opened, when it is a directory (new side only).
    dir: Option<BorrowedFd<'a>>,
}

impl Side<'_> {
    fn path(&self, rel: &[u8]) -> PathBuf {
        join(self.root, rel)
    }
}

/// An entry of the new tree, the old tree, or both.
struct Node<'a> {
    /// Path relative to the roots, without leading or trailing `/`.
    rel: &'a [u8],
    name: &'a [u8],
    new: Option<Side<'a>>,
    old: Option<Side<'a>>,
}

trait Visitor {
    /// Called for every entry, parents before children, names in byte order. After a node
    /// whose new side is a directory, its contents are walked and then [`leave`](Self::leave)
    /// is called.
    fn node(&mut self, node: &Node<'_>) -> Result<(), DiffError>;
    fn leave(&mut self) -> Result<(), DiffError>;
}

/// A directory being walked: the names still to visit, each with whether the new and the old
/// tree hold it.
struct Frame {
    names: std::vec::IntoIter<(Vec<u8>, bool, bool)>,
    /// Whether the old tree has this directory (as a directory) and its stack is in it.
    has_old: bool,
    /// Length of the walk's `rel` before this directory's name was appended.
    base: usize,
}

/// Both sorted name lists merged, each name with whether `new` and `old` hold it.
fn merge(new: Vec<Vec<u8>>, old: Vec<Vec<u8>>) -> Vec<(Vec<u8>, bool, bool)> {
    let mut out = Vec::with_capacity(new.len().max(old.len()));
    let mut new = new.into_iter().peekable();
    let mut old = old.into_iter().peekable();
    loop {
        let entry = match (new.peek(), old.peek()) {
            (None, None) => break,
            (Some(_), None) => new.next().map(|n| (n, true, false)),
            (None, Some(_)) => old.next().map(|o| (o, false, true)),
            (Some(n), Some(o)) => match n.cmp(o) {
                std::cmp::Ordering::Less => new.next().map(|n| (n, true, false)),
                std::cmp::Ordering::Greater => old.next().map(|o| (o, false, true)),
                std::cmp::Ordering::Equal => {
                    old.next();
                    new.next().map(|n| (n, true, true))
                }
            },
        };
        out.extend(entry);
    }
    out
}

/// Walks `new_root` (and `old_root` in step with it, if given) depth first, in name order.
fn walk(new_root: &Path, old_root: Option<&Path>, v: &mut dyn Visitor) -> Result<(), DiffError> {
    let mut new = DirStack::open(new_root)?;
    let mut old = old_root.map(DirStack::open).transpose()?;
    let mut rel: Vec<u8> = Vec::new();
    let old_names = match &old {
        Some(o) => o.list(&rel)?,
        None => Vec::new(),
    };
    let mut frames = vec![Frame { names: merge(new.list(&rel)?, old_names).into_iter(), has_old: old.is_some(), base: 0 }];
    while let Some(frame) = frames.last_mut() {
        let has_old = frame.has_old;
        let Some((name, in_new, in_old)) = frame.names.next() else {
            let Some(done) = frames.pop() else { break };
            if frames.is_empty() {
                break;
            }
            new.pop(&rel)?;
            if let (true, Some(o)) = (done.has_old, old.as_mut()) {
                o.pop(&rel)?;
            }
            rel.truncate(done.base);
            v.leave()?;
            continue;
        };
        let base = rel.len();
        if base > 0 {
            rel.push(b'/');
        }
        rel.extend_from_slice(&name);
        if frames.len() > MAX_DEPTH {
            return Err(DiffError::TooDeep { path: new.path(&rel), max: MAX_DEPTH });
        }
        let new_st = if in_new { new.lookup(&name, &rel)? } else { None };
        let old_st = match (&old, has_old && in_old) {
            (Some(o), true) => o.lookup(&name, &rel)?,
            _ => None,
        };
        let new_dir = match &new_st {
            Some(st) if file_type(st) == FileType::Directory => Some(new.open_dir(&name, st, &rel)?),
            _ => None,
        };
        if new_st.is_some() || old_st.is_some() {
            let node = Node {
                rel: &rel,
                name: &name,
                new: new_st.as_ref().map(|st| Side { root: new_root, st, parent: new.fd(), dir: new_dir.as_ref().map(|fd| fd.as_fd()) }),
                old: match (&old_st, &old, old_root) {
                    (Some(st), Some(o), Some(root)) => Some(Side { root, st, parent: o.fd(), dir: None }),
                    _ => None,
                },
            };
            v.node(&node)?;
        }
        let (Some(fd), Some(st)) = (new_dir, new_st) else {
            rel.truncate(base);
            continue;
        };
        let mut old_names = None;
        if let (Some(ost), Some(o)) = (old_st, old.as_mut()) {
            if file_type(&ost) == FileType::Directory {
                let ofd = o.open_dir(&name, &ost, &rel)?;
                o.push(ofd, stat_ident(&ost));
                old_names = Some(o.list(&rel)?);
            }
        }
        new.push(fd, stat_ident(&st));
        let has_old = old_names.is_some();
        frames.push(Frame { names: merge(new.list(&rel)?, old_names.unwrap_or_default()).into_iter(), has_old, base });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Overlay

/// Indexes of the lowers whose root shows in the image: all of them, down to the first opaque one.
fn image_root(lowers: &[PathBuf]) -> Result<Vec<usize>, DiffError> {
    let mut shown = Vec::new();
    for (i, lower) in lowers.iter().enumerate() {
        let md = fs::metadata(lower).map_err(|source| DiffError::Io { path: lower.clone(), source })?;
        if !md.is_dir() {
            return Err(DiffError::Io { path: lower.clone(), source: io::Error::from(io::ErrorKind::NotADirectory) });
        }
        shown.push(i);
        let mut buf = [0u8; 8];
        let opaque = xattr_is_y(rustix::fs::getxattr(lower, OVERLAY_OPAQUE, &mut buf[..])).map_err(|e| io_err(lower.clone(), e))?;
        if opaque && buf[0] == b'y' {
            break;
        }
    }
    Ok(shown)
}

/// Whether an xattr read returned exactly `y` (absent or unsupported: no).
fn xattr_is_y(read: rustix::io::Result<usize>) -> rustix::io::Result<bool> {
    match read {
        Ok(n) => Ok(n == 1),
        Err(Errno::NODATA | Errno::OPNOTSUPP | Errno::RANGE) => Ok(false),
        Err(e) => Err(e),
    }
}

fn fd_is_opaque(fd: BorrowedFd<'_>) -> rustix::io::Result<bool> {
    let mut buf = [0u8; 8];
    let r = rustix::fs::fgetxattr(fd, OVERLAY_OPAQUE, &mut buf[..]);
    Ok(xattr_is_y(r)? && buf[0] == b'y')
}

fn fd_has_xattr(fd: BorrowedFd<'_>, name: &str) -> rustix::io::Result<bool> {
    match rustix::fs::fgetxattr_query(fd, name) {
        Ok(_) | Err(Errno::RANGE) => Ok(true),
        Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Looks `rel` up in the image: `shown` are the lowers whose copy of its parent directory
/// shows in the image, nearest first. Returns whether the image has `rel`, and if it is a
/// directory there, the lowers whose copy of it shows.
fn image_lookup(lowers: &[PathBuf], shown: &[usize], rel: &[u8]) -> Result<(bool, Vec<usize>), DiffError> {
    let mut found: Option<bool> = None; // Some(is_dir)
    let mut below = Vec::new();
    for &i in shown {
        let path = join(&lowers[i], rel);
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => continue,
            Err(source) => return Err(DiffError::Io { path, source }),
        };
        let ft = md.file_type();
        if ft.is_char_device() && md.rdev() == 0 {
            // A whiteout hides the path here and in every lower below.
            break;
        }
        if !ft.is_dir() {
            // A non-directory hides everything below; if a directory was found above, merging stops.
            found.get_or_insert(false);
            break;
        }
        found = Some(true);
        below.push(i);
        let mut buf = [0u8; 8];
        let opaque = xattr_is_y(rustix::fs::lgetxattr(&path, OVERLAY_OPAQUE, &mut buf[..])).map_err(|e| io_err(path.clone(), e))?;
        if opaque && buf[0] == b'y' {
            break;
        }
    }
    if found != Some(true) {
        below.clear();
    }
    Ok((found.is_some(), below))
}

fn change(kind: ChangeKind, rel: &[u8]) -> Change {
    Change { kind, path: format!("/{}", String::from_utf8_lossy(rel)) }
}

/// [`overlay_changes`].
struct OverlayList<'l> {
    lowers: &'l [PathBuf],
    /// For each directory being walked: the lowers whose copy of it shows in the image.
    stack: Vec<Vec<usize>>,
    changes: Vec<Change>,
}

impl Visitor for OverlayList<'_> {
    fn node(&mut self, node: &Node<'_>) -> Result<(), DiffError> {
        let Some(side) = &node.new else { return Ok(()) };
        let shown = self.stack.last().map(Vec::as_slice).unwrap_or_default();
        let (in_image, below) = image_lookup(self.lowers, shown, node.rel)?;
        if let Some(dir) = side.dir {
            check_no_redirect(dir, side, node.rel)?;
            self.stack.push(below);
        }
        if is_whiteout(side.st) {
            if in_image {
                self.changes.push(change(ChangeKind::Deleted, node.rel));
            }
        } else {
            self.changes.push(change(if in_image { ChangeKind::Modified } else { ChangeKind::Added }, node.rel));
        }
        Ok(())
    }

    fn leave(&mut self) -> Result<(), DiffError> {
        self.stack.pop();
        Ok(())
    }
}

/// A directory renamed with overlayfs' `redirect_dir` holds only part of its contents in the
/// upper dir; we cannot diff it.
fn check_no_redirect(dir: BorrowedFd<'_>, side: &Side<'_>, rel: &[u8]) -> Result<(), DiffError> {
    if fd_has_xattr(dir, OVERLAY_REDIRECT).map_err(|e| io_err(side.path(rel), e))? {
        return Err(DiffError::Unsupported { path: side.path(rel), reason: "overlayfs redirected directory (redirect_dir)".into() });
    }
    Ok(())
}

/// [`write_overlay_layer`].
struct OverlayTar<'w, W: Write> {
    w: &'w mut LayerWriter<W>,
}

impl<W: Write> Visitor for OverlayTar<'_, W> {
    fn node(&mut self, node: &Node<'_>) -> Result<(), DiffError> {
        let Some(side) = &node.new else { return Ok(()) };
        if is_whiteout(side.st) {
            return self.w.whiteout(node.rel, Some(side.st));
        }
        let Some(dir) = side.dir else {
            return self.w.node(node.rel, node.name, side.st, side.parent);
        };
        check_no_redirect(dir, side, node.rel)?;
        let err = |e| io_err(side.path(node.rel), e);
        let opaque = fd_is_opaque(dir).map_err(err)?;
        let xattrs = read_xattrs(dir).map_err(err)?;
        self.w.dir(node.rel, side.st, &xattrs)?;
        if opaque {
            self.w.opaque(node.rel, side.st)?;
        }
        Ok(())
    }

    fn leave(&mut self) -> Result<(), DiffError> {
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
    /// `rel` was deleted from directory `dir` (as it is now).
    fn deleted(&mut self, rel: &[u8], dir: &Stat) -> Result<(), DiffError>;
}

impl Out for Vec<Change> {
    const XATTRS: bool = false;

    fn dir(&mut self, kind: ChangeKind, rel: &[u8], _: &Stat, _: &[Xattr]) -> Result<(), DiffError> {
        self.push(change(kind, rel));
        Ok(())
    }

    fn node(&mut self, kind: ChangeKind, rel: &[u8], _: &[u8], _: &Stat, _: BorrowedFd<'_>) -> Result<(), DiffError> {
        self.push(change(kind, rel));
        Ok(())
    }

    fn deleted(&mut self, rel: &[u8], _: &Stat) -> Result<(), DiffError> {
        self.push(change(ChangeKind::Deleted, rel));
        Ok(())
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
    out: &'o mut O,
    /// The directories being walked, root first.
    dirs: Vec<DirState>,
    /// How many of `dirs` (always a prefix) were reported already.
    reported: usize,
}

impl<'o, O: Out> NativeDiff<'o, O> {
    fn new(out: &'o mut O, root: Stat) -> Self {
        // The root itself is never reported.
        Self { out, dirs: vec![DirState { rel: Vec::new(), st: root, xattrs: Vec::new() }], reported: 1 }
    }

    /// Reports the directories above the next change that were not reported yet.
    fn report_parents(&mut self) -> Result<(), DiffError> {
        for d in &mut self.dirs[self.reported..] {
            self.out.dir(ChangeKind::Modified, &d.rel, &d.st, &d.xattrs)?;
            d.xattrs = Vec::new();
        }
        self.reported = self.dirs.len();
        Ok(())
    }
}

/// Whether `new` differs from `old` (see [`native_changes`]).
fn differs(node: &Node<'_>, new: &Side<'_>, old: &Side<'_>) -> Result<bool, DiffError> {
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
            let target =
                |side: &Side<'_>| rustix::fs::readlinkat(side.parent, node.name, Vec::new()).map_err(|e| io_err(side.path(node.rel), e));
            Ok(target(new)? != target(old)?)
        }
    }
}

impl<O: Out> Visitor for NativeDiff<'_, O> {
    fn node(&mut self, node: &Node<'_>) -> Result<(), DiffError> {
        let new = match (&node.new, &node.old) {
            (None, None) => return Ok(()),
            (None, Some(_)) => {
                self.report_parents()?;
                let Some(parent) = self.dirs.last() else { return Ok(()) };
                return self.out.deleted(node.rel, &parent.st);
            }
            (Some(new), _) => new,
        };
        let kind = match &node.old {
            None => Some(ChangeKind::Added),
            Some(old) => differs(node, new, old)?.then_some(ChangeKind::Modified),
        };
        let xattrs = match new.dir {
            Some(fd) if O::XATTRS => read_xattrs(fd).map_err(|e| io_err(new.path(node.rel), e))?,
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
        Ok(())
    }

    fn leave(&mut self) -> Result<(), DiffError> {
        self.dirs.pop();
        self.reported = self.reported.min(self.dirs.len());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Layer archives

/// An xattr to store: name and value.
type Xattr = (String, Vec<u8>);

/// Xattrs a layer keeps: the user's own and file capabilities. Never overlayfs' private ones
/// (they would forge whiteouts), nor other `trusted.*` / `security.*` (host policy, e.g.
/// SELinux labels) or `system.*` ones.
fn keep_xattr(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(b"user.overlay.")) || name == b"security.capability"
}

/// The xattrs of `fd` a layer keeps, sorted by name.
fn read_xattrs(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<Xattr>> {
    let mut names = vec![0u8; 1024];
    loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(n) => {
                names.truncate(n);
                break;
            }
            Err(Errno::RANGE) if names.len() < XATTR_BUF => names.resize(XATTR_BUF, 0),
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty() && keep_xattr(n)) {
        let Ok(name) = std::str::from_utf8(name) else { continue };
        let mut value = vec![0u8; 256];
        loop {
            match rustix::fs::fgetxattr(fd, name, &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    out.push((name.to_owned(), value));
                    break;
                }
                Err(Errno::RANGE) if value.len() < XATTR_BUF => value.resize(XATTR_BUF, 0),
                Err(Errno::NODATA) => break,
                Err(e) => return Err(e),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Appends one PAX record (`"<len> <key>=<value>\n"`, where len counts the whole record).
fn pax_record(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    buf.extend_from_slice(format!("{len} {key}=").as_bytes());
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// An empty ustar header of `kind`, with every numeric field set.
fn blank_header(kind: EntryType) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    if let Some(ustar) = h.as_ustar_mut() {
        // Readers expect octal zeros, not NULs, for devices of non-device entries.
        ustar.set_device_major(0);
        ustar.set_device_minor(0);
    }
    h
}

/// A ustar header of `kind` with the mode, owner and mtime (whole seconds) of `st`.
fn header(kind: EntryType, st: &Stat) -> Header {
    let mut h = blank_header(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(to_u64(st.st_mtime.max(0)));
    h
}

/// Reads exactly `left` bytes (or fails); keeps its own read error apart from the archive's
/// write errors.
struct ExactReader {
    file: Option<File>,
    left: u64,
    error: Option<io::Error>,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(file) = self.file.as_mut().filter(|_| self.left > 0) else { return Ok(0) };
        let max = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match file.read(&mut buf[..max]) {
            Ok(0) => {
                self.error = Some(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while it was read"));
                Err(io::Error::other("reading the file failed"))
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.error = Some(e);
                Err(io::Error::other("reading the file failed"))
            }
        }
    }
}

/// Writes layer entries to a tar stream.
struct LayerWriter<W: Write> {
    tar: tar::Builder<W>,
    /// Root of the tree written (for messages).
    root: PathBuf,
    entries: u64,
    /// The first name written for each inode with several links.
    links: HashMap<Ident, Vec<u8>>,
}

impl<W: Write> LayerWriter<W> {
    fn new(out: W, root: &Path) -> Self {
        let mut tar = tar::Builder::new(out);
        // Headers are built here from lstat data, not by the builder's path helpers; these
        // settings only keep those helpers faithful and inside the tree should they be used.
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        Self { tar, root: root.to_owned(), entries: 0, links: HashMap::new() }
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        join(&self.root, rel)
    }

    fn finish(self) -> Result<u64, DiffError> {
        let root = self.root;
        let mut out = self.tar.into_inner().map_err(|source| DiffError::Write { path: root.clone(), source })?;
        out.flush().map_err(|source| DiffError::Write { path: root, source })?;
        Ok(self.entries)
    }

    /// Refuses names that a layer would read as whiteouts.
    fn check_name(&self, rel: &[u8]) -> Result<(), DiffError> {
        let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
        if name.starts_with(WH_PREFIX) {
            return Err(DiffError::Unsupported {
                path: self.path(rel),
                reason: "names starting with `.wh.` mean whiteouts in a layer".into(),
            });
        }
        Ok(())
    }

    fn dir(&mut self, rel: &[u8], st: &Stat, xattrs: &[Xattr]) -> Result<(), DiffError> {
        self.check_name(rel)?;
        let name = [rel, b"/"].concat();
        self.append(rel, header(EntryType::Directory, st), &name, None, xattrs, None)
    }

    /// An empty `.wh.NAME` file for deleted `rel`; owner and mtime from `st` if given.
    fn whiteout(&mut self, rel: &[u8], st: Option<&Stat>) -> Result<(), DiffError> {
        let (parent, name) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&rel[..=i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        let marker = [parent, WH_PREFIX, name].concat();
        self.marker(rel, &marker, st)
    }

    /// The opaque marker of directory `rel`.
    fn opaque(&mut self, rel: &[u8], st: &Stat) -> Result<(), DiffError> {
        let marker = [rel, b"/", OPAQUE_MARKER].concat();
        self.marker(rel, &marker, Some(st))
    }

    fn marker(&mut self, rel: &[u8], marker: &[u8], st: Option<&Stat>) -> Result<(), DiffError> {
        let mut h = blank_header(EntryType::Regular);
        h.set_mode(0o600);
        if let Some(st) = st {
            h.set_uid(u64::from(st.st_uid));
            h.set_gid(u64::from(st.st_gid));
            h.set_mtime(to_u64(st.st_mtime.max(0)));
        }
        self.append(rel, h, marker, None, &[], None)
    }

    /// A non-directory `name` (at `rel`) in directory `parent`, found as `st`.
    fn node(&mut self, rel: &[u8], name: &[u8], st: &Stat, parent: BorrowedFd<'_>) -> Result<(), DiffError> {
        self.check_name(rel)?;
        let id = stat_ident(st);
        let linked = to_u64(st.st_nlink) > 1;
        if linked {
            if let Some(first) = self.links.get(&id).cloned() {
                return self.append(rel, header(EntryType::Link, st), rel, Some(&first), &[], None);
            }
        }
        match file_type(st) {
            FileType::RegularFile => self.file(rel, name, st, parent)?,
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent, name, Vec::new()).map_err(|e| io_err(self.path(rel), e))?;
                self.append(rel, header(EntryType::Symlink, st), rel, Some(target.as_bytes()), &[], None)?;
            }
            ft @ (FileType::CharacterDevice | FileType::BlockDevice) => {
                let kind = if ft == FileType::CharacterDevice { EntryType::Char } else { EntryType::Block };
                let mut h = header(kind, st);
                let dev = st.st_rdev;
                let set = h.set_device_major(rustix::fs::major(dev)).and_then(|()| h.set_device_minor(rustix::fs::minor(dev)));
                set.map_err(|source| DiffError::Write { path: self.path(rel), source })?;
                self.append(rel, h, rel, None, &[], None)?;
            }
            FileType::Fifo => self.append(rel, header(EntryType::Fifo, st), rel, None, &[], None)?,
            // Sockets (and anything unknown) have no place in a layer.
            _ => return Ok(()),
        }
        if linked {
            self.links.insert(id, rel.to_vec());
        }
        Ok(())
    }

    fn file(&mut self, rel: &[u8], name: &[u8], st: &Stat, parent: BorrowedFd<'_>) -> Result<(), DiffError> {
        // O_NONBLOCK: should a fifo have taken the file's place, opening it must not hang.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT | Errno::LOOP => DiffError::Changed { path: self.path(rel) },
            e => io_err(self.path(rel), e),
        })?;
        let now = rustix::fs::fstat(&fd).map_err(|e| io_err(self.path(rel), e))?;
        if stat_ident(&now) != stat_ident(st) || file_type(&now) != FileType::RegularFile {
            return Err(DiffError::Changed { path: self.path(rel) });
        }
        if fd_has_xattr(fd.as_fd(), OVERLAY_METACOPY).map_err(|e| io_err(self.path(rel), e))? {
            return Err(DiffError::Unsupported { path: self.path(rel), reason: "overlayfs metadata-only copy (metacopy)".into() });
        }
        let xattrs = read_xattrs(fd.as_fd()).map_err(|e| io_err(self.path(rel), e))?;
        let size = to_u64(now.st_size);
        let mut h = header(EntryType::Regular, &now);
        h.set_size(size);
        self.append(rel, h, rel, None, &xattrs, Some((File::from(fd), size)))
    }

    /// Appends one entry named `name` (PAX records first if needed) with `data`'s bytes.
    fn append(
        &mut self,
        rel: &[u8],
        mut h: Header,
        name: &[u8],
        link: Option<&[u8]>,
        xattrs: &[Xattr],
        data: Option<(File, u64)>,
    ) -> Result<(), DiffError> {
        if name.len() > MAX_ENTRY_NAME || link.is_some_and(|l| l.len() > MAX_ENTRY_NAME) {
            return Err(DiffError::Unsupported {
                path: self.path(rel),
                reason: format!("name or link target longer than {MAX_ENTRY_NAME} bytes"),
            });
        }
        let mut pax = Vec::new();
        if name.len() > USTAR_NAME {
            pax_record(&mut pax, "path", name);
        }
        if let Some(link) = link.filter(|l| l.len() > USTAR_NAME) {
            pax_record(&mut pax, "linkpath", link);
        }
        for (key, value) in xattrs {
            pax_record(&mut pax, &format!("SCHILY.xattr.{key}"), value);
        }
        {
            // Names go in the name field as they are (the builder's path setters would drop a
            // directory's trailing `/`); a longer one is cut here and given whole by PAX.
            let old = h.as_old_mut();
            old.name = [0; USTAR_NAME];
            old.name[..name.len().min(USTAR_NAME)].copy_from_slice(&name[..name.len().min(USTAR_NAME)]);
            if let Some(link) = link {
                old.linkname = [0; USTAR_NAME];
                old.linkname[..link.len().min(USTAR_NAME)].copy_from_slice(&link[..link.len().min(USTAR_NAME)]);
            }
        }
        h.set_cksum();
        let write_err = |path: PathBuf| move |source| DiffError::Write { path, source };
        if !pax.is_empty() {
            let mut ph = blank_header(EntryType::XHeader);
            ph.set_size(pax.len() as u64);
            ph.as_old_mut().name[..14].copy_from_slice(b"././@PaxHeader");
            ph.set_cksum();
            self.tar.append(&ph, &pax[..]).map_err(write_err(self.path(rel)))?;
        }
        let (file, left) = match data {
            Some((file, size)) => (Some(file), size),
            None => (None, 0),
        };
        let mut reader = ExactReader { file, left, error: None };
        if let Err(e) = self.tar.append(&h, &mut reader) {
            return Err(match reader.error.take() {
                Some(source) => DiffError::Io { path: self.path(rel), source },
                None => DiffError::Write { path: self.path(rel), source: e },
            });
        }
        self.entries += 1;
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

    fn deleted(&mut self, rel: &[u8], dir: &Stat) -> Result<(), DiffError> {
        // Deletions carry no owner; their time is the directory's (that of the deletion, or later).
        let mut st = *dir;
        st.st_uid = 0;
        st.st_gid = 0;
        self.whiteout(rel, Some(&st))
    }
}

/// Integer conversion for `stat` fields, whose C types vary by architecture.
fn to_u64<T: TryInto<u64>>(v: T) -> u64 {
    v.try_into().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::apply::{apply_tar, ApplyOptions, WhiteoutMode};
    use rustix::fs::{Timespec, Timestamps, XattrFlags, CWD};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;

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
    fn an_overlay_layer_holds_whiteouts_opaque_markers_links_and_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let (upper, long) = tar_upper(tmp.path());
        let mut buf = Vec::new();
        let count = write_overlay_layer(&upper, &mut buf).unwrap();
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
        let r = write_overlay_layer(&upper, Vec::new());
        assert!(matches!(&r, Err(DiffError::Unsupported { path, .. }) if path.ends_with("etc/.wh.passwd")), "{r:?}");
        let r = write_native_layer(&upper, None, Vec::new());
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
        let count = write_native_layer(&fx.dir, Some(&fx.parent), &mut buf).unwrap();
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
        let count = write_native_layer(&fx.dir, None, &mut buf).unwrap();
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
        assert_eq!(write_overlay_layer(&upper, &mut buf).unwrap(), 2 * levels as u64);
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
        assert!(matches!(write_overlay_layer(&upper, Vec::new()), Err(DiffError::TooDeep { .. })));
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
        let count = write_overlay_layer(&upper, &mut buf).unwrap();
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
