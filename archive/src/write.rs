//! Writing layer archives: the tar encoding of the entries [`super::diff`] finds.
//!
//! Headers are built here from `lstat` data, never by the tar crate's path helpers, and file
//! contents are read from fds opened with `O_NOFOLLOW` and checked to be the inode that was
//! looked up. Whiteouts are written as the OCI markers of [`super::whiteout`]; of the xattrs,
//! only those [`super::xattr::kept_in_layer`] accepts.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::diff::DiffError;
use super::walk::{file_type, stat_ident, to_u64, Ident};
use super::whiteout::{self, OVERLAY_METACOPY};
use super::xattr;

/// Longest entry name written into a layer, in bytes: what the layer applier accepts by default.
pub const MAX_ENTRY_NAME: usize = 4096;
/// Longest name that fits a ustar header's name (and link name) field; longer ones go into
/// a PAX `path` / `linkpath` record.
const USTAR_NAME: usize = 100;

/// An xattr to store: name (a PAX record key, so UTF-8) and value.
pub type Xattr = (String, Vec<u8>);

/// The xattrs of `fd` a layer keeps, sorted by name.
pub fn layer_xattrs(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<Xattr>> {
    let all = xattr::read(fd, xattr::kept_in_layer)?;
    Ok(all.into_iter().filter_map(|(name, value)| Some((String::from_utf8(name).ok()?, value))).collect())
}

/// Writes layer entries to a tar stream.
pub struct LayerWriter<W: Write> {
    tar: tar::Builder<W>,
    /// Root of the tree written (for messages).
    root: PathBuf,
    entries: u64,
    /// The first name written for each inode with several links.
    links: HashMap<Ident, Vec<u8>>,
    /// Latest mtime written (SOURCE_DATE_EPOCH): later ones are written as it.
    mtime_clamp: Option<u64>,
    /// Paths (relative) whose empty regular files are not written.
    leave_out: Vec<Vec<u8>>,
}

impl<W: Write> LayerWriter<W> {
    pub fn new(out: W, root: &Path) -> Self {
        let mut tar = tar::Builder::new(out);
        // Headers are built here from lstat data, not by the builder's path helpers; these
        // settings only keep those helpers faithful and inside the tree should they be used.
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        Self { tar, root: root.to_owned(), entries: 0, links: HashMap::new(), mtime_clamp: None, leave_out: Vec::new() }
    }

    /// Write no empty regular file at these paths (relative, `etc/hosts`):
    /// the mount points a runtime made for files bound over the image's.
    pub fn leave_out_empty_files(mut self, rels: &[&str]) -> Self {
        self.leave_out = rels.iter().map(|r| r.trim_start_matches('/').as_bytes().to_vec()).collect();
        self
    }

    /// Write no mtime later than `clamp` (seconds), for reproducible layers.
    pub fn clamp_mtimes(mut self, clamp: Option<i64>) -> Self {
        self.mtime_clamp = clamp.map(|c| to_u64(c.max(0)));
        self
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        super::diff::join(&self.root, rel)
    }

    /// Ends the archive; returns the number of entries written (PAX headers not counted).
    pub fn finish(self) -> Result<u64, DiffError> {
        let root = self.root;
        let mut out = self.tar.into_inner().map_err(|source| DiffError::Write { path: root.clone(), source })?;
        out.flush().map_err(|source| DiffError::Write { path: root, source })?;
        Ok(self.entries)
    }

    /// Refuses names that a layer would read as whiteouts.
    fn check_name(&self, rel: &[u8]) -> Result<(), DiffError> {
        let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
        if whiteout::is_marker_name(name) {
            return Err(DiffError::Unsupported {
                path: self.path(rel),
                reason: "names starting with `.wh.` mean whiteouts in a layer".into(),
            });
        }
        Ok(())
    }

    /// Directory `rel`, found as `st`.
    pub fn dir(&mut self, rel: &[u8], st: &Stat, xattrs: &[Xattr]) -> Result<(), DiffError> {
        self.check_name(rel)?;
        let name = [rel, b"/"].concat();
        self.append(rel, header(EntryType::Directory, st), &name, None, xattrs, None)
    }

    /// An empty `.wh.NAME` file for deleted `rel`; owner and mtime from `st` if given.
    pub fn whiteout(&mut self, rel: &[u8], st: Option<&Stat>) -> Result<(), DiffError> {
        self.marker(rel, &whiteout::whiteout_entry(rel), st)
    }

    /// The opaque marker of directory `rel`.
    pub fn opaque(&mut self, rel: &[u8], st: &Stat) -> Result<(), DiffError> {
        self.marker(rel, &whiteout::opaque_entry(rel), Some(st))
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
    pub fn node(&mut self, rel: &[u8], name: &[u8], st: &Stat, parent: BorrowedFd<'_>) -> Result<(), DiffError> {
        if st.st_size == 0 && file_type(st) == FileType::RegularFile && self.leave_out.iter().any(|p| p == rel) {
            return Ok(());
        }
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
                let target = rustix::fs::readlinkat(parent, name, Vec::new()).map_err(|e| self.io_err(rel, e))?;
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

    /// An entry that is not read from a tree but described (a build's COPY):
    /// `rel` with the given attributes, and for a file its data.
    pub fn described(&mut self, rel: &[u8], what: Described<'_>, attrs: Attrs) -> Result<(), DiffError> {
        self.check_name(rel)?;
        let (kind, name, link, data) = match what {
            Described::Dir => (EntryType::Directory, [rel, b"/"].concat(), None, None),
            Described::File(file, size) => (EntryType::Regular, rel.to_vec(), None, Some((file, size))),
            Described::Symlink(target) => (EntryType::Symlink, rel.to_vec(), Some(target), None),
        };
        let mut h = blank_header(kind);
        h.set_mode(attrs.mode & 0o7777);
        h.set_uid(u64::from(attrs.uid));
        h.set_gid(u64::from(attrs.gid));
        h.set_mtime(to_u64(attrs.mtime.max(0)));
        if let Some((_, size)) = &data {
            h.set_size(*size);
        }
        self.append(rel, h, &name, link, &[], data)
    }

    fn io_err(&self, rel: &[u8], e: Errno) -> DiffError {
        DiffError::Io { path: self.path(rel), source: e.into() }
    }

    fn file(&mut self, rel: &[u8], name: &[u8], st: &Stat, parent: BorrowedFd<'_>) -> Result<(), DiffError> {
        // O_NONBLOCK: should a fifo have taken the file's place, opening it must not hang.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT | Errno::LOOP => DiffError::Changed { path: self.path(rel) },
            e => self.io_err(rel, e),
        })?;
        let now = rustix::fs::fstat(&fd).map_err(|e| self.io_err(rel, e))?;
        if stat_ident(&now) != stat_ident(st) || file_type(&now) != FileType::RegularFile {
            return Err(DiffError::Changed { path: self.path(rel) });
        }
        if xattr::has(fd.as_fd(), OVERLAY_METACOPY.as_bytes()).map_err(|e| self.io_err(rel, e))? {
            return Err(DiffError::Unsupported { path: self.path(rel), reason: "overlayfs metadata-only copy (metacopy)".into() });
        }
        let xattrs = layer_xattrs(fd.as_fd()).map_err(|e| self.io_err(rel, e))?;
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
        if let (Some(clamp), Ok(mtime)) = (self.mtime_clamp, h.mtime()) {
            if mtime > clamp {
                h.set_mtime(clamp);
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

/// A described entry's kind and content (see [`LayerWriter::described`]).
pub enum Described<'a> {
    Dir,
    /// The file's data, and its size (the file must hold exactly that many bytes).
    File(File, u64),
    Symlink(&'a [u8]),
}

/// A described entry's owner, permissions and mtime (whole seconds).
#[derive(Debug, Clone, Copy)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
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
