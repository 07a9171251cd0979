//! Data parallelism on CPU over the TCP collective: two ranks (threads here, processes in a
//! real run) each read their half of every global batch; the losses equal a one-rank run with
//! the same global batch (to float tolerance: the gradient sums are added in another order),
//! and both ranks end with bit-identical parameters.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lehr_pipeline::spec::TokenizeSpec;
use lehr_pipeline::tokens::tokenize::{LoadedTokenizer, TokenBatcher};
use lehr_schedules::RunSpec;
use lehr_train::collective::TcpCollective;
use lehr_train::model::ModelConfig;
use lehr_train::trainer::{StepMetrics, TrainOptions, Trainer};
use tch::Device;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write_shards(root: &Path) {
    let tok_path = repo().join("examples/tokenizer/lehr-demo-8k.json");
    let tok = Arc::new(
        LoadedTokenizer::from_bytes(&std::fs::read(&tok_path).unwrap(), tok_path.to_str().unwrap(), "<|endoftext|>")
            .unwrap(),
    );
    for lang in ["en", "ko"] {
        let text = std::fs::read_to_string(repo().join(format!("examples/data/{lang}.jsonl"))).unwrap();
        let dir = root.join(lang);
        std::fs::create_dir_all(&dir).unwrap();
        let spec = TokenizeSpec {
            tokenizer: tok_path.to_string_lossy().into(),
            eos: "<|endoftext|>".into(),
            source: Some(lang.into()),
            batch_docs: 32,
        };
        let mut b = TokenBatcher::new(tok.clone(), &spec);
        for line in text.lines().take(40) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            b.push(v["text"].as_str().unwrap().to_string()).unwrap();
        }
        let (bin, idx, meta) = b.finish().unwrap();
        std::fs::write(dir.join("part-00000.bin"), bin).unwrap();
        std::fs::write(dir.join("part-00000.idx"), idx).unwrap();
        std::fs::write(dir.join("part-00000.tokens.json"), meta).unwrap();
    }
}

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

fn model() -> ModelConfig {
    ModelConfig {
        vocab_size: 8000,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        qkv_bias: true,
        tie_word_embeddings: false,
        max_position_embeddings: 64,
        init_std: 0.02,
    }
}

fn options(data: &Path, out: PathBuf) -> TrainOptions {
    TrainOptions { micro_batch: 2, seed: 4, ..TrainOptions::new(data.to_string_lossy(), out, Device::Cpu) }
}

#[test]
fn two_cpu_ranks_match_one_rank_and_stay_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    write_shards(&data);
    let spec = RunSpec::from_toml(SPEC).unwrap();
    let mut one = Trainer::new(spec.clone(), model(), options(&data, tmp.path().join("one"))).unwrap();
    let single = one.run().unwrap();
    assert_eq!(single.len(), 6, "48 sequences in batches of 8");

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let (spec, data, out) = (spec.clone(), data.clone(), tmp.path().join(format!("rank{rank}")));
            std::thread::spawn(move || -> (Vec<StepMetrics>, Vec<f32>) {
                let c = TcpCollective::connect(rank, 2, addr, Duration::from_secs(30)).unwrap();
                let mut t = Trainer::with_collective(spec, model(), options(&data, out), Box::new(c)).unwrap();
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
