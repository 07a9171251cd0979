//! `lehr train ...`: only in builds with the `train` feature (libtorch).

use super::CmdResult;
#[cfg(feature = "train")]
use super::EXIT_OK;
use crate::cli::{EvalCommand, TrainCommand};

/// Where a rank process finds its collective's secret.
#[cfg(feature = "train")]
const COLLECTIVE_SECRET_ENV: &str = lehr_schedules::job::COLLECTIVE_SECRET_ENV;

pub async fn run(cmd: TrainCommand) -> CmdResult {
    let cmd = match cmd {
        TrainCommand::Spec(args) => {
            use clap::Parser;
            let first = args.first().map(|a| a.to_string_lossy().to_string()).unwrap_or_default();
            if !first.ends_with(".toml") {
                return Err(super::Failure::usage(anyhow::anyhow!(
                    "`lehr train {first}`: expected a subcommand (run, smoke) or a run spec ending in .toml"
                )));
            }
            let argv = std::iter::once(std::ffi::OsString::from("lehr train")).chain(args);
            match crate::cli::TrainShorthand::try_parse_from(argv) {
                Ok(p) => TrainCommand::Run(Box::new(p.run)),
                Err(e) => {
                    let _ = e.print();
                    return Ok(if e.use_stderr() { super::EXIT_USAGE } else { super::EXIT_OK });
                }
            }
        }
        other => other,
    };
    match cmd {
        TrainCommand::Run(a) if a.coordinator.is_some() => {
            let api = super::connect(a.coordinator.as_deref().expect("checked"), &a.auth)?;
            submit(*a, api, false).await
        }
        // A rank (--rank, --rendezvous) never launches ranks itself.
        TrainCommand::Run(a) if a.world > 1 && a.rank == 0 && a.rendezvous.is_none() => local_ranks(*a).await,
        other => run_here(other).await,
    }
}

/// `lehr train run --world N` without --rendezvous or --coordinator: N ranks on this machine
/// (one per GPU with --device cuda), launched, met and restarted like a cluster job by an
/// embedded coordinator and an in-process train worker with N slots. Rank processes are this
/// binary.
async fn local_ranks(a: crate::cli::TrainRunArgs) -> CmdResult {
    use anyhow::Context;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let state = tempfile::Builder::new().prefix("lehr-train-state-").tempdir().context("no temporary directory")?;
    // The embedded coordinator of `corpus build`, with no data workers.
    let (mut running, _) = super::start_embedded(state.path().to_path_buf(), None, 0, &shutdown).await?;
    let api: std::sync::Arc<dyn lehr_proto::CoordinatorApi> = running.api.clone();
    let exe = std::env::current_exe().context("cannot find the lehr executable")?;
    let gpus = local_gpus(a.device.as_deref(), a.world)?;
    let worker = lehr_worker::WorkerConfig {
        name: "local-ranks".into(),
        slots: a.world as u32,
        kinds: vec![lehr_schedules::job::TRAIN_RANK_TASK_KIND.to_string()],
        train: Some(lehr_worker::TrainLaunch::new(exe, "127.0.0.1".into(), gpus)),
        ..Default::default()
    };
    let worker = tokio::spawn(lehr_worker::start(worker, api.clone(), shutdown.child_token()));
    let result = submit(a, api, true).await;
    shutdown.cancel();
    let _ = worker.await;
    while running.tasks.join_next().await.is_some() {}
    result
}

/// The GPUs local ranks get, one each: none for CPU ranks; on CUDA (asked for, or available
/// when --device is not given) the first `world` of the visible devices, as the parent's
/// `CUDA_VISIBLE_DEVICES` names them.
#[cfg(feature = "train")]
fn local_gpus(device: Option<&str>, world: usize) -> Result<Vec<String>, super::Failure> {
    use lehr_train::tch::Cuda;
    let cuda = match device {
        Some("cuda") => true,
        None => Cuda::is_available(),
        _ => false,
    };
    if !cuda {
        return Ok(vec![]);
    }
    let count = Cuda::device_count().max(0) as usize;
    if world > count {
        return Err(super::Failure::usage(anyhow::anyhow!(
            "--world {world} local ranks need {world} GPUs; this machine shows {count} (one process per GPU; use a \
             coordinator and more nodes for more ranks)"
        )));
    }
    let visible: Vec<String> = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|d| d.trim().to_string()).collect(),
        _ => (0..count).map(|i| i.to_string()).collect(),
    };
    Ok(visible.into_iter().take(world).collect())
}

#[cfg(not(feature = "train"))]
fn local_gpus(_device: Option<&str>, _world: usize) -> Result<Vec<String>, super::Failure> {
    Err(super::Failure::usage(anyhow::anyhow!(
        "local ranks run this binary, which was built without training support; rebuild with `--features train`, \
         or submit with --coordinator"
    )))
}

/// Submits a `train` job (needs no libtorch here) and follows it unless --detach.
async fn submit(
    a: crate::cli::TrainRunArgs,
    api: std::sync::Arc<dyn lehr_proto::CoordinatorApi>,
    embedded: bool,
) -> CmdResult {
    use super::{interrupted, EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_OK};
    use anyhow::Context;
    use lehr_proto::pb::{CancelJobRequest, SubmitJobRequest};
    use lehr_proto::Named;
    use lehr_schedules::job::{TrainJob, TrainJobOptions};
    let text = std::fs::read_to_string(&a.spec).with_context(|| format!("cannot read {}", a.spec.display()))?;
    let cwd = std::env::current_dir().context("no current directory")?;
    if a.rank != 0 || a.rendezvous.is_some() || a.stop_at.is_some() {
        return Err(super::Failure::usage(anyhow::anyhow!(
            "--rank, --rendezvous and --stop-at are for ranks started by hand; with --coordinator or local ranks give \
             only --world"
        )));
    }
    if a.scratch.is_some() {
        return Err(super::Failure::usage(anyhow::anyhow!(
            "--scratch is per host: with --coordinator or local ranks each rank picks its own under the temporary directory"
        )));
    }
    if embedded && a.detach {
        return Err(super::Failure::usage(anyhow::anyhow!(
            "--detach needs --coordinator (local ranks end with this command)"
        )));
    }
    let job = TrainJob {
        run: text,
        data: lehr_pipeline::store::absolutize(&a.data, &cwd),
        model: a.model.clone(),
        out: lehr_pipeline::store::absolutize(&a.out.to_string_lossy(), &cwd),
        world: a.world as u32,
        options: TrainJobOptions {
            micro_batch: a.micro_batch,
            grad_clip: a.grad_clip,
            checkpoint_every: a.checkpoint_every,
            keep_checkpoints: a.keep_checkpoints,
            seed: a.seed,
            device: a.device.clone(),
            precision: a.precision.clone(),
            collective: a.collective.clone(),
            eval_data: a.eval_data.as_ref().map(|d| lehr_pipeline::store::absolutize(d, &cwd)),
            eval_every: a.eval_every,
            eval_tokens: a.eval_tokens,
            peak_tflops: a.peak_tflops,
            embedding_scale: a.knobs.embedding_scale,
            depth_scale: a.knobs.depth_scale,
            logit_scale: a.knobs.logit_scale,
            qk_norm: a.knobs.qk_norm,
            z_loss: a.knobs.z_loss,
            init_std: a.knobs.init_std,
        },
    };
    let spec = serde_json::to_string(&job).expect("job serializes");
    let spec_json = spec.clone();
    // The coordinator checks it again; checking here first gives the error without a round trip.
    TrainJob::from_json(&spec).map_err(|e| super::Failure::usage(anyhow::anyhow!("{}: {e}", a.spec.display())))?;
    let name = a.name.clone().unwrap_or_default();
    let submitted = api
        .submit_job(SubmitJobRequest {
            kind: lehr_schedules::kinds::TRAIN_JOB.into(),
            name,
            spec,
            base_dir: cwd.to_string_lossy().to_string(),
        })
        .await?;
    if a.detach {
        if a.json {
            println!("{}", serde_json::json!({"job_id": submitted.job_id, "ranks": submitted.tasks}));
        } else {
            println!("{}", submitted.job_id);
        }
        return Ok(EXIT_OK);
    }
    if !a.json {
        eprintln!(
            "job {} submitted: {} ranks; follow the steps in {}/metrics.jsonl",
            submitted.job_id, submitted.tasks, job.out
        );
    }
    // The plan's length, for progress (the coordinator checks the data again).
    let total = match lehr_pipeline::store::resolve(&job.data) {
        Ok(root) => match TrainJob::from_json(&spec_json) {
            Ok((_, run)) => lehr_pipeline::mix::available(&root, &run)
                .await
                .ok()
                .and_then(|a| lehr_schedules::Plan::new(&run, Some(&a.tokens)).ok())
                .map(|p| p.total_steps()),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let status = tokio::select! {
        r = follow_train(&api, &submitted.job_id, total, a.json) => r?,
        _ = interrupted() => {
            if embedded {
                let _ = api.cancel_job(CancelJobRequest { job_id: submitted.job_id.clone() }).await;
                eprintln!("interrupted: ranks stopped; rerun the same command to resume from the latest checkpoint");
            } else {
                eprintln!("interrupted: job {} goes on; follow it with `lehr status {} --wait`", submitted.job_id, submitted.job_id);
            }
            return Ok(EXIT_INTERRUPTED);
        }
    };
    let steps: u64 = status.stages.iter().map(|s| s.docs_out).sum::<u64>() / (a.world as u64).max(1);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"job_id": status.job_id, "state": status.state().name(), "error": status.error, "final_step": steps, "out": job.out})
        );
    } else if status.state() == lehr_proto::pb::JobState::Succeeded {
        println!("job {}: succeeded at step {steps}; checkpoints in {}/checkpoints", status.job_id, job.out);
    } else {
        eprintln!("job {}: {} {}", status.job_id, status.state().name(), status.error);
    }
    Ok(if status.state() == lehr_proto::pb::JobState::Succeeded { EXIT_OK } else { EXIT_JOB_FAILED })
}

/// Polls a train job until it ends, printing rank 0's step as it moves (unless `quiet`).
async fn follow_train(
    api: &std::sync::Arc<dyn lehr_proto::CoordinatorApi>,
    job_id: &str,
    total: Option<u64>,
    quiet: bool,
) -> Result<lehr_proto::pb::JobStatus, lehr_proto::ApiError> {
    use lehr_proto::pb::GetJobRequest;
    let mut shown = (u64::MAX, String::new());
    loop {
        let job = match api.get_job(GetJobRequest { job_id: job_id.to_string(), ..Default::default() }).await {
            Ok(r) => r.job.expect("job status"),
            Err(e) if e.is_transient() => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if job.state().is_terminal() {
            return Ok(job);
        }
        let running: u32 = job.stages.iter().map(|s| s.tasks_running).sum();
        let ranks: u32 = job.stages.iter().map(|s| s.tasks_total).sum();
        let now = (job.running_docs, format!("{running}/{ranks}"));
        if !quiet && now != shown {
            let of = total.map(|t| format!("/{t}")).unwrap_or_default();
            eprintln!(
                "{job_id}: step {}{of}, {} ranks running, {} tokens this attempt",
                now.0, now.1, job.running_bytes
            );
            shown = now;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

#[cfg(feature = "train")]
async fn run_here(cmd: TrainCommand) -> CmdResult {
    match cmd {
        TrainCommand::Smoke(a) => {
            let report = tokio::task::spawn_blocking(lehr_train::smoke)
                .await
                .map_err(|e| anyhow::anyhow!("smoke test panicked: {e}"))?
                .map_err(|e| anyhow::anyhow!(e))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("json"));
            } else {
                for r in &report {
                    println!(
                        "{}: loss {:.4} → {:.4} after {} steps (grad norm {:.4})",
                        r.device, r.first_loss, r.last_loss, r.steps, r.first_grad_norm
                    );
                }
            }
            Ok(EXIT_OK)
        }
        TrainCommand::Run(a) => run_spec(*a).await,
        TrainCommand::Spec(_) => unreachable!("rewritten by run()"),
    }
}

#[cfg(feature = "train")]
async fn run_spec(a: crate::cli::TrainRunArgs) -> CmdResult {
    use anyhow::Context;
    use lehr_train::trainer::{TrainOptions, Trainer};
    let text = std::fs::read_to_string(&a.spec).with_context(|| format!("cannot read {}", a.spec.display()))?;
    let spec = lehr_schedules::RunSpec::from_toml(&text)
        .map_err(|e| super::Failure::usage(anyhow::anyhow!("{}: {e}", a.spec.display())))?;
    let cwd = std::env::current_dir().context("no current directory")?;
    let data = lehr_pipeline::store::absolutize(&a.data, &cwd);
    let root = lehr_pipeline::store::resolve(&data).map_err(|e| super::Failure::usage(anyhow::anyhow!(e)))?;
    // Refuses shards of different tokenizers; the vocabulary comes from theirs.
    // Storage trouble is worth a retry (exit 1); wrong data is the caller's to fix (exit 2).
    let avail = lehr_pipeline::mix::available(&root, &spec).await.map_err(|e| {
        if e.is_retryable() {
            super::Failure::from(anyhow::anyhow!(e))
        } else {
            super::Failure::usage(anyhow::anyhow!(e))
        }
    })?;
    let vocab = avail.vocab_size as i64;
    // A URL --out: work in a scratch directory, publish checkpoints to the URL.
    let out_str = a.out.to_string_lossy().to_string();
    let (local_out, remote) = if lehr_pipeline::store::is_remote(&out_str) {
        let scratch = match a.scratch.clone() {
            Some(s) => s,
            None => {
                let name: String =
                    out_str.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
                private_scratch_root()?.join(name).join(format!("rank-{}", a.rank))
            }
        };
        std::fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
        let r = lehr_train::publish::Remote::new(&out_str).map_err(|e| super::Failure::usage(anyhow::anyhow!(e)))?;
        r.pull_latest(&scratch).await.map_err(|e| anyhow::anyhow!(e))?;
        (scratch, Some(out_str.clone()))
    } else {
        (a.out.clone(), None)
    };
    if vocab == 0 {
        return Err(super::Failure::usage(anyhow::anyhow!("no token shards under {data} for the spec's sources")));
    }
    let model = model_config(&a.model, vocab, &a.knobs)?;
    let device = device(a.device.as_deref())?;
    let options = TrainOptions {
        micro_batch: a.micro_batch,
        grad_clip: a.grad_clip,
        checkpoint_every: a.checkpoint_every,
        keep_checkpoints: a.keep_checkpoints,
        stop_at: a.stop_at,
        seed: a.seed,
        eval_data: a.eval_data.as_ref().map(|d| lehr_pipeline::store::absolutize(d, &cwd)),
        eval_every: a.eval_every,
        eval_tokens: a.eval_tokens,
        peak_flops: a.peak_tflops.map(|t| t * 1e12),
        remote: remote.clone(),
        compute: precision(a.precision.as_deref(), device)?,
        ..TrainOptions::new(data, local_out.clone(), device)
    };
    let json = a.json;
    let total = lehr_schedules::Plan::new(&spec, Some(&avail.tokens))
        .map_err(|e| super::Failure::usage(anyhow::anyhow!("{}: {e}", a.spec.display())))?
        .total_steps();
    // A rank restarted after the run ended (its peers may be gone) has nothing to do.
    let shown_out = std::path::PathBuf::from(remote.clone().unwrap_or_else(|| a.out.to_string_lossy().to_string()));
    if let Some(step) = lehr_train::trainer::latest_step(&local_out).map_err(|e| anyhow::anyhow!(e))? {
        if step >= total {
            done_line(json, a.rank, step, total, &shown_out);
            return Ok(EXIT_OK);
        }
    }
    let backend = match (a.collective.as_deref(), device.is_cuda()) {
        (Some("tcp"), _) => Backend::Tcp,
        #[cfg(feature = "nccl")]
        (Some("nccl"), _) | (None, true) => Backend::Nccl,
        #[cfg(not(feature = "nccl"))]
        (Some("nccl"), _) => {
            return Err(super::Failure::usage(anyhow::anyhow!(
                "--collective nccl: this lehr was built without NCCL; rebuild with `--features nccl`"
            )))
        }
        (None, _) => Backend::Tcp,
        (Some(other), _) => {
            return Err(super::Failure::usage(anyhow::anyhow!("--collective {other}: use tcp or nccl")));
        }
    };
    #[cfg(feature = "nccl")]
    if matches!(backend, Backend::Nccl) && a.world > 1 {
        if !device.is_cuda() {
            return Err(super::Failure::usage(anyhow::anyhow!("--collective nccl needs --device cuda (GPUs)")));
        }
        if !lehr_train::nccl::NcclCollective::available() {
            return Err(super::Failure::usage(anyhow::anyhow!(
                "libnccl.so cannot be loaded: run scripts/setup.sh (it links PyTorch's libnccl.so.2), put \
                 nvidia/nccl/lib on LD_LIBRARY_PATH, or pass --collective tcp"
            )));
        }
    }
    // Fault injection for tests: `LEHR_FAULT_SLOW_STEP_MS` pauses after every step, so that a
    // test can kill a rank in the middle of a run.
    let slow_step = std::env::var("LEHR_FAULT_SLOW_STEP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(std::time::Duration::from_millis);
    tokio::task::spawn_blocking(move || -> Result<(), anyhow::Error> {
        let collective: Box<dyn lehr_train::collective::Collective> = match (a.world, a.rendezvous) {
            (1, _) => Box::new(lehr_train::collective::Single),
            (w, Some(addr)) => {
                // The per-attempt secret the coordinator's rendezvous handed the worker, passed in
                // the environment (not argv, which other users can read).
                let secret = std::env::var(COLLECTIVE_SECRET_ENV).unwrap_or_default();
                if secret.is_empty() {
                    tracing::warn!(
                        "{COLLECTIVE_SECRET_ENV} is not set: the collective accepts any peer that reaches {addr}"
                    );
                }
                let tcp = lehr_train::collective::TcpCollective::connect(
                    a.rank,
                    w,
                    addr,
                    std::time::Duration::from_secs(300),
                    secret.as_bytes(),
                )
                .map_err(|e| anyhow::anyhow!(e))?;
                match backend {
                    Backend::Tcp => Box::new(tcp),
                    #[cfg(feature = "nccl")]
                    Backend::Nccl => {
                        Box::new(lehr_train::nccl::NcclCollective::init(tcp).map_err(|e| anyhow::anyhow!(e))?)
                    }
                }
            }
            (_, None) => anyhow::bail!("--world above 1 needs --rendezvous HOST:PORT (rank 0 listens there)"),
        };
        let mut trainer = Trainer::with_collective(spec, model, options, collective).map_err(|e| anyhow::anyhow!(e))?;
        let start = trainer.state.step;
        if start > 0 && !json {
            eprintln!("resuming at step {start} from {}", shown_out.display());
        }
        let total = trainer.plan().total_steps();
        let end = a.stop_at.unwrap_or(total).min(total);
        while trainer.state.step < end {
            // One step at a time so that progress shows (checkpoints as `run` writes them).
            let metrics = trainer.run_until(trainer.state.step + 1).map_err(|e| anyhow::anyhow!(e))?;
            if let Some(pause) = slow_step {
                std::thread::sleep(pause);
            }
            // Text for people from rank 0; JSON from every rank (a train worker reads it).
            for m in metrics.into_iter().filter(|_| a.rank == 0 || json) {
                if json {
                    println!("{}", serde_json::to_string(&m).expect("json"));
                } else {
                    let mfu = m.mfu.map(|x| format!(" MFU {:.1}%", x * 100.0)).unwrap_or_default();
                    println!(
                        "step {:>6}/{total} {:<16} loss {:.4} lr {:.3e} grad {:.3} {:.0} tok/s{mfu}",
                        m.step, m.stage, m.loss, m.lr, m.grad_norm, m.tokens_per_s
                    );
                }
            }
        }
        done_line(json, a.rank, trainer.state.step, total, &shown_out);
        Ok(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("training panicked: {e}"))??;
    Ok(EXIT_OK)
}

/// The data-parallel backend of a multi-rank run.
#[cfg(feature = "train")]
enum Backend {
    Tcp,
    #[cfg(feature = "nccl")]
    Nccl,
}

/// The last line of a run: JSON `{"event": "done", ...}` (what a train worker waits for) or a
/// sentence.
#[cfg(feature = "train")]
fn done_line(json: bool, rank: usize, step: u64, total: u64, out: &std::path::Path) {
    if json {
        println!("{}", serde_json::json!({"event": "done", "rank": rank, "step": step, "total_steps": total}));
    } else if rank == 0 {
        let state = if step >= total { "finished" } else { "stopped" };
        println!("{state} at step {step} of {total}; checkpoints in {}", out.join("checkpoints").display());
    }
}

/// A preset with the command line's knob overrides, validated.
#[cfg(feature = "train")]
fn model_config(
    preset: &str,
    vocab: i64,
    k: &crate::cli::ModelKnobArgs,
) -> Result<lehr_train::model::ModelConfig, super::Failure> {
    let mut model =
        lehr_train::model::ModelConfig::preset(preset, vocab).map_err(|e| super::Failure::usage(anyhow::anyhow!(e)))?;
    model.embedding_scale = k.embedding_scale.unwrap_or(model.embedding_scale);
    model.depth_scale = k.depth_scale.or(model.depth_scale);
    model.logit_scale = k.logit_scale.unwrap_or(model.logit_scale);
    model.qk_norm |= k.qk_norm;
    model.z_loss = k.z_loss.unwrap_or(model.z_loss);
    model.init_std = k.init_std.unwrap_or(model.init_std);
    model
        .validate()
        .map_err(|e| super::Failure::usage(anyhow::anyhow!("{e} (check the model preset and its overrides)")))?;
    Ok(model)
}

#[cfg(feature = "train")]
fn precision(name: Option<&str>, device: lehr_train::tch::Device) -> Result<lehr_train::tch::Kind, super::Failure> {
    use lehr_train::tch::Kind;
    match name {
        None if device.is_cuda() => Ok(Kind::BFloat16),
        None => Ok(Kind::Float),
        Some("bf16") => Ok(Kind::BFloat16),
        Some("fp32") => Ok(Kind::Float),
        Some(other) => Err(super::Failure::usage(anyhow::anyhow!("--precision {other}: use bf16 or fp32"))),
    }
}

/// `lehr bench train`.
#[cfg(feature = "train")]
pub async fn bench(a: crate::cli::BenchTrainArgs) -> CmdResult {
    let dev = device(a.device.as_deref())?;
    let options = lehr_train::bench::BenchOptions {
        model: model_config(&a.preset, a.vocab, &a.knobs)?,
        preset: a.preset.clone(),
        sequence_length: a.seq_len,
        micro_batch: a.micro_batch,
        steps: a.steps.max(1),
        warmup: a.warmup,
        device: dev,
        compute: precision(a.precision.as_deref(), dev)?,
        peak_flops: a.peak_tflops.map(|t| t * 1e12),
    };
    let r = tokio::task::spawn_blocking(move || lehr_train::bench::bench_train(&options))
        .await
        .map_err(|e| anyhow::anyhow!("benchmark panicked: {e}"))?
        .map_err(|e| anyhow::anyhow!(e))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
    } else {
        println!(
            "train step, {} ({:.1}M parameters), {} x {} tokens, {} {}:",
            r.preset,
            r.parameters as f64 / 1e6,
            r.micro_batch,
            r.sequence_length,
            r.device,
            r.precision
        );
        println!("  {:.0} tokens/s ({:.1} ms/step, median of {})", r.tokens_per_s, r.step_ms_median, r.steps_timed);
        let mfu =
            r.mfu.map(|m| format!(", MFU {:.1}%", m * 100.0)).unwrap_or_else(|| " (pass --peak-tflops for MFU)".into());
        println!("  {:.2} TFLOP/s achieved{mfu}", r.achieved_tflops);
        if let Some(b) = r.peak_memory_bytes {
            println!("  peak memory {:.2} GiB ({})", b as f64 / (1u64 << 30) as f64, r.memory_source);
        }
    }
    Ok(EXIT_OK)
}

#[cfg(not(feature = "train"))]
pub async fn bench(_a: crate::cli::BenchTrainArgs) -> CmdResult {
    run_without_train()
}

#[cfg(feature = "train")]
fn device(name: Option<&str>) -> Result<lehr_train::tch::Device, super::Failure> {
    match name {
        Some("cpu") => Ok(lehr_train::tch::Device::Cpu),
        Some("cuda") => Ok(lehr_train::tch::Device::Cuda(0)),
        None => Ok(lehr_train::tch::Device::cuda_if_available()),
        Some(other) => Err(super::Failure::usage(anyhow::anyhow!("--device {other}: use cpu or cuda"))),
    }
}

#[cfg(feature = "train")]
pub async fn eval(cmd: EvalCommand) -> CmdResult {
    let EvalCommand::Ppl(a) = cmd;
    let cwd = std::env::current_dir().map_err(|e| anyhow::anyhow!("no current directory: {e}"))?;
    let data = lehr_pipeline::store::absolutize(&a.data, &cwd);
    let loc = lehr_pipeline::store::resolve(&data).map_err(|e| super::Failure::usage(anyhow::anyhow!(e)))?;
    let shards = lehr_pipeline::tokens::load_shards(&loc).await.map_err(|e| anyhow::anyhow!(e))?;
    if shards.is_empty() {
        return Err(super::Failure::usage(anyhow::anyhow!("no token shards under {data}")));
    }
    let dev = device(a.device.as_deref())?;
    // A checkpoint in an object store is fetched into a temporary directory first.
    let ckpt_str = a.checkpoint.to_string_lossy().to_string();
    let mut _fetched = None;
    let checkpoint = if lehr_pipeline::store::is_remote(&ckpt_str) {
        let tmp = tempfile::Builder::new().prefix("lehr-ckpt-").tempdir().map_err(|e| anyhow::anyhow!(e))?;
        lehr_train::publish::fetch_dir(&ckpt_str, tmp.path()).await.map_err(|e| anyhow::anyhow!(e))?;
        let p = tmp.path().to_path_buf();
        _fetched = Some(tmp);
        p
    } else {
        a.checkpoint.clone()
    };
    let report = tokio::task::spawn_blocking(move || -> Result<_, anyhow::Error> {
        let (_vs, model) = lehr_train::model::load_hf(&checkpoint, dev).map_err(|e| anyhow::anyhow!(e))?;
        let vocab = shards.iter().map(|s| s.meta.tokenizer.vocab_size as i64).max().unwrap_or(0);
        if vocab > model.config.vocab_size {
            anyhow::bail!(
                "the shards' tokenizer has {vocab} ids but the model only {}: wrong tokenizer for this checkpoint?",
                model.config.vocab_size
            );
        }
        Ok(lehr_train::eval::evaluate(&model, &shards, a.seq_len, a.max_tokens, a.batch, dev))
    })
    .await
    .map_err(|e| anyhow::anyhow!("evaluation panicked: {e}"))??;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        println!(
            "{} tokens in {} windows of {}: loss {:.4} nats, perplexity {:.3}, top-1 {:.2}%, top-5 {:.2}%",
            report.tokens,
            report.sequences,
            report.sequence_length,
            report.loss,
            report.perplexity,
            report.top1_accuracy * 100.0,
            report.top5_accuracy * 100.0
        );
    }
    Ok(EXIT_OK)
}

#[cfg(not(feature = "train"))]
pub async fn eval(_cmd: EvalCommand) -> CmdResult {
    run_without_train()
}

#[cfg(not(feature = "train"))]
async fn run_here(_cmd: TrainCommand) -> CmdResult {
    run_without_train()
}

#[cfg(not(feature = "train"))]
fn run_without_train() -> CmdResult {
    Err(super::Failure::usage(anyhow::anyhow!(
        "this lehr was built without training support; rebuild with `cargo build --features train` (scripts/setup.sh installs libtorch)"
    )))
}

/// `$TMPDIR/lehr-train-<uid>`: this user's scratch root, created mode 0700, and refused when it
/// is a link or belongs to someone else (a directory planted in a shared /tmp).
#[cfg(feature = "train")]
fn private_scratch_root() -> Result<std::path::PathBuf, super::Failure> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let root = std::env::temp_dir().join(format!("lehr-train-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(anyhow::anyhow!("cannot create {}: {e}", root.display()).into()),
    }
    let meta = std::fs::symlink_metadata(&root).with_context(|| format!("cannot inspect {}", root.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(super::Failure::usage(anyhow::anyhow!(
            "{} is not a private directory of this user (a link, another owner, or open to others); remove it or \
             pass --scratch DIR",
            root.display()
        )));
    }
    Ok(root)
}
