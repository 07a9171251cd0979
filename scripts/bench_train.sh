#!/usr/bin/env bash
# Training throughput: `lehr train run` against a PyTorch eager loop of the same Qwen2 shape,
# batch and sequence length on the same device (CPU here; pass --device cuda on a GPU machine).
# Uses the venv scripts/setup.sh makes (torch + transformers) and the demo's token shards.
#
#   scripts/bench_train.sh [--device cpu|cuda] [--steps N] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
if [ -z "${LEHR:-}" ]; then
  cargo build --release --features train --quiet
  LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
fi
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/bench-train}
mkdir -p "$WORK"
if [ ! -d "$WORK/tokens/lang=en" ]; then
  sed "s#.lehr/demo-tokens#$WORK/tokens#" examples/tokenize.toml > "$WORK/tokenize.toml"
  "$LEHR" corpus build "$WORK/tokenize.toml" > /dev/null
fi
"$LEHR_VENV/bin/python" benches/torch_train.py "$LEHR" "$WORK/tokens" examples/mix-demo.toml "$WORK" "$@"
