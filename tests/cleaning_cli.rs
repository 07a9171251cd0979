//! The cleaning presets through the whole system: `corpus init --preset` → `corpus build`
//! (embedded coordinator, 2 workers) → `corpus report`, on the fixture corpora.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

fn model() -> String {
    repo().join("examples/models/lid.176.ftz").to_string_lossy().into()
}

#[test]
fn bilingual_preset_builds_routes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spec = init_preset(dir.path(), "bilingual", &corpus_inputs(), &out, &["--lid-model", &model()]);
    let run = lehr().args(["corpus", "build"]).arg(&spec).args(["--workers", "2", "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let manifest = json_of(&run)["manifest"].clone();
    let totals = &manifest["totals"];

    // kept documents are partitioned by language; every file's documents have that language
    let mut docs_by_lang: BTreeMap<String, u64> = BTreeMap::new();
    let mut attribute_rows = 0;
    for f in manifest["files"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        if name.starts_with("attributes/") {
            attribute_rows += f["docs"].as_u64().unwrap();
            continue;
        }
        let lang = name.strip_prefix("lang=").and_then(|s| s.split('/').next()).expect("partitioned");
        *docs_by_lang.entry(lang.to_string()).or_default() += f["docs"].as_u64().unwrap();
        let text = zstd::decode_all(std::fs::File::open(out.join(name)).unwrap()).unwrap();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let doc: Value = serde_json::from_slice(line).unwrap();
            assert_eq!(doc["lang"].as_str(), Some(lang));
        }
    }
    assert_eq!(docs_by_lang.keys().cloned().collect::<Vec<_>>(), ["en", "ko", "zh"]);
    assert_eq!(docs_by_lang.values().sum::<u64>(), totals["docs_written"].as_u64().unwrap());
    assert_eq!(attribute_rows, totals["docs_read"].as_u64().unwrap(), "one attributes row per document");

    // the report agrees with the manifest and accounts for every document
    let rep = lehr().args(["corpus", "report"]).arg(&out).arg("--json").output().unwrap();
    assert!(rep.status.success(), "{}", String::from_utf8_lossy(&rep.stderr));
    let report = json_of(&rep);
    assert_eq!(report["docs_read"], totals["docs_read"]);
    assert_eq!(report["docs_kept"], totals["docs_written"]);
    for l in report["languages"].as_array().unwrap() {
        let dropped: u64 = l["rules"].as_array().unwrap().iter().map(|r| r["dropped_docs"].as_u64().unwrap()).sum();
        assert_eq!(dropped + l["kept_docs"].as_u64().unwrap(), l["docs"].as_u64().unwrap(), "{}", l["lang"]);
        for r in l["rules"].as_array().unwrap() {
            assert!(r["fired_docs"].as_u64() >= r["dropped_docs"].as_u64());
            if r["dropped_docs"].as_u64().unwrap() > 0 {
                assert!(!r["samples"].as_array().unwrap().is_empty(), "samples for {}", r["rule"]);
            }
        }
        if ["en", "zh", "ko"].contains(&l["lang"].as_str().unwrap()) {
            let scores: Vec<&str> =
                l["scores"].as_array().unwrap().iter().map(|s| s["column"].as_str().unwrap()).collect();
            assert!(scores.contains(&"lang-id.score"), "{scores:?}");
        }
    }
    let html = std::fs::read_to_string(out.join("report/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("gopher-quality-en"));
    assert!(std::fs::read_to_string(out.join("report/report.md")).unwrap().contains("| language |"));
    assert!(std::fs::read_to_string(out.join("report/dropped.svg")).unwrap().starts_with("<svg"));
    // the text form names the rules too
    let text = lehr().args(["corpus", "report"]).arg(&out).args(["--out"]).arg(dir.path().join("r2")).output().unwrap();
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("lang-id"));
}

#[test]
fn bad_preset_model_and_report_arguments_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = lehr().args(["corpus", "init", "--preset", "nope", "--input", "x", "--output", "o"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("fineweb-ko"));
    let list = lehr().args(["corpus", "init", "--list-presets"]).output().unwrap();
    assert!(list.status.success());
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert_eq!(listed.lines().count(), lehr_pipeline::starter::PRESETS.len());
    for p in ["basic", "bilingual", "dedup-exact", "dedup-minhash", "decontaminate"] {
        assert!(listed.lines().any(|l| l.starts_with(p)), "{p} missing from {listed}");
    }

    // a fastText model that is not there: refused before any work, naming the file
    let out = dir.path().join("out");
    let spec = init_preset(dir.path(), "fineweb", &corpus_inputs(), &out, &["--lid-model", "/nonexistent/lid.176.ftz"]);
    let run = lehr().args(["corpus", "build"]).arg(&spec).args(["--workers", "1"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("/nonexistent/lid.176.ftz"));

    let rep = lehr().args(["corpus", "report"]).arg(dir.path().join("missing")).output().unwrap();
    assert_eq!(rep.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&rep.stderr).contains("--coordinator"));
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let rep = lehr().args(["corpus", "report"]).arg(dir.path().join("empty")).output().unwrap();
    assert_eq!(rep.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&rep.stderr).contains("manifest.json"));
}
