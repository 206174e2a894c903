//! What subscribers measure: latency histograms and per-publisher sequence tracking that tells
//! new, duplicated, out-of-order and missing messages apart.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::payload::Header;

/// Most gap ranges a stream remembers; past it the oldest gap is forgotten (a late arrival into
/// it then counts as a duplicate).
const MAX_GAPS: usize = 100_000;

/// A new latency histogram in microseconds (3 significant figures, grows as needed).
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant figures is a valid precision");
    h.auto(true);
    h
}

/// How a sequence number relates to those already seen from the same publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Not seen before, and above every number seen so far.
    InOrder,
    /// Not seen before, but below a number already seen.
    OutOfOrder,
    /// Seen before.
    Duplicate,
}

/// The sequence numbers received from one publisher.
#[derive(Debug, Default)]
pub struct Stream {
    highest: Option<u64>,
    /// Missing numbers below `highest`, as ranges `start -> end` (end exclusive).
    gaps: BTreeMap<u64, u64>,
}

impl Stream {
    /// Records `seq` and says how it arrived.
    pub fn record(&mut self, seq: u64) -> Arrival {
        let start = match self.highest {
            None => 0,
            Some(h) if seq > h => h + 1,
            Some(_) => return self.fill(seq),
        };
        if seq > start {
            self.gaps.insert(start, seq);
            if self.gaps.len() > MAX_GAPS {
                self.gaps.pop_first();
            }
        }
        self.highest = Some(seq);
        Arrival::InOrder
    }

    /// A number at or below the highest: either it fills a gap or it is a repeat.
    fn fill(&mut self, seq: u64) -> Arrival {
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            return Arrival::Duplicate;
        };
        if seq >= end {
            return Arrival::Duplicate;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq);
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
        }
        Arrival::OutOfOrder
    }

    /// How many of the numbers `first..=last` never arrived.
    pub fn missing(&self, first: u64, last: u64) -> u64 {
        if last < first {
            return 0;
        }
        let Some(highest) = self.highest else {
            return last - first + 1;
        };
        let mut missing: u64 = self
            .gaps
            .iter()
            .map(|(&s, &e)| {
                let (s, e) = (s.max(first), e.min(last + 1));
                e.saturating_sub(s)
            })
            .sum();
        if highest < last {
            missing += last - highest.max(first.saturating_sub(1));
        }
        missing
    }
}

/// One receiver's measurements: a subscriber, or all members of one shared subscription.
#[derive(Debug)]
pub struct Recorder {
    warmup_end_ns: u64,
    /// Latency of measured messages, microseconds.
    pub latency: Histogram<u64>,
    /// Sequence tracking per publisher.
    pub streams: HashMap<u32, Stream>,
    /// Measured messages received (duplicates included).
    pub received: u64,
    /// Measured messages received more than once.
    pub duplicated: u64,
    /// Measured messages that arrived after a later one of the same publisher.
    pub out_of_order: u64,
    /// Messages sent during warm-up (not measured).
    pub warmup: u64,
    /// Payloads that are not bench payloads.
    pub malformed: u64,
}

/// What one delivery counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Sent during warm-up, or not a bench payload: not measured.
    Ignored,
    /// Measured, and new.
    New,
    /// Measured, and a repeat.
    Duplicate,
}

impl Recorder {
    /// Messages sent before `warmup_end_ns` count as warm-up from now on.
    pub fn set_warmup_end(&mut self, warmup_end_ns: u64) {
        self.warmup_end_ns = warmup_end_ns;
    }

    /// An empty recorder that measures messages sent at or after `warmup_end_ns`.
    pub fn new(warmup_end_ns: u64) -> Self {
        Recorder {
            warmup_end_ns,
            latency: new_histogram(),
            streams: HashMap::new(),
            received: 0,
            duplicated: 0,
            out_of_order: 0,
            warmup: 0,
            malformed: 0,
        }
    }

    /// Records one delivery of `payload` received at `now_ns` by a subscriber that has seen the
    /// highest sequence numbers `seen` per publisher. A new message below the highest that
    /// subscriber saw from its publisher counts as out of order; for members of a shared
    /// subscription, which share one recorder, order is judged per member.
    pub fn record(&mut self, payload: &[u8], now_ns: u64, seen: &mut HashMap<u32, u64>) -> Counted {
        let Some(h) = Header::decode(payload) else {
            self.malformed += 1;
            return Counted::Ignored;
        };
        let arrival = self.streams.entry(h.publisher).or_default().record(h.seq);
        let highest = seen.entry(h.publisher).or_insert(h.seq);
        let reordered = h.seq < *highest;
        *highest = (*highest).max(h.seq);
        if h.sent_ns < self.warmup_end_ns {
            self.warmup += 1;
            return Counted::Ignored;
        }
        self.received += 1;
        let micros = now_ns.saturating_sub(h.sent_ns) / 1000;
        let _ = self.latency.record(micros.max(1));
        match arrival {
            Arrival::InOrder | Arrival::OutOfOrder => {
                if reordered {
                    self.out_of_order += 1;
                }
                Counted::New
            }
            Arrival::Duplicate => {
                self.duplicated += 1;
                Counted::Duplicate
            }
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// 50th percentile.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
}

impl Latency {
    /// The summary of `h`.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tells_arrivals_apart() {
        let mut s = Stream::default();
        assert_eq!(s.record(0), Arrival::InOrder);
        assert_eq!(s.record(1), Arrival::InOrder);
        assert_eq!(s.record(1), Arrival::Duplicate);
        assert_eq!(s.record(5), Arrival::InOrder);
        assert_eq!(s.missing(0, 5), 3);
        assert_eq!(s.record(3), Arrival::OutOfOrder);
        assert_eq!(s.record(3), Arrival::Duplicate);
        assert_eq!(s.missing(0, 5), 2);
        assert_eq!(s.missing(3, 5), 1);
        assert_eq!(s.missing(0, 8), 5, "tail after the highest counts");
        assert_eq!(s.missing(7, 8), 2);
        assert_eq!(Stream::default().missing(2, 4), 3);
    }

    #[test]
    fn first_arrival_above_zero_leaves_a_gap() {
        let mut s = Stream::default();
        assert_eq!(s.record(2), Arrival::InOrder);
        assert_eq!(s.record(0), Arrival::OutOfOrder);
        assert_eq!(s.missing(0, 2), 1);
    }

    #[test]
    fn recorder_ignores_warmup() {
        let mut r = Recorder::new(1_000);
        let early = Header {
            publisher: 1,
            seq: 0,
            sent_ns: 10,
        };
        let late = Header {
            publisher: 1,
            seq: 1,
            sent_ns: 2_000,
        };
        let seen = &mut HashMap::new();
        assert_eq!(r.record(&early.encode(20), 50, seen), Counted::Ignored);
        assert_eq!(r.record(&late.encode(20), 5_000, seen), Counted::New);
        assert_eq!(r.record(&late.encode(20), 6_000, seen), Counted::Duplicate);
        assert_eq!(r.record(b"short", 6_000, seen), Counted::Ignored);
        assert_eq!(
            (r.received, r.duplicated, r.warmup, r.malformed),
            (2, 1, 1, 1)
        );
        assert_eq!(Latency::of(&r.latency).max, 4);
    }

    #[test]
    fn out_of_order_is_judged_per_subscriber() {
        let mut r = Recorder::new(0);
        let msg = |seq| {
            Header {
                publisher: 0,
                seq,
                sent_ns: 1,
            }
            .encode(20)
        };
        let (a, b) = (&mut HashMap::new(), &mut HashMap::new());
        // Two members of a shared subscription each get an ascending half of the stream.
        assert_eq!(r.record(&msg(1), 2, a), Counted::New);
        assert_eq!(r.record(&msg(0), 2, b), Counted::New);
        assert_eq!(r.record(&msg(2), 2, b), Counted::New);
        assert_eq!(r.out_of_order, 0);
        assert_eq!(r.record(&msg(4), 2, a), Counted::New);
        assert_eq!(r.record(&msg(3), 2, a), Counted::New);
        assert_eq!(r.out_of_order, 1);
    }
}
