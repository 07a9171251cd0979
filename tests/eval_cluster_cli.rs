//! Benchmark scoring as a cluster job (builds with the `train` feature): `lehr eval tasks
//! --coordinator` plans an `eval` job of item shards that two `lehr worker --train` processes
//! lease and score in child `lehr eval shard --serve` processes (kept between shards), while a
//! plain data worker on the same
//! coordinator never gets one. The merged results equal one `lehr eval tasks` process on the same
//! checkpoint and rows — few-shot examples included, which each shard draws from the whole file
//! — and are in lm-eval's layout. The model is SmolLM2-135M (imported from its published GGUF).
#![cfg(feature = "train")]

mod common;

use std::process::Stdio;

use common::llm::*;
use common::*;
use serde_json::Value;

fn spawn_train_worker(url: &str, name: &str) -> Proc {
    let child = lehr()
        .args(["worker", "--train", "--advertise", "127.0.0.1", "--coordinator", url, "--name", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

#[test]
fn an_eval_job_on_train_workers_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_smollm2(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(repo().join("examples/data/eval/arc_easy.jsonl"), data.join("arc_easy.jsonl")).unwrap();
    for f in ["winogrande.jsonl", "winogrande_train.jsonl"] {
        std::fs::copy(repo().join("examples/data/eval/formats").join(f), data.join(f)).unwrap();
    }
    let args = ["--tasks", "arc_easy,winogrande", "--num-fewshot", "2", "--device", "cpu", "--json"];

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _coordinator = spawn_coordinator(dir.path().join("state"), port, "20s");
    let _plain = spawn_worker(&url, "plain", 0);
    let _w1 = spawn_train_worker(&url, "train-1");
    let _w2 = spawn_train_worker(&url, "train-2");
    let merged = dir.path().join("results.json");
    let job = lehr()
        .args(["eval", "tasks", "--coordinator", &url, "--items-per-shard", "20", "--checkpoint"])
        .arg(&ckpt)
        .arg("--data-dir")
        .arg(&data)
        .args(args)
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(job.status.success(), "{}", String::from_utf8_lossy(&job.stderr));
    let cluster = json_of(&job);
    assert_eq!(cluster, serde_json::from_slice::<Value>(&std::fs::read(&merged).unwrap()).unwrap());
    // each train worker loads the checkpoint once, whatever number of shards it scores
    let loads = cluster["config"]["extra"]["model_loads"].as_u64().unwrap();
    assert!((1..=2).contains(&loads), "{loads} model loads for 4 shards on 2 workers");

    // four shards (arc_easy 0..20, 20..40, 40..60, winogrande 0..4), all on train workers
    let overview = json_of(&lehr().args(["status", "--json", "--coordinator", &url]).output().unwrap());
    let id = overview["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let names: std::collections::HashMap<String, String> = overview["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["worker_id"].as_str().unwrap().to_string(), w["name"].as_str().unwrap().to_string()))
        .collect();
    let status = job_status(&url, &id).unwrap();
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "{status}");
    for t in tasks {
        for a in t["attempt_log"].as_array().unwrap() {
            let name = &names[a["worker_id"].as_str().unwrap()];
            assert!(name.starts_with("train-"), "a shard went to {name}, a worker without the model runtime: {t}");
        }
    }

    let local = lehr()
        .args(["eval", "tasks", "--checkpoint"])
        .arg(&ckpt)
        .arg("--data-dir")
        .arg(&data)
        .args(args)
        .output()
        .unwrap();
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    let local = json_of(&local);
    for task in ["arc_easy", "winogrande"] {
        let (a, b) = (&cluster["results"][task], &local["results"][task]);
        for (k, v) in b.as_object().unwrap() {
            match v.as_f64() {
                Some(x) => assert!((a[k].as_f64().unwrap() - x).abs() < 1e-12, "{task} {k}: {} vs {x}", a[k]),
                None => assert_eq!(&a[k], v, "{task} {k}"),
            }
        }
        assert_eq!(cluster["n-samples"][task], local["n-samples"][task]);
        assert_eq!(cluster["n-shot"][task], serde_json::json!(2));
        let (mine, theirs) = (cluster["samples"][task].as_array().unwrap(), local["samples"][task].as_array().unwrap());
        assert_eq!(mine.len(), theirs.len());
        for (m, l) in mine.iter().zip(theirs) {
            assert_eq!((&m["doc"], &m["pred"], &m["gold"]), (&l["doc"], &l["pred"], &l["gold"]));
            let (max, _) = diff(&floats(&m["loglikelihoods"]), &floats(&l["loglikelihoods"]));
            assert!(max < 1e-4, "{task} doc {}: {max}", m["doc"]);
        }
    }

    // a bad row is the submitter's error, before anything is leased
    std::fs::write(data.join("arc_easy.jsonl"), "{\"context\": \"Q\", \"choices\": [\"a\"], \"gold\": 0}\n").unwrap();
    let bad = lehr()
        .args(["eval", "tasks", "--coordinator", &url, "--checkpoint"])
        .arg(&ckpt)
        .arg("--data-dir")
        .arg(&data)
        .args(["--tasks", "arc_easy", "-o"])
        .arg(dir.path().join("bad.json"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("arc_easy.jsonl:1"));
}
