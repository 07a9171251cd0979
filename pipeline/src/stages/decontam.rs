//! Decontamination: drop (or flag) documents that share an n-gram (13 words by default, as in
//! GPT-3 and DCLM) with any item of the given evaluation sets, and count which items were hit.
//!
//! Text is cut the same way for eval items and documents: lowercase, punctuation and symbols
//! are separators, and every CJK ideograph or kana is a unit of its own (so Chinese and
//! Japanese are matched by character n-grams, Korean and Latin scripts by words).

use std::path::Path;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::{Ctx, Decision, Stage};
use crate::document::Document;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DecontamConfig {
    /// JSONL files of evaluation items: each line has `text`, or `context` (+ `choices` and
    /// `gold`, the format of lehr's eval fixtures), and optionally `id`.
    pub eval_sets: Vec<String>,
    /// Units per n-gram.
    #[serde(default = "default_ngram")]
    pub ngram: usize,
    #[serde(default)]
    pub action: DecontamAction,
}

fn default_ngram() -> usize {
    13
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DecontamAction {
    /// Drop the document.
    #[default]
    Drop,
    /// Keep it, with the ids of the items it overlaps in `contaminated_by`.
    Flag,
}

impl DecontamConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.eval_sets.is_empty() {
            return Err(("eval-sets".into(), "list at least one JSONL file of evaluation items".into()));
        }
        if !(3..=64).contains(&self.ngram) {
            return Err(("ngram".into(), format!("{} is out of range 3..=64", self.ngram)));
        }
        Ok(())
    }

    pub fn resolve_paths(&mut self, base: &Path) {
        for p in self.eval_sets.iter_mut() {
            *p = crate::store::absolutize(p, base);
        }
    }

    pub fn build(&self) -> Result<Decontaminate, String> {
        let mut index = NgramIndex { ngram: self.ngram, map: FxHashMap::default(), items: Vec::new(), short_items: 0 };
        for path in &self.eval_sets {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read eval set {path}: {e}"))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: Value =
                    serde_json::from_str(line).map_err(|e| format!("{path}:{}: not a JSON object: {e}", i + 1))?;
                let Some(item_text) = item_text(&v) else {
                    return Err(format!("{path}:{}: an eval item needs `text` or `context`", i + 1));
                };
                let id = match v.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => format!(
                        "{}:{}",
                        Path::new(path).file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
                        i + 1
                    ),
                };
                index.add(id, &item_text);
            }
        }
        if index.items.is_empty() {
            return Err("the eval sets hold no items".into());
        }
        Ok(Decontaminate { index: Arc::new(index), action: self.action })
    }
}

/// The text of an eval item: `text`, or `context` followed by the gold choice.
fn item_text(v: &Value) -> Option<String> {
    if let Some(t) = v.get("text").and_then(Value::as_str) {
        return Some(t.to_string());
    }
    let context = v.get("context").and_then(Value::as_str)?;
    let gold = v
        .get("gold")
        .and_then(Value::as_u64)
        .and_then(|g| v.get("choices").and_then(|c| c.get(g as usize)).and_then(Value::as_str));
    Some(match gold {
        Some(g) => format!("{context} {g}"),
        None => context.to_string(),
    })
}

/// Unit hashes of a text (see the module docs).
pub fn units(text: &str) -> Vec<u64> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<u64>| {
        if !word.is_empty() {
            out.push(xxh3_64(word.as_bytes()));
            word.clear();
        }
    };
    for c in lower.chars() {
        if c.is_whitespace() || crate::text::is_punct_char(c) {
            flush(&mut word, &mut out);
        } else if is_ideograph_or_kana(c) {
            flush(&mut word, &mut out);
            let mut b = [0u8; 4];
            out.push(xxh3_64(c.encode_utf8(&mut b).as_bytes()));
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn is_ideograph_or_kana(c: char) -> bool {
    crate::text::is_cjk(c) && !matches!(c as u32, 0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF)
}

fn ngram_hash(units: &[u64]) -> u64 {
    let mut buf = Vec::with_capacity(units.len() * 8);
    for u in units {
        buf.extend_from_slice(&u.to_le_bytes());
    }
    xxh3_64_with_seed(&buf, 0x6465_636f)
}

/// Every n-gram of the eval items → the first item that has it.
#[derive(Debug)]
pub struct NgramIndex {
    ngram: usize,
    map: FxHashMap<u64, u32>,
    items: Vec<String>,
    /// Items with fewer units than `ngram`: they cannot be matched.
    short_items: u64,
}

impl NgramIndex {
    fn add(&mut self, id: String, text: &str) {
        let u = units(text);
        if u.len() < self.ngram {
            self.short_items += 1;
            return;
        }
        let idx = self.items.len() as u32;
        self.items.push(id);
        for w in u.windows(self.ngram) {
            self.map.entry(ngram_hash(w)).or_insert(idx);
        }
    }

    /// The items whose n-grams `text` contains, sorted.
    pub fn hits(&self, text: &str) -> Vec<u32> {
        let u = units(text);
        let mut hits: Vec<u32> = u.windows(self.ngram).filter_map(|w| self.map.get(&ngram_hash(w)).copied()).collect();
        hits.sort_unstable();
        hits.dedup();
        hits
    }

    pub fn items(&self) -> usize {
        self.items.len()
    }

    pub fn short_items(&self) -> u64 {
        self.short_items
    }
}

pub struct Decontaminate {
    index: Arc<NgramIndex>,
    action: DecontamAction,
}

impl Decontaminate {
    pub fn index(&self) -> &NgramIndex {
        &self.index
    }
}

impl Stage for Decontaminate {
    fn name(&self) -> &'static str {
        "decontaminate"
    }

    fn score_names(&self) -> Vec<String> {
        vec!["eval_items_hit".into()]
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let hits = self.index.hits(&doc.text);
        ctx.set(0, hits.len() as f64);
        if hits.is_empty() {
            return Decision::Keep;
        }
        ctx.counters.add("docs_hit", 1);
        for &h in &hits {
            ctx.counters.add(&format!("item:{}", self.index.items[h as usize]), 1);
        }
        match self.action {
            DecontamAction::Drop => Decision::Drop("eval_overlap"),
            DecontamAction::Flag => {
                let ids: Vec<Value> =
                    hits.iter().map(|&h| Value::String(self.index.items[h as usize].clone())).collect();
                doc.extra.insert("contaminated_by".into(), Value::Array(ids));
                Decision::Keep
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(dir: &tempfile::TempDir, lines: &[&str], ngram: usize, action: DecontamAction) -> Decontaminate {
        let p = dir.path().join("eval.jsonl");
        std::fs::write(&p, lines.join("\n")).unwrap();
        DecontamConfig { eval_sets: vec![p.to_string_lossy().into()], ngram, action }.build().unwrap()
    }

    #[test]
    fn finds_overlap_across_case_and_punctuation() {
        let dir = tempfile::tempdir().unwrap();
        let s = stage(
            &dir,
            &[
                r#"{"id":"q1","context":"Question: Which best describes the structure of an atom?\nAnswer:","choices":["x","a massive core surrounded by negatively-charged particles"],"gold":1}"#,
                r#"{"id":"short","text":"too short"}"#,
                r#"{"id":"zh","text":"床前明月光，疑是地上霜。举头望明月，低头思故乡。"}"#,
            ],
            13,
            DecontamAction::Drop,
        );
        assert_eq!(s.index().items(), 2);
        assert_eq!(s.index().short_items(), 1);
        let mut ctx = Ctx::for_stage(&s);
        let mut doc = Document::new("d", "Study guide. QUESTION — which best describes the structure of an atom? answer: A massive core surrounded by negatively charged particles! More text.");
        assert_eq!(s.process(&mut doc, &mut ctx), Decision::Drop("eval_overlap"));
        assert_eq!(ctx.counters.0.get("item:q1"), Some(&1));
        let mut zh = Document::new("z", "李白的诗：床前明月光疑是地上霜举头望明月，真好。");
        assert_eq!(s.process(&mut zh, &mut ctx), Decision::Drop("eval_overlap"));
        let mut clean =
            Document::new("c", "The structure of an atom is a nucleus with electrons around it, says the guide.");
        assert_eq!(s.process(&mut clean, &mut ctx), Decision::Keep);
    }

    #[test]
    fn flag_keeps_and_names_the_items() {
        let dir = tempfile::tempdir().unwrap();
        let s = stage(&dir, &[r#"{"id":7,"text":"one two three four five six"}"#], 4, DecontamAction::Flag);
        let mut doc = Document::new("d", "zero one two three four nine");
        assert_eq!(s.process(&mut doc, &mut Ctx::for_stage(&s)), Decision::Keep);
        assert_eq!(doc.extra["contaminated_by"], serde_json::json!(["7"]));
    }

    #[test]
    fn bad_eval_files_are_errors_with_locations() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.jsonl");
        std::fs::write(&p, "{\"text\":\"ok ok ok\"}\nnot json\n").unwrap();
        let err =
            DecontamConfig { eval_sets: vec![p.to_string_lossy().into()], ngram: 3, action: DecontamAction::Drop }
                .build()
                .err()
                .unwrap();
        assert!(err.contains("bad.jsonl:2"), "{err}");
    }
}
