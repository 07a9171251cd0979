//! Benchmark tasks as data, scored the way lm-evaluation-harness scores them, in pure Rust (no
//! tch): a task file (`task.rs`) turns dataset rows into multiple-choice requests
//! (`request.rs`: the context/continuation split and left truncation lm-eval uses); the model
//! runtime (lehr-train's `score.rs`) returns each request's log-likelihood; `metrics.rs` turns
//! those into `acc`, `acc_norm` and their standard errors, and `results.rs` writes them in
//! lm-eval's results JSON layout so the tools that read lm-eval output read ours.

pub mod fewshot;
pub mod job;
pub mod metrics;
pub mod request;
pub mod results;
pub mod suite;
pub mod task;
pub mod template;

pub use task::{Doc, Input, Metric, TaskDef, TaskError};
