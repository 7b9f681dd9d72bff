//! `cp`: files between a container and this machine, or a tar stream on standard input or
//! output, with docker's rules for where a copy lands.
//!
//! Trees travel as tar streams written and applied by the layer format's own code
//! (`berth-archive`): the agent resolves every container path inside the container's root,
//! and this side applies what comes out in copy mode (nothing lands outside the destination,
//! no directory is replaced by a file or the reverse).

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_api::v1;
use clap::Args;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Conn;

pub const CP_EXAMPLES: &str = "\
Where a copy lands (as docker cp):
  SRC a file: into DEST if DEST is a directory, else as the file DEST (its directory must exist)
  SRC a directory: into DEST as DEST/NAME if DEST is a directory, else as the new directory DEST
  SRC ending in /. : what the directory holds, into the directory DEST

Owners: without -a, files copied into a container belong to its root (0:0), and files copied
out belong to you; -a keeps the numeric owners of the source (when copying out, only if you
run berthctl as root).

Examples:
  berthctl cp ./app.conf web:/etc/app/          a file into a container
  berthctl cp web:/var/log ./logs               a directory out of a container (running or not)
  berthctl cp web:/etc/. ./etc-copy             what a directory holds
  berthctl cp - web:/srv < site.tar             a tar stream into a directory
  berthctl cp web:/srv - | tar -tv              a tar stream out";

#[derive(Debug, Args)]
#[command(after_help = CP_EXAMPLES)]
pub struct CpArgs {
    /// Keep the numeric owners (uid, gid) of the source
    #[arg(short, long)]
    pub archive: bool,
    /// Follow a link at the end of SRC (copy what it points to)
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Print nothing about the copy on standard error
    #[arg(short, long)]
    pub quiet: bool,
    /// CONTAINER:PATH, a local path, or - (a tar stream read from standard input)
    pub src: String,
    /// CONTAINER:PATH, a local path, or - (a tar stream written to standard output)
    pub dest: String,
}

/// One side of a copy.
enum Side {
    Local(String),
    Container { id: String, path: String },
}

/// docker's reading: a path that starts with `/` or `.`, or has no `:`, is local.
fn side(arg: &str) -> Side {
    if arg.starts_with('/') || arg.starts_with('.') {
        return Side::Local(arg.to_owned());
    }
    match arg.split_once(':') {
        Some((id, path)) if !id.is_empty() => Side::Container { id: id.to_owned(), path: path.to_owned() },
        _ => Side::Local(arg.to_owned()),
    }
}

pub async fn cp(conn: &Conn, a: CpArgs) -> Result<i32> {
    match (side(&a.src), side(&a.dest)) {
        (Side::Container { id, path }, Side::Local(dest)) => copy_out(conn, &a, &id, &path, &dest).await,
        (Side::Local(src), Side::Container { id, path }) => copy_in(conn, &a, &src, &id, &path).await,
        (Side::Container { .. }, Side::Container { .. }) => {
            bail!("copying between containers is not supported: copy to a local path first")
        }
        (Side::Local(_), Side::Local(_)) => bail!("one side of a copy must be CONTAINER:PATH"),
    }
}

/// The last component of `path` and the directory that holds it (`.` when none is named).
fn split(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", name)) => ("/".to_owned(), name.to_owned()),
        Some((dir, name)) => (dir.to_owned(), name.to_owned()),
        None => (".".to_owned(), trimmed.to_owned()),
    }
}

/// Whether a path names what a directory holds (docker's `SRC/.`).
fn contents_only(path: &str) -> bool {
    path.ends_with("/.") || path == "."
}

fn is_dir_mode(mode: u32) -> bool {
    mode & 0o170000 == 0o040000
}

async fn stat(conn: &Conn, id: &str, path: &str, follow: bool) -> Result<Option<v1::PathStat>, tonic::Status> {
    let req = v1::StatPathRequest { id: id.to_owned(), path: path.to_owned(), follow_link: follow };
    match conn.containers().stat_path(req).await {
        Ok(r) => Ok(r.into_inner().stat),
        // The container exists (a missing one is said as such by the agent's message).
        Err(s) if s.code() == tonic::Code::NotFound && s.message().starts_with("no such file") => Ok(None),
        Err(s) => Err(s),
    }
}

fn done(a: &CpArgs, bytes: u64, to: &str) {
    if !a.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("Successfully copied {} to {to}", crate::output::size(i64::try_from(bytes).unwrap_or(i64::MAX)));
    }
}

async fn copy_out(conn: &Conn, a: &CpArgs, id: &str, src: &str, dest: &str) -> Result<i32> {
    let Some(st) = stat(conn, id, src, a.follow_link).await? else {
        bail!("could not find the file {src} in container {id}");
    };
    let mut req = v1::CopyFromRequest { id: id.to_owned(), path: src.to_owned(), follow_link: a.follow_link, archive_name: String::new() };
    if dest == "-" {
        let mut stream = conn.containers().copy_from(req).await?.into_inner();
        let fd = std::io::stdout().as_fd().try_clone_to_owned().context("standard output")?;
        let mut out = std::fs::File::from(fd);
        while let Some(msg) = stream.message().await? {
            out.write_all(&msg.data)?;
        }
        out.flush()?;
        return Ok(0);
    }
    let src_dir = is_dir_mode(st.mode);
    // A link at DEST is followed, as docker follows it.
    let dest = match std::fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(dest) {
            Ok(real) => real.to_string_lossy().into_owned(),
            Err(_) => dest.to_owned(),
        },
        _ => dest.to_owned(),
    };
    let dest = dest.as_str();
    let (dir, name) = match std::fs::metadata(dest) {
        Ok(m) if m.is_dir() => (dest.to_owned(), if src_dir && contents_only(src) { ".".to_owned() } else { String::new() }),
        Ok(_) if src_dir => bail!("cannot copy a directory to a file: {dest}"),
        Ok(_) => split(dest),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dest.ends_with('/') && !src_dir {
                bail!("the destination directory {dest} does not exist");
            }
            let (dir, name) = split(dest);
            if !Path::new(&dir).is_dir() {
                bail!("the destination directory {dir} does not exist");
            }
            (dir, name)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {dest}")),
    };
    req.archive_name = name;
    let mut stream = conn.containers().copy_from(req).await?.into_inner();
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let root = PathBuf::from(&dir);
    let keep = a.archive && rustix::process::geteuid().is_root();
    let applier = tokio::task::spawn_blocking(move || {
        let reader = berth_archive::ChunkReader::new(std::iter::from_fn(move || rx.blocking_recv()));
        let me = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        let opts = berth_archive::apply::ApplyOptions { copy: true, owner: (!keep).then_some(me), ..Default::default() };
        berth_archive::apply::apply_tar(reader, &root, &opts)
    });
    loop {
        let item = match stream.message().await {
            Ok(Some(msg)) => Ok(msg.data),
            Ok(None) => break,
            Err(s) => Err(std::io::Error::other(s.message().to_owned())),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            break;
        }
    }
    drop(tx);
    let stats = applier.await?.with_context(|| format!("copying into {dir}"))?;
    done(a, stats.bytes, dest);
    Ok(0)
}

async fn copy_in(conn: &Conn, a: &CpArgs, src: &str, id: &str, dest: &str) -> Result<i32> {
    let (req_tx, req_rx) = mpsc::channel::<v1::CopyToRequest>(4);
    let writer = if src == "-" {
        // Checked by the agent: DEST must be a directory.
        let options = v1::CopyToOptions { id: id.to_owned(), path: dest.to_owned(), keep_owners: a.archive };
        req_tx.send(v1::CopyToRequest { payload: Some(v1::copy_to_request::Payload::Options(options)) }).await?;
        tokio::task::spawn_blocking(move || {
            let mut sink = Chunks { tx: req_tx, buf: Vec::new() };
            std::io::copy(&mut std::io::stdin().lock(), &mut sink).context("reading standard input")?;
            sink.flush().context("sending the archive")?;
            Ok::<(), anyhow::Error>(())
        })
    } else {
        // `..` names the directory it leads to (docker cleans the path first).
        let cleaned;
        let src = if src == ".." || src.ends_with("/..") {
            cleaned = std::fs::canonicalize(src).with_context(|| format!("cannot copy {src}"))?.to_string_lossy().into_owned();
            cleaned.as_str()
        } else {
            src
        };
        let meta = if a.follow_link { std::fs::metadata(src) } else { std::fs::symlink_metadata(src) };
        let meta = meta.with_context(|| format!("cannot copy {src}"))?;
        let src_dir = meta.is_dir();
        let (dir, name) = match stat(conn, id, dest, true).await? {
            Some(st) if is_dir_mode(st.mode) => (dest.to_owned(), if src_dir && contents_only(src) { String::new() } else { split(src).1 }),
            Some(_) if src_dir => bail!("cannot copy a directory to a file: {id}:{dest}"),
            Some(_) => split(dest),
            None if dest.ends_with('/') && !src_dir => bail!("the destination directory {id}:{dest} does not exist"),
            None => split(dest),
        };
        // What is read: the directory holding SRC and SRC's name there (the directory itself
        // for `SRC/.`; what a followed link leads to, for -L).
        let (from_dir, from_name) = if contents_only(src) {
            (src.to_owned(), ".".to_owned())
        } else if a.follow_link {
            let real = std::fs::canonicalize(src).with_context(|| format!("cannot copy {src}"))?;
            let real = real.to_string_lossy().into_owned();
            split(&real)
        } else {
            split(src)
        };
        let options = v1::CopyToOptions { id: id.to_owned(), path: dir, keep_owners: a.archive };
        req_tx.send(v1::CopyToRequest { payload: Some(v1::copy_to_request::Payload::Options(options)) }).await?;
        tokio::task::spawn_blocking(move || {
            let parent = rustix::fs::open(
                from_dir.as_str(),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .with_context(|| format!("cannot open {from_dir}"))?;
            let mut sink = Chunks { tx: req_tx, buf: Vec::new() };
            berth_archive::copy::write_tree(parent.as_fd(), from_name.as_bytes(), name.as_bytes(), Path::new(&from_dir), &mut sink)?;
            sink.flush().context("sending the archive")?;
            Ok::<(), anyhow::Error>(())
        })
    };
    let mut client = conn.containers();
    let call = client.copy_to(ReceiverStream::new(req_rx));
    tokio::pin!(call);
    let mut writer = writer;
    let answer = tokio::select! {
        r = &mut call => r,
        w = &mut writer => {
            // A local failure cancels the call (dropping it); an archive cut short has no
            // end-of-archive blocks either, and the agent refuses it.
            w??;
            call.await
        }
    };
    let answer = answer?.into_inner();
    done(a, u64::try_from(answer.bytes).unwrap_or(0), &format!("{id}:{dest}"));
    Ok(0)
}

/// The archive's bytes, in chunks, as the messages of a copy into a container.
struct Chunks {
    tx: mpsc::Sender<v1::CopyToRequest>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let msg = v1::CopyToRequest { payload: Some(v1::copy_to_request::Payload::Chunk(chunk)) };
        self.tx.blocking_send(msg).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the agent stopped taking the archive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_splits_read_as_docker_reads_them() {
        assert!(matches!(side("web:/etc"), Side::Container { id, path } if id == "web" && path == "/etc"));
        assert!(matches!(side("./web:x"), Side::Local(_)));
        assert!(matches!(side("/tmp/a:b"), Side::Local(_)));
        assert!(matches!(side("plain"), Side::Local(_)));
        assert!(matches!(side("-"), Side::Local(_)));
        assert_eq!(split("/etc/passwd"), ("/etc".to_owned(), "passwd".to_owned()));
        assert_eq!(split("/etc/"), ("/".to_owned(), "etc".to_owned()));
        assert_eq!(split("file"), (".".to_owned(), "file".to_owned()));
        assert!(contents_only("/etc/.") && !contents_only("/etc"));
    }
}
