//! Writers: the documents a shard keeps → one file per output format (`part-NNNNN.jsonl.zst`,
//! `part-NNNNN.parquet`), each with its document count, size and sha256. Output bytes depend
//! only on the documents and the settings, so reruns and retries produce identical files.
//! Every format writes through a [`Spool`] (memory up to a limit, then a temporary file), and
//! parquet in row groups of at most [`PARQUET_BATCH_BYTES`] of text, so a shard that keeps
//! gigabytes holds megabytes.

use serde::{Deserialize, Serialize};

use crate::document::Document;
use crate::error::{PipelineError, PipelineResult};
use crate::spec::{OutputFormat, OutputSpec};
use crate::spool::{Body, Spool, SPOOL_MEMORY_BYTES};
use crate::tokens::TokenizerHandle;

/// A file written by a task, as recorded in its result and in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputFile {
    /// Final path relative to the output directory (`part-00003.jsonl.zst`).
    pub name: String,
    /// Where the attempt wrote it, relative to the output directory.
    pub attempt_key: String,
    pub docs: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Collects a shard's kept documents in every configured format.
pub struct ShardWriter {
    jsonl: Option<zstd::stream::write::Encoder<'static, Spool>>,
    parquet: Option<ParquetParts>,
    #[cfg(feature = "tokenize")]
    tokens: Option<crate::tokens::tokenize::TokenBatcher>,
    docs: u64,
}

/// Text bytes of one parquet row group: the columns are flushed when they hold this much.
pub const PARQUET_BATCH_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Columns {
    id: Vec<String>,
    text: Vec<String>,
    source: Vec<Option<String>>,
    lang: Vec<Option<String>>,
    meta: Vec<Option<String>>,
    text_bytes: usize,
}

/// Parquet output in row groups: the columns of the current group, and the file so far.
struct ParquetParts {
    columns: Columns,
    #[cfg(feature = "parquet")]
    out: SharedSpool,
    #[cfg(feature = "parquet")]
    writer: Option<polars::prelude::BatchedWriter<SharedSpool>>,
    batch_bytes: usize,
}

/// A spool the parquet writer writes into and the shard writer takes back at the end.
#[cfg(feature = "parquet")]
#[derive(Clone)]
struct SharedSpool(std::sync::Arc<std::sync::Mutex<Spool>>);

#[cfg(feature = "parquet")]
impl std::io::Write for SharedSpool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("spool lock").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("spool lock").flush()
    }
}

fn spool_error(e: std::io::Error) -> PipelineError {
    PipelineError::Io { location: "output spool (the temporary directory: $TMPDIR)".into(), source: e }
}

impl ShardWriter {
    /// `tokenizer` must be given when the output has the `tokens` format.
    pub fn new(output: &OutputSpec, tokenizer: Option<&TokenizerHandle>) -> PipelineResult<Self> {
        Self::with_limits(output, tokenizer, SPOOL_MEMORY_BYTES, PARQUET_BATCH_BYTES)
    }

    /// [`new`](Self::new) with the bytes a spool keeps in memory and the text bytes of a parquet
    /// row group given (tests use small ones to exercise spilling).
    pub fn with_limits(
        output: &OutputSpec,
        tokenizer: Option<&TokenizerHandle>,
        spool_bytes: usize,
        batch_bytes: usize,
    ) -> PipelineResult<Self> {
        let jsonl = if output.formats.contains(&OutputFormat::JsonlZst) {
            let mut enc = zstd::stream::write::Encoder::new(Spool::with_limit(spool_bytes), output.zstd_level)
                .map_err(|e| PipelineError::Other(format!("zstd encoder: {e}")))?;
            // Checksums inside the frame let readers detect corruption.
            enc.include_checksum(true).map_err(|e| PipelineError::Other(format!("zstd: {e}")))?;
            Some(enc)
        } else {
            None
        };
        let parquet = output.formats.contains(&OutputFormat::Parquet).then(|| ParquetParts {
            columns: Columns::default(),
            #[cfg(feature = "parquet")]
            out: SharedSpool(std::sync::Arc::new(std::sync::Mutex::new(Spool::with_limit(spool_bytes)))),
            #[cfg(feature = "parquet")]
            writer: None,
            batch_bytes,
        });
        let wants_tokens = output.formats.contains(&OutputFormat::Tokens);
        #[cfg(feature = "tokenize")]
        let tokens = match (wants_tokens, tokenizer, &output.tokenize) {
            (false, _, _) => None,
            (true, Some(t), Some(spec)) => {
                Some(crate::tokens::tokenize::TokenBatcher::with_spool(t.clone(), spec, Spool::with_limit(spool_bytes)))
            }
            _ => {
                return Err(PipelineError::Other("the tokens format needs [output.tokenize] and its tokenizer".into()))
            }
        };
        #[cfg(not(feature = "tokenize"))]
        if wants_tokens {
            let _ = tokenizer;
            return Err(PipelineError::Other("this build has no tokenizer support (feature `tokenize`)".into()));
        }
        Ok(ShardWriter {
            jsonl,
            parquet,
            #[cfg(feature = "tokenize")]
            tokens,
            docs: 0,
        })
    }

    pub fn write(&mut self, doc: Document) -> PipelineResult<()> {
        use std::io::Write;
        self.docs += 1;
        #[cfg(feature = "tokenize")]
        if let Some(t) = &mut self.tokens {
            if self.jsonl.is_none() && self.parquet.is_none() {
                return t.push(doc.text);
            }
            t.push(doc.text.clone())?;
        }
        if let Some(enc) = &mut self.jsonl {
            serde_json::to_writer(&mut *enc, &doc).map_err(|e| PipelineError::Other(format!("json: {e}")))?;
            enc.write_all(b"\n").map_err(|e| PipelineError::Io { location: "zstd buffer".into(), source: e })?;
        }
        if let Some(p) = &mut self.parquet {
            let meta = if doc.extra.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&doc.extra).expect("a JSON map serializes"))
            };
            let cols = &mut p.columns;
            cols.text_bytes += doc.text.len();
            cols.id.push(doc.id);
            cols.text.push(doc.text);
            cols.source.push(doc.source);
            cols.lang.push(doc.lang);
            cols.meta.push(meta);
            if cols.text_bytes >= p.batch_bytes {
                p.flush()?;
            }
        }
        Ok(())
    }

    pub fn docs(&self) -> u64 {
        self.docs
    }

    /// Finishes every format: `(extension, body)` pairs, in a fixed order.
    pub fn finish(self) -> PipelineResult<Vec<(&'static str, Body)>> {
        let mut out = Vec::new();
        if let Some(enc) = self.jsonl {
            let spool = enc.finish().map_err(|e| PipelineError::Other(format!("zstd: {e}")))?;
            out.push((OutputFormat::JsonlZst.extension(), spool.finish().map_err(spool_error)?));
        }
        if let Some(p) = self.parquet {
            out.push((OutputFormat::Parquet.extension(), p.finish()?));
        }
        #[cfg(feature = "tokenize")]
        if let Some(t) = self.tokens {
            let (bin, idx, meta) = t.finish()?;
            out.push((OutputFormat::Tokens.extension(), bin));
            out.push(("idx", Body::from_vec(idx)));
            out.push((crate::tokens::META_SUFFIX, Body::from_vec(meta)));
        }
        Ok(out)
    }
}

#[cfg(feature = "parquet")]
impl ParquetParts {
    /// Writes the columns held as one row group (the first one opens the file).
    fn flush(&mut self) -> PipelineResult<()> {
        use polars::prelude::*;
        let err = |e: PolarsError| PipelineError::Parquet { location: "output".into(), message: e.to_string() };
        let cols = std::mem::take(&mut self.columns);
        let height = cols.id.len();
        let df = DataFrame::new(
            height,
            vec![
                Column::new("id".into(), cols.id),
                Column::new("text".into(), cols.text),
                Column::new("source".into(), cols.source),
                Column::new("lang".into(), cols.lang),
                Column::new("meta".into(), cols.meta),
            ],
        )
        .map_err(err)?;
        if self.writer.is_none() {
            // polars does not export its zstd level type; pages use zstd's default level (3).
            let w = ParquetWriter::new(self.out.clone())
                .with_compression(ParquetCompression::Zstd(None))
                .batched(df.schema())
                .map_err(err)?;
            self.writer = Some(w);
        }
        if height > 0 {
            self.writer.as_mut().expect("opened above").write_batch(&df).map_err(err)?;
        }
        Ok(())
    }

    fn finish(mut self) -> PipelineResult<Body> {
        self.flush()?;
        let w = self.writer.take().expect("flush opens the writer");
        w.finish().map_err(|e| PipelineError::Parquet { location: "output".into(), message: e.to_string() })?;
        drop(w);
        let spool = std::sync::Arc::try_unwrap(self.out.0)
            .map_err(|_| PipelineError::Other("the parquet writer kept its output".into()))?
            .into_inner()
            .expect("spool lock");
        spool.finish().map_err(spool_error)
    }
}

#[cfg(not(feature = "parquet"))]
impl ParquetParts {
    fn flush(&mut self) -> PipelineResult<()> {
        Err(PipelineError::Other("this build has no parquet support (feature `parquet`)".into()))
    }
    fn finish(self) -> PipelineResult<Body> {
        Err(PipelineError::Other("this build has no parquet support (feature `parquet`)".into()))
    }
}

pub use crate::spool::sha256_hex;
