"""Training throughput: lehr's trainer against a PyTorch eager loop of the same model.

The PyTorch side is transformers' Qwen2ForCausalLM (the reference lehr's model is checked
against, tests/hf_parity.rs) with the same shape, batch, sequence length and AdamW, in float32
on the same device; lehr runs `lehr train run` over real token shards. Both report tokens/s
after a warm-up; the ratio is lehr / PyTorch.

Usage: python benches/torch_train.py LEHR TOKENS_DIR SPEC WORK [--device cpu|cuda] [--steps N] [--json]
Run by scripts/bench_train.sh.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

# lehr's `small` preset (workers/train/src/model.rs) with the demo tokenizer's 8,000 ids.
SHAPE = dict(vocab_size=8000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6,
             tie_word_embeddings=True, max_position_embeddings=4096)
SEQ, BATCH, WARMUP = 256, 8, 3


def torch_run(device, steps):
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPE, attn_implementation="sdpa")).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for step in range(steps):
        ids = torch.randint(0, SHAPE["vocab_size"], (BATCH, SEQ + 1), device=device)
        t0 = time.perf_counter()
        logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, SHAPE["vocab_size"]).float(), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= WARMUP:
            times.append(time.perf_counter() - t0)
    return BATCH * SEQ / statistics.median(times)


def lehr_run(lehr, tokens, spec, work, device, steps):
    out = work / "lehr-run"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    res = subprocess.run(
        [lehr, "train", "run", str(spec), "--data", str(tokens), "--model", "small", "--out", str(out),
         "--stop-at", str(steps), "--micro-batch", str(BATCH), "--device", device, "--json"],
        check=True, capture_output=True, text=True)
    rates = [json.loads(l)["tokens_per_s"] for l in res.stdout.splitlines()][WARMUP:]
    return statistics.median(rates)


def main():
    lehr, tokens, spec, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 15
    work.mkdir(parents=True, exist_ok=True)
    pt = torch_run(device, steps)
    lr = lehr_run(lehr, tokens, spec, work, device, steps)
    res = {"device": device, "threads": torch.get_num_threads(), "model": "small", "seq": SEQ, "batch": BATCH,
           "pytorch_eager_tokens_per_s": pt, "lehr_tokens_per_s": lr, "ratio": lr / pt}
    if "--json" in sys.argv:
        print(json.dumps(res, indent=1))
    else:
        print(f"train step, Qwen2 'small' (4 x 256, 8K vocab), batch {BATCH} x {SEQ}, {device}, {res['threads']} threads:")
        print(f"  PyTorch eager (transformers Qwen2, AdamW): {pt:8.0f} tokens/s")
        print(f"  lehr train run:                            {lr:8.0f} tokens/s")
        print(f"  ratio lehr / PyTorch eager:                {lr / pt:.2f}x")


if __name__ == "__main__":
    main()
