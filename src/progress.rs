//! Following a job: a progress bar (shards done/total, docs/s, MB/s) on a terminal, quiet
//! otherwise, until the job ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lehr_proto::pb::{GetJobRequest, JobState, JobStatus};
use lehr_proto::{ApiError, CoordinatorApi, Named};

/// Documents and text bytes read so far (committed shards plus running ones).
pub fn processed(job: &JobStatus) -> (u64, u64) {
    let docs: u64 = job.stages.iter().map(|s| s.docs_in).sum::<u64>() + job.running_docs;
    let bytes: u64 = job.stages.iter().map(|s| s.bytes_in).sum::<u64>() + job.running_bytes;
    (docs, bytes)
}

pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Polls the job until it ends; draws a bar unless `quiet`. Transient errors (coordinator
/// restarting) are waited out.
pub async fn follow(api: &Arc<dyn CoordinatorApi>, job_id: &str, quiet: bool) -> Result<JobStatus, ApiError> {
    let bar = counting_bar(quiet, "tasks");
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut unavailable_since: Option<Instant> = None;
    loop {
        let job = match api.get_job(GetJobRequest { job_id: job_id.to_string(), ..Default::default() }).await {
            Ok(r) => {
                unavailable_since = None;
                r.job.expect("job status")
            }
            Err(e) if e.is_transient() => {
                let since = *unavailable_since.get_or_insert_with(Instant::now);
                bar.set_message(format!("coordinator unreachable for {}s, waiting", since.elapsed().as_secs()));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let total: u32 = job.stages.iter().map(|s| s.tasks_total).sum();
        let done: u32 = job.stages.iter().map(|s| s.tasks_committed).sum();
        let (docs, bytes) = processed(&job);
        let secs = start.elapsed().as_secs_f64().max(1e-3);
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        // A multi-stage job (dedup: signatures → buckets → clusters → shards) names the stage
        // that is running.
        let state = match job.stages.iter().find(|s| s.tasks_committed < s.tasks_total) {
            Some(st) if job.stages.len() > 1 && job.state() == JobState::Running => {
                format!("{}: {}", job.state().name(), st.name)
            }
            _ => job.state().name().to_string(),
        };
        // A synth stage: requests done of those known (running attempts and committed tasks)
        // and generated tokens/s.
        let synth = job.synth.as_ref().map(|s| {
            format!(
                "  synth {}/{} requests  {:.0} tok/s",
                s.requests_done,
                s.requests_total,
                s.completion_tokens as f64 / secs
            )
        });
        bar.set_message(format!(
            "{:.0} docs/s  {}/s{}  [{state}]",
            docs as f64 / secs,
            human_bytes(bytes as f64 / secs),
            synth.as_deref().unwrap_or("")
        ));
        if job.state().is_terminal() {
            bar.finish_and_clear();
            return Ok(job);
        }
        if bar.is_hidden() && !quiet && last_report.elapsed() > Duration::from_secs(10) {
            let synth =
                job.synth.as_ref().map(|s| format!(", {}/{} synth requests", s.requests_done, s.requests_total));
            eprintln!("{}: {done}/{total} tasks, {docs} docs{} [{state}]", job.job_id, synth.unwrap_or_default());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A simple counter bar for local work (hidden with `--json` or off a terminal).
pub struct Progress(ProgressBar);

impl Progress {
    pub fn new(quiet: bool, total: u64, unit: &str) -> Self {
        let bar = if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(total)
        };
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} {{per_sec}}"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        );
        Progress(bar)
    }
    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar counting `unit`s (tasks, tensors), hidden when `quiet` or stderr is not a terminal.
pub fn counting_bar(quiet: bool, unit: &str) -> ProgressBar {
    let bar = if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} ({{per_sec}})  {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
