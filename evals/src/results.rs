//! lm-evaluation-harness's results JSON layout (`results.<task>.{acc,none; acc_stderr,none;
//! …}`, `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`), so that readers of
//! lm-eval output read ours.

use serde_json::{json, Map, Value};

use crate::metrics::{aggregate, DocScore};
use crate::task::TaskDef;

/// One task's results: its definition, the documents in the file, and the scored ones.
pub struct TaskResult<'a> {
    pub task: &'a TaskDef,
    pub original: usize,
    pub scores: &'a [DocScore],
}

pub fn results_json(model: &str, tasks: &[TaskResult], extra_config: Value) -> Value {
    let (mut results, mut configs, mut versions, mut nshot, mut better, mut samples, mut groups) =
        (Map::new(), Map::new(), Map::new(), Map::new(), Map::new(), Map::new(), Map::new());
    for t in tasks {
        let name = &t.task.name;
        let mut r = Map::new();
        r.insert("alias".into(), json!(name));
        let mut hib = Map::new();
        for m in &t.task.metrics {
            let (v, se) = aggregate(*m, t.scores);
            r.insert(format!("{},none", m.name()), json!(v));
            r.insert(format!("{}_stderr,none", m.name()), if se.is_finite() { json!(se) } else { json!("N/A") });
            hib.insert(m.name().into(), json!(true));
        }
        results.insert(name.clone(), Value::Object(r));
        configs.insert(
            name.clone(),
            json!({
                "task": name, "output_type": "multiple_choice", "doc_to_text": t.task.doc_to_text,
                "doc_to_choice": t.task.doc_to_choice, "doc_to_target": t.task.doc_to_target,
                "target_delimiter": t.task.target_delimiter, "fewshot_delimiter": "\n\n", "num_fewshot": 0,
                "metric_list": t.task.metrics.iter().map(|m| json!({"metric": m.name(), "aggregation": "mean", "higher_is_better": true})).collect::<Vec<_>>(),
            }),
        );
        versions.insert(name.clone(), json!(t.task.version));
        nshot.insert(name.clone(), json!(0));
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
