#!/usr/bin/env bash
# lehr's quality filters against datatrove's on the same English corpus: the FineWeb English chain
# (Gopher repetition -> Gopher quality -> C4 without the terminal-punctuation rule -> FineWeb, with
# datatrove's default parameters). Reports per-document decision agreement and throughput per
# core (one worker / one process each). datatrove goes into a throwaway venv ($LEHR_CACHE/bench-venv).
#
#   scripts/bench_filters.sh [--json] [--repeat N]     extra args go to benches/datatrove_filters.py
#
# Env: LEHR       lehr binary (default: release build, built here if LEHR is unset)
#      REPEAT     copies of the corpus for the speed run (default 5; --repeat overrides)
#      WORK       work dir (default: ${CARGO_TARGET_DIR:-target}/bench-filters); keeps
#                 disagreements.jsonl, the specs and lehr's output for inspection
#      LEHR_CACHE where the venv lives (default ~/.cache/lehr)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench_venv.sh
if [ -z "${LEHR:-}" ]; then
  cargo build --release --quiet
  LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
fi
if [ -f ../shared/fixtures/corpus/en.jsonl ]; then SRC=../shared/fixtures/corpus/en.jsonl; else SRC=examples/data/en.jsonl; fi
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/bench-filters}
mkdir -p "$WORK"
echo "corpus: $SRC; lehr: $LEHR" >&2
"$VENV/bin/python" benches/datatrove_filters.py "$LEHR" "$SRC" "$WORK" --repeat "${REPEAT:-5}" "$@"
