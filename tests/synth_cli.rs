//! The synth stage against a real HTTP server that misbehaves (tests/synth_fault_server.py):
//! 429s with Retry-After, 500s, connections closed mid-body, stalls past the timeout, bodies
//! that are not JSON and answers without choices. A job through it accounts for every input
//! document and writes exactly what a job against the same server without faults writes; no
//! answered request is sent twice; a rerun is answered from the request cache alone, and
//! `--no-cache` sends everything again.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Server {
    proc: Proc,
    base: String,
}

fn start_server() -> Server {
    let mut child = Command::new("python3")
        .arg(repo().join("tests/synth_fault_server.py"))
        .args(["--seed", "7", "--stall-secs", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
    Server { proc: Proc(child), base: format!("http://127.0.0.1:{port}") }
}

/// A tiny HTTP/1.1 client for the server's control endpoints (no dependency for two calls).
fn http(base: &str, method: &str, path: &str, body: &str) -> Value {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let json = resp.split("\r\n\r\n").nth(1).unwrap_or_else(|| panic!("{resp}"));
    serde_json::from_str(json).unwrap()
}

fn write_input(dir: &Path, docs: usize) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/data/en.jsonl")).unwrap();
    let path = dir.join("in.jsonl");
    let lines: Vec<&str> = text.lines().take(docs).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn spec(dir: &Path, name: &str, input: &Path, out: &Path, base: &str) -> PathBuf {
    let text = format!(
        r#"version = 1
name = "synth-test"
[input]
paths = [{input:?}]
split-size = "8KiB"

[[stage]]
type = "synth"
model = "fault-model"
api = "chat"
concurrency = 8
timeout-secs = 0.5
max-retries = 40
backoff-base-secs = 0.01
backoff-max-secs = 0.2
breaker-failures = 1000
breaker-cooldown-secs = 0.1
seed = 11
temperature = 0.7
max-tokens = 64
[[stage.endpoint]]
url = "{base}/v1"
[[stage.template]]
name = "qa"
system = "You write problems."
prompt = "Write a problem inspired by: {{text}}"
n = 2
# the fixture has no `title`: every document's sample of this template is a counted failure
[[stage.template]]
name = "titled"
prompt = "Title: {{title}}"

[[stage]]
type = "min-length"
min-chars = 20

[output]
path = {out:?}
overwrite = true
"#
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn build(spec: &Path, workers: &str, extra: &[&str]) -> Value {
    let out = lehr().args(["corpus", "build", "--json", "--workers", workers]).args(extra).arg(spec).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    json_of(&out)
}

fn manifest(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn synth_stage(m: &Value) -> Value {
    m["stages"].as_array().unwrap().iter().find(|s| s["name"] == "synth").unwrap().clone()
}

/// The output documents, decompressed, in file order.
fn documents(out: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("part-") && n.ends_with(".jsonl.zst"))
        .collect();
    names.sort();
    let mut docs = Vec::new();
    for n in names {
        let bytes = zstd::decode_all(std::fs::File::open(out.join(n)).unwrap()).unwrap();
        for line in String::from_utf8(bytes).unwrap().lines() {
            docs.push(serde_json::from_str(line).unwrap());
        }
    }
    docs
}

#[test]
fn synth_through_faults_equals_a_clean_run_and_reruns_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server();
    let n_docs = 24;
    let input = write_input(tmp.path(), n_docs);

    // 1. a well-behaved server
    let clean_out = tmp.path().join("clean");
    build(&spec(tmp.path(), "clean.toml", &input, &clean_out, &server.base), "1", &[]);
    let clean_stats = http(&server.base, "GET", "/stats", "");
    assert_eq!(clean_stats["received"], (2 * n_docs) as u64, "{clean_stats}");

    // 2. the same server failing a third of the time, in six ways
    let faults =
        r#"{"r429": 0.08, "r500": 0.06, "rclose": 0.06, "rstall": 0.04, "rbadjson": 0.06, "rnochoices": 0.04}"#;
    http(&server.base, "POST", "/config", faults);
    let faulty_out = tmp.path().join("faulty");
    let faulty_spec = spec(tmp.path(), "faulty.toml", &input, &faulty_out, &server.base);
    build(&faulty_spec, "2", &[]);
    let stats = http(&server.base, "GET", "/stats", "");
    eprintln!("{stats}");
    for (fault, n) in stats["faults"].as_object().unwrap() {
        assert!(n.as_u64().unwrap() > 0, "fault {fault} never happened: {stats}");
    }
    // every request answered exactly once: no answered request was sent again
    assert_eq!(stats["answered"], (2 * n_docs) as u64, "{stats}");
    assert!(stats["per_body"].as_object().unwrap().values().all(|v| v == 1), "{stats}");

    let (clean, faulty) = (documents(&clean_out), documents(&faulty_out));
    assert_eq!(clean.len(), 2 * n_docs);
    assert_eq!(clean, faulty, "faults changed the output");
    let first = &clean[0];
    assert!(first["id"].as_str().unwrap().ends_with("#qa-0"), "{first}");
    let p = &first["synth"];
    assert_eq!(
        (p["template"].as_str(), p["model"].as_str(), p["finish_reason"].as_str()),
        (Some("qa"), Some("fault-model"), Some("stop"))
    );
    assert_eq!(p["sampling"]["max_tokens"], 64);
    assert!(p["seed"].as_u64().is_some() && p["completion_tokens"].as_u64().unwrap() > 0, "{first}");
    assert_ne!(clean[0]["synth"]["seed"], clean[1]["synth"]["seed"], "samples have their own seeds");

    // every document accounted for: two generated, one counted failure each
    let m = manifest(&faulty_out);
    let s = synth_stage(&m);
    eprintln!("{s}");
    assert_eq!(s["docs_in"], n_docs as u64);
    assert_eq!(s["kept"], (2 * n_docs) as u64);
    let c = &s["counters"];
    assert_eq!(c["requests"], (3 * n_docs) as u64);
    assert_eq!(c["failed.synth_missing_field"], n_docs as u64);
    assert_eq!(c["answered"], (2 * n_docs) as u64);
    for kind in ["rate-limited", "server-error", "connection", "timeout", "malformed"] {
        assert!(c[format!("retries.{kind}")].as_u64().unwrap_or(0) > 0, "no retries.{kind}: {c}");
    }
    assert!(c["tokens.completion"].as_u64().unwrap() > 0);
    assert_eq!(c["cache.written"], (2 * n_docs) as u64);
    let rejects = std::fs::read_to_string(faulty_out.join("rejects.jsonl")).unwrap();
    let rejects: Vec<Value> = rejects.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rejects.len(), n_docs);
    assert!(
        rejects.iter().all(|r| r["stage"] == "synth" && r["reason"].as_str().unwrap().contains("{title}")),
        "{:?}",
        rejects[0]
    );

    // 3. a rerun (overwrite = true) is answered from the cache: nothing is sent
    http(&server.base, "POST", "/config", faults);
    build(&faulty_spec, "1", &[]);
    let stats = http(&server.base, "GET", "/stats", "");
    assert_eq!(stats["received"], 0, "a rerun sent requests: {stats}");
    assert_eq!(documents(&faulty_out), clean);
    let c = synth_stage(&manifest(&faulty_out))["counters"].clone();
    assert_eq!((c["cache.hits"].as_u64(), c.get("requests.sent")), (Some((2 * n_docs) as u64), None), "{c}");

    // 4. --no-cache sends every request again (same answers: same seeds)
    http(&server.base, "POST", "/config", "{}");
    build(&faulty_spec, "1", &["--no-cache"]);
    let stats = http(&server.base, "GET", "/stats", "");
    assert_eq!(stats["received"], (2 * n_docs) as u64, "{stats}");
    assert_eq!(documents(&faulty_out), clean);

    // 5. with [dedup] the stages run twice (signatures, then filter); the second pass is
    // answered by the cache, and the manifest counts what the first one spent
    let dedup_out = tmp.path().join("dedup");
    let dedup_spec = spec(tmp.path(), "dedup.toml", &input, &dedup_out, &server.base);
    let text =
        std::fs::read_to_string(&dedup_spec).unwrap().replace("[output]", "[dedup]\nmethod = \"exact\"\n\n[output]");
    std::fs::write(&dedup_spec, text).unwrap();
    http(&server.base, "POST", "/config", "{}");
    build(&dedup_spec, "2", &[]);
    let stats = http(&server.base, "GET", "/stats", "");
    assert_eq!(stats["received"], (2 * n_docs) as u64, "{stats}");
    let c = synth_stage(&manifest(&dedup_out))["counters"].clone();
    assert_eq!((c["requests.sent"].as_u64(), c.get("cache.hits")), (Some((2 * n_docs) as u64), None), "{c}");
    assert!(c["tokens.completion"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(documents(&dedup_out).len(), 2 * n_docs);
    drop(server.proc);
}

/// The part files and rejects of an output directory, by checksum (the manifest's counters say
/// how many answers came from the cache, so they differ between an interrupted run and another).
fn data_files(out: &Path) -> std::collections::BTreeMap<String, String> {
    checksums(out).into_iter().filter(|(k, _)| k.starts_with("part-") || k == "rejects.jsonl").collect()
}

/// How many answers the server sent for a body it had already answered.
fn answered_again(stats: &Value) -> u64 {
    stats["per_body"].as_object().unwrap().values().map(|v| v.as_u64().unwrap().saturating_sub(1)).sum()
}

#[test]
fn synth_survives_a_sigkilled_worker_and_coordinator_resending_only_in_flight_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server();
    let n_docs = 32;
    let concurrency = 4u64;
    let input = write_input(tmp.path(), n_docs);
    // one shard, so both kills land inside it
    let one_shard = |name: &str, out: &Path| {
        let p = spec(tmp.path(), name, &input, out, &server.base);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("split-size = \"8KiB\"", "split-size = \"4MiB\"")
            .replace("concurrency = 8", &format!("concurrency = {concurrency}"));
        std::fs::write(&p, text).unwrap();
        p
    };

    // the uninterrupted run
    let reference_out = tmp.path().join("reference");
    build(&one_shard("reference.toml", &reference_out), "1", &[]);
    let reference = data_files(&reference_out);
    assert!(reference.keys().any(|k| k.starts_with("part-")), "{reference:?}");

    // slow answers (0.3 s each, 4 at a time: about 5 s for the shard's 64 requests)
    http(&server.base, "POST", "/config", r#"{"delay": 0.3}"#);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let state = tmp.path().join("state");
    let mut coordinator = spawn_coordinator(&state, port, "2s");
    let mut first = spawn_worker(&url, "w1", 0);
    let out = tmp.path().join("killed");
    let job = submit(&url, &one_shard("killed.toml", &out));

    // SIGKILL the worker once a dozen answers came back: they are in its cache, the in-flight
    // ones are lost
    let answered = |at_least: u64| {
        wait_until("answers", Duration::from_secs(60), || {
            let stats = http(&server.base, "GET", "/stats", "");
            (stats["answered"].as_u64().unwrap() >= at_least).then_some(stats)
        })
    };
    let at_kill = answered(12);
    first.sigkill();
    let answered_at_kill = at_kill["answered"].as_u64().unwrap();
    assert!(answered_at_kill < 2 * n_docs as u64 - 8, "the kill came too late to test anything: {at_kill}");
    let _second = spawn_worker(&url, "w2", 0);

    // then SIGKILL the coordinator while the second worker is in the same shard, and restart it
    answered(answered_at_kill + concurrency + 8);
    coordinator.sigkill();
    std::thread::sleep(Duration::from_millis(1000));
    let _coordinator = spawn_coordinator(&state, port, "2s");

    let status = wait_for_end(&url, &job);
    assert_eq!(job_state(&status), "succeeded", "{status:#}");
    let stats = http(&server.base, "GET", "/stats", "");
    eprintln!(
        "answered {} (at the worker kill {answered_at_kill}), again {}",
        stats["answered"],
        answered_again(&stats)
    );
    // at most the requests in flight at each of the two kills were answered twice; without the
    // cache the dozen answered before the first kill would have been
    assert!(answered_again(&stats) <= 2 * concurrency, "answered requests were sent again: {stats}");
    assert_eq!(stats["per_body"].as_object().unwrap().len(), 2 * n_docs, "every request was answered: {stats}");
    // the status carries the synth progress: the committed task's requests and tokens
    let synth = &status["job"]["synth"];
    assert_eq!(synth["requests_done"], (3 * n_docs) as u64, "{status:#}");
    assert_eq!(synth["requests_total"], (3 * n_docs) as u64, "{status:#}");
    assert!(synth["completion_tokens"].as_u64().unwrap_or(0) > 0, "{status:#}");
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{status:#}");
    let outcomes: Vec<&str> =
        tasks[0]["attempt_log"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert!(
        outcomes.contains(&"expired") && outcomes.last() == Some(&"committed"),
        "the killed attempt expired and another committed: {outcomes:?}"
    );
    assert_eq!(data_files(&out), reference, "the kills changed the output");
    let c = synth_stage(&manifest(&out))["counters"].clone();
    // the committed attempt found what the killed one had been answered, less its in-flight ones
    assert!(
        c["cache.hits"].as_u64().unwrap() + concurrency >= answered_at_kill,
        "the last attempt reused the cache: {c}"
    );
    drop(server.proc);
}

#[test]
fn synth_presets_and_bad_specs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lehr()
        .args(["corpus", "init", "--preset", "synth-qa", "--input", "x.jsonl", "--output", "o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--endpoint"), "{}", String::from_utf8_lossy(&out.stderr));
    for preset in ["synth-qa", "synth-rewrite", "synth-reasoning"] {
        let out = lehr()
            .args(["corpus", "init", "--preset", preset, "--input", "x.jsonl", "--output", "o"])
            .args(["--endpoint", "http://127.0.0.1:9/v1", "--model", "m"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("type = \"synth\"") && text.contains("model = \"m\""), "{text}");
        if preset == "synth-qa" {
            assert!(text.contains("stop = [\"<END>\"]") && text.contains("max-tokens = 2048"), "{text}");
        }
    }
    // a template placeholder that does not close is a spec error naming the key
    let input = write_input(tmp.path(), 2);
    let bad =
        spec(tmp.path(), "bad.toml", &input, &tmp.path().join("o"), "http://127.0.0.1:9").to_string_lossy().to_string();
    let text = std::fs::read_to_string(&bad).unwrap().replace("Title: {title}", "Title: {title");
    std::fs::write(&bad, text).unwrap();
    let out = lehr().args(["corpus", "build", &bad]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stage[0].template[1].prompt"), "{err}");
}

/// `lehr bench synth` measures the client against its stub, without and with the cache, and
/// fails if the warm pass is not all cache hits (the figures themselves go to docs/benchmarks.md).
#[test]
fn bench_synth_runs_every_pass() {
    let out = lehr().args(["bench", "synth", "--requests", "300", "--concurrency", "8", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json_of(&out);
    for pass in ["no_cache", "cache_cold", "cache_warm"] {
        let p = &r["lehr"][pass];
        assert_eq!(p["requests"], 300, "{r}");
        assert!(p["requests_per_s"].as_f64().unwrap() > 0.0 && p["client_cpu_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(r["lehr"]["cache_warm"]["cache_hits"], 300, "{r}");
    assert_eq!(r["lehr"]["no_cache"]["cache_hits"], 0, "{r}");
}
