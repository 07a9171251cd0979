//! Gopher quality (datatrove's `GopherQualityFilter`): word counts and lengths, symbol, bullet,
//! ellipsis and non-alphabetic word ratios, stop words.

use super::*;

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
    /// What the scores are computed on (`text`, or `width-normalized`: full-width ASCII and the
    /// ideographic space as ASCII; the document is unchanged). See `stages/score_view.rs`.
    #[serde(default)]
    pub score_view: super::super::ScoreView,
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
        // datatrove's sets and Python's isalpha, exactly (crate::text::is_datatrove_punct)
        for w in &words {
            if w.chars().any(|ch| !is_datatrove_punct(ch)) {
                n_content += 1;
                content_chars += chars(w);
            }
            if w.chars().any(is_py_alpha) {
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
