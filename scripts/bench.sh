#!/usr/bin/env bash
# Figures for docs/benchmarks.md (release build): coordinator lease throughput and pipeline
# throughput per worker, on the fixture corpora when ../shared is there, else on the sample.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
cargo build --release
LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$LEHR" bench coordinator --tasks 20000 --workers 64 --grpc
"$LEHR" bench coordinator --tasks 100000 --workers 1000 --connections 100 --grpc
"$LEHR" bench coordinator --tasks 100000 --workers 1000 --connections 100 --batch 8 --grpc
INPUTS=()
if [ -f ../shared/fixtures/corpus/en.jsonl ]; then
  for f in en.jsonl zh.jsonl ko.jsonl mixed_dirty.jsonl; do INPUTS+=(--input "../shared/fixtures/corpus/$f"); done
fi
for w in 1 2; do "$LEHR" bench pipeline "${INPUTS[@]}" --workers $w; done
