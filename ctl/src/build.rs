//! `berthctl build`: build an image from a Dockerfile, in the agent.
//!
//! The client walks the context directory (minus what `.dockerignore`
//! excludes), sends the metadata of every entry, and then only the files
//! the agent asks for: its mirror of the context keeps the rest from the
//! last build, so an unchanged rebuild sends no file.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_api::v1;
use clap::{Args, Subcommand, ValueEnum};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::{Conn, Format};

/// Entries per message of the context's metadata.
const ENTRIES_PER_MESSAGE: usize = 4096;
/// Bytes per file chunk.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// a live view on a terminal, plain lines otherwise
    Auto,
    /// one line per event, for logs and CI
    Plain,
    /// a terminal
    Tty,
}

#[derive(Debug, Args)]
#[command(after_help = BUILD_EXAMPLES)]
pub struct BuildArgs {
    /// The build context: a directory, or - for a tar archive (or a lone Dockerfile) on standard input
    pub context: PathBuf,
    /// Name for the image (repeatable)
    #[arg(short, long = "tag")]
    pub tag: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; - reads it from standard input)
    #[arg(short, long = "file")]
    pub file: Option<String>,
    /// A build variable, KEY=VALUE (or KEY: its value from the environment); repeatable
    #[arg(long = "build-arg")]
    pub build_arg: Vec<String>,
    /// The stage to build (default: the last one)
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step, using no cached result
    #[arg(long)]
    pub no_cache: bool,
    /// Pull base images even when they are in the store
    #[arg(long)]
    pub pull: bool,
    /// A label for the image, KEY=VALUE; repeatable
    #[arg(long)]
    pub label: Vec<String>,
    /// A secret RUN steps may mount (--mount=type=secret,id=ID): id=ID,src=FILE
    /// or id=ID,env=VAR; never stored in the image or the cache; repeatable
    #[arg(long)]
    pub secret: Vec<String>,
    /// Network of RUN steps: default (the default network), none, host, or a network's name
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Write the image id to this file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Also write the image as an archive: type=oci,dest=FILE (an OCI layout with docker's manifest.json)
    #[arg(short, long)]
    pub output: Option<String>,
    /// Print only the image id
    #[arg(short, long)]
    pub quiet: bool,
    /// How progress is shown
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// Pull base images over plain HTTP
    #[arg(long)]
    pub plain_http: bool,
}

pub const BUILD_EXAMPLES: &str = "Examples:
  berthctl build -t app:v1 .                  build ./Dockerfile with . as the context
  berthctl build -f docker/Dockerfile.dev .   another Dockerfile
  berthctl build --build-arg VERSION=2 -t app:v2 .
  berthctl build --target builder -t app:build .
  berthctl build --secret id=token,src=$HOME/.token .   RUN --mount=type=secret,id=token reads it
  berthctl build --no-cache -q .              run every step; print only the image id
  berthctl build -o type=oci,dest=app.tar .   also write the image as an archive
  tar -c . | berthctl build -t app -          the context as a tar on standard input
  berthctl builder prune                      remove the build cache";

#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache (and the agent's copies of build contexts)
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every cache entry and every cache mount's files (default: entries unused for 48 hours)
    #[arg(short, long)]
    pub all: bool,
    /// Accepted for docker's habit; prune never asks
    #[arg(short, long)]
    pub force: bool,
}

/// Where a `--secret`'s value comes from.
enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// `id=ID,src=FILE` (or `source=`), `id=ID,env=VAR`, `type=file|env`; a bare `id=ID` reads the variable ID.
fn parse_secret(s: &str) -> Result<(String, SecretSource)> {
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_owned()),
            Some(("src" | "source", v)) => src = Some(v.to_owned()),
            Some(("env", v)) => env = Some(v.to_owned()),
            Some(("type", v)) => kind = Some(v.to_owned()),
            _ => bail!("--secret {s:?}: use id=ID,src=FILE or id=ID,env=VAR"),
        }
    }
    let id = id.ok_or_else(|| anyhow::anyhow!("--secret {s:?}: an id= is required"))?;
    let source = match (src, env, kind.as_deref()) {
        (Some(f), _, None | Some("file")) => SecretSource::File(PathBuf::from(f)),
        (Some(v), _, Some("env")) | (None, Some(v), _) => SecretSource::Env(v),
        (None, None, _) => SecretSource::Env(id.clone()),
        (_, _, Some(t)) => bail!("--secret {s:?}: type {t:?} is not file or env"),
    };
    Ok((id, source))
}

fn key_value(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ if what == "--build-arg" && !s.is_empty() => match std::env::var(s) {
            Ok(v) => Ok((s.to_owned(), v)),
            Err(_) => bail!("{what} {s:?}: no = and no such environment variable"),
        },
        _ => bail!("{what} {s:?}: use KEY=VALUE"),
    }
}

/// One context entry as the API carries it.
fn entry(path: String, meta: &std::fs::Metadata, link: String) -> v1::ContextEntry {
    let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    v1::ContextEntry { path, mode: meta.mode(), size: meta.len() as i64, mtime_nanos: mtime, link_target: link }
}

/// Every entry of the context that `.dockerignore` keeps, sorted by path.
fn walk(root: &Path, ignore: &berth_common::ignore::Patterns) -> Result<Vec<v1::ContextEntry>> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        let full = if dir.is_empty() { root.to_path_buf() } else { root.join(&dir) };
        let rd = std::fs::read_dir(&full).with_context(|| format!("reading {}", full.display()))?;
        for e in rd {
            let e = e.with_context(|| format!("reading {}", full.display()))?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                bail!("{}: a name that is not UTF-8 cannot be sent", e.path().display());
            };
            let rel = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            let meta = std::fs::symlink_metadata(e.path()).with_context(|| format!("{}", e.path().display()))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if ignore.skip_dir(&rel) {
                    continue;
                }
                todo.push(rel.clone());
                if !ignore.matches(&rel) {
                    out.push(entry(rel, &meta, String::new()));
                }
            } else if ignore.matches(&rel) {
                continue;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(e.path())?;
                let Some(target) = target.to_str().map(str::to_owned) else {
                    bail!("{}: a link target that is not UTF-8 cannot be sent", e.path().display());
                };
                out.push(entry(rel, &meta, target));
            } else if ft.is_file() {
                out.push(entry(rel, &meta, String::new()));
            }
            // Sockets, fifos and devices are not part of a build context.
        }
    }
    // A directory that was ignored but holds kept entries (an exception) is sent too.
    let mut dirs: std::collections::BTreeSet<String> =
        out.iter().filter(|e| e.mode & 0o170000 == 0o040000).map(|e| e.path.clone()).collect();
    let mut missing = Vec::new();
    for e in &out {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if dirs.insert(parent.to_owned()) {
                missing.push(parent.to_owned());
            }
            p = parent;
        }
    }
    for m in missing {
        let meta = std::fs::symlink_metadata(root.join(&m))?;
        out.push(entry(m, &meta, String::new()));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn msg(m: v1::build_request::Msg) -> v1::BuildRequest {
    v1::BuildRequest { msg: Some(m) }
}

/// `type=oci,dest=FILE` (also `type=docker`, `type=tar`: the same archive): the file.
fn output_dest(o: &str) -> Result<String> {
    let (mut kind, mut dest) = (None, None);
    for field in o.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = Some(v),
            Some(("dest", v)) => dest = Some(v),
            _ => bail!("--output {o:?}: use type=oci,dest=FILE"),
        }
    }
    match (kind, dest) {
        (Some("oci" | "docker" | "tar"), Some(d)) => Ok(d.to_owned()),
        (Some(k), Some(_)) => bail!("--output type {k:?}: only oci (docker and tar write the same archive)"),
        _ => bail!("--output {o:?}: use type=oci,dest=FILE"),
    }
}

/// A context read from standard input: a tar archive (plain or gzip) is
/// unpacked into a temporary directory; anything else is the Dockerfile,
/// with an empty context. Returns the directory and, for the latter, the Dockerfile.
fn stdin_context() -> Result<(TempDir, Option<Vec<u8>>)> {
    let mut data = Vec::new();
    std::io::stdin().read_to_end(&mut data).context("reading the context from standard input")?;
    let dir = TempDir::new()?;
    let gz = data.starts_with(&[0x1f, 0x8b]);
    let tar_data = if gz {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut out).context("the gzip context on standard input")?;
        out
    } else {
        data
    };
    if tar_data.len() >= 512 && &tar_data[257..262] == b"ustar" {
        // The tar crate refuses entries that would land outside the directory.
        tar::Archive::new(&tar_data[..]).unpack(&dir.0).context("unpacking the context from standard input")?;
        Ok((dir, None))
    } else {
        Ok((dir, Some(tar_data)))
    }
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let mut rand = [0u8; 8];
        rustix::rand::getrandom(&mut rand, rustix::rand::GetRandomFlags::empty()).context("random bytes")?;
        let p = std::env::temp_dir().join(format!("berthctl-context-{}", rand.iter().map(|b| format!("{b:02x}")).collect::<String>()));
        std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn build(conn: &Conn, a: BuildArgs) -> Result<i32> {
    let output = a.output.as_deref().map(output_dest).transpose()?;
    let (_stdin_dir, stdin_dockerfile, context) = if a.context.as_os_str() == "-" {
        if a.file.as_deref() == Some("-") {
            bail!("standard input cannot be both the context and the Dockerfile");
        }
        let (dir, dockerfile) = stdin_context()?;
        let path = dir.0.clone();
        (Some(dir), dockerfile, path)
    } else {
        (None, None, a.context.clone())
    };
    let root = std::fs::canonicalize(&context).with_context(|| format!("the build context {}", context.display()))?;
    if !root.is_dir() {
        bail!("the build context {} is not a directory", a.context.display());
    }
    let (dockerfile, name) = match a.file.as_deref() {
        None if stdin_dockerfile.is_some() => (stdin_dockerfile.clone().unwrap_or_default(), "Dockerfile".to_owned()),
        Some("-") => {
            let mut d = Vec::new();
            std::io::stdin().read_to_end(&mut d).context("reading the Dockerfile from standard input")?;
            (d, "Dockerfile".to_owned())
        }
        Some(f) => (std::fs::read(f).with_context(|| format!("reading {f}"))?, f.to_owned()),
        None => {
            let p = root.join("Dockerfile");
            (std::fs::read(&p).with_context(|| format!("reading {} (choose another with -f)", p.display()))?, "Dockerfile".to_owned())
        }
    };
    let dockerignore = std::fs::read(root.join(".dockerignore")).unwrap_or_default();
    let ignore = berth_common::ignore::Patterns::parse(&String::from_utf8_lossy(&dockerignore)).context(".dockerignore")?;
    let mut build_args = BTreeMap::new();
    for b in &a.build_arg {
        let (k, v) = key_value(b, "--build-arg")?;
        build_args.insert(k, v);
    }
    // As docker buildx: SOURCE_DATE_EPOCH in the environment is a build arg.
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        build_args.entry("SOURCE_DATE_EPOCH".to_owned()).or_insert(epoch);
    }
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = key_value(l, "--label")?;
        labels.insert(k, v);
    }
    let mut secrets = BTreeMap::new();
    for sec in &a.secret {
        let (id, source) = parse_secret(sec)?;
        secrets.insert(id, source);
    }
    let entries = walk(&root, &ignore)?;
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let start = v1::BuildStart {
        dockerfile,
        dockerfile_name: name,
        dockerignore,
        tags: a.tag.clone(),
        build_args: build_args.into_iter().collect(),
        target: a.target.clone().unwrap_or_default(),
        no_cache: a.no_cache,
        pull: a.pull,
        labels: labels.into_iter().collect(),
        network: a.network.clone(),
        secret_ids: secrets.keys().cloned().collect(),
        // A context from standard input is a fresh one each time.
        context_key: if _stdin_dir.is_some() { String::new() } else { format!("{host}:{}", root.display()) },
        plain_http: a.plain_http,
        creds: None,
    };
    let files: std::collections::HashMap<String, u64> =
        entries.iter().filter(|e| e.mode & 0o170000 == 0o100000).map(|e| (e.path.clone(), e.size.max(0) as u64)).collect();
    let (tx, rx) = mpsc::channel::<v1::BuildRequest>(8);
    tx.send(msg(v1::build_request::Msg::Start(start))).await?;
    let sender = tx.clone();
    tokio::spawn(async move {
        let mut chunks = entries.chunks(ENTRIES_PER_MESSAGE).peekable();
        if chunks.peek().is_none() {
            let _ = sender.send(msg(v1::build_request::Msg::Entries(v1::ContextEntries { entries: Vec::new(), last: true }))).await;
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            let m = msg(v1::build_request::Msg::Entries(v1::ContextEntries { entries: c.to_vec(), last }));
            if sender.send(m).await.is_err() {
                return;
            }
        }
    });
    // One sender of files, in the order the agent asks for them; only files this client listed.
    let (need_tx, mut need_rx) = mpsc::unbounded_channel::<Vec<String>>();
    let (fail_tx, mut fail_rx) = mpsc::channel::<anyhow::Error>(1);
    {
        let (tx, root) = (tx.clone(), root.clone());
        tokio::spawn(async move {
            while let Some(paths) = need_rx.recv().await {
                for p in &paths {
                    if !files.contains_key(p) {
                        let _ = fail_tx.send(anyhow::anyhow!("the agent asked for {p:?}, which is no file of the context")).await;
                        return;
                    }
                }
                if let Err(e) = send_files(&tx, &root, paths, &files).await {
                    let _ = fail_tx.send(e.context("sending the context")).await;
                    return;
                }
            }
        });
    }
    let mut stream = conn.builder().build(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let quiet = a.quiet || conn.format == Format::Json;
    let mut shown = Shown::new(quiet, a.progress);
    loop {
        let next = tokio::select! {
            m = stream.next() => m,
            // A file that cannot be read ends the build (dropping the call cancels it in the agent).
            Some(e) = fail_rx.recv() => return Err(e),
            _ = tokio::signal::ctrl_c() => {
                eprintln!("cancelled: the agent stops the running step and tags nothing");
                return Ok(130);
            }
        };
        let Some(m) = next else { bail!("the agent ended the build without a result") };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                shown.flush();
                return Err(e.into());
            }
        };
        match m.msg {
            Some(v1::build_response::Msg::Need(n)) => {
                let _ = need_tx.send(n.paths);
            }
            Some(v1::build_response::Msg::Step(s)) => shown.step(&s),
            Some(v1::build_response::Msg::Output(o)) => shown.output(&o),
            Some(v1::build_response::Msg::Pull(p)) if !quiet && p.kind == "image" => eprintln!("pull {}: {}", p.id, p.status),
            Some(v1::build_response::Msg::Secret(s)) => {
                let value = match secrets.get(&s.id) {
                    Some(SecretSource::File(f)) => Some(std::fs::read(f).with_context(|| format!("secret {:?}: {}", s.id, f.display()))?),
                    Some(SecretSource::Env(v)) => {
                        std::env::var_os(v).map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
                    }
                    None => None,
                };
                let answer = v1::SecretValue { id: s.id, missing: value.is_none(), data: value.unwrap_or_default() };
                tx.send(msg(v1::build_request::Msg::Secret(answer))).await?;
            }
            Some(v1::build_response::Msg::Result(r)) => {
                if let Some(f) = &a.iidfile {
                    std::fs::write(f, &r.image_id).with_context(|| format!("writing {}", f.display()))?;
                }
                if let Some(dest) = &output {
                    let name = r.names.first().cloned().unwrap_or_else(|| r.digest.clone());
                    let args = crate::images::ExportArgs { images: vec![name], output: Some(dest.clone()), platform: None };
                    crate::images::export(conn, args).await?;
                }
                if conn.format == Format::Json {
                    crate::output::json(&serde_json::json!({
                        "Id": r.image_id, "Digest": r.digest, "Names": r.names,
                        "Millis": r.millis, "Cached": r.steps_cached, "Run": r.steps_run, "ContextBytes": r.context_bytes_sent,
                    }));
                } else if a.quiet {
                    println!("{}", r.image_id);
                } else {
                    eprintln!(
                        "built in {:.2}s: {} steps run, {} cached, {} bytes of context sent",
                        r.millis as f64 / 1000.0,
                        r.steps_run,
                        r.steps_cached,
                        r.context_bytes_sent
                    );
                    println!("{}", r.image_id);
                    for n in &r.names {
                        eprintln!("named {n}");
                    }
                }
                return Ok(0);
            }
            Some(v1::build_response::Msg::Pull(_)) | None => {}
        }
    }
}

/// Send the files the agent asked for, in its order: a small file in one
/// message, a larger one in chunks; each exactly as long as it was listed.
async fn send_files(
    tx: &mpsc::Sender<v1::BuildRequest>,
    root: &Path,
    paths: Vec<String>,
    files: &std::collections::HashMap<String, u64>,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    for p in paths {
        let path = root.join(&p);
        let size = files.get(&p).copied().unwrap_or(0);
        // O_NOFOLLOW, O_NONBLOCK: a file swapped for a link or a fifo since the walk is refused, not followed or waited on.
        let f =
            std::fs::OpenOptions::new().read(true).custom_flags(libc_flags()).open(&path).with_context(|| format!("{}", path.display()))?;
        let mut f = tokio::fs::File::from_std(f).take(size);
        let mut left = size;
        loop {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            let mut got = 0;
            while got < buf.len() {
                let n = f.read(&mut buf[got..]).await.with_context(|| format!("{}", path.display()))?;
                if n == 0 {
                    bail!("{} changed while it was sent (it was {size} bytes)", path.display());
                }
                got += n;
            }
            left -= got as u64;
            let eof = left == 0;
            tx.send(msg(v1::build_request::Msg::File(v1::FileChunk { path: p.clone(), data: buf, eof }))).await?;
            if eof {
                break;
            }
        }
    }
    Ok(())
}

/// Open flags for context files: no link followed, no wait on a fifo.
fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

/// Progress on standard error: on a terminal (`--progress tty`, or `auto`
/// on one) a live line per running step with its time, finished steps
/// marked DONE or CACHED, RUN output printed above; otherwise one plain line
/// per event.
struct Shown {
    quiet: bool,
    live: Option<(indicatif::MultiProgress, std::collections::HashMap<u32, indicatif::ProgressBar>)>,
    /// Each step's output after its last newline: a line the step wrote in
    /// parts (`sh -x` writes "+ " and the command apart) is shown whole.
    partial: std::collections::HashMap<u32, Vec<u8>>,
}

/// Longest part of a line kept waiting for its end.
const MAX_PARTIAL_LINE: usize = 64 << 10;

impl Shown {
    fn new(quiet: bool, progress: Progress) -> Self {
        use std::io::IsTerminal;
        let tty = match progress {
            Progress::Tty => true,
            Progress::Plain => false,
            Progress::Auto => std::io::stderr().is_terminal(),
        };
        let live = (!quiet && tty).then(|| {
            let m = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
            (m, Default::default())
        });
        Shown { quiet, live, partial: Default::default() }
    }

    fn step(&mut self, s: &v1::BuildStep) {
        if self.quiet {
            return;
        }
        if s.status != "started" {
            // What the step wrote without a final newline, before its end is shown.
            if let Some(rest) = self.partial.remove(&s.index) {
                self.line(s.index, &rest);
            }
        }
        let what = berth_common::text::printable(&s.instruction).into_owned();
        let secs = s.millis as f64 / 1000.0;
        let Some((multi, bars)) = &mut self.live else {
            match s.status.as_str() {
                "started" => eprintln!("#{} [{} {}/{}] {what}", s.index, s.stage, s.index, s.total),
                "cached" => eprintln!("#{} CACHED", s.index),
                "done" => eprintln!("#{} DONE {secs:.2}s", s.index),
                "failed" => eprintln!("#{} FAILED {secs:.2}s", s.index),
                other => eprintln!("#{} {other}", s.index),
            }
            return;
        };
        let bar = bars.entry(s.index).or_insert_with(|| {
            let b = multi.add(indicatif::ProgressBar::new_spinner());
            let style = indicatif::ProgressStyle::with_template("{prefix} {wide_msg} {elapsed:>4}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            b.set_style(style);
            b.set_prefix(format!("[{} {}/{}]", s.stage, s.index, s.total));
            b.set_message(what.clone());
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b
        });
        let done = |b: &indicatif::ProgressBar, mark: &str| {
            let style = indicatif::ProgressStyle::with_template("{prefix} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            b.set_style(style);
            b.finish_with_message(format!("{what}  {mark}"));
        };
        match s.status.as_str() {
            "cached" => done(bar, "CACHED"),
            "done" => done(bar, &format!("{secs:.1}s")),
            "failed" => done(bar, &format!("FAILED {secs:.1}s")),
            _ => {}
        }
    }

    fn output(&mut self, o: &v1::StepOutput) {
        if self.quiet {
            return;
        }
        let mut buf = self.partial.remove(&o.index).unwrap_or_default();
        buf.extend_from_slice(&o.data);
        let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if end > 0 {
            for line in buf[..end - 1].split(|b| *b == b'\n') {
                self.line(o.index, line);
            }
        }
        let rest = buf.split_off(end);
        if rest.len() > MAX_PARTIAL_LINE {
            self.line(o.index, &rest);
        } else if !rest.is_empty() {
            self.partial.insert(o.index, rest);
        }
    }

    /// The steps' unfinished lines, as they are (the build ended).
    fn flush(&mut self) {
        let mut rest: Vec<(u32, Vec<u8>)> = self.partial.drain().collect();
        rest.sort_by_key(|(i, _)| *i);
        for (i, line) in rest {
            self.line(i, &line);
        }
    }

    /// One line of a step's output (without its newline).
    fn line(&self, index: u32, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let line = format!("#{index} {}", berth_common::text::printable(text.trim_end_matches('\r')));
        match &self.live {
            Some((multi, _)) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

pub async fn builder(conn: &Conn, c: BuilderCommand) -> Result<i32> {
    match c {
        BuilderCommand::Prune(a) => {
            let keep = if a.all { 0 } else { 48 * 3600 };
            let r = conn.builder().prune(v1::PruneBuildCacheRequest { all: a.all, keep_duration_seconds: keep }).await?.into_inner();
            if conn.format == Format::Json {
                crate::output::json(&serde_json::json!({
                    "Entries": r.entries_removed, "Blobs": r.blobs_removed, "Snapshots": r.snapshots_removed, "Contexts": r.contexts_removed,
                    "CacheMounts": r.cache_mounts_removed,
                }));
            } else {
                println!(
                    "removed {} cache entries, {} blobs, {} snapshots, {} build contexts, {} cache mounts",
                    r.entries_removed, r.blobs_removed, r.snapshots_removed, r.contexts_removed, r.cache_mounts_removed
                );
            }
            Ok(0)
        }
    }
}
