//! `lehr train ...`: only in builds with the `train` feature (libtorch).

use super::CmdResult;
#[cfg(feature = "train")]
use super::EXIT_OK;
use crate::cli::{EvalCommand, TrainCommand};

#[cfg(feature = "train")]
pub async fn run(cmd: TrainCommand) -> CmdResult {
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
    }
}

#[cfg(feature = "train")]
async fn run_spec(a: crate::cli::TrainRunArgs) -> CmdResult {
    use anyhow::Context;
    use lehr_train::model::ModelConfig;
    use lehr_train::trainer::{TrainOptions, Trainer};
    let text = std::fs::read_to_string(&a.spec).with_context(|| format!("cannot read {}", a.spec.display()))?;
    let spec = lehr_schedules::RunSpec::from_toml(&text)
        .map_err(|e| super::Failure::usage(anyhow::anyhow!("{}: {e}", a.spec.display())))?;
    let cwd = std::env::current_dir().context("no current directory")?;
    let data = lehr_pipeline::store::absolutize(&a.data, &cwd);
    let root = lehr_pipeline::store::resolve(&data).map_err(|e| super::Failure::usage(anyhow::anyhow!(e)))?;
    // Refuses shards of different tokenizers; the vocabulary comes from theirs.
    let avail =
        lehr_pipeline::mix::available(&root, &spec).await.map_err(|e| super::Failure::usage(anyhow::anyhow!(e)))?;
    let vocab = avail.vocab_size as i64;
    if vocab == 0 {
        return Err(super::Failure::usage(anyhow::anyhow!("no token shards under {data} for the spec's sources")));
    }
    let model = ModelConfig::preset(&a.model, vocab).map_err(|e| super::Failure::usage(anyhow::anyhow!(e)))?;
    let device = device(a.device.as_deref())?;
    let options = TrainOptions {
        micro_batch: a.micro_batch,
        grad_clip: a.grad_clip,
        checkpoint_every: a.checkpoint_every,
        stop_at: a.stop_at,
        seed: a.seed,
        eval_data: a.eval_data.as_ref().map(|d| lehr_pipeline::store::absolutize(d, &cwd)),
        eval_every: a.eval_every,
        eval_tokens: a.eval_tokens,
        peak_flops: a.peak_tflops.map(|t| t * 1e12),
        ..TrainOptions::new(data, a.out.clone(), device)
    };
    let json = a.json;
    tokio::task::spawn_blocking(move || -> Result<(), anyhow::Error> {
        let collective: Box<dyn lehr_train::collective::Collective> = match (a.world, a.rendezvous) {
            (1, _) => Box::new(lehr_train::collective::Single),
            (w, Some(addr)) => Box::new(
                lehr_train::collective::TcpCollective::connect(a.rank, w, addr, std::time::Duration::from_secs(300))
                    .map_err(|e| anyhow::anyhow!(e))?,
            ),
            (_, None) => anyhow::bail!("--world above 1 needs --rendezvous HOST:PORT (rank 0 listens there)"),
        };
        let mut trainer = Trainer::with_collective(spec, model, options, collective).map_err(|e| anyhow::anyhow!(e))?;
        let start = trainer.state.step;
        if start > 0 && !json {
            eprintln!("resuming at step {start} from {}", a.out.display());
        }
        let total = trainer.plan().total_steps();
        let end = a.stop_at.unwrap_or(total).min(total);
        while trainer.state.step < end {
            // One step at a time so that progress shows (checkpoints as `run` writes them).
            let metrics = trainer.run_until(trainer.state.step + 1).map_err(|e| anyhow::anyhow!(e))?;
            for m in metrics.into_iter().filter(|_| a.rank == 0) {
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
        Ok(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("training panicked: {e}"))??;
    Ok(EXIT_OK)
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
    let report = tokio::task::spawn_blocking(move || -> Result<_, anyhow::Error> {
        let (_vs, model) = lehr_train::model::load_hf(&a.checkpoint, dev).map_err(|e| anyhow::anyhow!(e))?;
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
pub async fn run(_cmd: TrainCommand) -> CmdResult {
    run_without_train()
}

#[cfg(not(feature = "train"))]
fn run_without_train() -> CmdResult {
    Err(super::Failure::usage(anyhow::anyhow!(
        "this lehr was built without training support; rebuild with `cargo build --features train` (scripts/setup.sh installs libtorch)"
    )))
}
