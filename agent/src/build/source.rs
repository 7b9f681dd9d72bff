//! What a COPY reads from: the context's mirror, another stage's (or an
//! image's) filesystem mounted read-only, or the bodies of heredocs. Each
//! gives the entries a COPY may select and their data.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::context::{self, Entry, Kind, Mirror};
use super::copy::{clean_source, glob_match, CopyError};

/// Where a COPY's entries come from.
pub trait Source {
    /// Every entry that may be selected, by path relative to the source's root.
    fn entries(&self) -> &BTreeMap<String, Entry>;
    /// The data of regular file `path` (a key of [`Source::entries`]).
    fn open(&self, path: &str) -> std::io::Result<File>;
}

impl Source for Mirror {
    fn entries(&self) -> &BTreeMap<String, Entry> {
        Mirror::entries(self)
    }

    fn open(&self, path: &str) -> std::io::Result<File> {
        self.open_file(path).map_err(std::io::Error::other)
    }
}

/// A directory tree read in place (a mounted view of a stage, or a
/// directory of heredoc bodies): the entries under the sources asked for.
pub struct Tree {
    root: PathBuf,
    entries: BTreeMap<String, Entry>,
    /// (path as asked, path it resolved to inside the root), longest first.
    resolved: Vec<(String, String)>,
}

fn entry_of(meta: &std::fs::Metadata, link: String) -> Option<Entry> {
    let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    Entry::from_mode(meta.mode(), meta.len(), mtime, link)
}

fn io(path: &str, e: impl std::fmt::Display) -> CopyError {
    CopyError::Io(format!("{}: {e}", berth_common::text::printable(path)))
}

/// Where `path` leads inside the tree at `root` (links followed there,
/// never out of it), relative to the root; None when nothing is there.
pub fn resolve(root: &Path, path: &str) -> Result<Option<String>, CopyError> {
    let root = root.canonicalize().map_err(|e| io(&root.display().to_string(), e))?;
    let rootfd = rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io(&root.display().to_string(), e))?;
    resolve_at(&root, &rootfd, path)
}

/// [`resolve`] with the root (canonical) already open.
fn resolve_at(root: &Path, rootfd: &std::os::fd::OwnedFd, path: &str) -> Result<Option<String>, CopyError> {
    if path.is_empty() {
        return Ok(Some(String::new()));
    }
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let fd = match rustix::fs::openat2(rootfd, path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), resolve) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let real = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd))).map_err(|e| io(path, e))?;
    let rel = real.strip_prefix(root).map_err(|_| io(path, "resolved outside the tree"))?;
    Ok(Some(rel.to_string_lossy().into_owned()))
}

impl Tree {
    /// Scan what `sources` name in the tree at `root`. A source's own path
    /// is resolved inside the root (its links followed there, never out of
    /// it); what is below it is listed without following any link.
    /// A wildcard may stand in the last component.
    pub fn scan(root: &Path, sources: &[String]) -> Result<Tree, CopyError> {
        // Canonical: what a descriptor's path resolves to is compared with it.
        let root = &root.canonicalize().map_err(|e| io(&root.display().to_string(), e))?;
        let mut t = Tree { root: root.to_owned(), entries: BTreeMap::new(), resolved: Vec::new() };
        let rootfd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io(&root.display().to_string(), e))?;
        for src in sources {
            let clean = clean_source(src)?;
            let (parent, last) = clean.rsplit_once('/').unwrap_or(("", clean.as_str()));
            let names: Vec<String> = if last.contains(['*', '?', '[']) {
                let dir =
                    t.resolve(&rootfd, parent)?.ok_or_else(|| CopyError::NotFound(berth_common::text::printable(src).into_owned()))?;
                let mut found = Vec::new();
                for e in std::fs::read_dir(root.join(&dir)).map_err(|e| io(parent, e))?.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if glob_match(last, &name) {
                        found.push(if parent.is_empty() { name } else { format!("{parent}/{name}") });
                    }
                }
                found.sort();
                found
            } else {
                vec![clean.clone()]
            };
            for asked in names {
                let Some(real) = t.resolve(&rootfd, &asked)? else {
                    return Err(CopyError::NotFound(berth_common::text::printable(src).into_owned()));
                };
                t.add_tree(&asked, &real)?;
                t.resolved.push((asked, real));
            }
        }
        t.resolved.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
        Ok(t)
    }

    /// Where `path` leads inside the root (links followed there), relative; None if nothing is there.
    fn resolve(&self, rootfd: &std::os::fd::OwnedFd, path: &str) -> Result<Option<String>, CopyError> {
        resolve_at(&self.root, rootfd, path)
    }

    /// Add `real` (and what is below it, for a directory) under the name `asked`.
    fn add_tree(&mut self, asked: &str, real: &str) -> Result<(), CopyError> {
        let mut todo = vec![(asked.to_owned(), real.to_owned())];
        while let Some((a, r)) = todo.pop() {
            if self.entries.len() >= context::MAX_ENTRIES {
                return Err(io(asked, "more entries than a build may copy"));
            }
            let path = self.root.join(&r);
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&r, e))?;
            let link = if meta.file_type().is_symlink() {
                std::fs::read_link(&path).map_err(|e| io(&r, e))?.to_string_lossy().into_owned()
            } else {
                String::new()
            };
            // Devices, fifos and sockets are left out, as from a context.
            let Some(entry) = entry_of(&meta, link) else { continue };
            let is_dir = entry.kind == Kind::Dir;
            if !a.is_empty() {
                self.entries.insert(a.clone(), entry);
            }
            if is_dir {
                for e in std::fs::read_dir(&path).map_err(|e| io(&r, e))?.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let join = |p: &str| if p.is_empty() { name.clone() } else { format!("{p}/{name}") };
                    todo.push((join(&a), join(&r)));
                }
            }
        }
        Ok(())
    }

    /// Where the asked path `asked` resolved inside the root.
    pub fn resolved_path(&self, asked: &str) -> Option<String> {
        self.resolved.iter().find(|(a, _)| a == asked).map(|(_, r)| r.clone())
    }

    /// A tree of heredoc bodies: `files` (name, content) written into `dir`.
    pub fn of_files(dir: &Path, files: &[(String, String)]) -> Result<Tree, CopyError> {
        let mut names = Vec::new();
        for (name, content) in files {
            context::check_path(name).map_err(|e| CopyError::Io(e.to_string()))?;
            if name.contains('/') {
                return Err(io(name, "a heredoc's name cannot hold a /"));
            }
            std::fs::write(dir.join(name), content).map_err(|e| io(name, e))?;
            names.push(name.clone());
        }
        Tree::scan(dir, &names)
    }
}

impl Source for Tree {
    fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    fn open(&self, path: &str) -> std::io::Result<File> {
        let real = self
            .resolved
            .iter()
            .find_map(|(asked, real)| {
                let rest = path.strip_prefix(asked.as_str())?;
                match rest {
                    "" => Some(real.clone()),
                    r if r.starts_with('/') => Some(format!("{real}{r}")),
                    _ => None,
                }
            })
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, path.to_owned()))?;
        let rootfd = rustix::fs::open(&self.root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = rustix::fs::openat2(
            &rootfd,
            real.trim_start_matches('/'),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )?;
        Ok(File::from(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_follows_a_source_link_inside_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/tool"), b"tool").unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let t = Tree::scan(root, &["bin/tool".into()]).unwrap();
        assert_eq!(t.entries().keys().collect::<Vec<_>>(), ["bin/tool"]);
        let mut data = String::new();
        std::io::Read::read_to_string(&mut t.open("bin/tool").unwrap(), &mut data).unwrap();
        assert_eq!(data, "tool");
        // /etc in the tree is a link to the host's /etc: resolved inside the root, it is nothing.
        assert!(Tree::scan(root, &["etc/passwd".into()]).is_err());
        let t = Tree::scan(root, &["usr/bin/t*".into()]).unwrap();
        assert_eq!(t.entries().keys().collect::<Vec<_>>(), ["usr/bin/tool"]);
    }
}
