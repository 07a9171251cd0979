//! Data parallelism on CPU over the TCP collective: two ranks (threads here, processes in a
//! real run) each read their half of every global batch; the losses equal a one-rank run with
//! the same global batch (to float tolerance: the gradient sums are added in another order),
//! and both ranks end with bit-identical parameters.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lehr_schedules::RunSpec;
use lehr_train::collective::TcpCollective;
use lehr_train::trainer::{StepMetrics, TrainOptions, Trainer};
use tch::Device;

use common::{small_model, write_shards};

const SPEC: &str = r#"
version = 1
seed = 9
sequence-length = 32
global-batch-tokens = 256
[lr]
peak = 3e-3
[sources.en]
[sources.ko]
[[stage]]
name = "stable"
lr = { phase = "stable" }
budgets = { en = 1024, ko = 512 }
"#;

fn options(data: &Path, out: PathBuf) -> TrainOptions {
    TrainOptions { micro_batch: 2, seed: 4, ..TrainOptions::new(data.to_string_lossy(), out, Device::Cpu) }
}

#[test]
fn two_cpu_ranks_match_one_rank_and_stay_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    write_shards(&data, &["en", "ko"], 40);
    let spec = RunSpec::from_toml(SPEC).unwrap();
    let mut one = Trainer::new(spec.clone(), small_model(false), options(&data, tmp.path().join("one"))).unwrap();
    let single = one.run().unwrap();
    assert_eq!(single.len(), 6, "48 sequences in batches of 8");

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let (spec, data, out) = (spec.clone(), data.clone(), tmp.path().join(format!("rank{rank}")));
            std::thread::spawn(move || -> (Vec<StepMetrics>, Vec<f32>) {
                let c = TcpCollective::connect(rank, 2, addr, Duration::from_secs(30), b"test-secret").unwrap();
                let mut t =
                    Trainer::with_collective(spec, small_model(false), options(&data, out), Box::new(c)).unwrap();
                let metrics = t.run().unwrap();
                (metrics, t.parameters())
            })
        })
        .collect();
    let results: Vec<(Vec<StepMetrics>, Vec<f32>)> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results[0].1, results[1].1, "parameters are bit-identical on both ranks");
    let reference = one.parameters();
    let max_diff = reference.iter().zip(&results[0].1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "2 ranks vs 1 rank parameters differ by {max_diff}");
    for (a, b) in single.iter().zip(&results[0].0) {
        assert!((a.loss - b.loss).abs() < 1e-4 * a.loss, "step {}: {} vs {}", a.step, a.loss, b.loss);
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(a.tokens_by_source, b.tokens_by_source, "step {}", a.step);
    }
    assert!(tmp.path().join("rank0/metrics.jsonl").exists() && !tmp.path().join("rank1/metrics.jsonl").exists());
}
