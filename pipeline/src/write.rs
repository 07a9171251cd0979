//! Writers: the documents a shard keeps → one file per output format (`part-NNNNN.jsonl.zst`,
//! `part-NNNNN.parquet`), each with its document count, size and sha256. Output bytes depend
//! only on the documents and the settings, so reruns and retries produce identical files.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::document::Document;
use crate::error::{PipelineError, PipelineResult};
use crate::spec::{OutputFormat, OutputSpec};
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
    jsonl: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    parquet: Option<Columns>,
    #[cfg(feature = "tokenize")]
    tokens: Option<crate::tokens::tokenize::TokenBatcher>,
    docs: u64,
}

#[derive(Default)]
struct Columns {
    id: Vec<String>,
    text: Vec<String>,
    source: Vec<Option<String>>,
    lang: Vec<Option<String>>,
    meta: Vec<Option<String>>,
}

impl ShardWriter {
    /// `tokenizer` must be given when the output has the `tokens` format.
    pub fn new(output: &OutputSpec, tokenizer: Option<&TokenizerHandle>) -> PipelineResult<Self> {
        let jsonl = if output.formats.contains(&OutputFormat::JsonlZst) {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), output.zstd_level)
                .map_err(|e| PipelineError::Other(format!("zstd encoder: {e}")))?;
            // Checksums inside the frame let readers detect corruption.
            enc.include_checksum(true).map_err(|e| PipelineError::Other(format!("zstd: {e}")))?;
            Some(enc)
        } else {
            None
        };
        let parquet = output.formats.contains(&OutputFormat::Parquet).then(Columns::default);
        let wants_tokens = output.formats.contains(&OutputFormat::Tokens);
        #[cfg(feature = "tokenize")]
        let tokens = match (wants_tokens, tokenizer, &output.tokenize) {
            (false, _, _) => None,
            (true, Some(t), Some(spec)) => Some(crate::tokens::tokenize::TokenBatcher::new(t.clone(), spec)),
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
        if let Some(cols) = &mut self.parquet {
            let meta = if doc.extra.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&doc.extra).expect("a JSON map serializes"))
            };
            cols.id.push(doc.id);
            cols.text.push(doc.text);
            cols.source.push(doc.source);
            cols.lang.push(doc.lang);
            cols.meta.push(meta);
        }
        Ok(())
    }

    pub fn docs(&self) -> u64 {
        self.docs
    }

    /// Finishes every format: `(extension, bytes)` pairs, in a fixed order.
    pub fn finish(self) -> PipelineResult<Vec<(&'static str, Vec<u8>)>> {
        let mut out = Vec::new();
        if let Some(enc) = self.jsonl {
            let bytes = enc.finish().map_err(|e| PipelineError::Other(format!("zstd: {e}")))?;
            out.push((OutputFormat::JsonlZst.extension(), bytes));
        }
        if let Some(cols) = self.parquet {
            out.push((OutputFormat::Parquet.extension(), write_parquet(cols)?));
        }
        #[cfg(feature = "tokenize")]
        if let Some(t) = self.tokens {
            let (bin, idx, meta) = t.finish()?;
            out.push((OutputFormat::Tokens.extension(), bin));
            out.push(("idx", idx));
            out.push((crate::tokens::META_SUFFIX, meta));
        }
        Ok(out)
    }
}

#[cfg(feature = "parquet")]
fn write_parquet(cols: Columns) -> PipelineResult<Vec<u8>> {
    use polars::prelude::*;
    let err = |e: PolarsError| PipelineError::Parquet { location: "output".into(), message: e.to_string() };
    let height = cols.id.len();
    let mut df = DataFrame::new(
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
    // polars does not export its zstd level type; parquet pages use zstd's default level (3).
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).with_compression(ParquetCompression::Zstd(None)).finish(&mut df).map_err(err)?;
    Ok(buf)
}

#[cfg(not(feature = "parquet"))]
fn write_parquet(_: Columns) -> PipelineResult<Vec<u8>> {
    Err(PipelineError::Other("this build has no parquet support (feature `parquet`)".into()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
