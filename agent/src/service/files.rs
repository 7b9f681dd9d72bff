//! A container's files, to and from the caller (`cp`): stat a path, read a tree out as a tar
//! stream, apply a tar stream into a directory. Running or not, the same rules: paths are
//! resolved inside the container's root (`container::files`).
//!
//! A live container is reached through its init's root, so its volumes, binds and tmpfs
//! mounts are in the copy; a stopped one through its snapshot, mounted by the agent while
//! no task can be made, with its volumes and binds mounted on it (a tmpfs has nothing then).

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use tokio::sync::mpsc;

use super::containers::{find, ContainerService};
use super::{ChunkSender, Error};
use crate::container::files::{self, FilesError, Owners, PathStat};
use crate::container::ContainerError;
use crate::content::random_hex;
use crate::metadata::ContainerRecord;
use crate::runtime::FilesAccess;

/// What a copy into a container did.
#[derive(Debug, Clone, Default)]
pub struct CopiedIn {
    pub entries: u64,
    pub bytes: u64,
}

/// A directory of the agent's for one copy (the mount point of a stopped container's
/// snapshot, an upload's stage), removed when dropped. It lies where the agent's start
/// removes what a crash left, mounts first.
struct Scratch(PathBuf);

impl Scratch {
    fn new(core: &super::Core) -> Result<Scratch, Error> {
        let path = core.config.root.join("build").join("mnt").join(format!("cp-{}", random_hex(8)));
        std::fs::create_dir_all(path.join("merged")).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Never removed through a mount that is still there.
        let _ = rustix::mount::unmount(self.0.join("merged"), rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files_err(e: FilesError) -> Error {
    Error::Container(ContainerError::Files(e))
}

impl ContainerService {
    /// Runs `f` on a blocking thread with a descriptor of the container's root: its live
    /// init's, or its snapshot's, mounted with its volumes and binds (read-only when the
    /// container's root is: `--read-only`) while no task can be made.
    async fn with_root<T: Send + 'static>(
        &self,
        ns: &str,
        rec: ContainerRecord,
        f: impl FnOnce(BorrowedFd<'_>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let access = self.core.tasks.files(ns, &rec).await?;
        let (core, ns) = (self.core.clone(), ns.to_owned());
        super::blocking(move || match access {
            FilesAccess::Live(root) => f(root.as_fd()),
            FilesAccess::Stopped(_no_task) => {
                let spec = core.containers.spec(&ns, &rec.id)?;
                let read_only = spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false);
                let scratch = Scratch::new(&core)?;
                let at = scratch.0.join("merged");
                core.snapshots.with_mounted(&ns, &rec.snapshot_key, &at, |root| {
                    if read_only {
                        use rustix::mount::{mount_remount, MountFlags};
                        mount_remount(root, MountFlags::BIND | MountFlags::RDONLY, "")
                            .map_err(|e| Error::Internal(format!("{}: {e}", root.display())))?;
                    }
                    let fd = rustix::fs::open(
                        root,
                        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .map_err(|e| Error::Internal(format!("{}: {e}", root.display())))?;
                    files::mount_binds(fd.as_fd(), &spec).map_err(files_err)?;
                    f(fd.as_fd())
                })?
            }
        })
        .await
    }

    /// What is at `path` in the container (a link itself unless `follow`).
    pub async fn stat_path(&self, ns: &str, id: &str, path: &str, follow: bool) -> Result<PathStat, Error> {
        let path = checked_path(path)?;
        let rec = find(&self.core, ns, id).await?;
        self.with_root(ns, rec, move |root| files::stat(root, &path, follow).map_err(files_err)).await
    }

    /// What is at `path` in the container, as a tar stream of chunks whose top entry is named
    /// `top` (empty: the path's last component; `.`: only what is below a directory). A path
    /// that is not there is an error here; a failure later ends the stream with it.
    pub async fn copy_from(
        &self,
        ns: &str,
        id: &str,
        path: &str,
        follow: bool,
        top: &str,
    ) -> Result<mpsc::Receiver<Result<Vec<u8>, Error>>, Error> {
        let path = checked_path(path)?;
        let top = match top {
            "" | "." => top.to_owned(),
            t => checked_name(t)?,
        };
        let rec = find(&self.core, ns, id).await?;
        let (tx, rx) = mpsc::channel(super::CHUNK_QUEUE);
        // The first answer: the copy has begun, or why it could not (before any chunk).
        let (begun_tx, begun_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
        let begun = std::sync::Arc::new(std::sync::Mutex::new(Some(begun_tx)));
        let take = |b: &std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Result<(), Error>>>>| {
            b.lock().unwrap_or_else(|e| e.into_inner()).take()
        };
        let begun_in = begun.clone();
        let (svc, ns) = (self.clone(), ns.to_owned());
        let handle = tokio::runtime::Handle::current();
        tokio::spawn(async move {
            let name = rec.name.clone();
            let mut sink = ChunkSender::new(tx.clone(), handle.clone());
            let r = svc
                .with_root(&ns, rec, move |root| {
                    let stat = files::stat(root, &path, follow).map_err(files_err)?;
                    let top = match top.as_str() {
                        "." if !stat.is_dir() => {
                            return Err(Error::InvalidArgument(format!("{path} is not a directory: its contents cannot be copied alone")));
                        }
                        "." => String::new(),
                        "" if stat.name == "/" => String::new(),
                        "" => stat.name,
                        _ => top,
                    };
                    // The caller may be gone.
                    if take(&begun_in).is_none_or(|s| s.send(Ok(())).is_err()) {
                        return Ok(());
                    }
                    files::archive(root, &path, follow, &top, &mut sink).map_err(files_err)?;
                    sink.flush().map_err(|e| Error::Cancelled(e.to_string()))
                })
                .await;
            if let Err(e) = r {
                // Before the first chunk, the call's own answer; after it, the stream's end.
                match take(&begun) {
                    Some(s) => {
                        let _ = s.send(Err(e));
                    }
                    None => {
                        tracing::info!(container = %name, error = %e, "copy out of a container ended");
                        let _ = tokio::time::timeout(super::CHUNK_IDLE_TIMEOUT, tx.send(Err(e))).await;
                    }
                }
            }
        });
        begun_rx.await.map_err(|_| Error::Internal("the copy stopped before it began".into()))??;
        Ok(rx)
    }

    /// Applies the tar stream `upload` into the directory `path` of the container (it must
    /// exist), the entries owned by the container's root unless `keep_owners` (`cp -a`). The
    /// upload is received whole into a stage of the agent's, by the tar applier's rules,
    /// before the container is touched: one cut short, or with a hostile entry, writes
    /// nothing there.
    pub async fn copy_to(
        &self,
        ns: &str,
        id: &str,
        path: &str,
        keep_owners: bool,
        upload: impl Read + Send + 'static,
    ) -> Result<CopiedIn, Error> {
        let path = checked_path(path)?;
        let rec = find(&self.core, ns, id).await?;
        // The destination first: a wrong one is said before the upload is taken.
        let dest = self.stat_path(ns, id, &path, true).await?;
        if !dest.is_dir() {
            return Err(files_err(FilesError::Invalid(format!("{path} is not a directory"))));
        }
        let scratch = Scratch::new(&self.core)?;
        let owners = if keep_owners { Owners::Keep } else { Owners::Set(0, 0) };
        let (stage, spool) = (scratch.0.join("stage"), scratch.0.join("stage.tar"));
        let file = super::blocking(move || {
            std::fs::create_dir(&stage).map_err(|e| Error::Internal(format!("{}: {e}", stage.display())))?;
            files::stage(upload, &stage, owners, &spool).map_err(stage_err)
        })
        .await?;
        let r = self
            .with_root(ns, rec, move |root| {
                let stats = files::extract(root, &path, std::io::BufReader::new(file)).map_err(files_err)?;
                Ok(CopiedIn { entries: stats.entries, bytes: stats.bytes })
            })
            .await;
        drop(scratch);
        r
    }
}

/// A staging failure: the upload's own (stalled, cut off, a message too large) by what
/// failed; two entries at one name, a directory and a file, are the archive's fault; else the
/// archive's error.
fn stage_err(e: FilesError) -> Error {
    use berth_archive::apply::ApplyError;
    match &e {
        FilesError::Apply(ApplyError::Archive(io)) => match io.kind() {
            std::io::ErrorKind::TimedOut => Error::DeadlineExceeded(io.to_string()),
            std::io::ErrorKind::ConnectionAborted => Error::Cancelled(io.to_string()),
            std::io::ErrorKind::FileTooLarge => Error::OutOfRange(io.to_string()),
            _ => files_err(e),
        },
        FilesError::Apply(ApplyError::KindConflict { .. }) => Error::InvalidArgument(e.to_string()),
        _ => files_err(e),
    }
}

/// A container path: any text without NUL (it is resolved inside the container's root).
fn checked_path(path: &str) -> Result<String, Error> {
    if path.is_empty() {
        return Err(Error::InvalidArgument("a path in the container is required".into()));
    }
    if path.contains('\0') || path.len() > 4096 {
        return Err(Error::InvalidArgument("a container path holds no NUL byte and is at most 4096 bytes".into()));
    }
    Ok(path.to_owned())
}

/// The name of a copy's top entry: one component.
fn checked_name(name: &str) -> Result<String, Error> {
    if name == ".." || name.contains(['/', '\0']) || name.len() > 255 {
        return Err(Error::InvalidArgument(format!("{:?} is not a file name", berth_common::text::printable(name))));
    }
    Ok(name.to_owned())
}
