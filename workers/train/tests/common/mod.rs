//! Shared by the trainer tests: real token shards from the repo's sample and the small model
//! they train.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lehr_pipeline::spec::TokenizeSpec;
use lehr_pipeline::tokens::tokenize::{LoadedTokenizer, TokenBatcher};
use lehr_train::model::ModelConfig;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One token shard per language under `root/<lang>/`: the first `docs` documents of
/// examples/data/<lang>.jsonl, encoded with the demo tokenizer (8,000 ids) plus EOS.
pub fn write_shards(root: &Path, langs: &[&str], docs: usize) {
    let tok_path = repo().join("examples/tokenizer/lehr-demo-8k.json");
    let tok = Arc::new(
        LoadedTokenizer::from_bytes(&std::fs::read(&tok_path).unwrap(), tok_path.to_str().unwrap(), "<|endoftext|>")
            .unwrap(),
    );
    for lang in langs {
        let text = std::fs::read_to_string(repo().join(format!("examples/data/{lang}.jsonl"))).unwrap();
        let dir = root.join(lang);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = TokenizeSpec {
            tokenizer: tok_path.to_string_lossy().into(),
            eos: "<|endoftext|>".into(),
            source: Some(lang.to_string()),
            batch_docs: 32,
        };
        let mut b = TokenBatcher::new(tok.clone(), &spec);
        for line in text.lines().take(docs) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            b.push(v["text"].as_str().unwrap().to_string()).unwrap();
        }
        let (bin, idx, meta) = b.finish().unwrap();
        std::fs::write(dir.join("part-00000.bin"), bin.into_vec().unwrap()).unwrap();
        std::fs::write(dir.join("part-00000.idx"), idx).unwrap();
        std::fs::write(dir.join("part-00000.tokens.json"), meta).unwrap();
    }
}

/// The `tiny` preset narrowed to hidden 32 / FFN 64 for fast CPU steps.
pub fn small_model(tied: bool) -> ModelConfig {
    ModelConfig {
        hidden_size: 32,
        intermediate_size: 64,
        tie_word_embeddings: tied,
        max_position_embeddings: 64,
        ..ModelConfig::preset("tiny", 8000).unwrap()
    }
}

/// The venv's python (scripts/setup.sh; `LEHR_VENV` overrides).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("LEHR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/lehr/venv"));
    venv.join("bin/python")
}

/// transformers' side of tests/hf_parity.py (`forward`: logits of checkpoint `dir`; `make`: a
/// random transformers checkpoint written to `dir` and its logits) for `tokens`, flattened.
pub fn transformers_logits(mode: &str, dir: &Path, tokens: &[Vec<i64>]) -> Vec<f32> {
    let tok = dir.parent().unwrap().join(format!("{mode}-tokens.json"));
    let out = dir.parent().unwrap().join(format!("{mode}-logits.json"));
    std::fs::write(&tok, serde_json::to_vec(tokens).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf_parity.py");
    let run = std::process::Command::new(python())
        .arg(&script)
        .arg(mode)
        .arg(dir)
        .arg(&tok)
        .arg(&out)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {} (run `eval \"$(scripts/setup.sh)\"` first): {e}", python().display())
        });
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b.as_array().unwrap().iter().flat_map(|t| t.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
        })
        .collect()
}
