"""A published GGUF through `lehr import gguf`, then transformers on the import against llama.cpp
on the original: tokens, greedy continuation and teacher-forced log-probabilities over held-out
text. (tests/real_model_cli.rs does this for SmolLM2 in CI; this is the same check for the
larger Qwen2.5-Coder-0.5B, run by scripts/bench_export.sh.)

Usage: python benches/real_roundtrip.py ORIGINAL_GGUF IMPORTED_DIR [--json]
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
GREEDY = 16


def main():
    original, ckpt = sys.argv[1], sys.argv[2]
    text = json.loads((REPO / "examples/data/en.jsonl").read_text().splitlines()[3])["text"][:900]
    ll = json.loads(subprocess.run(["node", str(REPO / "scripts/llama/logprobs.mjs"), original, text, str(GREEDY)],
                                   check=True, capture_output=True, text=True).stdout)
    tok = AutoTokenizer.from_pretrained(ckpt)
    ids = tok.encode(text, add_special_tokens=False)
    m = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    with torch.no_grad():
        lp = torch.log_softmax(m(torch.tensor([ids])).logits[0].double(), -1)
        greedy = m.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            max_new_tokens=GREEDY, do_sample=False)[0][len(ids):].tolist()
    hf = [lp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    d = [abs(a - b) for a, b in zip(hf, ll["logprobs"])]
    same_prefix = next((i for i, (a, b) in enumerate(zip(greedy, ll["greedy"])) if a != b), GREEDY)
    # where the continuations part, how far apart transformers puts the two choices: a near-tie
    # (llama.cpp rounds activations to 8 bits in quantized products) is no disagreement
    margin = None
    if same_prefix < GREEDY:
        with torch.no_grad():
            ctx = torch.tensor([ids + greedy[:same_prefix]])
            last = torch.log_softmax(m(ctx).logits[0, -1].double(), -1)
        margin = (last[greedy[same_prefix]] - last[ll["greedy"][same_prefix]]).item()
    out = {
        "tokens_equal": ids == ll["tokens"],
        "tokens": len(ids),
        "greedy_equal_prefix": same_prefix,
        "greedy": GREEDY,
        "margin_at_divergence": margin,
        "max_abs_diff": max(d),
        "mean_abs_diff": sum(d) / len(d),
        "ppl_transformers": math.exp(-sum(hf) / len(hf)),
        "ppl_llama_cpp": math.exp(-sum(ll["logprobs"]) / len(hf)),
    }
    if "--json" in sys.argv:
        print(json.dumps(out, indent=2))
    else:
        print(f"{Path(original).name}: tokens equal {out['tokens_equal']} ({out['tokens']}), greedy continuation "
              f"equal for {same_prefix}/{GREEDY} tokens"
              f"{'' if margin is None else f' (then a near-tie: {margin:.3f} nats apart)'}, log-probs max |Δ| {out['max_abs_diff']:.4f} mean "
              f"{out['mean_abs_diff']:.4f} nats, perplexity transformers {out['ppl_transformers']:.3f} / llama.cpp "
              f"{out['ppl_llama_cpp']:.3f}")
    if not (out["tokens_equal"] and (margin is None or margin < 0.25) and out["mean_abs_diff"] < 0.15):
        sys.exit(1)


if __name__ == "__main__":
    main()
