//! Deduplication across a whole job: exact (normalized content hash) and MinHash-LSH near
//! duplicates, run by the coordinator as four phases of tasks (docs/dedup.md):
//!
//! 1. **signatures**, one task per input shard: read, run the spec's stages, and for every kept
//!    document compute its band hashes (MinHash: `bands` × `rows` seeded 64-bit permutations over
//!    the shingle hashes; exact: one 128-bit hash of the normalized text). Records
//!    `(band hash, document key, length)` go to one sorted file per (band, bucket partition).
//! 2. **buckets**, one task per (band, partition): read that band/partition's file of every
//!    shard, sort, and link the documents that share a band hash (a star to the smallest key).
//! 3. **clusters**, one task: union-find over the links, one survivor per cluster by the
//!    `keep` rule, and per shard a file of (row, cluster, size, survivor).
//! 4. **filter**, one task per input shard: the ordinary shard task, with the dedup stage last
//!    dropping the non-survivors and annotating cluster ids and sizes.
//!
//! A document's key is `(shard index << 32) | row`, its position in the job's input, so every
//! decision is a function of the input alone: the same whatever the number of workers, the
//! order tasks run in, or retries.

mod filter;
mod phases;
mod records;
mod shingle;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use filter::{DedupApply, DedupFilter, DEDUP_STAGE_NAME};
pub use phases::{
    bucket_partition, cluster_file, cluster_links, run_buckets, run_clusters, run_signatures, task_attempt_prefix,
    BucketTask, ClusterTask, DedupReport, PhaseResult, SignatureTask, BUCKETS_TASK_KIND, CLUSTERS_TASK_KIND,
    SIGNATURES_TASK_KIND,
};
pub use records::{read_clusters, ClusterRecord, EdgeRecord, SigRecord};
pub use shingle::{shingle_hashes, ShingleSet};

/// `[dedup]` of a pipeline spec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DedupSpec {
    /// `exact` (normalized content hash) or `minhash` (MinHash-LSH near duplicates).
    pub method: DedupMethod,
    /// Which document of a cluster survives.
    #[serde(default)]
    pub keep: KeepRule,
    /// Text normalization before hashing/shingling (default: `["lowercase"]` for minhash,
    /// `["whitespace"]` for exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Vec<TextNorm>>,
    /// MinHash: number of bands (LSH buckets per document).
    #[serde(default = "default_bands")]
    pub bands: u32,
    /// MinHash: hashes per band.
    #[serde(default = "default_rows")]
    pub rows: u32,
    /// MinHash: seed of the hash permutations. Changing it changes which pairs are caught.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// MinHash: the shingles of a document whose language has no entry in `languages`.
    #[serde(default)]
    pub shingle: ShingleSpec,
    /// MinHash: shingles per document language (`zh = { unit = "chars", size = 5 }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub languages: BTreeMap<String, ShingleSpec>,
    /// Bucket tasks per band (0: one per 32 GiB of input, at least one). Each bucket task
    /// holds `28 bytes × documents / partitions` in memory.
    #[serde(default)]
    pub bucket_partitions: u32,
    /// Add `dedup_cluster` and `dedup_cluster_size` to the surviving documents of clusters.
    #[serde(default = "default_true")]
    pub annotate: bool,
}

fn default_bands() -> u32 {
    14
}
fn default_rows() -> u32 {
    8
}
fn default_seed() -> u64 {
    1
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DedupMethod {
    Exact,
    Minhash,
}

impl DedupMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            DedupMethod::Exact => "exact",
            DedupMethod::Minhash => "minhash",
        }
    }
}

/// The survivor of a cluster.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KeepRule {
    /// The document that comes first in the input (smallest shard, then row).
    #[default]
    First,
    /// The longest document (bytes after the stages), ties broken by input order.
    Longest,
}

/// One normalization step, applied in the order listed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TextNorm {
    /// Unicode NFKC (full-width → ASCII, compatibility characters).
    Nfkc,
    /// Unicode lowercase.
    Lowercase,
    /// Punctuation and symbols become spaces.
    Punctuation,
    /// Every digit becomes `0`.
    Digits,
    /// Runs of whitespace become one space; leading and trailing whitespace go.
    Whitespace,
}

/// How a document is cut into shingles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShingleSpec {
    #[serde(default)]
    pub unit: ShingleUnit,
    /// Units per shingle (a document with fewer units has one shingle of all of them).
    #[serde(default = "default_size")]
    pub size: u32,
}

fn default_size() -> u32 {
    5
}

impl Default for ShingleSpec {
    fn default() -> Self {
        ShingleSpec { unit: ShingleUnit::Words, size: 5 }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ShingleUnit {
    /// Whitespace-separated words (English, Korean eojeol).
    #[default]
    Words,
    /// Every character that is not whitespace (Chinese, Japanese).
    Chars,
    /// Chinese words from the jieba segmenter (jieba-rs, no HMM).
    Jieba,
}

impl DedupSpec {
    /// Checks values; on error returns the key (relative to `dedup`) and a message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.method == DedupMethod::Minhash {
            if !(1..=64).contains(&self.bands) {
                return Err(("bands".into(), format!("{} is out of range 1..=64", self.bands)));
            }
            if !(1..=64).contains(&self.rows) {
                return Err(("rows".into(), format!("{} is out of range 1..=64", self.rows)));
            }
            check_shingle(&self.shingle).map_err(|m| ("shingle.size".into(), m))?;
            for (lang, s) in &self.languages {
                if lang.is_empty() {
                    return Err(("languages".into(), "empty language code".into()));
                }
                check_shingle(s).map_err(|m| (format!("languages.{lang}.size"), m))?;
            }
        }
        if self.bucket_partitions > 4096 {
            return Err(("bucket-partitions".into(), "at most 4096".into()));
        }
        if let Some(n) = &self.normalize {
            let mut seen = n.clone();
            seen.sort_by_key(|x| *x as u8);
            seen.dedup();
            if seen.len() != n.len() {
                return Err(("normalize".into(), "a step is listed twice".into()));
            }
        }
        Ok(())
    }

    /// The normalization steps in effect.
    pub fn normalization(&self) -> Vec<TextNorm> {
        self.normalize.clone().unwrap_or_else(|| match self.method {
            DedupMethod::Minhash => vec![TextNorm::Lowercase],
            DedupMethod::Exact => vec![TextNorm::Whitespace],
        })
    }

    /// Number of band files per shard and of bucket tasks per partition.
    pub fn band_count(&self) -> u32 {
        match self.method {
            DedupMethod::Minhash => self.bands,
            DedupMethod::Exact => 1,
        }
    }

    /// Bucket partitions for a job reading `input_bytes`.
    pub fn partitions_for(&self, input_bytes: u64) -> u32 {
        if self.bucket_partitions > 0 {
            return self.bucket_partitions;
        }
        input_bytes.div_ceil(32 << 30).clamp(1, 4096) as u32
    }

    /// The shingles for a document of language `lang`.
    pub fn shingle_for(&self, lang: Option<&str>) -> &ShingleSpec {
        if let Some(lang) = lang {
            if let Some(s) = self.languages.get(lang) {
                return s;
            }
            let base = lang.split(['-', '_']).next().unwrap_or(lang);
            if let Some(s) = self.languages.get(base) {
                return s;
            }
        }
        &self.shingle
    }

    /// Jaccard similarity at which a pair has a 50% chance of being caught, `(1/b)^(1/r)`.
    pub fn threshold(&self) -> f64 {
        lsh_threshold(self.bands, self.rows)
    }
}

fn check_shingle(s: &ShingleSpec) -> Result<(), String> {
    if !(1..=64).contains(&s.size) {
        return Err(format!("{} is out of range 1..=64", s.size));
    }
    Ok(())
}

/// Applies the normalization steps.
pub fn normalize_text(text: &str, steps: &[TextNorm]) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut s = text.to_string();
    for step in steps {
        s = match step {
            TextNorm::Nfkc => s.nfkc().collect(),
            TextNorm::Lowercase => s.to_lowercase(),
            TextNorm::Punctuation => {
                s.chars().map(|c| if crate::text::is_punct_char(c) && !c.is_whitespace() { ' ' } else { c }).collect()
            }
            TextNorm::Digits => s.chars().map(|c| if c.is_numeric() { '0' } else { c }).collect(),
            TextNorm::Whitespace => {
                let mut out = String::with_capacity(s.len());
                for w in s.split_whitespace() {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(w);
                }
                out
            }
        };
    }
    s
}

/// Probability that a pair of Jaccard similarity `j` shares at least one band:
/// `1 - (1 - j^r)^b`.
pub fn catch_probability(j: f64, bands: u32, rows: u32) -> f64 {
    1.0 - (1.0 - j.powi(rows as i32)).powi(bands as i32)
}

/// The similarity where the S-curve crosses 1/2 (approximately), `(1/b)^(1/r)`.
pub fn lsh_threshold(bands: u32, rows: u32) -> f64 {
    (1.0 / bands as f64).powf(1.0 / rows as f64)
}

/// The MinHash permutations: `h_i(x) = (a_i·x + b_i) mod (2^61 − 1)`, drawn from the seed.
#[derive(Debug, Clone)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
    bands: usize,
    rows: usize,
}

const MERSENNE_61: u64 = (1 << 61) - 1;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn mod_mersenne(x: u128) -> u64 {
    let lo = (x as u64) & MERSENNE_61;
    let hi = (x >> 61) as u64;
    // hi < 2^67 / 2^61... x < 2^122 so hi < 2^61; one fold and one conditional subtraction.
    let mut r = lo + (hi & MERSENNE_61) + (hi >> 61);
    while r >= MERSENNE_61 {
        r -= MERSENNE_61;
    }
    r
}

impl MinHasher {
    pub fn new(bands: u32, rows: u32, seed: u64) -> Self {
        let n = (bands * rows) as usize;
        let mut state = seed ^ 0x6C65_6872_6D68_0001; // "lehrmh"
        let mut a = Vec::with_capacity(n);
        let mut b = Vec::with_capacity(n);
        for _ in 0..n {
            a.push(1 + splitmix64(&mut state) % (MERSENNE_61 - 1));
            b.push(splitmix64(&mut state) % MERSENNE_61);
        }
        MinHasher { a, b, bands: bands as usize, rows: rows as usize }
    }

    /// The signature of a set of shingle hashes (`None` for an empty set).
    pub fn signature(&self, shingles: &[u64]) -> Option<Vec<u64>> {
        if shingles.is_empty() {
            return None;
        }
        let mut sig = vec![u64::MAX; self.a.len()];
        for &x in shingles {
            let x = (x % MERSENNE_61) as u128;
            for ((s, &a), &b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                let v = mod_mersenne(a as u128 * x + b as u128);
                if v < *s {
                    *s = v;
                }
            }
        }
        Some(sig)
    }

    /// One 128-bit hash per band of a signature.
    pub fn band_hashes(&self, sig: &[u64]) -> Vec<u128> {
        (0..self.bands)
            .map(|band| {
                let mut bytes = Vec::with_capacity(self.rows * 8);
                for v in &sig[band * self.rows..(band + 1) * self.rows] {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                xxhash_rust::xxh3::xxh3_128_with_seed(&bytes, band as u64)
            })
            .collect()
    }
}

/// Estimated Jaccard similarity of two signatures: the share of equal positions.
pub fn estimate_jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// The band hashes of one document under a dedup spec, or `None` when it has nothing to hash.
pub struct Hasher {
    spec: DedupSpec,
    norm: Vec<TextNorm>,
    minhash: Option<MinHasher>,
}

impl Hasher {
    pub fn new(spec: &DedupSpec) -> Self {
        let minhash = (spec.method == DedupMethod::Minhash).then(|| MinHasher::new(spec.bands, spec.rows, spec.seed));
        Hasher { spec: spec.clone(), norm: spec.normalization(), minhash }
    }

    pub fn band_hashes(&self, text: &str, lang: Option<&str>) -> Option<Vec<u128>> {
        let norm = normalize_text(text, &self.norm);
        match &self.minhash {
            None => {
                if norm.is_empty() {
                    return None;
                }
                Some(vec![xxhash_rust::xxh3::xxh3_128(norm.as_bytes())])
            }
            Some(mh) => {
                let shingles = shingle_hashes(&norm, self.spec.shingle_for(lang));
                mh.signature(&shingles).map(|sig| mh.band_hashes(&sig))
            }
        }
    }

    /// The MinHash signature of a text (minhash specs only).
    pub fn signature(&self, text: &str, lang: Option<&str>) -> Option<Vec<u64>> {
        let norm = normalize_text(text, &self.norm);
        let mh = self.minhash.as_ref()?;
        mh.signature(&shingle_hashes(&norm, self.spec.shingle_for(lang)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mersenne_reduction_matches_u128_modulo() {
        let mut st = 7u64;
        for _ in 0..10_000 {
            let a = splitmix64(&mut st) % MERSENNE_61;
            let x = splitmix64(&mut st) % MERSENNE_61;
            let b = splitmix64(&mut st) % MERSENNE_61;
            let v = a as u128 * x as u128 + b as u128;
            assert_eq!(mod_mersenne(v), (v % MERSENNE_61 as u128) as u64);
        }
    }

    #[test]
    fn signature_estimates_jaccard() {
        // Two sets with Jaccard 0.5 exactly: 0..300 and 100..400 share 200 of 400.
        let a: Vec<u64> = (0..300u64).map(|x| xxhash_rust::xxh3::xxh3_64(&x.to_le_bytes())).collect();
        let b: Vec<u64> = (100..400u64).map(|x| xxhash_rust::xxh3::xxh3_64(&x.to_le_bytes())).collect();
        let mh = MinHasher::new(32, 16, 3);
        let est = estimate_jaccard(&mh.signature(&a).unwrap(), &mh.signature(&b).unwrap());
        // 512 hashes: standard error sqrt(0.25/512) ≈ 0.022.
        assert!((est - 0.5).abs() < 0.09, "estimate {est}");
        assert_eq!(mh.signature(&a), mh.signature(&a.iter().rev().copied().collect::<Vec<_>>()));
        assert_ne!(MinHasher::new(32, 16, 4).signature(&a), mh.signature(&a));
    }

    #[test]
    fn curve_is_monotone_and_crosses_half_near_threshold() {
        let t = lsh_threshold(14, 8);
        assert!((t - 0.719).abs() < 0.01, "{t}");
        let p = catch_probability(t, 14, 8);
        assert!((0.4..0.7).contains(&p), "{p}");
        let mut last = 0.0;
        for i in 0..=100 {
            let p = catch_probability(i as f64 / 100.0, 14, 8);
            assert!(p >= last);
            last = p;
        }
        // datatrove's docstring: P(caught | J = 0.8) = 0.924 for 14×8.
        assert!((catch_probability(0.8, 14, 8) - 0.924).abs() < 0.001);
    }

    #[test]
    fn normalization_steps() {
        let s = normalize_text(
            "  Hello,  WORLD 2024!\n「你好」 ",
            &[TextNorm::Lowercase, TextNorm::Punctuation, TextNorm::Digits, TextNorm::Whitespace],
        );
        assert_eq!(s, "hello world 0000 你好");
        assert_eq!(normalize_text("ＡＢＣ１", &[TextNorm::Nfkc]), "ABC1");
    }
}
