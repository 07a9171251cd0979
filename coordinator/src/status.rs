//! Status views. Under the scheduler's lock a call copies only what it shows: each stage's
//! counters (kept by the scheduler as tasks change state, so a job of 100,000 tasks costs what
//! a job of ten does) and the progress of the job's leased tasks; no spec, no sort, no walk
//! over the tasks. The views are built after the lock is released, so `lehr status` on a big
//! coordinator never holds up leases and reports.

use lehr_proto::pb;
use lehr_proto::pb::*;

use crate::scheduler::{Disposition as Decided, Job, JobState, Live, Scheduler, Tally, Task, TaskState};

/// The wire's name of a job state.
pub fn wire_job_state(s: JobState) -> pb::JobState {
    match s {
        JobState::Running => pb::JobState::Running,
        JobState::Finalizing => pb::JobState::Finalizing,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn wire_task_state(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Queued => pb::TaskState::Queued,
        TaskState::Leased => pb::TaskState::Leased,
        TaskState::Committed => pb::TaskState::Committed,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    }
}

/// The wire's disposition of a report; `Refused` never gets here (it is an error).
pub fn wire_disposition(d: Decided) -> pb::Disposition {
    match d {
        Decided::Committed => pb::Disposition::Committed,
        Decided::Duplicate => pb::Disposition::Duplicate,
        Decided::Stale => pb::Disposition::Stale,
        Decided::FailureRecorded { .. } => pb::Disposition::FailureRecorded,
        Decided::Refused => pb::Disposition::Unspecified,
    }
}

/// What a job's status view needs, copied under the lock.
pub struct JobSnapshot {
    id: String,
    name: String,
    kind: String,
    state: JobState,
    error: String,
    created_ms: i64,
    finished_ms: i64,
    output: String,
    /// Per stage: name, names of the stages it depends on, whether those are all committed,
    /// and its counters.
    stages: Vec<(String, Vec<String>, bool, Tally)>,
    /// What the job's leased tasks' heartbeats say they have done.
    running: Vec<Live>,
}

impl JobSnapshot {
    pub fn take(s: &Scheduler, job: &Job) -> Self {
        let stages = job
            .stages
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let deps = st.depends_on.iter().filter_map(|&d| job.stages.get(d).map(|x| x.name.clone())).collect();
                let ready = st.depends_on.iter().all(|&d| {
                    let c = s.stage_tally(&job.id, d);
                    c.total == c.committed
                });
                (st.name.clone(), deps, ready, s.stage_tally(&job.id, i))
            })
            .collect();
        let running = s.job_leased(&job.id).map(|t| t.progress).collect();
        JobSnapshot {
            id: job.id.clone(),
            name: job.name.clone(),
            kind: job.kind.clone(),
            state: job.state,
            error: job.error.clone(),
            created_ms: job.created_ms,
            finished_ms: job.finished_ms,
            output: job.output.clone(),
            stages,
            running,
        }
    }

    pub fn status(self) -> JobStatus {
        let mut synth = SynthProgress::default();
        let mut stages: Vec<StageStatus> = self
            .stages
            .iter()
            .map(|(name, deps, _, c)| {
                synth.requests_done += c.stats.synth_requests;
                synth.requests_total += c.stats.synth_requests;
                synth.completion_tokens += c.stats.synth_tokens;
                StageStatus {
                    name: name.clone(),
                    depends_on: deps.clone(),
                    tasks_total: c.total,
                    tasks_committed: c.committed,
                    tasks_running: c.leased,
                    tasks_failed: c.failed,
                    docs_in: c.stats.docs_in,
                    docs_out: c.stats.docs_out,
                    bytes_in: c.stats.bytes_in,
                    bad_records: c.stats.bad_records,
                    ..Default::default()
                }
            })
            .collect();
        let (mut running_docs, mut running_bytes) = (0, 0);
        for p in &self.running {
            running_docs += p.docs;
            running_bytes += p.bytes;
            synth.requests_done += p.synth_requests;
            synth.requests_total += p.synth_requests_total;
            synth.completion_tokens += p.synth_tokens;
        }
        for (st, (_, _, ready, _)) in stages.iter_mut().zip(&self.stages) {
            let state = if st.tasks_failed > 0 {
                StageState::Failed
            } else if st.tasks_committed == st.tasks_total {
                StageState::Succeeded
            } else if self.state == JobState::Cancelled {
                StageState::Cancelled
            } else if self.state == JobState::Failed {
                StageState::Failed
            } else if *ready {
                StageState::Running
            } else {
                StageState::Waiting
            };
            st.state = state as i32;
        }
        JobStatus {
            job_id: self.id,
            name: self.name,
            kind: self.kind,
            state: wire_job_state(self.state) as i32,
            error: self.error,
            created_ms: self.created_ms,
            finished_ms: self.finished_ms,
            stages,
            output: self.output,
            running_docs,
            running_bytes,
            synth: (synth.requests_total > 0).then_some(synth),
        }
    }
}

/// The page `[offset, offset + limit)` of `len` items (`limit` 0: to the end).
pub fn page(len: usize, offset: u32, limit: u32) -> std::ops::Range<usize> {
    let start = (offset as usize).min(len);
    let end = if limit == 0 { len } else { start.saturating_add(limit as usize).min(len) };
    start..end
}

pub fn task_status(t: &Task) -> TaskStatus {
    TaskStatus {
        task_id: t.id,
        stage: t.stage.to_string(),
        index: t.index,
        state: wire_task_state(t.state) as i32,
        attempts: t.attempts,
        worker_id: t.worker_id.clone(),
        last_error: t.last_error.clone(),
        shard: t.shard.clone(),
        attempt_log: t
            .attempt_log
            .iter()
            .map(|a| AttemptInfo {
                attempt: a.attempt,
                worker_id: a.worker_id.clone(),
                started_ms: a.started_ms,
                ended_ms: a.ended_ms,
                outcome: AttemptOutcome::from_name(&a.outcome) as i32,
                error: a.error.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn pages_stay_in_range() {
        assert_eq!(page(10, 0, 0), 0..10);
        assert_eq!(page(10, 3, 4), 3..7);
        assert_eq!(page(10, 8, 4), 8..10);
        assert_eq!(page(10, 20, 4), 10..10);
        assert_eq!(page(10, 2, u32::MAX), 2..10);
    }
}
