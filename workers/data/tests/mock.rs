//! The worker against a mock coordinator (no network, no coordinator crate): it registers,
//! leases, runs a real shard task over the sample corpus, reports each outcome once, with the
//! right retry hint, registers again when the coordinator forgets it, stops attempts whose
//! lease is lost, and sends again a report that hears nothing back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lehr_pipeline::plan::{InputFile, InputFormat, Shard};
use lehr_pipeline::spec::{ByteSize, InputSpec, InvalidUtf8, OutputFormat, OutputSpec, UnreadableFile};
use lehr_pipeline::task::{ShardResult, ShardTask, SHARD_TASK_KIND};
use lehr_proto::pb::{self, report_task_request::Outcome};
use lehr_proto::{ApiError, ApiResult, CoordinatorApi, ErrorCode};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Mock {
    queue: Mutex<Vec<pb::TaskLease>>,
    reports: Mutex<Vec<pb::ReportTaskRequest>>,
    registrations: Mutex<u32>,
    /// Refuse the first lease call as if the coordinator had lost its state.
    forget_once: Mutex<bool>,
    /// Heartbeats never get through (a partition between worker and coordinator).
    heartbeats_fail: Mutex<bool>,
    /// The first report is never answered (sent into a partition on an open connection).
    first_report_hangs: Mutex<bool>,
    /// Reports that rode on lease calls.
    piggybacked: Mutex<usize>,
    /// Lease calls drop the reports they carry unanswered (a coordinator from before them).
    ignores_piggyback: Mutex<bool>,
}

#[async_trait]
impl CoordinatorApi for Mock {
    async fn submit_job(&self, _: pb::SubmitJobRequest) -> ApiResult<pb::SubmitJobResponse> {
        unimplemented!()
    }
    async fn get_job(&self, _: pb::GetJobRequest) -> ApiResult<pb::GetJobResponse> {
        unimplemented!()
    }
    async fn list_jobs(&self, _: pb::ListJobsRequest) -> ApiResult<pb::ListJobsResponse> {
        unimplemented!()
    }
    async fn prune_jobs(&self, _: pb::PruneJobsRequest) -> ApiResult<pb::PruneJobsResponse> {
        unimplemented!()
    }
    async fn cancel_job(&self, _: pb::CancelJobRequest) -> ApiResult<pb::CancelJobResponse> {
        unimplemented!()
    }
    async fn list_workers(&self, _: pb::ListWorkersRequest) -> ApiResult<pb::ListWorkersResponse> {
        unimplemented!()
    }
    async fn register_worker(&self, _: pb::RegisterWorkerRequest) -> ApiResult<pb::RegisterWorkerResponse> {
        let mut n = self.registrations.lock().unwrap();
        *n += 1;
        Ok(pb::RegisterWorkerResponse { worker_id: format!("w{n}"), lease_ttl_ms: 1000, heartbeat_ms: 100 })
    }
    async fn lease_tasks(&self, req: pb::LeaseTasksRequest) -> ApiResult<pb::LeaseTasksResponse> {
        if std::mem::take(&mut *self.forget_once.lock().unwrap()) {
            return Err(ApiError::new(ErrorCode::FailedPrecondition, "unknown worker"));
        }
        let mut reports = Vec::new();
        let carried = if *self.ignores_piggyback.lock().unwrap() { vec![] } else { req.reports };
        for r in carried {
            let d = self.report_task(r).await?.disposition;
            reports.push(pb::ReportTaskResult { disposition: d, error: String::new() });
        }
        *self.piggybacked.lock().unwrap() += reports.len();
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(pb::LeaseTasksResponse { leases: self.queue.lock().unwrap().drain(..).collect(), reports })
    }
    async fn heartbeat(&self, _: pb::HeartbeatRequest) -> ApiResult<pb::HeartbeatResponse> {
        if *self.heartbeats_fail.lock().unwrap() {
            return Err(ApiError::new(ErrorCode::Unavailable, "connection refused"));
        }
        Ok(pb::HeartbeatResponse { cancel: vec![] })
    }
    async fn report_task(&self, req: pb::ReportTaskRequest) -> ApiResult<pb::ReportTaskResponse> {
        if std::mem::take(&mut *self.first_report_hangs.lock().unwrap()) {
            std::future::pending::<()>().await;
        }
        self.reports.lock().unwrap().push(req);
        Ok(pb::ReportTaskResponse { disposition: pb::Disposition::Committed as i32 })
    }
    async fn join_rendezvous(&self, _: pb::JoinRendezvousRequest) -> ApiResult<pb::JoinRendezvousResponse> {
        unimplemented!()
    }
}

/// Waits (up to 5 s) until the mock holds at least `n` reports.
async fn wait_for_reports(mock: &Mock, n: usize) {
    for _ in 0..200 {
        if mock.reports.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn shard_lease(task_id: u64, path: &std::path::Path, out: &std::path::Path, text_field: &str) -> pb::TaskLease {
    let size = std::fs::metadata(path).unwrap().len();
    let task = ShardTask {
        task_index: task_id as u32,
        dedup: None,
        shard: Shard {
            file: InputFile { url: path.to_string_lossy().into(), size, format: InputFormat::Jsonl },
            file_index: 0,
            start: 0,
            end: size,
            range_index: 0,
        },
        input: InputSpec {
            paths: vec![],
            text_field: text_field.into(),
            id_field: "id".into(),
            split_size: ByteSize(1 << 20),
            invalid_utf8: InvalidUtf8::Reject,
            unreadable_file: UnreadableFile::Fail,
            max_line_bytes: lehr_pipeline::spec::ByteSize(lehr_pipeline::spec::DEFAULT_MAX_LINE_BYTES),
        },
        stages: vec![],
        output: OutputSpec {
            path: out.to_string_lossy().into(),
            formats: vec![OutputFormat::JsonlZst],
            zstd_level: 3,
            overwrite: false,
            partition_by: None,
            attributes: false,
            score_dropped: true,
            tokenize: None,
        },
    };
    pb::TaskLease {
        task_id,
        job_id: "job-test".into(),
        attempt: 1,
        kind: SHARD_TASK_KIND.into(),
        payload: serde_json::to_string(&task).unwrap(),
        lease_ttl_ms: 1000,
        lease_token: format!("token-{task_id}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_reports_and_reregisters() {
    let out = tempfile::tempdir().unwrap();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/ko.jsonl");
    let mock = Arc::new(Mock::default());
    *mock.forget_once.lock().unwrap() = true;
    mock.queue.lock().unwrap().extend([
        shard_lease(0, &sample, out.path(), "text"),
        // every line lacks the `body` field: no line is a document, but the file is JSON, so
        // this is a task with 300 bad records, not an unreadable file
        shard_lease(1, &sample, out.path(), "body"),
        pb::TaskLease {
            task_id: 2,
            job_id: "job-test".into(),
            attempt: 1,
            kind: "tokenize.shard".into(),
            payload: "{}".into(),
            lease_ttl_ms: 1000,
            lease_token: "token-2".into(),
        },
    ]);
    let shutdown = CancellationToken::new();
    let api: Arc<dyn CoordinatorApi> = mock.clone();
    let config = lehr_worker::WorkerConfig { name: "t".into(), slots: 3, ..Default::default() };
    let worker = tokio::spawn(lehr_worker::start(config, api, shutdown.clone()));
    wait_for_reports(&mock, 3).await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();

    assert_eq!(*mock.registrations.lock().unwrap(), 2, "registered again after being forgotten");
    let mut reports = mock.reports.lock().unwrap().clone();
    reports.sort_by_key(|r| r.task_id);
    assert_eq!(reports.len(), 3, "each task reported exactly once");
    assert!(*mock.piggybacked.lock().unwrap() >= 1, "reports ride on lease calls");
    for r in &reports {
        assert_eq!(r.lease_token, format!("token-{}", r.task_id), "reports carry their lease token");
    }
    match &reports[0].outcome {
        Some(Outcome::Success(json)) => {
            let r: ShardResult = serde_json::from_str(json).unwrap();
            assert_eq!(r.read.docs, 300);
            assert_eq!(r.docs_written, 300);
            let f = &r.outputs[0];
            let bytes = std::fs::read(out.path().join(&f.attempt_key)).unwrap();
            assert_eq!(bytes.len() as u64, f.bytes);
            let text = zstd::decode_all(&bytes[..]).unwrap();
            assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 300);
        }
        other => panic!("task 0: {other:?}"),
    }
    match &reports[1].outcome {
        Some(Outcome::Success(json)) => {
            let r: ShardResult = serde_json::from_str(json).unwrap();
            assert_eq!((r.read.docs, r.read.bad_records), (0, 300));
            assert!(r.read.bad[0].reason.contains("no `body` field"));
        }
        other => panic!("task 1: {other:?}"),
    }
    match &reports[2].outcome {
        Some(Outcome::Failure(f)) => {
            assert!(!f.retryable);
            assert!(f.error.contains("cannot run tasks of kind `tokenize.shard`"), "{}", f.error);
        }
        other => panic!("task 2: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_for_longer_than_the_lease_ttl_stops_its_attempts() {
    let out = tempfile::tempdir().unwrap();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/ko.jsonl");
    let mock = Arc::new(Mock::default());
    *mock.heartbeats_fail.lock().unwrap() = true;
    mock.queue.lock().unwrap().push(shard_lease(0, &sample, out.path(), "text"));
    let shutdown = CancellationToken::new();
    let api: Arc<dyn CoordinatorApi> = mock.clone();
    // 300 documents at 20 ms each: 6 s of work, against a lease TTL of 1 s (the mock's)
    let run = lehr_pipeline::task::RunOptions { slow_per_doc: Some(Duration::from_millis(20)), ..Default::default() };
    let config = lehr_worker::WorkerConfig { name: "t".into(), slots: 1, run, ..Default::default() };
    let worker = tokio::spawn(lehr_worker::start(config, api, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(8)).await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert!(
        mock.reports.lock().unwrap().is_empty(),
        "an attempt whose lease is lost stops without reporting (the coordinator gave its task to another worker)"
    );
    let left: Vec<_> = walk(out.path()).into_iter().filter(|p| p.is_file()).collect();
    assert!(left.is_empty(), "the stopped attempt's files are removed: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_hears_nothing_back_is_sent_again() {
    let mock = Arc::new(Mock::default());
    *mock.first_report_hangs.lock().unwrap() = true;
    mock.queue.lock().unwrap().push(pb::TaskLease {
        task_id: 7,
        job_id: "job-test".into(),
        attempt: 1,
        kind: lehr_worker::NOOP_TASK_KIND.into(),
        payload: "{}".into(),
        lease_ttl_ms: 1000,
        lease_token: "token-7".into(),
    });
    let shutdown = CancellationToken::new();
    let api: Arc<dyn CoordinatorApi> = mock.clone();
    let config = lehr_worker::WorkerConfig { name: "t".into(), slots: 1, ..Default::default() };
    let start = std::time::Instant::now();
    let worker = tokio::spawn(lehr_worker::start(config, api, shutdown.clone()));
    while mock.reports.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let reports = mock.reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 1, "the unanswered report is sent again, and answered once ({took:?})");
    assert_eq!((reports[0].task_id, reports[0].lease_token.as_str()), (7, "token-7"));
    // bounded by the call limit (a lease TTL, at least 10 s), not by HTTP/2 keepalive
    assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(15), "{took:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

/// A result over the report limit fails its task, not retryably, with the reason (it used to
/// be dropped by the transport, so the lease expired again and again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_result_fails_its_task_saying_why() {
    let out = tempfile::tempdir().unwrap();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/ko.jsonl");
    let mock = Arc::new(Mock::default());
    mock.queue.lock().unwrap().push(shard_lease(7, &sample, out.path(), "text"));
    let shutdown = CancellationToken::new();
    let api: Arc<dyn CoordinatorApi> = mock.clone();
    let config = lehr_worker::WorkerConfig { name: "t".into(), slots: 1, max_result_bytes: 256, ..Default::default() };
    let worker = tokio::spawn(lehr_worker::start(config, api, shutdown.clone()));
    wait_for_reports(&mock, 1).await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let reports = mock.reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 1);
    match &reports[0].outcome {
        Some(Outcome::Failure(f)) => {
            assert!(!f.retryable, "a retry would be as large");
            assert!(
                f.error.contains("over the 256 bytes a report may carry") && f.error.contains("split-size"),
                "{}",
                f.error
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A coordinator from before piggybacked reports ignores them (an unknown field): the worker
/// sees no answers for what it carried and sends each report again alone, so none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_a_lease_call_did_not_answer_go_alone() {
    let mock = Arc::new(Mock::default());
    *mock.ignores_piggyback.lock().unwrap() = true;
    mock.queue.lock().unwrap().extend((0..4).map(|task_id| pb::TaskLease {
        task_id,
        job_id: "job-test".into(),
        attempt: 1,
        // a kind this worker does not run: the attempt fails at once, and is reported
        kind: "tokenize.shard".into(),
        payload: "{}".into(),
        lease_ttl_ms: 1000,
        lease_token: format!("token-{task_id}"),
    }));
    let shutdown = CancellationToken::new();
    let api: Arc<dyn CoordinatorApi> = mock.clone();
    let config = lehr_worker::WorkerConfig { name: "t".into(), slots: 4, ..Default::default() };
    let worker = tokio::spawn(lehr_worker::start(config, api, shutdown.clone()));
    wait_for_reports(&mock, 4).await;
    // time for a report to arrive twice, if one would
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    let mut ids: Vec<u64> = mock.reports.lock().unwrap().iter().map(|r| r.task_id).collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 3], "each report delivered once, alone");
    assert_eq!(*mock.piggybacked.lock().unwrap(), 0);
}
