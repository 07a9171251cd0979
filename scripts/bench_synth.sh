#!/usr/bin/env bash
# The synth stage's client overhead: `lehr bench synth` against a zero-latency OpenAI stub (its
# own thread, its CPU left out), without and with the request cache, and the official `openai`
# Python client (AsyncOpenAI, pinned by scripts/setup.sh) against the same stub for the ratio.
#
#   scripts/bench_synth.sh [--requests N] [--concurrency C] [--json]   [env: LEHR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/release_lehr.sh
"$LEHR" bench synth --openai-python "$LEHR_VENV/bin/python" "$@"
