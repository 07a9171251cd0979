//! Growth by stage (`layers = K`, `grow = ...`) on real token shards: `identity` leaves the
//! logits unchanged at the boundary, `inherit` blocks equal the reference's tensors, a run
//! resumed from a checkpoint on either side of a boundary ends bit-identical to an
//! uninterrupted one, and transformers loads every stage's checkpoint at its depth.

mod common;

use std::path::Path;

use lehr_schedules::spec::InitSpec;
use lehr_schedules::RunSpec;
use lehr_train::model::{load_hf, ModelConfig};
use lehr_train::trainer::{latest_checkpoint, TrainOptions, Trainer};
use tch::{Device, Kind, Tensor};

use common::{small_model, write_shards};

fn spec(grow: &str, layers: u32, init: Option<&Path>) -> RunSpec {
    let init = init.map(|p| format!("[init]\nfrom = {:?}\nlayers = \"0..2\"\n", p.display())).unwrap_or_default();
    let grow = if grow.is_empty() { String::new() } else { format!("grow = \"{grow}\"\n") };
    RunSpec::from_toml(&format!(
        r#"
version = 1
seed = 3
sequence-length = 32
global-batch-tokens = 256
[lr]
peak = 3e-3
[sources.en]
[sources.zh]
[[stage]]
name = "short"
lr = {{ phase = "stable", warmup-steps = 2 }}
budgets = {{ en = 1024, zh = 1024 }}
[[stage]]
name = "grown"
lr = {{ phase = "decay" }}
budgets = {{ en = 512, zh = 512 }}
layers = {layers}
{grow}{init}"#
    ))
    .unwrap()
}

fn options(data: &Path, out: &Path, stop_at: Option<u64>) -> TrainOptions {
    TrainOptions { micro_batch: 4, stop_at, seed: 5, ..TrainOptions::new(data.to_string_lossy(), out, Device::Cpu) }
}

fn ids() -> Tensor {
    let v: Vec<i64> = (0..2 * 24).map(|i| (i * 37 + 11) % 8000).collect();
    Tensor::from_slice(&v).view([2, 24])
}

fn logits(t: &Trainer) -> Tensor {
    tch::no_grad(|| t.model.forward(&ids())).to_kind(Kind::Float)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn identity_growth_keeps_the_function_and_then_trains_the_new_block() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    write_shards(&data, &["en", "zh"], 60);
    let out = tmp.path().join("run");
    let mut t = Trainer::new(spec("identity", 3, None), small_model(true), options(&data, &out, None)).unwrap();
    assert_eq!(t.plan().stages[1].first_step, 8);
    t.run_until(8).unwrap();
    let before = logits(&t);
    t.prepare_step().unwrap();
    assert_eq!(t.layers(), 3);
    let after = logits(&t);
    let d = max_diff(&before, &after);
    assert!(d < 1e-5, "identity growth changed the logits by {d}");
    let rest = t.run().unwrap();
    assert_eq!(rest.len(), 4);
    let vars: std::collections::BTreeMap<String, Tensor> = t.variables().into_iter().collect();
    let o = vars["model.layers.2.self_attn.o_proj.weight"].abs().sum(Kind::Float).double_value(&[]);
    assert!(o > 0.0, "the new block's output projection trains away from zero");
    let growth = std::fs::read_to_string(out.join("growth.jsonl")).unwrap();
    let g: serde_json::Value = serde_json::from_str(growth.lines().next().unwrap()).unwrap();
    assert_eq!((g["step"].as_u64(), g["from_layers"].as_u64(), g["to_layers"].as_u64()), (Some(8), Some(2), Some(3)));
    assert_eq!(g["rule"], "identity");
    assert!(g["parameters_after"].as_i64().unwrap() > g["parameters_before"].as_i64().unwrap());
}

#[test]
fn inherit_takes_the_next_reference_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    write_shards(&data, &["en", "zh"], 60);
    // A real reference: a 4-block model trained on the same shards.
    let ref_run = tmp.path().join("ref");
    let deep = ModelConfig { num_hidden_layers: 4, ..small_model(true) };
    let mut ref_spec = spec("", 4, None);
    ref_spec.stages.truncate(1);
    Trainer::new(ref_spec, deep, options(&data, &ref_run, None)).unwrap().run().unwrap();
    let reference = latest_checkpoint(&ref_run).unwrap().unwrap();
    let init = InitSpec { from: reference.to_string_lossy().into(), layers: Some("0..2".into()) };
    let (student, inherit) = lehr_train::init::student(&init, 8000).unwrap();
    assert_eq!((student.num_hidden_layers, inherit.source_layers), (2, 4));
    let opts = TrainOptions { init: Some(inherit), ..options(&data, &tmp.path().join("student"), None) };
    let mut t = Trainer::new(spec("", 4, Some(&reference)), student, opts).unwrap();
    t.run_until(8).unwrap();
    t.prepare_step().unwrap();
    let ref_vars = lehr_train::init::source_variables(&reference).unwrap();
    let vars: std::collections::BTreeMap<String, Tensor> = t.variables().into_iter().collect();
    let mut checked = 0;
    for (name, v) in &vars {
        if name.starts_with("model.layers.2.") || name.starts_with("model.layers.3.") {
            assert!(v.equal(&ref_vars[name]), "{name} is not the reference's");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 12, "every tensor of blocks 2 and 3 (q/k/v with biases)");
    let b0 = "model.layers.0.mlp.up_proj.weight";
    assert!(!vars[b0].equal(&ref_vars[b0]), "block 0 trained for 8 steps");
    let rest = t.run().unwrap();
    assert!(rest.iter().all(|m| m.loss.is_finite()));
    // Past the reference's blocks: refused before the run starts, naming the stage.
    let (student, inherit) = lehr_train::init::student(&init, 8000).unwrap();
    let opts = TrainOptions { init: Some(inherit), ..options(&data, &tmp.path().join("too-deep"), None) };
    let err = Trainer::new(spec("", 5, Some(&reference)), student, opts).err().unwrap().to_string();
    assert!(err.contains("stage[1] \"grown\".layers") && err.contains("has 4"), "{err}");
}

/// transformers' logits on `dir` for [`ids`].
fn transformers_logits(dir: &Path) -> Tensor {
    let rows: Vec<Vec<i64>> = (0..2).map(|b| Vec::<i64>::try_from(ids().get(b)).unwrap()).collect();
    let flat = common::transformers_logits("forward", dir, &rows);
    Tensor::from_slice(&flat).view([2, 24, -1])
}

#[test]
fn resume_on_either_side_of_a_growth_boundary_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    write_shards(&data, &["en", "zh"], 60);
    let spec = spec("copy-last", 3, None);
    let straight_out = tmp.path().join("straight");
    let mut straight = Trainer::new(spec.clone(), small_model(true), options(&data, &straight_out, None)).unwrap();
    let all = straight.run().unwrap();
    let reference = straight.parameters();
    for stop in [8, 9] {
        let out = tmp.path().join(format!("stop-{stop}"));
        let first =
            Trainer::new(spec.clone(), small_model(true), options(&data, &out, Some(stop))).unwrap().run().unwrap();
        let mut resumed = Trainer::new(spec.clone(), small_model(true), options(&data, &out, None)).unwrap();
        assert_eq!((resumed.state.step, resumed.layers()), (stop, if stop == 8 { 2 } else { 3 }));
        let rest = resumed.run().unwrap();
        let losses: Vec<f64> = first.iter().chain(&rest).map(|m| m.loss).collect();
        assert_eq!(losses, all.iter().map(|m| m.loss).collect::<Vec<_>>(), "stop at {stop}");
        assert!(resumed.parameters() == reference, "stop at {stop}: weights differ from the uninterrupted run's");
        let growth = std::fs::read_to_string(out.join("growth.jsonl")).unwrap();
        assert_eq!(growth.lines().count(), 1, "one growth logged: {growth}");
    }
    // Each stage's checkpoint is a transformers checkpoint of its depth, computing what lehr does.
    for (step, layers) in [(8, 2), (12, 3)] {
        let dir = straight_out.join(format!("checkpoints/step-{step:08}"));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["num_hidden_layers"], layers);
        let (_, model) = load_hf(&dir, Device::Cpu).unwrap();
        let ours = tch::no_grad(|| model.forward(&ids())).to_kind(Kind::Float);
        let d = max_diff(&ours, &transformers_logits(&dir));
        assert!(d < 1e-4, "step {step}: transformers differs from lehr by {d}");
    }
}
