//! Log-likelihood requests as lm-eval builds them: for each choice, the context and
//! `target_delimiter + choice` (multiple input: each choice's context and the shared
//! continuation; `loglikelihood` tasks: the context and the target); trailing whitespace of the context moves to the
//! continuation; the continuation's tokens are those of `encode(context + continuation)` past
//! `encode(context)` (so the split falls where lm-eval puts it, even when a token spans it);
//! the model reads `(context + continuation)[-(max_len + 1):][:-1]` (left truncation). Few-shot
//! examples (`fewshot.rs`) come before the question as lm-eval's `fewshot_context` puts them.

use crate::fewshot::Sampler;
use crate::task::{Doc, Input, TaskDef};
use crate::template;

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub doc: usize,
    pub choice: usize,
    pub context: String,
    pub continuation: String,
}

/// Where few-shot examples come from: the evaluated file itself (lm-eval's `fewshot_split` equal
/// to the test split, so a row is never its own example) or a separate file.
pub struct Pool<'a> {
    pub docs: &'a [Doc],
    pub same_file: bool,
}

/// lm-eval's `fewshot_context` as plain text: the description, then each example's question,
/// `target_delimiter`, answer and `fewshot_delimiter`, then the question. For multiple input the
/// shared part is returned and each choice's context follows it.
fn prefix(task: &TaskDef, doc: &Doc, examples: &[&Doc]) -> Result<String, String> {
    let mut out = match &task.description {
        Some(d) => template::render(d, &doc.raw)?,
        None => String::new(),
    };
    for ex in examples {
        let (q, a) = ex.example();
        out.push_str(q);
        out.push_str(&task.target_delimiter);
        out.push_str(a);
        out.push_str(&task.fewshot_delimiter);
    }
    Ok(out)
}

/// Every request of the evaluated rows, doc by doc, choice by choice; `n` few-shot examples each,
/// drawn in document order from one sampler (lm-eval's order, so the same seed gives the same
/// examples). Errors name the dataset line.
pub fn requests(
    task: &TaskDef,
    docs: &[Doc],
    pool: &Pool,
    n: usize,
    seed: u64,
) -> Result<Vec<Request>, (usize, String)> {
    let mut sampler = Sampler::new(task.fewshot_sampler, seed, pool.same_file);
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let fail = |e: String| (doc.line, e);
        let picked = sampler.draw(pool.docs.len(), n, |i| pool.docs[i].raw == doc.raw).map_err(fail)?;
        let examples: Vec<&Doc> = picked.iter().map(|&i| &pool.docs[i]).collect();
        let head = prefix(task, doc, &examples).map_err(fail)?;
        let mut push =
            |choice, context: String, continuation: String| out.push(Request { doc: d, choice, context, continuation });
        match &doc.input {
            Input::Choices { context, choices } => {
                for (c, choice) in choices.iter().enumerate() {
                    push(c, format!("{head}{context}"), format!("{}{choice}", task.target_delimiter));
                }
            }
            Input::Contexts { contexts, continuation } => {
                for (c, ctx) in contexts.iter().enumerate() {
                    push(c, format!("{head}{ctx}"), format!("{}{continuation}", task.target_delimiter));
                }
            }
            // lm-eval's loglikelihood requests carry the target as is (no delimiter)
            Input::Target { context, continuation } => push(0, format!("{head}{context}"), continuation.clone()),
        }
    }
    Ok(out)
}

/// lm-eval's `_encode_pair`: token ids of context and continuation. `prefix` is the token an
/// empty context becomes (lm-eval uses the end-of-text token).
pub fn encode_pair(
    encode: &impl Fn(&str) -> Vec<u32>,
    context: &str,
    continuation: &str,
    prefix: Option<u32>,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    let trimmed = context.trim_end();
    let (context, continuation) = (trimmed.to_string(), format!("{}{continuation}", &context[trimmed.len()..]));
    if context.is_empty() {
        let p = prefix.ok_or("an empty context needs an end-of-text token to stand for it")?;
        return Ok((vec![p], encode(&continuation)));
    }
    let whole = encode(&format!("{context}{continuation}"));
    let ctx = encode(&context);
    if whole.len() <= ctx.len() {
        return Err(format!("the continuation {continuation:?} adds no tokens"));
    }
    Ok((ctx.clone(), whole[ctx.len()..].to_vec()))
}

/// What the model reads for a request, and how many of its last positions predict the
/// continuation.
pub fn model_input(context: &[u32], continuation: &[u32], max_len: usize) -> (Vec<u32>, usize) {
    let all: Vec<u32> = context.iter().chain(continuation).copied().collect();
    let start = all.len().saturating_sub(max_len + 1);
    (all[start..all.len() - 1].to_vec(), continuation.len().min(max_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    // characters as tokens, except that "ab" is one token
    fn enc(s: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let c: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < c.len() {
            if c[i] == 'a' && c.get(i + 1) == Some(&'b') {
                out.push(1000);
                i += 2;
            } else {
                out.push(c[i] as u32);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn the_split_falls_where_lm_eval_puts_it() {
        // trailing spaces move to the continuation
        let (ctx, cont) = encode_pair(&enc, "Q: x ", "y", None).unwrap();
        assert_eq!(ctx, enc("Q: x"));
        assert_eq!(cont, enc(" y"));
        // a token across the split: the continuation's tokens come from the whole
        let (ctx, cont) = encode_pair(&enc, "xa", "bc", None).unwrap();
        assert_eq!((ctx, cont), (enc("xa"), vec!['c' as u32]));
        assert!(encode_pair(&enc, "", "y", None).is_err());
        assert_eq!(encode_pair(&enc, "", "y", Some(7)).unwrap(), (vec![7], enc("y")));
    }

    #[test]
    fn left_truncation_keeps_the_continuation() {
        let (inp, n) = model_input(&[1, 2, 3, 4, 5], &[6, 7], 4);
        assert_eq!((inp, n), (vec![3, 4, 5, 6], 2));
        let (inp, n) = model_input(&[1, 2], &[3], 10);
        assert_eq!((inp, n), (vec![1, 2], 1));
    }
}
