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
    /// A synth stage's requests answered and tokens generated.
    pub synth: lehr_synth::Progress,
}

/// Knobs of the runner that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Fault injection for tests: sleep this long after each document, so that a test can kill
    /// a worker in the middle of a shard.
    pub slow_per_doc: Option<Duration>,
    /// Fault injection for tests: also sleep this long per KiB of each document's text, so
    /// that every byte-range shard of one split size lasts about as long whatever its documents'
    /// sizes (a range of a few long documents is as slow as one of many short ones).
    pub slow_per_kib: Option<Duration>,
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

/// The stages of one shard with their counts and per-document contexts.
struct Chain {
    stages: Vec<Box<dyn Stage>>,
    labels: Vec<String>,
    counts: Vec<StageCounts>,
    ctxs: Vec<Ctx>,
    score_dropped: bool,
}

impl Chain {
    fn fresh(&mut self) {
        self.counts = self
            .stages
            .iter()
            .zip(&self.labels)
            .map(|(s, l)| StageCounts { name: s.name().to_string(), label: l.clone(), ..Default::default() })
            .collect();
        self.ctxs = self.stages.iter().map(|s| Ctx::for_stage(s.as_ref())).collect();
    }

    /// Runs the stages in `range` on one document. Its attributes row is written when it is
    /// dropped, or when it is kept and `row_if_kept`; returns the document if kept.
    fn run(
        &mut self,
        range: std::ops::Range<usize>,
        mut doc: Document,
        row: u64,
        attrs: &mut Option<Attributes>,
        row_if_kept: bool,
    ) -> Option<Document> {
        let n = self.stages.len();
        let input_bytes = doc.text.len() as u64;
        let mut dropped: Option<(usize, &'static str)> = None;
        let mut preview: Option<String> = None;
        let mut fired: Vec<Option<&'static str>> = vec![None; n];
        let mut applied = vec![false; n];
        for ctx in &mut self.ctxs {
            ctx.scores.iter_mut().for_each(|s| *s = None);
            ctx.row = row;
        }
        for i in range {
            if dropped.is_some() && !self.score_dropped {
                break;
            }
            let (stage, c, ctx) = (&self.stages[i], &mut self.counts[i], &mut self.ctxs[i]);
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
        if let Some(a) = attrs {
            if dropped.is_some() || row_if_kept {
                let labels = &self.labels;
                a.push(
                    &doc,
                    row,
                    input_bytes,
                    dropped.map(|(i, r)| (labels[i].as_str(), r)),
                    preview,
                    &fired,
                    &applied,
                    &self.ctxs,
                );
            }
        }
        dropped.is_none().then_some(doc)
    }

    /// A document the synth stage (at `at`) produced nothing from: counted, and its attributes
    /// row names the first failure.
    fn synth_failed(
        &mut self,
        at: usize,
        doc: &Document,
        rule: &'static str,
        attrs: &mut Option<Attributes>,
        row: u64,
    ) {
        let c = &mut self.counts[at];
        *c.dropped.entry(rule.to_string()).or_default() += 1;
        *c.dropped_bytes.entry(rule.to_string()).or_default() += doc.text.len() as u64;
        if let Some(a) = attrs {
            let n = self.stages.len();
            let mut fired = vec![None; n];
            fired[at] = Some(rule);
            let preview = Some(doc.text.chars().take(crate::attributes::PREVIEW_CHARS).collect());
            a.push(
                doc,
                row,
                doc.text.len() as u64,
                Some((self.labels[at].as_str(), rule)),
                preview,
                &fired,
                &vec![false; n],
                &self.ctxs,
            );
        }
    }
}

/// Reads a shard and runs the stages, handing kept documents to `sink`; returns the counts
/// and the attributes file (when the output asks for one).
///
/// With a `synth` stage, the documents that pass the stages before it are gathered, sent to
/// the endpoints together (`crate::synth`), and the generated documents run through the
/// stages after it, in input order.
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
    let synth_at = task.stages.iter().position(|s| matches!(s, StageSpec::Synth(_)));
    let generator = match synth_at.map(|i| &task.stages[i]) {
        Some(StageSpec::Synth(cfg)) => Some(crate::synth::generator(cfg, task.output)?),
        _ => None,
    };
    let mut labels = stage_labels(task.stages);
    if let Some(e) = extra {
        labels.push(e.name().to_string());
        stages.push(e);
    }
    let n = stages.len();
    let mut chain =
        Chain { stages, labels, counts: Vec::new(), ctxs: Vec::new(), score_dropped: task.output.score_dropped };
    chain.fresh();
    let attr_columns: Vec<Vec<String>> = chain.stages.iter().map(|s| s.score_names()).collect();
    let new_attrs = |labels: &[String]| {
        task.output.attributes.then(|| Attributes::new(&task.shard.file.url, labels, &attr_columns))
    };
    let mut attrs = new_attrs(&chain.labels);
    let mut stats = ReadStats::default();
    let mut row = 0u64;
    let before = synth_at.unwrap_or(n);
    let mut pending: Vec<(u64, Document)> = Vec::new();
    let outcome = read_shard(task.shard, task.input, &mut stats, &mut |doc| {
        if progress.cancelled.load(Ordering::Relaxed) {
            return Err(PipelineError::Other("cancelled".into()));
        }
        progress.docs.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(doc.text.len() as u64, Ordering::Relaxed);
        if let Some(d) = options.slow_per_doc {
            std::thread::sleep(d);
        }
        if let Some(d) = options.slow_per_kib {
            std::thread::sleep(d.mul_f64(doc.text.len() as f64 / 1024.0));
        }
        row += 1;
        let kept = chain.run(0..before, doc, row - 1, &mut attrs, synth_at.is_none());
        match kept {
            None => Ok(()),
            Some(doc) if synth_at.is_some() => {
                pending.push((row - 1, doc));
                Ok(())
            }
            Some(doc) => sink.keep(row - 1, doc),
        }
    });
    let skipped_file = match outcome {
        Ok(()) => None,
        Err(PipelineError::UnreadableFile { file, message }) if task.input.unreadable_file == UnreadableFile::Skip => {
            // Nothing of an unreadable file is kept: drop what was read before the error.
            tracing::warn!(%file, %message, "skipping unreadable input file");
            sink.reset();
            chain.fresh();
            attrs = new_attrs(&chain.labels);
            stats = ReadStats::default();
            pending.clear();
            Some(message)
        }
        Err(e) => return Err(e),
    };
    if let (Some(at), Some(gen)) = (synth_at, &generator) {
        let expanded = crate::synth::generate(gen, pending, &progress.cancelled, &progress.synth)?;
        for e in expanded {
            stats.bad.extend(crate::synth::rejects(&task.shard.file.url, &e));
            let c = &mut chain.counts[at];
            c.docs_in += 1;
            if e.generated.is_empty() && !e.pass_input {
                let rule = e.failed.first().map(|f| f.0).unwrap_or("synth_no_template");
                chain.synth_failed(at, &e.input, rule, &mut attrs, e.row);
                continue;
            }
            let outs: Vec<Document> = e.pass_input.then_some(e.input).into_iter().chain(e.generated).collect();
            for doc in outs {
                let c = &mut chain.counts[at];
                c.docs_out += 1;
                c.bytes_out += doc.text.len() as u64;
                if let Some(doc) = chain.run(at + 1..n, doc, e.row, &mut attrs, true) {
                    sink.keep(e.row, doc)?;
                }
            }
        }
    }
    let Chain { mut counts, ctxs, .. } = chain;
    for (c, k) in counts.iter_mut().zip(ctxs) {
        c.counters = k.counters.0;
    }
    if let (Some(at), Some(gen)) = (synth_at, &generator) {
        // the synth slot keeps no counters of its own: the generator's are the stage's
        counts[at].counters = gen.counters();
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
