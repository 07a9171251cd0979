//! `lehr serve` against the official `openai` Python client (pinned by scripts/setup.sh) on a
//! real model (SmolLM2-135M-Instruct, imported from its published GGUF): greedy completions
//! equal transformers' `generate` for five prompts alone, concurrently (the server batches
//! them) and as one listed request; streaming gives the same text; stop sequences, seeds, `n`,
//! logprobs and chat (the checkpoint's template, token counts as transformers renders it) work;
//! bad requests come back as the client's own error types with the field named. The same
//! greedy checks pass on a Qwen2-shaped checkpoint lehr trains on the demo data.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::llm::*;
use common::*;
use serde_json::Value;

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lehr serve` on `ckpt`, runs serve_openai.py against it, returns its findings.
fn serve_and_ask(ckpt: &std::path::Path, extra: &[&str]) -> Value {
    let mut child = lehr()
        .args(["serve", "--listen", "127.0.0.1:0", "--device", "cpu", "--max-batch", "8", "--checkpoint"])
        .arg(ckpt)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let server = Server(child);
    let url = line.split_whitespace().last().unwrap_or_else(|| panic!("no address in {line:?}")).to_string();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"), "{line}");
    let run = Command::new(venv_python())
        .arg(repo().join("tests/serve_openai.py"))
        .arg(&url)
        .arg(ckpt)
        .args(extra)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    drop(server);
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&v).unwrap());
    v
}

/// What every checkpoint must show: greedy = transformers, however batched; logprobs,
/// streaming and stop strings.
fn check_completions(v: &Value) {
    assert_eq!(v["health"]["status"], "ok");
    let texts = |k: &str| v[k].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let reference = texts("transformers");
    assert_eq!(texts("alone"), reference, "greedy = transformers' generate, one request at a time");
    assert_eq!(texts("together"), reference, "concurrent requests batched together");
    assert_eq!(texts("listed"), reference, "one request with five prompts");
    assert!(reference.iter().all(|t| !t.is_empty()));
    for (n, l) in v["alone_tokens"].as_array().unwrap().iter().zip(v["logprob_lengths"].as_array().unwrap()) {
        assert_eq!(n, l, "one logprob per generated token");
    }
    assert_eq!(v["logprobs_negative"], true);
    assert_eq!(v["stream_text"], v["alone"][0], "streamed pieces join to the whole text");
    assert!(v["stream_chunks"].as_u64().unwrap() > 3);
    let stop = &v["stop"];
    assert_eq!(stop["text"], stop["expected"], "text ends before the stop sequence: {stop}");
    assert_eq!(stop["finish"], "stop");
    assert_eq!(v["seeded"][0], v["seeded"][1], "the same seed, the same samples");
}

/// A Qwen2-shaped checkpoint lehr trained (q/k/v biases, tied embeddings, the demo tokenizer).
#[test]
fn lehr_trained_checkpoint_serves_what_transformers_generates() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let run = dir.path().join("run");
    train_demo(&tokens, &run, "30");
    let v = serve_and_ask(&run.join("checkpoints/step-00000030"), &["--no-chat"]);
    check_completions(&v);
    assert!(v["no_template"].as_str().unwrap().contains("no chat template"), "{}", v["no_template"]);
}

#[test]
fn openai_client_against_lehr_serve() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_smollm2(dir.path());
    let v = serve_and_ask(&ckpt, &[]);
    check_completions(&v);
    assert_eq!(v["model"], "smollm2");
    assert_ne!(v["seeded"][0][0], v["seeded"][0][1], "n = 2 draws two samples");
    let chat = &v["chat"];
    assert_eq!(chat["role"], "assistant");
    let content = chat["content"].as_str().unwrap();
    assert!(!content.trim().is_empty() && !content.contains("\nuser"), "the turn ends at <|im_end|>: {content:?}");
    assert_eq!(chat["finish"], "stop");
    assert_eq!(chat["prompt_tokens"], v["hf_chat_prompt_tokens"], "the chat template renders as transformers'");
    assert_eq!(v["chat_stream"]["content"], chat["content"]);
    assert_eq!(v["chat_stream"]["roles"], serde_json::json!(["assistant"]));
    assert_eq!(v["chat_stream"]["usage"], chat["completion_tokens"]);
    for field in ["temperature", "top_p", "messages", "prompt"] {
        let e = &v["errors"][field];
        assert_eq!(e["status"], 400, "{field}: {e}");
        assert!(e["message"].as_str().unwrap().contains(field), "{field}: {e}");
    }
    assert_eq!(v["errors"]["model"]["status"], 404);
    assert_eq!(v["health_after"]["status"], "ok", "the server survives bad requests");
}
