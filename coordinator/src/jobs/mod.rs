//! Job kinds: what the coordinator knows about each kind of job it accepts. A kind plans a
//! submitted spec into stages and shard tasks, reads the counts out of a committed result,
//! promotes a committed attempt's outputs to their final names, discards the outputs of
//! attempts that lost, and finalizes a job whose tasks are all committed.

pub mod corpus;
pub mod eval;
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
    /// Where a job of this spec writes (absolute), claimed before planning so that two jobs
    /// never write the same output; empty for kinds that write nothing.
    fn output(&self, _spec: &str, _base_dir: &str) -> Result<String, JobError> {
        Ok(String::new())
    }
    async fn plan(&self, job_id: &str, name: &str, spec: &str, base_dir: &str) -> Result<PlannedJob, JobError>;
    /// Checks a reported result and extracts its counts; an error rejects the report.
    fn stats(&self, task: &Task, result: &str) -> Result<TaskStats, String>;
    // The defaults suit kinds whose tasks write nothing under attempt prefixes (noop; train,
    // whose checkpoints publish themselves): nothing to promote, discard or finalize.
    async fn promote(&self, _job: &Job, _task: &Task) -> Result<(), JobError> {
        Ok(())
    }
    async fn discard(&self, _job: &Job, _task: &Task, _attempt: u32) -> Result<(), JobError> {
        Ok(())
    }
    async fn finalize(&self, _job: &Job, _tasks: &[Task]) -> Result<(), JobError> {
        Ok(())
    }
    /// Removes what the attempts of a job that failed or was cancelled left behind.
    async fn sweep(&self, _job: &Job) -> Result<(), JobError> {
        Ok(())
    }
}

/// The kinds this coordinator accepts, by name.
pub fn registry() -> Vec<Box<dyn JobKind>> {
    vec![Box::new(corpus::CorpusKind), Box::new(eval::EvalKind), Box::new(noop::NoopKind), Box::new(train::TrainKind)]
}
