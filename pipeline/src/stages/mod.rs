//! Document stages. A stage looks at one document at a time and either keeps it (possibly
//! rewritten) or drops it with a reason; stages run in the order the spec lists them, fused in
//! one pass over each shard.
//!
//! Adding a stage: a module with its config (serde, kebab-case, unknown keys rejected), a
//! `validate` that returns `(key, message)`, and a [`Stage`] implementation; then a variant in
//! [`StageSpec`].

mod min_length;
mod normalize;
mod pii;

use serde::{Deserialize, Serialize};

pub use min_length::MinLengthConfig;
pub use normalize::{NormalizeConfig, UnicodeForm};
pub use pii::PiiConfig;

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

pub trait Stage: Send + Sync {
    /// The name used in counts and reports (the spec's `type`).
    fn name(&self) -> &'static str;
    fn process(&self, doc: &mut Document, counters: &mut Counters) -> Decision;
}

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
}

impl StageSpec {
    /// Checks values; on error returns the key (relative to the stage) and a message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        match self {
            StageSpec::Normalize(_) | StageSpec::Pii(_) => Ok(()),
            StageSpec::MinLength(c) => c.validate(),
        }
    }

    pub fn build(&self) -> Box<dyn Stage> {
        match self {
            StageSpec::Normalize(c) => Box::new(c.clone()),
            StageSpec::MinLength(c) => Box::new(c.clone()),
            StageSpec::Pii(c) => Box::new(c.clone()),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            StageSpec::Normalize(_) => "normalize",
            StageSpec::MinLength(_) => "min-length",
            StageSpec::Pii(_) => "pii",
        }
    }
}
