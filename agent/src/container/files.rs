//! A container's files, for `cp`: read and written through a descriptor of the container's
//! root directory (a live init's root, with the container's own mounts; or its snapshot,
//! mounted by the agent), every path resolved inside that root: a link, absolute or full of
//! `..`, leads nowhere outside it.
//!
//! A tree goes out through [`berth_archive::copy::write_tree`] and comes in through the tar
//! applier in copy mode: what cannot be in a layer cannot be copied either.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use berth_archive::apply::{apply_tar_at, ApplyError, ApplyOptions, ApplyStats, WhiteoutMode};
use berth_archive::diff::DiffError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

/// Most links followed while a path is resolved, as the kernel allows.
const MAX_LINKS: usize = 40;

/// What is at a path: docker's path stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    /// The last component of the path (`/` for the root).
    pub name: String,
    pub size: u64,
    /// `st_mode`: the file type bits and the permissions.
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// A link's target (the path is not followed), else empty.
    pub link_target: String,
}

impl PathStat {
    pub fn is_dir(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::Directory
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("no such file or directory in the container: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Write(#[from] DiffError),
}

/// Where a path leads: the directory holding the entry, the entry's name there (`.` for
/// the root, or a directory reached by `..`), and what it is.
struct Located {
    parent: OwnedFd,
    name: Vec<u8>,
    st: Stat,
}

fn io(path: &str) -> impl Fn(Errno) -> FilesError + '_ {
    move |e| match e {
        Errno::NOENT | Errno::NOTDIR => FilesError::NotFound(path.to_owned()),
        e => FilesError::Io { path: path.to_owned(), source: e.into() },
    }
}

/// The components of `path` (relative to the root whether it starts with `/` or not),
/// cleaned as text, as docker cleans a copy's path: `.` and empty ones dropped, `..` taking
/// off the one before it (none above the root).
fn components(path: &str) -> Vec<String> {
    let mut comps: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c.to_owned()),
        }
    }
    comps
}

/// `openat2` inside the root, again when the kernel asks (a rename raced the lookup).
fn open_in(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    berth_archive::walk::retry_eagain(|| rustix::fs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve))
}

/// Resolves `path` in the tree at `root`; its last component is followed when it is a link
/// and `follow` is set, or when the path ends with `/` or `/.` (then it must be a directory).
fn locate(root: BorrowedFd<'_>, path: &str, follow: bool) -> Result<Located, FilesError> {
    let err = io(path);
    let must_dir = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..") || path == "." || path == "..";
    let follow = follow || must_dir;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let mut comps = components(path);
    for _ in 0..=MAX_LINKS {
        let Some((name, parents)) = comps.split_last() else {
            // The root itself, as `.` of itself.
            let dir = open_in(root, ".", dir_flags).map_err(&err)?;
            let st = rustix::fs::fstat(&dir).map_err(&err)?;
            return Ok(Located { parent: dir, name: b".".to_vec(), st });
        };
        let parent_path = if parents.is_empty() { ".".to_owned() } else { parents.join("/") };
        let parent = open_in(root, &parent_path, dir_flags).map_err(&err)?;
        let st = rustix::fs::statat(&parent, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(&err)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Symlink && follow {
            let target = rustix::fs::readlinkat(&parent, name.as_str(), Vec::new()).map_err(&err)?;
            let target = target.to_string_lossy().into_owned();
            let base = if target.starts_with('/') { String::new() } else { parents.join("/") };
            comps = components(&format!("{base}/{target}"));
            continue;
        }
        if must_dir && ft != FileType::Directory {
            return Err(FilesError::Invalid(format!("{path} is not a directory")));
        }
        return Ok(Located { parent, name: name.clone().into_bytes(), st });
    }
    Err(FilesError::Io { path: path.to_owned(), source: Errno::LOOP.into() })
}

/// What is at `path` (a link itself unless `follow`).
pub fn stat(root: BorrowedFd<'_>, path: &str, follow: bool) -> Result<PathStat, FilesError> {
    let at = locate(root, path, follow)?;
    let link_target = if FileType::from_raw_mode(at.st.st_mode) == FileType::Symlink {
        rustix::fs::readlinkat(&at.parent, at.name.as_slice(), Vec::new()).map_err(io(path))?.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    // The path's own last component (as cleaned), not a followed link's target's.
    let name = components(path).pop().unwrap_or_else(|| "/".to_owned());
    Ok(PathStat { name, size: u64::try_from(at.st.st_size).unwrap_or(0), mode: at.st.st_mode, mtime: at.st.st_mtime, link_target })
}

/// Writes what is at `path` to `out` as a tar stream, named `top` (see
/// [`berth_archive::copy::write_tree`]); returns the number of entries.
pub fn archive<W: std::io::Write>(root: BorrowedFd<'_>, path: &str, follow: bool, top: &str, out: W) -> Result<u64, FilesError> {
    let at = locate(root, path, follow)?;
    Ok(berth_archive::copy::write_tree(at.parent.as_fd(), &at.name, top.as_bytes(), Path::new(path), out)?)
}

/// How a copy into a container owns its files.
#[derive(Debug, Clone, Copy)]
pub enum Owners {
    /// As the archive says (`cp -a`).
    Keep,
    /// Every entry owned by these (uid, gid).
    Set(u32, u32),
}

/// Receives a copy's tar stream `upload` into the empty directory `stage` (the agent's), with
/// the owners asked for, then writes what it holds to `spool` as a tar stream for
/// [`extract`]. Whatever is wrong with the upload (cut short, a hostile entry, a `.wh.` name,
/// a hardlink to something outside it) fails here, before the container is touched. Returns
/// the spool, at its start.
pub fn stage<R: Read>(upload: R, stage: &Path, owners: Owners, spool: &Path) -> Result<std::fs::File, FilesError> {
    let owner = match owners {
        Owners::Keep => None,
        Owners::Set(uid, gid) => Some((uid, gid)),
    };
    let opts = ApplyOptions { whiteouts: WhiteoutMode::Overlay, owner, copy: true, ..Default::default() };
    berth_archive::apply::apply_tar(upload, stage, &opts)?;
    let file_err = |e: std::io::Error| FilesError::Io { path: spool.display().to_string(), source: e };
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(spool).map_err(file_err)?;
    let dir = rustix::fs::open(stage, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(io("(stage)"))?;
    berth_archive::copy::write_tree(dir.as_fd(), b".", b"", stage, std::io::BufWriter::new(&mut file))?;
    std::io::Seek::rewind(&mut file).map_err(file_err)?;
    Ok(file)
}

/// Applies the tar stream `reader` (of [`stage`]: its owners are kept) into the directory at
/// `path` (which must exist); the archive's names are relative to it.
pub fn extract<R: Read>(root: BorrowedFd<'_>, path: &str, reader: R) -> Result<ApplyStats, FilesError> {
    let at = locate(root, path, true)?;
    if FileType::from_raw_mode(at.st.st_mode) != FileType::Directory {
        return Err(FilesError::Invalid(format!("{path} is not a directory")));
    }
    let dir = rustix::fs::openat(
        &at.parent,
        at.name.as_slice(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(path))?;
    let opts = ApplyOptions { whiteouts: WhiteoutMode::Overlay, copy: true, ..Default::default() };
    Ok(apply_tar_at(reader, dir.as_fd(), path, &opts)?)
}

/// Makes the bind mounts (volumes, the user's binds) of a stopped container's spec on the
/// tree at `root` (its snapshot, mounted by the agent), so that a copy sees what the
/// container would. Each mount point is resolved inside the root and mounted on through its
/// descriptor, never by a path a container could change; one that is not there yet (a
/// container never started), or whose source is gone, is left out. A read-only bind is made
/// read-only through the new mount's own descriptor, or the copy fails. The mounts go when
/// the snapshot is unmounted (lazily, with everything on it).
pub fn mount_binds(root: BorrowedFd<'_>, spec: &oci_spec::runtime::Spec) -> Result<(), FilesError> {
    use rustix::mount::{mount_bind_recursive, mount_remount, unmount, MountFlags, UnmountFlags};
    let mut mounts: Vec<_> = spec.mounts().iter().flatten().filter(|m| m.typ().as_deref() == Some("bind")).collect();
    // Parents before what is mounted below them.
    mounts.sort_by_key(|m| m.destination().components().count());
    for m in mounts {
        let (Some(source), dest) = (m.source(), m.destination().to_string_lossy().into_owned()) else { continue };
        let Ok(src_meta) = std::fs::metadata(source) else { continue };
        let fail = |e: Errno| FilesError::Io { path: dest.clone(), source: e.into() };
        let target = match open_in(root, dest.trim_start_matches('/'), OFlags::PATH) {
            Ok(fd) => fd,
            Err(_) => continue,
        };
        let is_dir = rustix::fs::fstat(&target).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if is_dir != src_meta.is_dir() {
            continue;
        }
        let at = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&target));
        mount_bind_recursive(source.as_path(), at.as_str()).map_err(fail)?;
        if m.options().iter().flatten().any(|o| o == "ro") {
            // The new mount, by a descriptor of its root (the target's is the one below it).
            let made = open_in(root, dest.trim_start_matches('/'), OFlags::PATH).map_err(fail)?;
            let made_at = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&made));
            if let Err(e) = mount_remount(made_at.as_str(), MountFlags::BIND | MountFlags::RDONLY, "") {
                let _ = unmount(made_at.as_str(), UnmountFlags::DETACH);
                return Err(fail(e));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn paths_resolve_inside_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("hostetc")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", root.join("up")).unwrap();
        let fd = open(&root);
        let r = fd.as_fd();
        // A link is itself unless followed; followed, it stays in the root.
        let s = stat(r, "/hostetc", false).unwrap();
        assert_eq!((s.link_target.as_str(), s.name.as_str()), ("/etc", "hostetc"));
        assert!(stat(r, "/hostetc/", false).unwrap().is_dir());
        assert_eq!(stat(r, "up", true).unwrap().size, 26);
        assert_eq!(stat(r, "/", false).unwrap().name, "/");
        assert!(matches!(stat(r, "/hostetc/shadow", true), Err(FilesError::NotFound(_))));
        assert!(matches!(stat(r, "/etc/passwd/", true), Err(FilesError::Invalid(_) | FilesError::NotFound(_))));
        // Out through a link, a file goes under its new name.
        let mut tar = Vec::new();
        assert_eq!(archive(r, "/up", true, "copy", &mut tar).unwrap(), 1);
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<String> = a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["copy"]);
        // In through a link to the host's /etc: it lands in the root's /etc.
        extract(r, "/hostetc", &tar[..]).unwrap();
        assert!(root.join("etc/copy").is_file());
        assert!(matches!(extract(r, "/etc/passwd", &tar[..]), Err(FilesError::Invalid(_))));
        // Staged: owners set, and a cut archive leaves the stage's caller nothing to apply.
        let stage_dir = tmp.path().join("stage");
        std::fs::create_dir(&stage_dir).unwrap();
        let spool = stage(&tar[..], &stage_dir, Owners::Set(5, 6), &tmp.path().join("spool")).unwrap();
        let mut a = tar::Archive::new(spool);
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!((e.path().unwrap().display().to_string(), e.header().uid().unwrap()), ("copy".to_owned(), 5));
        let cut_dir = tmp.path().join("cut");
        std::fs::create_dir(&cut_dir).unwrap();
        assert!(stage(&tar[..700], &cut_dir, Owners::Keep, &tmp.path().join("spool2")).is_err());
    }
}
