//! The `eval` cluster job as plain data, shared by the CLI that submits it, the coordinator
//! kind that plans and merges it, and the worker process that scores a shard: benchmark tasks
//! over a checkpoint, cut into item shards (a task's rows `start..end`) that train workers
//! lease. Every shard builds its task's requests from the whole file, so few-shot examples are
//! drawn exactly as in one process, and the merge puts each row's score back in order: the
//! numbers equal a single `lehr eval tasks`.

use serde::{Deserialize, Serialize};

use crate::metrics::DocScore;

/// What `lehr eval tasks --coordinator` submits (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EvalJob {
    /// The checkpoint directory, a path every worker sees.
    pub checkpoint: String,
    /// Built-in task names or task files (absolute paths).
    pub tasks: Vec<String>,
    /// Directory of the tasks' rows, a path every worker and the coordinator see.
    pub data_dir: String,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub num_fewshot: Option<usize>,
    #[serde(default = "seed")]
    pub fewshot_seed: u64,
    /// Rows per shard.
    #[serde(default = "items")]
    pub items_per_shard: usize,
    /// `auto` or questions per forward.
    #[serde(default = "auto")]
    pub batch_size: String,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub precision: Option<String>,
    /// Where the merged results (lm-eval's layout) are written: a local file path.
    pub out: String,
}

fn seed() -> u64 {
    crate::suite::DEFAULT_SEED
}
fn items() -> usize {
    250
}
fn auto() -> String {
    "auto".into()
}

impl EvalJob {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let job: EvalJob = serde_json::from_str(text).map_err(|e| format!("invalid eval job: {e}"))?;
        if job.tasks.iter().all(|t| t.trim().is_empty()) {
            return Err("invalid eval job: no tasks".into());
        }
        if job.items_per_shard == 0 {
            return Err("invalid eval job: items-per-shard must be at least 1".into());
        }
        Ok(job)
    }
}

/// One leased shard: rows `start..end` of task `task` (an entry of `job.tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalShardTask {
    pub job: EvalJob,
    pub task: String,
    pub start: usize,
    pub end: usize,
}

/// A shard's result: each row's score, in order, and what the merge needs to lay results out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalShardResult {
    pub task: String,
    pub start: usize,
    pub end: usize,
    /// Rows in the file, before `--limit`.
    pub original: usize,
    pub num_fewshot: usize,
    pub scores: Vec<DocScore>,
    pub seconds: f64,
    /// Whether this shard loaded the checkpoint (false: the worker's model was already loaded).
    #[serde(default)]
    pub loaded_model: bool,
}

/// Cuts `rows` rows into shards of at most `per` rows: `(start, end)`.
pub fn shards(rows: usize, per: usize) -> Vec<(usize, usize)> {
    (0..rows).step_by(per.max(1)).map(|s| (s, (s + per.max(1)).min(rows))).collect()
}

/// Puts the `rows` rows of one task back together from its shards, in row order; an error names
/// a gap, an overlap or a missing end.
pub fn merge(mut parts: Vec<EvalShardResult>, rows: usize) -> Result<Vec<DocScore>, String> {
    parts.sort_by_key(|p| p.start);
    let mut out = Vec::new();
    for p in parts {
        if p.start != out.len() || p.end - p.start != p.scores.len() {
            return Err(format!(
                "{}: shard {}..{} does not follow row {} (or holds {} scores)",
                p.task,
                p.start,
                p.end,
                out.len(),
                p.scores.len()
            ));
        }
        for mut s in p.scores {
            s.doc = out.len();
            out.push(s);
        }
    }
    if out.len() != rows {
        return Err(format!("{} of {rows} rows scored", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn shards_cover_every_row_once(rows in 0usize..2000, per in 1usize..300) {
            let s = shards(rows, per);
            let mut next = 0;
            for (a, b) in &s {
                prop_assert_eq!(*a, next);
                prop_assert!(b > a && b - a <= per);
                next = *b;
            }
            prop_assert_eq!(next, rows);
        }

        #[test]
        fn merge_restores_order(rows in 1usize..200, per in 1usize..50, seed in 0u64..1000) {
            let all: Vec<DocScore> = (0..rows).map(|i| DocScore {
                doc: i, line: i + 1, loglikelihoods: vec![-(i as f64)], pred: 0, pred_norm: 0, gold: i % 2, greedy: None,
            }).collect();
            let mut parts: Vec<EvalShardResult> = shards(rows, per).into_iter().map(|(a, b)| EvalShardResult {
                task: "t".into(), start: a, end: b, original: rows, num_fewshot: 0,
                scores: all[a..b].iter().cloned().map(|mut s| { s.doc -= a; s }).collect(), seconds: 0.0, loaded_model: false,
            }).collect();
            // any arrival order
            let n = parts.len();
            parts.rotate_left(seed as usize % n);
            prop_assert_eq!(merge(parts.clone(), rows).unwrap(), all);
            parts.pop();
            prop_assert!(merge(parts, rows).is_err(), "a missing shard is an error");
        }
    }
}
