//! `lehr bench coordinator`: simulated workers (each a lease → report loop) against an embedded
//! coordinator, in process and over real gRPC on loopback. It reports throughput, per-RPC latency
//! percentiles, the coordinator's memory per task, and how long status calls take while the
//! workers run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use lehr_proto::pb::{self, report_task_request::Outcome};
use lehr_proto::{CoordinatorApi, GrpcCoordinatorClient};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{start_embedded, CmdResult, Failure, EXIT_OK};
use crate::cli::BenchCoordinatorArgs;

/// Resident memory of this process (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// p50, p99 and max of latencies in microseconds, as milliseconds.
fn percentiles(mut us: Vec<u32>) -> Value {
    if us.is_empty() {
        return json!(null);
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    json!({"calls": us.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

struct Run {
    tasks_per_s: f64,
    lease: Vec<u32>,
    report: Vec<u32>,
    status: Vec<u32>,
    /// Only for the first run in a process: later ones reuse memory the first freed.
    submit_rss_per_task: Option<f64>,
    /// The same once every task committed (attempt records, results, lease tokens).
    committed_rss_per_task: Option<f64>,
}

fn micros(t: Instant) -> u32 {
    t.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// `workers` loops over `clients` (round robin) lease up to `batch` tasks and report each done at
/// once, or (`piggyback`) on the next lease call; one more loop calls GetJob (the job's status
/// with its stage totals) every 20 ms.
async fn drive(
    clients: &[Arc<dyn CoordinatorApi>],
    tasks: u32,
    workers: u32,
    batch: u32,
    piggyback: bool,
    first: bool,
) -> Result<Run, Failure> {
    let api = clients[0].clone();
    let rss0 = rss_bytes();
    let job = api
        .submit_job(pb::SubmitJobRequest {
            kind: lehr_schedules::kinds::NOOP_JOB.into(),
            name: "bench".into(),
            spec: format!("tasks = {tasks}"),
            base_dir: String::new(),
        })
        .await?;
    let submit_rss_per_task = first.then(|| rss_bytes().saturating_sub(rss0) as f64 / tasks as f64);
    let mut ids = Vec::with_capacity(workers as usize);
    for i in 0..workers {
        let c = &clients[i as usize % clients.len()];
        ids.push(
            c.register_worker(pb::RegisterWorkerRequest { name: format!("sim-{i}"), slots: batch }).await?.worker_id,
        );
    }
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (api, done, job_id) = (api.clone(), done.clone(), job.job_id.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = api.get_job(pb::GetJobRequest { job_id: job_id.clone(), ..Default::default() }).await;
                if r.is_ok() {
                    lat.push(micros(t));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            lat
        })
    };
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let api = clients[i % clients.len()].clone();
        set.spawn(async move {
            let (mut lease_lat, mut report_lat) = (Vec::new(), Vec::new());
            let mut reports = Vec::new();
            loop {
                let t = Instant::now();
                let leases = api
                    .lease_tasks(pb::LeaseTasksRequest {
                        worker_id: id.clone(),
                        max_tasks: batch,
                        reports: std::mem::take(&mut reports),
                        ..Default::default()
                    })
                    .await?
                    .leases;
                lease_lat.push(micros(t));
                if leases.is_empty() {
                    return Ok::<_, lehr_proto::ApiError>((lease_lat, report_lat));
                }
                for l in leases {
                    let report = pb::ReportTaskRequest {
                        worker_id: id.clone(),
                        task_id: l.task_id,
                        attempt: l.attempt,
                        outcome: Some(Outcome::Success("{}".into())),
                        lease_token: l.lease_token,
                    };
                    if piggyback {
                        reports.push(report);
                        continue;
                    }
                    let t = Instant::now();
                    api.report_task(report).await?;
                    report_lat.push(micros(t));
                }
            }
        });
    }
    let (mut lease, mut report) = (Vec::new(), Vec::new());
    while let Some(r) = set.join_next().await {
        let (l, rep) = r.context("simulated worker panicked")??;
        lease.extend(l);
        report.extend(rep);
    }
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let status = poller.await.context("status poller panicked")?;
    let s = api.get_job(pb::GetJobRequest { job_id: job.job_id, ..Default::default() }).await?.job.expect("job");
    let committed: u32 = s.stages.iter().map(|s| s.tasks_committed).sum();
    if committed != tasks {
        return Err(anyhow::anyhow!("only {committed} of {tasks} tasks committed").into());
    }
    let committed_rss_per_task = first.then(|| rss_bytes().saturating_sub(rss0) as f64 / tasks as f64);
    Ok(Run { tasks_per_s: tasks as f64 / secs, lease, report, status, submit_rss_per_task, committed_rss_per_task })
}

fn figures(r: Run) -> Value {
    json!({
        "tasks_per_s": r.tasks_per_s,
        "lease": percentiles(r.lease),
        "report": percentiles(r.report),
        "status_while_leasing": percentiles(r.status),
        "rss_bytes_per_task_at_submit": r.submit_rss_per_task,
        "rss_bytes_per_task_committed": r.committed_rss_per_task,
    })
}

pub async fn run(args: BenchCoordinatorArgs) -> CmdResult {
    if args.tasks == 0 || args.workers == 0 || args.connections == 0 || args.batch == 0 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--tasks, --workers, --connections and --batch must be at least 1"
        )));
    }
    if let Some(url) = &args.coordinator {
        let mut clients: Vec<Arc<dyn CoordinatorApi>> = Vec::new();
        for _ in 0..args.connections.min(args.workers) {
            clients.push(super::connect(url, &args.auth)?);
        }
        let grpc = figures(drive(&clients, args.tasks, args.workers, args.batch, args.piggyback, false).await?);
        return print(&args, json!(null), Some(grpc), None);
    }
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir().context("no temporary directory")?;
    let listen = args.grpc.then(|| "127.0.0.1:0".parse().expect("addr"));
    let state = match &args.state {
        Some(url) => lehr_coordinator::store::StateLocation::parse(url),
        None => dir.path().to_path_buf().into(),
    };
    let store_name = match &state {
        lehr_coordinator::store::StateLocation::Dir(_) => "SQLite WAL",
        lehr_coordinator::store::StateLocation::Postgres(_) => "PostgreSQL",
    };
    let (running, _) = start_embedded(state, listen, 0, &shutdown).await?;
    let api: Arc<dyn CoordinatorApi> = running.api.clone();
    let in_process =
        figures(drive(std::slice::from_ref(&api), args.tasks, args.workers, args.batch, args.piggyback, true).await?);
    let grpc = match running.grpc_addr {
        Some(addr) => {
            let mut clients: Vec<Arc<dyn CoordinatorApi>> = Vec::new();
            for _ in 0..args.connections.min(args.workers) {
                clients.push(Arc::new(GrpcCoordinatorClient::new(&format!("http://{addr}"), None)?));
            }
            Some(figures(drive(&clients, args.tasks, args.workers, args.batch, args.piggyback, false).await?))
        }
        None => None,
    };
    shutdown.cancel();
    print(&args, in_process, grpc, Some(store_name))
}

/// Prints the figures (`in_process` is null when a running coordinator was driven).
/// `store` is the embedded coordinator's (None: the one at `--coordinator`).
fn print(args: &BenchCoordinatorArgs, in_process: Value, grpc: Option<Value>, store: Option<&str>) -> CmdResult {
    let report = json!({
        "tasks": args.tasks, "workers": args.workers, "connections": args.connections, "batch": args.batch,
        "piggyback": args.piggyback,
        "in_process": in_process, "grpc": grpc, "store": store, "coordinator": args.coordinator,
    });
    let store_name = match (store, &args.coordinator) {
        (Some(s), _) => s.to_string(),
        (None, Some(url)) => format!("the coordinator at {url}"),
        (None, None) => unreachable!("an embedded coordinator names its store"),
    };
    if args.json {
        println!("{report}");
        return Ok(EXIT_OK);
    }
    println!(
        "coordinator: {} tasks, {} simulated workers ({} per lease), lease + commit each ({store_name}, group commit: each answer durable){}",
        args.tasks,
        args.workers,
        args.batch,
        if args.piggyback { ", reports on the next lease call" } else { "" }
    );
    let ms = |v: &Value, k: &str| match v[k]["p50_ms"].as_f64() {
        Some(p50) => format!("{p50:.2}/{:.2} ms", v[k]["p99_ms"].as_f64().unwrap_or(0.0)),
        None => "on the lease call".to_string(),
    };
    let line = |name: &str, v: &Value| {
        let mem = v["rss_bytes_per_task_at_submit"]
            .as_f64()
            .map(|b| format!("   {b:.0} B/task at submit"))
            .unwrap_or_default();
        println!(
            "  {name:<24} {:>7.0} tasks/s   lease p50/p99 {}   report {}   status while leasing {}{mem}",
            v["tasks_per_s"].as_f64().unwrap_or(0.0),
            ms(v, "lease"),
            ms(v, "report"),
            ms(v, "status_while_leasing"),
        )
    };
    if report["in_process"].is_object() {
        line("in-process", &report["in_process"]);
    }
    if report["grpc"].is_object() {
        line(&format!("gRPC, {} connections", args.connections.min(args.workers)), &report["grpc"]);
    }
    Ok(EXIT_OK)
}
