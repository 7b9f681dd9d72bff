//! The content store: blobs under `<root>/content/blobs/sha256/<hex>`.
//!
//! A blob is written to a private ingest file, hashed while it is written,
//! checked against the expected digest and size, fsynced, and only then
//! renamed into place. A rename is atomic, so a reader sees either the whole,
//! verified blob or nothing. Two writers of the same digest each write their
//! own ingest file; the second rename replaces identical bytes.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest::{Digest, Hasher};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("blob {digest} is larger than the limit of {limit} bytes")]
    TooLarge { digest: String, limit: u64 },
    #[error("content store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("not enough disk space for a blob of {needed} bytes: {available} bytes free in the content store")]
    NoSpace { needed: u64, available: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io { path: path.to_owned(), source }
}

/// What the store knows of a blob.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
    pub created: SystemTime,
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ContentError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// A file of the content store's scratch space; removed on drop.
pub struct Scratch {
    pub file: File,
    path: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Free space a blob write must leave on the content store's filesystem.
pub const RESERVED_SPACE: u64 = 64 << 20;

#[derive(Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Open (creating if needed) the store under `root` (`<root>/content`).
    /// Leftover ingest files of an interrupted write are removed. Directories
    /// are 0700 and blobs 0600, also those a release that made them readable
    /// left behind.
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let base = root.join("content");
        let blobs = base.join("blobs").join("sha256");
        let ingest = base.join("ingest");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        if ingest.exists() {
            fs::remove_dir_all(&ingest).map_err(io_err(&ingest))?;
        }
        fs::create_dir_all(&ingest).map_err(io_err(&ingest))?;
        for dir in [&base, &base.join("blobs"), &blobs, &ingest] {
            set_mode(dir, 0o700)?;
        }
        for entry in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let entry = entry.map_err(io_err(&blobs))?;
            let readable = entry.metadata().map(|m| m.permissions().mode() & 0o077 != 0).unwrap_or(false);
            if readable {
                set_mode(&entry.path(), 0o600)?;
            }
        }
        Ok(Self { blobs, ingest })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn info(&self, digest: &Digest) -> Result<BlobInfo, ContentError> {
        let path = self.path(digest);
        let meta = fs::metadata(&path).map_err(|e| not_found_or(digest, &path, e))?;
        Ok(BlobInfo { digest: digest.clone(), size: meta.len(), created: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH) })
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, ContentError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| not_found_or(digest, &path, e))
    }

    /// Read a whole blob, refusing one larger than `limit` (for JSON documents).
    pub fn read_all(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, ContentError> {
        let f = self.open_blob(digest)?;
        let path = self.path(digest);
        let len = f.metadata().map_err(io_err(&path))?.len();
        if len > limit {
            return Err(ContentError::TooLarge { digest: digest.to_string(), limit });
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(limit + 1).read_to_end(&mut buf).map_err(io_err(&path))?;
        Ok(buf)
    }

    /// Refuse to start a blob of `size` bytes that would leave less than
    /// [`RESERVED_SPACE`] free.
    pub fn ensure_space(&self, size: u64) -> Result<(), ContentError> {
        let st = rustix::fs::statvfs(&self.blobs).map_err(|e| ContentError::Io { path: self.blobs.clone(), source: e.into() })?;
        let available = st.f_bavail.saturating_mul(st.f_frsize);
        if available < size.saturating_add(RESERVED_SPACE) {
            return Err(ContentError::NoSpace { needed: size, available });
        }
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<BlobInfo>, ContentError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(io_err(&self.blobs))? {
            let entry = entry.map_err(io_err(&self.blobs))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let Ok(digest) = Digest::from_hex(&name) else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            out.push(BlobInfo { digest, size: meta.len(), created: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH) });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let path = self.path(digest);
        fs::remove_file(&path).map_err(|e| not_found_or(digest, &path, e))
    }

    /// A scratch file in the ingest directory (0600): removed when dropped,
    /// and at the next start if the agent dies first.
    pub fn scratch(&self) -> Result<Scratch, ContentError> {
        let path = self.ingest.join(format!("scratch-{}-{}", std::process::id(), random_hex(8)));
        let file = fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path).map_err(io_err(&path))?;
        Ok(Scratch { file, path })
    }

    /// Start writing a blob. `expected` digest and size, when known, are
    /// checked at commit; an expected size is also enforced while writing.
    pub fn writer(&self, expected: Option<Digest>, expected_size: Option<u64>) -> Result<BlobWriter, ContentError> {
        let name = format!("{}-{}", std::process::id(), random_hex(8));
        let path = self.ingest.join(name);
        let file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io_err(&path))?;
        Ok(BlobWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            hasher: Hasher::default(),
            path,
            blobs: self.blobs.clone(),
            expected,
            expected_size,
            published: false,
        })
    }

    /// Store a small in-memory blob (manifests, configs) and return its digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest, ContentError> {
        let digest = Digest::of(data);
        if self.exists(&digest) {
            return Ok(digest);
        }
        let mut w = self.writer(Some(digest.clone()), Some(data.len() as u64))?;
        w.write_all(data).map_err(|source| ContentError::Io { path: w.path.clone(), source })?;
        w.commit()?;
        Ok(digest)
    }
}

fn not_found_or(digest: &Digest, path: &Path, e: io::Error) -> ContentError {
    if e.kind() == io::ErrorKind::NotFound {
        ContentError::NotFound(digest.clone())
    } else {
        ContentError::Io { path: path.to_owned(), source: e }
    }
}

/// Random lowercase hex of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let mut filled = 0;
    while filled < bytes {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => {
                // getrandom(2) cannot fail on Linux >= 3.17 once seeded; fall back to the clock.
                let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                let mixed = t.as_nanos().to_le_bytes();
                for (i, b) in buf.iter_mut().enumerate().skip(filled) {
                    *b = mixed[i % mixed.len()];
                }
                filled = bytes;
            }
        }
    }
    hex::encode(buf)
}

/// An in-progress blob write. Dropped without `commit`, it leaves nothing.
pub struct BlobWriter {
    out: Option<BufWriter<File>>,
    hasher: Hasher,
    path: PathBuf,
    blobs: PathBuf,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    /// Set once the blob is renamed into place; until then Drop removes the ingest file.
    published: bool,
}

impl BlobWriter {
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }

    /// Verify, fsync and publish the blob. Returns its digest and size.
    pub fn commit(self) -> Result<(Digest, u64), ContentError> {
        self.finish(false)
    }

    /// [`BlobWriter::commit`], flushing the whole filesystem of the store
    /// (`syncfs`) instead of the blob alone: one flush for the blob and
    /// whatever else was written there with it (a build's snapshot, whose
    /// changes the blob is).
    pub fn commit_syncing_fs(self) -> Result<(Digest, u64), ContentError> {
        self.finish(true)
    }

    fn finish(mut self, whole_fs: bool) -> Result<(Digest, u64), ContentError> {
        let Some(out) = self.out.take() else {
            return Err(ContentError::Io { path: self.path.clone(), source: io::Error::other("blob writer already finished") });
        };
        let hasher = std::mem::take(&mut self.hasher);
        let size = hasher.len();
        let actual = hasher.finish();
        if let Some(expected) = &self.expected {
            if *expected != actual {
                return Err(ContentError::DigestMismatch { expected: expected.clone(), actual });
            }
        }
        if let Some(expected) = self.expected_size {
            if expected != size {
                return Err(ContentError::SizeMismatch { digest: actual.to_string(), expected, actual: size });
            }
        }
        let file = out.into_inner().map_err(|e| ContentError::Io { path: self.path.clone(), source: e.into_error() })?;
        if whole_fs {
            rustix::fs::syncfs(&file).map_err(|e| ContentError::Io { path: self.path.clone(), source: e.into() })?;
        } else {
            file.sync_all().map_err(io_err(&self.path))?;
        }
        drop(file);
        let target = self.blobs.join(actual.hex());
        fs::rename(&self.path, &target).map_err(io_err(&target))?;
        self.published = true;
        sync_dir(&self.blobs).map_err(io_err(&self.blobs))?;
        Ok((actual, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.expected_size {
            if self.hasher.len() + buf.len() as u64 > limit {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("blob is larger than its declared size of {limit} bytes")));
            }
        }
        let out = self.out.as_mut().ok_or_else(|| io::Error::other("blob writer finished"))?;
        let n = out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// fsync a directory so that a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_blob_becomes_visible_and_a_bad_one_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let good = Digest::of(b"hello");
        let mut w = store.writer(Some(good.clone()), Some(5)).unwrap();
        w.write_all(b"hello").unwrap();
        assert_eq!(w.commit().unwrap().0, good);
        assert!(store.exists(&good));

        let mut w = store.writer(Some(Digest::of(b"other")), None).unwrap();
        w.write_all(b"hello!").unwrap();
        assert!(matches!(w.commit(), Err(ContentError::DigestMismatch { .. })));
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(tmp.path().join("content/ingest")).unwrap().count(), 0);
    }

    #[test]
    fn a_write_past_the_declared_size_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let mut w = store.writer(None, Some(3)).unwrap();
        assert!(w.write_all(b"four").is_err());
        drop(w);
        assert_eq!(fs::read_dir(tmp.path().join("content/ingest")).unwrap().count(), 0);
    }

    #[test]
    fn concurrent_writers_of_the_same_blob_both_succeed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(ContentStore::open(tmp.path()).unwrap());
        let data = vec![7u8; 3 << 20];
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                let data = data.clone();
                std::thread::spawn(move || {
                    let mut w = store.writer(Some(Digest::of(&data)), Some(data.len() as u64)).unwrap();
                    for chunk in data.chunks(4096) {
                        w.write_all(chunk).unwrap();
                    }
                    w.commit().unwrap()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let d = Digest::of(&data);
        assert_eq!(fs::read(store.path(&d)).unwrap(), data);
    }
}
