//! Job kinds: what the coordinator knows about each kind of job it accepts. A kind plans a
//! submitted spec into stages and shard tasks, reads the counts out of a committed result,
//! promotes a committed attempt's outputs to their final names, discards the outputs of
//! attempts that lost, and finalizes a job whose tasks are all committed.

pub mod corpus;
pub mod noop;
pub mod train;

use async_trait::async_trait;

use crate::scheduler::{Job, NewTask, StageDef, Task, TaskStats};

/// A spec planned into work.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub name: String,
    pub output: String,
    pub stages: Vec<StageDef>,
    pub tasks: Vec<NewTask>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The spec or its inputs are wrong: the submitter must fix them.
    #[error("{0}")]
    Invalid(String),
    /// Storage trouble; the coordinator retries.
    #[error("{0}")]
    Storage(String),
}

#[async_trait]
pub trait JobKind: Send + Sync {
    fn name(&self) -> &'static str;
    async fn plan(&self, job_id: &str, name: &str, spec: &str, base_dir: &str) -> Result<PlannedJob, JobError>;
    /// Checks a reported result and extracts its counts; an error rejects the report.
    fn stats(&self, task: &Task, result: &str) -> Result<TaskStats, String>;
    async fn promote(&self, job: &Job, task: &Task) -> Result<(), JobError>;
    async fn discard(&self, job: &Job, task: &Task, attempt: u32) -> Result<(), JobError>;
    async fn finalize(&self, job: &Job, tasks: &[Task]) -> Result<(), JobError>;
}

/// The kinds this coordinator accepts, by name.
pub fn registry() -> Vec<Box<dyn JobKind>> {
    vec![Box::new(corpus::CorpusKind), Box::new(noop::NoopKind), Box::new(train::TrainKind)]
}
