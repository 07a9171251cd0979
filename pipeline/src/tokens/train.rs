//! `lehr tokenizer train`: a byte-level BPE tokenizer (Qwen2's pre-tokenizer: its split regex,
//! then GPT-2 byte mapping) trained with HF `tokenizers` on a sample of a multilingual corpus
//! whose bytes are balanced across languages by configured ratios, and a compression report
//! (UTF-8 bytes per token, per language, on held-out documents) against a reference tokenizer.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer, TokenizerBuilder,
};

use crate::error::{PipelineError, PipelineResult};

/// Qwen2's (and GPT-4's cl100k-like) pre-tokenization pattern: English contractions, letter
/// runs with one leading non-letter, single digits, punctuation runs, newlines, spaces.
pub const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub vocab_size: usize,
    pub min_frequency: u64,
    pub special_tokens: Vec<String>,
    /// Share of the sample's bytes per language (sums to 1).
    pub ratios: BTreeMap<String, f64>,
    /// At most this many bytes of text go into training.
    pub sample_bytes: u64,
    /// Held-out bytes per language for the compression report.
    pub eval_bytes: u64,
    pub seed: u64,
}

/// Documents of one language, as read.
pub type ByLanguage = BTreeMap<String, Vec<String>>;

/// The training sample and the held-out documents, per language.
#[derive(Debug, Default)]
pub struct Split3 {
    pub train: ByLanguage,
    pub held_out: ByLanguage,
}

/// Shuffles each language's documents (seeded) and takes bytes in proportion to `ratios`: the
/// sample is as large as the scarcest language allows (capped at `sample_bytes`), so the shares
/// hold. Held-out documents come first from each shuffled list and never enter training.
pub fn balanced_sample(mut docs: ByLanguage, cfg: &TrainConfig) -> PipelineResult<Split3> {
    let sum: f64 = cfg.ratios.values().sum();
    if cfg.ratios.is_empty() || (sum - 1.0).abs() > 1e-6 || cfg.ratios.values().any(|r| *r <= 0.0) {
        return Err(PipelineError::spec(
            "--ratio",
            format!("language ratios must be positive and sum to 1 (they sum to {sum})"),
        ));
    }
    let mut out = Split3::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut available = BTreeMap::new();
    for lang in cfg.ratios.keys() {
        let mut list = docs.remove(lang).unwrap_or_default();
        if list.is_empty() {
            return Err(PipelineError::spec(
                "--ratio",
                format!("no `{lang}` documents in the input (languages come from the `lang` field, else the built-in detector)"),
            ));
        }
        list.shuffle(&mut rng);
        let mut held = Vec::new();
        let mut held_bytes = 0u64;
        // Hold out at most a fifth of a language's bytes.
        let total: u64 = list.iter().map(|d| d.len() as u64).sum();
        let cap = cfg.eval_bytes.min(total / 5);
        while held_bytes < cap {
            let Some(d) = list.pop() else { break };
            held_bytes += d.len() as u64;
            held.push(d);
        }
        available.insert(lang.clone(), list.iter().map(|d| d.len() as u64).sum::<u64>());
        out.held_out.insert(lang.clone(), held);
        out.train.insert(lang.clone(), list);
    }
    let budget = cfg.ratios.iter().map(|(l, r)| available[l] as f64 / r).fold(cfg.sample_bytes as f64, f64::min);
    for (lang, list) in out.train.iter_mut() {
        let target = (budget * cfg.ratios[lang]) as u64;
        let mut bytes = 0u64;
        let mut keep = 0;
        while keep < list.len() && bytes < target {
            bytes += list[keep].len() as u64;
            keep += 1;
        }
        list.truncate(keep);
    }
    Ok(out)
}

/// Trains the tokenizer on `texts`.
pub fn train(texts: &[String], cfg: &TrainConfig) -> PipelineResult<Tokenizer> {
    let err = |e: tokenizers::Error| PipelineError::Other(format!("tokenizer training: {e}"));
    let split =
        Split::new(SplitPattern::Regex(QWEN2_SPLIT.into()), SplitDelimiterBehavior::Isolated, false).map_err(err)?;
    let byte_level = ByteLevel::new(false, false, false);
    let pre = Sequence::new(vec![PreTokenizerWrapper::Split(split), PreTokenizerWrapper::ByteLevel(byte_level)]);
    let mut tok =
        TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre)))
            .with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(false, false, false))))
            .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())))
            .build()
            .map_err(err)?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(cfg.vocab_size)
        .min_frequency(cfg.min_frequency)
        .show_progress(false)
        .special_tokens(cfg.special_tokens.iter().map(|t| AddedToken::from(t.clone(), true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tok.train(&mut trainer, texts.iter()).map_err(err)?;
    Ok(tok.into())
}

/// Compression of one tokenizer on one language's held-out text.
#[derive(Debug, Clone, Serialize)]
pub struct Compression {
    pub bytes: u64,
    pub tokens: u64,
    pub bytes_per_token: f64,
}

/// UTF-8 bytes per token of `tokenizer` on `docs` (no special tokens).
pub fn compression(tokenizer: &Tokenizer, docs: &[String]) -> PipelineResult<Compression> {
    let mut tokens = 0u64;
    let mut bytes = 0u64;
    for chunk in docs.chunks(256) {
        let enc = tokenizer
            .encode_batch_fast(chunk.iter().map(String::as_str).collect::<Vec<_>>(), false)
            .map_err(|e| PipelineError::Other(format!("encode: {e}")))?;
        tokens += enc.iter().map(|e| e.get_ids().len() as u64).sum::<u64>();
        bytes += chunk.iter().map(|d| d.len() as u64).sum::<u64>();
    }
    Ok(Compression { bytes, tokens, bytes_per_token: if tokens == 0 { 0.0 } else { bytes as f64 / tokens as f64 } })
}
