//! A run that starts from another model (`[init]`, Inheritune's start): a reference trained by
//! lehr on the demo data is stacked into four blocks (`lehr grow layers --map 0,1,1,0`), and a
//! run with `[init] layers = "2..4"` takes its embeddings, blocks 2 and 3, final norm and head.
//! The demo's first step has learning rate 0 (linear warmup from 0), so the checkpoint after it
//! holds exactly the initial weights: block 0 is the reference's block 1 and block 1 its block 0,
//! byte for byte, and the first loss is the reference's, not a random model's. A model of
//! another vocabulary, or `--model` beside `[init]`, is refused saying why.

mod common;

use common::llm::*;
use common::*;
use std::path::Path;

use serde_json::Value;

fn spec_with_init(dir: &Path, init: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/mix-demo.toml"))
        .unwrap()
        .replace("data-dir = \"data/eval\"", &format!("data-dir = {:?}", repo().join("examples/data/eval")));
    let path = dir.join(format!("init-{}.toml", init.len()));
    std::fs::write(&path, format!("{text}\n{init}\n")).unwrap();
    path
}

fn train(spec: &Path, tokens: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    lehr()
        .args(["train", "run", "--device", "cpu", "--json", "--stop-at", "1", "--data"])
        .arg(tokens)
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg(spec)
        .output()
        .unwrap()
}

/// A reference lehr trains on the demo data for `steps` steps (2 blocks), stacked into four
/// blocks by `lehr grow layers --map MAP`: `dir/ref4`.
fn four_block_reference(dir: &Path, tokens: &Path, steps: u32, map: &str) -> std::path::PathBuf {
    let reference = dir.join("reference");
    train_demo(tokens, &reference, &steps.to_string());
    let ref4 = dir.join("ref4");
    let grown = lehr()
        .args(["grow", "layers", "--map", map, "-o"])
        .arg(&ref4)
        .arg(reference.join(format!("checkpoints/step-{steps:08}")))
        .output()
        .unwrap();
    assert!(grown.status.success(), "{}", String::from_utf8_lossy(&grown.stderr));
    ref4
}

#[test]
fn init_inherits_the_blocks_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let ref4 = four_block_reference(dir.path(), &tokens, 40, "0,1,1,0");

    let spec = spec_with_init(dir.path(), &format!("[init]\nfrom = {:?}\nlayers = \"2..4\"", ref4));
    let out = dir.path().join("student");
    let run = train(&spec, &tokens, &out, &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let steps: Vec<Value> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .collect();
    assert_eq!(steps[0]["lr"].as_f64(), Some(0.0), "the premise: step 0 changes nothing");
    let ckpt = out.join("checkpoints/step-00000001");
    let config: Value = serde_json::from_slice(&std::fs::read(ckpt.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 2);

    // block 0 = ref4 block 2 = the reference's block 1; block 1 = ref4 block 3 = its block 0
    let script = r#"
import json, sys
from safetensors.numpy import load_file
ref, got = load_file(sys.argv[1]), load_file(sys.argv[2])
mapping = {0: 1, 1: 0}
bad = []
for name, t in got.items():
    src = name
    if name.startswith("model.layers."):
        k, rest = name[len("model.layers."):].split(".", 1)
        src = f"model.layers.{mapping[int(k)]}.{rest}"
    r = ref[src]
    if r.shape != t.shape or not (r.astype("float32") == t.astype("float32")).all():
        bad.append(name)
print(json.dumps({"tensors": len(got), "bad": bad}))
"#;
    let check = std::process::Command::new(venv_python())
        .args(["-c", script])
        .arg(dir.path().join("reference").join("checkpoints/step-00000040/model.safetensors"))
        .arg(ckpt.join("model.safetensors"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let c: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(c["bad"], serde_json::json!([]), "{c}");

    // the first loss is a trained model's (the reference's last was ~7.5), not a random one's
    // (ln 8000 = 8.99)
    let fresh = train(&spec_with_init(dir.path(), ""), &tokens, &dir.path().join("fresh"), &["--model", "tiny"]);
    assert!(fresh.status.success(), "{}", String::from_utf8_lossy(&fresh.stderr));
    let fresh_loss = String::from_utf8(fresh.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "step")
        .unwrap()["loss"]
        .as_f64()
        .unwrap();
    let inherited = steps[0]["loss"].as_f64().unwrap();
    eprintln!("first loss: inherited {inherited:.3}, fresh {fresh_loss:.3}");
    assert!(inherited < fresh_loss - 0.5, "inherited {inherited} vs fresh {fresh_loss}");

    // refusals
    let smol = import_smollm2(dir.path());
    let bad = train(
        &spec_with_init(dir.path(), ""),
        &tokens,
        &dir.path().join("bad1"),
        &["--init-from", smol.to_str().unwrap()],
    );
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("49152 tokens") && err.contains("tokenizer 8000"), "{err}");
    let both = train(&spec, &tokens, &dir.path().join("bad2"), &["--model", "small"]);
    assert_eq!(both.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("drop --model"),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
}

/// A small three-stage spec over the demo shards (2 steps of 2,048 tokens per stage).
fn staged_spec(dir: &Path, name: &str, stage_extra: [&str; 3], tables: &str) -> std::path::PathBuf {
    let mut text = String::from(
        "version = 1\nseed = 2\nsequence-length = 256\nglobal-batch-tokens = 2048\n[lr]\npeak = 3e-3\n\
         [sources.en]\npath = \"lang=en\"\n[sources.ko]\npath = \"lang=ko\"\n",
    );
    for (i, extra) in stage_extra.iter().enumerate() {
        let lr = if i == 2 { "{ phase = \"decay\" }" } else { "{ phase = \"stable\" }" };
        text.push_str(&format!(
            "[[stage]]\nname = \"s{i}\"\ntokens = 4096\nlr = {lr}\nratios = {{ en = 0.5, ko = 0.5 }}\n{extra}\n"
        ));
    }
    text.push_str(tables);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_full(spec: &Path, tokens: &Path, out: &Path, extra: &[&str]) -> (std::process::Output, Vec<Value>) {
    let run = lehr()
        .args(["train", "run", "--device", "cpu", "--json", "--eval-every", "2", "--eval-tokens", "4096", "--data"])
        .arg(tokens)
        .arg("--eval-data")
        .arg(tokens)
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg(spec)
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .collect();
    (run, events)
}

/// The recipe keys from the command line: `[init]` takes 2 of a 4-block reference, stages grow
/// it to 3 and 4 blocks with the reference's next blocks, the last stage distills from it (the
/// teacher named relative to the spec), and `lehr eval compare` draws it against a scratch run.
#[test]
fn growth_and_distillation_stages_run_from_the_cli_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let ref4 = four_block_reference(dir.path(), &tokens, 20, "0,1,0,1");
    let tables = format!(
        "[init]\nfrom = {:?}\nlayers = \"0..2\"\n[distill]\nteacher = \"ref4\"\nalpha = 0.5\nstages = [\"s2\"]\n",
        ref4
    );
    let spec = staged_spec(dir.path(), "recipe", ["", "layers = 3", "layers = 4"], &tables);
    let out = dir.path().join("recipe");
    let (run, steps) = run_full(&spec, &tokens, &out, &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(steps.len(), 6);
    for s in &steps {
        assert_eq!(s["kd_loss"].is_f64(), s["stage"] == "s2", "KD only in s2: {s}");
    }
    let growth: Vec<Value> = std::fs::read_to_string(out.join("growth.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(u64, u64, u64, Value)> = growth
        .iter()
        .map(|g| {
            (
                g["step"].as_u64().unwrap(),
                g["from_layers"].as_u64().unwrap(),
                g["to_layers"].as_u64().unwrap(),
                g["source_blocks"].clone(),
            )
        })
        .collect();
    assert_eq!(got, vec![(2, 2, 3, serde_json::json!([2, 3])), (4, 3, 4, serde_json::json!([3, 4]))]);
    let last: Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoints/step-00000006/config.json")).unwrap()).unwrap();
    assert_eq!(last["num_hidden_layers"], 4);

    let scratch_spec = staged_spec(dir.path(), "scratch", ["", "", ""], "");
    let scratch = dir.path().join("scratch");
    let (run, _) = run_full(&scratch_spec, &tokens, &scratch, &["--model", "tiny", "--layers", "4"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let cmp = lehr()
        .args(["eval", "compare", "--labels", "recipe,scratch", "--json", "-o"])
        .arg(dir.path())
        .arg(&out)
        .arg(&scratch)
        .output()
        .unwrap();
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stderr));
    let v: Value = serde_json::from_slice(&cmp.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!((runs[0]["run"].as_str(), runs[0]["tokens"].as_u64()), (Some("recipe"), Some(6 * 2048)));
    for r in runs {
        for src in ["held-out en", "held-out ko"] {
            let loss = r["final"][src].as_f64().unwrap();
            assert!(loss.is_finite() && loss > 0.0, "{r}");
        }
        assert_eq!(r["stages"].as_array().unwrap().len(), 3);
    }
    assert_ne!(runs[0]["final"], runs[1]["final"]);
    assert!(std::fs::read(dir.path().join("compare.png")).unwrap().starts_with(b"\x89PNG"));

    // Growth without [init] must say how the new blocks start; the error names stage and key.
    let bad = staged_spec(dir.path(), "bad", ["", "layers = 5", ""], "");
    let (run, _) = run_full(&bad, &tokens, &dir.path().join("bad"), &["--model", "tiny"]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("stage[1] \"s1\".grow") && err.contains("copy-last"), "{err}");
}
