//! Document stages. A stage looks at one document at a time and either keeps it (possibly
//! rewritten) or drops it with a reason; stages run in the order the spec lists them, fused in
//! one pass over each shard.
//!
//! Adding a stage: a module with its config (serde, kebab-case, unknown keys rejected), a
//! `validate` that returns `(key, message)`, and a [`Stage`] implementation; then a variant in
//! [`StageSpec`].

mod boilerplate;
mod decontam;
mod langid;
mod min_length;
mod normalize;
mod pii;
mod quality;
mod score_view;

use serde::{Deserialize, Serialize};

pub use boilerplate::BoilerplateConfig;
pub use decontam::{DecontamAction, DecontamConfig, Decontaminate, NgramIndex};
pub use langid::{LangId, LangIdBackend, LangIdConfig};
pub use min_length::MinLengthConfig;
pub use normalize::{NormalizeConfig, UnicodeForm};
pub use pii::PiiConfig;
pub use quality::{C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig, StopWordMatch};
pub use score_view::{width_normalize, ScoreView};

use crate::document::Document;

/// What a stage decided about one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Dropped; the reason is a short rule name counted in the manifest.
    Drop(&'static str),
}

/// Named counts a stage keeps besides kept/dropped (e.g. `pii.email`), summed into the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Counters(pub std::collections::BTreeMap<String, u64>);

impl Counters {
    pub fn add(&mut self, key: &str, n: u64) {
        if n > 0 {
            *self.0.entry(key.to_string()).or_default() += n;
        }
    }
}

/// What a stage may record about the document it is looking at: counts summed into the
/// manifest and per-document scores written to the attributes file.
#[derive(Debug, Default)]
pub struct Ctx {
    pub counters: Counters,
    /// One slot per name of [`Stage::score_names`], reset to `None` before each document.
    pub scores: Vec<Option<f64>>,
    /// The document's position among the documents read from the shard (0-based).
    pub row: u64,
}

impl Ctx {
    pub fn for_stage(stage: &dyn Stage) -> Ctx {
        Ctx { counters: Counters::default(), scores: vec![None; stage.score_names().len()], row: 0 }
    }
    pub fn set(&mut self, slot: usize, value: f64) {
        if let Some(s) = self.scores.get_mut(slot) {
            *s = Some(value);
        }
    }
}

pub trait Stage: Send + Sync {
    /// The name used in counts and reports (the spec's `type`).
    fn name(&self) -> &'static str;
    /// Names of the per-document scores the stage records, fixed for the stage's life so that
    /// attribute columns are the same in every shard.
    fn score_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether the stage looks at documents of this language (`None`: unknown language).
    fn applies_to(&self, _lang: Option<&str>) -> bool {
        true
    }
    fn process(&self, doc: &mut Document, ctx: &mut Ctx) -> Decision;
}

/// `languages = [...]` of a stage: empty means every document; otherwise the document's
/// language (ISO 639-1, region/script suffixes ignored: `zh-Hant` is `zh`) must be listed.
/// One definition with the synth templates' `languages`, which lehr-synth matches alike.
pub use lehr_synth::lang_matches;

/// One `[[stage]]` table of the spec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum StageSpec {
    /// Unicode, whitespace and control-character normalization.
    Normalize(NormalizeConfig),
    /// Drops documents shorter (or longer) than a number of characters.
    MinLength(MinLengthConfig),
    /// Masks e-mail addresses, phone numbers and IP addresses.
    Pii(PiiConfig),
    /// Language identification (built-in or fastText lid.176) with a score; keeps or drops by
    /// language and minimum score.
    LangId(LangIdConfig),
    /// Drops boilerplate lines (cookie banners, share/subscribe, breadcrumbs), strips leftover
    /// HTML, collapses blank lines.
    Boilerplate(BoilerplateConfig),
    /// Gopher quality rules (word counts, mean word length, symbols, bullets, stop words).
    GopherQuality(GopherQualityConfig),
    /// Gopher repetition rules (duplicate lines/paragraphs, top and duplicated n-grams).
    GopherRepetition(GopherRepetitionConfig),
    /// C4 line and page rules.
    C4(C4Config),
    /// FineWeb quality rules (line punctuation, short lines, duplicated lines, list-like pages).
    Fineweb(FineWebConfig),
    /// Drops (or flags) documents sharing an n-gram with evaluation items.
    Decontaminate(DecontamConfig),
    /// Generates documents from each input through OpenAI-compatible endpoints (docs/synthetic.md);
    /// the stages after it run on the generated documents.
    Synth(Box<lehr_synth::SynthConfig>),
}

impl StageSpec {
    /// Checks values; on error returns the key (relative to the stage) and a message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match self {
            StageSpec::Normalize(_) | StageSpec::Pii(_) => Ok(()),
            StageSpec::MinLength(c) => c.validate(),
            StageSpec::LangId(c) => c.validate(),
            StageSpec::Boilerplate(c) => c.validate(),
            StageSpec::GopherQuality(c) => c.validate(),
            StageSpec::GopherRepetition(c) => c.validate(),
            StageSpec::C4(c) => c.validate(),
            StageSpec::Fineweb(c) => c.validate(),
            StageSpec::Decontaminate(c) => c.validate(),
            StageSpec::Synth(c) => c.validate(),
        }
    }

    /// Builds the stage (compiles patterns, loads models). Errors say what to fix.
    pub fn build(&self) -> Result<Box<dyn Stage>, String> {
        Ok(match self {
            StageSpec::Normalize(c) => Box::new(c.clone()),
            StageSpec::MinLength(c) => Box::new(c.clone()),
            StageSpec::Pii(c) => Box::new(c.clone()),
            StageSpec::LangId(c) => Box::new(c.build()?),
            StageSpec::Boilerplate(c) => Box::new(c.build()?),
            StageSpec::GopherQuality(c) => score_view::viewed(c.score_view, Box::new(c.build())),
            StageSpec::GopherRepetition(c) => score_view::viewed(c.score_view, Box::new(c.build())),
            StageSpec::C4(c) => score_view::viewed(c.score_view, Box::new(c.build())),
            StageSpec::Fineweb(c) => score_view::viewed(c.score_view, Box::new(c.build())),
            StageSpec::Decontaminate(c) => Box::new(c.build()?),
            // The runner sends a shard's documents to the endpoints together (crate::synth);
            // this slot only holds the stage's place and counts.
            StageSpec::Synth(_) => Box::new(crate::synth::SynthSlot),
        })
    }

    /// The `languages` a stage is limited to (empty: all).
    pub fn languages(&self) -> &[String] {
        match self {
            StageSpec::GopherQuality(c) => &c.languages,
            StageSpec::GopherRepetition(c) => &c.languages,
            StageSpec::C4(c) => &c.languages,
            StageSpec::Fineweb(c) => &c.languages,
            StageSpec::Boilerplate(c) => &c.languages,
            StageSpec::Normalize(_)
            | StageSpec::MinLength(_)
            | StageSpec::Pii(_)
            | StageSpec::LangId(_)
            | StageSpec::Decontaminate(_)
            | StageSpec::Synth(_) => &[],
        }
    }

    /// Makes file paths in the stage (models) absolute against the submit directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        match self {
            StageSpec::LangId(c) => c.resolve_paths(base),
            StageSpec::Decontaminate(c) => c.resolve_paths(base),
            StageSpec::Synth(c) => c.resolve_paths(base),
            _ => {}
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            StageSpec::Normalize(_) => "normalize",
            StageSpec::MinLength(_) => "min-length",
            StageSpec::Pii(_) => "pii",
            StageSpec::LangId(_) => "lang-id",
            StageSpec::Boilerplate(_) => "boilerplate",
            StageSpec::GopherQuality(_) => "gopher-quality",
            StageSpec::GopherRepetition(_) => "gopher-repetition",
            StageSpec::C4(_) => "c4",
            StageSpec::Fineweb(_) => "fineweb",
            StageSpec::Decontaminate(_) => "decontaminate",
            StageSpec::Synth(_) => "synth",
        }
    }
}
