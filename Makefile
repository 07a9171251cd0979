# The two set-up commands (README): `make demo` and `make test`. Both install what a fresh
# machine lacks (scripts/setup.sh: the pinned libtorch via PyPI torch, moto for S3 tests) and
# build with the same features, so the second never rebuilds what the first built.
SHELL := /bin/bash
.PHONY: demo test build check bench fmt

demo:
	scripts/demo.sh

test:
	scripts/test.sh

build:
	eval "$$(scripts/setup.sh)" && cargo build --features nccl

bench:
	scripts/bench.sh

fmt:
	cargo fmt --all
