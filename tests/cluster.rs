//! Real processes on 127.0.0.1: a coordinator, worker processes, SIGKILLs in the middle of
//! shards, and outputs that must equal a 1-worker run's, byte for byte.

mod common;

use common::*;

#[test]
fn worker_sigkilled_mid_shard_job_still_matches_one_worker_run() {
    let dir = tempfile::tempdir().unwrap();
    crash::worker_sigkilled_mid_shard(dir.path(), dir.path().join("state").as_os_str());
}

#[test]
fn coordinator_sigkilled_and_restarted_mid_job_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    crash::coordinator_sigkilled_and_restarted(dir.path(), dir.path().join("state").as_os_str());
}

/// `lehr bench coordinator` drives every simulated worker to the end over gRPC and reports
/// latencies and memory (the figures themselves go to docs/benchmarks.md).
#[test]
fn bench_coordinator_reports_latencies_and_memory() {
    let out = lehr()
        .args(["bench", "coordinator", "--grpc", "--tasks", "400", "--workers", "40", "--connections", "4"])
        .args(["--batch", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    for side in ["in_process", "grpc"] {
        let v = &r[side];
        assert!(v["tasks_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(v["report"]["calls"], 400, "one report per task: {r}");
        assert!(v["lease"]["calls"].as_u64().unwrap() >= 200, "{r}");
        assert!(v["lease"]["p99_ms"].as_f64().unwrap() >= v["lease"]["p50_ms"].as_f64().unwrap(), "{r}");
    }
    assert!(r["in_process"]["rss_bytes_per_task_at_submit"].as_f64().is_some(), "{r}");
}

#[test]
fn bench_coordinator_drives_a_running_coordinator_and_its_job_commits_there() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _coordinator = spawn_coordinator(dir.path().join("state"), port, "10s");
    let url = format!("http://127.0.0.1:{port}");
    let out = lehr()
        .args(["bench", "coordinator", "--coordinator", &url, "--tasks", "300", "--workers", "30"])
        .args(["--connections", "3", "--batch", "4", "--piggyback", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    assert!(r["in_process"].is_null() && r["store"].is_null() && r["coordinator"] == url.as_str(), "{r}");
    assert!(r["grpc"]["tasks_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["grpc"]["lease"]["calls"].as_u64().unwrap() >= 75, "{r}");
    // The job ran on that coordinator: it says so.
    let jobs = lehr().args(["status", "--json", "--coordinator", &url]).output().unwrap();
    let jobs = json_of(&jobs);
    let text = jobs.to_string();
    assert!(text.contains("\"bench\"") && text.contains("succeeded"), "{jobs:#}");
}

#[test]
fn a_stopped_coordinator_makes_cli_calls_fail_as_unreachable_after_the_call_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coordinator = spawn_coordinator(dir.path().join("state"), port, "10s");
    let url = format!("http://127.0.0.1:{port}");
    let pid = coordinator.0.id().to_string();
    // SIGSTOP: the connection stays open and nothing answers (as behind a cut-off link).
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let since = std::time::Instant::now();
    let out = lehr().args(["status", "--json", "--coordinator", &url, "--call-timeout", "1s"]).output().unwrap();
    let took = since.elapsed();
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "unreachable: {stderr}");
    assert!(stderr.contains("did not answer") && stderr.contains("--call-timeout"), "{stderr}");
    assert!(took < std::time::Duration::from_secs(8), "the call timeout bounds the wait: {took:?}");
    // Resumed, it answers again; a zero timeout is refused as bad input.
    assert!(lehr().args(["status", "--json", "--coordinator", &url]).output().unwrap().status.success());
    let zero = lehr().args(["status", "--coordinator", &url, "--call-timeout", "0s"]).output().unwrap();
    assert_eq!(zero.status.code(), Some(2), "{}", String::from_utf8_lossy(&zero.stderr));
}
