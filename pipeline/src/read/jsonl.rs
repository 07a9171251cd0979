//! JSONL (plain, gzip, zstd). Lines are split on `\n`; a trailing `\r` and a leading UTF-8 BOM
//! are stripped; blank lines are counted, not errors. A byte-range shard owns the lines that
//! start inside its range: it skips the partial line at its start and reads past its end to
//! finish its last line.
//!
//! A line longer than `input.max-line-bytes` is skipped and counted with its file and line, read
//! in bounded memory (its bytes are dropped as they arrive). A gzip/zstd stream that is cut or
//! corrupt ends the shard with one bad record (the partial line); an I/O error of the source
//! itself (a connection reset, EIO) fails the attempt, retryably, so no good data is lost.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    let raw = open_from(&shard.file.url, open_offset(shard), shard.file.size)?;
    read_jsonl_from(raw, shard, input, stats, on_doc)
}

/// Where a shard's source is opened: for a byte range, one byte early (if that byte is a
/// newline, the shard starts on a line boundary); compressed files from the start.
fn open_offset(shard: &Shard) -> u64 {
    if shard.file.format == InputFormat::Jsonl {
        shard.start.saturating_sub(1)
    } else {
        0
    }
}

/// Passes reads through and remembers whether the source itself failed, so a decoder error
/// (a cut or corrupt stream: the data's fault) can be told from an I/O error (the transport's
/// fault: worth another attempt).
struct Tap<R> {
    inner: R,
    failed: Arc<AtomicBool>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        if let Err(e) = &r {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed.store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

/// Reads one line (through its `\n`) into `buf`, holding at most `max` bytes of it. Returns the
/// bytes consumed and whether the line was longer than `max`; the content of such a line is not
/// kept, so memory stays bounded whatever the line's length.
pub(crate) fn read_line_bounded<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<(usize, bool)> {
    let mut consumed = 0usize;
    let mut over = false;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((consumed, over));
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if !over {
            let content = if done { take - 1 } else { take };
            if buf.len() + content > max {
                over = true;
                buf.clear();
                buf.shrink_to(1 << 16);
            } else {
                buf.extend_from_slice(&available[..take]);
            }
        }
        r.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, over));
        }
    }
}

/// [`read_jsonl`] over a source opened at [`open_offset`].
pub(crate) fn read_jsonl_from(
    raw: Box<dyn Read + Send>,
    shard: &Shard,
    input: &InputSpec,
    stats: &mut ReadStats,
    on_doc: &mut dyn FnMut(Document) -> PipelineResult<()>,
) -> PipelineResult<()> {
    let url = &shard.file.url;
    let ranged = shard.file.format == InputFormat::Jsonl;
    let open_at = open_offset(shard);
    let max_line = usize::try_from(input.max_line_bytes.0).unwrap_or(usize::MAX);
    let source_failed = Arc::new(AtomicBool::new(false));
    let raw = Tap { inner: raw, failed: source_failed.clone() };
    let decoded: Box<dyn Read> = match shard.file.format {
        InputFormat::Jsonl => Box::new(raw),
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
        let (n, _) = read_line_bounded(&mut reader, &mut buf, 0)
            .map_err(|e| PipelineError::Io { location: url.clone(), source: e })?;
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
        let (n, too_long) = match read_line_bounded(&mut reader, &mut buf, max_line) {
            Ok(r) => r,
            // The source failed (a plain file that cannot be read, a connection reset): the
            // attempt fails, retryably; the rest of the file is not silently lost.
            Err(e) if shard.file.format == InputFormat::Jsonl || source_failed.load(Ordering::Relaxed) => {
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
                    stage: None,
                    id: None,
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
        if too_long {
            stats.bad(BadRecord {
                file: url.clone(),
                line: line_no,
                line_resolved: shard.start == 0,
                byte_offset: Some(line_offset),
                reason: format!(
                    "line is {n} bytes, over input.max-line-bytes ({}); skipped",
                    crate::spec::ByteSize(max_line as u64)
                ),
                stage: None,
                id: None,
            });
            continue;
        }
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
            stage: None,
            id: None,
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::plan::InputFile;

    /// A source that serves `data` and fails with a connection reset after `fail_at` bytes.
    struct Flaky {
        data: Vec<u8>,
        pos: usize,
        fail_at: usize,
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.fail_at {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer"));
            }
            let n = buf.len().min(self.fail_at - self.pos).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn shard(format: InputFormat, size: u64) -> Shard {
        Shard {
            file: InputFile { url: "mem://x/docs.jsonl.gz".into(), size, format },
            file_index: 0,
            start: 0,
            end: size,
            range_index: 0,
        }
    }

    fn input(extra: &str) -> InputSpec {
        toml::from_str(&format!("paths = []\n{extra}")).unwrap()
    }

    fn jsonl(lines: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..lines {
            // incompressible-ish text, so the compressed stream is long enough to cut
            let text: String = (0..40).map(|j| char::from(b'a' + ((i * 7919 + j * 104729) % 26) as u8)).collect();
            writeln!(out, r#"{{"id": "d{i}", "text": "{text} {i}"}}"#).unwrap();
        }
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn read(
        source: Box<dyn Read + Send>,
        format: InputFormat,
        size: u64,
        input: &InputSpec,
    ) -> (PipelineResult<()>, ReadStats, usize) {
        let mut stats = ReadStats::default();
        let mut docs = 0;
        let r = read_jsonl_from(source, &shard(format, size), input, &mut stats, &mut |_| {
            docs += 1;
            Ok(())
        });
        (r, stats, docs)
    }

    #[test]
    fn a_source_error_inside_a_compressed_stream_fails_the_attempt_retryably() {
        let gz = gzip(&jsonl(3000));
        for format in [InputFormat::JsonlGz, InputFormat::JsonlZst] {
            let data = if format == InputFormat::JsonlGz {
                gz.clone()
            } else {
                zstd::encode_all(&jsonl(3000)[..], 3).unwrap()
            };
            let fail_at = data.len() / 2;
            let source = Flaky { data: data.clone(), pos: 0, fail_at };
            let (r, stats, _) = read(Box::new(source), format, data.len() as u64, &input(""));
            let err = r.expect_err("a reset connection must not look like the end of the file");
            assert!(matches!(err, PipelineError::Io { .. }), "{format:?}: {err}");
            assert!(err.is_retryable());
            assert_eq!(stats.bad_records, 0, "{format:?}: no record is blamed for the transport's fault");
        }
    }

    #[test]
    fn a_cut_compressed_stream_is_one_bad_record_and_keeps_what_came_before() {
        // large enough for several zstd blocks (128 KiB each): a cut keeps the complete ones
        let full = jsonl(20_000);
        for format in [InputFormat::JsonlGz, InputFormat::JsonlZst] {
            let data =
                if format == InputFormat::JsonlGz { gzip(&full) } else { zstd::encode_all(&full[..], 3).unwrap() };
            let cut = data[..data.len() / 2].to_vec();
            let (r, stats, docs) = read(Box::new(io::Cursor::new(cut)), format, data.len() as u64, &input(""));
            r.unwrap();
            assert_eq!(stats.bad_records, 1, "{format:?}");
            assert!(stats.bad[0].reason.contains("unexpected end"), "{:?}", stats.bad[0]);
            assert!(docs > 1000 && docs < 20_000, "{format:?}: {docs}");
            assert_eq!(stats.warnings.len(), 1);
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_with_its_line_number_in_bounded_memory() {
        let mut data = jsonl(5);
        let long = format!("{{\"id\": \"big\", \"text\": \"{}\"}}\n", "x".repeat(300_000));
        data.extend_from_slice(long.as_bytes());
        data.extend_from_slice(&jsonl(5));
        let size = data.len() as u64;
        let limited = input("max-line-bytes = \"100KiB\"");
        let (r, stats, docs) = read(Box::new(io::Cursor::new(data)), InputFormat::Jsonl, size, &limited);
        r.unwrap();
        assert_eq!(docs, 10);
        assert_eq!(stats.bad_records, 1);
        assert_eq!(stats.bad[0].line, 6);
        assert!(stats.bad[0].reason.contains("max-line-bytes"), "{}", stats.bad[0].reason);
        assert_eq!(stats.lines, 11);
        // the default keeps it
        let mut data = jsonl(1);
        data.extend_from_slice(long.as_bytes());
        let (r, stats, docs) =
            read(Box::new(io::Cursor::new(data.clone())), InputFormat::Jsonl, data.len() as u64, &input(""));
        r.unwrap();
        assert_eq!((docs, stats.bad_records), (2, 0));
    }

    #[test]
    fn bounded_lines_hold_at_most_the_limit() {
        let data = format!("{}\nshort\n{}", "y".repeat(10_000), "z".repeat(50));
        let mut r = BufReader::with_capacity(64, io::Cursor::new(data.into_bytes()));
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 100).unwrap(), (10_001, true));
        assert!(buf.capacity() <= 1 << 16);
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 100).unwrap(), (6, false));
        assert_eq!(buf, b"short\n");
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 50).unwrap(), (50, false));
        buf.clear();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 50).unwrap(), (0, false));
    }
}
