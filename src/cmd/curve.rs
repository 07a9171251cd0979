//! `lehr eval curve RUN_DIR`: a run's training loss (metrics.jsonl), held-out loss and `[eval]`
//! benchmark scores (eval.jsonl) over steps, stage boundaries marked, as curve.svg and
//! curve.png; and the scores at each stage's end as a table, so a user sees what each stage
//! (an anneal) did. Needs no libtorch. Lines that cannot be read are skipped and counted with
//! their file and line.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use super::{CmdResult, Failure, EXIT_OK};
use crate::chart::{LineChart, Panel};
use crate::cli::EvalCurveArgs;

/// x is the number of steps done: step `s`'s loss is drawn at `s + 1`, where an evaluation
/// after it (`step` = steps done) is drawn too.
#[derive(Default)]
pub(super) struct Curves {
    /// (name, first step, steps done at its end)
    pub stages: Vec<(String, u64, u64)>,
    pub loss: Vec<(f64, f64)>,
    /// "held-out SOURCE" → (steps done, loss)
    pub held_out: BTreeMap<String, Vec<(f64, f64)>>,
    /// "task metric" → (steps done, value)
    pub scores: BTreeMap<String, Vec<(f64, f64)>>,
    pub perplexity: BTreeMap<String, Vec<(f64, f64)>>,
    /// Tokens trained on after N steps, at index N (0 at index 0).
    pub tokens: Vec<u64>,
    pub skipped: Vec<String>,
}

fn read_lines(
    path: &Path,
    mut each: impl FnMut(&Value) -> Option<()>,
    skipped: &mut Vec<String>,
) -> anyhow::Result<bool> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ok = serde_json::from_str::<Value>(line).ok().and_then(|v| each(&v));
        if ok.is_none() {
            skipped.push(format!("{}:{}", path.display(), i + 1));
        }
    }
    Ok(true)
}

pub(super) fn load(dir: &Path) -> Result<Curves, Failure> {
    let mut c = Curves::default();
    let mut skipped = Vec::new();
    let found = read_lines(
        &dir.join("metrics.jsonl"),
        |v| {
            let step = v.get("step")?.as_u64()?;
            let stage = v.get("stage")?.as_str()?;
            let loss = v.get("loss")?.as_f64()?;
            match c.stages.last_mut() {
                Some(s) if s.0 == stage => s.2 = step + 1,
                _ => c.stages.push((stage.to_string(), step, step + 1)),
            }
            c.loss.push(((step + 1) as f64, loss));
            let tokens = v.get("tokens")?.as_u64()?;
            if c.tokens.is_empty() {
                c.tokens.push(0);
            }
            if c.tokens.len() as u64 == step + 1 {
                let before = *c.tokens.last().expect("starts with 0");
                c.tokens.push(before + tokens);
            }
            Some(())
        },
        &mut skipped,
    )?;
    if !found {
        return Err(Failure::usage(anyhow::anyhow!(
            "{} has no metrics.jsonl: give the --out directory of `lehr train run`",
            dir.display()
        )));
    }
    read_lines(
        &dir.join("eval.jsonl"),
        |v| {
            let step = v.get("step")?.as_u64()? as f64;
            if let Some(task) = v.get("task").and_then(Value::as_str) {
                let metric = v.get("metric")?.as_str()?;
                let value = v.get("value")?.as_f64()?;
                let into = if metric == "perplexity" { &mut c.perplexity } else { &mut c.scores };
                into.entry(format!("{task} {metric}")).or_default().push((step, value));
            } else {
                let source = v.get("source")?.as_str()?;
                let loss = v.get("loss")?.as_f64()?;
                c.held_out.entry(format!("held-out {source}")).or_default().push((step, loss));
            }
            Some(())
        },
        &mut skipped,
    )?;
    c.skipped = skipped;
    Ok(c)
}

/// The value at a stage's end: the last point at or before it, within the stage.
pub(super) fn at_end(points: &[(f64, f64)], first: u64, end: u64) -> Option<f64> {
    points.iter().rev().find(|p| p.0 <= end as f64 && p.0 > first as f64).map(|p| p.1)
}

pub fn run(a: EvalCurveArgs) -> CmdResult {
    let c = load(&a.run_dir)?;
    if c.loss.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!("{}/metrics.jsonl has no steps yet", a.run_dir.display())));
    }
    let out = a.output.clone().unwrap_or_else(|| a.run_dir.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut loss_series = vec![("train loss".to_string(), c.loss.clone())];
    loss_series.extend(c.held_out.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut panels = vec![Panel { title: "loss".into(), series: loss_series }];
    if !c.scores.is_empty() {
        panels.push(Panel {
            title: "benchmark scores".into(),
            series: c.scores.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        });
    }
    if !c.perplexity.is_empty() {
        panels.push(Panel {
            title: "task perplexity".into(),
            series: c.perplexity.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        });
    }
    let marks: Vec<(f64, String)> = c.stages.iter().map(|s| (s.1 as f64, s.0.clone())).collect();
    let title = format!("{}: loss and scores over steps", a.run_dir.display());
    let scene = LineChart { title: &title, x_label: "step", panels: &panels, marks: &marks }.scene();
    let files = [out.join("curve.svg"), out.join("curve.png")];
    std::fs::write(&files[0], scene.to_svg()).with_context(|| format!("cannot write {}", files[0].display()))?;
    let png = scene.to_png().map_err(|e| anyhow::anyhow!("png: {e}"))?;
    std::fs::write(&files[1], png).with_context(|| format!("cannot write {}", files[1].display()))?;
    for s in &c.skipped {
        eprintln!("warning: {s}: not a metrics or evaluation line, skipped");
    }

    // per stage: the mean training loss of its last 10 steps, and each score at its end
    let columns: Vec<&String> = c.held_out.keys().chain(c.scores.keys()).chain(c.perplexity.keys()).collect();
    let all: BTreeMap<&String, &Vec<(f64, f64)>> =
        c.held_out.iter().chain(c.scores.iter()).chain(c.perplexity.iter()).collect();
    let rows: Vec<Value> = c
        .stages
        .iter()
        .map(|(name, first, end)| {
            let tail: Vec<f64> =
                c.loss.iter().filter(|p| p.0 > *first as f64 && p.0 <= *end as f64).map(|p| p.1).collect();
            let tail = &tail[tail.len().saturating_sub(10)..];
            let loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
            let scores: serde_json::Map<String, Value> =
                columns.iter().map(|k| (k.to_string(), json!(at_end(all[k], *first, *end)))).collect();
            json!({"stage": name, "first_step": first, "end_step": end, "train_loss": loss, "at_end": scores})
        })
        .collect();
    if a.json {
        let series = |m: &BTreeMap<String, Vec<(f64, f64)>>| -> Value {
            m.iter().map(|(k, v)| (k.clone(), json!(v.iter().map(|p| [p.0, p.1]).collect::<Vec<_>>()))).collect()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "stages": rows,
                "train_loss": c.loss.iter().map(|p| [p.0, p.1]).collect::<Vec<_>>(),
                "held_out": series(&c.held_out), "scores": series(&c.scores), "perplexity": series(&c.perplexity),
                "skipped": c.skipped, "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            }))
            .expect("json")
        );
        return Ok(EXIT_OK);
    }
    let width = columns.iter().map(|k| k.len()).max().unwrap_or(0).max(8);
    print!("{:<20} {:>13} {:>10}", "stage", "steps", "loss");
    for k in &columns {
        print!("  {k:>width$}");
    }
    println!();
    for r in &rows {
        let steps = format!("{}-{}", r["first_step"], r["end_step"]);
        print!(
            "{:<20} {:>13} {:>10.4}",
            r["stage"].as_str().unwrap_or(""),
            steps,
            r["train_loss"].as_f64().unwrap_or(f64::NAN)
        );
        for k in &columns {
            match r["at_end"][k.as_str()].as_f64() {
                Some(v) => print!("  {v:>width$.4}"),
                None => print!("  {:>width$}", "-"),
            }
        }
        println!();
    }
    println!("wrote {} and {}", files[0].display(), files[1].display());
    Ok(EXIT_OK)
}
