//! The run spec (TOML): sources (named sets of token shards), stages with per-source token
//! budgets or ratios, sequence length, global batch, and a learning-rate phase per stage.
//! Every table rejects unknown keys; [`RunSpec::validate`] names the stage and key at fault
//! (`stage[3] "anneal".ratios: ...`). docs/schedules.md documents every key.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::lr::DecayShape;

/// Current run-spec version.
pub const RUN_SPEC_VERSION: u32 = 1;

/// An invalid spec: `key` is the dotted path (`stage[2].budgets."fineweb-edu"`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid run spec: `{key}`: {message}")]
pub struct SpecError {
    pub key: String,
    pub message: String,
}

pub(crate) fn spec_err(key: impl fmt::Display, message: impl fmt::Display) -> SpecError {
    SpecError { key: key.to_string(), message: message.to_string() }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunSpec {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seeds the mixer (sequence order, shard order per epoch).
    #[serde(default)]
    pub seed: u64,
    /// Tokens per training sequence (a stage may override it).
    pub sequence_length: u32,
    /// Tokens per optimizer step across all ranks; a multiple of the sequence length.
    pub global_batch_tokens: u64,
    pub lr: LrSpec,
    /// Named sets of token shards, by name.
    pub sources: BTreeMap<String, SourceSpec>,
    #[serde(rename = "stage")]
    pub stages: Vec<StageSpec>,
    /// Benchmark tasks scored during the run (`[eval]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSpec>,
    /// Start from another model's weights (`[init]`) instead of a random initialization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitSpec>,
    /// Knowledge distillation from a teacher model (`[distill]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillSpec>,
}

/// `[distill]`: the loss becomes α·CE + (1 − α)·T²·KL per token (Hinton et al.), the teacher
/// running beside the student without gradients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DistillSpec {
    /// The teacher checkpoint directory (absolute, or relative to the spec file's directory);
    /// its vocabulary must be the shards' tokenizer's.
    pub teacher: String,
    /// Weight of the hard-label cross-entropy (1: plain training).
    #[serde(default = "half")]
    pub alpha: f64,
    /// Softmax temperature of both distributions.
    #[serde(default = "one")]
    pub temperature: f64,
    #[serde(default)]
    pub kind: DistillKind,
    /// Keep only the teacher's k most likely tokens per position (renormalized); forward KL only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Stages that distill (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// The teacher's weights and products: `bf16` (default) or `fp32`.
    #[serde(default)]
    pub precision: TeacherPrecision,
}

fn half() -> f64 {
    0.5
}

/// Direction of the distillation KL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillKind {
    /// KL(teacher ‖ student): the student covers the teacher's distribution (Hinton et al.).
    #[default]
    ForwardKl,
    /// KL(student ‖ teacher): mode-seeking (MiniLLM).
    ReverseKl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherPrecision {
    #[default]
    Bf16,
    Fp32,
}

impl DistillSpec {
    /// Whether stage `name` distills.
    pub fn applies_to(&self, name: &str) -> bool {
        self.stages.is_empty() || self.stages.iter().any(|s| s == name)
    }
}

/// `[init]`: the model starts as a checkpoint lehr can load (lehr's, a Hugging Face
/// Qwen2/Qwen3/Llama directory, an imported GGUF), all of it or some of its blocks
/// (Inheritune: `layers = "0..10"` takes the embeddings, blocks 0–9, the final norm and the
/// head). The architecture is the checkpoint's (so `--model` is not given); its vocabulary must
/// be the shards'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InitSpec {
    /// The checkpoint directory: absolute, or relative to the spec file's directory.
    pub from: String,
    /// Blocks to take, in order: `"a..b"` (b exclusive) or a block map such as `"0-9"` or
    /// `"0-15,8-23"` (inclusive ranges); default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<String>,
}

impl InitSpec {
    /// The block map over a source of `n` blocks: block k of the model is source block map[k].
    pub fn block_map(&self, n: usize) -> Result<Vec<usize>, String> {
        let Some(spec) = self.layers.as_deref().map(str::trim) else { return Ok((0..n).collect()) };
        let bad = |why: String| format!("init.layers {spec:?}: {why}");
        let mut out = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = if let Some((a, b)) = part.split_once("..") {
                let (a, b) = (a.trim().parse::<usize>(), b.trim().parse::<usize>());
                match (a, b) {
                    (Ok(a), Ok(b)) if b > a => (a, b - 1),
                    _ => return Err(bad(format!("`{part}` is not a range a..b with b > a"))),
                }
            } else if let Some((a, b)) = part.split_once('-') {
                match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    (Ok(a), Ok(b)) if b >= a => (a, b),
                    _ => return Err(bad(format!("`{part}` is not a range a-b with b ≥ a"))),
                }
            } else {
                let k = part.parse::<usize>().map_err(|_| bad(format!("`{part}` is not a block number")))?;
                (k, k)
            };
            if b >= n {
                return Err(bad(format!("block {b} is past the {n} blocks of {}", self.from)));
            }
            out.extend(a..=b);
        }
        if out.is_empty() {
            return Err(bad("no blocks".into()));
        }
        Ok(out)
    }
}

/// `[eval]`: benchmark tasks (`lehr eval tasks`' built-ins or task files) scored on rank 0
/// during training, into `eval.jsonl` beside the held-out perplexity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EvalSpec {
    /// Built-in task names or task files (`*.toml`).
    pub tasks: Vec<String>,
    /// Directory of the tasks' `<task>.jsonl` files: absolute, or relative to the spec file's
    /// directory (`lehr train` makes it absolute before ranks read the spec).
    #[serde(default = "eval_dir")]
    pub data_dir: String,
    /// Score every N steps (0: only at `at`).
    #[serde(default)]
    pub every: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<EvalAt>,
    /// Rows per task (the first N, as `--limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Few-shot examples (default: each task's own, 0 for the built-ins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_fewshot: Option<usize>,
    #[serde(default = "eval_batch")]
    pub batch_size: usize,
}

fn eval_dir() -> String {
    "eval".into()
}
fn eval_batch() -> usize {
    8
}

/// When `[eval]` scores besides `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalAt {
    /// After the last step of every stage (the branch points an anneal starts from) and of the run.
    StageEnd,
    /// After the run's last step.
    End,
}

/// `[lr]`: the peak learning rate that every stage's factors multiply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LrSpec {
    pub peak: f64,
}

/// `[sources.NAME]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceSpec {
    /// Directory of the source's token shards, relative to the data root (`--data`); default:
    /// the source's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Group for `lehr mix inspect --by category` (web, code, math, chinese, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// How many passes over the source the whole run may make (OLMo's max repetition ratio);
    /// 1 means no token is seen twice.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub max_repetition: f64,
}

fn one() -> f64 {
    1.0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}

/// `[[stage]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StageSpec {
    pub name: String,
    /// Tokens in the stage: needed with `ratios`; with `budgets` it must equal their sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_batch_tokens: Option<u64>,
    pub lr: StageLr,
    /// Tokens per source (integers, or strings like "16.2B", "500M").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, TokenCount>,
    /// Share of the stage's tokens per source (sum to 1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ratios: BTreeMap<String, f64>,
    /// Transformer blocks during this stage (default: the previous stage's, or the model's):
    /// more than before grows the model at the stage's first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<u32>,
    /// How the blocks a stage adds start (default `inherit` when the run has `[init]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grow: Option<GrowRule>,
}

/// How blocks added at a growth boundary are initialized; they are appended after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrowRule {
    /// The next blocks of the `[init]` reference model (Inheritune): a model holding reference
    /// blocks ..=j gains blocks j+1, j+2, ... as the reference has them.
    Inherit,
    /// Copies of the current last block, as trained so far.
    CopyLast,
    /// Copies of the current last block whose output projections (`o_proj`, `down_proj`)
    /// are zero: each new block adds nothing to the residual stream, so the model computes
    /// exactly what it did before the boundary.
    Identity,
}

impl GrowRule {
    pub fn name(self) -> &'static str {
        match self {
            GrowRule::Inherit => "inherit",
            GrowRule::CopyLast => "copy-last",
            GrowRule::Identity => "identity",
        }
    }
}

/// A stage's depth: blocks during the stage, and the rule for those it adds (None: none added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StageDepth {
    pub layers: usize,
    pub grow: Option<GrowRule>,
    /// Blocks before the stage.
    pub from: usize,
    /// With `inherit`: the reference block the first added block copies (the rest follow it).
    pub source: Option<usize>,
}

/// The learning-rate phase of a stage, as factors of `lr.peak`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StageLr {
    pub phase: LrPhase,
    /// Decay shape (decay stages; default 1-sqrt). Warmup is linear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<DecayShape>,
    /// Factor at the stage's first step (warmup: 0, stable and decay: 1 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<f64>,
    /// Factor after the stage's last step (warmup and stable: 1, decay: 0 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<f64>,
    /// Stable stages: ramp linearly from 0 over this many steps first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrPhase {
    Warmup,
    Stable,
    /// Consecutive decay stages with the same shape, `from` and `to` form one decay over their
    /// combined steps (YuLan-Mini's phases 26–27 share one 1-sqrt decay).
    Decay,
}

impl StageLr {
    pub fn stable() -> Self {
        StageLr { phase: LrPhase::Stable, shape: None, from: None, to: None, warmup_steps: None }
    }
    pub fn from_factor(&self) -> f64 {
        self.from.unwrap_or(match self.phase {
            LrPhase::Warmup => 0.0,
            LrPhase::Stable | LrPhase::Decay => 1.0,
        })
    }
    pub fn to_factor(&self) -> f64 {
        self.to.unwrap_or(match self.phase {
            LrPhase::Warmup | LrPhase::Stable => 1.0,
            LrPhase::Decay => 0.0,
        })
    }
    pub fn decay_shape(&self) -> DecayShape {
        self.shape.unwrap_or(DecayShape::OneSqrt)
    }
}

/// A token count: an integer, or a string with a K/M/B/T suffix ("16.2B" = 16,200,000,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenCount(pub u64);

impl std::str::FromStr for TokenCount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().replace('_', "");
        let (num, mult) = match t.chars().last() {
            Some('K' | 'k') => (&t[..t.len() - 1], 1e3),
            Some('M' | 'm') => (&t[..t.len() - 1], 1e6),
            Some('B' | 'b' | 'G' | 'g') => (&t[..t.len() - 1], 1e9),
            Some('T' | 't') => (&t[..t.len() - 1], 1e12),
            _ => (t.as_str(), 1.0),
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a token count (write 1000000, \"500M\" or \"16.2B\")"))?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("`{s}` is not a token count"));
        }
        Ok(TokenCount((v * mult).round() as u64))
    }
}

impl fmt::Display for TokenCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for TokenCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for TokenCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TokenCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token count: an integer, or a string like \"16.2B\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TokenCount, E> {
                Ok(TokenCount(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TokenCount, E> {
                u64::try_from(v).map(TokenCount).map_err(|_| E::custom("a token count cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TokenCount, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl RunSpec {
    /// Parses and validates.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        // toml's message names the unknown or mistyped key and its line.
        let spec: RunSpec = toml::from_str(text).map_err(|e| spec_err("toml", e.to_string().trim()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run spec always serializes")
    }

    pub fn sequence_length(&self, stage: &StageSpec) -> u32 {
        stage.sequence_length.unwrap_or(self.sequence_length)
    }
    pub fn global_batch_tokens(&self, stage: &StageSpec) -> u64 {
        stage.global_batch_tokens.unwrap_or(self.global_batch_tokens)
    }

    /// Checks everything the types cannot; data availability is checked by
    /// [`crate::plan::Plan::new`] when the data is known.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.version != RUN_SPEC_VERSION {
            return Err(spec_err(
                "version",
                format!("version {} is not supported; this lehr reads {RUN_SPEC_VERSION}", self.version),
            ));
        }
        if !(self.lr.peak.is_finite() && self.lr.peak > 0.0) {
            return Err(spec_err("lr.peak", format!("must be a positive number, got {}", self.lr.peak)));
        }
        if self.sources.is_empty() {
            return Err(spec_err("sources", "declare at least one source ([sources.NAME])"));
        }
        for (name, s) in &self.sources {
            if !(s.max_repetition.is_finite() && s.max_repetition > 0.0) {
                return Err(spec_err(
                    format!("sources.{name:?}.max-repetition"),
                    "must be a positive number (1 = one pass)",
                ));
            }
        }
        if self.stages.is_empty() {
            return Err(spec_err("stage", "declare at least one [[stage]]"));
        }
        if let Some(i) = &self.init {
            if i.from.trim().is_empty() {
                return Err(spec_err("init.from", "name the checkpoint directory to start from"));
            }
        }
        if let Some(d) = &self.distill {
            if d.teacher.trim().is_empty() {
                return Err(spec_err("distill.teacher", "name the teacher checkpoint directory"));
            }
            if !(d.alpha.is_finite() && (0.0..=1.0).contains(&d.alpha)) {
                return Err(spec_err("distill.alpha", format!("{} is not a weight in [0, 1]", d.alpha)));
            }
            if !(d.temperature.is_finite() && d.temperature > 0.0) {
                return Err(spec_err("distill.temperature", format!("{} is not a positive number", d.temperature)));
            }
            match d.top_k {
                Some(0) => return Err(spec_err("distill.top-k", "must be at least 1 (or leave it out for all tokens)")),
                Some(_) if d.kind == DistillKind::ReverseKl => {
                    return Err(spec_err(
                        "distill.top-k",
                        "top-k teacher logits need kind = \"forward-kl\" (reverse KL needs the teacher's full distribution)",
                    ))
                }
                _ => {}
            }
            for (i, name) in d.stages.iter().enumerate() {
                if !self.stages.iter().any(|s| &s.name == name) {
                    let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
                    return Err(spec_err(
                        format!("distill.stages[{i}]"),
                        format!("no stage is named {name:?} (stages: {})", names.join(", ")),
                    ));
                }
            }
        }
        if let Some(e) = &self.eval {
            if e.tasks.iter().all(|t| t.trim().is_empty()) {
                return Err(spec_err("eval.tasks", "name at least one task (e.g. tasks = [\"arc_easy\"])"));
            }
            if e.every == 0 && e.at.is_none() {
                return Err(spec_err("eval", "say when to score: every = STEPS and/or at = \"stage-end\" | \"end\""));
            }
            if e.batch_size == 0 {
                return Err(spec_err("eval.batch-size", "must be at least 1"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, st) in self.stages.iter().enumerate() {
            let at = |key: &str| format!("stage[{i}] {:?}.{key}", st.name);
            if st.name.trim().is_empty() {
                return Err(spec_err(format!("stage[{i}].name"), "must not be empty"));
            }
            if !names.insert(st.name.as_str()) {
                return Err(spec_err(at("name"), "two stages have this name"));
            }
            let seq = self.sequence_length(st);
            let batch = self.global_batch_tokens(st);
            if seq == 0 {
                return Err(spec_err(at("sequence-length"), "must be at least 1"));
            }
            if batch == 0 || !batch.is_multiple_of(seq as u64) {
                return Err(spec_err(
                    at("global-batch-tokens"),
                    format!("{batch} is not a positive multiple of the sequence length {seq}"),
                ));
            }
            match (st.budgets.is_empty(), st.ratios.is_empty()) {
                (true, true) => {
                    return Err(spec_err(at("budgets"), "give the stage `budgets` (tokens per source) or `ratios`"))
                }
                (false, false) => return Err(spec_err(at("ratios"), "give either `budgets` or `ratios`, not both")),
                _ => {}
            }
            for name in st.budgets.keys().chain(st.ratios.keys()) {
                if !self.sources.contains_key(name) {
                    let table = if st.budgets.contains_key(name) { "budgets" } else { "ratios" };
                    return Err(spec_err(
                        format!("{}.{name:?}", at(table)),
                        "unknown source (declare it under [sources])",
                    ));
                }
            }
            if !st.ratios.is_empty() {
                for (name, r) in &st.ratios {
                    if !(r.is_finite() && *r >= 0.0) {
                        return Err(spec_err(
                            format!("{}.{name:?}", at("ratios")),
                            format!("{r} is not a share in [0, 1]"),
                        ));
                    }
                }
                let sum: f64 = st.ratios.values().sum();
                if (sum - 1.0).abs() > 1e-6 {
                    return Err(spec_err(at("ratios"), format!("ratios sum to {sum}, not 1")));
                }
                if st.tokens.is_none() {
                    return Err(spec_err(at("tokens"), "a stage with `ratios` needs its total `tokens`"));
                }
            } else if let Some(t) = st.tokens {
                let sum: u64 = st.budgets.values().map(|b| b.0).sum();
                if sum != t.0 {
                    return Err(spec_err(at("tokens"), format!("{} but the budgets sum to {sum}", t.0)));
                }
            }
            if st.layers == Some(0) {
                return Err(spec_err(at("layers"), "a model needs at least 1 block"));
            }
            if st.grow.is_some() && st.layers.is_none() {
                return Err(spec_err(at("grow"), "set `layers` (the stage's block count) with `grow`"));
            }
            let lr = &st.lr;
            for (key, v) in [("lr.from", lr.from), ("lr.to", lr.to)] {
                if let Some(v) = v {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(spec_err(at(key), format!("{v} is not a non-negative factor of lr.peak")));
                    }
                }
            }
            match lr.phase {
                LrPhase::Stable if lr.from_factor() != lr.to_factor() => {
                    return Err(spec_err(at("lr.to"), "a stable phase keeps one factor (`from` = `to`)"))
                }
                LrPhase::Warmup | LrPhase::Stable if lr.shape.is_some() => {
                    return Err(spec_err(at("lr.shape"), "only decay phases have a shape"))
                }
                LrPhase::Decay if lr.to_factor() > lr.from_factor() => {
                    return Err(spec_err(at("lr.to"), "a decay phase must not rise (`to` ≤ `from`)"))
                }
                LrPhase::Warmup | LrPhase::Decay if lr.warmup_steps.is_some() => {
                    return Err(spec_err(at("lr.warmup-steps"), "only stable phases take warmup-steps"))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every stage's depth for a model that starts with `initial` blocks. `reference` is the
    /// `[init]` source's block count and the last source block the model holds (for `inherit`).
    /// Errors name the stage and key: depth only grows, `inherit` needs `[init]` and reference
    /// blocks left, a stage that adds blocks without `[init]` must say how (`grow`).
    pub fn depths(&self, initial: usize, reference: Option<(usize, usize)>) -> Result<Vec<StageDepth>, SpecError> {
        let mut out = Vec::with_capacity(self.stages.len());
        let mut depth = initial;
        let mut next_ref = reference.map(|(_, last)| last + 1);
        for (i, st) in self.stages.iter().enumerate() {
            let at = |key: &str| format!("stage[{i}] {:?}.{key}", st.name);
            let layers = st.layers.map_or(depth, |l| l as usize);
            if layers < depth {
                return Err(spec_err(
                    at("layers"),
                    format!("{layers} blocks, but the model has {depth} by then; stages only add blocks"),
                ));
            }
            let mut source = None;
            let grow = if layers > depth {
                let rule = match (st.grow, &self.init) {
                    (Some(r), _) => r,
                    (None, Some(_)) => GrowRule::Inherit,
                    (None, None) => {
                        return Err(spec_err(
                            at("grow"),
                            format!(
                            "the stage grows the model from {depth} to {layers} blocks; say how the new ones start: \
                                 grow = \"copy-last\" | \"identity\" (or \"inherit\" with [init])"
                        ),
                        ))
                    }
                };
                if rule == GrowRule::Inherit {
                    let Some((n, _)) = reference else {
                        return Err(spec_err(
                            at("grow"),
                            "`inherit` takes the next blocks of the [init] model; add [init]",
                        ));
                    };
                    let first = next_ref.unwrap_or(0);
                    let need = first + (layers - depth);
                    if need > n {
                        return Err(spec_err(
                            at("layers"),
                            format!(
                                "inheriting {} more blocks needs reference blocks {first}..{need}, but {} has {n}",
                                layers - depth,
                                self.init.as_ref().map_or("the reference", |i| i.from.as_str())
                            ),
                        ));
                    }
                    next_ref = Some(need);
                    source = Some(first);
                }
                Some(rule)
            } else {
                None
            };
            out.push(StageDepth { layers, grow, from: depth, source });
            depth = layers;
        }
        Ok(out)
    }

    /// Per stage, the token budget of every source: exact integers that sum to the stage's
    /// tokens (ratios are apportioned by largest remainder).
    pub fn budgets(&self, stage: &StageSpec) -> BTreeMap<String, u64> {
        if !stage.budgets.is_empty() {
            return stage.budgets.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        }
        let total = stage.tokens.map_or(0, |t| t.0);
        let mut out: Vec<(String, u64, f64)> = stage
            .ratios
            .iter()
            .map(|(k, r)| {
                let exact = r * total as f64;
                (k.clone(), exact.floor() as u64, exact - exact.floor())
            })
            .collect();
        let assigned: u64 = out.iter().map(|o| o.1).sum();
        let mut order: Vec<usize> = (0..out.len()).collect();
        order.sort_by(|&a, &b| out[b].2.total_cmp(&out[a].2).then(a.cmp(&b)));
        for &i in order.iter().take(total.saturating_sub(assigned) as usize) {
            out[i].1 += 1;
        }
        out.into_iter().map(|(k, v, _)| (k, v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SMALL: &str = r#"
version = 1
name = "small"
seed = 7
sequence-length = 128
global-batch-tokens = 1024
[lr]
peak = 3e-4
[sources.web]
category = "web"
[sources.code]
category = "code"
max-repetition = 2
[[stage]]
name = "stable"
lr = { phase = "stable", warmup-steps = 10 }
budgets = { web = "1M", code = 250_000 }
[[stage]]
name = "anneal"
tokens = "400K"
lr = { phase = "decay", shape = "1-sqrt" }
ratios = { web = 0.5, code = 0.5 }
"#;

    fn with(edit: impl Fn(&mut RunSpec)) -> Result<(), SpecError> {
        let mut s: RunSpec = toml::from_str(SMALL).unwrap();
        edit(&mut s);
        s.validate()
    }

    #[test]
    fn parses_and_apportions() {
        let s = RunSpec::from_toml(SMALL).unwrap();
        assert_eq!(s.stages[0].budgets["web"], TokenCount(1_000_000));
        assert_eq!(s.budgets(&s.stages[1]).values().sum::<u64>(), 400_000);
        let back = RunSpec::from_toml(&s.to_toml()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn eval_table() {
        let text = format!("{SMALL}[eval]\ntasks = [\"arc_easy\", \"my.toml\"]\nat = \"stage-end\"\nlimit = 50\n");
        let s = RunSpec::from_toml(&text).unwrap();
        let e = s.eval.as_ref().unwrap();
        assert_eq!(
            (e.at, e.limit, e.every, e.data_dir.as_str(), e.batch_size),
            (Some(EvalAt::StageEnd), Some(50), 0, "eval", 8)
        );
        assert_eq!(RunSpec::from_toml(&s.to_toml()).unwrap(), s);
        let e = with(|s| s.eval = Some(EvalSpec { at: None, ..s_eval() })).unwrap_err();
        assert_eq!(e.key, "eval");
        let e = with(|s| s.eval = Some(EvalSpec { tasks: vec![], ..s_eval() })).unwrap_err();
        assert_eq!(e.key, "eval.tasks");
        let typo = RunSpec::from_toml(&format!("{SMALL}[eval]\ntasks = [\"x\"]\nevery = 5\nshots = 2\n")).unwrap_err();
        assert!(typo.to_string().contains("shots"), "{typo}");
    }

    #[test]
    fn init_table() {
        let s = RunSpec::from_toml(&format!("{SMALL}[init]\nfrom = \"ref\"\nlayers = \"0..3\"\n")).unwrap();
        let i = s.init.as_ref().unwrap();
        assert_eq!(i.block_map(5).unwrap(), vec![0, 1, 2]);
        let map = InitSpec { layers: Some("0-1, 0-1".into()), ..i.clone() };
        assert_eq!(map.block_map(2).unwrap(), vec![0, 1, 0, 1]);
        assert!(i.block_map(2).unwrap_err().contains("past the 2 blocks of ref"));
        assert_eq!(InitSpec { layers: None, ..i.clone() }.block_map(2).unwrap(), vec![0, 1]);
        assert!(InitSpec { layers: Some("3..3".into()), ..i.clone() }.block_map(5).is_err());
        assert_eq!(RunSpec::from_toml(&s.to_toml()).unwrap(), s);
        let e = with(|s| s.init = Some(InitSpec { from: " ".into(), layers: None })).unwrap_err();
        assert_eq!(e.key, "init.from");
    }

    #[test]
    fn growth_depths() {
        let grow = |init: bool, layers: [Option<u32>; 2], rule: Option<GrowRule>| {
            let mut s: RunSpec = toml::from_str(SMALL).unwrap();
            s.init = init.then(|| InitSpec { from: "ref".into(), layers: Some("0..2".into()) });
            s.stages[0].layers = layers[0];
            s.stages[1].layers = layers[1];
            s.stages[1].grow = rule;
            s.validate()?;
            s.depths(2, init.then_some((4, 1)))
        };
        let d = grow(true, [None, Some(4)], None).unwrap();
        assert_eq!(d[0], StageDepth { layers: 2, grow: None, from: 2, source: None });
        assert_eq!(d[1], StageDepth { layers: 4, grow: Some(GrowRule::Inherit), from: 2, source: Some(2) });
        let e = grow(true, [None, Some(5)], None).unwrap_err();
        assert_eq!(e.key, "stage[1] \"anneal\".layers");
        assert!(e.message.contains("blocks 2..5, but ref has 4"), "{e}");
        let e = grow(false, [None, Some(3)], None).unwrap_err();
        assert_eq!(e.key, "stage[1] \"anneal\".grow");
        assert!(e.message.contains("copy-last"), "{e}");
        assert!(grow(false, [None, Some(3)], Some(GrowRule::Inherit)).unwrap_err().message.contains("[init]"));
        let d = grow(false, [Some(3), None], Some(GrowRule::Identity)).unwrap_err();
        assert_eq!(d.key, "stage[1] \"anneal\".grow", "grow without layers");
        let d = grow(false, [Some(3), Some(3)], None).unwrap_err();
        assert!(d.key.ends_with("[0] \"stable\".grow"), "stage 0 grows 2 -> 3 too: {d}");
        let e = grow(false, [None, Some(1)], None).unwrap_err();
        assert!(e.message.contains("only add blocks"), "{e}");
        let text = SMALL.replace(
            "ratios = { web = 0.5, code = 0.5 }",
            "ratios = { web = 0.5, code = 0.5 }\nlayers = 3\ngrow = \"copy-last\"",
        );
        let s = RunSpec::from_toml(&text).unwrap();
        assert_eq!(s.depths(2, None).unwrap()[1].grow, Some(GrowRule::CopyLast));
        assert_eq!(RunSpec::from_toml(&s.to_toml()).unwrap(), s);
        assert!(RunSpec::from_toml(&text.replace("copy-last", "copy")).unwrap_err().message.contains("copy"));
    }

    #[test]
    fn distill_table() {
        let s = RunSpec::from_toml(&format!("{SMALL}[distill]\nteacher = \"t\"\nstages = [\"anneal\"]\n")).unwrap();
        let d = s.distill.as_ref().unwrap();
        assert_eq!(
            (d.alpha, d.temperature, d.kind, d.precision),
            (0.5, 1.0, DistillKind::ForwardKl, TeacherPrecision::Bf16)
        );
        assert!(d.applies_to("anneal") && !d.applies_to("stable"));
        assert_eq!(RunSpec::from_toml(&s.to_toml()).unwrap(), s);
        let bad =
            |extra: &str| RunSpec::from_toml(&format!("{SMALL}[distill]\nteacher = \"t\"\n{extra}\n")).unwrap_err();
        assert_eq!(bad("alpha = 1.5").key, "distill.alpha");
        assert_eq!(bad("temperature = 0").key, "distill.temperature");
        assert_eq!(bad("stages = [\"stable\", \"anel\"]").key, "distill.stages[1]");
        assert_eq!(bad("kind = \"reverse-kl\"\ntop-k = 20").key, "distill.top-k");
        assert!(bad("kind = \"kl\"").message.contains("forward-kl"));
        assert!(bad("beta = 1").message.contains("beta"));
    }

    fn s_eval() -> EvalSpec {
        EvalSpec {
            tasks: vec!["arc_easy".into()],
            data_dir: "eval".into(),
            every: 0,
            at: Some(EvalAt::End),
            limit: None,
            num_fewshot: None,
            batch_size: 8,
        }
    }

    #[test]
    fn errors_name_stage_and_key() {
        let e = with(|s| {
            s.stages[1].ratios.insert("web".into(), 0.6);
        })
        .unwrap_err();
        assert_eq!(e.key, "stage[1] \"anneal\".ratios");
        assert!(e.message.contains("sum to 1.1"), "{e}");
        let e = with(|s| {
            s.stages[0].budgets.insert("books".into(), TokenCount(5));
        })
        .unwrap_err();
        assert_eq!(e.key, "stage[0] \"stable\".budgets.\"books\"");
        let e = with(|s| s.global_batch_tokens = 1000).unwrap_err();
        assert!(e.key.ends_with("global-batch-tokens") && e.message.contains("multiple"), "{e}");
        let e = with(|s| s.stages[1].lr.to = Some(2.0)).unwrap_err();
        assert_eq!(e.key, "stage[1] \"anneal\".lr.to");
        let e = with(|s| s.stages[1].tokens = None).unwrap_err();
        assert_eq!(e.key, "stage[1] \"anneal\".tokens");
        let unknown = SMALL.replace("max-repetition = 2", "max-repetitions = 2");
        let e = RunSpec::from_toml(&unknown).unwrap_err();
        assert!(e.message.contains("max-repetitions"), "{e}");
        assert!("12.5x".parse::<TokenCount>().is_err());
        assert_eq!("16.2B".parse::<TokenCount>().unwrap(), TokenCount(16_200_000_000));
    }

    proptest::proptest! {
        #[test]
        fn ratio_budgets_sum_exactly(total in 0u64..10_000_000_000, weights in proptest::collection::vec(1u32..1000, 1..20)) {
            let sum: u32 = weights.iter().sum();
            let mut st: RunSpec = toml::from_str(SMALL).unwrap();
            let stage = &mut st.stages[1];
            stage.tokens = Some(TokenCount(total));
            stage.ratios = weights.iter().enumerate().map(|(i, w)| (format!("s{i}"), *w as f64 / sum as f64)).collect();
            let b = st.budgets(&st.stages[1]);
            proptest::prop_assert_eq!(b.values().sum::<u64>(), total);
            for (k, v) in &b {
                let exact = st.stages[1].ratios[k] * total as f64;
                proptest::prop_assert!((*v as f64 - exact).abs() <= 1.0 + exact * 1e-12);
            }
        }
    }
}
