//! `lehr export gguf`, checked by llama.cpp itself (npm node-llama-cpp, prebuilt CPU build):
//! a model lehr trained, exported at every type, loads in llama.cpp, which tokenizes mixed
//! zh/en/ko text to the Hugging Face tokenizer's ids and gives the log-probabilities that
//! transformers gives the checkpoint — to 1e-3 nats in F32/F16, and within each type's error.

mod common;

use std::path::Path;

use common::llm::*;
use common::*;
use serde_json::Value;

const TEXT: &str = "The model reads text. 你好，世界！这是一个测试。 안녕하세요, 세계. Hello again, world.";

fn hf_logprobs(ckpt: &Path) -> Value {
    hf_run(ckpt, TEXT, 0, "")
}

fn llama_logprobs(gguf: &Path) -> Value {
    llama_run(gguf, TEXT, 0)
}

#[test]
fn llama_cpp_runs_our_gguf_exports_like_transformers_runs_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let out = dir.path().join("run");
    train_demo(&tokens, &out, "40");
    let ckpt = out.join("checkpoints/step-00000040");
    let hf = hf_logprobs(&ckpt);
    let reference: Vec<f64> = hf["logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(reference.len() > 20);

    // (type, largest allowed |Δ| in nats, largest allowed mean |Δ|)
    let mut means = Vec::new();
    for (ty, max_tol, mean_tol) in [
        ("f32", 1e-3, 2e-4),
        ("f16", 2e-3, 5e-4),
        ("bf16", 2e-2, 5e-3),
        ("q8_0", 3e-2, 1e-2),
        ("q5_0", 0.15, 0.05),
        ("q5_1", 0.15, 0.05),
        ("q4_0", 0.3, 0.1),
        ("q4_1", 0.3, 0.1),
        // rows of 64 are not whole 256-blocks: these fall back (Q5_0/Q5_1/Q8_0), as llama.cpp's do
        ("q4_k_m", 0.3, 0.1),
    ] {
        let gguf = dir.path().join(format!("tiny-{ty}.gguf"));
        let exp = lehr().args(["export", "gguf", "--json", "--type", ty, "-o"]).arg(&gguf).arg(&ckpt).output().unwrap();
        assert!(exp.status.success(), "{ty}: {}", String::from_utf8_lossy(&exp.stderr));
        let report = json_of(&exp);
        assert_eq!(report["files"][0]["architecture"], "qwen2");
        let ll = llama_logprobs(&gguf);
        assert_eq!(ll["tokens"], hf["tokens"], "{ty}: llama.cpp tokenizes as the Hugging Face tokenizer");
        let got: Vec<f64> = ll["logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let diffs: Vec<f64> = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).collect();
        let (max, mean) = (diffs.iter().cloned().fold(0.0, f64::max), diffs.iter().sum::<f64>() / diffs.len() as f64);
        eprintln!("{ty}: max |Δ| {max:.5}, mean {mean:.5} nats");
        assert!(max <= max_tol && mean <= mean_tol, "{ty}: max |Δ| {max}, mean {mean}");
        means.push((ty, mean));
    }
    // The other way: import our F32 and Q8_0 files back into checkpoint directories that
    // transformers loads. F32 gives the original's log-probs exactly; Q8_0 carries the quantized
    // weights (it differs from the original) and agrees with llama.cpp on the Q8_0 file (which
    // also quantizes its activations to 8 bits in the matrix products, hence not exactly).
    let mut lls = std::collections::BTreeMap::new();
    for ty in ["f32", "q8_0"] {
        let gguf = dir.path().join(format!("tiny-{ty}.gguf"));
        lls.insert(ty, llama_logprobs(&gguf));
        let back = dir.path().join(format!("imported-{ty}"));
        let imp = lehr().args(["import", "gguf", "--json", "-o"]).arg(&back).arg(&gguf).output().unwrap();
        assert!(imp.status.success(), "{ty}: {}", String::from_utf8_lossy(&imp.stderr));
        let again = hf_logprobs(&back);
        assert_eq!(again["tokens"], hf["tokens"], "{ty}: the rebuilt tokenizer tokenizes as the original");
        let target: Vec<f64> = if ty == "f32" {
            reference.clone()
        } else {
            lls[ty]["logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
        };
        let got: Vec<f64> = again["logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let max = got.iter().zip(&target).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("import {ty}: max |Δ| {max:.6} nats");
        if ty == "f32" {
            assert!(max < 1e-5, "import {ty}: max |Δ| {max}");
        } else {
            assert!(max < 0.02, "import {ty}: max |Δ| {max} against llama.cpp");
            let off: f64 = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).sum::<f64>() / got.len() as f64;
            assert!(off > 1e-5, "the Q8_0 import carries the quantized weights (mean |Δ| to the original {off})");
        }
    }

    // fewer bits, more error
    let mean_of = |t: &str| means.iter().find(|(x, _)| *x == t).unwrap().1;
    assert!(mean_of("f16") < mean_of("q8_0") && mean_of("q8_0") < mean_of("q4_0"), "{means:?}");

    // the ladder in one pass, each file's perplexity on held-out shards measured by importing it
    // back: F16 is the checkpoint's, and each file's ratio to F16 grows as bits go
    let ladder = dir.path().join("ladder");
    let all = lehr()
        .args(["export", "gguf", "--json", "--type", "all", "--device", "cpu", "--eval-tokens", "2048", "--eval-data"])
        .arg(&tokens)
        .arg("-o")
        .arg(&ladder)
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
    let v = json_of(&all);
    let files = v["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["file_type"].as_str().unwrap()).collect();
    assert_eq!(names, ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0"]);
    let source = v["checkpoint_perplexity"].as_f64().unwrap();
    let ratio = |t: &str| files.iter().find(|f| f["file_type"] == t).unwrap()["perplexity_ratio"].as_f64().unwrap();
    let f16 = files[0]["perplexity"].as_f64().unwrap();
    assert!((f16 / source - 1.0).abs() < 1e-3, "F16 {f16} vs the checkpoint {source}");
    assert_eq!(ratio("F16"), 1.0);
    assert!(ratio("Q8_0") < 1.01 && ratio("Q8_0") < ratio("Q4_0") && ratio("Q4_0") < 1.5, "{v}");
    for f in files {
        assert!(ladder.join(format!("step-00000040-{}.gguf", f["file_type"].as_str().unwrap())).is_file(), "{f}");
        assert!(f["bits_per_weight"].as_f64().unwrap() > 4.0);
    }
    let text = lehr()
        .args(["export", "gguf", "--type", "q8_0,q4_k_m", "-o"])
        .arg(dir.path().join("two"))
        .arg(&ckpt)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(table.contains("Q4_K_M") && table.contains("fell back"), "{table}");

    // refusals say what to do
    let bad = lehr()
        .args(["export", "gguf", "--type", "q3_k", "-o"])
        .arg(dir.path().join("x.gguf"))
        .arg(&ckpt)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--type q3_k"));
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(ckpt.join(f), bare.join(f)).unwrap();
    }
    let no_tok = lehr().args(["export", "gguf", "-o"]).arg(dir.path().join("y.gguf")).arg(&bare).output().unwrap();
    assert_eq!(no_tok.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&no_tok.stderr).contains("--tokenizer"),
        "{}",
        String::from_utf8_lossy(&no_tok.stderr)
    );
    let with_tok = lehr()
        .args(["export", "gguf", "-o"])
        .arg(dir.path().join("z.gguf"))
        .arg(&bare)
        .arg("--tokenizer")
        .arg(repo().join("examples/tokenizer/lehr-demo-8k.json"))
        .output()
        .unwrap();
    assert!(with_tok.status.success(), "{}", String::from_utf8_lossy(&with_tok.stderr));
}
