#!/usr/bin/env bash
# Benchmark scoring: `lehr eval tasks` against lm-evaluation-harness's HF backend in the same
# run — same checkpoint (SmolLM2-135M-Instruct, imported from its published GGUF), same rows
# (../shared/fixtures/eval when present, else the repo's ARC-Easy sample), zero- and few-shot —
# with the parity table (metrics, per-question choices, log-likelihoods) and both wall times.
# Figures for docs/evaluation.md and docs/benchmarks.md.
#
#   scripts/bench_eval.sh [--limit N] [--device cuda] [--json]     (extra flags go to the script)
#
# Env: LEHR  lehr binary (default: release build, built here if LEHR is unset)
#      WORK  work dir (default: ${CARGO_TARGET_DIR:-target}/bench-eval)
#      SHOTS few-shot settings to run (default: "0 5")
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
MODEL=$(scripts/models.sh smollm2)
if [ -z "${LEHR:-}" ]; then
  cargo build --release --quiet
  LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
fi
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/bench-eval}
mkdir -p "$WORK"
[ -f "$WORK/ckpt/model.safetensors" ] || "$LEHR" import gguf "$MODEL" -o "$WORK/ckpt" >&2
if [ -d ../shared/fixtures/eval ]; then
  DATA=../shared/fixtures/eval TASKS=arc_easy,arc_challenge,hellaswag,piqa,boolq
else
  DATA=examples/data/eval TASKS=arc_easy
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); data $DATA" >&2
for k in ${SHOTS:-0 5}; do
  "$LEHR_VENV/bin/python" benches/eval_parity.py "$LEHR" "$WORK/ckpt" "$DATA" --tasks "$TASKS" --shots "$k" \
    --work "$WORK/run-$k" "$@"
done
