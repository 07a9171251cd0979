//! The gRPC face on loopback: the shared token, unknown job kinds, oversized messages, and a
//! whole noop job driven through the real client.

use std::sync::Arc;

use lehr_coordinator::{start, CoordinatorConfig, SchedulerConfig};
use lehr_proto::pb::{self, report_task_request::Outcome};
use lehr_proto::{CoordinatorApi, ErrorCode, GrpcCoordinatorClient};
use tokio_util::sync::CancellationToken;

async fn serve(
    token: Option<&str>,
) -> (String, CancellationToken, (tempfile::TempDir, lehr_coordinator::RunningCoordinator)) {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = CoordinatorConfig {
        state: dir.path().into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: None,
        token: token.map(str::to_string),
        tls: None,
        scheduler: SchedulerConfig::default(),
    };
    let running = start(config, shutdown.clone()).await.unwrap();
    // keep `running` alive: dropping its JoinSet would stop the server
    (format!("http://{}", running.grpc_addr.unwrap()), shutdown, (dir, running))
}

fn client(url: &str, token: Option<&str>) -> Arc<dyn CoordinatorApi> {
    Arc::new(GrpcCoordinatorClient::new(url, token).unwrap())
}

/// Submits a `noop` job of `tasks` tasks.
async fn submit_noop(api: &Arc<dyn CoordinatorApi>, tasks: u32) -> pb::SubmitJobResponse {
    api.submit_job(pb::SubmitJobRequest {
        kind: "noop".into(),
        name: "n".into(),
        spec: format!("tasks = {tasks}"),
        base_dir: String::new(),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn token_is_required_and_checked() {
    let (url, stop, _dir) = serve(Some("s3cret-token")).await;
    let err = client(&url, None).list_jobs(pb::ListJobsRequest::default()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.message.contains("requires a token"), "{}", err.message);
    let err = client(&url, Some("wrong")).list_jobs(pb::ListJobsRequest::default()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(!err.message.contains("s3cret"), "the token never appears in errors");
    assert!(client(&url, Some("s3cret-token")).list_jobs(pb::ListJobsRequest::default()).await.is_ok());
    stop.cancel();
}

#[tokio::test]
async fn unknown_kinds_and_oversized_messages_are_rejected_clearly() {
    let (url, stop, _dir) = serve(None).await;
    let api = client(&url, None);
    let err = api
        .submit_job(pb::SubmitJobRequest {
            kind: "dedupe".into(),
            name: String::new(),
            spec: String::new(),
            base_dir: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("unknown job kind `dedupe`") && err.message.contains("corpus"), "{}", err.message);

    // A 2 MiB spec passes the transport but not the spec limit.
    let big = "#".repeat(2 << 20);
    let err = api
        .submit_job(pb::SubmitJobRequest {
            kind: "corpus".into(),
            name: String::new(),
            spec: big,
            base_dir: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains("limit"), "{}", err.message);

    // A 20 MiB message is refused by the server's transport (a client allowed to send it).
    let mut raw = pb::coordinator_client::CoordinatorClient::connect(url.clone())
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20);
    let huge = "x".repeat(20 << 20);
    let status = raw
        .submit_job(pb::SubmitJobRequest {
            kind: "corpus".into(),
            name: String::new(),
            spec: huge,
            base_dir: String::new(),
        })
        .await
        .unwrap_err();
    assert!(status.message().contains("message length too large"), "{status:?}");

    // A bad spec names its key.
    let err = api
        .submit_job(pb::SubmitJobRequest {
            kind: "corpus".into(),
            name: String::new(),
            spec: "version = 1\n[input]\npaths = [\"x.jsonl\"]\nsplit-sise = 5\n[output]\npath = \"o\"\n".into(),
            base_dir: "/".into(),
        })
        .await
        .unwrap_err();
    assert!(err.message.contains("split-sise"), "{}", err.message);
    stop.cancel();
}

#[tokio::test]
async fn a_job_runs_through_grpc_with_idempotent_commits() {
    let (url, stop, _dir) = serve(None).await;
    let api = client(&url, None);
    let job = submit_noop(&api, 5).await;
    assert_eq!(job.tasks, 5);
    let w = api.register_worker(pb::RegisterWorkerRequest { name: "t".into(), slots: 8 }).await.unwrap().worker_id;
    let leases = api
        .lease_tasks(pb::LeaseTasksRequest { worker_id: w.clone(), max_tasks: 8, ..Default::default() })
        .await
        .unwrap()
        .leases;
    assert_eq!(leases.len(), 5);
    assert!(leases.iter().all(|l| l.lease_token.len() == 32), "every lease carries its token");
    // Reports without the lease token, with another's, or from another worker id change nothing.
    let intruder =
        api.register_worker(pb::RegisterWorkerRequest { name: "x".into(), slots: 1 }).await.unwrap().worker_id;
    for (worker, token) in [
        (w.clone(), String::new()),
        (w.clone(), leases[1].lease_token.clone()),
        (intruder.clone(), leases[0].lease_token.clone()),
    ] {
        let err = api
            .report_task(pb::ReportTaskRequest {
                worker_id: worker,
                task_id: leases[0].task_id,
                attempt: leases[0].attempt,
                outcome: Some(Outcome::Failure(pb::TaskFailure { error: "forged".into(), retryable: false })),
                lease_token: token,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code, lehr_proto::ErrorCode::PermissionDenied, "{err}");
    }
    for l in &leases {
        for _ in 0..2 {
            let r = api
                .report_task(pb::ReportTaskRequest {
                    worker_id: w.clone(),
                    task_id: l.task_id,
                    attempt: l.attempt,
                    outcome: Some(Outcome::Success("{}".into())),
                    lease_token: l.lease_token.clone(),
                })
                .await
                .unwrap();
            assert_eq!(r.disposition(), pb::Disposition::Committed, "the same attempt reporting twice stays committed");
        }
    }
    let mut state = pb::JobState::Unspecified;
    for _ in 0..100 {
        state = api
            .get_job(pb::GetJobRequest { job_id: job.job_id.clone(), ..Default::default() })
            .await
            .unwrap()
            .job
            .unwrap()
            .state();
        if state == pb::JobState::Succeeded {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(state, pb::JobState::Succeeded);
    // A late report for a finished job, for an attempt never issued, is refused.
    let err = api
        .report_task(pb::ReportTaskRequest {
            worker_id: w,
            task_id: leases[0].task_id,
            attempt: 9,
            outcome: Some(Outcome::Success("{}".into())),
            lease_token: leases[0].lease_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, lehr_proto::ErrorCode::PermissionDenied);
    // pruning: a day's age keeps the job, no age forgets it and its tasks
    assert!(api.prune_jobs(pb::PruneJobsRequest { older_than_ms: 86_400_000 }).await.unwrap().pruned.is_empty());
    let r = api.prune_jobs(pb::PruneJobsRequest { older_than_ms: 0 }).await.unwrap();
    assert_eq!(r.pruned, vec![job.job_id.clone()]);
    let err = api.get_job(pb::GetJobRequest { job_id: job.job_id.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(api.list_jobs(pb::ListJobsRequest::default()).await.unwrap().total, 0);
    stop.cancel();
}

#[tokio::test]
async fn two_jobs_never_write_one_output_and_ids_are_unique() {
    let (url, stop, _dir) = serve(None).await;
    let api = client(&url, None);
    let out = tempfile::tempdir().unwrap();
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/en.jsonl");
    let spec = |output: &std::path::Path| {
        format!("version = 1\n[input]\npaths = [\"{}\"]\n[output]\npath = \"{}\"\n", input.display(), output.display())
    };
    let submit = |spec: String| {
        let api = api.clone();
        async move {
            api.submit_job(pb::SubmitJobRequest {
                kind: "corpus".into(),
                name: String::new(),
                spec,
                base_dir: "/".into(),
            })
            .await
        }
    };
    let first = submit(spec(&out.path().join("a"))).await.unwrap();
    // the same output, one inside it, one around it: refused, naming the holder
    for other in [out.path().join("a"), out.path().join("a/lang=en"), out.path().to_path_buf()] {
        let err = submit(spec(&other)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains(&first.job_id) && err.message.contains("being written"), "{}", err.message);
    }
    // a sibling is fine, and ids never repeat
    let second = submit(spec(&out.path().join("b"))).await.unwrap();
    assert_ne!(first.job_id, second.job_id);
    assert!(
        first.job_id.starts_with("job-000001-") && second.job_id.starts_with("job-000002-"),
        "{} {}",
        first.job_id,
        second.job_id
    );
    // once the holder ends, its output is free again
    api.cancel_job(pb::CancelJobRequest { job_id: first.job_id.clone() }).await.unwrap();
    submit(spec(&out.path().join("a"))).await.unwrap();
    stop.cancel();
}

/// Group commit: many workers deciding at once share transactions, and every answered decision
/// is on disk. 40 workers lease and commit 400 tasks concurrently; a coordinator restarted on
/// the same state finds every task committed once, the job succeeded, every worker registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_are_all_durable_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || CoordinatorConfig {
        state: dir.path().into(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: None,
        token: None,
        tls: None,
        scheduler: SchedulerConfig::default(),
    };
    let shutdown = CancellationToken::new();
    let mut running = start(config(), shutdown.clone()).await.unwrap();
    let api = client(&format!("http://{}", running.grpc_addr.unwrap()), None);
    let job = submit_noop(&api, 400).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let api = api.clone();
        set.spawn(async move {
            let w = api.register_worker(pb::RegisterWorkerRequest { name: format!("w{i}"), slots: 2 }).await.unwrap();
            let mut done = 0;
            loop {
                let leases = api
                    .lease_tasks(pb::LeaseTasksRequest {
                        worker_id: w.worker_id.clone(),
                        max_tasks: 2,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .leases;
                if leases.is_empty() {
                    return done;
                }
                for l in leases {
                    api.report_task(pb::ReportTaskRequest {
                        worker_id: w.worker_id.clone(),
                        task_id: l.task_id,
                        attempt: l.attempt,
                        outcome: Some(Outcome::Success("{}".into())),
                        lease_token: l.lease_token,
                    })
                    .await
                    .unwrap();
                    done += 1;
                }
            }
        });
    }
    let mut total = 0;
    while let Some(n) = set.join_next().await {
        total += n.unwrap();
    }
    assert_eq!(total, 400);
    shutdown.cancel();
    while running.tasks.join_next().await.is_some() {}
    drop(running);

    let shutdown = CancellationToken::new();
    let running = start(config(), shutdown.clone()).await.unwrap();
    let api = client(&format!("http://{}", running.grpc_addr.unwrap()), None);
    let status = api
        .get_job(pb::GetJobRequest { job_id: job.job_id.clone(), include_tasks: true, ..Default::default() })
        .await
        .unwrap();
    let j = status.job.unwrap();
    assert_eq!(j.state(), pb::JobState::Succeeded, "{j:?}");
    assert_eq!(j.stages.iter().map(|s| s.tasks_committed).sum::<u32>(), 400);
    assert_eq!(status.tasks.len(), 400);
    assert!(status.tasks.iter().all(|t| t.attempts == 1), "a task ran twice");
    let workers = api.list_workers(pb::ListWorkersRequest {}).await.unwrap().workers;
    assert_eq!(workers.len(), 40);
    shutdown.cancel();
}

/// Reports riding on lease calls: each is decided as ReportTask decides it (committed, the same
/// again when resent, refused with the reason for a wrong token or another worker's id), the
/// answers come back in order, and the lease in the same call still leases.
#[tokio::test]
async fn reports_ride_on_lease_calls_and_are_decided_as_alone() {
    let (url, stop, _dir) = serve(None).await;
    let api = client(&url, None);
    let job = submit_noop(&api, 6).await;
    let w = api.register_worker(pb::RegisterWorkerRequest { name: "t".into(), slots: 3 }).await.unwrap().worker_id;
    let lease = |reports: Vec<pb::ReportTaskRequest>| {
        let (api, w) = (api.clone(), w.clone());
        async move {
            api.lease_tasks(pb::LeaseTasksRequest { worker_id: w, max_tasks: 3, reports, ..Default::default() })
                .await
                .unwrap()
        }
    };
    let report = |l: &pb::TaskLease, worker: &str, token: &str| pb::ReportTaskRequest {
        worker_id: worker.into(),
        task_id: l.task_id,
        attempt: l.attempt,
        outcome: Some(Outcome::Success("{}".into())),
        lease_token: token.into(),
    };
    let first = lease(vec![]).await;
    assert_eq!((first.leases.len(), first.reports.len()), (3, 0));
    let l = &first.leases;
    let second = lease(vec![
        report(&l[0], &w, &l[0].lease_token),
        report(&l[1], &w, "forged"),
        report(&l[2], "someone-else", &l[2].lease_token),
        report(&l[0], &w, &l[0].lease_token),
    ])
    .await;
    let d: Vec<_> = second.reports.iter().map(|r| (r.disposition(), r.error.is_empty())).collect();
    use pb::Disposition::*;
    assert_eq!(d, [(Committed, true), (Unspecified, false), (Unspecified, false), (Committed, true)], "{second:?}");
    assert!(second.reports[1].error.contains("not granted"), "{}", second.reports[1].error);
    assert!(second.reports[2].error.contains("rode on a lease call"), "{}", second.reports[2].error);
    // one slot freed by the committed report: the worker asked for 3 and gets the 3 still queued
    assert_eq!(second.leases.len(), 3);
    let mut all: Vec<pb::ReportTaskRequest> = second.leases.iter().map(|x| report(x, &w, &x.lease_token)).collect();
    all.extend([report(&l[1], &w, &l[1].lease_token), report(&l[2], &w, &l[2].lease_token)]);
    let third = lease(all).await;
    assert!(third.reports.iter().all(|r| r.disposition() == Committed), "{third:?}");
    assert!(third.leases.is_empty());
    let status = api.get_job(pb::GetJobRequest { job_id: job.job_id, ..Default::default() }).await.unwrap();
    let committed: u32 = status.job.unwrap().stages.iter().map(|s| s.tasks_committed).sum();
    assert_eq!(committed, 6);
    stop.cancel();
}
