//! lehr's Qwen2 against Hugging Face transformers (the venv scripts/setup.sh installs): a
//! checkpoint lehr writes loads with `from_pretrained` and gives the same logits to 1e-4, and a
//! checkpoint transformers writes loads into lehr with the same logits.

mod common;

use lehr_train::model::{load_hf, save_hf, Model, ModelConfig};
use tch::{nn, Device, Kind, Tensor};

fn tokens() -> Vec<Vec<i64>> {
    (0..2).map(|b| (0..16).map(|t| (b * 37 + t * 11 + 3) % 128).collect()).collect()
}

fn ours(model: &Model, tokens: &[Vec<i64>]) -> Vec<f32> {
    let flat: Vec<i64> = tokens.iter().flatten().copied().collect();
    let ids = Tensor::from_slice(&flat).view([tokens.len() as i64, tokens[0].len() as i64]);
    let logits = tch::no_grad(|| model.forward(&ids));
    Vec::<f32>::try_from(logits.to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn config(tied: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 128,
        hidden_size: 64,
        intermediate_size: 160,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        qkv_bias: true,
        tie_word_embeddings: tied,
        max_position_embeddings: 256,
        init_std: 0.05,
        ..ModelConfig::preset("tiny", 128).unwrap()
    }
}

/// Perturbs norm weights and biases (they start at 1 and 0) so that a mix-up would show.
fn perturb(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name.ends_with("bias") || name.contains("norm") {
                let noise = v.randn_like() * 0.1;
                let _ = v.g_add_(&noise);
            }
        }
    });
}

#[test]
fn mup_knobs_and_qk_norm_fold_into_a_checkpoint_transformers_computes_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    tch::manual_seed(11);
    // YuLan-Mini's knobs on a tied model (folding unties it), a µP logit scale, and QK-norm
    // with QKV bias (a Qwen3 export with zero o_proj biases).
    let c = ModelConfig {
        embedding_scale: 10.0,
        depth_scale: Some(1.4),
        logit_scale: 0.25,
        qk_norm: true,
        z_loss: 1e-4,
        init_std: 0.02,
        ..config(true)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Model::new(&vs, &c).unwrap();
    perturb(&vs);
    let dir = tmp.path().join("mup");
    save_hf(&vs, &c, &dir).unwrap();
    let hf: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!((hf["model_type"].as_str(), hf["tie_word_embeddings"].as_bool()), (Some("qwen3"), Some(false)));
    let mine = ours(&model, &tokens());
    let d = max_diff(&mine, &common::transformers_logits("forward", &dir, &tokens()));
    assert!(d < 1e-4, "folded knobs: lehr vs transformers logits differ by {d}");
    // Without the knobs the logits differ a lot: the folding is what makes them agree.
    let plain =
        Model::new(&vs, &ModelConfig { embedding_scale: 1.0, depth_scale: None, logit_scale: 1.0, ..c.clone() });
    assert!(max_diff(&mine, &ours(&plain.unwrap(), &tokens())) > 0.1);
    // lehr reads its own checkpoint back unfolded, with the knobs.
    let (_vs, back) = load_hf(&dir, Device::Cpu).unwrap();
    assert_eq!(back.config, c);
    assert!(max_diff(&mine, &ours(&back, &tokens())) < 1e-6);
}

#[test]
fn lehr_checkpoints_load_in_transformers_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    tch::manual_seed(7);
    for tied in [false, true] {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Model::new(&vs, &config(tied)).unwrap();
        perturb(&vs);
        let dir = tmp.path().join(format!("lehr-tied-{tied}"));
        save_hf(&vs, &model.config, &dir).unwrap();
        let mine = ours(&model, &tokens());
        let theirs = common::transformers_logits("forward", &dir, &tokens());
        let d = max_diff(&mine, &theirs);
        assert!(d < 1e-4, "tied={tied}: lehr vs transformers logits differ by {d}");
        assert!(mine.iter().map(|x| x.abs()).fold(0.0, f32::max) > 0.1, "logits are not trivial");
    }
    // The reverse: transformers writes, lehr reads.
    let dir = tmp.path().join("hf");
    let theirs = common::transformers_logits("make", &dir, &tokens());
    let (_vs, model) = load_hf(&dir, Device::Cpu).unwrap();
    let d = max_diff(&ours(&model, &tokens()), &theirs);
    assert!(d < 1e-4, "a transformers checkpoint in lehr: logits differ by {d}");
}
