//! The coordinator's state as plain data: jobs (DAGs of stages), shard tasks, leases, workers.
//! No I/O and no clocks here: times are passed in as Unix milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub type TaskId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    /// Every task is committed; the job kind's post-commit work (promotion, manifest) remains.
    Finalizing,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finalizing => "finalizing",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => JobState::Running,
            "finalizing" => JobState::Finalizing,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDef {
    pub name: String,
    /// Indices of the stages whose tasks must all be committed before this one's can run.
    pub depends_on: Vec<usize>,
    /// The stage's tasks run together as one gang (the ranks of a training job): a task's
    /// index is its rank, ranks meet through the rendezvous, and when one fails or loses its
    /// lease the others are aborted and requeued, so the whole gang restarts (from the job's
    /// latest checkpoint). Only workers that name the task kind lease gang tasks.
    #[serde(default)]
    pub gang: bool,
    /// Only workers that name the task kind lease the stage's tasks (gang stages always):
    /// benchmark shards need a worker with the model runtime, which a plain data worker lacks.
    #[serde(default)]
    pub named_only: bool,
}

impl StageDef {
    pub fn new(name: &str, depends_on: Vec<usize>) -> Self {
        StageDef { name: name.to_string(), depends_on, gang: false, named_only: false }
    }
    pub fn gang(name: &str) -> Self {
        StageDef { name: name.to_string(), depends_on: vec![], gang: true, named_only: true }
    }
    /// A stage whose tasks only workers naming their kind lease.
    pub fn named_only(name: &str) -> Self {
        StageDef { name: name.to_string(), depends_on: vec![], gang: false, named_only: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub spec: String,
    pub base_dir: String,
    pub output: String,
    pub state: JobState,
    pub stages: Vec<StageDef>,
    pub error: String,
    pub created_ms: i64,
    pub finished_ms: i64,
    /// Position in submission order; older jobs' tasks are leased first.
    pub seq: u64,
    /// For a job that ended without succeeding: whether its attempt directories were swept.
    #[serde(default)]
    pub swept: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Queued,
    Leased,
    Committed,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Leased => "leased",
            TaskState::Committed => "committed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => TaskState::Queued,
            "leased" => TaskState::Leased,
            "committed" => TaskState::Committed,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub attempt: u32,
    pub expires_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub worker_id: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    /// running | committed | duplicate | failed | expired | cancelled | aborted (a gang peer
    /// failed; not counted against the task's attempts)
    pub outcome: String,
    pub error: String,
    /// The attempt's lease token: calls about this attempt must carry it (empty in states
    /// written before lease tokens: such an attempt can never be claimed).
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub job_id: String,
    pub stage: usize,
    pub index: u32,
    pub kind: String,
    pub payload: String,
    /// For people: what the task reads.
    pub shard: String,
    pub state: TaskState,
    /// Attempts started so far (the next lease gets `attempts + 1`).
    pub attempts: u32,
    pub worker_id: String,
    pub lease: Option<Lease>,
    pub committed_attempt: Option<u32>,
    /// The committed attempt's result (kind-specific JSON).
    pub result: String,
    /// Counts of the committed attempt, for status views.
    #[serde(default)]
    pub stats: TaskStats,
    /// Whether the job kind's post-commit work (promotion of outputs) is done.
    pub promoted: bool,
    pub last_error: String,
    pub attempt_log: Vec<AttemptRecord>,
    /// Progress of the current attempt (not durable; heartbeats refresh it).
    #[serde(skip)]
    pub progress: Live,
}

/// What a running attempt's heartbeats say it has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Live {
    pub docs: u64,
    pub bytes: u64,
    /// A synth stage's requests done (answered, from the cache, or failed) of those it has.
    pub synth_requests: u64,
    pub synth_requests_total: u64,
    /// Completion tokens generated (not those answered from the cache).
    pub synth_tokens: u64,
}

/// Counts a job kind extracts from a committed result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    pub docs_in: u64,
    pub docs_out: u64,
    pub bytes_in: u64,
    pub bad_records: u64,
    /// A synth stage's requests and generated completion tokens.
    #[serde(default)]
    pub synth_requests: u64,
    #[serde(default)]
    pub synth_tokens: u64,
}

impl TaskStats {
    pub fn add(&mut self, o: &TaskStats) {
        self.docs_in += o.docs_in;
        self.docs_out += o.docs_out;
        self.bytes_in += o.bytes_in;
        self.bad_records += o.bad_records;
        self.synth_requests += o.synth_requests;
        self.synth_tokens += o.synth_tokens;
    }

    pub fn sub(&mut self, o: &TaskStats) {
        self.docs_in -= o.docs_in;
        self.docs_out -= o.docs_out;
        self.bytes_in -= o.bytes_in;
        self.bad_records -= o.bad_records;
        self.synth_requests -= o.synth_requests;
        self.synth_tokens -= o.synth_tokens;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub id: String,
    pub name: String,
    pub slots: u32,
    pub last_seen_ms: i64,
}

/// Everything the coordinator knows; the store persists it row by row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub jobs: BTreeMap<String, Job>,
    pub tasks: BTreeMap<TaskId, Task>,
    pub workers: BTreeMap<String, Worker>,
    pub next_task_id: TaskId,
    pub next_job_seq: u64,
    pub next_worker_seq: u64,
    /// Attempts whose outputs must be deleted (they lost to another attempt, or reported after
    /// their job ended): durable, so a coordinator restart does not forget them.
    pub discards: std::collections::BTreeSet<Discard>,
}

/// An attempt whose outputs the maintenance loop must delete.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Discard {
    pub job_id: String,
    pub task_id: TaskId,
    pub attempt: u32,
}

/// The rows an operation changed, for the store to write in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    pub jobs: Vec<String>,
    pub tasks: Vec<TaskId>,
    pub workers: Vec<String>,
    /// Discards added to or removed from [`State::discards`].
    pub discards: Vec<Discard>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.tasks.is_empty() && self.workers.is_empty() && self.discards.is_empty()
    }
    pub fn merge(&mut self, other: Dirty) {
        self.jobs.extend(other.jobs);
        self.tasks.extend(other.tasks);
        self.workers.extend(other.workers);
        self.discards.extend(other.discards);
    }
}
