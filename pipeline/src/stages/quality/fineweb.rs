//! FineWeb's line rules (datatrove's `FineWebQualityFilter`).

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FineWebConfig {
    #[serde(default)]
    pub languages: Vec<String>,
    /// What the scores are computed on (`text`, or `width-normalized`: full-width ASCII and the
    /// ideographic space as ASCII; the document is unchanged). See `stages/score_view.rs`.
    #[serde(default)]
    pub score_view: super::super::ScoreView,
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
        let punct =
            lines.iter().filter(|l| l.chars().next_back().is_some_and(is_datatrove_terminal)).count() as f64 / n;
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
