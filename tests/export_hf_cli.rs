//! `lehr export gguf` on checkpoints transformers itself saved: a Qwen3 (q/k norms, no biases,
//! an explicit head_dim) and a Llama (q/k permuted to llama.cpp's rotary layout), built by
//! transformers with a large initializer range so attention is sharp and a wrong permutation or
//! a missing norm would show, saved with `save_pretrained` (transformers 5's config keys), with
//! the demo tokenizer beside them. llama.cpp on our F32 file gives transformers' log-probs; the
//! file imported back gives them exactly.

mod common;

use std::path::Path;

use common::llm::*;
use common::*;

const TEXT: &str = "The model reads text. 你好，世界！这是一个测试。 안녕하세요, 세계. Hello again, world 2024.";

fn save_random(kind: &str, dir: &Path) {
    let script = r#"
import sys, shutil, torch
from transformers import AutoConfig, AutoModelForCausalLM
kind, out, tok = sys.argv[1], sys.argv[2], sys.argv[3]
common = dict(vocab_size=8192, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, tie_word_embeddings=False)
if kind == "qwen3":
    cfg = AutoConfig.for_model("qwen3", head_dim=16, rms_norm_eps=1e-6, rope_theta=10000.0, **common)
else:
    cfg = AutoConfig.for_model("llama", rms_norm_eps=1e-5, rope_theta=10000.0, **common)
torch.manual_seed(0)
m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
with torch.no_grad():
    for n, p in m.named_parameters():
        if "norm" in n:  # norms away from 1, so a dropped or misnamed norm shows
            p.copy_(1 + 0.5 * torch.randn_like(p))
m.save_pretrained(out)
shutil.copy(tok, out + "/tokenizer.json")
"#;
    let out = std::process::Command::new(venv_python())
        .args(["-c", script, kind])
        .arg(dir)
        .arg(repo().join("examples/tokenizer/lehr-demo-8k.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn llama_cpp_runs_qwen3_and_llama_checkpoints_transformers_saved() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["qwen3", "llama"] {
        let ckpt = dir.path().join(kind);
        save_random(kind, &ckpt);
        let hf = hf_run(&ckpt, TEXT, 0, "");
        let gguf = dir.path().join(format!("{kind}-f32.gguf"));
        let exp =
            lehr().args(["export", "gguf", "--json", "--type", "f32", "-o"]).arg(&gguf).arg(&ckpt).output().unwrap();
        assert!(exp.status.success(), "{kind}: {}", String::from_utf8_lossy(&exp.stderr));
        assert_eq!(json_of(&exp)["files"][0]["architecture"], kind);
        let ll = llama_run(&gguf, TEXT, 0);
        assert_eq!(ll["tokens"], hf["tokens"], "{kind}: tokens");
        let (max, mean) = diff(&floats(&ll["logprobs"]), &floats(&hf["logprobs"]));
        let spread = floats(&hf["logprobs"]).iter().map(|v| v.abs()).fold(0.0, f64::max);
        eprintln!(
            "{kind}: llama.cpp vs transformers max |Δ| {max:.5}, mean {mean:.5} (log-probs down to -{spread:.1})"
        );
        // (llama.cpp keeps its KV cache in F16, and these logits are large: a few 1e-3. The same
        // Llama with q/k left in the wrong layout differs by 1.55 nats on average, 5.5 at most:
        // measured once by hand, see docs/export.md)
        assert!(max < 0.02 && mean < 5e-3, "{kind}: max |Δ| {max}, mean {mean}");

        let back = dir.path().join(format!("{kind}-imported"));
        let imp = lehr().args(["import", "gguf", "-o"]).arg(&back).arg(&gguf).output().unwrap();
        assert!(imp.status.success(), "{kind}: {}", String::from_utf8_lossy(&imp.stderr));
        let again = hf_run(&back, TEXT, 0, "");
        let (max, _) = diff(&floats(&again["logprobs"]), &floats(&hf["logprobs"]));
        assert!(max < 1e-5, "{kind}: the import gives transformers the original's log-probs (max |Δ| {max})");
    }
}
