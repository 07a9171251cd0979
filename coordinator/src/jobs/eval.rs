//! The `eval` job kind: benchmark tasks over a checkpoint (`lehr_evals::job::EvalJob`, JSON),
//! planned as item shards — rows `start..end` of one task each — that train workers lease and
//! score in a child `lehr eval shard --serve` (kept between shards: one model load per worker). Planning reads every task
//! file here, so a bad task or row is the submitter's error before anything is leased; each
//! committed shard's result carries its rows' scores, and finalize merges them in row order
//! into lm-eval's results layout at the job's `out` (written to a temporary name, then
//! renamed): the same numbers one `lehr eval tasks` process gives.

use async_trait::async_trait;
use lehr_evals::job::{merge, shards, EvalJob, EvalShardResult, EvalShardTask};
use lehr_evals::results::{results_json, TaskResult};

use super::{JobError, JobKind, PlannedJob};
use crate::scheduler::{Job, NewTask, StageDef, Task, TaskStats};

pub use lehr_schedules::kinds::EVAL_SHARD_TASK_KIND;

pub struct EvalKind;

fn parse(spec: &str, base_dir: &str) -> Result<EvalJob, JobError> {
    let mut job = EvalJob::from_json(spec).map_err(JobError::Invalid)?;
    let base = std::path::Path::new(base_dir);
    let abs = |p: &str| lehr_pipeline::store::absolutize(p, base);
    job.checkpoint = abs(&job.checkpoint);
    job.data_dir = abs(&job.data_dir);
    job.out = abs(&job.out);
    job.tasks = job.tasks.iter().map(|t| if t.ends_with(".toml") { abs(t) } else { t.clone() }).collect();
    Ok(job)
}

#[async_trait]
impl JobKind for EvalKind {
    fn name(&self) -> &'static str {
        lehr_schedules::kinds::EVAL_JOB
    }

    fn output(&self, spec: &str, base_dir: &str) -> Result<String, JobError> {
        Ok(parse(spec, base_dir)?.out)
    }

    async fn plan(&self, _job_id: &str, name: &str, spec: &str, base_dir: &str) -> Result<PlannedJob, JobError> {
        let job = parse(spec, base_dir)?;
        if job.out.contains("://") {
            return Err(JobError::Invalid(format!("out {}: the results go to a local file path", job.out)));
        }
        let plan_job = job.clone();
        // reading and templating every row is blocking work
        let planned = tokio::task::spawn_blocking(move || -> Result<Vec<(String, usize)>, JobError> {
            let job = plan_job;
            let data = std::path::Path::new(&job.data_dir);
            let mut rows = Vec::new();
            for t in job.tasks.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
                let p = lehr_evals::suite::prepare(t, data, job.limit, job.num_fewshot, job.fewshot_seed)
                    .map_err(|e| JobError::Invalid(e.to_string()))?;
                rows.push((t.to_string(), p.docs.len()));
            }
            Ok(rows)
        })
        .await
        .map_err(|e| JobError::Storage(format!("planning panicked: {e}")))??;
        let mut tasks = Vec::new();
        for (task, rows) in &planned {
            for (start, end) in shards(*rows, job.items_per_shard) {
                let payload = EvalShardTask { job: job.clone(), task: task.clone(), start, end };
                tasks.push(NewTask {
                    stage: 0,
                    index: tasks.len() as u32,
                    kind: EVAL_SHARD_TASK_KIND.into(),
                    payload: serde_json::to_string(&payload).expect("task serializes"),
                    shard: format!("{task} rows {start}..{end}"),
                });
            }
        }
        Ok(PlannedJob {
            name: if name.is_empty() { format!("eval {}", job.checkpoint) } else { name.into() },
            output: job.out.clone(),
            stages: vec![StageDef::named_only("items")],
            tasks,
        })
    }

    fn stats(&self, task: &Task, result: &str) -> Result<TaskStats, String> {
        let r: EvalShardResult =
            serde_json::from_str(result).map_err(|e| format!("malformed {} result: {e}", task.kind))?;
        let t: EvalShardTask = serde_json::from_str(&task.payload).map_err(|e| format!("task payload: {e}"))?;
        if (r.task.as_str(), r.start, r.end) != (t.task.as_str(), t.start, t.end) || r.scores.len() != t.end - t.start {
            return Err(format!(
                "result for {} rows {}..{} ({} scores) reported for {} rows {}..{}",
                r.task,
                r.start,
                r.end,
                r.scores.len(),
                t.task,
                t.start,
                t.end
            ));
        }
        let n = r.scores.len() as u64;
        Ok(TaskStats { docs_in: n, docs_out: n, ..Default::default() })
    }

    async fn finalize(&self, job: &Job, tasks: &[Task]) -> Result<(), JobError> {
        let spec = parse(&job.spec, &job.base_dir)?;
        let mut by_task: Vec<(String, Vec<EvalShardResult>, usize)> = Vec::new();
        let mut loads = 0;
        for t in tasks {
            let r: EvalShardResult = serde_json::from_str(&t.result)
                .map_err(|e| JobError::Invalid(format!("task {}: malformed result: {e}", t.id)))?;
            loads += r.loaded_model as usize;
            let p: EvalShardTask = serde_json::from_str(&t.payload)
                .map_err(|e| JobError::Invalid(format!("task {}: malformed payload: {e}", t.id)))?;
            match by_task.iter_mut().find(|(name, _, _)| *name == r.task) {
                Some((_, parts, rows)) => {
                    *rows = (*rows).max(p.end);
                    parts.push(r);
                }
                None => by_task.push((r.task.clone(), vec![r], p.end)),
            }
        }
        // in the order the job named them
        by_task.sort_by_key(|(name, _, _)| spec.tasks.iter().position(|t| t == name).unwrap_or(usize::MAX));
        let mut defs = Vec::new();
        let mut merged = Vec::new();
        for (name, parts, rows) in by_task {
            let def = lehr_evals::TaskDef::resolve(&name).map_err(|e| JobError::Invalid(e.to_string()))?;
            let (original, shots) = (parts[0].original, parts[0].num_fewshot);
            let scores = merge(parts, rows).map_err(JobError::Invalid)?;
            defs.push((def, original, shots));
            merged.push(scores);
        }
        let results: Vec<TaskResult> = defs
            .iter()
            .zip(&merged)
            .map(|((def, original, shots), s)| TaskResult {
                task: def,
                original: *original,
                scores: s,
                num_fewshot: *shots,
                seed: spec.fewshot_seed,
            })
            .collect();
        let mut v = results_json(
            &format!("pretrained={}", spec.checkpoint),
            &results,
            serde_json::json!({"job": job.id, "shards": tasks.len(), "model_loads": loads, "batch_size": spec.batch_size}),
        );
        let samples: serde_json::Map<String, serde_json::Value> = defs
            .iter()
            .zip(&merged)
            .map(|((d, _, _), s)| (d.name.clone(), serde_json::to_value(s).expect("scores serialize")))
            .collect();
        v["samples"] = serde_json::Value::Object(samples);
        let out = std::path::PathBuf::from(&spec.out);
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| JobError::Storage(format!("{}: {e}", dir.display())))?;
        }
        let tmp = out.with_extension("json.partial");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&v).expect("json"))
            .map_err(|e| JobError::Storage(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &out).map_err(|e| JobError::Storage(format!("{}: {e}", out.display())))?;
        Ok(())
    }
}
