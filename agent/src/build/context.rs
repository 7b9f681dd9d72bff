//! Build contexts: the agent's mirror of a client's context directory.
//!
//! A client sends the metadata of its context (path, mode, size, mtime, link
//! target) and then only the files whose metadata the mirror does not have
//! already, so an unchanged rebuild moves no file at all. The mirror of one
//! context (named by the client's `context_key`) lives in
//! `<root>/build/contexts/<sha256 of the key>/`: `index.json` (every entry,
//! with each regular file's sha256) and `files/` (the regular files' data).
//!
//! Only directories the agent makes and regular files it writes are ever on
//! disk: symlinks and directories of the context exist only in the index.
//! Nothing a client sends can make the agent follow a link, and a file is
//! written through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::digest::Digest;

/// Most entries a context may have.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Longest path in a context, in bytes.
const MAX_PATH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("context entry {path:?}: {why}")]
    BadEntry { path: String, why: String },
    #[error("the context has more than {MAX_ENTRIES} entries")]
    TooMany,
    #[error("file {0:?} was not asked for, or was sent twice")]
    Unexpected(String),
    #[error("file {path:?} is {got} bytes, its metadata said {want}")]
    SizeMismatch { path: String, got: u64, want: u64 },
    #[error("files were asked for and not sent: {0}")]
    Missing(String),
    #[error("build context storage {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another build of this context held it for {} s", BUSY_WAIT.as_secs())]
    Busy,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io { path: path.to_owned(), source }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One entry of a context, as the client describes it (and the mirror keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    pub size: u64,
    pub mtime_nanos: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link: String,
    /// sha256 of a regular file's data, once the mirror has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

impl Entry {
    /// From an `st_mode` (file type and permissions), as the API carries it.
    pub fn from_mode(st_mode: u32, size: u64, mtime_nanos: i64, link: String) -> Option<Entry> {
        let kind = match st_mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            _ => return None,
        };
        let size = if kind == Kind::File { size } else { 0 };
        Some(Entry { kind, mode: st_mode & 0o7777, size, mtime_nanos, link, digest: None })
    }

    /// The same file, as far as the mirror can tell without its data.
    fn same_as(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.size == other.size
            && self.mtime_nanos == other.mtime_nanos
            && self.link == other.link
    }
}

/// A path of the context: relative, `/`-separated, with no empty, `.` or
/// `..` component and no NUL.
pub fn check_path(path: &str) -> Result<(), ContextError> {
    let bad = |why: &str| Err(ContextError::BadEntry { path: berth_common::text::printable(path).into_owned(), why: why.into() });
    if path.is_empty() || path.len() > MAX_PATH {
        return bad("empty or longer than 4096 bytes");
    }
    if path.contains('\0') {
        return bad("contains NUL");
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("not a clean relative path");
    }
    Ok(())
}

/// Longest a build waits for another build of the same context to let go of its mirror.
const BUSY_WAIT: Duration = Duration::from_secs(600);

/// Mirrors in use, by name.
type Busy = Arc<(Mutex<HashSet<String>>, Condvar)>;

/// The mirrors of every context, each used by one build at a time.
pub struct Contexts {
    dir: PathBuf,
    busy: Busy,
}

impl Contexts {
    /// Mirrors under `dir` (`<root>/build/contexts`).
    pub fn new(dir: PathBuf) -> Self {
        Contexts { dir, busy: Arc::default() }
    }

    /// The mirror of `key` (a fresh one, removed when dropped, if `key` is
    /// empty). Waits while another build uses the same mirror.
    pub fn open(&self, key: &str) -> Result<Mirror, ContextError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        crate::disk::spread_subdirs(&self.dir);
        let (name, temporary) = if key.is_empty() {
            (format!("tmp-{}", crate::content::random_hex(8)), true)
        } else {
            (hex::encode(sha2::Sha256::digest(key.as_bytes())), false)
        };
        {
            let (set, freed) = &*self.busy;
            let set = set.lock().unwrap_or_else(|e| e.into_inner());
            let (mut set, waited) = freed.wait_timeout_while(set, BUSY_WAIT, |s| s.contains(&name)).unwrap_or_else(|e| e.into_inner());
            if waited.timed_out() {
                return Err(ContextError::Busy);
            }
            set.insert(name.clone());
        }
        let held = Held { busy: self.busy.clone(), name: name.clone() };
        let dir = self.dir.join(&name);
        if !dir.is_dir() {
            // Made under a name of its own, then renamed: ext4 places a
            // new directory below a top directory by a hash of its name,
            // and a mirror made again under the same name would land in
            // the block group its pruned predecessor just emptied (see
            // `disk::spread_subdirs`).
            let fresh = self.dir.join(format!("{name}.new-{}", crate::content::random_hex(8)));
            fs::create_dir_all(fresh.join("files")).map_err(io(&fresh))?;
            if let Err(e) = fs::rename(&fresh, &dir) {
                let _ = fs::remove_dir_all(&fresh);
                return Err(ContextError::Io { path: dir, source: e });
            }
        }
        fs::create_dir_all(dir.join("files")).map_err(io(&dir))?;
        let index = match fs::read(dir.join("index.json")) {
            Ok(data) => serde_json::from_slice(&data).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        Ok(Mirror { dir, index, next: BTreeMap::new(), wanted: Vec::new(), temporary, _held: held, receiving: None, received: 0 })
    }

    /// Remove every mirror that no build uses; returns how many.
    pub fn prune(&self) -> Result<usize, ContextError> {
        let mut removed = 0;
        let Ok(entries) = fs::read_dir(&self.dir) else { return Ok(0) };
        let busy = self.busy.0.lock().unwrap_or_else(|e| e.into_inner());
        for e in entries.flatten() {
            // A mirror in use, or one being made for a build (`<name>.new-*`).
            let name = e.file_name().to_string_lossy().into_owned();
            if busy.contains(name.split('.').next().unwrap_or_default()) {
                continue;
            }
            fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// A mirror's name, marked in use until dropped.
struct Held {
    busy: Busy,
    name: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let (set, freed) = &*self.busy;
        set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
        freed.notify_all();
    }
}

/// A file being received.
struct Receiving {
    path: String,
    file: File,
    hasher: sha2::Sha256,
    written: u64,
}

/// One context's mirror, held by one build.
pub struct Mirror {
    dir: PathBuf,
    /// What the mirror holds (as of the last build).
    index: BTreeMap<String, Entry>,
    /// What this build's client described.
    next: BTreeMap<String, Entry>,
    /// Files asked for, in order, and not yet received.
    wanted: Vec<String>,
    temporary: bool,
    _held: Held,
    receiving: Option<Receiving>,
    /// Bytes of file data received.
    pub received: u64,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Mirror {
    /// Add entries the client described (ignored ones are dropped by the caller).
    pub fn describe(&mut self, path: String, entry: Entry) -> Result<(), ContextError> {
        check_path(&path)?;
        if self.next.len() >= MAX_ENTRIES {
            return Err(ContextError::TooMany);
        }
        self.next.insert(path, entry);
        Ok(())
    }

    /// Once every entry is described: the files whose data the mirror lacks,
    /// in the order the client is to send them. Entries whose parent is not
    /// a directory of the context are refused.
    pub fn plan(&mut self) -> Result<Vec<String>, ContextError> {
        for path in self.next.keys() {
            if let Some((parent, _)) = path.rsplit_once('/') {
                match self.next.get(parent) {
                    Some(e) if e.kind == Kind::Dir => {}
                    _ => {
                        return Err(ContextError::BadEntry {
                            path: berth_common::text::printable(path).into_owned(),
                            why: "its parent is not a directory of the context".into(),
                        })
                    }
                }
            }
        }
        let mut wanted = Vec::new();
        for (path, e) in self.next.iter_mut() {
            if e.kind != Kind::File {
                continue;
            }
            match self.index.get(path) {
                Some(old) if old.same_as(e) && old.digest.is_some() && self.dir.join("files").join(path).is_file() => {
                    e.digest = old.digest.clone();
                }
                _ => wanted.push(path.clone()),
            }
        }
        // Files of the old index that are gone or replaced.
        let files = self.dir.join("files");
        for (path, old) in &self.index {
            if old.kind == Kind::File && self.next.get(path).is_none_or(|e| e.kind != Kind::File) {
                let _ = fs::remove_file(files.join(path));
            }
        }
        // Until they have come whole, the files asked for are not in the
        // index on disk: a build interrupted while they arrive leaves no
        // half-written file that a later build would take as known.
        if !wanted.is_empty() && !self.temporary {
            let mut known = self.index.clone();
            for w in &wanted {
                known.remove(w);
            }
            self.write_index(&known)?;
        }
        self.wanted = wanted.iter().rev().cloned().collect();
        Ok(wanted)
    }

    /// Take the next chunk of the file being sent.
    pub fn receive(&mut self, path: &str, data: &[u8], eof: bool) -> Result<(), ContextError> {
        if self.receiving.as_ref().is_none_or(|r| r.path != path) {
            if self.receiving.is_some() || self.wanted.last().map(String::as_str) != Some(path) {
                return Err(ContextError::Unexpected(berth_common::text::printable(path).into_owned()));
            }
            self.wanted.pop();
            let file = self.create(path)?;
            self.receiving = Some(Receiving { path: path.to_owned(), file, hasher: sha2::Sha256::new(), written: 0 });
        }
        let want = self.next.get(path).map_or(0, |e| e.size);
        let files = self.dir.join("files");
        let r = self.receiving.as_mut().expect("set above");
        r.written += data.len() as u64;
        if r.written > want {
            return Err(ContextError::SizeMismatch { path: path.to_owned(), got: r.written, want });
        }
        r.file.write_all(data).map_err(io(&files))?;
        r.hasher.update(data);
        self.received += data.len() as u64;
        if eof {
            let r = self.receiving.take().expect("set above");
            if r.written != want {
                return Err(ContextError::SizeMismatch { path: path.to_owned(), got: r.written, want });
            }
            let digest = Digest::from_hex(&hex::encode(r.hasher.finalize())).expect("sha256 hex");
            if let Some(e) = self.next.get_mut(path) {
                e.digest = Some(digest);
            }
        }
        Ok(())
    }

    /// Create (truncating) the data file of `path`, its directories made as
    /// needed, never through a link.
    fn create(&self, path: &str) -> Result<File, ContextError> {
        let files = self.dir.join("files");
        let root = rustix::fs::open(&files, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| ContextError::Io { path: files.clone(), source: e.into() })?;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let mut dir = root;
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap_or(path);
        for part in parts {
            match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(ContextError::Io { path: files.join(path), source: e.into() }),
            }
            dir = rustix::fs::openat2(&dir, part, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), resolve)
                .map_err(|e| ContextError::Io { path: files.join(path), source: e.into() })?;
        }
        // A directory where the file goes (the context changed shape): replace it.
        if let Ok(st) = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                let _ = fs::remove_dir_all(files.join(path));
            }
        }
        let fd = rustix::fs::openat2(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            resolve,
        )
        .map_err(|e| ContextError::Io { path: files.join(path), source: e.into() })?;
        Ok(File::from(fd))
    }

    /// Once every file asked for has come: the new index is the mirror's.
    pub fn finish(&mut self) -> Result<(), ContextError> {
        if self.receiving.is_some() || !self.wanted.is_empty() {
            let mut missing: Vec<String> = self.wanted.iter().rev().take(3).cloned().collect();
            if let Some(r) = &self.receiving {
                missing.insert(0, r.path.clone());
            }
            return Err(ContextError::Missing(berth_common::text::printable(&missing.join(", ")).into_owned()));
        }
        self.index = std::mem::take(&mut self.next);
        if !self.temporary {
            self.write_index(&self.index)?;
        }
        Ok(())
    }

    /// Replace `index.json` (atomically).
    fn write_index(&self, index: &BTreeMap<String, Entry>) -> Result<(), ContextError> {
        let path = self.dir.join("index.json");
        let tmp = self.dir.join("index.json.tmp");
        let data = serde_json::to_vec(index).map_err(|e| ContextError::Io { path: path.clone(), source: e.into() })?;
        fs::write(&tmp, data).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// What the client described so far (before [`Mirror::finish`]).
    pub fn described(&self) -> &BTreeMap<String, Entry> {
        &self.next
    }

    /// Every entry of the context, by path.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.index
    }

    /// The data file of regular file `path` (opened without following links).
    pub fn open_file(&self, path: &str) -> Result<File, ContextError> {
        check_path(path)?;
        let files = self.dir.join("files");
        let root = rustix::fs::open(&files, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| ContextError::Io { path: files.clone(), source: e.into() })?;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = rustix::fs::openat2(&root, path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty(), resolve)
            .map_err(|e| ContextError::Io { path: files.join(path), source: e.into() })?;
        Ok(File::from(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, mtime: i64) -> Entry {
        Entry { kind: Kind::File, mode: 0o644, size, mtime_nanos: mtime, link: String::new(), digest: None }
    }

    fn dir() -> Entry {
        Entry { kind: Kind::Dir, mode: 0o755, size: 0, mtime_nanos: 0, link: String::new(), digest: None }
    }

    #[test]
    fn an_unchanged_context_asks_for_nothing_and_a_changed_file_only_for_it() {
        let tmp = tempfile::tempdir().unwrap();
        let contexts = Contexts::new(tmp.path().join("contexts"));
        let send = |m: &mut Mirror, files: &[(&str, &[u8], i64)]| -> Vec<String> {
            m.describe("d".into(), dir()).unwrap();
            for (p, data, mtime) in files {
                m.describe((*p).into(), file(data.len() as u64, *mtime)).unwrap();
            }
            let need = m.plan().unwrap();
            for p in &need {
                let data = files.iter().find(|f| f.0 == p).unwrap().1;
                m.receive(p, &data[..1], false).unwrap();
                m.receive(p, &data[1..], true).unwrap();
            }
            m.finish().unwrap();
            need
        };
        let mut m = contexts.open("host:/src").unwrap();
        assert_eq!(send(&mut m, &[("a", b"one", 1), ("d/b", b"two", 1)]), ["a", "d/b"]);
        drop(m);
        let mut m = contexts.open("host:/src").unwrap();
        assert!(send(&mut m, &[("a", b"one", 1), ("d/b", b"two", 1)]).is_empty());
        assert_eq!(m.entries()["a"].digest.as_ref().unwrap().to_string(), format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"one"))));
        drop(m);
        let mut m = contexts.open("host:/src").unwrap();
        assert_eq!(send(&mut m, &[("a", b"ONE", 2), ("d/b", b"two", 1)]), ["a"]);
        let mut data = String::new();
        std::io::Read::read_to_string(&mut m.open_file("a").unwrap(), &mut data).unwrap();
        assert_eq!(data, "ONE");
    }

    #[test]
    fn hostile_descriptions_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let contexts = Contexts::new(tmp.path().join("contexts"));
        let mut m = contexts.open("").unwrap();
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a/\0"] {
            assert!(m.describe(bad.into(), file(1, 0)).is_err(), "{bad:?}");
        }
        // A file under a symlink (or under nothing) is refused at plan time.
        m.describe("link".into(), Entry { kind: Kind::Symlink, link: "/etc".into(), ..dir() }).unwrap();
        m.describe("link/shadow".into(), file(1, 0)).unwrap();
        assert!(m.plan().is_err());
        let mut m = contexts.open("").unwrap();
        m.describe("a".into(), file(2, 0)).unwrap();
        assert_eq!(m.plan().unwrap(), ["a"]);
        // Not asked for; then too long; then short.
        assert!(m.receive("b", b"x", true).is_err());
        assert!(m.receive("a", b"xyz", true).is_err());
        let mut m = contexts.open("").unwrap();
        m.describe("a".into(), file(2, 0)).unwrap();
        m.plan().unwrap();
        assert!(m.receive("a", b"x", true).is_err());
        let mut m = contexts.open("").unwrap();
        m.describe("a".into(), file(2, 0)).unwrap();
        m.plan().unwrap();
        assert!(m.finish().is_err(), "a file asked for never came");
    }
}
