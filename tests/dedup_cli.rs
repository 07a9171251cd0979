//! Dedup and decontamination through the whole system: `corpus init --preset` → `corpus build`
//! (embedded coordinator, or a coordinator with worker processes and a SIGKILL), checked against
//! the near-duplicate fixture's ground truth and against an independent computation.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn dedup_dir() -> PathBuf {
    let shared = repo().join("../shared/fixtures/dedup");
    if std::env::var_os("LEHR_TEST_NO_SHARED").is_none() && shared.join("labels.csv").exists() {
        shared
    } else {
        repo().join("examples/data/dedup")
    }
}

/// Split size and per-document delay giving about nine shards of a few seconds for the victim.
fn shape() -> (&'static str, u64) {
    if dedup_dir().starts_with(repo().join("examples")) {
        ("128KiB", 5000)
    } else {
        ("512KiB", 1000)
    }
}

/// The fixture's own shingling (lowercase; word 5-grams, zh character 5-grams), 14×8.
fn minhash_spec(dir: &Path, name: &str, out: &Path) -> PathBuf {
    let spec = format!(
        "version = 1\nname = \"near-dups\"\n[input]\npaths = [{input:?}]\nsplit-size = {split:?}\n\
         [dedup]\nmethod = \"minhash\"\nnormalize = [\"lowercase\"]\nbands = 14\nrows = 8\n\
         [dedup.languages]\nzh = {{ unit = \"chars\", size = 5 }}\n\
         [output]\npath = {out:?}\n",
        input = dedup_dir().join("near_dups.jsonl").to_string_lossy(),
        split = shape().0,
        out = out.to_string_lossy(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, spec).unwrap();
    path
}

fn read_parts(out: &Path) -> Vec<Value> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.zst"))
        .collect();
    names.sort();
    let mut docs = Vec::new();
    for p in names {
        let text = zstd::decode_all(std::fs::File::open(&p).unwrap()).unwrap();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            docs.push(serde_json::from_slice(line).unwrap());
        }
    }
    docs
}

/// doc id → (cluster id, edit kind, Jaccard to the original)
fn labels() -> HashMap<String, (String, String, f64)> {
    std::fs::read_to_string(dedup_dir().join("labels.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), (f[1].to_string(), f[2].to_string(), f[3].parse().unwrap()))
        })
        .collect()
}

fn build(spec: &Path, workers: &str) -> Value {
    let run = lehr().args(["corpus", "build"]).arg(spec).args(["--workers", workers, "--json"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    json_of(&run)
}

fn stage<'a>(manifest: &'a Value, name: &str) -> &'a Value {
    manifest["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}"))
}

#[test]
fn minhash_job_agrees_with_ground_truth_and_a_crash_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let report = build(&minhash_spec(dir.path(), "reference", &reference), "1");
    let manifest = &report["manifest"];
    let dedup = &report["dedup"];
    let dropped = stage(manifest, "dedup")["dropped"].as_u64().unwrap();
    assert_eq!(dropped, dedup["duplicates"].as_u64().unwrap());
    assert!(!reference.join("_lehr").exists(), "intermediate files are removed at the end");

    // Cluster level: per labelled cluster, the documents dropped should be its variants with
    // true Jaccard ≥ t (which of them survives does not matter).
    let labels = labels();
    let kept: Vec<Value> = read_parts(&reference);
    let kept_ids: HashSet<&str> = kept.iter().map(|d| d["id"].as_str().unwrap()).collect();
    let mut dropped_per: HashMap<&str, u64> = HashMap::new();
    for (id, (cluster, _, _)) in &labels {
        if !kept_ids.contains(id.as_str()) {
            *dropped_per.entry(cluster).or_default() += 1;
        }
    }
    assert_eq!(dropped_per.values().sum::<u64>(), dropped);
    let t = 0.72;
    let mut positives: HashMap<&str, u64> = HashMap::new();
    for (cluster, kind, j) in labels.values() {
        if kind != "original" && *j >= t {
            *positives.entry(cluster).or_default() += 1;
        }
    }
    let tp: u64 = dropped_per.iter().map(|(c, n)| (*n).min(positives.get(c).copied().unwrap_or(0))).sum();
    let (precision, recall) = (tp as f64 / dropped as f64, tp as f64 / positives.values().sum::<u64>() as f64);
    println!("cluster level at J ≥ {t}: dropped {dropped}, precision {precision:.3}, recall {recall:.3}");
    assert!(precision >= 0.7 && recall >= 0.85, "precision {precision}, recall {recall}");

    // Survivors of clusters carry the cluster's id and size; the sizes add up.
    let annotated: Vec<&Value> = kept.iter().filter(|d| d.get("dedup_cluster_size").is_some()).collect();
    assert_eq!(annotated.len() as u64, dedup["clusters"].as_u64().unwrap());
    let in_clusters: u64 = annotated.iter().map(|d| d["dedup_cluster_size"].as_u64().unwrap()).sum();
    assert_eq!(in_clusters, dedup["docs_in_clusters"].as_u64().unwrap());
    assert_eq!(in_clusters - annotated.len() as u64, dropped);

    // Three worker processes, one killed in the middle of a signatures task: same bytes.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _coordinator = spawn_coordinator(dir.path().join("state"), port, "3s");
    let mut procs: Vec<Proc> =
        (0..3).map(|i| spawn_worker(&url, &format!("w{i}"), shape().1 * if i == 1 { 10 } else { 1 })).collect();
    let out = dir.path().join("crash");
    let spec = minhash_spec(dir.path(), "crash", &out);
    let submitted = lehr()
        .args(["corpus", "build"])
        .arg(&spec)
        .args(["--coordinator", &url, "--detach", "--json"])
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let job = json_of(&submitted)["job_id"].as_str().unwrap().to_string();
    let victim = wait_until("w1 to hold a signatures task", Duration::from_secs(60), || {
        let ws = workers(&url);
        let id = ws.as_array()?.iter().find(|w| w["name"] == "w1")?["worker_id"].as_str()?.to_string();
        let status = job_status(&url, &job)?;
        status["tasks"].as_array()?.iter().find_map(|t| {
            (t["state"] == "leased" && t["worker_id"] == id.as_str() && t["stage"] == "0")
                .then(|| t["task_id"].as_u64())
                .flatten()
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    procs[1].sigkill();
    let status = wait_until("the job to end", Duration::from_secs(240), || {
        job_status(&url, &job).filter(|s| matches!(job_state(s).as_str(), "succeeded" | "failed" | "cancelled"))
    });
    assert_eq!(job_state(&status), "succeeded", "{status:#}");
    let task = status["tasks"].as_array().unwrap().iter().find(|t| t["task_id"] == victim).unwrap();
    let outcomes: Vec<&str> =
        task["attempt_log"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert!(outcomes.contains(&"expired"), "the killed attempt expired: {outcomes:?}");
    assert_eq!(checksums(&out), checksums(&reference), "3 workers and a crash must write what 1 worker writes");
}

#[test]
fn exact_preset_keeps_the_first_of_each_repeated_text() {
    use unicode_normalization::UnicodeNormalization;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = dedup_dir().join("near_dups.jsonl");
    let spec = init_preset(dir.path(), "dedup-exact", &[&input], &out, &[]);
    // several shards, so that repeats cross shard boundaries
    let text = std::fs::read_to_string(&spec).unwrap().replace("split-size = \"64MiB\"", "split-size = \"256KiB\"");
    std::fs::write(&spec, text).unwrap();
    let report = build(&spec, "2");
    assert!(report["manifest"]["totals"]["shards"].as_u64().unwrap() >= 4);

    // Independently: the preset's normalization (NFKC, lowercase, whitespace runs) and the first
    // document of each normalized text in input order.
    let mut seen: HashSet<String> = HashSet::new();
    let mut expected_kept = Vec::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let norm: String = v["text"].as_str().unwrap().nfkc().collect::<String>().to_lowercase();
        let norm = norm.split_whitespace().collect::<Vec<_>>().join(" ");
        let id = v["id"].as_str().unwrap().to_string();
        if seen.insert(norm) {
            expected_kept.push(id);
        }
    }
    let kept: Vec<String> = read_parts(&out).iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(kept, expected_kept);
    let exact_labels = labels().values().filter(|l| l.1 == "exact").count();
    let dropped = report["dedup"]["duplicates"].as_u64().unwrap() as usize;
    assert!(dropped >= exact_labels, "{dropped} dropped, {exact_labels} exact copies labelled");
}

#[test]
fn decontaminate_preset_drops_documents_quoting_eval_items_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let eval = repo().join("examples/data/eval/arc_easy.jsonl");
    let items: Vec<Value> =
        std::fs::read_to_string(&eval).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let clean: Vec<Value> = std::fs::read_to_string(repo().join("examples/data/en.jsonl"))
        .unwrap()
        .lines()
        .take(40)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Five documents quote an item (question and gold answer) inside other text, changing case
    // and punctuation; one quotes only a few words of an item.
    let mut lines = Vec::new();
    let mut quoted = BTreeMap::new();
    for (i, doc) in clean.iter().enumerate() {
        let mut text = doc["text"].as_str().unwrap().to_string();
        if i % 8 == 3 {
            let item = &items[i];
            let gold = item["choices"][item["gold"].as_u64().unwrap() as usize].as_str().unwrap();
            let context = item["context"].as_str().unwrap().to_uppercase().replace('?', " ?? ");
            text = format!("{text}\n\nRevision notes: {context} {gold}. End of notes.");
            quoted.insert(doc["id"].as_str().unwrap().to_string(), item["id"].as_str().unwrap().to_string());
        }
        if i == 5 {
            let words: Vec<&str> = items[0]["context"].as_str().unwrap().split_whitespace().take(6).collect();
            text = format!("{text} {}", words.join(" "));
        }
        lines.push(serde_json::json!({"id": doc["id"], "text": text}).to_string());
    }
    let input = dir.path().join("docs.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let spec = init_preset(dir.path(), "decontaminate", &[&input], &out, &["--eval-set", eval.to_str().unwrap()]);
    let report = build(&spec, "1");
    let st = stage(&report["manifest"], "decontaminate");
    assert_eq!(st["dropped"].as_u64(), Some(quoted.len() as u64), "{st:#}");
    let kept: HashSet<String> = read_parts(&out).iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(kept.len(), clean.len() - quoted.len());
    for (doc, item) in &quoted {
        assert!(!kept.contains(doc));
        assert_eq!(st["counters"][format!("item:{item}")].as_u64(), Some(1), "{st:#}");
    }

    // Without --eval-set the preset says what it needs.
    let run =
        lehr().args(["corpus", "init", "--preset", "decontaminate", "--input", "x", "--output", "o"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--eval-set"));
}

#[test]
fn dedup_curve_prints_the_s_curve_and_draws_it() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("curve.svg");
    let run = lehr()
        .args(["dedup", "curve", "--bands", "14", "--rows", "8", "--compare", "20x13", "--json", "--svg"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v = json_of(&run);
    let first = &v[0];
    assert!((first["threshold"].as_f64().unwrap() - 0.7192).abs() < 1e-3);
    let curve: Vec<f64> = first["curve"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(curve.windows(2).all(|w| w[0] <= w[1]) && curve[0] == 0.0 && curve[curve.len() - 1] == 1.0);
    assert!(v[1]["threshold"].as_f64().unwrap() > first["threshold"].as_f64().unwrap());
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(drawn.matches("<polyline").count(), 2);
    let bad = lehr().args(["dedup", "curve", "--compare", "14by8"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
