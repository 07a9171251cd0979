//! The bad-input fixtures through the whole system (CLI → embedded coordinator → workers →
//! manifest): every bad record reported with file and line in `rejects.jsonl`, every good one
//! written, unreadable files skipped (or failing the job) with a clear reason.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

fn bad_dir() -> std::path::PathBuf {
    repo().join("tests/data/bad_input")
}

fn spec(dir: &std::path::Path, inputs: &str, policy: &str, out: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        "version = 1\n[input]\npaths = [{inputs:?}]\nunreadable-file = {policy:?}\nsplit-size = \"4KiB\"\n[output]\npath = {out:?}\nformats = [\"jsonl.zst\", \"parquet\"]\n",
        out = out.to_string_lossy()
    );
    let p = dir.join(format!("{policy}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_records_are_reported_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let inputs = format!("{}/*.{{jsonl,gz,parquet}}", bad_dir().display());
    let spec = spec(dir.path(), &inputs, "skip", &out);
    let run = lehr().args(["corpus", "build"]).arg(&spec).args(["--workers", "2", "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report = json_of(&run);
    let manifest = &report["manifest"];

    let expected: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(bad_dir().join("expected.json")).unwrap()).unwrap();
    let mut want_docs = 0;
    let mut want_bad = BTreeSet::new();
    for (name, exp) in &expected {
        if name == "huge_single_line.jsonl"
            || ["wrong_schema.parquet", "text_is_int.parquet", "not_json.txt.jsonl"].contains(&name.as_str())
        {
            continue;
        }
        let good =
            exp.get("good").or_else(|| exp.get("good_complete_lines_recoverable")).and_then(Value::as_u64).unwrap();
        let policy = exp
            .get("policy_dependent_lines")
            .or_else(|| exp.get("policy_dependent_rows"))
            .and_then(Value::as_object)
            .map(|m| m.len() as u64)
            .unwrap_or(0);
        want_docs += good + policy;
        for l in exp.get("bad_lines").or_else(|| exp.get("bad_rows")).and_then(Value::as_array).into_iter().flatten() {
            want_bad.insert((name.clone(), l.as_u64().unwrap()));
        }
        if name == "truncated.jsonl.gz" {
            want_bad.insert((name.clone(), good + 1));
        }
    }
    assert_eq!(manifest["totals"]["docs_written"].as_u64().unwrap(), want_docs, "{manifest:#}");

    // rejects.jsonl: each bad record with its file and file line (files are split in 4 KiB
    // ranges here, so this also checks that range-relative lines are resolved).
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    let got: BTreeSet<(String, u64)> = rejects
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(!v["reason"].as_str().unwrap().is_empty());
            let file = v["file"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            (file, v["line"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(got, want_bad);

    let skipped: BTreeSet<String> = manifest["skipped_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        skipped,
        ["not_json.txt.jsonl", "text_is_int.parquet", "wrong_schema.parquet"].iter().map(|s| s.to_string()).collect()
    );
    assert!(manifest["warnings"].to_string().contains("unexpected end of gzip stream"));
    // what the manifest lists is what is on disk
    for f in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(out.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap());
    }
    assert!(!out.join("_lehr").exists(), "attempt directories are cleaned up");
}

#[test]
fn an_unreadable_file_fails_the_job_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spec = spec(dir.path(), &bad_dir().join("wrong_schema.parquet").to_string_lossy(), "fail", &out);
    let run = lehr().args(["corpus", "build"]).arg(&spec).args(["--workers", "1"]).output().unwrap();
    assert_eq!(run.status.code(), Some(1), "a failed job exits with 1");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("failed") && stdout.contains("wrong_schema.parquet") && stdout.contains("no `text` column"),
        "{stdout}"
    );
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn a_bad_spec_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "version = 1\n[input]\npaths = [\"x.jsonl\"]\n[[stage]]\ntype = \"min-length\"\nmin-chars = 10\nmax-chars = 2\n[output]\npath = \"o\"\n").unwrap();
    let run = lehr().args(["corpus", "build"]).arg(&p).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("stage[0].max-chars"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn corpus_init_writes_a_spec_that_builds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let init = lehr()
        .args(["corpus", "init", "--input"])
        .arg(repo().join("examples/data/*.jsonl"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(init.status.success());
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, &init.stdout).unwrap();
    let run = lehr().args(["corpus", "build"]).arg(&spec).args(["--workers", "2", "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let m = &json_of(&run)["manifest"];
    assert_eq!(m["totals"]["docs_read"].as_u64().unwrap(), 1800, "600 en + 900 zh + 300 ko sample lines");
    // Running it again into the same directory is refused, clearly.
    let again = lehr().args(["corpus", "build"]).arg(&spec).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a finished job"));
}
