//! The `noop` job kind: `tasks = N` (TOML) plans N tasks that do nothing but round-trip the
//! protocol. Used by `lehr bench coordinator` and to smoke-test a cluster's plumbing.

use async_trait::async_trait;

use super::{JobError, JobKind, PlannedJob};
use crate::scheduler::{NewTask, StageDef, Task, TaskStats};

pub use lehr_schedules::kinds::NOOP_TASK_KIND;

pub struct NoopKind;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoopSpec {
    tasks: u32,
}

#[async_trait]
impl JobKind for NoopKind {
    fn name(&self) -> &'static str {
        lehr_schedules::kinds::NOOP_JOB
    }

    async fn plan(&self, _job_id: &str, name: &str, spec: &str, _base_dir: &str) -> Result<PlannedJob, JobError> {
        let spec: NoopSpec = toml::from_str(spec).map_err(|e| JobError::Invalid(format!("invalid noop spec: {e}")))?;
        Ok(PlannedJob {
            name: if name.is_empty() { "noop".into() } else { name.into() },
            output: String::new(),
            stages: vec![StageDef::new("noop", vec![])],
            tasks: (0..spec.tasks)
                .map(|i| NewTask {
                    stage: 0,
                    index: i,
                    kind: NOOP_TASK_KIND.into(),
                    payload: "{}".into(),
                    shard: format!("noop {i}"),
                })
                .collect(),
        })
    }

    fn stats(&self, _task: &Task, _result: &str) -> Result<TaskStats, String> {
        Ok(TaskStats::default())
    }
}
