//! A task made ready to score: its definition, the evaluated rows (after `--limit`), the
//! few-shot pool and every request; and, from the requests' log-likelihoods, each row's score.
//! The command line, the trainer's `[eval]` and the cluster's eval job all go through this, so
//! they ask the model the same questions.

use std::path::Path;

use crate::metrics::{score_doc, DocScore};
use crate::request::{requests, Pool, Request};
use crate::task::{TaskDef, TaskError};

/// lm-eval's default few-shot seed (`--fewshot_random_seed`).
pub const DEFAULT_SEED: u64 = 1234;

pub struct Prepared {
    pub task: TaskDef,
    /// Rows in the file, before `--limit`.
    pub original: usize,
    pub docs: Vec<crate::Doc>,
    pub requests: Vec<Request>,
    pub num_fewshot: usize,
    pub seed: u64,
}

/// Loads a task (a built-in name or a `.toml` file) and builds its requests.
pub fn prepare(
    spec: &str,
    data_dir: &Path,
    limit: Option<usize>,
    num_fewshot: Option<usize>,
    seed: u64,
) -> Result<Prepared, TaskError> {
    let task = TaskDef::resolve(spec)?;
    let all = task.load(data_dir)?;
    let n = num_fewshot.unwrap_or(task.num_fewshot);
    let separate = match (n, task.fewshot_path(data_dir)) {
        (0, _) | (_, None) => None,
        (_, Some(path)) if !path.exists() => {
            return Err(TaskError::File {
                file: path.display().to_string(),
                why: format!(
                    "task {} draws few-shot examples from this file (lm-eval's training or dev split) and it is missing; \
                     add it, use --num-fewshot 0, or use a task file without `fewshot_dataset` to draw them from the evaluated rows",
                    task.name
                ),
            })
        }
        (_, Some(path)) => Some(task.load_file(&path)?),
    };
    let original = all.len();
    let docs: Vec<_> = all.iter().take(limit.unwrap_or(usize::MAX)).cloned().collect();
    let pool = match &separate {
        Some(p) => Pool { docs: p, same_file: false },
        None => Pool { docs: &all, same_file: true },
    };
    let requests = requests(&task, &docs, &pool, n, seed).map_err(|(line, why)| TaskError::Row {
        file: task.dataset_path(data_dir).display().to_string(),
        line,
        why,
    })?;
    Ok(Prepared { task, original, docs, requests, num_fewshot: n, seed })
}

impl Prepared {
    /// Rows `start..end` only, with their requests (built from the whole file, so their
    /// few-shot examples are those of a whole run).
    pub fn slice(&self, start: usize, end: usize) -> Prepared {
        let end = end.min(self.docs.len());
        let start = start.min(end);
        let requests = self
            .requests
            .iter()
            .filter(|r| (start..end).contains(&r.doc))
            .map(|r| Request { doc: r.doc - start, ..r.clone() })
            .collect();
        Prepared {
            task: self.task.clone(),
            original: self.original,
            docs: self.docs[start..end].to_vec(),
            requests,
            num_fewshot: self.num_fewshot,
            seed: self.seed,
        }
    }

    /// Each row's score from its requests' (log-likelihood, greedy) in request order.
    pub fn score(&self, results: &[(f64, bool)]) -> Vec<DocScore> {
        assert_eq!(results.len(), self.requests.len(), "one result per request");
        let mut lls: Vec<Vec<f64>> = vec![Vec::new(); self.docs.len()];
        let mut greedy: Vec<Vec<bool>> = vec![Vec::new(); self.docs.len()];
        for (r, (ll, g)) in self.requests.iter().zip(results) {
            lls[r.doc].push(*ll);
            greedy[r.doc].push(*g);
        }
        lls.into_iter().enumerate().map(|(i, l)| score_doc(i, &self.docs[i], l, &greedy[i])).collect()
    }
}
