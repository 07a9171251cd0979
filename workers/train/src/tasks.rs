//! Benchmark tasks on a loaded model: the requests of a prepared task (`lehr-evals`: task
//! files, few-shot contexts, lm-eval's request construction) tokenized as lm-eval tokenizes
//! them, left-truncated to the model's context, scored by [`crate::score`], and turned into
//! each row's score. `lehr eval tasks` and the trainer's `[eval]` both call [`score_task`].

use lehr_evals::metrics::DocScore;
use lehr_evals::request::{encode_pair, model_input};
use lehr_evals::suite::Prepared;
use tch::Device;
use tokenizers::Tokenizer;

use crate::model::Model;

/// The token an empty context stands for (lm-eval uses the end-of-text token).
pub fn end_of_text(tok: &Tokenizer) -> Option<u32> {
    ["<|endoftext|>", "</s>", "<|im_end|>", "<|end_of_text|>"].iter().find_map(|t| tok.token_to_id(t))
}

/// Scores one prepared task; `progress` gets the number of requests done after each batch.
/// An error names the dataset line whose request cannot be built.
pub fn score_task(
    model: &Model,
    tok: &Tokenizer,
    task: &Prepared,
    batch: crate::score::Batch,
    device: Device,
    progress: impl FnMut(usize),
) -> Result<Vec<DocScore>, String> {
    let prefix = end_of_text(tok);
    let encode = |s: &str| tok.encode(s, false).map(|e| e.get_ids().to_vec()).unwrap_or_default();
    let max_len = model.config.max_position_embeddings.max(1) as usize;
    let mut inputs = Vec::with_capacity(task.requests.len());
    for r in &task.requests {
        let (ctx, cont) = encode_pair(&encode, &r.context, &r.continuation, prefix)
            .map_err(|e| format!("{}: line {}: {e}", task.task.name, task.docs[r.doc].line))?;
        let (input, n) = model_input(&ctx, &cont, max_len);
        inputs.push((input, cont[cont.len() - n..].to_vec()));
    }
    let scored = crate::score::loglikelihoods(model, &inputs, batch, device, progress);
    let results: Vec<(f64, bool)> = scored.iter().map(|s| (s.loglikelihood, s.greedy)).collect();
    Ok(task.score(&results))
}
