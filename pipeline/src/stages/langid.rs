//! `lang-id`: language identification with a score per document.
//!
//! Two backends:
//! - `builtin` (default, no model file): whatlang's trigram + script detector, with a script
//!   check in front so that Chinese and Korean pages carrying English UI words and code are
//!   still labelled by the script of their prose;
//! - `fasttext`: a fastText `.bin`/`.ftz` model such as `lid.176.ftz` (the model FineWeb uses),
//!   giving the same label and probability as `fasttext.predict` on the text with newlines
//!   turned into spaces (what datatrove's `LanguageFilter` does).
//!
//! Labels are ISO 639-1 where one exists (`en`, `zh`, `ko`), else ISO 639-3. The detected label
//! replaces the document's `lang`; a different input label is kept in the `input_lang` field.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Ctx, Decision, Stage};
use crate::document::Document;
use crate::lid_model::FastTextLid;
use crate::text::is_cjk;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LangIdBackend {
    #[default]
    Builtin,
    Fasttext,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LangIdConfig {
    #[serde(default)]
    pub backend: LangIdBackend,
    /// fastText model file (`backend = "fasttext"`), e.g. `lid.176.ftz`. Relative paths are
    /// resolved against the directory the job was submitted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Languages to keep; empty keeps every language (documents are only labelled and scored).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Minimum score of the detected language (datatrove's default: 0.65).
    #[serde(default = "d_min_score")]
    pub min_score: f64,
    /// Per-language minimum scores (FineWeb-2 calibrates one per language), overriding
    /// `min-score`.
    #[serde(default)]
    pub min_score_by_lang: BTreeMap<String, f64>,
    /// Only label and score; never drop.
    #[serde(default)]
    pub label_only: bool,
}

fn d_min_score() -> f64 {
    0.65
}

impl Default for LangIdConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

impl LangIdConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(0.0..=1.0).contains(&self.min_score) {
            return Err(("min-score".into(), format!("{} is not in [0, 1]", self.min_score)));
        }
        for (l, s) in &self.min_score_by_lang {
            if !(0.0..=1.0).contains(s) {
                return Err((format!("min-score-by-lang.{l}"), format!("{s} is not in [0, 1]")));
            }
        }
        match (self.backend, &self.model) {
            (LangIdBackend::Fasttext, None) => Err((
                "model".into(),
                "backend \"fasttext\" needs `model = \"path/to/lid.176.ftz\"` (FineWeb's model; \
                 or use backend = \"builtin\", which needs no file)"
                    .into(),
            )),
            (LangIdBackend::Builtin, Some(_)) => {
                Err(("model".into(), "a model file is only used with backend = \"fasttext\"".into()))
            }
            _ => Ok(()),
        }
    }

    /// Makes the model path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(m) = &mut self.model {
            *m = crate::store::absolutize(m, base);
        }
    }

    pub fn build(&self) -> Result<LangId, String> {
        let model = match (&self.backend, &self.model) {
            (LangIdBackend::Fasttext, Some(path)) => Some(load_cached(Path::new(path))?),
            _ => None,
        };
        Ok(LangId { cfg: self.clone(), model })
    }
}

/// Models are loaded once per process and shared by every task that names the same file.
fn load_cached(path: &Path) -> Result<Arc<FastTextLid>, String> {
    static CACHE: LazyLock<Mutex<HashMap<PathBuf, Arc<FastTextLid>>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().map_err(|_| "language-id model cache poisoned".to_string())?;
    if let Some(m) = cache.get(path) {
        return Ok(m.clone());
    }
    let m = Arc::new(FastTextLid::load(path)?);
    cache.insert(path.to_path_buf(), m.clone());
    Ok(m)
}

pub struct LangId {
    cfg: LangIdConfig,
    model: Option<Arc<FastTextLid>>,
}

impl LangId {
    /// `(label, score)` of the most likely language; `None` for text with no letters.
    pub fn detect(&self, text: &str) -> Option<(String, f64)> {
        match &self.model {
            Some(m) => m.predict(text),
            None => builtin_detect(text),
        }
    }
}

impl Stage for LangId {
    fn name(&self) -> &'static str {
        "lang-id"
    }
    fn score_names(&self) -> Vec<String> {
        vec!["score".into()]
    }

    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision {
        let Some((lang, score)) = self.detect(&doc.text) else {
            ctx.counters.add("undetermined", 1);
            if self.cfg.label_only || self.cfg.keep.is_empty() {
                return Decision::Keep;
            }
            return Decision::Drop("lang_undetermined");
        };
        ctx.set(0, score);
        if let Some(old) = doc.lang.take() {
            if old != lang {
                ctx.counters.add("relabelled", 1);
                doc.extra.insert("input_lang".into(), Value::String(old));
            }
        }
        ctx.counters.add(&format!("lang.{lang}"), 1);
        let keep = self.cfg.keep.is_empty() || self.cfg.keep.iter().any(|k| k == &lang);
        let min = self.cfg.min_score_by_lang.get(&lang).copied().unwrap_or(self.cfg.min_score);
        doc.lang = Some(lang);
        if self.cfg.label_only {
            return Decision::Keep;
        }
        if !keep {
            return Decision::Drop("lang_not_kept");
        }
        if score < min {
            return Decision::Drop("lang_low_score");
        }
        Decision::Keep
    }
}

/// whatlang's ISO 639-3 codes → ISO 639-1 where one exists (lid.176 uses 639-1).
fn iso639_1(code: &str) -> &str {
    match code {
        "cmn" => "zh",
        "eng" => "en",
        "kor" => "ko",
        "jpn" => "ja",
        "rus" => "ru",
        "spa" => "es",
        "por" => "pt",
        "ita" => "it",
        "fra" => "fr",
        "deu" => "de",
        "ukr" => "uk",
        "ell" => "el",
        "tur" => "tr",
        "ara" => "ar",
        "hin" => "hi",
        "vie" => "vi",
        "tha" => "th",
        "nld" => "nl",
        "pol" => "pl",
        "ind" => "id",
        "swe" => "sv",
        "dan" => "da",
        "fin" => "fi",
        "nob" => "no",
        "ces" => "cs",
        "hun" => "hu",
        "ron" => "ro",
        "heb" => "he",
        "pes" => "fa",
        "ben" => "bn",
        "tam" => "ta",
        "urd" => "ur",
        "bul" => "bg",
        "hrv" => "hr",
        "srp" => "sr",
        "slk" => "sk",
        "slv" => "sl",
        "lit" => "lt",
        "lav" => "lv",
        "est" => "et",
        "cat" => "ca",
        "epo" => "eo",
        "afr" => "af",
        "tgl" => "tl",
        "zul" => "zu",
        other => other,
    }
}

/// The built-in detector. Chinese and Korean are decided by script first: a page whose letters
/// are at least 30% Han/Hangul is Chinese/Korean/Japanese by its CJK script mix (English UI
/// words and code inside CJK pages are common, and trigram detectors then say "English");
/// everything else goes to whatlang, whose confidence is the score.
fn builtin_detect(text: &str) -> Option<(String, f64)> {
    let (mut letters, mut han, mut hangul, mut kana) = (0usize, 0usize, 0usize, 0usize);
    for c in text.chars() {
        if c.is_alphabetic() {
            letters += 1;
            if is_cjk(c) {
                match c as u32 {
                    0x3040..=0x30FF => kana += 1,
                    0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => hangul += 1,
                    _ => han += 1,
                }
            }
        }
    }
    if letters == 0 {
        return None;
    }
    let cjk = han + hangul + kana;
    // A CJK character carries about as much text as 3 Latin letters: weigh them so.
    let weighted_cjk = 3 * cjk;
    let weighted_total = weighted_cjk + (letters - cjk);
    if cjk > 0 && weighted_cjk * 10 >= weighted_total * 3 {
        // Score: how clearly the CJK part is one language, scaled down for pages whose CJK
        // share is under one half (likely mixed or mostly another script).
        let share = (2.0 * weighted_cjk as f64 / weighted_total as f64).min(1.0);
        let (lang, own) = if hangul >= han && hangul >= kana {
            ("ko", hangul)
        } else if kana * 5 >= han.max(1) {
            ("ja", kana + han)
        } else {
            ("zh", han)
        };
        let purity = own as f64 / cjk as f64;
        return Some((lang.to_string(), (share * purity).clamp(0.0, 1.0)));
    }
    let info = whatlang::detect(text)?;
    Some((iso639_1(info.lang().code()).to_string(), info.confidence()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_labels_the_three_languages() {
        let id = LangIdConfig::default().build().unwrap();
        let d = |t: &str| id.detect(t).map(|x| x.0);
        assert_eq!(d("The quick brown fox jumps over the lazy dog near the river bank.").as_deref(), Some("en"));
        assert_eq!(d("我们今天去公园散步吧，天气非常好。").as_deref(), Some("zh"));
        assert_eq!(d("안녕하세요, 오늘 날씨가 정말 좋네요.").as_deref(), Some("ko"));
        assert_eq!(
            d("选择 Tools - Options - LibreOffice Writer - 格式化帮助，然后单击确定按钮。").as_deref(),
            Some("zh")
        );
        assert_eq!(d("12345 !!! ..."), None);
    }

    #[test]
    fn keep_and_min_score_decide() {
        let cfg = LangIdConfig { keep: vec!["zh".into()], min_score: 0.5, ..Default::default() };
        let id = cfg.build().unwrap();
        let mut ctx = Ctx::for_stage(&id);
        let mut doc = Document::new("a", "The quick brown fox jumps over the lazy dog.");
        doc.lang = Some("zh".into());
        assert_eq!(id.process(&mut doc, &mut ctx), Decision::Drop("lang_not_kept"));
        assert_eq!(doc.lang.as_deref(), Some("en"));
        assert_eq!(doc.extra.get("input_lang"), Some(&Value::String("zh".into())));
        let mut doc = Document::new("b", "今天天气很好，我们去公园吧。");
        assert_eq!(id.process(&mut doc, &mut ctx), Decision::Keep);
        assert!(ctx.scores[0].unwrap() > 0.5);
    }

    #[test]
    fn fasttext_needs_a_model() {
        let cfg = LangIdConfig { backend: LangIdBackend::Fasttext, ..Default::default() };
        assert_eq!(cfg.validate().unwrap_err().0, "model");
        let cfg = LangIdConfig {
            model: Some("/nonexistent/lid.176.ftz".into()),
            backend: LangIdBackend::Fasttext,
            ..Default::default()
        };
        let err = cfg.build().err().unwrap();
        assert!(err.contains("/nonexistent/lid.176.ftz"), "{err}");
    }
}
