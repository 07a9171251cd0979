"""`lehr eval tasks` against lm-evaluation-harness (HF backend) in the same run: the same
checkpoint, the same rows, the same few-shot setting; wall time of each and how far apart
their numbers are (metric differences, per-question agreement, largest per-choice
log-likelihood difference). Figures for docs/evaluation.md and docs/benchmarks.md.

    python benches/eval_parity.py LEHR CKPT DATA_DIR [--tasks a,b] [--limit N] [--shots K]
        [--device cpu] [--batch 8] [--work DIR] [--json]

DATA_DIR holds <task>.jsonl in the fixture schema ({"context", "choices", "gold"}).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

METRICS = {"boolq": ["acc"]}


def lm_eval_yaml(task, path):
    metrics = METRICS.get(task, ["acc", "acc_norm"])
    lines = [
        f"task: lm_{task}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {path}",
        "test_split: test",
        "fewshot_split: test",
        "output_type: multiple_choice",
        'doc_to_text: "{{context}}"',
        'doc_to_choice: "{{choices}}"',
        'doc_to_target: "{{gold}}"',
        "metric_list:",
    ] + [f"  - {{metric: {m}, aggregation: mean, higher_is_better: true}}" for m in metrics]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lehr")
    ap.add_argument("ckpt")
    ap.add_argument("data")
    ap.add_argument("--tasks", default="arc_easy,arc_challenge,hellaswag,piqa,boolq")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", default="8", help="lm-eval's --batch_size (lehr uses auto)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tasks = [t for t in a.tasks.split(",") if t]
    work = Path(a.work or f"/tmp/lehr-eval-bench-{os.getpid()}")
    (work / "tasks").mkdir(parents=True, exist_ok=True)
    limit = ["--limit", str(a.limit)] if a.limit else []
    dtype = "float32" if a.device == "cpu" else "bfloat16"

    t0 = time.time()
    ours = subprocess.run(
        [a.lehr, "eval", "tasks", "--json", "--device", a.device, "--tasks", ",".join(tasks), "--checkpoint", a.ckpt,
         "--data-dir", a.data, "--num-fewshot", str(a.shots), "--precision", "fp32" if dtype == "float32" else "bf16"]
        + limit,
        check=True, capture_output=True, text=True,
    )
    lehr_s = time.time() - t0
    ours = json.loads(ours.stdout)

    for t in tasks:
        (work / "tasks" / f"lm_{t}.yaml").write_text(lm_eval_yaml(t, Path(a.data).resolve() / f"{t}.jsonl"))
    out = work / "lm_eval_out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={a.ckpt},dtype={dtype}",
         "--tasks", ",".join(f"lm_{t}" for t in tasks), "--device", a.device, "--batch_size", a.batch,
         "--num_fewshot", str(a.shots), "--include_path", str(work / "tasks"), "--output_path", str(out),
         "--log_samples"] + limit,
        check=True, capture_output=True, text=True, env=env,
    )
    lm_s = time.time() - t0
    sub = next(out.iterdir())
    results = json.loads(next(sub.glob("results_*.json")).read_text())

    rows = []
    for t in tasks:
        samples = sorted((json.loads(l) for l in next(sub.glob(f"samples_lm_{t}_*.jsonl")).read_text().splitlines()),
                         key=lambda s: s["doc_id"])
        mine = ours["samples"][t]
        agree, worst = 0, 0.0
        for s, m in zip(samples, mine):
            lls = [float(r[0]) for r in s["filtered_resps"]]
            best = max(range(len(lls)), key=lambda i: (lls[i], -i))
            agree += best == m["pred"]
            worst = max(worst, max(abs(x - y) for x, y in zip(lls, m["loglikelihoods"])))
        for metric in METRICS.get(t, ["acc", "acc_norm"]):
            k = f"{metric},none"
            rows.append({
                "task": t, "metric": metric, "n": len(mine),
                "lehr": ours["results"][t][k], "lm_eval": results["results"][f"lm_{t}"][k],
                "stderr": ours["results"][t][f"{metric}_stderr,none"],
                "same_choice": agree, "max_ll_diff": worst,
            })
    requests = ours["config"]["extra"]["requests"]
    summary = {
        "tasks": rows, "shots": a.shots, "device": a.device, "dtype": dtype, "requests": requests,
        "lehr_s": lehr_s, "lm_eval_s": lm_s, "speedup": lm_s / lehr_s,
        "note": "wall time of each command, model load included",
    }
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'task':<14} {'metric':<9} {'n':>5} {'lehr':>8} {'lm-eval':>8} {'|diff|':>8} {'same choice':>12} {'max ll diff':>12}")
    for r in rows:
        print(f"{r['task']:<14} {r['metric']:<9} {r['n']:>5} {r['lehr']:>8.4f} {r['lm_eval']:>8.4f} "
              f"{abs(r['lehr'] - r['lm_eval']):>8.1e} {r['same_choice']:>5}/{r['n']:<6} {r['max_ll_diff']:>12.1e}")
    print(f"{a.shots}-shot, {requests} requests on {a.device} ({dtype}): lehr {lehr_s:.1f} s, lm-eval {lm_s:.1f} s "
          f"(batch {a.batch}): {lm_s / lehr_s:.2f}x")


if __name__ == "__main__":
    main()
