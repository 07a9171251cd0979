//! The data worker: registers with a coordinator (any [`CoordinatorApi`] transport), leases
//! shard tasks up to its slot count, runs them, heartbeats their progress, and reports each
//! attempt's outcome; with a [`TrainLaunch`] it also runs training ranks (`rank.rs`) and
//! benchmark shards (`eval_shard.rs`) as child processes. Transient coordinator errors (down, restarting) are retried with backoff,
//! so a worker rides through a coordinator restart by itself.

pub mod eval_shard;
pub mod rank;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lehr_pipeline::dedup::{
    run_buckets, run_clusters, run_signatures, BUCKETS_TASK_KIND, CLUSTERS_TASK_KIND, SIGNATURES_TASK_KIND,
};
use lehr_pipeline::task::{run_shard_task, RunOptions, TaskProgress, SHARD_TASK_KIND};
use lehr_proto::pb::{self, report_task_request::Outcome};
use lehr_proto::{ApiError, CoordinatorApi, ErrorCode};
use lehr_schedules::job::TRAIN_RANK_TASK_KIND;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Task kind of the coordinator's diagnostic `noop` jobs.
pub use lehr_schedules::kinds::NOOP_TASK_KIND;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shown in `lehr status` (defaults to host:pid).
    pub name: String,
    /// Tasks run at once.
    pub slots: u32,
    pub run: RunOptions,
    /// Task kinds to lease; empty: every kind but training ranks.
    pub kinds: Vec<String>,
    /// How to launch training ranks (workers started with `--train`).
    pub train: Option<TrainLaunch>,
    /// The largest result a report may carry ([`MAX_RESULT_BYTES`]); a larger one fails the
    /// task, not retryably, saying so.
    pub max_result_bytes: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: default_name(),
            slots: 1,
            run: RunOptions::default(),
            kinds: vec![],
            train: None,
            max_result_bytes: MAX_RESULT_BYTES,
        }
    }
}

pub use rank::TrainLaunch;

pub fn default_name() -> String {
    let host =
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("coordinator refused this worker: {0}")]
    Refused(ApiError),
}

struct Running {
    attempt: u32,
    token: String,
    progress: Arc<TaskProgress>,
}

/// Running attempts by (task, attempt): after a gang restart this worker may lease a new attempt
/// of a task whose old attempt is still being stopped.
type RunningMap = Arc<Mutex<HashMap<(u64, u32), Running>>>;

/// The largest result a report carries: the message limit less room for the rest of the report.
pub const MAX_RESULT_BYTES: usize = lehr_proto::MAX_MESSAGE_BYTES - (64 << 10);

/// `call`, failing `Unavailable` when no answer comes within `limit`: across a partition a call
/// on an open connection hears nothing back (no reset, no refusal) until HTTP/2 keepalive gives
/// up on the connection, so a bounded call is retried (through [`retry`]) sooner. Leases and
/// reports are safe to repeat: a lease granted but never heard expires after its TTL, and an
/// attempt reporting twice gets the same disposition.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ApiError::new(ErrorCode::Unavailable, format!("no answer to the {what} call within {limit:?}")))
    })
}

/// How long a lease or report call may go unanswered: a lease TTL, at least 10 s. Over gRPC the
/// client's own deadline (`--call-timeout`, 30 s by default, plus a lease call's wait) may come
/// first when the TTL is longer.
fn call_limit(lease_ttl: Duration) -> Duration {
    lease_ttl.max(Duration::from_secs(10))
}

/// Retries a call while the coordinator is unavailable (with capped backoff) or until shutdown.
async fn retry<T, F, Fut>(shutdown: &CancellationToken, what: &str, mut call: F) -> Option<Result<T, ApiError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match call().await {
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, what, "coordinator unavailable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return Some(other),
        }
    }
}

/// Runs the worker until `shutdown` is cancelled.
pub async fn start(
    config: WorkerConfig,
    api: Arc<dyn CoordinatorApi>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    'register: loop {
        let reg = pb::RegisterWorkerRequest { name: config.name.clone(), slots: config.slots };
        let registered = match retry(&shutdown, "register", || api.register_worker(reg.clone())).await {
            None => return Ok(()),
            Some(Err(e)) => return Err(WorkerError::Refused(e)),
            Some(Ok(r)) => r,
        };
        let worker_id = registered.worker_id.clone();
        let lease_ttl = Duration::from_millis(registered.lease_ttl_ms.max(1));
        tracing::info!(%worker_id, name = %config.name, slots = config.slots, "worker registered");
        let running: RunningMap = Arc::new(Mutex::new(HashMap::new()));
        let session = shutdown.child_token();
        let heartbeat = tokio::spawn(heartbeat_loop(
            api.clone(),
            worker_id.clone(),
            running.clone(),
            Duration::from_millis(registered.heartbeat_ms.max(50)),
            lease_ttl,
            session.clone(),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        // Finished attempts' reports: they ride on the next lease call (one call per task), or
        // go on their own when they finish while a lease call waits for work.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<pb::ReportTaskRequest>();
        let mut pending: Vec<pb::ReportTaskRequest> = Vec::new();
        let mut sending = tokio::task::JoinSet::new();
        let limit = call_limit(lease_ttl);
        let send_alone = |sending: &mut tokio::task::JoinSet<()>, report| {
            let (api, stop) = (api.clone(), session.clone());
            sending.spawn(async move { send_report(&api, report, limit, &stop).await });
        };
        let outcome = loop {
            while tasks.try_join_next().is_some() {}
            while sending.try_join_next().is_some() {}
            let free = config.slots.saturating_sub(tasks.len() as u32);
            if free == 0 {
                tokio::select! {
                    _ = session.cancelled() => break None,
                    _ = tasks.join_next() => continue,
                }
            }
            while let Ok(r) = done_rx.try_recv() {
                pending.push(r);
            }
            let req = pb::LeaseTasksRequest {
                worker_id: worker_id.clone(),
                max_tasks: free,
                // reports to deliver: do not wait for work with them
                wait_ms: if pending.is_empty() { 2_000 } else { 0 },
                kinds: config.kinds.clone(),
                reports: pending.clone(),
            };
            let call = retry(&session, "lease", || {
                let wait = Duration::from_millis(req.wait_ms);
                bounded(wait + limit, "lease", api.lease_tasks(req.clone()))
            });
            tokio::pin!(call);
            let leases = loop {
                tokio::select! {
                    // a call carrying reports is seen through (it is bounded): dropped, its
                    // reports would be sent again after the loop, twice for the coordinator
                    _ = session.cancelled(), if req.reports.is_empty() => break None,
                    r = &mut call => break r,
                    Some(report) = done_rx.recv() => send_alone(&mut sending, report),
                }
            };
            match leases {
                None => break None,
                Some(Err(e)) if e.code == ErrorCode::FailedPrecondition => break Some(e),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "lease failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some(Ok(r)) => {
                    let mut carried = pending.drain(..);
                    for result in &r.reports {
                        if let Some(report) = carried.next() {
                            log_report(&report, result.disposition(), &result.error);
                        }
                    }
                    // A coordinator that answered fewer reports than it was given (one from
                    // before piggybacking ignores them): the rest go on their own.
                    for report in carried {
                        send_alone(&mut sending, report);
                    }
                    for lease in r.leases {
                        tracing::debug!(task_id = lease.task_id, attempt = lease.attempt, "leased");
                        let progress = Arc::new(TaskProgress::default());
                        running.lock().expect("lock").insert(
                            (lease.task_id, lease.attempt),
                            Running {
                                attempt: lease.attempt,
                                token: lease.lease_token.clone(),
                                progress: progress.clone(),
                            },
                        );
                        let span = tracing::info_span!("task", task_id = lease.task_id, attempt = lease.attempt, job_id = %lease.job_id);
                        tasks.spawn(
                            run_lease(
                                api.clone(),
                                worker_id.clone(),
                                lease,
                                progress,
                                Runners {
                                    run: config.run.clone(),
                                    train: config.train.clone(),
                                    max_result_bytes: config.max_result_bytes,
                                },
                                running.clone(),
                                done_tx.clone(),
                            )
                            .instrument(span),
                        );
                    }
                }
            }
        };
        // Stop: cancel what runs, let the runners report, stop heartbeating.
        for r in running.lock().expect("lock").values() {
            r.progress.cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        session.cancel();
        while tasks.join_next().await.is_some() {}
        // What finished and was not delivered: one try each (a lease call may have carried it).
        drop(done_tx);
        while let Some(r) = done_rx.recv().await {
            pending.push(r);
        }
        for report in pending {
            send_report(&api, report, limit, &session).await;
        }
        while sending.join_next().await.is_some() {}
        heartbeat.abort();
        match outcome {
            Some(e) => {
                tracing::warn!(error = %e, "coordinator does not know this worker (state reset?); registering again");
                continue 'register;
            }
            None => return Ok(()),
        }
    }
}

async fn heartbeat_loop(
    api: Arc<dyn CoordinatorApi>,
    worker_id: String,
    running: RunningMap,
    every: Duration,
    lease_ttl: Duration,
    session: CancellationToken,
) {
    // The last heartbeat the coordinator answered: once that is a lease TTL ago, the leases
    // of every attempt then running have expired there, so they stop here too.
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = session.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let progress: Vec<pb::TaskProgress> = running
            .lock()
            .expect("lock")
            .iter()
            .map(|(&(task_id, _), r)| pb::TaskProgress {
                task_id,
                attempt: r.attempt,
                docs: r.progress.docs.load(std::sync::atomic::Ordering::Relaxed),
                bytes: r.progress.bytes.load(std::sync::atomic::Ordering::Relaxed),
                lease_token: r.token.clone(),
                synth_requests: r.progress.synth.requests_done.load(std::sync::atomic::Ordering::Relaxed),
                synth_requests_total: r.progress.synth.requests_total.load(std::sync::atomic::Ordering::Relaxed),
                synth_tokens: r.progress.synth.completion_tokens.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        // Bounded: across a partition a call on an open connection hears nothing back (no
        // reset, no refusal) and would wait past the lease TTL, and the attempts would never
        // learn that their leases are gone.
        let call = api.heartbeat(pb::HeartbeatRequest { worker_id: worker_id.clone(), running: progress });
        let answer = bounded(every, "heartbeat", call).await;
        match answer {
            Ok(r) => {
                last_ok = tokio::time::Instant::now();
                let map = running.lock().expect("lock");
                for c in r.cancel {
                    if let Some(run) = map.get(&(c.task_id, c.attempt)) {
                        tracing::info!(task_id = c.task_id, attempt = c.attempt, "coordinator cancelled the attempt");
                        run.progress.cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            Err(e) if e.code == ErrorCode::FailedPrecondition => {
                tracing::warn!(error = %e, "heartbeat refused");
                session.cancel();
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat failed");
                if last_ok.elapsed() > lease_ttl {
                    for ((task_id, attempt), run) in running.lock().expect("lock").iter() {
                        if !run.progress.cancelled.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::warn!(task_id, attempt, silent_s = last_ok.elapsed().as_secs(), "no heartbeat got through for longer than the lease TTL: the lease is lost, stopping the attempt");
                        }
                    }
                }
            }
        }
    }
}

/// What runs a leased task: pipeline tasks in-process, training ranks as child processes.
struct Runners {
    run: RunOptions,
    train: Option<TrainLaunch>,
    max_result_bytes: usize,
}

async fn run_lease(
    api: Arc<dyn CoordinatorApi>,
    worker_id: String,
    lease: pb::TaskLease,
    progress: Arc<TaskProgress>,
    runners: Runners,
    running: RunningMap,
    done: tokio::sync::mpsc::UnboundedSender<pb::ReportTaskRequest>,
) {
    let outcome = if lease.kind == TRAIN_RANK_TASK_KIND {
        match &runners.train {
            Some(launch) => rank::run_rank(&api, &worker_id, &lease, progress.clone(), launch).await,
            None => {
                Err(("this worker does not run training ranks (start one with `lehr worker --train`)".into(), true))
            }
        }
    } else if lease.kind == lehr_schedules::kinds::EVAL_SHARD_TASK_KIND {
        match &runners.train {
            Some(launch) => eval_shard::run_eval_shard(&lease, progress.clone(), launch).await,
            None => Err(("this worker does not score benchmarks (start one with `lehr worker --train`)".into(), true)),
        }
    } else {
        execute(&lease, progress.clone(), runners.run.clone()).await
    };
    running.lock().expect("lock").remove(&(lease.task_id, lease.attempt));
    tracing::debug!(
        ok = outcome.is_ok(),
        docs = progress.docs.load(std::sync::atomic::Ordering::Relaxed),
        "attempt ended"
    );
    if progress.cancelled.load(std::sync::atomic::Ordering::Relaxed) && outcome.is_err() {
        tracing::info!("attempt stopped");
        discard_attempt(&lease).await;
        return; // the coordinator already moved on; its lease expires or was revoked
    }
    let outcome = match outcome {
        Ok(result) if result.len() > runners.max_result_bytes => {
            let error = format!(
                "the task's result is {} bytes, over the {} bytes a report may carry; it cannot be committed \
                 (a task this large should be split: lower input.split-size)",
                result.len(),
                runners.max_result_bytes
            );
            tracing::error!(%error, "result too large");
            Outcome::Failure(pb::TaskFailure { error, retryable: false })
        }
        Ok(result) => Outcome::Success(result),
        Err((error, retryable)) => {
            tracing::warn!(%error, retryable, "task attempt failed");
            Outcome::Failure(pb::TaskFailure { error, retryable })
        }
    };
    let req = pb::ReportTaskRequest {
        worker_id,
        task_id: lease.task_id,
        attempt: lease.attempt,
        outcome: Some(outcome),
        lease_token: lease.lease_token.clone(),
    };
    // the worker's loop delivers it (closed only once every runner has ended)
    let _ = done.send(req);
}

/// Sends a report on its own, retrying through coordinator restarts until `stop` (a worker
/// shutting down still tries once).
async fn send_report(
    api: &Arc<dyn CoordinatorApi>,
    req: pb::ReportTaskRequest,
    limit: Duration,
    stop: &CancellationToken,
) {
    match retry(stop, "report", || bounded(limit, "report", api.report_task(req.clone()))).await {
        Some(Ok(r)) => log_report(&req, r.disposition(), ""),
        Some(Err(e)) => log_report(&req, pb::Disposition::Unspecified, &e.to_string()),
        None => tracing::warn!(
            task_id = req.task_id,
            attempt = req.attempt,
            "shut down before the report got through; the lease will expire"
        ),
    }
}

/// Logs what became of a report (sent alone or on a lease call).
fn log_report(req: &pb::ReportTaskRequest, disposition: pb::Disposition, error: &str) {
    let (task_id, attempt) = (req.task_id, req.attempt);
    if error.is_empty() {
        tracing::debug!(task_id, attempt, disposition = lehr_proto::Named::name(disposition), "reported");
    } else {
        tracing::warn!(task_id, attempt, %error, "report refused");
    }
}

/// Best effort: removes what a stopped attempt wrote (the job's finalize sweeps the rest).
async fn discard_attempt(lease: &pb::TaskLease) {
    let Some((output, prefix)) =
        lehr_pipeline::task::attempt_location(&lease.kind, &lease.payload, &lease.job_id, lease.attempt)
    else {
        return;
    };
    if let Ok(out) = lehr_pipeline::store::resolve(&output) {
        if let Err(e) = out.delete_prefix(&prefix).await {
            tracing::debug!(error = %e, "could not remove a stopped attempt's files");
        }
    }
}

/// A lease's payload as a task of type `T` (a payload that does not parse never will).
fn payload<T: serde::de::DeserializeOwned>(lease: &pb::TaskLease) -> Result<T, (String, bool)> {
    serde_json::from_str(&lease.payload).map_err(|e| (format!("malformed task payload: {e}"), false))
}

/// A task runner's outcome as the result JSON, or the error with whether a retry can help.
fn reported<R: serde::Serialize>(r: lehr_pipeline::PipelineResult<R>) -> Result<String, (String, bool)> {
    let result = r.map_err(|e| (e.to_string(), e.is_retryable()))?;
    Ok(serde_json::to_string(&result).expect("result serializes"))
}

/// Runs a leased task; errors carry whether a retry can help.
async fn execute(
    lease: &pb::TaskLease,
    progress: Arc<TaskProgress>,
    run: RunOptions,
) -> Result<String, (String, bool)> {
    let (job, attempt) = (lease.job_id.as_str(), lease.attempt);
    match lease.kind.as_str() {
        SHARD_TASK_KIND => reported(run_shard_task(payload(lease)?, job, attempt, progress, run).await),
        SIGNATURES_TASK_KIND => reported(run_signatures(payload(lease)?, job, attempt, progress, run).await),
        BUCKETS_TASK_KIND => reported(run_buckets(payload(lease)?, job, attempt).await),
        CLUSTERS_TASK_KIND => reported(run_clusters(payload(lease)?, job, attempt).await),
        NOOP_TASK_KIND => Ok("{}".into()),
        other => Err((
            format!(
                "this worker cannot run tasks of kind `{other}` (it runs: {SHARD_TASK_KIND}, {SIGNATURES_TASK_KIND}, \
                 {BUCKETS_TASK_KIND}, {CLUSTERS_TASK_KIND}, {NOOP_TASK_KIND})"
            ),
            false,
        )),
    }
}
