//! `lehr bench synth`: the synth client's own cost. A zero-latency OpenAI stub runs on one
//! thread of its own (its CPU time is measured there and left out), the client sends every
//! request through the same code a synth shard uses (`lehr_synth::Generator`), without and
//! with the request cache; `--openai-python` runs the official `openai` client (AsyncOpenAI)
//! against the same stub for the ratio.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use lehr_synth::{Generator, InputDoc, Progress, SynthConfig};
use serde_json::{json, Value};

use super::{CmdResult, Failure, EXIT_OK};
use crate::cli::BenchSynthArgs;

/// CPU seconds (user + system) of this process, or of the calling thread.
fn cpu_secs(who: libc::c_int) -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    unsafe { libc::getrusage(who, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The stub's answer: a chat completion of about a hundred words, as a short synthetic answer.
fn stub_answer() -> bytes::Bytes {
    let text = "Problem: a train leaves at noon at sixty kilometres per hour. ".repeat(10);
    json!({
        "id": "stub", "object": "chat.completion", "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 130, "total_tokens": 190},
    })
    .to_string()
    .into()
}

struct Stub {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    /// The stub thread's CPU seconds, sent when it stops.
    cpu: std::sync::mpsc::Receiver<f64>,
}

impl Stub {
    /// Starts the stub on a thread with a current-thread runtime (so one thread does all its
    /// work and getrusage(RUSAGE_THREAD) there measures all of it).
    fn start() -> anyhow::Result<Stub> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the stub")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/v1", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (cpu_tx, cpu) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("synth-stub".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("stub runtime");
            rt.block_on(async move {
                let body = stub_answer();
                let app = axum::Router::new().route(
                    "/v1/chat/completions",
                    axum::routing::post(move |_req: bytes::Bytes| {
                        let body = body.clone();
                        async move { ([("content-type", "application/json")], body) }
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).expect("stub listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
            drop(rt);
            let _ = cpu_tx.send(cpu_secs(libc::RUSAGE_THREAD));
        })?;
        Ok(Stub { url, stop, cpu })
    }

    fn stop(self) -> f64 {
        let _ = self.stop.send(());
        self.cpu.recv().unwrap_or(0.0)
    }
}

/// One measured pass of the client over `docs`.
struct Pass {
    requests: u64,
    secs: f64,
    cpu: f64,
    counters: std::collections::BTreeMap<String, u64>,
}

async fn pass(cfg: &SynthConfig, cache: Option<lehr_synth::Cache>, docs: &[InputDoc]) -> Result<Pass, Failure> {
    let gen = Generator::new(cfg, cache).map_err(|e| anyhow::anyhow!(e))?;
    let (cancelled, progress) = (AtomicBool::new(false), Progress::default());
    let (t0, c0) = (Instant::now(), cpu_secs(libc::RUSAGE_SELF));
    let out = gen.run(docs, &cancelled, &progress).await.map_err(|e| anyhow::anyhow!(e))?;
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs(libc::RUSAGE_SELF) - c0);
    let failed = out.iter().flatten().filter(|s| s.result.is_err()).count();
    if failed > 0 {
        return Err(anyhow::anyhow!("{failed} requests to the stub failed: {:?}", gen.counters()).into());
    }
    Ok(Pass { requests: docs.len() as u64, secs, cpu, counters: gen.counters() })
}

/// `{rate, cpu per request, requests per core-second}` of a pass, the stub's CPU left out.
fn figures(p: &Pass, stub_cpu: f64) -> Value {
    let client_cpu = (p.cpu - stub_cpu).max(1e-9);
    json!({
        "requests": p.requests,
        "seconds": p.secs,
        "requests_per_s": p.requests as f64 / p.secs,
        "client_cpu_s": client_cpu,
        "requests_per_core_s": p.requests as f64 / client_cpu,
    })
}

pub async fn run(args: BenchSynthArgs) -> CmdResult {
    if args.requests == 0 || args.concurrency == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--requests and --concurrency must be at least 1")));
    }
    let docs: Vec<InputDoc> = (0..args.requests)
        .map(|i| InputDoc {
            id: format!("bench-{i}"),
            text: format!("Document {i}: a paragraph about trains, timetables and arithmetic. ").repeat(8),
            lang: Some("en".into()),
            source: None,
            extra: Default::default(),
        })
        .collect();
    let cache_dir = tempfile::tempdir().context("no temporary directory")?;
    let loc = lehr_pipeline::store::resolve(&cache_dir.path().to_string_lossy()).map_err(|e| anyhow::anyhow!(e))?;
    let cache = || Some(lehr_synth::Cache::new(loc.store.clone(), loc.prefix.clone(), loc.url.clone()));
    let config = |url: &str| -> anyhow::Result<SynthConfig> {
        let spec = format!(
            "model = \"stub\"\nconcurrency = {c}\nmax-retries = 0\nmax-tokens = 256\ntemperature = 0.7\nseed = 1\n\
             [[endpoint]]\nurl = {url:?}\nmax-concurrency = {c}\n\
             [[template]]\nname = \"qa\"\nsystem = \"You write problems.\"\nprompt = \"Write a problem inspired by: {{text}}\"\n",
            c = args.concurrency,
        );
        toml::from_str(&spec).context("bench synth spec")
    };
    let mut results = serde_json::Map::new();
    let mut record = |name: &str, p: &Pass, stub_cpu: f64| {
        let mut f = figures(p, stub_cpu);
        f["stub_cpu_s"] = json!(stub_cpu);
        f["cache_hits"] = json!(p.counters.get("cache.hits").copied().unwrap_or(0));
        results.insert(name.to_string(), f);
    };

    // Each pass that sends gets a stub of its own, so the stub CPU left out is that pass's.
    let stub = Stub::start()?;
    let p = pass(&config(&stub.url)?, None, &docs).await?;
    record("no_cache", &p, stub.stop());

    let stub = Stub::start()?;
    let cfg = config(&stub.url)?;
    let p = pass(&cfg, cache(), &docs).await?;
    record("cache_cold", &p, stub.stop());
    // The same requests again, the stub gone: all of them must be answered by the cache.
    let p = pass(&cfg, cache(), &docs).await?;
    if p.counters.get("cache.hits").copied() != Some(args.requests) {
        return Err(anyhow::anyhow!("the warm pass was not all cache hits: {:?}", p.counters).into());
    }
    record("cache_warm", &p, 0.0);

    let openai = match &args.openai_python {
        Some(python) => {
            let stub = Stub::start()?;
            let mut o = openai_pass(python, &stub.url, args.requests, args.concurrency)?;
            o["stub_cpu_s"] = json!(stub.stop());
            Some(o)
        }
        None => None,
    };
    let mut report = json!({
        "requests": args.requests,
        "concurrency": args.concurrency,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "lehr": results,
    });
    if let Some(mut o) = openai {
        let cpu = o["cpu_s"].as_f64().unwrap_or(0.0).max(1e-9);
        o["requests_per_core_s"] = json!(args.requests as f64 / cpu);
        let lehr = report["lehr"]["no_cache"].clone();
        report["ratio_requests_per_s"] =
            json!(lehr["requests_per_s"].as_f64().unwrap_or(0.0) / o["requests_per_s"].as_f64().unwrap_or(f64::NAN));
        report["ratio_requests_per_core_s"] = json!(
            lehr["requests_per_core_s"].as_f64().unwrap_or(0.0) / o["requests_per_core_s"].as_f64().unwrap_or(f64::NAN)
        );
        report["openai_python"] = o;
    }
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    Ok(EXIT_OK)
}

/// scripts/bench_synth_openai.py: AsyncOpenAI, the same number of requests in flight.
fn openai_pass(python: &str, url: &str, requests: u64, concurrency: usize) -> Result<Value, Failure> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_synth_openai.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--base-url", url, "--requests", &requests.to_string(), "--concurrency", &concurrency.to_string()])
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    if !out.status.success() {
        return Err(anyhow::anyhow!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout).context("bench_synth_openai.py printed no JSON")?)
}

fn print_report(r: &Value) {
    println!(
        "synth client against a zero-latency stub: {} requests, {} in flight, {} cores (the stub's own CPU left out)",
        r["requests"], r["concurrency"], r["cores"]
    );
    let line = |name: &str, v: &Value| {
        println!(
            "  {name:<28} {:>8.0} requests/s  {:>8.0} requests per client core-second",
            v["requests_per_s"].as_f64().unwrap_or(0.0),
            v["requests_per_core_s"].as_f64().unwrap_or(0.0)
        )
    };
    line("lehr, no cache", &r["lehr"]["no_cache"]);
    line("lehr, cache (writes)", &r["lehr"]["cache_cold"]);
    line("lehr, cache (all hits)", &r["lehr"]["cache_warm"]);
    if let Some(o) = r.get("openai_python") {
        line("openai (Python, AsyncOpenAI)", o);
        println!(
            "  lehr / openai: {:.2}× requests/s, {:.2}× per core",
            r["ratio_requests_per_s"].as_f64().unwrap_or(0.0),
            r["ratio_requests_per_core_s"].as_f64().unwrap_or(0.0)
        );
    }
}
