//! One corpus shard task: read a shard, run the stages, write the kept documents under the
//! attempt's own prefix, and describe what happened. The coordinator later promotes exactly one
//! attempt's files to their final names (see `manifest`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, PipelineResult};
use crate::plan::Shard;
use crate::read::{read_shard, ReadStats};
use crate::spec::{InputSpec, OutputSpec, UnreadableFile};
use crate::stages::{Counters, Decision, StageSpec};
use crate::store;
use crate::write::{sha256_hex, OutputFile, ShardWriter};

/// Task kind of corpus shard tasks in the coordinator protocol.
pub const SHARD_TASK_KIND: &str = "corpus.shard";

/// The payload of a corpus shard task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardTask {
    pub task_index: u32,
    pub shard: Shard,
    pub input: InputSpec,
    pub stages: Vec<StageSpec>,
    /// `path` is absolute (or a URL).
    pub output: OutputSpec,
}

/// Documents in/out of one stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageCounts {
    pub name: String,
    pub docs_in: u64,
    pub docs_out: u64,
    pub bytes_out: u64,
    /// Dropped documents by rule.
    pub dropped: BTreeMap<String, u64>,
    /// The stage's own counts (replacements made, documents modified, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, u64>,
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
}

/// The prefix (relative to the output directory) where an attempt writes.
pub fn attempt_prefix(job_id: &str, task_index: u32, attempt: u32) -> String {
    format!("_lehr/attempts/{job_id}/t{task_index:05}-a{attempt}")
}

/// The final name of a task's output file.
pub fn final_name(task_index: u32, extension: &str) -> String {
    format!("part-{task_index:05}.{extension}")
}

/// Runs a shard task end to end. Blocking work runs on tokio's blocking pool.
pub async fn run_shard_task(
    task: ShardTask,
    job_id: &str,
    attempt: u32,
    progress: Arc<TaskProgress>,
    options: RunOptions,
) -> PipelineResult<ShardResult> {
    let task2 = task.clone();
    let progress2 = progress.clone();
    let (mut result, files) = tokio::task::spawn_blocking(move || process(&task2, &progress2, &options))
        .await
        .map_err(|e| PipelineError::Other(format!("shard task panicked: {e}")))??;

    let out = store::resolve(&task.output.path)?;
    let prefix = attempt_prefix(job_id, task.task_index, attempt);
    for (ext, bytes) in files {
        let name = final_name(task.task_index, ext);
        let attempt_key = format!("{prefix}/{name}");
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        out.put(&attempt_key, bytes).await?;
        result.outputs.push(OutputFile { name, attempt_key, docs: result.docs_written, bytes: size, sha256 });
    }
    Ok(result)
}

type Files = Vec<(&'static str, Vec<u8>)>;

/// Reads, runs the stages and encodes the outputs, all in memory of one shard.
pub fn process(
    task: &ShardTask,
    progress: &TaskProgress,
    options: &RunOptions,
) -> PipelineResult<(ShardResult, Files)> {
    let stages: Vec<_> = task.stages.iter().map(|s| s.build()).collect();
    let mut counts: Vec<StageCounts> =
        stages.iter().map(|s| StageCounts { name: s.name().to_string(), ..Default::default() }).collect();
    let mut stage_counters: Vec<Counters> = vec![Counters::default(); stages.len()];
    let mut writer = ShardWriter::new(&task.output)?;
    let mut stats = ReadStats::default();
    let outcome = read_shard(&task.shard, &task.input, &mut stats, &mut |mut doc| {
        if progress.cancelled.load(Ordering::Relaxed) {
            return Err(PipelineError::Other("cancelled".into()));
        }
        progress.docs.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(doc.text.len() as u64, Ordering::Relaxed);
        if let Some(d) = options.slow_per_doc {
            std::thread::sleep(d);
        }
        for ((stage, c), counters) in stages.iter().zip(counts.iter_mut()).zip(stage_counters.iter_mut()) {
            c.docs_in += 1;
            match stage.process(&mut doc, counters) {
                Decision::Keep => {
                    c.docs_out += 1;
                    c.bytes_out += doc.text.len() as u64;
                }
                Decision::Drop(rule) => {
                    *c.dropped.entry(rule.to_string()).or_default() += 1;
                    return Ok(());
                }
            }
        }
        writer.write(doc)
    });
    let skipped_file = match outcome {
        Ok(()) => None,
        Err(PipelineError::UnreadableFile { file, message }) if task.input.unreadable_file == UnreadableFile::Skip => {
            // Nothing of an unreadable file is kept: drop what was read before the error.
            tracing::warn!(%file, %message, "skipping unreadable input file");
            writer = ShardWriter::new(&task.output)?;
            for c in counts.iter_mut() {
                *c = StageCounts { name: c.name.clone(), ..Default::default() };
            }
            stage_counters = vec![Counters::default(); stages.len()];
            stats = ReadStats::default();
            Some(message)
        }
        Err(e) => return Err(e),
    };
    for (c, k) in counts.iter_mut().zip(stage_counters) {
        c.counters = k.0;
    }
    let docs_written = writer.docs();
    let files = if docs_written == 0 { Vec::new() } else { writer.finish()? };
    Ok((
        ShardResult {
            task_index: task.task_index,
            shard: task.shard.clone(),
            read: stats,
            stages: counts,
            outputs: Vec::new(),
            docs_written,
            skipped_file,
        },
        files,
    ))
}
