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

/// An input that went over one of the limits of the agent (or of berthctl). Its message quotes no
/// input, so it can be shown as it is (errors of the parsers that read the
/// input may quote it, and are not).
#[derive(Debug)]
pub struct InputLimit(pub String);

impl std::fmt::Display for InputLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputLimit {}
