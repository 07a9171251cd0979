//! `lehr inspect gguf`: the metadata and tensor table of a file we write, as JSON; bad files
//! are refused with the reason (exit 2).

mod common;

use common::*;
use lehr_formats::quants::quantize;
use lehr_formats::{GgmlType, GgufWriter, MetaValue};

#[test]
fn inspect_gguf_shows_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    let vocab: Vec<MetaValue> = (0..500).map(|i| MetaValue::String(format!("t{i}"))).collect();
    w.meta("general.architecture", MetaValue::String("qwen2".into()))
        .meta("qwen2.block_count", MetaValue::U32(1))
        .meta("tokenizer.ggml.tokens", MetaValue::Array(vocab));
    let x: Vec<f32> = (0..64 * 4).map(|i| i as f32 / 100.0).collect();
    w.tensor("token_embd.weight", &[64, 4], GgmlType::Q8_0, quantize(GgmlType::Q8_0, &x).unwrap()).unwrap();
    w.tensor("output_norm.weight", &[64], GgmlType::F32, quantize(GgmlType::F32, &x[..64]).unwrap()).unwrap();
    w.write_file(&path).unwrap();

    let out = lehr().args(["inspect", "gguf", "--json"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 3);
    assert_eq!(v["metadata"]["general.architecture"], "qwen2");
    assert_eq!(v["metadata"]["tokenizer.ggml.tokens"]["array_len"], 500, "long arrays are summarized");
    assert_eq!(v["tensors"][0]["name"], "token_embd.weight");
    assert_eq!(v["tensors"][0]["type"], "Q8_0");
    assert_eq!(v["tensors"][0]["dims"], serde_json::json!([64, 4]));
    assert_eq!(v["parameters"], 320);
    assert_eq!(v["by_type"]["Q8_0"]["bytes"], 8 * 34);
    let text = lehr().args(["inspect", "gguf"]).arg(&path).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("token_embd.weight") && text.contains("(500 items)"), "{text}");

    // a cut file and a file that is not GGUF: exit 2, saying why
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(dir.path().join("cut.gguf"), &bytes[..bytes.len() - 100]).unwrap();
    let out = lehr().args(["inspect", "gguf"]).arg(dir.path().join("cut.gguf")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("past the end of the file"));
    let out = lehr().args(["inspect", "gguf"]).arg(repo().join("README.md")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a GGUF file"));
}
