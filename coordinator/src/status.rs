//! Status views. Under the scheduler's lock a call copies only what it shows (a few counters per
//! task of the jobs on its page, no spec, no sort); the views are built after the lock is
//! released, so `lehr status` on a big coordinator never holds up leases and reports.

use lehr_proto::pb;
use lehr_proto::pb::*;

use crate::scheduler::{Disposition as Decided, Job, JobState, Live, Scheduler, Task, TaskState, TaskStats};

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
    /// Per stage: name, names of the stages it depends on, whether those are all committed.
    stages: Vec<(String, Vec<String>, bool)>,
    tasks: Vec<TaskRow>,
}

#[derive(Clone, Copy)]
struct TaskRow {
    stage: usize,
    state: TaskState,
    stats: TaskStats,
    progress: Live,
}

impl JobSnapshot {
    pub fn take(s: &Scheduler, job: &Job) -> Self {
        let stages = job
            .stages
            .iter()
            .map(|st| {
                let deps = st.depends_on.iter().filter_map(|&d| job.stages.get(d).map(|x| x.name.clone())).collect();
                let ready = st.depends_on.iter().all(|&d| {
                    let (total, committed) = s.stage_progress(&job.id, d);
                    total == committed
                });
                (st.name.clone(), deps, ready)
            })
            .collect();
        let tasks = s
            .job_task_ids(&job.id)
            .iter()
            .map(|id| {
                let t = &s.state.tasks[id];
                TaskRow { stage: t.stage, state: t.state, stats: t.stats, progress: t.progress }
            })
            .collect();
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
            tasks,
        }
    }

    pub fn status(self) -> JobStatus {
        let mut stages: Vec<StageStatus> = self
            .stages
            .iter()
            .map(|(name, deps, _)| StageStatus { name: name.clone(), depends_on: deps.clone(), ..Default::default() })
            .collect();
        let (mut running_docs, mut running_bytes) = (0, 0);
        let mut synth = SynthProgress::default();
        for t in &self.tasks {
            let Some(st) = stages.get_mut(t.stage) else { continue };
            st.tasks_total += 1;
            match t.state {
                TaskState::Committed => {
                    st.tasks_committed += 1;
                    st.docs_in += t.stats.docs_in;
                    st.docs_out += t.stats.docs_out;
                    st.bytes_in += t.stats.bytes_in;
                    st.bad_records += t.stats.bad_records;
                    synth.requests_done += t.stats.synth_requests;
                    synth.requests_total += t.stats.synth_requests;
                    synth.completion_tokens += t.stats.synth_tokens;
                }
                TaskState::Leased => {
                    st.tasks_running += 1;
                    running_docs += t.progress.docs;
                    running_bytes += t.progress.bytes;
                    synth.requests_done += t.progress.synth_requests;
                    synth.requests_total += t.progress.synth_requests_total;
                    synth.completion_tokens += t.progress.synth_tokens;
                }
                TaskState::Failed => st.tasks_failed += 1,
                _ => {}
            }
        }
        for (st, (_, _, ready)) in stages.iter_mut().zip(&self.stages) {
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
