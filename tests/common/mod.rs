//! Helpers for the process-level tests: the `lehr` binary, free ports, fixture corpora,
//! output checksums, and JSON from `lehr ... --json`.
#![allow(dead_code)]

pub mod crash;
pub mod llm;
pub mod pg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn lehr() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lehr"));
    c.env_remove("LEHR_COORDINATOR").env_remove("LEHR_TOKEN").env_remove("LEHR_TLS_CA").env("LEHR_LOG", "warn");
    c
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn use_shared() -> bool {
    std::env::var_os("LEHR_TEST_NO_SHARED").is_none() && repo().join("../shared/fixtures/corpus/en.jsonl").exists()
}

/// Shard size and per-document delay for the crash tests: about 25 shards of about a second
/// each, on the fixture corpora (22 MB) or on the repo's sample (3.6 MB).
pub fn crash_test_shape() -> (&'static str, u64) {
    if use_shared() {
        ("1MiB", 1000)
    } else {
        ("160KiB", 5000)
    }
}

/// The fixture corpora from ../shared when present (unless LEHR_TEST_NO_SHARED is set), else
/// the sample shipped in the repo.
pub fn corpus_inputs() -> Vec<String> {
    let shared = repo().join("../shared/fixtures/corpus");
    if use_shared() {
        ["en.jsonl", "zh.jsonl", "ko.jsonl", "en.jsonl.gz", "zh.parquet", "mixed_dirty.jsonl"]
            .iter()
            .map(|f| shared.join(f).to_string_lossy().to_string())
            .collect()
    } else {
        sample_corpus_inputs()
    }
}

/// The sample corpus shipped in the repo (examples/data), whatever ../shared holds.
pub fn sample_corpus_inputs() -> Vec<String> {
    ["*.jsonl", "*.jsonl.gz"]
        .iter()
        .map(|g| repo().join("examples/data").join(g).to_string_lossy().to_string())
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `lehr corpus init --preset PRESET --output OUT --input INPUTS... EXTRA...` written to
/// `DIR/PRESET.toml`.
pub fn init_preset<I: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    preset: &str,
    inputs: &[I],
    out: &Path,
    extra: &[&str],
) -> PathBuf {
    let mut cmd = lehr();
    cmd.args(["corpus", "init", "--preset", preset, "--output"]).arg(out).arg("--input");
    cmd.args(inputs);
    let run = cmd.args(extra).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let spec = dir.join(format!("{preset}.toml"));
    std::fs::write(&spec, &run.stdout).unwrap();
    spec
}

/// Writes a pipeline spec with these inputs and output.
pub fn write_spec(dir: &Path, name: &str, inputs: &[String], output: &Path, split: &str, extra_input: &str) -> PathBuf {
    let spec = format!(
        "version = 1\nname = \"fixture-corpus\"\n[input]\npaths = {inputs:?}\nsplit-size = {split:?}\n{extra_input}\n\
         [[stage]]\ntype = \"normalize\"\n[[stage]]\ntype = \"min-length\"\nmin-chars = 20\n\
         [output]\npath = {out:?}\nformats = [\"jsonl.zst\", \"parquet\"]\n",
        out = output.to_string_lossy()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, spec).unwrap();
    path
}

/// sha256 of every file under `dir` (relative names), except `spec.toml`, which records the
/// output path and so differs between runs into different directories.
pub fn checksums(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                if rel != "spec.toml" {
                    out.insert(rel, hex::encode(Sha256::digest(std::fs::read(&p).unwrap())));
                }
            }
        }
    }
    out
}

pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn sigkill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

/// Starts a coordinator and waits until it answers.
pub fn spawn_coordinator(state: impl AsRef<std::ffi::OsStr>, port: u16, ttl: &str) -> Proc {
    let proc = spawn_coordinator_nowait(state, port, ttl);
    wait_for_coordinator(&format!("http://127.0.0.1:{port}"));
    proc
}

/// Waits (up to 30 s) until the coordinator at `url` answers `lehr status`.
pub fn wait_for_coordinator(url: &str) {
    wait_until("the coordinator to answer", Duration::from_secs(30), || {
        lehr().args(["status", "--json", "--coordinator", url]).output().unwrap().status.success().then_some(())
    });
}

pub fn spawn_coordinator_nowait(state: impl AsRef<std::ffi::OsStr>, port: u16, ttl: &str) -> Proc {
    let child = lehr()
        .args(["coordinator", "--state"])
        .arg(state)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--http", "none", "--lease-ttl", ttl])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

pub fn spawn_worker(url: &str, name: &str, slow_doc_us: u64) -> Proc {
    let child = lehr()
        .args(["worker", "--coordinator", url, "--name", name])
        .env("LEHR_FAULT_SLOW_DOC_US", slow_doc_us.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// `lehr status JOB --tasks --json`, retrying while the coordinator is down.
pub fn job_status(url: &str, job: &str) -> Option<Value> {
    let out = lehr().args(["status", job, "--tasks", "--json", "--coordinator", url]).output().unwrap();
    if out.stdout.is_empty() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

pub fn workers(url: &str) -> Value {
    json_of(&lehr().args(["status", "--json", "--coordinator", url]).output().unwrap())["workers"].clone()
}

pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn job_state(status: &Value) -> String {
    status["job"]["state"].as_str().unwrap_or_default().to_string()
}

/// `lehr corpus build SPEC --coordinator URL --detach`: the job id.
pub fn submit(url: &str, spec: &Path) -> String {
    let out =
        lehr().args(["corpus", "build"]).arg(spec).args(["--coordinator", url, "--detach", "--json"]).output().unwrap();
    assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
    json_of(&out)["job_id"].as_str().unwrap().to_string()
}

/// Waits (up to 4 minutes) until the job succeeded, failed or was cancelled; its status.
pub fn wait_for_end(url: &str, job: &str) -> Value {
    wait_until("the job to end", Duration::from_secs(240), || {
        job_status(url, job).filter(|s| matches!(job_state(s).as_str(), "succeeded" | "failed" | "cancelled"))
    })
}

/// Runs the `tokenize` preset (demo tokenizer, `partition-by = "lang"`) over the repo's en/zh/ko
/// sample into `DIR/tokens` and returns that directory: `lang=en/`, `lang=zh/`, `lang=ko/`
/// token shards, the layout examples/mix-demo.toml expects.
/// Trains the `tiny` model on CPU with the demo mix (examples/mix-demo.toml) over `tokens` into
/// `out` up to step `stop`; the JSON lines it printed.
pub fn train_demo(tokens: &Path, out: &Path, stop: &str) -> Vec<Value> {
    let run = lehr()
        .args(["train", "run", "--model", "tiny", "--device", "cpu", "--json", "--stop-at", stop, "--data"])
        .arg(tokens)
        .arg("--out")
        .arg(out)
        .arg(repo().join("examples/mix-demo.toml"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8(run.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn demo_token_shards(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    let inputs: Vec<PathBuf> =
        ["en.jsonl", "zh.jsonl", "ko.jsonl"].iter().map(|f| repo().join("examples/data").join(f)).collect();
    let spec = init_preset(
        dir,
        "tokenize",
        &inputs,
        &tokens,
        &["--tokenizer", repo().join("examples/tokenizer/lehr-demo-8k.json").to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("attributes = false", "attributes = false\npartition-by = \"lang\"");
    std::fs::write(&spec, text).unwrap();
    let built = lehr().args(["corpus", "build"]).arg(&spec).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    tokens
}

/// The demo sources with a small plan: 64-token sequences, 8 per step, 23 steps over 3 stages.
pub fn small_spec(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/mix-demo.toml"))
        .unwrap()
        .replace("sequence-length = 256", "sequence-length = 64")
        .replace("global-batch-tokens = 2048", "global-batch-tokens = 512")
        .replace(
            "budgets = { en = \"20K\", zh = \"20K\", ko = \"5K\" }",
            "budgets = { en = 1024, zh = 1024, ko = 512 }",
        )
        .replace("tokens = \"500K\"", "tokens = 6144")
        .replace("tokens = \"150K\"", "tokens = 3072")
        // [eval]'s data-dir is relative to the spec's directory, which this copy leaves
        .replace("data-dir = \"data/eval\"", &format!("data-dir = {:?}", repo().join("examples/data/eval")));
    let path = dir.join("small.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The steps in OUT/metrics.jsonl, in file order.
pub fn metric_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|m| m["step"].as_u64().unwrap())
        .collect()
}

/// `GET path` over plain HTTP/1.1 on 127.0.0.1:`port`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
