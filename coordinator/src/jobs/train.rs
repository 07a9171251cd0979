//! The `train` job kind: a training run (`lehr_schedules::job::TrainJob`, JSON) planned as one
//! gang stage with a task per rank. The ranks meet through the rendezvous, rank 0 writes the
//! checkpoints, and when a rank fails or its worker dies the scheduler aborts and requeues the
//! whole gang, whose processes resume from the latest checkpoint under `out` (bounded by the
//! coordinator's `max_attempts` per rank). Nothing to promote: checkpoints are the output and
//! each is published by its own atomic `latest` pointer.

use async_trait::async_trait;
use lehr_schedules::job::{TrainJob, TrainRankResult, TrainRankTask, TRAIN_RANK_TASK_KIND};

use super::{JobError, JobKind, PlannedJob};
use crate::scheduler::{NewTask, StageDef, Task, TaskStats};

pub struct TrainKind;

#[async_trait]
impl JobKind for TrainKind {
    fn name(&self) -> &'static str {
        lehr_schedules::kinds::TRAIN_JOB
    }

    fn output(&self, spec: &str, base_dir: &str) -> Result<String, JobError> {
        let (job, _) = TrainJob::from_json(spec).map_err(JobError::Invalid)?;
        Ok(lehr_pipeline::store::absolutize(&job.out, std::path::Path::new(base_dir)))
    }

    async fn plan(&self, _job_id: &str, name: &str, spec: &str, base_dir: &str) -> Result<PlannedJob, JobError> {
        let (mut job, run) = TrainJob::from_json(spec).map_err(JobError::Invalid)?;
        let base = std::path::Path::new(base_dir);
        job.data = lehr_pipeline::store::absolutize(&job.data, base);
        job.out = lehr_pipeline::store::absolutize(&job.out, base);
        if let Some(e) = &job.options.eval_data {
            job.options.eval_data = Some(lehr_pipeline::store::absolutize(e, base));
        }
        // The sources must be there now, not after the ranks have been placed.
        let root = lehr_pipeline::store::resolve(&job.data).map_err(|e| JobError::Invalid(e.to_string()))?;
        let avail = lehr_pipeline::mix::available(&root, &run).await.map_err(|e| JobError::Invalid(e.to_string()))?;
        if avail.vocab_size == 0 {
            return Err(JobError::Invalid(format!("no token shards under {} for the spec's sources", job.data)));
        }
        let plan =
            lehr_schedules::Plan::new(&run, Some(&avail.tokens)).map_err(|e| JobError::Invalid(e.to_string()))?;
        let tasks = (0..job.world)
            .map(|rank| NewTask {
                stage: 0,
                index: rank,
                kind: TRAIN_RANK_TASK_KIND.into(),
                payload: serde_json::to_string(&TrainRankTask { job: job.clone(), rank }).expect("task serializes"),
                shard: format!("rank {rank}/{} ({} steps)", job.world, plan.total_steps()),
            })
            .collect();
        Ok(PlannedJob {
            name: if name.is_empty() {
                format!("train {}", if job.model.is_empty() { "[init]" } else { &job.model })
            } else {
                name.into()
            },
            output: job.out.clone(),
            stages: vec![StageDef::gang("ranks")],
            tasks,
        })
    }

    fn stats(&self, task: &Task, result: &str) -> Result<TaskStats, String> {
        let r: TrainRankResult =
            serde_json::from_str(result).map_err(|e| format!("malformed {} result: {e}", task.kind))?;
        if r.rank != task.index {
            return Err(format!("rank {} reported for rank {}'s task", r.rank, task.index));
        }
        if r.step < r.total_steps {
            return Err(format!("rank {} stopped at step {} of {}", r.rank, r.step, r.total_steps));
        }
        Ok(TaskStats { docs_in: r.steps_run, docs_out: r.step, bytes_in: r.tokens, ..Default::default() })
    }
}
