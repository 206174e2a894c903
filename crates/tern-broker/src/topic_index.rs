//! Temporary naive index (replaced by the trie).
use std::collections::HashMap;
use std::hash::Hash;
/// Subscriptions by filter.
pub struct TopicIndex<K, V> {
    map: HashMap<String, HashMap<K, V>>,
}
impl<K: Copy + Eq + Hash, V> Default for TopicIndex<K, V> {
    fn default() -> Self {
        Self::new()
    }
}
impl<K: Copy + Eq + Hash, V> TopicIndex<K, V> {
    /// New.
    pub fn new() -> Self {
        TopicIndex {
            map: HashMap::new(),
        }
    }
    /// Insert.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        self.map
            .entry(filter.to_string())
            .or_default()
            .insert(key, value)
    }
    /// Remove.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let m = self.map.get_mut(filter)?;
        let v = m.remove(key);
        if m.is_empty() {
            self.map.remove(filter);
        }
        v
    }
    /// Match.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(K, &V)) {
        for (flt, m) in &self.map {
            if tern_codec::topic::matches(flt, topic) {
                for (k, v) in m {
                    f(*k, v)
                }
            }
        }
    }
    /// Get.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        self.map.get(filter)?.get(key)
    }
    /// Len.
    pub fn len(&self) -> usize {
        self.map.values().map(|m| m.len()).sum()
    }
    /// Empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
