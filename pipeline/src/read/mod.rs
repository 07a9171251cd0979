//! Readers: a shard (a file or a byte range of one) → documents, with every bad record skipped,
//! counted and reported with its location, and a clear error for a file that cannot be read at
//! all.

mod jsonl;
#[cfg(feature = "parquet")]
mod parquet;
mod source;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::document::Document;
#[cfg(not(feature = "parquet"))]
use crate::error::PipelineError;
use crate::error::PipelineResult;
use crate::plan::{InputFormat, Shard};
use crate::spec::InputSpec;

pub use jsonl::read_jsonl;

/// Bad records kept per shard with their location; the count stays exact beyond it.
pub const MAX_REPORTED_BAD_RECORDS: usize = 1000;

/// A record that was skipped, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BadRecord {
    pub file: String,
    /// 1-based line (JSONL) or row (parquet). For a byte-range shard of a split file this is
    /// counted from the start of the range until the job resolves it (see `line_resolved`).
    pub line: u64,
    /// Whether `line` counts from the start of the file.
    pub line_resolved: bool,
    /// Byte offset of the line in the (uncompressed) file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
    pub reason: String,
    /// For a document that was read fine but a later stage could not process (a synth request
    /// that failed): the stage and the document's id; `line` is then 0 (unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadStats {
    /// Lines (JSONL) or rows (parquet) owned by this shard, blank lines included.
    pub lines: u64,
    pub blank_lines: u64,
    pub docs: u64,
    pub bytes: u64,
    pub bad_records: u64,
    pub ids_generated: u64,
    pub ids_coerced: u64,
    pub utf8_repaired: u64,
    pub bad: Vec<BadRecord>,
    /// Problems with the file itself that did not stop reading (truncated stream, ...).
    pub warnings: Vec<String>,
}

impl ReadStats {
    pub fn bad(&mut self, record: BadRecord) {
        self.bad_records += 1;
        if self.bad.len() < MAX_REPORTED_BAD_RECORDS {
            self.bad.push(record);
        }
    }
}

/// Reads a shard, calling `on_doc` for every good document. Returns the error of a file that
/// cannot be read at all; bad records are in `stats`.
pub fn read_shard(
    shard: &Shard,
    input: &InputSpec,
    stats: &mut ReadStats,
    on_doc: &mut dyn FnMut(Document) -> PipelineResult<()>,
) -> PipelineResult<()> {
    match shard.file.format {
        InputFormat::Jsonl | InputFormat::JsonlGz | InputFormat::JsonlZst => {
            jsonl::read_jsonl(shard, input, stats, on_doc)
        }
        InputFormat::Parquet => read_parquet_shard(shard, input, stats, on_doc),
    }
}

#[cfg(feature = "parquet")]
fn read_parquet_shard(
    shard: &Shard,
    input: &InputSpec,
    stats: &mut ReadStats,
    on_doc: &mut dyn FnMut(Document) -> PipelineResult<()>,
) -> PipelineResult<()> {
    parquet::read_parquet(shard, input, stats, on_doc)
}

#[cfg(not(feature = "parquet"))]
fn read_parquet_shard(
    shard: &Shard,
    _: &InputSpec,
    _: &mut ReadStats,
    _: &mut dyn FnMut(Document) -> PipelineResult<()>,
) -> PipelineResult<()> {
    Err(PipelineError::UnreadableFile {
        file: shard.file.url.clone(),
        message: "this build has no parquet support (feature `parquet`)".into(),
    })
}

/// The JSON type of a value, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Turns a parsed JSON object into a document, or says why it is not one.
/// `fallback_id` is used when the id field is missing or null.
pub(crate) fn object_to_document(
    mut obj: Map<String, Value>,
    input: &InputSpec,
    fallback_id: impl FnOnce() -> String,
    stats: &mut ReadStats,
) -> Result<Document, String> {
    let text = match obj.remove(&input.text_field) {
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("field `{}` is {}, expected a string", input.text_field, json_type(&other))),
        None => {
            let keys: Vec<&str> = obj.keys().map(|k| k.as_str()).take(8).collect();
            return Err(format!(
                "no `{}` field (keys: {})",
                input.text_field,
                if keys.is_empty() { "none".to_string() } else { keys.join(", ") }
            ));
        }
    };
    let id = match obj.remove(&input.id_field) {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            stats.ids_coerced += 1;
            n.to_string()
        }
        None | Some(Value::Null) => {
            stats.ids_generated += 1;
            fallback_id()
        }
        Some(other) => {
            return Err(format!("field `{}` is {}, expected a string or an integer", input.id_field, json_type(&other)))
        }
    };
    let mut optional_string = |key: &str| -> Result<Option<String>, String> {
        match obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("field `{key}` is {}, expected a string", json_type(&other))),
        }
    };
    let source = optional_string("source")?;
    let lang = optional_string("lang")?;
    Ok(Document { id, text, source, lang, extra: obj })
}

/// The last path component of a URL or path, for generated ids.
pub(crate) fn file_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}
