"""GGUF export: lehr's quantizers against gguf-py's, and the size/quality ladder.

For a checkpoint (default: Qwen2.5-Coder-0.5B-Instruct, imported from its published Q4_K_M GGUF
by `lehr import gguf`, so F32 weights that lie on that file's grid):

1. Wall time of `lehr export gguf --type T` for each ladder type, and of `--type all` (all seven
   files in one pass over the tensors).
2. The same conversion with gguf-py for the types it quantizes (Q8_0, Q4_0, F16): read the
   safetensors, quantize every matrix with `gguf.quants.quantize`, write with `GGUFWriter`.
   Same tensors, same machine, same run; the ratio is gguf-py's time over lehr's.
3. The ladder: each of our files run by llama.cpp (node-llama-cpp) over held-out text,
   perplexity and its ratio to F16, with the file's size and bits per weight; and llama-quantize's
   own published Q4_K_M on the same text for reference.

Usage: python benches/gguf_export.py LEHR CHECKPOINT_DIR WORK [ORIGINAL_GGUF] [--json] [--timing-only]
Run by scripts/bench_export.sh.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

LADDER = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0"]
REPO = Path(__file__).resolve().parent.parent


def held_out_text():
    """An English help page and a Chinese one from the demo corpus, and a Rust file of ours."""
    lines = (REPO / "examples/data/en.jsonl").read_text().splitlines()
    en = json.loads(lines[3])["text"][:900]
    zh = json.loads((REPO / "examples/data/zh.jsonl").read_text().splitlines()[5])["text"][:400]
    code = (REPO / "formats/src/mix.rs").read_text()[:900]
    return [("en", en), ("zh", zh), ("code", code)]


def llama_ppl(gguf_path, text):
    out = subprocess.run(["node", str(REPO / "scripts/llama/logprobs.mjs"), str(gguf_path), text, "0"],
                         check=True, capture_output=True, text=True)
    lp = json.loads(out.stdout)["logprobs"]
    return math.exp(-sum(lp) / len(lp)), len(lp)


def gguf_py_export(ckpt, out, qtype):
    """Read safetensors (numpy), quantize the matrices with gguf-py, write with GGUFWriter."""
    from safetensors.numpy import load_file
    t0 = time.perf_counter()
    tensors = load_file(str(ckpt / "model.safetensors"))
    w = gguf.GGUFWriter(str(out), "qwen2")
    for name, x in tensors.items():
        x = x.astype(np.float32)
        if x.ndim == 2 and x.shape[1] % 32 == 0:
            q = gguf.quants.quantize(x, qtype)
            w.add_tensor(name, q, raw_dtype=qtype)
        else:
            w.add_tensor(name, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return time.perf_counter() - t0


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    as_json = "--json" in sys.argv
    timing_only = "--timing-only" in sys.argv
    lehr, ckpt, work = args[0], Path(args[1]), Path(args[2])
    original = Path(args[3]) if len(args) > 3 else None
    work.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(ckpt), "cores": os.cpu_count(), "lehr": {}, "gguf_py": {}, "ladder": []}

    for ty in LADDER:
        t0 = time.perf_counter()
        subprocess.run([lehr, "export", "gguf", str(ckpt), "--type", ty.lower(), "-o", str(work / f"one-{ty}.gguf"), "--json"],
                       check=True, capture_output=True)
        result["lehr"][ty] = time.perf_counter() - t0
    print(f"lehr: {result['lehr']}", file=sys.stderr)
    t0 = time.perf_counter()
    exp = subprocess.run([lehr, "export", "gguf", str(ckpt), "--type", "all", "-o", str(work / "ladder"), "--name", "m", "--json"],
                         check=True, capture_output=True, text=True)
    result["lehr"]["all"] = time.perf_counter() - t0
    files = json.loads(exp.stdout)["files"]

    for ty, qt in [("F16", T.F16), ("Q8_0", T.Q8_0), ("Q4_0", T.Q4_0)]:
        result["gguf_py"][ty] = gguf_py_export(ckpt, work / f"gguf-py-{ty}.gguf", qt)
        os.remove(work / f"gguf-py-{ty}.gguf")
    print(f"lehr all: {result['lehr']['all']:.1f}, gguf-py: {result['gguf_py']}", file=sys.stderr)

    texts = held_out_text() if not timing_only else []
    rows = [(f["file_type"], Path(f["path"]), f["file_bytes"], f["bits_per_weight"]) for f in files]
    if original is not None:
        r = gguf.GGUFReader(str(original))
        params = sum(int(np.prod(t.shape)) for t in r.tensors)
        nbytes = sum(int(t.n_bytes) for t in r.tensors)
        rows.append(("published Q4_K_M", original, original.stat().st_size, nbytes * 8 / params))
    for name, path, size, bpw in rows if texts else []:
        ppl = {k: llama_ppl(path, t)[0] for k, t in texts}
        result["ladder"].append({"type": name, "mib": size / 2**20, "bpw": bpw, "perplexity": ppl})
    f16 = next((r for r in result["ladder"] if r["type"] == "F16"), {"perplexity": {}})["perplexity"]
    for r in result["ladder"]:
        r["ratio_to_f16"] = {k: r["perplexity"][k] / f16[k] for k in f16}

    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"export of {ckpt} on {result['cores']} cores (wall seconds; ratio = gguf-py / lehr)")
    print(f"{'type':<8} {'lehr':>7} {'gguf-py':>8} {'ratio':>6}")
    for ty in LADDER:
        ours, g = result["lehr"][ty], result["gguf_py"].get(ty)
        theirs = "" if g is None else f"{g:8.1f}"
        ratio = "" if g is None else f"{g / ours:6.1f}"
        print(f"{ty:<8} {ours:>7.1f} {theirs:>8} {ratio:>6}")
    print(f"{'all 7':<8} {result['lehr']['all']:>7.1f}  (one pass)")
    print()
    keys = [k for k, _ in texts]
    print(f"{'type':<17} {'MiB':>7} {'bpw':>5} " + " ".join(f"{'ppl ' + k:>9} {'×F16':>6}" for k in keys))
    for r in result["ladder"]:
        cells = " ".join(f"{r['perplexity'][k]:>9.3f} {r['ratio_to_f16'][k]:>6.3f}" for k in keys)
        print(f"{r['type']:<17} {r['mib']:>7.1f} {r['bpw']:>5.2f} {cells}")


if __name__ == "__main__":
    main()
