//! The pipeline spec: a TOML file with the inputs, the ordered stages and the output.
//!
//! Every table rejects unknown keys (serde's `deny_unknown_fields`), so a typo is an error that
//! names the key, and [`PipelineSpec::validate`] checks values, naming the dotted key at fault
//! (`stage[1].min-chars`). `lehr corpus init` writes a commented starter spec; docs/pipeline.md
//! documents every key.

use serde::{Deserialize, Serialize};

use crate::dedup::DedupSpec;
use crate::error::{PipelineError, PipelineResult};
use crate::stages::StageSpec;

/// Current spec version; a spec with another `version` is refused.
pub const SPEC_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PipelineSpec {
    pub version: u32,
    #[serde(default)]
    pub name: Option<String>,
    pub input: InputSpec,
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageSpec>,
    /// Deduplication across the whole job (exact or MinHash-LSH), after the stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupSpec>,
    pub output: OutputSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InputSpec {
    /// Local paths, directories, globs or object-store URLs (`s3://bucket/prefix/*.jsonl.zst`).
    /// Empty in task payloads ([`InputSpec::for_task`]): a task names its own file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default = "default_text_field")]
    pub text_field: String,
    #[serde(default = "default_id_field")]
    pub id_field: String,
    /// JSONL and parquet files larger than this are split into byte-range shards.
    #[serde(default = "default_split_size")]
    pub split_size: ByteSize,
    #[serde(default)]
    pub invalid_utf8: InvalidUtf8,
    #[serde(default)]
    pub unreadable_file: UnreadableFile,
    /// JSONL lines longer than this are skipped and counted with their file and line (read in
    /// bounded memory: a line is never held whole beyond this size).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
}

impl InputSpec {
    /// The reading options a shard task needs, without the job's input list: the task's shard
    /// names its file, and a payload carrying every input path would make a job's payloads
    /// grow with the square of its file count.
    pub fn for_task(&self) -> InputSpec {
        InputSpec { paths: Vec::new(), ..self.clone() }
    }
}

/// The default of `input.max-line-bytes`.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 64 << 20;

fn default_max_line_bytes() -> ByteSize {
    ByteSize(DEFAULT_MAX_LINE_BYTES)
}

/// What to do with a JSONL line that is not valid UTF-8.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InvalidUtf8 {
    /// Skip the line and report it (file, line, reason).
    #[default]
    Reject,
    /// Replace bad bytes with U+FFFD, keep the line and count the repair.
    Replace,
}

/// What to do with an input file that cannot be read at all (wrong schema, not JSONL).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UnreadableFile {
    /// Fail the task, and so the job, with the reason.
    #[default]
    Fail,
    /// Skip the file, record it with the reason in the manifest, go on with the others.
    Skip,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputSpec {
    /// Output directory: a local path or an object-store URL.
    pub path: String,
    #[serde(default = "default_formats")]
    pub formats: Vec<OutputFormat>,
    /// zstd level for jsonl.zst and parquet pages.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Write even if the directory already holds a finished job's manifest.
    #[serde(default)]
    pub overwrite: bool,
    /// `"lang"`: kept documents go to `lang=<code>/part-NNNNN.*` by the language the stages
    /// set (`lang=unknown/` without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<PartitionBy>,
    /// Write `attributes/part-NNNNN.parquet`: per document its scores, the rules that fired and
    /// the decision (see docs/pipeline.md).
    #[serde(default = "default_true")]
    pub attributes: bool,
    /// Keep scoring documents after a stage dropped them, so that every rule's scores exist for
    /// every document (re-filtering with other thresholds needs no recomputation).
    #[serde(default = "default_true")]
    pub score_dropped: bool,
    /// With the `tokens` format: the tokenizer and EOS that turn kept documents into token
    /// shards (`part-NNNNN.bin/.idx/.tokens.json`, docs/formats.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenize: Option<TokenizeSpec>,
}

/// `[output.tokenize]`: kept documents → Megatron token shards, EOS after every document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenizeSpec {
    /// A Hugging Face `tokenizer.json` (local path, relative to the spec, or URL).
    pub tokenizer: String,
    /// The token appended after each document (`<|endoftext|>` for Qwen2.5); must be in the
    /// tokenizer's vocabulary.
    pub eos: String,
    /// The name the mixer knows these tokens by (default: the spec's `name`, else `corpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Documents encoded together (in parallel, on all of the worker's cores).
    #[serde(default = "default_batch_docs")]
    pub batch_docs: usize,
}

fn default_batch_docs() -> usize {
    512
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionBy {
    Lang,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputFormat {
    #[serde(rename = "jsonl.zst")]
    JsonlZst,
    #[serde(rename = "parquet")]
    Parquet,
    /// Token shards (needs `[output.tokenize]`).
    #[serde(rename = "tokens")]
    Tokens,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::JsonlZst => "jsonl.zst",
            OutputFormat::Parquet => "parquet",
            OutputFormat::Tokens => "bin",
        }
    }
}

fn default_text_field() -> String {
    "text".into()
}
fn default_id_field() -> String {
    "id".into()
}
fn default_split_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_formats() -> Vec<OutputFormat> {
    vec![OutputFormat::JsonlZst]
}
fn default_zstd_level() -> i32 {
    3
}

impl PipelineSpec {
    /// Parses and validates a spec.
    pub fn from_toml(text: &str) -> PipelineResult<Self> {
        let spec: PipelineSpec = toml::from_str(text).map_err(|e| PipelineError::SpecSyntax(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a pipeline spec always serializes")
    }

    /// Checks values that the types alone cannot; errors name the dotted key.
    pub fn validate(&self) -> PipelineResult<()> {
        if self.version != SPEC_VERSION {
            return Err(PipelineError::spec(
                "version",
                format!("version {} is not supported; this lehr reads version {SPEC_VERSION}", self.version),
            ));
        }
        if self.input.paths.is_empty() {
            return Err(PipelineError::spec("input.paths", "list at least one input path or glob"));
        }
        for (i, p) in self.input.paths.iter().enumerate() {
            if p.trim().is_empty() {
                return Err(PipelineError::spec(format!("input.paths[{i}]"), "empty path"));
            }
        }
        if self.input.text_field.is_empty() {
            return Err(PipelineError::spec("input.text-field", "must not be empty"));
        }
        if self.input.split_size.0 < 4096 {
            return Err(PipelineError::spec("input.split-size", "must be at least 4KiB"));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            stage.validate().map_err(|(key, message)| PipelineError::spec(format!("stage[{i}].{key}"), message))?;
        }
        let synths: Vec<usize> =
            self.stages.iter().enumerate().filter(|(_, s)| matches!(s, StageSpec::Synth(_))).map(|(i, _)| i).collect();
        if synths.len() > 1 {
            return Err(PipelineError::spec(
                format!("stage[{}]", synths[1]),
                "a spec has at most one synth stage (list several templates in it instead)",
            ));
        }
        if let (Some(&i), Some(_)) = (synths.first(), &self.dedup) {
            if let StageSpec::Synth(c) = &self.stages[i] {
                if !c.cache {
                    return Err(PipelineError::spec(
                        format!("stage[{i}].cache"),
                        "a job with [dedup] runs its stages twice (signatures, then filter): the synth stage needs its cache so that both passes see the same generations",
                    ));
                }
            }
        }
        if let Some(d) = &self.dedup {
            d.validate().map_err(|(key, message)| PipelineError::spec(format!("dedup.{key}"), message))?;
        }
        if self.output.path.trim().is_empty() {
            return Err(PipelineError::spec("output.path", "must not be empty"));
        }
        if self.output.formats.is_empty() {
            return Err(PipelineError::spec(
                "output.formats",
                "list at least one of \"jsonl.zst\", \"parquet\", \"tokens\"",
            ));
        }
        let mut formats = self.output.formats.clone();
        formats.sort();
        formats.dedup();
        if formats.len() != self.output.formats.len() {
            return Err(PipelineError::spec("output.formats", "a format is listed twice"));
        }
        let wants_tokens = self.output.formats.contains(&OutputFormat::Tokens);
        match (&self.output.tokenize, wants_tokens) {
            (None, true) => {
                return Err(PipelineError::spec(
                    "output.tokenize",
                    "the \"tokens\" format needs an [output.tokenize] table (tokenizer, eos)",
                ))
            }
            (Some(_), false) => {
                return Err(PipelineError::spec(
                    "output.formats",
                    "[output.tokenize] is set but \"tokens\" is not among the formats",
                ))
            }
            (Some(t), true) => {
                if t.tokenizer.trim().is_empty() {
                    return Err(PipelineError::spec("output.tokenize.tokenizer", "must name a tokenizer.json"));
                }
                if t.eos.is_empty() {
                    return Err(PipelineError::spec("output.tokenize.eos", "must name the end-of-document token"));
                }
                if t.batch_docs == 0 {
                    return Err(PipelineError::spec("output.tokenize.batch-docs", "must be at least 1"));
                }
            }
            (None, false) => {}
        }
        if !(1..=22).contains(&self.output.zstd_level) {
            return Err(PipelineError::spec("output.zstd-level", "must be between 1 and 22"));
        }
        Ok(())
    }
}

/// A size written like `64MiB`, `512KB`, `1GiB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num.parse().map_err(|_| format!("`{s}` is not a size (write e.g. 64MiB or 1048576)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            "tb" => 1_000_000_000_000,
            "tib" | "t" => 1 << 40,
            other => return Err(format!("unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, KB, MB, GB)")),
        };
        Ok(ByteSize((num * mult as f64) as u64))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
[input]
paths = ["data/*.jsonl"]
[output]
path = "out"
"#;

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = PipelineSpec::from_toml(MINIMAL).unwrap();
        assert_eq!(spec.input.text_field, "text");
        assert_eq!(spec.input.split_size, ByteSize(64 << 20));
        assert_eq!(spec.output.formats, vec![OutputFormat::JsonlZst]);
        // round trip through TOML keeps everything
        assert_eq!(PipelineSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn unknown_key_is_named() {
        let bad = MINIMAL.replace("path = \"out\"", "path = \"out\"\nformat = \"parquet\"");
        let err = PipelineSpec::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("unknown field `format`"), "{err}");
    }

    #[test]
    fn bad_stage_value_names_stage_and_key() {
        let bad = format!("{MINIMAL}\n[[stage]]\ntype = \"normalize\"\n[[stage]]\ntype = \"min-length\"\nmin-chars = 10\nmax-chars = 5\n");
        let err = PipelineSpec::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("`stage[1].max-chars`"), "{err}");
    }

    #[test]
    fn unknown_stage_type_is_an_error() {
        let bad = format!("{MINIMAL}\n[[stage]]\ntype = \"dedupe\"\n");
        let err = PipelineSpec::from_toml(&bad).unwrap_err().to_string();
        assert!(err.contains("dedupe"), "{err}");
    }

    #[test]
    fn wrong_version_is_refused() {
        let err = PipelineSpec::from_toml(&MINIMAL.replace("version = 1", "version = 7")).unwrap_err().to_string();
        assert!(err.contains("`version`"), "{err}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("1.5KB".parse::<ByteSize>().unwrap(), ByteSize(1500));
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }
}
