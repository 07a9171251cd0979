//! `lehr eval tasks`: benchmark tasks (lehr-evals: definitions, few-shot contexts, requests,
//! metrics, lm-eval's results layout) scored by lehr's model runtime (lehr-train's `tasks.rs`).

use super::CmdResult;
use crate::cli::EvalTasksArgs;

#[cfg(not(feature = "train"))]
pub async fn run(_a: EvalTasksArgs) -> CmdResult {
    super::train::run_without_train()
}

#[cfg(feature = "train")]
pub async fn run(a: EvalTasksArgs) -> CmdResult {
    use super::{Failure, EXIT_OK};
    use lehr_evals::metrics::{aggregate, DocScore};
    use lehr_evals::results::{results_json, TaskResult};
    use lehr_evals::suite::prepare;

    let usage = |e: String| Failure::usage(anyhow::anyhow!(e));
    let mut tasks = Vec::new();
    for spec in a.tasks.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        tasks.push(
            prepare(spec, &a.data_dir, a.limit, a.num_fewshot, a.fewshot_seed).map_err(|e| usage(e.to_string()))?,
        );
    }
    if tasks.is_empty() {
        return Err(usage("--tasks is empty".into()));
    }
    let batch = match a.batch_size.as_str() {
        "auto" => lehr_train::score::Batch::Auto,
        n => lehr_train::score::Batch::Rows(n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            usage(format!("--batch-size {n}: give a positive number of questions per forward, or auto"))
        })?),
    };
    let tok_path = a.checkpoint.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| usage(format!("{}: {e} (the checkpoint's tokenizer)", tok_path.display())))?;
    let dev = super::train::device(a.device.as_deref())?;
    let checkpoint = a.checkpoint.clone();
    let (_vs, mut model) = tokio::task::spawn_blocking(move || lehr_train::model::load_hf(&checkpoint, dev))
        .await
        .map_err(|e| anyhow::anyhow!("loading panicked: {e}"))?
        .map_err(|e| usage(e.to_string()))?;
    model.compute = lehr_train::rank::parse_precision(a.precision.as_deref(), dev).map_err(|e| usage(e.to_string()))?;

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
        serde_json::json!({"batch_size": a.batch_size, "dtype": format!("{:?}", model.compute), "device": format!("{dev:?}"), "seconds": secs, "requests": total}),
    );
    if let Some(out) = &a.output {
        std::fs::write(out, serde_json::to_vec_pretty(&json).expect("json"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    }
    if a.json {
        let samples: serde_json::Map<String, serde_json::Value> = tasks
            .iter()
            .zip(&scored)
            .map(|(t, s)| {
                let rows: Vec<serde_json::Value> = s
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
                (t.task.name.clone(), serde_json::Value::Array(rows))
            })
            .collect();
        let mut v = json;
        v["samples"] = serde_json::Value::Object(samples);
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(EXIT_OK);
    }
    println!("{:<16} {:<10} {:>6} {:>9} {:>8} {:>6}", "task", "metric", "shots", "value", "stderr", "n");
    for r in &results {
        for m in r.task.metrics() {
            let (v, se) = aggregate(m, r.scores);
            let se = if se.is_finite() { format!("{se:.4}") } else { "N/A".into() };
            println!(
                "{:<16} {:<10} {:>6} {:>9.4} {:>8} {:>6}",
                r.task.name,
                m.name(),
                r.num_fewshot,
                v,
                se,
                r.scores.len()
            );
        }
    }
    println!("{total} requests in {secs:.1} s ({:.1}/s)", total as f64 / secs.max(1e-9));
    Ok(EXIT_OK)
}
