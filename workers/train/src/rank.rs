//! The training role: one rank, from its [`RankConfig`] to its last checkpoint, as a library
//! (`run(config, secret, events, shutdown)`, like the coordinator's and the data worker's
//! `start`). `lehr train run` builds the config from its flags; a train worker writes it to a
//! private file for the rank process it starts (`lehr train rank FILE`) and reads the
//! [`RankEvent`]s back from its stdout.

use std::path::{Path, PathBuf};

use lehr_schedules::job::TrainJobOptions;
use lehr_schedules::rank::{RankConfig, RankEvent};
use tch::{Device, Kind};
use tokio_util::sync::CancellationToken;

use crate::model::ModelConfig;
use crate::trainer::{TrainOptions, Trainer};

/// Why a rank did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    /// The configuration or the data is wrong: a retry fails the same way.
    #[error("{0}")]
    Usage(String),
    /// Anything else (storage, a peer gone, a failed step): a retry may help.
    #[error("{0}")]
    Failed(String),
}

fn usage(e: impl std::fmt::Display) -> RankError {
    RankError::Usage(e.to_string())
}

fn failed(e: impl std::fmt::Display) -> RankError {
    RankError::Failed(e.to_string())
}

/// Where a rank stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankOutcome {
    pub step: u64,
    pub total_steps: u64,
    /// `shutdown` was cancelled before the end (the latest checkpoint stands).
    pub interrupted: bool,
}

/// `cpu`, `cuda`, or CUDA when available.
pub fn parse_device(name: Option<&str>) -> Result<Device, RankError> {
    match name {
        Some("cpu") => Ok(Device::Cpu),
        Some("cuda") => Ok(Device::Cuda(0)),
        None => Ok(Device::cuda_if_available()),
        Some(other) => Err(usage(format!("--device {other}: use cpu or cuda"))),
    }
}

/// `bf16`, `fp32`, or bf16 on CUDA and fp32 on CPU.
pub fn parse_precision(name: Option<&str>, device: Device) -> Result<Kind, RankError> {
    match name {
        None if device.is_cuda() => Ok(Kind::BFloat16),
        None => Ok(Kind::Float),
        Some("bf16") => Ok(Kind::BFloat16),
        Some("fp32") => Ok(Kind::Float),
        Some(other) => Err(usage(format!("--precision {other}: use bf16 or fp32"))),
    }
}

/// A preset with the options' knob overrides, validated.
pub fn model_config(preset: &str, vocab: i64, o: &TrainJobOptions) -> Result<ModelConfig, RankError> {
    let mut model = ModelConfig::preset(preset, vocab).map_err(usage)?;
    model.embedding_scale = o.embedding_scale.unwrap_or(model.embedding_scale);
    model.depth_scale = o.depth_scale.or(model.depth_scale);
    model.logit_scale = o.logit_scale.unwrap_or(model.logit_scale);
    model.qk_norm |= o.qk_norm;
    model.z_loss = o.z_loss.unwrap_or(model.z_loss);
    model.init_std = o.init_std.unwrap_or(model.init_std);
    model.num_hidden_layers = o.layers.unwrap_or(model.num_hidden_layers);
    if model.num_hidden_layers < 1 {
        return Err(usage(format!("--layers {}: a model needs at least 1 block", model.num_hidden_layers)));
    }
    model.validate().map_err(|e| usage(format!("{e} (check the model preset and its overrides)")))?;
    Ok(model)
}

/// `$TMPDIR/lehr-train-<uid>`: this user's scratch root, created mode 0700, and refused when it
/// is a link or belongs to someone else (a directory planted in a shared /tmp).
pub fn private_scratch_root() -> Result<PathBuf, RankError> {
    private_scratch_root_in(&std::env::temp_dir())
}

fn private_scratch_root_in(tmp: &Path) -> Result<PathBuf, RankError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let root = tmp.join(format!("lehr-train-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed(format!("cannot create {}: {e}", root.display()))),
    }
    let meta =
        std::fs::symlink_metadata(&root).map_err(|e| failed(format!("cannot inspect {}: {e}", root.display())))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(usage(format!(
            "{} is not a private directory of this user (a link, another owner, or open to others); remove it or \
             pass --scratch DIR",
            root.display()
        )));
    }
    Ok(root)
}

/// The tokenizer the shards were made with, for every checkpoint: `tokenizer.json` as read from
/// where the shards' metadata says (its sha256 checked), and a `tokenizer_config.json` naming the
/// EOS token. A tokenizer that cannot be read is a warning, not a failure: the run goes on and its
/// checkpoints lack it (export and serve then need `--tokenizer`).
async fn checkpoint_tokenizer(info: &lehr_pipeline::tokens::TokenizerInfo, max_len: i64) -> Option<(Vec<u8>, Vec<u8>)> {
    let bytes = match lehr_pipeline::store::read_file(&info.path, "the shards' tokenizer").await {
        Ok(b) => b.to_vec(),
        Err(e) => {
            eprintln!("warning: checkpoints will not hold the tokenizer: {e}");
            return None;
        }
    };
    let sha = lehr_pipeline::spool::sha256_hex(&bytes);
    if sha != info.sha256 {
        eprintln!(
            "warning: {} has changed since the shards were made (sha256 {sha}, the shards say {}): checkpoints will \
             not hold it",
            info.path, info.sha256
        );
        return None;
    }
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": info.eos,
        "pad_token": info.eos,
        "bos_token": null,
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": max_len,
    });
    Some((bytes, serde_json::to_vec_pretty(&config).expect("json")))
}

/// The data-parallel backend of a multi-rank run.
enum Backend {
    Tcp,
    #[cfg(feature = "nccl")]
    Nccl,
}

fn backend(name: Option<&str>, device: Device, world: u32) -> Result<Backend, RankError> {
    let b = match (name, device.is_cuda()) {
        (Some("tcp"), _) => Backend::Tcp,
        #[cfg(feature = "nccl")]
        (Some("nccl"), _) | (None, true) => Backend::Nccl,
        #[cfg(not(feature = "nccl"))]
        (Some("nccl"), _) => {
            return Err(usage("--collective nccl: this lehr was built without NCCL; rebuild with `--features nccl`"))
        }
        (None, _) => Backend::Tcp,
        (Some(other), _) => return Err(usage(format!("--collective {other}: use tcp or nccl"))),
    };
    #[cfg(feature = "nccl")]
    if matches!(b, Backend::Nccl) && world > 1 {
        if !device.is_cuda() {
            return Err(usage("--collective nccl needs --device cuda (GPUs)"));
        }
        if !crate::nccl::NcclCollective::available() {
            return Err(usage(
                "libnccl.so cannot be loaded: run scripts/setup.sh (it links PyTorch's libnccl.so.2), put \
                 nvidia/nccl/lib on LD_LIBRARY_PATH, or pass --collective tcp",
            ));
        }
    }
    let _ = world;
    Ok(b)
}

/// Runs one rank: checks the spec and the data, pulls the latest checkpoint of a URL `out`,
/// meets the other ranks (authenticated by `secret`, the rendezvous's per-generation secret),
/// then steps until the run's end, `stop_at` or `shutdown`, reporting through `events`.
pub async fn run(
    config: RankConfig,
    secret: Option<String>,
    mut events: Box<dyn FnMut(RankEvent) + Send>,
    shutdown: CancellationToken,
) -> Result<RankOutcome, RankError> {
    let name = if config.spec_name.is_empty() { "the run spec".to_string() } else { config.spec_name.clone() };
    let spec = lehr_schedules::RunSpec::from_toml(&config.run).map_err(|e| usage(format!("{name}: {e}")))?;
    let root = lehr_pipeline::store::resolve(&config.data).map_err(usage)?;
    // Refuses shards of different tokenizers; the vocabulary comes from theirs. Storage
    // trouble is worth a retry; wrong data is the caller's to fix.
    let avail = lehr_pipeline::mix::available(&root, &spec).await.map_err(|e| {
        if e.is_retryable() {
            failed(&e)
        } else {
            usage(&e)
        }
    })?;
    let vocab = avail.vocab_size as i64;
    if vocab == 0 {
        return Err(usage(format!("no token shards under {} for the spec's sources", config.data)));
    }
    // A URL `out`: work in a scratch directory, publish checkpoints to the URL.
    let (local_out, remote) = if lehr_pipeline::store::is_remote(&config.out) {
        let scratch = match config.scratch.clone() {
            Some(s) => s,
            None => {
                let dir: String =
                    config.out.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
                private_scratch_root()?.join(dir).join(format!("rank-{}", config.rank))
            }
        };
        std::fs::create_dir_all(&scratch).map_err(|e| failed(format!("cannot create {}: {e}", scratch.display())))?;
        let r = crate::publish::Remote::new(&config.out).map_err(usage)?;
        r.pull_latest(&scratch).await.map_err(failed)?;
        (scratch, Some(config.out.clone()))
    } else {
        (PathBuf::from(&config.out), None)
    };
    let o = &config.options;
    let (model, init) = match &spec.init {
        None => (model_config(if config.model.is_empty() { "tiny" } else { &config.model }, vocab, o)?, None),
        Some(i) => {
            if !config.model.is_empty() {
                return Err(usage(format!(
                    "{name}: [init] starts from {} with its architecture; drop --model {}",
                    i.from, config.model
                )));
            }
            if o.knobs_set() {
                return Err(usage(format!(
                    "{name}: [init] keeps {}'s function; the model knobs (--embedding-scale, --depth-scale, ...) would change it",
                    i.from
                )));
            }
            let (m, inherit) = crate::init::student(i, vocab).map_err(usage)?;
            (m, Some(inherit))
        }
    };
    let tokenizer = match &avail.tokenizer {
        Some(info) => checkpoint_tokenizer(info, model.max_position_embeddings).await,
        None => None,
    };
    let device = parse_device(o.device.as_deref())?;
    let options = TrainOptions {
        micro_batch: o.micro_batch,
        grad_clip: o.grad_clip,
        checkpoint_every: o.checkpoint_every,
        keep_checkpoints: o.keep_checkpoints,
        stop_at: config.stop_at,
        seed: o.seed,
        eval_data: o.eval_data.clone(),
        eval_every: o.eval_every,
        eval_tokens: o.eval_tokens,
        peak_flops: o.peak_tflops.map(|t| t * 1e12),
        remote: remote.clone(),
        tokenizer,
        compute: parse_precision(o.precision.as_deref(), device)?,
        init,
        ..TrainOptions::new(config.data.clone(), local_out.clone(), device)
    };
    let total =
        lehr_schedules::Plan::new(&spec, Some(&avail.tokens)).map_err(|e| usage(format!("{name}: {e}")))?.total_steps();
    // A rank restarted after the run ended (its peers may be gone) has nothing to do.
    if let Some(step) = crate::trainer::latest_step(&local_out).map_err(failed)? {
        if step >= total {
            events(RankEvent::Done { rank: config.rank, step, total_steps: total });
            return Ok(RankOutcome { step, total_steps: total, interrupted: false });
        }
    }
    let backend = backend(o.collective.as_deref(), device, config.world)?;
    // Fault injection for tests: `LEHR_FAULT_SLOW_STEP_MS` pauses after every step, so that a
    // test can kill a rank in the middle of a run.
    let slow_step = std::env::var("LEHR_FAULT_SLOW_STEP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(std::time::Duration::from_millis);
    let (rank, world) = (config.rank, config.world);
    let (rendezvous, stop_at) = (config.rendezvous.clone(), config.stop_at);
    tokio::task::spawn_blocking(move || -> Result<RankOutcome, RankError> {
        let collective = connect(rank, world, rendezvous.as_deref(), secret.as_deref(), backend)?;
        // A spec the trainer refuses (depths, teacher, init) is bad input, not a failed job.
        let mut trainer = Trainer::with_collective(spec, model, options, collective).map_err(|e| match e {
            crate::TrainError::Config(_) => usage(e),
            other => failed(other),
        })?;
        let start = trainer.state.step;
        if start > 0 {
            events(RankEvent::Resumed { rank, step: start });
        }
        let total = trainer.plan().total_steps();
        let end = stop_at.unwrap_or(total).min(total);
        let mut interrupted = false;
        while trainer.state.step < end {
            if shutdown.is_cancelled() {
                interrupted = true;
                break;
            }
            // One step at a time so that progress shows (checkpoints as `run` writes them).
            let metrics = trainer.run_until(trainer.state.step + 1).map_err(failed)?;
            if let Some(pause) = slow_step {
                std::thread::sleep(pause);
            }
            for m in metrics {
                events(RankEvent::Step(m));
            }
        }
        let step = trainer.state.step;
        if !interrupted {
            events(RankEvent::Done { rank, step, total_steps: total });
        }
        Ok(RankOutcome { step, total_steps: total, interrupted })
    })
    .await
    .map_err(|e| failed(format!("training panicked: {e}")))?
}

/// The rank's collective: none for one rank, else TCP (or NCCL bootstrapped over it) with the
/// rendezvous's secret.
fn connect(
    rank: u32,
    world: u32,
    rendezvous: Option<&str>,
    secret: Option<&str>,
    backend: Backend,
) -> Result<Box<dyn crate::collective::Collective>, RankError> {
    if world == 1 {
        return Ok(Box::new(crate::collective::Single));
    }
    let Some(addr) = rendezvous else {
        return Err(usage("--world above 1 needs --rendezvous HOST:PORT (rank 0 listens there)"));
    };
    let addr: std::net::SocketAddr =
        addr.parse().map_err(|e| usage(format!("--rendezvous {addr}: {e} (HOST:PORT with an IP address)")))?;
    let secret = secret.unwrap_or_default();
    if secret.is_empty() {
        eprintln!("warning: no collective secret: the collective accepts any peer that reaches {addr}");
    }
    let tcp = crate::collective::TcpCollective::connect(
        rank as usize,
        world as usize,
        addr,
        std::time::Duration::from_secs(300),
        secret.as_bytes(),
    )
    .map_err(failed)?;
    Ok(match backend {
        Backend::Tcp => Box::new(tcp),
        #[cfg(feature = "nccl")]
        Backend::Nccl => Box::new(crate::nccl::NcclCollective::init(tcp).map_err(failed)?),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_scratch_root_is_private_and_never_a_planted_link() {
        let uid = unsafe { libc::getuid() };
        let name = format!("lehr-train-{uid}");
        // fresh: created 0700
        let tmp = tempfile::tempdir().unwrap();
        let root = private_scratch_root_in(tmp.path()).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(private_scratch_root_in(tmp.path()).unwrap(), root, "reused when it is ours");
        // a link planted under the name
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), tmp.path().join(&name)).unwrap();
        assert!(
            matches!(private_scratch_root_in(tmp.path()), Err(RankError::Usage(m)) if m.contains("not a private directory"))
        );
        // a directory open to others
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(&name)).unwrap();
        std::fs::set_permissions(tmp.path().join(&name), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(private_scratch_root_in(tmp.path()), Err(RankError::Usage(_))));
    }
}
