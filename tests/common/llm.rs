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

/// SmolLM2-135M-Instruct, imported from its published GGUF into `dir/smollm2`.
pub fn import_smollm2(dir: &Path) -> PathBuf {
    let ckpt = dir.join("smollm2");
    let imp = super::lehr()
        .args(["import", "gguf", "-o"])
        .arg(&ckpt)
        .arg(model("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .output()
        .unwrap();
    assert!(imp.status.success(), "{}", String::from_utf8_lossy(&imp.stderr));
    ckpt
}

/// The output of one lm-evaluation-harness run (`--output_path`, `--log_samples`).
pub struct LmEvalRun {
    files: Vec<PathBuf>,
}

/// lm-eval's HF backend on `ckpt` (f32, CPU, batch 8, offline) over the task YAMLs in
/// `tasks_dir`, writing under `out`; `extra` goes on its command line.
pub fn lm_eval(ckpt: &Path, tasks_dir: &Path, tasks: &str, out: &Path, extra: &[&str]) -> LmEvalRun {
    let lm = std::process::Command::new(venv_python())
        .args(["-m", "lm_eval", "--model", "hf", "--device", "cpu", "--batch_size", "8", "--tasks", tasks])
        .args(extra)
        .arg("--model_args")
        .arg(format!("pretrained={},dtype=float32", ckpt.display()))
        .arg("--include_path")
        .arg(tasks_dir)
        .arg("--output_path")
        .arg(out)
        .arg("--log_samples")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(lm.status.success(), "lm-eval: {}", String::from_utf8_lossy(&lm.stderr));
    let sub = std::fs::read_dir(out).unwrap().next().unwrap().unwrap().path();
    LmEvalRun { files: std::fs::read_dir(&sub).unwrap().map(|e| e.unwrap().path()).collect() }
}

impl LmEvalRun {
    fn find(&self, prefix: &str) -> &Path {
        self.files
            .iter()
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("lm-eval wrote no {prefix}* file"))
    }

    /// The results JSON.
    pub fn results(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.find("results_")).unwrap()).unwrap()
    }

    /// The logged samples of `task`, in document order.
    pub fn samples(&self, task: &str) -> Vec<Value> {
        let mut s: Vec<Value> = std::fs::read_to_string(self.find(&format!("samples_{task}_")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        s.sort_by_key(|s| s["doc_id"].as_u64().unwrap());
        s
    }
}

/// A logged lm-eval sample's requests: (context, continuation) per request.
pub fn lm_eval_prompts(sample: &Value) -> Vec<(&str, &str)> {
    let args = sample["arguments"].as_object().unwrap();
    (0..args.len())
        .map(|i| {
            let a = &args[&format!("gen_args_{i}")];
            (a["arg_0"].as_str().unwrap(), a["arg_1"].as_str().unwrap())
        })
        .collect()
}

/// A `lehr eval tasks --json` sample's requests, in the same form.
pub fn lehr_prompts(sample: &Value) -> Vec<(&str, &str)> {
    sample["arguments"].as_array().unwrap().iter().map(|a| (a[0].as_str().unwrap(), a[1].as_str().unwrap())).collect()
}

/// A logged lm-eval sample's log-likelihood per request.
pub fn lm_eval_loglikelihoods(sample: &Value) -> Vec<f64> {
    sample["filtered_resps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let x = if r.is_array() { &r[0] } else { r };
            x.as_str().map(|t| t.parse().unwrap()).or(x.as_f64()).unwrap()
        })
        .collect()
}
