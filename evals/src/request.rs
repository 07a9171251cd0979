//! Log-likelihood requests as lm-eval builds them for multiple choice: for each choice, the
//! context and `target_delimiter + choice`; trailing whitespace of the context moves to the
//! continuation; the continuation's tokens are those of `encode(context + continuation)` past
//! `encode(context)` (so the split falls where lm-eval puts it, even when a token spans it);
//! the model reads `(context + continuation)[-(max_len + 1):][:-1]` (left truncation).

use crate::task::{Doc, TaskDef};

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub doc: usize,
    pub choice: usize,
    pub context: String,
    pub continuation: String,
}

/// Zero-shot requests, doc by doc, choice by choice.
pub fn requests(task: &TaskDef, docs: &[Doc]) -> Vec<Request> {
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        for (c, choice) in doc.choices.iter().enumerate() {
            out.push(Request {
                doc: d,
                choice: c,
                context: doc.context.clone(),
                continuation: format!("{}{choice}", task.target_delimiter),
            });
        }
    }
    out
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
