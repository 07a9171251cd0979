//! `lehr bench pipeline` (`lehr bench coordinator` and `lehr bench synth` have files of their
//! own): figures for docs/benchmarks.md.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use lehr_proto::pb;
use lehr_proto::CoordinatorApi;
use tokio_util::sync::CancellationToken;

use super::{start_embedded, CmdResult, Failure, EXIT_OK};
use crate::cli::{BenchCommand, BenchPipelineArgs};
use crate::progress::human_bytes;

pub async fn run(cmd: BenchCommand) -> CmdResult {
    match cmd {
        BenchCommand::Coordinator(a) => super::bench_coordinator::run(a).await,
        BenchCommand::Pipeline(a) => pipeline(a).await,
        BenchCommand::Synth(a) => super::bench_synth::run(a).await,
        BenchCommand::Train(a) => super::train::bench(a).await,
    }
}

async fn pipeline(args: BenchPipelineArgs) -> CmdResult {
    let inputs = if args.inputs.is_empty() { vec!["examples/data/*.jsonl".to_string()] } else { args.inputs.clone() };
    let cwd = std::env::current_dir().context("no current directory")?;
    let files = lehr_pipeline::plan::list_inputs(
        &inputs.iter().map(|p| lehr_pipeline::store::absolutize(p, &cwd)).collect::<Vec<_>>(),
    )
    .await
    .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let out = tempfile::tempdir().context("no temporary directory")?;
    // `--repeat N`: N copies of every input under distinct names, for a longer measurement.
    let (files, inputs) = if args.repeat > 1 {
        let copies = out.path().join("inputs");
        std::fs::create_dir_all(&copies).context("cannot create the copy directory")?;
        for f in &files {
            let name = f.url.rsplit('/').next().unwrap_or("input");
            for i in 0..args.repeat {
                std::fs::copy(&f.url, copies.join(format!("r{i:03}-{name}"))).context("cannot copy an input")?;
            }
        }
        let pattern = copies.join("*").to_string_lossy().to_string();
        let listed = lehr_pipeline::plan::list_inputs(std::slice::from_ref(&pattern))
            .await
            .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
        (listed, vec![pattern])
    } else {
        (files, inputs)
    };
    let input_bytes: u64 = files.iter().map(|f| f.size).sum();
    let spec = format!(
        "version = 1\nname = \"bench\"\n[input]\npaths = {paths:?}\nsplit-size = {split:?}\n[[stage]]\ntype = \"normalize\"\n[[stage]]\ntype = \"min-length\"\nmin-chars = 50\n[output]\npath = {out:?}\nformats = [\"jsonl.zst\"]\n",
        paths = inputs,
        split = args.split_size,
        out = out.path().join("out").to_string_lossy(),
    );
    let shutdown = CancellationToken::new();
    let state = tempfile::tempdir().context("no temporary directory")?;
    let (running, _workers) = start_embedded(state.path().into(), None, args.workers.max(1), &shutdown).await?;
    let api: Arc<dyn CoordinatorApi> = running.api.clone();
    let start = Instant::now();
    let job = api
        .submit_job(pb::SubmitJobRequest {
            kind: lehr_schedules::kinds::CORPUS_JOB.into(),
            name: "bench".into(),
            spec,
            base_dir: cwd.to_string_lossy().to_string(),
        })
        .await?;
    // Poll often (in-process, cheap) so the figure is not quantized by the poll interval.
    let status = loop {
        let s = api
            .get_job(pb::GetJobRequest { job_id: job.job_id.clone(), ..Default::default() })
            .await?
            .job
            .expect("job");
        if s.state().is_terminal() {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    shutdown.cancel();
    if status.state() != pb::JobState::Succeeded {
        return Err(anyhow::anyhow!("bench job {}: {}", lehr_proto::Named::name(status.state()), status.error).into());
    }
    let docs: u64 = status.stages.iter().map(|s| s.docs_in).sum();
    let kept: u64 = status.stages.iter().map(|s| s.docs_out).sum();
    let mbps = input_bytes as f64 / secs / 1e6;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"input_bytes": input_bytes, "docs": docs, "workers": args.workers, "seconds": secs, "mb_per_s": mbps, "mb_per_s_per_worker": mbps / args.workers.max(1) as f64})
        );
    } else {
        println!(
            "pipeline read → normalize → min-length → write jsonl.zst: {} in {docs} docs ({kept} written), {} workers: {secs:.2}s, {mbps:.1} MB/s ({:.1} MB/s per worker)",
            human_bytes(input_bytes as f64),
            args.workers,
            mbps / args.workers.max(1) as f64
        );
    }
    Ok(EXIT_OK)
}
