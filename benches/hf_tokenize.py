"""Tokenization: lehr's tokenize job against Hugging Face tokenizers' Python batch encoding of
the same text with the same tokenizer.json (Qwen2.5's) via `encode_batch_fast` (no offsets,
the fastest Python call; lehr does the same), one core each, then lehr with 1 and 2
workers on 2 cores for scaling.

lehr's time is the whole job (read JSONL, plan, encode, append EOS, write Megatron shards and the
manifest); the Python time is `encode_batch` alone (reading excluded), so the ratio is
conservative for lehr. Token counts are checked to agree (lehr adds one EOS per document).

Usage: python benches/hf_tokenize.py LEHR FIXTURES_DIR WORK [--json]
Run by scripts/bench_tokenize.sh, which makes the venv.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPEAT = 2
BATCH = 512


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def lehr_run(lehr, inputs, tokenizer, work, workers, cores):
    out = work / f"lehr-{workers}w"
    if out.exists():
        shutil.rmtree(out)
    spec = work / f"tokenize-{workers}w.toml"
    paths = ", ".join(json.dumps(str(p)) for p in inputs)
    spec.write_text(
        f'version = 1\nname = "bench"\n[input]\npaths = [{paths}]\nsplit-size = "4MiB"\n'
        f'[output]\npath = {json.dumps(str(out))}\nformats = ["tokens"]\nattributes = false\n'
        f'[output.tokenize]\ntokenizer = {json.dumps(str(tokenizer))}\neos = "<|endoftext|>"\n'
    )
    env = dict(os.environ, RAYON_NUM_THREADS=str(len(cores)), LEHR_LOG="warn")
    c0, t0 = cpu_children(), time.perf_counter()
    subprocess.run(
        ["taskset", "-c", ",".join(map(str, cores)), lehr, "corpus", "build", str(spec), "--workers", str(workers), "--json"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )
    wall, cpu = time.perf_counter() - t0, cpu_children() - c0
    tokens = docs = 0
    for m in out.rglob("*.tokens.json"):
        meta = json.loads(m.read_text())
        tokens += meta["tokens"]
        docs += meta["documents"]
    return {"wall_s": wall, "cpu_s": cpu, "tokens": tokens, "docs": docs}


HF_CHILD = r"""
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = []
for p in sys.argv[2:]:
    with open(p, encoding="utf-8") as f:
        texts += [json.loads(l)["text"] for l in f if l.strip()]
t0 = time.perf_counter(); c0 = time.process_time()
n = 0
for i in range(0, len(texts), %d):
    # encode_batch_fast skips offsets, like lehr; the fastest the Python API offers
    for e in tok.encode_batch_fast(texts[i:i + %d], add_special_tokens=False):
        n += len(e.ids)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "tokens": n, "docs": len(texts)}))
""" % (BATCH, BATCH)


def hf_run(inputs, tokenizer):
    env = dict(os.environ, RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="true")
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", HF_CHILD, str(tokenizer)] + [str(p) for p in inputs],
        check=True, env=env, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    lehr, fixtures, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    as_json = "--json" in sys.argv
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = fixtures / "tokenizers/qwen2.5/tokenizer.json"
    inputs = []
    for r in range(REPEAT):
        for name in ["en.jsonl", "zh.jsonl", "ko.jsonl"]:
            dst = work / f"r{r}-{name}"
            if not dst.exists():
                shutil.copy(fixtures / "corpus" / name, dst)
            inputs.append(dst)
    text_bytes = 0
    for p in inputs:
        with open(p, encoding="utf-8") as f:
            text_bytes += sum(len(json.loads(l)["text"].encode()) for l in f if l.strip())
    hf = hf_run(inputs, tokenizer)
    one = lehr_run(lehr, inputs, tokenizer, work, 1, [0])
    ncores = min(2, os.cpu_count() or 1)
    two = lehr_run(lehr, inputs, tokenizer, work, ncores, list(range(ncores)))
    assert one["tokens"] - one["docs"] == hf["tokens"], (one, hf)
    res = {
        "text_mb": text_bytes / 1e6,
        "tokens": hf["tokens"],
        "hf_python_1core": hf,
        "lehr_1worker_1core": one,
        f"lehr_{ncores}workers_{ncores}cores": two,
        "hf_tokens_per_s": hf["tokens"] / hf["wall_s"],
        "lehr_tokens_per_s_1core": one["tokens"] / one["wall_s"],
        "lehr_tokens_per_s_ncores": two["tokens"] / two["wall_s"],
        "ratio_per_core": (one["tokens"] / one["wall_s"]) / (hf["tokens"] / hf["wall_s"]),
        "scaling": one["wall_s"] / two["wall_s"],
        "cores": ncores,
    }
    if as_json:
        print(json.dumps(res, indent=1))
        return
    print(f"tokenize {res['text_mb']:.1f} MB of en/zh/ko text ({res['tokens']:,} Qwen2.5 tokens), one core each:")
    print(f"  HF tokenizers (encode_batch_fast):  {hf['wall_s']:6.2f} s  {res['hf_tokens_per_s'] / 1e6:5.2f} M tokens/s  {res['text_mb'] / hf['wall_s']:5.2f} MB/s")
    print(f"  lehr tokenize job, 1 worker:         {one['wall_s']:6.2f} s  {res['lehr_tokens_per_s_1core'] / 1e6:5.2f} M tokens/s  {res['text_mb'] / one['wall_s']:5.2f} MB/s")
    print(f"  ratio lehr / HF per core:            {res['ratio_per_core']:.2f}x")
    print(f"  lehr, {ncores} workers on {ncores} cores:        {two['wall_s']:6.2f} s  {res['lehr_tokens_per_s_ncores'] / 1e6:5.2f} M tokens/s  scaling {res['scaling']:.2f}x of {ncores}")


if __name__ == "__main__":
    main()
