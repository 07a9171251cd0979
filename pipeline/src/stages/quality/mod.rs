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
use crate::text::{is_datatrove_punct, is_datatrove_terminal, is_py_alpha, sentence_count, WordSplitter};

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

mod c4;
mod fineweb;
mod gopher_quality;
mod gopher_repetition;
#[cfg(test)]
mod tests;

pub use c4::*;
pub use fineweb::*;
pub use gopher_quality::*;
pub use gopher_repetition::*;
