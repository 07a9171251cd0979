//! HF `tokenizers` behind the `tokens` output format: load any `tokenizer.json` once per
//! process (cached by content hash), encode kept documents in batches on all cores
//! (`encode_batch_fast`, rayon), append EOS, and fill a [`TokenShardWriter`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokenizers::Tokenizer;

use super::{TokenDtype, TokenShardMeta, TokenShardWriter, TokenizerInfo, FORMAT_NAME, IDX_VERSION};
use crate::error::{PipelineError, PipelineResult};
use crate::spec::TokenizeSpec;
use crate::spool::sha256_hex;

/// Words whose BPE merges are cached per tokenizer (HF's default is 10,000).
pub const BPE_WORD_CACHE: usize = 262_144;

/// Loaded tokenizers by (content sha256, EOS).
type TokenizerCache = HashMap<(String, String), Arc<LoadedTokenizer>>;

/// A tokenizer ready to encode, with what the shard metadata records about it.
pub struct LoadedTokenizer {
    pub tokenizer: Tokenizer,
    pub info: TokenizerInfo,
    pub dtype: TokenDtype,
}

impl std::fmt::Debug for LoadedTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedTokenizer({})", self.info.path)
    }
}

impl LoadedTokenizer {
    /// Parses `tokenizer.json` bytes; `eos` must be a token of its vocabulary.
    pub fn from_bytes(bytes: &[u8], path: &str, eos: &str) -> PipelineResult<Self> {
        let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| PipelineError::UnreadableFile {
            file: path.to_string(),
            message: format!("not a Hugging Face tokenizer.json: {e}"),
        })?;
        // BPE caches the merges of each pre-tokenized word, but only the first 10,000 distinct
        // words (the cache never evicts, it stops inserting). A corpus has millions; a larger
        // cache keeps the frequent words of every language (~40 MB at most).
        if let tokenizers::ModelWrapper::BPE(bpe) = tokenizer.get_model() {
            let mut bpe = bpe.clone();
            bpe.resize_cache(BPE_WORD_CACHE);
            tokenizer.with_model(tokenizers::ModelWrapper::BPE(bpe));
        }
        let eos_id = tokenizer
            .token_to_id(eos)
            .ok_or_else(|| PipelineError::spec("output.tokenize.eos", format!("`{eos}` is not a token of {path}")))?;
        let vocab_size = tokenizer.get_vocab(true).values().copied().max().map_or(0, |m| m + 1);
        Ok(LoadedTokenizer {
            dtype: TokenDtype::for_vocab(vocab_size as usize),
            info: TokenizerInfo {
                path: path.to_string(),
                sha256: sha256_hex(bytes),
                vocab_size,
                eos: eos.to_string(),
                eos_id,
            },
            tokenizer,
        })
    }

    /// Loads the spec's tokenizer (an absolute path or URL), once per process and content.
    pub async fn load(spec: &TokenizeSpec) -> PipelineResult<Arc<Self>> {
        static CACHE: OnceLock<Mutex<TokenizerCache>> = OnceLock::new();
        let bytes =
            crate::store::read_file(&spec.tokenizer, "the tokenizer named by output.tokenize.tokenizer").await?;
        let key = (sha256_hex(&bytes), spec.eos.clone());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(t) = cache.lock().expect("tokenizer cache").get(&key) {
            return Ok(t.clone());
        }
        let path = spec.tokenizer.clone();
        let eos = spec.eos.clone();
        let t = tokio::task::spawn_blocking(move || LoadedTokenizer::from_bytes(&bytes, &path, &eos))
            .await
            .map_err(|e| PipelineError::Other(format!("tokenizer load panicked: {e}")))??;
        let t = Arc::new(t);
        cache.lock().expect("tokenizer cache").insert(key, t.clone());
        Ok(t)
    }

    /// Ids of each text (no special tokens added), encoded in parallel.
    pub fn encode_batch(&self, texts: &[&str]) -> PipelineResult<Vec<Vec<u32>>> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), false)
            .map_err(|e| PipelineError::Other(format!("tokenizer {}: {e}", self.info.path)))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }
}

/// Kept documents of one output file → one token shard, encoded `batch` documents at a time.
pub struct TokenBatcher {
    tokenizer: Arc<LoadedTokenizer>,
    source: String,
    batch: usize,
    pending: Vec<String>,
    writer: TokenShardWriter,
    text_bytes: u64,
}

impl TokenBatcher {
    pub fn new(tokenizer: Arc<LoadedTokenizer>, spec: &TokenizeSpec) -> Self {
        Self::with_spool(tokenizer, spec, crate::spool::Spool::default())
    }

    /// [`new`](Self::new), with the `.bin` bytes going to `bin`.
    pub fn with_spool(tokenizer: Arc<LoadedTokenizer>, spec: &TokenizeSpec, bin: crate::spool::Spool) -> Self {
        TokenBatcher {
            writer: TokenShardWriter::with_spool(tokenizer.dtype, bin),
            source: spec.source.clone().unwrap_or_else(|| "corpus".into()),
            batch: spec.batch_docs.max(1),
            pending: Vec::new(),
            text_bytes: 0,
            tokenizer,
        }
    }

    pub fn push(&mut self, text: String) -> PipelineResult<()> {
        self.text_bytes += text.len() as u64;
        self.pending.push(text);
        if self.pending.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> PipelineResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let texts: Vec<&str> = self.pending.iter().map(String::as_str).collect();
        let eos = self.tokenizer.info.eos_id;
        for mut ids in self.tokenizer.encode_batch(&texts)? {
            ids.push(eos);
            self.writer.push(&ids)?;
        }
        self.pending.clear();
        Ok(())
    }

    /// `(bin, idx, metadata json)`.
    pub fn finish(mut self) -> PipelineResult<(crate::spool::Body, Vec<u8>, Vec<u8>)> {
        self.flush()?;
        let meta = TokenShardMeta {
            format: FORMAT_NAME.into(),
            version: IDX_VERSION,
            dtype: self.tokenizer.dtype,
            tokens: self.writer.tokens(),
            documents: self.writer.documents(),
            source: self.source,
            tokenizer: self.tokenizer.info.clone(),
            eos_appended: true,
            text_bytes: self.text_bytes,
        };
        let (bin, idx) = self.writer.finish()?;
        let mut json = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
        json.push(b'\n');
        Ok((bin, idx, json))
    }
}
