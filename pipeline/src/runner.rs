//! The shard runner: read a shard, run the stages (and an extra stage a phase hands in, such
//! as dedup's filter), encode the kept documents in bounded memory and put them under an
//! attempt's own prefix. It knows nothing of job kinds: `task.rs` (corpus shard tasks) and
//! `dedup/` (the signature phase) both run shards through it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::attributes::Attributes;
use crate::document::Document;
use crate::error::{PipelineError, PipelineResult};
use crate::plan::Shard;
use crate::read::{read_shard, ReadStats};
use crate::spec::{InputSpec, OutputSpec, PartitionBy, UnreadableFile};
use crate::spool::Body;
use crate::stages::{Ctx, Decision, Stage, StageSpec};
use crate::store;
use crate::tokens::TokenizerHandle;
use crate::write::{OutputFile, ShardWriter};

/// What the runner reads and how it writes: a view of a shard task's payload.
#[derive(Debug, Clone, Copy)]
pub struct ShardInput<'a> {
    pub task_index: u32,
    pub shard: &'a Shard,
    pub input: &'a InputSpec,
    pub stages: &'a [StageSpec],
    /// `path` is absolute (or a URL).
    pub output: &'a OutputSpec,
}

/// Documents in/out of one stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageCounts {
    pub name: String,
    /// The stage's column label in the attributes file (`gopher-quality-zh`).
    #[serde(default)]
    pub label: String,
    pub docs_in: u64,
    pub docs_out: u64,
    pub bytes_out: u64,
    /// Dropped documents by rule (the first rule that dropped each document).
    pub dropped: BTreeMap<String, u64>,
    /// Input text bytes of the documents dropped, by rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped_bytes: BTreeMap<String, u64>,
    /// Documents an earlier stage had already dropped that this stage would also have dropped,
    /// by rule (with `score-dropped`, so each rule's own rate is known).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub would_drop: BTreeMap<String, u64>,
    /// Documents passed through because the stage does not apply to their language.
    #[serde(default)]
    pub skipped_lang: u64,
    /// The stage's own counts (replacements made, documents modified, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
}

impl StageCounts {
    /// Adds another shard's counts of the same stage (the one place counts are summed).
    pub fn merge(&mut self, other: &StageCounts) {
        fn add(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
            for (k, n) in from {
                *into.entry(k.clone()).or_default() += n;
            }
        }
        self.docs_in += other.docs_in;
        self.docs_out += other.docs_out;
        self.bytes_out += other.bytes_out;
        add(&mut self.dropped, &other.dropped);
        add(&mut self.dropped_bytes, &other.dropped_bytes);
        add(&mut self.would_drop, &other.would_drop);
        self.skipped_lang += other.skipped_lang;
        add(&mut self.counters, &other.counters);
    }
}

/// What a committed shard attempt reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardResult {
    pub task_index: u32,
    pub shard: Shard,
    pub read: ReadStats,
    pub stages: Vec<StageCounts>,
    pub outputs: Vec<OutputFile>,
    /// Documents written (in each output format).
    pub docs_written: u64,
    /// Set when the file could not be read and the spec says to skip such files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_file: Option<String>,
}

/// Live counters of a running task, read by the worker's heartbeat.
#[derive(Debug, Default)]
pub struct TaskProgress {
    pub docs: AtomicU64,
    pub bytes: AtomicU64,
    pub cancelled: AtomicBool,
}

/// Knobs of the runner that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Fault injection for tests: sleep this long after each document, so that a test can kill
    /// a worker in the middle of a shard.
    pub slow_per_doc: Option<Duration>,
    /// The loaded `[output.tokenize]` tokenizer (set by [`run_shard_task`]).
    pub tokenizer: Option<TokenizerHandle>,
}

/// The prefix (relative to the output directory) where an attempt writes.
pub fn attempt_prefix(job_id: &str, task_index: u32, attempt: u32) -> String {
    format!("_lehr/attempts/{job_id}/t{task_index:05}-a{attempt}")
}

/// The final name of a task's output file.
pub fn final_name(task_index: u32, extension: &str) -> String {
    format!("part-{task_index:05}.{extension}")
}

/// Writes a task's files under its attempt's prefix and describes them for the result.
pub async fn put_attempt_files(
    out: &store::Location,
    prefix: &str,
    files: Vec<EncodedFile>,
) -> PipelineResult<Vec<OutputFile>> {
    let mut outputs = Vec::with_capacity(files.len());
    for f in files {
        let attempt_key = format!("{prefix}/{}", f.name);
        let (sha256, size) = (f.body.sha256.clone(), f.body.len);
        out.put_body(&attempt_key, f.body).await?;
        outputs.push(OutputFile { name: f.name, attempt_key, docs: f.docs, bytes: size, sha256 });
    }
    Ok(outputs)
}

/// A finished output file of a task: in memory when small, else in a temporary file.
pub struct EncodedFile {
    /// Final path relative to the output directory.
    pub name: String,
    pub docs: u64,
    pub body: Body,
}

/// The column label of each stage in the attributes file: the stage type, with its languages
/// when it has some (`gopher-quality-zh`), and a counter when that is still ambiguous.
pub fn stage_labels(stages: &[StageSpec]) -> Vec<String> {
    let mut labels: Vec<String> = stages
        .iter()
        .map(|s| {
            let langs = s.languages();
            if langs.is_empty() {
                s.name().to_string()
            } else {
                format!("{}-{}", s.name(), langs.join("+"))
            }
        })
        .collect();
    for i in 0..labels.len() {
        let same = labels[..i].iter().filter(|l| **l == labels[i] || l.starts_with(&format!("{}#", labels[i]))).count();
        if same > 0 {
            labels[i] = format!("{}#{}", labels[i], same + 1);
        }
    }
    labels
}

/// Where a shard's kept documents go.
pub trait KeptSink {
    /// A kept document and its row (position among the documents read from the shard).
    fn keep(&mut self, row: u64, doc: Document) -> PipelineResult<()>;
    /// Forget everything kept so far (the file turned out unreadable and is skipped).
    fn reset(&mut self);
}

/// Reads, runs the stages (then `extra`, if any) and encodes the outputs, all in memory of one
/// shard.
pub fn process(
    task: ShardInput<'_>,
    progress: &TaskProgress,
    options: &RunOptions,
    extra: Option<Box<dyn Stage>>,
) -> PipelineResult<(ShardResult, Vec<EncodedFile>)> {
    let mut writer = PartitionedWriter::new(task.output, options.tokenizer.clone());
    let (mut result, attrs) = run_stages(task, progress, options, extra, &mut writer)?;
    result.docs_written = writer.docs();
    let mut files = writer.finish(task.task_index)?;
    files.extend(attrs);
    Ok((result, files))
}

/// Reads a shard and runs the stages, handing kept documents to `sink`; returns the counts
/// and the attributes file (when the output asks for one).
pub fn run_stages(
    task: ShardInput<'_>,
    progress: &TaskProgress,
    options: &RunOptions,
    extra: Option<Box<dyn Stage>>,
    sink: &mut dyn KeptSink,
) -> PipelineResult<(ShardResult, Option<EncodedFile>)> {
    let mut stages: Vec<Box<dyn Stage>> = task
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.build().map_err(|e| PipelineError::spec(format!("stage[{i}]"), format!("{} stage: {e}", s.name())))
        })
        .collect::<Result<_, _>>()?;
    let mut labels = stage_labels(task.stages);
    if let Some(e) = extra {
        labels.push(e.name().to_string());
        stages.push(e);
    }
    let fresh_counts = || -> Vec<StageCounts> {
        stages
            .iter()
            .zip(&labels)
            .map(|(s, l)| StageCounts { name: s.name().to_string(), label: l.clone(), ..Default::default() })
            .collect()
    };
    let fresh_ctx = || -> Vec<Ctx> { stages.iter().map(|s| Ctx::for_stage(s.as_ref())).collect() };
    let mut counts = fresh_counts();
    let mut ctxs = fresh_ctx();
    let attr_columns: Vec<Vec<String>> = stages.iter().map(|s| s.score_names()).collect();
    let new_attrs = || task.output.attributes.then(|| Attributes::new(&task.shard.file.url, &labels, &attr_columns));
    let mut attrs = new_attrs();
    let mut stats = ReadStats::default();
    let mut row = 0u64;
    let score_dropped = task.output.score_dropped;
    let outcome = read_shard(task.shard, task.input, &mut stats, &mut |mut doc| {
        if progress.cancelled.load(Ordering::Relaxed) {
            return Err(PipelineError::Other("cancelled".into()));
        }
        progress.docs.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(doc.text.len() as u64, Ordering::Relaxed);
        if let Some(d) = options.slow_per_doc {
            std::thread::sleep(d);
        }
        let input_bytes = doc.text.len() as u64;
        let mut dropped: Option<(usize, &'static str)> = None;
        let mut preview: Option<String> = None;
        let mut fired: Vec<Option<&'static str>> = vec![None; stages.len()];
        let mut applied = vec![false; stages.len()];
        for (i, ((stage, c), ctx)) in stages.iter().zip(counts.iter_mut()).zip(ctxs.iter_mut()).enumerate() {
            if dropped.is_some() && !score_dropped {
                break;
            }
            ctx.scores.iter_mut().for_each(|s| *s = None);
            ctx.row = row;
            if !stage.applies_to(doc.lang.as_deref()) {
                if dropped.is_none() {
                    c.docs_in += 1;
                    c.docs_out += 1;
                    c.bytes_out += doc.text.len() as u64;
                    c.skipped_lang += 1;
                }
                continue;
            }
            applied[i] = true;
            // A document already dropped is scored (score-dropped) but not counted: the stage's
            // own counters (pii.*, docs-modified, lang.xx) describe the documents it passed on.
            let counted = if dropped.is_some() { Some(std::mem::take(&mut ctx.counters)) } else { None };
            let decision = stage.process(&mut doc, ctx);
            if let Some(saved) = counted {
                ctx.counters = saved;
            }
            if dropped.is_some() {
                if let Decision::Drop(rule) = decision {
                    fired[i] = Some(rule);
                    *c.would_drop.entry(rule.to_string()).or_default() += 1;
                }
                continue;
            }
            c.docs_in += 1;
            match decision {
                Decision::Keep => {
                    c.docs_out += 1;
                    c.bytes_out += doc.text.len() as u64;
                }
                Decision::Drop(rule) => {
                    fired[i] = Some(rule);
                    *c.dropped.entry(rule.to_string()).or_default() += 1;
                    *c.dropped_bytes.entry(rule.to_string()).or_default() += input_bytes;
                    dropped = Some((i, rule));
                    if attrs.is_some() {
                        preview = Some(doc.text.chars().take(crate::attributes::PREVIEW_CHARS).collect());
                    }
                }
            }
        }
        if let Some(a) = &mut attrs {
            a.push(
                &doc,
                row,
                input_bytes,
                dropped.map(|(i, r)| (labels[i].as_str(), r)),
                preview,
                &fired,
                &applied,
                &ctxs,
            );
        }
        row += 1;
        if dropped.is_some() {
            return Ok(());
        }
        sink.keep(row - 1, doc)
    });
    let skipped_file = match outcome {
        Ok(()) => None,
        Err(PipelineError::UnreadableFile { file, message }) if task.input.unreadable_file == UnreadableFile::Skip => {
            // Nothing of an unreadable file is kept: drop what was read before the error.
            tracing::warn!(%file, %message, "skipping unreadable input file");
            sink.reset();
            counts = fresh_counts();
            ctxs = fresh_ctx();
            attrs = new_attrs();
            stats = ReadStats::default();
            Some(message)
        }
        Err(e) => return Err(e),
    };
    for (c, k) in counts.iter_mut().zip(ctxs) {
        c.counters = k.counters.0;
    }
    let mut attr_file = None;
    if let Some(a) = attrs {
        if a.rows() > 0 {
            let rows = a.rows();
            attr_file = Some(EncodedFile {
                name: format!("{ATTRIBUTES_DIR}/{}", final_name(task.task_index, "parquet")),
                docs: rows,
                body: Body::from_vec(a.finish()?),
            });
        }
    }
    Ok((
        ShardResult {
            task_index: task.task_index,
            shard: task.shard.clone(),
            read: stats,
            stages: counts,
            outputs: Vec::new(),
            docs_written: 0,
            skipped_file,
        },
        attr_file,
    ))
}

impl KeptSink for PartitionedWriter {
    fn keep(&mut self, _row: u64, doc: Document) -> PipelineResult<()> {
        self.write(doc)
    }
    fn reset(&mut self) {
        *self = PartitionedWriter::new(&self.output, self.tokenizer.take());
    }
}

/// Where the per-document scores and decisions go, relative to the output directory.
pub const ATTRIBUTES_DIR: &str = "attributes";

/// Kept documents, one writer per partition (`lang=zh/`) when the output is partitioned.
struct PartitionedWriter {
    output: OutputSpec,
    tokenizer: Option<TokenizerHandle>,
    writers: BTreeMap<String, (ShardWriter, u64)>,
    docs: u64,
}

impl PartitionedWriter {
    fn new(output: &OutputSpec, tokenizer: Option<TokenizerHandle>) -> Self {
        PartitionedWriter { output: output.clone(), tokenizer, writers: BTreeMap::new(), docs: 0 }
    }

    fn write(&mut self, doc: Document) -> PipelineResult<()> {
        let key = match self.output.partition_by {
            Some(PartitionBy::Lang) => format!("lang={}", partition_value(doc.lang.as_deref())),
            None => String::new(),
        };
        let entry = match self.writers.get_mut(&key) {
            Some(e) => e,
            None => self.writers.entry(key).or_insert((ShardWriter::new(&self.output, self.tokenizer.as_ref())?, 0)),
        };
        entry.0.write(doc)?;
        entry.1 += 1;
        self.docs += 1;
        Ok(())
    }

    fn docs(&self) -> u64 {
        self.docs
    }

    fn finish(self, task_index: u32) -> PipelineResult<Vec<EncodedFile>> {
        let mut out = Vec::new();
        for (key, (w, docs)) in self.writers {
            for (ext, body) in w.finish()? {
                let name = final_name(task_index, ext);
                let name = if key.is_empty() { name } else { format!("{key}/{name}") };
                out.push(EncodedFile { name, docs, body });
            }
        }
        Ok(out)
    }
}

/// A language code as a directory name: ASCII letters, digits, `-` and `_` only.
fn partition_value(lang: Option<&str>) -> String {
    match lang {
        Some(l) if !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
            l.to_string()
        }
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_counts_merge_every_field() {
        let one = StageCounts {
            name: "gopher-quality".into(),
            label: "gopher-quality-zh".into(),
            docs_in: 10,
            docs_out: 7,
            bytes_out: 700,
            dropped: [("gopher_short_doc".to_string(), 3)].into(),
            dropped_bytes: [("gopher_short_doc".to_string(), 30)].into(),
            would_drop: [("gopher_below_avg".to_string(), 1)].into(),
            skipped_lang: 2,
            counters: [("docs-modified".to_string(), 4)].into(),
        };
        let mut sum = StageCounts { name: one.name.clone(), label: one.label.clone(), ..Default::default() };
        sum.merge(&one);
        sum.merge(&one);
        assert_eq!((sum.docs_in, sum.docs_out, sum.bytes_out, sum.skipped_lang), (20, 14, 1400, 4));
        assert_eq!(sum.dropped["gopher_short_doc"], 6);
        assert_eq!(sum.dropped_bytes["gopher_short_doc"], 60);
        assert_eq!(sum.would_drop["gopher_below_avg"], 2);
        assert_eq!(sum.counters["docs-modified"], 8);
        let summary = crate::manifest::StageSummary::from(sum);
        assert_eq!((summary.kept, summary.dropped, summary.label.as_str()), (14, 6, "gopher-quality-zh"));
    }
}
