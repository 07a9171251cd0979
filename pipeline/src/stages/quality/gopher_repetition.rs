//! Gopher repetition (datatrove's `GopherRepetitionFilter`): duplicated lines and paragraphs,
//! top and duplicated n-grams, hashed in O(1) per n-gram.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GopherRepetitionConfig {
    #[serde(default)]
    pub languages: Vec<String>,
    /// What the scores are computed on (`text`, or `width-normalized`: full-width ASCII and the
    /// ideographic space as ASCII; the document is unchanged). See `stages/score_view.rs`.
    #[serde(default)]
    pub score_view: super::super::ScoreView,
    #[serde(default = "d_030")]
    pub dup_line_frac: Option<f64>,
    #[serde(default = "d_030")]
    pub dup_para_frac: Option<f64>,
    #[serde(default = "d_020")]
    pub dup_line_char_frac: Option<f64>,
    #[serde(default = "d_020")]
    pub dup_para_char_frac: Option<f64>,
    /// `[[n, max fraction of characters in the most frequent n-gram], ...]`
    #[serde(default = "d_top_n_grams")]
    pub top_n_grams: Vec<(usize, f64)>,
    /// `[[n, max fraction of characters in repeated n-grams], ...]`
    #[serde(default = "d_dup_n_grams")]
    pub dup_n_grams: Vec<(usize, f64)>,
}

fn d_030() -> Option<f64> {
    Some(0.3)
}
fn d_020() -> Option<f64> {
    Some(0.2)
}
fn d_top_n_grams() -> Vec<(usize, f64)> {
    vec![(2, 0.2), (3, 0.18), (4, 0.16)]
}
fn d_dup_n_grams() -> Vec<(usize, f64)> {
    vec![(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
}

impl Default for GopherRepetitionConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl GopherRepetitionConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        check_ratio("dup-line-frac", self.dup_line_frac)?;
        check_ratio("dup-para-frac", self.dup_para_frac)?;
        check_ratio("dup-line-char-frac", self.dup_line_char_frac)?;
        check_ratio("dup-para-char-frac", self.dup_para_char_frac)?;
        check_ngrams("top-n-grams", &self.top_n_grams)?;
        check_ngrams("dup-n-grams", &self.dup_n_grams)
    }
    pub fn build(&self) -> GopherRepetition {
        GopherRepetition { cfg: self.clone() }
    }
}

pub struct GopherRepetition {
    cfg: GopherRepetitionConfig,
}

static PARAGRAPH_BREAK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\n{2,}").expect("valid regex"));

/// Polynomial hashes of every substring of one string in O(1) after an O(len) pass (mod the
/// Mersenne prime 2^61 - 1). The repetition rules hash millions of n-grams per megabyte; building
/// each n-gram as a string and hashing it was 80% of the filters' time.
struct PrefixHash {
    prefix: Vec<u64>,
}

const MERSENNE61: u64 = (1 << 61) - 1;
const BASE: u64 = 0x1F3D_5B79_A2C4_E681 % MERSENNE61;

fn mul_mod(a: u64, b: u64) -> u64 {
    let p = a as u128 * b as u128;
    let lo = (p as u64) & MERSENNE61;
    let hi = (p >> 61) as u64;
    let s = lo + hi;
    if s >= MERSENNE61 {
        s - MERSENNE61
    } else {
        s
    }
}

impl PrefixHash {
    fn new(bytes: impl Iterator<Item = u8>, len: usize) -> PrefixHash {
        let mut prefix = Vec::with_capacity(len + 1);
        prefix.push(0);
        let mut h = 0u64;
        for b in bytes {
            h = mul_mod(h, BASE) + b as u64 + 1;
            if h >= MERSENNE61 {
                h -= MERSENNE61;
            }
            prefix.push(h);
        }
        PrefixHash { prefix }
    }

    /// Hash of bytes `[a, b)`, mixed with the length.
    fn range(&self, a: usize, b: usize, powers: &Powers) -> u64 {
        let h = (self.prefix[b] + MERSENNE61 - mul_mod(self.prefix[a], powers.get(b - a))) % MERSENNE61;
        h ^ ((b - a) as u64).rotate_left(61)
    }
}

/// BASE^k for the n-gram lengths seen so far, grown on demand (n-grams are short: a table per
/// document of its full length was a third of the hashing time).
#[derive(Default)]
struct Powers(Vec<u64>);

impl Powers {
    fn ensure(&mut self, k: usize) {
        if self.0.is_empty() {
            self.0.push(1);
        }
        while self.0.len() <= k {
            let last = *self.0.last().expect("not empty");
            self.0.push(mul_mod(last, BASE));
        }
    }
    fn get(&self, k: usize) -> u64 {
        self.0[k]
    }
    /// After a document with a huge word, give the memory back.
    fn trim(&mut self) {
        if self.0.len() > 1 << 20 {
            self.0.truncate(1 << 16);
            self.0.shrink_to_fit();
        }
    }
}

/// The words of a document as two byte streams: concatenated (datatrove's `"".join` for
/// duplicated n-grams, where `["ab", "c"]` equals `["a", "bc"]`) and space-joined (`" ".join`
/// for the top n-gram), with each word's start offset in both.
struct NgramIndex {
    cat: PrefixHash,
    cat_off: Vec<usize>,
    spaced: PrefixHash,
    spaced_off: Vec<usize>,
    chars: Vec<usize>,
}

impl NgramIndex {
    fn new(words: &[&str]) -> NgramIndex {
        let mut cat_off = Vec::with_capacity(words.len() + 1);
        let mut spaced_off = Vec::with_capacity(words.len() + 1);
        let (mut c, mut sp) = (0usize, 0usize);
        for w in words {
            cat_off.push(c);
            spaced_off.push(sp);
            c += w.len();
            sp += w.len() + 1;
        }
        cat_off.push(c);
        spaced_off.push(sp);
        let cat = PrefixHash::new(words.iter().flat_map(|w| w.bytes()), c);
        let spaced = PrefixHash::new(words.iter().flat_map(|w| w.bytes().chain(std::iter::once(b' '))), sp);
        NgramIndex { cat, cat_off, spaced, spaced_off, chars: words.iter().map(|w| chars(w)).collect() }
    }
}

/// Characters of the most frequent n-gram (words joined by one space) times its count; ties go
/// to the n-gram seen first, like Python's `Counter.most_common`.
fn top_ngram_chars(ix: &NgramIndex, n: usize) -> Option<usize> {
    let words = ix.chars.len();
    if words < n {
        return None;
    }
    // hash → (count, first position); the map is reused between calls on this thread
    let (count, first) = SCRATCH.with_borrow_mut(|(counts, _, powers)| {
        counts.clear();
        counts.reserve(words);
        let longest = (0..=words - n).map(|i| ix.spaced_off[i + n] - ix.spaced_off[i]).max().unwrap_or(0);
        powers.ensure(longest);
        for i in 0..=words - n {
            // the n words and the n - 1 spaces between them
            let h = ix.spaced.range(ix.spaced_off[i], ix.spaced_off[i + n] - 1, powers);
            counts.entry(h).or_insert((0, i as u32)).0 += 1;
        }
        let best = counts.values().copied().max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        if counts.capacity() > 1 << 20 {
            // after a huge document, give the memory back rather than keep it for the thread's life
            counts.clear();
            counts.shrink_to(1 << 16);
        }
        powers.trim();
        best
    })?;
    let (count, first) = (count as usize, first as usize);
    let len = ix.chars[first..first + n].iter().sum::<usize>() + n - 1;
    Some(count * len)
}

/// Characters covered by repeated n-grams (words concatenated without separator, as datatrove
/// does); after a repeat the scan jumps past it.
fn dup_ngram_chars(ix: &NgramIndex, n: usize) -> usize {
    let words = ix.chars.len();
    SCRATCH.with_borrow_mut(|(_, seen, powers)| {
        seen.clear();
        seen.reserve(words);
        if words >= n {
            powers.ensure((0..=words - n).map(|i| ix.cat_off[i + n] - ix.cat_off[i]).max().unwrap_or(0));
        }
        let (mut repeated, mut idx) = (0usize, 0usize);
        while idx + n <= words {
            if !seen.insert(ix.cat.range(ix.cat_off[idx], ix.cat_off[idx + n], powers)) {
                repeated += ix.chars[idx..idx + n].iter().sum::<usize>();
                idx += n;
            } else {
                idx += 1;
            }
        }
        if seen.capacity() > 1 << 20 {
            seen.clear();
            seen.shrink_to(1 << 16);
        }
        powers.trim();
        repeated
    })
}

type Scratch = (FxHashMap<u64, (u32, u32)>, FxHashSet<u64>, Powers);

thread_local! {
    /// Hash tables reused across documents (allocating and growing them per n-gram size was a
    /// large share of the stage's time).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Default::default());
}

impl Stage for GopherRepetition {
    fn name(&self) -> &'static str {
        "gopher-repetition"
    }
    fn score_names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            ["dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"].map(String::from).into();
        v.extend(self.cfg.top_n_grams.iter().map(|(n, _)| format!("top_{n}_gram")));
        v.extend(self.cfg.dup_n_grams.iter().map(|(n, _)| format!("duplicated_{n}_n_grams")));
        v
    }
    fn applies_to(&self, lang: Option<&str>) -> bool {
        lang_matches(&self.cfg.languages, lang)
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let c = &self.cfg;
        let text = doc.text.as_str();
        if text.is_empty() {
            return Decision::Drop("empty");
        }
        let total = chars(text) as f64;
        let mut rule: Option<&'static str> = None;
        let mut check = |slot: usize, value: f64, max: Option<f64>, name: &'static str, ctx: &mut Ctx| {
            ctx.set(slot, value);
            if rule.is_none() && max.is_some_and(|m| m > 0.0 && value > m) {
                rule = Some(name);
            }
        };
        let paragraphs: Vec<&str> = PARAGRAPH_BREAK.split(text.trim()).collect();
        let (pn, pc) = find_duplicates(paragraphs.iter().copied());
        check(0, pn as f64 / paragraphs.len() as f64, c.dup_para_frac, "dup_para_frac", ctx);
        check(1, pc as f64 / total, c.dup_para_char_frac, "dup_para_char_frac", ctx);
        let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
        // Python's re.split("\n+") keeps a leading/trailing empty string; they only matter for
        // the line count.
        let n_lines = lines.len() + usize::from(text.starts_with('\n')) + usize::from(text.ends_with('\n'));
        let (ln, lc) = find_duplicates(lines.iter().copied());
        let (ln, lc) = if text.starts_with('\n') && text.ends_with('\n') { (ln + 1, lc) } else { (ln, lc) };
        check(2, ln as f64 / n_lines.max(1) as f64, c.dup_line_frac, "dup_line_frac", ctx);
        check(3, lc as f64 / total, c.dup_line_char_frac, "dup_line_char_frac", ctx);

        let words = WordSplitter::for_lang(doc.lang.as_deref()).words(text);
        let ix = NgramIndex::new(&words);
        let mut slot = 4;
        for &(n, frac) in &c.top_n_grams {
            if let Some(top) = top_ngram_chars(&ix, n) {
                check(slot, top as f64 / total, Some(frac), ngram_rule(true, n), ctx);
            }
            slot += 1;
        }
        for &(n, frac) in &c.dup_n_grams {
            let d = dup_ngram_chars(&ix, n);
            check(slot, d as f64 / total, Some(frac), ngram_rule(false, n), ctx);
            slot += 1;
        }
        match rule {
            Some(r) => Decision::Drop(r),
            None => Decision::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatrove_dup_ngrams_concatenate_words() {
        // "".join: ["ab","c"] and ["a","bc"] are the same 2-gram; after a repeat the scan jumps.
        let ix = NgramIndex::new(&["ab", "c", "a", "bc", "x"]);
        assert_eq!(dup_ngram_chars(&ix, 2), 3);
        let ix = NgramIndex::new(&["a", "b", "a", "b", "a", "b"]);
        assert_eq!(dup_ngram_chars(&ix, 2), 4);
        assert_eq!(top_ngram_chars(&ix, 2), Some(9));
        // " ".join keeps word boundaries: "ab c" and "a bc" differ
        let ix = NgramIndex::new(&["ab", "c", "a", "bc", "ab", "c"]);
        assert_eq!(top_ngram_chars(&ix, 2), Some(8));
        assert_eq!(NgramIndex::new(&[]).chars.len(), 0);
    }
}
