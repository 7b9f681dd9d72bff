//! Importing image archives: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/`) or a `docker save` archive (`manifest.json`, with layers as
//! `<id>/layer.tar` or `blobs/sha256/<hex>`), optionally gzip or zstd
//! compressed as a whole.
//!
//! The archive is read once, in order: every file is streamed into the
//! content store (hashed while written; a blob under `blobs/sha256/<hex>` must
//! match its name), the small index files are kept in memory. Then the images
//! it names are resolved, their layers unpacked, and their names recorded. An
//! import that fails leaves no image; what it stored is garbage collected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ingest::{Incoming, Ingest, IngestError, LayerHint};
use super::oci::{self, Descriptor, Manifest, Platform};
use super::reference::Reference;
use super::unpack::{decompress, Compression};
use super::{ImageError, Images, Progress};
use crate::archive::reader::{TarError, TarReader};
use crate::content::ContentError;
use crate::digest::{Digest, LimitedReader};
use crate::metadata::ImageRecord;

/// An upload's request that breaks its protocol (options sent again), as the
/// error of the reader the import reads: refused as the caller's mistake.
#[derive(Debug)]
pub struct UploadMisuse(pub &'static str);

impl std::fmt::Display for UploadMisuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for UploadMisuse {}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// New name for the first image of the archive.
    pub name: Option<String>,
    pub platform: Platform,
    pub no_unpack: bool,
    pub labels: BTreeMap<String, String>,
    /// Repository for images the archive names only by tag.
    pub base_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ImportOutcome {
    pub images: Vec<ImageRecord>,
    pub bytes_read: u64,
    /// Whether a name was taken from an image that had it before (which may now be garbage).
    pub replaced: bool,
    /// Whether the archive held files no imported image uses (garbage now).
    pub stray: bool,
}

const SMALL_FILES: [&str; 4] = ["index.json", "manifest.json", "oci-layout", "repositories"];
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Normalize a path inside the archive: no leading `./` or `/`, no `..`.
fn clean_path(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// What the archive held, by path.
#[derive(Default)]
struct Scanned {
    docs: HashMap<String, Vec<u8>>,
    files: HashMap<String, (Digest, u64)>,
    links: HashMap<String, String>,
}

impl Scanned {
    /// The blob at `path`, following the archive's symlinks (docker save
    /// links repeated layers) a bounded number of times.
    fn file(&self, path: &str) -> Option<&(Digest, u64)> {
        let mut p = clean_path(path)?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Some(f);
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }
}

impl Images {
    /// Import an archive read from `reader`.
    ///
    /// The upload is streamed into the content store by one ingest (its
    /// layers unpacked while they arrive), under a lease that keeps garbage
    /// collection off the new blobs without holding the collector's lock: a
    /// slow client cannot stall other calls. Collection is held off only to
    /// resolve, unpack and name the images. What a failed import stored is
    /// unnamed: the caller collects it.
    pub fn import(
        &self,
        ns: &str,
        reader: impl Read,
        opts: &ImportOptions,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImportOutcome, ImageError> {
        let count = Arc::new(AtomicU64::new(0));
        let counting = CountingReader { inner: reader, count: count.clone() };
        self.ingest(ns, !opts.no_unpack, progress, |ingest| {
            let scanned = self.scan_entries(counting, ingest)?;
            // Before collection is held off: a docker archive's manifests are
            // written (and leased) here, and the layers unpacked ahead finish.
            let targets = self.targets(&scanned, opts, ingest)?;
            ingest.finish_writes();
            let _hold = self.hold_gc();
            self.finish_import(ns, &scanned, targets, count.load(Ordering::Relaxed), opts, ingest)
        })
    }

    /// The images an archive names: (name, target descriptor).
    fn targets(&self, scanned: &Scanned, opts: &ImportOptions, ingest: &Ingest<'_, '_>) -> Result<Vec<(String, Descriptor)>, ImageError> {
        let targets = if let Some(index) = scanned.docs.get("index.json") {
            self.oci_targets(index, opts)?
        } else if let Some(manifest) = scanned.docs.get("manifest.json") {
            self.docker_targets(manifest, scanned, opts, ingest)?
        } else {
            return Err(ImageError::Archive(
                "not an image archive, or a truncated one: it has neither index.json (OCI layout) nor manifest.json (docker save)".into(),
            ));
        };
        if targets.is_empty() {
            return Err(ImageError::Archive("the archive names no image".into()));
        }
        Ok(targets)
    }

    /// Resolve, check, unpack and name the images of a scanned archive.
    /// The caller holds off collection.
    fn finish_import(
        &self,
        ns: &str,
        scanned: &Scanned,
        targets: Vec<(String, Descriptor)>,
        bytes_read: u64,
        opts: &ImportOptions,
        ingest: &Ingest<'_, '_>,
    ) -> Result<ImportOutcome, ImageError> {
        let now = crate::metadata::now_nanos();
        let records: Vec<ImageRecord> = targets
            .iter()
            .map(|(name, desc)| ImageRecord {
                name: name.clone(),
                target: crate::metadata::DescriptorRecord {
                    media_type: desc.media_type.clone(),
                    digest: desc.digest.clone(),
                    size: desc.size,
                },
                labels: opts.labels.clone(),
                created: now,
                updated: now,
            })
            .collect();
        // Check every image before naming any: its documents parse and its layers are here.
        let mut resolved = Vec::new();
        for rec in &records {
            let r = self.resolve(rec, &opts.platform)?;
            for l in &r.manifest.layers {
                if !self.content.exists(&l.digest) {
                    return Err(ImageError::MissingContent { digest: l.digest.clone(), what: "layer not in the archive".into() });
                }
            }
            resolved.push(r);
        }
        if !opts.no_unpack {
            let mut done = std::collections::HashSet::new();
            for r in &resolved {
                if done.insert(r.manifest_desc.digest.clone()) {
                    ingest.unpack(r)?;
                }
            }
        }
        // Files of the archive that none of its images reaches (docker's
        // VERSION files, stray blobs) are garbage; when unsure, collect.
        let mut reachable = HashSet::new();
        let walked = targets.iter().try_for_each(|(_, desc)| self.walk(desc, &mut reachable, &mut Vec::new(), 0));
        let stray = walked.is_err() || scanned.files.values().any(|(d, _)| !reachable.contains(d));
        // All names at once: an import names every image of the archive or none.
        let replaced = self.meta.put_images(ns, &records)?;
        let mut images = Vec::new();
        for (rec, replaced) in records.into_iter().zip(&replaced) {
            ingest.progress(Progress::Image { name: rec.name.clone(), status: if *replaced { "updated" } else { "created" } });
            images.push(rec);
        }
        let replaced_any = replaced.iter().any(|r| *r);
        Ok(ImportOutcome { images, bytes_read, replaced: replaced_any, stray })
    }

    /// Read the archive once, storing every file through `ingest` (layers
    /// are recognized by their first bytes and unpacked while they are
    /// stored) and keeping the small index files in memory.
    fn scan_entries(&self, reader: impl Read, ingest: &Ingest<'_, '_>) -> Result<Scanned, ImageError> {
        // Where in the uncompressed stream a failure is (errors name it, and never quote the input).
        let at = Arc::new(AtomicU64::new(0));
        let archive_err = |what: &str, e: io::Error| read_error(what, e, at.load(Ordering::Relaxed));
        let inner = decompress(reader).map_err(|e| archive_err("reading the archive", e))?;
        let limited = LimitedReader::new(inner, self.limits.max_import_bytes, "uncompressed archive");
        let limited = CountingReader { inner: limited, count: at.clone() };
        // The reader bounds what one entry's headers may use, and refuses entries tar readers
        // do not all read alike: an entry's path decides which blob it is.
        let mut ar = TarReader::new(limited);
        let mut out = Scanned::default();
        let mut count = 0usize;
        let tar_error = |e: TarError| match e {
            TarError::Read(e) => archive_err("reading the archive", e),
            e @ (TarError::Ambiguous { .. } | TarError::Unsupported { .. }) => ImageError::Archive(e.to_string()),
        };
        for entry in ar.entries().map_err(tar_error)? {
            let mut entry = entry.map_err(tar_error)?;
            count += 1;
            if count > MAX_ARCHIVE_ENTRIES {
                return Err(ImageError::Archive(format!("the archive has more than {MAX_ARCHIVE_ENTRIES} entries")));
            }
            let raw = entry.path().map_err(|e| archive_err("an entry's name", e))?.to_string_lossy().into_owned();
            let Some(path) = clean_path(&raw) else {
                return Err(ImageError::Archive(format!("entry {raw:?} escapes the archive")));
            };
            // The entry's size, PAX `size` records included (large files carry their size there).
            let size = entry.size();
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Ok(Some(target)) = entry.link_name() {
                        let target = target.to_string_lossy().into_owned();
                        // Symlink targets are relative to the link's directory; hardlinks to the root.
                        let joined = if entry.header().entry_type() == tar::EntryType::Symlink {
                            let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                            format!("{dir}/{target}")
                        } else {
                            target
                        };
                        if let Some(t) = clean_path(&joined) {
                            out.links.insert(path, t);
                        }
                    }
                    continue;
                }
                _ => continue,
            }
            if SMALL_FILES.contains(&path.as_str()) {
                if size > oci::MAX_DOCUMENT {
                    return Err(ImageError::Archive(format!("{path:?} is {size} bytes; at most {} are accepted", oci::MAX_DOCUMENT)));
                }
                let mut buf = Vec::with_capacity(size as usize);
                (&mut entry).take(oci::MAX_DOCUMENT + 1).read_to_end(&mut buf).map_err(|e| archive_err(&format!("{path:?}"), e))?;
                out.docs.insert(path, buf);
                continue;
            }
            let expected = match path.strip_prefix("blobs/sha256/") {
                Some(hex) => {
                    Some(Digest::from_hex(hex).map_err(|_| ImageError::Archive(format!("blob {path:?} is not named by a sha256 digest")))?)
                }
                None => None,
            };
            if let Some(d) = &expected {
                if ingest.have(d, Some(size)) {
                    let copied = io::copy(&mut entry, &mut io::sink()).map_err(|e| archive_err(&format!("{path:?}"), e))?;
                    truncated(&path, copied, size)?;
                    ingest.progress(Progress::Blob { digest: d.clone(), size, status: "exists" });
                    out.files.insert(path, (d.clone(), size));
                    continue;
                }
            }
            let blob =
                Incoming { src: &mut entry, digest: expected.as_ref(), size: Some(size), layer: LayerHint::Sniff, report_bytes: false };
            let (digest, size) = ingest.write(blob).map_err(|e| match e {
                IngestError::Read(e) => archive_err(&format!("{path:?}"), e),
                // The tar reader ends an entry early, without an error, when the archive does.
                IngestError::Short { got, expected } => truncated_error(&path, got, expected),
                IngestError::Store(ContentError::DigestMismatch { expected, actual }) => ImageError::Archive(format!(
                    "blob {path:?} has digest {actual}, not {expected}: the archive is corrupt or was tampered with"
                )),
                IngestError::TooLong { .. } => ImageError::Archive(format!("entry {path:?} is longer than its header says")),
                IngestError::Store(e) => e.into(),
            })?;
            ingest.progress(Progress::Blob { digest: digest.clone(), size, status: "stored" });
            out.files.insert(path, (digest, size));
        }
        Ok(out)
    }

    /// Images named by an OCI layout's index.json.
    fn oci_targets(&self, index_json: &[u8], opts: &ImportOptions) -> Result<Vec<(String, Descriptor)>, ImageError> {
        let index = oci::parse_index(index_json, "")?;
        let mut out = Vec::new();
        let images = index.manifests.iter().filter(|d| oci::is_index(&d.media_type) || oci::is_manifest(&d.media_type));
        for (i, desc) in images.enumerate() {
            // The OCI layout's ref.name is a whole reference ("busybox:1.36",
            // "example.com/app:v1", as skopeo writes it), or one bare word
            // ("app", "v1"): a tag of --base-name when one is given, else the
            // image's name (`app` → docker.io/library/app:latest), as docker
            // and podman load it.
            let bare_tag = desc.annotations.get(ANNOTATION_REF_NAME).filter(|r| !r.contains(['/', ':', '@']));
            let named = match (desc.annotations.get(ANNOTATION_CONTAINERD_NAME), desc.annotations.get(ANNOTATION_REF_NAME)) {
                (Some(n), _) => Some(n.clone()),
                (None, Some(r)) if bare_tag.is_none() => Some(r.clone()),
                (None, Some(r)) => Some(opts.base_name.as_ref().map_or_else(|| r.clone(), |base| format!("{base}:{r}"))),
                (None, None) => None,
            };
            let name = match (i, &opts.name, named) {
                (0, Some(n), _) => n.clone(),
                (_, _, Some(n)) => n,
                (_, _, None) => {
                    return Err(ImageError::InvalidArgument(format!(
                        "the archive does not name image {}; give it a name with --name",
                        desc.digest
                    )))
                }
            };
            out.push((Reference::parse(&name)?.to_string(), desc.clone()));
        }
        Ok(out)
    }

    /// Images of a `docker save` archive: an OCI manifest is written for each.
    fn docker_targets(
        &self,
        manifest_json: &[u8],
        scanned: &Scanned,
        opts: &ImportOptions,
        ingest: &Ingest<'_, '_>,
    ) -> Result<Vec<(String, Descriptor)>, ImageError> {
        let entries = oci::parse_docker_manifest(manifest_json)?;
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let missing = |p: &str| ImageError::Archive(format!("manifest.json names {p:?}, which the archive does not contain"));
            let (config_digest, config_size) = scanned.file(&e.config).ok_or_else(|| missing(&e.config))?.clone();
            if e.layers.len() > oci::MAX_LAYERS {
                return Err(ImageError::Archive(format!("manifest.json lists {} layers", e.layers.len())));
            }
            let mut layers = Vec::new();
            for l in &e.layers {
                let (digest, size) = scanned.file(l).ok_or_else(|| missing(l))?.clone();
                let mut head = [0u8; 4];
                let n = self.content.open_blob(&digest)?.read(&mut head).unwrap_or(0);
                let media_type = match Compression::detect(&head[..n]) {
                    Compression::Gzip => oci::MEDIA_OCI_LAYER_GZIP,
                    Compression::Zstd => oci::MEDIA_OCI_LAYER_ZSTD,
                    Compression::None => oci::MEDIA_OCI_LAYER,
                };
                layers.push(Descriptor { media_type: media_type.into(), digest, size, annotations: Default::default(), platform: None });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(oci::MEDIA_OCI_MANIFEST.into()),
                config: Descriptor {
                    media_type: oci::MEDIA_OCI_CONFIG.into(),
                    digest: config_digest,
                    size: config_size,
                    annotations: Default::default(),
                    platform: None,
                },
                layers,
                annotations: Default::default(),
                manifests: None,
            };
            let data = serde_json::to_vec(&manifest).map_err(|e| ImageError::Archive(e.to_string()))?;
            let digest = Digest::of(&data);
            ingest.put(&digest, &data)?;
            let desc = Descriptor {
                media_type: oci::MEDIA_OCI_MANIFEST.into(),
                digest,
                size: data.len() as u64,
                annotations: Default::default(),
                platform: None,
            };
            let tags = e.repo_tags.clone().unwrap_or_default();
            let names: Vec<String> = match (i, &opts.name) {
                (0, Some(n)) => vec![n.clone()],
                _ if tags.is_empty() => {
                    return Err(ImageError::InvalidArgument(format!(
                        "the archive does not name image {}; give it a name with --name",
                        e.config
                    )))
                }
                _ => tags,
            };
            for n in names {
                out.push((Reference::parse(&n)?.to_string(), desc.clone()));
            }
        }
        Ok(out)
    }
}

/// Refuse an entry that ended before the size its header gives.
fn truncated(path: &str, copied: u64, size: u64) -> Result<(), ImageError> {
    if copied < size {
        return Err(truncated_error(path, copied, size));
    }
    Ok(())
}

fn truncated_error(path: &str, copied: u64, size: u64) -> ImageError {
    ImageError::Archive(format!("the archive is truncated: {path:?} ends after {copied} of its {size} bytes"))
}

/// Most entries accepted in one archive.
const MAX_ARCHIVE_ENTRIES: usize = 100_000;

/// An error reading the archive: a stalled or dropped upload is not a bad archive.
/// The tar and decompression readers' own messages may quote the input (a
/// header's bytes, a name): they are not shown; the offset is.
fn read_error(what: &str, e: io::Error, offset: u64) -> ImageError {
    if let Some(limit) = e.get_ref().and_then(|i| i.downcast_ref::<crate::digest::InputLimit>()) {
        return ImageError::Archive(format!("{what}: {limit}"));
    }
    match e.kind() {
        // The upload's own errors (see the Images API handler).
        io::ErrorKind::TimedOut => ImageError::Stalled(format!("{what}: {e}")),
        io::ErrorKind::ConnectionAborted => ImageError::Cancelled(format!("{what}: {e}")),
        io::ErrorKind::FileTooLarge => ImageError::MessageTooLarge(e.to_string()),
        // The client broke the upload's protocol (see `UploadMisuse`).
        io::ErrorKind::InvalidInput if e.get_ref().is_some_and(|r| r.is::<UploadMisuse>()) => {
            ImageError::InvalidArgument(format!("{what}: {e}"))
        }
        io::ErrorKind::UnexpectedEof => {
            ImageError::Archive(format!("{what}: the archive ends early, near byte {offset} of its uncompressed stream"))
        }
        _ => ImageError::Archive(format!("{what}: not a tar archive, or a corrupt one (near byte {offset} of its uncompressed stream)")),
    }
}

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn archive_paths_are_normalized_and_escapes_refused() {
        assert_eq!(clean_path("./blobs/sha256/ab").as_deref(), Some("blobs/sha256/ab"));
        assert_eq!(clean_path("/index.json").as_deref(), Some("index.json"));
        assert_eq!(clean_path("a/../b").as_deref(), Some("b"));
        assert_eq!(clean_path("../x"), None);
    }
}
