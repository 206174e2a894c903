//! Temporary naive retained store (replaced by the trie).
use std::collections::HashMap;
/// Retained.
pub struct RetainedTree<M> {
    map: HashMap<String, M>,
}
impl<M> Default for RetainedTree<M> {
    fn default() -> Self {
        Self::new()
    }
}
impl<M> RetainedTree<M> {
    /// New.
    pub fn new() -> Self {
        RetainedTree {
            map: HashMap::new(),
        }
    }
    /// Insert.
    pub fn insert(&mut self, topic: &str, msg: M) -> Option<M> {
        self.map.insert(topic.to_string(), msg)
    }
    /// Remove.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        self.map.remove(topic)
    }
    /// Get.
    pub fn get(&self, topic: &str) -> Option<&M> {
        self.map.get(topic)
    }
    /// Match.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &M)) {
        for (t, m) in &self.map {
            if tern_codec::topic::matches(filter, t) {
                f(t, m)
            }
        }
    }
    /// Retain.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &M) -> bool) -> usize {
        let n = self.map.len();
        self.map.retain(|t, m| keep(t, m));
        n - self.map.len()
    }
    /// Len.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
