#!/usr/bin/env bash
# lehr against datatrove on the same job (read JSONL → NFC + min 50 chars → write jsonl.zst),
# one worker / one process each, in one run. datatrove goes into a throwaway venv
# ($LEHR_CACHE/bench-venv). Inputs: 5 copies of the fixture corpora (../shared) or of the sample.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench_venv.sh
cargo build --release --quiet
LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
IN=$(mktemp -d)
trap 'rm -rf "$IN"' EXIT
if [ -f ../shared/fixtures/corpus/en.jsonl ]; then SRC=(../shared/fixtures/corpus/{en,zh,ko,mixed_dirty}.jsonl); else SRC=(examples/data/*.jsonl); fi
for i in 0 1 2 3 4; do for f in "${SRC[@]}"; do cp "$f" "$IN/r$i-$(basename "$f")"; done; done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$LEHR" bench pipeline --input "$IN/*.jsonl" --workers 1
"$VENV/bin/python" benches/datatrove_io.py "$IN" 2>/dev/null | tail -1
