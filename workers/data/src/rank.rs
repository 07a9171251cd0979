//! The train side of a worker: it leases `train.rank` tasks (one per slot, a slot per GPU),
//! meets the other ranks through the coordinator's rendezvous, and runs each rank as a child
//! `lehr train run` process (the binary built with libtorch), so that this crate never links
//! libtorch and a crashed or hung rank can always be killed. The child dies with the worker
//! (`PR_SET_PDEATHSIG`), its JSON step lines become heartbeat progress, and a lease the
//! coordinator takes back (a peer failed: the gang restarts) kills it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lehr_pipeline::task::TaskProgress;
use lehr_proto::pb;
use lehr_proto::{CoordinatorApi, ErrorCode};
use lehr_schedules::job::{TrainRankResult, TrainRankTask};
use lehr_schedules::rank::{RankConfig, RankEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How this worker launches ranks.
#[derive(Debug, Clone)]
pub struct TrainLaunch {
    /// A `lehr` built with `--features train`.
    pub exe: PathBuf,
    /// The address other hosts reach this one at (rank 0 listens there).
    pub advertise: String,
    /// GPUs handed out one per running rank (`CUDA_VISIBLE_DEVICES`); empty: CPU ranks.
    pub gpus: Vec<String>,
    /// GPUs in use.
    pub busy: Arc<Mutex<Vec<bool>>>,
    /// Idle `lehr eval shard --serve` children, each with its model loaded.
    pub eval_servers: crate::eval_shard::EvalServers,
}

impl TrainLaunch {
    pub fn new(exe: PathBuf, advertise: String, gpus: Vec<String>) -> Self {
        let busy = Arc::new(Mutex::new(vec![false; gpus.len()]));
        TrainLaunch { exe, advertise, gpus, busy, eval_servers: Default::default() }
    }
}

/// Gives a GPU back when dropped.
pub(crate) struct GpuSlot {
    busy: Arc<Mutex<Vec<bool>>>,
    pub(crate) index: Option<usize>,
}

impl Drop for GpuSlot {
    fn drop(&mut self) {
        if let Some(i) = self.index {
            self.busy.lock().expect("lock")[i] = false;
        }
    }
}

type Outcome = Result<String, (String, bool)>;

/// Runs one leased rank to its end. Errors carry whether a retry can help; when the lease is
/// lost the attempt is marked cancelled (nothing to report).
pub async fn run_rank(
    api: &Arc<dyn CoordinatorApi>,
    worker_id: &str,
    lease: &pb::TaskLease,
    progress: Arc<TaskProgress>,
    launch: &TrainLaunch,
) -> Outcome {
    let task: TrainRankTask =
        serde_json::from_str(&lease.payload).map_err(|e| (format!("malformed train.rank payload: {e}"), false))?;
    // A port for rank 0's collective (rank > 0 announces one too; it is simply unused).
    let port = std::net::TcpListener::bind(("0.0.0.0", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| (format!("no free port on this host: {e}"), true))?
        .port();
    let addr = if launch.advertise.contains(':') {
        format!("[{}]:{port}", launch.advertise) // IPv6
    } else {
        format!("{}:{port}", launch.advertise)
    };
    let mut waited = 0u32;
    let view = loop {
        if progress.cancelled.load(Ordering::Relaxed) {
            return Err(("stopped while waiting for the other ranks".into(), true));
        }
        let req = pb::JoinRendezvousRequest {
            worker_id: worker_id.to_string(),
            task_id: lease.task_id,
            attempt: lease.attempt,
            addr: addr.clone(),
            nccl_id: vec![],
            lease_token: lease.lease_token.clone(),
        };
        match api.join_rendezvous(req).await {
            Ok(v) if v.ready => break v,
            Ok(v) => {
                waited += 1;
                if waited.is_multiple_of(40) {
                    tracing::info!(
                        rank = task.rank,
                        joined = v.joined,
                        finished = v.finished,
                        world = v.world,
                        "waiting for the other ranks"
                    );
                }
            }
            Err(e) if e.is_transient() => {}
            Err(e) if e.code == ErrorCode::NotFound => {
                progress.cancelled.store(true, Ordering::Relaxed);
                return Err((e.message, true));
            }
            Err(e) => return Err((format!("rendezvous refused: {e}"), false)),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let gpu = acquire_gpu(launch)?;
    let job = &task.job;
    // Always a rendezvous address, so the child is a rank, never a launcher of local ranks.
    // When rank 0 has already finished (no address), the run is complete and the child exits
    // without connecting (it checks the latest checkpoint first).
    let master = if view.master_addr.is_empty() { addr.as_str() } else { view.master_addr.as_str() };
    let config = RankConfig {
        run: job.run.clone(),
        spec_name: format!("the run spec of job {}", lease.job_id),
        data: job.data.clone(),
        model: job.model.clone(),
        out: job.out.clone(),
        world: view.world,
        rank: task.rank,
        rendezvous: Some(master.to_string()),
        stop_at: None,
        scratch: None,
        options: job.options.clone(),
    };
    // The config goes to a file only this user can read, created afresh (O_EXCL, never
    // following a planted symlink) and removed when the rank ends.
    let config_file = write_private_config(
        &serde_json::to_string(&config).expect("rank config serializes"),
        &format!("lehr-rank-{}-t{}-a{}-", lease.job_id, lease.task_id, lease.attempt),
    )
    .map_err(|e| (format!("cannot write the rank's config to a temporary file: {e}"), true))?;
    let mut cmd = child_command(launch, &gpu);
    cmd.arg("train").arg("rank").arg(config_file.path());
    // The gang's collective secret, in the environment (argv is readable by other users).
    cmd.env(lehr_schedules::job::COLLECTIVE_SECRET_ENV, &view.secret);
    let mut child = cmd.spawn().map_err(|e| (format!("cannot start {}: {e}", launch.exe.display()), true))?;
    tracing::info!(rank = task.rank, world = view.world, master = %view.master_addr, generation = view.generation, pid = child.id().unwrap_or(0), "rank process started");

    // The child's stderr goes to ours, and its last lines into the error report.
    let stderr = child.stderr.take().expect("piped");
    let tail = Arc::new(Mutex::new(std::collections::VecDeque::<String>::new()));
    let tail_w = tail.clone();
    let rank = task.rank;
    let errs = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[rank {rank}] {line}");
            let mut t = tail_w.lock().expect("lock");
            t.push_back(line);
            if t.len() > 8 {
                t.pop_front();
            }
        }
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut result = TrainRankResult { rank: task.rank, ..Default::default() };
    let mut done = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut stdout_open = true;
    let status = loop {
        tokio::select! {
            line = lines.next_line(), if stdout_open => match line {
                Ok(Some(line)) => observe(&line, &mut result, &mut done, &progress),
                _ => stdout_open = false,
            },
            status = child.wait(), if !stdout_open => break status,
            _ = tick.tick() => {
                if progress.cancelled.load(Ordering::Relaxed) {
                    tracing::info!(rank = task.rank, "lease taken back (the gang restarts): stopping the rank process");
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Err(("stopped: the coordinator took the lease back".into(), true));
                }
            }
        }
    };
    let _ = errs.await;
    let status = status.map_err(|e| (format!("lost the rank process: {e}"), true))?;
    if status.success() && done {
        return Ok(serde_json::to_string(&result).expect("result serializes"));
    }
    let tail: Vec<String> = tail.lock().expect("lock").iter().cloned().collect();
    let why = if tail.is_empty() { String::new() } else { format!(": {}", tail.join(" | ")) };
    match status.code() {
        Some(0) => Err((format!("rank {} exited without finishing{why}", task.rank), true)),
        // Usage errors (bad preset, bad spec) recur on every retry.
        Some(2) => Err((format!("rank {} refused its arguments{why}", task.rank), false)),
        Some(c) => Err((format!("rank {} exited with code {c}{why}", task.rank), true)),
        None => Err((format!("rank {} was killed by a signal{why}", task.rank), true)),
    }
}

/// One line of the child's output: a step's metrics, the final `done`, or not an event.
fn observe(line: &str, result: &mut TrainRankResult, done: &mut bool, progress: &TaskProgress) {
    match RankEvent::parse(line) {
        Some(RankEvent::Done { step, total_steps, .. }) => {
            result.step = step;
            result.total_steps = total_steps;
            *done = true;
        }
        Some(RankEvent::Step(m)) => {
            result.steps_run += 1;
            result.tokens += m.tokens;
            result.loss = Some(m.loss);
            // Rank 0 reports the step (so a job's running "docs" is its step) and every rank
            // its tokens (so their sum is the job's).
            if result.rank == 0 {
                progress.docs.store(m.step + 1, Ordering::Relaxed);
            }
            progress.bytes.store(result.tokens, Ordering::Relaxed);
        }
        Some(RankEvent::Resumed { .. }) | None => {}
    }
}

/// A free GPU of this worker (none on a CPU worker); busy until the slot is dropped.
pub(crate) fn acquire_gpu(launch: &TrainLaunch) -> Result<GpuSlot, (String, bool)> {
    let gpu = {
        let mut busy = launch.busy.lock().expect("lock");
        let index = busy.iter().position(|b| !b);
        if let Some(i) = index {
            busy[i] = true;
        }
        GpuSlot { busy: launch.busy.clone(), index }
    };
    if !launch.gpus.is_empty() && gpu.index.is_none() {
        return Err(("every GPU of this worker is busy (more train slots than GPUs?)".into(), true));
    }
    Ok(gpu)
}

/// A child `lehr` (the libtorch build) on the slot's GPU: piped output, killed when dropped
/// and when this worker dies (`PR_SET_PDEATHSIG`), never taking the submit path from the
/// worker's environment.
pub(crate) fn child_command(launch: &TrainLaunch, gpu: &GpuSlot) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&launch.exe);
    cmd.env_remove("LEHR_COORDINATOR");
    if let Some(i) = gpu.index {
        cmd.env("CUDA_VISIBLE_DEVICES", &launch.gpus[i]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    die_with_parent(&mut cmd, libc::SIGKILL);
    cmd
}

/// Asks the kernel to send `signal` to the child when the process that started it dies, even
/// by SIGKILL, so no child outlives its supervisor (Linux; elsewhere a no-op).
pub fn die_with_parent(cmd: &mut tokio::process::Command, signal: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (cmd, signal);
}

/// `text` in a new private temporary file (mode 0600, unpredictable name with `prefix`).
pub(crate) fn write_private_config(text: &str, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::Builder::new().prefix(prefix).suffix(".json").tempfile()?;
    f.write_all(text.as_bytes())?;
    f.flush()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rank_specs_are_private_and_never_follow_a_planted_link() {
        let prefix = format!("lehr-run-test-{}-", std::process::id());
        // someone plants the old predictable name as a link to a file of theirs
        let planted = std::env::temp_dir().join(format!("{prefix}.json"));
        let victim = tempfile::NamedTempFile::new().unwrap();
        let _ = std::os::unix::fs::symlink(victim.path(), &planted);
        let f = super::write_private_config("{\"rank\": 0}", &prefix).unwrap();
        assert_ne!(f.path(), planted.as_path());
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), "{\"rank\": 0}");
        assert_eq!(std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o077, 0, "private to this user");
        assert!(std::fs::read_to_string(victim.path()).unwrap().is_empty(), "the planted link's target is untouched");
        let path = f.path().to_path_buf();
        drop(f);
        assert!(!path.exists(), "removed with its handle");
        let _ = std::fs::remove_file(&planted);
    }
}
