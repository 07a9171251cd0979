//! One training rank as data: the [`RankConfig`] a rank runs from (built by `lehr train run`
//! from its flags, or written by a train worker to a private file for the rank process it
//! starts), and the [`RankEvent`]s a rank reports, one JSON object per line on stdout.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::job::TrainJobOptions;

/// Everything one rank needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RankConfig {
    /// The run spec, as TOML text.
    pub run: String,
    /// Where the run spec came from, for messages.
    #[serde(default)]
    pub spec_name: String,
    /// Token shards' root: an absolute path or an object-store URL.
    pub data: String,
    /// Model preset.
    pub model: String,
    /// Checkpoints and metrics: an absolute path or an object-store URL.
    pub out: String,
    pub world: u32,
    pub rank: u32,
    /// HOST:PORT where rank 0 listens for the others (needed when `world` > 1).
    #[serde(default)]
    pub rendezvous: Option<String>,
    /// Stop after this many global steps (for tests and staged runs).
    #[serde(default)]
    pub stop_at: Option<u64>,
    /// Local scratch directory for a URL `out` (default: private, under the temporary directory).
    #[serde(default)]
    pub scratch: Option<PathBuf>,
    #[serde(default)]
    pub options: TrainJobOptions,
}

impl RankConfig {
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a rank config: {e}"))
    }
}

/// One line of `metrics.jsonl`, and of a rank's step events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub stage: String,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: u64,
    pub tokens_per_s: f64,
    /// Training FLOPs per token: 6·(non-embedding parameters + the output projection) plus
    /// attention's 12·layers·hidden·sequence (PaLM's estimate).
    pub flops_per_token: f64,
    /// Model FLOPs utilization, when the device's peak is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    pub tokens_by_source: BTreeMap<String, u64>,
    /// With `[distill]` in this stage: the KL to the teacher per token at the temperature
    /// (the KD part; `loss` stays the hard-label cross-entropy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kd_loss: Option<f64>,
}

/// What a rank reports while it runs: `{"event": "step", ...metrics}` per step, then one
/// `{"event": "done", ...}`. A train worker reads them from its rank process's stdout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RankEvent {
    /// The run picks up from a checkpoint.
    Resumed {
        rank: u32,
        step: u64,
    },
    Step(StepMetrics),
    /// The rank ran to `step` (the run's end, or `stop_at`) and wrote its checkpoint.
    Done {
        rank: u32,
        step: u64,
        total_steps: u64,
    },
}

impl RankEvent {
    /// A line of the rank's output; `None` for lines that are not events (a library's print).
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line).ok()
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a rank event serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_tagged_lines() {
        let step = RankEvent::Step(StepMetrics {
            step: 3,
            stage: "s".into(),
            loss: 2.5,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens: 512,
            tokens_per_s: 100.0,
            flops_per_token: 1.0,
            mfu: None,
            tokens_by_source: BTreeMap::new(),
            kd_loss: Some(0.25),
        });
        let line = step.to_line();
        assert!(line.starts_with(r#"{"event":"step","step":3"#), "{line}");
        assert_eq!(RankEvent::parse(&line), Some(step));
        let done = RankEvent::Done { rank: 1, step: 9, total_steps: 9 };
        assert_eq!(done.to_line(), r#"{"event":"done","rank":1,"step":9,"total_steps":9}"#);
        assert_eq!(RankEvent::parse(&done.to_line()), Some(done));
        assert_eq!(RankEvent::parse("loading weights..."), None);
        let e = RankConfig::from_json(
            r#"{"run": "", "data": "d", "model": "tiny", "out": "o", "world": 1, "rank": 0, "wrold": 2}"#,
        )
        .unwrap_err();
        assert!(e.contains("wrold"), "{e}");
    }
}
