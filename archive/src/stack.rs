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
    /// A directory: the layers whose copy of it shows, topmost first, and the topmost copy.
    Dir { layers: Vec<usize>, st: Stat },
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
        let mut top = None;
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
            top.get_or_insert(st);
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
        Ok(match top {
            Some(st) => Found::Dir { layers: below, st },
            None => Found::Absent,
        })
    }

    /// Where `path` (absolute or relative to the root) leads, as the container would resolve
    /// it: symlinks on the way, and at the end if `follow`, are followed inside the stack. None
    /// when it is absent or hidden, names the root, or a lookup on the way fails as it would in
    /// the container (a symlink loop, a non-directory where a directory is needed).
    pub fn resolve(&mut self, path: &[u8], follow: bool) -> Result<Option<Resolved>, StackError> {
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
                Found::Dir { layers, st } => {
                    if todo.is_empty() {
                        return self.resolved(layers[0], &dir, name, st).map(Some);
                    }
                    let rel = if dir.is_empty() { name } else { [&dir[..], b"/", &name].concat() };
                    dirs.push((rel, layers));
                    continue;
                }
                Found::Other { layer, st } => (layer, st),
            };
            match file_type(&st) {
                FileType::Symlink if follow || !todo.is_empty() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Ok(None);
                    }
                    let path = join(&join(&self.layers[layer], &dir), &name);
                    let Some(fd) = dir_fd(&mut self.cached, &self.layers[layer], layer, &dir).map_err(|e| io_error(&path, e))? else {
                        return Ok(None);
                    };
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
                _ if todo.is_empty() => return self.resolved(layer, &dir, name, st).map(Some),
                // Anything but a directory on the way fails.
                _ => return Ok(None),
            }
        }
        // The path named the root.
        Ok(None)
    }

    /// [`Resolved`] for `name`, found as `st` in directory `dir` of `layer`.
    fn resolved(&mut self, layer: usize, dir: &[u8], name: Vec<u8>, st: Stat) -> Result<Resolved, StackError> {
        let path = join(&join(&self.layers[layer], dir), &name);
        let fd = dir_fd(&mut self.cached, &self.layers[layer], layer, dir).and_then(|fd| fd.ok_or(Errno::NOENT));
        let dir =
            fd.map_err(|e| io_error(&path, e))?.try_clone_to_owned().map_err(|source| StackError::Io { path: path.clone(), source })?;
        Ok(Resolved { layer, path, dir, name, st })
    }

    /// The contents of regular file `path` as the container sees it (see
    /// [`resolve`](Self::resolve), symlinks followed). None when it does not resolve or is not a
    /// regular file. At most `max` bytes: a longer file is [`StackError::TooLarge`].
    pub fn read_file(&mut self, path: &[u8], max: u64) -> Result<Option<Vec<u8>>, StackError> {
        match self.resolve(path, true)? {
            Some(r) if file_type(&r.st) == FileType::RegularFile => read_regular(r.dir.as_fd(), &r.name, &r.st, &r.path, max).map(Some),
            // A directory, device, fifo or socket is no file to read.
            _ => Ok(None),
        }
    }
}

/// Where a path leads in a [`Stack`].
#[derive(Debug)]
pub struct Resolved {
    /// The layer that holds it (the topmost, for a directory).
    pub layer: usize,
    /// Its path on disk (for messages).
    pub path: PathBuf,
    /// The directory holding it in that layer, and its name there.
    pub dir: OwnedFd,
    pub name: Vec<u8>,
    /// What it is there, looked up without following a symlink.
    pub st: Stat,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whiteout::{make_overlay_whiteout, set_overlay_opaque};
    use std::fs;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, data: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn dir_fd(path: &Path) -> OwnedFd {
        fs::create_dir_all(path).unwrap();
        open_root(path).unwrap()
    }

    fn whiteout(path: &Path) {
        make_overlay_whiteout(dir_fd(path.parent().unwrap()).as_fd(), path.file_name().unwrap().as_bytes()).unwrap();
    }

    fn opaque(path: &Path) {
        set_overlay_opaque(dir_fd(path).as_fd()).unwrap();
    }

    /// Three overlay layers, topmost first.
    fn layers(tmp: &Path) -> Vec<PathBuf> {
        let [top, mid, low] = ["top", "mid", "low"].map(|l| tmp.join(l));
        write(&low.join("etc/passwd"), b"low passwd");
        write(&low.join("etc/group"), b"low group");
        write(&low.join("etc/hosts"), b"low hosts");
        write(&low.join("usr/lib/os-release"), b"low os-release");
        write(&low.join("opt/a/f"), b"low f");
        write(&low.join("srv/f"), b"low srv");
        write(&mid.join("etc/hosts"), b"mid hosts");
        write(&mid.join("usr/lib/os-release"), b"mid os-release");
        whiteout(&mid.join("opt/a"));
        // A file hides the directory below it.
        write(&mid.join("srv"), b"mid srv file");
        write(&top.join("etc/passwd"), b"top passwd");
        opaque(&top.join("etc"));
        fs::create_dir_all(top.join("usr")).unwrap();
        symlink("../usr/lib/os-release", top.join("etc/os-release")).unwrap();
        vec![top, mid, low]
    }

    fn read(stack: &mut Stack, path: &str) -> Option<String> {
        stack.read_file(path.as_bytes(), 1 << 20).unwrap().map(|d| String::from_utf8(d).unwrap())
    }

    #[test]
    fn the_topmost_layer_wins_and_whiteouts_and_opaque_directories_hide_the_layers_below() {
        let tmp = tempfile::tempdir().unwrap();
        let mut stack = Stack::open(&layers(tmp.path()), WhiteoutMode::Overlay).unwrap();
        assert_eq!(read(&mut stack, "/etc/passwd").as_deref(), Some("top passwd"));
        // The top layer's /etc is opaque: the lower /etc/group and /etc/hosts are gone.
        assert_eq!(read(&mut stack, "etc/group"), None);
        assert_eq!(read(&mut stack, "/etc/hosts"), None);
        // Merged directories: the nearest copy wins.
        assert_eq!(read(&mut stack, "/usr/lib/os-release").as_deref(), Some("mid os-release"));
        // Whited out, with what was below.
        assert_eq!(read(&mut stack, "/opt/a/f"), None);
        // A file in place of a directory: nothing below it, and it is no directory.
        assert_eq!(read(&mut stack, "/srv/f"), None);
        assert_eq!(read(&mut stack, "/srv").as_deref(), Some("mid srv file"));
        // Directories are not files.
        assert_eq!(read(&mut stack, "/etc"), None);
        assert_eq!(read(&mut stack, "/"), None);
    }

    #[test]
    fn symlinks_are_followed_inside_the_stack_and_never_out_of_it() {
        let tmp = tempfile::tempdir().unwrap();
        let layers = layers(tmp.path());
        let top = &layers[0];
        // Relative, through the merged tree.
        let mut stack = Stack::open(&layers, WhiteoutMode::Overlay).unwrap();
        assert_eq!(read(&mut stack, "/etc/os-release").as_deref(), Some("mid os-release"));
        // Absolute and climbing above the root: both resolve against the stack's root.
        symlink("/etc/passwd", top.join("abs")).unwrap();
        symlink("../../../../etc/passwd", top.join("usr/up")).unwrap();
        // The host's own /etc is never read.
        symlink("/etc", top.join("usr/etc")).unwrap();
        symlink("loop", top.join("loop")).unwrap();
        let mut stack = Stack::open(&layers, WhiteoutMode::Overlay).unwrap();
        assert_eq!(read(&mut stack, "/abs").as_deref(), Some("top passwd"));
        assert_eq!(read(&mut stack, "/usr/up").as_deref(), Some("top passwd"));
        assert_eq!(read(&mut stack, "/usr/etc/passwd").as_deref(), Some("top passwd"));
        assert_eq!(read(&mut stack, "/usr/etc/hostname"), None, "the host's /etc/hostname was read");
        assert_eq!(read(&mut stack, "/loop"), None);
        // A whiteout or a file is no directory to go through.
        assert_eq!(read(&mut stack, "/etc/passwd/x"), None);
    }

    #[test]
    fn a_symlink_in_place_of_a_directory_hides_the_layers_below_and_resolves_inside_the_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, low, outside) = (tmp.path().join("top"), tmp.path().join("low"), tmp.path().join("outside"));
        write(&outside.join("passwd"), b"outside");
        write(&low.join("etc/passwd"), b"low passwd");
        // The top layer's etc is a symlink to a directory outside every layer.
        fs::create_dir_all(&top).unwrap();
        symlink(&outside, top.join("etc")).unwrap();
        let mut stack = Stack::open(&[top, low], WhiteoutMode::Overlay).unwrap();
        // The container sees `/etc` -> `<outside path>`, which does not exist inside it.
        assert_eq!(read(&mut stack, "/etc/passwd"), None);
    }

    #[test]
    fn a_native_stack_is_its_top_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, low) = (tmp.path().join("top"), tmp.path().join("low"));
        write(&top.join("etc/passwd"), b"copy");
        write(&low.join("etc/group"), b"parent group");
        // In a full copy a 0/0 device is a device, not a whiteout, and xattrs mean nothing.
        whiteout(&top.join("etc/group"));
        opaque(&top.join("etc"));
        let mut stack = Stack::open(&[top, low], WhiteoutMode::Native).unwrap();
        assert_eq!(stack.root(), [0]);
        assert_eq!(read(&mut stack, "/etc/passwd").as_deref(), Some("copy"));
        assert_eq!(read(&mut stack, "/etc/group"), None);
    }

    #[test]
    fn a_file_longer_than_the_limit_is_an_error_and_a_missing_layer_too() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        write(&top.join("big"), &[b'x'; 100]);
        let mut stack = Stack::open(std::slice::from_ref(&top), WhiteoutMode::Overlay).unwrap();
        assert_eq!(stack.read_file(b"big", 100).unwrap().map(|d| d.len()), Some(100));
        let r = stack.read_file(b"big", 99);
        assert!(matches!(&r, Err(StackError::TooLarge { path, max: 99 }) if path.ends_with("big")), "{r:?}");
        let missing = tmp.path().join("missing");
        let r = Stack::open(&[top, missing.clone()], WhiteoutMode::Overlay);
        assert!(matches!(&r, Err(StackError::Io { path, .. }) if *path == missing), "{:?}", r.err());
    }
}
