//! `lehr eval tasks`: benchmark tasks (lehr-evals: definitions, few-shot contexts, requests,
//! metrics, lm-eval's results layout) scored by lehr's model runtime (lehr-train's `tasks.rs`)
//! here, or with `--coordinator` as an `eval` job whose item shards train workers score
//! (`lehr eval shard`, hidden, is what they run).

use serde_json::Value;

use super::{CmdResult, Failure, EXIT_OK};
use crate::cli::{EvalShardArgs, EvalTasksArgs};

fn usage(e: String) -> Failure {
    Failure::usage(anyhow::anyhow!(e))
}

pub async fn run(a: EvalTasksArgs) -> CmdResult {
    match a.coordinator.clone() {
        Some(url) => on_cluster(a, &url).await,
        None => here(a).await,
    }
}

/// The table of an lm-eval results JSON: task, metric, shots, value, stderr, n.
fn print_table(v: &Value, order: &[String]) {
    println!("{:<16} {:<10} {:>6} {:>9} {:>8} {:>6}", "task", "metric", "shots", "value", "stderr", "n");
    for task in order {
        let r = &v["results"][task];
        let metrics = v["configs"][task]["metric_list"].as_array().cloned().unwrap_or_default();
        for m in metrics {
            let m = m["metric"].as_str().unwrap_or("");
            let value = r[format!("{m},none")].as_f64().unwrap_or(f64::NAN);
            let se = match r[format!("{m}_stderr,none")].as_f64() {
                Some(se) => format!("{se:.4}"),
                None => "N/A".into(),
            };
            let shots = v["n-shot"][task].as_u64().unwrap_or(0);
            let n = v["n-samples"][task]["effective"].as_u64().unwrap_or(0);
            println!("{task:<16} {m:<10} {shots:>6} {value:>9.4} {se:>8} {n:>6}");
        }
    }
}

/// `--coordinator`: submits an `eval` job (paths made absolute: the coordinator and the
/// workers read them), follows it, then prints the merged results it wrote to `-o`.
async fn on_cluster(a: EvalTasksArgs, url: &str) -> CmdResult {
    use super::EXIT_JOB_FAILED;
    use anyhow::Context;
    use lehr_proto::pb::{GetJobRequest, JobState, SubmitJobRequest};
    let Some(out) = &a.output else {
        return Err(usage("--coordinator needs -o FILE: where the job writes the merged results".into()));
    };
    let cwd = std::env::current_dir().context("no current directory")?;
    let abs = |p: &std::path::Path| lehr_pipeline::store::absolutize(&p.to_string_lossy(), &cwd);
    let specs: Vec<String> = a.tasks.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    // task names (and a bad task file's error) before anything is submitted
    let mut order = Vec::new();
    for s in &specs {
        order.push(lehr_evals::TaskDef::resolve(s).map_err(|e| usage(e.to_string()))?.name);
    }
    let job = lehr_evals::job::EvalJob {
        checkpoint: abs(&a.checkpoint),
        tasks: specs
            .iter()
            .map(|t| if t.ends_with(".toml") { abs(std::path::Path::new(t)) } else { t.clone() })
            .collect(),
        data_dir: abs(&a.data_dir),
        limit: a.limit,
        num_fewshot: a.num_fewshot,
        fewshot_seed: a.fewshot_seed,
        items_per_shard: a.items_per_shard.max(1),
        batch_size: a.batch_size.clone(),
        device: a.device.clone(),
        precision: a.precision.clone(),
        out: abs(out),
    };
    let api = super::connect(url, &a.auth)?;
    let submitted = api
        .submit_job(SubmitJobRequest {
            kind: lehr_schedules::kinds::EVAL_JOB.into(),
            name: String::new(),
            spec: serde_json::to_string(&job).expect("job serializes"),
            base_dir: cwd.to_string_lossy().into_owned(),
        })
        .await?;
    if !a.json {
        eprintln!("job {} submitted: {} shards on the train workers of {url}", submitted.job_id, submitted.tasks);
    }
    let bar = crate::progress::counting_bar(a.json, "shards");
    bar.set_length(submitted.tasks as u64);
    let status = loop {
        let s = match api.get_job(GetJobRequest { job_id: submitted.job_id.clone(), ..Default::default() }).await {
            Ok(r) => r.job.expect("job status"),
            Err(e) if e.is_transient() => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        bar.set_position(s.stages.iter().map(|st| st.tasks_committed).sum::<u32>() as u64);
        if s.state().is_terminal() {
            break s;
        }
        tokio::select! {
            _ = super::interrupted() => {
                let _ = api.cancel_job(lehr_proto::pb::CancelJobRequest { job_id: submitted.job_id.clone() }).await;
                return Ok(super::EXIT_INTERRUPTED);
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    };
    bar.finish_and_clear();
    if status.state() != JobState::Succeeded {
        eprintln!("job {}: {} {}", status.job_id, lehr_proto::Named::name(status.state()), status.error);
        return Ok(EXIT_JOB_FAILED);
    }
    let v: Value =
        serde_json::from_slice(&std::fs::read(out).with_context(|| format!("cannot read {}", out.display()))?)
            .with_context(|| format!("{} is not the job's results JSON", out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        print_table(&v, &order);
        println!("job {}: {} shards merged into {}", status.job_id, submitted.tasks, out.display());
    }
    Ok(EXIT_OK)
}

#[cfg(not(feature = "train"))]
async fn here(_a: EvalTasksArgs) -> CmdResult {
    super::train::run_without_train()
}

#[cfg(not(feature = "train"))]
pub async fn shard(_a: EvalShardArgs) -> CmdResult {
    super::train::run_without_train()
}

#[cfg(feature = "train")]
fn batch(text: &str) -> Result<lehr_train::score::Batch, Failure> {
    match text {
        "auto" => Ok(lehr_train::score::Batch::Auto),
        n => Ok(lehr_train::score::Batch::Rows(n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            usage(format!("--batch-size {n}: give a positive number of questions per forward, or auto"))
        })?)),
    }
}

/// The checkpoint's model (in the asked precision) and tokenizer.
#[cfg(feature = "train")]
async fn load(
    checkpoint: &std::path::Path,
    device: Option<&str>,
    precision: Option<&str>,
) -> Result<
    (lehr_train::tch::nn::VarStore, lehr_train::model::Model, tokenizers::Tokenizer, lehr_train::tch::Device),
    Failure,
> {
    let tok_path = checkpoint.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| usage(format!("{}: {e} (the checkpoint's tokenizer)", tok_path.display())))?;
    let dev = super::train::device(device)?;
    let ckpt = checkpoint.to_path_buf();
    let (vs, mut model) = tokio::task::spawn_blocking(move || lehr_train::model::load_hf(&ckpt, dev))
        .await
        .map_err(|e| anyhow::anyhow!("loading panicked: {e}"))?
        .map_err(|e| usage(e.to_string()))?;
    model.compute = lehr_train::rank::parse_precision(precision, dev).map_err(|e| usage(e.to_string()))?;
    Ok((vs, model, tok, dev))
}

#[cfg(feature = "train")]
async fn here(a: EvalTasksArgs) -> CmdResult {
    use lehr_evals::metrics::DocScore;
    use lehr_evals::results::{results_json, TaskResult};
    use lehr_evals::suite::prepare;

    let mut tasks = Vec::new();
    for spec in a.tasks.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        tasks.push(
            prepare(spec, &a.data_dir, a.limit, a.num_fewshot, a.fewshot_seed).map_err(|e| usage(e.to_string()))?,
        );
    }
    if tasks.is_empty() {
        return Err(usage("--tasks is empty".into()));
    }
    let batch = batch(&a.batch_size)?;
    let (_vs, model, tok, dev) = load(&a.checkpoint, a.device.as_deref(), a.precision.as_deref()).await?;

    let total: usize = tasks.iter().map(|t| t.requests.len()).sum();
    let bar = crate::progress::counting_bar(a.json, "requests");
    bar.set_length(total as u64);
    let start = std::time::Instant::now();
    let mut scored: Vec<Vec<DocScore>> = Vec::new();
    for t in &tasks {
        bar.set_message(t.task.name.clone());
        let s = lehr_train::tasks::score_task(&model, &tok, t, batch, dev, |n| bar.inc(n as u64)).map_err(usage)?;
        scored.push(s);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let results: Vec<TaskResult> = tasks
        .iter()
        .zip(&scored)
        .map(|(t, s)| TaskResult {
            task: &t.task,
            original: t.original,
            scores: s,
            num_fewshot: t.num_fewshot,
            seed: t.seed,
        })
        .collect();
    let json = results_json(
        &format!("pretrained={}", a.checkpoint.display()),
        &results,
        serde_json::json!({"batch_size": a.batch_size, "precision": format!("{:?}", model.compute), "device": format!("{dev:?}"), "seconds": secs, "requests": total}),
    );
    if let Some(out) = &a.output {
        std::fs::write(out, serde_json::to_vec_pretty(&json).expect("json"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    }
    if a.json {
        let samples: serde_json::Map<String, Value> = tasks
            .iter()
            .zip(&scored)
            .map(|(t, s)| {
                let rows: Vec<Value> = s
                    .iter()
                    .map(|d| {
                        let mut v = serde_json::to_value(d).expect("json");
                        // what the model was asked, as lm-eval's samples' `arguments`
                        v["arguments"] = t
                            .requests
                            .iter()
                            .filter(|r| r.doc == d.doc)
                            .map(|r| serde_json::json!([r.context, r.continuation]))
                            .collect();
                        v
                    })
                    .collect();
                (t.task.name.clone(), Value::Array(rows))
            })
            .collect();
        let mut v = json;
        v["samples"] = Value::Object(samples);
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(EXIT_OK);
    }
    print_table(&json, &tasks.iter().map(|t| t.task.name.clone()).collect::<Vec<_>>());
    println!("{total} requests in {secs:.1} s ({:.1}/s)", total as f64 / secs.max(1e-9));
    Ok(EXIT_OK)
}

/// A loaded checkpoint, kept between the shards a server scores.
#[cfg(feature = "train")]
struct Loaded {
    key: (String, Option<String>, Option<String>),
    _vs: lehr_train::tch::nn::VarStore,
    model: lehr_train::model::Model,
    tok: tokenizers::Tokenizer,
    dev: lehr_train::tch::Device,
}

/// Rows `start..end` of one task, their requests built from the whole file (so the few-shot
/// examples are a whole run's), on the cached model when it is the shard's checkpoint.
#[cfg(feature = "train")]
async fn score_shard(
    t: &lehr_evals::job::EvalShardTask,
    cache: &mut Option<Loaded>,
) -> Result<lehr_evals::job::EvalShardResult, Failure> {
    let job = &t.job;
    let full = lehr_evals::suite::prepare(
        &t.task,
        std::path::Path::new(&job.data_dir),
        job.limit,
        job.num_fewshot,
        job.fewshot_seed,
    )
    .map_err(|e| usage(e.to_string()))?;
    let part = full.slice(t.start, t.end);
    let batch = batch(&job.batch_size)?;
    let key = (job.checkpoint.clone(), job.device.clone(), job.precision.clone());
    let loaded_model = cache.as_ref().is_none_or(|c| c.key != key);
    if loaded_model {
        *cache = None; // free the old model first
        let (vs, model, tok, dev) =
            load(std::path::Path::new(&job.checkpoint), job.device.as_deref(), job.precision.as_deref()).await?;
        *cache = Some(Loaded { key, _vs: vs, model, tok, dev });
    }
    let c = cache.as_ref().expect("loaded");
    let start = std::time::Instant::now();
    let mut scores = lehr_train::tasks::score_task(&c.model, &c.tok, &part, batch, c.dev, |_| {}).map_err(usage)?;
    for s in &mut scores {
        s.doc += t.start;
    }
    Ok(lehr_evals::job::EvalShardResult {
        task: t.task.clone(),
        start: t.start,
        end: t.start + part.docs.len(),
        original: full.original,
        num_fewshot: full.num_fewshot,
        scores,
        seconds: start.elapsed().as_secs_f64(),
        loaded_model,
    })
}

/// `lehr eval shard TASK.json` prints one shard's result; `--serve` answers tasks from stdin
/// (what a train worker runs, so it loads a checkpoint once for all its shards).
#[cfg(feature = "train")]
pub async fn shard(a: EvalShardArgs) -> CmdResult {
    use lehr_evals::job::EvalShardTask;
    let mut cache = None;
    if !a.serve {
        let path = a.task.as_ref().expect("clap requires TASK without --serve");
        let text = std::fs::read_to_string(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
        let t: EvalShardTask = serde_json::from_str(&text)
            .map_err(|e| usage(format!("{}: not an eval shard task: {e}", path.display())))?;
        let result = score_shard(&t, &mut cache).await?;
        println!("{}", serde_json::to_string(&result).expect("result serializes"));
        return Ok(EXIT_OK);
    }
    // one task at a time: the blocking read waits for the worker's next shard
    for line in std::io::stdin().lines() {
        let line = line.map_err(|e| anyhow::anyhow!("stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<EvalShardTask>(&line) {
            Err(e) => serde_json::json!({"error": format!("not an eval shard task: {e}"), "retryable": false}),
            Ok(t) => match score_shard(&t, &mut cache).await {
                Ok(r) => serde_json::json!({"ok": r}),
                Err(f) => {
                    serde_json::json!({"error": format!("{:#}", f.error), "retryable": f.code != super::EXIT_USAGE})
                }
            },
        };
        println!("{reply}");
    }
    Ok(EXIT_OK)
}
