//! Garbage collection and the protocol that keeps it safe.
//!
//! Collection removes every blob and image snapshot that no image (no
//! container, no build cache entry) reaches. Whatever is being written — an import, a pull, a
//! commit, an export's plan — is protected by a [`Lease`], and the only way
//! to add a blob to a lease is a [`Publish`] guard, which holds the
//! collector's lock (shared) while the blob is stored or found and leased:
//! collection (which holds the lock exclusively) sees a blob either leased or
//! not yet there, never in between. A [`Hold`] holds the lock alone, for
//! work that names or unpacks what is already leased. The lock never leaves
//! this module.
//!
//! A thread never takes the lock twice: `std`'s RwLock lets a waiting
//! collector block a second shared lock, which would then wait on the first
//! forever. So nothing is published under a [`Hold`] (an ingest stores
//! everything before it holds collection off); debug builds assert the rule.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::oci::{self, Descriptor};
use super::{target_descriptor, ImageError, Images};
use crate::content::{BlobWriter, ContentError};
use crate::digest::Digest;
use crate::metadata::{MetadataError, SnapshotKind};
use crate::snapshot::{SnapshotError, LABEL_MANAGED};

/// The collector's lock and the leases of the transfers in progress.
#[derive(Default)]
pub(super) struct Collector {
    /// Shared by whoever publishes or names content; exclusive while collecting.
    lock: RwLock<()>,
    /// Blobs each lease keeps.
    leases: Mutex<BTreeMap<u64, HashSet<Digest>>>,
    next_lease: AtomicU64,
    /// A collection spared unused blobs because a lease held them: collect
    /// again when the last lease is gone.
    pending: AtomicBool,
    /// Images pinned as roots (a running build's states), by pin id.
    pins: Mutex<BTreeMap<u64, (String, Descriptor)>>,
    next_pin: AtomicU64,
}

thread_local! {
    /// Guards of the collector's lock this thread holds (0 or 1).
    static HELD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The collector's lock, taken by this thread; notes it for the debug check.
struct Guard<G> {
    _guard: G,
}

impl<G> Guard<G> {
    fn new(take: impl FnOnce() -> G) -> Self {
        debug_assert_eq!(HELD.with(|h| h.get()), 0, "the collector's lock taken twice by one thread (it can deadlock)");
        let guard = take();
        HELD.with(|h| h.set(h.get() + 1));
        Guard { _guard: guard }
    }
}

impl<G> Drop for Guard<G> {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
    }
}

impl Collector {
    fn exclusive(&self) -> Guard<RwLockWriteGuard<'_, ()>> {
        Guard::new(|| self.lock.write().unwrap_or_else(|e| e.into_inner()))
    }

    fn shared(&self) -> Guard<RwLockReadGuard<'_, ()>> {
        Guard::new(|| self.lock.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every blob some lease keeps.
    fn leased(&self) -> HashSet<Digest> {
        self.leases.lock().map(|l| l.values().flatten().cloned().collect()).unwrap_or_default()
    }
}

/// (namespace, chain id) pairs that images use.
pub type ChainSet = HashSet<(String, String)>;

/// Summary of one garbage collection.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcStats {
    pub blobs_removed: u64,
    pub snapshots_removed: u64,
}

/// Keeps the blobs published under it from collection until dropped.
pub struct Lease<'a> {
    images: &'a Images,
    id: u64,
}

impl<'a> Lease<'a> {
    /// Hold off collection while blobs are stored or found and leased.
    pub fn publish(&self) -> Publish<'_, 'a> {
        Publish { _hold: self.images.collector.shared(), lease: self }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Ok(mut l) = self.images.collector.leases.lock() {
            l.remove(&self.id);
        }
    }
}

/// While it lives, collection waits; what is looked up or named under it
/// cannot be collected in between.
pub struct Hold<'a> {
    _guard: Guard<RwLockReadGuard<'a, ()>>,
}

/// A [`Lease`] with collection held off: blobs stored or found through it
/// are kept for the life of the lease.
pub struct Publish<'l, 'a> {
    _hold: Guard<RwLockReadGuard<'l, ()>>,
    lease: &'l Lease<'a>,
}

impl Publish<'_, '_> {
    /// Keep a blob that is already stored.
    pub fn keep(&self, digest: &Digest) {
        if let Ok(mut l) = self.lease.images.collector.leases.lock() {
            l.entry(self.lease.id).or_default().insert(digest.clone());
        }
    }

    /// Whether the store has `digest` (of `size` bytes, when given); if so it is kept.
    pub fn have(&self, digest: &Digest, size: Option<u64>) -> bool {
        let content = &self.lease.images.content;
        let have = match size {
            Some(size) => content.info(digest).is_ok_and(|i| i.size == size),
            None => content.exists(digest),
        };
        if have {
            self.keep(digest);
        }
        have
    }

    /// Commit a written blob (verifying it) and keep it.
    pub fn commit(&self, writer: BlobWriter) -> Result<(Digest, u64), ContentError> {
        let (digest, size) = writer.commit()?;
        self.keep(&digest);
        Ok((digest, size))
    }

    /// [`Publish::commit`] with the store's whole filesystem flushed (see
    /// [`BlobWriter::commit_syncing_fs`]).
    pub fn commit_syncing_fs(&self, writer: BlobWriter) -> Result<(Digest, u64), ContentError> {
        let (digest, size) = writer.commit_syncing_fs()?;
        self.keep(&digest);
        Ok((digest, size))
    }

    /// Store a small blob (a document) and keep it.
    pub fn put(&self, data: &[u8]) -> Result<Digest, ContentError> {
        let digest = self.lease.images.content.put(data)?;
        self.keep(&digest);
        Ok(digest)
    }
}

impl Images {
    /// A lease: what is published under it is kept until it is dropped.
    pub fn lease(&self) -> Lease<'_> {
        let id = self.collector.next_lease.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.collector.leases.lock() {
            l.insert(id, HashSet::new());
        }
        Lease { images: self, id }
    }

    /// Keep the image `desc` of namespace `ns` (its blobs and the snapshots of
    /// its layers) as if it were named, until [`Images::unpin`]: for work
    /// that uses unnamed images for a while (a build's states). Pin under a
    /// [`Hold`] what was found without one.
    pub fn pin(&self, ns: &str, desc: &Descriptor) -> u64 {
        let id = self.collector.next_pin.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut p) = self.collector.pins.lock() {
            p.insert(id, (ns.to_owned(), desc.clone()));
        }
        id
    }

    pub fn unpin(&self, id: u64) {
        if let Ok(mut p) = self.collector.pins.lock() {
            p.remove(&id);
        }
    }

    /// Hold off collection (shared with other holders) while the guard lives.
    pub fn hold_gc(&self) -> Hold<'_> {
        Hold { _guard: self.collector.shared() }
    }

    /// Delete a blob; one an image uses only with `force`. Under the
    /// collector's lock, so no import can name the blob in between.
    pub fn delete_blob(&self, digest: &Digest, force: bool) -> Result<(), ImageError> {
        let _exclusive = self.collector.exclusive();
        self.content.info(digest)?;
        if !force && self.referenced_anywhere(digest)? {
            return Err(ImageError::InUse(format!("blob {digest} is used by an image; remove the image first or force")));
        }
        self.content.delete(digest)?;
        self.meta.set_content_labels(digest, &Default::default())?;
        Ok(())
    }

    /// Replace a blob's labels, under the caller's hold (so that the blob
    /// cannot be collected in between, nor before the caller reads it back).
    pub fn set_blob_labels(&self, _held: &Hold<'_>, digest: &Digest, labels: &BTreeMap<String, String>) -> Result<(), ImageError> {
        self.content.info(digest)?;
        self.meta.set_content_labels(digest, labels)?;
        Ok(())
    }

    /// Whether a collection spared leased blobs and no lease is left (clears the flag).
    pub fn take_pending_gc(&self) -> bool {
        let idle = self.collector.leases.lock().map(|l| l.is_empty()).unwrap_or(false);
        idle && self.collector.pending.swap(false, Ordering::Relaxed)
    }

    /// Every blob reachable from `desc`; missing children are skipped.
    pub(crate) fn walk(
        &self,
        desc: &Descriptor,
        out: &mut HashSet<Digest>,
        chains: &mut Vec<Vec<Digest>>,
        depth: u32,
    ) -> Result<(), ImageError> {
        if !out.insert(desc.digest.clone()) || depth > 5 {
            return Ok(());
        }
        if !oci::is_index(&desc.media_type) && !oci::is_manifest(&desc.media_type) {
            return Ok(());
        }
        // Read leniently: whatever a stored document names is kept, whether or
        // not this version of the agent can use it (attestations, unknown layer
        // types). Only a failure to read the store stops the walk, so that an
        // unreadable image is never taken for an unused one.
        let data = match self.content.read_all(&desc.digest, oci::MAX_DOCUMENT) {
            Ok(d) => d,
            Err(ContentError::NotFound(_)) | Err(ContentError::TooLarge { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&data) else { return Ok(()) };
        let children = |field: &str| oci::child_descriptors(&doc, field);
        for m in children("manifests") {
            self.walk(&m, out, chains, depth + 1)?;
        }
        for l in children("layers") {
            out.insert(l.digest);
        }
        if let Some(config) = doc.get("config").and_then(|c| serde_json::from_value::<Descriptor>(c.clone()).ok()) {
            out.insert(config.digest.clone());
            match self.content.read_all(&config.digest, oci::MAX_DOCUMENT) {
                Ok(data) => {
                    if let Ok(cfg) = oci::parse_config(&data) {
                        chains.push(oci::chain_ids(&cfg.rootfs.diff_ids));
                    }
                }
                Err(ContentError::NotFound(_)) | Err(ContentError::TooLarge { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Blobs reachable from the images of every namespace, and per namespace
    /// the chain ids those images use.
    pub fn references(&self) -> Result<(HashSet<Digest>, ChainSet), ImageError> {
        let mut blobs = HashSet::new();
        let mut chains = HashSet::new();
        // Images, build cache entries and pinned images: a cached step's
        // image keeps its content and the snapshots of its layers, as a named
        // image does (a cached step is reused without unpacking), and so does
        // every state a running build uses.
        let images = self.meta.all_images()?.into_iter().map(|(ns, rec)| (ns, target_descriptor(&rec)));
        let cache = self.meta.all_build_cache()?.into_iter().map(|(ns, _, rec)| (ns, super::descriptor_of(&rec.manifest)));
        let pinned: Vec<(String, Descriptor)> = self.collector.pins.lock().map(|p| p.values().cloned().collect()).unwrap_or_default();
        for (ns, desc) in images.chain(cache).chain(pinned) {
            let mut seen = HashSet::new();
            let mut ch = Vec::new();
            self.walk(&desc, &mut seen, &mut ch, 0)?;
            blobs.extend(seen);
            for c in ch.into_iter().flatten() {
                chains.insert((ns.clone(), c.to_string()));
            }
        }
        // A container keeps the content of the image it was made from (commit
        // needs it), even after the image's names are gone.
        for (_, c) in self.meta.all_containers()? {
            let desc = super::descriptor_of(&c.image_target);
            let mut seen = HashSet::new();
            self.walk(&desc, &mut seen, &mut Vec::new(), 0)?;
            blobs.extend(seen);
        }
        Ok((blobs, chains))
    }

    /// Remove blobs and image snapshots that no image uses any more.
    pub fn gc(&self) -> Result<GcStats, ImageError> {
        let _exclusive = self.collector.exclusive();
        let (blobs, chains) = self.references()?;
        let mut stats = GcStats::default();
        // Imports add to their leases only while holding the lock shared, so
        // this set is stable for the whole pass.
        let leased = self.collector.leased();
        let unused: Vec<Digest> = self.content.list()?.into_iter().map(|b| b.digest).filter(|d| !blobs.contains(d)).collect();
        let (spared, doomed): (Vec<Digest>, Vec<Digest>) = unused.into_iter().partition(|d| leased.contains(d));
        if !spared.is_empty() {
            self.collector.pending.store(true, Ordering::Relaxed);
        }
        // Labels go first, in one transaction: a crash then leaves at worst an unlabelled blob.
        self.meta.remove_content_labels(&doomed)?;
        for d in &doomed {
            match self.content.delete(d) {
                Ok(()) | Err(ContentError::NotFound(_)) => stats.blobs_removed += 1,
                Err(e) => return Err(e.into()),
            }
        }
        // Remove unused image snapshots from the top of each chain down: a
        // snapshot with children (another image's layer, a container) stays.
        loop {
            let all = self.meta.all_snapshots()?;
            let parents: HashSet<(String, String)> = all.iter().map(|(ns, s)| (ns.clone(), s.parent.clone())).collect();
            let mut removed = 0;
            for (ns, s) in &all {
                let managed = s.labels.contains_key(LABEL_MANAGED) && s.kind == SnapshotKind::Committed;
                if managed && !chains.contains(&(ns.clone(), s.key.clone())) && !parents.contains(&(ns.clone(), s.key.clone())) {
                    match self.snapshots.remove(ns, &s.key) {
                        Ok(()) => removed += 1,
                        Err(SnapshotError::HasChildren { .. }) | Err(SnapshotError::Metadata(MetadataError::NotFound { .. })) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            stats.snapshots_removed += removed;
            if removed == 0 {
                break;
            }
        }
        if stats.blobs_removed + stats.snapshots_removed > 0 {
            tracing::info!(blobs = stats.blobs_removed, snapshots = stats.snapshots_removed, "garbage collected");
        }
        Ok(stats)
    }
}
