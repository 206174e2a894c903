//! The retained-message store: the last retained message of every topic name, found by filter.
//!
//! [`RetainedTree`] owns the retained messages of the broker, at most one per topic name. A new
//! subscription asks it for every message whose topic matches the subscription's filter.
//!
//! Shape: a trie with one node per topic level. A node maps each literal next level to its child
//! and holds the message of the topic that ends there; the full topic is not stored but rebuilt
//! from the levels during a walk. Each node counts the messages in its subtree, which keeps the
//! trie free of empty nodes and lets removal cut off a dead branch in one step.
//!
//! Lookups by filter walk only the branches the filter can match: `a/+/c` visits the children of
//! `a` and then `c` under each; `a/#` visits the subtree of `a`, including `a` itself (`sport/#`
//! matches `sport`); a filter without wildcards is a direct lookup. `+` matches exactly one level,
//! possibly empty (`+/+` matches `/finance`, `+` does not). Filters whose first level is `+` or `#`
//! do not match topic names starting with `$` [MQTT-4.7.2-1]: `#` misses `$SYS/x` while `$SYS/#`
//! matches it.
//!
//! Nothing here recurses: a topic name can hold tens of thousands of levels, so walks, removal and
//! drop use explicit stacks. Invalid strings never panic; a `#` that is not the last level of a
//! filter is then taken as a literal level.

use crate::keyed::KeyedMap;
use std::mem;

/// Retained messages by topic name, searchable by topic filter.
pub struct RetainedTree<M> {
    /// The level before the first; it never holds a message itself (a topic has at least one
    /// level). Invariant: `root.count` is the number of messages held.
    root: Node<M>,
}

impl<M> Default for RetainedTree<M> {
    fn default() -> Self {
        RetainedTree {
            root: Node::default(),
        }
    }
}

impl<M> RetainedTree<M> {
    /// A store holding no message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `msg` as the retained message of `topic`; returns the replaced one.
    pub fn insert(&mut self, topic: &str, msg: M) -> Option<M> {
        if let Some(slot) = self.get_mut(topic) {
            return Some(mem::replace(slot, msg));
        }
        let mut node = &mut self.root;
        node.count += 1;
        for level in topic.split('/') {
            node = node.children.entry(level.into()).or_default();
            node.count += 1;
        }
        node.msg = Some(msg);
        None
    }

    /// Deletes the retained message of `topic`; prunes empty nodes.
    pub fn remove(&mut self, topic: &str) -> Option<M> {
        // First pass, read-only: check the message exists and find the highest node on its path
        // that holds nothing else; that node's subtree is cut off whole.
        let mut node = &self.root;
        let mut cut = None;
        for (depth, level) in topic.split('/').enumerate() {
            node = node.children.get(level)?;
            if cut.is_none() && node.count == 1 {
                cut = Some(depth);
            }
        }
        node.msg.as_ref()?;

        // Second pass: the path exists, so no `?` below can fail.
        self.root.count -= 1;
        let mut node = &mut self.root;
        let mut levels = topic.split('/').enumerate();
        while let Some((depth, level)) = levels.next() {
            if cut == Some(depth) {
                let mut detached = node.children.remove(level)?;
                let mut n = &mut detached;
                for (_, level) in levels.by_ref() {
                    n = n.children.get_mut(level)?;
                }
                return n.msg.take();
            }
            node = node.children.get_mut(level)?;
            node.count -= 1;
        }
        node.msg.take()
    }

    /// The retained message of `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.msg.as_ref()
    }

    /// Calls `f(topic, msg)` for every retained message whose topic matches the FILTER `filter`.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &M)) {
        let wild = filter.split('/').any(|level| level == "+" || level == "#");
        if !wild {
            if let Some(msg) = self.get(filter) {
                f(filter, msg);
            }
            return;
        }
        self.walk(Want::Levels(Some(filter)), &mut f);
    }

    /// Removes every message for which `keep` returns false (used for expiry sweeps); returns how
    /// many.
    ///
    /// Visits every message once, then removes the rejected ones by topic, so the cost is the
    /// size of the store plus the depth of each removed topic.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &M) -> bool) -> usize {
        let mut doomed: Vec<Box<str>> = Vec::new();
        self.walk(Want::All, &mut |topic, msg| {
            if !keep(topic, msg) {
                doomed.push(topic.into());
            }
        });
        for topic in &doomed {
            self.remove(topic);
        }
        doomed.len()
    }

    /// Number of retained messages held.
    pub fn len(&self) -> usize {
        self.root.count
    }

    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.root.count == 0
    }

    /// The retained message of `topic`, mutably.
    fn get_mut(&mut self, topic: &str) -> Option<&mut M> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        node.msg.as_mut()
    }

    /// Calls `f(topic, msg)` for every message `want` selects; returns how many nodes below the
    /// root it visited (the cost of the lookup).
    fn walk(&self, want: Want<'_>, f: &mut impl FnMut(&str, &M)) -> usize {
        let mut stack = Vec::new();
        // The root holds no message; only its children are walked.
        self.root.expand(want, true, None, &mut stack);
        let mut topic = String::new();
        let mut visited = 0;
        while let Some(Frame {
            node,
            level,
            parent_len,
            want,
        }) = stack.pop()
        {
            visited += 1;
            match parent_len {
                None => topic.clear(),
                Some(len) => {
                    topic.truncate(len);
                    topic.push('/');
                }
            }
            topic.push_str(level);
            let own = node.expand(want, false, Some(topic.len()), &mut stack);
            if let (true, Some(msg)) = (own, &node.msg) {
                f(&topic, msg);
            }
        }
        visited
    }

    /// Nodes below the root: zero once everything is removed.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += node.children.len();
            stack.extend(node.children.values());
        }
        count
    }
}

/// Splits off the first level of a filter: `a/b/c` gives `a` and `Some("b/c")`, `a` gives `a`
/// and `None`.
fn split_level(s: &str) -> (&str, Option<&str>) {
    match s.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (s, None),
    }
}

/// What a walk looks for in a node's subtree.
#[derive(Debug, Clone, Copy)]
enum Want<'f> {
    /// The node's message if `None`, else the part of the filter still to match below it.
    Levels(Option<&'f str>),
    /// Every message of the subtree, the node's own included.
    All,
}

/// A node waiting to be visited by a walk.
struct Frame<'t, 'f, M> {
    /// The node.
    node: &'t Node<M>,
    /// The node's level, appended to its parent's topic.
    level: &'t str,
    /// Length of the parent's topic in the walk's topic buffer; `None` under the root.
    parent_len: Option<usize>,
    /// What to look for from this node down.
    want: Want<'f>,
}

/// One topic level.
struct Node<M> {
    /// Next levels.
    children: KeyedMap<Box<str>, Node<M>>,
    /// The retained message of the topic ending at this node.
    msg: Option<M>,
    /// Messages in this subtree, this node's included.
    /// Invariant: at least 1 for every node but the root, so the trie has no empty nodes.
    count: usize,
}

impl<M> Default for Node<M> {
    fn default() -> Self {
        Node {
            children: KeyedMap::default(),
            msg: None,
            count: 0,
        }
    }
}

impl<M> Node<M> {
    /// Pushes onto `stack` the children of this node that `want` selects, and returns whether
    /// this node's own message matches. `at_root` applies the `$` rule to wildcard levels;
    /// `topic_len` is the length of this node's topic (`None` for the root).
    fn expand<'t, 'f>(
        &'t self,
        want: Want<'f>,
        at_root: bool,
        topic_len: Option<usize>,
        stack: &mut Vec<Frame<'t, 'f, M>>,
    ) -> bool {
        let (own, below) = match want {
            Want::All => (true, Want::All),
            Want::Levels(None) => return true,
            Want::Levels(Some(filter)) => match split_level(filter) {
                ("#", None) => (true, Want::All),
                ("+", rest) => (false, Want::Levels(rest)),
                (level, rest) => {
                    if let Some((level, node)) = self.children.get_key_value(level) {
                        let want = Want::Levels(rest);
                        stack.push(Frame {
                            node,
                            level,
                            parent_len: topic_len,
                            want,
                        });
                    }
                    return false;
                }
            },
        };
        // [MQTT-4.7.2-1]: a filter's leading `+` or `#` does not match a topic starting with
        // `$`. A full sweep (`All` from the root) is not a filter and sees every topic.
        let hide_dollar = at_root && !matches!(want, Want::All);
        for (level, node) in &self.children {
            if !(hide_dollar && level.starts_with('$')) {
                stack.push(Frame {
                    node,
                    level,
                    parent_len: topic_len,
                    want: below,
                });
            }
        }
        own
    }
}

impl<M> Drop for Node<M> {
    /// Frees the subtree with an explicit stack: a deep topic must not overflow the call stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut stack: Vec<Node<M>> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, n)| n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use tern_codec::topic::{matches, validate_filter, validate_name};

    /// A store whose messages are their own topic names.
    fn store_of(topics: &[&str]) -> RetainedTree<String> {
        let mut tree = RetainedTree::new();
        for t in topics {
            assert_eq!(validate_name(t), Ok(()), "{t}");
            tree.insert(t, t.to_string());
        }
        tree
    }

    /// The sorted topics `tree` reports for `filter`, checking each against its message.
    fn topics(tree: &RetainedTree<String>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        tree.for_each_match(filter, |topic, msg| {
            assert_eq!(topic, msg);
            out.push(topic.to_string());
        });
        out.sort();
        out
    }

    #[test]
    fn exact_filter_finds_only_its_topic() {
        let tree = store_of(&["a/b", "a/b/c", "a", "a//b", "/"]);
        assert_eq!(topics(&tree, "a/b"), ["a/b"]);
        assert_eq!(topics(&tree, "a//b"), ["a//b"]);
        assert_eq!(topics(&tree, "/"), ["/"]);
        assert!(topics(&tree, "a/c").is_empty());
        assert!(topics(&tree, "b").is_empty());
        assert_eq!(tree.get("a/b/c").map(String::as_str), Some("a/b/c"));
        assert_eq!(tree.get("a/b/c/d"), None);
    }

    #[test]
    fn multi_level_wildcard_finds_parent_and_every_level_below() {
        let tree = store_of(&[
            "sport",
            "sport/",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sports",
        ]);
        assert_eq!(
            topics(&tree, "sport/tennis/player1/#"),
            [
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(topics(&tree, "sport/#").len(), 5);
        assert!(!topics(&tree, "sport/#").contains(&"sports".to_string()));
        assert_eq!(topics(&tree, "#").len(), 6);
    }

    #[test]
    fn single_level_wildcard_finds_exactly_one_possibly_empty_level() {
        let tree = store_of(&[
            "sport",
            "sport/",
            "sport/tennis",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "/finance",
            "finance",
        ]);
        assert_eq!(topics(&tree, "sport/tennis/+"), ["sport/tennis/player1"]);
        assert_eq!(topics(&tree, "sport/+"), ["sport/", "sport/tennis"]);
        assert_eq!(topics(&tree, "+/+"), ["/finance", "sport/", "sport/tennis"]);
        assert_eq!(topics(&tree, "/+"), ["/finance"]);
        assert_eq!(topics(&tree, "+"), ["finance", "sport"]);
        assert_eq!(
            topics(&tree, "+/tennis/#"),
            [
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking"
            ]
        );
    }

    #[test]
    fn leading_wildcards_do_not_find_dollar_topics() {
        let tree = store_of(&[
            "$SYS/monitor/Clients",
            "$SYS",
            "SYS/monitor/Clients",
            "a/$b",
        ]);
        assert_eq!(topics(&tree, "#"), ["SYS/monitor/Clients", "a/$b"]);
        assert_eq!(topics(&tree, "+/monitor/Clients"), ["SYS/monitor/Clients"]);
        assert_eq!(topics(&tree, "+"), Vec::<String>::new());
        assert_eq!(topics(&tree, "$SYS/#"), ["$SYS", "$SYS/monitor/Clients"]);
        assert_eq!(topics(&tree, "$SYS/monitor/+"), ["$SYS/monitor/Clients"]);
        assert_eq!(topics(&tree, "a/+"), ["a/$b"]);
    }

    #[test]
    fn insert_on_a_held_topic_replaces_and_returns_old_message() {
        let mut tree = RetainedTree::new();
        assert_eq!(tree.insert("a/b", 1), None);
        assert_eq!(tree.insert("a/b", 2), Some(1));
        assert_eq!(tree.insert("a", 3), None);
        assert_eq!(tree.get("a/b"), Some(&2));
        assert_eq!(tree.len(), 2);
    }

    #[test]
    fn remove_returns_message_and_prunes_every_node() {
        let list = [
            "a/b/c",
            "a/b",
            "a",
            "a/b/d",
            "/",
            "//",
            "$SYS/x",
            "a/b/c/d/e",
        ];
        let mut tree = RetainedTree::new();
        for (i, t) in list.iter().enumerate() {
            tree.insert(t, i);
        }
        assert_eq!(tree.len(), list.len());
        assert_eq!(tree.remove("a/b/c/d"), None);
        assert_eq!(tree.remove("x"), None);
        assert_eq!(tree.len(), list.len());
        for (i, t) in list.iter().enumerate() {
            assert_eq!(tree.remove(t), Some(i), "{t}");
            assert_eq!(tree.remove(t), None, "{t}");
            assert_eq!(tree.len(), list.len() - i - 1);
            for u in &list[i + 1..] {
                assert!(tree.get(u).is_some(), "{u} after removing {t}");
            }
        }
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn retain_removes_rejected_messages_and_counts_them() {
        let mut tree = RetainedTree::new();
        for i in 0..100u32 {
            tree.insert(&format!("t/{}/{i}", i % 7), i);
        }
        tree.insert("$SYS/old", 1000);
        let removed = tree.retain(|topic, &i| {
            assert!(topic.ends_with(&format!("/{i}")) || i == 1000);
            i % 2 == 1
        });
        assert_eq!(removed, 51);
        assert_eq!(tree.len(), 50);
        assert_eq!(tree.get("$SYS/old"), None);
        assert_eq!(tree.get("t/1/1"), Some(&1));
        assert_eq!(tree.retain(|_, _| false), 50);
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn wildcard_filter_walks_only_matching_branches() {
        let mut tree = RetainedTree::new();
        for i in 0..200 {
            for j in 0..50 {
                tree.insert(&format!("x{i}/{j}/c"), ());
            }
        }
        for j in 0..10 {
            tree.insert(&format!("a/{j}/c"), ());
            tree.insert(&format!("a/{j}/d/e"), ());
        }
        let mut hits = 0;
        // a, its 10 children, and `c` under each.
        assert_eq!(
            tree.walk(Want::Levels(Some("a/+/c")), &mut |_, _| hits += 1),
            21
        );
        assert_eq!(hits, 10);
        let mut hits = 0;
        // the subtree of a/3: a, a/3, a/3/c, a/3/d, a/3/d/e.
        assert_eq!(
            tree.walk(Want::Levels(Some("a/3/#")), &mut |_, _| hits += 1),
            5
        );
        assert_eq!(hits, 2);
    }

    #[test]
    fn deep_topics_are_handled_without_recursion() {
        let depth = 100_000;
        let deep = vec!["a"; depth].join("/");
        let empty_levels = "/".repeat(depth);
        let mut tree = RetainedTree::new();
        tree.insert(&deep, 1);
        tree.insert(&empty_levels, 2);
        tree.insert(&format!("{deep}/b"), 3);
        assert_eq!(tree.get(&deep), Some(&1));
        let mut got = Vec::new();
        tree.for_each_match("#", |t, &m| got.push((t.len(), m)));
        got.sort();
        assert_eq!(got, [(depth, 2), (2 * depth - 1, 1), (2 * depth + 1, 3)]);
        let mut got = Vec::new();
        tree.for_each_match(&format!("{deep}/+"), |_, &m| got.push(m));
        assert_eq!(got, [3]);
        assert_eq!(tree.remove(&deep), Some(1));
        assert_eq!(tree.retain(|_, &m| m != 2), 1);
        // The rest is freed by dropping the tree.
    }

    #[test]
    fn invalid_strings_do_not_panic() {
        let mut tree = RetainedTree::new();
        for t in ["", "a/#/b", "+", "#", "\0", "a/+"] {
            tree.insert(t, ());
            assert!(tree.get(t).is_some());
        }
        for f in ["", "a/#/b", "a+", "#/", "##", "/#/", "+#", "a/#/#", "+/#/+"] {
            tree.for_each_match(f, |_, _| {});
        }
        for t in ["", "a/#/b", "+", "#", "\0", "a/+"] {
            assert_eq!(tree.remove(t), Some(()));
        }
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn a_million_messages_are_stored_found_and_swept() {
        let mut tree = RetainedTree::new();
        let n = 1_000_000u32;
        for i in 0..n {
            tree.insert(&format!("site/{}/dev{}/temp", i % 100, i), i);
        }
        assert_eq!(tree.len(), n as usize);
        assert_eq!(tree.get("site/42/dev4242/temp"), Some(&4242));
        let mut hits = 0;
        let visited = tree.walk(Want::Levels(Some("site/7/+/temp")), &mut |_, _| hits += 1);
        assert_eq!(hits, n as usize / 100);
        assert_eq!(visited, 2 + 2 * n as usize / 100);
        assert_eq!(tree.retain(|_, &i| i % 100 != 7), n as usize / 100);
        assert_eq!(tree.len(), n as usize - n as usize / 100);
    }

    impl Rng {
        /// 1..=4 levels drawn from `levels`, the last one possibly replaced by `#`.
        fn levels(&mut self, levels: &[&str], hash: bool) -> String {
            let depth = 1 + self.below(4);
            let mut out: Vec<&str> = (0..depth)
                .map(|_| levels[self.below(levels.len())])
                .collect();
            if hash && self.below(3) == 0 {
                out[depth - 1] = "#";
            }
            out.join("/")
        }
    }

    #[test]
    fn matches_agree_with_brute_force_on_random_topics() {
        const NAME: [&str; 4] = ["a", "b", "$x", ""];
        const FILTER: [&str; 5] = ["a", "b", "$x", "", "+"];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..200 {
            let mut tree = RetainedTree::new();
            let mut model: Vec<String> = Vec::new();
            for _ in 0..rng.below(40) + 1 {
                let topic = rng.levels(&NAME, false);
                if validate_name(&topic).is_err() {
                    continue; // the single empty level
                }
                let had = model.contains(&topic);
                assert_eq!(tree.insert(&topic, topic.clone()).is_some(), had);
                if !had {
                    model.push(topic);
                }
            }
            let check = |tree: &RetainedTree<String>, model: &[String], rng: &mut Rng| {
                assert_eq!(tree.len(), model.len());
                for _ in 0..40 {
                    let filter = rng.levels(&FILTER, true);
                    if validate_filter(&filter).is_err() {
                        continue;
                    }
                    let mut want: Vec<String> = model
                        .iter()
                        .filter(|t| matches(&filter, t))
                        .cloned()
                        .collect();
                    want.sort();
                    assert_eq!(
                        topics(tree, &filter),
                        want,
                        "round {round} filter {filter:?}"
                    );
                }
            };
            check(&tree, &model, &mut rng);
            for _ in 0..rng.below(30) {
                let topic = if !model.is_empty() && rng.below(4) != 0 {
                    model[rng.below(model.len())].clone()
                } else {
                    rng.levels(&NAME, false)
                };
                let at = model.iter().position(|t| *t == topic);
                assert_eq!(tree.remove(&topic).is_some(), at.is_some(), "{topic}");
                if let Some(at) = at {
                    model.swap_remove(at);
                }
            }
            check(&tree, &model, &mut rng);
            let cut = rng.below(2);
            let removed = tree.retain(|t, _| t.len() % 2 == cut);
            let before = model.len();
            model.retain(|t| t.len() % 2 == cut);
            assert_eq!(removed, before - model.len());
            check(&tree, &model, &mut rng);
            for topic in std::mem::take(&mut model) {
                assert!(tree.remove(&topic).is_some());
            }
            assert_eq!(tree.node_count(), 0);
        }
    }
}
