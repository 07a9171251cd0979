#!/usr/bin/env bash
# The whole test suite, cheapest gate first: fmt, clippy (-D warnings), then every test of every
# crate, the train worker's tch smoke test and the S3 (moto) test included.
set -euo pipefail
cd "$(dirname "$0")/.."
# Node.js for llama.cpp (node-llama-cpp), which checks the GGUF exports
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "Node.js and npm are missing: install them (the GGUF export tests run llama.cpp through node-llama-cpp)" >&2
    exit 1
  fi
fi
eval "$(scripts/setup.sh)"
export LEHR_REQUIRE_S3=1
# openssl: the TLS test runs deploy/tls/make-certs.sh as an operator would
if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "openssl is missing: install it (the TLS tests need it)" >&2
    exit 1
  fi
fi
# Slurm (Debian's slurm-wlm 22.05, munge): tests/slurm.rs runs deploy/slurm's batch scripts under
# a real one on this machine; where it cannot be installed, those tests say so and skip
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  deploy/slurm/testbed.sh install
  export LEHR_REQUIRE_SLURM=1
  # tests/partition.rs cuts a worker off with a network namespace (iproute2's `ip netns`)
  command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }
  export LEHR_REQUIRE_NETNS=1
else
  echo "not root: tests/slurm.rs will skip (deploy/slurm/testbed.sh install needs root and apt-get)" >&2
fi
# PostgreSQL (Debian's server): tests/postgres.rs starts a private one per test (initdb on a free
# port); where it cannot be installed, those tests say so and skip
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export LEHR_REQUIRE_POSTGRES=1
else
  echo "PostgreSQL is not installed: tests/postgres.rs will skip (apt-get install postgresql)" >&2
fi
# nccl = train + the NCCL collective (cudarc, loaded at run time; nothing to install to build)
FEATURES="--features lehr/nccl"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets $FEATURES -- -D warnings
echo "== cargo test"
cargo test --workspace $FEATURES
echo "== all tests passed"
