//! The coordinator's async shell: [`Coordinator`] implements [`CoordinatorApi`] in-process by
//! running scheduler decisions under a mutex and persisting their dirty rows before answering;
//! [`Coordinator::maintain`] expires leases, promotes committed outputs and finalizes jobs.
//! `grpc.rs` exposes the same object over tonic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lehr_proto::pb::*;
use lehr_proto::{ApiError, ApiResult, CoordinatorApi, ErrorCode};
use tokio::sync::Notify;

use crate::jobs::{JobError, JobKind};
use crate::scheduler::{
    Beat, Dirty, Disposition, Grant, Job, Live, NewJob, Scheduler, SchedulerConfig, SchedulerError, State, Task,
};
use crate::status::{page, task_status, wire_disposition, JobSnapshot};
use crate::store::{Batch, StateStore, StoreError};

/// Wall-clock milliseconds since the epoch (for people: ages in `lehr status`).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The coordinator's clock: the wall clock read once at start, then advanced by a monotonic
/// [`Instant`]. Lease deadlines are compared against it, so an NTP step or a hand-set clock
/// neither expires every lease at once nor keeps dead ones alive. Persisted times stay close to
/// wall-clock time; lease deadlines are re-based when the state is loaded
/// ([`Scheduler::grant_grace`]).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: i64,
    start: Instant,
}

impl Clock {
    pub fn starting_now() -> Self {
        Clock::starting_at(now_ms())
    }
    pub fn starting_at(base_ms: i64) -> Self {
        Clock { base_ms, start: Instant::now() }
    }
    pub fn now_ms(&self) -> i64 {
        self.base_ms + self.start.elapsed().as_millis() as i64
    }
}

/// Largest spec accepted by `SubmitJob`.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

struct Inner {
    sched: Scheduler,
    /// Rows changed by decisions not yet handed to the writer.
    pending: Dirty,
    /// Decisions applied so far (their sequence numbers are 1..=applied).
    applied: u64,
}

/// Group commit: decisions are applied in memory one at a time under the lock, and every
/// decision's answer waits until a transaction holding its rows is durable. One writer at a time
/// takes all the rows that are waiting and writes them in one transaction on a blocking thread,
/// so many concurrent decisions share one commit. Durability per answer is unchanged.
struct Commit {
    store: Mutex<Box<dyn StateStore>>,
    writing: std::sync::atomic::AtomicBool,
    /// The highest decision whose rows are durable.
    durable: tokio::sync::watch::Sender<u64>,
}

/// Retry counts of the maintenance loop (the work itself is in the durable state).
#[derive(Default)]
struct Pending {
    finalize_failures: HashMap<String, u32>,
}

pub struct Coordinator {
    inner: Arc<Mutex<Inner>>,
    commit: Arc<Commit>,
    pending: Mutex<Pending>,
    kinds: Vec<Box<dyn JobKind>>,
    /// Woken when tasks become runnable (long-polling leases wait on it).
    work_ready: Notify,
    /// Woken when there is post-commit work.
    maintenance: Notify,
    heartbeat_ms: u64,
    clock: Clock,
    /// Whether the store can be lost (PostgreSQL) and so is checked once a maintenance tick.
    store_can_be_lost: bool,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

impl Coordinator {
    /// Loads the state from the store (on this thread: from an async context, use
    /// [`Coordinator::with_state`] with a state loaded on a blocking thread); live leases get a
    /// grace period of one TTL.
    pub fn new(
        mut store: Box<dyn StateStore>,
        config: SchedulerConfig,
        kinds: Vec<Box<dyn JobKind>>,
    ) -> Result<Self, StoreError> {
        let state = store.load()?;
        Ok(Self::with_state(store, state, config, kinds))
    }

    /// A coordinator over `state`, as `store` holds it.
    pub fn with_state(
        store: Box<dyn StateStore>,
        state: State,
        config: SchedulerConfig,
        kinds: Vec<Box<dyn JobKind>>,
    ) -> Self {
        let mut sched = Scheduler::from_state(state, config);
        let clock = Clock::starting_now();
        sched.grant_grace(clock.now_ms());
        let heartbeat_ms = (config.lease_ttl_ms / 3).max(100) as u64;
        let store_can_be_lost = store.can_be_lost();
        Coordinator {
            inner: Arc::new(Mutex::new(Inner { sched, pending: Dirty::default(), applied: 0 })),
            commit: Arc::new(Commit {
                store: Mutex::new(store),
                writing: std::sync::atomic::AtomicBool::new(false),
                durable: tokio::sync::watch::channel(0).0,
            }),
            pending: Mutex::new(Pending::default()),
            kinds,
            work_ready: Notify::new(),
            maintenance: Notify::new(),
            heartbeat_ms,
            clock,
            store_can_be_lost,
        }
    }

    fn kind(&self, name: &str) -> Option<&dyn JobKind> {
        self.kinds.iter().find(|k| k.name() == name).map(|b| b.as_ref())
    }

    /// Runs `f` on the scheduler under the lock and returns once what it changed (and every
    /// decision before it) is durable. A decision that changed nothing still waits for the ones
    /// before it, since its answer may rest on them.
    async fn apply<T>(&self, f: impl FnOnce(&mut Scheduler) -> (T, Dirty)) -> ApiResult<T> {
        let (value, seq) = {
            let mut guard = self.inner.lock().expect("coordinator lock poisoned");
            let inner = &mut *guard;
            let (value, dirty) = f(&mut inner.sched);
            if !dirty.is_empty() {
                inner.pending.merge(dirty);
                inner.applied += 1;
            }
            (value, inner.applied)
        };
        self.durable_at_least(seq).await;
        Ok(value)
    }

    /// Waits until decision `seq` is durable, writing the waiting rows itself when no one else
    /// is. The write and its announcement run on a blocking thread to the end even if this
    /// future is dropped (a client that goes away), so a writer is never lost.
    async fn durable_at_least(&self, seq: u64) {
        use std::sync::atomic::Ordering;
        let mut durable = self.commit.durable.subscribe();
        loop {
            if *durable.borrow_and_update() >= seq {
                return;
            }
            let job = {
                let mut g = self.inner.lock().expect("coordinator lock poisoned");
                if self.commit.writing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let dirty = std::mem::take(&mut g.pending);
                    Some((Batch::of(&g.sched.state, &dirty), g.applied))
                } else {
                    None
                }
            };
            if let Some((batch, upto)) = job {
                let commit = self.commit.clone();
                let written = tokio::task::spawn_blocking(move || {
                    if let Err(e) = commit.store.lock().expect("store lock poisoned").write(&batch) {
                        // The in-memory state is now ahead of the disk: stop rather than
                        // diverge. A restart reloads the last durable state.
                        tracing::error!(error = %e, "cannot persist coordinator state; exiting");
                        std::process::exit(70);
                    }
                    // Free the writer's place, then announce: a waiter that found the place
                    // taken is woken after it is free again. Writers may announce out of
                    // order, so the durable mark only moves up.
                    commit.writing.store(false, Ordering::Release);
                    commit.durable.send_modify(|d| *d = (*d).max(upto));
                });
                let _ = written.await;
            } else if durable.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stops the process when the store can no longer be written (a PostgreSQL leader whose
    /// session, and with it the leader lock, is gone): a standby may lead by now, and answering
    /// from this state would fork the run. A restart becomes a standby or leads again.
    async fn check_store(&self) {
        let commit = self.commit.clone();
        let checked =
            tokio::task::spawn_blocking(move || commit.store.lock().expect("store lock poisoned").check()).await;
        if let Ok(Err(e)) = checked {
            tracing::error!(error = %e, "lost the state store; exiting");
            std::process::exit(70);
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Scheduler) -> T) -> T {
        f(&self.inner.lock().expect("coordinator lock poisoned").sched)
    }

    /// One round of background work: expire leases, delete losing attempts' outputs, promote
    /// committed outputs, finalize complete jobs. Returns whether it did anything.
    pub async fn maintain(&self) -> bool {
        let now = self.clock.now_ms();
        let expired = self.apply(|s| s.expire(now)).await.unwrap_or_default();
        for e in &expired {
            tracing::warn!(task_id = e.task_id, attempt = e.attempt, worker = %e.worker_id, requeued = e.requeued, "lease expired");
        }
        if !expired.is_empty() {
            self.work_ready.notify_waiters();
        }
        let mut did = !expired.is_empty();

        // Discards are durable: one that fails stays for the next round (or a restart).
        for d in self.read(|s| s.pending_discards()) {
            let found = self.read(|s| s.state.jobs.get(&d.job_id).cloned().zip(s.state.tasks.get(&d.task_id).cloned()));
            let done = match (&found, found.as_ref().and_then(|(job, _)| self.kind(&job.kind))) {
                (Some((job, task)), Some(kind)) => match kind.discard(job, task, d.attempt).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(job_id = %d.job_id, task_id = d.task_id, attempt = d.attempt, error = %e, "cannot delete a discarded attempt's outputs; will retry");
                        false
                    }
                },
                _ => true,
            };
            if done {
                let _ = self.apply(|s| ((), s.discard_done(&d))).await;
                did = true;
            }
        }

        // Jobs that failed or were cancelled leave attempt directories: sweep them once their
        // workers have had a lease TTL to notice and stop.
        let ttl = self.read(|s| s.config.lease_ttl_ms);
        for job_id in self.read(|s| s.jobs_to_sweep(now, ttl)) {
            let Some(job) = self.read(|s| s.state.jobs.get(&job_id).cloned()) else { continue };
            let Some(kind) = self.kind(&job.kind) else { continue };
            match kind.sweep(&job).await {
                Ok(()) => {
                    let _ = self.apply(|s| ((), s.mark_swept(&job_id))).await;
                    did = true;
                }
                Err(e) => tracing::warn!(%job_id, error = %e, "cannot sweep an ended job's attempts; will retry"),
            }
        }

        let promotions: Vec<(Job, Task)> = self.read(|s| {
            s.pending_promotions()
                .into_iter()
                .map(|id| {
                    let t = s.state.tasks[&id].clone();
                    (s.state.jobs[&t.job_id].clone(), t)
                })
                .collect()
        });
        for (job, task) in promotions {
            let Some(kind) = self.kind(&job.kind) else { continue };
            match kind.promote(&job, &task).await {
                Ok(()) => {
                    let _ = self.apply(|s| ((), s.mark_promoted(task.id))).await;
                    // A promotion can complete a stage that another depends on.
                    self.work_ready.notify_waiters();
                    did = true;
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id, task_id = task.id, error = %e, "promotion failed; will retry")
                }
            }
        }

        let finalize: Vec<(Job, Vec<Task>)> = self.read(|s| {
            s.jobs_to_finalize()
                .into_iter()
                .map(|id| {
                    let tasks = s.job_tasks(&id).into_iter().cloned().collect();
                    (s.state.jobs[&id].clone(), tasks)
                })
                .collect()
        });
        for (job, tasks) in finalize {
            let Some(kind) = self.kind(&job.kind) else { continue };
            let outcome = match kind.finalize(&job, &tasks).await {
                Ok(()) => Some(Ok(())),
                Err(JobError::Invalid(e)) => Some(Err(e)),
                Err(JobError::Storage(e)) => {
                    let mut p = self.pending.lock().expect("lock");
                    let n = p.finalize_failures.entry(job.id.clone()).or_default();
                    *n += 1;
                    tracing::warn!(job_id = %job.id, error = %e, tries = *n, "finalize failed");
                    (*n >= 5).then(|| Err(format!("finalize failed 5 times: {e}")))
                }
            };
            if let Some(outcome) = outcome {
                match &outcome {
                    Ok(()) => tracing::info!(job_id = %job.id, "job succeeded"),
                    Err(e) => tracing::error!(job_id = %job.id, error = %e, "job failed"),
                }
                let now = self.clock.now_ms();
                let _ = self.apply(|s| ((), s.finish_job(&job.id, outcome, now))).await;
                did = true;
            }
        }
        did
    }

    /// Runs [`maintain`](Self::maintain) until `shutdown`, at least every `tick`, and checks a
    /// store that can be lost once a tick (not on every report's wake-up: the check takes the
    /// store's lock, which the group commits need).
    pub async fn run_maintenance(self: Arc<Self>, tick: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let mut next_check = tokio::time::Instant::now();
        loop {
            while self.maintain().await {}
            if self.store_can_be_lost && tokio::time::Instant::now() >= next_check {
                self.check_store().await;
                next_check = tokio::time::Instant::now() + tick;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
                _ = self.maintenance.notified() => {}
            }
        }
    }
}

#[async_trait]
impl CoordinatorApi for Coordinator {
    async fn submit_job(&self, req: SubmitJobRequest) -> ApiResult<SubmitJobResponse> {
        if req.spec.len() > MAX_SPEC_BYTES {
            return Err(ApiError::invalid(format!("spec is {} bytes; the limit is {MAX_SPEC_BYTES}", req.spec.len())));
        }
        let known: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        let kind = self.kind(&req.kind).ok_or_else(|| {
            ApiError::invalid(format!("unknown job kind `{}`; this coordinator runs: {}", req.kind, known.join(", ")))
        })?;
        let job_error = |e| match e {
            JobError::Invalid(m) => ApiError::invalid(m),
            JobError::Storage(m) => ApiError::new(ErrorCode::Unavailable, m),
        };
        // Claim the output and take the id before planning (which may remove a previous run's
        // files): a second job on an overlapping output is refused with the holder's id.
        let output = kind.output(&req.spec, &req.base_dir).map_err(job_error)?;
        let suffix = crate::secret::new_secret()[..4].to_string();
        let job_id = self
            .apply(|s| match s.reserve_job(&output, &suffix) {
                Ok(id) => (Ok(id), Dirty::default()),
                Err(e) => (Err(ApiError::invalid(e.to_string())), Dirty::default()),
            })
            .await??;
        let planned = match kind.plan(&job_id, &req.name, &req.spec, &req.base_dir).await {
            Ok(p) => p,
            Err(e) => {
                self.apply(|s| {
                    s.release(&job_id);
                    ((), Dirty::default())
                })
                .await?;
                return Err(job_error(e));
            }
        };
        let n = planned.tasks.len() as u32;
        let job = NewJob {
            name: planned.name,
            kind: req.kind.clone(),
            spec: req.spec,
            base_dir: req.base_dir,
            output: planned.output,
            stages: planned.stages,
            tasks: planned.tasks,
        };
        let now = self.clock.now_ms();
        let id = job_id.clone();
        self.apply(move |s| match s.submit(id, job, now) {
            Ok(d) => (Ok(()), d),
            Err(e) => (Err(ApiError::invalid(e.to_string())), Dirty::default()),
        })
        .await??;
        tracing::info!(%job_id, kind = %req.kind, tasks = n, "job submitted");
        self.work_ready.notify_waiters();
        Ok(SubmitJobResponse { job_id, tasks: n })
    }

    async fn get_job(&self, req: GetJobRequest) -> ApiResult<GetJobResponse> {
        let (snapshot, tasks, tasks_total) = self.read(|s| {
            let job =
                s.state.jobs.get(&req.job_id).ok_or_else(|| ApiError::not_found(format!("no job `{}`", req.job_id)))?;
            let (mut tasks, mut total) = (vec![], 0);
            if req.include_tasks {
                let all = s.job_tasks(&job.id);
                total = all.len() as u32;
                tasks = all[page(all.len(), req.task_offset, req.task_limit)].iter().map(|t| task_status(t)).collect();
            }
            Ok::<_, ApiError>((JobSnapshot::take(s, job), tasks, total))
        })?;
        Ok(GetJobResponse { job: Some(snapshot.status()), tasks, tasks_total })
    }

    async fn list_jobs(&self, req: ListJobsRequest) -> ApiResult<ListJobsResponse> {
        let (snapshots, total) = self.read(|s| {
            let mut jobs: Vec<&Job> = s.state.jobs.values().collect();
            jobs.sort_by_key(|j| std::cmp::Reverse(j.seq));
            let range = page(jobs.len(), req.offset, req.limit);
            (jobs[range].iter().map(|j| JobSnapshot::take(s, j)).collect::<Vec<_>>(), jobs.len() as u32)
        });
        Ok(ListJobsResponse { jobs: snapshots.into_iter().map(JobSnapshot::status).collect(), total })
    }

    async fn prune_jobs(&self, req: PruneJobsRequest) -> ApiResult<PruneJobsResponse> {
        if req.older_than_ms < 0 {
            return Err(ApiError::invalid("older_than_ms must not be negative"));
        }
        let now = self.clock.now_ms();
        let pruned = self.apply(|s| s.prune(now, req.older_than_ms)).await?;
        if !pruned.is_empty() {
            tracing::info!(jobs = pruned.len(), older_than_ms = req.older_than_ms, "pruned ended jobs");
        }
        Ok(PruneJobsResponse { pruned })
    }

    async fn cancel_job(&self, req: CancelJobRequest) -> ApiResult<CancelJobResponse> {
        let now = self.clock.now_ms();
        self.apply(|s| match s.cancel_job(&req.job_id, now) {
            Ok(d) => (Ok(()), d),
            Err(e) => (Err(ApiError::not_found(e.to_string())), Dirty::default()),
        })
        .await??;
        self.get_job(GetJobRequest { job_id: req.job_id, ..Default::default() })
            .await
            .map(|r| CancelJobResponse { job: r.job })
    }

    async fn list_workers(&self, _: ListWorkersRequest) -> ApiResult<ListWorkersResponse> {
        let now = self.clock.now_ms();
        self.read(|s| {
            let workers = s
                .state
                .workers
                .values()
                .map(|w| WorkerStatus {
                    worker_id: w.id.clone(),
                    name: w.name.clone(),
                    last_seen_ms: w.last_seen_ms,
                    running_tasks: s.leased_by(&w.id),
                    alive: now - w.last_seen_ms <= s.config.lease_ttl_ms,
                })
                .collect();
            Ok(ListWorkersResponse { workers })
        })
    }

    async fn register_worker(&self, req: RegisterWorkerRequest) -> ApiResult<RegisterWorkerResponse> {
        let now = self.clock.now_ms();
        let id = self.apply(|s| s.register_worker(&req.name, req.slots, now)).await?;
        tracing::info!(worker_id = %id, name = %req.name, slots = req.slots, "worker registered");
        let ttl = self.read(|s| s.config.lease_ttl_ms) as u64;
        Ok(RegisterWorkerResponse { worker_id: id, lease_ttl_ms: ttl, heartbeat_ms: self.heartbeat_ms })
    }

    async fn lease_tasks(&self, mut req: LeaseTasksRequest) -> ApiResult<LeaseTasksResponse> {
        // Piggybacked reports first, concurrently, so they share a group commit; then the lease
        // (whose slots they may have freed).
        let reports = std::mem::take(&mut req.reports);
        let reports = futures::future::join_all(reports.into_iter().map(|r| async {
            if r.worker_id != req.worker_id {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!("a report of worker {} rode on a lease call of worker {}", r.worker_id, req.worker_id),
                ));
            }
            self.report_task(r).await
        }))
        .await
        .into_iter()
        .map(|r| match r {
            Ok(r) => ReportTaskResult { disposition: r.disposition, error: String::new() },
            Err(e) => {
                ReportTaskResult { disposition: lehr_proto::pb::Disposition::Unspecified as i32, error: e.to_string() }
            }
        })
        .collect::<Vec<_>>();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms.min(30_000));
        loop {
            // Register interest before looking, so a submit between the look and the wait wakes us.
            let notified = self.work_ready.notified();
            let now = self.clock.now_ms();
            let grants: Vec<Grant> = self
                .apply(|s| match s.lease_kinds(&req.worker_id, req.max_tasks, &req.kinds, now) {
                    Ok((g, d)) => (Ok(g), d),
                    Err(e) => (Err(ApiError::new(ErrorCode::FailedPrecondition, e.to_string())), Dirty::default()),
                })
                .await??;
            let ttl = self.read(|s| s.config.lease_ttl_ms) as u64;
            if !grants.is_empty() || tokio::time::Instant::now() >= deadline {
                for g in &grants {
                    tracing::debug!(task_id = g.task_id, attempt = g.attempt, worker = %req.worker_id, "task leased");
                }
                let leases = grants
                    .into_iter()
                    .map(|g| TaskLease {
                        task_id: g.task_id,
                        job_id: g.job_id,
                        attempt: g.attempt,
                        kind: g.kind,
                        payload: g.payload,
                        lease_ttl_ms: ttl,
                        lease_token: g.token,
                    })
                    .collect();
                return Ok(LeaseTasksResponse { leases, reports });
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn heartbeat(&self, req: HeartbeatRequest) -> ApiResult<HeartbeatResponse> {
        let now = self.clock.now_ms();
        let running: Vec<Beat> = req
            .running
            .into_iter()
            .map(|p| Beat {
                task_id: p.task_id,
                attempt: p.attempt,
                token: p.lease_token,
                progress: Live {
                    docs: p.docs,
                    bytes: p.bytes,
                    synth_requests: p.synth_requests,
                    synth_requests_total: p.synth_requests_total,
                    synth_tokens: p.synth_tokens,
                },
            })
            .collect();
        let cancel = {
            let mut g = self.inner.lock().expect("coordinator lock poisoned");
            g.sched
                .heartbeat(&req.worker_id, &running, now)
                .map_err(|e| ApiError::new(ErrorCode::FailedPrecondition, e.to_string()))?
        };
        Ok(HeartbeatResponse {
            cancel: cancel
                .into_iter()
                .map(|(task_id, attempt)| TaskProgress { task_id, attempt, ..Default::default() })
                .collect(),
        })
    }

    async fn report_task(&self, req: ReportTaskRequest) -> ApiResult<ReportTaskResponse> {
        let now = self.clock.now_ms();
        let (task, job) = self.read(|s| {
            let t = s.state.tasks.get(&req.task_id).cloned();
            let j = t.as_ref().and_then(|t| s.state.jobs.get(&t.job_id).cloned());
            (t, j)
        });
        let (Some(task), Some(job)) = (task, job) else {
            return Ok(ReportTaskResponse { disposition: wire_disposition(Disposition::Stale) as i32 });
        };
        let token = req.lease_token.as_str();
        let disposition = match req.outcome {
            Some(report_task_request::Outcome::Success(result)) => {
                let kind = self.kind(&job.kind).ok_or_else(|| internal(format!("job kind {} vanished", job.kind)))?;
                match kind.stats(&task, &result) {
                    Ok(stats) => {
                        self.apply(|s| {
                            s.report_success(&req.worker_id, req.task_id, req.attempt, token, result, stats, now)
                        })
                        .await?
                    }
                    Err(e) => {
                        let msg = format!("worker {} sent an unusable result: {e}", req.worker_id);
                        self.apply(|s| {
                            s.report_failure(&req.worker_id, req.task_id, req.attempt, token, &msg, true, now)
                        })
                        .await?
                    }
                }
            }
            Some(report_task_request::Outcome::Failure(f)) => {
                tracing::warn!(task_id = req.task_id, attempt = req.attempt, worker = %req.worker_id, error = %f.error, retryable = f.retryable, "task attempt failed");
                self.apply(|s| {
                    s.report_failure(&req.worker_id, req.task_id, req.attempt, token, &f.error, f.retryable, now)
                })
                .await?
            }
            None => return Err(ApiError::invalid("a report needs an outcome (success or failure)")),
        };
        match disposition {
            Disposition::Committed => {
                tracing::debug!(task_id = req.task_id, attempt = req.attempt, "task committed");
                self.work_ready.notify_waiters();
            }
            // the scheduler recorded the attempt's discard (durably)
            Disposition::Duplicate | Disposition::Stale => {}
            Disposition::FailureRecorded { .. } => self.work_ready.notify_waiters(),
            Disposition::Refused => {
                tracing::warn!(task_id = req.task_id, attempt = req.attempt, worker = %req.worker_id, "report refused: wrong lease token or worker");
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "task {} attempt {} was not granted to worker {} with this lease token; the report is ignored",
                        req.task_id, req.attempt, req.worker_id
                    ),
                ));
            }
        }
        self.maintenance.notify_one();
        Ok(ReportTaskResponse { disposition: wire_disposition(disposition) as i32 })
    }

    async fn join_rendezvous(&self, req: JoinRendezvousRequest) -> ApiResult<JoinRendezvousResponse> {
        if req.nccl_id.len() > 1024 {
            return Err(ApiError::invalid(format!("an NCCL id is 128 bytes, not {}", req.nccl_id.len())));
        }
        let now = self.clock.now_ms();
        // Not persisted: the rendezvous lives in memory and the ranks poll it.
        let view = {
            let mut g = self.inner.lock().expect("coordinator lock poisoned");
            g.sched.join_rendezvous(
                &req.worker_id,
                req.task_id,
                req.attempt,
                &req.lease_token,
                &req.addr,
                &req.nccl_id,
                now,
            )
        }
        .map_err(|e| match e {
            SchedulerError::UnknownWorker(_) => ApiError::new(ErrorCode::FailedPrecondition, e.to_string()),
            SchedulerError::LeaseLost(..) => ApiError::not_found(e.to_string()),
            _ => ApiError::invalid(e.to_string()),
        })?;
        Ok(JoinRendezvousResponse {
            ready: view.ready,
            rank: view.rank,
            world: view.world,
            master_addr: view.master_addr,
            nccl_id: view.nccl_id,
            joined: view.joined,
            finished: view.finished,
            generation: view.generation,
            secret: view.secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn the_clock_starts_at_its_base_and_never_goes_back() {
        let c = Clock::starting_at(1_000);
        let mut last = c.now_ms();
        assert!((1_000..1_100).contains(&last));
        for _ in 0..1_000 {
            let t = c.now_ms();
            assert!(t >= last);
            last = t;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(c.now_ms() >= 1_020);
    }
}
