//! The `corpus` job kind: a pipeline spec (TOML) over input files. One stage of shard tasks
//! (`corpus.shard`), each reading a file or a byte range and writing `part-NNNNN.*` under its
//! attempt prefix; on commit the coordinator copies the winning attempt's files to their final
//! names; when all are in, it writes `rejects.jsonl`, `spec.toml` and, last, `manifest.json`.
//!
//! With `[dedup]` the job has four stages (signatures → buckets → clusters → shards, see
//! `lehr_pipeline::dedup`); the intermediate files live under `_lehr/dedup/<job>/` in the
//! output directory, are promoted like outputs, and are removed at finalize, which also writes
//! `dedup.json`.

use std::path::Path;

use async_trait::async_trait;
use lehr_pipeline::dedup::{
    cluster_file, task_attempt_prefix, BucketTask, ClusterTask, DedupApply, PhaseResult, SignatureTask,
    BUCKETS_TASK_KIND, CLUSTERS_TASK_KIND, SIGNATURES_TASK_KIND,
};
use lehr_pipeline::manifest::{self, MANIFEST_NAME, REJECTS_NAME};
use lehr_pipeline::plan::{self, InputFile};
use lehr_pipeline::runner::StageCounts;
use lehr_pipeline::spec::PipelineSpec;
use lehr_pipeline::store;
use lehr_pipeline::task::{ShardResult, ShardTask, SHARD_TASK_KIND};
use lehr_pipeline::write::OutputFile;

use super::{JobError, JobKind, PlannedJob};
use crate::scheduler::{Job, NewTask, StageDef, Task, TaskStats};

pub struct CorpusKind;

fn storage(e: lehr_pipeline::PipelineError) -> JobError {
    JobError::Storage(e.to_string())
}

/// Parses a spec, makes its paths absolute against `base_dir`, and builds every stage once (a
/// missing model file or a bad pattern is the submitter's error). Blocking (models load): call
/// it off the async threads, at planning only.
pub fn resolve_spec(spec: &str, base_dir: &str) -> Result<PipelineSpec, JobError> {
    let spec = resolve_paths(spec, base_dir)?;
    for (i, stage) in spec.stages.iter().enumerate() {
        stage.build().map_err(|e| JobError::Invalid(format!("stage[{i}] ({}): {e}", stage.name())))?;
    }
    Ok(spec)
}

/// [`resolve_spec`] without building the stages: what finalizing needs (a model file that is
/// gone from the coordinator's host by then must not fail a finished job).
pub fn resolve_paths(spec: &str, base_dir: &str) -> Result<PipelineSpec, JobError> {
    let mut spec = PipelineSpec::from_toml(spec).map_err(|e| JobError::Invalid(e.to_string()))?;
    let base = Path::new(base_dir);
    for p in spec.input.paths.iter_mut() {
        *p = store::absolutize(p, base);
    }
    spec.output.path = store::absolutize(&spec.output.path, base);
    if let Some(t) = &mut spec.output.tokenize {
        t.tokenizer = store::absolutize(&t.tokenizer, base);
        if t.source.is_none() {
            t.source = Some(spec.name.clone().unwrap_or_else(|| "corpus".into()));
        }
    }
    for stage in spec.stages.iter_mut() {
        stage.resolve_paths(base);
    }
    Ok(spec)
}

#[async_trait]
impl JobKind for CorpusKind {
    fn name(&self) -> &'static str {
        lehr_schedules::kinds::CORPUS_JOB
    }

    fn output(&self, spec: &str, base_dir: &str) -> Result<String, JobError> {
        // the same resolution planning does, so the claimed output is the planned one
        Ok(resolve_paths(spec, base_dir)?.output.path)
    }

    async fn plan(&self, job_id: &str, name: &str, spec_text: &str, base_dir: &str) -> Result<PlannedJob, JobError> {
        let (text, base) = (spec_text.to_string(), base_dir.to_string());
        let spec = tokio::task::spawn_blocking(move || resolve_spec(&text, &base))
            .await
            .map_err(|e| JobError::Storage(format!("planning stopped: {e}")))??;
        let out = store::resolve(&spec.output.path).map_err(|e| JobError::Invalid(e.to_string()))?;
        let finished = out.exists(MANIFEST_NAME).await.map_err(storage)?;
        if !spec.output.overwrite && finished {
            return Err(JobError::Invalid(format!(
                "{} already holds a finished job ({MANIFEST_NAME}); choose another output.path or set output.overwrite = true",
                spec.output.path
            )));
        }
        let files = plan::list_inputs(&spec.input.paths).await.map_err(|e| JobError::Invalid(e.to_string()))?;
        let shards = plan::split(&files, spec.input.split_size.0);
        let name =
            if name.is_empty() { spec.name.clone().unwrap_or_else(|| "corpus".into()) } else { name.to_string() };
        if shards.len() > u32::MAX as usize / 2 {
            return Err(JobError::Invalid("too many shards; raise input.split-size".into()));
        }
        if finished {
            // The spec is valid and the output is claimed: remove the previous run.
            remove_previous_run(&out).await?;
        }
        let Some(dedup) = spec.dedup.clone() else {
            let tasks = shard_tasks(&spec, &shards, 0, None, "");
            return Ok(PlannedJob {
                name,
                output: spec.output.path.clone(),
                stages: vec![StageDef::new("shards", vec![])],
                tasks,
            });
        };
        let work = format!("_lehr/dedup/{job_id}");
        let input_bytes: u64 = files.iter().map(|f| f.size).sum();
        let partitions = dedup.partitions_for(input_bytes);
        let bands = dedup.band_count();
        let n_shards = shards.len() as u32;
        let mut tasks = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            let task = SignatureTask {
                task_index: i as u32,
                shard: shard.clone(),
                input: spec.input.for_task(),
                stages: spec.stages.clone(),
                output: spec.output.clone(),
                dedup: dedup.clone(),
                partitions,
                work: work.clone(),
            };
            tasks.push(NewTask {
                stage: 0,
                index: i as u32,
                kind: SIGNATURES_TASK_KIND.into(),
                payload: serde_json::to_string(&task).expect("task serializes"),
                shard: shard.describe(),
            });
        }
        for band in 0..bands {
            for partition in 0..partitions {
                let index = band * partitions + partition;
                let task = BucketTask {
                    task_index: index,
                    band,
                    partition,
                    shards: n_shards,
                    output_path: spec.output.path.clone(),
                    work: work.clone(),
                };
                tasks.push(NewTask {
                    stage: 1,
                    index,
                    kind: BUCKETS_TASK_KIND.into(),
                    payload: serde_json::to_string(&task).expect("task serializes"),
                    shard: format!("band {band} partition {partition} of {n_shards} shards"),
                });
            }
        }
        let cluster = ClusterTask {
            task_index: 0,
            bands,
            partitions,
            shards: n_shards,
            keep: dedup.keep,
            method: dedup.method,
            output_path: spec.output.path.clone(),
            work: work.clone(),
        };
        tasks.push(NewTask {
            stage: 2,
            index: 0,
            kind: CLUSTERS_TASK_KIND.into(),
            payload: serde_json::to_string(&cluster).expect("task serializes"),
            shard: format!("links of {} bucket tasks", bands * partitions),
        });
        tasks.extend(shard_tasks(&spec, &shards, 3, Some(&dedup), &work));
        Ok(PlannedJob {
            name,
            output: spec.output.path.clone(),
            stages: vec![
                StageDef::new("signatures", vec![]),
                StageDef::new("buckets", vec![0]),
                StageDef::new("clusters", vec![1]),
                StageDef::new("shards", vec![2]),
            ],
            tasks,
        })
    }

    fn stats(&self, task: &Task, result: &str) -> Result<TaskStats, String> {
        let malformed = |e: serde_json::Error| format!("malformed {} result: {e}", task.kind);
        let (index, stats) = if task.kind == SHARD_TASK_KIND {
            let r: ShardResult = serde_json::from_str(result).map_err(malformed)?;
            let (synth_requests, synth_tokens) = synth_spend(&r.stages);
            let stats = TaskStats {
                docs_in: r.read.docs,
                docs_out: r.docs_written,
                bytes_in: r.read.bytes,
                bad_records: r.read.bad_records,
                synth_requests,
                synth_tokens,
            };
            (r.task_index, stats)
        } else {
            let r: PhaseResult = serde_json::from_str(result).map_err(malformed)?;
            let (synth_requests, synth_tokens) = synth_spend(&r.stages);
            let stats = TaskStats {
                docs_in: r.docs_in,
                docs_out: r.docs_out,
                bytes_in: r.bytes_in,
                bad_records: r.bad_records,
                synth_requests,
                synth_tokens,
            };
            (r.task_index, stats)
        };
        if index != task.index {
            return Err(format!("result of task index {index} reported for index {}", task.index));
        }
        Ok(stats)
    }

    async fn promote(&self, job: &Job, task: &Task) -> Result<(), JobError> {
        let outputs = committed_outputs(task)?;
        let out = store::resolve(&job.output).map_err(storage)?;
        for f in &outputs {
            if let Err(e) = out.copy(&f.attempt_key, &f.name).await {
                // A crash after an earlier promotion deleted the attempt's files but before it
                // was recorded: the final file is already there, with the bytes committed.
                if !already_promoted(&out, f).await? {
                    return Err(JobError::Storage(format!(
                        "cannot promote {} to {}: {e}; and the final file is missing or is not the one committed \
                         (sha256 {})",
                        f.attempt_key, f.name, f.sha256
                    )));
                }
            }
        }
        if let Some(attempt) = task.committed_attempt {
            out.delete_prefix(&task_attempt_prefix(&task.kind, &job.id, task.index, attempt)).await.map_err(storage)?;
        }
        Ok(())
    }

    async fn discard(&self, job: &Job, task: &Task, attempt: u32) -> Result<(), JobError> {
        let out = store::resolve(&job.output).map_err(storage)?;
        out.delete_prefix(&task_attempt_prefix(&task.kind, &job.id, task.index, attempt)).await.map_err(storage)?;
        Ok(())
    }

    async fn sweep(&self, job: &Job) -> Result<(), JobError> {
        let out = store::resolve(&job.output).map_err(storage)?;
        out.delete_prefix(&format!("_lehr/attempts/{}", job.id)).await.map_err(storage)?;
        out.delete_prefix(&format!("_lehr/dedup/{}", job.id)).await.map_err(storage)?;
        remove_empty_work_dirs(&out);
        Ok(())
    }

    async fn finalize(&self, job: &Job, tasks: &[Task]) -> Result<(), JobError> {
        let spec = resolve_paths(&job.spec, &job.base_dir)?;
        let mut results = Vec::with_capacity(tasks.len());
        let mut dedup_report = None;
        // A dedup job runs the stages twice; a synth stage spends in the first pass (signatures)
        // and is answered by its request cache in the second, so its counters are the first's.
        let mut synth_spent: Option<StageCounts> = None;
        for t in tasks {
            if t.kind == CLUSTERS_TASK_KIND || t.kind == SIGNATURES_TASK_KIND {
                let r: PhaseResult = serde_json::from_str(&t.result).map_err(|e| JobError::Storage(e.to_string()))?;
                if t.kind == CLUSTERS_TASK_KIND {
                    dedup_report = r.report;
                } else if let Some(s) = synth_stage(&r.stages) {
                    match &mut synth_spent {
                        Some(sum) => sum.merge(s),
                        None => synth_spent = Some(s.clone()),
                    }
                }
            }
            if t.kind != SHARD_TASK_KIND {
                continue;
            }
            results.push(serde_json::from_str::<ShardResult>(&t.result).map_err(|e| JobError::Storage(e.to_string()))?);
        }
        let mut inputs: Vec<InputFile> = results.iter().map(|r| r.shard.file.clone()).collect();
        inputs.dedup_by(|a, b| a.url == b.url);
        let (mut manifest, rejects) = manifest::build(spec.name.clone(), inputs, results);
        if let (Some(spent), Some(stage)) = (synth_spent, manifest.stages.iter_mut().find(|s| s.name == "synth")) {
            stage.counters = spent.counters;
        }
        let out = store::resolve(&job.output).map_err(storage)?;
        out.put(REJECTS_NAME, manifest::rejects_to_bytes(&rejects)).await.map_err(storage)?;
        out.put("spec.toml", spec.to_toml().into_bytes()).await.map_err(storage)?;
        if let Some(report) = dedup_report {
            let bytes = serde_json::to_vec_pretty(&report).expect("report serializes");
            out.put(DEDUP_REPORT_NAME, bytes).await.map_err(storage)?;
            out.delete_prefix(&format!("_lehr/dedup/{}", job.id)).await.map_err(storage)?;
        }
        // The manifest goes last: its presence means the directory is complete.
        out.put(MANIFEST_NAME, manifest::to_bytes(&manifest)).await.map_err(storage)?;
        out.delete_prefix(&format!("_lehr/attempts/{}", job.id)).await.map_err(storage)?;
        remove_empty_work_dirs(&out);
        // A coordinator killed in the middle of a promotion's copy left a staging file beside it.
        let job_files = [MANIFEST_NAME, REJECTS_NAME, "spec.toml", DEDUP_REPORT_NAME];
        let leftovers = out.remove_staging_leftovers(manifest.files.iter().map(|f| f.name.as_str()).chain(job_files));
        if leftovers > 0 {
            tracing::info!(job_id = %job.id, files = leftovers, "removed staging files of interrupted writes");
        }
        Ok(())
    }
}

/// The synth stage's counts among a shard's stage counts.
fn synth_stage(stages: &[StageCounts]) -> Option<&StageCounts> {
    stages.iter().find(|s| s.name == "synth")
}

/// A synth stage's requests and generated completion tokens in a shard's stage counts.
fn synth_spend(stages: &[StageCounts]) -> (u64, u64) {
    let synth = synth_stage(stages);
    let count = |k: &str| synth.and_then(|s| s.counters.get(k)).copied().unwrap_or(0);
    (count("requests"), count("tokens.completion"))
}

/// Removes `_lehr/attempts`, `_lehr/dedup` and `_lehr` of a local output when nothing else is
/// left in them.
fn remove_empty_work_dirs(out: &store::Location) {
    if let Some(local) = &out.local {
        let _ = std::fs::remove_dir(local.join("_lehr/attempts"));
        let _ = std::fs::remove_dir(local.join("_lehr/dedup"));
        let _ = std::fs::remove_dir(local.join("_lehr"));
    }
}

/// `output.overwrite`: removes the previous finished run, its manifest first (so a directory
/// half replaced never looks complete), then every file it lists, then the job-level files.
/// Files the manifest does not name (a user's notes, `report/`) stay.
async fn remove_previous_run(out: &store::Location) -> Result<(), JobError> {
    let Some(bytes) = out.get(MANIFEST_NAME).await.map_err(storage)? else { return Ok(()) };
    let previous: manifest::Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        JobError::Invalid(format!(
            "{} is not a lehr manifest ({e}); remove the directory's contents yourself before overwriting",
            out.child_url(MANIFEST_NAME)
        ))
    })?;
    out.delete(MANIFEST_NAME).await.map_err(storage)?;
    for f in &previous.files {
        out.delete(&f.name).await.map_err(storage)?;
    }
    for name in [REJECTS_NAME, "spec.toml", DEDUP_REPORT_NAME] {
        out.delete(name).await.map_err(storage)?;
    }
    Ok(())
}

/// Whether the final file of `f` holds exactly the committed bytes (same size and sha256; the
/// size alone for results recorded without a hash).
async fn already_promoted(out: &store::Location, f: &OutputFile) -> Result<bool, JobError> {
    if out.size(&f.name).await.map_err(storage)? != Some(f.bytes) {
        return Ok(false);
    }
    if f.sha256.is_empty() {
        return Ok(true);
    }
    Ok(out.sha256(&f.name).await.map_err(storage)?.as_deref() == Some(f.sha256.as_str()))
}

/// The dedup report a dedup job writes next to its manifest.
pub const DEDUP_REPORT_NAME: &str = "dedup.json";

/// Shard tasks of stage `stage`; with `dedup`, each applies its shard's cluster file.
fn shard_tasks(
    spec: &PipelineSpec,
    shards: &[plan::Shard],
    stage: usize,
    dedup: Option<&lehr_pipeline::dedup::DedupSpec>,
    work: &str,
) -> Vec<NewTask> {
    shards
        .iter()
        .enumerate()
        .map(|(i, shard)| {
            let task = ShardTask {
                task_index: i as u32,
                shard: shard.clone(),
                input: spec.input.for_task(),
                stages: spec.stages.clone(),
                output: spec.output.clone(),
                dedup: dedup.map(|d| DedupApply {
                    method: d.method,
                    clusters: cluster_file(work, i as u32),
                    annotate: d.annotate,
                }),
            };
            NewTask {
                stage,
                index: i as u32,
                kind: SHARD_TASK_KIND.into(),
                payload: serde_json::to_string(&task).expect("task serializes"),
                shard: shard.describe(),
            }
        })
        .collect()
}

/// The files a committed task wrote, whatever its kind.
pub(crate) fn committed_outputs(task: &Task) -> Result<Vec<OutputFile>, JobError> {
    let parse = |e: serde_json::Error| JobError::Storage(format!("task {} result: {e}", task.id));
    if task.kind == SHARD_TASK_KIND {
        Ok(serde_json::from_str::<ShardResult>(&task.result).map_err(parse)?.outputs)
    } else {
        Ok(serde_json::from_str::<PhaseResult>(&task.result).map_err(parse)?.outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{JobState, TaskState};
    use lehr_pipeline::write::sha256_hex;

    fn job(out: &Path) -> Job {
        Job {
            id: "job-1".into(),
            name: "t".into(),
            kind: "corpus".into(),
            spec: String::new(),
            base_dir: String::new(),
            output: out.display().to_string(),
            state: JobState::Running,
            stages: vec![StageDef::new("signatures", vec![])],
            error: String::new(),
            created_ms: 0,
            finished_ms: 0,
            seq: 0,
            swept: false,
        }
    }

    fn task(result: &PhaseResult) -> Task {
        Task {
            id: 1,
            job_id: "job-1".into(),
            stage: 0,
            index: 0,
            kind: SIGNATURES_TASK_KIND.into(),
            payload: String::new(),
            shard: String::new(),
            state: TaskState::Committed,
            attempts: 1,
            worker_id: "w1".into(),
            lease: None,
            committed_attempt: Some(1),
            result: serde_json::to_string(result).unwrap(),
            stats: TaskStats::default(),
            promoted: false,
            last_error: String::new(),
            attempt_log: vec![],
            progress: Default::default(),
        }
    }

    #[tokio::test]
    async fn promotion_after_a_crash_checks_the_committed_hash_not_just_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let committed = b"the committed bytes\n".to_vec();
        let result = PhaseResult {
            task_index: 0,
            outputs: vec![OutputFile {
                name: "part-00000.bin".into(),
                attempt_key: "_lehr/attempts/job-1/t00000-a1/part-00000.bin".into(),
                docs: 1,
                bytes: committed.len() as u64,
                sha256: sha256_hex(&committed),
            }],
            docs_in: 1,
            docs_out: 1,
            bytes_in: 1,
            bad_records: 0,
            counters: Default::default(),
            read: None,
            stages: vec![],
            report: None,
        };
        let (job, task) = (job(dir.path()), task(&result));
        // The attempt's file is gone (an earlier promotion moved it, then the coordinator died)
        // and the final name holds other bytes of the same size: that is not a promoted file.
        let forged: Vec<u8> = committed.iter().map(|b| b.to_ascii_uppercase()).collect();
        std::fs::write(dir.path().join("part-00000.bin"), &forged).unwrap();
        let e = CorpusKind.promote(&job, &task).await.unwrap_err().to_string();
        assert!(e.contains("not the one committed"), "{e}");
        std::fs::write(dir.path().join("part-00000.bin"), &committed).unwrap();
        CorpusKind.promote(&job, &task).await.unwrap();
    }

    #[tokio::test]
    async fn task_payloads_name_their_own_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let n = 40;
        for i in 0..n {
            std::fs::write(dir.path().join(format!("in-{i:03}.jsonl")), format!("{{\"text\": \"doc {i}\"}}\n"))
                .unwrap();
        }
        let spec = format!(
            "version = 1\n[input]\npaths = [{}]\n[output]\npath = \"{}\"\n",
            (0..n)
                .map(|i| format!("\"{}\"", dir.path().join(format!("in-{i:03}.jsonl")).display()))
                .collect::<Vec<_>>()
                .join(", "),
            dir.path().join("out").display()
        );
        let planned = CorpusKind.plan("job-000001-abcd", "t", &spec, "/").await.unwrap();
        assert_eq!(planned.tasks.len(), n);
        for t in &planned.tasks {
            let mentioned = (0..n).filter(|i| t.payload.contains(&format!("in-{i:03}.jsonl"))).count();
            assert_eq!(mentioned, 1, "a payload names its own shard's file and no other: {}", t.payload);
            let task: ShardTask = serde_json::from_str(&t.payload).unwrap();
            assert!(task.input.paths.is_empty());
        }
    }

    #[tokio::test]
    async fn sweep_deletes_the_jobs_work_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in [
            "_lehr/attempts/job-1/t00000-a1/part-00000.jsonl.zst",
            "_lehr/attempts/job-1/sig-t00001-a2/x.bin",
            "_lehr/dedup/job-1/clusters/s00000.bin",
            "_lehr/attempts/job-2/t00000-a1/part-00000.jsonl.zst",
            "part-00000.jsonl.zst",
        ] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), b"x").unwrap();
        }
        CorpusKind.sweep(&job(root)).await.unwrap();
        assert!(!root.join("_lehr/attempts/job-1").exists() && !root.join("_lehr/dedup/job-1").exists());
        assert!(root.join("_lehr/attempts/job-2/t00000-a1/part-00000.jsonl.zst").exists(), "another job's files stay");
        assert!(root.join("part-00000.jsonl.zst").exists(), "final files stay");
        // once nothing is left, the work directories go too
        std::fs::remove_dir_all(root.join("_lehr/attempts/job-2")).unwrap();
        CorpusKind.sweep(&job(root)).await.unwrap();
        assert!(!root.join("_lehr").exists());
    }

    #[tokio::test]
    async fn finalize_never_loads_the_stages_models() {
        // The job ran with a fastText model that is gone from the coordinator's host by the
        // time the job finishes: finalizing writes the manifest without loading it.
        let dir = tempfile::tempdir().unwrap();
        let spec = format!(
            "version = 1\n[input]\npaths = [\"in.jsonl\"]\n[[stage]]\ntype = \"lang-id\"\nbackend = \"fasttext\"\n\
             model = \"/nonexistent/lid.176.ftz\"\nkeep = [\"en\"]\n[output]\npath = \"{}\"\n",
            dir.path().display()
        );
        assert!(resolve_spec(&spec, "/").is_err(), "planning does load it (and would refuse)");
        let mut j = job(dir.path());
        j.spec = spec;
        j.base_dir = "/".into();
        let result = ShardResult {
            task_index: 0,
            shard: plan::Shard {
                file: InputFile { url: "/in.jsonl".into(), size: 10, format: plan::InputFormat::Jsonl },
                file_index: 0,
                start: 0,
                end: 10,
                range_index: 0,
            },
            read: Default::default(),
            stages: vec![],
            outputs: vec![],
            docs_written: 0,
            skipped_file: None,
        };
        let mut t = task(&PhaseResult::default());
        t.kind = SHARD_TASK_KIND.into();
        t.result = serde_json::to_string(&result).unwrap();
        CorpusKind.finalize(&j, &[t]).await.unwrap();
        assert!(dir.path().join(MANIFEST_NAME).is_file());
    }
}
