//! Whiteouts: how a layer says that something of the layers below is gone.
//!
//! In a layer archive (the OCI image spec's form) a whiteout is an empty entry named
//! `DIR/.wh.NAME`: it deletes `DIR/NAME` of the layers below. `DIR/.wh..wh..opq` makes `DIR`
//! opaque: nothing of the layers below shows in it, only what this layer puts there. Other
//! `.wh..wh.*` names are AUFS metadata and mean nothing.
//!
//! In a snapshot directory the same facts take the form of the snapshotter's [`WhiteoutMode`]:
//! overlayfs' own (a `0/0` character device, the `trusted.overlay.opaque=y` xattr), or none at
//! all for full copies, where the deletion has simply been done.

use std::os::fd::BorrowedFd;

use rustix::fs::{FileType, Mode, Stat, XattrFlags};

use super::walk::{file_type, to_u64};
use super::xattr;

/// How whiteouts are stored in a snapshot directory: the on-disk form of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The directory holds one layer's changes, stacked with others by overlayfs: `.wh.NAME`
    /// is a 0/0 character device NAME, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on
    /// its directory.
    Overlay,
    /// The directory is a full copy of the filesystem: `.wh.NAME` removes NAME (recursively),
    /// `.wh..wh..opq` removes every entry of its directory that was not itself written by the
    /// same layer. Nothing of a whiteout is left on disk.
    Native,
}

/// Prefix of whiteout entry names.
pub const PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker entry.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of AUFS metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`, ...).
pub const META_PREFIX: &[u8] = b".wh..wh.";
/// The xattr overlayfs reads as "this directory is opaque" (value `y`).
pub const OVERLAY_OPAQUE: &str = "trusted.overlay.opaque";
/// Overlayfs' xattr of a directory renamed with `redirect_dir`.
pub const OVERLAY_REDIRECT: &str = "trusted.overlay.redirect";
/// Overlayfs' xattr of a metadata-only copy-up (`metacopy`).
pub const OVERLAY_METACOPY: &str = "trusted.overlay.metacopy";

/// What a whiteout-like entry name of a layer archive means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// `.wh..wh..opq`: the directory holding it is opaque.
    Opaque,
    /// `.wh..wh.*` other than the opaque marker: AUFS metadata.
    Meta,
    /// `.wh.NAME`: NAME is deleted (NAME may be empty, `.` or `..`: the caller refuses those).
    Whiteout(&'a [u8]),
}

/// What the last component `name` of an archive entry means, if it is a marker.
pub fn marker(name: &[u8]) -> Option<Marker<'_>> {
    if name == OPAQUE_MARKER {
        Some(Marker::Opaque)
    } else if name.starts_with(META_PREFIX) {
        Some(Marker::Meta)
    } else {
        name.strip_prefix(PREFIX).map(Marker::Whiteout)
    }
}

/// Whether a file named `name` would be read as a marker in a layer archive.
pub fn is_marker_name(name: &[u8]) -> bool {
    name.starts_with(PREFIX)
}

/// The archive entry that deletes `rel` (`DIR/NAME` → `DIR/.wh.NAME`).
pub fn whiteout_entry(rel: &[u8]) -> Vec<u8> {
    let (parent, name) = match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    };
    [parent, PREFIX, name].concat()
}

/// The archive entry that makes directory `dir` opaque (`DIR/.wh..wh..opq`).
pub fn opaque_entry(dir: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return OPAQUE_MARKER.to_vec();
    }
    [dir, b"/", OPAQUE_MARKER].concat()
}

impl WhiteoutMode {
    /// Whether `st`, found in a snapshot directory of this form, is a whiteout.
    pub fn is_whiteout(self, st: &Stat) -> bool {
        self == WhiteoutMode::Overlay && is_overlay_whiteout(st)
    }

    /// Whether directory `dir`, in a snapshot directory of this form, is opaque.
    pub fn is_opaque(self, dir: BorrowedFd<'_>) -> rustix::io::Result<bool> {
        match self {
            WhiteoutMode::Overlay => is_overlay_opaque(dir),
            WhiteoutMode::Native => Ok(false),
        }
    }
}

/// An overlayfs whiteout: a character device with device number 0/0.
pub fn is_overlay_whiteout(st: &Stat) -> bool {
    file_type(st) == FileType::CharacterDevice && to_u64(st.st_rdev) == 0
}

/// Whether directory `dir` carries `trusted.overlay.opaque=y`.
pub fn is_overlay_opaque(dir: BorrowedFd<'_>) -> rustix::io::Result<bool> {
    Ok(xattr::get(dir, OVERLAY_OPAQUE.as_bytes())?.as_deref() == Some(b"y"))
}

/// Creates the overlayfs whiteout `name` in `dir` (the name must be free).
pub fn make_overlay_whiteout(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
}

/// Marks directory `dir` opaque for overlayfs.
pub fn set_overlay_opaque(dir: BorrowedFd<'_>) -> rustix::io::Result<()> {
    rustix::fs::fsetxattr(dir, OVERLAY_OPAQUE, b"y", XattrFlags::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_are_told_apart_in_the_applier_order() {
        assert_eq!(marker(b".wh..wh..opq"), Some(Marker::Opaque));
        assert_eq!(marker(b".wh..wh.plnk"), Some(Marker::Meta));
        assert_eq!(marker(b".wh.passwd"), Some(Marker::Whiteout(b"passwd")));
        assert_eq!(marker(b".wh."), Some(Marker::Whiteout(b"")));
        assert_eq!(marker(b"passwd"), None);
        assert_eq!(marker(b"x.wh.y"), None);
    }

    #[test]
    fn whiteout_and_opaque_entries_are_named_in_their_directory() {
        assert_eq!(whiteout_entry(b"etc/passwd"), b"etc/.wh.passwd");
        assert_eq!(whiteout_entry(b"gone"), b".wh.gone");
        assert_eq!(opaque_entry(b"var/cache"), b"var/cache/.wh..wh..opq");
        assert_eq!(opaque_entry(b""), b".wh..wh..opq");
    }
}
