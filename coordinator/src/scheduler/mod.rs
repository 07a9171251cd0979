//! The pure scheduling core: every decision about jobs, tasks and leases, as plain functions
//! over [`State`] that return what they decided and which rows changed ([`Dirty`]). The async
//! shell (`service.rs`) holds it behind a mutex, persists the dirty rows before answering, and
//! does the I/O the decisions call for. Property tests live in `tests.rs`.

pub mod model;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use model::*;

use crate::secret::{new_secret, secrets_match};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub lease_ttl_ms: i64,
    /// Attempts a task may start before a failure or an expired lease fails its job.
    pub max_attempts: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { lease_ttl_ms: 30_000, max_attempts: 4 }
    }
}

/// A task of a job being submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub stage: usize,
    pub index: u32,
    pub kind: String,
    pub payload: String,
    pub shard: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub name: String,
    pub kind: String,
    pub spec: String,
    pub base_dir: String,
    pub output: String,
    pub stages: Vec<StageDef>,
    pub tasks: Vec<NewTask>,
}

/// A lease handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub task_id: TaskId,
    pub job_id: String,
    pub attempt: u32,
    pub kind: String,
    pub payload: String,
    /// The attempt's lease token (see [`AttemptRecord::token`]).
    pub token: String,
}

/// One running attempt in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub task_id: TaskId,
    pub attempt: u32,
    pub token: String,
    pub progress: Live,
}

/// What became of a reported outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// This attempt's outputs are the task's (also when the same attempt reports twice).
    Committed,
    /// Another attempt was committed first: this attempt's outputs must be discarded.
    Duplicate,
    /// The report no longer matters (job over, lease lost, unknown task): discard its outputs.
    Stale,
    /// A failure was recorded: the task is queued again, or it failed its job.
    FailureRecorded { job_failed: bool },
    /// The report did not carry the attempt's lease token (or came from another worker):
    /// nothing changed, and nothing of the attempt's may be deleted on its word.
    Refused,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Committed => "committed",
            Disposition::Duplicate => "duplicate",
            Disposition::Stale => "stale",
            Disposition::FailureRecorded { .. } => "failure_recorded",
            Disposition::Refused => "refused",
        }
    }
}

/// A lease that ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub task_id: TaskId,
    pub attempt: u32,
    pub worker_id: String,
    pub requeued: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("unknown worker `{0}`: register again")]
    UnknownWorker(String),
    #[error("no job `{0}`")]
    UnknownJob(String),
    #[error("a job needs at least one task")]
    EmptyJob,
    #[error("task {0} attempt {1} no longer holds its lease: stop this attempt")]
    LeaseLost(TaskId, u32),
    #[error("task {0} is not part of a gang stage; only training ranks use the rendezvous")]
    NotGang(TaskId),
    #[error(
        "{output} is being written by job {holder} (its output is {held}); wait for it to end, cancel it \
         (`lehr cancel {holder}`), or choose another output path"
    )]
    OutputBusy { output: String, holder: String, held: String },
    #[error("job id {0} exists already")]
    JobExists(String),
}

/// Whether two output locations overlap: the same, or one inside the other (by path segments).
pub fn outputs_overlap(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.strip_prefix("file://").unwrap_or(s);
        s.trim_end_matches('/').to_string()
    };
    let (a, b) = (norm(a), norm(b));
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

/// A job being planned: its id and sequence number are allocated, and its output is claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reservation {
    seq: u64,
    output: String,
}

/// A rank's entry in its gang's rendezvous (in memory only: after a coordinator restart the
/// ranks, which poll, simply join again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub attempt: u32,
    pub addr: String,
    pub nccl_id: Vec<u8>,
}

/// What a rank learns from the rendezvous.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RendezvousView {
    /// Every rank not yet finished has joined with its current attempt.
    pub ready: bool,
    pub rank: u32,
    pub world: u32,
    pub master_addr: String,
    pub nccl_id: Vec<u8>,
    pub joined: u32,
    pub finished: u32,
    /// The sum of the gang's attempt numbers: it changes whenever the gang restarts.
    pub generation: u64,
    /// When ready: the collective's secret for this generation of the gang.
    pub secret: String,
}

/// The record of `attempt` of `t` (the latest, should an attempt number repeat).
pub fn attempt_record(t: &Task, attempt: u32) -> Option<&AttemptRecord> {
    t.attempt_log.iter().rev().find(|r| r.attempt == attempt)
}

/// Whether `token` is the lease token granted to `worker_id` for `attempt` of `t`.
pub fn owns_attempt(t: &Task, worker_id: &str, attempt: u32, token: &str) -> bool {
    attempt_record(t, attempt).is_some_and(|r| r.worker_id == worker_id && secrets_match(token, &r.token))
}

/// Attempts that count against `max_attempts`: all but those aborted because a gang peer failed.
pub fn charged_attempts(t: &Task) -> u32 {
    let aborted = t.attempt_log.iter().filter(|r| r.outcome == "aborted").count() as u32;
    t.attempts.saturating_sub(aborted)
}

/// A (job, stage)'s counters: its tasks, by state, and the stats of those committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: u32,
    pub committed: u32,
    /// Committed tasks whose outputs are promoted.
    pub promoted: u32,
    pub leased: u32,
    pub failed: u32,
    /// Summed over the committed tasks.
    pub stats: TaskStats,
}

impl Tally {
    /// Counts `t` in its state (`total` is counted apart: a task is in it whatever its state).
    fn enter(&mut self, t: &Task) {
        match t.state {
            TaskState::Committed => {
                self.committed += 1;
                self.promoted += u32::from(t.promoted);
                self.stats.add(&t.stats);
            }
            TaskState::Leased => self.leased += 1,
            TaskState::Failed => self.failed += 1,
            TaskState::Queued | TaskState::Cancelled => {}
        }
    }

    /// Undoes [`Tally::enter`] for `t` leaving its state.
    fn leave(&mut self, t: &Task) {
        match t.state {
            TaskState::Committed => {
                self.committed -= 1;
                self.promoted -= u32::from(t.promoted);
                self.stats.sub(&t.stats);
            }
            TaskState::Leased => self.leased -= 1,
            TaskState::Failed => self.failed -= 1,
            TaskState::Queued | TaskState::Cancelled => {}
        }
    }
}

/// The state plus indexes derived from it (rebuilt on load, never persisted).
#[derive(Debug, Clone, Default)]
pub struct Scheduler {
    pub state: State,
    pub config: SchedulerConfig,
    /// Queued tasks in lease order: (job seq, stage, index, id).
    queued: BTreeSet<(u64, usize, u32, TaskId)>,
    leased: BTreeSet<TaskId>,
    /// (job, stage) → its counters, kept as tasks change state. A stage that others depend on
    /// is complete when all its tasks are promoted: the next stage reads their outputs under the
    /// final names. Status views read these instead of walking a job's tasks.
    stage_counts: BTreeMap<(String, usize), Tally>,
    /// Job → its tasks, so per-job work never scans every task of every job.
    job_index: BTreeMap<String, Vec<TaskId>>,
    /// Committed tasks whose outputs are not promoted yet.
    unpromoted: BTreeSet<TaskId>,
    /// Gang tasks' rendezvous entries, by task.
    rendezvous: BTreeMap<TaskId, Member>,
    /// Jobs being planned (in memory: a restart forgets a submission that was never answered).
    reservations: BTreeMap<String, Reservation>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler { config, ..Default::default() }
    }

    /// Wraps a loaded state and rebuilds the indexes.
    pub fn from_state(state: State, config: SchedulerConfig) -> Self {
        let mut s = Scheduler { state, config, ..Default::default() };
        s.rebuild_indexes();
        s
    }

    fn rebuild_indexes(&mut self) {
        self.queued.clear();
        self.leased.clear();
        self.stage_counts.clear();
        self.job_index.clear();
        self.unpromoted.clear();
        for t in self.state.tasks.values() {
            self.job_index.entry(t.job_id.clone()).or_default().push(t.id);
            if t.state == TaskState::Committed && !t.promoted {
                self.unpromoted.insert(t.id);
            }
            let seq = self.state.jobs.get(&t.job_id).map(|j| j.seq).unwrap_or(u64::MAX);
            let c = self.stage_counts.entry((t.job_id.clone(), t.stage)).or_default();
            c.total += 1;
            c.enter(t);
            match t.state {
                TaskState::Queued => {
                    self.queued.insert((seq, t.stage, t.index, t.id));
                }
                TaskState::Leased => {
                    self.leased.insert(t.id);
                }
                _ => {}
            }
        }
    }

    /// Moves a task to `new`, keeping the indexes right.
    fn set_task_state(&mut self, id: TaskId, new: TaskState) {
        let t = self.state.tasks.get_mut(&id).expect("task exists");
        let seq = self.state.jobs.get(&t.job_id).map(|j| j.seq).unwrap_or(u64::MAX);
        let key = (seq, t.stage, t.index, t.id);
        let mut tally = self.stage_counts.get_mut(&(t.job_id.clone(), t.stage));
        if let Some(c) = tally.as_deref_mut() {
            c.leave(t);
        }
        match t.state {
            TaskState::Queued => {
                self.queued.remove(&key);
            }
            TaskState::Leased => {
                self.leased.remove(&id);
            }
            TaskState::Committed => {
                self.unpromoted.remove(&id);
            }
            _ => {}
        }
        t.state = new;
        if let Some(c) = tally {
            c.enter(t);
        }
        match new {
            TaskState::Queued => {
                self.queued.insert(key);
            }
            TaskState::Leased => {
                self.leased.insert(id);
            }
            TaskState::Committed if !t.promoted => {
                self.unpromoted.insert(id);
            }
            _ => {}
        }
    }

    fn stage_committed(&self, job_id: &str, stage: usize) -> bool {
        self.stage_counts.get(&(job_id.to_string(), stage)).is_none_or(|c| c.total == c.committed)
    }

    fn stage_complete(&self, job_id: &str, stage: usize) -> bool {
        self.stage_counts.get(&(job_id.to_string(), stage)).is_none_or(|c| c.total == c.promoted)
    }

    /// The running (or being planned) job whose output overlaps `output`, if any, and that
    /// output. `except` is the asking job itself.
    pub fn output_holder(&self, output: &str, except: &str) -> Option<(String, String)> {
        if output.is_empty() {
            return None;
        }
        let running = self
            .state
            .jobs
            .values()
            .filter(|j| !j.state.is_terminal() && j.id != except)
            .map(|j| (j.id.as_str(), j.output.as_str()));
        let planning =
            self.reservations.iter().filter(|(id, _)| *id != except).map(|(id, r)| (id.as_str(), r.output.as_str()));
        running
            .chain(planning)
            .find(|(_, held)| !held.is_empty() && outputs_overlap(output, held))
            .map(|(id, held)| (id.to_string(), held.to_string()))
    }

    /// Allocates the next job id (`job-NNNNNN-<suffix>`, the sequence number taken here, under
    /// the caller's lock) and claims `output` for it while it is planned; refused when a running
    /// or planning job writes to an overlapping output. [`Scheduler::submit`] turns the
    /// reservation into the job; [`Scheduler::release`] drops it.
    pub fn reserve_job(&mut self, output: &str, suffix: &str) -> Result<String, SchedulerError> {
        if let Some((holder, held)) = self.output_holder(output, "") {
            return Err(SchedulerError::OutputBusy { output: output.to_string(), holder, held });
        }
        let seq = self.next_job_seq();
        let id = format!("job-{:06}-{suffix}", seq + 1);
        self.reservations.insert(id.clone(), Reservation { seq, output: output.to_string() });
        Ok(id)
    }

    /// Takes the next job sequence number.
    fn next_job_seq(&mut self) -> u64 {
        self.state.next_job_seq += 1;
        self.state.next_job_seq - 1
    }

    /// Drops a reservation whose planning failed.
    pub fn release(&mut self, job_id: &str) {
        self.reservations.remove(job_id);
    }

    pub fn submit(&mut self, job_id: String, job: NewJob, now: i64) -> Result<Dirty, SchedulerError> {
        if job.tasks.is_empty() {
            self.release(&job_id);
            return Err(SchedulerError::EmptyJob);
        }
        if self.state.jobs.contains_key(&job_id) {
            return Err(SchedulerError::JobExists(job_id));
        }
        if let Some((holder, held)) = self.output_holder(&job.output, &job_id) {
            self.release(&job_id);
            return Err(SchedulerError::OutputBusy { output: job.output.clone(), holder, held });
        }
        let seq = match self.reservations.remove(&job_id) {
            Some(r) => r.seq,
            None => self.next_job_seq(),
        };
        let mut dirty = Dirty { jobs: vec![job_id.clone()], ..Default::default() };
        self.state.jobs.insert(
            job_id.clone(),
            Job {
                id: job_id.clone(),
                name: job.name,
                kind: job.kind,
                spec: job.spec,
                base_dir: job.base_dir,
                output: job.output,
                state: JobState::Running,
                stages: job.stages,
                error: String::new(),
                created_ms: now,
                finished_ms: 0,
                seq,
                swept: false,
            },
        );
        for nt in job.tasks {
            let id = self.state.next_task_id;
            self.state.next_task_id += 1;
            self.state.tasks.insert(
                id,
                Task {
                    id,
                    job_id: job_id.clone(),
                    stage: nt.stage,
                    index: nt.index,
                    kind: nt.kind,
                    payload: nt.payload,
                    shard: nt.shard,
                    state: TaskState::Queued,
                    attempts: 0,
                    worker_id: String::new(),
                    lease: None,
                    committed_attempt: None,
                    result: String::new(),
                    stats: TaskStats::default(),
                    promoted: false,
                    last_error: String::new(),
                    attempt_log: Vec::new(),
                    progress: Default::default(),
                },
            );
            self.stage_counts.entry((job_id.clone(), nt.stage)).or_default().total += 1;
            self.queued.insert((seq, nt.stage, nt.index, id));
            self.job_index.entry(job_id.clone()).or_default().push(id);
            dirty.tasks.push(id);
        }
        Ok(dirty)
    }

    pub fn register_worker(&mut self, name: &str, slots: u32, now: i64) -> (String, Dirty) {
        self.state.next_worker_seq += 1;
        let id = format!("w{}", self.state.next_worker_seq);
        self.state.workers.insert(
            id.clone(),
            Worker { id: id.clone(), name: name.to_string(), slots: slots.max(1), last_seen_ms: now },
        );
        (id.clone(), Dirty { workers: vec![id], ..Default::default() })
    }

    fn touch_worker(&mut self, worker_id: &str, now: i64) -> Result<(), SchedulerError> {
        let w = self
            .state
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| SchedulerError::UnknownWorker(worker_id.to_string()))?;
        w.last_seen_ms = now;
        Ok(())
    }

    /// Leases up to `max` runnable tasks to a worker: queued tasks of running jobs whose stage
    /// dependencies are complete, oldest job first, then by stage and index.
    pub fn lease(&mut self, worker_id: &str, max: u32, now: i64) -> Result<(Vec<Grant>, Dirty), SchedulerError> {
        self.lease_kinds(worker_id, max, &[], now)
    }

    /// [`Scheduler::lease`] limited to tasks of the given kinds; an empty list means every kind
    /// except those of gang and named-only stages (a worker must name those to get them).
    pub fn lease_kinds(
        &mut self,
        worker_id: &str,
        max: u32,
        kinds: &[String],
        now: i64,
    ) -> Result<(Vec<Grant>, Dirty), SchedulerError> {
        self.touch_worker(worker_id, now)?;
        let mut dirty = Dirty::default();
        let mut picked = Vec::new();
        for &(_, stage, _, id) in &self.queued {
            if picked.len() >= max as usize {
                break;
            }
            let t = &self.state.tasks[&id];
            let Some(job) = self.state.jobs.get(&t.job_id) else { continue };
            if job.state != JobState::Running {
                continue;
            }
            let named_only = job.stages.get(stage).is_some_and(|s| s.gang || s.named_only);
            let wanted = if kinds.is_empty() { !named_only } else { kinds.contains(&t.kind) };
            if !wanted {
                continue;
            }
            let ready =
                job.stages.get(stage).is_none_or(|s| s.depends_on.iter().all(|&d| self.stage_complete(&job.id, d)));
            if ready {
                picked.push(id);
            }
        }
        let mut grants = Vec::new();
        for id in picked {
            self.set_task_state(id, TaskState::Leased);
            let t = self.state.tasks.get_mut(&id).expect("picked task exists");
            t.attempts += 1;
            t.worker_id = worker_id.to_string();
            t.lease = Some(Lease { attempt: t.attempts, expires_ms: now + self.config.lease_ttl_ms });
            t.progress = Default::default();
            let token = new_secret();
            t.attempt_log.push(AttemptRecord {
                attempt: t.attempts,
                worker_id: worker_id.to_string(),
                started_ms: now,
                ended_ms: 0,
                outcome: "running".into(),
                error: String::new(),
                token: token.clone(),
            });
            grants.push(Grant {
                task_id: id,
                job_id: t.job_id.clone(),
                attempt: t.attempts,
                kind: t.kind.clone(),
                payload: t.payload.clone(),
                token,
            });
            dirty.tasks.push(id);
        }
        if !grants.is_empty() {
            dirty.workers.push(worker_id.to_string());
        }
        Ok((grants, dirty))
    }

    /// Whether `(worker, attempt, token)` holds the live lease of a task.
    pub fn holds_lease(&self, task_id: TaskId, worker_id: &str, attempt: u32, token: &str) -> bool {
        self.state.tasks.get(&task_id).is_some_and(|t| {
            t.state == TaskState::Leased
                && t.worker_id == worker_id
                && t.lease.is_some_and(|l| l.attempt == attempt)
                && owns_attempt(t, worker_id, attempt, token)
        })
    }

    /// Renews the leases a worker still holds and records progress; returns the attempts the
    /// worker must stop (also those named without their lease token: they renew nothing).
    /// Lease renewals are not persisted (a restart grants a grace period).
    pub fn heartbeat(
        &mut self,
        worker_id: &str,
        running: &[Beat],
        now: i64,
    ) -> Result<Vec<(TaskId, u32)>, SchedulerError> {
        self.touch_worker(worker_id, now)?;
        let mut cancel = Vec::new();
        for b in running {
            if self.holds_lease(b.task_id, worker_id, b.attempt, &b.token) {
                let ttl = self.config.lease_ttl_ms;
                let t = self.state.tasks.get_mut(&b.task_id).expect("held task exists");
                t.lease = Some(Lease { attempt: b.attempt, expires_ms: now + ttl });
                t.progress = b.progress;
            } else {
                cancel.push((b.task_id, b.attempt));
            }
        }
        Ok(cancel)
    }

    fn end_attempt(t: &mut Task, attempt: u32, outcome: &str, error: &str, now: i64) {
        if let Some(rec) = t.attempt_log.iter_mut().rev().find(|r| r.attempt == attempt) {
            if rec.outcome == "running" || outcome == "committed" {
                rec.outcome = outcome.to_string();
                rec.ended_ms = now;
                rec.error = error.to_string();
            }
        }
    }

    /// Returns leases past their expiry to the queue (or fails the job after too many attempts).
    pub fn expire(&mut self, now: i64) -> (Vec<Expired>, Dirty) {
        let due: Vec<TaskId> = self
            .leased
            .iter()
            .copied()
            .filter(|id| self.state.tasks[id].lease.is_some_and(|l| l.expires_ms < now))
            .collect();
        let mut dirty = Dirty::default();
        let mut expired = Vec::new();
        for id in due {
            let t = self.state.tasks.get_mut(&id).expect("leased task exists");
            if t.state != TaskState::Leased {
                continue; // cancelled meanwhile, by a job failed earlier in this loop
            }
            let attempt = t.lease.map(|l| l.attempt).unwrap_or(0);
            let worker_id = std::mem::take(&mut t.worker_id);
            t.lease = None;
            t.last_error = format!("lease expired on worker {worker_id} (attempt {attempt})");
            Self::end_attempt(t, attempt, "expired", "lease expired", now);
            let attempts = charged_attempts(t);
            let exhausted = attempts >= self.config.max_attempts;
            let job_id = t.job_id.clone();
            let shard = t.shard.clone();
            let stage = t.stage;
            if exhausted {
                self.set_task_state(id, TaskState::Failed);
                let msg = format!(
                    "task {id} ({shard}) lost its lease {attempts} times; giving up (workers crashing or hanging?)"
                );
                dirty.merge(self.fail_job(&job_id, &msg, now));
            } else {
                self.set_task_state(id, TaskState::Queued);
                let why = format!("gang restart: task {id} lost its lease (attempt {attempt})");
                dirty.merge(self.abort_gang(&job_id, stage, id, &why, now));
            }
            dirty.tasks.push(id);
            expired.push(Expired { task_id: id, attempt, worker_id, requeued: !exhausted });
        }
        (expired, dirty)
    }

    /// A successful attempt, fenced by its lease token: a report without the token granted to
    /// this worker for this attempt is [`Disposition::Refused`] and changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn report_success(
        &mut self,
        worker_id: &str,
        task_id: TaskId,
        attempt: u32,
        token: &str,
        result: String,
        stats: TaskStats,
        now: i64,
    ) -> (Disposition, Dirty) {
        let Some(t) = self.state.tasks.get(&task_id) else {
            return (Disposition::Stale, Dirty::default());
        };
        if !owns_attempt(t, worker_id, attempt, token) {
            return (Disposition::Refused, Dirty::default());
        }
        let _ = self.touch_worker(worker_id, now);
        let t = &self.state.tasks[&task_id];
        if t.state == TaskState::Committed {
            return if t.committed_attempt == Some(attempt) {
                (Disposition::Committed, Dirty::default())
            } else {
                let t = self.state.tasks.get_mut(&task_id).expect("task exists");
                Self::end_attempt(t, attempt, "duplicate", "", now);
                let mut dirty = Dirty { tasks: vec![task_id], ..Default::default() };
                dirty.merge(self.discard(task_id, attempt));
                (Disposition::Duplicate, dirty)
            };
        }
        let job_running = self.state.jobs.get(&t.job_id).is_some_and(|j| j.state == JobState::Running);
        if !job_running
            || attempt == 0
            || attempt > t.attempts
            || !matches!(t.state, TaskState::Queued | TaskState::Leased)
        {
            return (Disposition::Stale, self.discard(task_id, attempt));
        }
        // Any issued attempt may commit, even one whose lease expired: its output is as good.
        let job_id = t.job_id.clone();
        // the stats first: the stage's tally adds them as the task enters Committed
        self.state.tasks.get_mut(&task_id).expect("task exists").stats = stats;
        self.set_task_state(task_id, TaskState::Committed);
        let t = self.state.tasks.get_mut(&task_id).expect("task exists");
        t.committed_attempt = Some(attempt);
        t.result = result;
        t.worker_id = worker_id.to_string();
        t.lease = None;
        t.last_error.clear();
        Self::end_attempt(t, attempt, "committed", "", now);
        let mut dirty = Dirty { tasks: vec![task_id], ..Default::default() };
        let job = &self.state.jobs[&job_id];
        if (0..job.stages.len()).all(|s| self.stage_committed(&job_id, s)) {
            let job = self.state.jobs.get_mut(&job_id).expect("job exists");
            job.state = JobState::Finalizing;
            dirty.jobs.push(job_id);
        }
        (Disposition::Committed, dirty)
    }

    /// A failed attempt, fenced like [`Scheduler::report_success`].
    #[allow(clippy::too_many_arguments)]
    pub fn report_failure(
        &mut self,
        worker_id: &str,
        task_id: TaskId,
        attempt: u32,
        token: &str,
        error: &str,
        retryable: bool,
        now: i64,
    ) -> (Disposition, Dirty) {
        let Some(t) = self.state.tasks.get(&task_id) else {
            return (Disposition::Stale, Dirty::default());
        };
        if !owns_attempt(t, worker_id, attempt, token) {
            return (Disposition::Refused, Dirty::default());
        }
        let _ = self.touch_worker(worker_id, now);
        if !self.holds_lease(task_id, worker_id, attempt, token) {
            return (Disposition::Stale, self.discard(task_id, attempt));
        }
        let t = self.state.tasks.get_mut(&task_id).expect("held task exists");
        t.lease = None;
        t.last_error = error.to_string();
        Self::end_attempt(t, attempt, "failed", error, now);
        let attempts = charged_attempts(t);
        let give_up = !retryable || attempts >= self.config.max_attempts;
        let (job_id, shard, stage) = (t.job_id.clone(), t.shard.clone(), t.stage);
        let mut dirty = Dirty { tasks: vec![task_id], ..Default::default() };
        if give_up {
            self.set_task_state(task_id, TaskState::Failed);
            let why = if retryable { format!("after {attempts} attempts") } else { "(not retryable)".to_string() };
            let msg = format!("task {task_id} ({shard}) failed {why}: {error}");
            dirty.merge(self.fail_job(&job_id, &msg, now));
        } else {
            self.set_task_state(task_id, TaskState::Queued);
            let why = format!("gang restart: task {task_id} failed (attempt {attempt})");
            dirty.merge(self.abort_gang(&job_id, stage, task_id, &why, now));
        }
        (Disposition::FailureRecorded { job_failed: give_up }, dirty)
    }

    /// In a gang stage, takes the leases of every other running rank back (outcome `aborted`,
    /// not charged) and requeues them: the gang restarts together. Other stages: nothing.
    fn abort_gang(&mut self, job_id: &str, stage: usize, cause: TaskId, why: &str, now: i64) -> Dirty {
        let mut dirty = Dirty::default();
        let gang = self.state.jobs.get(job_id).and_then(|j| j.stages.get(stage)).is_some_and(|s| s.gang);
        if !gang {
            return dirty;
        }
        self.rendezvous.remove(&cause);
        let peers: Vec<TaskId> = self
            .job_index
            .get(job_id)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&id| id != cause)
            .filter(|id| self.state.tasks[id].stage == stage && self.state.tasks[id].state == TaskState::Leased)
            .collect();
        for id in peers {
            self.take_back(id, "aborted", why, TaskState::Queued, now);
            dirty.tasks.push(id);
        }
        dirty
    }

    /// Ends a task's live attempt (if any) with `outcome` and moves the task to `to`: queued
    /// again (its worker forgotten) or cancelled. Its rendezvous entry goes too.
    fn take_back(&mut self, id: TaskId, outcome: &str, why: &str, to: TaskState, now: i64) {
        self.rendezvous.remove(&id);
        let t = self.state.tasks.get_mut(&id).expect("task exists");
        if let Some(l) = t.lease.take() {
            Self::end_attempt(t, l.attempt, outcome, why, now);
        }
        if to == TaskState::Queued {
            t.worker_id.clear();
        }
        self.set_task_state(id, to);
    }

    /// A gang rank announces itself (idempotent; ranks poll it). Fenced by the lease: a rank
    /// whose attempt was aborted gets [`SchedulerError::LeaseLost`] and must stop.
    #[allow(clippy::too_many_arguments)]
    pub fn join_rendezvous(
        &mut self,
        worker_id: &str,
        task_id: TaskId,
        attempt: u32,
        token: &str,
        addr: &str,
        nccl_id: &[u8],
        now: i64,
    ) -> Result<RendezvousView, SchedulerError> {
        self.touch_worker(worker_id, now)?;
        if !self.holds_lease(task_id, worker_id, attempt, token) {
            return Err(SchedulerError::LeaseLost(task_id, attempt));
        }
        let t = &self.state.tasks[&task_id];
        let (job_id, stage, rank) = (t.job_id.clone(), t.stage, t.index);
        if !self.state.jobs.get(&job_id).and_then(|j| j.stages.get(stage)).is_some_and(|s| s.gang) {
            return Err(SchedulerError::NotGang(task_id));
        }
        self.rendezvous.insert(task_id, Member { attempt, addr: addr.to_string(), nccl_id: nccl_id.to_vec() });
        let mut view = RendezvousView { rank, ..Default::default() };
        for id in self.job_index.get(&job_id).into_iter().flatten() {
            let t = &self.state.tasks[id];
            if t.stage != stage {
                continue;
            }
            view.world += 1;
            view.generation += t.attempts as u64;
            let current = self
                .rendezvous
                .get(id)
                .filter(|m| t.state == TaskState::Leased && t.lease.is_some_and(|l| l.attempt == m.attempt));
            if t.state == TaskState::Committed {
                view.finished += 1;
            } else if let Some(m) = current {
                view.joined += 1;
                if t.index == 0 {
                    view.master_addr = m.addr.clone();
                    view.nccl_id = m.nccl_id.clone();
                    let token = attempt_record(t, m.attempt).map_or("", |r| r.token.as_str());
                    view.secret = crate::secret::derive_secret(token, "collective");
                }
            }
        }
        view.ready = view.joined + view.finished == view.world;
        if !view.ready {
            view.master_addr.clear();
            view.nccl_id.clear();
            view.secret.clear();
        }
        Ok(view)
    }

    /// Records that the outputs of `attempt` must be deleted (never the committed attempt's).
    fn discard(&mut self, task_id: TaskId, attempt: u32) -> Dirty {
        let Some(t) = self.state.tasks.get(&task_id) else { return Dirty::default() };
        if t.committed_attempt == Some(attempt) {
            return Dirty::default();
        }
        let d = Discard { job_id: t.job_id.clone(), task_id, attempt };
        if !self.state.discards.insert(d.clone()) {
            return Dirty::default();
        }
        Dirty { discards: vec![d], ..Default::default() }
    }

    /// Discards the maintenance loop owes.
    pub fn pending_discards(&self) -> Vec<Discard> {
        self.state.discards.iter().cloned().collect()
    }

    /// A discard whose outputs are deleted.
    pub fn discard_done(&mut self, d: &Discard) -> Dirty {
        if self.state.discards.remove(d) {
            Dirty { discards: vec![d.clone()], ..Default::default() }
        } else {
            Dirty::default()
        }
    }

    /// Jobs that ended without succeeding at least `settle_ms` ago (so their workers have
    /// stopped) and whose attempt directories are not swept yet.
    pub fn jobs_to_sweep(&self, now: i64, settle_ms: i64) -> Vec<String> {
        self.state
            .jobs
            .values()
            .filter(|j| matches!(j.state, JobState::Failed | JobState::Cancelled) && !j.swept)
            .filter(|j| now - j.finished_ms >= settle_ms)
            .map(|j| j.id.clone())
            .collect()
    }

    pub fn mark_swept(&mut self, job_id: &str) -> Dirty {
        match self.state.jobs.get_mut(job_id) {
            Some(j) if !j.swept => {
                j.swept = true;
                Dirty { jobs: vec![job_id.to_string()], ..Default::default() }
            }
            _ => Dirty::default(),
        }
    }

    fn end_job(&mut self, job_id: &str, state: JobState, error: &str, now: i64) -> Dirty {
        let mut dirty = Dirty::default();
        let Some(job) = self.state.jobs.get_mut(job_id) else { return dirty };
        if job.state.is_terminal() {
            return dirty;
        }
        job.state = state;
        job.error = error.to_string();
        job.finished_ms = now;
        dirty.jobs.push(job_id.to_string());
        let open: Vec<TaskId> = self
            .job_index
            .get(job_id)
            .into_iter()
            .flatten()
            .copied()
            .filter(|id| matches!(self.state.tasks[id].state, TaskState::Queued | TaskState::Leased))
            .collect();
        for id in open {
            self.take_back(id, "cancelled", "job ended", TaskState::Cancelled, now);
            dirty.tasks.push(id);
        }
        dirty
    }

    /// Forgets jobs that ended at least `older_than_ms` before `now` and owe no more work: a
    /// failed or cancelled job once its attempt directories are swept, and only when no discard
    /// of it is pending. Their tasks and index entries go with them. The dirty job ids name jobs
    /// the state no longer holds, which the store reads as "delete the job and its tasks".
    /// Returns the pruned ids, oldest first.
    pub fn prune(&mut self, now: i64, older_than_ms: i64) -> (Vec<String>, Dirty) {
        let owes_discards: BTreeSet<&str> = self.state.discards.iter().map(|d| d.job_id.as_str()).collect();
        let mut ended: Vec<(i64, String)> = self
            .state
            .jobs
            .values()
            .filter(|j| j.state.is_terminal() && now - j.finished_ms >= older_than_ms)
            .filter(|j| j.state == JobState::Succeeded || j.swept)
            .filter(|j| !owes_discards.contains(j.id.as_str()))
            .map(|j| (j.finished_ms, j.id.clone()))
            .collect();
        ended.sort();
        let mut dirty = Dirty::default();
        let mut pruned = Vec::with_capacity(ended.len());
        for (_, id) in ended {
            self.state.jobs.remove(&id);
            for task in self.job_index.remove(&id).unwrap_or_default() {
                self.state.tasks.remove(&task);
                self.leased.remove(&task);
                self.unpromoted.remove(&task);
                self.rendezvous.remove(&task);
            }
            self.queued.retain(|&(_, _, _, t)| self.state.tasks.contains_key(&t));
            self.stage_counts.retain(|(job, _), _| *job != id);
            dirty.jobs.push(id.clone());
            pruned.push(id);
        }
        (pruned, dirty)
    }

    fn fail_job(&mut self, job_id: &str, error: &str, now: i64) -> Dirty {
        self.end_job(job_id, JobState::Failed, error, now)
    }

    pub fn cancel_job(&mut self, job_id: &str, now: i64) -> Result<Dirty, SchedulerError> {
        if !self.state.jobs.contains_key(job_id) {
            return Err(SchedulerError::UnknownJob(job_id.to_string()));
        }
        Ok(self.end_job(job_id, JobState::Cancelled, "cancelled by request", now))
    }

    /// Committed tasks whose outputs are not promoted yet, for the shell's committer.
    pub fn pending_promotions(&self) -> Vec<TaskId> {
        self.unpromoted
            .iter()
            .copied()
            .filter(|id| self.state.jobs.get(&self.state.tasks[id].job_id).is_some_and(|j| !j.state.is_terminal()))
            .collect()
    }

    pub fn mark_promoted(&mut self, task_id: TaskId) -> Dirty {
        match self.state.tasks.get_mut(&task_id) {
            Some(t) if t.state == TaskState::Committed && !t.promoted => {
                t.promoted = true;
                self.unpromoted.remove(&task_id);
                if let Some(c) = self.stage_counts.get_mut(&(t.job_id.clone(), t.stage)) {
                    c.promoted += 1;
                }
                Dirty { tasks: vec![task_id], ..Default::default() }
            }
            _ => Dirty::default(),
        }
    }

    /// Jobs whose tasks are all committed and promoted: ready for the kind's finalize step.
    pub fn jobs_to_finalize(&self) -> Vec<String> {
        self.state
            .jobs
            .values()
            .filter(|j| j.state == JobState::Finalizing)
            .filter(|j| self.job_index.get(&j.id).into_iter().flatten().all(|id| self.state.tasks[id].promoted))
            .map(|j| j.id.clone())
            .collect()
    }

    /// Ends a finalizing job after the kind's finalize step.
    pub fn finish_job(&mut self, job_id: &str, outcome: Result<(), String>, now: i64) -> Dirty {
        match outcome {
            Ok(()) => self.end_job(job_id, JobState::Succeeded, "", now),
            Err(e) => self.end_job(job_id, JobState::Failed, &e, now),
        }
    }

    /// After a restart: every live lease is re-based to a full TTL from `now` (the new
    /// process's clock), so workers that kept running while the coordinator was down can
    /// heartbeat before their leases expire, and a deadline persisted under a clock that has
    /// since been set back does not keep a dead lease alive.
    pub fn grant_grace(&mut self, now: i64) {
        let ttl = self.config.lease_ttl_ms;
        for id in self.leased.clone() {
            if let Some(l) = self.state.tasks.get_mut(&id).and_then(|t| t.lease.as_mut()) {
                l.expires_ms = now + ttl;
            }
        }
    }

    /// Tasks of a job in (stage, index) order.
    pub fn job_tasks(&self, job_id: &str) -> Vec<&Task> {
        let mut v: Vec<&Task> =
            self.job_index.get(job_id).into_iter().flatten().map(|id| &self.state.tasks[id]).collect();
        v.sort_by_key(|t| (t.stage, t.index));
        v
    }

    /// Tasks a worker holds a live lease on.
    pub fn leased_by(&self, worker_id: &str) -> Vec<TaskId> {
        self.leased.iter().copied().filter(|id| self.state.tasks[id].worker_id == worker_id).collect()
    }

    /// A job's stage's counters (zero for a stage without tasks).
    pub fn stage_tally(&self, job_id: &str, stage: usize) -> Tally {
        self.stage_counts.get(&(job_id.to_string(), stage)).copied().unwrap_or_default()
    }

    /// A job's tasks under a live lease (at most the workers' slots, however big the job).
    pub fn job_leased<'a>(&'a self, job_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.leased.iter().map(|id| &self.state.tasks[id]).filter(move |t| t.job_id == job_id)
    }
}
