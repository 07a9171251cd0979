#!/usr/bin/env bash
# Training throughput: `lehr train run` against a PyTorch eager loop of the same Qwen2 shape,
# batch and sequence length on the same device (CPU here; pass --device cuda on a GPU machine).
# Uses the venv scripts/setup.sh makes (torch + transformers) and the demo's token shards.
#
#   scripts/bench_train.sh [--device cpu|cuda] [--steps N] [--json]
#   scripts/bench_train.sh --preset qwen2.5-0.5b --seq-len 4096 --micro-batch 4 --device cuda --peak-tflops 989
#     (the second form: `lehr bench train` against PyTorch eager on the same shape; see
#      `lehr bench train --help`)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/release_lehr.sh
if [[ " $* " == *" --preset "* ]]; then
  exec "$LEHR_VENV/bin/python" benches/torch_train.py "$LEHR" "$@"
fi
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/bench-train}
mkdir -p "$WORK"
if [ ! -d "$WORK/tokens/lang=en" ]; then
  sed "s#.lehr/demo-tokens#$WORK/tokens#" examples/tokenize.toml > "$WORK/tokenize.toml"
  "$LEHR" corpus build "$WORK/tokenize.toml" > /dev/null
fi
"$LEHR_VENV/bin/python" benches/torch_train.py "$LEHR" "$WORK/tokens" examples/mix-demo.toml "$WORK" "$@"
