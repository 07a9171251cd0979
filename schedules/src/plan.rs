//! A validated spec resolved into numbers: per stage its sequence counts per source, steps,
//! where each source's token stream stands before the stage, epochs used (when the available
//! data is known), and the learning rate of every global step.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::spec::{spec_err, LrPhase, RunSpec, SpecError, StageLr};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: Option<String>,
    pub seed: u64,
    pub peak_lr: f64,
    pub stages: Vec<StagePlan>,
    /// Things that are allowed but probably not meant (short last steps, LR jumps, ...).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    pub index: usize,
    pub name: String,
    pub sequence_length: u32,
    /// Sequences per optimizer step (global, all ranks).
    pub batch_sequences: u64,
    /// Global step of the stage's first step.
    pub first_step: u64,
    pub steps: u64,
    /// Sum of the budgets.
    pub planned_tokens: u64,
    /// Sum of the sources' sequences × sequence length.
    pub tokens: u64,
    pub sequences: u64,
    pub lr: StageLr,
    /// For decay stages: first global step and length of the decay they belong to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay_run: Option<(u64, u64)>,
    /// Every source with a budget in this stage, by name.
    pub sources: Vec<SourcePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourcePlan {
    pub name: String,
    pub category: Option<String>,
    /// The spec's budget in tokens.
    pub planned_tokens: u64,
    /// `round(planned / sequence length)`: the mixer's sequences.
    pub sequences: u64,
    /// `sequences × sequence length`: within half a sequence of the budget.
    pub tokens: u64,
    /// Position in the source's token stream (across epochs) before this stage.
    pub stream_start: u64,
    /// Tokens of the source on disk, when known.
    pub available: Option<u64>,
    /// Passes over the source at the end of this stage, all stages so far included.
    pub epochs_after: Option<f64>,
}

impl StagePlan {
    pub fn share(&self, source: &SourcePlan) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            source.tokens as f64 / self.tokens as f64
        }
    }
}

impl Plan {
    /// Resolves `spec` (validated first). With `available` (tokens per source), budgets that
    /// need more passes than a source's `max-repetition` allows are errors.
    pub fn new(spec: &RunSpec, available: Option<&BTreeMap<String, u64>>) -> Result<Plan, SpecError> {
        spec.validate()?;
        let mut stages = Vec::with_capacity(spec.stages.len());
        let mut warnings = Vec::new();
        let mut stream: BTreeMap<&str, u64> = BTreeMap::new();
        let mut step = 0u64;
        let mut short = Vec::new();
        for (index, st) in spec.stages.iter().enumerate() {
            let seq = spec.sequence_length(st);
            let batch_sequences = spec.global_batch_tokens(st) / seq as u64;
            let mut sources = Vec::new();
            for (name, budget) in spec.budgets(st) {
                let sequences = (budget + seq as u64 / 2) / seq as u64;
                let tokens = sequences * seq as u64;
                let start = stream.entry(spec.sources.get_key_value(&name).expect("validated").0).or_default();
                let stream_start = *start;
                *start += tokens;
                let avail = available.and_then(|a| a.get(&name).copied());
                let src = &spec.sources[&name];
                let epochs_after = match avail {
                    Some(0) if tokens > 0 => {
                        return Err(spec_err(
                            format!("stage[{index}] {:?}.budgets.{name:?}", st.name),
                            "the source has no tokens in the data directory",
                        ))
                    }
                    Some(a) if a > 0 => Some((stream_start + tokens) as f64 / a as f64),
                    _ => None,
                };
                if let (Some(e), Some(a)) = (epochs_after, avail) {
                    // The last sequence also reads one token past its end (the last label).
                    let needed = stream_start + tokens + u64::from(tokens > 0);
                    if needed as f64 > src.max_repetition * a as f64 {
                        return Err(spec_err(
                            format!("sources.{name:?}"),
                            format!(
                                "stage {:?} brings it to {e:.3} passes over its {a} tokens; max-repetition is {} \
                                 (raise it, lower the budgets, or add data)",
                                st.name, src.max_repetition
                            ),
                        ));
                    }
                }
                sources.push(SourcePlan {
                    name: name.clone(),
                    category: src.category.clone(),
                    planned_tokens: budget,
                    sequences,
                    tokens,
                    stream_start,
                    available: avail,
                    epochs_after,
                });
            }
            let sequences: u64 = sources.iter().map(|s| s.sequences).sum();
            let steps = sequences.div_ceil(batch_sequences);
            if !sequences.is_multiple_of(batch_sequences) {
                short.push(format!("{:?} ({} of {batch_sequences})", st.name, sequences % batch_sequences));
            }
            stages.push(StagePlan {
                index,
                name: st.name.clone(),
                sequence_length: seq,
                batch_sequences,
                first_step: step,
                steps,
                planned_tokens: sources.iter().map(|s| s.planned_tokens).sum(),
                tokens: sources.iter().map(|s| s.tokens).sum(),
                sequences,
                lr: st.lr.clone(),
                decay_run: None,
                sources,
            });
            step += steps;
        }
        if !short.is_empty() {
            warnings.push(format!(
                "the last step of {} stage(s) is a short batch (sequences not a multiple of the global batch): {}",
                short.len(),
                short.join(", ")
            ));
        }
        // Decay runs: consecutive decay stages with the same shape and factors.
        let mut i = 0;
        while i < stages.len() {
            if stages[i].lr.phase != LrPhase::Decay {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < stages.len() && stages[j].lr == stages[i].lr {
                j += 1;
            }
            let first = stages[i].first_step;
            let len = stages[j - 1].first_step + stages[j - 1].steps - first;
            for s in &mut stages[i..j] {
                s.decay_run = Some((first, len));
            }
            i = j;
        }
        for w in stages.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let end = a.lr.to_factor();
            let start =
                if b.lr.phase == LrPhase::Stable && b.lr.warmup_steps.is_some() { 0.0 } else { b.lr.from_factor() };
            let same_run = a.decay_run.is_some() && a.decay_run == b.decay_run;
            if !same_run && (end - start).abs() > 1e-9 {
                warnings.push(format!(
                    "learning rate jumps from {end}×peak at the end of {:?} to {start}×peak at the start of {:?}",
                    a.name, b.name
                ));
            }
        }
        for name in spec.sources.keys() {
            if !stages.iter().any(|s| s.sources.iter().any(|p| &p.name == name && p.tokens > 0)) {
                warnings.push(format!("source {name:?} is declared but no stage uses it"));
            }
        }
        Ok(Plan { name: spec.name.clone(), seed: spec.seed, peak_lr: spec.lr.peak, stages, warnings })
    }

    pub fn total_steps(&self) -> u64 {
        self.stages.last().map_or(0, |s| s.first_step + s.steps)
    }

    /// The stage that global `step` belongs to (the last one past the end).
    pub fn stage_at(&self, step: u64) -> &StagePlan {
        let i = self.stages.partition_point(|s| s.first_step + s.steps <= step);
        &self.stages[i.min(self.stages.len() - 1)]
    }

    /// The learning rate of global `step` (0-based), continuous across stages and restarts.
    pub fn lr_at(&self, step: u64) -> f64 {
        let st = self.stage_at(step);
        let lr = &st.lr;
        let (from, to) = (lr.from_factor(), lr.to_factor());
        if step >= st.first_step + st.steps {
            return self.peak_lr * to;
        }
        let i = step - st.first_step;
        let factor = match lr.phase {
            LrPhase::Warmup => from + (to - from) * (i as f64 / st.steps.max(1) as f64),
            LrPhase::Stable => match lr.warmup_steps {
                Some(w) if i < w => from * (i as f64 / w as f64),
                _ => from,
            },
            LrPhase::Decay => {
                let (first, len) = st.decay_run.unwrap_or((st.first_step, st.steps));
                let p = (step - first) as f64 / len.max(1) as f64;
                to + (from - to) * lr.decay_shape().remaining(p)
            }
        };
        self.peak_lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RunSpec;

    fn spec() -> RunSpec {
        RunSpec::from_toml(
            r#"
version = 1
sequence-length = 100
global-batch-tokens = 1000
[lr]
peak = 1.0
[sources.a]
[sources.b]
max-repetition = 2
[[stage]]
name = "warm"
lr = { phase = "warmup" }
budgets = { a = 10_000 }
[[stage]]
name = "s1"
lr = { phase = "stable" }
budgets = { a = 5_049, b = 5_051 }
[[stage]]
name = "d1"
lr = { phase = "decay", shape = "1-sqrt", from = 1.0, to = 0.0 }
budgets = { b = 20_000 }
[[stage]]
name = "d2"
lr = { phase = "decay", shape = "1-sqrt", from = 1.0, to = 0.0 }
budgets = { b = 20_000 }
"#,
        )
        .unwrap()
    }

    #[test]
    fn sequences_steps_and_streams() {
        let p = Plan::new(&spec(), None).unwrap();
        let s1 = &p.stages[1];
        assert_eq!((s1.sources[0].sequences, s1.sources[1].sequences), (50, 51), "rounded to the nearest sequence");
        assert_eq!(s1.sources[0].stream_start, 10_000, "a continues where the warmup stage left it");
        assert_eq!(s1.steps, 11);
        assert!(p.warnings.iter().any(|w| w.contains("\"s1\" (1 of 10)")), "{:?}", p.warnings);
        assert_eq!(p.stages[3].sources[0].stream_start, 5_100 + 20_000);
        assert_eq!(p.stages[2].decay_run, Some((21, 40)));
    }

    #[test]
    fn lr_is_continuous_through_one_decay_run() {
        let p = Plan::new(&spec(), None).unwrap();
        assert_eq!(p.lr_at(0), 0.0);
        assert!((p.lr_at(5) - 0.5).abs() < 1e-12);
        assert_eq!(p.lr_at(10), 1.0);
        assert_eq!(p.lr_at(21), 1.0, "decay starts at the peak");
        // 1-sqrt over both decay stages (40 steps): at step 21 + 10 a quarter is done → 0.5.
        assert!((p.lr_at(31) - 0.5).abs() < 1e-12);
        assert!(p.lr_at(41) < p.lr_at(40) && p.lr_at(60) > 0.0);
        assert_eq!(p.lr_at(61), 0.0);
        assert_eq!(p.lr_at(10_000), 0.0);
        assert!(p.warnings.iter().all(|w| !w.contains("jumps")), "{:?}", p.warnings);
    }

    #[test]
    fn repetition_is_capped_per_source() {
        let avail: BTreeMap<String, u64> = [("a".to_string(), 20_000u64), ("b".to_string(), 30_000)].into();
        let p = Plan::new(&spec(), Some(&avail)).unwrap();
        let b_end = p.stages[3].sources[0].epochs_after.unwrap();
        assert!((b_end - 45_100.0 / 30_000.0).abs() < 1e-9);
        let tight: BTreeMap<String, u64> = [("a".to_string(), 20_000u64), ("b".to_string(), 20_000)].into();
        let e = Plan::new(&spec(), Some(&tight)).unwrap_err();
        assert_eq!(e.key, "sources.\"b\"");
        assert!(e.message.contains("\"d2\"") && e.message.contains("max-repetition is 2"), "{e}");
    }
}
