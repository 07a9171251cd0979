//! Shingles: a normalized text cut into units (words, characters, jieba words) and every run
//! of `size` consecutive units hashed to 64 bits. A text with fewer units than `size` has one
//! shingle of all its units; an empty text has none.

use rustc_hash::FxHashSet;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::{ShingleSpec, ShingleUnit};

/// The shingle hashes of `text` (duplicates removed, in first-seen order).
pub fn shingle_hashes(text: &str, spec: &ShingleSpec) -> Vec<u64> {
    let units: Vec<u64> = match spec.unit {
        ShingleUnit::Words => text.split_whitespace().map(|w| xxh3_64(w.as_bytes())).collect(),
        ShingleUnit::Chars => text.chars().filter(|c| !c.is_whitespace()).map(|c| c as u64).collect(),
        ShingleUnit::Jieba => crate::text::jieba_words(text)
            .into_iter()
            .filter(|w| !w.trim().is_empty())
            .map(|w| xxh3_64(w.as_bytes()))
            .collect(),
    };
    hash_runs(&units, spec.size as usize)
}

/// Hashes every run of `n` consecutive unit hashes.
fn hash_runs(units: &[u64], n: usize) -> Vec<u64> {
    if units.is_empty() {
        return Vec::new();
    }
    let n = n.min(units.len()).max(1);
    let mut seen = FxHashSet::default();
    let mut out = Vec::with_capacity(units.len() + 1 - n);
    let mut buf = Vec::with_capacity(n * 8);
    for w in units.windows(n) {
        buf.clear();
        for u in w {
            buf.extend_from_slice(&u.to_le_bytes());
        }
        let h = xxh3_64_with_seed(&buf, n as u64);
        if seen.insert(h) {
            out.push(h);
        }
    }
    out
}

/// A document's shingle set, for exact Jaccard similarity (tests, benchmarks, the curve check).
#[derive(Debug, Clone, Default)]
pub struct ShingleSet(pub FxHashSet<u64>);

impl ShingleSet {
    pub fn new(text: &str, spec: &ShingleSpec) -> Self {
        ShingleSet(shingle_hashes(text, spec).into_iter().collect())
    }

    /// |A ∩ B| / |A ∪ B| (1 when both are empty).
    pub fn jaccard(&self, other: &ShingleSet) -> f64 {
        if self.0.is_empty() && other.0.is_empty() {
            return 1.0;
        }
        let inter = self.0.iter().filter(|h| other.0.contains(h)).count();
        inter as f64 / (self.0.len() + other.0.len() - inter) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(unit: ShingleUnit, size: u32) -> ShingleSpec {
        ShingleSpec { unit, size }
    }

    #[test]
    fn word_and_char_shingles() {
        let s = spec(ShingleUnit::Words, 2);
        assert_eq!(shingle_hashes("a b c", &s).len(), 2);
        assert_eq!(shingle_hashes("a b a b", &s).len(), 2); // "a b", "b a"
        assert_eq!(shingle_hashes("a", &s).len(), 1);
        assert!(shingle_hashes("   ", &s).is_empty());
        let c = spec(ShingleUnit::Chars, 3);
        assert_eq!(shingle_hashes("你好 世界", &c), shingle_hashes("你好世界", &c));
        assert_eq!(shingle_hashes("你好世界", &c).len(), 2);
        let a = ShingleSet::new("one two three four five six", &spec(ShingleUnit::Words, 5));
        let b = ShingleSet::new("one two three four five seven", &spec(ShingleUnit::Words, 5));
        assert!((a.jaccard(&b) - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn jieba_units_are_words() {
        let j = shingle_hashes("我们中出了一个叛徒", &spec(ShingleUnit::Jieba, 1));
        let c = shingle_hashes("我们中出了一个叛徒", &spec(ShingleUnit::Chars, 1));
        assert!(j.len() < c.len(), "jieba {} chars {}", j.len(), c.len());
    }
}
