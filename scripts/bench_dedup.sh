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
# datatrove 0.10.1 hashes str with xxhash.xxh64_intdigest, which xxhash 4 refuses: pin xxhash<4.
cd "$(dirname "$0")/.."
LEHR_CACHE=${LEHR_CACHE:-$HOME/.cache/lehr}
VENV=$LEHR_CACHE/bench-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import datatrove, xxhash, zstandard, spacy, tokenizers; assert xxhash.VERSION < "4"' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "datatrove==0.10.1" regex zstandard orjson "spacy==3.8.*" fasttext-numpy2-wheel pyarrow "xxhash<4" tokenizers >&2
fi
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
