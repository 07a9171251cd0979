//! Distillation (`[distill]`) on real token shards, with a real teacher (a deeper model lehr
//! trains on the same shards first): α = 1 trains exactly as plain training does, gradients
//! reach only the student, `stages` limits it, a 2-rank CPU run equals a 1-rank run, and a
//! teacher of another vocabulary or tokenizer is refused with the reason.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lehr_schedules::RunSpec;
use lehr_train::collective::TcpCollective;
use lehr_train::model::{save_hf, Model, ModelConfig};
use lehr_train::trainer::{latest_checkpoint, StepMetrics, TrainOptions, Trainer};
use tch::{nn, Device};

use common::{repo, small_model, write_shards};

fn spec(distill: &str) -> RunSpec {
    RunSpec::from_toml(&format!(
        r#"
version = 1
seed = 9
sequence-length = 32
global-batch-tokens = 256
[lr]
peak = 3e-3
[sources.en]
[sources.ko]
[[stage]]
name = "a"
lr = {{ phase = "stable", warmup-steps = 1 }}
budgets = {{ en = 512, ko = 512 }}
[[stage]]
name = "b"
lr = {{ phase = "decay" }}
budgets = {{ en = 512, ko = 512 }}
{distill}"#
    ))
    .unwrap()
}

fn distill(teacher: &Path, extra: &str) -> String {
    format!("[distill]\nteacher = {:?}\nprecision = \"fp32\"\n{extra}\n", teacher.display())
}

fn tokenizer() -> Vec<u8> {
    std::fs::read(repo().join("examples/tokenizer/lehr-demo-8k.json")).unwrap()
}

fn options(data: &Path, out: PathBuf) -> TrainOptions {
    TrainOptions {
        micro_batch: 2,
        seed: 4,
        tokenizer: Some((tokenizer(), b"{}".to_vec())),
        ..TrainOptions::new(data.to_string_lossy(), out, Device::Cpu)
    }
}

/// Shards, and a 4-block teacher trained on them.
fn setup(tmp: &Path) -> (PathBuf, PathBuf) {
    let data = tmp.join("tokens");
    write_shards(&data, &["en", "ko"], 40);
    let teacher_run = tmp.join("teacher");
    let deep = ModelConfig { num_hidden_layers: 4, hidden_size: 64, intermediate_size: 128, ..small_model(true) };
    Trainer::new(spec(""), deep, options(&data, teacher_run.clone())).unwrap().run().unwrap();
    (data, latest_checkpoint(&teacher_run).unwrap().unwrap())
}

#[test]
fn alpha_one_is_plain_training_and_the_teacher_stays_frozen() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, teacher) = setup(tmp.path());
    let mut plain = Trainer::new(spec(""), small_model(true), options(&data, tmp.path().join("plain"))).unwrap();
    let p = plain.run().unwrap();
    let mut one = Trainer::new(
        spec(&distill(&teacher, "alpha = 1.0")),
        small_model(true),
        options(&data, tmp.path().join("one")),
    )
    .unwrap();
    let d = one.run().unwrap();
    assert_eq!(p.iter().map(|m| m.loss).collect::<Vec<_>>(), d.iter().map(|m| m.loss).collect::<Vec<_>>());
    assert!(plain.parameters() == one.parameters(), "α = 1: the weights equal plain training's");
    assert!(d.iter().all(|m| m.kd_loss.is_some_and(|k| k > 0.0)) && p.iter().all(|m| m.kd_loss.is_none()));
    // The teacher: no gradients, weights as saved.
    let t = one.teacher().unwrap();
    let saved = lehr_train::init::source_variables(&teacher).unwrap();
    for (name, v) in t.vs.variables() {
        assert!(!v.requires_grad() && !v.grad().defined(), "{name} has a gradient");
        assert!(v.equal(&saved[&name]), "{name} changed");
    }

    // α = 0.5 only in stage "b": stage "a" is plain, "b" differs from plain training and its KL falls.
    let mut half = Trainer::new(
        spec(&distill(&teacher, "alpha = 0.5\ntemperature = 2.0\nstages = [\"b\"]")),
        small_model(true),
        options(&data, tmp.path().join("half")),
    )
    .unwrap();
    let h = half.run().unwrap();
    let (a, b): (Vec<&StepMetrics>, Vec<&StepMetrics>) = h.iter().partition(|m| m.stage == "a");
    assert!(a.iter().all(|m| m.kd_loss.is_none()) && b.iter().all(|m| m.kd_loss.is_some()));
    assert_eq!(a.iter().map(|m| m.loss).collect::<Vec<_>>(), p[..a.len()].iter().map(|m| m.loss).collect::<Vec<_>>());
    assert!(half.parameters() != plain.parameters());
    let metrics = std::fs::read_to_string(tmp.path().join("half/metrics.jsonl")).unwrap();
    assert!(metrics.lines().last().unwrap().contains("\"kd_loss\""), "the KD part is logged");
}

#[test]
fn two_ranks_distill_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, teacher) = setup(tmp.path());
    let spec = spec(&distill(&teacher, "alpha = 0.3\ntemperature = 1.5\ntop-k = 50"));
    let mut one = Trainer::new(spec.clone(), small_model(false), options(&data, tmp.path().join("one"))).unwrap();
    let single = one.run().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let (spec, data, out) = (spec.clone(), data.clone(), tmp.path().join(format!("rank{rank}")));
            std::thread::spawn(move || -> (Vec<StepMetrics>, Vec<f32>) {
                let c = TcpCollective::connect(rank, 2, addr, Duration::from_secs(60), b"test-secret").unwrap();
                let mut t =
                    Trainer::with_collective(spec, small_model(false), options(&data, out), Box::new(c)).unwrap();
                (t.run().unwrap(), t.parameters())
            })
        })
        .collect();
    let results: Vec<_> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results[0].1, results[1].1, "both ranks hold the same weights");
    let max_diff = one.parameters().iter().zip(&results[0].1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "2 ranks vs 1: parameters differ by {max_diff}");
    for (a, b) in single.iter().zip(&results[0].0) {
        let (ka, kb) = (a.kd_loss.unwrap(), b.kd_loss.unwrap());
        assert!((ka - kb).abs() < 1e-4 * ka.max(1e-3), "step {}: KD {ka} vs {kb}", a.step);
        assert!((a.loss - b.loss).abs() < 1e-4 * a.loss, "step {}: CE {} vs {}", a.step, a.loss, b.loss);
    }
}

#[test]
fn a_teacher_of_another_vocabulary_or_tokenizer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    write_shards(&data, &["en", "ko"], 10);
    let other = tmp.path().join("other-vocab");
    let vs = nn::VarStore::new(Device::Cpu);
    let config = ModelConfig { vocab_size: 7999, ..small_model(true) };
    let _m = Model::new(&vs, &config).unwrap();
    save_hf(&vs, &config, &other).unwrap();
    let err = Trainer::new(spec(&distill(&other, "")), small_model(true), options(&data, tmp.path().join("x")))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("7999 tokens, the student's 8000") && err.contains("other-vocab"), "{err}");
    // Same size, other tokens: two ids swapped in the teacher's tokenizer.json.
    let same_size = tmp.path().join("swapped");
    let config = small_model(true);
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Model::new(&vs, &config).unwrap();
    save_hf(&vs, &config, &same_size).unwrap();
    let mut tok: serde_json::Value = serde_json::from_slice(&tokenizer()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["the"].clone(), vocab["and"].clone());
    vocab.insert("the".into(), b);
    vocab.insert("and".into(), a);
    std::fs::write(same_size.join("tokenizer.json"), serde_json::to_vec(&tok).unwrap()).unwrap();
    let err = Trainer::new(spec(&distill(&same_size, "")), small_model(true), options(&data, tmp.path().join("y")))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer differs") && err.contains("2 of"), "{err}");
}
