//! The subscription index: which (subscriber, filter) pairs match a published topic name.
//!
//! [`TopicIndex`] owns every subscription of the broker as a `(filter, key) -> value` entry, where
//! `key` names the subscriber (a session) and `value` is whatever the broker keeps per
//! subscription (options, identifiers). It answers "who receives a PUBLISH to this topic" at a
//! cost that depends on the filters that can match, not on how many subscriptions exist.
//!
//! Shape:
//! - Filters without wildcards (`a/b`, `/`, `a//b`) live in one hash map keyed by the whole
//!   filter, so a publish finds all of them with a single lookup of the topic name.
//! - Filters with a wildcard live in a trie with one node per level. A node has a map of literal
//!   children, a separate `+` child, the subscribers whose filter ends at the node (`here`) and
//!   those whose filter is the node's path followed by `#` (`hash`). `a/+/c` is the path
//!   `a` -> `+` -> `c` with the subscriber in `here`; `a/#` is in the `hash` set of node `a`; `#`
//!   is in the `hash` set of the root.
//!
//! Matching splits the topic lazily at `/` and walks only the literal child named by each level
//! plus the `+` child, collecting `hash` sets on the way and `here` at the last level. Grammar:
//! `+` matches exactly one level, possibly empty (`sport/+` matches `sport/` but not `sport`);
//! `#` matches the parent level and any number below (`sport/#` matches `sport`, `sport/` and
//! `sport/a/b`); `+/+` and `/+` match `/finance` but `+` does not. Filters whose first level is
//! `+` or `#` do not match topic names starting with `$` [MQTT-4.7.2-1], so `#` misses `$SYS/x`
//! while `$SYS/#` matches it.
//!
//! Nothing here recurses: filters and topics can hold tens of thousands of levels, so walks,
//! removal and drop use explicit stacks. Invalid filters never panic; a `#` that is not the last
//! level is then taken as a literal level.

use crate::keyed::KeyedMap;
use std::hash::Hash;

use rustc_hash::FxHashMap;
use std::mem;

/// Subscriptions by topic filter; matching cost depends on the matching filters, not the total.
pub struct TopicIndex<K, V> {
    /// Subscriptions whose filter has no wildcard level, keyed by the whole filter.
    /// Invariant: no entry holds an empty [`Subs`].
    exact: KeyedMap<Box<str>, Subs<K, V>>,
    /// Trie of the subscriptions whose filter has a `+` or a final `#` level.
    /// Invariant: `root.count` is the number of those subscriptions.
    root: Node<K, V>,
    /// Number of `(filter, key)` subscriptions: those in `exact` plus `root.count`.
    len: usize,
}

impl<K, V> Default for TopicIndex<K, V> {
    fn default() -> Self {
        TopicIndex {
            exact: KeyedMap::default(),
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Copy + Eq + Hash, V> TopicIndex<K, V> {
    /// An index holding no subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns the replaced value.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let shape = Shape::of(filter);
        if shape.is_exact() {
            if let Some(subs) = self.exact.get_mut(filter) {
                let old = subs.insert(key, value);
                if old.is_none() {
                    self.len += 1;
                }
                return old;
            }
            let mut subs = Subs::default();
            subs.insert(key, value);
            self.exact.insert(filter.into(), subs);
            self.len += 1;
            return None;
        }
        if let Some(slot) = self.target_mut(&shape).and_then(|subs| subs.get_mut(&key)) {
            return Some(mem::replace(slot, value));
        }
        let mut node = &mut self.root;
        node.count += 1;
        for edge in shape.edges() {
            node = node.child_or_insert(edge);
            node.count += 1;
        }
        node.subs_mut(shape.hash).insert(key, value);
        self.len += 1;
        None
    }

    /// Removes `key`'s subscription to `filter`; returns it. Prunes empty nodes.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let shape = Shape::of(filter);
        if shape.is_exact() {
            let subs = self.exact.get_mut(filter)?;
            let old = subs.remove(key)?;
            if subs.is_empty() {
                self.exact.remove(filter);
            }
            self.len -= 1;
            return Some(old);
        }
        // First pass, read-only: check the subscription exists and find the highest node on its
        // path that holds nothing else; that node's subtree is cut off whole.
        let mut node = &self.root;
        let mut cut = None;
        for (depth, edge) in shape.edges().enumerate() {
            node = node.child(edge)?;
            if cut.is_none() && node.count == 1 {
                cut = Some(depth);
            }
        }
        node.subs(shape.hash).get(key)?;

        // Second pass: the path exists, so no `?` below can fail.
        self.len -= 1;
        self.root.count -= 1;
        let mut node = &mut self.root;
        let mut edges = shape.edges().enumerate();
        while let Some((depth, edge)) = edges.next() {
            if cut == Some(depth) {
                let mut detached = node.detach(edge)?;
                let mut n = &mut detached;
                for (_, edge) in edges.by_ref() {
                    n = n.child_mut(edge)?;
                }
                return n.subs_mut(shape.hash).remove(key);
            }
            node = node.child_mut(edge)?;
            node.count -= 1;
        }
        node.subs_mut(shape.hash).remove(key)
    }

    /// Calls `f` once per (subscriber, filter) whose filter matches the topic NAME `topic`;
    /// returns how many filters matched. With at most one, no subscriber was reported twice.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(K, &V)) -> usize {
        self.walk(topic, &mut f).filters
    }

    /// The value of `key`'s subscription to `filter`, if it has one.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let shape = Shape::of(filter);
        if shape.is_exact() {
            return self.exact.get(filter)?.get(key);
        }
        let mut node = &self.root;
        for edge in shape.edges() {
            node = node.child(edge)?;
        }
        node.subs(shape.hash).get(key)
    }

    /// Number of `(filter, key)` subscriptions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The subscriber set a wildcard filter of this shape ends in, if its path exists.
    fn target_mut(&mut self, shape: &Shape<'_>) -> Option<&mut Subs<K, V>> {
        let mut node = &mut self.root;
        for edge in shape.edges() {
            node = node.child_mut(edge)?;
        }
        Some(node.subs_mut(shape.hash))
    }

    /// Calls `f` for every match of `topic`; returns how many filters matched and how many
    /// trie nodes below the root it visited (the cost of the wildcard part of the match).
    fn walk(&self, topic: &str, f: &mut impl FnMut(K, &V)) -> Walked {
        let mut walked = Walked::default();
        if let Some(subs) = self.exact.get(topic) {
            walked.filters += subs.for_each(f);
        }
        let root = &self.root;
        if root.count == 0 {
            return walked;
        }
        // [MQTT-4.7.2-1]: the root's `#` and `+` never match a topic starting with `$`.
        let wild_ok = !topic.starts_with('$');
        let mut stack: WalkStack<(&Node<K, V>, Option<&str>)> = WalkStack::new();
        if wild_ok {
            walked.filters += root.hash.for_each(f);
        }
        let (level, rest) = split_level(topic);
        if let Some(child) = root.children.get(level) {
            stack.push((child, rest));
        }
        if let (true, Some(plus)) = (wild_ok, root.plus.as_deref()) {
            stack.push((plus, rest));
        }
        while let Some((node, rest)) = stack.pop() {
            walked.nodes += 1;
            walked.filters += node.hash.for_each(f);
            match rest {
                None => walked.filters += node.here.for_each(f),
                Some(rest) => {
                    let (level, rest) = split_level(rest);
                    if let Some(child) = node.children.get(level) {
                        stack.push((child, rest));
                    }
                    if let Some(plus) = node.plus.as_deref() {
                        stack.push((plus, rest));
                    }
                }
            }
        }
        walked
    }

    /// Trie nodes below the root plus exact-filter entries: zero once everything is removed.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = self.exact.len();
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            let children = node.children.values().chain(node.plus.as_deref());
            for child in children {
                count += 1;
                stack.push(child);
            }
        }
        count
    }
}

/// What one match walk found besides the matches themselves.
#[derive(Debug, Default, Clone, Copy)]
struct Walked {
    /// Filters that matched (subscriber sets that held at least one subscriber).
    filters: usize,
    /// Trie nodes below the root visited.
    nodes: usize,
}

/// Splits off the first level of a topic: `a/b/c` gives `a` and `Some("b/c")`, `a` gives `a` and
/// `None`.
fn split_level(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (s, None),
    }
}

/// One step down the trie.
#[derive(Debug, Clone, Copy)]
enum Edge<'a> {
    /// A literal level.
    Lit(&'a str),
    /// A `+` level.
    Plus,
}

/// A filter seen as a trie path: its levels before a final `#`, and whether that `#` is there.
struct Shape<'a> {
    /// The levels leading to the node holding the subscription; `None` for the filter `#`.
    path: Option<&'a str>,
    /// The filter ends in `#`: the subscription sits in the node's `hash` set.
    hash: bool,
}

impl<'a> Shape<'a> {
    /// The shape of `filter`.
    fn of(filter: &'a str) -> Self {
        if filter == "#" {
            Shape {
                path: None,
                hash: true,
            }
        } else if let Some(path) = filter.strip_suffix("/#") {
            Shape {
                path: Some(path),
                hash: true,
            }
        } else {
            Shape {
                path: Some(filter),
                hash: false,
            }
        }
    }

    /// The edges from the root to the node holding the subscription.
    fn edges(&self) -> impl Iterator<Item = Edge<'a>> + use<'a> {
        self.path
            .into_iter()
            .flat_map(|path| path.split('/'))
            .map(|level| {
                if level == "+" {
                    Edge::Plus
                } else {
                    Edge::Lit(level)
                }
            })
    }

    /// True for a filter without wildcards, which is kept in the exact map.
    fn is_exact(&self) -> bool {
        !self.hash && self.edges().all(|edge| matches!(edge, Edge::Lit(_)))
    }
}

/// One trie level of wildcard filters.
struct Node<K, V> {
    /// Literal next levels.
    children: KeyedMap<Box<str>, Node<K, V>>,
    /// The `+` next level.
    plus: Option<Box<Node<K, V>>>,
    /// Subscribers whose filter ends at this node.
    here: Subs<K, V>,
    /// Subscribers whose filter is this node's path followed by `#`.
    hash: Subs<K, V>,
    /// Subscriptions in this subtree (`here`, `hash` and all descendants).
    /// Invariant: at least 1 for every node but the root, so the trie has no empty nodes.
    count: usize,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: KeyedMap::default(),
            plus: None,
            here: Subs::default(),
            hash: Subs::default(),
            count: 0,
        }
    }
}

impl<K, V> Node<K, V> {
    /// The child along `edge`.
    fn child(&self, edge: Edge<'_>) -> Option<&Self> {
        match edge {
            Edge::Lit(level) => self.children.get(level),
            Edge::Plus => self.plus.as_deref(),
        }
    }

    /// The child along `edge`, mutably.
    fn child_mut(&mut self, edge: Edge<'_>) -> Option<&mut Self> {
        match edge {
            Edge::Lit(level) => self.children.get_mut(level),
            Edge::Plus => self.plus.as_deref_mut(),
        }
    }

    /// The child along `edge`, created empty if missing.
    fn child_or_insert(&mut self, edge: Edge<'_>) -> &mut Self {
        match edge {
            Edge::Lit(level) => self.children.entry(level.into()).or_default(),
            Edge::Plus => self.plus.get_or_insert_with(Box::default),
        }
    }

    /// Unlinks the child along `edge` and hands over its subtree.
    fn detach(&mut self, edge: Edge<'_>) -> Option<Self> {
        match edge {
            Edge::Lit(level) => self.children.remove(level),
            Edge::Plus => self.plus.take().map(|plus| *plus),
        }
    }

    /// The `hash` set if `hash`, else the `here` set.
    fn subs(&self, hash: bool) -> &Subs<K, V> {
        if hash { &self.hash } else { &self.here }
    }

    /// The `hash` set if `hash`, else the `here` set, mutably.
    fn subs_mut(&mut self, hash: bool) -> &mut Subs<K, V> {
        if hash { &mut self.hash } else { &mut self.here }
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Frees the subtree with an explicit stack: a deep filter must not overflow the call stack.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut stack: Vec<Node<K, V>> = self.children.drain().map(|(_, n)| n).collect();
        stack.extend(self.plus.take().map(|plus| *plus));
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, n)| n));
            stack.extend(node.plus.take().map(|plus| *plus));
        }
    }
}

/// Most filters have few subscribers; beyond this many a set switches to a hash map.
const FEW_MAX: usize = 16;

/// The subscribers of one filter, keyed by subscriber.
enum Subs<K, V> {
    /// Up to [`FEW_MAX`] entries, searched linearly.
    Few(Vec<(K, V)>),
    /// More entries (drops back to `Few` once it shrinks to a quarter of [`FEW_MAX`]).
    Many(FxHashMap<K, V>),
}

impl<K, V> Default for Subs<K, V> {
    fn default() -> Self {
        Subs::Few(Vec::new())
    }
}

impl<K: Copy + Eq + Hash, V> Subs<K, V> {
    /// Number of subscribers.
    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Subs::Few(v) => v.len(),
            Subs::Many(m) => m.len(),
        }
    }

    /// True when there is no subscriber.
    fn is_empty(&self) -> bool {
        match self {
            Subs::Few(v) => v.is_empty(),
            Subs::Many(m) => m.is_empty(),
        }
    }

    /// The value of `key`.
    fn get(&self, key: &K) -> Option<&V> {
        match self {
            Subs::Few(v) => v.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Subs::Many(m) => m.get(key),
        }
    }

    /// The value of `key`, mutably.
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self {
            Subs::Few(v) => v.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            Subs::Many(m) => m.get_mut(key),
        }
    }

    /// Sets the value of `key`; returns the replaced one.
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Subs::Few(v) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(mem::replace(&mut slot.1, value));
                }
                if v.len() < FEW_MAX {
                    v.push((key, value));
                } else {
                    let mut m: FxHashMap<K, V> = v.drain(..).collect();
                    m.insert(key, value);
                    *self = Subs::Many(m);
                }
                None
            }
            Subs::Many(m) => m.insert(key, value),
        }
    }

    /// Removes `key`; returns its value.
    fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Subs::Few(v) => {
                let at = v.iter().position(|(k, _)| k == key)?;
                Some(v.swap_remove(at).1)
            }
            Subs::Many(m) => {
                let old = m.remove(key)?;
                if m.len() <= FEW_MAX / 4 {
                    let few = m.drain().collect();
                    *self = Subs::Few(few);
                }
                Some(old)
            }
        }
    }

    /// Calls `f` for every subscriber; returns 1 if there was one, else 0 (a filter matched).
    fn for_each(&self, f: &mut impl FnMut(K, &V)) -> usize {
        match self {
            Subs::Few(v) => v.iter().for_each(|(k, v)| f(*k, v)),
            Subs::Many(m) => m.iter().for_each(|(k, v)| f(*k, v)),
        }
        usize::from(!self.is_empty())
    }
}

/// Entries a [`WalkStack`] keeps in place before spilling to the heap.
const INLINE: usize = 16;

/// A LIFO whose first [`INLINE`] entries live in place, so that matching a topic does not
/// allocate unless the walk has more than that many branches pending.
struct WalkStack<T> {
    /// The bottom entries; `inline[..min(len, INLINE)]` are `Some`.
    inline: [Option<T>; INLINE],
    /// Number of entries held, inline and spilled.
    len: usize,
    /// Entries above the first [`INLINE`], bottom first.
    spill: Vec<T>,
}

impl<T: Copy> WalkStack<T> {
    /// An empty stack.
    fn new() -> Self {
        WalkStack {
            inline: [None; INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    /// Pushes `item` on top.
    fn push(&mut self, item: T) {
        if self.len < INLINE {
            self.inline[self.len] = Some(item);
        } else {
            self.spill.push(item);
        }
        self.len += 1;
    }

    /// Takes the top entry.
    fn pop(&mut self) -> Option<T> {
        self.len = self.len.checked_sub(1)?;
        if self.len < INLINE {
            self.inline[self.len].take()
        } else {
            self.spill.pop()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use tern_codec::topic::{matches, validate_filter, validate_name};

    /// The sorted (key, filter) pairs `idx` reports for `topic`; values hold their filter.
    fn matched(idx: &TopicIndex<u32, String>, topic: &str) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        idx.for_each_match(topic, |k, v| out.push((k, v.clone())));
        out.sort();
        out
    }

    /// The sorted filters of every subscription matching `topic`.
    fn filters(idx: &TopicIndex<u32, String>, topic: &str) -> Vec<String> {
        matched(idx, topic).into_iter().map(|(_, f)| f).collect()
    }

    fn index_of(filters: &[&str]) -> TopicIndex<u32, String> {
        let mut idx = TopicIndex::new();
        for f in filters {
            assert_eq!(validate_filter(f), Ok(()), "{f}");
            idx.insert(f, 1, f.to_string());
        }
        idx
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_every_level_below() {
        let idx = index_of(&["sport/tennis/player1/#", "sport/#"]);
        assert_eq!(
            filters(&idx, "sport/tennis/player1"),
            ["sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(
            filters(&idx, "sport/tennis/player1/ranking"),
            ["sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(
            filters(&idx, "sport/tennis/player1/score/wimbledon"),
            ["sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(filters(&idx, "sport"), ["sport/#"]);
        assert_eq!(filters(&idx, "sport/"), ["sport/#"]);
        assert_eq!(filters(&idx, "sport/a/b"), ["sport/#"]);
        assert!(filters(&idx, "sports").is_empty());
        assert_eq!(filters(&idx, "sport/tennis/player2"), ["sport/#"]);
    }

    #[test]
    fn single_level_wildcard_matches_exactly_one_possibly_empty_level() {
        let idx = index_of(&["sport/tennis/+", "sport/+", "sport/+/player1"]);
        assert_eq!(
            filters(&idx, "sport/tennis/player1"),
            ["sport/+/player1", "sport/tennis/+"]
        );
        assert_eq!(filters(&idx, "sport/tennis/player2"), ["sport/tennis/+"]);
        assert!(filters(&idx, "sport/tennis/player1/ranking").is_empty());
        assert!(filters(&idx, "sport").is_empty());
        assert_eq!(filters(&idx, "sport/"), ["sport/+"]);
        assert_eq!(filters(&idx, "sport//player1"), ["sport/+/player1"]);
    }

    #[test]
    fn leading_empty_level_counts_as_a_level() {
        let idx = index_of(&["+/+", "/+", "+", "/finance", "/", "+/", "//"]);
        assert_eq!(filters(&idx, "/finance"), ["+/+", "/+", "/finance"]);
        assert_eq!(filters(&idx, "finance"), ["+"]);
        assert_eq!(filters(&idx, "/"), ["+/", "+/+", "/", "/+"]);
        assert_eq!(filters(&idx, "//"), ["//"]);
        assert_eq!(filters(&idx, "a/"), ["+/", "+/+"]);
    }

    #[test]
    fn hash_alone_matches_every_topic_not_starting_with_dollar() {
        let idx = index_of(&["#"]);
        for topic in ["a", "/", "a/b/c", "//", "x$"] {
            assert_eq!(filters(&idx, topic), ["#"], "{topic}");
        }
        assert!(filters(&idx, "$SYS").is_empty());
        assert!(filters(&idx, "$SYS/x").is_empty());
    }

    #[test]
    fn plus_alone_matches_single_level_topics_only() {
        let idx = index_of(&["+"]);
        assert_eq!(filters(&idx, "a"), ["+"]);
        assert!(filters(&idx, "a/b").is_empty());
        assert!(filters(&idx, "/").is_empty());
        assert!(filters(&idx, "$SYS").is_empty());
    }

    #[test]
    fn leading_wildcards_do_not_match_dollar_topics() {
        let idx = index_of(&[
            "#",
            "+/monitor/Clients",
            "$SYS/#",
            "$SYS/monitor/+",
            "+/#",
            "$SYS/monitor/Clients",
        ]);
        assert_eq!(
            filters(&idx, "$SYS/monitor/Clients"),
            ["$SYS/#", "$SYS/monitor/+", "$SYS/monitor/Clients"]
        );
        assert_eq!(filters(&idx, "$SYS/x"), ["$SYS/#"]);
        assert_eq!(filters(&idx, "$SYS"), ["$SYS/#"]);
        assert_eq!(
            filters(&idx, "SYS/monitor/Clients"),
            ["#", "+/#", "+/monitor/Clients"]
        );
        // `$` only matters at the first level.
        assert_eq!(filters(&idx, "a/$b"), ["#", "+/#"]);
    }

    #[test]
    fn overlapping_filters_of_one_key_each_match_once() {
        let mut idx = TopicIndex::new();
        for f in ["a/b", "a/+", "a/#", "#", "+/b", "+/+"] {
            idx.insert(f, 7u32, f.to_string());
        }
        idx.insert("a/b", 8, "a/b".to_string());
        let got = matched(&idx, "a/b");
        assert_eq!(got.len(), 7);
        assert_eq!(got.iter().filter(|(k, _)| *k == 7).count(), 6);
        assert_eq!(got.iter().filter(|(k, _)| *k == 8).count(), 1);
    }

    #[test]
    fn insert_of_existing_pair_replaces_and_returns_old_value() {
        let mut idx = TopicIndex::new();
        for f in ["a/b", "a/+", "#"] {
            assert_eq!(idx.insert(f, 1u32, 10), None);
            assert_eq!(idx.insert(f, 1, 11), Some(10));
            assert_eq!(idx.insert(f, 2, 20), None);
            assert_eq!(idx.get(f, &1), Some(&11));
            assert_eq!(idx.get(f, &2), Some(&20));
        }
        assert_eq!(idx.len(), 6);
        assert_eq!(idx.get("a/c", &1), None);
        assert_eq!(idx.get("a/#", &1), None);
        assert_eq!(idx.get("a/+", &3), None);
    }

    #[test]
    fn remove_returns_value_and_prunes_every_node() {
        let list = [
            "a/b", "a/+", "a/#", "#", "+", "+/+/c", "a/+/c/#", "/", "a//b", "$SYS/#",
        ];
        let mut idx = TopicIndex::new();
        for (i, f) in list.iter().enumerate() {
            idx.insert(f, 1u32, i);
            idx.insert(f, 2u32, i + 100);
        }
        assert_eq!(idx.len(), 2 * list.len());
        assert!(idx.node_count() > 0);
        for (i, f) in list.iter().enumerate() {
            assert_eq!(idx.remove(f, &1), Some(i), "{f}");
            assert_eq!(idx.remove(f, &1), None, "{f}");
        }
        assert_eq!(idx.len(), list.len());
        for (i, f) in list.iter().enumerate().rev() {
            assert_eq!(idx.remove(f, &2), Some(i + 100), "{f}");
        }
        assert_eq!(idx.len(), 0);
        assert!(idx.is_empty());
        assert_eq!(idx.node_count(), 0);
        assert!(matched_u(&idx, "a/b").is_empty());
    }

    fn matched_u(idx: &TopicIndex<u32, usize>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        idx.for_each_match(topic, |k, _| out.push(k));
        out
    }

    #[test]
    fn remove_keeps_the_rest_of_a_shared_path() {
        let mut idx = TopicIndex::new();
        idx.insert("a/+/c", 1u32, 0usize);
        idx.insert("a/+/c/d", 1, 1);
        idx.insert("a/+", 1, 2);
        assert_eq!(idx.remove("a/+/c", &1), Some(0));
        assert_eq!(matched_u(&idx, "a/x/c/d"), [1]);
        assert_eq!(matched_u(&idx, "a/x"), [1]);
        assert!(matched_u(&idx, "a/x/c").is_empty());
        assert_eq!(idx.remove("a/+/c/d", &1), Some(1));
        assert_eq!(idx.node_count(), 2);
        assert_eq!(idx.remove("a/+", &1), Some(2));
        assert_eq!(idx.node_count(), 0);
    }

    #[test]
    fn removing_a_missing_subscription_changes_nothing() {
        let mut idx = TopicIndex::new();
        idx.insert("a/+", 1u32, 0usize);
        idx.insert("a/b", 1, 1);
        let nodes = idx.node_count();
        assert_eq!(idx.remove("a/+", &2), None);
        assert_eq!(idx.remove("a/+/c", &1), None);
        assert_eq!(idx.remove("a/#", &1), None);
        assert_eq!(idx.remove("a/c", &1), None);
        assert_eq!(idx.remove("a", &1), None);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.node_count(), nodes);
        assert_eq!(matched_u(&idx, "a/b"), [1, 1]);
    }

    #[test]
    fn many_keys_on_one_filter_all_match_and_all_leave() {
        let mut idx = TopicIndex::new();
        let n = 1000u32;
        for k in 0..n {
            assert_eq!(idx.insert("t/+", k, k as usize), None);
            assert_eq!(idx.insert("t/x", k, k as usize), None);
        }
        assert_eq!(idx.len(), 2 * n as usize);
        let mut got = matched_u(&idx, "t/x");
        got.sort();
        let want: Vec<u32> = (0..n).flat_map(|k| [k, k]).collect();
        assert_eq!(got, want);
        assert_eq!(idx.insert("t/+", 5, 0), Some(5));
        for k in (0..n).rev() {
            assert_eq!(
                idx.remove("t/+", &k),
                Some(if k == 5 { 0 } else { k as usize })
            );
            assert_eq!(idx.remove("t/x", &k), Some(k as usize));
            if k > 0 {
                assert_eq!(matched_u(&idx, "t/x").len(), 2 * k as usize);
            }
        }
        assert_eq!(idx.node_count(), 0);
    }

    #[test]
    fn subscriber_sets_switch_representation_without_losing_entries() {
        let mut subs: Subs<u32, u32> = Subs::default();
        for k in 0..100 {
            assert_eq!(subs.insert(k, k), None);
            assert_eq!(subs.len(), k as usize + 1);
        }
        assert!(matches!(subs, Subs::Many(_)));
        for k in 0..98 {
            assert_eq!(subs.remove(&k), Some(k));
        }
        assert!(matches!(subs, Subs::Few(_)));
        assert_eq!(subs.get(&98), Some(&98));
        assert_eq!(subs.get(&99), Some(&99));
        assert_eq!(subs.len(), 2);
    }

    #[test]
    fn literal_only_subscriptions_cost_one_lookup_and_no_trie_walk() {
        let mut idx = TopicIndex::new();
        for i in 0..1000u32 {
            idx.insert(&format!("dev/{i}/state"), i, ());
        }
        assert_eq!(idx.node_count(), 1000);
        let mut hits = 0;
        let walked = idx.walk("dev/7/state", &mut |k, _| {
            assert_eq!(k, 7);
            hits += 1
        });
        assert_eq!(walked.nodes, 0);
        assert_eq!(walked.filters, 1);
        assert_eq!(hits, 1);
    }

    #[test]
    fn wildcard_walk_visits_only_matching_branches() {
        let mut idx = TopicIndex::new();
        for i in 0..1000u32 {
            idx.insert(&format!("dev/{i}/+"), i, ());
            idx.insert(&format!("dev/{i}/#"), i, ());
        }
        idx.insert("dev/+/state", 5000, ());
        let mut got = Vec::new();
        let walked = idx.walk("dev/7/state", &mut |k, _| got.push(k));
        got.sort();
        assert_eq!(got, [7, 7, 5000]);
        // dev, dev/7, dev/7/+, dev/+, dev/+/state
        assert_eq!(walked.nodes, 5);
        // dev/7/#, dev/7/+, dev/+/state
        assert_eq!(walked.filters, 3);
    }

    #[test]
    fn deep_filters_and_topics_are_handled_without_recursion() {
        let depth = 100_000;
        let deep_plus = vec!["+"; depth].join("/");
        let deep_topic = vec!["a"; depth].join("/");
        let mut idx = TopicIndex::new();
        idx.insert(&deep_plus, 1u32, 1usize);
        idx.insert(&format!("{deep_plus}/#"), 2, 2);
        idx.insert(&deep_topic, 3, 3);
        idx.insert("#", 4, 4);
        let mut got = matched_u(&idx, &deep_topic);
        got.sort();
        assert_eq!(got, [1, 2, 3, 4]);
        let mut got = matched_u(&idx, &"/".repeat(depth));
        got.sort();
        assert_eq!(got, [2, 4]);
        assert_eq!(idx.remove(&deep_plus, &1), Some(1));
        assert_eq!(idx.get(&format!("{deep_plus}/#"), &2), Some(&2));
        // The rest is freed by dropping the index.
        let mut other = TopicIndex::new();
        other.insert(&"a/".repeat(depth), 1u32, ());
        other.insert(&format!("{}+", "a/".repeat(depth)), 1u32, ());
        drop(other);
    }

    #[test]
    fn invalid_strings_do_not_panic() {
        let mut idx = TopicIndex::new();
        for f in ["", "a/#/b", "a+", "#/", "##", "/#/", "+#", "\0", "a/#/#"] {
            idx.insert(f, 1u32, ());
            let _ = idx.get(f, &1);
        }
        for t in ["", "#", "+", "a/#/b", "$", "/"] {
            idx.for_each_match(t, |_, _| {});
        }
        for f in ["", "a/#/b", "a+", "#/", "##", "/#/", "+#", "\0", "a/#/#"] {
            assert_eq!(idx.remove(f, &1), Some(()), "{f:?}");
        }
        assert_eq!(idx.node_count(), 0);
    }

    impl Rng {
        /// A topic of 1..=4 levels over `a`, `b`, `$x` and the empty level.
        fn topic(&mut self) -> String {
            const LEVELS: [&str; 4] = ["a", "b", "$x", ""];
            let depth = 1 + self.below(4);
            (0..depth)
                .map(|_| LEVELS[self.below(4)])
                .collect::<Vec<_>>()
                .join("/")
        }

        /// A filter of 1..=4 levels over the topic levels, `+`, and a final `#`.
        fn filter(&mut self) -> String {
            const LEVELS: [&str; 5] = ["a", "b", "$x", "", "+"];
            let depth = 1 + self.below(4);
            let mut levels: Vec<&str> = (0..depth).map(|_| LEVELS[self.below(5)]).collect();
            if self.below(3) == 0 {
                levels[depth - 1] = "#";
            }
            levels.join("/")
        }
    }

    #[test]
    fn matches_agree_with_brute_force_on_random_filters() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let mut idx: TopicIndex<u32, String> = TopicIndex::new();
            let mut model: Vec<(String, u32)> = Vec::new();
            for _ in 0..rng.below(40) + 1 {
                let filter = rng.filter();
                if validate_filter(&filter).is_err() {
                    continue; // the single empty level
                }
                let key = rng.below(4) as u32;
                let had = model.iter().any(|(f, k)| *f == filter && *k == key);
                assert_eq!(idx.insert(&filter, key, filter.clone()).is_some(), had);
                if !had {
                    model.push((filter, key));
                }
            }
            let check = |idx: &TopicIndex<u32, String>, model: &[(String, u32)], rng: &mut Rng| {
                assert_eq!(idx.len(), model.len());
                for _ in 0..40 {
                    let topic = rng.topic();
                    if validate_name(&topic).is_err() {
                        continue;
                    }
                    let mut want: Vec<(u32, String)> = model
                        .iter()
                        .filter(|(f, _)| matches(f, &topic))
                        .map(|(f, k)| (*k, f.clone()))
                        .collect();
                    want.sort();
                    assert_eq!(matched(idx, &topic), want, "round {round} topic {topic:?}");
                }
            };
            check(&idx, &model, &mut rng);
            for _ in 0..rng.below(30) {
                let (filter, key) = if !model.is_empty() && rng.below(4) != 0 {
                    model[rng.below(model.len())].clone()
                } else {
                    (rng.filter(), rng.below(4) as u32)
                };
                let at = model.iter().position(|(f, k)| *f == filter && *k == key);
                let removed = idx.remove(&filter, &key);
                assert_eq!(removed.is_some(), at.is_some(), "{filter} {key}");
                if let Some(at) = at {
                    assert_eq!(removed.as_deref(), Some(filter.as_str()));
                    model.swap_remove(at);
                }
            }
            check(&idx, &model, &mut rng);
            for (filter, key) in std::mem::take(&mut model) {
                assert!(idx.remove(&filter, &key).is_some());
            }
            assert_eq!(idx.len(), 0);
            assert_eq!(idx.node_count(), 0);
        }
    }
}
