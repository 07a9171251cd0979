//! The stage mixer: which source's sequence comes at each position of a stage, and which tokens
//! of the source's stream a sequence is.
//!
//! * Sources are packed first, then interleaved, so budgets count tokens: source `s` gives
//!   `n_s` sequences of `L` tokens each (`n_s = round(budget / L)`), its `j`-th sequence being
//!   tokens `[(start + j)·L, (start + j + 1)·L + 1)` of its stream (one extra token: the last
//!   label), where `start` is where earlier stages left the stream.
//! * Interleaving puts the `j`-th sequence of `s` at key `(j + u_s) / n_s` (`u_s` a seeded
//!   offset in (0, 1)) and orders all sequences by key: each source is spread evenly over the
//!   stage instead of arriving in runs; any prefix of the stage holds every source in
//!   proportion to within `1 + S·share` sequences (S sources), and the whole stage exactly.
//! * Resume is O(1) in the position: [`StageOrder::counts_before`] finds how many sequences of
//!   every source precede position `p` with `O(S² log N)` exact integer arithmetic and no
//!   replay, so a restart from a single counter continues the identical order.
//! * A source's stream is its shards in a seeded order that changes every epoch; consuming past
//!   the end starts the next epoch ([`SourceStream`]).
//! * Ranks: step `k` is positions `[k·B, (k+1)·B)`; rank `r` of `R` reads the `r`-th contiguous
//!   slice of `B/R` of them ([`rank_positions`]).
//!
//! The random numbers come from SplitMix64 and xxh3 written into this crate's behaviour, not
//! from `rand`, whose generators may change between releases: a resumed run must see the
//! same order as the original even after an upgrade.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

const D: i128 = 1 << 32;

/// SplitMix64: a tiny, well-known, stable generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A stable 64-bit key from a seed and names.
pub fn seeded_key(seed: u64, parts: &[&str]) -> u64 {
    let mut h = SplitMix64(seed).next();
    for p in parts {
        h = xxhash_rust::xxh3::xxh3_64_with_seed(p.as_bytes(), h);
    }
    h
}

/// The order of one stage's sequences.
#[derive(Debug, Clone)]
pub struct StageOrder {
    counts: Vec<u64>,
    /// `u_s · 2^32`, in `[1, 2^32)`.
    salts: Vec<u64>,
    total: u64,
}

/// Sequence `index` (0-based, within the stage) of source `source` (index into the list given
/// to [`StageOrder::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub source: usize,
    pub index: u64,
}

impl StageOrder {
    /// `sources`: `(name, sequences)` in a fixed order (the plan's: by name).
    pub fn new(seed: u64, stage: &str, sources: &[(&str, u64)]) -> Self {
        let salts = sources.iter().map(|(name, _)| (seeded_key(seed, &[stage, name]) >> 32).max(1)).collect();
        let counts: Vec<u64> = sources.iter().map(|s| s.1).collect();
        StageOrder { total: counts.iter().sum(), counts, salts }
    }

    pub fn len(&self) -> u64 {
        self.total
    }
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// `key(s, j) < key(t, k)`, ties broken by source index.
    fn before(&self, s: usize, j: u64, t: usize, k: u64) -> bool {
        let a = (j as i128 * D + self.salts[s] as i128) * self.counts[t] as i128;
        let b = (k as i128 * D + self.salts[t] as i128) * self.counts[s] as i128;
        a < b || (a == b && s < t)
    }

    /// How many sequences of source `t` come before slot `(s, j)`.
    fn count_before(&self, t: usize, s: usize, j: u64) -> u64 {
        if t == s {
            return j;
        }
        let n_t = self.counts[t];
        if n_t == 0 {
            return 0;
        }
        // k precedes (s, j) ⇔ (k·D + a_t)·n_s < (j·D + a_s)·n_t  (≤ when t < s).
        let m = D * self.counts[s] as i128;
        let x = (j as i128 * D + self.salts[s] as i128) * n_t as i128 - self.salts[t] as i128 * self.counts[s] as i128;
        let c = if t < s {
            if x < 0 {
                0
            } else {
                x / m + 1
            }
        } else if x <= 0 {
            0
        } else {
            (x + m - 1) / m
        };
        (c as u64).min(n_t)
    }

    /// The position of slot `(s, j)` in the stage.
    pub fn position(&self, s: usize, j: u64) -> u64 {
        (0..self.counts.len()).map(|t| self.count_before(t, s, j)).sum()
    }

    /// The slot at `pos` (`pos < len`).
    pub fn slot_at(&self, pos: u64) -> Slot {
        assert!(pos < self.total, "position {pos} is past the stage's {} sequences", self.total);
        for (s, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            // position(s, j) is strictly increasing in j.
            let (mut lo, mut hi) = (0u64, n);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.position(s, mid) < pos {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo < n && self.position(s, lo) == pos {
                return Slot { source: s, index: lo };
            }
        }
        unreachable!("every position below the total holds exactly one slot")
    }

    /// Sequences of every source among positions `[0, pos)`.
    pub fn counts_before(&self, pos: u64) -> Vec<u64> {
        if pos >= self.total {
            return self.counts.clone();
        }
        let at = self.slot_at(pos);
        (0..self.counts.len()).map(|t| self.count_before(t, at.source, at.index)).collect()
    }

    /// The slots from position `pos` on, in order.
    pub fn iter_from(&self, pos: u64) -> StageIter<'_> {
        let next = self.counts_before(pos);
        let heap = next
            .iter()
            .enumerate()
            .filter(|(t, &c)| c < self.counts[*t])
            .map(|(t, &c)| HeapEntry { order: self, source: t, index: c })
            .collect();
        StageIter { heap, pos }
    }
}

struct HeapEntry<'a> {
    order: &'a StageOrder,
    source: usize,
    index: u64,
}

impl PartialEq for HeapEntry<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source && self.index == o.index
    }
}
impl Eq for HeapEntry<'_> {}
impl PartialOrd for HeapEntry<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for HeapEntry<'_> {
    /// Reversed, so that the max-heap pops the smallest key.
    fn cmp(&self, o: &Self) -> Ordering {
        if self == o {
            Ordering::Equal
        } else if self.order.before(self.source, self.index, o.source, o.index) {
            Ordering::Greater
        } else {
            Ordering::Less
        }
    }
}

/// Iterator over `(position, slot)`.
pub struct StageIter<'a> {
    heap: BinaryHeap<HeapEntry<'a>>,
    pos: u64,
}

impl Iterator for StageIter<'_> {
    type Item = (u64, Slot);
    fn next(&mut self) -> Option<(u64, Slot)> {
        let e = self.heap.pop()?;
        let out = (self.pos, Slot { source: e.source, index: e.index });
        self.pos += 1;
        if e.index + 1 < e.order.counts[e.source] {
            self.heap.push(HeapEntry { order: e.order, source: e.source, index: e.index + 1 });
        }
        Some(out)
    }
}

/// Positions rank `rank` of `world` reads at `step`: a contiguous slice of the step's global
/// batch, clipped to the stage (the last step of a stage may be short).
pub fn rank_positions(step: u64, batch: u64, rank: u64, world: u64, stage_len: u64) -> Result<Range<u64>, String> {
    if world == 0 || rank >= world {
        return Err(format!("rank {rank} is not below the world size {world}"));
    }
    if !batch.is_multiple_of(world) {
        return Err(format!("the global batch of {batch} sequences does not split evenly over {world} ranks"));
    }
    let per = batch / world;
    let start = (step * batch + rank * per).min(stage_len);
    let end = (start + per).min(stage_len).min((step + 1) * batch);
    Ok(start..end)
}

/// A piece of a sequence: tokens `[from, to)` of shard `shard` (index into the source's shard
/// list), read in epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub epoch: u64,
    pub shard: usize,
    pub from: u64,
    pub to: u64,
}

/// A source's token stream: its shards in a seeded order per epoch, epochs back to back.
#[derive(Debug, Clone)]
pub struct SourceStream {
    key: u64,
    shard_tokens: Vec<u64>,
    total: u64,
    cached: Option<(u64, Vec<usize>, Vec<u64>)>,
}

impl SourceStream {
    pub fn new(seed: u64, source: &str, shard_tokens: Vec<u64>) -> Self {
        let total = shard_tokens.iter().sum();
        SourceStream { key: seeded_key(seed, &["source", source]), shard_tokens, total, cached: None }
    }

    pub fn tokens_per_epoch(&self) -> u64 {
        self.total
    }

    /// The shard order of `epoch` (Fisher–Yates over SplitMix64).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shard_tokens.len()).collect();
        let mut rng = SplitMix64(self.key ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }

    fn epoch(&mut self, epoch: u64) -> (&[usize], &[u64]) {
        if self.cached.as_ref().is_none_or(|c| c.0 != epoch) {
            let order = self.epoch_order(epoch);
            let mut ends = Vec::with_capacity(order.len());
            let mut acc = 0;
            for &s in &order {
                acc += self.shard_tokens[s];
                ends.push(acc);
            }
            self.cached = Some((epoch, order, ends));
        }
        let c = self.cached.as_ref().expect("just set");
        (&c.1, &c.2)
    }

    /// The pieces of stream tokens `[start, start + len)`.
    pub fn pieces(&mut self, start: u64, len: u64) -> Vec<Piece> {
        assert!(self.total > 0 || len == 0, "a source without tokens cannot be read");
        let mut out = Vec::new();
        let mut at = start;
        let end = start + len;
        while at < end {
            let epoch = at / self.total;
            let in_epoch = at % self.total;
            let (order, ends) = self.epoch(epoch);
            let i = ends.partition_point(|&e| e <= in_epoch);
            let (shard, shard_end) = (order[i], ends[i]);
            let shard_start = shard_end - self.shard_tokens[shard];
            let from = in_epoch - shard_start;
            let take = (shard_end - in_epoch).min(end - at);
            out.push(Piece { epoch, shard, from, to: from + take });
            at += take;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(counts: &[u64], seed: u64) -> StageOrder {
        let names: Vec<String> = (0..counts.len()).map(|i| format!("src{i}")).collect();
        let v: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(counts.iter().copied()).collect();
        StageOrder::new(seed, "stage", &v)
    }

    proptest! {
        #[test]
        fn every_slot_once_and_counts_exact(counts in proptest::collection::vec(0u64..300, 1..8), seed in 0u64..1000) {
            let o = order(&counts, seed);
            let all: Vec<(u64, Slot)> = o.iter_from(0).collect();
            prop_assert_eq!(all.len() as u64, o.len());
            let mut seen = vec![0u64; counts.len()];
            for (pos, slot) in &all {
                prop_assert_eq!(slot.index, seen[slot.source], "a source's sequences come in order");
                seen[slot.source] += 1;
                prop_assert_eq!(o.position(slot.source, slot.index), *pos);
            }
            prop_assert_eq!(seen, counts);
        }

        #[test]
        fn resume_from_any_position_continues_the_same_order(counts in proptest::collection::vec(1u64..200, 1..6), seed in 0u64..1000, cut in 0.0f64..1.0) {
            let o = order(&counts, seed);
            let all: Vec<(u64, Slot)> = o.iter_from(0).collect();
            let p = ((o.len() as f64) * cut) as u64;
            let resumed: Vec<(u64, Slot)> = o.iter_from(p).collect();
            prop_assert_eq!(&resumed[..], &all[p as usize..]);
        }

        #[test]
        fn sources_are_spread_evenly(counts in proptest::collection::vec(1u64..400, 2..6), seed in 0u64..1000) {
            // Every prefix holds each source in proportion to within 1 + S·share sequences
            // (S sources; the proof is in docs/schedules.md): no runs.
            let o = order(&counts, seed);
            let n = o.len() as f64;
            let k = counts.len() as f64;
            let mut seen = vec![0u64; counts.len()];
            for (pos, slot) in o.iter_from(0) {
                seen[slot.source] += 1;
                for (s, &c) in counts.iter().enumerate() {
                    let expected = c as f64 * (pos + 1) as f64 / n;
                    let bound = 1.0 + k * c as f64 / n + 1e-9;
                    prop_assert!((seen[s] as f64 - expected).abs() < bound, "source {} at {}: {} vs {}", s, pos, seen[s], expected);
                }
            }
        }

        #[test]
        fn ranks_read_disjoint_slices_covering_each_batch(batch_per in 1u64..8, world in 1u64..5, len in 0u64..200) {
            let batch = batch_per * world;
            let steps = len.div_ceil(batch);
            let mut covered = Vec::new();
            for step in 0..steps {
                for r in 0..world {
                    covered.extend(rank_positions(step, batch, r, world, len).unwrap());
                }
            }
            prop_assert_eq!(covered, (0..len).collect::<Vec<_>>());
        }

        #[test]
        fn stream_pieces_tile_the_request(shards in proptest::collection::vec(1u64..50, 1..6), start in 0u64..500, len in 0u64..300) {
            let mut s = SourceStream::new(3, "x", shards.clone());
            let pieces = s.pieces(start, len);
            prop_assert_eq!(pieces.iter().map(|p| p.to - p.from).sum::<u64>(), len);
            for p in &pieces {
                prop_assert!(p.to <= shards[p.shard] && p.from < p.to);
            }
        }
    }

    #[test]
    fn epochs_reorder_shards_deterministically() {
        let s = SourceStream::new(1, "web", vec![10; 20]);
        assert_eq!(s.epoch_order(0), SourceStream::new(1, "web", vec![10; 20]).epoch_order(0));
        assert_ne!(s.epoch_order(0), s.epoch_order(1));
        let mut sorted = s.epoch_order(1);
        sorted.sort();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        // Golden values pin the generator: a change here breaks resuming old runs.
        assert_eq!(SplitMix64(0).next(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn bad_rank_arguments() {
        assert!(rank_positions(0, 10, 1, 3, 100).unwrap_err().contains("evenly"));
        assert!(rank_positions(0, 10, 2, 2, 100).is_err());
    }
}
