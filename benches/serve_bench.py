"""`lehr serve` generated tokens/s against transformers' `generate` on the same checkpoint and
device, at batch 1 and batch 16 (scripts/bench_serve.sh starts the server).

  serve_bench.py BASE_URL CHECKPOINT [--tokens 64] [--device cpu] [--json]
Greedy, `--tokens` new tokens per row, min_tokens-free: a row that ends early at EOS counts the
tokens it made. Both sides generate for the same prompts.
"""

import argparse
import json
import threading
import time

import openai
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("checkpoint")
ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--device", default="cpu")
ap.add_argument("--json", action="store_true")
a = ap.parse_args()

PROMPTS = [
    "The history of the printing press", "def quicksort(xs):", "In 1969, the first", "A recipe for bread:",
    "The three laws of motion", "Seoul is the capital of", "Photosynthesis is the process", "Dear hiring manager,",
    "The weather today is", "SELECT name FROM", "Once upon a time", "The stock market fell",
    "To install the package, run", "Water boils at", "The mitochondria is", "My favourite book is",
]
client = openai.OpenAI(base_url=a.url, api_key="unused", max_retries=0, timeout=3600)
model = client.models.list().data[0].id


def lehr(batch):
    results = [None] * batch

    def one(i):
        r = client.completions.create(model=model, prompt=PROMPTS[i], max_tokens=a.tokens, temperature=0)
        results[i] = r.usage.completion_tokens

    one(0)  # warm-up
    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - start
    return sum(results), secs


tok = AutoTokenizer.from_pretrained(a.checkpoint)
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
hf = AutoModelForCausalLM.from_pretrained(a.checkpoint, dtype=torch.float32).to(a.device).eval()


def transformers(batch):
    enc = tok(PROMPTS[:batch], return_tensors="pt", padding=True).to(a.device)
    with torch.no_grad():
        hf.generate(**enc, max_new_tokens=4, do_sample=False)  # warm-up
        start = time.perf_counter()
        g = hf.generate(**enc, max_new_tokens=a.tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        secs = time.perf_counter() - start
    new = g[:, enc.input_ids.shape[1]:]
    eos = hf.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    made = 0
    for row in new.tolist():
        n = 0
        for t in row:
            if t in eos:
                break
            n += 1
        made += n
    return made, secs


rows = []
for batch in (1, 16):
    lt, ls = lehr(batch)
    ht, hs = transformers(batch)
    rows.append({"batch": batch, "lehr_tokens": lt, "lehr_s": ls, "lehr_tok_s": lt / ls,
                 "transformers_tokens": ht, "transformers_s": hs, "transformers_tok_s": ht / hs,
                 "ratio": (lt / ls) / (ht / hs)})
if a.json:
    print(json.dumps({"device": a.device, "tokens": a.tokens, "rows": rows}, indent=2))
else:
    for r in rows:
        print(f"batch {r['batch']:>2}: lehr serve {r['lehr_tok_s']:8.1f} tok/s ({r['lehr_tokens']} tokens), "
              f"transformers generate {r['transformers_tok_s']:8.1f} tok/s ({r['transformers_tokens']}): {r['ratio']:.2f}x")
