//! Build cache keys. A step's key hashes its parent's key and everything the
//! step's result depends on: the instruction as written (the history keeps
//! it) and with its words expanded, the
//! variables in scope, and for COPY and ADD the content (path, type, mode,
//! link target and sha256) of exactly the files they copy. Entries live in
//! the metadata database (`Metadata::build_cache`), each pointing at the
//! step's state stored as an unnamed image.

use sha2::{Digest as _, Sha256};

/// Version of the key derivation: changing what a key covers changes this.
const VERSION: &str = "berth-build-cache-v2";

/// The key of named parts, in order: hex sha256 of their length-prefixed
/// encoding (so no two part lists collide).
pub fn key(parts: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    h.update(VERSION.as_bytes());
    for (name, value) in parts {
        for s in [name, value] {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_part_and_its_boundaries() {
        let a = key(&[("parent", "x"), ("step", "RUN a")]);
        assert_eq!(a, key(&[("parent", "x"), ("step", "RUN a")]));
        assert_ne!(a, key(&[("parent", "y"), ("step", "RUN a")]));
        assert_ne!(a, key(&[("parent", "x"), ("step", "RUN b")]));
        assert_ne!(key(&[("a", "bc")]), key(&[("ab", "c")]));
        assert_eq!(a.len(), 64);
    }
}
