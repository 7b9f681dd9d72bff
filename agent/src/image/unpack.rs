//! Unpacking an image's layers into committed snapshots keyed by chain id.
//!
//! Each layer is decompressed, hashed (its diff id) and applied in a single
//! pass over its bytes. With overlayfs a layer does not need its parent's
//! files, so missing layers are unpacked in parallel and committed in order;
//! with the native snapshotter each layer is applied on a copy of its parent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use super::oci::Descriptor;
use super::Progress;
use super::{ImageError, Images, Resolved};
use crate::content::random_hex;
use crate::digest::{ChunkReader, Digest, HashingReader, LimitedReader};
use crate::metadata::{MetadataError, SnapshotKind};
use crate::snapshot::{ApplyLayerError, SnapshotError, LABEL_MANAGED, LABEL_UNPACKING};

/// Layers unpacked ahead: blob digest → (diff id, parentless snapshot key).
pub(crate) type Prepared = std::collections::HashMap<Digest, (Digest, String)>;

/// Compression of a layer, told by its first bytes (media types lie more often than magic numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wrap `r` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br.fill_buf()?;
    Ok(match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(br)?),
        Compression::None => Box::new(br),
    })
}

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_MANAGED.to_owned(), "image".to_owned())])
}

fn unpacking_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_UNPACKING.to_owned(), "1".to_owned())])
}

impl Images {
    /// Decompress, hash and apply one layer blob into the active snapshot
    /// `key`; check its diff id. Returns the uncompressed size.
    fn extract(&self, ns: &str, key: &str, layer: &Descriptor, diff_id: &Digest) -> Result<u64, ImageError> {
        let unpack_err = |message: String| ImageError::Unpack { layer: layer.digest.clone(), message };
        let file = self.content.open_blob(&layer.digest)?;
        let plain = decompress(file).map_err(|e| unpack_err(format!("decompressing: {e}")))?;
        let limited = LimitedReader::new(plain, self.limits.max_layer_bytes, "uncompressed layer");
        let mut hashing = HashingReader::new(limited);
        self.snapshots.apply_layer(ns, key, &mut hashing, self.limits.max_layer_entries).map_err(|e| match e {
            ApplyLayerError::Apply(source) => ImageError::Apply { layer: layer.digest.clone(), source },
            ApplyLayerError::Snapshot(e) => e.into(),
        })?;
        // The diff id covers the whole uncompressed stream, padding included.
        let (actual, size) = hashing.finish().map_err(|e| unpack_err(format!("reading: {e}")))?;
        if actual != *diff_id {
            return Err(ImageError::DiffIdMismatch { layer: layer.digest.clone(), expected: diff_id.clone(), actual });
        }
        Ok(size)
    }

    /// Unpack a blob that looks like a layer while it is being stored:
    /// decompress, hash and apply the chunks received into a new parentless
    /// snapshot. Returns the diff id and the snapshot's key, or None when the
    /// blob was not a layer we could apply (it is then unpacked, or refused,
    /// the ordinary way if an image needs it).
    pub(crate) fn unpack_ahead(&self, ns: &str, rx: mpsc::Receiver<Vec<u8>>) -> Option<(Digest, String)> {
        let key = format!("unpack-{}-ahead", random_hex(8));
        self.snapshots.prepare_record(ns, &key, "", unpacking_labels()).ok()?;
        // A closed channel is the end of the blob (or of an import that stopped).
        let reader = ChunkReader::new(rx.into_iter().map(Ok));
        let result = (|| -> Result<Digest, String> {
            let plain = decompress(reader).map_err(|e| e.to_string())?;
            let limited = LimitedReader::new(plain, self.limits.max_layer_bytes, "uncompressed layer");
            let mut hashing = HashingReader::new(limited);
            self.snapshots.apply_layer(ns, &key, &mut hashing, self.limits.max_layer_entries).map_err(|e| e.to_string())?;
            let (diff_id, _) = hashing.finish().map_err(|e| e.to_string())?;
            Ok(diff_id)
        })();
        match result {
            Ok(diff_id) => Some((diff_id, key)),
            Err(e) => {
                tracing::debug!(error = %e, "blob not unpacked ahead");
                let _ = self.snapshots.remove(ns, &key);
                None
            }
        }
    }

    /// Unpack every layer of `r` that `ns` does not have yet. The caller
    /// holds off collection ([`Images::hold_gc`]).
    pub fn unpack(&self, ns: &str, r: &Resolved, progress: &(dyn Fn(Progress) + Sync)) -> Result<(), ImageError> {
        self.unpack_prepared(ns, r, &mut Prepared::new(), progress)
    }

    /// [`Images::unpack`], using layers already unpacked ahead (blob digest →
    /// diff id and parentless active snapshot); a layer is used only when both
    /// its blob and its diff id match. Those used are taken out of `prepared`.
    pub(crate) fn unpack_prepared(
        &self,
        ns: &str,
        r: &Resolved,
        prepared: &mut Prepared,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<(), ImageError> {
        let layers = &r.manifest.layers;
        let diff_ids = &r.config.rootfs.diff_ids;
        let chains = &r.chain_ids;
        let have = |i: usize| matches!(self.snapshots.stat(ns, chains[i].as_str()), Ok(s) if s.kind == SnapshotKind::Committed);
        let missing: Vec<usize> = (0..layers.len()).filter(|&i| !have(i)).collect();
        for i in (0..layers.len()).filter(|i| !missing.contains(i)) {
            progress(Progress::Layer { digest: layers[i].digest.clone(), size: layers[i].size, status: "exists" });
        }
        if missing.is_empty() {
            return Ok(());
        }
        let parent_of = |i: usize| if i == 0 { String::new() } else { chains[i - 1].to_string() };
        if self.snapshots.applies_layers_detached() {
            // Layers unpacked ahead, while the archive was read, are ready.
            let mut ready = Vec::new();
            let mut to_extract = Vec::new();
            for &i in &missing {
                let matches = prepared.get(&layers[i].digest).is_some_and(|(diff, _)| *diff == diff_ids[i]);
                match matches.then(|| prepared.remove(&layers[i].digest)).flatten() {
                    Some((_, key)) => {
                        progress(Progress::Layer { digest: layers[i].digest.clone(), size: layers[i].size, status: "unpacked" });
                        ready.push((i, key));
                    }
                    None => to_extract.push(i),
                }
            }
            let missing = to_extract;
            // Phase 1: extract the rest in parallel into parentless active snapshots.
            let keys: Mutex<Vec<(usize, String)>> = Mutex::new(ready);
            let next = AtomicUsize::new(0);
            let first_err: Mutex<Option<ImageError>> = Mutex::new(None);
            let workers = self.limits.unpack_parallelism.clamp(1, 16).min(missing.len());
            // (zero workers when every layer was unpacked ahead)
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(|| loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= missing.len() || first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
                            break;
                        }
                        let i = missing[n];
                        let key = format!("unpack-{}-{}", random_hex(6), chains[i]);
                        let res =
                            self.snapshots.prepare_record(ns, &key, "", unpacking_labels()).map_err(ImageError::from).and_then(|_| {
                                if let Ok(mut k) = keys.lock() {
                                    k.push((i, key.clone()));
                                }
                                self.extract(ns, &key, &layers[i], &diff_ids[i])
                            });
                        match res {
                            Ok(size) => progress(Progress::Layer { digest: layers[i].digest.clone(), size, status: "unpacked" }),
                            Err(e) => {
                                if let Ok(mut slot) = first_err.lock() {
                                    slot.get_or_insert(e);
                                }
                                break;
                            }
                        }
                    });
                }
            });
            let mut keys = keys.into_inner().unwrap_or_default();
            keys.sort();
            let err = first_err.into_inner().unwrap_or(None);
            let result = match err {
                Some(e) => Err(e),
                // Phase 2: commit in layer order, each on its parent.
                None => keys.iter().try_for_each(|(i, key)| self.commit_layer(ns, chains[*i].as_str(), key, &parent_of(*i))),
            };
            if result.is_err() {
                for (_, key) in &keys {
                    let _ = self.snapshots.remove(ns, key);
                }
            }
            result
        } else {
            for &i in &missing {
                let key = format!("unpack-{}-{}", random_hex(6), chains[i]);
                self.snapshots.prepare_record(ns, &key, &parent_of(i), unpacking_labels())?;
                let res = self.extract(ns, &key, &layers[i], &diff_ids[i]).and_then(|size| {
                    progress(Progress::Layer { digest: layers[i].digest.clone(), size, status: "unpacked" });
                    self.commit_layer(ns, chains[i].as_str(), &key, &parent_of(i))
                });
                if let Err(e) = res {
                    let _ = self.snapshots.remove(ns, &key);
                    return Err(e);
                }
            }
            Ok(())
        }
    }

    /// Commit an unpacked layer under its chain id. If another unpack got
    /// there first, ours is dropped and theirs kept: same content, same key.
    fn commit_layer(&self, ns: &str, chain: &str, key: &str, parent: &str) -> Result<(), ImageError> {
        match self.snapshots.commit_with_parent(ns, chain, key, parent, managed_labels()) {
            Ok(()) => Ok(()),
            Err(SnapshotError::Metadata(MetadataError::AlreadyExists { .. })) => {
                self.snapshots.remove(ns, key)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
