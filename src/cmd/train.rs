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
    let (mut running, _) = super::start_embedded(state.path().into(), None, 0, &shutdown).await?;
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
    use lehr_schedules::job::TrainJob;
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
        run: anchored_spec(text, &a.spec, &cwd, a.init_from.as_deref())?,
        data: lehr_pipeline::store::absolutize(&a.data, &cwd),
        model: a.model.clone().unwrap_or_default(),
        out: lehr_pipeline::store::absolutize(&a.out.to_string_lossy(), &cwd),
        world: a.world as u32,
        options: job_options(&a, &cwd),
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
        TrainCommand::Rank(a) => run_rank_file(&a.config).await,
        TrainCommand::Spec(_) => unreachable!("rewritten by run()"),
    }
}

/// The run spec's text for ranks: as written, unless a path in it is relative (`[eval]
/// data-dir`, `[init] from`, `[distill] teacher`), which is then made absolute against the spec file's directory
/// (ranks run elsewhere), or `--init-from` sets `[init]`.
fn anchored_spec(
    text: String,
    spec: &std::path::Path,
    cwd: &std::path::Path,
    init_from: Option<&std::path::Path>,
) -> Result<String, super::Failure> {
    let mut run = lehr_schedules::RunSpec::from_toml(&text)
        .map_err(|e| super::Failure::usage(anyhow::anyhow!("{}: {e}", spec.display())))?;
    let base = cwd.join(spec).parent().map(|p| p.to_path_buf()).unwrap_or_else(|| cwd.to_path_buf());
    let mut changed = false;
    if let Some(from) = init_from {
        if run.init.is_some() {
            return Err(super::Failure::usage(anyhow::anyhow!(
                "{} has an [init] table and --init-from was given: keep one",
                spec.display()
            )));
        }
        let from = lehr_pipeline::store::absolutize(&from.to_string_lossy(), cwd);
        run.init = Some(lehr_schedules::spec::InitSpec { from, layers: None });
        changed = true;
    }
    let mut anchor = |p: &mut String| {
        let abs = lehr_pipeline::store::absolutize(p, &base);
        changed |= abs != *p;
        *p = abs;
    };
    if let Some(e) = run.eval.as_mut() {
        anchor(&mut e.data_dir);
    }
    if let Some(i) = run.init.as_mut() {
        anchor(&mut i.from);
    }
    if let Some(d) = run.distill.as_mut() {
        anchor(&mut d.teacher);
    }
    Ok(if changed { run.to_toml() } else { text })
}

/// The training options of the command line, as the job and the rank config carry them (the
/// one place the flags become options).
fn job_options(a: &crate::cli::TrainRunArgs, cwd: &std::path::Path) -> lehr_schedules::job::TrainJobOptions {
    lehr_schedules::job::TrainJobOptions {
        micro_batch: a.micro_batch,
        grad_clip: a.grad_clip,
        checkpoint_every: a.checkpoint_every,
        keep_checkpoints: a.keep_checkpoints,
        seed: a.seed,
        device: a.device.clone(),
        precision: a.precision.clone(),
        collective: a.collective.clone(),
        eval_data: a.eval_data.as_ref().map(|d| lehr_pipeline::store::absolutize(d, cwd)),
        eval_every: a.eval_every,
        eval_tokens: a.eval_tokens,
        peak_tflops: a.peak_tflops,
        ..knob_options(&a.knobs)
    }
}

/// Default options with the model knobs of the command line.
fn knob_options(k: &crate::cli::ModelKnobArgs) -> lehr_schedules::job::TrainJobOptions {
    lehr_schedules::job::TrainJobOptions {
        embedding_scale: k.embedding_scale,
        depth_scale: k.depth_scale,
        logit_scale: k.logit_scale,
        qk_norm: k.qk_norm,
        z_loss: k.z_loss,
        init_std: k.init_std,
        layers: k.layers,
        ..Default::default()
    }
}

/// `lehr train run` here: one rank of the run (all of it, for one rank), through the train
/// crate's role library.
#[cfg(feature = "train")]
async fn run_spec(a: crate::cli::TrainRunArgs) -> CmdResult {
    use anyhow::Context;
    let text = std::fs::read_to_string(&a.spec).with_context(|| format!("cannot read {}", a.spec.display()))?;
    let cwd = std::env::current_dir().context("no current directory")?;
    let config = lehr_schedules::rank::RankConfig {
        run: anchored_spec(text, &a.spec, &cwd, a.init_from.as_deref())?,
        spec_name: a.spec.display().to_string(),
        data: lehr_pipeline::store::absolutize(&a.data, &cwd),
        model: a.model.clone().unwrap_or_default(),
        out: lehr_pipeline::store::absolutize(&a.out.to_string_lossy(), &cwd),
        world: a.world as u32,
        rank: a.rank as u32,
        rendezvous: a.rendezvous.map(|r| r.to_string()),
        stop_at: a.stop_at,
        scratch: a.scratch.clone(),
        options: job_options(&a, &cwd),
    };
    run_rank(config, a.json).await
}

/// `lehr train rank CONFIG.json`: a rank a train worker started (JSON events on stdout).
#[cfg(feature = "train")]
async fn run_rank_file(path: &std::path::Path) -> CmdResult {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = lehr_schedules::rank::RankConfig::from_json(&text)
        .map_err(|e| super::Failure::usage(anyhow::anyhow!("{}: {e}", path.display())))?;
    run_rank(config, true).await
}

/// Runs a rank, printing its events: every one as a JSON line (`json`, what a train worker
/// reads), or steps and the end as text from rank 0.
#[cfg(feature = "train")]
async fn run_rank(config: lehr_schedules::rank::RankConfig, json: bool) -> CmdResult {
    use lehr_schedules::rank::RankEvent;
    // The per-attempt secret the coordinator's rendezvous handed the worker, passed in the
    // environment (not argv, which other users can read).
    let secret = std::env::var(COLLECTIVE_SECRET_ENV).ok().filter(|s| !s.is_empty());
    let (rank, out) = (config.rank, config.out.clone());
    let events = Box::new(move |e: RankEvent| {
        if json {
            println!("{}", e.to_line());
            return;
        }
        match e {
            RankEvent::Resumed { step, .. } => eprintln!("resuming at step {step} from {out}"),
            RankEvent::Step(m) if rank == 0 => {
                let mfu = m.mfu.map(|x| format!(" MFU {:.1}%", x * 100.0)).unwrap_or_default();
                let kd = m.kd_loss.map(|x| format!(" kd {x:.4}")).unwrap_or_default();
                println!(
                    "step {:>6} {:<16} loss {:.4}{kd} lr {:.3e} grad {:.3} {:.0} tok/s{mfu}",
                    m.step, m.stage, m.loss, m.lr, m.grad_norm, m.tokens_per_s
                );
            }
            RankEvent::Step(_) => {}
            RankEvent::Done { step, total_steps, .. } if rank == 0 => {
                let state = if step >= total_steps { "finished" } else { "stopped" };
                println!("{state} at step {step} of {total_steps}; checkpoints in {out}/checkpoints");
            }
            RankEvent::Done { .. } => {}
        }
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    lehr_train::rank::run(config, secret, events, shutdown).await.map_err(rank_failure)?;
    Ok(EXIT_OK)
}

/// `lehr bench train`.
#[cfg(feature = "train")]
pub async fn bench(a: crate::cli::BenchTrainArgs) -> CmdResult {
    let dev = device(a.device.as_deref())?;
    let model = lehr_train::rank::model_config(&a.preset, a.vocab, &knob_options(&a.knobs)).map_err(rank_failure)?;
    let options = lehr_train::bench::BenchOptions {
        model,
        preset: a.preset.clone(),
        sequence_length: a.seq_len,
        micro_batch: a.micro_batch,
        steps: a.steps.max(1),
        warmup: a.warmup,
        device: dev,
        compute: lehr_train::rank::parse_precision(a.precision.as_deref(), dev).map_err(rank_failure)?,
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
pub(super) fn device(name: Option<&str>) -> Result<lehr_train::tch::Device, super::Failure> {
    lehr_train::rank::parse_device(name).map_err(rank_failure)
}

#[cfg(feature = "train")]
fn rank_failure(e: lehr_train::rank::RankError) -> super::Failure {
    match e {
        lehr_train::rank::RankError::Usage(m) => super::Failure::usage(anyhow::anyhow!(m)),
        lehr_train::rank::RankError::Failed(m) => anyhow::anyhow!(m).into(),
    }
}

/// The token shards under `data` (a directory or object-store URL), refused when there are none.
#[cfg(feature = "train")]
pub async fn load_eval_shards(data: &str) -> Result<Vec<lehr_pipeline::tokens::TokenShard>, super::Failure> {
    let cwd = std::env::current_dir().map_err(|e| anyhow::anyhow!("no current directory: {e}"))?;
    let data = lehr_pipeline::store::absolutize(data, &cwd);
    let loc = lehr_pipeline::store::resolve(&data).map_err(|e| super::Failure::usage(anyhow::anyhow!(e)))?;
    let shards = lehr_pipeline::tokens::load_shards(&loc).await.map_err(|e| anyhow::anyhow!(e))?;
    if shards.is_empty() {
        return Err(super::Failure::usage(anyhow::anyhow!("no token shards under {data}")));
    }
    Ok(shards)
}

/// Perplexity of the checkpoint in `dir` on `shards` (blocking: run it off the runtime).
#[cfg(feature = "train")]
pub fn perplexity(
    dir: &std::path::Path,
    shards: &[lehr_pipeline::tokens::TokenShard],
    seq_len: i64,
    max_tokens: u64,
    batch: usize,
    dev: lehr_train::tch::Device,
) -> Result<lehr_train::eval::EvalReport, anyhow::Error> {
    let (_vs, model) = lehr_train::model::load_hf(dir, dev).map_err(|e| anyhow::anyhow!(e))?;
    evaluate_model(&model, shards, seq_len, max_tokens, batch, dev)
}

/// [`lehr_train::eval::evaluate`] after checking that the shards' tokenizer fits the model.
#[cfg(feature = "train")]
fn evaluate_model(
    model: &lehr_train::model::Model,
    shards: &[lehr_pipeline::tokens::TokenShard],
    seq_len: i64,
    max_tokens: u64,
    batch: usize,
    dev: lehr_train::tch::Device,
) -> Result<lehr_train::eval::EvalReport, anyhow::Error> {
    let vocab = shards.iter().map(|s| s.meta.tokenizer.vocab_size as i64).max().unwrap_or(0);
    if vocab > model.config.vocab_size {
        anyhow::bail!(
            "the shards' tokenizer has {vocab} ids but the model only {}: wrong tokenizer for this checkpoint?",
            model.config.vocab_size
        );
    }
    Ok(lehr_train::eval::evaluate(model, shards, seq_len, max_tokens, batch, dev))
}

#[cfg(feature = "train")]
pub async fn eval(cmd: EvalCommand) -> CmdResult {
    let EvalCommand::Ppl(a) = cmd else { unreachable!("eval tasks is dispatched to cmd::tasks") };
    let mut sets = Vec::new();
    for d in &a.data {
        sets.push((d.clone(), std::sync::Arc::new(load_eval_shards(d).await?)));
    }
    let dev = device(a.device.as_deref())?;
    // rows: every checkpoint on every data set, each model loaded once
    let mut rows = Vec::new();
    for ckpt in &a.checkpoint {
        // A checkpoint in an object store is fetched into a temporary directory first.
        let ckpt_str = ckpt.to_string_lossy().to_string();
        let mut _fetched = None;
        let checkpoint = if lehr_pipeline::store::is_remote(&ckpt_str) {
            let tmp = tempfile::Builder::new().prefix("lehr-ckpt-").tempdir().map_err(|e| anyhow::anyhow!(e))?;
            lehr_train::publish::fetch_dir(&ckpt_str, tmp.path()).await.map_err(|e| anyhow::anyhow!(e))?;
            let p = tmp.path().to_path_buf();
            _fetched = Some(tmp);
            p
        } else {
            ckpt.clone()
        };
        let shared = sets.clone();
        let (seq_len, max_tokens, batch) = (a.seq_len, a.max_tokens, a.batch);
        let reports = tokio::task::spawn_blocking(move || -> Result<Vec<_>, anyhow::Error> {
            let (_vs, model) = lehr_train::model::load_hf(&checkpoint, dev).map_err(|e| anyhow::anyhow!(e))?;
            shared.iter().map(|(_, shards)| evaluate_model(&model, shards, seq_len, max_tokens, batch, dev)).collect()
        })
        .await
        .map_err(|e| anyhow::anyhow!("evaluation panicked: {e}"))??;
        for ((data, _), report) in sets.iter().zip(reports) {
            rows.push((ckpt_str.clone(), data.clone(), report));
        }
    }
    if rows.len() == 1 {
        let report = &rows[0].2;
        if a.json {
            println!("{}", serde_json::to_string_pretty(report).expect("json"));
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
        return Ok(EXIT_OK);
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(c, d, r)| {
                let mut v = serde_json::to_value(r).expect("json");
                v["checkpoint"] = serde_json::json!(c);
                v["data"] = serde_json::json!(d);
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "results": v })).expect("json"));
        return Ok(EXIT_OK);
    }
    // one row per checkpoint, a column group per data set (Gumini's per-language table)
    let name = |d: &str| d.rsplit('/').find(|p| !p.is_empty()).unwrap_or(d).to_string();
    let width = a.checkpoint.iter().map(|c| c.to_string_lossy().len()).max().unwrap_or(10).max(10);
    let mut head = format!("{:<width$}", "checkpoint");
    for (d, _) in &sets {
        head.push_str(&format!(" | {:>14} {:>7} {:>7}", format!("{} ppl", name(d)), "top-1", "top-5"));
    }
    println!("{head}");
    for chunk in rows.chunks(sets.len()) {
        let mut line = format!("{:<width$}", chunk[0].0);
        for (_, _, r) in chunk {
            line.push_str(&format!(
                " | {:>14.3} {:>6.2}% {:>6.2}%",
                r.perplexity,
                r.top1_accuracy * 100.0,
                r.top5_accuracy * 100.0
            ));
        }
        println!("{line}");
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
pub(super) fn run_without_train() -> CmdResult {
    Err(super::Failure::usage(anyhow::anyhow!(
        "this lehr was built without training support; rebuild with `cargo build --features train` (scripts/setup.sh installs libtorch)"
    )))
}

/// `lehr serve`: until Ctrl-C (or SIGTERM).
#[cfg(feature = "train")]
pub async fn serve(a: crate::cli::ModelServeArgs) -> CmdResult {
    let config = lehr_train::serve::ServeConfig {
        checkpoint: a.checkpoint.clone(),
        listen: a.listen,
        device: device(a.device.as_deref())?,
        max_batch: a.max_batch,
        model_name: a.model_name.clone(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        stop.cancel();
    });
    let name = a.checkpoint.display().to_string();
    lehr_train::serve::start(config, shutdown, |addr| {
        println!("serving {name} on http://{addr}/v1");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })
    .await
    .map_err(|e| match e {
        lehr_train::TrainError::Config(_) => super::Failure::usage(anyhow::anyhow!(e)),
        other => super::Failure::from(anyhow::anyhow!(other)),
    })?;
    Ok(super::EXIT_OK)
}

#[cfg(not(feature = "train"))]
pub async fn serve(_a: crate::cli::ModelServeArgs) -> CmdResult {
    run_without_train()
}
