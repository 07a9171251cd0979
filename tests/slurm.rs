//! The Slurm batch scripts under a real Slurm 22.05 (deploy/slurm/testbed.sh: munge, slurmctld
//! and two slurmd "nodes" on this machine). `sbatch deploy/slurm/corpus.sbatch` writes what
//! `corpus build --workers 1` writes, byte for byte, also when a worker process inside the
//! allocation is SIGKILLed mid-shard; `sbatch deploy/slurm/train.sbatch` trains two CPU ranks to
//! the end, and a rank killed mid-run restarts the gang from the latest checkpoint.
//! Without Slurm (not root, no apt) the tests say why and pass, unless LEHR_REQUIRE_SLURM is set
//! (scripts/test.sh sets it where it could install Slurm). A failing test keeps the testbed's
//! configuration and logs, the jobs' output and `scontrol show job` under
//! target/test-artifacts/slurm-*.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A running testbed; stopped on drop, its directory kept as an artifact if the test panicked.
struct Testbed {
    dir: tempfile::TempDir,
    conf: PathBuf,
    jobs: Vec<String>,
}

fn testbed_script() -> PathBuf {
    repo().join("deploy/slurm/testbed.sh")
}

impl Testbed {
    /// Starts a testbed of two 2-CPU nodes, or None (with the reason printed) without Slurm.
    fn start() -> Option<Testbed> {
        let have =
            Command::new("sh").args(["-c", "command -v slurmctld && command -v slurmd && command -v sbatch"]).output();
        if !have.map(|o| o.status.success()).unwrap_or(false) {
            let why = "Slurm is not installed (deploy/slurm/testbed.sh install, as root)";
            assert!(std::env::var_os("LEHR_REQUIRE_SLURM").is_none(), "{why}");
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(testbed_script()).arg("start").arg(dir.path()).args(["2", "2"]).output().unwrap();
        assert!(out.status.success(), "testbed: {}", String::from_utf8_lossy(&out.stderr));
        Some(Testbed { conf: dir.path().join("slurm.conf"), dir, jobs: Vec::new() })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `sbatch --parsable` with the lehr binary under test; the Slurm job id.
    fn sbatch(&mut self, script: &str, args: &[&str], env: &[(&str, String)]) -> String {
        let mut c = self.cmd("sbatch");
        c.current_dir(repo())
            .env("LEHR", env!("CARGO_BIN_EXE_lehr"))
            .env("LEHR_LOG", "info")
            .env_remove("LEHR_TOKEN")
            .env_remove("LEHR_TLS_CA")
            .env_remove("LEHR_COORDINATOR")
            .args(["--parsable", "--nodes=2", "--cpus-per-task=1"])
            .arg(format!("--output={}/slurm-%j.out", self.dir.path().display()))
            .arg(repo().join(script))
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "sbatch: {}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8(out.stdout).unwrap().trim().split(';').next().unwrap().to_string();
        self.jobs.push(id.clone());
        id
    }

    /// `scontrol show job ID` as key=value pairs.
    fn job(&self, id: &str) -> std::collections::BTreeMap<String, String> {
        let out = self.cmd("scontrol").args(["show", "job", "-o", id]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }

    /// Waits until the Slurm job has ended; its `scontrol show job` fields.
    fn wait(&self, id: &str, timeout: Duration) -> std::collections::BTreeMap<String, String> {
        wait_until(&format!("Slurm job {id} to end"), timeout, || {
            let j = self.job(id);
            matches!(
                j.get("JobState").map(String::as_str),
                Some("COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL")
            )
            .then_some(j)
        })
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("slurm-{id}.out"))).unwrap_or_default()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = repo().join("target/test-artifacts").join(format!(
                "slurm-{}",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
            ));
            let _ = std::fs::create_dir_all(&keep);
            for id in &self.jobs {
                let out = self.cmd("scontrol").args(["show", "job", id]).output();
                if let Ok(o) = out {
                    let _ = std::fs::write(keep.join(format!("scontrol-job-{id}.txt")), o.stdout);
                }
            }
            let _ = Command::new("cp").arg("-a").arg(self.dir.path()).arg(keep.join("testbed")).status();
            eprintln!("the Slurm testbed, its logs and the jobs' output are in {}", keep.display());
        }
        let _ = Command::new(testbed_script()).arg("stop").arg(self.dir.path()).status();
    }
}

/// `lehr ...` against the batch job's coordinator (its token and CA are in the state directory).
fn lehr_in(state: &Path) -> impl Fn(&[&str]) -> Option<Value> + '_ {
    move |args: &[&str]| {
        let ca = std::fs::read_dir(state)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("tls-"))?
            .join("ca.pem");
        let token = std::fs::read_to_string(state.join("token")).ok()?;
        let out = lehr().args(args).env("LEHR_TOKEN", token.trim()).env("LEHR_TLS_CA", ca).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
}

/// `lehr status JOB --tasks --json` for the job id the batch script saved in `state/job_file`.
fn job_tasks(state: &Path, url: &str, job_file: &str) -> Option<Value> {
    let job_id = std::fs::read_to_string(state.join(job_file)).ok()?;
    lehr_in(state)(&["status", job_id.trim(), "--tasks", "--json", "--coordinator", url])
}

/// corpus.sbatch over the corpus into DIR/NAME with slow shards (so a kill or a requeue lands
/// inside one) and a 3 s lease TTL; the Slurm job id, the output, the state and the URL.
fn slow_corpus_job(bed: &mut Testbed, dir: &Path, name: &str) -> (String, PathBuf, PathBuf, String) {
    let out = dir.join(name);
    let spec = write_spec(dir, name, &corpus_inputs(), &out, crash_test_shape().0, "");
    let state = dir.join(format!("state-{name}"));
    let port = free_port();
    let id = bed.sbatch(
        "deploy/slurm/corpus.sbatch",
        &[spec.to_str().unwrap()],
        &[
            ("LEHR_PORT", port.to_string()),
            ("LEHR_STATE", state.display().to_string()),
            ("LEHR_LEASE_TTL", "3s".into()),
            ("LEHR_FAULT_SLOW_DOC_US", crash_test_shape().1.to_string()),
        ],
    );
    (id, out, state, format!("https://127.0.0.1:{port}"))
}

fn reference_run(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let out = dir.join("reference");
    let spec = write_spec(dir, "reference", &corpus_inputs(), &out, crash_test_shape().0, "");
    let run = lehr().args(["corpus", "build", "--workers", "1", "--json"]).arg(&spec).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    checksums(&out)
}

#[test]
fn corpus_sbatch_on_two_nodes_matches_one_worker_also_with_a_worker_killed() {
    let Some(mut bed) = Testbed::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let reference = reference_run(dir.path());

    // 1. two nodes, one worker each
    let out = dir.path().join("slurm");
    let spec = write_spec(dir.path(), "slurm", &corpus_inputs(), &out, crash_test_shape().0, "");
    let state = dir.path().join("state-1");
    let id = bed.sbatch(
        "deploy/slurm/corpus.sbatch",
        &[spec.to_str().unwrap()],
        &[("LEHR_PORT", free_port().to_string()), ("LEHR_STATE", state.display().to_string())],
    );
    let job = bed.wait(&id, Duration::from_secs(300));
    assert_eq!(job.get("ExitCode").map(String::as_str), Some("0:0"), "{job:?}\n{}", bed.log(&id));
    let log = bed.log(&id);
    assert!(log.contains("slurm-") && log.matches("worker registered").count() >= 2, "{log}");
    assert_eq!(checksums(&out), reference, "sbatch on two nodes must write what 1 worker writes");

    // 2. the same with slow shards, and the worker on the second node SIGKILLed inside one
    let (id, out, state, url) = slow_corpus_job(&mut bed, dir.path(), "killed");
    let node2 = bed.job(&id).get("NodeList").cloned();
    let victim = wait_until("a worker of the second node in a shard", Duration::from_secs(120), || {
        let workers = lehr_in(&state)(&["status", "--json", "--coordinator", &url])?["workers"].clone();
        let w = workers.as_array()?.iter().find(|w| w["name"].as_str().is_some_and(|n| n.ends_with("n2")))?.clone();
        let status = job_tasks(&state, &url, "corpus-job")?;
        status["tasks"]
            .as_array()?
            .iter()
            .any(|t| t["state"] == "leased" && t["worker_id"] == w["worker_id"])
            .then_some(w)
    });
    let name = victim["name"].as_str().unwrap().to_string();
    let pids = Command::new("pgrep").args(["-f", &format!("worker --name {name} ")]).output().unwrap();
    let pids = String::from_utf8(pids.stdout).unwrap();
    let pid = pids.split_whitespace().next().unwrap_or_else(|| panic!("no process for {name} ({node2:?})"));
    assert!(Command::new("kill").args(["-9", pid]).status().unwrap().success());

    let job = bed.wait(&id, Duration::from_secs(300));
    assert_eq!(job.get("ExitCode").map(String::as_str), Some("0:0"), "{job:?}\n{}", bed.log(&id));
    assert_eq!(checksums(&out), reference, "a worker killed inside the allocation must not change the output");

    // 3. `scontrol requeue` mid-job: Slurm kills every step and runs the script again; it restarts
    // the coordinator on the same state and follows the job it submitted, keeping what committed
    let (id, out, state, url) = slow_corpus_job(&mut bed, dir.path(), "requeued");
    let committed = |s: &Value| s["tasks"].as_array().map(|t| t.iter().filter(|t| t["state"] == "committed").count());
    let before = wait_until("a few shards committed", Duration::from_secs(120), || {
        let s = job_tasks(&state, &url, "corpus-job")?;
        let n = committed(&s)?;
        (n >= 2 && n + 4 < s["tasks"].as_array()?.len()).then_some(s)
    });
    let requeue = bed.cmd("scontrol").args(["requeue", &id]).output().unwrap();
    assert!(requeue.status.success(), "{}", String::from_utf8_lossy(&requeue.stderr));
    // a requeued job waits two minutes before it is eligible again; the test does not
    let pending = wait_until("the requeued job to be pending", Duration::from_secs(60), || {
        let j = bed.job(&id);
        matches!(j.get("JobState").map(String::as_str), Some("PENDING" | "RUNNING")).then_some(j)
    });
    if pending.get("JobState").map(String::as_str) == Some("PENDING") {
        // Not in the second of the requeue: slurmd compares a job credential's creation time
        // with the revocation of the first run's in whole seconds, and kills a restart that
        // lands in the same second ("Job credential revoked": CI saw it, 30 ms apart).
        std::thread::sleep(Duration::from_secs(2));
        let _ = bed.cmd("scontrol").args(["update", &format!("JobId={id}"), "StartTime=now"]).output();
    }
    let job = bed.wait(&id, Duration::from_secs(300));
    assert_eq!(job.get("ExitCode").map(String::as_str), Some("0:0"), "{job:?}\n{}", bed.log(&id));
    assert_eq!(job.get("Restarts").map(String::as_str), Some("1"), "{job:?}");
    let log = bed.log(&id);
    assert!(log.contains("requeued (restart 1): following job"), "{log}");
    assert_eq!(checksums(&out), reference, "a requeued batch job must write what 1 worker writes");
    // the second run followed the job the first submitted
    let job_id = std::fs::read_to_string(state.join("corpus-job")).unwrap();
    assert_eq!(before["job"]["job_id"].as_str(), Some(job_id.trim()), "{before}");

    // 4. the coordinator state in PostgreSQL: LEHR_STATE a URL (the coordinator step reads it
    // from its environment), the token, certificates and job id in LEHR_RUN_DIR; the same output,
    // the state in the database, and the password in no log or job record
    let Some(pg) = common::pg::Postgres::start() else { return };
    let db = pg.database("slurm");
    let out = dir.path().join("on-postgres");
    let spec = write_spec(dir.path(), "on-postgres", &corpus_inputs(), &out, crash_test_shape().0, "");
    let run_dir = dir.path().join("run-postgres");
    let id = bed.sbatch(
        "deploy/slurm/corpus.sbatch",
        &[spec.to_str().unwrap()],
        &[
            ("LEHR_PORT", free_port().to_string()),
            ("LEHR_STATE", db.clone()),
            ("LEHR_RUN_DIR", run_dir.display().to_string()),
        ],
    );
    let job = bed.wait(&id, Duration::from_secs(300));
    let log = bed.log(&id);
    assert_eq!(job.get("ExitCode").map(String::as_str), Some("0:0"), "{job:?}\n{log}\n{}", pg.log());
    assert_eq!(checksums(&out), reference, "sbatch on a PostgreSQL state must write what 1 worker writes");
    let job_id = std::fs::read_to_string(run_dir.join("corpus-job")).unwrap();
    let saved = pg.sql("slurm", &format!("SELECT state FROM lehr_jobs WHERE id = '{}'", job_id.trim()));
    assert_eq!(saved, "succeeded", "the job's state is in the database");
    let record = format!("{job:?}{log}");
    assert!(!record.contains(common::pg::PASSWORD), "the password leaked: {record}");
}

#[cfg(feature = "train")]
#[test]
fn train_sbatch_trains_two_cpu_ranks_and_restarts_the_gang_when_a_rank_is_killed() {
    let Some(mut bed) = Testbed::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let spec = small_spec(dir.path());
    let out = dir.path().join("run");
    let state = dir.path().join("state");
    let port = free_port();
    let id = bed.sbatch(
        "deploy/slurm/train.sbatch",
        &[spec.to_str().unwrap(), tokens.to_str().unwrap(), out.to_str().unwrap(), "tiny"],
        &[
            ("LEHR_PORT", port.to_string()),
            ("LEHR_STATE", state.display().to_string()),
            ("LEHR_LEASE_TTL", "3s".into()),
            ("LEHR_CHECKPOINT_EVERY", "4".into()),
            ("LEHR_TRAIN_ARGS", "--micro-batch 4".into()),
            ("LEHR_FAULT_SLOW_STEP_MS", "150".into()),
        ],
    );
    let total = 5 + 12 + 6;
    // Past the step-4 checkpoint, before the end: SIGKILL one rank process.
    wait_until("rank 0 to pass step 6", Duration::from_secs(240), || (metric_steps(&out).len() >= 6).then_some(()));
    assert!(metric_steps(&out).len() < total, "the run must still be going");
    let pids = Command::new("pgrep").args(["-f", "train rank"]).output().unwrap();
    let pids = String::from_utf8(pids.stdout).unwrap();
    let ranks: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(ranks.len(), 2, "two rank processes: {pids}\n{}", bed.log(&id));
    assert!(Command::new("kill").args(["-9", ranks[1]]).status().unwrap().success());

    // The coordinator sees the rank fail (or its lease expire) and restarts the gang; read it
    // before the allocation, and the coordinator with it, ends.
    let url = format!("https://127.0.0.1:{port}");
    assert!(state.join("train-job").exists(), "the batch script saved the run's id");
    let restarted = wait_until("the killed rank's attempt to end", Duration::from_secs(240), || {
        if let Some(s) = job_tasks(&state, &url, "train-job") {
            let outcomes: Vec<String> = s["tasks"]
                .as_array()?
                .iter()
                .flat_map(|t| t["attempt_log"].as_array().into_iter().flatten())
                .filter_map(|a| a["outcome"].as_str().map(String::from))
                .collect();
            if outcomes.iter().any(|o| o == "failed" || o == "expired") {
                return Some(outcomes);
            }
        }
        let ended = !matches!(bed.job(&id).get("JobState").map(String::as_str), Some("RUNNING" | "PENDING"));
        ended.then(Vec::new)
    });
    assert!(!restarted.is_empty(), "the job ended before any rank attempt failed\n{}", bed.log(&id));

    let job = bed.wait(&id, Duration::from_secs(400));
    assert_eq!(job.get("ExitCode").map(String::as_str), Some("0:0"), "{job:?}\n{}", bed.log(&id));
    assert_eq!(metric_steps(&out), (0..total as u64).collect::<Vec<_>>(), "one metrics line per step");
    assert!(out.join(format!("checkpoints/step-{total:08}")).is_dir());
}
