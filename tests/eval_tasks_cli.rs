//! `lehr eval tasks` against lm-evaluation-harness itself (0.4.13, set up by scripts/setup.sh,
//! run offline through a task YAML that points at the same file): a real model (SmolLM2-135M,
//! imported from its published GGUF) on the repo's ARC-Easy sample (60 questions, lm-eval's
//! prompt format). Every question's choice equals lm-eval's, every log-likelihood agrees to
//! 1e-3, and acc / acc_norm and their standard errors equal lm-eval's to 1e-4. A task file
//! reads the same data; a bad row is refused naming file and line. Three-shot contexts equal
//! lm-eval's character for character (its sampler, seed 1234). A checkpoint transformers saved
//! and a tiny model lehr trained on the demo data go through the same comparison, and the
//! run spec's `[eval]` scores during that training equal the checkpoint's; `lehr eval curve`
//! draws them.

mod common;

use common::llm::*;
use common::*;
use std::path::Path;

use serde_json::Value;

/// `lehr eval tasks` and lm-eval on `ckpt` over `data/arc_easy.jsonl` (the first `limit` rows,
/// `shots` few-shot examples drawn from the same file); asserts they agree — the same prompts,
/// choices and metrics — and returns lehr's JSON.
fn parity(dir: &Path, data: &Path, ckpt: &Path, tag: &str, shots: usize, limit: usize) -> Value {
    let results = dir.join(format!("{tag}-results.json"));
    let ours = lehr()
        .args(["eval", "tasks", "--json", "--device", "cpu", "--tasks", "arc_easy", "--checkpoint"])
        .arg(ckpt)
        .arg("--data-dir")
        .arg(data)
        .args(["--num-fewshot", &shots.to_string(), "--limit", &limit.to_string()])
        .arg("-o")
        .arg(&results)
        .output()
        .unwrap();
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    let ours = json_of(&ours);
    let written: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    assert_eq!(written["results"], ours["results"]);
    assert_eq!(written["n-samples"]["arc_easy"], serde_json::json!({"original": 60, "effective": limit}));
    assert_eq!(written["n-shot"]["arc_easy"], serde_json::json!(shots));

    // lm-eval on the same checkpoint and file
    let yaml = [
        "task: lehr_arc_easy".to_string(),
        "dataset_path: json".into(),
        "dataset_kwargs:".into(),
        "  data_files:".into(),
        format!("    test: {}", data.join("arc_easy.jsonl").display()),
        "test_split: test".into(),
        // few-shot examples from the evaluated file, never a row as its own (lehr's default)
        "fewshot_split: test".into(),
        "output_type: multiple_choice".into(),
        "doc_to_text: \"{{context}}\"".into(),
        "doc_to_choice: \"{{choices}}\"".into(),
        "doc_to_target: \"{{gold}}\"".into(),
        "metric_list:".into(),
        "  - {metric: acc, aggregation: mean, higher_is_better: true}".into(),
        "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}".into(),
    ]
    .join("\n");
    let tasks = dir.join(format!("{tag}-lm_eval_tasks"));
    std::fs::create_dir(&tasks).unwrap();
    std::fs::write(tasks.join("lehr_arc_easy.yaml"), yaml).unwrap();
    let out = dir.join(format!("{tag}-lm_eval_out"));
    let lm = lm_eval(
        ckpt,
        &tasks,
        "lehr_arc_easy",
        &out,
        &["--num_fewshot", &shots.to_string(), "--limit", &limit.to_string()],
    );
    let theirs = lm.results();
    for key in ["acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none"] {
        let (a, b) = (
            ours["results"]["arc_easy"][key].as_f64().unwrap(),
            theirs["results"]["lehr_arc_easy"][key].as_f64().unwrap(),
        );
        eprintln!("{tag} {key}: lehr {a:.4}, lm-eval {b:.4}");
        assert!((a - b).abs() < 1e-4, "{key}: lehr {a}, lm-eval {b}");
    }
    let samples = lm.samples("lehr_arc_easy");
    let mine = ours["samples"]["arc_easy"].as_array().unwrap();
    assert_eq!(samples.len(), mine.len());
    let mut worst = 0.0f64;
    for (s, m) in samples.iter().zip(mine) {
        let lls = lm_eval_loglikelihoods(s);
        let argmax = (0..lls.len()).fold(0, |b, i| if lls[i] > lls[b] { i } else { b });
        // the same prompts: few-shot examples, context and continuation, character for character
        assert_eq!(lehr_prompts(m), lm_eval_prompts(s), "{tag} doc {}: the prompts differ", s["doc_id"]);
        let pred = m["pred"].as_u64().unwrap() as usize;
        // the same choice, unless lm-eval's top two are within float noise of each other
        assert!(
            pred == argmax || (lls[pred] - lls[argmax]).abs() < 1e-3,
            "{tag} doc {}: {pred} vs {argmax}",
            s["doc_id"]
        );
        for (a, b) in floats(&m["loglikelihoods"]).iter().zip(&lls) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("{tag}: per-choice log-likelihoods max |Δ| {worst:.2e} over {} questions", mine.len());
    assert!(worst < 1e-3, "{tag}: max |Δ| {worst}");
    ours
}

#[test]
fn eval_tasks_scores_as_lm_eval_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(repo().join("examples/data/eval/arc_easy.jsonl"), data.join("arc_easy.jsonl")).unwrap();
    let ckpt = import_smollm2(dir.path());

    let ours = parity(dir.path(), &data, &ckpt, "smollm2", 0, 60);
    // few-shot: lm-eval's sampler (seed 1234), so the same examples before each question
    let shot = parity(dir.path(), &data, &ckpt, "smollm2-3shot", 3, 20);
    let prompt = shot["samples"]["arc_easy"][0]["arguments"][0][0].as_str().unwrap();
    assert_eq!(prompt.matches("Answer:").count(), 4, "three examples and the question: {prompt}");
    // a checkpoint transformers itself wrote (save_pretrained: its config keys, its safetensors)
    let saved = dir.path().join("transformers-saved");
    let script = "import sys\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\
                  m = AutoModelForCausalLM.from_pretrained(sys.argv[1])\nm.save_pretrained(sys.argv[2])\n\
                  AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])\n";
    let out = std::process::Command::new(venv_python()).args(["-c", script]).arg(&ckpt).arg(&saved).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    parity(dir.path(), &data, &saved, "transformers-saved", 0, 20);
    let mine = ours["samples"]["arc_easy"].as_array().unwrap();
    // a task file over the same rows gives the same numbers; a bad row names file and line
    let toml = dir.path().join("my_arc.toml");
    std::fs::write(&toml, "name = \"my_arc\"\ndataset = \"arc_easy.jsonl\"\ndoc_to_text = \"{{context}}\"\ndoc_to_choice = \"{{choices}}\"\ndoc_to_target = \"{{gold}}\"\n").unwrap();
    let file_run = lehr()
        .args(["eval", "tasks", "--json", "--device", "cpu", "--limit", "10", "--tasks"])
        .arg(&toml)
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(file_run.status.success(), "{}", String::from_utf8_lossy(&file_run.stderr));
    let f = json_of(&file_run);
    // (other batches, other padding widths: float noise only)
    for (a, b) in f["samples"]["my_arc"].as_array().unwrap().iter().zip(&mine[..10]) {
        assert_eq!((&a["pred"], &a["pred_norm"], &a["gold"]), (&b["pred"], &b["pred_norm"], &b["gold"]));
        let (max, _) = diff(&floats(&a["loglikelihoods"]), &floats(&b["loglikelihoods"]));
        assert!(max < 1e-4, "{max}");
    }
    let mut text = std::fs::read_to_string(data.join("arc_easy.jsonl")).unwrap();
    text.push_str("{\"context\": \"Question: ?\\nAnswer:\", \"choices\": [\"a\", \"b\"], \"gold\": 5}\n");
    std::fs::write(data.join("arc_easy.jsonl"), text).unwrap();
    let bad = lehr()
        .args(["eval", "tasks", "--device", "cpu", "--tasks", "arc_easy", "--checkpoint"])
        .arg(&ckpt)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("arc_easy.jsonl:61") && err.contains("past the 2 choices"), "{err}");

    // a model lehr trained on the demo data goes through the same comparison
    let tokens = demo_token_shards(dir.path());
    let run_dir = dir.path().join("run");
    train_demo(&tokens, &run_dir, "40");
    std::fs::copy(repo().join("examples/data/eval/arc_easy.jsonl"), data.join("arc_easy.jsonl")).unwrap();
    let tiny = parity(dir.path(), &data, &run_dir.join("checkpoints/step-00000040"), "lehr-tiny", 0, 60);

    // the run spec's [eval] scored the same task during training (at the warmup's end and at
    // the last step): the scores at step 40 are the checkpoint's, as lm-eval computes them
    let lines: Vec<Value> = std::fs::read_to_string(run_dir.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v.get("task").is_some())
        .collect();
    let steps: Vec<u64> = lines.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![22, 22, 40, 40], "{lines:?}");
    for v in &lines[2..] {
        let key = format!("{},none", v["metric"].as_str().unwrap());
        assert_eq!(v["value"].as_f64(), tiny["results"]["arc_easy"][&key].as_f64(), "{key}");
        assert_eq!((v["n"].as_u64(), v["stage"].as_str()), (Some(60), Some("stable")));
    }
    // and `lehr eval curve` draws them over the loss, stage boundaries marked
    let curve = lehr().args(["eval", "curve", "--json"]).arg(&run_dir).output().unwrap();
    assert!(curve.status.success(), "{}", String::from_utf8_lossy(&curve.stderr));
    let c = json_of(&curve);
    let stages: Vec<(&str, u64, u64)> = c["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["first_step"].as_u64().unwrap(), s["end_step"].as_u64().unwrap()))
        .collect();
    assert_eq!(stages, vec![("warmup", 0, 22), ("stable", 22, 40)]);
    assert_eq!(c["stages"][1]["at_end"]["arc_easy acc"], lines[2]["value"]);
    assert_eq!(c["train_loss"].as_array().unwrap().len(), 40);
    let svg = std::fs::read_to_string(run_dir.join("curve.svg")).unwrap();
    assert!(svg.contains("arc_easy acc_norm") && svg.contains(">stable<"), "{svg}");
    assert_eq!(&std::fs::read(run_dir.join("curve.png")).unwrap()[..4], b"\x89PNG");
}
