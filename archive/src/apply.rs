//! Safe application of an OCI layer changeset (an uncompressed tar stream) to a directory.
//!
//! The archive is untrusted. Whatever it contains, nothing is created, modified or removed
//! outside the target directory. The rules that make this hold:
//!
//! - Entry names and hardlink targets are normalised to relative component lists; any `..`
//!   component, NUL byte or over-long name is refused ([`ApplyError::Hostile`]).
//! - The target directory is opened once. Every parent directory of an entry is resolved with
//!   `openat2(root, parent, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: symlinks met on the way
//!   (including ones written earlier by this very archive, absolute or full of `..`) are
//!   resolved as if `root` were `/`, so they can never lead out of it.
//! - The final operation is a `*at` syscall on that parent fd with a single name component,
//!   never following a symlink there (`O_NOFOLLOW`/`O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `linkat`
//!   without `AT_SYMLINK_FOLLOW`). Owners, modes, xattrs and times are set through the fd we
//!   just created, or on a name we just created ourselves in a directory only we write.
//! - Whatever sits at an entry's name is removed first (directories are merged), so a symlink
//!   planted by an earlier entry is replaced, never written through.
//!
//! Nobody else writes the target while a layer is applied (it is a fresh snapshot, invisible
//! until committed), so the only adversary is the archive itself, which acts strictly in
//! sequence.
//!
//! The archive may also try to exhaust resources. What we remember about it is keyed by
//! resolved directory identity (device, inode), never by archive path, and capped
//! ([`Limits`]); lookups stay cheap (symlink targets have at most
//! [`MAX_LINK_TARGET_COMPONENTS`] components, a missing parent is located with O(log n)
//! lookups); tree walks ([`super::walk`]) keep a bounded number of directory fds open however
//! deep the tree; a Native opaque marker clears a directory at most once per layer.
//!
//! The tar stream is read through [`super::reader`], which refuses entries that tar readers
//! do not all read alike (duplicate PAX records, a GNU long name beside a PAX path, ...) and
//! bounds their headers. The whiteout vocabulary comes from [`super::whiteout`], xattr handling
//! from [`super::xattr`].

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::reader::{show, TarError, TarReader};
use super::stack::{Stack, StackError};
use super::walk::{self, ident, open_dir_nofollow, retry_eagain, stat_ident, to_u64, Ident, Node, Visitor, WalkError, WalkOptions};
use super::whiteout::{self, Marker};
use super::xattr;

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are materialised: see [`WhiteoutMode`].
pub use super::whiteout::WhiteoutMode;

/// Options for [`apply_tar`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Overlay mode only: lower layer directories, topmost first. A hardlink whose target is
    /// not in this layer is satisfied by copying the target from the lowers, read as the one
    /// filesystem they make with overlay rules (see [`Stack`]).
    pub lowers: Vec<PathBuf>,
    /// Longest entry path accepted, in bytes (default 4096). Longer → error.
    pub max_path_len: usize,
    /// Most entries (so files, directories, links, whiteouts: inodes) one
    /// layer may hold; one more → error (default: no limit).
    pub max_entries: u64,
    /// Every entry's owner (uid, gid), whatever the archive says: a copy into a container
    /// without `-a`, or by a user who may not give files away. None: the archive's owners.
    pub owner: Option<(u32, u32)>,
    /// The archive is a copy (`cp`), not a layer: a `.wh.` name is refused rather than read
    /// as a whiteout, and an existing directory is never replaced by a non-directory or the
    /// reverse (it is an error, as in docker's cp). Use with [`WhiteoutMode::Overlay`] and no
    /// lowers: a hardlink's target must then be in the archive or already under the root.
    pub copy: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            lowers: Vec::new(),
            max_path_len: 4096,
            max_entries: u64::MAX,
            owner: None,
            copy: false,
        }
    }
}

/// What [`apply_tar`] did.
#[derive(Debug, Default, Clone)]
pub struct ApplyStats {
    /// Archive entries processed (PAX global headers are not counted).
    pub entries: u64,
    /// Regular file bytes written.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("unsafe entry {path:?} in layer: {reason}")]
    Hostile { path: String, reason: String },
    /// Truncated tar, corrupt headers, or an error of the underlying reader (whose message is
    /// kept as is: a decompressed-size cap, corrupt gzip, ...).
    #[error("reading layer archive: {0}")]
    Archive(#[source] std::io::Error),
    #[error("writing {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An entry type we do not extract (GNU sparse files, volume labels, unknown types).
    #[error("unsupported entry {path:?} in layer: {reason}")]
    Unsupported { path: String, reason: String },
    /// The layer has more entries than the limit allows.
    #[error("the layer has more than {max} entries (max_layer_entries)")]
    TooManyEntries { max: u64 },
    /// A hardlink whose target exists neither in this layer nor (overlay mode) in a lower.
    #[error("hardlink {path:?} points to {target:?}, which does not exist")]
    MissingLinkTarget { path: String, target: String },
    /// A copy ([`ApplyOptions::copy`]) would replace a directory with a non-directory, or the
    /// reverse.
    #[error("cannot overwrite {existing} {path:?} with a {new}")]
    KindConflict { path: String, existing: &'static str, new: &'static str },
}

impl From<TarError> for ApplyError {
    fn from(e: TarError) -> Self {
        match e {
            TarError::Read(e) => ApplyError::Archive(e),
            TarError::Ambiguous { path, reason } => ApplyError::Hostile { path, reason },
            TarError::Unsupported { path, reason } => ApplyError::Unsupported { path, reason },
        }
    }
}

/// Buffer for streaming file contents out of the archive.
const COPY_BUF: usize = 1 << 20;
/// Most components (`.` and `..` included) in a symlink target we create. The kernel follows
/// up to 40 symlinks per lookup, re-reading each target: long targets would make every later
/// lookup through them costly. Real targets have a few dozen components at most.
const MAX_LINK_TARGET_COMPONENTS: usize = 128;
/// The caps applied by [`apply_tar`].
const LIMITS: Limits = Limits { max_tracked: 1_000_000, max_tracked_bytes: 64 << 20, max_recopied_bytes: 1 << 30 };

/// Caps on what is remembered about a layer while it is applied (written names, directories
/// holding them, cleared directories, directory times, copies from lowers): at most
/// `max_tracked` items holding at most `max_tracked_bytes` bytes of names and paths. Beyond
/// that the layer is refused as too complex, so memory stays bounded whatever the archive.
/// Also: at most `max_recopied_bytes` bytes copied from lowers for files copied before (a
/// copy that a later entry replaced, for a later hardlink): first copies are bounded by the
/// size of the lowers, repeated ones are not.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_tracked: usize,
    max_tracked_bytes: usize,
    max_recopied_bytes: u64,
}

/// Applies the layer changeset read from `reader` (an uncompressed tar stream) to `root`.
///
/// On error the target is left half-written; the caller discards it. The reader is read to its
/// end (after the tar end-of-archive marker too), so a hashing reader sees every byte.
pub fn apply_tar<R: Read>(reader: R, root: &Path, opts: &ApplyOptions) -> Result<ApplyStats, ApplyError> {
    apply_tar_limited(reader, root, opts, LIMITS)
}

/// [`apply_tar`] into the directory open as `root` (a directory reached through a container's
/// root, where a path could not be trusted); `shown` names it in errors.
pub fn apply_tar_at<R: Read>(reader: R, root: BorrowedFd<'_>, shown: &str, opts: &ApplyOptions) -> Result<ApplyStats, ApplyError> {
    let root_err = |e: Errno| ApplyError::Io { path: shown.to_owned(), source: e.into() };
    // Reopened with O_RDONLY: `root` may be an O_PATH descriptor.
    let root_fd = rustix::fs::openat(root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(root_err)?;
    apply_tar_fd(reader, root_fd, shown, opts, LIMITS)
}

/// [`apply_tar`] with explicit [`Limits`] (tests use small ones).
fn apply_tar_limited<R: Read>(reader: R, root: &Path, opts: &ApplyOptions, limits: Limits) -> Result<ApplyStats, ApplyError> {
    // The root path itself comes from the caller and is trusted.
    let root_err = |e: Errno| ApplyError::Io { path: root.display().to_string(), source: e.into() };
    let root_fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(root_err)?;
    apply_tar_fd(reader, root_fd, &root.display().to_string(), opts, limits)
}

fn apply_tar_fd<R: Read>(reader: R, root_fd: OwnedFd, shown: &str, opts: &ApplyOptions, limits: Limits) -> Result<ApplyStats, ApplyError> {
    let root_err = |e: Errno| ApplyError::Io { path: shown.to_owned(), source: e.into() };
    let root_id = ident(root_fd.as_fd()).map_err(root_err)?;

    let mut archive = TarReader::new(reader);
    let mut applier = Applier {
        root: root_fd,
        root_id,
        opts,
        limits,
        stats: ApplyStats::default(),
        written: HashMap::new(),
        holds_written: HashSet::new(),
        cleared: HashSet::new(),
        dir_times: HashMap::new(),
        copied: HashMap::new(),
        lowers: None,
        tracked: 0,
        tracked_bytes: 0,
        recopied_bytes: 0,
        buf: vec![0; COPY_BUF],
    };

    // Where the header after the last entry starts.
    let mut next_header = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let consumed = applier.apply_entry(&mut entry)?;
        // Data we did not use (e.g. a size on a directory) is read and dropped so a truncated
        // stream is still noticed.
        let rest = io::copy(&mut entry, &mut io::sink()).map_err(ApplyError::Archive)?;
        if consumed + rest != entry.size() {
            return Err(truncated(&show(&entry.path_bytes()), entry.size(), consumed + rest));
        }
        next_header = entry.raw_file_position() + entry.size().div_ceil(512) * 512;
    }
    // A stream that ends between entries reads as a whole archive to the tar crate. A copy
    // must also have its end-of-archive block: else it was cut short (a layer is checked
    // by its digest instead).
    if opts.copy && archive.position() < next_header + 512 {
        return Err(ApplyError::Archive(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive ends without its end-of-archive blocks: it was cut short",
        )));
    }
    applier.finish()?;

    // Like containerd, accept and drain whatever follows the end-of-archive marker.
    let mut inner = archive.into_inner();
    io::copy(&mut inner, &mut io::sink()).map_err(ApplyError::Archive)?;
    Ok(applier.stats)
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    uid: Uid,
    gid: Gid,
    /// Permission bits including setuid/setgid/sticky.
    mode: Mode,
    mtime: Timespec,
    /// `SCHILY.xattr.NAME` records.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn times(&self) -> Timestamps {
        // atime is set to mtime: layers carry no meaningful access times.
        Timestamps { last_access: self.mtime, last_modification: self.mtime }
    }
}

struct Applier<'o> {
    root: OwnedFd,
    root_id: Ident,
    opts: &'o ApplyOptions,
    limits: Limits,
    stats: ApplyStats,
    /// Native mode: names this layer wrote, by the identity of the directory they were written
    /// in. Whatever path led there (through symlinks or not), a directory is one key.
    written: HashMap<Ident, HashSet<Vec<u8>>>,
    /// Native mode: directories that hold something this layer wrote (or an opaque marker of
    /// it), directly or further down: what an opaque marker above them keeps.
    holds_written: HashSet<Ident>,
    /// Native mode: directories an opaque marker has cleared. Everything in them since comes
    /// from this layer, so a later marker for them, or above them, need not look inside again.
    cleared: HashSet<Ident>,
    /// Directory mtimes, applied at the end (writing children changes them): by directory, the
    /// latest mtime and the path of the entry that set it (`.` is the root).
    dir_times: HashMap<Ident, (Timespec, Vec<u8>)>,
    /// Overlay mode: hardlink targets copied from a lower, by the identity of the lower file,
    /// so further links to the same file share the copy's inode.
    copied: HashMap<Ident, LowerCopy>,
    /// Overlay mode: the lowers, opened at the first hardlink that needs them.
    lowers: Option<Stack>,
    /// Items, and bytes of names and paths, held in the maps above (see [`Limits`]).
    tracked: usize,
    tracked_bytes: usize,
    /// Bytes of lower files copied again (see [`Limits`]).
    recopied_bytes: u64,
    buf: Vec<u8>,
}

/// Where the copy of a lower file was made, and what it looked like then.
struct LowerCopy {
    comps: Vec<Vec<u8>>,
    print: CopyPrint,
}

/// Identity, size, mtime and mode of a copy: an inode number alone may be reused by the file
/// that replaces it.
type CopyPrint = (Ident, i64, i64, i64, u32);

fn copy_print(st: &Stat) -> CopyPrint {
    (stat_ident(st), to_i64(st.st_size), to_i64(st.st_mtime), to_i64(st.st_mtime_nsec), st.st_mode)
}

impl Applier<'_> {
    /// Applies one entry; returns how many bytes of its data were read.
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<u64, ApplyError> {
        // PAX global headers were checked and skipped by the reader.
        let kind = entry.header().entry_type();
        self.stats.entries += 1;
        if self.stats.entries > self.opts.max_entries {
            return Err(ApplyError::TooManyEntries { max: self.opts.max_entries });
        }

        let raw = entry.path_bytes().into_owned();
        let shown = show(&raw);
        let comps = parse_path(&raw, self.opts.max_path_len, &shown)?;
        let mut meta = read_meta(entry, &shown)?;
        if let Some((uid, gid)) = self.opts.owner {
            (meta.uid, meta.gid) = owner(uid, gid, &shown)?;
        }

        let Some((name, parent)) = comps.split_last() else {
            // "", "/", "./": the root itself.
            if kind == EntryType::Directory {
                set_dir_metadata(self.root.as_fd(), &meta, &shown)?;
                self.note_dir_time(self.root_id, b".".to_vec(), meta.mtime, &shown)?;
                return Ok(0);
            }
            return Err(hostile(&shown, "only a directory entry may name the root"));
        };

        if let Some(marker) = whiteout::marker(name) {
            if self.opts.copy {
                return Err(unsupported(&shown, "a name starting with `.wh.` means a whiteout in a layer: a copy cannot hold one"));
            }
            self.whiteout(parent, marker, &shown)?;
            return Ok(0);
        }

        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => {}
            // Sparse files are refused rather than expanded: a tiny sparse map can describe
            // terabytes of zeros, bypassing the caller's decompressed-size cap. Standard image
            // tooling never writes them.
            EntryType::GNUSparse => {
                return Err(unsupported(&shown, "GNU sparse files are not supported"));
            }
            // Volume labels, multi-volume continuations, unknown vendor types: refuse rather
            // than guess.
            other => {
                return Err(unsupported(&shown, &format!("tar entry type {:?}", char::from(other.as_byte()))));
            }
        }

        let dir = self.ensure_dir(parent, &shown)?;
        let mut consumed = 0;
        match kind {
            EntryType::Directory => self.make_dir(&dir, &comps, &meta, &shown)?,
            EntryType::Symlink => {
                let target = link_name(entry, &shown)?;
                self.make_symlink(&dir, name, &target, &meta, &shown)?;
            }
            EntryType::Link => {
                let target = link_name(entry, &shown)?;
                self.hard_link(&dir, &comps, &target, &shown)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let dev = device(entry, kind, &shown)?;
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.make_node(&dir, name, ft, dev, &meta, &shown)?;
            }
            _ => consumed = self.write_file(&dir, name, entry, &meta, &shown)?,
        }
        self.note_written(dir.as_fd(), name, &shown)?;
        Ok(consumed)
    }

    /// Regular file: created fresh (`O_EXCL|O_NOFOLLOW`), contents streamed, then owner, mode
    /// (after chown, which clears setuid), xattrs and mtime set through the fd.
    fn write_file<R: Read>(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        shown: &str,
    ) -> Result<u64, ApplyError> {
        self.check_kind(dir.as_fd(), name, false, shown)?;
        clear_slot(dir.as_fd(), name, false).map_err(io_err(shown))?;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_err(shown))?;
        let mut file = File::from(fd);
        let mut total = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ApplyError::Archive(e)),
            };
            file.write_all(&self.buf[..n]).map_err(|e| ApplyError::Io { path: shown.to_owned(), source: e })?;
            total += n as u64;
        }
        // The tar crate reports a stream that ends inside an entry's data as a short read.
        if total != entry.size() {
            return Err(truncated(shown, entry.size(), total));
        }
        rustix::fs::fchown(&file, Some(meta.uid), Some(meta.gid)).map_err(io_err(shown))?;
        rustix::fs::fchmod(&file, meta.mode).map_err(io_err(shown))?;
        set_xattrs(file.as_fd(), &meta.xattrs, shown)?;
        rustix::fs::futimens(&file, &meta.times()).map_err(io_err(shown))?;
        self.stats.bytes += total;
        Ok(total)
    }

    /// Directory: an existing directory is kept (merged) and its metadata updated; anything
    /// else at the name is replaced.
    fn make_dir(&mut self, dir: &OwnedFd, comps: &[Vec<u8>], meta: &Meta, shown: &str) -> Result<(), ApplyError> {
        let name = last(comps);
        self.check_kind(dir.as_fd(), name, true, shown)?;
        let kept = clear_slot(dir.as_fd(), name, true).map_err(io_err(shown))?;
        if !kept {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(io_err(shown))?;
        }
        // O_NOFOLLOW: the name is a real directory (we just made or checked it); never chmod
        // or chown whatever a symlink points at.
        let fd = open_dir_nofollow(dir.as_fd(), name).map_err(io_err(shown))?;
        set_dir_metadata(fd.as_fd(), meta, shown)?;
        let id = ident(fd.as_fd()).map_err(io_err(shown))?;
        self.note_dir_time(id, join(comps), meta.mtime, shown)
    }

    /// Symlink: created as-is. Its target text is never followed by us.
    fn make_symlink(&mut self, dir: &OwnedFd, name: &[u8], target: &[u8], meta: &Meta, shown: &str) -> Result<(), ApplyError> {
        if target.len() > self.opts.max_path_len {
            return Err(hostile(shown, "symlink target is too long"));
        }
        if target.contains(&0) {
            return Err(hostile(shown, "symlink target contains a NUL byte"));
        }
        if target.split(|b| *b == b'/').filter(|c| !c.is_empty()).count() > MAX_LINK_TARGET_COMPONENTS {
            return Err(hostile(shown, &format!("symlink target has more than {MAX_LINK_TARGET_COMPONENTS} components")));
        }
        self.check_kind(dir.as_fd(), name, false, shown)?;
        clear_slot(dir.as_fd(), name, false).map_err(io_err(shown))?;
        rustix::fs::symlinkat(target, dir, name).map_err(io_err(shown))?;
        rustix::fs::chownat(dir, name, Some(meta.uid), Some(meta.gid), AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(shown))?;
        rustix::fs::utimensat(dir, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(shown))?;
        if !meta.xattrs.is_empty() {
            tracing::warn!(path = %shown, "ignoring xattrs on a symlink");
        }
        Ok(())
    }

    /// Character/block device or FIFO.
    fn make_node(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        ft: FileType,
        dev: rustix::fs::Dev,
        meta: &Meta,
        shown: &str,
    ) -> Result<(), ApplyError> {
        self.check_kind(dir.as_fd(), name, false, shown)?;
        clear_slot(dir.as_fd(), name, false).map_err(io_err(shown))?;
        rustix::fs::mknodat(dir, name, ft, Mode::from_raw_mode(0o600), dev).map_err(io_err(shown))?;
        rustix::fs::chownat(dir, name, Some(meta.uid), Some(meta.gid), AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(shown))?;
        chmod_fresh_node(dir.as_fd(), name, meta.mode).map_err(io_err(shown))?;
        rustix::fs::utimensat(dir, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(shown))?;
        if !meta.xattrs.is_empty() {
            // Setting them would need an fd: opening a device node could have side effects,
            // and an O_PATH fd does not accept fsetxattr.
            tracing::warn!(path = %shown, "ignoring xattrs on a device or FIFO");
        }
        Ok(())
    }

    /// Hardlink `comps` → `target` (relative to the root). linkat without AT_SYMLINK_FOLLOW
    /// links the target entry itself: a link to a symlink is a link to the symlink.
    fn hard_link(&mut self, dir: &OwnedFd, comps: &[Vec<u8>], target: &[u8], shown: &str) -> Result<(), ApplyError> {
        let target_shown = show(target);
        let tcomps = parse_path(target, self.opts.max_path_len, &target_shown).map_err(|e| match e {
            ApplyError::Hostile { reason, .. } => hostile(shown, &format!("hardlink target {target_shown:?}: {reason}")),
            other => other,
        })?;
        if tcomps.is_empty() {
            return Err(hostile(shown, "hardlink to the root directory"));
        }
        let name = last(comps);
        self.check_kind(dir.as_fd(), name, false, shown)?;
        clear_slot(dir.as_fd(), name, false).map_err(io_err(shown))?;

        // The target in this layer (or, in Native mode, anywhere in the snapshot).
        if self.link_in_root(&tcomps, dir, name, shown)? {
            return Ok(());
        }
        if self.opts.whiteouts == WhiteoutMode::Overlay {
            if let Some((ldir, st)) = self.find_in_lowers(&tcomps, shown)? {
                let source = stat_ident(&st);
                if let Some(copy) = self.copied.get(&source) {
                    if self.link_copy(copy, dir, name, shown)? {
                        return Ok(());
                    }
                    // The copy was replaced or removed (a tar may repeat an entry): copy
                    // again, within a budget, or pairs of tiny link-and-replace entries could
                    // write a large lower file over and over.
                    self.recopied_bytes = self.recopied_bytes.saturating_add(to_u64(st.st_size));
                    if self.recopied_bytes > self.limits.max_recopied_bytes {
                        return Err(unsupported(
                            shown,
                            &format!("layer too complex: over {} bytes copied again from lower layers", self.limits.max_recopied_bytes),
                        ));
                    }
                }
                self.copy_lower(ldir.as_fd(), last(&tcomps), &st, dir, name, shown)?;
                let made = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(shown))?;
                let bytes = comps.iter().map(Vec::len).sum();
                let old = self.copied.insert(source, LowerCopy { comps: comps.to_vec(), print: copy_print(&made) });
                self.retrack(old.map(|c| c.comps.iter().map(Vec::len).sum()), bytes, shown)?;
                return Ok(());
            }
        }
        Err(ApplyError::MissingLinkTarget { path: shown.to_owned(), target: target_shown })
    }

    /// Links the in-root entry `tcomps` at `dir`/`name`; false if it does not exist.
    fn link_in_root(&self, tcomps: &[Vec<u8>], dir: &OwnedFd, name: &[u8], shown: &str) -> Result<bool, ApplyError> {
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Ok(false);
        };
        let tdir = match open_in_root(self.root.as_fd(), tparent) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(false),
            Err(e) => return Err(io_err(shown)(e)),
        };
        match rustix::fs::linkat(&tdir, tname, dir, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err(shown)(e)),
        }
    }

    /// Links the earlier copy of a lower file at `dir`/`name`, if it is still where it was
    /// made (a later entry may have replaced or removed it); false if not.
    fn link_copy(&self, copy: &LowerCopy, dir: &OwnedFd, name: &[u8], shown: &str) -> Result<bool, ApplyError> {
        let Some((cname, cparent)) = copy.comps.split_last() else {
            return Ok(false);
        };
        let cdir = match open_in_root(self.root.as_fd(), cparent) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(false),
            Err(e) => return Err(io_err(shown)(e)),
        };
        match rustix::fs::statat(&cdir, cname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if copy_print(&st) == copy.print => {}
            Ok(_) | Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(io_err(shown)(e)),
        }
        // Nobody else writes the target: the name still is the copy.
        match rustix::fs::linkat(&cdir, cname, dir, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err(shown)(e)),
        }
    }

    /// Overlay mode: finds the hardlink target in the lowers, read as the one filesystem they
    /// make with overlay rules ([`Stack`]: whiteouts, opaque directories, symlinks on the way
    /// resolved inside the lowers); returns its directory there and its metadata. None when
    /// the lowers do not show it.
    fn find_in_lowers(&mut self, tcomps: &[Vec<u8>], shown: &str) -> Result<Option<(OwnedFd, Stat)>, ApplyError> {
        if self.opts.lowers.is_empty() {
            return Ok(None);
        }
        let stack_err = |e: StackError| match e {
            StackError::Io { path, source } => ApplyError::Io { path: path.display().to_string(), source },
            StackError::TooLarge { .. } => io_err(shown)(Errno::FBIG),
        };
        let lowers = match &mut self.lowers {
            Some(lowers) => lowers,
            None => self.lowers.insert(Stack::open(&self.opts.lowers, WhiteoutMode::Overlay).map_err(stack_err)?),
        };
        // Not following the last component: a link to a symlink links the symlink.
        Ok(lowers.resolve(&join(tcomps), false).map_err(stack_err)?.map(|r| (r.dir, r.st)))
    }

    /// Copies the lower file `tname` in `ldir` (whose metadata is `st`) to `dir`/`name`.
    fn copy_lower(
        &mut self,
        ldir: BorrowedFd<'_>,
        tname: &[u8],
        st: &Stat,
        dir: &OwnedFd,
        name: &[u8],
        shown: &str,
    ) -> Result<(), ApplyError> {
        let (uid, gid) = owner(st.st_uid, st.st_gid, shown)?;
        let meta = Meta {
            uid,
            gid,
            mode: Mode::from_raw_mode(st.st_mode & 0o7777),
            mtime: Timespec { tv_sec: to_i64(st.st_mtime), tv_nsec: to_i64(st.st_mtime_nsec) },
            xattrs: Vec::new(),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Err(hostile(shown, "hardlink target is a directory")),
            FileType::RegularFile => self.copy_regular(ldir, tname, dir, name, &meta, shown),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(ldir, tname, Vec::new()).map_err(io_err(shown))?;
                self.make_symlink(dir, name, target.as_bytes(), &meta, shown)
            }
            ft @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
                self.make_node(dir, name, ft, to_u64(st.st_rdev), &meta, shown)
            }
            other => Err(unsupported(shown, &format!("hardlink target in a lower layer is a {other:?}"))),
        }
    }

    fn copy_regular(
        &mut self,
        ldir: BorrowedFd<'_>,
        tname: &[u8],
        dir: &OwnedFd,
        name: &[u8],
        meta: &Meta,
        shown: &str,
    ) -> Result<(), ApplyError> {
        let src = rustix::fs::openat(ldir, tname, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK, Mode::empty())
            .map_err(io_err(shown))?;
        let st = rustix::fs::fstat(&src).map_err(io_err(shown))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io_err(shown)(Errno::INVAL));
        }
        let dst = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_err(shown))?;
        let mut src = File::from(src);
        let mut dst = File::from(dst);
        let n = io::copy(&mut src, &mut dst).map_err(|e| ApplyError::Io { path: shown.to_owned(), source: e })?;
        rustix::fs::fchown(&dst, Some(meta.uid), Some(meta.gid)).map_err(io_err(shown))?;
        rustix::fs::fchmod(&dst, meta.mode).map_err(io_err(shown))?;
        copy_xattrs(src.as_fd(), dst.as_fd(), shown)?;
        rustix::fs::futimens(&dst, &meta.times()).map_err(io_err(shown))?;
        self.stats.bytes += n;
        Ok(())
    }

    /// `.wh..wh..opq`, `.wh.NAME` and AUFS metadata names in directory `parent`.
    fn whiteout(&mut self, parent: &[Vec<u8>], marker: Marker<'_>, shown: &str) -> Result<(), ApplyError> {
        let hidden = match marker {
            Marker::Opaque => {
                let dir = self.ensure_dir(parent, shown)?;
                match self.opts.whiteouts {
                    WhiteoutMode::Overlay => whiteout::set_overlay_opaque(dir.as_fd()).map_err(io_err(shown))?,
                    WhiteoutMode::Native => {
                        // The marker belongs to this layer: an opaque marker above keeps its directory.
                        let id = ident(dir.as_fd()).map_err(io_err(shown))?;
                        self.note_holds_written(dir.as_fd(), id, shown)?;
                        self.clear_unwritten(dir, id, shown)?;
                    }
                }
                return Ok(());
            }
            Marker::Meta => {
                tracing::debug!(path = %shown, "skipping AUFS metadata entry");
                return Ok(());
            }
            Marker::Whiteout(hidden) => hidden,
        };
        if matches!(hidden, b"" | b"." | b"..") {
            // Would whiteout the directory itself or its parent.
            return Err(hostile(shown, "whiteout of an empty, `.` or `..` name"));
        }
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                let dir = self.ensure_dir(parent, shown)?;
                clear_slot(dir.as_fd(), hidden, false).map_err(io_err(shown))?;
                whiteout::make_overlay_whiteout(dir.as_fd(), hidden).map_err(io_err(shown))?;
            }
            WhiteoutMode::Native => {
                let dir = match open_in_root(self.root.as_fd(), parent) {
                    Ok(fd) => fd,
                    // Nothing there to remove.
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(io_err(shown)(e)),
                };
                remove_any(dir.as_fd(), hidden).map_err(io_err(shown))?;
            }
        }
        Ok(())
    }

    /// Native opaque directory `dir` (identity `id`): removes every entry in it that this layer
    /// did not write. A directory kept because this layer wrote it or something below it is
    /// cleared the same way, so older content below it disappears as well. Each directory is
    /// cleared at most once per layer (see `cleared`); the walk keeps a bounded number of fds
    /// open ([`walk`]).
    fn clear_unwritten(&mut self, dir: OwnedFd, id: Ident, shown: &str) -> Result<(), ApplyError> {
        if !self.cleared.insert(id) {
            return Ok(());
        }
        self.track(1, 0, shown)?;
        walk::walk(dir, None, WalkOptions::default(), &mut Clearer { applier: self, shown })
    }

    /// Opens directory `comps` resolved inside the root, creating missing components (0755,
    /// owned by us) each with mkdirat on the fd of its in-root-resolved parent.
    fn ensure_dir(&self, comps: &[Vec<u8>], shown: &str) -> Result<OwnedFd, ApplyError> {
        let root = self.root.as_fd();
        match open_in_root(root, comps) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(shown)(e)),
        }
        // Something is missing. `comps[k]` is the first component that does not resolve
        // (found with few in-root lookups, see `deepest_dir`: resolving prefix after prefix
        // from the root would expand every symlink on the way again each time). Whatever is
        // below it is created in fresh directories.
        let (k, mut cur) = deepest_dir(root, comps).map_err(io_err(shown))?;
        for (i, name) in comps.iter().enumerate().skip(k) {
            cur = match open_dir_nofollow(cur.as_fd(), name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)).map_err(io_err(shown))?;
                    let fd = open_dir_nofollow(cur.as_fd(), name).map_err(io_err(shown))?;
                    // mkdirat's mode is filtered by the umask.
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755)).map_err(io_err(shown))?;
                    fd
                }
                // A symlink (or a non-directory, which fails here too) that does not resolve:
                // a dangling symlink fails with ENOENT, we do not create directories through
                // symlinks. (Only `comps[k]` can be one, and it does not resolve.)
                Err(Errno::LOOP | Errno::NOTDIR) => open_in_root(root, &comps[..=i]).map_err(io_err(shown))?,
                Err(e) => return Err(io_err(shown)(e)),
            };
        }
        Ok(cur)
    }

    /// A copy replaces no directory with a non-directory (`is_dir` false), nor the reverse.
    fn check_kind(&self, dir: BorrowedFd<'_>, name: &[u8], is_dir: bool, shown: &str) -> Result<(), ApplyError> {
        if !self.opts.copy {
            return Ok(());
        }
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io_err(shown)(e)),
        };
        let was_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if was_dir == is_dir {
            return Ok(());
        }
        let kind = |d: bool| if d { "directory" } else { "non-directory" };
        Err(ApplyError::KindConflict { path: shown.to_owned(), existing: kind(was_dir), new: kind(is_dir) })
    }

    /// Native mode: records that this layer wrote `name` in `dir`.
    fn note_written(&mut self, dir: BorrowedFd<'_>, name: &[u8], shown: &str) -> Result<(), ApplyError> {
        if self.opts.whiteouts != WhiteoutMode::Native {
            return Ok(());
        }
        let id = ident(dir).map_err(io_err(shown))?;
        let new_dir = !self.written.contains_key(&id);
        let new_name = self.written.entry(id).or_default().insert(name.to_vec());
        self.track(usize::from(new_dir) + usize::from(new_name), if new_name { name.len() } else { 0 }, shown)?;
        self.note_holds_written(dir, id, shown)
    }

    /// Native mode: records that `dir` (identity `id`) and its ancestors up to the root hold
    /// something this layer wrote. Climbs with `..` (`dir` is beneath the root, so the root is
    /// met first) and stops at the first directory already recorded, whose ancestors are too:
    /// each directory is climbed through once per layer.
    fn note_holds_written(&mut self, dir: BorrowedFd<'_>, id: Ident, shown: &str) -> Result<(), ApplyError> {
        if !self.holds_written.insert(id) {
            return Ok(());
        }
        self.track(1, 0, shown)?;
        let mut cur_id = id;
        let mut cur: Option<OwnedFd> = None;
        while cur_id != self.root_id {
            let from = cur.as_ref().map_or(dir, |fd| fd.as_fd());
            let up = rustix::fs::openat(from, "..", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(io_err(shown))?;
            cur_id = ident(up.as_fd()).map_err(io_err(shown))?;
            // (At `/`, `..` is `/` again: recorded on the first pass, so the loop ends.)
            if !self.holds_written.insert(cur_id) {
                break;
            }
            self.track(1, 0, shown)?;
            cur = Some(up);
        }
        Ok(())
    }

    /// Records the mtime a directory entry gave directory `id` (at entry path `path`).
    fn note_dir_time(&mut self, id: Ident, path: Vec<u8>, mtime: Timespec, shown: &str) -> Result<(), ApplyError> {
        let bytes = path.len();
        let old = self.dir_times.insert(id, (mtime, path));
        self.retrack(old.map(|(_, p)| p.len()), bytes, shown)
    }

    /// Accounts for `items` more tracked items holding `bytes` more bytes (see [`Limits`]).
    fn track(&mut self, items: usize, bytes: usize, shown: &str) -> Result<(), ApplyError> {
        self.tracked += items;
        self.tracked_bytes += bytes;
        if self.tracked > self.limits.max_tracked || self.tracked_bytes > self.limits.max_tracked_bytes {
            return Err(unsupported(
                shown,
                &format!(
                    "layer too complex: more than {} tracked entries or {} bytes of tracked names",
                    self.limits.max_tracked, self.limits.max_tracked_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Accounts for a map value of `bytes` bytes that replaced one of `old` bytes, if any.
    fn retrack(&mut self, old: Option<usize>, bytes: usize, shown: &str) -> Result<(), ApplyError> {
        match old {
            Some(old) => {
                self.tracked_bytes = self.tracked_bytes.saturating_sub(old);
                self.track(0, bytes, shown)
            }
            None => self.track(1, bytes, shown),
        }
    }

    /// Sets directory mtimes, now that all children are written. A directory replaced or
    /// removed by a later entry is skipped: only the directory the entry named gets its time.
    fn finish(&mut self) -> Result<(), ApplyError> {
        for (id, (mtime, key)) in &self.dir_times {
            let fd = match retry_eagain(|| {
                rustix::fs::openat2(
                    &self.root,
                    key.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                )
            }) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(io_err(&show(key))(e)),
            };
            if ident(fd.as_fd()).map_err(io_err(&show(key)))? != *id {
                continue;
            }
            let times = Timestamps { last_access: *mtime, last_modification: *mtime };
            rustix::fs::futimens(&fd, &times).map_err(io_err(&show(key)))?;
        }
        Ok(())
    }
}

/// Opens the directory `comps` (relative to `root`) with every symlink on the way resolved
/// as if `root` were `/`: the result is always `root` or a directory beneath it.
fn open_in_root(root: BorrowedFd<'_>, comps: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
    #[cfg(test)]
    tests::LOOKUPS.with(|n| n.set(n.get() + 1));
    let path = join(comps);
    retry_eagain(|| {
        rustix::fs::openat2(
            root,
            path.as_slice(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    })
}

/// Given that `comps` does not resolve in `root`: the longest prefix of it that does (to a
/// directory), as its length and that directory. Resolvable prefixes are exactly the shorter
/// ones (resolving a path resolves each of its prefixes on the way), so a search finds it:
/// galloping back from the end (dropping 1, 2, 4, ... components), then bisecting. That costs
/// O(log m) lookups when m components are missing (m directories are then created), however
/// long the path and however many symlinks it has.
fn deepest_dir(root: BorrowedFd<'_>, comps: &[Vec<u8>]) -> rustix::io::Result<(usize, OwnedFd)> {
    // comps[..lo] resolves (to lo_fd, None for the root); comps[..hi] does not.
    let (mut lo, mut lo_fd, mut hi) = (0, None, comps.len());
    let mut gallop = Some(1);
    while hi - lo > 1 {
        let mid = match gallop {
            Some(step) => comps.len().saturating_sub(step).max(lo + 1),
            None => lo + (hi - lo) / 2,
        };
        match open_in_root(root, &comps[..mid]) {
            Ok(fd) => {
                lo = mid;
                lo_fd = Some(fd);
                gallop = None;
            }
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                hi = mid;
                gallop = gallop.map(|step: usize| step.saturating_mul(2));
            }
            Err(e) => return Err(e),
        }
    }
    let fd = match lo_fd {
        Some(fd) => fd,
        None => open_in_root(root, &[])?,
    };
    Ok((lo, fd))
}

/// Makes room for a new entry `name` in `dir`, never following a symlink there. An existing
/// directory is kept when `keep_dir` (returns true); anything else is removed.
fn clear_slot(dir: BorrowedFd<'_>, name: &[u8], keep_dir: bool) -> rustix::io::Result<bool> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        if keep_dir {
            return Ok(true);
        }
        remove_tree(dir, name)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(false)
}

/// Removes `name` from `dir` whatever it is (recursively for a directory); absent is fine.
fn remove_any(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    clear_slot(dir, name, false).map(|_| ())
}

/// Removes directory `name` in `dir` and everything below it. Each level is opened with
/// O_NOFOLLOW relative to its parent's fd, so a symlink inside is unlinked, never entered.
/// Iterative, with a bounded number of fds ([`walk`]): trees can be thousands of levels deep.
fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    walk::walk(open_dir_nofollow(dir, name)?, None, WalkOptions::default(), &mut Remover)?;
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// [`remove_tree`]: unlinks every entry, and each directory once the walk has left it.
struct Remover;

impl Visitor for Remover {
    type Error = Errno;

    fn walk_error(&self, e: WalkError) -> Errno {
        e.errno()
    }

    fn node(&mut self, node: &Node<'_>) -> Result<bool, Errno> {
        let Some(new) = &node.new else { return Ok(false) };
        if new.dir.is_some() {
            return Ok(true);
        }
        unlink_entry(new.parent, node.name)?;
        Ok(false)
    }

    fn leave(&mut self, _: &[u8], name: &[u8], parent: BorrowedFd<'_>) -> Result<(), Errno> {
        rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
    }
}

/// [`Applier::clear_unwritten`]: removes what this layer did not write, and walks into the
/// directories it keeps to clear them too.
struct Clearer<'a, 'o> {
    applier: &'a mut Applier<'o>,
    shown: &'a str,
}

impl Visitor for Clearer<'_, '_> {
    type Error = ApplyError;

    fn walk_error(&self, e: WalkError) -> ApplyError {
        io_err(self.shown)(e.errno())
    }

    fn node(&mut self, node: &Node<'_>) -> Result<bool, ApplyError> {
        let (shown, applier) = (self.shown, &mut *self.applier);
        let Some(new) = &node.new else { return Ok(false) };
        let written = applier.written.get(&new.parent_id).is_some_and(|names| names.contains(node.name));
        if new.dir.is_none() {
            if !written {
                unlink_entry(new.parent, node.name).map_err(io_err(shown))?;
            }
            return Ok(false);
        }
        let child_id = stat_ident(new.st);
        if !written && !applier.holds_written.contains(&child_id) {
            remove_tree(new.parent, node.name).map_err(io_err(shown))?;
            return Ok(false);
        }
        if !applier.cleared.insert(child_id) {
            // Cleared already: only this layer's entries are below.
            return Ok(false);
        }
        applier.track(1, 0, shown)?;
        Ok(true)
    }

    fn leave(&mut self, _: &[u8], _: &[u8], _: BorrowedFd<'_>) -> Result<(), ApplyError> {
        Ok(())
    }
}

/// Unlinks non-directory `name` in `dir`; absent is fine.
fn unlink_entry(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets the mode of a node we just created with mknodat. Linux has no fchmodat with
/// AT_SYMLINK_NOFOLLOW (rustix reports EOPNOTSUPP), and fchmod cannot use an O_PATH fd, while
/// opening a device node for real could have side effects. The name was created by us a
/// moment ago in a directory nobody else writes; we still check it is not a symlink.
fn chmod_fresh_node(dir: BorrowedFd<'_>, name: &[u8], mode: Mode) -> rustix::io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Err(Errno::LOOP);
    }
    rustix::fs::chmodat(dir, name, mode, AtFlags::empty())
}

/// Owner, mode and xattrs of a directory, through its fd (its mtime is set by `finish`).
fn set_dir_metadata(fd: BorrowedFd<'_>, meta: &Meta, shown: &str) -> Result<(), ApplyError> {
    rustix::fs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(io_err(shown))?;
    rustix::fs::fchmod(fd, meta.mode).map_err(io_err(shown))?;
    set_xattrs(fd, &meta.xattrs, shown)
}

/// Sets archive xattrs on `fd`. Overlay-private names are skipped; names the filesystem or
/// our privileges refuse (ENOTSUP, EPERM) are skipped with a warning.
fn set_xattrs(fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)], shown: &str) -> Result<(), ApplyError> {
    for (name, value) in xattrs {
        set_xattr(fd, name, value, shown)?;
    }
    Ok(())
}

fn set_xattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8], shown: &str) -> Result<(), ApplyError> {
    if xattr::is_overlay_private(name) {
        tracing::warn!(path = %shown, xattr = %show(name), "ignoring overlayfs xattr from layer");
        return Ok(());
    }
    match rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(e @ (Errno::OPNOTSUPP | Errno::PERM)) => {
            tracing::warn!(path = %shown, xattr = %show(name), error = %e, "xattr not applied");
            Ok(())
        }
        Err(e) => Err(io_err(shown)(e)),
    }
}

/// Copies xattrs (except overlay-private ones) from `src` to `dst`.
fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, shown: &str) -> Result<(), ApplyError> {
    for (name, value) in xattr::read(src, |name| !xattr::is_overlay_private(name)).map_err(io_err(shown))? {
        set_xattr(dst, &name, &value, shown)?;
    }
    Ok(())
}

/// Splits an entry name into components, dropping empty and `.` ones (so a leading `/` or
/// `./` makes no difference: absolute names are taken relative to the root, as tar does).
fn parse_path(raw: &[u8], max: usize, shown: &str) -> Result<Vec<Vec<u8>>, ApplyError> {
    if raw.len() > max {
        return Err(hostile(shown, &format!("path is {} bytes long, the limit is {max}", raw.len())));
    }
    if raw.contains(&0) {
        return Err(hostile(shown, "path contains a NUL byte"));
    }
    let mut comps = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(hostile(shown, "path has a `..` component")),
            _ => comps.push(comp.to_vec()),
        }
    }
    Ok(comps)
}

/// Components joined with `/`; `.` for none (the root).
fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    comps.join(&b'/')
}

fn last(comps: &[Vec<u8>]) -> &[u8] {
    comps.last().map_or(b".", Vec::as_slice)
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta, ApplyError> {
    let bad =
        |what: &str, e: io::Error| ApplyError::Archive(io::Error::new(io::ErrorKind::InvalidData, format!("{shown:?}: bad {what}: {e}")));
    let out_of_range =
        |what: &str| ApplyError::Archive(io::Error::new(io::ErrorKind::InvalidData, format!("{shown:?}: {what} out of range")));
    let header = entry.header();
    // Numeric ids only (uname/gname are ignored). The tar crate already applied PAX uid/gid.
    let uid = header.uid().map_err(|e| bad("uid", e))?;
    let gid = header.gid().map_err(|e| bad("gid", e))?;
    let uid = u32::try_from(uid).map_err(|_| out_of_range("uid"))?;
    let gid = u32::try_from(gid).map_err(|_| out_of_range("gid"))?;
    let (uid, gid) = owner(uid, gid, shown)?;
    let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
    let secs = header.mtime().map_err(|e| bad("mtime", e))?;
    let mut mtime = Timespec { tv_sec: i64::try_from(secs).map_err(|_| out_of_range("mtime"))?, tv_nsec: 0 };

    let mut xattrs = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Archive)? {
        for ext in exts {
            let ext = ext.map_err(ApplyError::Archive)?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
            } else if key == b"mtime" {
                if let Some(ts) = parse_pax_time(ext.value_bytes()) {
                    mtime = ts;
                }
            }
            // Other records (path, linkpath, size, uid, gid are applied by the tar crate;
            // atime, ctime, uname, gname, LIBARCHIVE.xattr.*, ...) are ignored. PAX sparse
            // files (GNU.sparse.*) were refused by the reader, like GNU ones (see apply_entry).
        }
    }
    Ok(Meta { uid, gid, mode: Mode::from_raw_mode(mode), mtime, xattrs })
}

/// Numeric owner ids as rustix types. 4294967295 (-1) is no id: chown reads it as "leave
/// unchanged" (and rustix asserts against it).
fn owner(uid: u32, gid: u32, shown: &str) -> Result<(Uid, Gid), ApplyError> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(hostile(shown, "owner id 4294967295 (-1) is not a valid id"));
    }
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

/// Parses a PAX time (`[-]SECONDS[.FRACTION]`); None if malformed (the header's is used).
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = secs.starts_with('-');
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nsec: i64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        nsec = nsec * 10 + digit;
    }
    if negative && nsec > 0 {
        // -1.5 is 1.5 s before the epoch: tv_sec -2, tv_nsec 0.5e9.
        Some(Timespec { tv_sec: secs.checked_sub(1)?, tv_nsec: 1_000_000_000 - nsec })
    } else {
        Some(Timespec { tv_sec: secs, tv_nsec: nsec })
    }
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, shown: &str) -> Result<Vec<u8>, ApplyError> {
    match entry.link_name_bytes() {
        Some(name) if !name.is_empty() => Ok(name.into_owned()),
        _ => Err(ApplyError::Archive(io::Error::new(io::ErrorKind::InvalidData, format!("{shown:?}: link entry without a target")))),
    }
}

fn device<R: Read>(entry: &tar::Entry<'_, R>, kind: EntryType, shown: &str) -> Result<rustix::fs::Dev, ApplyError> {
    if kind == EntryType::Fifo {
        return Ok(0);
    }
    let header = entry.header();
    let bad = |e: Option<io::Error>| {
        let detail = e.map_or_else(|| "missing".to_owned(), |e| e.to_string());
        ApplyError::Archive(io::Error::new(io::ErrorKind::InvalidData, format!("{shown:?}: bad device number: {detail}")))
    };
    let major = header.device_major().map_err(|e| bad(Some(e)))?.ok_or_else(|| bad(None))?;
    let minor = header.device_minor().map_err(|e| bad(Some(e)))?.ok_or_else(|| bad(None))?;
    Ok(rustix::fs::makedev(major, minor))
}

fn hostile(shown: &str, reason: &str) -> ApplyError {
    ApplyError::Hostile { path: shown.to_owned(), reason: reason.to_owned() }
}

fn unsupported(shown: &str, reason: &str) -> ApplyError {
    ApplyError::Unsupported { path: shown.to_owned(), reason: reason.to_owned() }
}

fn truncated(shown: &str, expected: u64, got: u64) -> ApplyError {
    ApplyError::Archive(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("archive ends inside {shown:?}: {got} of {expected} data bytes"),
    ))
}

fn io_err(shown: &str) -> impl FnOnce(Errno) -> ApplyError + '_ {
    move |e| ApplyError::Io { path: shown.to_owned(), source: e.into() }
}

/// Integer conversion for `stat` fields, whose C types vary by architecture.
fn to_i64<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use tar::Header;

    const MTIME: u64 = 1_600_000_000;
    const VICTIM_DATA: &[u8] = b"victim-data";

    use crate::walk::LISTINGS;

    thread_local! {
        /// In-root lookups (`open_in_root`) made by this thread.
        pub(super) static LOOKUPS: Cell<u64> = const { Cell::new(0) };
    }

    /// Builds tar streams byte by byte, so names the `tar` Builder would refuse can be written.
    #[derive(Default)]
    struct Layer {
        buf: Vec<u8>,
    }

    impl Layer {
        fn new() -> Self {
            Self::default()
        }

        /// One entry; names over 100 bytes get a GNU long-name record first.
        fn entry(&mut self, name: &[u8], kind: EntryType, data: &[u8], link: &[u8], tweak: impl FnOnce(&mut Header)) -> &mut Self {
            if name.len() > 100 {
                let long = [name, b"\0"].concat();
                self.raw(b"././@LongLink", EntryType::GNULongName, &long, b"", |_| {});
            }
            self.raw(&name[..name.len().min(100)], kind, data, link, tweak)
        }

        fn raw(&mut self, name: &[u8], kind: EntryType, data: &[u8], link: &[u8], tweak: impl FnOnce(&mut Header)) -> &mut Self {
            let mut h = Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            {
                let old = h.as_old_mut();
                old.name = [0; 100];
                old.name[..name.len()].copy_from_slice(name);
                old.linkname = [0; 100];
                old.linkname[..link.len()].copy_from_slice(link);
            }
            tweak(&mut h);
            h.set_cksum();
            self.buf.extend_from_slice(h.as_bytes());
            self.buf.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.buf.extend(std::iter::repeat_n(0u8, pad));
            self
        }

        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.entry(name.as_bytes(), EntryType::Regular, data, b"", |_| {})
        }

        fn dir(&mut self, name: &str) -> &mut Self {
            self.entry(name.as_bytes(), EntryType::Directory, b"", b"", |_| {})
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name.as_bytes(), EntryType::Symlink, b"", target.as_bytes(), |_| {})
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name.as_bytes(), EntryType::Link, b"", target.as_bytes(), |_| {})
        }

        /// A PAX extended header for the next entry.
        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
            let mut data = Vec::new();
            for (key, value) in records {
                let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
                let mut len = body_len + 1;
                while len != body_len + len.to_string().len() {
                    len = body_len + len.to_string().len();
                }
                data.extend_from_slice(format!("{len} {key}=").as_bytes());
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            self.raw(b"PaxHeaders/x", EntryType::XHeader, &data, b"", |_| {})
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = self.buf.clone();
            out.extend_from_slice(&[0; 1024]);
            out
        }
    }

    /// A temp dir holding `root/` (the target) and a sibling `victim/x` that must never change.
    struct Fixture {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        root: PathBuf,
        victim: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let root = base.join("root");
        let victim = base.join("victim");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("x"), VICTIM_DATA).unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(victim.join("x"), fs::Permissions::from_mode(0o644)).unwrap();
        Fixture { _tmp: tmp, base, root, victim }
    }

    impl Fixture {
        fn victim_str(&self) -> &str {
            self.victim.to_str().unwrap()
        }

        fn apply(&self, layer: &Layer, opts: &ApplyOptions) -> Result<ApplyStats, ApplyError> {
            apply_tar(&layer.bytes()[..], &self.root, opts)
        }

        fn apply_limited(&self, layer: &Layer, opts: &ApplyOptions, max_tracked: usize) -> Result<ApplyStats, ApplyError> {
            apply_tar_limited(&layer.bytes()[..], &self.root, opts, Limits { max_tracked, ..LIMITS })
        }

        /// Everything outside `root/`, with type, mode, owner, link count and contents.
        fn outside(&self) -> BTreeMap<PathBuf, String> {
            let mut out = BTreeMap::new();
            walk(&self.base, &self.root, &mut out);
            out
        }

        fn assert_victim_intact(&self, before: &BTreeMap<PathBuf, String>) {
            assert_eq!(&self.outside(), before, "something outside the root changed");
            let md = fs::symlink_metadata(self.victim.join("x")).unwrap();
            assert_eq!(md.nlink(), 1, "victim file gained a hardlink");
            assert_eq!(fs::read(self.victim.join("x")).unwrap(), VICTIM_DATA);
            let vmd = fs::symlink_metadata(&self.victim).unwrap();
            assert_eq!(vmd.mode() & 0o7777, 0o755);
        }
    }

    fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for path in names {
            if path == skip {
                continue;
            }
            let md = fs::symlink_metadata(&path).unwrap();
            let common = format!("{:o} {}:{} nlink={} mtime={}", md.mode(), md.uid(), md.gid(), md.nlink(), md.mtime());
            let desc = if md.file_type().is_symlink() {
                format!("link {common} -> {:?}", fs::read_link(&path).unwrap())
            } else if md.is_dir() {
                walk(&path, skip, out);
                format!("dir {common}")
            } else if md.is_file() {
                format!("file {common} {:?}", fs::read(&path).unwrap())
            } else {
                format!("other {common}")
            };
            out.insert(path, desc);
        }
    }

    fn overlay() -> ApplyOptions {
        ApplyOptions::default()
    }

    fn native() -> ApplyOptions {
        ApplyOptions { whiteouts: WhiteoutMode::Native, ..ApplyOptions::default() }
    }

    fn is_hostile(r: &Result<ApplyStats, ApplyError>) -> bool {
        matches!(r, Err(ApplyError::Hostile { .. }))
    }

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(Errno::NODATA) => None,
            Err(e) => panic!("getxattr {path:?} {name}: {e}"),
        }
    }

    #[test]
    fn a_name_climbing_out_of_the_root_is_refused() {
        let fx = fixture();
        let before = fx.outside();
        for name in ["../../victim/x", "../victim/x", "a/../../victim/x", "./../victim/x"] {
            let mut layer = Layer::new();
            layer.file(name, b"evil");
            let r = fx.apply(&layer, &overlay());
            assert!(is_hostile(&r), "{name}: {r:?}");
            fx.assert_victim_intact(&before);
        }
    }

    #[test]
    fn an_absolute_name_is_written_inside_the_root() {
        let fx = fixture();
        let mut layer = Layer::new();
        layer.file("/abs/path", b"data");
        fx.apply(&layer, &overlay()).unwrap();
        assert_eq!(fs::read(fx.root.join("abs/path")).unwrap(), b"data");
    }

    #[test]
    fn an_absolute_symlink_in_a_parent_resolves_inside_the_root() {
        let fx = fixture();
        let before = fx.outside();
        let mut layer = Layer::new();
        layer.symlink("a", fx.victim_str()).file("a/x", b"evil");

        // The in-root counterpart of the victim does not exist: an error is fine.
        let r = fx.apply(&layer, &overlay());
        fx.assert_victim_intact(&before);
        if r.is_ok() {
            let inside = fx.root.join(fx.victim.strip_prefix("/").unwrap());
            assert_eq!(fs::read(inside.join("x")).unwrap(), b"evil");
        }

        // Once it exists, the write lands there.
        let fx = fixture();
        let before = fx.outside();
        let inside = fx.root.join(fx.victim.strip_prefix("/").unwrap());
        fs::create_dir_all(&inside).unwrap();
        let mut layer = Layer::new();
        layer.symlink("a", fx.victim_str()).file("a/x", b"evil");
        fx.apply(&layer, &overlay()).unwrap();
        assert_eq!(fs::read(inside.join("x")).unwrap(), b"evil");
        fx.assert_victim_intact(&before);
    }

    #[test]
    fn a_relative_symlink_chain_cannot_climb_out_of_the_root() {
        let fx = fixture();
        let before = fx.outside();
        let mut layer = Layer::new();
        layer.symlink("l1", "../../victim").symlink("l2", "l1").file("l2/x", b"evil");
        let _ = fx.apply(&layer, &overlay());
        fx.assert_victim_intact(&before);

        // `..` is clamped at the root: with root/victim present the file lands there.
        let fx = fixture();
        let before = fx.outside();
        fs::create_dir(fx.root.join("victim")).unwrap();
        fx.apply(&layer, &native()).unwrap();
        assert_eq!(fs::read(fx.root.join("victim/x")).unwrap(), b"evil");
        fx.assert_victim_intact(&before);
    }

    #[test]
    fn hardlinks_to_files_outside_the_root_are_never_created() {
        for opts in [overlay(), native()] {
            let fx = fixture();
            let before = fx.outside();

            let mut layer = Layer::new();
            layer.hardlink("h", "../victim/x");
            assert!(is_hostile(&fx.apply(&layer, &opts)));
            fx.assert_victim_intact(&before);

            let mut layer = Layer::new();
            let abs = format!("{}/x", fx.victim_str());
            layer.hardlink("h", &abs);
            let r = fx.apply(&layer, &opts);
            assert!(matches!(r, Err(ApplyError::MissingLinkTarget { .. })), "{r:?}");
            fx.assert_victim_intact(&before);

            // Through a symlinked parent in the root, still resolved in-root.
            let mut layer = Layer::new();
            layer.symlink("v", fx.victim_str()).hardlink("h", "v/x");
            assert!(fx.apply(&layer, &opts).is_err());
            fx.assert_victim_intact(&before);
        }
    }

    #[test]
    fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
        let fx = fixture();
        let before = fx.outside();
        let mut layer = Layer::new();
        layer.symlink("f", &format!("{}/x", fx.victim_str())).file("f", b"evil");
        fx.apply(&layer, &overlay()).unwrap();
        let md = fs::symlink_metadata(fx.root.join("f")).unwrap();
        assert!(md.is_file());
        assert_eq!(fs::read(fx.root.join("f")).unwrap(), b"evil");
        fx.assert_victim_intact(&before);
    }

    #[test]
    fn a_directory_entry_never_chmods_through_a_symlink() {
        let fx = fixture();
        let before = fx.outside();
        let mut layer = Layer::new();
        layer.symlink("d", fx.victim_str()).entry(b"d", EntryType::Directory, b"", b"", |h| h.set_mode(0o777));
        fx.apply(&layer, &overlay()).unwrap();
        let md = fs::symlink_metadata(fx.root.join("d")).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.mode() & 0o7777, 0o777);
        fx.assert_victim_intact(&before);
    }

    #[test]
    fn a_hardlink_to_a_symlink_links_the_symlink_itself() {
        let fx = fixture();
        let before = fx.outside();
        let mut layer = Layer::new();
        layer.symlink("s", &format!("{}/x", fx.victim_str())).hardlink("hl", "s");
        fx.apply(&layer, &overlay()).unwrap();
        let hl = fs::symlink_metadata(fx.root.join("hl")).unwrap();
        assert!(hl.file_type().is_symlink());
        assert_eq!(hl.nlink(), 2);
        assert_eq!(hl.ino(), fs::symlink_metadata(fx.root.join("s")).unwrap().ino());
        fx.assert_victim_intact(&before);
    }

    #[test]
    fn whiteouts_of_empty_dot_and_dot_dot_names_are_refused() {
        for opts in [overlay(), native()] {
            for name in [".wh..", ".wh...", ".wh.", "sub/.wh..", "sub/.wh...", "sub/.wh."] {
                let fx = fixture();
                fs::create_dir(fx.root.join("sub")).unwrap();
                fs::write(fx.root.join("sub/keep"), b"k").unwrap();
                fs::write(fx.root.join("keep"), b"k").unwrap();
                let before = fx.outside();
                let mut layer = Layer::new();
                layer.file(name, b"");
                let r = fx.apply(&layer, &opts);
                assert!(is_hostile(&r), "{name} ({:?}): {r:?}", opts.whiteouts);
                fx.assert_victim_intact(&before);
                assert!(fx.root.join("sub/keep").exists());
                assert!(fx.root.join("keep").exists());
            }
        }
    }

    #[test]
    fn a_truncated_archive_is_an_archive_error() {
        let fx = fixture();
        let mut layer = Layer::new();
        layer.dir("d").file("d/big", &[7u8; 4096]).file("d/after", b"x");
        let bytes = layer.bytes();
        // Headers: d (512), d/big (512), then 4096 bytes of data: cut in the middle.
        let cut = &bytes[..1024 + 2000];
        let r = apply_tar(cut, &fx.root, &overlay());
        assert!(matches!(r, Err(ApplyError::Archive(_))), "{r:?}");

        // Cut inside a header block too.
        let r = apply_tar(&bytes[..1024 + 4096 + 100], &fx.root, &overlay());
        assert!(matches!(r, Err(ApplyError::Archive(_))), "{r:?}");
    }

    #[test]
    fn a_ten_kib_name_is_refused_as_too_long() {
        let fx = fixture();
        let name = "n/".repeat(5 * 1024) + "file";
        let mut layer = Layer::new();
        layer.file(&name, b"data");
        let r = fx.apply(&layer, &overlay());
        match r {
            Err(ApplyError::Hostile { path, reason }) => {
                assert!(reason.contains("limit"), "{reason}");
                assert!(path.len() < 1024, "error message carries the whole name");
            }
            other => panic!("{other:?}"),
        }
        assert!(!fx.root.join("n").exists());
    }

    #[test]
    fn a_normal_layer_round_trips_contents_and_metadata() {
        let fx = fixture();
        let mut layer = Layer::new();
        layer
            .entry(b"./", EntryType::Directory, b"", b"", |h| h.set_mode(0o711))
            .entry(b"etc/", EntryType::Directory, b"", b"", |h| {
                h.set_mode(0o750);
                h.set_mtime(1_500_000_000);
            })
            .pax(&[("SCHILY.xattr.user.foo", b"bar")])
            .file("etc/conf", b"conf")
            .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y"), ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere")])
            .dir("etc/app/")
            .dir("bin")
            .pax(&[("mtime", b"1600000000.5")])
            .entry(b"bin/tool", EntryType::Regular, b"#!tool", b"", |h| {
                h.set_mode(0o4755);
                h.set_uid(1000);
                h.set_gid(1000);
            })
            .symlink("bin/link", "tool")
            .hardlink("bin/hard", "bin/tool")
            .dir("run")
            .entry(b"run/fifo", EntryType::Fifo, b"", b"", |h| h.set_mode(0o620))
            .dir("dev")
            .entry(b"dev/null", EntryType::Char, b"", b"", |h| {
                h.set_mode(0o666);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            });
        let stats = fx.apply(&layer, &overlay()).unwrap();
        assert_eq!(stats.entries, 12);
        assert_eq!(stats.bytes, 4 + 6);

        let root_md = fs::metadata(&fx.root).unwrap();
        assert_eq!(root_md.mode() & 0o7777, 0o711);
        assert_eq!(root_md.mtime(), MTIME as i64);

        let etc = fs::metadata(fx.root.join("etc")).unwrap();
        assert_eq!(etc.mode() & 0o7777, 0o750);
        assert_eq!(etc.mtime(), 1_500_000_000, "dir mtime survives its children");
        assert_eq!(fs::metadata(fx.root.join("bin")).unwrap().mtime(), MTIME as i64);

        let conf = fx.root.join("etc/conf");
        assert_eq!(fs::read(&conf).unwrap(), b"conf");
        assert_eq!(fs::metadata(&conf).unwrap().mtime(), MTIME as i64);
        let probe = fx.base.join("probe");
        fs::write(&probe, b"").unwrap();
        let user_xattrs = rustix::fs::setxattr(&probe, "user.probe", b"1", XattrFlags::empty()).is_ok();
        if user_xattrs {
            assert_eq!(xattr(&conf, "user.foo").as_deref(), Some(&b"bar"[..]));
        }
        let app = fx.root.join("etc/app");
        assert!(app.is_dir());
        assert_eq!(xattr(&app, "trusted.overlay.opaque"), None);
        assert_eq!(xattr(&app, "trusted.overlay.redirect"), None);

        let tool = fs::metadata(fx.root.join("bin/tool")).unwrap();
        assert_eq!(fs::read(fx.root.join("bin/tool")).unwrap(), b"#!tool");
        assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid survives chown");
        assert_eq!((tool.uid(), tool.gid()), (1000, 1000));
        assert_eq!((tool.mtime(), tool.mtime_nsec()), (MTIME as i64, 500_000_000));
        assert_eq!(tool.nlink(), 2);
        assert_eq!(fs::metadata(fx.root.join("bin/hard")).unwrap().ino(), tool.ino());

        let link = fx.root.join("bin/link");
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("tool"));
        assert_eq!(fs::symlink_metadata(&link).unwrap().mtime(), MTIME as i64);

        let fifo = fs::symlink_metadata(fx.root.join("run/fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o620);

        let null = fs::symlink_metadata(fx.root.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        assert_eq!(null.mtime(), MTIME as i64);
    }

    #[test]
    fn overlay_whiteouts_become_devices_and_opaque_xattrs() {
        let fx = fixture();
        fs::write(fx.root.join("gone"), b"old").unwrap();
        let mut layer = Layer::new();
        layer.file(".wh.gone", b"").dir("dir").file("dir/.wh..wh..opq", b"").file("dir/.wh..wh.plnk", b"").file("deep/er/.wh.x", b"");
        fx.apply(&layer, &overlay()).unwrap();

        for path in ["gone", "deep/er/x"] {
            let md = fs::symlink_metadata(fx.root.join(path)).unwrap();
            assert!(md.file_type().is_char_device(), "{path}");
            assert_eq!(md.rdev(), 0);
            assert_eq!(md.mode() & 0o7777, 0);
        }
        assert_eq!(xattr(&fx.root.join("dir"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
        assert!(!fx.root.join("dir/.wh..wh.plnk").exists());
        assert!(!fx.root.join("dir/.wh..wh..opq").exists());
    }

    #[test]
    fn native_whiteouts_remove_older_content_but_keep_this_layers_entries() {
        let populate = |fx: &Fixture| {
            fs::create_dir_all(fx.root.join("a/sub")).unwrap();
            fs::write(fx.root.join("a/old"), b"old").unwrap();
            fs::write(fx.root.join("a/sub/deep"), b"deep").unwrap();
            std::os::unix::fs::symlink(fx.victim_str(), fx.root.join("a/escape")).unwrap();
            fs::write(fx.root.join("b"), b"b").unwrap();
            fs::create_dir(fx.root.join("c")).unwrap();
            fs::write(fx.root.join("c/keep"), b"keep").unwrap();
        };

        // Opaque marker first, as image tools write it.
        let fx = fixture();
        populate(&fx);
        let before = fx.outside();
        let mut layer = Layer::new();
        layer.dir("a").file("a/.wh..wh..opq", b"").file("a/new", b"new").file(".wh.b", b"");
        fx.apply(&layer, &native()).unwrap();
        assert!(!fx.root.join("a/old").exists());
        assert!(!fx.root.join("a/sub").exists());
        assert!(fs::symlink_metadata(fx.root.join("a/escape")).is_err());
        assert_eq!(fs::read(fx.root.join("a/new")).unwrap(), b"new");
        assert!(!fx.root.join("b").exists());
        assert!(fx.root.join("c/keep").exists());
        fx.assert_victim_intact(&before);

        // Opaque marker after this layer's own entries: they stay, older ones go, also
        // below a directory that this layer wrote into.
        let fx = fixture();
        populate(&fx);
        let before = fx.outside();
        let mut layer = Layer::new();
        layer
            .dir("a")
            .file("a/new", b"new")
            .file("a/sub/fresh", b"fresh")
            .file("a/.wh..wh..opq", b"")
            .file(".wh.b", b"")
            .file(".wh.missing", b"")
            .file("nowhere/.wh.x", b"");
        fx.apply(&layer, &native()).unwrap();
        assert_eq!(fs::read(fx.root.join("a/new")).unwrap(), b"new");
        assert_eq!(fs::read(fx.root.join("a/sub/fresh")).unwrap(), b"fresh");
        assert!(!fx.root.join("a/sub/deep").exists());
        assert!(!fx.root.join("a/old").exists());
        assert!(!fx.root.join("b").exists());
        assert!(fx.root.join("c/keep").exists());
        fx.assert_victim_intact(&before);
    }

    #[test]
    fn an_overlay_hardlink_to_a_lower_file_gets_a_copy_of_it() {
        let fx = fixture();
        let lower = fx.base.join("lower");
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        let tool = lower.join("usr/bin/tool");
        fs::write(&tool, b"tool-bytes").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        rustix::fs::chown(&tool, Some(Uid::from_raw(7)), Some(Gid::from_raw(8))).unwrap();
        let opts = ApplyOptions { lowers: vec![fx.base.join("empty-lower-missing"), lower.clone()], ..overlay() };
        // A missing lower dir is an error only when it is consulted: create it empty.
        fs::create_dir(fx.base.join("empty-lower-missing")).unwrap();

        let mut layer = Layer::new();
        layer.dir("usr").dir("usr/bin").hardlink("usr/bin/alias", "usr/bin/tool").hardlink("usr/bin/alias2", "/usr/bin/tool");
        let stats = fx.apply(&layer, &opts).unwrap();
        assert_eq!(stats.bytes, 10);

        let alias = fx.root.join("usr/bin/alias");
        assert_eq!(fs::read(&alias).unwrap(), b"tool-bytes");
        let md = fs::symlink_metadata(&alias).unwrap();
        assert!(md.is_file());
        assert_eq!(md.mode() & 0o7777, 0o755);
        assert_eq!((md.uid(), md.gid()), (7, 8));
        assert_eq!(fs::symlink_metadata(fx.root.join("usr/bin/alias2")).unwrap().ino(), md.ino(), "further links share the first copy");
        assert_eq!(fs::metadata(&tool).unwrap().nlink(), 1, "lower untouched");
        assert!(!fx.root.join("usr/bin/tool").exists());
    }

    #[test]
    fn a_whiteout_in_an_upper_lower_hides_deeper_copies_from_hardlinks() {
        let fx = fixture();
        let top = fx.base.join("top");
        let bottom = fx.base.join("bottom");
        fs::create_dir_all(top.join("d")).unwrap();
        fs::create_dir_all(bottom.join("d")).unwrap();
        fs::write(bottom.join("d/f"), b"deleted").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("d/f").as_path(),
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
        let opts = ApplyOptions { lowers: vec![top, bottom], ..overlay() };
        let mut layer = Layer::new();
        layer.hardlink("l", "d/f");
        let r = fx.apply(&layer, &opts);
        assert!(matches!(r, Err(ApplyError::MissingLinkTarget { .. })), "{r:?}");
    }

    #[test]
    fn an_opaque_directory_in_an_upper_lower_hides_deeper_copies_from_hardlinks() {
        let fx = fixture();
        let top = fx.base.join("top");
        let bottom = fx.base.join("bottom");
        fs::create_dir_all(top.join("d")).unwrap();
        fs::write(top.join("d/kept"), b"top").unwrap();
        rustix::fs::setxattr(top.join("d").as_path(), "trusted.overlay.opaque", b"y", XattrFlags::empty()).unwrap();
        fs::create_dir_all(bottom.join("d")).unwrap();
        fs::write(bottom.join("d/f"), b"hidden").unwrap();
        fs::write(bottom.join("d/kept"), b"bottom").unwrap();
        let opts = ApplyOptions { lowers: vec![top, bottom], ..overlay() };
        let mut layer = Layer::new();
        layer.hardlink("l", "d/f");
        let r = fx.apply(&layer, &opts);
        assert!(matches!(r, Err(ApplyError::MissingLinkTarget { .. })), "{r:?}");
        let mut layer = Layer::new();
        layer.hardlink("k", "d/kept");
        fx.apply(&layer, &opts).unwrap();
        assert_eq!(fs::read(fx.root.join("k")).unwrap(), b"top");
    }

    #[test]
    fn a_hardlink_looked_up_in_a_lower_stays_inside_that_lower() {
        let fx = fixture();
        let before = fx.outside();
        let lower = fx.base.join("lower");
        fs::create_dir(&lower).unwrap();
        std::os::unix::fs::symlink(fx.victim_str(), lower.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../victim", lower.join("rel")).unwrap();
        let before = {
            let mut b = before;
            b.extend(fx.outside());
            b
        };
        let opts = ApplyOptions { lowers: vec![lower], ..overlay() };
        for target in ["etc/x", "rel/x"] {
            let mut layer = Layer::new();
            layer.hardlink("copy", target);
            let r = fx.apply(&layer, &opts);
            assert!(matches!(r, Err(ApplyError::MissingLinkTarget { .. })), "{r:?}");
            fx.assert_victim_intact(&before);
            assert!(!fx.root.join("copy").exists());
        }
    }

    #[test]
    fn oversized_extension_headers_are_refused() {
        let fx = fixture();
        let big = vec![b'a'; 2 << 20];
        let mut layer = Layer::new();
        layer.pax(&[("comment", &big)]).file("f", b"x");
        let r = fx.apply(&layer, &overlay());
        match r {
            Err(ApplyError::Archive(e)) => assert!(e.to_string().contains("exceed"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reader_errors_keep_their_message() {
        struct Failing {
            data: Vec<u8>,
            pos: usize,
        }
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.pos == self.data.len() {
                    return Err(io::Error::other("decompressed layer exceeds the 1 GiB cap"));
                }
                let n = buf.len().min(self.data.len() - self.pos);
                buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
                self.pos += n;
                Ok(n)
            }
        }
        let fx = fixture();
        let mut layer = Layer::new();
        layer.file("a", &[1; 3000]).file("b", &[2; 3000]);
        let bytes = layer.bytes();
        let r = apply_tar(Failing { data: bytes[..2500].to_vec(), pos: 0 }, &fx.root, &overlay());
        match r {
            Err(ApplyError::Archive(e)) => assert!(e.to_string().contains("1 GiB cap"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entries_tar_readers_read_differently_are_refused_as_hostile_before_anything_is_written() {
        let long = format!("d/{}", "n".repeat(150));
        let long_name = [long.as_bytes(), b"\0"].concat();
        let layers = [
            ("two PAX paths", Layer::new().pax(&[("path", b"a"), ("path", b"b")]).file("f", b"x").bytes()),
            ("two PAX sizes", Layer::new().pax(&[("size", b"0"), ("size", b"512")]).file("f", b"").file("hidden", b"").bytes()),
            // Layer::entry writes a GNU long-name header for names over 100 bytes.
            ("a PAX path, then a GNU long name", Layer::new().pax(&[("path", b"p")]).file(&long, b"x").bytes()),
            (
                "a GNU long name, then a PAX path",
                Layer::new()
                    .raw(b"././@LongLink", EntryType::GNULongName, &long_name, b"", |_| {})
                    .pax(&[("path", b"p")])
                    .raw(&long.as_bytes()[..100], EntryType::Regular, b"x", b"", |_| {})
                    .bytes(),
            ),
            ("a PAX global path", Layer::new().raw(b"g", EntryType::XGlobalHeader, b"12 path=abc\n", b"", |_| {}).file("f", b"x").bytes()),
        ];
        for (what, layer) in layers {
            let fx = fixture();
            let r = apply_tar(&layer[..], &fx.root, &overlay());
            assert!(matches!(r, Err(ApplyError::Hostile { .. })), "{what}: {r:?}");
            assert_eq!(fs::read_dir(&fx.root).unwrap().count(), 0, "{what}: something was written");
        }
    }

    #[test]
    fn sparse_and_unknown_entry_types_are_unsupported() {
        let fx = fixture();
        let mut layer = Layer::new();
        layer.entry(b"v", EntryType::new(b'V'), b"", b"", |_| {});
        let r = fx.apply(&layer, &overlay());
        assert!(matches!(r, Err(ApplyError::Unsupported { .. })), "{r:?}");

        let mut layer = Layer::new();
        layer.pax(&[("GNU.sparse.major", b"1")]).file("s", b"");
        let r = fx.apply(&layer, &overlay());
        assert!(matches!(r, Err(ApplyError::Unsupported { .. })), "{r:?}");
    }

    #[test]
    fn entries_replace_files_and_merge_directories() {
        let fx = fixture();
        fs::create_dir_all(fx.root.join("d/old")).unwrap();
        fs::write(fx.root.join("d/old/f"), b"f").unwrap();
        fs::write(fx.root.join("file-then-dir"), b"f").unwrap();
        let mut layer = Layer::new();
        layer.dir("d").file("d/new", b"n").dir("file-then-dir").file("d/old", b"now a file");
        fx.apply(&layer, &native()).unwrap();
        assert!(fx.root.join("d/new").is_file());
        assert_eq!(fs::read(fx.root.join("d/old")).unwrap(), b"now a file");
        assert!(fx.root.join("file-then-dir").is_dir());
    }

    #[test]
    fn deep_trees_are_created_and_removed_without_recursion() {
        let fx = fixture();
        let deep = "d/".repeat(500);
        let mut layer = Layer::new();
        layer.file(&format!("{deep}f"), b"bottom");
        fx.apply(&layer, &native()).unwrap();
        assert_eq!(fs::read(fx.root.join(format!("{deep}f"))).unwrap(), b"bottom");

        let mut layer = Layer::new();
        layer.file(".wh.d", b"");
        fx.apply(&layer, &native()).unwrap();
        assert!(!fx.root.join("d").exists());

        let mut layer = Layer::new();
        layer.file(&format!("{deep}f"), b"bottom").file(&format!("{deep}.wh..wh..opq"), b"").file(".wh..wh..opq", b"");
        fx.apply(&layer, &native()).unwrap();
        assert_eq!(fs::read(fx.root.join(format!("{deep}f"))).unwrap(), b"bottom");
    }

    #[test]
    fn a_non_directory_entry_naming_the_root_is_refused() {
        let fx = fixture();
        let mut layer = Layer::new();
        layer.file("./", b"x");
        assert!(is_hostile(&fx.apply(&layer, &overlay())));
        let mut layer = Layer::new();
        layer.hardlink("x", "./");
        assert!(is_hostile(&fx.apply(&layer, &overlay())));
    }

    fn is_too_complex(r: &Result<ApplyStats, ApplyError>) -> bool {
        matches!(r, Err(ApplyError::Unsupported { reason, .. }) if reason.contains("too complex"))
    }

    /// `a`/`b` components (symlinks to `.` in the tests using it) spelling `i` in binary.
    fn dot_links(i: usize, n: usize) -> String {
        (0..n).map(|bit| if (i >> bit) & 1 == 1 { "a/" } else { "b/" }).collect()
    }

    #[test]
    fn a_directory_reached_by_many_paths_is_tracked_once() {
        for opts in [native(), overlay()] {
            let fx = fixture();
            fs::create_dir_all(fx.root.join("d/d/d")).unwrap();
            fs::write(fx.root.join("d/d/d/old"), b"old").unwrap();
            fs::write(fx.root.join("old"), b"old").unwrap();
            let mut layer = Layer::new();
            layer.symlink("a", ".").symlink("b", ".").dir("d").dir("d/d").dir("d/d/d");
            // 300 names, each new to a path-keyed structure, all for directory d/d/d.
            for i in 0..300 {
                let mtime = if i == 299 { 1_234_567_890 } else { MTIME };
                layer.entry(format!("{}d/d/d", dot_links(i, 10)).as_bytes(), EntryType::Directory, b"", b"", |h| h.set_mtime(mtime));
                layer.file(&format!("{}d/d/d/f", dot_links(i, 10)), b"f");
            }
            layer.file(".wh..wh..opq", b"");
            let r = fx.apply_limited(&layer, &opts, 32);
            assert!(r.is_ok(), "{:?}: {r:?}", opts.whiteouts);
            assert_eq!(fs::read(fx.root.join("d/d/d/f")).unwrap(), b"f");
            assert_eq!(fs::metadata(fx.root.join("d/d/d")).unwrap().mtime(), 1_234_567_890, "the latest entry's mtime wins");
            if opts.whiteouts == WhiteoutMode::Native {
                assert!(!fx.root.join("d/d/d/old").exists());
                assert!(!fx.root.join("old").exists());
                assert!(fs::symlink_metadata(fx.root.join("a")).unwrap().file_type().is_symlink());
            }
        }
    }

    #[test]
    fn a_layer_needing_too_much_bookkeeping_is_refused_as_too_complex() {
        let files = |layer: &mut Layer| {
            for i in 0..100 {
                layer.file(&format!("f{i}"), b"");
            }
        };
        let dirs = |layer: &mut Layer| {
            for i in 0..100 {
                layer.dir(&format!("d{i}"));
            }
        };

        // Native mode remembers each name written (for opaque markers).
        let fx = fixture();
        let mut layer = Layer::new();
        files(&mut layer);
        assert!(is_too_complex(&fx.apply_limited(&layer, &native(), 64)));

        // Overlay mode does not need to.
        let fx = fixture();
        fx.apply_limited(&layer, &overlay(), 64).unwrap();
        assert!(fx.root.join("f99").exists());

        // Both remember directory times.
        let mut layer = Layer::new();
        dirs(&mut layer);
        for opts in [native(), overlay()] {
            let fx = fixture();
            assert!(is_too_complex(&fx.apply_limited(&layer, &opts, 64)), "{:?}", opts.whiteouts);
        }

        // The bytes of remembered paths are capped too.
        let fx = fixture();
        let mut layer = Layer::new();
        for i in 0..3 {
            layer.dir(&format!("{i}{}", "x".repeat(200)));
        }
        let limits = Limits { max_tracked: 64, max_tracked_bytes: 500, ..LIMITS };
        let r = apply_tar_limited(&layer.bytes()[..], &fx.root, &overlay(), limits);
        assert!(is_too_complex(&r), "{r:?}");
    }

    #[test]
    fn repeated_opaque_markers_for_one_directory_list_it_once() {
        let fx = fixture();
        fs::create_dir_all(fx.root.join("d/sub")).unwrap();
        fs::write(fx.root.join("d/old"), b"old").unwrap();
        fs::write(fx.root.join("d/sub/old"), b"old").unwrap();
        let mut layer = Layer::new();
        layer.dir("d").file("d/sub/new", b"new");
        for i in 0..300 {
            layer.file(&format!("d/f{i}"), b"");
        }
        for _ in 0..300 {
            layer.file("d/.wh..wh..opq", b"");
        }
        // An opaque marker above a cleared directory does not list it again either.
        layer.file("d/sub/.wh..wh..opq", b"").file(".wh..wh..opq", b"");
        let before = LISTINGS.with(Cell::get);
        fx.apply(&layer, &native()).unwrap();
        let listings = LISTINGS.with(Cell::get) - before;
        assert!(listings <= 4, "{listings} directory listings");
        assert!(!fx.root.join("d/old").exists());
        assert!(!fx.root.join("d/sub/old").exists());
        assert_eq!(fs::read(fx.root.join("d/sub/new")).unwrap(), b"new");
        assert!(fx.root.join("d/f299").exists());
    }

    #[test]
    fn a_native_opaque_marker_reached_through_a_symlink_keeps_this_layers_entries() {
        for link_in_layer in [false, true] {
            let fx = fixture();
            fs::create_dir(fx.root.join("etc")).unwrap();
            fs::write(fx.root.join("etc/old"), b"old").unwrap();
            let mut layer = Layer::new();
            if link_in_layer {
                layer.symlink("l", "etc");
            } else {
                std::os::unix::fs::symlink("etc", fx.root.join("l")).unwrap();
            }
            layer.file("etc/passwd", b"root:x:0:0").file("l/.wh..wh..opq", b"");
            fx.apply(&layer, &native()).unwrap();
            assert_eq!(fs::read(fx.root.join("etc/passwd")).unwrap(), b"root:x:0:0");
            assert!(!fx.root.join("etc/old").exists());
        }
    }

    #[test]
    fn a_symlink_target_with_too_many_components_is_refused() {
        let fx = fixture();
        let mut layer = Layer::new();
        layer.pax(&[("linkpath", "./".repeat(2047).as_bytes())]).symlink("p", "x");
        let r = fx.apply(&layer, &overlay());
        assert!(is_hostile(&r), "{r:?}");
        assert!(fs::symlink_metadata(fx.root.join("p")).is_err());

        let mut layer = Layer::new();
        layer.pax(&[("linkpath", "../".repeat(MAX_LINK_TARGET_COMPONENTS).as_bytes())]).symlink("ok", "x");
        fx.apply(&layer, &overlay()).unwrap();
        assert_eq!(fs::read_link(fx.root.join("ok")).unwrap().as_os_str().len(), 3 * MAX_LINK_TARGET_COMPONENTS);
    }

    #[test]
    fn a_missing_parent_behind_many_symlinks_is_found_with_few_lookups() {
        let fx = fixture();
        fs::create_dir(fx.root.join("real")).unwrap();
        std::os::unix::fs::symlink("../real", fx.root.join("real/up")).unwrap();
        let mut layer = Layer::new();
        layer.symlink("p", ".").symlink("l", "real").symlink("dangling", "nowhere");
        let entries = 20;
        for i in 0..entries {
            layer.file(&format!("{}m{i}/x", "p/".repeat(39)), b"x");
            layer.file(&format!("{}n{i}/a/b/c/x", "p/".repeat(39)), b"x");
        }
        let before = LOOKUPS.with(Cell::get);
        fx.apply(&layer, &overlay()).unwrap();
        let lookups = LOOKUPS.with(Cell::get) - before;
        // Resolving every prefix from the root takes over 40 per entry.
        assert!(lookups <= 2 * 10 * entries, "{lookups} lookups for {} entries", 2 * entries);
        for i in 0..entries {
            assert_eq!(fs::read(fx.root.join(format!("m{i}/x"))).unwrap(), b"x");
            assert_eq!(fs::read(fx.root.join(format!("n{i}/a/b/c/x"))).unwrap(), b"x");
        }

        // Several missing levels, after symlinks and real directories.
        let mut layer = Layer::new();
        layer.file("p/p/l/up/up/new/er/est/f", b"f").file("p/real/up/p/new/er/2/f", b"g");
        fx.apply(&layer, &overlay()).unwrap();
        assert_eq!(fs::read(fx.root.join("real/new/er/est/f")).unwrap(), b"f");
        assert_eq!(fs::read(fx.root.join("real/p/new/er/2/f")).unwrap(), b"g");

        // No directory is created through a dangling symlink.
        let mut layer = Layer::new();
        layer.file("p/dangling/sub/f", b"f");
        let r = fx.apply(&layer, &overlay());
        assert!(matches!(r, Err(ApplyError::Io { .. })), "{r:?}");
        assert!(!fx.root.join("nowhere").exists());
    }

    #[test]
    fn the_deepest_resolving_prefix_is_found_wherever_a_path_stops_resolving() {
        let fx = fixture();
        let n = 12;
        // x/y/x/y/...: directories x, each holding a symlink y to itself.
        let mut dir = fx.root.clone();
        for _ in 0..n / 2 {
            dir = dir.join("x");
            fs::create_dir(&dir).unwrap();
            std::os::unix::fs::symlink(".", dir.join("y")).unwrap();
        }
        let root = rustix::fs::open(&fx.root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        for k in 0..=n {
            for missing in 1..5 {
                let mut comps: Vec<Vec<u8>> = (0..k).map(|i| if i % 2 == 0 { b"x".to_vec() } else { b"y".to_vec() }).collect();
                comps.extend((0..missing).map(|j| format!("missing{j}").into_bytes()));
                let (found, fd) = deepest_dir(root.as_fd(), &comps).unwrap();
                assert_eq!(found, k, "k={k} missing={missing}");
                let expect = open_in_root(root.as_fd(), &comps[..k]).unwrap();
                assert_eq!(ident(fd.as_fd()).unwrap(), ident(expect.as_fd()).unwrap());
            }
        }
    }

    /// Run in a child process by the test below, with few fds allowed.
    #[test]
    #[ignore = "run by deep_trees_are_removed_and_cleared_with_a_bounded_number_of_fds"]
    fn deep_tree_walks_child() {
        if std::env::var_os("BERTH_APPLY_FD_CHILD").is_none() {
            return;
        }
        let limit = rustix::process::Rlimit { current: Some(160), maximum: Some(160) };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
        let deep = "d/".repeat(600);
        let fx = fixture();
        fs::create_dir_all(fx.root.join(&deep)).unwrap();
        fs::write(fx.root.join(format!("{deep}old")), b"old").unwrap();

        // Opaque marker above: the kept path is walked to the bottom.
        let mut layer = Layer::new();
        layer.file(&format!("{deep}new"), b"new").file(".wh..wh..opq", b"");
        fx.apply(&layer, &native()).unwrap();
        assert!(!fx.root.join(format!("{deep}old")).exists());
        assert_eq!(fs::read(fx.root.join(format!("{deep}new"))).unwrap(), b"new");

        // Whiteout of the whole tree.
        let mut layer = Layer::new();
        layer.file(".wh.d", b"");
        fx.apply(&layer, &native()).unwrap();
        assert!(!fx.root.join("d").exists());

        // A file replacing it.
        fs::create_dir_all(fx.root.join(&deep)).unwrap();
        let mut layer = Layer::new();
        layer.file("d", b"file");
        fx.apply(&layer, &overlay()).unwrap();
        assert_eq!(fs::read(fx.root.join("d")).unwrap(), b"file");
    }

    #[test]
    fn deep_trees_are_removed_and_cleared_with_a_bounded_number_of_fds() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "apply::tests::deep_tree_walks_child", "--ignored", "--test-threads=1"])
            .env("BERTH_APPLY_FD_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("1 passed"), "{stdout}");
    }

    #[test]
    fn an_owner_id_of_minus_one_is_refused() {
        for key in ["uid", "gid"] {
            let fx = fixture();
            let mut layer = Layer::new();
            layer.pax(&[(key, b"4294967295")]).file("f", b"x");
            let r = fx.apply(&layer, &overlay());
            assert!(is_hostile(&r), "{key}: {r:?}");
        }
    }

    #[test]
    fn overlay_hardlinks_reaching_one_lower_file_by_different_paths_share_one_copy() {
        let fx = fixture();
        let lower = fx.base.join("lower");
        fs::create_dir_all(lower.join("usr/bin")).unwrap();
        fs::write(lower.join("usr/bin/tool"), b"tool-bytes").unwrap();
        std::os::unix::fs::symlink("usr/bin", lower.join("bin")).unwrap();
        let opts = ApplyOptions { lowers: vec![lower], ..overlay() };
        let mut layer = Layer::new();
        layer.hardlink("a", "usr/bin/tool").hardlink("b", "bin/tool").hardlink("c", "/bin//tool");
        let stats = fx.apply(&layer, &opts).unwrap();
        assert_eq!(stats.bytes, 10, "copied once");
        let ino = fs::metadata(fx.root.join("a")).unwrap().ino();
        for name in ["b", "c"] {
            assert_eq!(fs::metadata(fx.root.join(name)).unwrap().ino(), ino, "{name}");
        }
    }

    #[test]
    fn a_replaced_copy_of_a_lower_file_is_copied_again_within_a_budget() {
        let fx = fixture();
        let lower = fx.base.join("lower");
        fs::create_dir(&lower).unwrap();
        fs::write(lower.join("x"), b"lower").unwrap();
        let opts = ApplyOptions { lowers: vec![lower], ..overlay() };
        let mut layer = Layer::new();
        // A repeated entry replaces the first copy with a second one.
        layer.hardlink("a", "x").hardlink("a", "x").file("a", b"later").hardlink("b", "x").hardlink("c", "x");
        let stats = fx.apply(&layer, &opts).unwrap();
        assert_eq!(stats.bytes, 3 * 5 + 5);
        assert_eq!(fs::read(fx.root.join("a")).unwrap(), b"later");
        assert_eq!(fs::read(fx.root.join("b")).unwrap(), b"lower");
        assert_eq!(fs::metadata(fx.root.join("c")).unwrap().ino(), fs::metadata(fx.root.join("b")).unwrap().ino());

        let fx = fixture();
        let limits = Limits { max_recopied_bytes: 9, ..LIMITS };
        let r = apply_tar_limited(&layer.bytes()[..], &fx.root, &opts, limits);
        assert!(is_too_complex(&r), "{r:?}");
    }

    #[test]
    fn a_non_directory_on_the_path_in_an_upper_lower_hides_deeper_copies_from_hardlinks() {
        for whiteout in [true, false] {
            let fx = fixture();
            let top = fx.base.join("top");
            let bottom = fx.base.join("bottom");
            fs::create_dir(&top).unwrap();
            fs::create_dir_all(bottom.join("d/e")).unwrap();
            fs::write(bottom.join("d/e/f"), b"deleted").unwrap();
            if whiteout {
                let dev = rustix::fs::makedev(0, 0);
                rustix::fs::mknodat(rustix::fs::CWD, top.join("d").as_path(), FileType::CharacterDevice, Mode::empty(), dev).unwrap();
            } else {
                fs::write(top.join("d"), b"a file hides the directory below").unwrap();
            }
            let opts = ApplyOptions { lowers: vec![top, bottom], ..overlay() };
            let mut layer = Layer::new();
            layer.hardlink("l", "d/e/f");
            let r = fx.apply(&layer, &opts);
            assert!(matches!(r, Err(ApplyError::MissingLinkTarget { .. })), "whiteout={whiteout}: {r:?}");
            assert!(!fx.root.join("l").exists());
        }
    }
}
