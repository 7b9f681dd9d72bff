//! Layer archives: decompression and safe extraction of tar changesets.

pub mod apply;
