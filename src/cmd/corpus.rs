//! `lehr corpus init` and `lehr corpus build`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use lehr_pipeline::manifest::{Manifest, MANIFEST_NAME, REJECTS_NAME};
use lehr_pipeline::PipelineSpec;
use lehr_proto::pb::{CancelJobRequest, JobStatus, SubmitJobRequest};
use lehr_proto::CoordinatorApi;
use tokio_util::sync::CancellationToken;

use super::{connect, interrupted, start_embedded, CmdResult, Failure, EXIT_INTERRUPTED, EXIT_JOB_FAILED, EXIT_OK};
use crate::cli::{CorpusBuildArgs, CorpusCommand, CorpusInitArgs, CorpusReportArgs};
use crate::progress::{follow, human_bytes};

pub async fn run(cmd: CorpusCommand) -> CmdResult {
    match cmd {
        CorpusCommand::Init(a) => init(a),
        CorpusCommand::Build(a) => build(a).await,
        CorpusCommand::Report(a) => report_cmd(a).await,
    }
}

fn init(args: CorpusInitArgs) -> CmdResult {
    use lehr_pipeline::starter::{preset_spec, PRESETS};
    if args.list_presets {
        for (name, what) in PRESETS {
            println!("{name:<12} {what}");
        }
        return Ok(EXIT_OK);
    }
    let text = preset_spec(
        &args.preset,
        &args.inputs,
        &args.output,
        args.name.as_deref(),
        args.lid_model.as_deref(),
        &lehr_pipeline::starter::PresetExtras {
            eval_sets: args.eval_sets.clone(),
            tokenizer: args.tokenizer.clone(),
            eos: args.eos.clone(),
            endpoints: args.endpoints.clone(),
            model: args.model.clone(),
        },
    )
    .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    print!("{text}");
    Ok(EXIT_OK)
}

async fn report_cmd(args: CorpusReportArgs) -> CmdResult {
    use lehr_pipeline::store;
    let cwd = std::env::current_dir().context("no current directory")?;
    let output = if store::is_remote(&args.job_or_dir) || std::path::Path::new(&args.job_or_dir).exists() {
        store::absolutize(&args.job_or_dir, &cwd)
    } else if let Some(url) = &args.coordinator {
        let api = connect(url, &args.auth)?;
        let job = api
            .get_job(lehr_proto::pb::GetJobRequest { job_id: args.job_or_dir.clone(), ..Default::default() })
            .await
            .map_err(|e| Failure::usage(anyhow::anyhow!("job {}: {e}", args.job_or_dir)))?
            .job
            .context("coordinator returned no job")?;
        job.output
    } else {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} is neither a directory nor a URL; to look up a job id, pass --coordinator URL",
            args.job_or_dir
        )));
    };
    let out = store::resolve(&output).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let report = lehr_pipeline::report::build(&out, &output).await.map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let (dest, dest_display) = match &args.out {
        Some(d) => {
            let d = store::absolutize(d, &cwd);
            (store::resolve(&d).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?, d)
        }
        None => (
            store::resolve(&format!("{output}/report")).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?,
            format!("{output}/report"),
        ),
    };
    dest.put("report.html", report.to_html().into_bytes()).await.context("writing report.html")?;
    dest.put("report.md", report.to_markdown().into_bytes()).await.context("writing report.md")?;
    dest.put("dropped.svg", report.chart_svg().into_bytes()).await.context("writing dropped.svg")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        print!("{}", report.to_text());
        println!("\nwrote {dest_display}/report.html, report.md and dropped.svg");
    }
    Ok(EXIT_OK)
}

async fn build(args: CorpusBuildArgs) -> CmdResult {
    let spec_text = std::fs::read_to_string(&args.spec)
        .map_err(|e| Failure::usage(anyhow::anyhow!("cannot read {}: {e}", args.spec.display())))?;
    // Validate here first: the same errors the coordinator would give, without a round trip.
    let mut spec = PipelineSpec::from_toml(&spec_text)
        .map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", args.spec.display())))?;
    let spec_text = if args.no_cache {
        for stage in &mut spec.stages {
            if let lehr_pipeline::stages::StageSpec::Synth(c) = stage {
                c.cache = false;
            }
        }
        spec.validate().map_err(|e| Failure::usage(anyhow::anyhow!("{} with --no-cache: {e}", args.spec.display())))?;
        spec.to_toml()
    } else {
        spec_text
    };
    let base_dir = std::env::current_dir().context("no current directory")?;
    let request = SubmitJobRequest {
        kind: lehr_schedules::kinds::CORPUS_JOB.into(),
        name: spec.name.clone().unwrap_or_default(),
        spec: spec_text,
        base_dir: base_dir.to_string_lossy().to_string(),
    };

    let shutdown = CancellationToken::new();
    let mut _tempdir = None;
    let mut embedded = None;
    let api: Arc<dyn CoordinatorApi> = match &args.coordinator {
        Some(url) => connect(url, &args.auth)?,
        None => {
            let state_dir = match &args.state {
                Some(d) => d.clone(),
                None => {
                    let t =
                        tempfile::Builder::new().prefix("lehr-state-").tempdir().context("no temporary directory")?;
                    let p = t.path().to_path_buf();
                    _tempdir = Some(t);
                    p
                }
            };
            let n = args
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2))
                .max(1);
            let (running, workers) = start_embedded(state_dir.into(), None, n, &shutdown).await?;
            let api: Arc<dyn CoordinatorApi> = running.api.clone();
            embedded = Some((running, workers));
            api
        }
    };

    let started = Instant::now();
    let submitted = api.submit_job(request).await?;
    if args.detach {
        if args.json {
            println!("{}", serde_json::json!({"job_id": submitted.job_id, "tasks": submitted.tasks}));
        } else {
            println!("{}", submitted.job_id);
        }
        return Ok(EXIT_OK);
    }
    if !args.json {
        eprintln!("job {} submitted: {} tasks", submitted.job_id, submitted.tasks);
    }
    let job = tokio::select! {
        r = follow(&api, &submitted.job_id, args.json) => r?,
        _ = interrupted() => {
            if embedded.is_some() {
                let _ = api.cancel_job(CancelJobRequest { job_id: submitted.job_id.clone() }).await;
                eprintln!("interrupted: job {} cancelled", submitted.job_id);
            } else {
                eprintln!("interrupted: job {} goes on; follow it with `lehr status {} --wait`", submitted.job_id, submitted.job_id);
            }
            return Ok(EXIT_INTERRUPTED);
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    if let Some((mut running, mut workers)) = embedded.take() {
        shutdown.cancel();
        while workers.join_next().await.is_some() {}
        while running.tasks.join_next().await.is_some() {}
    }
    report(&job, elapsed, args.json).await
}

async fn read_manifest(output: &str) -> Option<Manifest> {
    let loc = lehr_pipeline::store::resolve(output).ok()?;
    let bytes = loc.get(MANIFEST_NAME).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// `dedup.json` of a dedup job's output.
async fn read_dedup_report(output: &str) -> Option<lehr_pipeline::dedup::DedupReport> {
    let loc = lehr_pipeline::store::resolve(output).ok()?;
    let bytes = loc.get(lehr_coordinator::jobs::corpus::DEDUP_REPORT_NAME).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Totals of the token shards a job wrote (`None` without the tokens format).
async fn read_token_totals(output: &str, manifest: Option<&Manifest>) -> Option<serde_json::Value> {
    let suffix = format!(".{}", lehr_pipeline::tokens::META_SUFFIX);
    manifest?.files.iter().find(|f| f.name.ends_with(&suffix))?;
    let loc = lehr_pipeline::store::resolve(output).ok()?;
    let metas = lehr_pipeline::tokens::list_metadata(&loc).await.ok()?;
    let tokens: u64 = metas.iter().map(|m| m.1.tokens).sum();
    let documents: u64 = metas.iter().map(|m| m.1.documents).sum();
    let text_bytes: u64 = metas.iter().map(|m| m.1.text_bytes).sum();
    Some(serde_json::json!({
        "shards": metas.len(),
        "tokens": tokens,
        "documents": documents,
        "text_bytes": text_bytes,
        "bytes_per_token": text_bytes as f64 / (tokens.saturating_sub(documents)).max(1) as f64,
        "dtype": metas.first().map(|m| m.1.dtype),
        "tokenizer_sha256": metas.first().map(|m| m.1.tokenizer.sha256.clone()),
    }))
}

pub async fn report(job: &JobStatus, elapsed: f64, json: bool) -> CmdResult {
    let manifest =
        if job.state() == lehr_proto::pb::JobState::Succeeded { read_manifest(&job.output).await } else { None };
    let dedup =
        if job.state() == lehr_proto::pb::JobState::Succeeded { read_dedup_report(&job.output).await } else { None };
    let tokens = read_token_totals(&job.output, manifest.as_ref()).await;
    if json {
        let v = serde_json::json!({"job": job, "elapsed_s": elapsed, "manifest": manifest, "dedup": dedup, "tokens": tokens});
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        print_summary(job, elapsed, manifest.as_ref());
        if let Some(t) = tokens {
            println!(
                "tokens: {} in {} token shards ({} documents, EOS included; {:.2} text bytes per token, {}): {:.0} tokens/s",
                t["tokens"],
                t["shards"],
                t["documents"],
                t["bytes_per_token"].as_f64().unwrap_or(0.0),
                t["dtype"].as_str().unwrap_or("?"),
                t["tokens"].as_f64().unwrap_or(0.0) / elapsed.max(1e-3)
            );
        }
        if let Some(c) =
            manifest.as_ref().and_then(|m| m.stages.iter().find(|s| s.name == "synth")).map(|s| &s.counters)
        {
            let n = |k: &str| c.get(k).copied().unwrap_or(0);
            let all = |prefix: &str| c.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum::<u64>();
            println!(
                "synth: {} requests, {} sent ({} retries), {} from the request cache, {} failed; {} completion tokens generated ({:.0} tokens/s), {} prompt tokens",
                n("requests"),
                n("requests.sent"),
                all("retries."),
                n("cache.hits"),
                all("failed."),
                n("tokens.completion"),
                n("tokens.completion") as f64 / elapsed.max(1e-3),
                n("tokens.prompt"),
            );
        }
        if let Some(d) = dedup {
            println!(
                "dedup ({}, keep {}): {} clusters of 2 or more holding {} docs; {} duplicates dropped; sizes {:?} (dedup.json)",
                d.method, d.keep, d.clusters, d.docs_in_clusters, d.duplicates, d.size_histogram
            );
        }
    }
    Ok(if job.state() == lehr_proto::pb::JobState::Succeeded { EXIT_OK } else { EXIT_JOB_FAILED })
}

fn print_summary(job: &JobStatus, elapsed: f64, manifest: Option<&Manifest>) {
    println!("job {} ({}) {} in {:.1}s", job.job_id, job.name, lehr_proto::Named::name(job.state()), elapsed);
    if !job.error.is_empty() {
        println!("error: {}", job.error);
    }
    let Some(m) = manifest else { return };
    let t = &m.totals;
    println!(
        "read {} docs ({} of text) from {} input files in {} shards: {:.0} docs/s, {}/s",
        t.docs_read,
        human_bytes(t.text_bytes_read as f64),
        m.inputs.len(),
        t.shards,
        t.docs_read as f64 / elapsed.max(1e-3),
        human_bytes(t.text_bytes_read as f64 / elapsed.max(1e-3)),
    );
    println!("{:<24} {:>10} {:>10} {:>10}  dropped by rule", "stage", "in", "kept", "dropped");
    for s in &m.stages {
        let rules: Vec<String> = s.dropped_by_rule.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let label = if s.label.is_empty() { &s.name } else { &s.label };
        println!("{:<24} {:>10} {:>10} {:>10}  {}", label, s.docs_in, s.kept, s.dropped, rules.join(", "));
    }
    println!(
        "wrote {} docs in {} files ({}) to {}",
        t.docs_written,
        t.files,
        human_bytes(t.file_bytes as f64),
        job.output
    );
    if t.bad_records > 0 {
        println!(
            "{} bad records skipped; each with file, line and reason in {}/{REJECTS_NAME}",
            t.bad_records, job.output
        );
    }
    for s in &m.skipped_files {
        println!("skipped unreadable file {}: {}", s.file, s.reason);
    }
    for w in &m.warnings {
        println!("warning: {w}");
    }
}
