//! Images: names pointing at content, resolution to a platform's manifest,
//! unpacking into snapshots, and garbage collection (`gc`: the only way to
//! keep what is being written from being collected).

pub mod export;
pub mod gc;
pub mod import;
pub mod ingest;
pub mod oci;
pub mod reference;
pub mod unpack;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::metadata::{now_nanos, DescriptorRecord, ImageRecord, Metadata, MetadataError, SnapshotKind};
use crate::snapshot::{SnapshotError, Snapshots};
pub use gc::{ChainSet, GcStats, Hold, Lease, Publish};

// One limit: every layer of an image that comes in can be stacked under a container.
const _: () = assert!(oci::MAX_LAYERS <= crate::snapshot::MAX_CHAIN);
use oci::{Descriptor, FormatError, ImageConfig, Manifest, Platform};
use reference::{InvalidReference, Reference};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("image id prefix {0:?} is ambiguous: it matches several images")]
    Ambiguous(String),
    #[error("image {0:?} already exists")]
    AlreadyExists(String),
    #[error(transparent)]
    Reference(#[from] InvalidReference),
    #[error("invalid image: {0}")]
    Format(#[from] FormatError),
    #[error("invalid archive: {0}")]
    Archive(String),
    #[error("image has no manifest for platform {0}")]
    NoPlatform(String),
    #[error("layer {layer}: uncompressed digest {actual} does not match the diff id {expected} in the image config")]
    DiffIdMismatch { layer: Digest, expected: Digest, actual: Digest },
    #[error("unpacking layer {layer}: {message}")]
    Unpack { layer: Digest, message: String },
    #[error("blob {digest} is missing: {what}")]
    MissingContent { digest: Digest, what: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InUse(String),
    #[error("import cancelled: {0}")]
    Cancelled(String),
    #[error("upload stalled: {0}")]
    Stalled(String),
    /// A message of the upload over the API's size limit.
    #[error("{0}")]
    MessageTooLarge(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("unpacking layer {layer}: {source}")]
    Apply { layer: Digest, source: crate::archive::apply::ApplyError },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Limits applied to untrusted images.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most bytes one layer may decompress to.
    pub max_layer_bytes: u64,
    /// Most bytes one import archive may decompress to.
    pub max_import_bytes: u64,
    /// Layers unpacked at once.
    pub unpack_parallelism: usize,
    /// Imports and pulls run at once; more wait for a slot.
    pub max_transfers: usize,
    /// Most entries (inodes) one layer may hold.
    pub max_layer_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_layer_bytes: 64 << 30, max_import_bytes: 256 << 30, unpack_parallelism: 4, max_transfers: 4, max_layer_entries: 500_000 }
    }
}

/// An image resolved to one platform.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub record: ImageRecord,
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub manifest_json: Vec<u8>,
    pub config_json: Vec<u8>,
    pub config: ImageConfig,
    pub chain_ids: Vec<Digest>,
    /// Platforms offered by the index, when the target is one.
    pub platforms: Vec<Platform>,
}

impl Resolved {
    /// Bytes of content: manifest, config, layers (and the index, if any).
    pub fn size(&self) -> u64 {
        let index = if oci::is_index(&self.record.target.media_type) { self.record.target.size } else { 0 };
        index + self.manifest_desc.size + self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// Progress of an import, pull or push, reported as it happens.
#[derive(Debug, Clone)]
pub enum Progress {
    Blob {
        digest: Digest,
        size: u64,
        status: &'static str,
    },
    /// Bytes of a blob transferred so far (pulls and pushes), now and then.
    Bytes {
        digest: Digest,
        done: u64,
        total: u64,
    },
    Layer {
        digest: Digest,
        size: u64,
        status: &'static str,
    },
    Image {
        name: String,
        status: &'static str,
    },
}

/// The descriptor an image record points at.
pub fn target_descriptor(rec: &ImageRecord) -> Descriptor {
    descriptor_of(&rec.target)
}

/// A stored descriptor as an OCI one (no annotations, no platform).
pub fn descriptor_of(d: &DescriptorRecord) -> Descriptor {
    Descriptor { media_type: d.media_type.clone(), digest: d.digest.clone(), size: d.size, annotations: Default::default(), platform: None }
}

/// An OCI descriptor as records store it.
pub fn record_of(d: &Descriptor) -> DescriptorRecord {
    DescriptorRecord { media_type: d.media_type.clone(), digest: d.digest.clone(), size: d.size }
}

pub struct Images {
    pub meta: Arc<Metadata>,
    pub content: Arc<ContentStore>,
    pub snapshots: Arc<Snapshots>,
    pub limits: Limits,
    /// Garbage collection's lock and leases (see [`gc`]).
    collector: gc::Collector,
}

impl Images {
    pub fn new(meta: Arc<Metadata>, content: Arc<ContentStore>, snapshots: Arc<Snapshots>, limits: Limits) -> Self {
        Self { meta, content, snapshots, limits, collector: gc::Collector::default() }
    }

    /// Read and parse a manifest through its descriptor.
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<(Manifest, Vec<u8>), ImageError> {
        let data = self.read_doc(desc)?;
        Ok((oci::parse_manifest(&data, &desc.media_type)?, data))
    }

    /// Read a JSON document, checking its size and digest against the descriptor.
    pub fn read_doc(&self, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
        if desc.size > oci::MAX_DOCUMENT {
            return Err(FormatError::Invalid(format!(
                "document {} is {} bytes; at most {} are accepted",
                desc.digest,
                desc.size,
                oci::MAX_DOCUMENT
            ))
            .into());
        }
        let data = self.content.read_all(&desc.digest, oci::MAX_DOCUMENT).map_err(|e| match e {
            ContentError::NotFound(d) => ImageError::MissingContent { digest: d, what: desc.media_type.clone() },
            e => e.into(),
        })?;
        if data.len() as u64 != desc.size || Digest::of(&data) != desc.digest {
            return Err(FormatError::Invalid(format!("document {} does not match its descriptor", desc.digest)).into());
        }
        Ok(data)
    }

    /// Resolve an image record to the manifest for `platform`.
    pub fn resolve(&self, record: &ImageRecord, platform: &Platform) -> Result<Resolved, ImageError> {
        let target = target_descriptor(record);
        let (manifest_desc, platforms) = self.select_manifest(&target, platform)?;
        let (manifest, manifest_json) = self.read_manifest(&manifest_desc)?;
        let config_json = self.read_doc(&manifest.config)?;
        let config = oci::parse_config(&config_json)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(FormatError::Invalid(format!(
                "manifest has {} layers but the config lists {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ))
            .into());
        }
        let chain_ids = oci::chain_ids(&config.rootfs.diff_ids);
        Ok(Resolved { record: record.clone(), manifest_desc, manifest, manifest_json, config_json, config, chain_ids, platforms })
    }

    /// Pick the manifest of `platform` from `desc` (a manifest, or an index, possibly nested).
    pub fn select_manifest(&self, desc: &Descriptor, platform: &Platform) -> Result<(Descriptor, Vec<Platform>), ImageError> {
        let mut seen = HashSet::new();
        self.select_in(desc, platform, 0, &mut seen)
    }

    /// Most index documents read to resolve one image: nested indexes that
    /// point at each other many times over must not multiply the work.
    const MAX_INDEXES_PER_RESOLVE: usize = 64;

    fn select_in(
        &self,
        desc: &Descriptor,
        platform: &Platform,
        depth: u32,
        seen: &mut HashSet<Digest>,
    ) -> Result<(Descriptor, Vec<Platform>), ImageError> {
        if oci::is_manifest(&desc.media_type) {
            return Ok((desc.clone(), Vec::new()));
        }
        if !oci::is_index(&desc.media_type) {
            return Err(FormatError::Invalid(format!("unsupported media type {:?} for an image", desc.media_type)).into());
        }
        if depth > 4 {
            return Err(FormatError::Invalid("indexes nested too deep".into()).into());
        }
        if !seen.insert(desc.digest.clone()) {
            return Err(ImageError::NoPlatform(platform.to_string()));
        }
        if seen.len() > Self::MAX_INDEXES_PER_RESOLVE {
            return Err(FormatError::Invalid(format!("image refers to more than {} indexes", Self::MAX_INDEXES_PER_RESOLVE)).into());
        }
        let data = self.read_doc(desc)?;
        let index = oci::parse_index(&data, &desc.media_type)?;
        let platforms: Vec<Platform> = index.manifests.iter().filter_map(|m| m.platform.clone()).collect();
        // A manifest entry without a platform is taken when nothing better matches
        // (single-platform indexes written by some tools omit it).
        let mut fallback = None;
        for m in &index.manifests {
            if oci::is_manifest(&m.media_type) {
                match &m.platform {
                    Some(p) if platform.matches(p) => return Ok((m.clone(), platforms)),
                    None if fallback.is_none() => fallback = Some(m.clone()),
                    _ => {}
                }
            } else if oci::is_index(&m.media_type) {
                match self.select_in(m, platform, depth + 1, seen) {
                    Ok((found, _)) => return Ok((found, platforms)),
                    Err(ImageError::NoPlatform(_)) | Err(ImageError::MissingContent { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        fallback.map(|m| (m, platforms)).ok_or_else(|| ImageError::NoPlatform(platform.to_string()))
    }

    /// Find images by name, digest or id prefix. A name gives one image; a
    /// digest or id (prefix) gives every name pointing at that image.
    pub fn find(&self, ns: &str, name: &str) -> Result<Vec<ImageRecord>, ImageError> {
        if name.is_empty() {
            return Err(ImageError::InvalidArgument("an image name or id is required".into()));
        }
        if let Ok(r) = Reference::parse(name) {
            match self.meta.image(ns, &r.to_string()) {
                Ok(rec) => return Ok(vec![rec]),
                Err(MetadataError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            // `repo@sha256:...`: an image of that repository whose target (or
            // selected manifest) has that digest.
            if let Some(d) = &r.digest {
                let repo = r.repository();
                let found: Vec<ImageRecord> = self
                    .meta
                    .images(ns)?
                    .into_iter()
                    .filter(|rec| Reference::parse(&rec.name).map(|x| x.repository() == repo).unwrap_or(false))
                    .filter(|rec| {
                        rec.target.digest.as_str() == d
                            || self.resolve(rec, &Platform::default_platform()).is_ok_and(|x| x.manifest_desc.digest.as_str() == d)
                    })
                    .collect();
                if let Some(first) = found.into_iter().next() {
                    return Ok(vec![first]);
                }
                return Err(ImageError::NotFound(name.to_owned()));
            }
        }
        let prefix = name.strip_prefix("sha256:").unwrap_or(name);
        let is_hex = !prefix.is_empty() && prefix.len() <= 64 && prefix.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if !is_hex {
            Reference::parse(name)?;
            return Err(ImageError::NotFound(name.to_owned()));
        }
        let mut matched: BTreeMap<String, Vec<ImageRecord>> = BTreeMap::new();
        for rec in self.meta.images(ns)? {
            let id = self.image_id(&rec);
            let hit = if let Some(id) = &id { id.hex().starts_with(prefix) } else { false } || rec.target.digest.hex().starts_with(prefix);
            if hit {
                let key = id.map(|d| d.to_string()).unwrap_or_else(|| rec.target.digest.to_string());
                matched.entry(key).or_default().push(rec);
            }
        }
        match matched.len() {
            0 => Err(ImageError::NotFound(name.to_owned())),
            1 => Ok(matched.into_values().next().unwrap_or_default()),
            _ => Err(ImageError::Ambiguous(name.to_owned())),
        }
    }

    /// Find exactly one image (the first when a digest names several).
    pub fn find_one(&self, ns: &str, name: &str) -> Result<ImageRecord, ImageError> {
        self.find(ns, name)?.into_iter().next().ok_or_else(|| ImageError::NotFound(name.to_owned()))
    }

    /// The image id: digest of the default platform's config.
    pub fn image_id(&self, rec: &ImageRecord) -> Option<Digest> {
        self.resolve(rec, &Platform::default_platform()).ok().map(|r| r.manifest.config.digest)
    }

    /// Whether every layer of a resolved image is unpacked in `ns`.
    pub fn is_unpacked(&self, ns: &str, r: &Resolved) -> bool {
        r.chain_ids
            .last()
            .is_none_or(|top| self.snapshots.stat(ns, top.as_str()).map(|s| s.kind == SnapshotKind::Committed).unwrap_or(false))
    }

    /// Size of the unpacked layers, when all are unpacked.
    pub fn unpacked_size(&self, ns: &str, r: &Resolved) -> Option<u64> {
        let mut total = 0;
        for c in &r.chain_ids {
            total += self.snapshots.usage(ns, c.as_str()).ok()?.size;
        }
        Some(total)
    }

    /// Name `source`'s image `target` as well. Returns the new record and
    /// whether the name moved from another image (which may be unused now).
    pub fn tag(&self, ns: &str, source: &str, target: &str, force: bool) -> Result<(ImageRecord, bool), ImageError> {
        let _hold = self.hold_gc();
        let src = self.find_one(ns, source)?;
        let r = Reference::parse(target)?;
        let now = now_nanos();
        let rec = ImageRecord { name: r.to_string(), target: src.target.clone(), labels: src.labels.clone(), created: now, updated: now };
        match self.meta.put_image(ns, &rec, force) {
            Ok(prev) => {
                let moved = prev.is_some_and(|p| p.target.digest != rec.target.digest);
                Ok((rec, moved))
            }
            Err(MetadataError::AlreadyExists { name, .. }) => Err(ImageError::AlreadyExists(name)),
            Err(e) => Err(e.into()),
        }
    }

    pub fn update_labels(&self, ns: &str, name: &str, labels: BTreeMap<String, String>) -> Result<ImageRecord, ImageError> {
        // Shared with imports, exclusive with collection: the record cannot be
        // removed and collected between the lookup and the update.
        let _hold = self.hold_gc();
        let mut rec = self.find_one(ns, name)?;
        rec.labels = labels;
        rec.updated = now_nanos();
        self.meta.put_image(ns, &rec, true)?;
        Ok(rec)
    }

    /// Remove image names; returns the names removed. An id or digest that
    /// several names point at is refused unless `force` is set (as docker does).
    pub fn delete(&self, ns: &str, name: &str, force: bool) -> Result<Vec<String>, ImageError> {
        let recs = self.find(ns, name)?;
        if recs.len() > 1 && !force {
            return Err(ImageError::InUse(format!(
                "image {name} is referenced by {} names ({}); remove them by name or force",
                recs.len(),
                recs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let mut out = Vec::new();
        for r in recs {
            match self.meta.delete_image(ns, &r.name) {
                Ok(_) => out.push(r.name),
                Err(MetadataError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Create or move image names to `target`.
    pub fn put(
        &self,
        ns: &str,
        name: &str,
        target: &Descriptor,
        labels: &BTreeMap<String, String>,
    ) -> Result<(ImageRecord, bool), ImageError> {
        let now = now_nanos();
        let rec = ImageRecord { name: name.to_owned(), target: record_of(target), labels: labels.clone(), created: now, updated: now };
        let prev = self.meta.put_image(ns, &rec, true)?;
        Ok((rec, prev.is_some()))
    }

    /// Names of images in `ns` whose content includes `digest`.
    pub fn referenced_by(&self, ns: &str, digest: &Digest) -> Result<Vec<String>, ImageError> {
        let mut out = Vec::new();
        for rec in self.meta.images(ns)? {
            let desc = target_descriptor(&rec);
            let mut seen = HashSet::new();
            self.walk(&desc, &mut seen, &mut Vec::new(), 0)?;
            if seen.contains(digest) {
                out.push(rec.name);
            }
        }
        Ok(out)
    }

    /// Names of images in any namespace whose content includes `digest`.
    pub fn referenced_anywhere(&self, digest: &Digest) -> Result<bool, ImageError> {
        Ok(self.references()?.0.contains(digest))
    }
}
