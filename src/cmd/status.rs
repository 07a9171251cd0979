//! `lehr status` and `lehr cancel`.

use std::time::Instant;

use lehr_proto::pb::{
    CancelJobRequest, GetJobRequest, JobState, ListJobsRequest, ListWorkersRequest, PruneJobsRequest,
};
use lehr_proto::Named;

use super::{connect, CmdResult, EXIT_JOB_FAILED, EXIT_OK};
use crate::cli::{CancelArgs, StatusArgs};
use crate::progress::follow;

fn ms_to_secs(ms: i64) -> String {
    if ms <= 0 {
        "-".into()
    } else {
        let age = (lehr_coordinator::service::now_ms() - ms) as f64 / 1000.0;
        format!("{age:.0}s ago")
    }
}

pub async fn status(args: StatusArgs) -> CmdResult {
    let api = connect(&args.coordinator, &args.auth)?;
    if let Some(age) = args.prune_older_than {
        let r = api.prune_jobs(PruneJobsRequest { older_than_ms: age.as_millis() as i64 }).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"pruned": r.pruned})).expect("json"));
        } else {
            println!(
                "pruned {} ended job(s){}",
                r.pruned.len(),
                if r.pruned.is_empty() { String::new() } else { format!(": {}", r.pruned.join(" ")) }
            );
        }
        return Ok(EXIT_OK);
    }
    let Some(job_id) = args.job else {
        let jobs = api.list_jobs(ListJobsRequest { offset: 0, limit: args.limit }).await?;
        let workers = api.list_workers(ListWorkersRequest {}).await?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"jobs": jobs.jobs, "total_jobs": jobs.total, "workers": workers.workers}),
                )
                .expect("json")
            );
            return Ok(EXIT_OK);
        }
        println!(
            "{:<20} {:<16} {:<8} {:<11} {:>12} {:>10}  error",
            "job", "name", "kind", "state", "shards", "bad recs"
        );
        for j in &jobs.jobs {
            let total: u32 = j.stages.iter().map(|s| s.tasks_total).sum();
            let done: u32 = j.stages.iter().map(|s| s.tasks_committed).sum();
            let bad: u64 = j.stages.iter().map(|s| s.bad_records).sum();
            println!(
                "{:<20} {:<16} {:<8} {:<11} {:>12} {:>10}  {}",
                j.job_id,
                j.name,
                j.kind,
                j.state().name(),
                format!("{done}/{total}"),
                bad,
                j.error
            );
        }
        if (jobs.total as usize) > jobs.jobs.len() {
            println!("(the newest {} of {} jobs; --limit 0 lists all)", jobs.jobs.len(), jobs.total);
        }
        println!("\n{:<6} {:<24} {:<6} {:<10}  running tasks", "worker", "name", "alive", "last seen");
        for w in &workers.workers {
            println!(
                "{:<6} {:<24} {:<6} {:<10}  {:?}",
                w.worker_id,
                w.name,
                if w.alive { "yes" } else { "no" },
                ms_to_secs(w.last_seen_ms),
                w.running_tasks
            );
        }
        return Ok(EXIT_OK);
    };
    if args.wait {
        let started = Instant::now();
        let job = follow(&api, &job_id, args.json).await?;
        return super::corpus::report(&job, started.elapsed().as_secs_f64(), args.json).await;
    }
    let r = api
        .get_job(GetJobRequest {
            job_id: job_id.clone(),
            include_tasks: args.tasks,
            task_offset: args.task_offset,
            task_limit: args.task_limit,
        })
        .await?;
    let job = r.job.expect("job");
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"job": job, "tasks": r.tasks, "tasks_total": r.tasks_total})
            )
            .expect("json")
        );
        return Ok(if job.state() == JobState::Failed { EXIT_JOB_FAILED } else { EXIT_OK });
    }
    println!("job {} ({}, {}): {}", job.job_id, job.name, job.kind, job.state().name());
    println!("output: {}", job.output);
    if !job.error.is_empty() {
        println!("error: {}", job.error);
    }
    println!(
        "{:<10} {:<10} {:>8} {:>9} {:>8} {:>7} {:>10} {:>10} {:>9}",
        "stage", "state", "shards", "committed", "running", "failed", "docs in", "docs out", "bad recs"
    );
    for s in &job.stages {
        println!(
            "{:<10} {:<10} {:>8} {:>9} {:>8} {:>7} {:>10} {:>10} {:>9}",
            s.name,
            s.state().name(),
            s.tasks_total,
            s.tasks_committed,
            s.tasks_running,
            s.tasks_failed,
            s.docs_in,
            s.docs_out,
            s.bad_records
        );
    }
    if args.tasks {
        if (r.tasks_total as usize) > r.tasks.len() {
            println!(
                "\ntasks {}–{} of {}",
                args.task_offset + 1,
                args.task_offset as usize + r.tasks.len(),
                r.tasks_total
            );
        }
        println!("\n{:<6} {:<10} {:>8} {:<6}  shard / attempts", "task", "state", "attempts", "worker");
        for t in &r.tasks {
            println!("{:<6} {:<10} {:>8} {:<6}  {}", t.task_id, t.state().name(), t.attempts, t.worker_id, t.shard);
            for a in &t.attempt_log {
                println!(
                    "         attempt {} on {}: {}{}",
                    a.attempt,
                    a.worker_id,
                    a.outcome().name(),
                    if a.error.is_empty() { String::new() } else { format!(" ({})", a.error) }
                );
            }
        }
    }
    Ok(if job.state() == JobState::Failed { EXIT_JOB_FAILED } else { EXIT_OK })
}

pub async fn cancel(args: CancelArgs) -> CmdResult {
    let api = connect(&args.coordinator, &args.auth)?;
    let r = api.cancel_job(CancelJobRequest { job_id: args.job }).await?;
    let job = r.job.expect("job");
    println!("job {}: {}", job.job_id, job.state().name());
    Ok(EXIT_OK)
}
