//! `lehr eval compare RUN_DIR RUN_DIR...`: runs side by side at equal tokens — each run's
//! held-out loss per source over tokens seen (eval.jsonl against metrics.jsonl's token counts)
//! in one chart with the first run's stage boundaries, and a table of the held-out loss at every
//! stage end. Made for recipe comparisons (scratch vs inherited vs distilled vs up-scaled).

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::json;

use super::curve::{at_end, load, Curves};
use super::{CmdResult, Failure, EXIT_OK};
use crate::chart::{LineChart, Panel};
use crate::cli::EvalCompareArgs;

/// Tokens seen after `steps` steps (the run's own counts; past its last step, its total).
fn tokens_at(c: &Curves, steps: f64) -> f64 {
    let i = (steps.max(0.0) as usize).min(c.tokens.len().saturating_sub(1));
    c.tokens.get(i).copied().unwrap_or(0) as f64
}

pub fn run(a: EvalCompareArgs) -> CmdResult {
    let labels: Vec<String> = match &a.labels {
        Some(l) => l.split(',').map(|s| s.trim().to_string()).collect(),
        None => a.runs.iter().map(|r| r.file_name().unwrap_or(r.as_os_str()).to_string_lossy().to_string()).collect(),
    };
    if labels.len() != a.runs.len() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--labels names {} runs, but {} run directories were given",
            labels.len(),
            a.runs.len()
        )));
    }
    let mut runs = Vec::new();
    for dir in &a.runs {
        let c = load(dir)?;
        if c.held_out.is_empty() {
            return Err(Failure::usage(anyhow::anyhow!(
                "{} has no held-out losses in eval.jsonl: train with --eval-data to compare runs",
                dir.display()
            )));
        }
        for s in &c.skipped {
            eprintln!("warning: {s}: not a metrics or evaluation line, skipped");
        }
        runs.push(c);
    }
    let sources: Vec<String> = {
        let mut s: Vec<String> = runs.iter().flat_map(|c| c.held_out.keys().cloned()).collect();
        s.sort();
        s.dedup();
        s
    };
    let panels: Vec<Panel> = sources
        .iter()
        .map(|src| Panel {
            title: format!("{src} loss"),
            series: runs
                .iter()
                .zip(&labels)
                .filter_map(|(c, label)| {
                    let points = c.held_out.get(src)?;
                    Some((label.clone(), points.iter().map(|p| (tokens_at(c, p.0), p.1)).collect()))
                })
                .collect(),
        })
        .collect();
    let first = &runs[0];
    let marks: Vec<(f64, String)> = first.stages.iter().map(|s| (tokens_at(first, s.1 as f64), s.0.clone())).collect();
    std::fs::create_dir_all(&a.output).with_context(|| format!("cannot create {}", a.output.display()))?;
    let title = "held-out loss at equal tokens".to_string();
    let scene = LineChart { title: &title, x_label: "tokens", panels: &panels, marks: &marks }.scene();
    let files = [a.output.join("compare.svg"), a.output.join("compare.png")];
    std::fs::write(&files[0], scene.to_svg()).with_context(|| format!("cannot write {}", files[0].display()))?;
    let png = scene.to_png().map_err(|e| anyhow::anyhow!("png: {e}"))?;
    std::fs::write(&files[1], png).with_context(|| format!("cannot write {}", files[1].display()))?;

    // rows: run × stage, the mean over sources of the held-out loss at the stage's end
    let mut rows = Vec::new();
    for (c, label) in runs.iter().zip(&labels) {
        let mut stages = Vec::new();
        for (name, first, end) in &c.stages {
            let per: BTreeMap<&String, Option<f64>> =
                sources.iter().map(|s| (s, c.held_out.get(s).and_then(|p| at_end(p, *first, *end)))).collect();
            stages.push(json!({"stage": name, "tokens": tokens_at(c, *end as f64), "held_out": per}));
        }
        let last: BTreeMap<&String, Option<f64>> =
            sources.iter().map(|s| (s, c.held_out.get(s).and_then(|p| p.last()).map(|p| p.1))).collect();
        rows.push(json!({"run": label, "tokens": c.tokens.last(), "final": last, "stages": stages}));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json!({"runs": rows, "files": files})).expect("json"));
        return Ok(EXIT_OK);
    }
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(0).max(8);
    print!("{:<width$} {:>11}", "run", "tokens");
    for s in &sources {
        print!("  {s:>18}");
    }
    println!();
    for r in &rows {
        print!("{:<width$} {:>11}", r["run"].as_str().unwrap_or(""), r["tokens"]);
        for s in &sources {
            match r["final"][s].as_f64() {
                Some(v) => print!("  {v:>18.4}"),
                None => print!("  {:>18}", "-"),
            }
        }
        println!();
    }
    println!("held-out loss (mean over sources) at each stage end:");
    let names: Vec<&str> = first.stages.iter().map(|s| s.0.as_str()).collect();
    print!("{:<width$}", "run");
    for n in &names {
        print!("  {n:>12}");
    }
    println!();
    for r in &rows {
        print!("{:<width$}", r["run"].as_str().unwrap_or(""));
        for st in r["stages"].as_array().into_iter().flatten() {
            let v: Vec<f64> =
                st["held_out"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_f64()).collect();
            if v.is_empty() {
                print!("  {:>12}", "-");
            } else {
                print!("  {:>12.4}", v.iter().sum::<f64>() / v.len() as f64);
            }
        }
        println!();
    }
    println!("wrote {} and {}", files[0].display(), files[1].display());
    Ok(EXIT_OK)
}
