#!/usr/bin/env bash
# GPU checks for a machine that has PyTorch (the same libtorch 2.11.0) but no Rust and no
# network: run from the repository root with a lehr built elsewhere with `--features nccl`
# (release; ~50 MB stripped). Nothing here builds or downloads anything.
#
#   LEHR=target/release/lehr OUT=/tmp/out scripts/device_check.sh [--quick]
#   (DEVICE=cpu PRESET=small SEQ=256 BATCH=8 tries the same flow on a CPU)
#
# It points the binary at this machine's torch libraries (and a libnccl.so link to PyTorch's
# libnccl.so.2), then runs: the libtorch smoke test on CUDA; `lehr bench train` for
# qwen2.5-0.5b at 4K context in bf16 against PyTorch eager (benches/torch_train.py; plain
# PyTorch when transformers is missing); and a short bf16 training run over the repo's sample
# with a resume, whose spec also scores ARC-Easy at stage ends ([eval]); then `lehr eval tasks`
# on its checkpoint in bf16 and fp32 (and against lm-eval when the machine has it); and the
# step time of a tiny student with and without that checkpoint as a bf16 teacher ([distill]).
# Results go to $OUT as JSON and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
LEHR=${LEHR:-target/release/lehr}
OUT=${OUT:-/tmp/lehr-device}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-qwen2.5-0.5b}
SEQ=${SEQ:-4096}
BATCH=${BATCH:-4}
mkdir -p "$OUT"
TORCH=$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
NCCL_DIR=$TORCH/../nvidia/nccl/lib
LINKS=$OUT/lib
mkdir -p "$LINKS"
[ -f "$NCCL_DIR/libnccl.so.2" ] && ln -sf "$NCCL_DIR/libnccl.so.2" "$LINKS/libnccl.so"
export LD_LIBRARY_PATH="$TORCH/lib:$LINKS:$NCCL_DIR:${LD_LIBRARY_PATH:-}"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
fi

echo "== lehr train smoke"
"$LEHR" train smoke --json | tee "$OUT/smoke.json"

STEPS=10
[ "${1:-}" = "--quick" ] && STEPS=3
echo "== lehr bench train --preset $PRESET --seq-len $SEQ --micro-batch $BATCH vs PyTorch eager ($DEVICE)"
"$PY" benches/torch_train.py "$LEHR" --preset "$PRESET" --seq-len "$SEQ" --micro-batch "$BATCH" --device "$DEVICE" \
  --peak-tflops 989 --steps "$STEPS" --warmup 3 --json | tee "$OUT/bench-$PRESET.json"

echo "== a short bf16 run over the sample: tokenize, train 20 steps, resume to 30, eval"
WORK=$OUT/work
rm -rf "$WORK" && mkdir -p "$WORK"
sed "s#.lehr/demo-tokens#$WORK/tokens#" examples/tokenize.toml > "$WORK/tokenize.toml"
"$LEHR" corpus build "$WORK/tokenize.toml" --json > "$WORK/tokenize.json"
"$LEHR" train run examples/mix-demo.toml --data "$WORK/tokens" --model small --out "$WORK/run" --device "$DEVICE" \
  --stop-at 20 --json > "$OUT/train-a.jsonl"
"$LEHR" train run examples/mix-demo.toml --data "$WORK/tokens" --model small --out "$WORK/run" --device "$DEVICE" \
  --stop-at 30 --json > "$OUT/train-b.jsonl"
"$LEHR" eval ppl --checkpoint "$WORK/run/checkpoints/step-00000030" --data "$WORK/tokens/lang=en" --device "$DEVICE" \
  --json | tee "$OUT/eval.json"
tail -n 2 "$OUT/train-b.jsonl"

echo "== lehr eval tasks on the GPU: bf16 against fp32 (the run's checkpoint, 5-shot ARC-Easy sample; [eval] scores in eval.jsonl)"
CKPT="$WORK/run/checkpoints/step-00000030"
for p in bf16 fp32; do
  "$LEHR" eval tasks --checkpoint "$CKPT" --tasks arc_easy --data-dir examples/data/eval --num-fewshot 5 \
    --device "$DEVICE" --precision "$p" --json > "$OUT/tasks-$p.json"
done
"$PY" - "$OUT" <<'PY'
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/tasks-{p}.json")) for p in ("bf16", "fp32"))
la = [x for s in a["samples"]["arc_easy"] for x in s["loglikelihoods"]]
lb = [x for s in b["samples"]["arc_easy"] for x in s["loglikelihoods"]]
same = sum(x["pred"] == y["pred"] for x, y in zip(a["samples"]["arc_easy"], b["samples"]["arc_easy"]))
print(json.dumps({"bf16_s": a["config"]["extra"]["seconds"], "fp32_s": b["config"]["extra"]["seconds"],
                  "requests": a["config"]["extra"]["requests"], "same_choice": same, "of": len(la) // 4,
                  "max_ll_diff": max(abs(x - y) for x, y in zip(la, lb))}))
PY
grep -c '"task"' "$WORK/run/eval.jsonl" || true
if "$PY" -c 'import lm_eval' 2>/dev/null; then
  echo "== lehr eval tasks against lm-eval's HF backend on the GPU"
  "$PY" benches/eval_parity.py "$LEHR" "$CKPT" examples/data/eval --tasks arc_easy --shots 5 --device "$DEVICE" \
    --work "$OUT/eval-parity" --json | tee "$OUT/eval-parity.json"
fi
echo "== distillation on the GPU: the same student (tiny) with and without a bf16 teacher (the run's small checkpoint)"
sed '/^\[eval\]/,$d' examples/mix-demo.toml > "$WORK/plain.toml"
cp "$WORK/plain.toml" "$WORK/kd.toml"
printf '\n[distill]\nteacher = "%s"\nalpha = 0.5\ntemperature = 1.0\n' "$(cd "$CKPT" && pwd)" >> "$WORK/kd.toml"
for s in plain kd; do
  "$LEHR" train run "$WORK/$s.toml" --data "$WORK/tokens" --model tiny --out "$WORK/$s" --device "$DEVICE" \
    --stop-at 25 --json > "$OUT/distill-$s.jsonl"
done
"$PY" - "$OUT" <<'PY' | tee "$OUT/distill.json"
import json, statistics, sys
def ms(name):
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/distill-{name}.jsonl")]
    steps = [r for r in rows if r.get("event") == "step"][5:]
    return statistics.median(r["tokens"] / r["tokens_per_s"] * 1000 for r in steps), steps
p, _ = ms("plain")
k, rows = ms("kd")
print(json.dumps({"plain_ms": p, "teacher_ms": k, "ratio": k / p, "kd_first": rows[0].get("kd_loss"),
                  "kd_last": rows[-1].get("kd_loss")}))
PY
echo "== done: $OUT"
