//! `lehr grow dus|layers` on a real model (SmolLM2-135M, 30 blocks, imported from its published
//! GGUF): SOLAR's depth up-scaling with 10 blocks dropped at the seam gives 40 blocks whose
//! block k is the mapped source block tensor for tensor (checked with the safetensors package);
//! transformers loads the result with `num_hidden_layers = 40`, and its log-probabilities of a
//! text equal lehr's own model's on the same checkpoint. An explicit map keeps the first ten
//! blocks (Inheritune's start); `--identity` growth (repeats with zero output projections)
//! leaves the log-probabilities unchanged. Bad maps are refused naming the problem.

mod common;

use common::llm::*;
use common::*;

const TEXT: &str = "The model reads text, one token after another, and guesses the next.";

/// lehr's log-likelihood of TEXT after the end-of-text token (a `loglikelihood` task file).
fn lehr_loglikelihood(dir: &std::path::Path, ckpt: &std::path::Path) -> f64 {
    let data = dir.join("ll-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("text.jsonl"), serde_json::json!({ "text": TEXT }).to_string() + "\n").unwrap();
    let task = dir.join("text.toml");
    std::fs::write(
        &task,
        "name = \"text\"\noutput_type = \"loglikelihood\"\ndoc_to_text = \"\"\ndoc_to_target = \"{{text}}\"\nmetrics = [\"perplexity\"]\n",
    )
    .unwrap();
    let run = lehr()
        .args(["eval", "tasks", "--json", "--device", "cpu", "--tasks"])
        .arg(&task)
        .arg("--checkpoint")
        .arg(ckpt)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    json_of(&run)["samples"]["text"][0]["loglikelihoods"][0].as_f64().unwrap()
}

#[test]
fn depth_up_scaling_copies_blocks_and_transformers_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let src = import_smollm2(dir.path());

    let dus = dir.path().join("dus");
    let run = lehr().args(["grow", "dus", "--drop", "10", "--json", "-o"]).arg(&dus).arg(&src).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report = json_of(&run);
    assert_eq!((report["layers_before"].as_u64(), report["layers_after"].as_u64()), (Some(30), Some(40)));
    let map: Vec<u64> = report["map"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let want: Vec<u64> = (0..20).chain(10..30).collect();
    assert_eq!(map, want);
    let (before, after) = (report["parameters_before"].as_u64().unwrap(), report["parameters_after"].as_u64().unwrap());
    let per_block = (after - before) / 10;
    assert_eq!(after - before, 10 * per_block, "ten more blocks");

    // block k is source block map[k], tensor for tensor and byte for byte; nothing else changed
    let script = r#"
import json, sys
from safetensors.numpy import load_file
src, out, mapping = load_file(sys.argv[1]), load_file(sys.argv[2]), json.loads(sys.argv[3])
bad = []
for name, t in out.items():
    if name.startswith("model.layers."):
        k, rest = name[len("model.layers."):].split(".", 1)
        ref = src[f"model.layers.{mapping[int(k)]}.{rest}"]
    else:
        ref = src[name]
    if ref.dtype != t.dtype or ref.shape != t.shape or not (ref == t).all():
        bad.append(name)
print(json.dumps({"tensors": len(out), "source": len(src), "bad": bad}))
"#;
    let check = std::process::Command::new(venv_python())
        .args(["-c", script])
        .arg(src.join("model.safetensors"))
        .arg(dus.join("model.safetensors"))
        .arg(serde_json::to_string(&map).unwrap())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let c: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(c["bad"], serde_json::json!([]), "{c}");
    // nine tensors per block (norms, q k v o, gate up down), ten blocks more
    assert_eq!(c["tensors"].as_u64().unwrap(), c["source"].as_u64().unwrap() + 10 * 9, "{c}");

    // transformers loads it, 40 layers deep, and computes what lehr computes
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dus.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 40);
    let hf = hf_run(&dus, &format!("<|endoftext|>{TEXT}"), 0, "");
    let theirs: f64 = floats(&hf["logprobs"]).iter().sum();
    let ours = lehr_loglikelihood(dir.path(), &dus);
    eprintln!("log p(text): lehr {ours:.5}, transformers {theirs:.5} on the 40-block model");
    assert!((ours - theirs).abs() < 2e-3, "lehr {ours} vs transformers {theirs}");

    // an explicit map: the first ten blocks
    let first = dir.path().join("first10");
    let run = lehr().args(["grow", "layers", "--map", "0-9", "--json", "-o"]).arg(&first).arg(&src).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(json_of(&run)["layers_after"], 10);
    let ten = hf_run(&first, TEXT, 0, "");
    assert_eq!(floats(&ten["logprobs"]).len(), floats(&hf_run(&src, TEXT, 0, "")["logprobs"]).len());

    // identity growth: a repeated block with zero output projections adds nothing, so the
    // grown model's log-probabilities are the source's
    let ident = dir.path().join("identity");
    let run = lehr()
        .args(["grow", "layers", "--map", "0-29,29,29", "--identity", "-o"])
        .arg(&ident)
        .arg(&src)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(ident.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["num_hidden_layers"], 32);
    let (grown, orig) = (hf_run(&ident, TEXT, 0, ""), hf_run(&src, TEXT, 0, ""));
    let (max, _) = diff(&floats(&grown["logprobs"]), &floats(&orig["logprobs"]));
    eprintln!("identity growth 30 -> 32 blocks: log-probabilities move by at most {max:.1e}");
    assert!(max < 1e-5, "{max}");

    // a source in transformers' sharded layout (index + shards) gives the same model
    let sharded = dir.path().join("sharded");
    let script = "import sys, torch\nfrom transformers import AutoModelForCausalLM\n\
                  m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)\n\
                  m.save_pretrained(sys.argv[2], max_shard_size='100MB')\n";
    let save = std::process::Command::new(venv_python()).args(["-c", script]).arg(&src).arg(&sharded).output().unwrap();
    assert!(save.status.success(), "{}", String::from_utf8_lossy(&save.stderr));
    assert!(sharded.join("model.safetensors.index.json").exists() && !sharded.join("model.safetensors").exists());
    let from_shards = dir.path().join("first10-sharded");
    let run = lehr().args(["grow", "layers", "--map", "0-9", "-o"]).arg(&from_shards).arg(&sharded).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let same =
        "import sys\nfrom safetensors.numpy import load_file\na, b = load_file(sys.argv[1]), load_file(sys.argv[2])\n\
                assert sorted(a) == sorted(b), (sorted(a), sorted(b))\n\
                assert all((a[k].astype('float32') == b[k].astype('float32')).all() for k in a)\n";
    let cmp = std::process::Command::new(venv_python())
        .args(["-c", same])
        .arg(first.join("model.safetensors"))
        .arg(from_shards.join("model.safetensors"))
        .output()
        .unwrap();
    assert!(cmp.status.success(), "sharded source: {}", String::from_utf8_lossy(&cmp.stderr));
    // and lehr's model loader reads the shards (for [init], a teacher, lehr eval): the same
    // log-likelihoods as the single-file checkpoint's
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), sharded.join(f)).unwrap();
    }
    let lls = |ckpt: &std::path::Path| -> Vec<f64> {
        let out = lehr()
            .args(["eval", "tasks", "--tasks", "arc_easy", "--limit", "5", "--device", "cpu", "--json", "--data-dir"])
            .arg(repo().join("examples/data/eval"))
            .arg("--checkpoint")
            .arg(ckpt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["samples"]["arc_easy"].as_array().unwrap().iter().flat_map(|s| floats(&s["loglikelihoods"])).collect()
    };
    let (a, b) = (lls(&src), lls(&sharded));
    assert_eq!(a.len(), 20);
    assert_eq!(a, b, "the sharded checkpoint computes what the single file does");

    // refusals name the problem
    for (args, why) in [
        (vec!["grow", "dus", "--drop", "30"], "give 1 to 29"),
        (vec!["grow", "layers", "--map", "0-30"], "past the source's 30 blocks"),
        (vec!["grow", "layers", "--map", "5-2"], "backwards"),
    ] {
        let out = lehr().args(&args).arg("-o").arg(dir.path().join("bad")).arg(&src).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
