//! The layer format, once: OCI layer changesets (tar streams) and the snapshot directories
//! they become.
//!
//! - [`whiteout`]: the whiteout vocabulary, in archives (`.wh.NAME`, `.wh..wh..opq`) and on
//!   disk (overlayfs' `0/0` devices and opaque xattr, or nothing for full copies).
//! - [`xattr`]: bounded xattr reads, and which xattrs a layer may carry.
//! - [`walk`]: the one tree walker (no symlink followed, a bounded number of fds).
//! - [`reader`]: reading untrusted tar streams the way every tar reader does, or not at all.
//! - [`apply`]: extracting an untrusted layer into a directory.

pub mod apply;
pub mod diff;
pub mod reader;
pub mod stack;
pub mod walk;
pub mod whiteout;
pub mod write;
pub mod xattr;
