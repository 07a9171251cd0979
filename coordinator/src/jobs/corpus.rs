//! The `corpus` job kind: a pipeline spec (TOML) over input files. One stage of shard tasks
//! (`corpus.shard`), each reading a file or a byte range and writing `part-NNNNN.*` under its
//! attempt prefix; on commit the coordinator copies the winning attempt's files to their final
//! names; when all are in, it writes `rejects.jsonl`, `spec.toml` and, last, `manifest.json`.

use std::path::Path;

use async_trait::async_trait;
use lehr_pipeline::manifest::{self, MANIFEST_NAME, REJECTS_NAME};
use lehr_pipeline::plan::{self, InputFile};
use lehr_pipeline::spec::PipelineSpec;
use lehr_pipeline::store;
use lehr_pipeline::task::{attempt_prefix, ShardResult, ShardTask, SHARD_TASK_KIND};

use super::{JobError, JobKind, PlannedJob};
use crate::scheduler::{Job, NewTask, StageDef, Task, TaskStats};

pub struct CorpusKind;

fn storage(e: lehr_pipeline::PipelineError) -> JobError {
    JobError::Storage(e.to_string())
}

/// Parses a spec and makes its paths absolute against `base_dir`.
pub fn resolve_spec(spec: &str, base_dir: &str) -> Result<PipelineSpec, JobError> {
    let mut spec = PipelineSpec::from_toml(spec).map_err(|e| JobError::Invalid(e.to_string()))?;
    let base = Path::new(base_dir);
    for p in spec.input.paths.iter_mut() {
        *p = store::absolutize(p, base);
    }
    spec.output.path = store::absolutize(&spec.output.path, base);
    for (i, stage) in spec.stages.iter_mut().enumerate() {
        stage.resolve_paths(base);
        // Load models and compile patterns now: a missing model file is the submitter's error.
        stage.build().map_err(|e| JobError::Invalid(format!("stage[{i}] ({}): {e}", stage.name())))?;
    }
    Ok(spec)
}

#[async_trait]
impl JobKind for CorpusKind {
    fn name(&self) -> &'static str {
        "corpus"
    }

    async fn plan(&self, _job_id: &str, name: &str, spec_text: &str, base_dir: &str) -> Result<PlannedJob, JobError> {
        let spec = resolve_spec(spec_text, base_dir)?;
        let out = store::resolve(&spec.output.path).map_err(|e| JobError::Invalid(e.to_string()))?;
        if !spec.output.overwrite && out.exists(MANIFEST_NAME).await.map_err(storage)? {
            return Err(JobError::Invalid(format!(
                "{} already holds a finished job ({MANIFEST_NAME}); choose another output.path or set output.overwrite = true",
                spec.output.path
            )));
        }
        let files = plan::list_inputs(&spec.input.paths).await.map_err(|e| JobError::Invalid(e.to_string()))?;
        let shards = plan::split(&files, spec.input.split_size.0);
        let tasks = shards
            .into_iter()
            .enumerate()
            .map(|(i, shard)| {
                let describe = shard.describe();
                let task = ShardTask {
                    task_index: i as u32,
                    shard,
                    input: spec.input.clone(),
                    stages: spec.stages.clone(),
                    output: spec.output.clone(),
                };
                NewTask {
                    stage: 0,
                    index: i as u32,
                    kind: SHARD_TASK_KIND.into(),
                    payload: serde_json::to_string(&task).expect("task serializes"),
                    shard: describe,
                }
            })
            .collect();
        let name =
            if name.is_empty() { spec.name.clone().unwrap_or_else(|| "corpus".into()) } else { name.to_string() };
        Ok(PlannedJob {
            name,
            output: spec.output.path.clone(),
            stages: vec![StageDef { name: "shards".into(), depends_on: vec![] }],
            tasks,
        })
    }

    fn stats(&self, task: &Task, result: &str) -> Result<TaskStats, String> {
        let r: ShardResult = serde_json::from_str(result).map_err(|e| format!("malformed shard result: {e}"))?;
        if r.task_index != task.index {
            return Err(format!("result of task index {} reported for index {}", r.task_index, task.index));
        }
        Ok(TaskStats {
            docs_in: r.read.docs,
            docs_out: r.docs_written,
            bytes_in: r.read.bytes,
            bad_records: r.read.bad_records,
        })
    }

    async fn promote(&self, job: &Job, task: &Task) -> Result<(), JobError> {
        let r: ShardResult = serde_json::from_str(&task.result).map_err(|e| JobError::Storage(e.to_string()))?;
        let out = store::resolve(&job.output).map_err(storage)?;
        for f in &r.outputs {
            if let Err(e) = out.copy(&f.attempt_key, &f.name).await {
                // A crash after an earlier promotion deleted the attempt's files but before it
                // was recorded: the final file is already there.
                if out.size(&f.name).await.map_err(storage)? != Some(f.bytes) {
                    return Err(storage(e));
                }
            }
        }
        if let Some(attempt) = task.committed_attempt {
            out.delete_prefix(&attempt_prefix(&job.id, task.index, attempt)).await.map_err(storage)?;
        }
        Ok(())
    }

    async fn discard(&self, job: &Job, task: &Task, attempt: u32) -> Result<(), JobError> {
        let out = store::resolve(&job.output).map_err(storage)?;
        out.delete_prefix(&attempt_prefix(&job.id, task.index, attempt)).await.map_err(storage)?;
        Ok(())
    }

    async fn finalize(&self, job: &Job, tasks: &[Task]) -> Result<(), JobError> {
        let spec = resolve_spec(&job.spec, &job.base_dir)?;
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            results.push(serde_json::from_str::<ShardResult>(&t.result).map_err(|e| JobError::Storage(e.to_string()))?);
        }
        let mut inputs: Vec<InputFile> = results.iter().map(|r| r.shard.file.clone()).collect();
        inputs.dedup_by(|a, b| a.url == b.url);
        let (manifest, rejects) = manifest::build(spec.name.clone(), inputs, results);
        let out = store::resolve(&job.output).map_err(storage)?;
        out.put(REJECTS_NAME, manifest::rejects_to_bytes(&rejects)).await.map_err(storage)?;
        out.put("spec.toml", spec.to_toml().into_bytes()).await.map_err(storage)?;
        // The manifest goes last: its presence means the directory is complete.
        out.put(MANIFEST_NAME, manifest::to_bytes(&manifest)).await.map_err(storage)?;
        out.delete_prefix(&format!("_lehr/attempts/{}", job.id)).await.map_err(storage)?;
        if let Some(local) = &out.local {
            // remove `_lehr/attempts` and `_lehr` when nothing else is left in them
            let _ = std::fs::remove_dir(local.join("_lehr/attempts"));
            let _ = std::fs::remove_dir(local.join("_lehr"));
        }
        Ok(())
    }
}
