//! The two independent model runtimes the GGUF tests compare against: transformers (in the
//! setup script's venv) on a checkpoint directory, and llama.cpp (npm node-llama-cpp, through
//! scripts/llama/logprobs.mjs) on a GGUF file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::repo;

pub fn venv_python() -> PathBuf {
    let venv = std::env::var("LEHR_VENV").expect("LEHR_VENV is unset: run the tests through scripts/test.sh");
    Path::new(&venv).join("bin/python")
}

/// A real model set up by scripts/models.sh (`$LEHR_MODELS/name`).
pub fn model(name: &str) -> PathBuf {
    let dir = std::env::var("LEHR_MODELS").expect("LEHR_MODELS is unset: run the tests through scripts/test.sh");
    let p = Path::new(&dir).join(name);
    assert!(p.is_file(), "{} is missing: rerun scripts/setup.sh (it runs scripts/models.sh)", p.display());
    p
}

/// transformers on the checkpoint `ckpt`: `tokens` of `text`, the teacher-forced `logprobs` of
/// every token after the first, `greedy` tokens continuing it, and `extra` tokenized.
pub fn hf_run(ckpt: &Path, text: &str, greedy: usize, extra: &str) -> Value {
    let script = r#"
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tok.encode(sys.argv[2], add_special_tokens=False)
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
n = int(sys.argv[3])
with torch.no_grad():
    lp = torch.log_softmax(m(torch.tensor([ids])).logits[0].double(), -1)
    g = m.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=n,
                   do_sample=False)[0][len(ids):].tolist() if n else []
chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) if tok.chat_template else None
print(json.dumps({'tokens': ids, 'logprobs': [lp[i - 1, ids[i]].item() for i in range(1, len(ids))], 'greedy': g,
                  'extra': tok.encode(sys.argv[4], add_special_tokens=False), 'chat': chat}))
"#;
    let out = std::process::Command::new(venv_python())
        .args(["-c", script])
        .arg(ckpt)
        .arg(text)
        .arg(greedy.to_string())
        .arg(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "transformers: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// llama.cpp on a GGUF file: `tokens` of `text`, teacher-forced `logprobs`, `greedy` tokens.
pub fn llama_run(gguf: &Path, text: &str, greedy: usize) -> Value {
    let out = std::process::Command::new("node")
        .arg(repo().join("scripts/llama/logprobs.mjs"))
        .arg(gguf)
        .arg(text)
        .arg(greedy.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "llama.cpp on {}: {}", gguf.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NEG_INFINITY)).collect()
}

/// exp of the mean negative log-probability.
pub fn perplexity(run: &Value) -> f64 {
    let lp = floats(&run["logprobs"]);
    (-lp.iter().sum::<f64>() / lp.len() as f64).exp()
}

/// (largest, mean) absolute difference.
pub fn diff(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    (d.iter().cloned().fold(0.0, f64::max), d.iter().sum::<f64>() / d.len() as f64)
}
