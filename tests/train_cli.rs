//! `lehr train run` (builds with the `train` feature): a tokenize job's shards, the demo run
//! spec, a stop and a resume that continues at the next step with the plan's learning rate.
#![cfg(feature = "train")]

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

#[test]
fn train_run_follows_the_plan_and_resumes_at_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let out = dir.path().join("run");
    let train = |stop: &str| -> Vec<Value> {
        let lines = train_demo(&tokens, &out, stop);
        let (done, rest): (Vec<Value>, Vec<Value>) = lines.into_iter().partition(|m| m["event"] == "done");
        assert_eq!(done.len(), 1, "one closing line");
        assert_eq!(done[0]["step"].as_u64().unwrap(), stop.parse::<u64>().unwrap());
        let (steps, resumed): (Vec<Value>, Vec<Value>) = rest.into_iter().partition(|m| m["event"] == "step");
        assert!(resumed.iter().all(|m| m["event"] == "resumed"), "{resumed:?}");
        if let Some(r) = resumed.first() {
            assert_eq!(r["step"], steps[0]["step"], "a resumed run says where it picks up");
        }
        steps
    };
    let first = train("3");
    assert_eq!(first.iter().map(|m| m["step"].as_u64().unwrap()).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(first[0]["lr"], 0.0, "the demo's warmup starts at 0");
    let second = train("5");
    assert_eq!(
        second.iter().map(|m| m["step"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![3, 4],
        "resumed, not restarted"
    );
    assert!(second[0]["lr"].as_f64().unwrap() > first[2]["lr"].as_f64().unwrap());
    let steps: usize = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count();
    assert_eq!(steps, 5);
    // Evaluation: the step-3 checkpoint is near uniform guessing (ln 8000 ≈ 8.99 nats); 35
    // more steps lower the loss on held data.
    train("40");
    let eval = |ckpt: PathBuf| -> Value {
        let run = lehr()
            .args([
                "eval",
                "ppl",
                "--device",
                "cpu",
                "--seq-len",
                "128",
                "--max-tokens",
                "20000",
                "--json",
                "--checkpoint",
            ])
            .arg(ckpt)
            .arg("--data")
            .arg(tokens.join("lang=en"))
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        json_of(&run)
    };
    let early = eval(out.join("checkpoints/step-00000003"));
    let late = eval(out.join("checkpoints/step-00000040"));
    assert_eq!(early["tokens"], 128 * 156, "whole windows of 128 within 20,000 tokens");
    assert!((early["loss"].as_f64().unwrap() - 8000f64.ln()).abs() < 0.3, "{early}");
    assert!(late["loss"].as_f64().unwrap() < early["loss"].as_f64().unwrap() - 0.5, "{early} {late}");
    assert!(late["top5_accuracy"].as_f64().unwrap() > early["top5_accuracy"].as_f64().unwrap());
    // Several checkpoints on several data sets: one model load each, one table (per language);
    // each cell is the single run's figure.
    let table = |json: bool| {
        let mut c = lehr();
        c.args(["eval", "ppl", "--device", "cpu", "--seq-len", "128", "--max-tokens", "20000"]);
        if json {
            c.arg("--json");
        }
        for step in ["step-00000003", "step-00000040"] {
            c.arg("--checkpoint").arg(out.join("checkpoints").join(step));
        }
        c.arg("--data").arg(tokens.join("lang=en")).arg("--data").arg(tokens.join("lang=zh"));
        let run = c.output().unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        run
    };
    let rows = json_of(&table(true))["results"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 4);
    assert_eq!((rows[0]["loss"].clone(), rows[2]["loss"].clone()), (early["loss"].clone(), late["loss"].clone()));
    assert!(rows[1]["data"].as_str().unwrap().ends_with("lang=zh") && rows[3]["perplexity"].as_f64().unwrap() > 1.0);
    let text = String::from_utf8_lossy(&table(false).stdout).to_string();
    assert!(text.contains("lang=en ppl") && text.contains("lang=zh ppl") && text.lines().count() == 3, "{text}");
    // 8 sequences of 256 per step: the warmup mix is 20K en, 20K zh, 5K ko.
    let per_source = &first[0]["tokens_by_source"];
    let total: u64 = per_source.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 8 * 256);

    // Every checkpoint holds the tokenizer the shards were made with, and transformers loads
    // it from the checkpoint directory alone, tokenizing as the tokenizer file does.
    let ckpt = out.join("checkpoints/step-00000040");
    let demo = repo().join("examples/tokenizer/lehr-demo-8k.json");
    assert_eq!(std::fs::read(ckpt.join("tokenizer.json")).unwrap(), std::fs::read(&demo).unwrap());
    let config: Value = serde_json::from_slice(&std::fs::read(ckpt.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
    let venv = std::env::var("LEHR_VENV").expect("LEHR_VENV is unset: run the tests through scripts/test.sh");
    let script = "import sys\nfrom transformers import AutoTokenizer\nfrom tokenizers import Tokenizer\n\
                  t = AutoTokenizer.from_pretrained(sys.argv[1])\nraw = Tokenizer.from_file(sys.argv[2])\n\
                  s = 'Hello world. 你好，世界！ 안녕하세요 세계'\n\
                  assert t.encode(s, add_special_tokens=False) == raw.encode(s, add_special_tokens=False).ids, 'ids differ'\n\
                  print(t.eos_token)";
    let py = std::process::Command::new(std::path::Path::new(&venv).join("bin/python"))
        .args(["-c", script])
        .arg(&ckpt)
        .arg(&demo)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), config["eos_token"].as_str().unwrap());
}

/// A model with YuLan-Mini's knobs (embedding scale, depth scale, z-loss) resumes exactly: the
/// checkpoint's Hugging Face weights have the scales folded in, so resuming must read lehr's
/// unfolded copy, and losses after the resume equal an uninterrupted run's.
#[test]
fn a_mup_model_resumes_exactly_from_its_unfolded_weights() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let train = |out: &std::path::Path, stop: &str| -> Vec<Value> {
        // The shorthand `lehr train SPEC.toml ...` (= `lehr train run SPEC.toml ...`).
        let run = lehr()
            .arg("train")
            .arg(repo().join("examples/mix-demo.toml"))
            .args(["--model", "tiny-mup", "--device", "cpu", "--json", "--stop-at", stop, "--data"])
            .arg(&tokens)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        String::from_utf8(run.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|m| m["event"] == "step")
            .collect()
    };
    let whole = train(&dir.path().join("whole"), "4");
    let cut = dir.path().join("cut");
    let mut resumed = train(&cut, "2");
    assert!(cut.join("checkpoints/step-00000002/lehr-model.safetensors").is_file());
    resumed.extend(train(&cut, "4"));
    let losses = |v: &[Value]| v.iter().map(|m| m["loss"].as_f64().unwrap()).collect::<Vec<_>>();
    assert_eq!(losses(&whole), losses(&resumed));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(cut.join("checkpoints/step-00000004/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["tie_word_embeddings"], false, "the embedding scale unties the exported head");
}

/// NCCL is refused up front with what to do, not after rank 0 has waited for its peers.
#[cfg(feature = "nccl")]
#[test]
fn nccl_on_cpu_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let run = lehr()
        .args(["train", "run", "--device", "cpu", "--world", "2", "--rendezvous", "127.0.0.1:9"])
        .args(["--collective", "nccl", "--data"])
        .arg(&tokens)
        .arg("--out")
        .arg(dir.path().join("run"))
        .arg(repo().join("examples/mix-demo.toml"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("needs --device cuda"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
