"""Training throughput: lehr's trainer against a PyTorch eager loop of the same model.

The PyTorch side is transformers' Qwen2ForCausalLM (the reference lehr's model is checked
against, tests/hf_parity.rs; without transformers, or with LEHR_EAGER=plain, the same
architecture in plain PyTorch from benches/eager_qwen2.py) with the same shape, batch, sequence length and AdamW, in float32
on the same device; lehr runs `lehr train run` over real token shards. Both report tokens/s
after a warm-up; the ratio is lehr / PyTorch.

Usage: python benches/torch_train.py LEHR TOKENS_DIR SPEC WORK [--device cpu|cuda] [--steps N] [--json]
       python benches/torch_train.py LEHR --preset NAME [lehr bench train options...]
Run by scripts/bench_train.sh. The second form runs `lehr bench train --preset NAME ... --json`
(random tokens, the trainer's step) and then the same shape, batch, sequence length and
precision (bf16 autocast on CUDA) in PyTorch eager, with each side's tokens/s, MFU and peak
memory.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import os

import torch

try:  # the reference implementation; machines without it (no network) use a plain-PyTorch copy
    if os.environ.get("LEHR_EAGER") == "plain":
        raise ImportError("LEHR_EAGER=plain")
    from transformers import Qwen2Config, Qwen2ForCausalLM
except ImportError:
    Qwen2Config = None
    sys.path.insert(0, str(Path(__file__).parent))
    from eager_qwen2 import Qwen2 as PlainQwen2


def make_model(cfg, device):
    """(model, name) with `model(ids)` giving logits: transformers' Qwen2 when installed."""
    if Qwen2Config is not None:
        m = Qwen2ForCausalLM(Qwen2Config(**cfg, attn_implementation="sdpa")).to(device)
        return (lambda ids: m(input_ids=ids).logits), m, "transformers Qwen2"
    m = PlainQwen2(cfg).to(device)
    return m, m, "plain PyTorch Qwen2 (benches/eager_qwen2.py)"

# lehr's `small` preset (workers/train/src/model.rs) with the demo tokenizer's 8,000 ids.
SHAPE = dict(vocab_size=8000, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6,
             tie_word_embeddings=True, max_position_embeddings=4096)
SEQ, BATCH, WARMUP = 256, 8, 3


def eager_tokens_per_s(forward, model, vocab, batch, seq, warmup, total, device, lr, bf16=False):
    """Median tokens/s of `total` AdamW training steps on random ids, timing those after `warmup`."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for step in range(total):
        ids = torch.randint(0, vocab, (batch, seq + 1), device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return batch * seq / statistics.median(times)


def torch_run(device, steps):
    torch.manual_seed(0)
    forward, model, _ = make_model(SHAPE, device)
    return eager_tokens_per_s(forward, model, SHAPE["vocab_size"], BATCH, SEQ, WARMUP, steps, device, lr=3e-3)


def lehr_run(lehr, tokens, spec, work, device, steps):
    out = work / "lehr-run"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    res = subprocess.run(
        [lehr, "train", "run", str(spec), "--data", str(tokens), "--model", "small", "--out", str(out),
         "--stop-at", str(steps), "--micro-batch", str(BATCH), "--device", device, "--json"],
        check=True, capture_output=True, text=True)
    lines = [json.loads(l) for l in res.stdout.splitlines()]
    rates = [m["tokens_per_s"] for m in lines if "tokens_per_s" in m][WARMUP:]
    return statistics.median(rates)


def preset_main():
    lehr = sys.argv[1]
    args = sys.argv[2:]
    report = json.loads(subprocess.run([lehr, "bench", "train", *[a for a in args if a != "--json"], "--json"],
                                       check=True, capture_output=True, text=True).stdout)
    m = report["model"]
    device = "cuda" if report["device"].startswith("Cuda") else "cpu"
    bf16 = report["precision"] == "bf16"
    if m["embedding_scale"] != 1.0 or m["logit_scale"] != 1.0 or m.get("depth_scale") or m["qk_norm"]:
        print("note: the PyTorch side has no µP knobs or QK-norm; they cost a few elementwise ops", file=sys.stderr)
    cfg = dict(vocab_size=m["vocab_size"], hidden_size=m["hidden_size"],
               intermediate_size=m["intermediate_size"], num_hidden_layers=m["num_hidden_layers"],
               num_attention_heads=m["num_attention_heads"], num_key_value_heads=m["num_key_value_heads"],
               rope_theta=m["rope_theta"], rms_norm_eps=m["rms_norm_eps"],
               tie_word_embeddings=m["tie_word_embeddings"], max_position_embeddings=m["max_position_embeddings"])
    torch.manual_seed(0)
    forward, model, impl = make_model(cfg, device)
    b, seq = report["micro_batch"], report["sequence_length"]
    steps = report["steps_timed"]
    warm = int(args[args.index("--warmup") + 1]) if "--warmup" in args else 3
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    pt = eager_tokens_per_s(forward, model, m["vocab_size"], b, seq, warm, warm + steps, device, lr=3e-4, bf16=bf16)
    if device == "cuda":
        pt_mem = torch.cuda.max_memory_allocated()
    else:
        import resource
        pt_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = report["mfu"] and report["achieved_tflops"] / report["mfu"]
    res = {"device": report["device"], "preset": report["preset"], "precision": report["precision"], "pytorch_model": impl,
           "seq": seq, "batch": b, "lehr": report, "pytorch_eager_tokens_per_s": pt,
           "pytorch_eager_mfu": (report["flops_per_token"] * pt / 1e12 / peak) if peak else None,
           "pytorch_eager_peak_memory_bytes": pt_mem, "ratio": report["tokens_per_s"] / pt}
    if "--json" in args:
        print(json.dumps(res, indent=1))
    else:
        print(f"train step, {report['preset']} ({report['parameters'] / 1e6:.1f}M), batch {b} x {seq}, "
              f"{report['device']} {report['precision']}:")
        print(f"  PyTorch eager ({impl}):")
        print(f"                                      {pt:10.0f} tokens/s  peak memory {pt_mem / 2**30:.2f} GiB")
        lm = report["peak_memory_bytes"]
        print(f"  lehr bench train:                   {report['tokens_per_s']:10.0f} tokens/s  peak memory "
              f"{(lm or 0) / 2**30:.2f} GiB ({report['memory_source']})")
        if report["mfu"]:
            print(f"  MFU: lehr {report['mfu'] * 100:.1f}%, PyTorch eager {res['pytorch_eager_mfu'] * 100:.1f}%")
        print(f"  ratio lehr / PyTorch eager:         {res['ratio']:.2f}x")


def main():
    if "--preset" in sys.argv:
        return preset_main()
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
