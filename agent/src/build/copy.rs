//! COPY and ADD from the context: which entries a step copies (sources
//! matched against the context's entries, as Docker matches them), where
//! each lands, and the layer tar that carries them. The tar is applied to
//! the stage's filesystem by the one layer applier (`archive::apply`).

use std::collections::BTreeMap;
use std::io::Write;

use super::context::{Entry, Kind};
use crate::archive::diff::DiffError;
use crate::archive::write::{Attrs, Described, LayerWriter};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0:?} is outside the build context")]
    Outside(String),
    #[error("{0:?} is not in the build context (or is excluded by .dockerignore)")]
    NotFound(String),
    #[error("with more than one source, the destination must be a directory and end with a /")]
    DestNotDir,
    #[error(transparent)]
    Write(#[from] DiffError),
    #[error("{0}")]
    Io(String),
}

/// One entry to copy: its path in the context and its path in the image
/// (relative to `/`, no leading slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub source: String,
    pub dest: String,
}

/// Clean a source path as Docker does for the context: relative to its
/// root, `.` and empty parts dropped, `..` refused when it would leave it.
/// The root itself is "".
pub fn clean_source(src: &str) -> Result<String, CopyError> {
    let mut parts: Vec<&str> = Vec::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(CopyError::Outside(berth_common::text::printable(src).into_owned()));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Clean an absolute image path (relative ones are joined to `workdir`):
/// the result has no leading slash ("" is `/`). `..` stops at the root.
pub fn clean_dest(dest: &str, workdir: &str) -> String {
    let joined = if dest.starts_with('/') { dest.to_owned() } else { format!("{workdir}/{dest}") };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// `name` matches `pattern` (`*`, `?`, `[...]`, `\\` escapes; none crosses `/`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed including ']').
        let mut i = 0;
        let negate = p.first() == Some(&'^');
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == '\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            let mut hi = lo;
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                hi = p[i + 2];
                if hi == '\\' {
                    hi = *p.get(i + 3)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 1;
        }
        None
    }
    fn go(p: &[char], n: &[char], budget: &mut u32) -> bool {
        *budget = budget.saturating_sub(1);
        if *budget == 0 {
            return false;
        }
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).take_while(|i| *i == 0 || n[i - 1] != '/').any(|i| go(&p[1..], &n[i..], budget)),
            Some('?') => n.first().is_some_and(|c| *c != '/') && go(&p[1..], &n[1..], budget),
            Some('[') => match (n.first(), class(&p[1..], n.first().copied().unwrap_or('\0'))) {
                (Some(c), Some((true, len))) if *c != '/' => go(&p[1 + len..], &n[1..], budget),
                _ => false,
            },
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..], budget),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..], budget),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n, &mut 100_000)
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// What `sources` copy to `dest` (cleaned, relative to `/`), as Docker's
/// COPY: a directory source copies its contents, a file goes to `dest` or,
/// when `dest` is a directory (ends with `/`, or `dest_is_dir`), into it.
/// Wildcards match entries of the context; symlinks are copied as links.
pub fn select(
    entries: &BTreeMap<String, Entry>,
    sources: &[String],
    dest: &str,
    dest_slash: bool,
    dest_is_dir: bool,
) -> Result<Vec<Item>, CopyError> {
    select_with(entries, sources, dest, dest_slash, dest_is_dir, &Rules::default())
}

/// COPY's `--parents` and `--exclude`.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Keep each source's path under the destination (`COPY --parents a/b/f /d/` makes `/d/a/b/f`).
    pub parents: bool,
    /// Entries left out (matched by their path in the context or below the
    /// source directory), with `.dockerignore`'s pattern rules.
    pub excludes: berth_common::ignore::Patterns,
}

/// [`select`], with `--parents` and `--exclude`.
pub fn select_with(
    entries: &BTreeMap<String, Entry>,
    sources: &[String],
    dest: &str,
    dest_slash: bool,
    dest_is_dir: bool,
    rules: &Rules,
) -> Result<Vec<Item>, CopyError> {
    let mut matched: Vec<String> = Vec::new();
    for src in sources {
        let clean = clean_source(src)?;
        if has_wildcard(&clean) {
            let depth = clean.split('/').count();
            let found: Vec<&String> = entries.keys().filter(|p| p.split('/').count() == depth && glob_match(&clean, p)).collect();
            if found.is_empty() {
                return Err(CopyError::NotFound(berth_common::text::printable(src).into_owned()));
            }
            matched.extend(found.into_iter().cloned());
        } else if clean.is_empty() || entries.contains_key(&clean) {
            matched.push(clean);
        } else {
            return Err(CopyError::NotFound(berth_common::text::printable(src).into_owned()));
        }
    }
    matched.retain(|m| m.is_empty() || !rules.excludes.matches(m));
    let into_dir = dest_slash || dest_is_dir || matched.len() > 1 || rules.parents;
    if matched.len() > 1 && !(dest_slash || dest_is_dir || rules.parents) {
        return Err(CopyError::DestNotDir);
    }
    let join = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_owned()
        } else if b.is_empty() {
            a.to_owned()
        } else {
            format!("{a}/{b}")
        }
    };
    let mut items = Vec::new();
    for src in matched {
        let is_dir = src.is_empty() || entries.get(&src).is_some_and(|e| e.kind == Kind::Dir);
        if is_dir {
            // The directory's contents (not itself) go under dest (under dest/src with --parents).
            let under = if rules.parents { join(dest, &src) } else { dest.to_owned() };
            let prefix = if src.is_empty() { String::new() } else { format!("{src}/") };
            items.push(Item { source: src.clone(), dest: under.clone() });
            for (path, _) in entries.range(prefix.clone()..) {
                let Some(rest) = path.strip_prefix(&prefix) else { break };
                // A pattern matches the path in the context, or below the source (BuildKit's reading).
                if !rules.excludes.matches(path) && !rules.excludes.matches(rest) {
                    items.push(Item { source: path.clone(), dest: join(&under, rest) });
                }
            }
        } else {
            let base = src.rsplit('/').next().unwrap_or(&src);
            let to = if rules.parents {
                join(dest, &src)
            } else if into_dir {
                join(dest, base)
            } else {
                dest.to_owned()
            };
            items.push(Item { source: src.clone(), dest: to });
        }
    }
    Ok(items)
}

/// How copied entries are owned and their permissions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    /// `--chmod`: replaces the permission bits of every entry copied.
    pub chmod: Option<u32>,
}

/// How [`write_tar`] writes a COPY's entries.
pub struct TarPlan<'a> {
    /// Parents of the destination the image lacks, written first as 0755 root directories.
    pub missing_parents: &'a [String],
    /// Destinations to leave out (the destination directory when it exists).
    pub skip: &'a dyn Fn(&str) -> bool,
    pub own: Ownership,
    /// Latest mtime written (SOURCE_DATE_EPOCH), in seconds.
    pub mtime_clamp: Option<i64>,
    /// Opens a context file's data.
    pub open: &'a dyn Fn(&str) -> std::io::Result<std::fs::File>,
}

/// Write the layer tar of `items` to `out`, each with the context's mode
/// and mtime and the plan's owner. Returns the number of entries.
pub fn write_tar(entries: &BTreeMap<String, Entry>, items: &[Item], plan: &TarPlan<'_>, out: impl Write) -> Result<u64, CopyError> {
    let TarPlan { missing_parents, skip, own, mtime_clamp, open } = *plan;
    let mut w = LayerWriter::new(out, std::path::Path::new("/"));
    let clamp = |t: i64| mtime_clamp.map_or(t, |c| t.min(c));
    for p in missing_parents {
        let attrs = Attrs { mode: 0o755, uid: 0, gid: 0, mtime: clamp(0) };
        w.described(p.as_bytes(), Described::Dir, attrs)?;
    }
    for item in items {
        if item.dest.is_empty() || skip(&item.dest) {
            continue;
        }
        let e = match entries.get(&item.source) {
            Some(e) => e.clone(),
            // The context's root.
            None => Entry { kind: Kind::Dir, mode: 0o755, size: 0, mtime_nanos: 0, link: String::new(), digest: None },
        };
        let mode = match (own.chmod, e.kind) {
            (Some(m), Kind::File | Kind::Dir) => m,
            _ => e.mode,
        };
        let attrs = Attrs { mode, uid: own.uid, gid: own.gid, mtime: clamp(e.mtime_nanos.div_euclid(1_000_000_000)) };
        let rel = item.dest.as_bytes();
        match e.kind {
            Kind::Dir => w.described(rel, Described::Dir, attrs)?,
            Kind::Symlink => w.described(rel, Described::Symlink(e.link.as_bytes()), attrs)?,
            Kind::File => {
                let f = open(&item.source).map_err(|err| CopyError::Io(format!("{}: {err}", item.source)))?;
                w.described(rel, Described::File(f, e.size), attrs)?
            }
        }
    }
    Ok(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(&str, Kind)]) -> BTreeMap<String, Entry> {
        list.iter()
            .map(|(p, k)| ((*p).to_owned(), Entry { kind: *k, mode: 0o644, size: 0, mtime_nanos: 0, link: String::new(), digest: None }))
            .collect()
    }

    #[test]
    fn sources_are_cleaned_and_never_leave_the_context() {
        assert_eq!(clean_source("./a/b/").unwrap(), "a/b");
        assert_eq!(clean_source("/a/../b").unwrap(), "b");
        assert_eq!(clean_source(".").unwrap(), "");
        assert!(matches!(clean_source("../x"), Err(CopyError::Outside(_))));
        assert!(matches!(clean_source("a/../../etc/shadow"), Err(CopyError::Outside(_))));
        assert_eq!(clean_dest("app/", "/srv"), "srv/app");
        assert_eq!(clean_dest("/../x", "/"), "x");
        assert_eq!(clean_dest(".", "/"), "");
    }

    #[test]
    fn globs_match_one_component_each() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("d/*.txt", "d/a.txt"));
        assert!(glob_match("file?", "file1"));
        assert!(glob_match("[a-c]x", "bx") && !glob_match("[a-c]x", "dx"));
        assert!(glob_match("[^a]x", "bx") && !glob_match("[^a]x", "ax"));
        assert!(glob_match("\\*", "*") && !glob_match("\\*", "a"));
        assert!(!glob_match("[", "["));
    }

    #[test]
    fn files_and_directories_land_as_docker_puts_them() {
        let e = entries(&[("a", Kind::File), ("d", Kind::Dir), ("d/x", Kind::File), ("d/s", Kind::Dir), ("d/s/y", Kind::File)]);
        let dests = |items: Vec<Item>| items.into_iter().map(|i| i.dest).collect::<Vec<_>>();
        assert_eq!(dests(select(&e, &["a".into()], "bin/b", false, false).unwrap()), ["bin/b"]);
        assert_eq!(dests(select(&e, &["a".into()], "bin", true, false).unwrap()), ["bin/a"]);
        assert_eq!(dests(select(&e, &["a".into()], "bin", false, true).unwrap()), ["bin/a"]);
        assert_eq!(dests(select(&e, &["d".into()], "app", false, false).unwrap()), ["app", "app/s", "app/s/y", "app/x"]);
        // As Docker: a directory matched by a wildcard has its contents copied, not itself.
        assert_eq!(dests(select(&e, &["d/*".into()], "app", true, false).unwrap()), ["app", "app/y", "app/x"]);
        assert!(matches!(select(&e, &["a".into(), "d/x".into()], "app", false, false), Err(CopyError::DestNotDir)));
        assert!(matches!(select(&e, &["nope".into()], "app", false, false), Err(CopyError::NotFound(_))));
        assert!(matches!(select(&e, &["*.none".into()], "app", false, false), Err(CopyError::NotFound(_))));
        assert!(matches!(select(&e, &["../a".into()], "app", false, false), Err(CopyError::Outside(_))));
        // --parents keeps the source's path; --exclude leaves entries out.
        let rules = Rules { parents: true, excludes: berth_common::ignore::Patterns::parse("**/y").unwrap() };
        assert_eq!(
            dests(select_with(&e, &["d".into(), "a".into()], "app", false, false, &rules).unwrap()),
            ["app/d", "app/d/s", "app/d/x", "app/a"]
        );
    }
}
