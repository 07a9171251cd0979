//! Tokenization through the whole system: `corpus init --preset tokenize` → `corpus build`
//! writes Megatron token shards whose every document equals an independent encoding of the
//! input text plus EOS; `.idx` bytes are checked against Megatron's layout with a parser
//! written here (not lehr's); `lehr tokenizer train` balances languages and round-trips text.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lehr_pipeline::store;
use lehr_pipeline::tokens::{load_shards, TokenShard};
use serde_json::Value;

fn demo_tokenizer() -> PathBuf {
    repo().join("examples/tokenizer/lehr-demo-8k.json")
}

fn qwen_tokenizer() -> Option<PathBuf> {
    let p = repo().join("../shared/fixtures/tokenizers/qwen2.5/tokenizer.json");
    (std::env::var_os("LEHR_TEST_NO_SHARED").is_none() && p.exists()).then_some(p)
}

fn sample_inputs() -> Vec<PathBuf> {
    ["zh.jsonl", "en.jsonl", "ko.jsonl"].iter().map(|f| repo().join("examples/data").join(f)).collect()
}

/// The `text` of every line of the inputs, in the planner's order (files sorted by path).
fn input_texts(inputs: &[PathBuf]) -> Vec<String> {
    let mut inputs = inputs.to_vec();
    inputs.sort();
    inputs
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| serde_json::from_str::<Value>(&l).unwrap()["text"].as_str().unwrap().to_string())
        .collect()
}

/// Megatron's `.idx` layout, parsed here independently: (dtype code, lengths, pointers, doc index).
fn parse_idx(bytes: &[u8]) -> (u8, Vec<i32>, Vec<i64>, Vec<i64>) {
    assert_eq!(&bytes[..9], b"MMIDIDX\x00\x00");
    assert_eq!(u64::from_le_bytes(bytes[9..17].try_into().unwrap()), 1, "version");
    let code = bytes[17];
    let n = u64::from_le_bytes(bytes[18..26].try_into().unwrap()) as usize;
    let d = u64::from_le_bytes(bytes[26..34].try_into().unwrap()) as usize;
    let mut o = 34;
    let lengths = (0..n).map(|i| i32::from_le_bytes(bytes[o + 4 * i..o + 4 * i + 4].try_into().unwrap())).collect();
    o += 4 * n;
    let pointers = (0..n).map(|i| i64::from_le_bytes(bytes[o + 8 * i..o + 8 * i + 8].try_into().unwrap())).collect();
    o += 8 * n;
    let docs = (0..d).map(|i| i64::from_le_bytes(bytes[o + 8 * i..o + 8 * i + 8].try_into().unwrap())).collect();
    o += 8 * d;
    assert_eq!(o, bytes.len(), "nothing after the document index");
    (code, lengths, pointers, docs)
}

fn build_tokens(dir: &Path, tokenizer: &Path, inputs: &[PathBuf], split: &str) -> (PathBuf, Value) {
    let out = dir.join("tokens");
    let spec =
        init_preset(dir, "tokenize", inputs, &out, &["--tokenizer", tokenizer.to_str().unwrap(), "--name", "sample"]);
    let text =
        std::fs::read_to_string(&spec).unwrap().replace("split-size = \"64MiB\"", &format!("split-size = {split:?}"));
    std::fs::write(&spec, text).unwrap();
    let run = lehr().args(["corpus", "build"]).arg(&spec).args(["--workers", "2", "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    (out, json_of(&run))
}

async fn load_all(out: &Path) -> Vec<TokenShard> {
    load_shards(&store::resolve(out.to_str().unwrap()).unwrap()).await.unwrap()
}

fn check_against_independent_encoding(out: &Path, tokenizer: &Path, inputs: &[PathBuf], eos: &str, dtype_code: u8) {
    let tok = tokenizers::Tokenizer::from_file(tokenizer).unwrap();
    let eos_id = tok.token_to_id(eos).unwrap();
    let texts = input_texts(inputs);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shards = rt.block_on(load_all(out));
    assert!(shards.len() >= 3, "several shards: {}", shards.len());
    let mut doc = 0usize;
    for shard in &shards {
        let prefix = out.join(shard.name.rsplit('/').next().unwrap());
        let idx = std::fs::read(prefix.with_extension("idx")).unwrap();
        let bin = std::fs::read(prefix.with_extension("bin")).unwrap();
        let (code, lengths, pointers, docs) = parse_idx(&idx);
        assert_eq!(code, dtype_code, "{}", shard.name);
        assert_eq!(docs, (0..=lengths.len() as i64).collect::<Vec<_>>(), "one sequence per document");
        let width = if code == 8 { 2 } else { 4 };
        let mut expect_ptr = 0i64;
        for (i, (&len, &ptr)) in lengths.iter().zip(&pointers).enumerate() {
            assert_eq!(ptr, expect_ptr, "{} sequence {i}: pointers are cumulative byte offsets", shard.name);
            let ids: Vec<u32> = bin[ptr as usize..ptr as usize + len as usize * width]
                .chunks(width)
                .map(|c| {
                    if width == 2 {
                        u16::from_le_bytes([c[0], c[1]]) as u32
                    } else {
                        i32::from_le_bytes(c.try_into().unwrap()) as u32
                    }
                })
                .collect();
            let mut expected = tok.encode(texts[doc].as_str(), false).unwrap().get_ids().to_vec();
            expected.push(eos_id);
            assert_eq!(ids, expected, "document {doc} ({} sequence {i})", shard.name);
            assert_eq!(shard.document(i), expected, "lehr's reader agrees");
            expect_ptr += len as i64 * width as i64;
            doc += 1;
        }
        assert_eq!(expect_ptr as usize, bin.len());
        assert_eq!(shard.meta.tokens, lengths.iter().map(|&l| l as u64).sum::<u64>());
        assert_eq!(shard.meta.source, "sample");
        assert_eq!(shard.meta.tokenizer.eos_id, eos_id);
        assert!(shard.meta.eos_appended);
    }
    assert_eq!(doc, texts.len(), "every input document is in the shards, once, in input order");
    let bytes: u64 = shards.iter().map(|s| s.meta.text_bytes).sum();
    assert_eq!(bytes, texts.iter().map(|t| t.len() as u64).sum::<u64>());
}

#[test]
fn tokenize_preset_writes_megatron_shards_equal_to_an_independent_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = sample_inputs();
    let (out, report) = build_tokens(dir.path(), &demo_tokenizer(), &inputs, "512KiB");
    assert_eq!(report["job"]["state"], "succeeded", "{report}");
    let texts = input_texts(&inputs);
    assert_eq!(report["tokens"]["documents"].as_u64().unwrap(), texts.len() as u64);
    assert_eq!(report["tokens"]["dtype"], "uint16");
    check_against_independent_encoding(&out, &demo_tokenizer(), &inputs, "<|endoftext|>", 8);
}

#[test]
fn qwen_tokenizer_needs_int32_shards() {
    let Some(qwen) = qwen_tokenizer() else {
        eprintln!("skipped: ../shared/fixtures/tokenizers/qwen2.5 not available");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<PathBuf> = sample_inputs().into_iter().take(2).collect();
    let (out, _) = build_tokens(dir.path(), &qwen, &inputs, "512KiB");
    check_against_independent_encoding(&out, &qwen, &inputs, "<|endoftext|>", 4);
}

#[test]
fn unknown_eos_fails_the_job_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tokens");
    let spec = init_preset(
        dir.path(),
        "tokenize",
        &sample_inputs()[..1],
        &out,
        &["--tokenizer", demo_tokenizer().to_str().unwrap(), "--eos", "</s>"],
    );
    let run = lehr().args(["corpus", "build"]).arg(&spec).output().unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("output.tokenize.eos") && err.contains("</s>"), "{err}");
}

#[test]
fn tokenizer_train_balances_languages_and_round_trips_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tok.json");
    let reference = qwen_tokenizer().unwrap_or_else(demo_tokenizer);
    let run = lehr()
        .args([
            "tokenizer",
            "train",
            "--vocab-size",
            "3000",
            "--ratio",
            "zh=0.5",
            "--ratio",
            "en=0.3",
            "--ratio",
            "ko=0.2",
        ])
        .args(["--eval-size", "100KiB", "--sample-size", "1MB", "--json", "--reference"])
        .arg(&reference)
        .arg("-o")
        .arg(&out)
        .arg("--input")
        .args(sample_inputs())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report = json_of(&run);
    assert_eq!(report["vocab_size"], 3000);
    let langs = report["languages"].as_array().unwrap();
    assert_eq!(langs.len(), 3);
    let total: f64 = langs.iter().map(|l| l["train_bytes"].as_f64().unwrap()).sum();
    assert!(total <= 1e6 + 20_000.0 && total > 0.9e6, "sample size honoured: {total}");
    for l in langs {
        let share = l["train_bytes"].as_f64().unwrap() / total;
        let want = l["ratio"].as_f64().unwrap();
        assert!((share - want).abs() < 0.02, "{}: share {share} vs ratio {want}", l["lang"]);
        assert!(l["held_out"]["bytes_per_token"].as_f64().unwrap() > 1.0, "{l}");
        assert!(l["relative"].as_f64().unwrap() > 0.0, "{l}");
    }
    // Byte-level BPE is lossless; CJK and Hangul merge into multi-byte tokens.
    let tok = tokenizers::Tokenizer::from_file(&out).unwrap();
    assert_eq!(tok.get_vocab_size(true), 3000);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    for text in input_texts(&sample_inputs()).iter().step_by(97) {
        let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(&tok.decode(&ids, false).unwrap(), text);
        assert!(ids.len() < text.len(), "merges happen");
    }
    let bad = lehr()
        .args(["tokenizer", "train", "--ratio", "zh=0.5", "--ratio", "en=0.3", "-o"])
        .arg(dir.path().join("x.json"))
        .arg("--input")
        .args(sample_inputs())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sum to 1"));
}
