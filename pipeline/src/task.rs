//! One corpus shard task: its payload ([`ShardTask`]) and [`run_shard_task`], which hands the
//! dedup filter stage (in a dedup job's last phase) to the shard runner (`runner.rs`) and puts
//! the attempt's files under its own prefix. The coordinator later promotes exactly one
//! attempt's files to their final names (see `manifest`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dedup::{
    read_clusters, task_attempt_prefix, BucketTask, ClusterTask, DedupApply, DedupFilter, SignatureTask,
    BUCKETS_TASK_KIND, CLUSTERS_TASK_KIND, SIGNATURES_TASK_KIND,
};
use crate::error::{PipelineError, PipelineResult};
use crate::plan::Shard;
use crate::spec::{InputSpec, OutputSpec};
use crate::stages::{Stage, StageSpec};
use crate::store;

pub use crate::runner::{
    attempt_prefix, final_name, put_attempt_files, run_stages, stage_labels, EncodedFile, KeptSink, RunOptions,
    ShardInput, ShardResult, StageCounts, TaskProgress, ATTRIBUTES_DIR,
};
pub use lehr_schedules::kinds::SHARD_TASK_KIND;

/// The payload of a corpus shard task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardTask {
    pub task_index: u32,
    pub shard: Shard,
    pub input: InputSpec,
    pub stages: Vec<StageSpec>,
    /// `path` is absolute (or a URL).
    pub output: OutputSpec,
    /// Set in the filter phase of a dedup job: the clusters to apply after the stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupApply>,
}

impl ShardTask {
    /// The runner's view of this task.
    pub fn view(&self) -> ShardInput<'_> {
        ShardInput {
            task_index: self.task_index,
            shard: &self.shard,
            input: &self.input,
            stages: &self.stages,
            output: &self.output,
        }
    }
}

/// [`crate::runner::process`] for a shard task's payload.
pub fn process(
    task: &ShardTask,
    progress: &TaskProgress,
    options: &RunOptions,
    extra: Option<Box<dyn Stage>>,
) -> PipelineResult<(ShardResult, Vec<EncodedFile>)> {
    crate::runner::process(task.view(), progress, options, extra)
}

/// Where an attempt of a task of `kind` writes: (output location, prefix), for discarding a
/// stopped attempt's files. `None` for kinds that write nothing or payloads that do not parse.
pub fn attempt_location(kind: &str, payload: &str, job_id: &str, attempt: u32) -> Option<(String, String)> {
    let (output, index) = match kind {
        SHARD_TASK_KIND => {
            let t: ShardTask = serde_json::from_str(payload).ok()?;
            (t.output.path, t.task_index)
        }
        SIGNATURES_TASK_KIND => {
            let t: SignatureTask = serde_json::from_str(payload).ok()?;
            (t.output.path, t.task_index)
        }
        BUCKETS_TASK_KIND => {
            let t: BucketTask = serde_json::from_str(payload).ok()?;
            (t.output_path, t.task_index)
        }
        CLUSTERS_TASK_KIND => {
            let t: ClusterTask = serde_json::from_str(payload).ok()?;
            (t.output_path, t.task_index)
        }
        _ => return None,
    };
    Some((output, task_attempt_prefix(kind, job_id, index, attempt)))
}

/// Runs a shard task end to end. Blocking work runs on tokio's blocking pool.
pub async fn run_shard_task(
    task: ShardTask,
    job_id: &str,
    attempt: u32,
    progress: Arc<TaskProgress>,
    options: RunOptions,
) -> PipelineResult<ShardResult> {
    let out = store::resolve(&task.output.path)?;
    let extra: Option<Box<dyn Stage>> = match &task.dedup {
        Some(apply) => {
            let bytes = out.get_required(&apply.clusters, "the dedup clusters phase's output for this shard").await?;
            let members = read_clusters(&bytes, &out.child_url(&apply.clusters))?;
            Some(Box::new(DedupFilter::new(apply, members)))
        }
        None => None,
    };
    #[cfg(feature = "tokenize")]
    let options = match &task.output.tokenize {
        Some(t) => RunOptions { tokenizer: Some(crate::tokens::tokenize::LoadedTokenizer::load(t).await?), ..options },
        None => options,
    };
    let task2 = task.clone();
    let progress2 = progress.clone();
    let (mut result, files) = tokio::task::spawn_blocking(move || process(&task2, &progress2, &options, extra))
        .await
        .map_err(|e| PipelineError::Other(format!("shard task panicked: {e}")))??;

    result.outputs = put_attempt_files(&out, &attempt_prefix(job_id, task.task_index, attempt), files).await?;
    Ok(result)
}
