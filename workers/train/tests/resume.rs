//! Exact resume on CPU: a run stopped at a checkpoint and continued in a new trainer gives the
//! same loss, learning rate and tokens per source at every step as an uninterrupted run, across
//! a stage boundary, on real token shards read through the mixer.

mod common;

use std::path::Path;

use lehr_schedules::RunSpec;
use lehr_train::optim::AdamWConfig;
use lehr_train::trainer::{latest_checkpoint, TrainOptions, Trainer};
use tch::Device;

use common::{small_model, write_shards};

const SPEC: &str = r#"
version = 1
seed = 3
sequence-length = 32
global-batch-tokens = 256
[lr]
peak = 3e-3
[sources.en]
[sources.zh]
[[stage]]
name = "stable"
lr = { phase = "stable", warmup-steps = 3 }
budgets = { en = 1024, zh = 1024 }
[[stage]]
name = "anneal"
lr = { phase = "decay", shape = "1-sqrt" }
budgets = { en = 256, zh = 768 }
"#;

fn options(data: &Path, out: &Path, stop_at: Option<u64>) -> TrainOptions {
    TrainOptions {
        micro_batch: 3,
        stop_at,
        seed: 5,
        adamw: AdamWConfig::default(),
        eval_data: Some(data.to_string_lossy().into()),
        eval_every: 4,
        eval_tokens: 2048,
        ..TrainOptions::new(data.to_string_lossy(), out, Device::Cpu)
    }
}

#[test]
fn resumed_run_equals_uninterrupted_run_step_for_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    write_shards(&data, &["en", "zh"], 60);
    let spec = RunSpec::from_toml(SPEC).unwrap();

    let mut straight =
        Trainer::new(spec.clone(), small_model(true), options(&data, &tmp.path().join("a"), None)).unwrap();
    assert_eq!(straight.plan().total_steps(), 12, "8 stable + 4 anneal steps");
    let all = straight.run().unwrap();
    assert_eq!(all.len(), 12);
    assert!(all[11].loss < all[0].loss, "it learns: {:?}", all.iter().map(|m| m.loss).collect::<Vec<_>>());
    assert_eq!(all[0].lr, 0.0, "warmup starts at 0");
    assert!(all[8].lr > all[11].lr, "the anneal stage decays");
    assert_eq!(all[8].tokens_by_source["zh"], 6 * 32, "the anneal mix: 24 zh of 32 sequences over 4 steps");

    // Stop at step 5 (mid-stage), then a new trainer picks up the checkpoint.
    let out = tmp.path().join("b");
    let first = Trainer::new(spec.clone(), small_model(true), options(&data, &out, Some(5))).unwrap().run().unwrap();
    assert_eq!(first.len(), 5);
    assert!(latest_checkpoint(&out).unwrap().unwrap().ends_with("step-00000005"));
    let mut resumed = Trainer::new(spec, small_model(true), options(&data, &out, None)).unwrap();
    assert_eq!(resumed.state.step, 5);
    let rest = resumed.run().unwrap();
    let joined: Vec<_> = first.iter().chain(&rest).collect();
    assert_eq!(joined.len(), 12);
    for (a, b) in all.iter().zip(joined) {
        assert_eq!(
            (a.step, &a.stage, a.loss, a.lr, &a.tokens_by_source),
            (b.step, &b.stage, b.loss, b.lr, &b.tokens_by_source)
        );
    }
    // The final checkpoint loads in transformers' layout: config.json and model.safetensors.
    let last = latest_checkpoint(&out).unwrap().unwrap();
    assert!(last.join("config.json").exists() && last.join("model.safetensors").exists());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 12);
    // Per-source evaluation at steps 4, 5 (the stop), 8 and 12, identical in both runs.
    let read = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("eval.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (a, b) = (read(&tmp.path().join("a")), read(&out));
    let steps = |v: &[serde_json::Value]| {
        v.iter().map(|e| (e["step"].as_u64().unwrap(), e["source"].as_str().unwrap().to_string())).collect::<Vec<_>>()
    };
    assert_eq!(steps(&a).len(), 6, "en and zh at steps 4, 8, 12: {:?}", steps(&a));
    assert_eq!(steps(&b).len(), 8, "plus the stop at 5: {:?}", steps(&b));
    let at = |v: &[serde_json::Value], step: u64, src: &str| {
        v.iter().find(|e| e["step"] == step && e["source"] == src).unwrap()["loss"].as_f64().unwrap()
    };
    assert_eq!(at(&a, 12, "zh"), at(&b, 12, "zh"));
    assert!(at(&a, 12, "zh") < at(&a, 4, "zh"), "held-out loss falls");
    assert!(all.iter().all(|m| m.flops_per_token > 0.0 && m.mfu.is_none()));
}
