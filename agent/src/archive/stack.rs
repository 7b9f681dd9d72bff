//! Reading a stack of layer directories as the one filesystem a container sees, without
//! mounting it.
//!
//! In [`WhiteoutMode::Overlay`] the rules are overlayfs' own. A name is looked up in the
//! layers that show the directory holding it, topmost first: the first layer that has it
//! decides. A whiteout device hides it and everything below; a non-directory hides everything
//! below; a directory merges with the directories of the same name below it, down to the first
//! opaque one (inclusive) or the first layer where the name is not a directory. In
//! [`WhiteoutMode::Native`] every directory is a full copy: the stack is its top directory.
//!
//! Nothing is looked up through paths the layers control. Each layer's directory is opened
//! from its root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` along a path whose
//! components were all found to be real directories, and names are looked up in it with
//! `AT_SYMLINK_NOFOLLOW`. [`Stack::read_file`] follows symlinks the way the container would, but
//! only through this lookup: a target is resolved against the stack's own root (`/..` is `/`),
//! never the host's.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use super::walk::{file_type, open_dir_nofollow, retry_eagain, stat_ident};
use super::whiteout::WhiteoutMode;

/// Most symlinks one [`Stack::read_file`] follows (the kernel's limit per lookup).
const MAX_SYMLINKS: usize = 40;
/// Longest symlink target followed.
const MAX_TARGET: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
}

/// What a name is in the stack.
#[derive(Debug)]
pub enum Found {
    /// Not there, or hidden by a whiteout.
    Absent,
    /// A directory: the layers whose copy of it shows, topmost first.
    Dir(Vec<usize>),
    /// Anything else, as `st`, in layer `layer`.
    Other { layer: usize, st: Stat },
}

/// A stack of layer directories, topmost first.
pub struct Stack {
    layers: Vec<PathBuf>,
    mode: WhiteoutMode,
    /// The layers whose root shows.
    root: Vec<usize>,
    /// Lookups of the names of one directory open it once per layer.
    cached: Cache,
}

impl Stack {
    /// The stack of `layers` (topmost first; each a directory), with `mode`'s whiteouts.
    pub fn open(layers: &[PathBuf], mode: WhiteoutMode) -> Result<Self, StackError> {
        let mut root = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let fd = open_root(layer).map_err(|e| io_error(layer, e))?;
            root.push(i);
            if mode.is_opaque(fd.as_fd()).map_err(|e| io_error(layer, e))? {
                break;
            }
            if mode == WhiteoutMode::Native {
                // A full copy: nothing below it shows.
                break;
            }
        }
        Ok(Self { layers: layers.to_vec(), mode, root, cached: None })
    }

    /// The layers whose root directory shows, topmost first.
    pub fn root(&self) -> &[usize] {
        &self.root
    }

    /// Looks up `name` in directory `dir` (a path from the root, without leading or trailing
    /// `/`, whose components are all directories in the stack) shown by layers `shown`.
    pub fn lookup(&mut self, shown: &[usize], dir: &[u8], name: &[u8]) -> Result<Found, StackError> {
        let Stack { layers, mode, cached, .. } = self;
        let mode = *mode;
        let mut below = Vec::new();
        for &i in shown {
            let err = |e| io_error(&join(&join(&layers[i], dir), name), e);
            let Some(fd) = dir_fd(cached, &layers[i], i, dir).map_err(|e| io_error(&join(&layers[i], dir), e))? else {
                continue;
            };
            let st = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(err(e)),
            };
            if mode.is_whiteout(&st) {
                // Hidden here and in every layer below.
                break;
            }
            if file_type(&st) != FileType::Directory {
                if below.is_empty() {
                    return Ok(Found::Other { layer: i, st });
                }
                // A directory was found above: merging stops here.
                break;
            }
            below.push(i);
            let sub = match open_dir_nofollow(fd, name) {
                Ok(sub) => sub,
                Err(e) => return Err(err(e)),
            };
            if stat_ident(&rustix::fs::fstat(&sub).map_err(err)?) != stat_ident(&st) {
                return Err(err(Errno::STALE));
            }
            if mode.is_opaque(sub.as_fd()).map_err(err)? || mode == WhiteoutMode::Native {
                break;
            }
        }
        Ok(if below.is_empty() { Found::Absent } else { Found::Dir(below) })
    }

    /// The contents of regular file `path` (absolute or relative to the root) as the container
    /// sees it: symlinks on the way and at the end followed inside the stack. None when it is
    /// absent, hidden, not a regular file, or a lookup on the way fails as it would in the
    /// container (a symlink loop, a file where a directory is needed). At most `max` bytes:
    /// a longer file is [`StackError::TooLarge`].
    pub fn read_file(&mut self, path: &[u8], max: u64) -> Result<Option<Vec<u8>>, StackError> {
        // Components still to resolve, last first; a symlink's target goes in front of the rest.
        let mut todo: Vec<Vec<u8>> = components(path).rev().collect();
        // The directories resolved so far, root first: (path, layers showing it).
        let mut dirs: Vec<(Vec<u8>, Vec<usize>)> = vec![(Vec::new(), self.root.clone())];
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == b".." {
                if dirs.len() > 1 {
                    dirs.pop();
                }
                continue;
            }
            let Some((dir, shown)) = dirs.last().cloned() else { return Ok(None) };
            let (layer, st) = match self.lookup(&shown, &dir, &name)? {
                Found::Absent => return Ok(None),
                Found::Dir(below) => {
                    let rel = if dir.is_empty() { name } else { [&dir[..], b"/", &name].concat() };
                    dirs.push((rel, below));
                    continue;
                }
                Found::Other { layer, st } => (layer, st),
            };
            let path = join(&join(&self.layers[layer], &dir), &name);
            let Some(fd) = dir_fd(&mut self.cached, &self.layers[layer], layer, &dir).map_err(|e| io_error(&path, e))? else {
                return Ok(None);
            };
            match file_type(&st) {
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Ok(None);
                    }
                    let target = rustix::fs::readlinkat(fd, name.as_slice(), Vec::new()).map_err(|e| io_error(&path, e))?;
                    let target = target.as_bytes();
                    if target.len() > MAX_TARGET {
                        return Ok(None);
                    }
                    if target.starts_with(b"/") {
                        dirs.truncate(1);
                    }
                    todo.extend(components(target).rev());
                }
                FileType::RegularFile if todo.is_empty() => return read_regular(fd, &name, &st, &path, max).map(Some),
                // A device, fifo or socket is no file to read; anything but a directory on the way fails.
                _ => return Ok(None),
            }
        }
        // The path named a directory (or the root).
        Ok(None)
    }
}

/// The directory last looked into, and its fd in each layer opened so far.
type Cache = Option<(Vec<u8>, Vec<(usize, OwnedFd)>)>;

/// Directory `dir` of layer `i` (whose root is `root`), opened from the root without following
/// any symlink, through `cache`; None if it is not a directory there.
fn dir_fd<'c>(cache: &'c mut Cache, root: &Path, i: usize, dir: &[u8]) -> rustix::io::Result<Option<BorrowedFd<'c>>> {
    if cache.as_ref().is_none_or(|(rel, _)| rel != dir) {
        *cache = Some((dir.to_vec(), Vec::new()));
    }
    let Some((_, fds)) = cache.as_mut() else { return Ok(None) };
    let pos = match fds.iter().position(|(layer, _)| *layer == i) {
        Some(pos) => pos,
        None => {
            let root = open_root(root)?;
            let path: &[u8] = if dir.is_empty() { b"." } else { dir };
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let fd = match retry_eagain(|| rustix::fs::openat2(&root, path, flags, Mode::empty(), resolve)) {
                Ok(fd) => fd,
                // Not a directory in this layer after all (a symlink or a file on the way).
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => return Ok(None),
                Err(e) => return Err(e),
            };
            fds.push((i, fd));
            fds.len() - 1
        }
    };
    Ok(Some(fds[pos].1.as_fd()))
}

/// Reads regular file `name` of `dir`, found as `st`, if it still is that file.
fn read_regular(dir: BorrowedFd<'_>, name: &[u8], st: &Stat, path: &Path, max: u64) -> Result<Vec<u8>, StackError> {
    // O_NONBLOCK: should a fifo have taken the file's place, opening it must not hang.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| io_error(path, e))?;
    let now = rustix::fs::fstat(&fd).map_err(|e| io_error(path, e))?;
    if stat_ident(&now) != stat_ident(st) || file_type(&now) != FileType::RegularFile {
        return Err(io_error(path, Errno::STALE));
    }
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|source| StackError::Io { path: path.to_owned(), source })?;
    if data.len() as u64 > max {
        return Err(StackError::TooLarge { path: path.to_owned(), max });
    }
    Ok(data)
}

/// The components of `path`, without empty and `.` ones.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec)
}

/// A layer's root: a path the snapshotter chose, trusted.
fn open_root(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

fn io_error(path: &Path, e: Errno) -> StackError {
    StackError::Io { path: path.to_owned(), source: e.into() }
}
