//! The built-in task definitions for other datasets' formats — KoBEST BoolQ, C-Eval, CMMLU,
//! OpenBookQA, SciQ, WinoGrande (partial scoring) and LAMBADA (greedy match, perplexity) —
//! against lm-evaluation-harness running its own task YAMLs (read from the installed package,
//! only the dataset location rewritten to local files) on the same rows, two-shot: every prompt
//! equals lm-eval's character for character (few-shot examples included), every
//! log-likelihood agrees to 1e-3 and every metric to 1e-4. The model is SmolLM2-135M,
//! imported from its published GGUF; the rows are `examples/data/eval/formats/`.

mod common;

use common::llm::*;
use common::*;
use std::path::Path;

/// (our task, lm-eval's YAML under lm_eval/tasks, helper file its `!function`s need, whether
/// the few-shot examples come from a separate split)
const TASKS: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    ("kobest_boolq", "kobest/kobest_boolq.yaml", Some("kobest/utils.py"), Some("train")),
    ("ceval", "ceval/_default_ceval_yaml", None, Some("dev")),
    ("cmmlu", "cmmlu/_default_template_yaml", None, Some("dev")),
    ("openbookqa", "openbookqa/openbookqa.yaml", None, Some("train")),
    ("sciq", "sciq/sciq.yaml", None, Some("train")),
    ("winogrande", "winogrande/default.yaml", Some("winogrande/preprocess_winogrande.py"), Some("train")),
    ("lambada_openai", "lambada/lambada_openai.yaml", None, None),
];

/// lm-eval's own YAML with the dataset and splits pointed at our files.
fn local_yaml(official: &str, name: &str, data: &Path, fewshot: Option<&str>) -> String {
    let drop = [
        "task",
        "tag",
        "dataset_path",
        "dataset_name",
        "training_split",
        "validation_split",
        "test_split",
        "fewshot_split",
        "include",
    ];
    let mut out = Vec::new();
    let mut skipping = false;
    for line in official.lines() {
        if !line.starts_with([' ', '-']) {
            let key = line.split(':').next().unwrap_or("").trim();
            skipping = drop.contains(&key);
        }
        // `hf_evaluate` would fetch the `evaluate` metric from the hub; lm-eval's own f1 is offline
        if !skipping && !line.trim_start().starts_with("hf_evaluate") {
            out.push(line.to_string());
        }
    }
    let file = |split: &str| data.join(format!("{name}{split}.jsonl")).display().to_string();
    let mut head = vec![
        format!("task: lehr_{name}"),
        "dataset_path: json".into(),
        "dataset_kwargs:".into(),
        "  data_files:".into(),
        format!("    test: {}", file("")),
        "test_split: test".into(),
    ];
    match fewshot {
        Some(split) => {
            head.insert(5, format!("    {split}: {}", file(&format!("_{split}"))));
            head.push(format!("fewshot_split: {split}"));
        }
        // from the evaluated rows, never a row as its own example (lehr's default)
        None => head.push("fewshot_split: test".into()),
    }
    head.extend(out);
    head.join("\n") + "\n"
}

#[test]
fn builtin_formats_build_lm_evals_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("examples/data/eval/formats");
    let ckpt = import_smollm2(dir.path());
    let names: Vec<&str> = TASKS.iter().map(|t| t.0).collect();

    let ours = lehr()
        .args(["eval", "tasks", "--json", "--device", "cpu", "--num-fewshot", "2", "--tasks", &names.join(",")])
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    let ours = json_of(&ours);

    let lm_tasks = dir.path().join("lm_eval_tasks");
    std::fs::create_dir(&lm_tasks).unwrap();
    let lib = venv_python().parent().unwrap().parent().unwrap().join("lib/python3.11/site-packages/lm_eval/tasks");
    for (name, yaml, helper, fewshot) in TASKS {
        let official = std::fs::read_to_string(lib.join(yaml)).unwrap();
        std::fs::write(lm_tasks.join(format!("lehr_{name}.yaml")), local_yaml(&official, name, &data, *fewshot))
            .unwrap();
        if let Some(h) = helper {
            let to = lm_tasks.join(Path::new(h).file_name().unwrap());
            std::fs::copy(lib.join(h), to).unwrap();
        }
    }
    let out = dir.path().join("lm_eval_out");
    let lm_names: Vec<String> = names.iter().map(|n| format!("lehr_{n}")).collect();
    let lm = lm_eval(&ckpt, &lm_tasks, &lm_names.join(","), &out, &["--num_fewshot", "2"]);
    let theirs = lm.results();

    for name in &names {
        let lm_name = format!("lehr_{name}");
        let samples = lm.samples(&lm_name);
        let mine = ours["samples"][name].as_array().unwrap();
        assert_eq!(samples.len(), mine.len(), "{name}");
        let mut worst = 0.0f64;
        for (s, m) in samples.iter().zip(mine) {
            assert_eq!(lehr_prompts(m), lm_eval_prompts(s), "{name} doc {}: the prompts differ", s["doc_id"]);
            for (a, b) in floats(&m["loglikelihoods"]).iter().zip(lm_eval_loglikelihoods(s)) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst < 1e-3, "{name}: log-likelihoods differ by {worst}");
        let mut metrics = 0;
        for (key, v) in theirs["results"][&lm_name].as_object().unwrap() {
            let Some(b) = v.as_f64() else { continue };
            if key.contains("_stderr") && !ours["results"][name][key].is_f64() {
                // lehr gives no bootstrap errors (perplexity, F1); lm-eval's are resampled
                continue;
            }
            let a = ours["results"][name][key].as_f64().unwrap_or_else(|| panic!("{name}: no {key} in ours"));
            eprintln!("{name} {key}: lehr {a:.4}, lm-eval {b:.4}");
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{name} {key}: lehr {a}, lm-eval {b}");
            metrics += 1;
        }
        assert!(metrics >= 2, "{name}: compared only {metrics} metrics");
        eprintln!("{name}: {} rows, prompts equal, log-likelihoods within {worst:.1e}", mine.len());
    }
}
