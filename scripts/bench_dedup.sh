#!/usr/bin/env bash
# MinHash dedup: lehr against datatrove 0.10.1 (same corpus, 5-grams, 14x8, 64-bit hashes, one
# core each). Prints wall/CPU time, MB/s, peak RSS and their ratios, and per-language precision
# and recall on the labelled near-duplicate fixture. datatrove goes into a throwaway venv.
#
#   scripts/bench_dedup.sh [--json]
#
# Env: LEHR       lehr binary (default: release build, built here if LEHR is unset)
#      WORK       work dir (default: ${CARGO_TARGET_DIR:-target}/bench-dedup)
#      LEHR_CACHE where the venv lives (default ~/.cache/lehr)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench_venv.sh
if [ ! -f ../shared/fixtures/dedup/labels.csv ]; then
  echo "this benchmark needs ../shared/fixtures (the corpora and the labelled near duplicates)" >&2
  exit 2
fi
if [ -z "${LEHR:-}" ]; then
  cargo build --release --quiet
  LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
fi
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/bench-dedup}
mkdir -p "$WORK"
"$VENV/bin/python" benches/datatrove_minhash.py "$LEHR" ../shared/fixtures "$WORK" "$@"
