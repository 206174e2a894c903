//! Micro-benchmarks of the two tries a publish and a subscribe consult: the subscription index
//! ([`TopicIndex::for_each_match`], once per PUBLISH) and the retained store
//! ([`RetainedTree::for_each_match`], once per SUBSCRIBE).
//!
//! **What this shows.** The cost of routing one publish must stay nearly flat as the number of
//! subscriptions grows: it should depend on how many filters match the topic and on the topic's
//! depth, not on how many subscriptions the broker holds. `topic_match/*` therefore runs the same
//! kind of lookup against indexes of 10k, 100k and 1M subscriptions whose per-topic match count
//! is kept about constant, and compares the times. Some growth is expected and real: a bigger
//! index no longer fits in the CPU caches, so each hash lookup on the way is more likely to miss.
//!
//! **Subscriptions.** A deterministic generator (fixed-seed splitmix64) builds `n` subscriptions,
//! each with its own subscriber key, over a universe of `n / 1000` sites, 100 devices per site
//! and 10 metrics, so the universe grows with `n` and each topic sees about the same number of
//! filters at every size. The mix:
//! - 70% exact filters of depth 4 to 6: `site/{s}/dev/{d}/{metric}` (50%),
//!   `site/{s}/dev/{d}` (10%), `site/{s}/dev/{d}/{metric}/raw` (10%);
//! - 20% `+` filters: `site/{s}/+/{d}/{metric}` (15%), `site/{s}/dev/+/{metric}` (5%);
//! - 10% `#` filters: `site/{s}/dev/{d}/#` (9.5%), `site/{s}/dev/#` (0.5%).
//!
//! **Lookups.** `hit_8` looks up one topic `site/{s}/dev/{d}/temp` chosen so that it matches
//! exactly 8 filters at every size; it is looked up again and again, so its path stays in cache.
//! `spread` cycles through 4096 topics `site/{s}/dev/{d}/{metric}` drawn uniformly from the whole
//! universe (the average match count is printed), so it also pays the cache misses a big index
//! causes; it is the closer model of a real publish stream. `miss` looks up a topic of the same
//! shape under a site that has no subscriptions, which matches none.
//!
//! **Retained.** `retained_lookup/*` fills a [`RetainedTree`] with one message per topic
//! `site/{s}/dev/{d}/{metric}` (10 devices per site, 10 metrics, so 1M messages span 10,000
//! sites) and looks up `site/17/dev/+/temp` (10 messages), `site/17/dev/3/#` (10 messages) and
//! the exact `site/17/dev/3/temp` (1 message). 10k messages are measured as well, for the ratio.
//!
//! Run: `cargo bench -p tern-broker --bench topic_match` (add `topic_match/` or
//! `retained_lookup/` as a filter to run one group).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tern_broker::retained::RetainedTree;
use tern_broker::topic_index::TopicIndex;

/// The ten metric names of a device.
const METRICS: [&str; 10] = [
    "temp", "humidity", "pressure", "co2", "voltage", "current", "power", "rssi", "status",
    "uptime",
];

/// How many filters the `hit` topic matches.
const HIT_MATCHES: usize = 8;

/// Topics in the `spread` stream.
const SPREAD: usize = 4096;

/// Devices per site in the subscription universe.
const DEVICES: u64 = 100;

/// splitmix64: a tiny deterministic generator, so every run builds the same index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One filter of the mix described in the module doc.
fn filter(rng: &mut Rng, sites: u64) -> String {
    let s = rng.below(sites);
    let d = rng.below(DEVICES);
    let m = METRICS[rng.below(METRICS.len() as u64) as usize];
    // Shares in thousandths.
    match rng.below(1000) {
        0..500 => format!("site/{s}/dev/{d}/{m}"),
        500..600 => format!("site/{s}/dev/{d}"),
        600..700 => format!("site/{s}/dev/{d}/{m}/raw"),
        700..850 => format!("site/{s}/+/{d}/{m}"),
        850..900 => format!("site/{s}/dev/+/{m}"),
        900..995 => format!("site/{s}/dev/{d}/#"),
        _ => format!("site/{s}/dev/#"),
    }
}

/// An index of `n` subscriptions, subscriber keys `0..n`.
fn build_index(n: usize) -> TopicIndex<u32, u32> {
    let sites = (n as u64 / 1000).max(1);
    let mut rng = Rng(0x7465_726e);
    let mut index = TopicIndex::new();
    for key in 0..n as u32 {
        index.insert(&filter(&mut rng, sites), key, key);
    }
    index
}

fn count_matches(index: &TopicIndex<u32, u32>, topic: &str) -> usize {
    let mut n = 0;
    index.for_each_match(topic, |_, _| n += 1);
    n
}

/// The topic used for `hit`: the first `site/{s}/dev/{d}/temp` (scanning from site 7, device
/// 42) that matches exactly [`HIT_MATCHES`] filters, so every size is measured on the same load.
fn hit_topic(index: &TopicIndex<u32, u32>, sites: u64) -> (String, usize) {
    for s in (7..sites).chain(0..7.min(sites)) {
        for d in (42..DEVICES).chain(0..42) {
            let topic = format!("site/{s}/dev/{d}/temp");
            let n = count_matches(index, &topic);
            if n == HIT_MATCHES {
                return (topic, n);
            }
        }
    }
    panic!("no topic with a handful of matches");
}

fn bench_topic_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_match");
    group.throughput(Throughput::Elements(1));
    for n in [10_000, 100_000, 1_000_000] {
        let index = build_index(n);
        assert_eq!(index.len(), n);
        let sites = (n as u64 / 1000).max(1);
        let (hit, matches) = hit_topic(&index, sites);
        let miss = format!("site/{}/dev/42/temp", sites + 1);
        assert_eq!(count_matches(&index, &miss), 0);
        eprintln!("topic_match n={n}: hit {hit} matches {matches} filters; miss {miss}");

        // A stream of topics spread over the whole universe, as a real publish stream is: unlike
        // `hit`, which keeps touching the same few nodes, this one pays the cache misses of a big
        // index.
        let mut rng = Rng(0x7370_7265_6164);
        let spread: Vec<String> = (0..SPREAD)
            .map(|_| {
                let s = rng.below(sites);
                let d = rng.below(DEVICES);
                let m = METRICS[rng.below(METRICS.len() as u64) as usize];
                format!("site/{s}/dev/{d}/{m}")
            })
            .collect();
        let total: usize = spread.iter().map(|t| count_matches(&index, t)).sum();
        eprintln!(
            "topic_match n={n}: spread of {SPREAD} topics matches {:.2} filters on average",
            total as f64 / SPREAD as f64
        );

        group.bench_function(BenchmarkId::new(format!("hit_{matches}"), n), |b| {
            b.iter(|| {
                let mut sum = 0u32;
                index.for_each_match(black_box(&hit), |k, v| sum = sum.wrapping_add(k ^ *v));
                sum
            })
        });
        group.bench_function(BenchmarkId::new("spread", n), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % SPREAD;
                let mut sum = 0u32;
                index.for_each_match(black_box(&spread[i]), |k, v| sum = sum.wrapping_add(k ^ *v));
                sum
            })
        });
        group.bench_function(BenchmarkId::new("miss", n), |b| {
            b.iter(|| {
                let mut sum = 0u32;
                index.for_each_match(black_box(&miss), |k, v| sum = sum.wrapping_add(k ^ *v));
                sum
            })
        });
    }
    group.finish();
}

/// A store of `n` retained messages, `site/{s}/dev/{d}/{metric}` with 10 devices a site.
fn build_retained(n: usize) -> RetainedTree<u64> {
    let mut tree = RetainedTree::new();
    let per_site = 10 * METRICS.len();
    for i in 0..n {
        let (s, rest) = (i / per_site, i % per_site);
        let (d, m) = (rest / METRICS.len(), METRICS[rest % METRICS.len()]);
        tree.insert(&format!("site/{s}/dev/{d}/{m}"), i as u64);
    }
    tree
}

fn bench_retained(c: &mut Criterion) {
    let mut group = c.benchmark_group("retained_lookup");
    for n in [10_000, 1_000_000] {
        let tree = build_retained(n);
        assert_eq!(tree.len(), n);
        for (name, filter) in [
            ("plus", "site/17/dev/+/temp"),
            ("hash", "site/17/dev/3/#"),
            ("exact", "site/17/dev/3/temp"),
        ] {
            let mut found = 0;
            tree.for_each_match(filter, |_, _| found += 1);
            eprintln!("retained_lookup n={n}: {filter} matches {found}");
            group.throughput(Throughput::Elements(found));
            group.bench_function(BenchmarkId::new(format!("{name}_{found}"), n), |b| {
                b.iter(|| {
                    let mut sum = 0u64;
                    tree.for_each_match(black_box(filter), |t, m| {
                        sum = sum.wrapping_add(t.len() as u64 ^ *m)
                    });
                    sum
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_topic_match, bench_retained);
criterion_main!(benches);
