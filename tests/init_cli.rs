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

#[test]
fn init_inherits_the_blocks_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = demo_token_shards(dir.path());
    let reference = dir.path().join("reference");
    train_demo(&tokens, &reference, "40");
    let ref4 = dir.path().join("ref4");
    let grown = lehr()
        .args(["grow", "layers", "--map", "0,1,1,0", "-o"])
        .arg(&ref4)
        .arg(reference.join("checkpoints/step-00000040"))
        .output()
        .unwrap();
    assert!(grown.status.success(), "{}", String::from_utf8_lossy(&grown.stderr));

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
        .arg(reference.join("checkpoints/step-00000040/model.safetensors"))
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
