//! C4's line and document rules (datatrove's `C4QualityFilter`).

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct C4Config {
    #[serde(default)]
    pub languages: Vec<String>,
    /// What the scores are computed on (`text`, or `width-normalized`: full-width ASCII and the
    /// ideographic space as ASCII; the document is unchanged). See `stages/score_view.rs`.
    #[serde(default)]
    pub score_view: super::super::ScoreView,
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
