//! lehr's train worker (tch/libtorch). [`smoke`] trains a tiny next-token model for a few steps
//! on CPU (and on CUDA when present), so CI shows that libtorch links, runs forward and
//! backward, and optimizes. [`model`] is the Qwen2/Llama decoder with Hugging Face tensor names
//! and checkpoints (checked against `transformers` in tests/hf_parity.rs); [`trainer`] follows
//! a run spec's stages and LR with the mixer's data, checkpoints and resumes exactly, and
//! trains data-parallel over a [`collective`]; [`eval`] scores checkpoints; [`bench`] times the
//! training step.

use tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};

#[derive(Debug, Clone, serde::Serialize)]
pub struct SmokeReport {
    pub device: String,
    pub steps: u32,
    pub first_loss: f64,
    pub last_loss: f64,
    pub first_grad_norm: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
    /// A model, spec or checkpoint the run cannot use (bad input: the message says which).
    #[error("{0}")]
    Config(String),
    #[error("i/o error on {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("training data: {0}")]
    Data(String),
    #[error("collective: {0}")]
    Collective(String),
}

pub mod bench;
pub mod chat;
pub mod collective;
pub mod distill;
pub mod durable;
pub mod eval;
pub mod generate;
pub mod grow;
pub mod init;
pub mod model;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod openai;
pub mod optim;
pub mod publish;
pub mod rank;
pub mod score;
pub mod serve;
pub mod tasks;
pub mod trainer;

/// The tch this crate links, for callers that name devices or tensors.
pub use tch;

/// libtorch's random generator is global: tests that seed it and draw from it hold this.
#[cfg(test)]
pub(crate) static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Embedding → linear → logits over a 64-token vocabulary, trained with AdamW to predict the
/// next token of a fixed repeating sequence. The loss must fall.
pub fn smoke_on(device: Device, steps: u32) -> Result<SmokeReport, TrainError> {
    tch::manual_seed(0);
    let vocab = 64i64;
    let dim = 32i64;
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let model = nn::seq()
        .add(nn::embedding(&root / "embed", vocab, dim, Default::default()))
        .add_fn(|x| x.gelu("none"))
        .add(nn::linear(&root / "head", dim, vocab, Default::default()));
    let mut opt = nn::AdamW::default().build(&vs, 1e-2)?;
    let seq = Tensor::arange(128, (Kind::Int64, device)).remainder(vocab);
    let inputs = seq.narrow(0, 0, 127);
    let targets = seq.narrow(0, 1, 127);
    let mut first_loss = f64::NAN;
    let mut first_grad_norm = f64::NAN;
    let mut last_loss = f64::NAN;
    for step in 0..steps {
        let logits = model.forward(&inputs);
        let loss = logits.cross_entropy_for_logits(&targets);
        opt.zero_grad();
        loss.backward();
        if step == 0 {
            let norms: Vec<Tensor> =
                vs.trainable_variables().iter().map(|v| v.grad().norm().pow_tensor_scalar(2)).collect();
            first_grad_norm = Tensor::stack(&norms, 0).sum(Kind::Float).sqrt().double_value(&[]);
            first_loss = loss.double_value(&[]);
        }
        opt.step();
        last_loss = loss.double_value(&[]);
    }
    Ok(SmokeReport { device: format!("{device:?}"), steps, first_loss, last_loss, first_grad_norm })
}

/// Runs [`smoke_on`] on CPU and, when libtorch sees one, on the first CUDA device.
pub fn smoke() -> Result<Vec<SmokeReport>, TrainError> {
    let mut out = vec![smoke_on(Device::Cpu, 50)?];
    if tch::Cuda::is_available() {
        out.push(smoke_on(Device::Cuda(0), 50)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // libtorch's seed is global: both checks run in one test so that no other test reseeds in
    // between.
    #[test]
    fn tiny_model_learns_on_cpu_deterministically() {
        let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        let r = smoke_on(Device::Cpu, 60).unwrap();
        assert!(r.first_loss.is_finite() && r.first_grad_norm > 0.0, "{r:?}");
        // uniform guessing over 64 tokens costs ln(64) ≈ 4.16 nats; the model must beat it by far
        assert!((r.first_loss - (64f64).ln()).abs() < 1.0, "{r:?}");
        assert!(r.last_loss < 0.5 * r.first_loss, "loss must fall: {r:?}");
        let a = smoke_on(Device::Cpu, 5).unwrap();
        let b = smoke_on(Device::Cpu, 5).unwrap();
        assert_eq!(a.last_loss, b.last_loss);
    }
}
