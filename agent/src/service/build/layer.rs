//! Filesystem steps of a build: COPY and WORKDIR applied to an active
//! snapshot mounted in the agent, and the one conclusion of every
//! filesystem step (RUN included): its changes become the stage's next
//! layer and cache entry.

use std::collections::BTreeMap;

use super::{store_state, Change, From, Next, Run, State};
use crate::build::context::{Kind as EntryKind, Mirror};
use crate::build::copy::{self, Item, Ownership};
use crate::build::source::{Source, Tree};
use crate::build::state::Layer;
use crate::build::LABEL_BUILD;
use crate::content::random_hex;
use crate::digest::HashingWriter;
use crate::image::oci::{self, Descriptor};
use crate::metadata::BuildCacheRecord;
use crate::service::{Core, Error};

impl Run {
    /// A change made in an active snapshot of the stage mounted in the agent;
    /// the stage's next state.
    pub(super) async fn in_snapshot(&self, state: State, change: Change, next: Next) -> Result<State, Error> {
        let (core, ns, id, pins) = (self.core.clone(), self.ns.clone(), self.id.clone(), self.pins.clone());
        let parent = state.top_chain().map(|c| c.to_string()).unwrap_or_default();
        let mirror = &self.mirror;
        tokio::task::block_in_place(move || {
            let key = format!("build-{id}-{}", random_hex(6));
            let labels = BTreeMap::from([(LABEL_BUILD.to_owned(), id.clone())]);
            core.snapshots.prepare(&ns, &key, &parent, labels)?;
            let result = (|| {
                let mnt = core.config.root.join("build").join("mnt").join(&key);
                std::fs::create_dir_all(&mnt).map_err(|e| Error::Internal(format!("{}: {e}", mnt.display())))?;
                let t0 = std::time::Instant::now();
                let applied = with_source(&core, &ns, &key, &change, mirror, |source| {
                    core.snapshots.with_mounted(&ns, &key, &mnt, |root| apply_change(&core, root, source, &change))
                });
                let _ = std::fs::remove_dir(&mnt);
                applied???;
                tracing::debug!(applied = ?t0.elapsed(), "files copied into the snapshot");
                conclude(&core, &ns, &key, state, next, &pins, &[])
            })();
            // The snapshot is the layer's now, unless the step failed or changed nothing.
            if core.snapshots.stat(&ns, &key).is_ok() {
                if let Err(e) = core.snapshots.remove(&ns, &key) {
                    tracing::warn!(key = %key, error = %e, "removing a build snapshot");
                }
            }
            result
        })
    }
}

/// Run `f` with the source a change reads: the context's mirror, a
/// read-only view of another stage mounted for the time of `f`, or a
/// directory of heredoc bodies.
fn with_source<T>(
    core: &Core,
    ns: &str,
    key: &str,
    change: &Change,
    mirror: &Mirror,
    f: impl FnOnce(&dyn Source) -> T,
) -> Result<T, Error> {
    let bad = |e: copy::CopyError| Error::InvalidArgument(e.to_string());
    match change {
        Change::Mkdir(_) | Change::Copy { from: From::Context, .. } => Ok(f(mirror)),
        Change::Copy { from: From::Fetched(dir, _), sources, .. } => {
            let tree = Tree::scan(&dir.0, sources).map_err(bad)?;
            Ok(f(&tree))
        }
        Change::Copy { from: From::Heredocs(docs), .. } => {
            let dir = core.config.root.join("build").join("mnt").join(format!("{key}-heredocs"));
            std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
            let tree = Tree::of_files(&dir, docs).map_err(bad);
            let out = tree.map(|t| f(&t));
            let _ = std::fs::remove_dir_all(&dir);
            out
        }
        Change::Copy { from: From::State(s), sources, .. } => {
            let Some(top) = s.top_chain() else {
                // FROM scratch with no layer: nothing to copy from.
                let empty = Tree::of_files(&core.config.root.join("build"), &[]).map_err(bad)?;
                let _ = sources;
                return Ok(f(&empty));
            };
            let view = format!("{key}-from");
            let labels = BTreeMap::from([(LABEL_BUILD.to_owned(), "view".to_owned())]);
            core.snapshots.view(ns, &view, top.as_str(), labels)?;
            let dir = core.config.root.join("build").join("mnt").join(&view);
            let out = std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("{}: {e}", dir.display()))).and_then(|()| {
                core.snapshots
                    .with_mounted(ns, &view, &dir, |root| Tree::scan(root, sources).map_err(bad).map(|t| f(&t)))
                    .map_err(Error::from)
                    .and_then(|r| r)
            });
            let _ = std::fs::remove_dir(&dir);
            if let Err(e) = core.snapshots.remove(ns, &view) {
                tracing::warn!(key = %view, error = %e, "removing a build view");
            }
            out
        }
    }
}

/// Where `path` leads inside the root (links followed inside it), if anywhere.
fn resolved_in(root: &std::path::Path, path: &str) -> Option<std::path::PathBuf> {
    let real = crate::build::source::resolve(root, path).ok()??;
    Some(root.canonicalize().ok()?.join(real))
}

/// Whether `path` (relative to the root, links followed inside it) is a directory.
fn is_dir_in(root: &std::path::Path, path: &str) -> bool {
    resolved_in(root, path).is_some_and(|p| p.is_dir())
}

/// Whether anything is at `path` (links followed inside the root).
fn exists_in(root: &std::path::Path, path: &str) -> bool {
    resolved_in(root, path).is_some()
}

/// Apply a COPY (or a WORKDIR's directories) to the mounted root.
fn apply_change(core: &Core, root: &std::path::Path, source: &dyn Source, change: &Change) -> Result<(), Error> {
    let entries = source.entries();
    // ADD unpacks the local archives it names (by content) into the destination directory.
    let mut archives = Vec::new();
    let (items, dest, own): (Vec<Item>, String, Ownership) = match change {
        Change::Mkdir(dir) => (Vec::new(), copy::clean_dest(dir, "/"), Ownership::default()),
        Change::Copy { sources, dest, dest_slash, own, extract, rules, .. } => {
            let mut plain = Vec::new();
            for s in sources {
                let clean = copy::clean_source(s).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                let file = entries.get(&clean).is_some_and(|e| e.kind == EntryKind::File);
                if *extract && file && is_archive(source, &clean) {
                    archives.push(clean);
                } else {
                    plain.push(s.clone());
                }
            }
            let into_dir = *dest_slash || !archives.is_empty() || is_dir_in(root, dest);
            let items = if plain.is_empty() {
                Vec::new()
            } else {
                copy::select_with(entries, &plain, dest, into_dir, into_dir, rules).map_err(|e| Error::InvalidArgument(e.to_string()))?
            };
            (items, dest.clone(), *own)
        }
    };
    // Parents of the destination that are missing, made as 0755 root:root.
    let mut missing = Vec::new();
    let mut acc = String::new();
    let dest_dir_parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty()).collect();
    let is_file_dest = items.len() == 1 && items[0].dest == dest && entries.get(&items[0].source).is_some_and(|e| e.kind != EntryKind::Dir);
    let upto = if is_file_dest { dest_dir_parts.len().saturating_sub(1) } else { dest_dir_parts.len() };
    for p in &dest_dir_parts[..upto] {
        acc = if acc.is_empty() { (*p).to_owned() } else { format!("{acc}/{p}") };
        if !exists_in(root, &acc) {
            missing.push(acc.clone());
        }
    }
    let skip = |d: &str| d == dest && is_dir_in(root, d);
    let open = |p: &str| source.open(p);
    let plan = copy::TarPlan { missing_parents: &missing, skip: &skip, own, mtime_clamp: None, open: &open };
    if !items.is_empty() || !missing.is_empty() {
        copy_into(core, root, entries, &items, &plan)?;
    }
    for a in &archives {
        extract_into(core, root, &dest, source, a)?;
    }
    Ok(())
}

/// Whether the context's file `path` is a tar archive (plain, gzip or zstd), by its first bytes.
fn is_archive(source: &dyn Source, path: &str) -> bool {
    let Ok(f) = source.open(path) else { return false };
    let Ok(mut r) = crate::image::unpack::decompress(f) else { return false };
    let mut head = [0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match std::io::Read::read(&mut r, &mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got == 512 && &head[257..262] == b"ustar"
}

/// Unpack archive `path` of the source into directory `dest` of the
/// mounted root (made when missing), through the layer applier: resolved
/// inside the root, never through a link out of it.
fn extract_into(core: &Core, root: &std::path::Path, dest: &str, source: &dyn Source, path: &str) -> Result<(), Error> {
    let not_dir = || Error::InvalidArgument(format!("ADD {path}: the destination /{dest} is not a directory"));
    let real =
        crate::build::source::resolve(root, dest).map_err(|e| Error::InvalidArgument(format!("ADD {path}: {e}")))?.ok_or_else(not_dir)?;
    let target = root.canonicalize().map_err(|e| Error::Internal(e.to_string()))?.join(real);
    if !target.is_dir() {
        return Err(not_dir());
    }
    let f = source.open(path).map_err(|e| Error::Internal(format!("{path}: {e}")))?;
    let r = crate::image::unpack::decompress(f).map_err(|e| Error::InvalidArgument(format!("ADD {path}: {e}")))?;
    // Bounded as a layer is: a small archive that unpacks to the disk's size is refused.
    let r = crate::digest::LimitedReader::new(r, core.images.limits.max_layer_bytes, "the unpacked archive");
    let opts = crate::archive::apply::ApplyOptions {
        whiteouts: crate::archive::whiteout::WhiteoutMode::Overlay,
        lowers: Vec::new(),
        max_entries: core.images.limits.max_layer_entries,
        ..Default::default()
    };
    crate::archive::apply::apply_tar(r, &target, &opts).map_err(|e| Error::InvalidArgument(format!("ADD {path}: {e}")))?;
    Ok(())
}

/// Copy a context's subtree (`source`, cleaned) out into the empty directory
/// `dir` (for a bind mount of the context): a file lands as `dir/<name>`.
pub(super) fn copy_out(core: &Core, mirror: &Mirror, source: &str, dir: &std::path::Path) -> Result<(), Error> {
    let entries = mirror.entries();
    let items = copy::select(entries, &[source.to_owned()], "", true, true).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let open = |p: &str| Source::open(mirror, p);
    let plan =
        copy::TarPlan { missing_parents: &[], skip: &|d: &str| d.is_empty(), own: Ownership::default(), mtime_clamp: None, open: &open };
    copy_into(core, dir, entries, &items, &plan)
}

/// The one way a build writes files: a layer tar of `items`, applied to `root` by the layer applier.
fn copy_into(
    core: &Core,
    root: &std::path::Path,
    entries: &BTreeMap<String, crate::build::context::Entry>,
    items: &[Item],
    plan: &copy::TarPlan<'_>,
) -> Result<(), Error> {
    let opts = crate::archive::apply::ApplyOptions {
        whiteouts: crate::archive::whiteout::WhiteoutMode::Overlay,
        lowers: Vec::new(),
        max_entries: core.images.limits.max_layer_entries,
        ..Default::default()
    };
    // The tar streams into the applier through a pipe: written once, never stored.
    let (reader, writer) = std::io::pipe().map_err(|e| Error::Internal(format!("a pipe: {e}")))?;
    std::thread::scope(|s| {
        let applier = s.spawn(move || crate::archive::apply::apply_tar(std::io::BufReader::with_capacity(1 << 20, reader), root, &opts));
        // The writer is dropped when the tar ends (or fails), which ends the applier's input.
        let written = copy::write_tar(entries, items, plan, std::io::BufWriter::with_capacity(1 << 20, writer));
        let applied = applier.join().map_err(|_| Error::Internal("the layer applier panicked".into()))?;
        match (applied, written) {
            (Ok(_), Ok(_)) => Ok(()),
            // A writer that failed reading a file cut the tar short: its error is the cause.
            (_, Err(w)) if !w.to_string().contains("Broken pipe") => Err(Error::InvalidArgument(w.to_string())),
            (Err(a), _) => Err(Error::InvalidArgument(format!("copying into the image: {a}"))),
            (Ok(_), Err(w)) => Err(Error::InvalidArgument(w.to_string())),
        }
    })
}

/// The end of a filesystem step: the changes of active snapshot `key`
/// become the stage's next layer, written once (tar, hashed for the diff
/// id, gzip, hashed for the digest) into the store; the next state is
/// stored and cached; and the snapshot is committed under the layer's chain
/// id, as if the layer had been unpacked. A step that changed nothing adds a
/// history entry and leaves the snapshot to its caller.
/// Empty files at `leave_out` are not the step's (a RUN container's mount points).
pub(super) fn conclude(
    core: &Core,
    ns: &str,
    key: &str,
    mut state: State,
    next: Next,
    pins: &super::Pins,
    leave_out: &[&str],
) -> Result<State, Error> {
    let lease = core.images.lease();
    let t0 = std::time::Instant::now();
    if let Some(epoch) = next.epoch {
        core.snapshots.clamp_times(ns, key, epoch).map_err(|e| Error::Internal(e.to_string()))?;
    }
    // One walk of the changes: written as the layer; none written, no layer.
    let internal = |e: std::io::Error| Error::Internal(e.to_string());
    let blob = core.content.writer(None, None)?;
    let (compressor, media_type) = Compressor::new(core.config.build_layer_compression, blob).map_err(internal)?;
    let mut tar = HashingWriter { inner: std::io::BufWriter::with_capacity(1 << 20, compressor), hasher: Default::default() };
    let entries = core.snapshots.write_changes(ns, key, next.epoch, leave_out, &mut tar).map_err(|e| Error::Internal(e.to_string()))?;
    let changed = entries > 0;
    let layer = if changed {
        if state.layers.len() >= oci::MAX_LAYERS {
            return Err(Error::FailedPrecondition(format!("the image would have more than {} layers", oci::MAX_LAYERS)));
        }
        let diff_id = tar.hasher.finish();
        let blob = tar.inner.into_inner().map_err(|e| internal(e.into_error()))?.finish().map_err(internal)?;
        let t_written = t0.elapsed();
        // One flush for the layer's blob and its snapshot (the snapshot is
        // committed below as the layer, and must be on disk as the blob is).
        let (digest, size) = lease.publish().commit_syncing_fs(blob)?;
        tracing::debug!(step = %next.text, written = ?t_written, flushed = ?t0.elapsed(), "layer written");
        let desc = Descriptor { media_type: media_type.to_owned(), digest, size, annotations: Default::default(), platform: None };
        Some(Layer { desc, diff_id })
    } else {
        // The unfinished blob is removed with its writer.
        None
    };
    state.add_history(&next.created, &next.text, layer);
    state.key = next.key.clone();
    let (desc, _) = store_state(&lease, &state)?;
    super::pin(core, pins, ns, &desc);
    // From the commit until the cache entry names it, collection waits.
    let _hold = core.images.hold_gc();
    if changed {
        let chain = state.top_chain().expect("a layer was added");
        let labels = BTreeMap::from([(crate::snapshot::LABEL_MANAGED.to_owned(), "image".to_owned())]);
        match core.snapshots.commit(ns, chain.as_str(), key, labels) {
            Ok(()) => {}
            // Another build made the same layer: that one serves (the caller removes this one).
            Err(crate::snapshot::SnapshotError::Metadata(crate::metadata::MetadataError::AlreadyExists { .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let now = crate::metadata::now_nanos();
    let rec = BuildCacheRecord { manifest: crate::image::record_of(&desc), created: now, last_used: now };
    core.meta.put_build_cache(ns, &[(next.key, rec)], &[])?;
    Ok(state)
}

/// The compressor of a build layer's blob.
enum Compressor {
    Zstd(zstd::stream::write::Encoder<'static, crate::content::BlobWriter>),
    Gzip(flate2::write::GzEncoder<crate::content::BlobWriter>),
}

impl Compressor {
    fn new(kind: crate::config::LayerCompression, blob: crate::content::BlobWriter) -> std::io::Result<(Compressor, &'static str)> {
        Ok(match kind {
            crate::config::LayerCompression::Zstd => {
                (Compressor::Zstd(zstd::stream::write::Encoder::new(blob, 1)?), oci::MEDIA_OCI_LAYER_ZSTD)
            }
            crate::config::LayerCompression::Gzip => {
                (Compressor::Gzip(flate2::write::GzEncoder::new(blob, flate2::Compression::fast())), oci::MEDIA_OCI_LAYER_GZIP)
            }
        })
    }

    /// End the stream; the blob, ready to commit.
    fn finish(self) -> std::io::Result<crate::content::BlobWriter> {
        match self {
            Compressor::Zstd(z) => z.finish(),
            Compressor::Gzip(g) => g.finish(),
        }
    }
}

impl std::io::Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressor::Zstd(z) => z.write(buf),
            Compressor::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressor::Zstd(z) => z.flush(),
            Compressor::Gzip(g) => g.flush(),
        }
    }
}
