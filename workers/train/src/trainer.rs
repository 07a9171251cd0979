//! The training loop on one rank: the run spec's plan gives every global step its stage, its
//! learning rate and (through the mixer) its sequences, so the whole position of a run is one
//! number, the next step. Checkpoints hold the weights (Hugging Face names), the AdamW moments
//! and that step; resuming from one continues exactly (on CPU the losses equal an uninterrupted
//! run's, step for step: tests/resume.rs). No dropout, so no RNG state is needed after init.
//!
//! Not yet here (issue 6): data parallelism, bf16 autocast, µP knobs, evaluation, object-store
//! checkpoints, the coordinator launching ranks.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lehr_pipeline::mix::StageReader;
use lehr_pipeline::store;
use lehr_schedules::{Plan, RunSpec};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::collective::{Collective, Single};
use crate::model::{save_hf, write_safetensors, Model, ModelConfig};
use crate::optim::{AdamW, AdamWConfig};
use crate::TrainError;

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Sequences per forward pass; a step's batch is accumulated over as many as it needs.
    pub micro_batch: usize,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    /// Checkpoint every N steps (and at the end of every stage); 0: stage ends only.
    pub checkpoint_every: u64,
    /// Interval checkpoints to keep (the newest ones; 0: all). Stage-end checkpoints (the
    /// branch points for annealing) and the latest are always kept.
    pub keep_checkpoints: usize,
    /// Stop before this global step (default: the end of the plan).
    pub stop_at: Option<u64>,
    /// Checkpoints and metrics.jsonl go here.
    pub out: PathBuf,
    /// Data root of the run spec's sources.
    pub data: String,
    pub seed: i64,
    pub adamw: AdamWConfig,
    pub device: Device,
    /// A URL (`s3://...`) the checkpoints and logs are published to; `out` is then the local
    /// scratch directory (see `publish.rs`).
    pub remote: Option<String>,
    /// Kind of the matrix products: `BFloat16` (mixed precision, fp32 master weights and
    /// optimizer) or `Float`. `new` picks bf16 on CUDA and fp32 on CPU.
    pub compute: Kind,
    /// Held-out token shards, laid out like `data` (each source under its path); evaluated
    /// per source every `eval_every` steps and at the end into `out/eval.jsonl`.
    pub eval_data: Option<String>,
    pub eval_every: u64,
    /// Predicted tokens per source and evaluation.
    pub eval_tokens: u64,
    /// The device's peak FLOP/s, for the MFU estimate in the metrics.
    pub peak_flops: Option<f64>,
    /// `tokenizer.json` and `tokenizer_config.json` bytes written into every checkpoint, so a
    /// checkpoint loads with `AutoTokenizer.from_pretrained` and exports without a tokenizer
    /// argument.
    pub tokenizer: Option<(Vec<u8>, Vec<u8>)>,
    /// Start from another model's weights (`[init]`) rather than a random initialization.
    pub init: Option<crate::init::Inherit>,
}

impl TrainOptions {
    /// Defaults for everything but where the data and the output are.
    pub fn new(data: impl Into<String>, out: impl Into<PathBuf>, device: Device) -> Self {
        TrainOptions {
            micro_batch: 8,
            grad_clip: 1.0,
            checkpoint_every: 0,
            keep_checkpoints: 0,
            stop_at: None,
            out: out.into(),
            data: data.into(),
            seed: 0,
            adamw: AdamWConfig::default(),
            device,
            compute: if device.is_cuda() { Kind::BFloat16 } else { Kind::Float },
            remote: None,
            eval_data: None,
            eval_every: 0,
            eval_tokens: 65_536,
            peak_flops: None,
            tokenizer: None,
            init: None,
        }
    }
}

/// The `[eval]` tasks of a run, prepared once: the requests (few-shot contexts included) and
/// the checkpoint tokenizer that turns them into tokens.
struct TaskSuite {
    spec: lehr_schedules::spec::EvalSpec,
    tasks: Vec<lehr_evals::suite::Prepared>,
    tokenizer: tokenizers::Tokenizer,
}

impl TaskSuite {
    fn prepare(e: &lehr_schedules::spec::EvalSpec, options: &TrainOptions) -> Result<Self, TrainError> {
        let bad = |why: String| TrainError::Config(format!("[eval]: {why}"));
        // `lehr train` makes a relative data-dir absolute against the spec file's directory
        let dir = PathBuf::from(&e.data_dir);
        let mut tasks = Vec::new();
        for t in e.tasks.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let p = lehr_evals::suite::prepare(t, &dir, e.limit, e.num_fewshot, lehr_evals::suite::DEFAULT_SEED)
                .map_err(|err| bad(err.to_string()))?;
            tasks.push(p);
        }
        let (json, _) = options.tokenizer.as_ref().ok_or_else(|| {
            bad("scoring needs the tokenizer the shards were made with, and their metadata names none that can be read".into())
        })?;
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(json).map_err(|err| bad(format!("the shards' tokenizer: {err}")))?;
        Ok(TaskSuite { spec: e.clone(), tasks, tokenizer })
    }
}

/// A line of eval.jsonl with a benchmark score (`[eval]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskEval {
    pub step: u64,
    pub stage: String,
    pub task: String,
    pub metric: String,
    pub value: f64,
    /// None where lehr gives no standard error (F1, perplexity).
    pub stderr: Option<f64>,
    pub n: usize,
    pub num_fewshot: usize,
}

/// One line of eval.jsonl.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceEval {
    pub step: u64,
    pub source: String,
    pub tokens: u64,
    pub loss: f64,
    pub perplexity: f64,
    pub top1_accuracy: f64,
    pub top5_accuracy: f64,
}

/// `trainer.json` in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// The next global step to run.
    pub step: u64,
    pub tokens_seen: u64,
    pub tokens_by_source: BTreeMap<String, u64>,
    pub spec_name: Option<String>,
}

/// One line of metrics.jsonl (plain data, shared with the rank protocol).
pub use lehr_schedules::rank::StepMetrics;

pub struct Trainer {
    spec: RunSpec,
    plan: Plan,
    pub model: Model,
    vs: nn::VarStore,
    opt: AdamW,
    pub state: TrainerState,
    options: TrainOptions,
    readers: BTreeMap<usize, StageReader>,
    runtime: tokio::runtime::Runtime,
    /// Held-out shards per source.
    eval_sets: Vec<(String, Vec<lehr_pipeline::tokens::TokenShard>)>,
    /// The run spec's `[eval]` tasks, ready to score (rank 0 only).
    tasks: Option<TaskSuite>,
    collective: Box<dyn Collective>,
    remote: Option<crate::publish::Remote>,
    /// Every stage's block count and growth rule.
    depths: Vec<lehr_schedules::spec::StageDepth>,
    /// `[distill]`'s teacher.
    teacher: Option<crate::distill::Teacher>,
}

/// Every variable of `vs`, sorted by name (the order every rank agrees on).
fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn flatten(tensors: &[Tensor]) -> Result<Vec<f32>, TrainError> {
    let mut out = Vec::new();
    for t in tensors {
        out.extend(Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))?);
    }
    Ok(out)
}

/// Copies `flat` back into `targets` (same shapes and order as [`flatten`]).
fn unflatten_into(flat: &[f32], targets: &mut [Tensor]) {
    let mut at = 0;
    tch::no_grad(|| {
        for t in targets.iter_mut() {
            let n = t.numel();
            let src =
                Tensor::from_slice(&flat[at..at + n]).view(t.size().as_slice()).to_kind(t.kind()).to_device(t.device());
            t.copy_(&src);
            at += n;
        }
    });
}

/// The training objective of a batch: token cross-entropy summed over `logits` (`[N, vocab]`)
/// and `targets` (`[N]`), divided by `denom` tokens; with `z_loss` > 0 also z·Σ logsumexp², which
/// keeps the softmax normalizer near 1 (PaLM). Returns (cross-entropy, objective): metrics
/// report the first, backward runs on the second.
pub fn batch_loss(logits: &Tensor, targets: &Tensor, z_loss: f64, denom: f64) -> (Tensor, Tensor) {
    let logits = logits.to_kind(Kind::Float);
    let ce = logits.cross_entropy_loss::<Tensor>(targets, None, tch::Reduction::Sum, -100, 0.0) / denom;
    if z_loss > 0.0 {
        let z = logits.logsumexp([-1i64].as_slice(), false).square().sum(Kind::Float) * (z_loss / denom);
        let objective = &ce + z;
        (ce, objective)
    } else {
        let objective = ce.shallow_clone();
        (ce, objective)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io(path.display().to_string(), e)
}

impl Trainer {
    /// A fresh run, or the continuation of the latest checkpoint under `options.out`.
    pub fn new(spec: RunSpec, model: ModelConfig, options: TrainOptions) -> Result<Self, TrainError> {
        Trainer::with_collective(spec, model, options, Box::new(Single))
    }

    /// One rank of a data-parallel run: every rank reads its slice of each global batch,
    /// gradients are summed over ranks before the update, and rank 0's initial weights are
    /// broadcast, so parameters stay identical. Rank 0 alone writes metrics, evaluations and
    /// checkpoints.
    pub fn with_collective(
        spec: RunSpec,
        model: ModelConfig,
        options: TrainOptions,
        mut collective: Box<dyn Collective>,
    ) -> Result<Self, TrainError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io(Path::new("tokio runtime")))?;
        let root = store::resolve(&options.data).map_err(|e| TrainError::Data(e.to_string()))?;
        let available = runtime
            .block_on(lehr_pipeline::mix::available(&root, &spec))
            .map_err(|e| TrainError::Data(e.to_string()))?;
        let plan = Plan::new(&spec, Some(&available.tokens)).map_err(|e| TrainError::Config(e.to_string()))?;
        let remote = match &options.remote {
            Some(url) => {
                let r = crate::publish::Remote::new(url)?;
                std::fs::create_dir_all(&options.out).map_err(io(&options.out))?;
                runtime.block_on(r.pull_latest(&options.out))?;
                Some(r)
            }
            None => None,
        };
        let resume = latest_checkpoint(&options.out)?;
        // Every stage's depth, checked before the first step.
        let reference = options.init.as_ref().map(|i| (i.source_layers, i.map.last().copied().unwrap_or(0)));
        let depths =
            spec.depths(model.num_hidden_layers as usize, reference).map_err(|e| TrainError::Config(e.to_string()))?;
        if model.depth_scale.is_some() && depths.iter().any(|d| d.grow.is_some()) {
            return Err(TrainError::Config(
                "stages grow the model, but its depth_scale makes every block's residual factor depend on the \
                 block count; grow a model without depth_scale"
                    .into(),
            ));
        }
        // A checkpoint past a growth boundary holds more blocks than the run starts with.
        let mut model = model;
        if let Some(dir) = &resume {
            let (saved, _) = crate::model::hf_config(dir)?;
            model.num_hidden_layers = saved.num_hidden_layers;
        }
        let mut vs = nn::VarStore::new(options.device);
        let mut model = Model::seeded(&vs, &model, options.seed)?;
        model.compute = options.compute;
        // a resume below replaces these with the checkpoint's
        match &options.init {
            Some(inherit) if resume.is_none() => crate::init::copy_weights(&vs, inherit)?,
            _ => {}
        }
        if collective.world() > 1 {
            let mut params: Vec<Tensor> = sorted_variables(&vs).into_iter().map(|v| v.1).collect();
            let mut flat = flatten(&params)?;
            collective.broadcast(&mut flat)?;
            unflatten_into(&flat, &mut params);
        }
        let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        let mut opt = AdamW::new(named, options.adamw.clone());
        let mut state =
            TrainerState { step: 0, tokens_seen: 0, tokens_by_source: BTreeMap::new(), spec_name: spec.name.clone() };
        if let Some(dir) = resume {
            vs.load(crate::model::resume_weights(&dir, &model.config))?;
            let opt_state = Tensor::read_safetensors(dir.join("optimizer.safetensors"))?;
            opt.load_state(&opt_state)?;
            let text = std::fs::read_to_string(dir.join("trainer.json")).map_err(io(&dir))?;
            state = serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", dir.display())))?;
        }
        if collective.rank() == 0 {
            truncate_log(&options.out.join("metrics.jsonl"), state.step)?;
            truncate_log(&options.out.join("eval.jsonl"), state.step + 1)?;
            truncate_log(&options.out.join("growth.jsonl"), state.step)?;
        }
        let mut eval_sets = Vec::new();
        if let Some(eval_root) = &options.eval_data {
            let root = store::resolve(eval_root).map_err(|e| TrainError::Data(e.to_string()))?;
            for name in spec.sources.keys() {
                let loc = lehr_pipeline::mix::source_location(&root, &spec, name)
                    .map_err(|e| TrainError::Data(e.to_string()))?;
                let shards = runtime
                    .block_on(lehr_pipeline::tokens::load_shards(&loc))
                    .map_err(|e| TrainError::Data(e.to_string()))?;
                if !shards.is_empty() {
                    eval_sets.push((name.clone(), shards));
                }
            }
            if eval_sets.is_empty() {
                return Err(TrainError::Data(format!("no held-out token shards for any source under {eval_root}")));
            }
        }
        let teacher = match &spec.distill {
            Some(d) => Some(crate::distill::Teacher::load(
                d,
                options.device,
                model.config.vocab_size,
                options.tokenizer.as_ref().map(|t| t.0.as_slice()),
            )?),
            None => None,
        };
        let tasks = match &spec.eval {
            Some(e) if collective.rank() == 0 => Some(TaskSuite::prepare(e, &options)?),
            _ => None,
        };
        Ok(Trainer {
            teacher,
            depths,
            tasks,
            spec,
            plan,
            model,
            vs,
            opt,
            state,
            options,
            readers: BTreeMap::new(),
            runtime,
            eval_sets,
            collective,
            remote,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Every parameter, flattened in name order (to compare ranks or runs).
    pub fn parameters(&self) -> Vec<f32> {
        let params: Vec<Tensor> = sorted_variables(&self.vs).into_iter().map(|v| v.1).collect();
        flatten(&params).expect("float parameters")
    }

    /// Runs steps until the plan (or `stop_at`) ends; returns the metrics of the steps run.
    pub fn run(&mut self) -> Result<Vec<StepMetrics>, TrainError> {
        self.run_until(u64::MAX)
    }

    /// Runs steps until global step `until` (or the plan, or `stop_at`, whichever is first),
    /// writing metrics and checkpoints.
    pub fn run_until(&mut self, until: u64) -> Result<Vec<StepMetrics>, TrainError> {
        let stop = self.options.stop_at.unwrap_or(u64::MAX).min(self.plan.total_steps());
        let end = stop.min(until);
        std::fs::create_dir_all(&self.options.out).map_err(io(&self.options.out))?;
        let metrics_path = self.options.out.join("metrics.jsonl");
        // Rank 0 alone writes metrics, evaluations and checkpoints.
        let mut metrics_file = if self.collective.rank() == 0 {
            Some(std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(io(&metrics_path))?)
        } else {
            None
        };
        let mut out = Vec::new();
        while self.state.step < end {
            let m = self.step()?;
            let lead = self.collective.rank() == 0;
            if let Some(f) = &mut metrics_file {
                writeln!(f, "{}", serde_json::to_string(&m).expect("json")).map_err(io(&metrics_path))?;
            }
            out.push(m);
            let st = self.plan.stage_at(self.state.step.saturating_sub(1));
            let stage_end = self.state.step == st.first_step + st.steps;
            let stage_name = st.name.clone();
            let ev = self.options.eval_every;
            let held_out = !self.eval_sets.is_empty()
                && ((ev > 0 && self.state.step.is_multiple_of(ev)) || self.state.step == stop);
            let tasks_due = self.tasks.as_ref().is_some_and(|t| {
                let e = &t.spec;
                (e.every > 0 && self.state.step.is_multiple_of(e.every))
                    || (e.at.is_some() && self.state.step == stop)
                    || (e.at == Some(lehr_schedules::spec::EvalAt::StageEnd) && stage_end)
            });
            if lead && (held_out || tasks_due) {
                let eval_path = self.options.out.join("eval.jsonl");
                let mut f =
                    std::fs::OpenOptions::new().create(true).append(true).open(&eval_path).map_err(io(&eval_path))?;
                if held_out {
                    for e in self.evaluate() {
                        writeln!(f, "{}", serde_json::to_string(&e).expect("json")).map_err(io(&eval_path))?;
                    }
                }
                if tasks_due {
                    for e in self.score_tasks(&stage_name)? {
                        writeln!(f, "{}", serde_json::to_string(&e).expect("json")).map_err(io(&eval_path))?;
                    }
                }
            }
            let every = self.options.checkpoint_every;
            if lead && (stage_end || (every > 0 && self.state.step.is_multiple_of(every)) || self.state.step == stop) {
                self.checkpoint()?;
            }
            if self.state.step == stop && self.collective.world() > 1 {
                // Barrier: no rank ends before rank 0's last checkpoint is written, so a rank
                // restarted after its peers finished finds the run complete.
                self.collective.all_reduce_sum(&mut [0.0])?;
            }
        }
        Ok(out)
    }

    /// One optimizer step: the step's sequences from the mixer, accumulated micro-batches,
    /// clipping, the plan's learning rate.
    pub fn step(&mut self) -> Result<StepMetrics, TrainError> {
        let start = Instant::now();
        let step = self.state.step;
        self.prepare_step()?;
        let stage = self.plan.stage_at(step).clone();
        let local = step - stage.first_step;
        if !self.readers.contains_key(&stage.index) {
            let root = store::resolve(&self.options.data).map_err(|e| TrainError::Data(e.to_string()))?;
            let reader = self
                .runtime
                .block_on(StageReader::open(&root, &self.spec, &stage))
                .map_err(|e| TrainError::Data(e.to_string()))?;
            self.readers.retain(|i, _| *i >= stage.index);
            self.readers.insert(stage.index, reader);
        }
        let reader = self.readers.get_mut(&stage.index).expect("opened");
        let (rank, world) = (self.collective.rank() as u64, self.collective.world() as u64);
        let slots =
            reader.rank_slots(local..local + 1, stage.batch_sequences, rank, world).map_err(TrainError::Data)?;
        // The step's tokens over all ranks: every rank divides by the same number.
        let global_sequences =
            ((local + 1) * stage.batch_sequences).min(stage.sequences) - local * stage.batch_sequences;
        let l = stage.sequence_length as i64;
        let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
        let mut seqs: Vec<Vec<i64>> = Vec::with_capacity(slots.len());
        for (_, slot) in &slots {
            seqs.push(reader.sequence(*slot).into_iter().map(i64::from).collect());
            *by_source.entry(reader.names[slot.source].clone()).or_default() += l as u64;
        }
        let tokens = global_sequences * l as u64;
        self.opt.zero_grad();
        let mut loss_sum = 0.0;
        let mut kd_total = 0.0;
        let teacher = self.teacher.as_ref().filter(|t| t.spec.applies_to(&stage.name));
        for chunk in seqs.chunks(self.options.micro_batch.max(1)) {
            let flat: Vec<i64> = chunk.iter().flatten().copied().collect();
            let batch = Tensor::from_slice(&flat).view([chunk.len() as i64, l + 1]).to_device(self.options.device);
            let inputs = batch.narrow(1, 0, l);
            let targets = batch.narrow(1, 1, l);
            let logits = self.model.forward(&inputs).view([-1, self.model.config.vocab_size]);
            // Sum over the micro-batch's tokens, divided by the step's: micro-batching does not
            // change the gradient, and a short last step is not overweighted.
            let targets = targets.reshape([-1]);
            let (ce, objective) = batch_loss(&logits, &targets, self.model.config.z_loss, tokens as f64);
            let objective = match teacher {
                Some(t) => {
                    // α·CE + (1 − α)·T²·KL, both per token of the step.
                    let kd = crate::distill::kd_sum(&logits, &t.logits(&inputs), &targets, &t.spec) / tokens as f64;
                    kd_total += kd.double_value(&[]);
                    let (a, temp) = (t.spec.alpha, t.spec.temperature);
                    objective * a + kd * ((1.0 - a) * temp * temp)
                }
                None => objective,
            };
            objective.backward();
            loss_sum += ce.double_value(&[]);
        }
        if world > 1 {
            // Sum the gradients (and the loss and token counts, for the metrics) over ranks.
            let mut grads: Vec<Tensor> = sorted_variables(&self.vs)
                .into_iter()
                .map(|(_, p)| {
                    let g = p.grad();
                    if g.defined() {
                        g
                    } else {
                        p.zeros_like()
                    }
                })
                .collect();
            let names = &reader_names(&self.readers, stage.index);
            let extra: Vec<f32> = [loss_sum as f32, kd_total as f32]
                .into_iter()
                .chain(names.iter().map(|n| by_source.get(n).copied().unwrap_or(0) as f32))
                .collect();
            // One flat fp32 buffer on the device (gradients in name order, then the counts):
            // NCCL reduces it in place on the GPU; the TCP backend goes through host memory.
            let mut parts: Vec<Tensor> = grads.iter().map(|g| g.detach().to_kind(Kind::Float).flatten(0, -1)).collect();
            parts.push(Tensor::from_slice(&extra).to_device(self.options.device));
            let mut flat = Tensor::cat(&parts, 0);
            self.collective.all_reduce_tensor(&mut flat)?;
            let mut at = 0;
            tch::no_grad(|| {
                for g in grads.iter_mut() {
                    let n = g.numel() as i64;
                    g.copy_(&flat.narrow(0, at, n).view(g.size().as_slice()).to_kind(g.kind()));
                    at += n;
                }
            });
            let tail: Vec<f32> = Vec::try_from(flat.narrow(0, at, extra.len() as i64).to_device(Device::Cpu))?;
            loss_sum = tail[0] as f64;
            kd_total = tail[1] as f64;
            by_source =
                names.iter().zip(&tail[2..]).filter(|(_, v)| **v > 0.0).map(|(n, v)| (n.clone(), *v as u64)).collect();
        }
        let grad_norm = self.opt.clip_grad_norm(self.options.grad_clip);
        let lr = self.plan.lr_at(step);
        self.opt.step(lr);
        self.state.step += 1;
        self.state.tokens_seen += tokens;
        for (k, v) in &by_source {
            *self.state.tokens_by_source.entry(k.clone()).or_default() += v;
        }
        let tokens_per_s = tokens as f64 / start.elapsed().as_secs_f64().max(1e-9);
        let flops_per_token = self.flops_per_token(l);
        Ok(StepMetrics {
            step,
            stage: stage.name.clone(),
            loss: loss_sum,
            lr,
            grad_norm,
            tokens,
            tokens_per_s,
            flops_per_token,
            mfu: self.options.peak_flops.map(|p| flops_per_token * tokens_per_s / p),
            tokens_by_source: by_source,
            kd_loss: teacher.map(|_| kd_total),
        })
    }

    /// Gives the model the depth of the next step's stage (growing it at a boundary); `step`
    /// does this first.
    pub fn prepare_step(&mut self) -> Result<(), TrainError> {
        let stage = self.plan.stage_at(self.state.step).clone();
        if self.depths[stage.index].layers > self.layers() {
            self.grow(&stage.name, stage.index)?;
        }
        Ok(())
    }

    /// `[distill]`'s teacher, when the run has one.
    pub fn teacher(&self) -> Option<&crate::distill::Teacher> {
        self.teacher.as_ref()
    }

    /// Every variable (lehr's names, unfolded), sorted by name.
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        sorted_variables(&self.vs)
    }

    /// Grows the model to stage `index`'s depth (at its first step, or at a resume there) and
    /// logs the growth into growth.jsonl (rank 0).
    fn grow(&mut self, stage: &str, index: usize) -> Result<(), TrainError> {
        let event = crate::grow::grow(
            &self.vs,
            &mut self.model,
            &mut self.opt,
            &self.depths[index],
            self.options.init.as_ref(),
            self.state.step,
            stage,
        )?;
        if self.collective.rank() == 0 {
            std::fs::create_dir_all(&self.options.out).map_err(io(&self.options.out))?;
            let path = self.options.out.join("growth.jsonl");
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
            writeln!(f, "{}", serde_json::to_string(&event).expect("json")).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The model's current block count.
    pub fn layers(&self) -> usize {
        self.model.config.num_hidden_layers as usize
    }

    /// Perplexity and accuracy on every source's held-out shards, at the current stage's
    /// sequence length.
    pub fn evaluate(&self) -> Vec<SourceEval> {
        let seq = self.plan.stage_at(self.state.step.saturating_sub(1)).sequence_length as i64;
        self.eval_sets
            .iter()
            .map(|(name, shards)| {
                let r = crate::eval::evaluate(
                    &self.model,
                    shards,
                    seq,
                    self.options.eval_tokens,
                    self.options.micro_batch,
                    self.options.device,
                );
                SourceEval {
                    step: self.state.step,
                    source: name.clone(),
                    tokens: r.tokens,
                    loss: r.loss,
                    perplexity: r.perplexity,
                    top1_accuracy: r.top1_accuracy,
                    top5_accuracy: r.top5_accuracy,
                }
            })
            .collect()
    }

    /// The `[eval]` tasks' scores on the current weights (rank 0).
    pub fn score_tasks(&self, stage: &str) -> Result<Vec<TaskEval>, TrainError> {
        let Some(suite) = &self.tasks else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for t in &suite.tasks {
            let scores = crate::tasks::score_task(
                &self.model,
                &suite.tokenizer,
                t,
                crate::score::Batch::Rows(suite.spec.batch_size),
                self.options.device,
                |_| {},
            )
            .map_err(|e| TrainError::Config(format!("[eval]: {e}")))?;
            for m in t.task.metrics() {
                let (value, se) = lehr_evals::metrics::aggregate(m, &scores);
                out.push(TaskEval {
                    step: self.state.step,
                    stage: stage.to_string(),
                    task: t.task.name.clone(),
                    metric: m.name().into(),
                    value,
                    stderr: se.is_finite().then_some(se),
                    n: scores.len(),
                    num_fewshot: t.num_fewshot,
                });
            }
        }
        Ok(out)
    }

    /// Training FLOPs per token at sequence length `seq` (see [`StepMetrics::flops_per_token`]).
    pub fn flops_per_token(&self, seq: i64) -> f64 {
        crate::model::flops_per_token(&self.vs, &self.model.config, seq)
    }

    /// Writes `out/checkpoints/step-NNNNNNNN/` (model, config, optimizer, trainer state) and
    /// then points `out/checkpoints/latest` at it, durably (`durable.rs`): the files go to a
    /// staging directory, are fsynced and sealed with their sizes, the directory is renamed into
    /// place, and only then does `latest` move. A crash anywhere leaves the previous checkpoint.
    pub fn checkpoint(&self) -> Result<PathBuf, TrainError> {
        let root = self.options.out.join("checkpoints");
        let name = format!("step-{:08}", self.state.step);
        let staging = crate::durable::staging_dir(&root, &name);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        save_hf(&self.vs, &self.model.config, &staging)?;
        if let Some((json, config)) = &self.options.tokenizer {
            for (name, bytes) in [("tokenizer.json", json), ("tokenizer_config.json", config)] {
                std::fs::write(staging.join(name), bytes).map_err(io(&staging))?;
            }
        }
        write_safetensors(&self.opt.state(), &staging.join("optimizer.safetensors"))?;
        let json = serde_json::to_vec_pretty(&self.state).expect("json");
        std::fs::write(staging.join("trainer.json"), json).map_err(io(&staging))?;
        let dir = crate::durable::commit_dir(&staging, &root, &name)?;
        crate::durable::point_latest(&root, &name)?;
        if let Some(r) = &self.remote {
            let name = dir.file_name().expect("named").to_string_lossy().to_string();
            self.runtime.block_on(r.push_checkpoint(&self.options.out, &name))?;
        }
        if self.options.keep_checkpoints > 0 {
            self.prune_checkpoints()?;
        }
        Ok(dir)
    }

    /// Deletes interval checkpoints beyond the newest `keep_checkpoints`, here and at the
    /// remote; stage ends and the latest stay.
    fn prune_checkpoints(&self) -> Result<(), TrainError> {
        let stage_ends: std::collections::BTreeSet<u64> =
            self.plan.stages.iter().map(|s| s.first_step + s.steps).collect();
        let keep = |names: Vec<String>| -> Vec<String> {
            let mut interval: Vec<(u64, String)> = names
                .into_iter()
                .filter_map(|n| Some((n.strip_prefix("step-")?.parse::<u64>().ok()?, n)))
                .filter(|(step, _)| !stage_ends.contains(step) && *step != self.state.step)
                .collect();
            interval.sort();
            let drop = interval.len().saturating_sub(self.options.keep_checkpoints.saturating_sub(1));
            interval.into_iter().take(drop).map(|(_, n)| n).collect()
        };
        let root = self.options.out.join("checkpoints");
        let local: Vec<String> = std::fs::read_dir(&root)
            .map_err(io(&root))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        for name in keep(local) {
            let dir = root.join(&name);
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        if let Some(r) = &self.remote {
            let names = self.runtime.block_on(r.checkpoint_names())?;
            for name in keep(names) {
                self.runtime.block_on(r.delete_checkpoint(&name))?;
            }
        }
        Ok(())
    }
}

fn reader_names(readers: &BTreeMap<usize, StageReader>, stage: usize) -> Vec<String> {
    readers.get(&stage).map(|r| r.names.clone()).unwrap_or_default()
}

/// The global step of the latest checkpoint under `out` (the step a resumed run starts at).
pub fn latest_step(out: &Path) -> Result<Option<u64>, TrainError> {
    let Some(dir) = latest_checkpoint(out)? else { return Ok(None) };
    let path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    Ok(Some(state.step))
}

/// Drops the lines of a JSONL log whose `step` is at or past `step`: after a resume those steps
/// run again and log again, so the file keeps exactly one line per step (and evaluation).
fn truncate_log(path: &Path, step: u64) -> Result<(), TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::Io(path.display().to_string(), e)),
    };
    let keep: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_none_or(|s| s < step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if keep.len() != text.len() {
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, keep).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
    }
    Ok(())
}

/// The checkpoint to resume from: the one `out/checkpoints/latest` names when it is complete,
/// else the newest complete one (torn ones are skipped with a warning), if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>, TrainError> {
    crate::durable::resume_point(&out.join("checkpoints"))
}
