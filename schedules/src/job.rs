//! A training run as a coordinator job: the run spec plus where the data is, which model, where
//! checkpoints go and how many ranks. `lehr train run --coordinator` submits it, the
//! coordinator's `train` job kind plans one gang task per rank, and a train worker turns a rank's
//! task back into a `lehr train run` process. Plain data shared by the three.

use serde::{Deserialize, Serialize};

use crate::spec::RunSpec;

/// The environment variable that carries a rank's collective secret (from the rendezvous) to
/// its `lehr train run` process.
pub const COLLECTIVE_SECRET_ENV: &str = "LEHR_COLLECTIVE_SECRET";

pub use crate::kinds::TRAIN_RANK_TASK_KIND;

/// Whether two secrets are equal, in time that depends on their lengths only (no early exit, so
/// response times do not say how much of a guess matched). The coordinator's token and lease
/// checks and the ranks' collective handshake all compare with it.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// The most ranks one job may ask for.
pub const MAX_WORLD: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainJob {
    /// The run spec, as TOML text (stages, budgets, LR).
    pub run: String,
    /// Token shards' root: an absolute path every worker sees, or an object-store URL.
    pub data: String,
    /// Model preset (tiny, small, qwen2.5-0.5b, qwen2.5-1.5b).
    pub model: String,
    /// Checkpoints and metrics: a directory every rank-0 host reaches (shared file system).
    pub out: String,
    /// Ranks (one process per GPU).
    pub world: u32,
    #[serde(default)]
    pub options: TrainJobOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TrainJobOptions {
    pub micro_batch: usize,
    pub grad_clip: f64,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub seed: i64,
    /// cpu | cuda; none: CUDA when the worker has it.
    pub device: Option<String>,
    /// bf16 | fp32; none: bf16 on CUDA, fp32 on CPU.
    pub precision: Option<String>,
    /// tcp | nccl; none: nccl on CUDA when the rank binary has it.
    pub collective: Option<String>,
    pub eval_data: Option<String>,
    pub eval_every: u64,
    pub eval_tokens: u64,
    pub peak_tflops: Option<f64>,
    /// Overrides of the model preset's knobs.
    pub embedding_scale: Option<f64>,
    pub depth_scale: Option<f64>,
    pub logit_scale: Option<f64>,
    pub qk_norm: bool,
    pub z_loss: Option<f64>,
    pub init_std: Option<f64>,
    /// Blocks, instead of the preset's (a growing run's first depth).
    pub layers: Option<i64>,
}

impl Default for TrainJobOptions {
    fn default() -> Self {
        TrainJobOptions {
            micro_batch: 8,
            grad_clip: 1.0,
            checkpoint_every: 0,
            keep_checkpoints: 0,
            seed: 0,
            device: None,
            precision: None,
            collective: None,
            eval_data: None,
            eval_every: 100,
            eval_tokens: 65_536,
            peak_tflops: None,
            embedding_scale: None,
            depth_scale: None,
            logit_scale: None,
            qk_norm: false,
            z_loss: None,
            init_std: None,
            layers: None,
        }
    }
}

impl TrainJobOptions {
    /// Whether a knob that changes the model's function (or its architecture) is set.
    pub fn knobs_set(&self) -> bool {
        self.embedding_scale.is_some()
            || self.depth_scale.is_some()
            || self.logit_scale.is_some()
            || self.qk_norm
            || self.layers.is_some()
    }
}

impl TrainJob {
    /// Parses a submitted job; errors name the field.
    pub fn from_json(text: &str) -> Result<(TrainJob, RunSpec), String> {
        let job: TrainJob = serde_json::from_str(text).map_err(|e| format!("invalid train job: {e}"))?;
        let spec = RunSpec::from_toml(&job.run).map_err(|e| format!("invalid run spec: {e}"))?;
        if job.world == 0 || job.world > MAX_WORLD {
            return Err(format!("world: {} ranks; use 1 to {MAX_WORLD}", job.world));
        }
        if job.options.micro_batch == 0 {
            return Err("options.micro-batch: must be at least 1".into());
        }
        if job.data.is_empty() || job.out.is_empty() {
            return Err("data and out must name a directory or URL".into());
        }
        Ok((job, spec))
    }
}

/// One rank's task payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainRankTask {
    pub job: TrainJob,
    pub rank: u32,
}

/// What a rank reports when its process ends well.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainRankResult {
    pub rank: u32,
    /// The global step the run ended at (the plan's total when it finished).
    pub step: u64,
    pub total_steps: u64,
    /// Steps this attempt ran (0 when it resumed at the end).
    pub steps_run: u64,
    /// Tokens this rank trained on in this attempt.
    pub tokens: u64,
    /// The last step's loss, if this attempt ran any.
    pub loss: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> TrainJob {
        TrainJob {
            run: crate::presets::preset("demo").expect("demo preset").to_string(),
            data: "/data".into(),
            model: "tiny".into(),
            out: "/out".into(),
            world: 2,
            options: TrainJobOptions::default(),
        }
    }

    #[test]
    fn round_trips_and_names_bad_fields() {
        let text = serde_json::to_string(&job()).unwrap();
        let (back, spec) = TrainJob::from_json(&text).unwrap();
        assert_eq!(back, job());
        assert!(!spec.stages.is_empty());
        let bad = text.replace("\"world\":2", "\"world\":0");
        assert!(TrainJob::from_json(&bad).unwrap_err().contains("world"));
        let unknown = text.replace("\"model\"", "\"modle\"");
        assert!(TrainJob::from_json(&unknown).unwrap_err().contains("modle"));
        let mut broken = job();
        broken.run = "[lr]\npeak = \"x\"".into();
        assert!(TrainJob::from_json(&serde_json::to_string(&broken).unwrap())
            .unwrap_err()
            .starts_with("invalid run spec"));
    }
}
