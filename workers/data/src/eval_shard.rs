//! The eval side of a train worker: leased `eval.items` tasks (rows of one benchmark task,
//! `lehr_evals::job::EvalShardTask`) go to a child `lehr eval shard --serve` of the libtorch
//! build, one per GPU slot (or per concurrent CPU slot), kept between shards: it reads a task
//! per line on stdin, keeps the last checkpoint it loaded (so a worker loads a model once for
//! all the shards it scores), and answers a line per task (`{"ok": result}` or `{"error",
//! "retryable"}`). A lease taken back kills the child mid-shard; a child that dies is replaced
//! by the next shard.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lehr_pipeline::task::TaskProgress;
use lehr_proto::pb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::rank::{acquire_gpu, child_command, TrainLaunch};

type Outcome = Result<String, (String, bool)>;

/// A running `lehr eval shard --serve` child.
#[derive(Debug)]
pub struct EvalServer {
    gpu: Option<usize>,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Its last stderr lines, for error reports.
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// Idle servers of a worker.
pub type EvalServers = Arc<Mutex<Vec<EvalServer>>>;

fn spawn_server(launch: &TrainLaunch, gpu: &crate::rank::GpuSlot) -> Result<EvalServer, (String, bool)> {
    let mut cmd = child_command(launch, gpu);
    cmd.arg("eval").arg("shard").arg("--serve").stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| (format!("cannot start {}: {e}", launch.exe.display()), true))?;
    tracing::info!(pid = child.id().unwrap_or(0), "eval server started");
    let stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let stderr = child.stderr.take().expect("piped");
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let tail_w = tail.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[eval] {line}");
            let mut t = tail_w.lock().expect("lock");
            t.push_back(line);
            if t.len() > 6 {
                t.pop_front();
            }
        }
    });
    Ok(EvalServer { gpu: gpu.index, child, stdin, stdout, tail })
}

fn tail_of(server: &EvalServer) -> String {
    let t: Vec<String> = server.tail.lock().expect("lock").iter().cloned().collect();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {}", t.join(" | "))
    }
}

pub async fn run_eval_shard(lease: &pb::TaskLease, progress: Arc<TaskProgress>, launch: &TrainLaunch) -> Outcome {
    let gpu = acquire_gpu(launch)?;
    let idle = {
        let mut pool = launch.eval_servers.lock().expect("lock");
        pool.iter().position(|s| s.gpu == gpu.index).map(|i| pool.swap_remove(i))
    };
    let mut server = match idle {
        Some(s) => s,
        None => spawn_server(launch, &gpu)?,
    };
    let line = format!("{}\n", lease.payload.replace('\n', " "));
    if let Err(e) = async {
        server.stdin.write_all(line.as_bytes()).await?;
        server.stdin.flush().await
    }
    .await
    {
        let _ = server.child.start_kill();
        return Err((format!("the eval server is gone ({e}){}", tail_of(&server)), true));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let reply = loop {
        tokio::select! {
            line = server.stdout.next_line() => break line,
            _ = tick.tick() => {
                if progress.cancelled.load(Ordering::Relaxed) {
                    let _ = server.child.start_kill();
                    let _ = server.child.wait().await;
                    return Err(("stopped: the coordinator took the lease back".into(), true));
                }
            }
        }
    };
    let reply = match reply {
        Ok(Some(line)) => line,
        _ => {
            let _ = server.child.start_kill();
            let _ = server.child.wait().await;
            return Err((format!("the eval server exited{}", tail_of(&server)), true));
        }
    };
    let v: serde_json::Value = match serde_json::from_str(&reply) {
        Ok(v) => v,
        Err(e) => {
            let _ = server.child.start_kill();
            return Err((format!("the eval server answered no JSON ({e}){}", tail_of(&server)), true));
        }
    };
    // a healthy server goes back to the pool, model loaded
    launch.eval_servers.lock().expect("lock").push(server);
    if let Some(ok) = v.get("ok") {
        progress.docs.store(ok["scores"].as_array().map_or(0, |a| a.len()) as u64, Ordering::Relaxed);
        return Ok(serde_json::to_string(ok).expect("json"));
    }
    let error = v["error"].as_str().unwrap_or("the eval server failed without saying why").to_string();
    Err((error, v["retryable"].as_bool().unwrap_or(true)))
}
