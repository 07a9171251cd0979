#!/usr/bin/env bash
# Tokenization: lehr's tokenize job against Hugging Face tokenizers' Python batch encoding (same
# text, same Qwen2.5 tokenizer.json), tokens/s and MB/s per core and the ratio; then lehr's
# scaling from 1 to 2 workers. tokenizers goes into the throwaway bench venv.
#
#   scripts/bench_tokenize.sh [--json]
#
# Env: LEHR       lehr binary (default: release build, built here if LEHR is unset)
#      WORK       work dir (default: ${CARGO_TARGET_DIR:-target}/bench-tokenize)
#      LEHR_CACHE where the venv lives (default ~/.cache/lehr)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench_venv.sh
if [ ! -f ../shared/fixtures/tokenizers/qwen2.5/tokenizer.json ]; then
  echo "this benchmark needs ../shared/fixtures (the corpora and the Qwen2.5 tokenizer)" >&2
  exit 2
fi
if [ -z "${LEHR:-}" ]; then
  cargo build --release --quiet
  LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
fi
WORK=${WORK:-${CARGO_TARGET_DIR:-target}/bench-tokenize}
mkdir -p "$WORK"
"$VENV/bin/python" benches/hf_tokenize.py "$LEHR" ../shared/fixtures "$WORK" "$@"
