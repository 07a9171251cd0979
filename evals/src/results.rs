//! lm-evaluation-harness's results JSON layout (`results.<task>.{acc,none; acc_stderr,none;
//! …}`, `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`), so that readers of
//! lm-eval output read ours.

use serde_json::{json, Map, Value};

use crate::metrics::{aggregate, DocScore};
use crate::task::{Metric, TaskDef};

/// One task's results: its definition, the documents in the file, and the scored ones.
pub struct TaskResult<'a> {
    pub task: &'a TaskDef,
    pub original: usize,
    pub scores: &'a [DocScore],
    pub num_fewshot: usize,
    pub seed: u64,
}

pub fn results_json(model: &str, tasks: &[TaskResult], extra_config: Value) -> Value {
    let (mut results, mut configs, mut versions, mut nshot, mut better, mut samples, mut groups) =
        (Map::new(), Map::new(), Map::new(), Map::new(), Map::new(), Map::new(), Map::new());
    for t in tasks {
        let name = &t.task.name;
        let mut r = Map::new();
        r.insert("alias".into(), json!(name));
        r.insert("sample_len".into(), json!(t.scores.len()));
        let mut hib = Map::new();
        let metrics = t.task.metrics();
        for m in &metrics {
            let (v, se) = aggregate(*m, t.scores);
            r.insert(format!("{},none", m.name()), json!(v));
            r.insert(format!("{}_stderr,none", m.name()), if se.is_finite() { json!(se) } else { json!("N/A") });
            hib.insert(m.name().into(), json!(m.higher_is_better()));
        }
        results.insert(name.clone(), Value::Object(r));
        configs.insert(
            name.clone(),
            json!({
                "task": name, "output_type": t.task.output_type, "doc_to_text": t.task.doc_to_text,
                "doc_to_choice": t.task.doc_to_choice, "doc_to_target": t.task.doc_to_target,
                "description": t.task.description.clone().unwrap_or_default(),
                "target_delimiter": t.task.target_delimiter, "fewshot_delimiter": t.task.fewshot_delimiter,
                "num_fewshot": t.num_fewshot,
                "fewshot_config": {"sampler": t.task.fewshot_sampler, "split": t.task.fewshot_dataset, "seed": t.seed},
                "metric_list": metrics.iter().map(|m| json!({"metric": m.name(), "aggregation": if *m == Metric::Perplexity { m.name() } else { "mean" }, "higher_is_better": m.higher_is_better()})).collect::<Vec<_>>(),
            }),
        );
        versions.insert(name.clone(), json!(t.task.version));
        nshot.insert(name.clone(), json!(t.num_fewshot));
        better.insert(name.clone(), Value::Object(hib));
        samples.insert(name.clone(), json!({"original": t.original, "effective": t.scores.len()}));
        groups.insert(name.clone(), json!([]));
    }
    json!({
        "results": results, "group_subtasks": groups, "configs": configs, "versions": versions, "n-shot": nshot,
        "higher_is_better": better, "n-samples": samples,
        "config": {"model": "lehr", "model_args": model, "limit": Value::Null, "extra": extra_config},
    })
}
