# Sourced (from the repo root) by the scripts that time or train with lehr: installs what is
# missing and exports the toolchain (scripts/setup.sh), and sets LEHR to the release build with
# `--features nccl`, built here, unless LEHR names a binary already.
eval "$(scripts/setup.sh)"
if [ -z "${LEHR:-}" ]; then
  cargo build --release --features nccl --quiet
  LEHR=${CARGO_TARGET_DIR:-target}/release/lehr
fi
