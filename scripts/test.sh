#!/usr/bin/env bash
# The whole test suite, cheapest gate first: fmt, clippy (-D warnings), then every test of every
# crate, the train worker's tch smoke test and the S3 (moto) test included.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
export LEHR_REQUIRE_S3=1
# nccl = train + the NCCL collective (cudarc, loaded at run time; nothing to install to build)
FEATURES="--features lehr/nccl"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets $FEATURES -- -D warnings
echo "== cargo test"
cargo test --workspace $FEATURES
echo "== all tests passed"
