//! The mix against files `llama-quantize` made: the tensor tables (name, dims, type, in file
//! order) of two published GGUF files — Qwen2.5-Coder-0.5B-Instruct Q4_K_M and
//! SmolLM2-135M-Instruct Q4_1, read from the registry packages named in each table — and our
//! choice for every tensor, counted in the same file order, must be theirs.

use lehr_formats::mix::{ranks, tensor_type, TensorSpec};
use lehr_formats::FileType;
use serde_json::Value;

fn check(table: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(table);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ft = FileType::parse(v["file_type"].as_str().unwrap()).unwrap();
    let tensors = v["tensors"].as_array().unwrap();
    let tied = !tensors.iter().any(|t| t[0] == "output.weight");
    let names: Vec<&str> = tensors.iter().map(|t| t[0].as_str().unwrap()).collect();
    let mut wrong = Vec::new();
    for ((t, &name), rank) in tensors.iter().zip(&names).zip(ranks(&names)) {
        let dims: Vec<u64> = t[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        let ours = tensor_type(ft, &TensorSpec { name, dims: &dims, rank, tied }).ty;
        if ours.name() != t[2].as_str().unwrap() {
            wrong.push(format!("{name}: ours {} theirs {}", ours.name(), t[2]));
        }
    }
    assert!(wrong.is_empty(), "{table}: {} of {} tensors differ: {wrong:#?}", wrong.len(), tensors.len());
}

#[test]
fn qwen2_5_coder_q4_k_m_types_are_llama_quantizes() {
    check("qwen2.5-coder-0.5b-instruct-q4_k_m.tensors.json");
}

#[test]
fn smollm2_q4_1_types_are_llama_quantizes() {
    check("smollm2-135m-instruct-q4_1.tensors.json");
}
