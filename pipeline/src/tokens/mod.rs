//! Token shards: Megatron-LM's indexed dataset (`.bin` + `.idx`, "MMIDIDX" version 1) plus a
//! lehr metadata file per shard (`part-NNNNN.tokens.json`: tokens, documents, source,
//! tokenizer hash). Megatron, NeMo and lehr's mixer read the same files; docs/formats.md has
//! the byte layout.
//!
//! One Megatron "sequence" is one document (its tokens then EOS), and the document index is
//! `0..=documents`, as `preprocess_data.py` writes it without sentence splitting.

#[cfg(feature = "tokenize")]
pub mod tokenize;
#[cfg(feature = "tokenize")]
pub mod train;

/// A loaded tokenizer as the writers take it (uninhabited in builds without `tokenize`).
#[cfg(feature = "tokenize")]
pub type TokenizerHandle = std::sync::Arc<tokenize::LoadedTokenizer>;
#[cfg(not(feature = "tokenize"))]
#[derive(Debug, Clone)]
pub enum TokenizerHandle {}

use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, PipelineResult};
use crate::store;

/// The first 9 bytes of a Megatron `.idx` file.
pub const IDX_MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The index version Megatron writes and reads.
pub const IDX_VERSION: u64 = 1;
/// Extension of the metadata file next to each `.bin`/`.idx` pair.
pub const META_SUFFIX: &str = "tokens.json";
/// Format name recorded in the metadata.
pub const FORMAT_NAME: &str = "megatron-indexed-dataset";

/// Width of a token id in the `.bin` file, with Megatron's dtype codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// Code 8; used when every id is below 65,500 (Megatron's `best_fitting_dtype`).
    Uint16,
    /// Code 4; every larger vocabulary.
    Int32,
}

impl TokenDtype {
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size < 65_500 {
            TokenDtype::Uint16
        } else {
            TokenDtype::Int32
        }
    }
    pub fn code(self) -> u8 {
        match self {
            TokenDtype::Uint16 => 8,
            TokenDtype::Int32 => 4,
        }
    }
    pub fn width(self) -> usize {
        match self {
            TokenDtype::Uint16 => 2,
            TokenDtype::Int32 => 4,
        }
    }
    fn from_code(code: u8) -> Option<Self> {
        match code {
            8 => Some(TokenDtype::Uint16),
            4 => Some(TokenDtype::Int32),
            _ => None,
        }
    }
}

/// The tokenizer a shard was written with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenizerInfo {
    /// Where the `tokenizer.json` was read from, as given in the spec.
    pub path: String,
    /// sha256 of the `tokenizer.json` bytes: shards with the same hash share a vocabulary.
    pub sha256: String,
    /// Ids are below this (added tokens included).
    pub vocab_size: u32,
    pub eos: String,
    pub eos_id: u32,
}

/// `part-NNNNN.tokens.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenShardMeta {
    pub format: String,
    pub version: u64,
    pub dtype: TokenDtype,
    /// Tokens in the `.bin`, EOS tokens included.
    pub tokens: u64,
    pub documents: u64,
    /// The source name the mixer knows these tokens by.
    pub source: String,
    pub tokenizer: TokenizerInfo,
    /// Whether each document ends with `tokenizer.eos_id`.
    pub eos_appended: bool,
    /// Text bytes that went into the tokenizer (for bytes-per-token figures).
    pub text_bytes: u64,
}

/// Builds one `.bin`/`.idx` pair in memory.
pub struct TokenShardWriter {
    dtype: TokenDtype,
    /// The `.bin` bytes, spooled to a temporary file past a limit.
    bin: crate::spool::Spool,
    /// One document's bytes before they go to the spool.
    scratch: Vec<u8>,
    lengths: Vec<u32>,
    tokens: u64,
}

impl TokenShardWriter {
    pub fn new(dtype: TokenDtype) -> Self {
        Self::with_spool(dtype, crate::spool::Spool::default())
    }

    pub fn with_spool(dtype: TokenDtype, bin: crate::spool::Spool) -> Self {
        TokenShardWriter { dtype, bin, scratch: Vec::new(), lengths: Vec::new(), tokens: 0 }
    }

    /// Appends one document (its ids, EOS included if wanted).
    pub fn push(&mut self, ids: &[u32]) -> PipelineResult<()> {
        if ids.len() > i32::MAX as usize {
            return Err(PipelineError::Other(format!(
                "a document of {} tokens exceeds the index's i32 length",
                ids.len()
            )));
        }
        self.scratch.clear();
        match self.dtype {
            TokenDtype::Uint16 => {
                for &id in ids {
                    let v = u16::try_from(id).map_err(|_| {
                        PipelineError::Other(format!("token id {id} does not fit the shard's uint16 dtype"))
                    })?;
                    self.scratch.extend_from_slice(&v.to_le_bytes());
                }
            }
            TokenDtype::Int32 => {
                for &id in ids {
                    let v = i32::try_from(id)
                        .map_err(|_| PipelineError::Other(format!("token id {id} does not fit int32")))?;
                    self.scratch.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        std::io::Write::write_all(&mut self.bin, &self.scratch)
            .map_err(|e| PipelineError::Io { location: "token shard spool".into(), source: e })?;
        self.lengths.push(ids.len() as u32);
        self.tokens += ids.len() as u64;
        Ok(())
    }

    pub fn documents(&self) -> u64 {
        self.lengths.len() as u64
    }
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The `.bin` body and the `.idx` bytes.
    pub fn finish(self) -> PipelineResult<(crate::spool::Body, Vec<u8>)> {
        let n = self.lengths.len();
        let mut idx = Vec::with_capacity(34 + n * 12 + (n + 1) * 8);
        idx.extend_from_slice(IDX_MAGIC);
        idx.extend_from_slice(&IDX_VERSION.to_le_bytes());
        idx.push(self.dtype.code());
        idx.extend_from_slice(&(n as u64).to_le_bytes());
        idx.extend_from_slice(&(n as u64 + 1).to_le_bytes());
        for &l in &self.lengths {
            idx.extend_from_slice(&(l as i32).to_le_bytes());
        }
        let mut ptr = 0i64;
        for &l in &self.lengths {
            idx.extend_from_slice(&ptr.to_le_bytes());
            ptr += l as i64 * self.dtype.width() as i64;
        }
        for d in 0..=n as i64 {
            idx.extend_from_slice(&d.to_le_bytes());
        }
        let bin =
            self.bin.finish().map_err(|e| PipelineError::Io { location: "token shard spool".into(), source: e })?;
        Ok((bin, idx))
    }
}

/// A decoded `.idx` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIndex {
    pub dtype: TokenDtype,
    /// Tokens per sequence.
    pub lengths: Vec<u32>,
    /// Byte offset of each sequence in the `.bin`.
    pub pointers: Vec<u64>,
    /// Sequence index where each document starts, plus the end (`documents + 1` entries).
    pub doc_index: Vec<u64>,
}

impl TokenIndex {
    /// Parses and checks an `.idx` file (`location` names it in errors).
    pub fn decode(bytes: &[u8], location: &str) -> PipelineResult<Self> {
        let bad = |m: String| PipelineError::UnreadableFile { file: location.to_string(), message: m };
        if bytes.len() < 34 || &bytes[..9] != IDX_MAGIC {
            return Err(bad("not a Megatron indexed-dataset index (no MMIDIDX header)".into()));
        }
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let version = u64_at(9);
        if version != IDX_VERSION {
            return Err(bad(format!("index version {version}, expected {IDX_VERSION}")));
        }
        let dtype = TokenDtype::from_code(bytes[17])
            .ok_or_else(|| bad(format!("token dtype code {} (lehr reads 8 = uint16 and 4 = int32)", bytes[17])))?;
        let seqs = u64_at(18) as usize;
        let docs = u64_at(26) as usize;
        let need = 34usize
            .checked_add(seqs.saturating_mul(12))
            .and_then(|v| v.checked_add(docs.saturating_mul(8)))
            .ok_or_else(|| bad("sizes overflow".into()))?;
        if bytes.len() < need {
            return Err(bad(format!("truncated: {} bytes, the header announces {need}", bytes.len())));
        }
        let mut o = 34;
        let mut lengths = Vec::with_capacity(seqs);
        for _ in 0..seqs {
            let l = i32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
            if l < 0 {
                return Err(bad(format!("negative sequence length {l}")));
            }
            lengths.push(l as u32);
            o += 4;
        }
        let mut pointers = Vec::with_capacity(seqs);
        for _ in 0..seqs {
            pointers.push(u64_at(o));
            o += 8;
        }
        let mut doc_index = Vec::with_capacity(docs);
        for _ in 0..docs {
            doc_index.push(u64_at(o));
            o += 8;
        }
        if doc_index.windows(2).any(|w| w[0] > w[1]) || doc_index.last().is_some_and(|&l| l as usize > seqs) {
            return Err(bad("document index is not a non-decreasing list of sequence indices".into()));
        }
        if doc_index.first().is_some_and(|&f| f != 0) || doc_index.last().is_some_and(|&l| l as usize != seqs) {
            return Err(bad(format!(
                "document index runs {}..{}, expected 0..{seqs} (every sequence in a document)",
                doc_index.first().copied().unwrap_or(0),
                doc_index.last().copied().unwrap_or(0)
            )));
        }
        // Sequences lie back to back in the `.bin`: every pointer is where the previous one
        // ends, so a slice taken from the index can never fall outside the data.
        let width = dtype.width() as u64;
        let mut expected = 0u64;
        for (i, (&p, &l)) in pointers.iter().zip(&lengths).enumerate() {
            if p != expected {
                return Err(bad(format!(
                    "sequence {i} starts at byte {p}, expected {expected} (sequences must be contiguous)"
                )));
            }
            expected =
                p.checked_add(l as u64 * width).ok_or_else(|| bad(format!("sequence {i} ends past 2^64 bytes")))?;
        }
        Ok(TokenIndex { dtype, lengths, pointers, doc_index })
    }

    pub fn tokens(&self) -> u64 {
        self.lengths.iter().map(|&l| l as u64).sum()
    }

    /// Bytes the `.bin` must have.
    pub fn bin_len(&self) -> u64 {
        match (self.pointers.last(), self.lengths.last()) {
            (Some(&p), Some(&l)) => p + l as u64 * self.dtype.width() as u64,
            _ => 0,
        }
    }
}

/// A shard loaded for reading: index, metadata and the `.bin` bytes.
#[derive(Debug, Clone)]
pub struct TokenShard {
    /// The shard's prefix (`dir/part-00003`), for messages.
    pub name: String,
    pub meta: TokenShardMeta,
    pub index: TokenIndex,
    bin: bytes::Bytes,
}

impl TokenShard {
    /// Checks that the three parts agree (tokens, documents, dtype, `.bin` length).
    pub fn from_parts(
        name: String,
        meta: TokenShardMeta,
        index: TokenIndex,
        bin: bytes::Bytes,
    ) -> PipelineResult<Self> {
        let bad = |m: String| PipelineError::UnreadableFile { file: name.clone(), message: m };
        if meta.dtype != index.dtype {
            return Err(bad(format!("metadata says {:?}, the index {:?}", meta.dtype, index.dtype)));
        }
        if index.bin_len() != bin.len() as u64 {
            return Err(bad(format!(".bin has {} bytes, the index describes {}", bin.len(), index.bin_len())));
        }
        if index.tokens() != meta.tokens || index.doc_index.len() as u64 != meta.documents + 1 {
            return Err(bad(format!(
                "metadata says {} tokens in {} documents, the index {} in {}",
                meta.tokens,
                meta.documents,
                index.tokens(),
                index.doc_index.len().saturating_sub(1)
            )));
        }
        Ok(TokenShard { name, meta, index, bin })
    }

    /// Loads `prefix.bin`, `prefix.idx` and `prefix.tokens.json` from `dir`.
    pub async fn load(dir: &store::Location, prefix: &str) -> PipelineResult<Self> {
        let meta = read_meta(dir, prefix).await?;
        let idx_rel = format!("{prefix}.idx");
        let idx = dir.get_required(&idx_rel, "token shard index").await?;
        let index = TokenIndex::decode(&idx, &dir.child_url(&idx_rel))?;
        let bin_rel = format!("{prefix}.bin");
        let bin = match &dir.local {
            // Local shards are memory-mapped: pages load on demand and stay shared.
            Some(root) => map_file(&root.join(&bin_rel))?,
            None => dir.get_required(&bin_rel, "token shard data").await?,
        };
        TokenShard::from_parts(dir.child_url(prefix), meta, index, bin)
    }

    /// Appends tokens `[start, end)` of the shard's token stream to `out`.
    pub fn extend_range(&self, start: u64, end: u64, out: &mut Vec<u32>) {
        let w = self.index.dtype.width();
        let bytes = &self.bin[start as usize * w..end as usize * w];
        match self.index.dtype {
            TokenDtype::Uint16 => out.extend(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)),
            TokenDtype::Int32 => {
                out.extend(bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32))
            }
        }
    }

    /// The ids of document `d`.
    pub fn document(&self, d: usize) -> Vec<u32> {
        let w = self.index.dtype.width() as u64;
        let start = self.index.pointers[d] / w;
        let mut out = Vec::with_capacity(self.index.lengths[d] as usize);
        self.extend_range(start, start + self.index.lengths[d] as u64, &mut out);
        out
    }
}

fn map_file(path: &std::path::Path) -> PipelineResult<bytes::Bytes> {
    let io = |e| PipelineError::Io { location: path.display().to_string(), source: e };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Ok(bytes::Bytes::new());
    }
    // SAFETY: shards are written once under a temporary name and promoted; lehr never
    // modifies a promoted shard in place. Another program truncating it while it is mapped
    // would fault this process, which is the usual contract of memory-mapped datasets
    // (Megatron and NeMo map the same files).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(bytes::Bytes::from_owner(map))
}

/// Loads every token shard under `dir` (listing order), memory-mapped when local.
pub async fn load_shards(dir: &store::Location) -> PipelineResult<Vec<TokenShard>> {
    let mut out = Vec::new();
    for prefix in list_shards(dir).await? {
        out.push(TokenShard::load(dir, &prefix).await?);
    }
    Ok(out)
}

/// Reads only the metadata of every shard under `dir`.
pub async fn list_metadata(dir: &store::Location) -> PipelineResult<Vec<(String, TokenShardMeta)>> {
    let mut out = Vec::new();
    for prefix in list_shards(dir).await? {
        let meta = read_meta(dir, &prefix).await?;
        out.push((prefix, meta));
    }
    Ok(out)
}

/// `prefix.tokens.json` under `dir`.
async fn read_meta(dir: &store::Location, prefix: &str) -> PipelineResult<TokenShardMeta> {
    let rel = format!("{prefix}.{META_SUFFIX}");
    let bytes = dir.get_required(&rel, "token shard metadata").await?;
    serde_json::from_slice(&bytes).map_err(|e| PipelineError::UnreadableFile {
        file: dir.child_url(&rel),
        message: format!("not lehr token-shard metadata: {e}"),
    })
}

/// The shard prefixes (`part-00000`, `lang=zh/part-00001`) of every token shard under `dir`,
/// found by their metadata files, sorted.
pub async fn list_shards(dir: &store::Location) -> PipelineResult<Vec<String>> {
    let suffix = format!(".{META_SUFFIX}");
    let mut out: Vec<String> = dir
        .list_files()
        .await?
        .into_iter()
        .filter(|rel| !rel.starts_with("_lehr/"))
        .filter_map(|rel| rel.strip_suffix(&suffix).map(str::to_string))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trip_and_layout() {
        for (dtype, ids) in [(TokenDtype::Uint16, vec![65_499u32, 0, 7]), (TokenDtype::Int32, vec![151_643u32, 3])] {
            let mut w = TokenShardWriter::new(dtype);
            w.push(&ids).unwrap();
            w.push(&[]).unwrap();
            w.push(&ids[..1]).unwrap();
            let (bin, idx) = w.finish().unwrap();
            let bin = bin.into_vec().unwrap();
            assert_eq!(bin.len(), (ids.len() + 1) * dtype.width());
            // header: magic, version 1, dtype code, 3 sequences, 4 document-index entries
            assert_eq!(&idx[..9], b"MMIDIDX\0\0");
            assert_eq!(idx[17], dtype.code());
            assert_eq!(idx.len(), 34 + 3 * 4 + 3 * 8 + 4 * 8);
            let index = TokenIndex::decode(&idx, "t.idx").unwrap();
            assert_eq!(index.lengths, vec![ids.len() as u32, 0, 1]);
            assert_eq!(index.doc_index, vec![0, 1, 2, 3]);
            assert_eq!(index.bin_len(), bin.len() as u64);
            let meta = TokenShardMeta {
                format: FORMAT_NAME.into(),
                version: 1,
                dtype,
                tokens: index.tokens(),
                documents: 3,
                source: "s".into(),
                tokenizer: TokenizerInfo {
                    path: "t".into(),
                    sha256: "0".into(),
                    vocab_size: 10,
                    eos: "e".into(),
                    eos_id: 0,
                },
                eos_appended: false,
                text_bytes: 0,
            };
            let shard = TokenShard::from_parts("t".into(), meta.clone(), index.clone(), bin.clone().into()).unwrap();
            assert_eq!(shard.document(0), ids);
            assert!(shard.document(1).is_empty());
            assert_eq!(shard.document(2), ids[..1].to_vec());
            let mut truncated = bin.clone();
            truncated.pop();
            assert!(TokenShard::from_parts("t".into(), meta, index, truncated.into()).is_err());
        }
        let mut w = TokenShardWriter::new(TokenDtype::Uint16);
        assert!(w.push(&[70_000]).unwrap_err().to_string().contains("uint16"));
        assert!(TokenIndex::decode(b"MMIDIDX\0\0", "x.idx").unwrap_err().to_string().contains("x.idx"));
    }

    #[test]
    fn a_non_contiguous_index_is_refused_naming_the_file() {
        let mut w = TokenShardWriter::new(TokenDtype::Uint16);
        for doc in [&[1u32, 2, 3][..], &[4, 5], &[6]] {
            w.push(doc).unwrap();
        }
        let (_, idx) = w.finish().unwrap();
        assert!(TokenIndex::decode(&idx, "ok.idx").is_ok());
        // pointers start after the header (34 bytes) and the lengths (3 × 4)
        let pointer = |i: usize| 34 + 3 * 4 + i * 8;
        let mut gap = idx.clone();
        gap[pointer(1)..pointer(1) + 8].copy_from_slice(&100u64.to_le_bytes());
        let e = TokenIndex::decode(&gap, "gap.idx").unwrap_err().to_string();
        assert!(e.contains("gap.idx") && e.contains("sequence 1 starts at byte 100, expected 6"), "{e}");
        let mut huge = idx.clone();
        huge[pointer(2)..pointer(2) + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(TokenIndex::decode(&huge, "huge.idx").unwrap_err().to_string().contains("huge.idx"));
        // a document index that leaves sequences out
        let mut docs = idx.clone();
        let last = docs.len() - 8;
        docs[last..].copy_from_slice(&2u64.to_le_bytes());
        assert!(TokenIndex::decode(&docs, "docs.idx").unwrap_err().to_string().contains("expected 0..3"));
    }
}
