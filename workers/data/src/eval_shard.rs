//! The eval side of a train worker: a leased `eval.items` task (rows of one benchmark task,
//! `lehr_evals::job::EvalShardTask`) runs as a child `lehr eval shard TASK.json` of the
//! libtorch build, on the slot's GPU, which loads the checkpoint once, scores the rows and
//! prints the shard's result JSON; the worker reports it. A lease taken back kills the child.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lehr_pipeline::task::TaskProgress;
use lehr_proto::pb;
use tokio::io::AsyncReadExt;

use crate::rank::{acquire_gpu, child_command, write_private_config, TrainLaunch};

type Outcome = Result<String, (String, bool)>;

pub async fn run_eval_shard(lease: &pb::TaskLease, progress: Arc<TaskProgress>, launch: &TrainLaunch) -> Outcome {
    let gpu = acquire_gpu(launch)?;
    let file = write_private_config(
        &lease.payload,
        &format!("lehr-eval-{}-t{}-a{}-", lease.job_id, lease.task_id, lease.attempt),
    )
    .map_err(|e| (format!("cannot write the shard's task to a temporary file: {e}"), true))?;
    let mut cmd = child_command(launch, &gpu);
    cmd.arg("eval").arg("shard").arg(file.path());
    let mut child = cmd.spawn().map_err(|e| (format!("cannot start {}: {e}", launch.exe.display()), true))?;
    tracing::info!(pid = child.id().unwrap_or(0), "eval shard process started");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s).await;
        s
    });
    let err = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = tick.tick() => {
                if progress.cancelled.load(Ordering::Relaxed) {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Err(("stopped: the coordinator took the lease back".into(), true));
                }
            }
        }
    };
    let (stdout, stderr) = (out.await.unwrap_or_default(), err.await.unwrap_or_default());
    let status = status.map_err(|e| (format!("lost the eval shard process: {e}"), true))?;
    let tail: Vec<&str> = stderr.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
    let why = if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" | ")) };
    match status.code() {
        Some(0) => {
            let result = stdout.trim().to_string();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&result) {
                let n = v["scores"].as_array().map_or(0, |a| a.len()) as u64;
                progress.docs.store(n, Ordering::Relaxed);
                return Ok(result);
            }
            Err((format!("the eval shard printed no result{why}"), true))
        }
        // a bad task, row or checkpoint recurs on every retry
        Some(2) => Err((format!("the eval shard refused its task{why}"), false)),
        Some(c) => Err((format!("the eval shard exited with code {c}{why}"), true)),
        None => Err((format!("the eval shard was killed by a signal{why}"), true)),
    }
}
