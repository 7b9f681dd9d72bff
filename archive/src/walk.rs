//! The one tree walker of the layer format: removing trees and clearing opaque directories
//! while a layer is applied ([`super::apply`]), and listing or writing the changes of a snapshot
//! ([`super::diff`]) all walk with it.
//!
//! A tree is never walked through paths. Every name is looked up with
//! `statat(AT_SYMLINK_NOFOLLOW)` in an fd of its directory; a directory is opened with
//! `O_NOFOLLOW` relative to its parent's fd and checked to be the very inode that was looked up
//! ([`WalkError::Changed`] otherwise). A symlink is an entry like any other, never followed, so
//! nothing outside the tree is reached whatever the tree holds.
//!
//! The walk is iterative (trees can be thousands of levels deep) and keeps at most [`WALK_FDS`]
//! directory fds open per tree: when it climbs back to a directory whose fd was closed, it
//! re-opens it as `..` of the one below and checks that it is the same directory (device and
//! inode).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Most directory fds one tree walk keeps open.
pub const WALK_FDS: usize = 64;

/// A file's identity: (device, inode).
pub type Ident = (u64, u64);

pub fn stat_ident(st: &Stat) -> Ident {
    (to_u64(st.st_dev), to_u64(st.st_ino))
}

/// The identity of the file `fd` is open on.
pub fn ident(fd: BorrowedFd<'_>) -> rustix::io::Result<Ident> {
    rustix::fs::fstat(fd).map(|st| stat_ident(&st))
}

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Integer conversion for `stat` fields, whose C types vary by architecture.
pub fn to_u64<T: TryInto<u64>>(v: T) -> u64 {
    v.try_into().unwrap_or(0)
}

/// Opens directory `name` in `dir`, never through a symlink.
pub fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

/// openat2 with RESOLVE_IN_ROOT or RESOLVE_BENEATH fails with EAGAIN when a rename raced the
/// lookup; retry a bit.
pub fn retry_eagain<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Sorted names in directory `fd`, without `.` and `..`.
pub fn list(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
    #[cfg(test)]
    LISTINGS.with(|n| n.set(n.get() + 1));
    let mut names = Vec::new();
    let mut dir = rustix::fs::Dir::read_from(fd)?;
    while let Some(entry) = dir.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

#[cfg(test)]
thread_local! {
    /// Directory listings made by this thread (tests count them).
    pub(crate) static LISTINGS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// What stopped a walk, apart from its visitor. `rel` is the entry's path relative to the root
/// of the tree (empty for the root itself).
#[derive(Debug)]
pub enum WalkError {
    Io {
        rel: Vec<u8>,
        errno: Errno,
    },
    /// An entry was replaced, moved or removed while the walk was in it.
    Changed {
        rel: Vec<u8>,
    },
    /// An entry is nested deeper than [`WalkOptions::max_depth`].
    TooDeep {
        rel: Vec<u8>,
        max: usize,
    },
}

impl WalkError {
    /// The error as an errno, for callers that report errnos: a change is `ESTALE`, too deep
    /// `ENAMETOOLONG`.
    pub fn errno(&self) -> Errno {
        match self {
            WalkError::Io { errno, .. } => *errno,
            WalkError::Changed { .. } => Errno::STALE,
            WalkError::TooDeep { .. } => Errno::NAMETOOLONG,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOptions {
    /// Most path components an entry may have; deeper ones stop the walk with
    /// [`WalkError::TooDeep`]. None: no limit.
    pub max_depth: Option<usize>,
    /// Walk past sockets as if they were not there (a layer cannot hold them).
    pub skip_sockets: bool,
}

/// One tree's side of an entry met by the walk.
pub struct Side<'a> {
    pub st: &'a Stat,
    /// The directory holding the entry, and its identity.
    pub parent: BorrowedFd<'a>,
    pub parent_id: Ident,
    /// The entry itself, opened, when it is a directory (new tree only).
    pub dir: Option<BorrowedFd<'a>>,
}

/// An entry of the new tree, the old tree, or both.
pub struct Node<'a> {
    /// Path relative to the roots, without leading or trailing `/`.
    pub rel: &'a [u8],
    pub name: &'a [u8],
    pub new: Option<Side<'a>>,
    pub old: Option<Side<'a>>,
}

impl Node<'_> {
    /// The path of the directory holding the entry (empty for the root).
    pub fn parent_rel(&self) -> &[u8] {
        let n = self.rel.len() - self.name.len();
        &self.rel[..n.saturating_sub(1)]
    }
}

pub trait Visitor {
    type Error;
    /// The walk's own failures, as this visitor reports them.
    fn walk_error(&self, e: WalkError) -> Self::Error;
    /// Called for every entry, parents before children, names in byte order. Returns whether
    /// to walk into it, which happens only when its new side is a directory.
    fn node(&mut self, node: &Node<'_>) -> Result<bool, Self::Error>;
    /// Called when the walk has left directory `name` (at `rel`), with the directory holding it.
    fn leave(&mut self, rel: &[u8], name: &[u8], parent: BorrowedFd<'_>) -> Result<(), Self::Error>;
}

/// Walks the tree below directory `new` (and the one below `old` in step with it, if given)
/// depth first, in name order. The old tree is walked into where both trees have a directory
/// and the visitor walks into the new one.
pub fn walk<V: Visitor>(new: OwnedFd, old: Option<OwnedFd>, opts: WalkOptions, v: &mut V) -> Result<(), V::Error> {
    match run(new, old, opts, v) {
        Ok(()) => Ok(()),
        Err(Stop::Walk(e)) => Err(v.walk_error(e)),
        Err(Stop::Visit(e)) => Err(e),
    }
}

enum Stop<E> {
    Walk(WalkError),
    Visit(E),
}

impl<E> From<WalkError> for Stop<E> {
    fn from(e: WalkError) -> Self {
        Stop::Walk(e)
    }
}

fn io(rel: &[u8]) -> impl FnOnce(Errno) -> WalkError + '_ {
    move |errno| WalkError::Io { rel: rel.to_vec(), errno }
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

fn run<V: Visitor>(new_root: OwnedFd, old_root: Option<OwnedFd>, opts: WalkOptions, v: &mut V) -> Result<(), Stop<V::Error>> {
    let mut rel: Vec<u8> = Vec::new();
    let mut new = DirStack::new(new_root).map_err(io(&rel))?;
    let mut old = old_root.map(DirStack::new).transpose().map_err(io(&rel))?;
    let old_names = match &old {
        Some(o) => list(o.fd()).map_err(io(&rel))?,
        None => Vec::new(),
    };
    let names = merge(list(new.fd()).map_err(io(&rel))?, old_names);
    let mut frames = vec![Frame { names: names.into_iter(), has_old: old.is_some(), base: 0 }];
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
            let start = if done.base == 0 { 0 } else { done.base + 1 };
            v.leave(&rel, &rel[start..], new.fd()).map_err(Stop::Visit)?;
            rel.truncate(done.base);
            continue;
        };
        let base = rel.len();
        if base > 0 {
            rel.push(b'/');
        }
        rel.extend_from_slice(&name);
        if let Some(max) = opts.max_depth.filter(|max| frames.len() > *max) {
            return Err(WalkError::TooDeep { rel, max }.into());
        }
        let new_st = if in_new { lookup(new.fd(), &name, opts).map_err(io(&rel))? } else { None };
        let old_st = match (&old, has_old && in_old) {
            (Some(o), true) => lookup(o.fd(), &name, opts).map_err(io(&rel))?,
            _ => None,
        };
        let new_dir = match &new_st {
            Some(st) if file_type(st) == FileType::Directory => Some(open_dir_checked(new.fd(), &name, st, &rel)?),
            _ => None,
        };
        let descend = if new_st.is_some() || old_st.is_some() {
            let node = Node {
                rel: &rel,
                name: &name,
                new: new_st.as_ref().map(|st| Side { st, parent: new.fd(), parent_id: new.id, dir: new_dir.as_ref().map(|fd| fd.as_fd()) }),
                old: match (&old_st, &old) {
                    (Some(st), Some(o)) => Some(Side { st, parent: o.fd(), parent_id: o.id, dir: None }),
                    _ => None,
                },
            };
            v.node(&node).map_err(Stop::Visit)?
        } else {
            false
        };
        let (true, Some(fd), Some(st)) = (descend, new_dir, new_st) else {
            rel.truncate(base);
            continue;
        };
        let mut old_names = None;
        if let (Some(ost), Some(o)) = (old_st, old.as_mut()) {
            if file_type(&ost) == FileType::Directory {
                let ofd = open_dir_checked(o.fd(), &name, &ost, &rel)?;
                o.push(ofd, stat_ident(&ost));
                old_names = Some(list(o.fd()).map_err(io(&rel))?);
            }
        }
        new.push(fd, stat_ident(&st));
        let has_old = old_names.is_some();
        let names = merge(list(new.fd()).map_err(io(&rel))?, old_names.unwrap_or_default());
        frames.push(Frame { names: names.into_iter(), has_old, base });
    }
    Ok(())
}

/// `name` in directory `dir`, never following a symlink; `None` if it is gone (or a socket
/// that `opts` skips).
fn lookup(dir: BorrowedFd<'_>, name: &[u8], opts: WalkOptions) -> rustix::io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if opts.skip_sockets && file_type(&st) == FileType::Socket => Ok(None),
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens directory `name` (at `rel`) in `dir`, which was looked up as `st`.
fn open_dir_checked(dir: BorrowedFd<'_>, name: &[u8], st: &Stat, rel: &[u8]) -> Result<OwnedFd, WalkError> {
    let fd = open_dir_nofollow(dir, name).map_err(|e| match e {
        Errno::NOENT | Errno::NOTDIR | Errno::LOOP => WalkError::Changed { rel: rel.to_vec() },
        errno => WalkError::Io { rel: rel.to_vec(), errno },
    })?;
    if ident(fd.as_fd()).map_err(io(rel))? != stat_ident(st) {
        return Err(WalkError::Changed { rel: rel.to_vec() });
    }
    Ok(fd)
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

/// The open directories from a tree's root down to the one being walked. Only the deepest
/// [`WALK_FDS`] keep their fd.
struct DirStack {
    top: OwnedFd,
    id: Ident,
    /// The directories above `top`, outermost first; those from `first_open` on hold their fd.
    above: Vec<(Option<OwnedFd>, Ident)>,
    first_open: usize,
}

impl DirStack {
    fn new(root: OwnedFd) -> rustix::io::Result<Self> {
        let id = ident(root.as_fd())?;
        Ok(Self { top: root, id, above: Vec::new(), first_open: 0 })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.top.as_fd()
    }

    /// Enters directory `fd` (identity `id`).
    fn push(&mut self, fd: OwnedFd, id: Ident) {
        let up = std::mem::replace(&mut self.top, fd);
        let up_id = std::mem::replace(&mut self.id, id);
        self.above.push((Some(up), up_id));
        if self.above.len() - self.first_open >= WALK_FDS {
            self.above[self.first_open].0 = None;
            self.first_open += 1;
        }
    }

    /// Leaves the current directory, `rel`, for its parent.
    fn pop(&mut self, rel: &[u8]) -> Result<(), WalkError> {
        let Some((fd, id)) = self.above.pop() else {
            return Ok(());
        };
        let fd = match fd {
            Some(fd) => fd,
            None => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let up = rustix::fs::openat(self.fd(), "..", flags, Mode::empty()).map_err(io(rel))?;
                if ident(up.as_fd()).map_err(io(rel))? != id {
                    // The directory was moved while we were inside it.
                    return Err(WalkError::Changed { rel: rel.to_vec() });
                }
                up
            }
        };
        self.first_open = self.first_open.min(self.above.len());
        self.top = fd;
        self.id = id;
        Ok(())
    }
}
