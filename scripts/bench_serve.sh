#!/usr/bin/env bash
# `lehr serve` generated tokens/s against transformers' `generate` on the same checkpoint and
# device (benches/serve_bench.py), at batch 1 and 16. Default checkpoint: SmolLM2-135M-Instruct
# imported from the GGUF scripts/models.sh fetches.
#
#   scripts/bench_serve.sh [--device cpu|cuda] [--tokens N] [--json]   [env: LEHR CHECKPOINT]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/release_lehr.sh
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/bench-serve}
mkdir -p "$WORK"
DEVICE=cpu
for ((i = 1; i <= $#; i++)); do [ "${!i}" = "--device" ] && j=$((i + 1)) && DEVICE=${!j}; done
if [ -z "${CHECKPOINT:-}" ]; then
  GGUF=$(scripts/models.sh smollm2)
  CHECKPOINT=$WORK/smollm2
  [ -f "$CHECKPOINT/config.json" ] || "$LEHR" import gguf -o "$CHECKPOINT" "$GGUF" > /dev/null
fi
"$LEHR" serve --checkpoint "$CHECKPOINT" --listen 127.0.0.1:0 --device "$DEVICE" --max-batch 16 > "$WORK/serve.out" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do grep -q "serving" "$WORK/serve.out" 2>/dev/null && break; sleep 0.5; done
URL=$(awk '/serving/ {print $NF}' "$WORK/serve.out")
[ -n "$URL" ] || { echo "lehr serve did not start" >&2; exit 1; }
HF_HUB_OFFLINE=1 "$LEHR_VENV/bin/python" benches/serve_bench.py "$URL" "$CHECKPOINT" "$@"
