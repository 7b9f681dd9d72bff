//! Maps of objects by namespace and id, read without building a key.
//!
//! A list of 200 containers looks each one up in a few such maps (its task,
//! its network attachment, its health); with `(String, String)` keys every
//! lookup allocated two strings. These maps take a borrowed [`NsId`], and
//! hash with foldhash (randomly seeded, as std's SipHash, and much faster on
//! 64-character ids).

use std::hash::{Hash, Hasher};

/// The hasher of the agent's in-memory maps by id.
pub type Hasher64 = foldhash::fast::RandomState;

/// A map keyed by `(namespace, id)`.
pub type NsMap<V> = hashbrown::HashMap<(String, String), V, Hasher64>;

/// A borrowed `(namespace, id)` key: it hashes and compares as the owned one.
pub struct NsId<'a>(pub &'a str, pub &'a str);

impl Hash for NsId<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As a tuple hashes: each field in turn.
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl hashbrown::Equivalent<(String, String)> for NsId<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_key_finds_what_the_owned_one_put() {
        let mut m: NsMap<u32> = NsMap::default();
        for i in 0..1000u32 {
            m.insert((format!("ns{}", i % 7), format!("id{i}")), i);
        }
        for i in 0..1000u32 {
            assert_eq!(m.get(&NsId(&format!("ns{}", i % 7), &format!("id{i}"))), Some(&i));
        }
        // The split between the fields counts: ("ab", "c") is not ("a", "bc").
        m.insert(("ab".into(), "c".into()), 1);
        assert!(m.get(&NsId("a", "bc")).is_none());
        assert!(m.get(&NsId("ns1", "id0")).is_none());
    }
}
