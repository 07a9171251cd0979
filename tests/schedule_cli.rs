//! Run specs and the mix inspector through the CLI: YuLan-Mini's real recipes imported and
//! inspected (per-phase totals reproduced, category shares against the published derivation,
//! the annealing shift), charts written, validation errors naming stage and key, and the demo
//! schedule measured over token shards built by a tokenize job.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// ../shared's 21 recipe files when present, else the 2 trimmed ones in the repo.
fn recipes_dir() -> PathBuf {
    let shared = repo().join("../shared/reference/yulan-mini/data_mix");
    if std::env::var_os("LEHR_TEST_NO_SHARED").is_none() && shared.exists() {
        shared
    } else {
        repo().join("examples/yulan-mini")
    }
}

fn run_json(args: &[&str], extra: &[&Path]) -> Value {
    let mut c = lehr();
    c.args(args);
    for p in extra {
        c.arg(p);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    json_of(&out)
}

#[test]
fn yulan_recipes_import_with_exact_phase_totals_and_the_annealing_shift() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("yulan.toml");
    let imported = run_json(&["schedule", "import-yulan", "--json", "-o"], &[&spec, &recipes_dir()]);
    // Independent reading of the recipes: totals and per-source budgets.
    let mut files: Vec<PathBuf> = std::fs::read_dir(recipes_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let out = dir.path().join("report");
    let report = run_json(&["mix", "inspect", "--json", "--out"], &[&out, &spec]);
    let stages = report["stages"].as_array().unwrap();
    assert_eq!(stages.len(), files.len());
    let notes = imported["notes"].as_array().unwrap();
    for (file, st) in files.iter().zip(stages) {
        let recipe: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let stem = file.file_stem().unwrap().to_string_lossy();
        assert_eq!(st["name"], stem.as_ref(), "phases in order");
        let total = (recipe["Total Tokens(B)"].as_f64().unwrap() * 1e9).round() as u64;
        let selected = recipe["Number of Selected Tokens(B)"].as_object().unwrap();
        let sum: u64 = selected.values().map(|v| (v.as_f64().unwrap() * 1e9).round() as u64).sum();
        assert_eq!(st["planned_tokens"].as_u64().unwrap(), sum, "{stem}: the sources' tokens, to the token");
        if sum == total {
            assert!(!notes.iter().any(|n| n.as_str().unwrap().starts_with(stem.as_ref())));
        } else {
            // Phase 19's `Total Tokens(B)` disagrees with its own sources: said, not hidden.
            let note = notes.iter().find(|n| n.as_str().unwrap().starts_with(stem.as_ref())).expect("a note");
            assert!(note.as_str().unwrap().contains(&format!("{:+}", sum as i64 - total as i64)), "{note}");
        }
        let rows = st["rows"].as_array().unwrap();
        assert_eq!(rows.len(), selected.len(), "{stem}: every source, names preserved");
        for row in rows {
            let b = (selected[row["group"].as_str().unwrap()].as_f64().unwrap() * 1e9).round() as u64;
            assert_eq!(row["planned_tokens"].as_u64().unwrap(), b);
        }
        let decay = recipe["Manual Selected Tokens(B)"].as_object().unwrap().values().any(Value::is_array);
        assert_eq!(st["lr"].as_str().unwrap().starts_with("decay 1-sqrt"), decay, "{stem}");
    }
    if recipes_dir().starts_with(repo().join("../shared")) {
        assert_eq!(files.len(), 21);
        assert!(notes.iter().any(|n| n.as_str().unwrap().starts_with("19_20241114_115241")));
    }
    // By category: YuLan-Mini's published derivation (pretraining_anchors §1.6) for phase 1 and
    // the 4K phase 26, to the table's 0.1-point rounding.
    let by_cat = run_json(&["mix", "inspect", "--json", "--by", "category", "--out"], &[&out, &spec]);
    let share = |stage: &Value, cat: &str| -> f64 {
        stage["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == cat)
            .map_or(0.0, |r| r["share"].as_f64().unwrap() * 100.0)
    };
    let cats = ["web", "general", "general-sft", "chinese", "code", "code-sft", "math", "math-sft"];
    let expect = [
        ("01_20241017_013512", [46.7, 13.0, 0.1, 10.1, 20.2, 0.0, 10.0, 0.0]),
        ("26_20241127_205447", [47.5, 12.9, 0.1, 10.2, 16.8, 2.1, 8.0, 2.4]),
    ];
    let cstages = by_cat["stages"].as_array().unwrap();
    for (name, shares) in expect {
        let st = cstages.iter().find(|s| s["name"] == name).unwrap();
        for (c, want) in cats.iter().zip(shares) {
            let got = share(st, c);
            assert!((got - want).abs() <= 0.11, "{name} {c}: {got:.2}% vs the published {want}%");
        }
    }
    // The annealing shift: SFT-formatted data grows from 0.1% to ~4.6%.
    let sft = |st: &Value| share(st, "general-sft") + share(st, "code-sft") + share(st, "math-sft");
    let (first, last) = (&cstages[0], cstages.last().unwrap());
    assert!(sft(first) < 0.2 && sft(last) > 4.0, "{} -> {}", sft(first), sft(last));
    // Charts and page.
    let png = std::fs::read(out.join("mix.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(out.join("mix.svg")).unwrap();
    assert!(svg.contains("code-sft") && svg.matches("<rect").count() > cstages.len() * 5);
    let html = std::fs::read_to_string(out.join("mix.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("26_20241127_205447"));
}

#[test]
fn invalid_specs_name_the_stage_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let preset = lehr().args(["schedule", "init", "--preset", "demo"]).output().unwrap();
    assert!(preset.status.success());
    let text = String::from_utf8(preset.stdout).unwrap();
    let cases = [
        (text.replace("ko = 0.4 }", "ko = 0.5 }"), "stage[2] \"anneal\".ratios", "sum to 1.1"),
        (text.replace("ko = \"5K\"", "jp = \"5K\""), "stage[0] \"warmup\".budgets.\"jp\"", "unknown source"),
        (text.replace("global-batch-tokens = 2048", "global-batch-tokens = 2000"), "global-batch-tokens", "multiple"),
        (text.replace("max-repetition = 2", "max-repeat = 2"), "max-repeat", "unknown field"),
    ];
    for (i, (spec, key, msg)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, spec).unwrap();
        let out = lehr().args(["schedule", "validate"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key) && err.contains(msg), "case {i}: {err}");
    }
}

#[test]
fn demo_schedule_measured_over_a_tokenize_jobs_shards() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let schedule = dir.path().join("demo.toml");
    let init = lehr().args(["schedule", "init", "--preset", "demo"]).output().unwrap();
    std::fs::write(&schedule, init.stdout).unwrap();
    let report = run_json(&["mix", "inspect", "--json", "--measure", "--data"], &[&tokens, &schedule]);
    let stages = report["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    for st in stages {
        let l = st["sequence_length"].as_u64().unwrap();
        for row in st["rows"].as_array().unwrap() {
            let planned = row["planned_tokens"].as_u64().unwrap();
            let realized = row["realized_tokens"].as_u64().unwrap();
            assert!(realized.abs_diff(planned) <= l, "{} {}: {realized} vs {planned}", st["name"], row["group"]);
            assert!(row["available"].as_u64().unwrap() > 0);
        }
    }
    let ko = stages[2]["rows"].as_array().unwrap().iter().find(|r| r["group"] == "ko").unwrap();
    assert!(ko["epochs_after"].as_f64().unwrap() > 1.0, "ko is repeated in the anneal stage");
    assert!(stages[2]["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("ko repeats")));
    assert!(report["tokenizer_sha256"].as_str().unwrap().len() == 64);
    // A wrong data root names the directories it looked in.
    let out = lehr()
        .args(["schedule", "validate", "--data"])
        .arg(dir.path().join("nowhere"))
        .arg(&schedule)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no token shards found for") && err.contains("nowhere/lang=ko"), "{err}");
    // Asking for more Korean than max-repetition allows is an error naming the source.
    let greedy = std::fs::read_to_string(&schedule).unwrap().replace("tokens = \"150K\"", "tokens = \"400K\"");
    std::fs::write(&schedule, greedy).unwrap();
    let out = lehr().args(["schedule", "validate", "--data"]).arg(&tokens).arg(&schedule).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sources.\"ko\"") && err.contains("max-repetition is 2"), "{err}");
}
