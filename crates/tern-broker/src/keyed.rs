//! Hash maps keyed against chosen collisions that cost no bytes per map for the key.
//!
//! `std`'s `RandomState` holds its SipHash key in every map: 16 bytes in each session's
//! subscription map and in each node of the topic tries, where millions of maps hold a few
//! entries each. [`ProcessKeyed`] draws one key per process instead and builds the same
//! hashers from it, so client-chosen strings (topic levels, filters) still cannot be aimed at
//! one bucket, while the maps shrink by the key.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// Builds SipHash hashers from one random key drawn once per process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessKeyed;

impl BuildHasher for ProcessKeyed {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        static KEY: OnceLock<RandomState> = OnceLock::new();
        KEY.get_or_init(RandomState::new).build_hasher()
    }
}

/// A `HashMap` hashed with the process's key (see [`ProcessKeyed`]).
pub type KeyedMap<K, V> = HashMap<K, V, ProcessKeyed>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_hold_no_key_and_hash_alike() {
        assert_eq!(
            std::mem::size_of::<KeyedMap<String, u32>>() + 16,
            std::mem::size_of::<HashMap<String, u32>>()
        );
        let (a, b) = (ProcessKeyed, ProcessKeyed);
        assert_eq!(a.hash_one("a/b/c"), b.hash_one("a/b/c"));
        assert_ne!(a.hash_one("a/b/c"), a.hash_one("a/b/d"));
        let mut m: KeyedMap<String, u32> = KeyedMap::default();
        m.insert("x".into(), 1);
        assert_eq!(m.get("x"), Some(&1));
    }
}
