//! The crash scenarios, run against each state store (tests/cluster.rs on SQLite,
//! tests/postgres.rs on PostgreSQL): real processes on 127.0.0.1, SIGKILLs in the middle of
//! shards, and outputs that must equal a 1-worker run's, byte for byte.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// A `corpus build --workers 1` run of the crash-test corpus: its output's checksums.
pub fn reference_run(dir: &Path) -> std::collections::BTreeMap<String, String> {
    reference_run_of(dir, &corpus_inputs(), crash_test_shape().0)
}

/// A `corpus build --workers 1` run of `inputs` split at `split`: its output's checksums.
pub fn reference_run_of(dir: &Path, inputs: &[String], split: &str) -> std::collections::BTreeMap<String, String> {
    let out = dir.join("reference");
    let spec = write_spec(dir, "reference", inputs, &out, split, "");
    let run = lehr().args(["corpus", "build"]).arg(&spec).args(["--workers", "1", "--json"]).output().unwrap();
    assert!(run.status.success(), "reference run failed: {}", String::from_utf8_lossy(&run.stderr));
    let report = json_of(&run);
    assert_eq!(report["job"]["state"], "succeeded");
    let sums = checksums(&out);
    assert!(
        sums.contains_key("manifest.json") && sums.keys().filter(|k| k.starts_with("part-")).count() >= 10,
        "{sums:?}"
    );
    sums
}

/// Whether a shard is a long one (a whole compressed file, or a byte range of at least 100 KB),
/// so that a kill right after it is leased lands inside it, not after its last document.
pub fn long_shard(shard: &str) -> bool {
    if let Some((_, range)) = shard.rsplit_once(" [") {
        let range = range.trim_end_matches(')');
        let (a, b) = range.split_once("..").unwrap();
        b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() >= 100_000
    } else {
        shard.ends_with(".gz") || shard.ends_with(".parquet")
    }
}

/// A long shard leased to the worker with this name.
pub fn busy_task_on(url: &str, job: &str, worker_name: &str) -> Option<u64> {
    let workers = workers(url);
    let id = workers.as_array()?.iter().find(|w| w["name"] == worker_name)?["worker_id"].as_str()?.to_string();
    let status = job_status(url, job)?;
    status["tasks"].as_array()?.iter().find_map(|t| {
        (t["state"] == "leased" && t["worker_id"] == id.as_str() && long_shard(t["shard"].as_str().unwrap_or("")))
            .then(|| t["task_id"].as_u64())
            .flatten()
    })
}

/// Three workers, one SIGKILLed inside a shard: the job still writes what one worker writes.
pub fn worker_sigkilled_mid_shard(dir: &Path, state: &OsStr) {
    let reference = reference_run(dir);

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _coordinator = spawn_coordinator(state, port, "3s");
    // w1, the one to be killed, is a hundred times slower: its first shard takes about a
    // minute, so the kill lands inside it however late the poll sees it (at ten times, a busy
    // machine once saw the victim commit before the kill).
    let mut workers: Vec<Proc> = (0..3)
        .map(|i| spawn_worker(&url, &format!("w{i}"), crash_test_shape().1 * if i == 1 { 100 } else { 1 }))
        .collect();
    let out = dir.join("three");
    let spec = write_spec(dir, "three", &corpus_inputs(), &out, crash_test_shape().0, "");
    let job = submit(&url, &spec);

    // Kill worker w1 while it holds a shard it has started reading.
    let victim = wait_until("w1 to be in a shard", Duration::from_secs(60), || busy_task_on(&url, &job, "w1"));
    workers[1].sigkill();

    let status = wait_for_end(&url, &job);
    assert_eq!(job_state(&status), "succeeded", "{status:#}");
    let task = status["tasks"].as_array().unwrap().iter().find(|t| t["task_id"] == victim).unwrap();
    let outcomes: Vec<&str> =
        task["attempt_log"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert!(
        outcomes.contains(&"expired") && outcomes.last() == Some(&"committed"),
        "the killed attempt expired and another committed: {outcomes:?}"
    );
    assert_eq!(checksums(&out), reference, "3 workers with a crash must write what 1 worker writes");
}

/// The coordinator SIGKILLed mid-job and restarted on the same state: nothing committed is
/// redone, and the output is what one worker writes.
pub fn coordinator_sigkilled_and_restarted(dir: &Path, state: &OsStr) {
    let reference = reference_run(dir);

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut coordinator = spawn_coordinator(state, port, "3s");
    let _workers: Vec<Proc> = (0..3).map(|i| spawn_worker(&url, &format!("w{i}"), crash_test_shape().1)).collect();
    let out = dir.join("restarted");
    let spec = write_spec(dir, "restarted", &corpus_inputs(), &out, crash_test_shape().0, "");
    let job = submit(&url, &spec);

    let before = wait_half_done(&url, &job);
    coordinator.sigkill();
    std::thread::sleep(Duration::from_millis(1500));
    let _coordinator = spawn_coordinator(state, port, "3s");

    let status = wait_for_end(&url, &job);
    assert_eq!(job_state(&status), "succeeded", "{status:#}");
    assert_committed_kept(&before, &status, "the restart");
    assert_eq!(checksums(&out), reference, "a coordinator crash must not change the output");
}

/// Waits until some shards are committed and others are running (the moment to kill a
/// coordinator); the job's tasks then.
pub fn wait_half_done(url: &str, job: &str) -> Vec<Value> {
    wait_until("a job half done", Duration::from_secs(120), || {
        let s = job_status(url, job)?;
        let tasks = s["tasks"].as_array()?.clone();
        let committed = tasks.iter().filter(|t| t["state"] == "committed").count();
        let leased = tasks.iter().filter(|t| t["state"] == "leased").count();
        (committed >= 2 && leased >= 1 && committed + 3 < tasks.len()).then_some(tasks)
    })
}

/// Every task committed in `before` is committed in `status` with the same attempts: nothing
/// redone across `what`.
pub fn assert_committed_kept(before: &[Value], status: &Value, what: &str) {
    let after = status["tasks"].as_array().unwrap();
    for t in before.iter().filter(|t| t["state"] == "committed") {
        let a = after.iter().find(|x| x["task_id"] == t["task_id"]).unwrap();
        assert_eq!(a["attempts"], t["attempts"], "task {} ran again after {what}", t["task_id"]);
        assert_eq!(a["attempt_log"], t["attempt_log"], "task {} changed across {what}", t["task_id"]);
    }
}
