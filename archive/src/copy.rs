//! Copies of trees (`cp`): a file, or a directory and everything below it, written as an
//! uncompressed tar stream under a name the caller chooses.
//!
//! The tree is read from an open directory, never following a link (a link is copied as a
//! link), with the one tree walker and the layers' writer: a copy holds what a layer would,
//! owners, modes, times and kept xattrs included, and no name a layer would read as a
//! whiteout. It is applied with [`crate::apply::apply_tar`] and [`ApplyOptions::copy`]
//! (crate::apply::ApplyOptions::copy), which refuses such names too.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType};

use crate::diff::{io_err, join, walk_err, DiffError, MAX_DEPTH};
use crate::walk::{self, file_type, open_dir_nofollow, Node, Visitor, WalkError, WalkOptions};
use crate::write::{layer_xattrs, LayerWriter};

/// Filesystems whose directories a copy writes empty, without their contents: the kernel's
/// views (`proc`, `sysfs`, `cgroup`, `cgroup2`, `devpts`, `mqueue`, `securityfs`, `debugfs`,
/// `tracefs`, `bpf`) that a live container's tree has mounted, as no image holds them.
const KERNEL_VIEWS: [i64; 10] =
    [0x9fa0, 0x6265_6572, 0x0027_e0eb, 0x6367_7270, 0x1cd1, 0x1980_0202, 0x7363_6673, 0x6462_6720, 0x7472_6163, 0xcafe_4a11];

/// Writes entry `name` of directory `parent` to `out` as `top` (for a directory, `top/REL`
/// for each entry below it, parents first, in name order); returns the number of entries
/// written. An empty `top` writes only what is below a directory (docker's `SRC/.`).
/// `shown` names the tree in errors. Directories of the kernel's own filesystems (`/proc`,
/// `/sys`, ...) are written without their contents. Sockets are left out.
///
/// On error, `out` holds part of an archive; discard it.
pub fn write_tree<W: Write>(parent: BorrowedFd<'_>, name: &[u8], top: &[u8], shown: &Path, out: W) -> Result<u64, DiffError> {
    let path = join(shown, top);
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_err(path.clone(), e))?;
    let mut w = LayerWriter::new(out, shown);
    if file_type(&st) != FileType::Directory {
        if top.is_empty() {
            return Err(DiffError::Unsupported { path, reason: "only a directory's contents can be copied without its name".into() });
        }
        w.node(top, name, &st, parent)?;
        return w.finish();
    }
    let dir = open_dir_nofollow(parent, name).map_err(|e| io_err(path.clone(), e))?;
    if !top.is_empty() {
        let xattrs = layer_xattrs(dir.as_fd()).map_err(|e| io_err(path.clone(), e))?;
        w.dir(top, &st, &xattrs)?;
    }
    if !is_kernel_view(dir.as_fd()) {
        let opts = WalkOptions { max_depth: Some(MAX_DEPTH), skip_sockets: true };
        walk::walk(dir, None, opts, &mut TreeTar { shown, top, w: &mut w, rel: Vec::new() })?;
    }
    w.finish()
}

// `f_type`'s type differs between architectures.
#[allow(clippy::unnecessary_cast)]
fn is_kernel_view(dir: BorrowedFd<'_>) -> bool {
    rustix::fs::fstatfs(dir).is_ok_and(|s| KERNEL_VIEWS.contains(&(s.f_type as i64)))
}

struct TreeTar<'a, W: Write> {
    shown: &'a Path,
    top: &'a [u8],
    w: &'a mut LayerWriter<W>,
    /// The entry's name in the archive (reused buffer).
    rel: Vec<u8>,
}

impl<W: Write> Visitor for TreeTar<'_, W> {
    type Error = DiffError;

    fn walk_error(&self, e: WalkError) -> DiffError {
        walk_err(&join(self.shown, self.top), e)
    }

    fn node(&mut self, node: &Node<'_>) -> Result<bool, DiffError> {
        let Some(side) = &node.new else { return Ok(false) };
        self.rel.clear();
        if !self.top.is_empty() {
            self.rel.extend_from_slice(self.top);
            self.rel.push(b'/');
        }
        self.rel.extend_from_slice(node.rel);
        let Some(dir) = side.dir else {
            self.w.node(&self.rel, node.name, side.st, side.parent)?;
            return Ok(false);
        };
        let xattrs = layer_xattrs(dir).map_err(|e| io_err(join(self.shown, &self.rel), e))?;
        self.w.dir(&self.rel, side.st, &xattrs)?;
        Ok(!is_kernel_view(dir))
    }

    fn leave(&mut self, _: &[u8], _: &[u8], _: BorrowedFd<'_>) -> Result<(), DiffError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{apply_tar, ApplyError, ApplyOptions};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn open(p: &Path) -> std::os::fd::OwnedFd {
        rustix::fs::open(p, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty()).unwrap()
    }

    fn copy_opts() -> ApplyOptions {
        ApplyOptions { copy: true, ..Default::default() }
    }

    #[test]
    fn a_tree_is_copied_under_its_new_name_with_links_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d/sub")).unwrap();
        std::fs::write(src.join("d/sub/f"), b"data").unwrap();
        std::fs::set_permissions(src.join("d/sub/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(src.join("d/sub/f"), src.join("d/hard")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", src.join("d/link")).unwrap();
        let mut tar = Vec::new();
        let n = write_tree(open(&src).as_fd(), b"d", b"renamed", &src, &mut tar).unwrap();
        assert_eq!(n, 5);
        let dst = tmp.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        apply_tar(&tar[..], &dst, &copy_opts()).unwrap();
        assert_eq!(std::fs::read(dst.join("renamed/sub/f")).unwrap(), b"data");
        let meta = std::fs::metadata(dst.join("renamed/sub/f")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!(meta.ino(), std::fs::metadata(dst.join("renamed/hard")).unwrap().ino());
        assert_eq!(std::fs::read_link(dst.join("renamed/link")).unwrap(), Path::new("/etc/shadow"));

        // The contents alone, into a directory that exists.
        let mut tar = Vec::new();
        write_tree(open(&src).as_fd(), b"d", b"", &src, &mut tar).unwrap();
        apply_tar(&tar[..], &dst, &copy_opts()).unwrap();
        assert_eq!(std::fs::read(dst.join("sub/f")).unwrap(), b"data");

        // Cut short between entries, it is refused as a copy (a layer has its digest).
        let mut whole = Vec::new();
        write_tree(open(&src).as_fd(), b"d", b"cut", &src, &mut whole).unwrap();
        let e = apply_tar(&whole[..whole.len() - 1024], &dst, &copy_opts()).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
        apply_tar(&whole[..whole.len() - 1024], &dst, &ApplyOptions::default()).unwrap();
        assert!(apply_tar(&[][..], &dst, &copy_opts()).is_err());

        // A file, under another name.
        let mut tar = Vec::new();
        assert_eq!(write_tree(open(&src.join("d/sub")).as_fd(), b"f", b"g", &src, &mut tar).unwrap(), 1);
        apply_tar(&tar[..], &dst, &copy_opts()).unwrap();
        assert_eq!(std::fs::read(dst.join("g")).unwrap(), b"data");
        assert!(write_tree(open(&src.join("d/sub")).as_fd(), b"f", b"", &src, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_copy_replaces_no_directory_with_a_file_and_holds_no_whiteout() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("x"), b"file").unwrap();
        let dst = tmp.path().join("dst");
        std::fs::create_dir_all(dst.join("x/kept")).unwrap();
        let mut tar = Vec::new();
        write_tree(open(&src).as_fd(), b"x", b"x", &src, &mut tar).unwrap();
        let e = apply_tar(&tar[..], &dst, &copy_opts()).unwrap_err();
        assert!(matches!(e, ApplyError::KindConflict { .. }), "{e}");
        assert!(dst.join("x/kept").is_dir());
        // As a layer it would replace it.
        apply_tar(&tar[..], &dst, &ApplyOptions::default()).unwrap();
        assert_eq!(std::fs::read(dst.join("x")).unwrap(), b"file");

        // A whiteout name is refused, and deletes nothing.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, ".wh.x", &[][..]).unwrap();
        let tar = b.into_inner().unwrap();
        let e = apply_tar(&tar[..], &dst, &copy_opts()).unwrap_err();
        assert!(matches!(e, ApplyError::Unsupported { .. }), "{e}");
        assert!(dst.join("x").exists());
    }

    #[test]
    fn owners_can_be_set_for_every_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), b"f").unwrap();
        std::os::unix::fs::chown(src.join("d/f"), Some(123), Some(456)).unwrap();
        let mut tar = Vec::new();
        write_tree(open(&src).as_fd(), b"d", b"d", &src, &mut tar).unwrap();
        let dst = tmp.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        apply_tar(&tar[..], &dst, &copy_opts()).unwrap();
        assert_eq!(std::fs::metadata(dst.join("d/f")).unwrap().uid(), 123);
        apply_tar(&tar[..], &dst, &ApplyOptions { owner: Some((7, 8)), ..copy_opts() }).unwrap();
        let meta = std::fs::metadata(dst.join("d/f")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (7, 8));
    }
}
