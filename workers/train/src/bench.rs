//! `lehr bench train`: the trainer's inner step (forward, [`batch_loss`], backward,
//! global-norm clipping, lehr's AdamW) on a model preset with random token batches, timed after
//! a warm-up. Reports tokens/s, model FLOP utilization against a given peak, and peak memory
//! (CUDA: `nvidia-smi`'s figure for this process; CPU: the process's maximum resident set).
//! benches/torch_train.py runs the same shape and batch in PyTorch eager for the ratio.

use std::time::Instant;

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::model::{flops_per_token, Model, ModelConfig};
use crate::optim::{AdamW, AdamWConfig};
use crate::trainer::batch_loss;
use crate::TrainError;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub model: ModelConfig,
    pub preset: String,
    pub sequence_length: i64,
    pub micro_batch: i64,
    pub steps: usize,
    pub warmup: usize,
    pub device: Device,
    pub compute: Kind,
    /// The device's peak FLOP/s, for MFU.
    pub peak_flops: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub preset: String,
    /// The benchmarked shape (benches/torch_train.py builds the same model from it).
    pub model: ModelConfig,
    pub device: String,
    pub precision: String,
    pub parameters: i64,
    pub sequence_length: i64,
    pub micro_batch: i64,
    pub steps_timed: usize,
    pub step_ms_median: f64,
    pub tokens_per_s: f64,
    pub flops_per_token: f64,
    pub achieved_tflops: f64,
    pub mfu: Option<f64>,
    pub peak_memory_bytes: Option<u64>,
    /// Where the memory figure comes from.
    pub memory_source: String,
    pub last_loss: f64,
}

pub fn bench_train(o: &BenchOptions) -> Result<BenchReport, TrainError> {
    let vs = nn::VarStore::new(o.device);
    let mut model = Model::seeded(&vs, &o.model, 0)?;
    model.compute = o.compute;
    let mut opt = AdamW::new(vs.variables().into_iter().collect(), AdamWConfig::default());
    let v = o.model.vocab_size;
    let (b, l) = (o.micro_batch, o.sequence_length);
    let tokens = (b * l) as f64;
    let mut times = Vec::new();
    let mut last_loss = f64::NAN;
    for step in 0..o.warmup + o.steps {
        let batch = Tensor::randint(v, [b, l + 1], (Kind::Int64, o.device));
        sync(o.device);
        let t0 = Instant::now();
        opt.zero_grad();
        let logits = model.forward(&batch.narrow(1, 0, l)).view([-1, v]);
        let targets = batch.narrow(1, 1, l).reshape([-1]);
        let (ce, loss) = batch_loss(&logits, &targets, o.model.z_loss, tokens);
        loss.backward();
        opt.clip_grad_norm(1.0);
        opt.step(3e-4);
        last_loss = ce.double_value(&[]);
        sync(o.device);
        if step >= o.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let fpt = flops_per_token(&vs, &o.model, l);
    let tokens_per_s = tokens / median;
    let achieved = fpt * tokens_per_s;
    let (peak_memory_bytes, memory_source) = peak_memory(o.device);
    Ok(BenchReport {
        preset: o.preset.clone(),
        model: o.model.clone(),
        device: format!("{:?}", o.device),
        precision: if o.compute == Kind::BFloat16 { "bf16".into() } else { "fp32".into() },
        parameters: vs.trainable_variables().iter().map(|t| t.numel() as i64).sum(),
        sequence_length: l,
        micro_batch: b,
        steps_timed: times.len(),
        step_ms_median: median * 1e3,
        tokens_per_s,
        flops_per_token: fpt,
        achieved_tflops: achieved / 1e12,
        mfu: o.peak_flops.map(|p| achieved / p),
        peak_memory_bytes,
        memory_source,
        last_loss,
    })
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// CUDA: what `nvidia-smi` says this process holds (libtorch's allocator statistics are not in
/// tch's API); CPU: the maximum resident set size of the process.
fn peak_memory(device: Device) -> (Option<u64>, String) {
    if device.is_cuda() {
        let out = std::process::Command::new("nvidia-smi")
            .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
            .output();
        let pid = std::process::id().to_string();
        let mib = out.ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|line| {
                let mut parts = line.split(',').map(str::trim);
                (parts.next() == Some(pid.as_str())).then(|| parts.next()?.parse::<u64>().ok()).flatten()
            })
        });
        return (mib.map(|m| m << 20), "nvidia-smi used_memory (allocator reserve included)".into());
    }
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return (None, "getrusage failed".into());
    }
    // SAFETY: initialized by the successful call above.
    let kib = unsafe { usage.assume_init() }.ru_maxrss as u64;
    (Some(kib << 10), "process max RSS (getrusage)".into())
}
