//! The one way blobs come into the store, whatever brings them (an archive
//! being imported, a registry being pulled from).
//!
//! An [`Ingest`] owns a lease for everything it stores. Each blob is
//! streamed once: written to the store (hashed as it goes, checked against
//! the size and digest the caller expects, published under the lease) and,
//! when it is a layer and the snapshotter can apply layers without their
//! parents, handed chunk by chunk to a thread that unpacks it into a
//! parentless snapshot at the same time ("unpack ahead"). That snapshot is
//! kept only when the blob verified; [`Ingest::unpack`] commits the ones an
//! image uses, in order, and the rest are removed when the ingest ends.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use super::unpack::{Compression, Prepared};
use super::Progress;
use super::{ImageError, Images, Lease, Resolved};
use crate::content::ContentError;
use crate::digest::Digest;

/// Whether a blob is a layer to unpack ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerHint {
    /// The descriptor says so.
    Layer,
    /// Unknown: it is one if its first bytes are gzip, zstd or a tar header.
    Sniff,
    NotLayer,
}

/// A blob to store.
pub struct Incoming<'r> {
    pub src: &'r mut dyn Read,
    /// The digest it must have, when known.
    pub digest: Option<&'r Digest>,
    /// The size it must have, when known.
    pub size: Option<u64>,
    pub layer: LayerHint,
    /// Report bytes as they move (a transfer over the network).
    pub report_bytes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The source failed (an upload stalled, a connection broke).
    #[error("reading: {0}")]
    Read(io::Error),
    /// The source had more bytes than the expected size.
    #[error("more than the expected {expected} bytes")]
    TooLong { expected: u64 },
    /// The source ended before the expected size.
    #[error("ends after {got} of its {expected} bytes")]
    Short { got: u64, expected: u64 },
    /// The store failed, or the blob is not the one expected (digest or size).
    #[error(transparent)]
    Store(#[from] ContentError),
}

/// What the writer tells a worker's collector: the digest of the blob, once
/// it is stored and verified, and whether the writer is done with it.
#[derive(Default)]
struct Slot {
    blob: Mutex<Option<Digest>>,
    written: AtomicBool,
}

type BlobSlot = Arc<Slot>;

/// Marks the slot written when the writer is done, however it ends.
struct Written(Option<BlobSlot>);

impl Drop for Written {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.written.store(true, Ordering::Release);
        }
    }
}

type Worker<'s> = (ScopedJoinHandle<'s, Option<(Digest, String)>>, BlobSlot);

/// Bytes copied at a time (the first chunk must hold a whole tar header to be recognized).
const CHUNK: usize = 1 << 20;
/// Chunks queued for an unpack-ahead thread before the writer waits for it.
const AHEAD_QUEUE: usize = 8;
/// Bytes between two progress reports of a transfer.
const REPORT_EVERY: u64 = 1 << 20;

pub struct Ingest<'s, 'a> {
    images: &'a Images,
    ns: &'a str,
    lease: Lease<'a>,
    progress: &'a (dyn Fn(Progress) + Sync),
    /// Unpacking ahead, when the snapshotter allows it and the caller wants it.
    ahead: Option<&'s Scope<'s, 'a>>,
    workers: Mutex<VecDeque<Worker<'s>>>,
    prepared: Mutex<Prepared>,
}

impl Images {
    /// Run `f` with an ingest into `ns`. What it stores is leased until `f`
    /// returns; layers are unpacked ahead when `unpack` is set and the
    /// snapshotter can. Snapshots unpacked ahead that no image used are
    /// removed at the end.
    pub(crate) fn ingest<R>(
        &self,
        ns: &str,
        unpack: bool,
        progress: &(dyn Fn(Progress) + Sync),
        f: impl FnOnce(&Ingest<'_, '_>) -> R,
    ) -> R {
        let ahead = unpack && self.snapshots.applies_layers_detached();
        std::thread::scope(|scope| {
            let ingest = Ingest {
                images: self,
                ns,
                lease: self.lease(),
                progress,
                ahead: ahead.then_some(scope),
                workers: Mutex::new(VecDeque::new()),
                prepared: Mutex::new(Prepared::new()),
            };
            let result = f(&ingest);
            ingest.collect_all();
            let unused = std::mem::take(&mut *ingest.prepared.lock().unwrap_or_else(|e| e.into_inner()));
            for (_, key) in unused.into_values() {
                let _ = self.snapshots.remove(ns, &key);
            }
            result
        })
    }
}

impl<'s, 'a> Ingest<'s, 'a> {
    /// The namespace the ingest unpacks into.
    pub fn namespace(&self) -> &str {
        self.ns
    }

    pub fn progress(&self, p: Progress) {
        (self.progress)(p)
    }

    /// Whether the store has `digest` (of `size` bytes, when given); if so
    /// it is kept for this ingest.
    pub fn have(&self, digest: &Digest, size: Option<u64>) -> bool {
        self.lease.publish().have(digest, size)
    }

    /// Store a small document (a manifest, an index), unless it is there.
    pub fn put(&self, digest: &Digest, data: &[u8]) -> Result<(), ContentError> {
        let publish = self.lease.publish();
        if !publish.have(digest, None) {
            let stored = publish.put(data)?;
            if stored != *digest {
                return Err(ContentError::DigestMismatch { expected: digest.clone(), actual: stored });
            }
        }
        Ok(())
    }

    /// Stream a blob into the store (and, for a layer, into a snapshot
    /// ahead); returns its digest and size once it is stored and verified.
    pub fn write(&self, b: Incoming<'_>) -> Result<(Digest, u64), IngestError> {
        let content = &self.images.content;
        if let Some(size) = b.size {
            content.ensure_space(size)?;
        }
        let mut w = content.writer(b.digest.cloned(), b.size)?;
        let mut buf = vec![0u8; CHUNK];
        let mut tx: Option<mpsc::SyncSender<Vec<u8>>> = None;
        let mut slot: Option<BlobSlot> = None;
        // (Declared after `tx`, so dropped before it: a collector that sees the
        // slot written waits at most for the channel to close.)
        let mut written = Written(None);
        let mut first = true;
        let mut reported = 0u64;
        loop {
            let n = fill(b.src, &mut buf).map_err(IngestError::Read)?;
            if n == 0 {
                break;
            }
            if std::mem::take(&mut first) && self.ahead.is_some() {
                let layer = match b.layer {
                    LayerHint::Layer => true,
                    LayerHint::Sniff => looks_like_layer(&buf[..n]),
                    LayerHint::NotLayer => false,
                };
                if layer {
                    let (t, s) = self.spawn_ahead();
                    (tx, slot) = (Some(t), Some(s));
                    written = Written(slot.clone());
                }
            }
            w.write_all(&buf[..n]).map_err(|e| match (e.kind(), b.size) {
                (io::ErrorKind::InvalidData, Some(expected)) => IngestError::TooLong { expected },
                _ => IngestError::Store(ContentError::Io { path: "blob being written".into(), source: e }),
            })?;
            // An unpacker that gave up (not a layer it can apply) is left behind.
            if tx.as_ref().is_some_and(|t| t.send(buf[..n].to_vec()).is_err()) {
                tx = None;
            }
            if b.report_bytes && w.written() >= reported + REPORT_EVERY {
                reported = w.written();
                if let Some(d) = b.digest {
                    self.progress(Progress::Bytes { digest: d.clone(), done: reported, total: b.size.unwrap_or(0) });
                }
            }
        }
        drop(tx);
        if let Some(expected) = b.size.filter(|&s| w.written() < s) {
            return Err(IngestError::Short { got: w.written(), expected });
        }
        let (digest, size) = self.lease.publish().commit(w)?;
        if let Some(slot) = &slot {
            *slot.blob.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest.clone());
        }
        drop(written);
        Ok((digest, size))
    }

    /// Wait for the layers being unpacked ahead; call it when every blob is
    /// written, before holding off collection for [`Ingest::unpack`].
    pub fn finish_writes(&self) {
        self.collect_all();
    }

    /// Unpack `r` for this namespace, using the layers unpacked ahead. The
    /// caller holds off collection ([`Images::hold_gc`]), after
    /// [`Ingest::finish_writes`].
    pub fn unpack(&self, r: &Resolved) -> Result<(), ImageError> {
        // (Nothing left to wait for when the caller finished the writes.)
        self.collect_all();
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        self.images.unpack_prepared(self.ns, r, &mut prepared, self.progress)
    }

    /// Start a thread that unpacks a layer while it is written; returns
    /// where to send its chunks and the slot for the blob's digest.
    fn spawn_ahead(&self) -> (mpsc::SyncSender<Vec<u8>>, BlobSlot) {
        let limit = self.images.limits.unpack_parallelism.clamp(1, 16);
        // Collect the workers that are done. While too many remain, wait for
        // the oldest whose blob is all written (it is only applying now);
        // never for one another writer still feeds: those are bounded by the
        // writers (a pull's fetch threads), and waiting for them would stall
        // this writer's own transfer.
        loop {
            let next = {
                let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
                let mut done = Vec::new();
                let mut i = 0;
                while i < workers.len() {
                    // (Only once its writer is done: the blob's digest is known then.)
                    if workers[i].0.is_finished() && workers[i].1.written.load(Ordering::Acquire) {
                        done.push(workers.remove(i).expect("an index in range"));
                    } else {
                        i += 1;
                    }
                }
                let next = if workers.len() + 1 > limit {
                    workers.iter().position(|(_, s)| s.written.load(Ordering::Acquire)).and_then(|i| workers.remove(i))
                } else {
                    None
                };
                drop(workers);
                for w in done {
                    self.collect(w);
                }
                next
            };
            match next {
                Some(w) => self.collect(w),
                None => break,
            }
        }
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(AHEAD_QUEUE);
        let slot = BlobSlot::default();
        let scope = self.ahead.expect("unpacking ahead");
        let (images, ns) = (self.images, self.ns);
        let handle = scope.spawn(move || images.unpack_ahead(ns, rx));
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).push_back((handle, slot.clone()));
        (tx, slot)
    }

    /// A worker's layer counts only if its blob was stored and verified.
    fn collect(&self, (handle, slot): Worker<'s>) {
        let Ok(Some((diff_id, key))) = handle.join() else { return };
        let blob = slot.blob.lock().ok().and_then(|s| s.clone());
        match blob {
            Some(blob) => {
                let dup = self.prepared.lock().unwrap_or_else(|e| e.into_inner()).insert(blob, (diff_id, key));
                if let Some((_, dup)) = dup {
                    let _ = self.images.snapshots.remove(self.ns, &dup);
                }
            }
            None => {
                let _ = self.images.snapshots.remove(self.ns, &key);
            }
        }
    }

    fn collect_all(&self) {
        loop {
            let next = self.workers.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            match next {
                Some(w) => self.collect(w),
                None => return,
            }
        }
    }
}

/// Read until `buf` is full or the source ends; returns the bytes read.
fn fill(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether a blob's first bytes look like a layer: gzip, zstd, or a tar header.
fn looks_like_layer(head: &[u8]) -> bool {
    Compression::detect(head) != Compression::None || head.get(257..262) == Some(b"ustar".as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_recognized_by_their_first_bytes() {
        assert!(looks_like_layer(&[0x1f, 0x8b, 8, 0]));
        assert!(looks_like_layer(&[0x28, 0xb5, 0x2f, 0xfd]));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(looks_like_layer(&tar));
        assert!(!looks_like_layer(br#"{"schemaVersion":2}"#));
    }

    #[test]
    fn fill_reads_until_full_or_the_end() {
        let data = vec![7u8; 3000];
        // A reader that gives at most 100 bytes a call.
        struct Trickle<'d>(&'d [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(100).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut src = Trickle(&data);
        let mut buf = vec![0u8; 1024];
        assert_eq!(fill(&mut src, &mut buf).unwrap(), 1024);
        assert_eq!(fill(&mut src, &mut buf).unwrap(), 1024);
        assert_eq!(fill(&mut src, &mut buf).unwrap(), 952);
        assert_eq!(fill(&mut src, &mut buf).unwrap(), 0);
    }
}
