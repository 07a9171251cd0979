#!/usr/bin/env bash
# GGUF export: lehr's quantizers against gguf-py's in the same run, and the size/perplexity
# ladder measured by llama.cpp, on Qwen2.5-Coder-0.5B-Instruct (fetched by scripts/models.sh,
# ≈490 MB, imported once into $WORK/ckpt) — figures for docs/export.md and docs/benchmarks.md.
#
#   scripts/bench_export.sh [--json] [--timing-only]
#
# Env: LEHR  lehr binary (default: release build, built here if LEHR is unset)
#      WORK  work dir (default: ${CARGO_TARGET_DIR:-target}/bench-export; needs ≈6 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
MODEL=$(scripts/models.sh qwen-coder)
if [ -z "${LEHR:-}" ]; then
  cargo build --release --quiet
  LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
fi
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/bench-export}
mkdir -p "$WORK"
[ -f "$WORK/ckpt/model.safetensors" ] || "$LEHR" import gguf "$MODEL" -o "$WORK/ckpt" >&2
# the round trip first: transformers on the import against llama.cpp on the published file
"$LEHR_VENV/bin/python" benches/real_roundtrip.py "$MODEL" "$WORK/ckpt" >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
"$LEHR_VENV/bin/python" benches/gguf_export.py "$LEHR" "$WORK/ckpt" "$WORK" "$MODEL" "$@"
