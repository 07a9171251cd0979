//! The mixer over real token shards: a run spec's sources resolved to directories of token
//! shards under a data root, the tokens available per source, and a stage reader that turns
//! the plan's slots ([`lehr_schedules::mixer`]) into token sequences for one rank from any
//! position. What the trainer reads and what `lehr mix inspect --data` measures.

use std::collections::BTreeMap;

use lehr_schedules::mixer::{rank_positions, Slot, SourceStream, StageOrder};
use lehr_schedules::plan::StagePlan;
use lehr_schedules::RunSpec;

use crate::error::{PipelineError, PipelineResult};
use crate::store::{self, Location};
use crate::tokens::{list_metadata, load_shards, TokenShard, TokenShardMeta};

/// The directory of a source: its `path`, else its name, under the data root.
pub fn source_location(root: &Location, spec: &RunSpec, source: &str) -> PipelineResult<Location> {
    let rel = spec.sources.get(source).and_then(|s| s.path.clone()).unwrap_or_else(|| source.to_string());
    if store::is_remote(&rel) || rel.starts_with('/') {
        return store::resolve(&rel);
    }
    store::resolve(&root.child_url(&rel))
}

/// What the data root holds for each source.
#[derive(Debug, Clone, Default)]
pub struct Available {
    /// Tokens per source (EOS included), from the shards' metadata.
    pub tokens: BTreeMap<String, u64>,
    pub shards: BTreeMap<String, usize>,
    /// Where each source's shards were looked for.
    pub locations: BTreeMap<String, String>,
    /// The tokenizer hash shared by every shard (an error if they differ).
    pub tokenizer_sha256: Option<String>,
    /// That tokenizer's vocabulary size (0 without shards).
    pub vocab_size: u32,
    /// That tokenizer, as the shards' metadata names it (where it was read from, its hash, EOS).
    pub tokenizer: Option<crate::tokens::TokenizerInfo>,
}

/// Reads every source's shard metadata (not the tokens). A source without shards has 0 tokens.
pub async fn available(root: &Location, spec: &RunSpec) -> PipelineResult<Available> {
    let mut out = Available::default();
    let mut first: Option<(String, String)> = None;
    for name in spec.sources.keys() {
        let loc = source_location(root, spec, name)?;
        let metas: Vec<(String, TokenShardMeta)> = list_metadata(&loc).await?;
        for (prefix, m) in &metas {
            match &first {
                None => {
                    first = Some((m.tokenizer.sha256.clone(), loc.child_url(prefix)));
                    out.vocab_size = m.tokenizer.vocab_size;
                    out.tokenizer = Some(m.tokenizer.clone());
                }
                Some((sha, where_)) if *sha != m.tokenizer.sha256 => {
                    return Err(PipelineError::Other(format!(
                        "{} was tokenized with another tokenizer (sha256 {}) than {where_} ({sha}); a mix needs one vocabulary",
                        loc.child_url(prefix),
                        m.tokenizer.sha256
                    )))
                }
                _ => {}
            }
        }
        out.tokens.insert(name.clone(), metas.iter().map(|(_, m)| m.tokens).sum());
        out.shards.insert(name.clone(), metas.len());
        out.locations.insert(name.clone(), loc.url.clone());
    }
    out.tokenizer_sha256 = first.map(|f| f.0);
    Ok(out)
}

/// One stage's sequences over loaded shards.
pub struct StageReader {
    pub order: StageOrder,
    sequence_length: u64,
    /// Per source (the plan's order): stream start, stream, shards.
    sources: Vec<(u64, SourceStream, Vec<TokenShard>)>,
    pub names: Vec<String>,
}

impl StageReader {
    /// Loads the shards of the stage's sources (memory-mapped when local).
    pub async fn open(root: &Location, spec: &RunSpec, stage: &StagePlan) -> PipelineResult<Self> {
        let mut sources = Vec::new();
        let mut names = Vec::new();
        for sp in &stage.sources {
            let loc = source_location(root, spec, &sp.name)?;
            let shards = load_shards(&loc).await?;
            if shards.is_empty() && sp.sequences > 0 {
                return Err(PipelineError::Other(format!(
                    "source {:?} has no token shards under {} (write them with a tokenize job)",
                    sp.name, loc.url
                )));
            }
            let stream = SourceStream::new(spec.seed, &sp.name, shards.iter().map(|s| s.meta.tokens).collect());
            sources.push((sp.stream_start, stream, shards));
            names.push(sp.name.clone());
        }
        let counts: Vec<(&str, u64)> = stage.sources.iter().map(|s| (s.name.as_str(), s.sequences)).collect();
        Ok(StageReader {
            order: StageOrder::new(spec.seed, &stage.name, &counts),
            sequence_length: stage.sequence_length as u64,
            sources,
            names,
        })
    }

    /// The `L + 1` tokens of a slot (inputs and, shifted by one, labels).
    pub fn sequence(&mut self, slot: Slot) -> Vec<u32> {
        let l = self.sequence_length;
        let (start, stream, shards) = &mut self.sources[slot.source];
        let mut out = Vec::with_capacity(l as usize + 1);
        for piece in stream.pieces(*start + slot.index * l, l + 1) {
            shards[piece.shard].extend_range(piece.from, piece.to, &mut out);
        }
        out
    }

    /// The slots rank `rank` of `world` reads at steps `steps` (global batch `batch` sequences).
    pub fn rank_slots(
        &self,
        steps: std::ops::Range<u64>,
        batch: u64,
        rank: u64,
        world: u64,
    ) -> Result<Vec<(u64, Slot)>, String> {
        let mut out = Vec::new();
        for step in steps {
            let range = rank_positions(step, batch, rank, world, self.order.len())?;
            if range.is_empty() {
                continue;
            }
            out.extend(self.order.iter_from(range.start).take((range.end - range.start) as usize));
        }
        Ok(out)
    }
}

/// Tokens per source actually read when a whole stage is consumed (each sequence counts its
/// `L` input tokens), by reading every sequence from the shards.
pub fn realized_tokens(reader: &mut StageReader) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = reader.names.iter().map(|n| (n.clone(), 0)).collect();
    let slots: Vec<Slot> = reader.order.iter_from(0).map(|(_, s)| s).collect();
    for slot in slots {
        let seq = reader.sequence(slot);
        *out.get_mut(&reader.names[slot.source]).expect("named") += seq.len() as u64 - 1;
    }
    out
}
