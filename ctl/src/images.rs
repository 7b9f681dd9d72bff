//! `berthctl image ...` and its docker-style aliases.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_api::v1;
use clap::{Args, Subcommand};
use serde_json::json;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_stream::StreamExt;

use crate::output::{self, ago, repo_tag, short_id};
use crate::{Conn, Format};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image from a Dockerfile
    Build(crate::build::BuildArgs),
    /// Import an image archive (docker save or OCI layout; gzip/zstd allowed)
    Import(ImportArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show an image's digest, config, layers, diff ids and history as JSON
    Inspect(InspectArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Remove images by name, id or digest
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Export images to an archive (OCI layout with docker's manifest.json)
    #[command(alias = "save", after_help = EXPORT_EXAMPLES)]
    Export(ExportArgs),
    /// Show the history of an image: its layers and the steps that made them
    History(HistoryArgs),
    /// Remove untagged images (-a: every image no container uses)
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Do not cut the steps' commands
    #[arg(long)]
    pub no_trunc: bool,
    /// Only print the layers' ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Image name, id or digest
    pub image: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Every image no container uses, not only untagged ones
    #[arg(short, long)]
    pub all: bool,
    /// Only those matching: label=KEY[=VALUE] (repeatable)
    #[arg(long = "filter")]
    pub filter: Vec<String>,
    /// Do not ask (berthctl never asks; accepted for docker's scripts)
    #[arg(short, long)]
    pub force: bool,
}

pub const EXPORT_EXAMPLES: &str = "The archive is an OCI image layout that also carries docker's manifest.json:
docker load, skopeo (oci-archive:FILE:TAG), umoci and berthctl load all read it.

Examples:
  berthctl image export -o busybox.tar busybox
  berthctl save busybox alpine:3.19 > images.tar
  berthctl save busybox | ssh host berthctl load";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Archive to import, or - for standard input
    pub file: String,
    /// Name for the image (replaces the archive's name for the first image)
    #[arg(long)]
    pub name: Option<String>,
    /// Platform to unpack from a multi-platform image (os/arch[/variant]) [default: linux/amd64]
    #[arg(long)]
    pub platform: Option<String>,
    /// Repository for images the archive names only by tag
    #[arg(long)]
    pub base_name: Option<String>,
    /// Store the image without unpacking its layers
    #[arg(long)]
    pub no_unpack: bool,
    /// Label to set on the image (KEY=VALUE, repeatable)
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// Ask the agent to read the file itself (it must be on the agent's machine)
    #[arg(long)]
    pub local: bool,
    /// Print only the names of the imported images
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive to import [default: standard input]
    #[arg(short, long)]
    pub input: Option<String>,
    /// Name for the image
    #[arg(long)]
    pub name: Option<String>,
    /// Platform to unpack (os/arch[/variant]) [default: linux/amd64]
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the names of the imported images
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only show image ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter: reference=REPO[:TAG] (with * wildcards), label=KEY[=VALUE],
    /// dangling=true|false (repeatable)
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// Show full image ids
    #[arg(long)]
    pub no_trunc: bool,
    /// Show the manifest digests
    #[arg(long)]
    pub digests: bool,
    /// Only images of this repository (and tag): busybox, busybox:1.36
    pub repository: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print each through a Go template, as docker's -f: '{{.Id}}', '{{json .Config}}'
    #[arg(short = 'f', value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Image names, ids or digests
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Platform to resolve a multi-platform image to [default: linux/amd64]
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image (name, id or digest)
    pub source: String,
    /// New name (moved to this image if another image has it, as docker does)
    pub target: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Images to export (name, id or digest; an id exports every name it has)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write the archive to FILE, or - for standard output [default: standard output, unless it is a terminal]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<String>,
    /// Platform docker's manifest.json lists for a multi-platform image (os/arch[/variant]) [default: linux/amd64]
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Images to remove (name, id or digest)
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove every name of an id that several names point at
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(conn: &Conn, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Build(a) => crate::build::build(conn, a).await,
        ImageCommand::Import(a) => import(conn, a).await,
        ImageCommand::Ls(a) => list(conn, a).await,
        ImageCommand::Inspect(a) => inspect(conn, a).await,
        ImageCommand::Tag(a) => tag(conn, a).await,
        ImageCommand::Rm(a) => rm(conn, a).await,
        ImageCommand::Export(a) => export(conn, a).await,
        ImageCommand::History(a) => history(conn, a).await,
        ImageCommand::Prune(a) => prune(conn, a).await.map(|_| 0),
    }
}

/// `image history`: the config's history, newest first, each step beside
/// the layer it made (an empty step makes none).
pub async fn history(conn: &Conn, a: HistoryArgs) -> Result<i32> {
    let v = inspect_value(conn, &a.image, "").await?;
    let layers = v["Layers"].as_array().cloned().unwrap_or_default();
    let steps = v["History"].as_array().cloned().unwrap_or_default();
    let mut layer_iter = layers.iter();
    let mut rows = Vec::new();
    for h in &steps {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let layer = if empty { None } else { layer_iter.next() };
        let created = h["created"].as_str().and_then(berth_common::time::parse_rfc3339).map(|(s, _)| s).unwrap_or(0);
        let by = h["created_by"].as_str().unwrap_or_default().to_owned();
        let by = if a.no_trunc || by.chars().count() <= 45 { by } else { format!("{}…", by.chars().take(44).collect::<String>()) };
        rows.push(json!({
            "ID": "<missing>",
            "CreatedSince": if created > 0 { ago(created) } else { "N/A".into() },
            "CreatedAt": output::created_at(created),
            "CreatedBy": by,
            "Size": output::size(layer.and_then(|l| l["Size"].as_i64()).unwrap_or(0)),
            "Comment": h["comment"].as_str().unwrap_or_default(),
        }));
    }
    rows.reverse();
    // The top step shows the image's id, as docker's does.
    if let Some(top) = rows.first_mut() {
        let id = v["Id"].as_str().unwrap_or_default();
        top["ID"] = json!(if a.no_trunc { id.to_owned() } else { short_id(id) });
    }
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    output::rows(
        &conn.format,
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
        &[("ID", "IMAGE"), ("CreatedSince", "CREATED")],
        &rows,
    )?;
    Ok(0)
}

/// Remove untagged images, or (`all`) every image no container uses; the
/// names removed and the bytes of content collected.
pub async fn prune(conn: &Conn, a: PruneArgs) -> Result<(Vec<String>, i64)> {
    let filters: Vec<String> = a.filter.iter().map(|f| output::api_filter(f, &[], &[], &[])).collect();
    let images = conn.images().list(v1::ListImagesRequest { filters }).await?.into_inner().images;
    let containers = conn.containers().list(v1::ListContainersRequest::default()).await?.into_inner().containers;
    let before = conn.version().info(v1::InfoRequest {}).await?.into_inner().content_size;
    let mut removed = Vec::new();
    for i in &images {
        let digest = i.target.as_ref().map(|t| t.digest.as_str()).unwrap_or_default();
        let used = containers.iter().any(|c| c.image == i.name || (!digest.is_empty() && c.image_digest == digest));
        // Untagged: kept under its own digest (a build's), not a name@digest pull.
        let untagged = repo_tag(&i.name).0 == "<none>";
        if used || !(a.all || untagged) {
            continue;
        }
        match conn.images().delete(v1::DeleteImageRequest { name: i.name.clone(), sync: true, force: false }).await {
            Ok(r) => removed.extend(r.into_inner().deleted),
            // Used or shared meanwhile: kept.
            Err(e) if matches!(e.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let after = conn.version().info(v1::InfoRequest {}).await?.into_inner().content_size;
    let reclaimed = (before - after).max(0);
    if conn.format == Format::Json {
        output::json(&json!({"ImagesDeleted": removed, "SpaceReclaimed": reclaimed}));
    } else {
        if !removed.is_empty() {
            println!("Deleted Images:");
        }
        for n in &removed {
            println!("untagged: {n}");
        }
        println!("Total reclaimed space: {}", output::size(reclaimed));
    }
    Ok((removed, reclaimed))
}

pub async fn load(conn: &Conn, a: LoadArgs) -> Result<i32> {
    import(
        conn,
        ImportArgs {
            file: a.input.unwrap_or_else(|| "-".into()),
            name: a.name,
            platform: a.platform,
            base_name: None,
            no_unpack: false,
            labels: Vec::new(),
            local: false,
            quiet: a.quiet,
        },
    )
    .await
}

const CHUNK: usize = 1 << 20;

pub async fn import(conn: &Conn, a: ImportArgs) -> Result<i32> {
    let options = v1::ImportOptions {
        name: a.name.clone().unwrap_or_default(),
        platform: a.platform.clone().unwrap_or_default(),
        no_unpack: a.no_unpack,
        labels: berth_common::labels::parse_all(a.labels.iter().map(String::as_str))?,
        base_name: a.base_name.clone().unwrap_or_default(),
    };
    let mut client = conn.images();
    let mut upload = None;
    let mut stream = if a.local {
        let path = std::fs::canonicalize(&a.file).with_context(|| a.file.clone())?;
        client.import_path(v1::ImportPathRequest { options: Some(options), path: path.display().to_string() }).await?.into_inner()
    } else {
        let mut source: Box<dyn Read + Send> = if a.file == "-" {
            if std::io::stdin().is_terminal() {
                bail!("no archive given: name a file, or pipe one into standard input");
            }
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(&a.file).with_context(|| format!("cannot open {}", a.file))?)
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<v1::ImportRequest>(4);
        tx.send(v1::ImportRequest { payload: Some(v1::import_request::Payload::Options(options)) }).await?;
        // Read on a blocking thread; a read error ends the upload early, which the agent refuses as truncated.
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                while filled < CHUNK {
                    let n = source.read(&mut buf[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok(());
                }
                buf.truncate(filled);
                if tx.blocking_send(v1::ImportRequest { payload: Some(v1::import_request::Payload::Chunk(buf)) }).is_err() {
                    return Ok(());
                }
            }
        });
        // The upload goes on while responses stream back.
        upload = Some(reader);
        client.import(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner()
    };
    let verbose = !a.quiet && conn.format == Format::Table && std::io::stderr().is_terminal();
    let mut result = None;
    while let Some(msg) = stream.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(status) => {
                // A local read error explains a refused upload better than the agent can.
                if let Some(h) = upload.take().filter(|h| h.is_finished()) {
                    if let Ok(Err(e)) = h.await {
                        bail!("reading {}: {e}", a.file);
                    }
                }
                return Err(status.into());
            }
        };
        match msg.event {
            Some(v1::import_response::Event::Progress(p)) if verbose && p.kind != "image" => {
                eprintln!("{} {} {} ({})", p.kind, short_id(&p.id), p.status, output::size(p.size));
            }
            Some(v1::import_response::Event::Progress(_)) => {}
            Some(v1::import_response::Event::Result(r)) => result = Some(r),
            None => {}
        }
    }
    if let Some(h) = upload.take() {
        if let Ok(Err(e)) = h.await {
            bail!("reading {}: {e}", a.file);
        }
    }
    let Some(result) = result else { bail!("the agent ended the import without a result") };
    if conn.format == Format::Json {
        let loaded: Vec<_> = result
            .images
            .iter()
            .map(|i| json!({"Name": i.name, "ID": i.config_digest, "Digest": i.target.as_ref().map(|t| t.digest.clone())}))
            .collect();
        output::json(&json!(loaded));
    } else {
        for img in &result.images {
            if a.quiet {
                println!("{}", img.name);
            } else {
                println!("Loaded image: {}", img.name);
            }
        }
    }
    Ok(0)
}

fn created_secs(img: &v1::Image) -> i64 {
    berth_common::time::parse_rfc3339(&img.config_created)
        .map(|(secs, _)| secs)
        .unwrap_or_else(|| img.created_at.as_ref().map(|t| t.seconds).unwrap_or(0))
}

/// An `images` row as docker's templates see it (`{{.Repository}}`, `{{.ID}}`, ...).
fn image_row(img: &v1::Image, no_trunc: bool) -> serde_json::Value {
    let (repo, tag) = repo_tag(&img.name);
    let size = if img.unpacked_size > 0 { img.unpacked_size } else { img.size };
    json!({
        "Repository": repo,
        "Tag": tag,
        "ID": if no_trunc { img.config_digest.clone() } else { short_id(&img.config_digest) },
        "Digest": img.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default(),
        "CreatedSince": ago(created_secs(img)),
        "CreatedAt": output::created_at(created_secs(img)),
        "Size": output::size(size),
        "VirtualSize": output::size(size),
        "SharedSize": "N/A",
        "UniqueSize": "N/A",
        "Containers": "N/A",
    })
}

/// Whether an image's name matches docker's `reference` pattern: its
/// repository (`busybox`), or repository and tag (`busybox:1.36`), `*` a wildcard.
fn matches_reference(name: &str, pattern: &str) -> bool {
    let (repo, tag) = repo_tag(name);
    let full = if pattern.contains(':') { format!("{repo}:{tag}") } else { repo };
    output::glob(pattern, &full)
}

pub async fn list(conn: &Conn, a: ListArgs) -> Result<i32> {
    let mut api_filters = Vec::new();
    let mut references: Vec<String> = a.repository.iter().cloned().collect();
    let mut dangling = None;
    for f in &a.filters {
        match f.split_once('=') {
            Some(("reference", v)) if !v.starts_with('=') => references.push(v.to_owned()),
            Some(("dangling", v)) if !v.starts_with('=') => dangling = Some(v == "true" || v == "1"),
            _ => api_filters.push(output::api_filter(f, &[], &[], &[])),
        }
    }
    let mut images = conn.images().list(v1::ListImagesRequest { filters: api_filters }).await?.into_inner().images;
    images.retain(|i| references.iter().all(|r| matches_reference(&i.name, r)));
    if let Some(d) = dangling {
        // Untagged: kept under its own digest (a build's), not a name@digest pull.
        images.retain(|i| (repo_tag(&i.name).0 == "<none>") == d);
    }
    images.sort_by(|x, y| created_secs(y).cmp(&created_secs(x)).then(x.name.cmp(&y.name)));
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for i in &images {
            let id = if a.no_trunc { i.config_digest.clone() } else { short_id(&i.config_digest) };
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(0);
    }
    let rows: Vec<serde_json::Value> = images.iter().map(|i| image_row(i, a.no_trunc)).collect();
    let table = if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    output::rows(&conn.format, table, &[("ID", "IMAGE ID"), ("CreatedSince", "CREATED")], &rows)?;
    Ok(0)
}

/// An image as docker's `image inspect` shows it (`Id`, `RepoTags`,
/// `RepoDigests`, `Created`, `Config`, `Architecture`, `Os`, `Size`,
/// `RootFS`, `History`), then Berth's own fields.
pub async fn inspect_value(conn: &Conn, name: &str, platform: &str) -> std::result::Result<serde_json::Value, tonic::Status> {
    let r = conn.images().inspect(v1::InspectImageRequest { name: name.to_owned(), platform: platform.to_owned() }).await?.into_inner();
    let img = r.image.unwrap_or_default();
    let config: serde_json::Value = serde_json::from_slice(&r.config_json).unwrap_or(serde_json::Value::Null);
    let desc = |d: &v1::Descriptor| json!({"MediaType": d.media_type, "Digest": d.digest, "Size": d.size});
    let digest = img.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default();
    let (repo, tag) = repo_tag(&img.name);
    let repo_tags: Vec<String> = if tag.is_empty() || tag == "<none>" { vec![] } else { vec![format!("{repo}:{tag}")] };
    let repo_digests: Vec<String> = if repo == "<none>" || digest.is_empty() { vec![] } else { vec![format!("{repo}@{digest}")] };
    Ok(json!({
        "Id": img.config_digest,
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Created": config.get("created"),
        "Author": config.get("author").cloned().unwrap_or_else(|| json!("")),
        "Config": config.get("config"),
        "Architecture": config.get("architecture"),
        "Os": config.get("os"),
        "Size": if img.unpacked_size > 0 { img.unpacked_size } else { img.size },
        "RootFS": {"Type": "layers", "Layers": r.diff_ids},
        "History": config.get("history"),
        "Name": img.name,
        "Digest": digest,
        "MediaType": img.target.as_ref().map(|t| t.media_type.clone()),
        "Manifest": r.manifest.as_ref().map(desc),
        "ContentSize": img.size,
        "UnpackedSize": img.unpacked_size,
        "Unpacked": r.unpacked,
        "Layers": r.layers.iter().map(desc).collect::<Vec<_>>(),
        "ChainIDs": r.chain_ids,
        "Platforms": r.platforms.iter().map(|p| format!("{}/{}{}", p.os, p.architecture, if p.variant.is_empty() { String::new() } else { format!("/{}", p.variant) })).collect::<Vec<_>>(),
        "Labels": img.labels,
    }))
}

pub async fn inspect(conn: &Conn, a: InspectArgs) -> Result<i32> {
    let format = conn.format_with(a.template.as_deref())?;
    let platform = a.platform.unwrap_or_default();
    let mut found = Vec::new();
    let mut code = 0;
    for name in &a.images {
        match inspect_value(conn, name, &platform).await {
            Ok(v) => found.push(v),
            Err(e) => {
                eprintln!("berthctl: {}: {}", berth_common::text::printable(name), berth_common::text::printable(e.message()));
                code = 1;
            }
        }
    }
    output::inspected(&format, &found)?;
    Ok(code)
}

pub async fn tag(conn: &Conn, a: TagArgs) -> Result<i32> {
    conn.images().tag(v1::TagImageRequest { source: a.source, target: a.target, force: true }).await?;
    Ok(0)
}

pub async fn rm(conn: &Conn, a: RmArgs) -> Result<i32> {
    let mut failed = false;
    for name in a.images {
        match conn.images().delete(v1::DeleteImageRequest { name: name.clone(), sync: true, force: a.force }).await {
            Ok(r) => {
                let r = r.into_inner();
                if conn.format == Format::Json {
                    println!(
                        "{}",
                        json!({"Untagged": r.deleted, "BlobsDeleted": r.blobs_removed, "SnapshotsDeleted": r.snapshots_removed})
                    );
                    continue;
                }
                for d in &r.deleted {
                    println!("Untagged: {d}");
                }
                if r.blobs_removed + r.snapshots_removed > 0 {
                    println!("Deleted: {} blob(s), {} snapshot(s)", r.blobs_removed, r.snapshots_removed);
                }
            }
            Err(s) => {
                eprintln!("berthctl: {}", s.message());
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Where an export is written while it runs: a hidden file next to `path`,
/// renamed over it at the end.
fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".berthctl-{}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Copy the export stream to `out`; returns the bytes written.
async fn write_stream(stream: &mut tonic::Streaming<v1::ExportImagesResponse>, out: &mut (impl AsyncWrite + Unpin)) -> Result<u64> {
    let mut total = 0u64;
    while let Some(msg) = stream.message().await? {
        out.write_all(&msg.data).await?;
        total += msg.data.len() as u64;
    }
    out.flush().await?;
    if total == 0 {
        bail!("the agent sent an empty archive");
    }
    Ok(total)
}

pub async fn export(conn: &Conn, a: ExportArgs) -> Result<i32> {
    let file = a.output.filter(|o| o != "-").map(PathBuf::from);
    if file.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an image archive to a terminal: use -o FILE, or redirect standard output");
    }
    if let Some(f) = &file {
        if f.is_dir() {
            bail!("{} is a directory: name the archive file to write", f.display());
        }
    }
    let req = v1::ExportImagesRequest { names: a.images, platform: a.platform.unwrap_or_default() };
    // Every name is resolved before the first byte comes: an unknown one fails here, before any file exists.
    let mut stream = conn.images().export(req).await?.into_inner();
    let Some(path) = file else {
        // Standard output as a file, written on tokio's blocking threads (a pipe or a file alike).
        use std::os::fd::AsFd;
        let fd = std::io::stdout().as_fd().try_clone_to_owned().context("standard output")?;
        let mut out = tokio::fs::File::from_std(std::fs::File::from(fd));
        write_stream(&mut stream, &mut out).await?;
        return Ok(0);
    };
    // Written to a temporary file, renamed at the end: a failed or interrupted export leaves nothing.
    let tmp = temp_path(&path)?;
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    let result = tokio::select! {
        r = async {
            write_stream(&mut stream, &mut out).await?;
            out.sync_all().await.with_context(|| format!("writing {}", tmp.display()))?;
            tokio::fs::rename(&tmp, &path).await.with_context(|| format!("cannot write {}", path.display()))?;
            Ok(())
        } => r,
        Ok(()) = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        drop(out);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(0)
}
