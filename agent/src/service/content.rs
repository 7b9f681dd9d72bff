//! Content: the blobs of the store, read, labelled and removed.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::Core;
use super::{blocking, validate_labels, Error};
use crate::digest::Digest;

/// A blob, its labels, and the images of a namespace that use it.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub created: SystemTime,
    pub labels: BTreeMap<String, String>,
    pub referenced_by: Vec<String>,
}

/// A piece of a blob read.
#[derive(Debug)]
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

const READ_CHUNK: usize = 1 << 20;
/// How long a chunk waits for a client that stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct ContentService {
    core: Arc<Core>,
}

fn blob_info(core: &Core, ns: &str, d: &Digest) -> Result<BlobInfo, Error> {
    let info = core.content.info(d)?;
    Ok(BlobInfo {
        digest: info.digest,
        size: info.size,
        created: info.created,
        labels: core.meta.content_labels(d)?,
        referenced_by: core.images.referenced_by(ns, d)?,
    })
}

impl ContentService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        ContentService { core }
    }

    pub async fn info(&self, ns: &str, digest: Digest) -> Result<BlobInfo, Error> {
        let (core, ns) = (self.core.clone(), ns.to_owned());
        blocking(move || blob_info(&core, &ns, &digest)).await
    }

    /// Every blob, with its labels (not who uses it: that walks every image).
    pub async fn list(&self) -> Result<Vec<BlobInfo>, Error> {
        let core = self.core.clone();
        blocking(move || {
            Ok(core
                .content
                .list()?
                .into_iter()
                .map(|b| BlobInfo {
                    labels: core.meta.content_labels(&b.digest).unwrap_or_default(),
                    digest: b.digest,
                    size: b.size,
                    created: b.created,
                    referenced_by: Vec::new(),
                })
                .collect())
        })
        .await
    }

    /// Read `size` bytes (0: to the end) from `offset`, in chunks.
    pub async fn read(&self, digest: Digest, offset: u64, size: u64) -> Result<mpsc::Receiver<Result<Chunk, Error>>, Error> {
        let core = self.core.clone();
        let mut file = blocking(move || {
            let f = core.content.open_blob(&digest)?;
            let len = f.metadata().map_err(|e| Error::Internal(e.to_string()))?.len();
            if offset > len {
                return Err(Error::OutOfRange(format!("offset {offset} is past the end of {digest} ({len} bytes)")));
            }
            Ok(f)
        })
        .await?;
        let (tx, rx) = mpsc::channel(4);
        let handle = tokio::runtime::Handle::current();
        // A client that stops reading releases this thread after SEND_TIMEOUT.
        let send = move |msg| handle.block_on(tokio::time::timeout(SEND_TIMEOUT, tx.send(msg))).ok().and_then(|r| r.ok()).is_some();
        tokio::task::spawn_blocking(move || {
            let mut offset = offset;
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                send(Err(Error::Internal(e.to_string())));
                return;
            }
            let mut remaining = if size == 0 { u64::MAX } else { size };
            let mut buf = vec![0u8; READ_CHUNK];
            while remaining > 0 {
                let want = remaining.min(READ_CHUNK as u64) as usize;
                match file.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => {
                        if !send(Ok(Chunk { offset, data: buf[..n].to_vec() })) {
                            return;
                        }
                        offset += n as u64;
                        remaining -= n as u64;
                    }
                    Err(e) => {
                        send(Err(Error::Internal(e.to_string())));
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Remove a blob; one an image uses only with `force`.
    pub async fn delete(&self, digest: Digest, force: bool) -> Result<(), Error> {
        let core = self.core.clone();
        blocking(move || Ok(core.images.delete_blob(&digest, force)?)).await
    }

    pub async fn update_labels(&self, ns: &str, digest: Digest, labels: BTreeMap<String, String>) -> Result<BlobInfo, Error> {
        validate_labels(&labels)?;
        let (core, ns) = (self.core.clone(), ns.to_owned());
        blocking(move || {
            // Read back under the same hold: a collection cannot come between.
            let hold = core.images.hold_gc();
            core.images.set_blob_labels(&hold, &digest, &labels)?;
            blob_info(&core, &ns, &digest)
        })
        .await
    }
}
