//! JSONL (plain, gzip, zstd). Lines are split on `\n`; a trailing `\r` and a leading UTF-8 BOM
//! are stripped; blank lines are counted, not errors. A byte-range shard owns the lines that
//! start inside its range: it skips the partial line at its start and reads past its end to
//! finish its last line.

use std::io::{BufRead, BufReader, Read};

use serde_json::Value;

use super::source::open_from;
use super::{file_name, object_to_document, BadRecord, ReadStats};
use crate::document::Document;
use crate::error::{PipelineError, PipelineResult};
use crate::plan::{InputFormat, Shard};
use crate::spec::{InputSpec, InvalidUtf8};

const BOM: &[u8] = b"\xef\xbb\xbf";

pub fn read_jsonl(
    shard: &Shard,
    input: &InputSpec,
    stats: &mut ReadStats,
    on_doc: &mut dyn FnMut(Document) -> PipelineResult<()>,
) -> PipelineResult<()> {
    let url = &shard.file.url;
    let ranged = shard.file.format == InputFormat::Jsonl;
    // Start one byte early: if that byte is a newline, the shard starts on a line boundary.
    let open_at = if ranged { shard.start.saturating_sub(1) } else { 0 };
    let raw = open_from(url, open_at, shard.file.size)?;
    let decoded: Box<dyn Read> = match shard.file.format {
        InputFormat::Jsonl => raw,
        InputFormat::JsonlGz => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        InputFormat::JsonlZst => Box::new(
            zstd::stream::read::Decoder::new(raw)
                .map_err(|e| PipelineError::UnreadableFile { file: url.clone(), message: format!("zstd: {e}") })?,
        ),
        InputFormat::Parquet => unreachable!("parquet goes to the parquet reader"),
    };
    let mut reader = BufReader::with_capacity(1 << 20, decoded);
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut offset = open_at;
    if ranged && shard.start > 0 {
        // the partial line at the start belongs to the previous range
        buf.clear();
        let n =
            reader.read_until(b'\n', &mut buf).map_err(|e| PipelineError::Io { location: url.clone(), source: e })?;
        offset += n as u64;
    }

    let file = file_name(url).to_string();
    let mut line_no: u64 = 0;
    let mut syntax_errors = 0u64;
    let mut first_syntax_error: Option<String> = None;
    loop {
        if ranged && offset >= shard.end {
            break;
        }
        let line_offset = offset;
        buf.clear();
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            // A plain file that cannot be read fails the task (retryable I/O error).
            Err(e) if shard.file.format == InputFormat::Jsonl => {
                return Err(PipelineError::Io { location: url.clone(), source: e });
            }
            Err(e) => {
                // A cut stream (truncated gzip/zstd): the partial last line is not a document.
                let kind = if shard.file.format == InputFormat::JsonlGz { "gzip" } else { "zstd" };
                let reason = format!("unexpected end of {kind} stream ({e}); the partial line was dropped");
                stats.warnings.push(format!("{url}: line {}: {reason}", line_no + 1));
                stats.bad(BadRecord {
                    file: url.clone(),
                    line: line_no + 1,
                    line_resolved: true,
                    byte_offset: Some(line_offset),
                    reason,
                });
                break;
            }
        };
        if n == 0 {
            break;
        }
        offset += n as u64;
        line_no += 1;
        stats.lines += 1;
        let mut line: &[u8] = &buf;
        if line.last() == Some(&b'\n') {
            line = &line[..line.len() - 1];
        }
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line_offset == 0 && line.starts_with(BOM) {
            line = &line[BOM.len()..];
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            stats.blank_lines += 1;
            continue;
        }
        let bad = |reason: String| BadRecord {
            file: url.clone(),
            line: line_no,
            line_resolved: shard.start == 0,
            byte_offset: ranged.then_some(line_offset),
            reason,
        };
        let text: std::borrow::Cow<str> = match std::str::from_utf8(line) {
            Ok(s) => s.into(),
            Err(e) => match input.invalid_utf8 {
                InvalidUtf8::Reject => {
                    stats.bad(bad(format!("invalid UTF-8 at byte {} of the line", e.valid_up_to())));
                    continue;
                }
                InvalidUtf8::Replace => {
                    stats.utf8_repaired += 1;
                    String::from_utf8_lossy(line).into_owned().into()
                }
            },
        };
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                syntax_errors += 1;
                let reason = format!("invalid JSON: {e}");
                first_syntax_error.get_or_insert_with(|| format!("line {line_no}: {reason}"));
                stats.bad(bad(reason));
                continue;
            }
        };
        let obj = match value {
            Value::Object(o) => o,
            other => {
                stats.bad(bad(format!("top-level JSON is {}, expected an object", super::json_type(&other))));
                continue;
            }
        };
        let fallback = || format!("{file}@{line_offset}");
        match object_to_document(obj, input, fallback, stats) {
            Ok(doc) => {
                stats.docs += 1;
                stats.bytes += doc.text.len() as u64;
                on_doc(doc)?;
            }
            Err(reason) => stats.bad(bad(reason)),
        }
    }
    // A file where no line is JSON is not a JSONL file with bad lines; it is the wrong file.
    if shard.start == 0 && stats.docs == 0 && syntax_errors > 0 && syntax_errors == stats.bad_records {
        return Err(PipelineError::UnreadableFile {
            file: url.clone(),
            message: format!(
                "no line is JSON ({syntax_errors} lines; first error at {}); is this a JSONL file?",
                first_syntax_error.unwrap_or_default()
            ),
        });
    }
    Ok(())
}
