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
# with a resume. Results go to $OUT as JSON and logs.
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
echo "== done: $OUT"
