//! Heuristic quality filters: Gopher quality, Gopher repetition, C4 and FineWeb.
//!
//! Parameters, their defaults and the rule names (`gopher_short_doc`, `dup_line_frac`,
//! `line_punct_ratio`, ...) are datatrove's (`pipeline/filters/*.py`, v0.10), so that a
//! FineWeb-style spec means what it means there; the semantics follow datatrove's code line by
//! line (character counts are Unicode scalar values, like Python's `len`). Where datatrove would
//! divide by zero (a document with no words) lehr drops the document with the rule that
//! applies instead of crashing.
//!
//! CJK-aware: words come from [`WordSplitter::for_lang`] (jieba for Chinese, eojeol for Korean)
//! and Korean stop words can match as word endings (particles such as 는, 을, 에서), see
//! [`StopWordMatch`]. Per-language parameters come from one stage per language
//! (`languages = ["zh"]`), as the presets do with FineWeb-2's per-language values.
//!
//! Every filter computes all of its scores before deciding, so the attributes file holds the
//! full picture even for documents that an earlier rule dropped.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{lang_matches, Ctx, Decision, Stage};
use crate::document::Document;
use crate::text::{is_symbol_word, is_terminal_punct, sentence_count, WordSplitter};

use rustc_hash::{FxHashMap, FxHashSet};

/// Python's `str.splitlines()` boundaries.
fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{1C}' | '\u{1D}' | '\u{1E}' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Python's `str.splitlines()` (`\r\n` is one break; no trailing empty line).
fn splitlines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if is_line_break(c) {
            out.push(&text[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = iter.peek() {
                    end = j + 1;
                    iter.next();
                }
            }
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn chars(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// `(duplicate elements, characters in duplicates)`: every occurrence after the first counts.
fn find_duplicates<'a>(items: impl IntoIterator<Item = &'a str>) -> (usize, usize) {
    let mut seen: FxHashSet<&str> = FxHashSet::default();
    let (mut n, mut c) = (0, 0);
    for x in items {
        if !seen.insert(x) {
            n += 1;
            c += chars(x);
        }
    }
    (n, c)
}

/// Rule names for n-gram sizes 1..=20 (static strings, as decisions carry `&'static str`).
fn ngram_rule(top: bool, n: usize) -> &'static str {
    const TOP: [&str; 20] = [
        "top_1_gram",
        "top_2_gram",
        "top_3_gram",
        "top_4_gram",
        "top_5_gram",
        "top_6_gram",
        "top_7_gram",
        "top_8_gram",
        "top_9_gram",
        "top_10_gram",
        "top_11_gram",
        "top_12_gram",
        "top_13_gram",
        "top_14_gram",
        "top_15_gram",
        "top_16_gram",
        "top_17_gram",
        "top_18_gram",
        "top_19_gram",
        "top_20_gram",
    ];
    const DUP: [&str; 20] = [
        "duplicated_1_n_grams",
        "duplicated_2_n_grams",
        "duplicated_3_n_grams",
        "duplicated_4_n_grams",
        "duplicated_5_n_grams",
        "duplicated_6_n_grams",
        "duplicated_7_n_grams",
        "duplicated_8_n_grams",
        "duplicated_9_n_grams",
        "duplicated_10_n_grams",
        "duplicated_11_n_grams",
        "duplicated_12_n_grams",
        "duplicated_13_n_grams",
        "duplicated_14_n_grams",
        "duplicated_15_n_grams",
        "duplicated_16_n_grams",
        "duplicated_17_n_grams",
        "duplicated_18_n_grams",
        "duplicated_19_n_grams",
        "duplicated_20_n_grams",
    ];
    (if top { &TOP } else { &DUP })[n.clamp(1, 20) - 1]
}

fn check_ratio(key: &str, v: Option<f64>) -> Result<(), (String, String)> {
    match v {
        Some(x) if !(0.0..=1.0).contains(&x) || x.is_nan() => {
            Err((key.into(), format!("{x} is not a ratio in [0, 1]")))
        }
        _ => Ok(()),
    }
}

fn check_ngrams(key: &str, v: &[(usize, f64)]) -> Result<(), (String, String)> {
    for (i, (n, f)) in v.iter().enumerate() {
        if v[..i].iter().any(|(m, _)| m == n) {
            return Err((format!("{key}[{i}]"), format!("n-gram size {n} is listed twice")));
        }
        if !(1..=20).contains(n) {
            return Err((format!("{key}[{i}]"), format!("n-gram size {n} is outside 1..=20")));
        }
        check_ratio(&format!("{key}[{i}]"), Some(*f))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Gopher quality

/// How stop words are matched against words.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StopWordMatch {
    /// The word equals the stop word (datatrove; case-sensitive).
    #[default]
    Exact,
    /// The word ends with the stop word (Korean eojeol carry particles: 학교에서 ends with 에서).
    Suffix,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GopherQualityConfig {
    /// Languages this stage applies to (empty: all documents).
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default = "d_min_doc_words")]
    pub min_doc_words: Option<u64>,
    #[serde(default = "d_max_doc_words")]
    pub max_doc_words: Option<u64>,
    #[serde(default = "d_min_avg_word_length")]
    pub min_avg_word_length: Option<f64>,
    #[serde(default = "d_max_avg_word_length")]
    pub max_avg_word_length: Option<f64>,
    #[serde(default = "d_max_symbol_word_ratio")]
    pub max_symbol_word_ratio: Option<f64>,
    #[serde(default = "d_max_bullet_lines_ratio")]
    pub max_bullet_lines_ratio: Option<f64>,
    #[serde(default = "d_max_ellipsis_lines_ratio")]
    pub max_ellipsis_lines_ratio: Option<f64>,
    /// Minimum share of words with at least one letter (datatrove's misnamed
    /// `max_non_alpha_words_ratio`; the name is kept so datatrove/FineWeb-2 values carry over).
    #[serde(default = "d_max_non_alpha_words_ratio")]
    pub max_non_alpha_words_ratio: Option<f64>,
    #[serde(default = "d_min_stop_words")]
    pub min_stop_words: Option<u64>,
    #[serde(default = "d_stop_words")]
    pub stop_words: Vec<String>,
    #[serde(default)]
    pub stop_word_match: StopWordMatch,
}

fn d_min_doc_words() -> Option<u64> {
    Some(50)
}
fn d_max_doc_words() -> Option<u64> {
    Some(100_000)
}
fn d_min_avg_word_length() -> Option<f64> {
    Some(3.0)
}
fn d_max_avg_word_length() -> Option<f64> {
    Some(10.0)
}
fn d_max_symbol_word_ratio() -> Option<f64> {
    Some(0.1)
}
fn d_max_bullet_lines_ratio() -> Option<f64> {
    Some(0.9)
}
fn d_max_ellipsis_lines_ratio() -> Option<f64> {
    Some(0.3)
}
fn d_max_non_alpha_words_ratio() -> Option<f64> {
    Some(0.8)
}
fn d_min_stop_words() -> Option<u64> {
    Some(2)
}
fn d_stop_words() -> Vec<String> {
    ["the", "be", "to", "of", "and", "that", "have", "with"].iter().map(|s| s.to_string()).collect()
}

impl Default for GopherQualityConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl GopherQualityConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        check_ratio("max-symbol-word-ratio", self.max_symbol_word_ratio)?;
        check_ratio("max-bullet-lines-ratio", self.max_bullet_lines_ratio)?;
        check_ratio("max-ellipsis-lines-ratio", self.max_ellipsis_lines_ratio)?;
        check_ratio("max-non-alpha-words-ratio", self.max_non_alpha_words_ratio)?;
        if let (Some(a), Some(b)) = (self.min_doc_words, self.max_doc_words) {
            if a > b {
                return Err(("max-doc-words".into(), format!("{b} is below min-doc-words ({a})")));
            }
        }
        if let (Some(a), Some(b)) = (self.min_avg_word_length, self.max_avg_word_length) {
            if a > b {
                return Err(("max-avg-word-length".into(), format!("{b} is below min-avg-word-length ({a})")));
            }
        }
        Ok(())
    }

    pub fn build(&self) -> GopherQuality {
        GopherQuality { cfg: self.clone(), stop: self.stop_words.iter().cloned().collect() }
    }
}

pub struct GopherQuality {
    cfg: GopherQualityConfig,
    stop: HashSet<String>,
}

const GQ_SCORES: [&str; 8] = [
    "words",
    "mean_word_length",
    "hash_ratio",
    "ellipsis_ratio",
    "bullet_lines_ratio",
    "ellipsis_lines_ratio",
    "alpha_words_ratio",
    "stop_words",
];

impl Stage for GopherQuality {
    fn name(&self) -> &'static str {
        "gopher-quality"
    }
    fn score_names(&self) -> Vec<String> {
        GQ_SCORES.iter().map(|s| s.to_string()).collect()
    }
    fn applies_to(&self, lang: Option<&str>) -> bool {
        lang_matches(&self.cfg.languages, lang)
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let c = &self.cfg;
        let text = doc.text.as_str();
        let words = WordSplitter::for_lang(doc.lang.as_deref()).words(text);
        let n_words = words.len();
        let (mut n_content, mut content_chars, mut n_alpha) = (0usize, 0usize, 0usize);
        for w in &words {
            if !is_symbol_word(w) {
                n_content += 1;
                content_chars += chars(w);
            }
            if w.chars().any(char::is_alphabetic) {
                n_alpha += 1;
            }
        }
        let mean_len = if n_content == 0 { f64::NAN } else { content_chars as f64 / n_content as f64 };
        let per_word = |x: usize| if n_words == 0 { f64::INFINITY } else { x as f64 / n_words as f64 };
        let hash_ratio = per_word(text.matches('#').count());
        let ellipsis_ratio = per_word(text.matches("...").count() + text.matches('…').count());
        let lines = splitlines(text);
        let per_line = |x: usize| if lines.is_empty() { 0.0 } else { x as f64 / lines.len() as f64 };
        let bullets = per_line(
            lines.iter().filter(|l| l.trim_start().starts_with('•') || l.trim_start().starts_with('-')).count(),
        );
        let end_ellipsis =
            per_line(lines.iter().filter(|l| l.trim_end().ends_with("...") || l.trim_end().ends_with('…')).count());
        let alpha_ratio = if n_words == 0 { 0.0 } else { n_alpha as f64 / n_words as f64 };
        let stop_found = match c.stop_word_match {
            StopWordMatch::Exact => {
                let mut found: FxHashSet<&str> = FxHashSet::default();
                for w in &words {
                    if self.stop.contains(*w) {
                        found.insert(w);
                    }
                }
                found.len()
            }
            StopWordMatch::Suffix => self.stop.iter().filter(|s| words.iter().any(|w| w.ends_with(s.as_str()))).count(),
        };
        for (i, v) in [
            n_content as f64,
            mean_len,
            hash_ratio,
            ellipsis_ratio,
            bullets,
            end_ellipsis,
            alpha_ratio,
            stop_found as f64,
        ]
        .into_iter()
        .enumerate()
        {
            if v.is_finite() {
                ctx.set(i, v);
            }
        }

        if c.min_doc_words.is_some_and(|m| m > 0 && (n_content as u64) < m) {
            return Decision::Drop("gopher_short_doc");
        }
        if c.max_doc_words.is_some_and(|m| m > 0 && n_content as u64 > m) {
            return Decision::Drop("gopher_long_doc");
        }
        if c.min_avg_word_length.is_some_and(|m| m > 0.0 && mean_len < m) {
            return Decision::Drop("gopher_below_avg_threshold");
        }
        if c.max_avg_word_length.is_some_and(|m| m > 0.0 && mean_len > m) {
            return Decision::Drop("gopher_above_avg_threshold");
        }
        if let Some(m) = c.max_symbol_word_ratio.filter(|m| *m > 0.0) {
            if hash_ratio > m {
                return Decision::Drop("gopher_too_many_hashes");
            }
            if ellipsis_ratio > m {
                return Decision::Drop("gopher_too_many_ellipsis");
            }
        }
        if c.max_bullet_lines_ratio.is_some_and(|m| m > 0.0 && bullets > m) {
            return Decision::Drop("gopher_too_many_bullets");
        }
        if c.max_ellipsis_lines_ratio.is_some_and(|m| m > 0.0 && end_ellipsis > m) {
            return Decision::Drop("gopher_too_many_end_ellipsis");
        }
        if c.max_non_alpha_words_ratio.is_some_and(|m| m > 0.0 && alpha_ratio < m) {
            return Decision::Drop("gopher_below_alpha_threshold");
        }
        if c.min_stop_words.is_some_and(|m| m > 0 && (stop_found as u64) < m) {
            return Decision::Drop("gopher_enough_stop_words");
        }
        Decision::Keep
    }
}

// ---------------------------------------------------------------------------------------------
// Gopher repetition

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GopherRepetitionConfig {
    #[serde(default)]
    pub languages: Vec<String>,
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

// ---------------------------------------------------------------------------------------------
// C4

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct C4Config {
    #[serde(default)]
    pub languages: Vec<String>,
    /// Drop `[1]`, `[edit]`, `[citation needed]` from lines.
    #[serde(default = "d_true")]
    pub remove_citations: bool,
    /// Keep only lines ending in `.` `?` `!` `"` `'` (and not in `...`). FineWeb turns this off.
    #[serde(default = "d_true")]
    pub filter_no_terminal_punct: bool,
    /// Drop the document if fewer sentences remain (`-1` disables).
    #[serde(default = "d_5")]
    pub min_num_sentences: i64,
    /// Drop lines with fewer words (`-1` disables).
    #[serde(default = "d_3")]
    pub min_words_per_line: i64,
    /// Drop lines with a longer word (`-1` disables).
    #[serde(default = "d_1000")]
    pub max_word_length: i64,
    #[serde(default = "d_true")]
    pub filter_lorem_ipsum: bool,
    #[serde(default = "d_true")]
    pub filter_javascript: bool,
    #[serde(default = "d_true")]
    pub filter_curly_bracket: bool,
    #[serde(default = "d_true")]
    pub filter_policy: bool,
}

fn d_true() -> bool {
    true
}
fn d_5() -> i64 {
    5
}
fn d_3() -> i64 {
    3
}
fn d_1000() -> i64 {
    1000
}

impl Default for C4Config {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl C4Config {
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (k, v) in [
            ("min-num-sentences", self.min_num_sentences),
            ("min-words-per-line", self.min_words_per_line),
            ("max-word-length", self.max_word_length),
        ] {
            if v < -1 {
                return Err((k.into(), format!("{v}: use -1 to disable, or a count ≥ 0")));
            }
        }
        Ok(())
    }
    pub fn build(&self) -> C4 {
        C4 { cfg: self.clone() }
    }
}

pub struct C4 {
    cfg: C4Config,
}

static CITATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[\d*\]|\[edit\]|\[citation needed\]").expect("valid regex"));
const POLICY: [&str; 6] =
    ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"];

impl Stage for C4 {
    fn name(&self) -> &'static str {
        "c4"
    }
    fn score_names(&self) -> Vec<String> {
        ["lines", "lines_kept", "sentences"].map(String::from).into()
    }
    fn applies_to(&self, lang: Option<&str>) -> bool {
        lang_matches(&self.cfg.languages, lang)
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let c = &self.cfg;
        let splitter = WordSplitter::for_lang(doc.lang.as_deref());
        let lines = splitlines(&doc.text);
        ctx.set(0, lines.len() as f64);
        let mut kept: Vec<String> = Vec::new();
        let mut sentences = 0usize;
        let mut doc_rule = None;
        for line in &lines {
            let line = line.trim();
            let n_words = line.split_whitespace().count();
            if c.max_word_length >= 0 && line.split_whitespace().any(|w| chars(w) as i64 > c.max_word_length) {
                ctx.counters.add("line-filter-too_long_word", 1);
                continue;
            }
            let line = if c.remove_citations { CITATION.replace_all(line, "") } else { line.into() };
            if c.filter_no_terminal_punct && (!line.ends_with(['.', '?', '!', '"', '\'']) || line.ends_with("...")) {
                ctx.counters.add("line-filter-no_terminal_punc", 1);
                continue;
            }
            if (n_words as i64) < c.min_words_per_line {
                ctx.counters.add("line-filter-too_few_words", 1);
                continue;
            }
            let lower = line.to_lowercase();
            if c.filter_lorem_ipsum && lower.contains("lorem ipsum") {
                doc_rule = Some("lorem_ipsum");
                break;
            }
            if c.filter_javascript && lower.contains("javascript") {
                ctx.counters.add("line-filter-javascript", 1);
                continue;
            }
            if c.filter_curly_bracket && line.contains('{') {
                doc_rule = Some("curly_bracket");
                break;
            }
            if c.filter_policy && POLICY.iter().any(|p| lower.contains(p)) {
                ctx.counters.add("line-filter-policy", 1);
                continue;
            }
            if c.min_num_sentences != -1 {
                sentences += sentence_count(&splitter.words(&line));
            }
            kept.push(line.into_owned());
        }
        if let Some(rule) = doc_rule {
            return Decision::Drop(rule);
        }
        ctx.set(1, kept.len() as f64);
        ctx.set(2, sentences as f64);
        if (sentences as i64) < c.min_num_sentences {
            return Decision::Drop("too_few_sentences");
        }
        let new_text = kept.join("\n");
        let new_text = new_text.trim();
        if new_text.len() != doc.text.len() {
            ctx.counters.add("docs-modified", 1);
        }
        doc.text = new_text.to_string();
        Decision::Keep
    }
}

// ---------------------------------------------------------------------------------------------
// FineWeb

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FineWebConfig {
    #[serde(default)]
    pub languages: Vec<String>,
    /// Minimum share of lines ending in terminal punctuation.
    #[serde(default = "d_line_punct")]
    pub line_punct_thr: f64,
    /// Do not drop documents where no line ends in punctuation.
    #[serde(default)]
    pub line_punct_exclude_zero: bool,
    /// Maximum share of lines of at most `short-line-length` characters.
    #[serde(default = "d_short_line")]
    pub short_line_thr: f64,
    #[serde(default = "d_short_len")]
    pub short_line_length: usize,
    /// Maximum share of characters in duplicated lines.
    #[serde(default = "d_char_dup")]
    pub char_duplicates_ratio: f64,
    /// Maximum newlines per word (list-like pages).
    #[serde(default = "d_030_f")]
    pub new_line_ratio: f64,
}

fn d_line_punct() -> f64 {
    0.12
}
fn d_short_line() -> f64 {
    0.67
}
fn d_short_len() -> usize {
    30
}
fn d_char_dup() -> f64 {
    0.01
}
fn d_030_f() -> f64 {
    0.3
}

impl Default for FineWebConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl FineWebConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        check_ratio("line-punct-thr", Some(self.line_punct_thr))?;
        check_ratio("short-line-thr", Some(self.short_line_thr))?;
        check_ratio("char-duplicates-ratio", Some(self.char_duplicates_ratio))?;
        if self.new_line_ratio < 0.0 || self.new_line_ratio.is_nan() {
            return Err(("new-line-ratio".into(), format!("{} must be ≥ 0", self.new_line_ratio)));
        }
        Ok(())
    }
    pub fn build(&self) -> FineWeb {
        FineWeb { cfg: self.clone() }
    }
}

pub struct FineWeb {
    cfg: FineWebConfig,
}

impl Stage for FineWeb {
    fn name(&self) -> &'static str {
        "fineweb"
    }
    fn score_names(&self) -> Vec<String> {
        ["line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio"].map(String::from).into()
    }
    fn applies_to(&self, lang: Option<&str>) -> bool {
        lang_matches(&self.cfg.languages, lang)
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let c = &self.cfg;
        let text = doc.text.as_str();
        let lines: Vec<&str> = text.split('\n').filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return Decision::Drop("empty");
        }
        let n = lines.len() as f64;
        let punct = lines.iter().filter(|l| l.chars().next_back().is_some_and(is_terminal_punct)).count() as f64 / n;
        let short = lines.iter().filter(|l| chars(l) <= c.short_line_length).count() as f64 / n;
        let denom = chars(text) - text.matches('\n').count();
        let dup = find_duplicates(lines.iter().copied()).1 as f64 / denom.max(1) as f64;
        let words = WordSplitter::for_lang(doc.lang.as_deref()).words(text).len();
        let newlines = text.matches('\n').count() as f64;
        let list = if words == 0 { f64::INFINITY } else { newlines / words as f64 };
        ctx.set(0, punct);
        ctx.set(1, short);
        ctx.set(2, dup);
        if list.is_finite() {
            ctx.set(3, list);
        }
        if punct < c.line_punct_thr && !(punct == 0.0 && c.line_punct_exclude_zero) {
            return Decision::Drop("line_punct_ratio");
        }
        if short > c.short_line_thr {
            return Decision::Drop("short_line_ratio");
        }
        if dup > c.char_duplicates_ratio {
            return Decision::Drop("char_dup_ratio");
        }
        if list > c.new_line_ratio {
            return Decision::Drop("list_ratio");
        }
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stage: &dyn Stage, lang: &str, text: &str) -> (Decision, Vec<Option<f64>>, String) {
        let mut doc = Document::new("d", text);
        doc.lang = Some(lang.into());
        let mut ctx = Ctx::for_stage(stage);
        let d = stage.process(&mut doc, &mut ctx);
        (d, ctx.scores, doc.text)
    }

    const GOOD: &str = "The quick brown fox jumps over the lazy dog and runs to the forest with its friends. \
        It is a sunny day, and the animals have a lot of fun together in the green meadow near the river. \
        They play games, they sing songs, and they eat berries that grow along the path to the old mill. \
        Later that evening the fox returns home, tired but happy, and tells the story to the rest of the family.";

    #[test]
    fn gopher_quality_keeps_prose_and_names_the_rule() {
        let g = GopherQualityConfig::default().build();
        assert_eq!(run(&g, "en", GOOD).0, Decision::Keep);
        assert_eq!(run(&g, "en", "too short to count").0, Decision::Drop("gopher_short_doc"));
        let hashes = format!("{GOOD} {}", "#tag ".repeat(30));
        assert_eq!(run(&g, "en", &hashes).0, Decision::Drop("gopher_too_many_hashes"));
        let numbers = format!("{GOOD}\n{}", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 ".repeat(20));
        assert_eq!(run(&g, "en", &numbers).0, Decision::Drop("gopher_below_avg_threshold"));
        // all punctuation / all digits / empty: no panic, dropped
        for t in ["", "!!!! ???? ....", "1234567890 0987654321"] {
            assert!(matches!(run(&g, "en", t).0, Decision::Drop(_)));
        }
    }

    #[test]
    fn gopher_quality_cjk_uses_real_words() {
        let cfg = GopherQualityConfig {
            min_doc_words: Some(10),
            min_avg_word_length: Some(1.0),
            max_avg_word_length: Some(5.0),
            stop_words: ["的", "是", "在", "了", "和"].map(String::from).into(),
            ..Default::default()
        };
        let g = cfg.build();
        let zh = "我们今天在公园里散步，天气很好。孩子们在草地上玩耍，老人们在树下聊天，这是一个美好的周末。";
        let (d, scores, _) = run(&g, "zh", zh);
        assert_eq!(d, Decision::Keep, "{scores:?}");
        let mean = scores[1].unwrap();
        assert!((1.0..3.0).contains(&mean), "jieba words are 1-3 characters: {mean}");
        let ko = GopherQualityConfig {
            min_doc_words: Some(5),
            min_avg_word_length: Some(1.0),
            stop_words: ["는", "을", "에서", "의"].map(String::from).into(),
            stop_word_match: StopWordMatch::Suffix,
            ..Default::default()
        }
        .build();
        let (d, scores, _) = run(&ko, "ko", "나는 학교에서 친구의 책을 읽었다. 오늘은 날씨가 좋다.");
        assert_eq!(d, Decision::Keep, "{scores:?}");
        assert_eq!(scores[7], Some(4.0));
    }

    #[test]
    fn repetition_catches_repeated_lines_and_ngrams() {
        let g = GopherRepetitionConfig::default().build();
        assert_eq!(run(&g, "en", GOOD).0, Decision::Keep);
        let lines = format!("{GOOD}\nBuy now!\nBuy now!\nBuy now!\nBuy now!");
        assert_eq!(run(&g, "en", &lines).0, Decision::Drop("dup_line_frac"));
        let spam = "buy cheap pills online ".repeat(30);
        assert!(matches!(run(&g, "en", &spam).0, Decision::Drop(_)));
        assert_eq!(run(&g, "en", "").0, Decision::Drop("empty"));
        // Chinese: repeated phrases are found through jieba words
        let zh = "哈哈哈哈".repeat(40);
        assert!(matches!(run(&g, "zh", &zh).0, Decision::Drop(_)));
    }

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

    #[test]
    fn c4_filters_lines_and_pages() {
        let c = C4Config::default().build();
        let text = "Home\nThis site uses cookies to improve your experience of the site.\n\
            Enable JavaScript to view this page properly please.\n\
            One sentence here is fine. Two sentences here are fine.\n\
            Three is good too. Four is also good! Is five good?\nShort one.";
        let (d, scores, out) = run(&c, "en", text);
        assert_eq!(d, Decision::Keep, "{scores:?}");
        assert_eq!(out, "One sentence here is fine. Two sentences here are fine.\nThree is good too. Four is also good! Is five good?");
        assert_eq!(scores[2], Some(5.0));
        assert_eq!(run(&c, "en", "Lorem ipsum dolor sit amet.").0, Decision::Drop("lorem_ipsum"));
        assert_eq!(run(&c, "en", "function f() { return 1; } is code.").0, Decision::Drop("curly_bracket"));
        assert_eq!(run(&c, "en", "").0, Decision::Drop("too_few_sentences"));
    }

    #[test]
    fn fineweb_rules() {
        let f = FineWebConfig::default().build();
        assert_eq!(run(&f, "en", GOOD).0, Decision::Keep);
        assert_eq!(run(&f, "en", "a\nb\nc\nd").0, Decision::Drop("line_punct_ratio"));
        assert_eq!(run(&f, "en", "Short.\nLines.\nOnly.").0, Decision::Drop("short_line_ratio"));
        let dup = format!("{GOOD}\n{GOOD}");
        assert_eq!(run(&f, "en", &dup).0, Decision::Drop("char_dup_ratio"));
        assert_eq!(run(&f, "en", "\n\n  \n").0, Decision::Drop("empty"));
        assert_eq!(
            run(&f, "zh", "今天天气很好，我们一起去公园散步，看见了很多美丽的花朵和高大的树木。").0,
            Decision::Keep
        );
    }

    #[test]
    fn splitlines_matches_python() {
        assert_eq!(splitlines("a\nb\r\nc\rd\u{2028}e\n"), vec!["a", "b", "c", "d", "e"]);
        assert_eq!(splitlines(""), Vec::<&str>::new());
        assert_eq!(splitlines("\n\n"), vec!["", ""]);
    }
}
