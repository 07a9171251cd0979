//! `lehr eval tasks`: benchmark tasks (lehr-evals: definitions, requests, metrics, lm-eval's
//! results layout) scored by lehr's model runtime (lehr-train's `score.rs`).

use super::CmdResult;
use crate::cli::EvalTasksArgs;

#[cfg(not(feature = "train"))]
pub async fn run(_a: EvalTasksArgs) -> CmdResult {
    super::train::run_without_train()
}

#[cfg(feature = "train")]
pub async fn run(a: EvalTasksArgs) -> CmdResult {
    use super::{Failure, EXIT_OK};
    use lehr_evals::metrics::{aggregate, score_doc, DocScore};
    use lehr_evals::request::{encode_pair, model_input, requests};
    use lehr_evals::results::{results_json, TaskResult};
    use lehr_evals::TaskDef;

    if a.num_fewshot != 0 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--num-fewshot {}: only zero-shot is implemented so far (the fixture contexts are lm-eval's 0-shot prompts)",
            a.num_fewshot
        )));
    }
    let usage = |e: String| Failure::usage(anyhow::anyhow!(e));
    let mut tasks = Vec::new();
    for spec in a.tasks.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let t = TaskDef::resolve(spec).map_err(|e| usage(e.to_string()))?;
        let docs = t.load(&a.data_dir).map_err(|e| usage(e.to_string()))?;
        let original = docs.len();
        let docs: Vec<_> = docs.into_iter().take(a.limit.unwrap_or(usize::MAX)).collect();
        tasks.push((t, original, docs));
    }
    if tasks.is_empty() {
        return Err(usage("--tasks is empty".into()));
    }
    let tok_path = a.checkpoint.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| usage(format!("{}: {e} (the checkpoint's tokenizer)", tok_path.display())))?;
    // an empty context stands for the end-of-text token, as in lm-eval
    let prefix = ["<|endoftext|>", "</s>", "<|im_end|>"].iter().find_map(|t| tok.token_to_id(t));
    let encode = |s: &str| tok.encode(s, false).map(|e| e.get_ids().to_vec()).unwrap_or_default();
    let dev = super::train::device(a.device.as_deref())?;
    let checkpoint = a.checkpoint.clone();
    let (_vs, model) = tokio::task::spawn_blocking(move || lehr_train::model::load_hf(&checkpoint, dev))
        .await
        .map_err(|e| anyhow::anyhow!("loading panicked: {e}"))?
        .map_err(|e| usage(e.to_string()))?;
    let max_len = model.config.max_position_embeddings.max(1) as usize;

    let mut scored: Vec<Vec<DocScore>> = Vec::new();
    let total: usize = tasks.iter().map(|(_, _, d)| d.iter().map(|x| x.choices.len()).sum::<usize>()).sum();
    let bar = crate::progress::counting_bar(a.json, "requests");
    bar.set_length(total as u64);
    let start = std::time::Instant::now();
    for (t, _, docs) in &tasks {
        bar.set_message(t.name.clone());
        let reqs = requests(t, docs);
        let mut inputs = Vec::with_capacity(reqs.len());
        for r in &reqs {
            let (ctx, cont) = encode_pair(&encode, &r.context, &r.continuation, prefix).map_err(|e| {
                usage(format!("{}: line {}: {e}", t.dataset_path(&a.data_dir).display(), docs[r.doc].line))
            })?;
            let (input, n) = model_input(&ctx, &cont, max_len);
            inputs.push((input, cont[cont.len() - n..].to_vec()));
        }
        let lls = lehr_train::score::loglikelihoods(&model, &inputs, a.batch_size, dev, |n| bar.inc(n as u64));
        let mut per_doc: Vec<Vec<f64>> = docs.iter().map(|d| Vec::with_capacity(d.choices.len())).collect();
        for (r, s) in reqs.iter().zip(&lls) {
            per_doc[r.doc].push(s.loglikelihood);
        }
        scored.push(per_doc.into_iter().enumerate().map(|(i, l)| score_doc(i, &docs[i], l)).collect());
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let results: Vec<TaskResult> = tasks
        .iter()
        .zip(&scored)
        .map(|((t, original, _), s)| TaskResult { task: t, original: *original, scores: s })
        .collect();
    let json = results_json(
        &format!("pretrained={}", a.checkpoint.display()),
        &results,
        serde_json::json!({"batch_size": a.batch_size, "device": format!("{dev:?}"), "seconds": secs, "requests": total}),
    );
    if let Some(out) = &a.output {
        std::fs::write(out, serde_json::to_vec_pretty(&json).expect("json"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    }
    if a.json {
        let samples: serde_json::Map<String, serde_json::Value> = tasks
            .iter()
            .zip(&scored)
            .map(|((t, _, _), s)| (t.name.clone(), serde_json::to_value(s).expect("json")))
            .collect();
        let mut v = json;
        v["samples"] = serde_json::Value::Object(samples);
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(EXIT_OK);
    }
    println!("{:<16} {:<9} {:>8} {:>8} {:>6}", "task", "metric", "value", "stderr", "n");
    for r in &results {
        for m in &r.task.metrics {
            let (v, se) = aggregate(*m, r.scores);
            println!("{:<16} {:<9} {:>8.4} {:>8.4} {:>6}", r.task.name, m.name(), v, se, r.scores.len());
        }
    }
    println!("{total} requests in {secs:.1} s ({:.1}/s)", total as f64 / secs.max(1e-9));
    Ok(EXIT_OK)
}
